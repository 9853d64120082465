"""Where case (ii)'s runs just over 1000 steps spend them, and what a step meets there (theory
§2.6, "Where the runs just over 1000 steps spend them", session 39).

An experiment, not a timing. Two parts:

1. `--seeds` (default 2,1006,4): case (ii)'s configuration (K=8, n=1, width 8, depth 7,
   Gaussian scale 0.1, `gaussian_init(PRNGKey(seed), ...)`) solved at `solve_flow`'s defaults
   to t = 1e8 (37 log-spaced saves plus 1e5 and 1e8, as `bench_case_ii_seeds.py`), the GF time
   of every attempted step recorded (`bench_case_ii_phases._record_steps`: the same steps, bit
   for bit); reports the accepted steps and how many of them fall in the densest window of 1%
   of t (`[c, 1.01 c]`, `c` an accepted step's end time). `--grid-rows 1:47,1:56` adds rows of
   issue 14's held-out grid samples (`bench_flow_grid.sample_grid(60, s)`, seed s + 1000 +
   row), to 1e8 at the defaults likewise.
2. `--probe-seed` (default 2) at `--probe-t` (default 2164171.59, inside seed 2's second-mode
   escape): the state the default solve saves there (`save_states`, a sub-step of the method)
   and, at it, the dense Jacobian's extreme eigenvalues; one step of `solve_flow`'s own solver
   (Krylov `W`) and one of RODAS4 with the exact dense Jacobian at each `h_sigma` of `--hs`
   (scaled error estimate at rtol 1e-5 and the change of the log-loss); implicit Euler at
   each `h` of `--ie-hs` solved by Newton with a fresh dense Jacobian per iterate, plain and
   with backtracking on the residual (converged: a correction below 1e-12 (1 + |x|) within 30
   iterations; iterations, final residual, change of the log-loss);
   the share of the damped solution's displacement in the stiffest eigenvectors of the
   Jacobian's symmetric part; and RODAS4 from that relaxed state at each `h` of `--hs`.
3. A prototype, not the package's loop (`--skip-driver` leaves it out): from the state the
   default solve of `--probe-seed` saves at `--driver-from` (default 2164000) to GF time
   `--driver-to` (2165400), a scratch driver with integral control (factor
   `0.9 err^-1/4` within `[0.2, 10]` after an accepted step, `[0.2, 0.9]` after a rejection,
   the package's loss check) takes `solve_flow`'s own step, and in the arm `ie_retry`
   retries each rejected step as implicit Euler of the same size solved by damped Newton
   (error estimate `(I - h J)^{-1} h (f1 - f0) / 2`, accepted at most 1 and without a rise of
   the loss); at most `--driver-cap` attempts per arm. The package's own run's steps in the
   same window come from part 1's record (seed 2).

    python benchmarks/bench_escape_event.py --out benchmarks/results/bench_escape_event.json

Part 1 takes about 10 s per seed, part 2 about a minute, part 3 about five (2 cores).
`--skip-probe` runs part 1 only, `--seeds ''` parts 2 and 3 only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import ufmflow as uf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
CONFIG = (8, 1, 8, 7, 0.1)  # case (ii): K, n, width, depth, scale


def _save_times():
    return np.unique(np.concatenate([[0.0, 1e5, 1e8], np.logspace(-1, 8, 37)]))


def densest_window(record, width=0.01):
    """Accepted steps in the densest window `[c, (1 + width) c]` of GF time, `c` an accepted
    step's end, from the record of `(w, attempted, rejected)` at every attempted step."""
    rec = np.asarray(record, float).reshape(-1, 3)
    t = np.expm1(rec[:, 0])
    accepted = np.diff(np.concatenate([[0.0], rec[:, 1] - rec[:, 2]])) > 0
    ta = np.sort(t[accepted])
    hi = np.searchsorted(ta, ta * (1.0 + width), side="right")
    counts = hi - np.arange(ta.size)
    i = int(np.argmax(counts))
    return dict(start=float(ta[i]), accepted=int(counts[i]), total_accepted=int(ta.size))


def part_one(seeds, traces, grid_rows=()):
    import bench_case_ii_phases as phases
    import bench_flow_grid as grid

    record = phases._record_steps()
    rows = []
    for seed in list(seeds) + list(grid_rows):
        record.clear()
        if isinstance(seed, tuple):  # (sample, row) of the grid, seed sample + 1000 + row
            sample, row = seed
            model = grid.make_model(grid.sample_grid(60, sample)[row], sample + 1000 + row)
        else:
            model = uf.gaussian_init(jax.random.PRNGKey(seed), *CONFIG)
        sol = uf.solve_flow(model, 1e8, ts=_save_times(), progress=True)
        jax.block_until_ready(sol.log_loss)
        win = densest_window(record)
        traces[seed] = np.asarray(record, float).reshape(-1, 3)
        rows.append(dict(seed=seed if not isinstance(seed, tuple) else f"grid {seed[0]}:{seed[1]}",
                         status=sol.status_name(),
                         accepted=int(sol.num_steps) - int(sol.num_rejected),
                         rejected=int(sol.num_rejected), window_start=win["start"],
                         window_accepted=win["accepted"]))
        print(f"{rows[-1]['seed']}: {rows[-1]['status']}, {rows[-1]['accepted']} accepted "
              f"({rows[-1]['rejected']} rejected); {win['accepted']} of them in "
              f"[{win['start']:.7g}, {1.01 * win['start']:.7g}]", flush=True)
    return rows


class _Probe:
    """What parts 2 and 3 share: the state the default solve of case (ii)'s `seed` saves at
    GF time `t` (`save_states`, a sub-step of the method), flattened with `w = log1p(t)`,
    and at it the time-changed field `vf`, its dense Jacobian `jac`, the log-loss, the
    scaled RMS error of the default controller at rtol 1e-5 (`scaled`), and one step of
    `solve_flow`'s own solver (`step`, its Krylov `W` built at the step's start)."""

    def __init__(self, seed, t):
        import diffrax
        from jax.flatten_util import ravel_pytree

        from ufmflow.solvers import _flow
        from ufmflow.solvers._stacked import stack_model

        model = uf.gaussian_init(jax.random.PRNGKey(seed), *CONFIG)
        sol = uf.solve_flow(model, t, ts=jnp.array([0.0, 1e5, 1e6, t]), save_states=True)
        state0, layout = stack_model(model)
        state, _ = stack_model(jax.tree_util.tree_map(lambda a: a[-1], sol.states))
        term = diffrax.ODETerm(_flow.stacked_field(layout, "bounded"))
        self.x0, unravel = ravel_pytree((state, jnp.log1p(jnp.asarray(t))))
        self.vf = vf = jax.jit(lambda x: ravel_pytree(term.vf(0.0, unravel(x), None))[0])
        self.jac = jax.jit(jax.jacfwd(vf))
        self.loss = jax.jit(lambda x: layout.log_loss(unravel(x)[0]))
        rtol = 1e-5
        atol = float(_flow._default_atol(state0, layout, jnp.asarray(rtol)))
        norm = _flow.error_norm(layout)
        solver = _flow.flow_solver("rosenbrock", _flow.default_krylov_dim(*CONFIG[:2]))

        def scaled(x, x1, e):
            ratio = jax.tree_util.tree_map(
                lambda a, b, d: d / (atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b))),
                unravel(x), unravel(x1), unravel(e))
            return float(norm(ratio))

        @jax.jit
        def step(x, h):
            y = unravel(x)
            y1, err, _, _, _ = solver.step(term, 0.0, h, y, None,
                                           solver.init(term, 0.0, h, y, None), False)
            return ravel_pytree(y1)[0], ravel_pytree(err)[0]

        self.scaled, self.step = scaled, step


def part_two(seed, tp, hs, ie_hs):
    from ufmflow.solvers import _rodas4 as r4c

    probe = _Probe(seed, tp)
    x0, vf, jac, loss, scaled = probe.x0, probe.vf, probe.jac, probe.loss, probe.scaled
    package_step = probe.step

    a_rows, c_rows, g = np.array(r4c._R4_A), np.array(r4c._R4_C), r4c.GAMMA

    @jax.jit
    def dense_rodas4(x, h):
        lu = jax.scipy.linalg.lu_factor(jnp.eye(x.size) - h * g * jac(x))
        vs = [g * jax.scipy.linalg.lu_solve(lu, vf(x))]
        for i in range(1, 7):
            y = x + h * sum(a_rows[i][j] * vs[j] for j in range(len(vs)))
            if i < 6:
                rhs = vf(y) + sum(c_rows[i][j] * vs[j] for j in range(len(vs)))
                vs.append(g * jax.scipy.linalg.lu_solve(lu, rhs))
        return y, h * vs[5]

    def steps_from(x, step):
        out = []
        for h in hs:
            x1, e = step(x, h)
            out.append(dict(h=h, estimate=scaled(x, x1, e),
                            d_log_loss=float(loss(x1) - loss(x))))
        return out

    def implicit_euler(h, damped, iters=30):
        x, res = x0, lambda z: z - x0 - h * vf(z)
        r = res(x)
        nr = float(jnp.linalg.norm(r))
        for k in range(iters):
            dx = jnp.linalg.solve(jnp.eye(x.size) - h * jac(x), -r)
            lam = 1.0
            while True:
                xn = x + lam * dx
                rn = res(xn)
                nn = float(jnp.linalg.norm(rn))
                if not damped or nn < (1 - 1e-4 * lam) * nr or lam < 1e-6:
                    break
                lam /= 2
            moved = float(jnp.linalg.norm(xn - x))
            x, r, nr = xn, rn, nn
            if moved <= 1e-12 * (1.0 + float(jnp.linalg.norm(x))):  # the correction vanished
                return x, dict(h=h, damped=damped, converged=True, iterations=k + 1,
                               residual=nr, d_log_loss=float(loss(x) - loss(x0)))
        return x, dict(h=h, damped=damped, converged=False, iterations=iters, residual=nr,
                       d_log_loss=float(loss(x) - loss(x0)))

    dense = np.asarray(jac(x0))
    ev = np.sort(np.linalg.eigvals(dense).real)
    out = dict(seed=seed, t=tp, log_loss=float(loss(x0)), field_norm=float(jnp.linalg.norm(vf(x0))),
               eig_lowest=ev[:8].tolist(), eig_highest=ev[-4:].tolist(),
               package_step=steps_from(x0, package_step),
               dense_rodas4=steps_from(x0, dense_rodas4))
    out["implicit_euler"] = [implicit_euler(h, d)[1] for h in ie_hs for d in (False, True)]
    relaxed = None
    for h in ie_hs:
        x, info = implicit_euler(h, True)
        if info["converged"]:
            relaxed = (h, x)
            break
    if relaxed is not None:
        h, x = relaxed
        lam, vec = np.linalg.eigh(0.5 * (dense + dense.T))
        coef = vec.T @ np.asarray(x - x0)
        share = {n: float(np.sum(coef[:n] ** 2) / np.sum(coef ** 2)) for n in (4, 6, 8)}
        out["relaxed"] = dict(by_h=h, displacement=float(np.linalg.norm(coef)),
                              share_in_stiffest=share, stiffest=lam[:8].tolist(),
                              dense_rodas4=steps_from(x, dense_rodas4))
    return out


def window_steps(trace, lo, hi):
    """Accepted and rejected steps of a recorded run whose end lies in `[lo, hi]`."""
    t = np.expm1(trace[:, 0])
    acc = np.diff(np.concatenate([[0.0], trace[:, 1] - trace[:, 2]]))
    rej = np.diff(np.concatenate([[0.0], trace[:, 2]]))
    m = (t >= lo) & (t <= hi)
    return dict(accepted=int(acc[m].sum()), rejected=int(rej[m].sum()))


def part_three(seed, t_from, t_to, cap):
    from ufmflow.solvers._monotone import DESCENT_SLACK

    probe = _Probe(seed, t_from)
    x_start, vf, jac, loss = probe.x0, probe.vf, probe.jac, probe.loss
    scaled, step = probe.scaled, probe.step

    @jax.jit
    def newton(x, xs, h):
        r = x - xs - h * vf(x)
        return jnp.linalg.solve(jnp.eye(x.size) - h * jac(x), -r)

    @jax.jit
    def residual_norm(x, xs, h):
        return jnp.linalg.norm(x - xs - h * vf(x))

    @jax.jit
    def ie_error(xs, x1, h):
        return jnp.linalg.solve(jnp.eye(xs.size) - h * jac(x1), 0.5 * h * (vf(x1) - vf(xs)))

    def implicit_euler(xs, h, iters=40):
        x, nr = xs, float(residual_norm(xs, xs, h))
        for _ in range(iters):
            dx, lam = newton(x, xs, h), 1.0
            while lam > 1e-4:
                nn = float(residual_norm(x + lam * dx, xs, h))
                if nn < (1 - 1e-4 * lam) * nr:
                    break
                lam /= 2
            if lam <= 1e-4:
                return None
            x, nr = x + lam * dx, nn
            if float(jnp.linalg.norm(lam * dx)) <= 1e-12 * (1.0 + float(jnp.linalg.norm(x))):
                return x
        return None

    t_of = lambda x: float(np.expm1(float(x[-1])))  # noqa: E731
    arms = {}
    for arm in ("package_step", "ie_retry"):
        x, h, acc, rej, n_ie = x_start, 1.0, 0, 0, 0
        while t_of(x) < t_to and acc + rej < cap:
            l0 = float(loss(x))
            slack = DESCENT_SLACK * (1.0 + abs(l0))
            x1, e = step(x, h)
            est = scaled(x, x1, e)
            ok = np.isfinite(est) and est <= 1.0 and float(loss(x1)) - l0 <= slack
            if not ok and arm == "ie_retry":
                xi = implicit_euler(x, h)
                if xi is not None:
                    est_i = scaled(x, xi, ie_error(x, xi, h))
                    if est_i <= 1.0 and float(loss(xi)) - l0 <= slack:
                        x1, est, ok = xi, est_i, True
                        n_ie += 1
            factor = 0.9 * (max(est, 1e-10) if np.isfinite(est) else 1e10) ** -0.25
            if ok:
                x, acc = x1, acc + 1
                h *= min(10.0, max(0.2, factor))
            else:
                rej += 1
                h *= min(0.9, max(0.2, factor))
        arms[arm] = dict(t_reached=t_of(x), accepted=acc, rejected=rej, implicit_euler=n_ie,
                         log_loss=float(loss(x)))
        print(f"driver, {arm}: t {t_from} -> {arms[arm]['t_reached']:.9g} in {acc + rej} "
              f"attempts, {acc} accepted ({n_ie} implicit Euler), log-loss "
              f"{arms[arm]['log_loss']:.6f}", flush=True)
    return dict(seed=seed, t_from=t_from, t_to=t_to, cap=cap, arms=arms)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="2,1006,4")
    ap.add_argument("--probe-seed", type=int, default=2)
    ap.add_argument("--probe-t", type=float, default=2164171.59)
    ap.add_argument("--hs", default="1e-12,1e-11,1e-10,1e-9,1e-8,1e-6,1e-4,1e-3,1e-2")
    ap.add_argument("--ie-hs", default="1e-8,1e-11,1e-10,1e-9,1e-6,1e-4")
    ap.add_argument("--grid-rows", default="",
                    help="also these grid rows in part 1, as sample:row,... (e.g. 1:47,1:56)")
    ap.add_argument("--skip-probe", action="store_true")
    ap.add_argument("--skip-driver", action="store_true")
    ap.add_argument("--driver-from", type=float, default=2164000.0)
    ap.add_argument("--driver-to", type=float, default=2165400.0)
    ap.add_argument("--driver-cap", type=int, default=3000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    result = dict(config=dict(zip(("K", "n", "width", "depth", "scale"), CONFIG)))
    seeds = [int(s) for s in args.seeds.split(",") if s]
    traces = {}
    grid_rows = [tuple(int(v) for v in r.split(":")) for r in args.grid_rows.split(",") if r]
    result["seeds"] = part_one(seeds, traces, grid_rows) if seeds or grid_rows else []
    if not args.skip_probe:
        hs = [float(h) for h in args.hs.split(",")]
        ie_hs = [float(h) for h in args.ie_hs.split(",")]
        p = part_two(args.probe_seed, args.probe_t, hs, ie_hs)
        result["probe"] = p
        print(f"\nprobe: seed {p['seed']} at t = {p['t']}: log-loss {p['log_loss']:.6f}, "
              f"|f| {p['field_norm']:.4g}; eigenvalues {np.array2string(np.array(p['eig_lowest'][:6]), precision=2)} "
              f"... {np.array2string(np.array(p['eig_highest']), precision=3)}")
        print("| h_sigma | package step: estimate | d log-loss | dense RODAS4: estimate | d log-loss |")
        print("| --- | --- | --- | --- | --- |")
        for a, b in zip(p["package_step"], p["dense_rodas4"]):
            print(f"| {a['h']:.0e} | {a['estimate']:.3g} | {a['d_log_loss']:.3g} | "
                  f"{b['estimate']:.3g} | {b['d_log_loss']:.3g} |")
        print("\n| implicit Euler h | Newton | converged | iterations | residual | d log-loss |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in p["implicit_euler"]:
            print(f"| {r['h']:.0e} | {'damped' if r['damped'] else 'plain'} | {r['converged']} | "
                  f"{r['iterations']} | {r['residual']:.2e} | {r['d_log_loss']:.4g} |")
        if "relaxed" in p:
            rl = p["relaxed"]
            print(f"\nrelaxed by damped implicit Euler at h = {rl['by_h']:.0e}: moved "
                  f"{rl['displacement']:.3e}; share in the 4/6/8 stiffest eigenvectors "
                  f"{rl['share_in_stiffest']}; RODAS4 from there:")
            for r in rl["dense_rodas4"]:
                print(f"  h {r['h']:.0e}: estimate {r['estimate']:.3g}, d log-loss "
                      f"{r['d_log_loss']:.3g}")
    if not args.skip_driver:
        d = part_three(args.probe_seed, args.driver_from, args.driver_to, args.driver_cap)
        if args.probe_seed in traces:
            d["package_run"] = window_steps(traces[args.probe_seed], args.driver_from,
                                            args.driver_to)
            print(f"the package's run (part 1) in [{args.driver_from}, {args.driver_to}]: "
                  f"{d['package_run']['accepted']} accepted, {d['package_run']['rejected']} "
                  "rejected")
        result["driver"] = d
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
