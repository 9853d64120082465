"""Benchmark: the default sweep end to end against today's solver and against gradient descent.

The issue asks for "the default sweep end to end against the same sweep with today's solver and
against full-batch GD (optax, `uf.descend`) at the largest learning rate that reaches the same
effective rank within 0.1, ratios measured in one run". Every path is a cold command line run
as a subprocess, timed from process start to exit (imports, compile, runs, results.nc, summary
and plots), into a fresh run folder, and its final effective ranks are read back from that
folder (`uf.load_sweep`: `results.nc`, dims `K, per_class, width, depth, init_scale, seed`):

- `current`: `python -m ufmflow.sweep depth=2..8 width=16 init_scale=0.75 t1=1e5
  max_steps=4096 cache=none` with this tree on `PYTHONPATH` (`cache=none`: JAX's persistent
  compilation cache off, so the compile is cold). Those were the sweep's defaults until
  session 15; they are named because the full GF's defaults are now width 32, init scale 0.3,
  t1 1e8 (README, "Defaults"), a horizon gradient descent cannot reach (1e9 epochs at lr 0.1).
- `old`: the same command at `--old-commit` (0eee113, the code when the issue was filed: before
  the stacked-depth Krylov Rosenbrock-W change 5722e56), checked out into a temporary
  `git worktree add --detach` (removed afterwards, also on error or Ctrl-C) and put on
  `PYTHONPATH`. That CLI accepts `cache=none` but then only skips naming a cache folder, so the
  child also gets `JAX_ENABLE_COMPILATION_CACHE=false` (what today's `cache=none` sets) and a
  fresh empty `JAX_COMPILATION_CACHE_DIR` (the JSON records that it stayed empty). Its
  `SweepConfig()` defaults are read in a child process and compared with today's
  (`defaults`); `max_abs_erank_diff` is max |erank_old - erank_current| over (depth, seed).
  The grid's settings (K, width, init scale, seeds, t1, rtol) are the same in both trees (the
  command names the ones whose defaults changed since); the methods are not:
  there `time_change=auto` is `relative` for the full GF (today `bounded`) and `solver=auto`
  is Tsit5 up to depth 4 and the Gauss-Newton Rosenbrock-W from depth 5, one program per
  depth (today: one program for every depth, Krylov Rosenbrock-W when a depth exceeds 4).
- `gd lr=...`: the same grid with `mode=gd lr=<lr>` (`descend` for `round(t1/lr)` epochs, so
  its last save is at GF time ~t1), one cold command line per learning rate of `--lrs`.
  Per lr: `max_abs_erank_diff` = max over (depth, seed) of |erank_gd - erank_current| (the
  per-run criterion) and `max_abs_mean_erank_diff` = max over depths of |mean over seeds of
  erank_gd - the same mean of the flow| (the per-depth-mean criterion), and `diverged` (a run
  with status nonfinite or a non-finite effective rank).

`--today` measures today's default sweep instead (`python -m ufmflow.sweep depth=2..8
cache=none`: width 32, init scale 0.3, t1 1e8) against GD from the same inits (the same width
and scale named on its command line) to GF time `--gd-t1` (default 1e5, 1e6 epochs at lr 0.1):
its effective ranks at that time are compared with the flow's at t = 1e8 (the flow's ranks
move by at most 0.091 between 1e5 and 1e8 there, README "Defaults"). There is no old-solver
path; results go to `bench_default_sweep_today.json`.

The GD baseline is the largest lr on the ladder whose every (depth, seed) run is finite and
within `--tol` (0.1) of the flow's effective rank (per run, the stricter criterion, the one the
table's ratio uses); the largest lr by the per-depth-mean criterion is reported next to it. If
no lr qualifies, the JSON says so (`gd_baseline.*.lr = null`).

Ratios are `wall / wall(current)`, all measured in this one invocation. With `--repeats n`
each path runs n times, cold each time (a fresh run folder, no cache), the repeats interleaved
(current, old, every lr; then again) so that the shared machine's slow spells reach every path
alike; `wall_s` is the fastest, all are kept in the JSON, next to each child's CPU seconds
(`cpu_s`, user + system: on a shared machine `wall_s - cpu_s` is time spent waiting).
Children get this process's environment without `JAX_*`, `XLA_*` and `UFMFLOW_*` (no
inherited cache folder, XLA flags or multi-process settings) and with `PYTHONPATH` set to the
tree they run; CPU affinity is inherited (run under `taskset` to pin). `--quick` is a smoke
run: `depth=2..3 seeds=2 t1=1e3 width=16 init_scale=0.75`, two learning rates, results to
`bench_default_sweep_quick.json` unless `--out` is given.

    PYTHONPATH=$PWD python benchmarks/bench_default_sweep.py
    taskset -c 0 env PYTHONPATH=$PWD python benchmarks/bench_default_sweep.py --quick \
        --out /tmp/bench_default_sweep_quick.json                           # smoke

(the first writes `benchmarks/results/bench_default_sweep.json`). The committed results were made
in session 14 (commit 404c2a1 plus a docstring edit) as

    taskset -c 1 env PYTHONPATH=$PWD python benchmarks/bench_default_sweep.py \
        --lrs 0.1,0.2 --out benchmarks/results/bench_default_sweep.json

on one core of a 2-core machine while a long `solve_flow` ran on the other (8 min in all, most
of it gd at lr 0.1). Session 13's run at 53f22b0 (lrs 0.1-1.6, a slower machine) found lr
0.2, 0.4 and 0.8 diverging on 2, 14 and 21 of 35 runs; its figures are in the README.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OLD_COMMIT = "0eee113"
# The default sweep of the issue (README: `ufmflow.sweep depth=2..8`) as it was then, named
# key by key: session 15 moved the full GF's defaults to width 32, init scale 0.3, t1 1e8,
# which gradient descent (1e9 epochs at lr 0.1) and the issue-time solver cannot reach.
GRID = ["depth=2..8", "width=16", "init_scale=0.75", "t1=1e5", "max_steps=4096"]
TODAY_GRID = ["depth=2..8"]  # `--today`: the main job on today's defaults
QUICK_GRID = ["depth=2..3", "seeds=2", "t1=1e3", "width=16", "init_scale=0.75"]
LRS = "0.05,0.1,0.2,0.4,0.8,1.6,3.2"
QUICK_LRS = "0.2,3.2"
DROPPED_ENV_PREFIXES = ("JAX_", "XLA_", "UFMFLOW_")
# SweepConfig defaults the issue names; every other differing default is listed too.
COMPARED_DEFAULTS = ("K", "width", "init_scale", "seeds", "t1", "rtol")


def child_env(pythonpath: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(DROPPED_ENV_PREFIXES) and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(pythonpath)
    env.update(extra)
    return env


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(words: list[str], env: dict, workdir: Path, timeout: float) -> dict:
    """`python -m ufmflow.sweep *words out=<fresh folder>`, timed from start to exit."""
    workdir.mkdir(parents=True)
    out = workdir / "run"
    log = workdir / "log.txt"
    cmd = [sys.executable, "-m", "ufmflow.sweep", *words, f"out={out}"]
    with open(log, "w") as f:
        cpu0 = _children_cpu_s()
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, env=env, cwd=workdir, stdout=f, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
            status = "ok" if rc == 0 else f"exit {rc}"
        except subprocess.TimeoutExpired:
            status = f"timeout ({timeout:g} s)"
        wall = time.perf_counter() - t0
    row = dict(wall_s=wall, cpu_s=_children_cpu_s() - cpu0, status=status, run_dir=str(out))
    if status != "ok":
        row["log_tail"] = log.read_text()[-3000:]
        print(f"  {status}; log tail:\n{row['log_tail']}", flush=True)
    return row


def read_run(run_dir: str):
    """The run folder's Dataset and a summary of its provenance."""
    import ufmflow as uf

    ds = uf.load_sweep(run_dir)
    batches = json.loads(ds.attrs.get("batches", "{}"))
    info = dict(
        git_commit=ds.attrs.get("git_commit", "unknown"),
        solvers=ds.attrs.get("solvers", ""),
        compile_s=_num(sum(b.get("compile_s", math.nan) for b in batches.values())),
        run_s=_num(sum(b.get("run_s", math.nan) for b in batches.values())),
        batches=batches,
        failed=int((ds["status"] != 0).sum()),
        effective_rank_by_depth={str(int(k)): _num(v) for k, v in
                                 zip(ds["depth"].values, _by_depth(ds["effective_rank"]).values)},
        config=json.loads((Path(run_dir) / "config.json").read_text()),
    )
    return ds, info


def _num(value):
    value = float(value)
    return value if math.isfinite(value) else None  # JSON null, not NaN


def _by_depth(erank):
    other = [d for d in erank.dims if d != "depth"]
    return erank.mean(other, skipna=False)


def compare(ds, ref) -> dict:
    """Effective ranks of `ds` against the reference sweep's, over their common runs."""
    import xarray as xr

    a, b = xr.align(ds["effective_rank"], ref["effective_rank"], join="inner")
    finite = bool(np.all(np.isfinite(a.values)))
    diverged = (not finite) or bool((ds["status"] == 2).any())  # 2: nonfinite
    diff = float(np.abs(a - b).max()) if finite else None
    mean_diff = float(np.abs(_by_depth(a) - _by_depth(b)).max()) if finite else None
    return dict(max_abs_erank_diff=diff, max_abs_mean_erank_diff=mean_diff, diverged=diverged,
                runs_compared=int(a.size))


def sweep_defaults(pythonpath: Path) -> dict:
    code = "import json, ufmflow as uf; print(json.dumps(uf.SweepConfig().to_dict()))"
    # cwd: `python -c` puts the working directory ahead of PYTHONPATH on sys.path
    res = subprocess.run([sys.executable, "-c", code], env=child_env(pythonpath), cwd=pythonpath,
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare_defaults(new: dict, old: dict) -> dict:
    differ = {k: {"current": new.get(k), "old": old.get(k)} for k in sorted(set(new) | set(old))
              if new.get(k) != old.get(k)}
    return dict(equal=all(k not in differ for k in COMPARED_DEFAULTS), compared=COMPARED_DEFAULTS,
                differing=differ, current=new, old=old,
                note="SweepConfig() as each tree builds it: time_change is resolved ('auto' "
                     "-> the mode's default); solver stays 'auto', which each tree resolves per "
                     "batch (runs[*].solvers, runs[*].batches)")


class OldTree:
    """`git worktree add --detach <tmp> <commit>`, removed on exit (also on error)."""

    def __init__(self, commit: str, parent: Path):
        self.commit, self.path = commit, parent / f"ufmflow-{commit}"

    def __enter__(self) -> Path:
        res = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach",
                              str(self.path), self.commit], capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"git worktree add {self.commit} failed: {res.stderr.strip()}")
        return self.path

    def __exit__(self, *exc):
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(self.path)],
                       capture_output=True)
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)


def best_lr(rows: list[dict], key: str, tol: float):
    ok = [r for r in rows if r["status"] == "ok" and r.get(key) is not None and r[key] <= tol]
    return max(ok, key=lambda r: r["lr"]) if ok else None


def _fmt(row: dict, key: str, width: int, name: str) -> str:
    value = row.get(key)
    text = "(ref)" if name == "current" else "-" if value is None else f"{value:.2g}"
    return f"{text:>{width}}"


def _git(*args) -> str:
    res = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return res.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_paths(paths: dict, repeats: int, base: Path, timeout: float):
    """Every path `repeats` times, interleaved; rows of timings and the first finished run's
    Dataset per path."""
    rows = {name: dict(path=name, command="python -m ufmflow.sweep " + " ".join(words),
                       walls_s=[], cpus_s=[], statuses=[]) for name, (words, _) in paths.items()}
    data = {}
    for rep in range(repeats):
        for name, (words, env) in paths.items():
            print(f"[{rep + 1}/{repeats}] {name}: {' '.join(words)} ...", flush=True)
            res = run_cli(words, env, base / f"{name.replace(' ', '_')}-{rep}", timeout)
            row = rows[name]
            for key in ("wall", "cpu"):
                row[f"{key}s_s"].append(res[f"{key}_s"])
            row["statuses"].append(res["status"])
            if "log_tail" in res:
                row["log_tail"] = res["log_tail"]
            print(f"  {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, {res['status']}",
                  flush=True)
            if res["status"] == "ok" and name not in data:
                data[name], info = read_run(res["run_dir"])
                row.update(info)
    for row in rows.values():
        ok = [(w, c) for w, c, s in zip(row["walls_s"], row["cpus_s"], row["statuses"])
              if s == "ok"]
        row["wall_s"] = min(w for w, _ in ok) if ok else None
        row["cpu_s"] = min(c for _, c in ok) if ok else None
        row["status"] = "ok" if ok else row["statuses"][-1]
    return rows, data


def gd_baselines(rows: list[dict], lrs: list[float], tol: float) -> dict:
    out = {}
    for crit, key in (("per_run", "max_abs_erank_diff"),
                      ("per_depth_mean", "max_abs_mean_erank_diff")):
        best = best_lr(rows, key, tol)
        out[crit] = (dict(lr=best["lr"], wall_s=best["wall_s"], x_current=best["x_current"],
                          max_abs_diff=best[key]) if best else
                     dict(lr=None, note=f"no lr of {lrs} keeps every "
                          f"{'run' if crit == 'per_run' else 'depth mean'} finite and within "
                          f"{tol:g}"))
    return out


def print_table(rows: dict, baseline: dict, defaults: dict, args) -> None:
    print()
    print(f"{'path':<16} {'wall_s':>8} {'x_current':>9} {'cpu_s':>7} {'compile_s':>9} "
          f"{'max|d erank| run':>16} {'depth mean':>10}  status")
    for name, r in rows.items():
        def num(key, width, spec):
            value = r.get(key)
            return f"{'-' if value is None else format(value, spec):>{width}}"

        fails = f" ({r['failed']} failed)" if r.get("failed") else ""
        print(f"{name:<16} {num('wall_s', 8, '.1f')} {num('x_current', 9, '.2f')} "
              f"{num('cpu_s', 7, '.1f')} {num('compile_s', 9, '.1f')} "
              f"{_fmt(r, 'max_abs_erank_diff', 16, name)} "
              f"{_fmt(r, 'max_abs_mean_erank_diff', 10, name)}  {r['status']}{fails}")
    for crit, b in baseline.items():
        print(f"GD baseline ({crit.replace('_', ' ')}, tol {args.tol:g}): " + (
            f"lr={b['lr']:g}, {b['wall_s']:.1f} s, {b['x_current']:.2f}x the current sweep"
            if b["lr"] is not None else b["note"]))
    old = rows.get("old", {})
    if old.get("max_abs_erank_diff") is not None:
        print(f"old ({args.old_commit}) vs current: max |d erank| {old['max_abs_erank_diff']:.2g} "
              f"(goal 1e-4: {'met' if old['erank_goal_1e-4_met'] else 'not met'})")
    if defaults is None:  # --today: no old tree
        return
    differing = ", ".join(f"{k} (current {v['current']}, old {v['old']})"
                          for k, v in defaults["differing"].items())
    print(f"SweepConfig() defaults {'equal' if defaults['equal'] else 'DIFFER'} on "
          f"{', '.join(COMPARED_DEFAULTS)}; differing: {differing or 'none'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {' '.join(QUICK_GRID)}, lrs {QUICK_LRS}")
    p.add_argument("--repeats", type=int, default=1,
                   help="cold end-to-end runs of every path (fastest reported)")
    p.add_argument("--lrs", default=None, help=f"GD learning rates (default {LRS})")
    p.add_argument("--tol", type=float, default=0.1, help="effective-rank tolerance for GD")
    p.add_argument("--old-commit", default=OLD_COMMIT, help="today's solver: the issue's commit")
    p.add_argument("--timeout", type=float, default=7200.0,
                   help="seconds before one command line is stopped (reported as timeout)")
    p.add_argument("--keep", action="store_true", help="keep the run folders (path printed)")
    p.add_argument("--today", action="store_true",
                   help="today's default sweep (depth=2..8 on its defaults, t1 1e8) against GD "
                        "from the same inits to GF time --gd-t1; no old-solver path")
    p.add_argument("--gd-t1", type=float, default=1e5,
                   help="with --today: GD's final GF time (its effective rank is compared with "
                        "the flow's at t1)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick and args.today:
        p.error("--quick and --today do not combine: --quick is the earlier grid's smoke run")
    grid = QUICK_GRID if args.quick else TODAY_GRID if args.today else GRID
    gd_grid = grid
    if args.today:
        now = sweep_defaults(REPO)  # the full GF's defaults: GD starts from the same inits
        gd_grid = grid + [f"width={now['width'][0]}", f"init_scale={now['init_scale'][0]:g}",
                          f"t1={args.gd_t1:g}"]
    lrs = [float(x) for x in (args.lrs or (QUICK_LRS if args.quick else LRS)).split(",")]
    out_path = Path(args.out) if args.out else HERE / "results" / (
        "bench_default_sweep_quick.json" if args.quick else
        "bench_default_sweep_today.json" if args.today else "bench_default_sweep.json")

    import jax
    import jaxlib

    meta = dict(
        machine=platform.machine(), platform=platform.platform(), cpu=_cpu_model(),
        cpus=os.cpu_count(), affinity=sorted(os.sched_getaffinity(0)),
        python=sys.version.split()[0], jax=jax.__version__, jaxlib=jaxlib.__version__,
        git_commit=_git("rev-parse", "HEAD"), git_dirty=bool(_git("status", "--porcelain")),
        old_commit=_git("rev-parse", args.old_commit), quick=args.quick, repeats=args.repeats,
        grid=grid, gd_grid=gd_grid, today=args.today, lrs=lrs, tol=args.tol,
        timeout_s=args.timeout,
        load_average_start=os.getloadavg(),
        dropped_env=sorted(k for k in os.environ if k.startswith(DROPPED_ENV_PREFIXES)),
    )
    base = Path(tempfile.mkdtemp(prefix="bench_default_sweep-"))
    try:
        with contextlib.nullcontext() if args.today else OldTree(args.old_commit,
                                                                  base) as old_tree:
            paths = {"current": (grid + ["cache=none"], child_env(REPO))}
            if old_tree is not None:
                old_cache = base / "old-jax-cache"
                old_cache.mkdir()
                paths["old"] = (grid + ["cache=none"], child_env(
                    old_tree, JAX_COMPILATION_CACHE_DIR=str(old_cache),
                    JAX_ENABLE_COMPILATION_CACHE="false"))
            for lr in lrs:
                paths[f"gd lr={lr:g}"] = (gd_grid + ["mode=gd", f"lr={lr:g}", "cache=none"],
                                          child_env(REPO))
            rows, data = run_paths(paths, args.repeats, base, args.timeout)
            defaults = None
            if old_tree is not None:
                meta["old_cache_files_written"] = sum(1 for f in old_cache.rglob("*")
                                                      if f.is_file())
                defaults = compare_defaults(sweep_defaults(REPO), sweep_defaults(old_tree))
    finally:
        if args.keep:
            print(f"run folders kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    ref = data.get("current")
    if ref is None:
        raise SystemExit("the current sweep failed; nothing to compare (see its log above)")
    for name, row in rows.items():
        row["x_current"] = row["wall_s"] / rows["current"]["wall_s"] if row["wall_s"] else None
        if name != "current" and name in data:
            row.update(compare(data[name], ref))
            if row["diverged"]:
                row["status"] = "diverged"
    for name, row in rows.items():  # the results' provenance names the tree that ran
        expected = meta["old_commit"] if name == "old" else meta["git_commit"]
        row["ran_expected_commit"] = row.get("git_commit") == expected
        if name in data and not row["ran_expected_commit"]:
            print(f"warning: {name} ran commit {row.get('git_commit')}, not {expected}")
    if "old" in rows:
        old_diff = rows["old"].get("max_abs_erank_diff")
        rows["old"]["erank_goal_1e-4_met"] = old_diff is not None and old_diff <= 1e-4
    gd = []
    for lr in lrs:
        row = rows[f"gd lr={lr:g}"]
        row["lr"] = lr
        row.setdefault("diverged", None)  # None: the run did not finish
        gd.append(row)
    baseline = gd_baselines(gd, lrs, args.tol)
    print_table(rows, baseline, defaults, args)

    meta["load_average_end"] = os.getloadavg()
    meta["notes"] = (
        "wall_s: fastest cold end-to-end command line (process start to exit); cpu_s: the "
        "child's user + system CPU seconds (least over repeats; on a shared machine wall_s - "
        "cpu_s is roughly time spent waiting for a core); x_current: wall_s / wall_s of the "
        "current sweep, same invocation; max_abs_erank_diff: max over (depth, seed) |erank - "
        "current's|; max_abs_mean_erank_diff: max over depths of |seed-mean difference|; GD "
        "baseline: the largest lr meeting the tolerance (per_run: every run; per_depth_mean)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(meta=meta, defaults=defaults, runs=list(rows.values()),
                                   gd_baseline=baseline), indent=2, default=str))
    os.replace(tmp, out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
