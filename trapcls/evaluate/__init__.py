"""Scoring predictions against labels and writing the evaluation report."""
