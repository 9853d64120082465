"""Case (ii) of theory §2.6, seed 7's valley: what holds its steps (session 26).

An experiment, not a timing. K=8, n=1, width 8, depth 7, Gaussian scale 0.1, seed 7 escapes
near t = 4.8e5 and then takes about 100 attempted steps per 1000 of GF time. From its state at
`--t-state` (default 5.62e5, solved to at the defaults) to `--t-end` (default 6.2e5) this
measures

1. `solve_flow` with `RosenbrockW` variants of the default (projection iterations, Krylov
   dimension, projection threshold kappa, without the projected explicit steps, ROS34PW2):
   attempted and rejected steps, whether a setting of the method moves the count;
2. RODAS4 with the exact dense Jacobian of the solver's field as `W` and no projection (a
   true Rosenbrock method: no order loss from the Krylov `W` in the slow directions), capped
   at `--dense-cap` attempted steps;
3. the interval split in ten, each piece solved at the defaults from the state the whole
   solve saved there: steps per piece against the top singular value of the class means;
4. one step of the default method from the state (`--one-step`, sizes in solver time
   sigma): its error estimate and its true error (against the rtol-1e-9 solution), both
   scaled as the controller scales them at rtol 1e-6, and their parameter parts split along
   the dense Hessian's eigenvectors (very stiff, the band, the slow directions; unscaled
   norms); and (session 27) the scaled estimate split between the step's Krylov space and its
   complement, its time component, and the fraction of it along the parameter vector:
   where the estimate that sets the steps lives; and the bounded time change's speed bound
   against the real GF speed at the state (`time_change`);
5. (session 28) where a long step breaks: one step of sizes `--stage-point` (solver time) at
   the default projection threshold and at kappa = 1 (Krylov dimension 32), from the state
   (or from `--t-stage`, solved on from it at the defaults): the step's end log-loss and
   scaled estimate, and its first RODAS4 stage point, projected as the solver projects it:
   how far the logits moved there, how many directions are stiff on the step at the start and
   at the stage point (dense Jacobian, symmetric part, `h gamma |lam| > 1`), and the field's
   part along the stage point's stiff directions;
6. (session 28) the float64 gradient at that state against numpy's extended precision, whole
   and in the slow directions: how much of the field float64 resolves.

Results (session 26, one core): `benchmarks/results/bench_case_ii_seed7.json`; theory §2.6,
"Projected explicit steps" ("What it does not fix"), reads them. Items 4-6 alone (session 28,
`benchmarks/results/bench_case_ii_seed7_onestep_s28.json`, theory §2.6 "The barrier is in GF
time"):

    python benchmarks/bench_case_ii_seed7.py --only-one-step --one-step 1,10,100 \
        --stage-point 30,100,300,1000,3000 --out benchmarks/results/bench_case_ii_seed7_onestep_s28.json

    python benchmarks/bench_case_ii_seed7.py --out benchmarks/results/bench_case_ii_seed7.json

About ten minutes on one core (the dense-W solve is most of it). It prints a table and writes
JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import ufmflow as uf
import ufmflow.solvers._flow as _flow
from ufmflow.solvers import RosenbrockW
from ufmflow.core._model import log_loss_from_logits
from ufmflow.solvers._flow import _default_atol, flow_solver, stacked_field
from ufmflow.solvers import _krylov, _rodas4
from ufmflow.solvers._krylov import LowRankJacobian
from ufmflow.solvers._projection import stiff_projection
from ufmflow.solvers._stacked import stack_model

DEFAULT = dict(krylov_dim=16, stiff_projection=1e3, filter_error=True, adaptive_dim=True,
               tableau="rodas4", explicit_slow=True)
VARIANTS = {
    "default": {}, "projection_iters=4": dict(projection_iters=4),
    "projection_iters=6": dict(projection_iters=6), "krylov_dim=32": dict(krylov_dim=32),
    "kappa=1e2": dict(stiff_projection=1e2), "kappa=1e4": dict(stiff_projection=1e4),
    "no explicit steps": dict(explicit_slow=False), "ros34pw2": dict(tableau="ros34pw2"),
}


def _solve(model, span, solver, max_steps=20_000, **kw):
    t = time.perf_counter()
    sol = uf.solve_flow(model, span, ts=jnp.array([0.0, span]), max_steps=max_steps,
                        stall_rescue=(), solver=solver, **kw)
    jax.block_until_ready(sol.log_loss)
    return dict(status=sol.status_name(), steps=int(sol.num_steps),
                rejected=int(sol.num_rejected), log_loss_end=float(sol.log_loss[-1]),
                wall_s=time.perf_counter() - t)


def dense_rodas4():
    """RODAS4 whose `W` is the exact dense Jacobian of the field `solve_flow` integrates (the
    field is taken from `_flow.stacked_field` as the solve builds it)."""
    built = {}
    original = _flow.stacked_field

    def recording(layout, time_change):
        built["field"] = original(layout, time_change)
        return built["field"]

    def jacobian(y):
        x, unravel = ravel_pytree(y)
        field = built["field"]
        jac = jax.jacfwd(lambda z: ravel_pytree(field(0.0, unravel(z), None))[0])(x)
        return LowRankJacobian.from_matrices(jnp.eye(x.shape[0], dtype=x.dtype), jac)

    return recording, original, RosenbrockW(jacobian=jacobian, tableau="rodas4")


def one_step_split(model, t0, hs, rtol=1e-6):
    """Item 4 of the module docstring: one default step of each size in `hs` (solver time)."""
    state, layout = stack_model(model)
    y0 = (state, jnp.log1p(jnp.asarray(t0)))
    terms = diffrax.ODETerm(stacked_field(layout, "bounded"))  # solve_flow's default
    solver = flow_solver("rosenbrock")
    atol = float(_default_atol(state, layout, rtol))
    th0, unravel = ravel_pytree(state)
    hess = np.asarray(jax.hessian(lambda th: jnp.exp(layout.log_loss(unravel(th))))(th0))
    lam, vecs = np.linalg.eigh(hess)
    groups = {"very stiff (> 1e6)": lam > 1e6, "band (1e-2, 1e6]": (lam > 1e-2) & (lam <= 1e6),
              "slow (|lam| <= 1e-2)": np.abs(lam) <= 1e-2, "other": lam < -1e-2}
    # session 27: the bounded time change's speed bound B against the real GF speed
    z, pullback = jax.vjp(layout.logits, state)
    log_loss, grad_z = jax.value_and_grad(log_loss_from_logits)(z, layout.labels)
    (grad,) = pullback(grad_z)
    loss, xnorm = float(jnp.exp(log_loss)), float(jnp.sqrt(layout.sq_norm(state)))
    speed = loss * float(jnp.sqrt(layout.sq_norm(grad)))
    bound = loss * float(jnp.linalg.norm(grad_z)) * float(jnp.exp(layout.log_gain(state)))
    time_change = dict(loss=loss, norm=xnorm, speed=speed, bound=bound,
                       bound_over_speed=bound / speed, g_bounded_speed_term=xnorm / bound,
                       g_loss_floor=1.0 / loss, g_relative=xnorm / speed)
    print(f"time change at the state: loss {loss:.4f}, |x| {xnorm:.3f}, GF speed {speed:.3e}, "
          f"bound B {bound:.3e} ({bound / speed:.2e} x the speed): |x|/B {xnorm / bound:.2e}, "
          f"1/loss {1 / loss:.3f}, |x|/speed {xnorm / speed:.3e}")
    step = jax.jit(lambda h: solver.step(terms, 0.0, h, y0, None,
                                         solver.init(terms, 0.0, h, y0, None), False))
    x0 = np.asarray(ravel_pytree(y0)[0])
    rows = []
    print(f"\n{'h_sigma':>8}{'dt':>10}{'estimate':>11}{'true':>11}  per group: estimate / true")
    for h in hs:
        y1, err, _, krylov, _ = step(h)
        x1, e = np.asarray(ravel_pytree(y1)[0]), np.asarray(ravel_pytree(err)[0])
        scale = atol + rtol * np.maximum(np.abs(x0), np.abs(x1))
        basis = np.asarray(krylov.basis)
        basis = basis[np.sum(basis**2, axis=1) > 0]  # the rows built (adaptive dimension)
        pe = basis.T @ (basis @ e)
        xn = np.concatenate([x0[:-1], [0.0]]) / np.linalg.norm(x0[:-1])  # the parameters'
        split = dict(  # session 27: where the scaled estimate lies
            krylov_dim_built=int(basis.shape[0]),
            estimate_in_krylov=float(np.sqrt(np.mean((pe / scale) ** 2))),
            estimate_in_complement=float(np.sqrt(np.mean(((e - pe) / scale) ** 2))),
            estimate_time_part=float(abs(e[-1] / scale[-1]) / np.sqrt(x0.size)),
            estimate_along_parameters=float(abs(xn @ e) / np.linalg.norm(e)),
            parameters_in_krylov=float(np.linalg.norm(basis @ xn)))
        dt = float(jnp.expm1(y1[1])) - t0
        ref = uf.solve_flow(model, dt, ts=jnp.array([0.0, dt]), rtol=1e-9, max_steps=200_000)
        xr = np.asarray(ravel_pytree(stack_model(ref.model)[0])[0])
        d = x1[:-1] - xr
        row = dict(h_sigma=h, dt=dt, estimate=float(np.sqrt(np.mean((e / scale) ** 2))),
                   true=float(np.sqrt(np.sum((d / scale[:-1]) ** 2) / x0.size)), groups={},
                   **split)
        ce, cd = vecs.T @ e[:-1], vecs.T @ d
        for name, sel in groups.items():
            row["groups"][name] = dict(n=int(sel.sum()), estimate=float(np.linalg.norm(ce[sel])),
                                       true=float(np.linalg.norm(cd[sel])))
        row["time_change"] = time_change
        rows.append(row)
        parts = "; ".join(f"{k} n={g['n']}: {g['estimate']:.2e} / {g['true']:.2e}"
                          for k, g in row["groups"].items() if g["n"])
        print(f"{h:>8g}{dt:>10.4g}{row['estimate']:>11.3e}{row['true']:>11.3e}  {parts}",
              flush=True)
        print(f"{'':>8}scaled estimate in the Krylov space ({split['krylov_dim_built']} "
              f"directions) {split['estimate_in_krylov']:.3e}, complement "
              f"{split['estimate_in_complement']:.3e}, time {split['estimate_time_part']:.2e}; "
              f"{split['estimate_along_parameters']:.1%} of it along the parameter vector, "
              f"which is {split['parameters_in_krylov']:.1%} in the Krylov space", flush=True)
    return rows


def _stiff_directions(jac, h):
    """Eigenvectors (columns) of the symmetric part of a dense Jacobian whose eigenvalue has
    `h gamma |lam| > 1`: stiff on a step of size `h`."""
    lam, vecs = np.linalg.eigh(0.5 * (jac + jac.T))
    return vecs[:, np.abs(lam) * h * _rodas4.GAMMA > 1.0]


def stage_point(model, t0, hs, kappas=(1e3, 1.0), krylov_dim=32, rtol=1e-6):
    """Item 5 of the module docstring (session 28): where a long RODAS4 step from the state
    breaks. For each step size `h` (solver time) and projection threshold: the whole step's
    outcome (log-loss at its end, scaled error estimate), and its first stage point
    `x0 + 1.544 h v_0`, projected as the solver projects it: how far the logits moved, the
    Jacobian's stiff count (`h gamma |lam| > 1`, symmetric part of the dense Jacobian) there
    against the start's, and the field's part along the new stiff directions."""
    state, layout = stack_model(model)
    y0 = (state, jnp.log1p(jnp.asarray(t0)))
    field = stacked_field(layout, "bounded")
    terms = diffrax.ODETerm(field)
    x0, unravel = ravel_pytree(y0)
    vf = jax.jit(lambda x, t=0.0: ravel_pytree(field(0.0, unravel(x), None))[0])
    jac_of = jax.jit(jax.jacfwd(lambda x: vf(x)))
    f0 = vf(x0)
    z0 = layout.logits(state)
    atol = float(_default_atol(state, layout, rtol))
    ll0 = float(layout.log_loss(state))
    j0 = np.asarray(jac_of(x0))
    rows = []
    print(f"\n{'h_sigma':>8}{'kappa':>7}{'step log-loss':>15}{'estimate':>11}{'max |dZ|':>11}"
          f"{'stiff x0':>10}{'stiff stage':>12}{'|f| stage':>11}{'stiff part':>11}")
    for h in hs:
        count0 = _stiff_directions(j0, h).shape[1]
        for kappa in kappas:
            solver = RosenbrockW(**{**DEFAULT, "krylov_dim": krylov_dim,
                                    "stiff_projection": kappa})
            y1, err, _, _, _ = solver.step(terms, 0.0, h, y0, None,
                                           solver.init(terms, 0.0, h, y0, None), False)
            x1, e = ravel_pytree(y1)[0], ravel_pytree(err)[0]
            scale = atol + rtol * jnp.maximum(jnp.abs(x0), jnp.abs(x1))
            estimate = float(jnp.sqrt(jnp.mean((e / scale) ** 2)))
            # the first stage point, as RODAS4 forms it (`_rodas4.rodas4_step`)
            basis, hess = _krylov._arnoldi(jax.linearize(vf, x0)[1], f0, krylov_dim,
                                           h * _rodas4.GAMMA)
            jac = _krylov._krylov_w(basis, hess)
            a = h * _rodas4.GAMMA
            v0 = _rodas4.GAMMA * _krylov.resolve(jac, a, _krylov.woodbury_lu(jac, a), f0)
            point = x0 + h * _rodas4._R4_A[1][0] * v0
            proj = stiff_projection(jac, h, kappa, solver.projection_iters, vf, _rodas4.GAMMA,
                                    x0, basis)
            point, _ = proj.project(point)
            dz = float(jnp.max(jnp.abs(layout.logits(unravel(point)[0]) - z0)))
            stiff = _stiff_directions(np.asarray(jac_of(point)), h)
            count1, f1 = stiff.shape[1], np.asarray(vf(point))
            row = dict(h_sigma=h, kappa=kappa, krylov_dim=krylov_dim,
                       step_log_loss=float(layout.log_loss(y1[0])), log_loss0=ll0,
                       estimate=estimate, stage1_max_logit_change=dz,
                       logit_scale=float(jnp.max(jnp.abs(z0))), stiff_at_start=count0,
                       stiff_at_stage1=count1, f_start=float(jnp.linalg.norm(f0)),
                       f_stage1=float(np.linalg.norm(f1)),
                       f_stage1_stiff_part=float(np.linalg.norm(stiff.T @ f1)))
            rows.append(row)
            print(f"{h:>8g}{kappa:>7g}{row['step_log_loss']:>15.6g}{estimate:>11.2e}{dz:>11.2e}"
                  f"{count0:>10}{count1:>12}{row['f_stage1']:>11.2e}"
                  f"{row['f_stage1_stiff_part']:>11.2e}", flush=True)
    print(f"(start: log-loss {ll0:.6g}, |f| {float(jnp.linalg.norm(f0)):.2e}, largest logit "
          f"{float(jnp.max(jnp.abs(z0))):.3e})")
    return rows


def _chain_grad(mats, labels, dtype):
    """The loss and its gradient for the chain `H, W_1, .., W_L` in numpy at `dtype`."""
    mats = [np.asarray(m).astype(dtype) for m in mats]
    acts = [mats[0]]
    for m in mats[1:]:
        acts.append(m @ acts[-1])
    z = acts[-1]
    n = z.shape[1]
    p = np.exp(z - z.max(0, keepdims=True))
    p /= p.sum(0, keepdims=True)
    y = np.zeros_like(p)
    y[labels, np.arange(n)] = 1
    back, out = (p - y) / n, [None] * len(mats)
    for i in range(len(mats) - 1, 0, -1):
        out[i] = back @ acts[i - 1].T
        back = mats[i].T @ back
    out[0] = back
    return np.concatenate([o.ravel() for o in out])


def field_precision(model):
    """Item 6 (session 28): the float64 gradient of the loss at the state against the same
    computation in numpy's extended precision (`np.longdouble`, 64-bit mantissa on x86),
    whole and in the slow directions (dense Hessian eigenvalues `|lam| <= 1e-2`, item 4's
    groups): how much of the field a float64 solver can see at all."""
    state, layout = stack_model(model)
    depth = int(layout.depth)
    mats = [state.h] + [state.hidden[i] for i in range(depth - 1)] + [state.last]
    labels = np.asarray(layout.labels)
    g64 = _chain_grad(mats, labels, np.float64)
    gld = _chain_grad(mats, labels, np.longdouble)
    err, ref = (g64 - gld).astype(np.float64), gld.astype(np.float64)
    # the stacked state ravels as H, W_1, .., W_L: the order of `_chain_grad`'s gradient
    theta, unravel = ravel_pytree(state)
    assert theta.size == g64.size, "field_precision takes an unpadded model"
    hess = np.asarray(jax.hessian(lambda th: jnp.exp(layout.log_loss(unravel(th))))(theta))
    lam, vecs = np.linalg.eigh(0.5 * (hess + hess.T))
    slow = np.abs(lam) <= 1e-2
    out = dict(extended_eps=float(np.finfo(np.longdouble).eps),
               grad_norm=float(np.linalg.norm(ref)),
               float64_relative_error=float(np.linalg.norm(err) / np.linalg.norm(ref)),
               slow_directions=int(slow.sum()),
               slow_grad_norm=float(np.linalg.norm(vecs[:, slow].T @ ref)),
               float64_slow_relative_error=float(np.linalg.norm(vecs[:, slow].T @ err)
                                                 / np.linalg.norm(vecs[:, slow].T @ ref)))
    print(f"\nfield precision: float64 gradient vs extended precision (eps "
          f"{out['extended_eps']:.1e}): relative error {out['float64_relative_error']:.2e} "
          f"(|grad| {out['grad_norm']:.3e}); in the {out['slow_directions']} slow directions "
          f"{out['float64_slow_relative_error']:.2e} (slow part {out['slow_grad_norm']:.3e})")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--t-state", type=float, default=5.62e5)
    ap.add_argument("--t-end", type=float, default=6.2e5)
    ap.add_argument("--dense-cap", type=int, default=20_000)
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--one-step", default="10,100", help="step sizes (sigma), '' to skip")
    ap.add_argument("--only-one-step", action="store_true",
                    help="only the items at the state (4, 5, 6)")
    ap.add_argument("--stage-point", default="30,100,300,1000",
                    help="item 5's step sizes (sigma), '' to skip")
    ap.add_argument("--t-stage", type=float, default=None,
                    help="item 5's and 6's state (default --t-state), solved on from it")
    ap.add_argument("--out", default="bench_case_ii_seed7.json")
    args = ap.parse_args()

    init = uf.gaussian_init(jax.random.PRNGKey(args.seed), 8, 1, 8, 7, 0.1)
    start = uf.solve_flow(init, args.t_state, ts=jnp.array([0.0, args.t_state]),
                          max_steps=100_000)
    assert start.status_name() == "ok", start.status_name()
    model, span = start.model, args.t_end - args.t_state
    sv = np.asarray(start.singular_values[-1])
    print(f"state at t = {args.t_state:.4g}: log-loss {float(start.log_loss[-1]):.6f}, "
          f"singular values {sv[:3]}")
    out = dict(config=dict(K=8, n=1, width=8, depth=7, scale=0.1, seed=args.seed,
                           t_state=args.t_state, t_end=args.t_end),
               state_log_loss=float(start.log_loss[-1]), state_singular_values=sv.tolist(),
               variants={}, pieces=[])

    if args.one_step:
        out["one_step"] = one_step_split(model, args.t_state,
                                         [float(h) for h in args.one_step.split(",")])
    t_stage, stage_model = args.t_state, model
    if args.t_stage is not None and args.t_stage > args.t_state:
        t_stage = args.t_stage
        later = uf.solve_flow(model, t_stage - args.t_state,
                              ts=jnp.array([0.0, t_stage - args.t_state]), max_steps=100_000)
        assert later.status_name() == "ok", later.status_name()
        stage_model = later.model
    if args.stage_point:
        print(f"\nitem 5 at t = {t_stage:.4g}")
        out["stage_point"] = dict(t=t_stage, rows=stage_point(
            stage_model, t_stage, [float(h) for h in args.stage_point.split(",")]))
    out["field_precision"] = dict(t=t_stage, **field_precision(stage_model))
    if args.only_one_step:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
        return
    print(f"{'solver':<24}{'status':<11}{'steps':>7}{'rejected':>10}{'log-loss end':>16}")
    for name, change in VARIANTS.items():
        r = _solve(model, span, RosenbrockW(**{**DEFAULT, **change}))
        out["variants"][name] = r
        print(f"{name:<24}{r['status']:<11}{r['steps']:>7}{r['rejected']:>10}"
              f"{r['log_loss_end']:>16.8f}", flush=True)
    if not args.skip_dense:
        recording, original, solver = dense_rodas4()
        _flow.stacked_field = recording
        try:
            r = _solve(model, span, solver, max_steps=args.dense_cap)
        finally:
            _flow.stacked_field = original
        out["dense_rodas4"] = r
        print(f"{'RODAS4, dense exact W':<24}{r['status']:<11}{r['steps']:>7}{r['rejected']:>10}"
              f"{r['log_loss_end']:>16.8f}", flush=True)

    ts = jnp.linspace(0.0, span, 11)
    whole = uf.solve_flow(model, span, ts=ts, max_steps=20_000, stall_rescue=(),
                          save_states=True)
    svs = np.asarray(whole.singular_values)
    print(f"\n{'piece from t':<16}{'steps':>7}{'rejected':>10}{'s1':>12}{'s2':>12}")
    for i in range(10):
        piece = jax.tree_util.tree_map(lambda x: x[i], whole.states)
        r = _solve(piece, float(ts[i + 1] - ts[i]), "rosenbrock")
        r.update(t=args.t_state + float(ts[i]), s1=float(svs[i, 0]), s2=float(svs[i, 1]))
        out["pieces"].append(r)
        print(f"{r['t']:<16.5g}{r['steps']:>7}{r['rejected']:>10}{r['s1']:>12.3e}"
              f"{r['s2']:>12.3e}", flush=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
