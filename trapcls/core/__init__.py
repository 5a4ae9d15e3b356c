"""The layer every stage shares, split by concern: system/ (errors, durable files, hardware facts, optional
imports), model/ (the bundle, device records, model building and checkpoints, probabilities, the blank rule),
frames/ (finding, labelling and decoding frames), table/ (the field and submission CSVs: one row type), and
options.py (option bounds declared once) and metrics.py (scores).

Nothing here imports a stage package (training, predict, export, evaluate, results, watch) or the CLI;
tests/test_layers.py holds every import in trapcls/ to that order.
"""
