"""Case (ii) of theory §2.6 after the escape: what the stiff solver's steps are up against.

An experiment, not a timing: from the state of K=8, n=1, width 8, depth 7, Gaussian scale 0.1
(seed 0) at GF time `--t-state` (default 1.2e6, inside the rank-one phase where `solve_flow`
takes about 6000 attempted steps per 1e6 of GF time), it measures

1. the dense autodiff Hessian of the loss (P = 512): its spectrum, and, along the eigenvector
   of its largest eigenvalue below `--stiff`, the curvature by central differences of the gradient
   and the change of the gradient along the reference path: whether the autodiff Hessian's
   small eigenvalues are the flow's or rounding (theory §2.6, "Projected explicit steps");
2. `solve_flow` from that state at rtol 1e-8 and 1e-9 to `--spans` (the reference; its
   attempted steps);
3. an idealized integrator, far too costly to be a method (a dense Hessian and its
   eigendecomposition at every Newton iterate): the eigendirections of the Hessian with
   eigenvalue above `--stiff` are held on their quasi-steady manifold `Q_S^T grad L = 0`
   by Newton's method with the Hessian re-evaluated at every iterate, the other directions
   take Heun's explicit steps (order 2) of the projected gradient; its error against the
   rtol-1e-9 reference for 1, 4 and 16 steps over each span; and the same with `--stiff 1e6`
   (only the six directions above 1e10 projected), to show that the directions between 50
   and 4200 are the flow's and must be held too.

Results (session 25, one core): `benchmarks/results/bench_case_ii_slow_manifold.json` (t =
1.2e6) and `..._2e6.json` (t = 2e6, `--stiff 50`); theory §2.6, "Projected explicit steps", reads them.

    python benchmarks/bench_case_ii_slow_manifold.py \
        --out benchmarks/results/bench_case_ii_slow_manifold.json
    python benchmarks/bench_case_ii_slow_manifold.py --t-state 2e6 --stiff 50 \
        --out benchmarks/results/bench_case_ii_slow_manifold_2e6.json

About three minutes each on one core. It prints a table and writes JSON.
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

import ufmflow as uf


def _flat(model):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    return np.asarray(flat), (lambda y: eqx.combine(unravel(jnp.asarray(y)), static))


class Idealized:
    """Projected Heun: the Hessian's directions above `stiff` held on their quasi-steady
    manifold by Newton's method (fresh dense Hessian per iterate), the rest explicit."""

    def __init__(self, make, stiff, newton_iters=8):
        loss = lambda y: make(y).loss()  # noqa: E731
        self.grad = jax.jit(jax.grad(loss))
        self.hess = jax.jit(jax.hessian(loss))
        self.stiff = stiff
        self.iters = newton_iters

    def _split(self, y):
        lam, vec = np.linalg.eigh(np.asarray(self.hess(y)))
        return lam, vec, lam > self.stiff

    def project(self, y):
        for _ in range(self.iters):
            lam, vec, s = self._split(y)
            c = vec[:, s].T @ np.asarray(self.grad(y)) / lam[s]
            y = y - vec[:, s] @ c
            if np.linalg.norm(c) <= 1e-15 * np.linalg.norm(y):
                break
        return y

    def slow_field(self, y):
        _, vec, s = self._split(y)
        g = np.asarray(self.grad(y))
        return -(g - vec[:, s] @ (vec[:, s].T @ g))

    def integrate(self, y, span, n):
        h = span / n
        y = self.project(y)
        for _ in range(n):
            k1 = self.slow_field(y)
            k2 = self.slow_field(self.project(y + h * k1))
            y = self.project(y + 0.5 * h * (k1 + k2))
        return y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--t-state", type=float, default=1.2e6)
    ap.add_argument("--spans", default="10,100,1e3,1e4,3e4")
    ap.add_argument("--stiff", type=float, default=1.0,
                    help="eigenvalues above this are projected (default: between the flow's "
                         "smallest stiff eigenvalue, ~58, and the rounding level, ~0.3)")
    ap.add_argument("--out", default="benchmarks/results/bench_case_ii_slow_manifold.json")
    args = ap.parse_args()
    spans = [float(s) for s in args.spans.split(",")]
    out = dict(config=dict(K=8, n=1, width=8, depth=7, scale=0.1, seed=args.seed,
                           t_state=args.t_state, stiff=args.stiff), jax=jax.__version__)

    model0 = uf.gaussian_init(jax.random.PRNGKey(args.seed), 8, 1, 8, 7, 0.1)
    t0 = time.perf_counter()
    sol = uf.solve_flow(model0, args.t_state, ts=jnp.array([0.0, args.t_state]))
    out["state"] = dict(status=sol.status_name(), attempted_steps=int(sol.num_steps),
                        wall_s=time.perf_counter() - t0, log_loss=float(sol.log_loss[-1]),
                        s1=float(sol.singular_values[-1, 0]), s2=float(sol.singular_values[-1, 1]))
    print("state:", out["state"])
    model = sol.model
    y0, make = _flat(model)

    # 1. The autodiff Hessian against differences of the gradient.
    ideal = Idealized(make, args.stiff)
    lam, vec = np.linalg.eigh(np.asarray(ideal.hess(y0)))
    below = np.where(lam < args.stiff)[0][-1]
    v = vec[:, below]
    fd = {}
    for eps in (1e-6, 1e-5, 1e-4):
        d = (np.asarray(ideal.grad(y0 + eps * v)) - np.asarray(ideal.grad(y0 - eps * v))) / (2 * eps)
        fd[f"{eps:g}"] = float(v @ d)
    out["hessian"] = dict(top16=[float(x) for x in lam[::-1][:16]],
                          above_1e6=int((lam > 1e6).sum()), above_1=int((lam > 1).sum()),
                          below_minus_1e_3=int((lam < -1e-3).sum()), lowest=float(lam[0]),
                          probe_autodiff=float(lam[below]), probe_central_differences=fd)
    print("Hessian, largest 16:", np.array2string(lam[::-1][:16], precision=3))
    print(f"along the eigenvector of {lam[below]:.3e} (the largest below --stiff): v'Hv by central "
          f"differences {fd}")

    # 2. The reference: solve_flow from the state.
    ts = jnp.array([0.0] + spans)
    refs = {}
    for rtol in (1e-8, 1e-9):
        t0 = time.perf_counter()
        r = uf.solve_flow(model, spans[-1], ts=ts, rtol=rtol, save_states=True,
                          max_steps=200_000)
        states = [_flat(jax.tree_util.tree_map(lambda a, i=i: a[i], r.states))[0]
                  for i in range(len(spans) + 1)]
        g_probe = [float(v @ np.asarray(ideal.grad(s))) for s in states]
        refs[rtol] = dict(states=states, log_loss=np.asarray(r.log_loss))
        out[f"reference_{rtol:g}"] = dict(status=r.status_name(), attempted_steps=int(r.num_steps),
                                          rejected=int(r.num_rejected),
                                          wall_s=time.perf_counter() - t0,
                                          grad_along_probe=g_probe,
                                          move_along_probe=[float(v @ (s - y0)) for s in states])
        print(f"solve_flow rtol {rtol:g}: {r.status_name()}, {int(r.num_steps)} attempted steps "
              f"to dt = {spans[-1]:g}; gradient along the probe {g_probe[0]:.4e} -> "
              f"{g_probe[-1]:.4e} while moving {v @ (states[-1] - y0):.3e} along it")
    ref, ref8 = refs[1e-9], refs[1e-8]
    out["reference_difference"] = [float(np.linalg.norm(a - b))
                                   for a, b in zip(ref["states"], ref8["states"])]

    # 3. The idealized projected explicit method.
    rows = []
    print(f"{'stiff':>7} {'span':>8} {'steps':>5} {'|dtheta| error':>15} {'log-loss error':>15} "
          f"{'|move|':>10} {'ref 1e-8 vs 1e-9':>17}")
    for stiff in (args.stiff, 1e6):
        method = Idealized(make, stiff)
        for k, span in enumerate(spans, start=1):
            for n in (1, 4, 16):
                if stiff == 1e6 and (n > 1 or span > 100):
                    continue  # it blows up at once: the point is made by the first rows
                y1 = method.integrate(y0, span, n)
                err = float(np.linalg.norm(y1 - ref["states"][k]))
                dll = float(make(y1).log_loss()) - float(ref["log_loss"][k])
                row = dict(stiff=stiff, span=span, steps=n, error=err, log_loss_error=dll,
                           move=float(np.linalg.norm(ref["states"][k] - y0)),
                           reference_difference=out["reference_difference"][k])
                rows.append(row)
                print(f"{stiff:7.0e} {span:8.0e} {n:5d} {err:15.3e} {dll:15.3e} "
                      f"{row['move']:10.3e} {row['reference_difference']:17.3e}", flush=True)
    out["idealized"] = rows
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, default=float)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
