"""The sweep engine: a grid of configurations -> a labelled xarray Dataset, in batches.

Modules, in the order a sweep flows through them: `_config` (`SweepConfig`: every setting
validated once, hashed into the run folder's name), `_modes` (one object per mode: its dims,
settings, solver choice, run function, summary metrics), `_plan` (units: one compiled batch and
one part file each), `_execute` (compile cache, sharding over this process's devices),
`_distributed` (`jax.distributed`: units split over processes, one run folder), `_guard`
(memory and work estimates, refused before anything is written), `_trust` (part checksums and
ranges, the folder lock and config check, provenance, CF attributes), `_store` (parts,
assembly, atomic writes, `load_sweep`), `_summary` (and `ok_runs`), `_plots`, and `_run` (`run_sweep`,
which drives them). Imports `core` and `solvers`. `python -m ufmflow.sweep` runs
`ufmflow.cli.sweep`.
"""

from ._config import SOLVERS as SOLVERS
from ._config import SWEEP_TIME_CHANGES as SWEEP_TIME_CHANGES
from ._config import SweepConfig as SweepConfig
from ._distributed import initialize_distributed as initialize_distributed
from ._errors import SweepInputError as SweepInputError
from ._modes import MODE_TABLE as MODE_TABLE
from ._modes import MODES as MODES
from ._modes import solver_for as solver_for
from ._plan import plan_units as plan_units
from ._plots import plot_sweep as plot_sweep
from ._run import run_sweep as run_sweep
from ._store import load_sweep as load_sweep
from ._summary import ok_runs as ok_runs
from ._summary import sweep_summary as sweep_summary
from ._summary import sweep_summary_text as sweep_summary_text
from ._summary import write_summary as write_summary
