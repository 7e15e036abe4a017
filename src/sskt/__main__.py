"""``python -m sskt ...``: the ``sskt`` command line (grid cells run their trainers this way)."""

import sys

from sskt.cli import main

sys.exit(main())
