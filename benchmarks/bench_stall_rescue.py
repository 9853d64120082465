"""The stall rescue on case (ii) of theory §2.6: without it and with it, per seed.

Runs `uf.solve_flow(model, 1e8)` at its defaults on the small-init deep configuration whose
runs stall in the rank-one phase (K=8, n=1, width 8, depth 7, Gaussian scale 0.1; theory §2.6
case ii, §2.7 "Stall rescue"), once with `stall_rescue=()` (the solver before session 24) and
once with the default rescue, and records per seed: status, attempted and rejected steps, the
rescue's returns, the last save time reached, the wall time of the call (first call of each
program includes its compile: run order is fixed, so the first seed of each column pays it),
and the log-loss and effective rank at t = 1e5, 1e6, 1e7, 1e8. With `--reference RTOL` each
seed is also solved at that tolerance (rescue on) and the differences are recorded. Prints a
table and writes JSON.

    python benchmarks/bench_stall_rescue.py --seeds 0,1,2,3,1004,1006 \
        --out benchmarks/results/bench_stall_rescue.json

Session 25 (projected explicit steps, theory §2.6) reran it with seeds
0,1,2,3,4,5,6,7,8,9,1004,1006 into `benchmarks/results/bench_stall_rescue_s25.json`.

The step counts are deterministic for a build (the stalls are set by rounding: another XLA
version or optimization level moves them).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import ufmflow as uf

jax.config.update("jax_enable_x64", True)

TS = (0.0, 1e5, 1e6, 1e7, 1e8)


def row(model, rescue, rtol):
    kwargs = {} if rescue else dict(stall_rescue=())
    start = time.perf_counter()
    sol = uf.solve_flow(model, TS[-1], ts=jnp.asarray(TS), rtol=rtol, **kwargs)
    jax.block_until_ready(sol.log_loss)
    wall = time.perf_counter() - start
    ll = np.asarray(sol.log_loss)
    erank = [float(uf.effective_rank_from_singular_values(s)) if np.all(np.isfinite(s))
             else float("nan") for s in np.asarray(sol.singular_values)]
    reached = float(np.asarray(TS)[np.isfinite(ll)].max())
    return dict(status=sol.status_name(), steps=int(sol.num_steps),
                rejected=int(sol.num_rejected), rescues=int(sol.num_rescues),
                last_save=reached, wall_s=wall, log_loss=ll[1:].tolist(), erank=erank[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="8,1,8,7,0.1", help="K,per_class,width,depth,scale")
    parser.add_argument("--seeds", default="0,1,2,3,1004,1006")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--reference", type=float, default=None,
                        help="also solve at this rtol and record the differences")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    k, n, width, depth = (int(x) for x in args.config.split(",")[:4])
    scale = float(args.config.split(",")[4])
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for rescue in (False, True):
        for seed in seeds:
            model = uf.gaussian_init(jax.random.PRNGKey(seed), k, n, width, depth, scale)
            r = dict(seed=seed, rescue=rescue, **row(model, rescue, args.rtol))
            if rescue and args.reference is not None:
                ref = row(model, True, args.reference)
                r["reference"] = ref
                r["d_log_loss"] = float(np.nanmax(np.abs(np.subtract(r["log_loss"],
                                                                     ref["log_loss"]))))
                r["d_erank"] = float(np.nanmax(np.abs(np.subtract(r["erank"], ref["erank"]))))
            rows.append(r)
            print(f"seed {seed:5d} rescue {str(rescue):5s} {r['status']:9s} steps {r['steps']:6d}"
                  f" rejected {r['rejected']:6d} returns {r['rescues']} last save "
                  f"{r['last_save']:.0e} wall {r['wall_s']:6.1f} s  log-loss at 1e8 "
                  f"{r['log_loss'][-1]:.5f} erank {r['erank'][-1]:.6f}"
                  + (f"  vs rtol {args.reference:g}: {r['d_log_loss']:.1e} / {r['d_erank']:.1e}"
                     if "d_log_loss" in r else ""), flush=True)
    ok = [r for r in rows if r["rescue"] and r["status"] == "ok"]
    print(f"with the rescue: {len(ok)} of {len(seeds)} ok; without: "
          f"{sum(r['status'] == 'ok' for r in rows if not r['rescue'])} of {len(seeds)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(config=dict(K=k, per_class=n, width=width, depth=depth,
                                       scale=scale, rtol=args.rtol, ts=TS,
                                       reference=args.reference),
                           jax_version=jax.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
