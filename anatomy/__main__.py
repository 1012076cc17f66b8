"""`python -m anatomy ...`: the command line (anatomy.cli)."""

import sys

from .cli import main

sys.exit(main())
