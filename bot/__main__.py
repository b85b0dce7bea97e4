"""`python -m bot`: the same command line as `likeness` (see bot.ops.cli)."""

from bot.ops.cli import main

if __name__ == "__main__":
    main()
