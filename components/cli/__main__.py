"""`python -m components.cli`: the `shipyard` command without the console script."""

import sys

from . import main

sys.exit(main())
