"""Entry point for `python -m trapcls`."""

from trapcls.cli import main

if __name__ == "__main__":  # a worker process started by spawn imports this module again: it must not run the CLI
    main()
