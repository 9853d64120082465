"""`python -m ufmflow.realnet [--quick] key=value ...`: the command lives in
`ufmflow.cli.realnet`; this module is only its entry point."""

import sys

if __name__ == "__main__":
    from ufmflow.cli.realnet import main

    sys.exit(main())
