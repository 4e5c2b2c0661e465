"""`python -m halsal` runs the CLI (the workflow's rules call it this way)."""

import sys

from halsal.cli import main

sys.exit(main())
