"""`python -m engine ...`: the headless command line without the workbench entry point."""

import sys

from engine.cli import main

sys.exit(main())
