"""Case (ii)'s rank-one valley with the stiff set re-found at every Newton iterate (theory §2.6,
"Re-found stiff sets").

An experiment, not a timing. From a state inside the valley (or from the initialization, the
`row6` / `seed7_whole` cases) over a span of GF time it runs

1. `solve_flow` at its defaults and at `--ref-rtol` (the reference);
2. `solve_flow` with the package's form, `RosenbrockW(refind=True, explicit_kappa=k)` for each
   `--package-kappa` (the defaults otherwise, the default Krylov dimension for K): attempted
   steps, log-loss error and the parameters' RMS error against the reference;
3. the matrix-free prototype it came from, for each `--kappa` (none by default; `Refound`):
   session 25's idealized integrator (`bench_case_ii_slow_manifold.py`, a dense Hessian per
   Newton iterate) with the stiff set at a point `y` found by Lanczos (full
   reorthogonalization, `--m` Hessian-vector products) from the gradient there plus a fixed
   random vector, its Ritz pairs with `lam h > kappa` projected by Newton's method, re-found
   at every iterate (`--iters`), and explicit Bogacki-Shampine 3(2) steps of the slow field in
   plain GF time with the usual controller. No Rosenbrock steps at all: it shows what the
   re-found sets do alone (in a whole run it stalls right after the escape, where a mode with
   `lam h` just below `kappa` holds the explicit steps at their stability limit).

The states: K=8, n=1, width 8, depth 7, scale 0.1, seeds 0 (theory §2.6's case (ii)) and 7,
reached by `solve_flow` at its defaults. Session 30 (one core):

    python benchmarks/bench_valley_refound.py --case seed7 --package-kappa 2.5,10 --kappa 10 \
        --out benchmarks/results/bench_valley_refound_seed7.json

about three minutes (the rtol-1e-8 reference is 56,443 steps). It prints a line per solve and
writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import ufmflow as uf
from ufmflow.solvers._flow import default_atol, default_krylov_dim, flow_solver
from ufmflow.solvers._stacked import stack_model

jax.config.update("jax_enable_x64", True)

_BS3_A = [[0.5, 0.0, 0.0], [0.0, 0.75, 0.0], [2 / 9, 1 / 3, 4 / 9]]
_BS3_E = [2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8]


class Refound:
    """The prototype: `project`, `slow`, `step`, `integrate` (module docstring)."""

    def __init__(self, model, m=32, kappa=2.0, iters=6, rtol=1e-6, seed=0):
        state, layout = stack_model(model)
        flat, unravel = ravel_pytree(state)
        self.unravel, self.layout = unravel, layout
        self.y0 = flat
        self.m, self.kappa, self.iters, self.rtol = m, kappa, iters, rtol
        self.atol = float(default_atol(model, rtol))
        P = flat.shape[0]
        r = jax.random.normal(jax.random.PRNGKey(seed), (P,), flat.dtype)
        self.rand = r / jnp.linalg.norm(r)

        def log_loss(y):
            return layout.log_loss(unravel(y))

        def grad(y):
            ll, g = jax.value_and_grad(log_loss)(y)
            return jnp.exp(ll) * g

        def lanczos(y):
            g, hvp = jax.linearize(grad, y)
            s = g / jnp.maximum(jnp.linalg.norm(g), 1e-300) + 1e-2 * self.rand
            s = s / jnp.linalg.norm(s)
            V = jnp.zeros((m, P), y.dtype)
            AV = jnp.zeros((m, P), y.dtype)

            def body(i, carry):
                V, AV, v = carry
                w = hvp(v)
                V = V.at[i].set(v)
                AV = AV.at[i].set(w)
                for _ in range(2):  # classical Gram-Schmidt, twice
                    w = w - V.T @ (V @ w)
                nw = jnp.linalg.norm(w)
                # breakdown: continue with the random vector made orthogonal
                alt = self.rand - V.T @ (V @ self.rand)
                alt = alt - V.T @ (V @ alt)
                ok = nw > 1e-12 * jnp.linalg.norm(AV[i]) + 1e-300
                v = jnp.where(ok, w / jnp.where(ok, nw, 1.0), alt / jnp.linalg.norm(alt))
                return V, AV, v

            V, AV, _ = jax.lax.fori_loop(0, m, body, (V, AV, s))
            T = V @ AV.T
            lam, Y = jnp.linalg.eigh(0.5 * (T + T.T))
            return lam, Y.T @ V, g

        self.grad = jax.jit(grad)
        self.lanczos = jax.jit(lanczos)
        self.log_loss = jax.jit(log_loss)
        self.hvps = 0

    def stiff(self, y, h):
        lam, Q, g = self.lanczos(y)
        self.hvps += self.m
        s = np.asarray(lam) * h > self.kappa
        return np.asarray(lam)[s], np.asarray(Q)[s], np.asarray(g), np.asarray(lam)

    def project(self, y, h):
        """Newton onto the quasi-steady manifold, stiff set re-found at every iterate."""
        corr = np.zeros_like(y)
        for _ in range(self.iters):
            lam, Q, g, _ = self.stiff(y, h)
            if lam.size == 0:
                return y, corr, Q, g
            c = (Q @ g) / lam
            corr = Q.T @ c
            y = y - corr
            if np.linalg.norm(corr) <= 1e-14 * np.linalg.norm(y):
                break
        lam, Q, g, _ = self.stiff(y, h)
        return y, corr, Q, g

    @staticmethod
    def slow(Q, g):
        return -(g - Q.T @ (Q @ g))

    def step(self, y0, k0, h):
        ks = [k0]
        corr = None
        for row in _BS3_A:
            yi = y0 + h * sum(a * k for a, k in zip(row, ks))
            yi, corr, Q, g = self.project(yi, h)
            ks.append(self.slow(Q, g))
        err = h * sum(e * k for e, k in zip(_BS3_E, ks)) + corr
        scale = self.atol + self.rtol * np.maximum(np.abs(y0), np.abs(yi))
        return yi, ks[-1], float(np.sqrt(np.mean((err / scale) ** 2)))

    def integrate(self, span, h0=1.0, max_steps=5000, log=None):
        y = np.asarray(self.y0)
        y, _, Q, g = self.project(y, h0)
        k = self.slow(Q, g)
        t, h, acc, rej = 0.0, h0, 0, 0
        while t < span and acc + rej < max_steps:
            h = min(h, span - t)
            y1, k1, e = self.step(y, k, h)
            if np.isfinite(e) and e <= 1.0:
                t, y, k = t + h, y1, k1
                acc += 1
                if log is not None:
                    log.append((t, h, e))
            else:
                rej += 1
            fac = 5.0 if e == 0 else 0.9 * (e if np.isfinite(e) else 1e10) ** (-1 / 3)
            h = h * min(5.0, max(0.2, fac))
        return y, t, acc, rej


def _eff_rank(layout, state):
    return float(uf.effective_rank(layout.class_mean_logits(state)))


CASES = {
    # name: (K, n, width, depth, scale, seed, t_state, span)
    "seed0": (8, 1, 8, 7, 0.1, 0, 1.2e6, 3e5),
    "seed0_2e6": (8, 1, 8, 7, 0.1, 0, 2e6, 1e4),
    "seed7": (8, 1, 8, 7, 0.1, 7, 5.62e5, 5.8e4),
    # whole runs from the initialization (t_state 0): grid row 6 (seed 1006) and seed 7
    "row6": (8, 1, 8, 7, 0.1, 1006, 0.0, 1e8),
    "seed7_whole": (8, 1, 8, 7, 0.1, 7, 0.0, 1e8),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="seed0", choices=sorted(CASES))
    ap.add_argument("--span", type=float, default=None)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--kappa", default="",
                    help="the prototype's thresholds (lam h > kappa), comma-separated; none by "
                         "default")
    ap.add_argument("--package-kappa", default="2.5",
                    help="RosenbrockW(refind=True)'s explicit_kappa values (-lam h gamma > "
                         "kappa), comma-separated")
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--ref-rtol", type=float, default=1e-8)
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--ref-max-steps", type=int, default=400_000)
    ap.add_argument("--h0", type=float, default=1.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    K, n, w, L, scale, seed, t_state, span = CASES[args.case]
    span = args.span or span
    out = dict(case=args.case, config=dict(K=K, n=n, width=w, depth=L, scale=scale, seed=seed,
                                           t_state=t_state, span=span), args=vars(args))
    model0 = uf.gaussian_init(jax.random.PRNGKey(seed), K, n, w, L, scale)
    t0 = time.perf_counter()
    if t_state > 0:
        sol = uf.solve_flow(model0, t_state, ts=jnp.array([0.0, t_state]))
        out["state"] = dict(status=sol.status_name(), attempted=int(sol.num_steps),
                            log_loss=float(sol.log_loss[-1]), s1=float(sol.singular_values[-1, 0]),
                            wall_s=time.perf_counter() - t0)
        print("state:", out["state"], flush=True)
        model = sol.model
    else:
        model = model0

    ts = jnp.array([0.0, span])
    rows = {}
    for label, kw in (("default", {}), ("reference", dict(rtol=args.ref_rtol))):
        t0 = time.perf_counter()
        r = uf.solve_flow(model, span, ts=ts, max_steps=args.ref_max_steps, **kw)
        rows[label] = r
        out[f"solve_flow_{label}"] = dict(status=r.status_name(), attempted=int(r.num_steps),
                                          rejected=int(r.num_rejected),
                                          log_loss=float(r.log_loss[-1]),
                                          eff_rank=_eff_rank(*stack_model(r.model)[::-1]),
                                          wall_s=time.perf_counter() - t0)
        print(label, out[f"solve_flow_{label}"], flush=True)
    y_ref = np.asarray(ravel_pytree(stack_model(rows["reference"].model)[0])[0])
    rms_ref = float(np.sqrt(np.mean(y_ref**2)))
    # The package's form: solve_flow with RosenbrockW(refind=True) at each --package-kappa
    out["solve_flow_refind"] = []
    for kappa in [float(k) for k in args.package_kappa.split(",") if k]:
        solver = dataclasses.replace(flow_solver("rosenbrock", default_krylov_dim(K, n)),
                                     refind=True, explicit_kappa=kappa)
        t0 = time.perf_counter()
        r = uf.solve_flow(model, span, ts=ts, max_steps=args.ref_max_steps, solver=solver)
        y = np.asarray(ravel_pytree(stack_model(r.model)[0])[0])
        row = dict(explicit_kappa=kappa, status=r.status_name(), attempted=int(r.num_steps),
                   rejected=int(r.num_rejected), log_loss=float(r.log_loss[-1]),
                   log_loss_error=float(r.log_loss[-1]) - out["solve_flow_reference"]["log_loss"],
                   eff_rank=_eff_rank(*stack_model(r.model)[::-1]),
                   param_rms_error=float(np.sqrt(np.mean((y - y_ref) ** 2))) / rms_ref,
                   wall_s=time.perf_counter() - t0)
        out["solve_flow_refind"].append(row)
        print("refind", row, flush=True)
    y_def = np.asarray(ravel_pytree(stack_model(rows["default"].model)[0])[0])
    out["default_vs_reference"] = float(np.linalg.norm(y_def - y_ref))
    out["default_param_rms_error"] = float(np.sqrt(np.mean((y_def - y_ref) ** 2))) / rms_ref
    print(f"default vs reference |dtheta| {out['default_vs_reference']:.3e}", flush=True)

    out["prototype"] = []
    for kappa in [float(k) for k in args.kappa.split(",") if k]:
        proto = Refound(model, m=args.m, kappa=kappa, iters=args.iters, rtol=args.rtol)
        log = []
        t0 = time.perf_counter()
        y, t, acc, rej = proto.integrate(span, h0=args.h0, max_steps=args.max_steps, log=log)
        wall = time.perf_counter() - t0
        ll = float(proto.log_loss(jnp.asarray(y)))
        row = dict(kappa=kappa, m=args.m, iters=args.iters, rtol=args.rtol, t_reached=t,
                   accepted=acc, rejected=rej, hvps=proto.hvps, wall_s=wall,
                   log_loss=ll, log_loss_error=ll - out["solve_flow_reference"]["log_loss"],
                   eff_rank=_eff_rank(proto.layout, proto.unravel(jnp.asarray(y))),
                   param_error=float(np.linalg.norm(y - y_ref)) if t >= span else None,
                   steps=[list(x) for x in log[:: max(1, len(log) // 40)]])
        out["prototype"].append(row)
        print({k: v for k, v in row.items() if k != "steps"}, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1, default=float)
        print("wrote", args.out)


if __name__ == "__main__":
    main()
