"""`python -m faceinpaint.cli` (what torchrun starts): the `faceinpaint` command."""

import sys

from faceinpaint.cli import main

sys.exit(main())
