"""Benchmark of `ufmflow.run_sweep` (the engine of `python -m ufmflow.sweep`).

Sweeps (`--cases`):

- `default`: the CLI's default sweep (paper Fig. 2: full GF, K=8, width 16, depth 1..8, 5 seeds,
  t1=1e5, rtol=1e-5; on a CPU compiled at XLA optimization level 0, `fast_compile=auto`).
- `default-opt`: the same compiled with full optimization (`fast_compile=off`): what bigger
  full-GF sweeps get (auto turns level 0 off above 64 runs per batch).
- `hadamard`: the reduced ODE from 4096 random initial directions (K=64, depth 1..8 with 512
  directions each, init_scale 0.1, to tau=1e6, rtol=1e-6), float64, with the sweep's default
  method (`solve_hadamard_many`, `time_change="log"`).
- `hadamard-f32`: the same in float32 (atol 1e-9); the scipy baseline stays float64.
- `hadamard-relative`: `hadamard` with `time_change="relative"` (the default before the log
  variables; `solve_hadamard`'s method).

For each: compile time (the first call, summed over its batches), wall time without compile
(fastest of the warm repeats of the whole `run_sweep`, results pulled to host; the median is
kept in the JSON; the repeats are spread over the case, a third before the loop baseline, a
third between the baselines and a third after them, so that both baselines and the sweep meet
the shared machine's slow and quiet spells alike), and two ratios measured in the same run:

- `x_loop`: the same configurations one at a time in a Python loop with the same solver and
  settings (`uf.solve_flow`; hadamard: `uf.solve_hadamard_many` called with one run, the
  sweep's own solver; jitted once, compile excluded): a subset is timed per depth and scaled
  by the number of runs at that depth;
- `x_scipy`: `scipy.integrate.solve_ivp` (RK45, same rtol/atol) looping over the inits, the
  field in numpy (reduced: `ds/dtau = s^alpha (1 - lam)`, `lam = H^T softmax(H s / K)`,
  `alpha = 2L/(L+1)`; full GF: the same relative-time-change field as `solve_flow`), a subset
  timed per depth and scaled. The scipy runs' final effective ranks are compared with the
  sweep's as an independent check (`scipy_max_abs_erank_diff`); for the hadamard cases both
  the sweep's and scipy's saved singular values are compared with an rtol-1e-11 solution
  (`sweep_rel_err_*`, `scipy_rel_err_*`: relative error, max over saves and values, then max
  and median over the timed runs), so the speed ratio is read next to the accuracy.

Subsets (`--subset`, `--scipy-subset`): 4 loop and 2 scipy runs per depth for the full-GF
cases (a scipy run takes seconds there), 16 and 32 for the hadamard cases (~15 ms each; with 2
per depth the scipy estimate moved by up to 20% between otherwise equal runs). Every hadamard
baseline run is timed twice and its faster time kept (full GF: once), as the sweep's fastest
warm repeat is.

`--batch-scaling` adds the time per run of hadamard batches of 1, 16, 256, 4096 (one depth),
for comparing CPU and GPU. `--quick` shrinks everything for a smoke run. Writes
`benchmarks/results/bench_sweep.json` (or `--out`). The committed results were made as

    python benchmarks/bench_sweep.py --cases default,default-opt \
        --out benchmarks/results/bench_sweep_full.json
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python benchmarks/bench_sweep.py \
        --cases hadamard,hadamard-f32,hadamard-relative --batch-scaling --repeats 12 \
        --out benchmarks/results/bench_sweep_hadamard.json

(the hadamard cases on one CPU device per core, as `python -m ufmflow.sweep mode=hadamard`
runs them). Like the command line, the benchmark compiles every solver loop as one function
(`uf.fast_cpu_loops()`, for the sweep and its loop baseline alike); `--xla-default` leaves
XLA's default, for measuring what that setting brings (in a separate process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import ufmflow as uf
from ufmflow.sweep import _execute, _modes

HERE = os.path.dirname(os.path.abspath(__file__))


def _median(xs):
    return float(statistics.median(xs))


def _warm_sweeps(config: uf.SweepConfig, repeats: int) -> list[float]:
    """Seconds of `repeats` warm calls of the whole sweep (in-process compile cache)."""
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        uf.run_sweep(config, progress=False, write=False)
        warm.append(time.perf_counter() - t0)
    return warm


def _wall_stats(warm: list[float]) -> dict:
    return dict(wall_s=min(warm), wall_median_s=_median(warm), wall_repeats_s=warm)


def time_sweep(config: uf.SweepConfig, repeats: int):
    """Cold call (compile measured), then `repeats` warm calls (in-process compile cache)."""
    _execute._compile_cached.cache_clear()
    stats: dict = {}
    t0 = time.perf_counter()
    ds = uf.run_sweep(config, progress=False, write=False, stats=stats)
    cold = time.perf_counter() - t0
    warm = _warm_sweeps(config, repeats)
    return ds, dict(compile_s=float(sum(stats["compile_s"])), cold_wall_s=cold,
                    **_wall_stats(warm))


def _best_of(fn, repeats=2):
    """Fastest of `repeats` timed calls of `fn()` (seconds) and its last result: the shared
    machine's noise only ever adds time, for the baselines as for the sweep."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ------------------------------------------------------------------------------------------
# Full GF: one-at-a-time loop and scipy
# ------------------------------------------------------------------------------------------


def _full_model(config, depth, scale, seed):
    return uf.gaussian_init(jax.random.PRNGKey(seed), config.K[0], config.per_class[0],
                            config.width[0], depth, scale)


def loop_full(config: uf.SweepConfig, per_depth: int):
    """Seconds per run, per depth, of `uf.solve_flow` called one run at a time."""
    out = {}
    pairs = [(s, seed) for s in config.init_scale for seed in config.seeds][:per_depth]
    for depth in config.depth:
        solver = _modes.solver_argument(_modes.solver_for(config, depth))

        def solve(model):
            return uf.solve_flow(model, config.t1, num_saves=config.num_saves, rtol=config.rtol,
                                 atol=config.atol, solver=solver, max_steps=config.max_steps,
                                 time_change=config.time_change)

        jax.block_until_ready(solve(_full_model(config, depth, *pairs[0])))  # compile
        times = []
        for scale, seed in pairs:
            model = _full_model(config, depth, scale, seed)
            jax.block_until_ready(model)
            t0 = time.perf_counter()
            jax.block_until_ready(solve(model))
            times.append(time.perf_counter() - t0)
        out[depth] = float(np.mean(times))
    return out


def _np_full_field(shapes, k, n, t_scale=None):
    """Relative-time-change GF field of the deep UFM in numpy (as `solve_flow`): state is the
    flattened factors and `w = log1p(t)`; `dtheta/dsigma = -||theta|| grad L / ||grad L||`,
    `dw/dsigma = ||theta|| / (||grad L|| (1 + t))`."""
    sizes = [a * b for a, b in shapes]
    labels = np.repeat(np.arange(k), n)
    onehot = np.eye(k)[:, labels]

    def unpack(y):
        out, i = [], 0
        for (a, b), sz in zip(shapes, sizes):
            out.append(y[i : i + sz].reshape(a, b))
            i += sz
        return out

    def field(sigma, y):
        fs = unpack(y[:-1])
        prefix = [fs[0]]
        for f in fs[1:]:
            prefix.append(f @ prefix[-1])
        z = prefix[-1]
        z = z - z.max(axis=0, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=0, keepdims=True)
        g = (p - onehot) / labels.size  # dL/dZ
        grads = [None] * len(fs)
        back = g  # (W_L ... W_{l+1})^T G
        for l in range(len(fs) - 1, -1, -1):
            below = prefix[l - 1] if l > 0 else None
            grads[l] = back @ below.T if l > 0 else back
            back = fs[l].T @ back
        grad = np.concatenate([gr.ravel() for gr in grads])
        theta_norm = np.linalg.norm(y[:-1])
        gnorm = np.linalg.norm(grad)
        t = np.expm1(y[-1])
        return np.concatenate([-theta_norm * grad / gnorm, [theta_norm / (gnorm * (1.0 + t))]])

    return field, unpack


def _np_effective_rank(sv):
    p = sv / sv.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def scipy_full(config: uf.SweepConfig, ds, per_depth: int, cap_s: float):
    """Seconds per run, per depth, of RK45 on the numpy field; also |erank - sweep's erank|."""
    from scipy.integrate import solve_ivp

    k, n, d = config.K[0], config.per_class[0], config.width[0]
    pairs = [(s, seed) for s in config.init_scale for seed in config.seeds][:per_depth]
    per_run, diffs, capped = {}, [], []
    for depth in config.depth:
        shapes = [(d, k * n)] + [(d, d)] * (depth - 1) + [(k, d)]
        field, unpack = _np_full_field(shapes, k, n)
        times = []
        for scale, seed in pairs:
            model = _full_model(config, depth, scale, seed)
            y0 = np.concatenate([np.asarray(f).ravel() for f in model.factors] + [[0.0]])
            rms = np.sqrt(np.mean(y0[:-1] ** 2))
            atol = config.atol if config.atol is not None else config.rtol * rms
            w1 = np.log1p(config.t1)
            done = lambda s, y: y[-1] - w1  # noqa: E731
            done.terminal = True
            start = time.perf_counter()

            def guarded(s, y, start=start):
                if time.perf_counter() - start > cap_s:
                    raise TimeoutError
                return field(s, y)

            try:
                sol = solve_ivp(guarded, (0.0, 1e9), y0, method="RK45", rtol=config.rtol,
                                atol=atol, events=done)
                elapsed = time.perf_counter() - start
                y_end = sol.y_events[0][0] if sol.status == 1 else sol.y[:, -1]
                fs = unpack(y_end[:-1])
                z = fs[-1]
                for f in fs[-2::-1]:
                    z = z @ f
                zbar = z.reshape(k, k, n).mean(-1)
                er = _np_effective_rank(np.linalg.svd(zbar, compute_uv=False))
                ref = float(ds["effective_rank"].sel(depth=depth, init_scale=scale, seed=seed)
                            .squeeze())
                diffs.append(abs(er - ref))
            except TimeoutError:
                elapsed = cap_s
                capped.append(depth)
            times.append(elapsed)
        per_run[depth] = float(np.mean(times))
    return per_run, (max(diffs) if diffs else float("nan")), sorted(set(capped))


# ------------------------------------------------------------------------------------------
# Hadamard: one-at-a-time loop and scipy
# ------------------------------------------------------------------------------------------


def _s0(config, scale, seed):
    return np.asarray(uf.hadamard_initial_direction(jax.random.PRNGKey(seed), config.K[0], scale,
                                                 distribution=config.direction))


def _subset_by_depth(config, per_depth):
    pairs = [(s, seed) for s in config.init_scale for seed in config.seeds][:per_depth]
    return {depth: pairs for depth in config.depth}


def loop_hadamard(config: uf.SweepConfig, per_depth: int):
    atol = {} if config.atol is None else {"atol": config.atol}

    if _modes.hadamard_many_applies(config):
        def solve(s0, depth):  # the sweep's solver, one run per call
            return uf.solve_hadamard_many(s0[None], depth, config.t1, slots=1,
                                          num_saves=config.num_saves, rtol=config.rtol,
                                          max_steps=config.max_steps,
                                          time_change=config.time_change, **atol)
    else:
        def solve(s0, depth):
            return uf.solve_hadamard(s0, depth, config.t1, num_saves=config.num_saves,
                                     rtol=config.rtol, max_steps=config.max_steps,
                                     method="fast", time_change=config.time_change, **atol)

    subset = _subset_by_depth(config, per_depth)
    first = jnp.asarray(_s0(config, *subset[config.depth[0]][0]), config.dtype)
    jax.block_until_ready(solve(first, config.depth[0]))  # compile
    out = {}
    for depth, pairs in subset.items():
        times = []
        for scale, seed in pairs:
            s0 = jnp.asarray(_s0(config, scale, seed), config.dtype)
            times.append(_best_of(lambda: jax.block_until_ready(solve(s0, depth)))[0])
        out[depth] = float(np.mean(times))
    return out


def _rel_err(values, ref):
    """Largest relative error over saves and singular values (sorted, as the Dataset stores
    them; `s_0 = 0` and other exact zeros of the reference left out)."""
    values = np.sort(np.asarray(values, np.float64), axis=-1)
    ref = np.sort(np.asarray(ref, np.float64), axis=-1)
    pos = ref > 0
    return float(np.max(np.abs(values - ref)[pos] / ref[pos]))


def scipy_hadamard(config: uf.SweepConfig, ds, per_depth: int):
    """Scipy's time per run by depth, the largest |effective rank difference| to the sweep,
    and the accuracy of both at the saves: relative errors against a reference solution
    (`solve_hadamard_many`, `"relative"` time change, rtol 1e-11, float64), per run the largest
    over saves and singular values, then the max and the median over the timed runs."""
    from scipy.integrate import solve_ivp

    k = config.K[0]
    h = np.asarray(uf.sylvester_hadamard(k))
    atol = 1e-12 if config.atol is None else config.atol  # solve_hadamard's default
    ts = np.asarray(ds["time"].values)
    subset = _subset_by_depth(config, per_depth)
    starts = [(d, sc, seed) for d, pairs in subset.items() for sc, seed in pairs]
    ref = uf.solve_hadamard_many(
        np.stack([_s0(config, sc, seed) for _, sc, seed in starts]).astype(np.float64),
        np.asarray([d for d, _, _ in starts], np.float64), config.t1, ts=ts, rtol=1e-11,
        atol=1e-14)
    assert np.all(np.asarray(ref.status) == 0)
    ref_s = {key: np.asarray(ref.s[i]) for i, key in enumerate(starts)}
    errors = {"sweep": [], "scipy": []}

    def field(tau, s, alpha):
        z = h @ s / k
        q = np.exp(z - z.max())
        q /= q.sum()
        lam = h.T @ q
        return np.maximum(s, 0.0) ** alpha * (1.0 - lam)

    out, diffs = {}, []
    for depth, pairs in subset.items():
        alpha = 2 * depth / (depth + 1)
        times = []
        for scale, seed in pairs:
            s0 = _s0(config, scale, seed)
            elapsed, sol = _best_of(lambda: solve_ivp(
                field, (0.0, config.t1), s0, method="RK45", rtol=config.rtol, atol=atol,
                t_eval=ts, args=(alpha,)))
            times.append(elapsed)
            s_end = np.sort(sol.y[:, -1])[::-1]
            run = ds.sel(depth=depth, init_scale=scale, seed=seed).squeeze()
            diffs.append(abs(_np_effective_rank(s_end) - float(run["effective_rank"])))
            errors["scipy"].append(_rel_err(sol.y.T, ref_s[depth, scale, seed]))
            errors["sweep"].append(_rel_err(run["singular_values"].values,
                                            ref_s[depth, scale, seed]))
        out[depth] = float(np.mean(times))
    accuracy = {f"{who}_rel_err_{stat}": float(fn(e)) for who, e in errors.items()
                for stat, fn in (("max", np.max), ("median", np.median))}
    return out, max(diffs), None, accuracy


# ------------------------------------------------------------------------------------------


def _runs_per_depth(config):
    return config.num_runs // len(config.depth)


def bench_case(name, config, args, loop_fn, scipy_fn, subsets):
    """`subsets`: (loop, scipy) runs timed per depth. The sweep's warm repeats are spread over
    the case, a third before each baseline and a third after them, so that the shared
    machine's slow and quiet spells reach the sweep and its baselines alike."""
    thirds = [args.repeats // 3 + (i < args.repeats % 3) for i in range(3)]
    print(f"[{name}] {config.num_runs} runs: sweep (cold + {args.repeats} warm, spread over "
          "the case) ...", flush=True)
    ds, row = time_sweep(config, thirds[0])
    warm = row["wall_repeats_s"]
    row.update(case=name, runs=config.num_runs, failed=int((ds["status"] != 0).sum()))
    n = _runs_per_depth(config)
    row["loop_subset_per_depth"], row["scipy_subset_per_depth"] = subsets
    print(f"[{name}] one-at-a-time loop, {subsets[0]} run(s) per depth ...", flush=True)
    loop = loop_fn(config, subsets[0])
    row["loop_per_run_s"] = {str(k): v for k, v in loop.items()}
    row["loop_est_s"] = float(sum(v * n for v in loop.values()))
    warm += _warm_sweeps(config, thirds[1])
    print(f"[{name}] scipy solve_ivp RK45, {subsets[1]} run(s) per depth ...", flush=True)
    sc = scipy_fn(config, ds, subsets[1])
    warm += _warm_sweeps(config, thirds[2])
    row.update(_wall_stats(warm))
    row["per_run_ms"] = 1e3 * row["wall_s"] / config.num_runs
    row["x_loop"] = row["loop_est_s"] / row["wall_s"]
    per_run, row["scipy_max_abs_erank_diff"] = sc[0], sc[1]
    if len(sc) > 2 and sc[2] is not None:
        row["scipy_capped_depths"] = sc[2]
    if len(sc) > 3:
        row.update(sc[3])
    row["scipy_per_run_s"] = {str(k): v for k, v in per_run.items()}
    row["scipy_est_s"] = float(sum(v * n for v in per_run.values()))
    row["x_scipy"] = row["scipy_est_s"] / row["wall_s"]
    mean_er = ds["effective_rank"].where(ds["status"] == 0).mean(
        [d for d in ds["effective_rank"].dims if d != "depth"])
    row["effective_rank_by_depth"] = {str(k): float(v) for k, v in
                                      zip(ds["depth"].values, mean_er.values)}
    return row


def batch_scaling(sizes, repeats, tau1):
    rows = []
    for b in sizes:
        config = uf.SweepConfig(mode="hadamard", K=64, depth=4.0, init_scale=0.1, seeds=b,
                                t1=tau1, rtol=1e-6, num_saves=16, chunk=max(sizes),
                                direction="half_normal")
        _, row = time_sweep(config, repeats)
        rows.append(dict(batch=b, compile_s=row["compile_s"], wall_s=row["wall_s"],
                         per_run_ms=1e3 * row["wall_s"] / b))
        print(f"  batch {b:5d}: {rows[-1]['per_run_ms']:.3f} ms/run (compile "
              f"{row['compile_s']:.1f} s)", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    p.add_argument("--repeats", type=int, default=3, help="warm repeats (fastest reported)")
    p.add_argument("--subset", type=int, default=None, help="loop runs timed per depth")
    p.add_argument("--scipy-subset", type=int, default=None, help="scipy runs timed per depth")
    p.add_argument("--batch-scaling", action="store_true",
                   help="time per run of hadamard batches 1, 16, 256, 4096")
    p.add_argument("--cases", default="default,default-opt,hadamard,hadamard-f32",
                   help="default: the CLI default; default-opt: the same with fast_compile=off "
                        "(full XLA optimization: longer compile, faster runs); hadamard; "
                        "hadamard-f32: the same in float32 (atol 1e-9)")
    p.add_argument("--scipy-cap", type=float, default=60.0,
                   help="seconds before a full-GF scipy run is cut (reported as capped)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "bench_sweep.json"))
    p.add_argument("--xla-default", action="store_true",
                   help="do not call uf.fast_cpu_loops() (XLA's default loop compilation)")
    args = p.parse_args(argv)
    fast_loops = False if args.xla_default else uf.fast_cpu_loops()
    if args.quick:
        args.repeats = 1
    # Runs timed per depth (loop, scipy): a full-GF scipy run takes seconds, a reduced one
    # ~15 ms, so the hadamard cases time more of them (steadier estimates).
    full_subsets = (args.subset or (1 if args.quick else 4),
                    args.scipy_subset or (1 if args.quick else 2))
    hadamard_subsets = (args.subset or (1 if args.quick else 16),
                        args.scipy_subset or (1 if args.quick else 32))

    # The default sweep of the committed figures (session 15 moved the full GF's defaults to
    # width 32, init scale 0.3, t1 1e8, where the scipy baseline would take hours).
    default = uf.SweepConfig(width=16, init_scale=0.75, t1=1e5, max_steps=4096)
    hadamard = uf.SweepConfig(mode="hadamard", K=64, depth=tuple(float(d) for d in range(1, 9)),
                              init_scale=0.1, seeds=512, t1=1e6, rtol=1e-6, num_saves=16,
                              # the directions of the committed figures (the sweep's default
                              # was |N(0, I)| when they were measured)
                              direction="half_normal")
    if args.quick:
        default = dataclasses.replace(default, depth=(1, 2), seeds=(0, 1))
        hadamard = dataclasses.replace(hadamard, depth=(1.0, 4.0), seeds=tuple(range(16)))

    rows = []
    cases = args.cases.split(",")
    full_cases = {"default": default,
                  "default-opt": dataclasses.replace(default, fast_compile="off")}
    for name, config in full_cases.items():
        if name in cases:
            rows.append(bench_case(
                name, config, args, loop_full,
                lambda c, ds, m: scipy_full(c, ds, m, args.scipy_cap), full_subsets))
    hadamard_cases = {"hadamard": hadamard,
                      "hadamard-f32": dataclasses.replace(hadamard, dtype="float32", atol=1e-9),
                      "hadamard-relative": dataclasses.replace(hadamard, time_change="relative")}
    for name, config in hadamard_cases.items():
        if name in cases:
            rows.append(bench_case(name, config, args, loop_hadamard, scipy_hadamard,
                                   hadamard_subsets))
    scaling = None
    if args.batch_scaling:
        print("[batch scaling] hadamard K=64, depth 4, tau 1e6", flush=True)
        sizes = (1, 16, 64) if args.quick else (1, 16, 256, 4096)
        scaling = batch_scaling(sizes, max(1, min(args.repeats, 2)), 1e6)

    print()
    head = (f"{'case':<18} {'runs':>5} {'compile_s':>9} {'wall_s':>7} {'ms/run':>8} "
            f"{'loop_est_s':>10} {'x_loop':>7} {'scipy_est_s':>11} {'x_scipy':>8}")
    print(head)
    for r in rows:
        print(f"{r['case']:<18} {r['runs']:>5} {r['compile_s']:>9.1f} {r['wall_s']:>7.2f} "
              f"{r['per_run_ms']:>8.2f} {r['loop_est_s']:>10.2f} {r['x_loop']:>7.2f} "
              f"{r['scipy_est_s']:>11.2f} {r['x_scipy']:>8.2f}")
    for r in rows:
        print(f"{r['case']}: cold first call {r['cold_wall_s']:.1f} s; failed runs "
              f"{r['failed']}; scipy vs sweep max |d erank| {r['scipy_max_abs_erank_diff']:.2g}"
              + (f"; scipy capped at depths {r['scipy_capped_depths']}"
                 if r.get("scipy_capped_depths") else ""))
        if "sweep_rel_err_max" in r:
            print(f"  relative error at the saves vs an rtol-1e-11 solution (max / median "
                  f"over the {r['scipy_subset_per_depth']}x{len(r['effective_rank_by_depth'])}"
                  f" scipy runs): sweep {r['sweep_rel_err_max']:.2g} / "
                  f"{r['sweep_rel_err_median']:.2g}, scipy {r['scipy_rel_err_max']:.2g} / "
                  f"{r['scipy_rel_err_median']:.2g}")
    if scaling:
        print("batch scaling (hadamard, ms per run):",
              ", ".join(f"{s['batch']}: {s['per_run_ms']:.3f}" for s in scaling))

    meta = dict(
        backend=jax.default_backend(), devices=len(jax.devices()), machine=platform.machine(),
        cpus=os.cpu_count(), jax=jax.__version__, python=sys.version.split()[0],
        quick=args.quick, repeats=args.repeats, fast_cpu_loops=fast_loops,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        default_config=default.to_dict(), hadamard_config=hadamard.to_dict(),
        load_average=os.getloadavg(),
        notes="wall_s: fastest warm run_sweep (no compile, results on host); compile_s: sum "
              "over batches on the cold call; x_loop / x_scipy: estimated loop time over wall_s",
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(meta=meta, cases=rows, batch_scaling=scaling), f, indent=2)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
