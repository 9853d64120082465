"""Dynamics of depth from the shell: `python -m ufmflow.dynamics <analysis> key=value ...`.

The paper's Section 4 (Theorems 4.3-4.5, App. C, E.3, E.4; theory §4, §6) as analyses, each
with typed keys (`ufmflow.cli._dynamics_keys`), run by the runner every analysis command shares
(`ufmflow.cli._analysis`): bad input or an analysis too big for the machine exits 2 with one
line naming the key and the token and nothing written; Ctrl-C exits 130 within 2 s. Every
analysis writes a run folder (`ufmflow.cli._runfolder`): `config.json`, `results.nc` (an xarray
Dataset with named dims and coordinates), `summary.txt` (the table it printed) and its PNG
figures, all atomically; rerunning the same command finds the finished folder and recomputes
nothing. Run `python -m ufmflow.dynamics --help` for every analysis, its keys and their
defaults.
"""

from __future__ import annotations

from ._analysis import AnalysisCommand, Job
from ._analysis_cost import DYNAMICS_COSTS
from ._dynamics_keys import ANALYSES, COMMON_KEYS

COMMAND = AnalysisCommand(
    prog="ufmflow.dynamics",
    about=("Dynamics of depth (the paper's Section 4: theory §4, §6). Each analysis prints a "
           "table", "and writes a run folder."),
    analyses=ANALYSES,
    common=COMMON_KEYS,
    costs=DYNAMICS_COSTS,
    example="critical-scale K=8",
    with_all=True,
    values=(
        "values:  3   a list 1,2,4   an inclusive integer range 2..8 (mixable: 1..3,8)",
        "         a geometric range a:b:n = n log-spaced values from a to b (scale=1e-2:1e2:5),",
        "         for real-valued list keys; K is a power of two where the Hadamard structures",
        "         need it",
    ),
)
NAMES, DEFAULTS, QUICK = COMMAND.names, COMMAND.defaults, COMMAND.quick_sizes
help_text, parse_args, run_job, main = COMMAND.entry_points()
__all__ = ["COMMAND", "DEFAULTS", "Job", "NAMES", "QUICK", "help_text", "main", "parse_args",
           "run_job"]
