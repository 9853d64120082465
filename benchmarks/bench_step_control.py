"""Step control of the stiff solver: integral against the default proportional-integral.

Runs `uf.solve_flow(model, 1e8, rtol=...)` on a sample of issue 14's grid twice, once with
integral control (`PIDController(pcoeff=0, icoeff=1)`, the default before session 16) and once
with the default (`pcoeff=STIFF_PCOEFF, icoeff=STIFF_ICOEFF`, theory §2.4), and records per
configuration: status, attempted and rejected steps, warm wall time, and the effective rank and
log-loss at t = 1e5 and 1e8 of both. Prints a table and writes JSON.

    python benchmarks/bench_step_control.py --rtol 1e-5 --out benchmarks/results/bench_step_control.json

`--quick` runs the first three configurations only. Wall times are warm (a second call) and
noisy on a shared machine; the step counts are deterministic, but a rounding-level change of
the tolerances moves them by a few percent: the integral controller built here (outside the
compiled solve) took 1176 attempted steps on the first configuration, the same controller
built inside it (`solve_flow` before session 16) 1160. Differences of a few percent between
the two columns are therefore noise. Session 16's `--quick` run (one core) is in
`benchmarks/results/bench_step_control_quick.json`: integral 1176 (441 rejected), 1442 (538),
299 (86); default 939 (189), 1100 (189), 291 (60); effective ranks within 3.1e-6.
"""

from __future__ import annotations

import argparse
import json
import time

import diffrax
import jax
import jax.numpy as jnp

import ufmflow as uf
from ufmflow.solvers._flow import STIFF_ICOEFF, STIFF_PCOEFF, default_atol, error_norm
from ufmflow.solvers._stacked import stack_model

jax.config.update("jax_enable_x64", True)

# (K, per_class, width, depth, Gaussian scale or "hadamard", seed): the sample of theory §2.4.
SAMPLE = [
    (8, 1, 32, 8, 0.3, 0), (8, 1, 32, 8, 0.3, 3), (4, 2, 8, 8, 0.5, 0), (8, 1, 32, 4, 0.3, 0),
    (4, 1, 16, 3, 1.0, 1), (8, 4, 8, 2, 0.01, 2), (8, 1, 16, 6, "hadamard", 0),
    (16, 1, 16, 12, 0.5, 0), (4, 1, 8, 16, 0.5, 4), (8, 1, 8, 5, 0.1, 5), (4, 4, 16, 7, 0.1, 6),
    (16, 1, 64, 3, 0.1, 7), (8, 1, 24, 8, 0.5, 101), (32, 1, 32, 2, 1.0, 8),
]


def model_of(k, n, width, depth, init, seed):
    key = jax.random.PRNGKey(seed)
    if init == "hadamard":
        s0 = uf.hadamard_initial_direction(key, k, 0.1)
        return uf.hadamard_init(jax.random.fold_in(key, 1), s0, n, width, depth)
    return uf.gaussian_init(key, k, n, width, depth, init)


def solve(model, rtol, integral, max_steps, solver=None):
    """One configuration's row: `solve_flow(model, 1e8)` with integral control or the default
    controller, and `solver` (`None`: the default), warm wall time."""
    ts = jnp.array([0.0, 1e5, 1e8])
    controller = None
    if integral:  # exactly the controller `solve_flow` built before session 16
        controller = diffrax.PIDController(rtol=jnp.asarray(rtol), atol=default_atol(model, rtol),
                                           pcoeff=0.0, icoeff=1.0,
                                           norm=error_norm(stack_model(model)[1]))
    run = lambda: uf.solve_flow(model, 1e8, ts=ts, rtol=rtol, controller=controller,  # noqa: E731
                                max_steps=max_steps, solver=solver)
    jax.block_until_ready(run().loss)  # compile
    start = time.perf_counter()
    sol = run()
    jax.block_until_ready(sol.loss)
    wall = time.perf_counter() - start
    ranks = [float(uf.effective_rank_from_singular_values(sol.singular_values[i])) for i in (1, 2)]
    return dict(status=sol.status_name(), steps=int(sol.num_steps),
                rejected=int(sol.num_rejected), wall_s=wall, effective_rank=ranks,
                log_loss=[float(sol.log_loss[1]), float(sol.log_loss[2])])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--max-steps", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/bench_step_control.json")
    args = parser.parse_args()
    rows = []
    print(f"rtol {args.rtol:g}; default controller pcoeff {STIFF_PCOEFF}, icoeff {STIFF_ICOEFF}")
    print(f"{'config':<32} {'integral steps (rej)':>22} {'PI steps (rej)':>18} {'d rank':>9}")
    for cfg in SAMPLE[:3] if args.quick else SAMPLE:
        model = model_of(*cfg)
        old = solve(model, args.rtol, True, args.max_steps)
        new = solve(model, args.rtol, False, args.max_steps)
        diff = max(abs(a - b) for a, b in zip(old["effective_rank"], new["effective_rank"]))
        rows.append(dict(config=list(cfg), integral=old, default=new, max_rank_diff=diff))
        print(f"{str(cfg):<32} {old['steps']:>12} ({old['rejected']:>5}) [{old['status']}]"
              f" {new['steps']:>8} ({new['rejected']:>5}) [{new['status']}] {diff:9.1e}",
              flush=True)
    both_ok = [r for r in rows if r["integral"]["status"] == r["default"]["status"] == "ok"]
    totals = {k: sum(r[k]["steps"] for r in both_ok) for k in ("integral", "default")}
    print(f"attempted steps over the {len(both_ok)} runs ok under both: integral "
          f"{totals['integral']}, default {totals['default']}")
    with open(args.out, "w") as f:
        json.dump(dict(rtol=args.rtol, pcoeff=STIFF_PCOEFF, icoeff=STIFF_ICOEFF, rows=rows,
                       totals_ok_under_both=totals), f, indent=1)


if __name__ == "__main__":
    main()
