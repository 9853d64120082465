"""The asymptotic landscape from the shell: `python -m ufmflow.landscape <analysis> key=value ...`.

The paper's Section 3 (Theorems 3.1, 3.2, softmax codes, Figures 1, 3, 7, 8; theory §5) as
analyses, each with typed keys (`ufmflow.cli._landscape_keys`), parsed by the grammar every
`ufmflow` command
shares (`ufmflow.cli._grammar`): bad input exits 2 with one line naming the key and the token
and nothing written. Every analysis writes a run folder (`ufmflow.cli._runfolder`):
`config.json`, `results.nc` (an xarray Dataset with named dims and coordinates),
`summary.txt` (the table it printed) and its PNG figures, all atomically; rerunning the same
command finds the finished folder and recomputes nothing. Run `python -m ufmflow.landscape
--help` for every analysis, its keys and their defaults.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
import time
from pathlib import Path

from . import _runfolder as rf
from ._landscape_keys import ANALYSES, COMMON_KEYS, keys_of, resolve
from ._grammar import UsageError, format_value, key_help, parse_keys, run_command, suggest

_PROG = "ufmflow.landscape"
NAMES = tuple(ANALYSES)
# the defaults of every analysis, as plain dicts (lists as tuples)
DEFAULTS = {name: dict(a.defaults) for name, a in ANALYSES.items()}
QUICK = {name: dict(a.quick) for name, a in ANALYSES.items()}


@dataclasses.dataclass(frozen=True)
class Job:
    """One analysis to run: its settings (defaults, quick sizes and given values resolved), its
    run folder, the config record written there, and whether the folder is already finished."""

    analysis: str
    settings: dict
    folder: Path
    record: dict
    finished: bool


def help_text() -> str:
    """`--help`: usage, value syntax, every analysis with its keys and defaults, run folders."""
    lines = [
        f"usage: python -m {_PROG} <analysis> [key=value ...]",
        "",
        "The asymptotic landscape (the paper's Section 3: theory §5). Each analysis prints a",
        "table and writes a run folder.",
        "",
        "values:  3   a list 1,2,4   an inclusive integer range 2..8 (mixable: 1..3,8)",
        "",
        "analyses (keys shown with their defaults; [quick: ...] = the value with quick=1):",
    ]
    for name, a in ANALYSES.items():
        lines.append("")
        lines += textwrap.wrap(f"{name}: {a.title}" + (f" {a.note}" if a.note else ""), 92,
                               initial_indent="  ", subsequent_indent="      ")
        notes = {k: f"[quick: {format_value(v)}]" for k, v in a.quick.items()}
        lines += key_help(a.keys, notes=notes, indent=4)
    lines += [
        "",
        "common keys (every analysis):",
    ]
    lines += key_help(COMMON_KEYS, defaults={"out": "runs/<analysis>-<hash>"}, indent=4)
    lines += [
        "",
        "run folder: config.json (the analysis and its settings), results.nc (xarray Dataset with",
        "named dims and coordinates: xarray.open_dataset(folder / 'results.nc')), summary.txt",
        "(the printed table) and the PNG figures, each written atomically (a temporary file,",
        "then a rename). results.nc is written last.",
        "resume: rerunning the same command (same settings, same out) finds the finished folder,",
        "prints its summary and recomputes nothing; an interrupted analysis is recomputed whole",
        "(the unit of resumption is one analysis). A folder holding another config's results",
        "is refused.",
        "Exit codes: 0 done, 2 bad input (one line naming the key and the token; nothing",
        "written).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> list[Job]:
    """`[analysis, key=value, ...]` -> the jobs to run, every input and run folder validated.

    **Raises:** `UsageError` naming the key (or `analysis`) and the token.
    """
    if not argv:
        raise UsageError("analysis", "", f"give an analysis first: {', '.join(NAMES)}")
    first = argv[0]
    if "=" in first or first.startswith("-"):
        raise UsageError("analysis", first, "the first word is the analysis (e.g. "
                         f"kgon K=3..8); choose one of {', '.join(NAMES)}")
    name = first.replace("_", "-")
    if name not in NAMES:
        raise UsageError("analysis", first, suggest(name, NAMES, "analysis", "analyses"))
    given = parse_keys(argv[1:], keys_of(name))
    settings = resolve(name, given)
    check_settings(name, settings)
    record = rf.config_record(name, settings)
    folder = Path(given["out"]) if given.get("out") else rf.default_folder(record)
    return [Job(name, settings, folder, record, rf.check_folder(folder, record))]


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


def run_job(job: Job):
    """Run one analysis into its folder (or load it when finished); return its Dataset."""
    if job.finished:
        ds, text = rf.load(job.folder)
        sys.stdout.write(text)
        print(f"[{job.analysis}] finished results with the same config found in {job.folder}/: "
              "nothing recomputed", file=sys.stderr)
        return ds
    module, func = ANALYSES[job.analysis].runner.split(":")
    runner = getattr(importlib.import_module(f"{__package__}.{module}"), func)
    rf.start(job.folder, job.record)
    t0 = time.time()
    ds, text, figures = runner(job.settings)
    sys.stdout.write(text)
    for file_name, draw in figures:
        draw(job.folder / file_name)
    rf.finish(job.folder, job.record, ds, text)
    files = sorted(p.name for p in job.folder.iterdir() if p.is_file()
                   and not p.name.startswith("."))
    print(f"[{job.analysis}] done in {time.time() - t0:.1f}s; wrote {job.folder}/ "
          f"({', '.join(files)})", file=sys.stderr)
    return ds


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code: 0 done, 2 bad input (one line on stderr, nothing
    written); `--help` prints to stdout and returns 0."""

    def body(args):
        for job in parse_args(args):
            run_job(job)
        return 0

    return run_command(_PROG, argv, help_text, body)
