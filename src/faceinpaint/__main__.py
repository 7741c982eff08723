"""`python -m faceinpaint`: the same as the `faceinpaint` command, for environments without its console script."""

import sys

from faceinpaint.cli import main

if __name__ == "__main__":
    sys.exit(main())
