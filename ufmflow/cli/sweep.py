"""`python -m ufmflow.sweep key=value ...`: batched, sharded, resumable sweeps from the shell.

A thin layer over `ufmflow.run_sweep`: parse `key=value` words into a `SweepConfig`, run it,
print the summary. Run `python -m ufmflow.sweep --help` for every key and its default.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from ..solvers._devices import use_cpu_cores
from ..solvers._xla import fast_cpu_loops
from ..solvers._blas import single_threaded_lapack
from ..sweep import SweepConfig, SweepInputError, run_sweep, sweep_summary_text
from ._grammar import UsageError, parse_integer, parse_number, run_command, split_words
from ._grammar import parse_values as _parse_values
from ._interrupt import interruptible

from ..sweep import MODES, SWEEP_TIME_CHANGES, plan_units
from ..sweep._guard import MAX_SEEDS, check_resources
from ..sweep._trust import check_config, check_path

_PROG = "ufmflow.sweep"

# key -> (kind, help). Kinds: list (numbers: a, a..b, a,b,c, a:b:n where allowed), seeds,
# real, int, choice, text. Defaults come from SweepConfig.
_KEYS: dict[str, tuple[str, str]] = {
    "mode": ("choice", "full: gradient flow of the deep UFM (solve_flow); gd: gradient descent "
             "(descend, lr and t1/lr epochs); hadamard: the reduced singular-value ODE "
             "(solve_hadamard) from random directions"),
    "depth": ("list", "L, the number of weight matrices; integers for full/gd, any real >= 1 "
              "for hadamard (e.g. depth=1,1.5,2 or depth=1:8:15)"),
    "width": ("list", "feature width d (full/gd; gd's default is 16)"),
    "init_scale": ("list", "Gaussian init scale eps, entries N(0, eps^2/d) (full/gd); hadamard: "
                   "||s0||; geometric ranges welcome (init_scale=1e-3:1e0:7). The default "
                   "shown is full's; gd and hadamard default to 0.75"),
    "seeds": ("seeds", "one integer n = seeds 0..n-1; a range or list (seeds=3..7, seeds=0,5) "
              "= those seeds. PRNGKey(seed) draws the init; hadamard: the random direction"),
    "K": ("list", "number of classes (a power of two for hadamard)"),
    "per_class": ("list", "samples per class n (full/gd)"),
    "t1": ("real", "final time: GF time t (full, gd: epochs = round(t1/lr)); reduced time "
           "tau (hadamard). The default shown is full's; gd and hadamard default to 1e5"),
    "dtype": ("choice", "float64 | float32 (the initial model is cast; float32 for GPUs)"),
    "out": ("text", "run folder (default runs/<mode>-<10-digit hash of the config>)"),
    "rtol": ("real", "solver relative tolerance (full, hadamard)"),
    "atol": ("real", "solver absolute tolerance (full, hadamard); auto = the solver's default: "
             "rtol x RMS entry of the initial parameters (full), 1e-12 (hadamard)"),
    "num_saves": ("int", "saved times: 0 and num_saves-1 log-spaced over 8 decades up to t1"),
    "max_steps": ("int", "solver steps per run before status max_steps (full, hadamard; "
                  "hadamard's default is 4096)"),
    "solver": ("choice", "auto | rosenbrock | tsit5 | kvaerno5. auto: full GF uses explicit "
               "Tsit5 when every depth is <= 4, else the stiff-safe Rosenbrock-W method (Krylov "
               "W, theory §2.6; all depths in one program); hadamard uses Tsit5"),
    "time_change": ("choice", "auto | bounded | relative | arc | loss | none | log: the "
                    "solver's time variable (theory §2; the path in GF time is the same). "
                    "bounded (full only): no division by the gradient norm, robust in the "
                    "small-init rank-one phases (theory §2.6). log (hadamard with Tsit5 only): "
                    "log singular values as the state, fewer steps. auto = bounded for full, "
                    "log for hadamard with Tsit5, relative otherwise"),
    "lr": ("real", "gd step size"),
    "weight_decay": ("real", "gd weight decay during the first decay_epochs epochs"),
    "decay_epochs": ("int", "gd epochs with weight decay"),
    "chunk": ("int", "most runs per batch (one checkpoint file each), bigger groups are split "
              "into equal chunks; auto = 4096, or for hadamard on a CPU max(1024, 2^17/K) per "
              "device (2^20/K^2 in all with solver=kvaerno5 or time_change=arc, loss, none)"),
    "fast_compile": ("choice", "auto | on | off: compile with XLA optimization level 0 (half "
                     "the compile time, 2-3x the run time); auto = on for gd batches of <= 64 "
                     "runs on CPU, off for full (one program for every depth), bigger batches, "
                     "hadamard and GPUs"),
    "direction": ("choice", "uniform | half_normal: the random initial singular values of "
                  "hadamard runs, U[0, 1] (the paper's Fig. 4 protocol) or |N(0, 1)| entries, "
                  "rescaled to ||s0|| = init_scale (uf.random_directions)"),
    "cache": ("text", "JAX persistent compilation cache folder: auto = <parent of out>/"
              ".jax_cache (reruns skip compiling), none = off"),
    "overwrite": ("bool", "0 | 1: an out= folder holding another config's results is refused "
                  "unless overwrite=1, which removes them first (not part of the results hash)"),
    "max_memory_gb": ("real", "memory limit of the resource guard in GB (auto = 80% of RAM): "
                      "a sweep whose results and largest batch need more is refused before it "
                      "starts"),
    "allow_big": ("bool", "0 | 1: skip the resource guard (memory, and work = runs x parameters "
                  "x max_steps, gd: t1/lr epochs, limit 1e15)"),
}
_RUN_KEYS = ("overwrite", "max_memory_gb", "allow_big")  # run_sweep options, not the config's
_MODE_ONLY = {
    "hadamard": {"width", "per_class", "lr", "weight_decay", "decay_epochs"},
    "full": {"lr", "weight_decay", "decay_epochs", "direction"},
    "gd": {"solver", "rtol", "atol", "max_steps", "time_change", "direction"},
}
_REAL_LIST_KEYS = {"init_scale"}  # also depth when mode=hadamard
_CHOICES = {"mode": MODES, "dtype": ("float64", "float32"),
            "solver": ("auto", "rosenbrock", "tsit5", "kvaerno5"),
            "time_change": SWEEP_TIME_CHANGES,
            "fast_compile": ("auto", "on", "off"), "direction": ("uniform", "half_normal")}


def _fmt_default(key: str) -> str:
    if key in ("overwrite", "allow_big"):
        return "0"
    if key in ("cache", "time_change", "max_memory_gb"):  # time_change: resolved per mode by SweepConfig
        return "auto"
    value = getattr(SweepConfig(), key)
    if value is None:
        return "runs/<mode>-<hash>" if key == "out" else "auto"  # atol, chunk
    if isinstance(value, tuple):
        ints = all(isinstance(v, int) for v in value)
        if ints and len(value) > 2 and list(value) == list(range(value[0], value[-1] + 1)):
            if key == "seeds" and value[0] == 0:
                return str(len(value))
            return f"{value[0]}..{value[-1]}"
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_text() -> str:
    """The `--help` text: usage, value syntax, every key with its default, outputs."""
    lines = [
        f"usage: python -m {_PROG} [key=value ...]",
        "",
        "Batched, sharded, resumable sweeps of the deep UFM. With no arguments it runs the",
        "paper's Fig. 2 experiment: full gradient flow from a small Gaussian init, K=8,",
        "per_class=1, width=32, init_scale=0.3, 5 seeds, depth=1..8, to GF time t1=1e8 (the",
        "effective rank has settled) with the Rosenbrock-W solver at rtol=1e-5: the effective",
        "rank of the class-mean logits falls from ~7 (neural collapse) at depth 1 to 1 at",
        "depths 6-8. One compiled program serves every depth; about 45 s on a 2-core laptop",
        "(reruns reuse the compilation cache). mode=gd and mode=hadamard default to width=16,",
        "init_scale=0.75, t1=1e5, max_steps=4096.",
        "",
        "values:  3   a list 1,2,4   an inclusive integer range 2..8 (mixable: 1..3,8)",
        "         a geometric range a:b:n = n log-spaced values from a to b (1e-3:1e0:7),",
        "         for real-valued keys (init_scale; depth with mode=hadamard)",
        "",
        "keys (shown with their defaults):",
    ]
    for key, (_, text) in _KEYS.items():
        lines.append(f"  {key}={_fmt_default(key)}")
        lines.append(textwrap.fill(text, 92, initial_indent=" " * 6, subsequent_indent=" " * 6))
    lines += [
        "",
        "Every configuration of the grid depth x width x init_scale x seeds x K x per_class runs;",
        "configurations sharing (depth, width, K, per_class) (hadamard: K) form one vmapped batch",
        "compiled once, sharded over jax.devices() (more CPU devices: XLA_FLAGS=",
        "--xla_force_host_platform_device_count=N; mode=hadamard takes one per core unless",
        "XLA_FLAGS sets it).",
        "",
        "run folder: config.json, parts/ (one netCDF per finished batch), results.nc (xarray",
        "Dataset: ufmflow.load_sweep(folder)), summary.txt and summary.csv (per configuration",
        "mean ± std over ok seeds of effective rank, NC1-3, normalized margin; failed runs),",
        "effective_rank_vs_<x>.png, singular_values.png.",
        "resume: rerunning the same command loads finished parts and computes only the rest.",
        "status per run: 0 ok, 1 max_steps, 2 nonfinite, 3 stalled; failed runs do not stop",
        "the sweep; summaries and plots use only runs with status ok (uf.ok_runs(ds) masks the",
        "others) and say on how many runs each point rests.",
        "safety: a lock (out/.lock, the PID) refuses a second process on the same folder; each",
        "part carries a sha256 checksum, verified with the values' ranges on load (a corrupt part",
        "is recomputed with a warning); Ctrl-C stops within 2 s keeping finished parts.",
        "Exit codes: 0 done, 2 bad input or refused (nothing written), 130 interrupted.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Value parsing: the shared grammar (`ufmflow.cli._grammar`) with the sweep's hints
# --------------------------------------------------------------------------------------------

_GEOMETRIC_HINT = " (init_scale, depth with mode=hadamard)"


def _number(key: str, token: str, text: str) -> float:
    return parse_number(key, token, text)


def _integer(key: str, token: str, text: str) -> int:
    hint = " (real depths need mode=hadamard)" if key == "depth" else ""
    return parse_integer(key, token, text, hint=hint)


def parse_values(key: str, text: str, *, real: bool) -> tuple:
    """Parse a list value: items `x`, `a..b` (inclusive integers) or `a:b:n` (geometric, only
    when `real`), separated by commas. Raises `UsageError` naming key and token."""
    hint = " (real depths need mode=hadamard)" if key == "depth" else ""
    return _parse_values(key, text, real=real, geometric_hint=_GEOMETRIC_HINT, int_hint=hint)


def parse_args(argv: list[str]) -> tuple[SweepConfig, str]:
    """`key=value` words -> `(SweepConfig, cache)`; raises `UsageError` on bad input (the
    config's own checks, `SweepInputError`, come back as `UsageError` with the same words)."""
    return parse_command(argv)[:2]


def parse_command(argv: list[str]) -> tuple[SweepConfig, str, dict]:
    """`key=value` words -> `(SweepConfig, cache, run options)` (options: `overwrite`,
    `max_memory_gb`, `allow_big`, passed to `run_sweep`); raises `UsageError`."""
    try:
        return _parse_args(argv)
    except SweepInputError as err:
        raise UsageError(err.key, err.token, err.reason) from err


def _check_range_sizes(key: str, text: str) -> None:
    """Refuse an integer range too long to materialize (`seeds=0..999999999`) before it is."""
    for item in text.split(","):
        lo, sep, hi = item.partition("..")
        if not sep:
            continue
        try:
            n = float(hi) - float(lo) + 1
        except ValueError:
            continue  # the grammar names the malformed token
        if n > MAX_SEEDS:
            raise UsageError(key, item, f"{n:.3g} values; at most {MAX_SEEDS} (split the sweep)")


def _parse_args(argv: list[str]) -> tuple[SweepConfig, str, dict]:
    given = split_words(argv, list(_KEYS))
    options: dict = {}
    for key in _RUN_KEYS:
        if key not in given:
            continue
        text = given.pop(key)
        if key == "max_memory_gb":
            if text != "auto":
                value = _number(key, text, text)
                if value <= 0:
                    raise UsageError(key, text, "must be a number of GB > 0 (or auto)")
                options[key] = value
        elif text.lower() in ("1", "true", "yes", "on"):
            options[key] = True
        elif text.lower() in ("0", "false", "no", "off"):
            options[key] = False
        else:
            raise UsageError(key, text, "give 1 or 0")
    mode = given.get("mode", SweepConfig.mode)
    if mode not in MODES:
        raise UsageError("mode", mode, f"choose one of {', '.join(MODES)}")
    for key in given:
        if key in _MODE_ONLY[mode]:
            raise UsageError(key, f"{key}={given[key]}", f"does not apply to mode={mode}")
    kwargs: dict = {}
    for key, text in given.items():
        kind = _KEYS[key][0]
        if kind in ("list", "seeds"):
            _check_range_sizes(key, text)
        if kind == "list":
            real = key in _REAL_LIST_KEYS or (key == "depth" and mode == "hadamard")
            kwargs[key] = parse_values(key, text, real=real)
        elif kind == "seeds":
            values = parse_values(key, text, real=False)
            kwargs[key] = values[0] if ("," not in text and ".." not in text) else values
        elif kind == "real":
            kwargs[key] = None if (key == "atol" and text == "auto") else _number(key, text, text)
        elif kind == "int":
            kwargs[key] = None if (key == "chunk" and text == "auto") else _integer(key, text, text)
        elif kind == "choice":
            if text not in _CHOICES[key]:
                raise UsageError(key, text, f"choose one of {', '.join(_CHOICES[key])}")
            kwargs[key] = text
        elif key == "out":
            if text == "":
                raise UsageError(key, text, "empty path")
            kwargs[key] = text
    cache = given.get("cache", "auto")
    if cache == "":
        raise UsageError("cache", cache, "give a folder, auto or none")
    config = SweepConfig(**kwargs)
    check_path(config.run_dir())
    return config, cache, options


def _enable_cache(cache: str, run_dir: Path) -> None:
    import jax

    if cache == "none":  # off, even where JAX_COMPILATION_CACHE_DIR names a folder
        jax.config.update("jax_enable_compilation_cache", False)
        return

    folder = run_dir.parent / ".jax_cache" if cache == "auto" else Path(cache)
    jax.config.update("jax_compilation_cache_dir", str(folder))


def _one_cpu_device_per_core(config: SweepConfig) -> None:
    """Hadamard and full-GF sweeps from the command line use every CPU core: one XLA host
    device per core (`ufmflow.use_cpu_cores`; the batch is sharded over devices, one device
    runs its share on one core, full-GF runs one after another). Measured on 2 cores: 4096
    hadamard runs in 2.75 s instead of 4.33 s; the default sweep (`depth=2..8`, 35 full-GF
    runs, cold) 33.6 s instead of 40.8 s end to end, with equal results (one compile either
    way). Only set before JAX's backend starts (the command-line entry point) and when the
    user's `XLA_FLAGS` do not choose a device count. (gd sweeps keep one device: their time is
    compiling one program per depth.)"""
    if config.mode in ("hadamard", "full"):
        use_cpu_cores()


def main(argv: list[str] | None = None, *, all_cores: bool = False) -> int:
    """Entry point; returns the exit code (0 done, 2 bad input with a one-line message on
    stderr, nothing written; `--help` prints to stdout and returns 0). `all_cores` (the command
    line): see `_one_cpu_device_per_core`; the command line also compiles each solver loop as
    one function (`ufmflow.fast_cpu_loops`) and runs LAPACK on one thread
    (`ufmflow.single_threaded_lapack`)."""
    try:
        return run_command(_PROG, argv, help_text, lambda args: _run(args, all_cores))
    except KeyboardInterrupt:  # before the sweep started (importing JAX, planning)
        print(f"\n{_PROG}: interrupted before the sweep started", file=sys.stderr)
        return 130


def _run(argv: list[str], all_cores: bool) -> int:
    config, cache, options = parse_command(argv)
    if all_cores:
        _one_cpu_device_per_core(config)
        fast_cpu_loops()
        single_threaded_lapack()
    import jax

    run_dir = config.run_dir()
    try:  # refuse before anything is written (run_sweep checks again, and takes the lock)
        check_config(run_dir, config, overwrite=options.get("overwrite", False))
        check_resources(config, max_memory_gb=options.get("max_memory_gb"),
                        allow_big=options.get("allow_big", False))
        units = plan_units(config)
    except SweepInputError as err:
        raise UsageError(err.key, err.token, err.reason) from err
    _enable_cache(cache, run_dir)
    devices = jax.devices()
    print(f"{_PROG}: mode={config.mode}, {config.num_runs} runs in {len(units)} "
          f"batches on {len(devices)} {devices[0].platform} device(s) -> {run_dir}", flush=True)
    stats: dict = {}
    ds = _interruptible(lambda: run_sweep(config, progress=True, write=True, stats=stats,
                                          **options), run_dir)
    if stats["resumed"]:
        print(f"{_PROG}: resumed {stats['resumed']} of {stats['units']} batches from "
              f"{run_dir / 'parts'}")
    print(f"{_PROG}: computed {len(stats['computed'])} batches: "
          f"{', '.join(plan_units(config)[i].label for i in stats['computed']) or 'none'}")
    sys.stdout.write(sweep_summary_text(ds))
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    failed = int((ds["status"] != 0).sum())
    print(f"{_PROG}: {failed} of {config.num_runs} runs failed; wrote {run_dir}/ "
          f"({', '.join(files)})")
    return 0


def _interruptible(work, run_dir: Path):
    """`work()` with Ctrl-C handled by `ufmflow.cli._interrupt.interruptible` (exit 130 within
    2 s, finished parts kept, no temporary file or lock left); errors of `work` are raised here
    (`SweepInputError` as `UsageError`)."""
    try:
        return interruptible(
            work, lambda: f"{_PROG}: interrupted; finished parts are kept in {run_dir / 'parts'} "
            "(rerun the same command to resume)", lambda: (run_dir, run_dir / "parts"))
    except SweepInputError as err:
        raise UsageError(err.key, err.token, err.reason) from err
