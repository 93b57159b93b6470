"""``python -m aiosvc``."""

import sys

from aiosvc.cli import main

sys.exit(main())
