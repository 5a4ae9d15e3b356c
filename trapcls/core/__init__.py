"""The layer every stage shares: errors, the bundle, preprocessing, metrics, files, hardware facts.

Nothing here imports a stage package (training, predict, export, evaluate, watch) or the CLI;
tests/test_layers.py holds every import in trapcls/ to that order.
"""
