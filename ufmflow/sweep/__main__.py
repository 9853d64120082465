"""`python -m ufmflow.sweep key=value ...`: the command lives in `ufmflow.cli.sweep`."""

import sys

from ufmflow.cli.sweep import main

sys.exit(main(all_cores=True))
