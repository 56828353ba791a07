"""``python -m atreid <step> ...``: the pipeline's single command-line entry point."""

from atreid.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
