"""Benchmark: `uf.solve_hadamard_many` called from Python against the sweep engine, same runs.

Issue 14 point 5: the batched API should be as fast as the command line. The case is the
hadamard sweep of `bench_sweep.py` (4096 runs: K=64, depth 1..8 with 512 random directions
each, init scale 0.1, tau 1e6, rtol 1e-6, 16 saves, float64, `time_change="log"`). Timed in
one process, after `uf.use_cpu_cores()` and `uf.fast_cpu_loops()` (what `python -m
ufmflow.sweep mode=hadamard` does before JAX starts):

- `sweep`: `uf.run_sweep(config, write=False)`, the command line's engine;
- `api`: `uf.solve_hadamard_many(s0, depth, tau1, time_change="log", ...)` on the sweep's own
  initial directions, which spreads the runs over every local device by itself;
- `api_one_device`: the same call in a child process with one CPU device (JAX's default
  without `use_cpu_cores`), the figure before this change.

Wall: fastest of `--repeats` warm calls (compile excluded, reported separately), results
pulled to the host; the ratios are taken in this one run. The API's results are checked
against the sweep's (the same runs: singular values to 1e-9 relative).

    python benchmarks/bench_batched_api.py                 # writes benchmarks/results/...
    python benchmarks/bench_batched_api.py --quick         # 256 runs, smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ufmflow as uf

_CHILD = "--child-one-device"


def _config(quick: bool) -> uf.SweepConfig:
    config = uf.SweepConfig(mode="hadamard", K=64, depth=tuple(float(d) for d in range(1, 9)),
                            init_scale=0.1, seeds=512, t1=1e6, rtol=1e-6, num_saves=16,
                            direction="half_normal")
    if quick:
        config = dataclasses.replace(config, seeds=tuple(range(32)))
    return config


def _inputs(config: uf.SweepConfig):
    """The sweep's runs as arrays: its initial directions (`hadamard_initial_direction` per
    seed, as the engine draws them) and depths, depth-major like the sweep's grid."""
    import jax
    import jax.numpy as jnp

    seeds = jnp.asarray(config.seeds)
    one = jax.jit(jax.vmap(lambda seed: uf.hadamard_initial_direction(
        jax.random.PRNGKey(seed), config.K[0], config.init_scale[0],
        distribution=config.direction)))(seeds)
    s0 = jnp.tile(one, (len(config.depth), 1))
    depth = jnp.repeat(jnp.asarray(config.depth), len(config.seeds))
    return s0, depth


def _time(fn, repeats: int):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        warm.append(time.perf_counter() - t0)
    return out, first, warm


def _api(config, s0, depth):
    return uf.solve_hadamard_many(s0, depth, config.t1, num_saves=config.num_saves,
                                  rtol=config.rtol, max_steps=config.max_steps,
                                  atol=1e-12 if config.atol is None else config.atol,
                                  time_change=config.time_change)


def child(quick: bool, repeats: int) -> dict:
    import jax

    config = _config(quick)
    s0, depth = _inputs(config)
    _, first, warm = _time(lambda: _api(config, s0, depth).s, repeats)
    return dict(devices=jax.local_device_count(), first_s=first, wall_s=min(warm),
                wall_repeats_s=warm)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="256 runs, for a smoke run")
    p.add_argument("--repeats", type=int, default=5, help="warm repeats (fastest reported)")
    p.add_argument("--out", default="benchmarks/results/bench_batched_api.json")
    p.add_argument(_CHILD, action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_one_device:
        uf.fast_cpu_loops()
        print(json.dumps(child(args.quick, args.repeats)))
        return 0

    devices = uf.use_cpu_cores()
    uf.fast_cpu_loops()
    import jax
    import numpy as np

    config = _config(args.quick)
    s0, depth = _inputs(config)
    ds, sweep_first, sweep_warm = _time(
        lambda: uf.run_sweep(config, progress=False, write=False), args.repeats)
    sol, api_first, api_warm = _time(lambda: _api(config, s0, depth), args.repeats)
    # the same runs: the sweep's singular values, depth-major in seed order
    sv_sweep = np.stack([ds["singular_values"].sel(depth=d).squeeze().values
                         for d in config.depth]).reshape(np.asarray(sol.s).shape)
    rel = float(np.max(np.abs(np.asarray(sol.s) - sv_sweep)
                       / np.maximum(np.abs(sv_sweep), 1e-300)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    res = subprocess.run([sys.executable, __file__, _CHILD, "--repeats", str(args.repeats)]
                         + (["--quick"] if args.quick else []), capture_output=True, text=True,
                         env=env, check=True)
    one = json.loads(res.stdout.strip().splitlines()[-1])
    result = dict(
        runs=int(s0.shape[0]), devices=jax.local_device_count(), requested_devices=devices,
        backend=jax.default_backend(),
        sweep=dict(first_s=sweep_first, wall_s=min(sweep_warm), wall_repeats_s=sweep_warm),
        api=dict(first_s=api_first, wall_s=min(api_warm), wall_repeats_s=api_warm),
        api_one_device=one,
        api_over_sweep=min(api_warm) / min(sweep_warm),
        one_device_over_api=one["wall_s"] / min(api_warm),
        max_rel_diff_api_vs_sweep=rel,
    )
    print(f"{result['runs']} runs, {result['devices']} {result['backend']} device(s)")
    print(f"{'path':<34}{'first call':>12}{'warm (min)':>12}")
    for name, r in (("sweep engine (run_sweep)", result["sweep"]),
                    ("solve_hadamard_many", result["api"]),
                    ("solve_hadamard_many, 1 device", one)):
        print(f"{name:<34}{r['first_s']:>11.2f}s{r['wall_s']:>11.3f}s")
    print(f"api / sweep: {result['api_over_sweep']:.2f}x the time; one device / api: "
          f"{result['one_device_over_api']:.2f}x; largest relative difference of a saved "
          f"singular value, api vs sweep: {rel:.2e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    assert rel < 1e-9, rel
    return 0


if __name__ == "__main__":
    sys.exit(main())
