"""The analysis commands' shared runner: `python -m ufmflow.dynamics` and `python -m
ufmflow.landscape` are each one `AnalysisCommand` (their analyses, keys, resource estimates and
help prose); parsing, the resource guard, run folders, resume and Ctrl-C live here once.

A command line is `<analysis> key=value ...` (the shared grammar, `ufmflow.cli._grammar`).
`parse_args` validates every word, the run folders and the resources (`_analysis_cost`) before
anything is written; `run_job` runs one analysis into its run folder (`_runfolder`) or loads it
when finished; `main` runs the jobs with Ctrl-C handled (`_interrupt`: exit 130 within 2 s,
finished analyses kept, no temporary file). Exit codes: 0 done, 2 bad input or refused (one
line naming the key and the token), 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import _runfolder as rf
from ._analysis_cost import GUARD_KEYS, Cost, check_cost, estimate
from ._grammar import Key, UsageError, format_value, key_help, parse_keys, run_command, suggest
from ._interrupt import EXIT_INTERRUPTED, interruptible


@dataclasses.dataclass(frozen=True)
class Analysis:
    """One analysis: `name`, a one-line `title`, its `keys` (defaults in `defaults`),
    `quick` (the `quick=1` overrides) and `runner` ("module:function" in `ufmflow.cli`)."""

    name: str
    title: str
    keys: tuple[Key, ...]
    defaults: dict
    quick: dict
    runner: str
    note: str = ""


def analysis(name, title, keys, defaults, quick, runner, note="") -> Analysis:
    """An `Analysis` whose keys carry `defaults` (every key has one)."""
    keys = tuple(dataclasses.replace(k, default=defaults[k.name]) for k in keys)
    assert set(defaults) == {k.name for k in keys}, name
    return Analysis(name, title, keys, defaults, quick, runner, note)


def common_keys(out_help: str, seed_help: str) -> tuple[Key, ...]:
    """The keys every analysis takes: `out`, `seed`, `quick` and the guard's."""
    return (
        Key("out", "text", None, out_help, none=None),
        Key("seed", "int", 0, seed_help, ge=0),
        Key("quick", "bool", False, "1: small sizes (a smoke run; the [quick: ...] values)"),
        *GUARD_KEYS,
    )


@dataclasses.dataclass(frozen=True)
class Job:
    """One analysis to run: its settings (defaults, quick sizes and given values resolved), its
    run folder, the config record written there, and whether the folder is already finished."""

    analysis: str
    settings: dict
    folder: Path
    record: dict
    finished: bool


VALUES = ("values:  3   a list 1,2,4   an inclusive integer range 2..8 (mixable: 1..3,8)",)
RUN_FOLDER_HELP = (
    "run folder: config.json (the analysis and its settings), results.nc (xarray Dataset with",
    "named dims and coordinates: xarray.open_dataset(folder / 'results.nc')), summary.txt",
    "(the printed table) and the PNG figures, each written atomically (a temporary file,",
    "then a rename). results.nc is written last.",
)
SAFETY_HELP = (
    "resources: before anything is written, the analysis's memory and work are estimated;",
    "one over the limit (80% of RAM, max_memory_gb=; work 1e15 multiply-adds; unrolled",
    "depths over 64) is refused with one line (allow_big=1 skips the check).",
    "Ctrl-C stops within 2 s, keeping finished analyses and leaving no temporary file.",
    "Exit codes: 0 done, 2 bad input or refused (one line naming the key and the token;",
    "nothing written), 130 interrupted.",
)


@dataclasses.dataclass(frozen=True)
class AnalysisCommand:
    """A command of analyses. `about`: the help's description lines; `example`: a first word
    with keys (for the "first word is the analysis" error); `costs`: analysis -> `Cost` of its
    settings; `with_all`: an extra analysis `all` that runs every one into `<out>/<name>`;
    `check(name, settings)`: cross-key checks raising `UsageError`; `values`: help lines on
    value syntax."""

    prog: str
    about: tuple[str, ...]
    analyses: Mapping[str, Analysis]
    common: tuple[Key, ...]
    costs: Mapping[str, Callable[[dict], Cost]]
    example: str
    with_all: bool = False
    check: Callable[[str, dict], None] | None = None
    values: tuple[str, ...] = VALUES

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.analyses, "all") if self.with_all else tuple(self.analyses)

    @property
    def defaults(self) -> dict[str, dict]:
        """The defaults of every analysis, as plain dicts (lists as tuples)."""
        return {name: dict(a.defaults) for name, a in self.analyses.items()}

    @property
    def quick_sizes(self) -> dict[str, dict]:
        """The `quick=1` overrides of every analysis."""
        return {name: dict(a.quick) for name, a in self.analyses.items()}

    def entry_points(self):
        """`(help_text, parse_args, run_job, main)`, the command module's functions."""
        return self.help_text, self.parse_args, self.run_job, self.main

    @property
    def resume(self) -> tuple[str, ...]:
        unit = ("(the unit of resumption is one analysis; with all, finished analyses are "
                "skipped)." if self.with_all else "(the unit of resumption is one analysis).")
        return tuple(textwrap.wrap(
            "resume: rerunning the same command (same settings, same out) finds the finished "
            "folder, prints its summary and recomputes nothing; an interrupted analysis is "
            f"recomputed whole {unit} A folder holding another config's results is refused.",
            92))

    def keys_of(self, name: str) -> dict[str, Key]:
        """Every key `name` takes (its own and the common ones); `all` takes the common ones."""
        own = {} if name == "all" else {k.name: k for k in self.analyses[name].keys}
        return {**own, **{k.name: k for k in self.common}}

    def resolve(self, name: str, given: dict) -> dict:
        """Defaults, then `quick=1` sizes, then the given values -> the settings of one
        analysis (without `out`, `quick` and the guard's keys, which do not enter the numbers
        and so not the run folder's hash)."""
        a = self.analyses[name]
        cfg = dict(a.defaults)
        if given.get("quick"):
            cfg.update(a.quick)
        cfg.update({k: v for k, v in given.items() if k in a.defaults})
        cfg["seed"] = given.get("seed", 0)
        return cfg

    # ----------------------------------------------------------------------------------------

    def help_text(self) -> str:
        """`--help`: usage, value syntax, every analysis with its keys and defaults, run
        folders, resources, exit codes."""
        lines = [f"usage: python -m {self.prog} <analysis> [key=value ...]"]
        if self.with_all:
            lines.append(f"       python -m {self.prog} all [quick=1] [seed=0] [out=folder]")
        lines += ["", *self.about, "", *self.values, "",
                  "analyses (keys shown with their defaults; [quick: ...] = the value with "
                  "quick=1):"]
        for name, a in self.analyses.items():
            lines.append("")
            lines += textwrap.wrap(f"{name}: {a.title}" + (f" {a.note}" if a.note else ""), 92,
                                   initial_indent="  ", subsequent_indent="      ")
            notes = {k: f"[quick: {format_value(v)}]" for k, v in a.quick.items()}
            lines += key_help(a.keys, notes=notes, indent=4)
        if self.with_all:
            lines += ["", "  all: every analysis above, each into its own subfolder "
                      "<out>/<analysis>"]
        lines += ["", f"common keys (every analysis{' and all' if self.with_all else ''}):"]
        lines += key_help(self.common, defaults={"out": "runs/<analysis>-<hash>"}, indent=4)
        lines += ["", *RUN_FOLDER_HELP, *self.resume, *SAFETY_HELP]
        return "\n".join(lines) + "\n"

    def parse_args(self, argv: Sequence[str]) -> list[Job]:
        """`[analysis, key=value, ...]` -> the jobs to run, every input, run folder and
        resource estimate validated (nothing is written).

        **Raises:** `UsageError` naming the key (or `analysis`, `memory`, `work`) and the token.
        """
        names = self.names
        if not argv:
            raise UsageError("analysis", "", f"give an analysis first: {', '.join(names)}")
        first = argv[0]
        if "=" in first or first.startswith("-"):
            raise UsageError("analysis", first, "the first word is the analysis (e.g. "
                             f"{self.example}); choose one of {', '.join(names)}")
        name = first.replace("_", "-")
        if name not in names:
            raise UsageError("analysis", first, suggest(name, names, "analysis", "analyses"))
        given = parse_keys(argv[1:], self.keys_of(name))
        todo = list(self.analyses) if name == "all" else [name]
        settings = {nm: self.resolve(nm, given) for nm in todo}
        for nm in todo:
            if self.check is not None:
                self.check(nm, settings[nm])
            check_cost(nm, estimate(self.costs, nm, settings[nm]), given)
        records = {nm: rf.config_record(nm, settings[nm]) for nm in todo}
        out = Path(given["out"]) if given.get("out") else None
        if name == "all":
            base = out or rf.default_folder(rf.config_record("all", settings))
            folders = {nm: base / nm for nm in todo}
        else:
            folders = {name: out or rf.default_folder(records[name])}
        return [Job(nm, settings[nm], folders[nm], records[nm],
                    rf.check_folder(folders[nm], records[nm])) for nm in todo]

    def run_job(self, job: Job):
        """Run one analysis into its folder (or load it when finished); return its Dataset."""
        from ..sweep._store import WRITE_LOCK

        if job.finished:
            ds, text = rf.load(job.folder)
            sys.stdout.write(text)
            print(f"[{job.analysis}] finished results with the same config found in "
                  f"{job.folder}/: nothing recomputed", file=sys.stderr)
            return ds
        module, func = self.analyses[job.analysis].runner.split(":")
        runner = getattr(importlib.import_module(f"{__package__}.{module}"), func)
        rf.start(job.folder, job.record)
        t0 = time.time()
        ds, text, figures = runner(job.settings)
        sys.stdout.write(text)
        for file_name, draw in figures:
            with WRITE_LOCK:  # an interrupt waits for the figure, then removes its tmp file
                draw(job.folder / file_name)
        rf.finish(job.folder, job.record, ds, text)
        files = sorted(p.name for p in job.folder.iterdir() if p.is_file()
                       and not p.name.startswith("."))
        print(f"[{job.analysis}] done in {time.time() - t0:.1f}s; wrote {job.folder}/ "
              f"({', '.join(files)})", file=sys.stderr)
        return ds

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Entry point; returns the exit code: 0 done, 2 bad input or refused (one line on
        stderr, nothing written), 130 interrupted; `--help` prints to stdout and returns 0."""

        def body(args):
            jobs = self.parse_args(args)

            def work():
                for job in jobs:
                    self.run_job(job)

            def message():
                done = [j.folder for j in jobs if (j.folder / rf.RESULTS).is_file()]
                kept = f"; finished: {', '.join(map(str, done))}" if done else ""
                return (f"{self.prog}: interrupted{kept} (rerun the same command to resume; "
                        "an interrupted analysis is recomputed whole)")

            interruptible(work, message, lambda: [j.folder for j in jobs])
            return 0

        try:
            return run_command(self.prog, argv, self.help_text, body)
        except KeyboardInterrupt:  # before the work started (parsing, checking folders)
            print(f"\n{self.prog}: interrupted before anything was written", file=sys.stderr)
            return EXIT_INTERRUPTED


def entry_point(module: str) -> None:
    """`python -m ufmflow.<module>`: set the CPU flags, run the command, exit with its code.

    XLA's multi-threaded Eigen pool on CPU can wedge (every worker idle, the result never
    ready) on vmapped graphs with while loops and LAPACK calls, as in the critical-scale
    search; seen with jaxlib 0.10 under CPU contention. Single-threaded Eigen avoids it. Set
    before the backend starts, only when run as a command (subprocesses of a notebook or test
    inherit the environment); a user's XLA_FLAGS that already names the option wins."""
    if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        ).strip()
    command = importlib.import_module(f"{__package__}.{module}")
    sys.exit(command.main())
