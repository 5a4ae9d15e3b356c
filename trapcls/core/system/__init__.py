"""What every stage leans on: the errors trapcls raises, durable file writes, hardware facts, optional imports."""
