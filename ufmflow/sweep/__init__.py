"""The sweep engine: config, plan, batched sharded execution, run-folder storage, summaries and
plots. Imports `core` and `solvers`. `python -m ufmflow.sweep` runs `ufmflow.cli.sweep`.
"""

from ._plots import plot_sweep as plot_sweep
from ._engine import SweepConfig as SweepConfig
from ._engine import SweepInputError as SweepInputError
from ._engine import load_sweep as load_sweep
from ._engine import run_sweep as run_sweep
from ._engine import sweep_summary as sweep_summary
from ._engine import sweep_summary_text as sweep_summary_text
