"""`python -m vlmrl_fast ...` is the `vlmrl` command (also under `accelerate launch -m vlmrl_fast`)."""

import sys

from vlmrl_fast.cli import main

if __name__ == "__main__":
    sys.exit(main())
