"""`python -m ufmflow.landscape <analysis> key=value ...`: the command lives in
`ufmflow.cli.landscape`; this module is only its entry point."""

import os
import sys

if __name__ == "__main__":
    # XLA's multi-threaded Eigen pool on CPU can wedge (every worker idle, the result never
    # ready) on vmapped graphs with while loops and LAPACK calls, as in the critical-scale
    # search; seen with jaxlib 0.10 under CPU contention. Single-threaded Eigen avoids it. Set
    # before the backend starts, only when run as a command (subprocesses of a notebook or test
    # inherit the environment); a user's XLA_FLAGS that already names the option wins.
    if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        ).strip()
    from ufmflow.cli.landscape import main

    sys.exit(main())
