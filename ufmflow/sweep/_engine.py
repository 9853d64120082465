"""Compatibility: the names `ufmflow.cli.sweep` (and older code) import from `_engine`. The
engine itself lives in the modules listed in `ufmflow.sweep`'s docstring."""

from ._config import SWEEP_TIME_CHANGES as SWEEP_TIME_CHANGES
from ._config import SweepConfig as SweepConfig
from ._errors import SweepInputError as SweepInputError
from ._modes import MODES as MODES
from ._modes import solver_for as solver_for
from ._plan import chunk_size as chunk_size
from ._plan import plan_units as plan_units
from ._run import run_sweep as run_sweep
from ._store import load_sweep as load_sweep
from ._summary import sweep_summary as sweep_summary
from ._summary import sweep_summary_text as sweep_summary_text
from ._summary import write_summary as write_summary
