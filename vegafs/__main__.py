"""`python -m vegafs` runs the command line."""

import sys

from vegafs.cli.main import main

sys.exit(main())
