"""What holds a depth-16 run after its escape from the origin (session 32): an analog of row 38.

An experiment, not a timing. Grid row 38 (K=16, n=4, width 256, depth 16, Gaussian 0.5, seed
1038; P = 1e6, several seconds per step on one core) stops moving at t = 3.42e4 right after a
blow-up escape from the origin (README, "All 60 rows"). The same configuration at width 16
(P = 5120, same seed) escapes at t = 1.2e4 and is cheap enough to look at. This measures

1. the run from t = 0 to `--t-end` at `solve_flow`'s defaults, saved every `--save-every`
   units of t after `--t-save`: log-loss and the class means' top singular values (where
   the escape is, and what follows);
2. from the saved state at `--t-state`, a solve over `--span` units of t with each of:
   the default; rtol 1e-7 and 1e-9; `refind=True`; `time_change="none"`; and `RosenbrockW`
   variants (Krylov dimension 160 and 256 without the stop rule, projection thresholds
   kappa 10 and 1 instead of 1e3, no projection):
   attempted and rejected steps, the end's log-loss and top singular value; whether the
   tolerance, the Krylov space or the projection sets the step;
3. with `--hessian`: the dense Hessian of the loss at that state (`jax.hessian`, P x P), how
   many eigenvalues exceed 1e8, 1e6, ..., 1e-2, and the largest and smallest.

    python benchmarks/bench_depth16_valley.py --hessian \
        --out benchmarks/results/bench_depth16_valley.json

About twenty minutes on one core. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

jax.config.update("jax_enable_x64", True)

import ufmflow as uf  # noqa: E402
from ufmflow.solvers import _flow  # noqa: E402
from ufmflow.solvers._rosenbrock import RosenbrockW  # noqa: E402


def variants(num_classes, per_class):
    m = _flow.default_krylov_dim(num_classes, per_class)
    base = dict(krylov_dim=m, stiff_projection=_flow.STIFF_PROJECTION, filter_error=True,
                adaptive_dim=True, tableau=_flow.TABLEAU, explicit_slow=_flow.EXPLICIT_SLOW)
    return {
        "default": {},
        "rtol 1e-7": dict(rtol=1e-7),
        "rtol 1e-9": dict(rtol=1e-9),
        "refind": dict(refind=True),
        "time_change none": dict(time_change="none"),
        "krylov 160, no stop rule": dict(
            solver=RosenbrockW(**dict(base, krylov_dim=160, adaptive_dim=False))),
        "krylov 256, no stop rule": dict(
            solver=RosenbrockW(**dict(base, krylov_dim=256, adaptive_dim=False))),
        "projection kappa 10": dict(solver=RosenbrockW(**dict(base, stiff_projection=10.0))),
        "projection kappa 1": dict(solver=RosenbrockW(**dict(base, stiff_projection=1.0))),
        "no projection": dict(
            solver=RosenbrockW(**dict(base, stiff_projection=None, explicit_slow=False))),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="16,4,16,16,0.5,1038",
                    help="K,n,width,depth,scale,seed")
    ap.add_argument("--t-save", type=float, default=1.15e4)
    ap.add_argument("--t-end", type=float, default=1.3e4)
    ap.add_argument("--save-every", type=float, default=50.0)
    ap.add_argument("--t-state", type=float, default=1.25e4)
    ap.add_argument("--span", type=float, default=100.0)
    ap.add_argument("--hessian", action="store_true", help="item 3 (a dense P x P Hessian)")
    ap.add_argument("--out", default="benchmarks/results/bench_depth16_valley.json")
    args = ap.parse_args()
    k, n, width, depth = (int(v) for v in args.config.split(",")[:4])
    scale, seed = float(args.config.split(",")[4]), int(args.config.split(",")[5])
    model = uf.gaussian_init(jax.random.PRNGKey(seed), k, n, width, depth, scale)
    grid = np.arange(args.t_save, args.t_end + 0.5 * args.save_every, args.save_every)
    ts = jnp.array(np.unique(np.concatenate([[0.0, args.t_state], grid])))
    t0 = time.perf_counter()
    sol = uf.solve_flow(model, args.t_end, ts=ts, max_steps=20_000, save_states=True)
    out = dict(config=dict(K=k, n=n, width=width, depth=depth, scale=scale, seed=seed),
               whole=dict(status=sol.status_name(), attempted=int(sol.num_steps),
                          rejected=int(sol.num_rejected), wall_s=time.perf_counter() - t0,
                          saves=[]),
               from_state=dict(t_state=args.t_state, span=args.span, runs=[]))
    print(f"K={k} n={n} width={width} depth={depth} scale={scale} seed={seed}: "
          f"{out['whole']['status']} to t = {args.t_end:g} in {out['whole']['attempted']} "
          f"attempted steps ({out['whole']['rejected']} rejected)")
    print(f"{'t':>9} {'log-loss':>10} {'s1':>9} {'s2':>9}")
    for i, t in enumerate(np.asarray(ts)):
        if not np.isfinite(float(sol.log_loss[i])):
            continue
        sv = np.asarray(sol.singular_values[i])
        out["whole"]["saves"].append(dict(t=float(t), log_loss=float(sol.log_loss[i]),
                                          s1=float(sv[0]), s2=float(sv[1])))
        print(f"{t:>9.0f} {float(sol.log_loss[i]):>10.6f} {sv[0]:>9.3g} {sv[1]:>9.3g}")
    i_state = int(np.argmin(np.abs(np.asarray(ts) - args.t_state)))
    state = jax.tree_util.tree_map(lambda a: a[i_state] if isinstance(a, jax.Array) else a,
                                   sol.states)
    if args.hessian:
        params, static = eqx.partition(state, eqx.is_inexact_array)
        x0, unravel = ravel_pytree(params)
        hess = jax.jit(jax.hessian(lambda x: eqx.combine(unravel(x), static).loss()))(x0)
        ev = np.linalg.eigvalsh(np.asarray(hess))
        counts = {f"{c:g}": int((ev > c).sum()) for c in (1e8, 1e6, 1e4, 1e2, 1, 1e-1, 1e-2)}
        out["hessian"] = dict(P=int(x0.size), above=counts, largest=float(ev[-1]),
                              smallest=float(ev[0]), top_80=[float(v) for v in ev[::-1][:80]])
        print(f"Hessian at t = {float(ts[i_state]):g} (P = {x0.size}): eigenvalues above "
              + ", ".join(f"{c}: {v}" for c, v in counts.items())
              + f"; largest {ev[-1]:.3g}, smallest {ev[0]:.3g}")
    print(f"\nfrom t = {float(ts[i_state]):g}, {args.span:g} units of t:")
    print(f"{'variant':>26} {'status':>9} {'attempted':>9} {'rejected':>8} {'log-loss':>12} "
          f"{'s1':>12} {'wall':>7}")
    for name, kw in variants(k, n).items():
        t0 = time.perf_counter()
        s = uf.solve_flow(state, args.span, ts=jnp.array([0.0, args.span]), max_steps=20_000,
                          **kw)
        row = dict(variant=name, status=s.status_name(), attempted=int(s.num_steps),
                   rejected=int(s.num_rejected), log_loss=float(s.log_loss[-1]),
                   s1=float(s.singular_values[-1][0]), wall_s=time.perf_counter() - t0)
        out["from_state"]["runs"].append(row)
        print(f"{name:>26} {row['status']:>9} {row['attempted']:>9} {row['rejected']:>8} "
              f"{row['log_loss']:>12.9f} {row['s1']:>12.6g} {row['wall_s']:>6.0f}s", flush=True)
        with open(args.out, "w") as f:  # nothing lost on interruption
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
