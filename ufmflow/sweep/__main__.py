"""`python -m ufmflow.sweep key=value ...`: the command lives in `ufmflow.cli.sweep`.

Across processes: with `UFMFLOW_COORDINATOR`/`UFMFLOW_NUM_PROCESSES`/`UFMFLOW_PROCESS_ID` (or
`UFMFLOW_DISTRIBUTED=1` under SLURM and other clusters JAX detects) in the environment,
`jax.distributed` starts here, before the command touches JAX, and `run_sweep` splits the
batches over the processes (README "Sweeps across processes").
"""

import atexit
import os
import sys

from ufmflow.sweep._distributed import initialize_distributed, requested_by_env

if requested_by_env() and not any(a in ("-h", "--help", "help") for a in sys.argv[1:]):
    initialize_distributed()

from ufmflow.cli.sweep import main  # noqa: E402

code = main(all_cores=True)
# Everything is written and closed by now. The interpreter's own teardown (freeing JAX's
# backend, modules, thread pools) took ~1 s of the default sweep's ~30 s: skip it, after the
# streams are flushed and the exit handlers (jax.distributed's shutdown among them) have run.
sys.stdout.flush()
sys.stderr.flush()
atexit._run_exitfuncs()
os._exit(code)
