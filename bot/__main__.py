"""`python -m bot`: the same command line as `likeness` (see bot.ops.cli)."""

import sys

from bot.ops.cli import main

if __name__ == "__main__":
    sys.exit(main())
