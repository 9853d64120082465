"""LAPACK on one thread (`uf.single_threaded_lapack`) against OpenBLAS's default threads.

On CPU, JAX's `eigh`/`eigvalsh`/`lu_factor` call the LAPACK that SciPy ships (OpenBLAS), whose
threads compete with XLA's own (theory §2.6, "LAPACK threads"). This measures, in one process,
alternating the two settings with `threadpoolctl` (so both see the same machine load):

1. the Arnoldi process of the stiff solver's Krylov `W` (`_krylov._arnoldi`, 128 directions,
   the adaptive stop's `eigvalsh` checks included) on the field of issue 14's K=64 target
   (K=64, n=1, width 64, depth 8, scale 0.1, P = 36,865) at its init: fastest of `--repeats`;
2. whole `uf.solve_flow` runs capped at `--max-steps`-like caps per case (grid rows of
   `bench_flow_grid.sample_grid(60, s)`, seed s + 1000 + row, and case (ii) as a small
   control), warm (the first call compiles and is reported apart), fastest of `--repeats`,
   with their steps and saved log-losses compared bit for bit.

    python benchmarks/bench_lapack_threads.py --out benchmarks/results/bench_lapack_threads.json

Prints a table (times in seconds, ratio = default / one thread) and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import ufmflow as uf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# (label, sample seed or None, grid row or model args, step cap)
CASES = [
    ("case (ii) K=8 n=1 w8 L7 0.1 seed 0", None, (0, 8, 1, 8, 7, 0.1), 1500),
    ("grid s2 row 30: K=16 n=4 w64 L5 0.1", 2, 30, 300),
    ("grid s2 row 58: K=64 n=1 w64 L3 0.01", 2, 58, 250),
    ("K=64 target: K=64 n=1 w64 L8 0.1 seed 0", None, (0, 64, 1, 64, 8, 0.1), 250),
]


def _settings():
    from threadpoolctl import threadpool_limits

    return {"default": contextlib.nullcontext,
            "one": lambda: threadpool_limits(1, user_api="blas")}


def _fastest(fn, setting, repeats):
    times, out = [], None
    for _ in range(repeats):
        with setting():
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn())
            times.append(time.perf_counter() - t0)
    return min(times), out


def _arnoldi_case(repeats):
    from jax.flatten_util import ravel_pytree

    from ufmflow.solvers import _krylov
    from ufmflow.solvers._flow import stacked_field
    from ufmflow.solvers._stacked import stack_model

    model = uf.gaussian_init(jax.random.PRNGKey(0), 64, 1, 64, 8, 0.1)
    state, layout = stack_model(model)
    vf = stacked_field(layout, "bounded")
    flat, unravel = ravel_pytree((state, jnp.log1p(1e3)))

    def field(x):
        return ravel_pytree(vf(0.0, unravel(x), None))[0]

    @jax.jit
    def arnoldi(x):
        jvp = jax.linearize(field, x)[1]
        return _krylov._arnoldi(jvp, field(x), 128, stop_scale=1e30)  # no early stop

    jax.block_until_ready(arnoldi(flat))
    settings = _settings()
    res = {name: [] for name in settings}
    for _ in range(repeats):  # alternate, so both see the same load
        for name, setting in settings.items():
            res[name].append(_fastest(lambda: arnoldi(flat), setting, 1)[0])
    return dict(case="Arnoldi, 128 directions, P = %d" % flat.shape[0],
                default_s=min(res["default"]), one_s=min(res["one"]))


def _solve_case(label, sample, spec, cap, repeats):
    if sample is None:
        seed, *args = spec
        model = uf.gaussian_init(jax.random.PRNGKey(seed), *args)
    else:
        import bench_flow_grid as grid

        model = grid.make_model(grid.sample_grid(60, sample)[spec], sample + 1000 + spec)

    def solve():
        return uf.solve_flow(model, 1e8, max_steps=cap)

    t0 = time.perf_counter()
    first = jax.block_until_ready(solve())
    first_s = time.perf_counter() - t0
    settings = _settings()
    res = {name: [] for name in settings}
    same = True
    for _ in range(repeats):
        for name, setting in settings.items():
            s, sol = _fastest(solve, setting, 1)
            res[name].append(s)
            same &= (int(sol.num_steps) == int(first.num_steps)
                     and np.array_equal(np.asarray(sol.log_loss), np.asarray(first.log_loss),
                                        equal_nan=True))
    return dict(case=label, status=first.status_name(), steps=int(first.num_steps),
                rejected=int(first.num_rejected), first_call_s=first_s,
                default_s=min(res["default"]), one_s=min(res["one"]), same_bit_for_bit=same)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="the Arnoldi case and the control only")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = [_arnoldi_case(max(args.repeats, 3))]
    print(f"{rows[0]['case']}: default {rows[0]['default_s']:.3f} s, one thread "
          f"{rows[0]['one_s']:.3f} s, ratio {rows[0]['default_s'] / rows[0]['one_s']:.2f}",
          flush=True)
    for label, sample, spec, cap in (CASES[:1] if args.quick else CASES):
        r = _solve_case(label, sample, spec, cap, args.repeats)
        rows.append(r)
        print(f"{label}: {r['status']} {r['steps']} attempted ({r['rejected']} rejected); "
              f"first call {r['first_call_s']:.1f} s; warm default {r['default_s']:.2f} s, "
              f"one thread {r['one_s']:.2f} s, ratio {r['default_s'] / r['one_s']:.2f}; "
              f"same bit for bit: {r['same_bit_for_bit']}", flush=True)
    print("\n| case | default (s) | one thread (s) | ratio |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['case']} | {r['default_s']:.3f} | {r['one_s']:.3f} | "
              f"{r['default_s'] / r['one_s']:.2f} |")
    if args.out:
        from threadpoolctl import threadpool_info

        with open(args.out, "w") as f:
            json.dump(dict(rows=rows, cpu_count=os.cpu_count(), blas=[
                {k: lib[k] for k in ("internal_api", "version", "num_threads")}
                for lib in threadpool_info() if lib["user_api"] == "blas"]), f, indent=1)


if __name__ == "__main__":
    main()
