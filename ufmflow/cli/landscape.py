"""The asymptotic landscape from the shell: `python -m ufmflow.landscape <analysis> key=value ...`.

The paper's Section 3 (Theorems 3.1, 3.2, softmax codes, Figures 1, 3, 7, 8; theory §5) as
analyses, each with typed keys (`ufmflow.cli._landscape_keys`), run by the runner every
analysis command shares (`ufmflow.cli._analysis`): bad input or an analysis too big for the
machine exits 2 with one line naming the key and the token and nothing written; Ctrl-C exits
130 within 2 s. Every analysis writes a run folder (`ufmflow.cli._runfolder`): `config.json`,
`results.nc` (an xarray Dataset with named dims and coordinates), `summary.txt` (the table it
printed) and its PNG figures, all atomically; rerunning the same command finds the finished
folder and recomputes nothing. Run `python -m ufmflow.landscape --help` for every analysis,
its keys and their defaults.
"""

from __future__ import annotations

from ._analysis import AnalysisCommand, Job
from ._analysis_cost import LANDSCAPE_COSTS
from ._grammar import UsageError, format_value
from ._landscape_keys import ANALYSES, COMMON_KEYS


def check_settings(name: str, cfg: dict) -> None:
    """Cross-key checks (after defaults and quick sizes): raise `UsageError` naming the key."""
    if name == "fig1":
        low = cfg["low_rank"]
        K = cfg["K"]
        if low == "cross_polytope" and K % 2:
            raise UsageError("K", format_value(K), "the cross-polytope needs an even K; pick an "
                             "even K or low_rank=circle")
        if low == "hypercube" and (K & (K - 1) or K < 4):
            raise UsageError("K", format_value(K), "the hypercube needs K a power of two >= 4")
    if "decay_epochs" in cfg and cfg["decay_epochs"] > cfg["epochs"]:
        raise UsageError("decay_epochs", format_value(cfg["decay_epochs"]),
                         f"must be <= epochs ({cfg['epochs']})")
    if name == "map" and cfg["depth_max"] / cfg["depth_step"] > 1e5:
        raise UsageError("depth_step", format_value(cfg["depth_step"]),
                         "too fine: at most 1e5 depths on the grid")


COMMAND = AnalysisCommand(
    prog="ufmflow.landscape",
    about=("The asymptotic landscape (the paper's Section 3: theory §5). Each analysis prints a",
           "table and writes a run folder."),
    analyses=ANALYSES,
    common=COMMON_KEYS,
    costs=LANDSCAPE_COSTS,
    example="kgon K=3..8",
    check=check_settings,
)
NAMES, DEFAULTS, QUICK = COMMAND.names, COMMAND.defaults, COMMAND.quick_sizes
help_text, parse_args, run_job, main = COMMAND.entry_points()
__all__ = ["COMMAND", "DEFAULTS", "Job", "NAMES", "QUICK", "check_settings", "help_text", "main",
           "parse_args", "run_job"]
