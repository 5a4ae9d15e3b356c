"""Entry point for `python -m trapcls`."""

from trapcls.cli import main

main()
