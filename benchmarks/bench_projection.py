"""Projected stages of the stiff solver (theory §2.6, "Projected stages"): the default
`solve_flow` solver against the same Rosenbrock-W method without the projection.

Runs `uf.solve_flow(model, 1e8)` on the sample of issue 14's grid that
`bench_step_control.py` uses, at the default rtol, with the default solver (Krylov `W` with
`stiff_projection=STIFF_PROJECTION`) and with `uf.solvers.RosenbrockW(krylov_dim=m)` (the
plain W-method, the same `m = default_krylov_dim(K, n)`), and a reference with the plain method
at `--ref-rtol` (skipped with `--no-reference`). Records per configuration: status, attempted
and rejected steps, warm wall time (a second call; compile excluded), and the effective rank
and log-loss at t = 1e5 and 1e8, and each solver's largest difference from the reference. Prints a table and writes JSON.

    python benchmarks/bench_projection.py --out benchmarks/results/bench_projection.json

The step counts are deterministic; wall times are noisy on a shared machine. The committed
`benchmarks/results/bench_projection.json` (session 18) was taken before the Krylov dimension
grew with K: `m = 16` for every configuration, both solvers; other jobs shared the machine, so
its wall times are indicative only. `benchmarks/results/bench_projection_s19.json` (session
19, an idle machine) is the default solver of then: `m = default_krylov_dim(K)`, rejected
steps keeping `W`, the filtered error estimate (the "projected" column).
`benchmarks/results/bench_projection_s20.json` (session 20) adds the adaptive Krylov
dimension and the diagonal `V^T V` (both columns use the latter); other jobs shared the
machine for most of it, so its wall times are indicative only.
`benchmarks/results/bench_projection_s21.json` (session 21) has the sub-step saves as
iterations of the step loop: the projected column's saves are bit for bit session 20's in 12
of the 14 configurations; K=8, n=1, width 8, depth 5 differs by 7e-13 and K=16, n=1, width
16, depth 12 by 4.6e-6 in log-loss (1161 attempted steps against 1176); the largest
difference from the reference is 2.1e-4 as before.
"""

from __future__ import annotations

import argparse
import json

import jax

import ufmflow as uf
from ufmflow.solvers._flow import DEFAULT_RTOL, STIFF_PROJECTION, default_krylov_dim

from bench_step_control import SAMPLE, model_of, solve

jax.config.update("jax_enable_x64", True)


def _diff(a, b):
    if a["status"] != "ok" or b is None or b["status"] != "ok":
        return None
    return max(max(abs(x - y) for x, y in zip(a[k], b[k])) for k in ("effective_rank", "log_loss"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL)
    parser.add_argument("--ref-rtol", type=float, default=1e-8)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--max-steps", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="the first three configurations")
    parser.add_argument("--out", default="benchmarks/results/bench_projection.json")
    args = parser.parse_args()
    rows = []
    print(f"rtol {args.rtol:g}, stiff_projection {STIFF_PROJECTION:g}; reference: plain at "
          f"rtol {args.ref_rtol:g}; d = largest |difference| in effective rank or log-loss at "
          "t = 1e5, 1e8")
    print(f"{'config':<32} {'plain steps (rej)':>24} {'projected steps (rej)':>24}"
          f" {'d plain':>9} {'d proj':>9} {'wall plain/proj':>16}")
    for cfg in SAMPLE[:3] if args.quick else SAMPLE:
        model = model_of(*cfg)
        plain = uf.solvers.RosenbrockW(krylov_dim=default_krylov_dim(cfg[0], cfg[1]))
        old = solve(model, args.rtol, False, args.max_steps, solver=plain)
        new = solve(model, args.rtol, False, args.max_steps)
        ref = None
        if not args.no_reference and old["status"] == "ok":
            ref = solve(model, args.ref_rtol, False, 10 * args.max_steps, solver=plain)
        row = dict(config=list(cfg), plain=old, projected=new, reference=ref,
                   d_plain=_diff(old, ref), d_projected=_diff(new, ref))
        rows.append(row)
        fmt = lambda d: "-" if d is None else f"{d:9.1e}"  # noqa: E731
        print(f"{str(cfg):<32} {old['steps']:>10} ({old['rejected']:>5}) [{old['status']}]"
              f" {new['steps']:>10} ({new['rejected']:>5}) [{new['status']}]"
              f" {fmt(row['d_plain']):>9} {fmt(row['d_projected']):>9}"
              f" {old['wall_s']:7.2f}/{new['wall_s']:.2f}", flush=True)
    both_ok = [r for r in rows if r["plain"]["status"] == r["projected"]["status"] == "ok"]
    totals = {k: sum(r[k]["steps"] for r in both_ok) for k in ("plain", "projected")}
    walls = {k: sum(r[k]["wall_s"] for r in both_ok) for k in ("plain", "projected")}
    print(f"over the {len(both_ok)} runs ok under both: attempted steps plain {totals['plain']}, "
          f"projected {totals['projected']}; warm wall {walls['plain']:.1f} s against "
          f"{walls['projected']:.1f} s")
    with open(args.out, "w") as f:
        json.dump(dict(rtol=args.rtol, ref_rtol=args.ref_rtol, stiff_projection=STIFF_PROJECTION,
                       rows=rows, totals_ok_under_both=totals, wall_ok_under_both=walls), f,
                  indent=1)


if __name__ == "__main__":
    main()
