"""Width at random initialization (paper Theorem 4.5, Fig. 5) and random vs Hadamard
trajectories (App. E.4, Fig. 11), on the full deep UFM.
"""

from __future__ import annotations

import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ..solvers._checks import check_count, check_positive_real, check_solver, check_times
from ..solvers._checks import check_tolerances
from ..solvers._flow import _controller, default_atol, default_save_times, error_norm
from ..solvers._flow import default_krylov_dim, flow_solver, solve_flow, stacked_field
from ..solvers._integrate import integrate, log_norm
from ..solvers._stacked import stack_model
from ..solvers._status import STATUS_OK
from ..core._hadamard import hadamard_time_scale
from ..core._init import gaussian_init
from ..core._model import DeepUFM
from ..core._metrics import effective_rank, etf_distance, logit_velocity


@functools.lru_cache(maxsize=None)
def _velocity_distance_fn(num_classes, per_class, width, depth):
    def one(key, scale):
        model = gaussian_init(key, num_classes, per_class, width, depth, scale)
        return etf_distance(logit_velocity(model), per_class)

    return jax.jit(one)


def initial_velocity_etf_distance(
    key: PRNGKeyArray, num_classes: int, per_class: int, width: int, depth: int, scale
):
    """`|| Zdot(0)/||Zdot(0)|| - (E kron 1_n^T)/||.|| ||_F^2` at a Gaussian init (Theorem 4.5,
    theory §6): the paper's Fig. 5 (left) metric for one draw. Tends to 0 as `width -> inf`
    and `scale -> 0`."""
    fn = _velocity_distance_fn(int(num_classes), int(per_class), int(width), int(depth))
    return fn(key, jnp.asarray(scale, jnp.result_type(float)))


def width_alignment(
    key: PRNGKeyArray,
    num_classes: int,
    per_class: int,
    depth: int,
    widths,
    scales,
    num_seeds: int = 5,
) -> dict:
    """Initial-velocity ETF distance over widths and init scales, mean and std over seeds
    (paper Fig. 5 left). One compile per width; the seeds of a cell are the same keys at every
    width and scale.

    **Returns:** dict of numpy arrays `widths (W,)`, `scales (C,)`, `values (W, C, seeds)`,
    `mean`, `std (W, C)`.
    """
    widths = [int(w) for w in np.asarray(widths).reshape(-1)]
    scales = np.asarray(scales, float).reshape(-1)
    keys = jax.random.split(key, num_seeds)
    vals = np.zeros((len(widths), scales.size, num_seeds))
    for a, w in enumerate(widths):
        for c, eps in enumerate(scales):
            for r in range(num_seeds):
                vals[a, c, r] = float(
                    initial_velocity_etf_distance(keys[r], num_classes, per_class, w, depth, eps)
                )
    return dict(
        widths=np.asarray(widths),
        scales=scales,
        values=vals,
        mean=vals.mean(-1),
        std=vals.std(-1),
    )


def _logit_norm(model):
    return jnp.linalg.norm(model.logits())


@eqx.filter_jit
def _flow_until_jit(model, ts, log_target, solver, rtol, atol, max_steps):
    state, layout = stack_model(model)
    # The terminating event: log ||Z||_F reaches log(logit_norm) (never when that is +inf).
    grown = lambda x: log_norm(layout.logits(x)) - log_target  # noqa: E731
    res = integrate(
        stacked_field(layout, "relative"),
        state,
        jnp.log1p(ts),
        lambda x: {},
        solver=flow_solver(solver, default_krylov_dim(layout.num_classes, layout.per_class)),
        controller=_controller(rtol, atol, None, error_norm(layout)),
        max_steps=max_steps,
        event=grown,
    )
    # Stopped at the event (its time), at t1 (exactly `t1`), or failed (`nan`: no save reached).
    t = jnp.where(~res.event_fired & (res.status == STATUS_OK), ts[-1], res.t_final)
    return layout.to_model(res.x_final), t, res.event_fired, res.status, res.num_steps


def flow_until(
    model: DeepUFM,
    t1: float,
    *,
    logit_norm: float | None = None,
    solver=None,
    rtol: float = 1e-6,
    atol: float | None = None,
    max_steps: int = 4096,
) -> dict:
    """Gradient flow of a (wide) deep UFM until GF time `t1`, or until `||Z||_F` first reaches
    `logit_norm`, whichever comes first (theory §2; paper Fig. 5).

    The same flow and time change as `solve_flow`'s defaults, on the same driver
    (`solvers._integrate.integrate`) with one save at `t1` and a terminating event
    `log||Z|| = log(logit_norm)`, both located by Newton's method on the solver's dense
    output (if `||Z(0)||_F >= logit_norm` it stops at once, `t = 0`). The state is returned
    only at that time, and nothing is measured on the way, so the cost per step is a few
    products with the `d x d` factors: this is what makes widths in the thousands affordable
    on a CPU (`solve_flow` measures every save, including the `d x d x d` balancedness
    products, and its Rosenbrock default pays a Krylov build per step). Explicit `Tsit5`
    by default: at moderate depth (3) the flow from a Gaussian init is not stiff.

    **Arguments:** `model`; `t1` (GF time cap, `>= 0`); `logit_norm` (target `||Z||_F > 0`,
    `None`: only `t1`); `solver` (`"tsit5"` default, `"rosenbrock"`, `"kvaerno5"` or a
    `diffrax.AbstractAdaptiveSolver`); `rtol`, `atol` (`None`: `rtol` times the RMS entry of
    the initial parameters, as `solve_flow`); `max_steps`.

    **Returns:** dict with `model` (at the stopping time), `t` (GF time reached), `grown` (True
    when the logit-norm event fired), `status` (the shared codes, `solvers.Status`: 0 ok,
    1 max_steps, 2 nonfinite, 3 stalled), `num_steps`. When `status != 0`, `t` is `nan` and
    `model` the initial one.

    **Raises:** `ValueError` naming the argument for a negative or non-finite `t1`, a
    non-positive `logit_norm`, bad tolerances, `max_steps`, or an unknown `solver`.
    """
    check_times(None, t1)
    check_tolerances(rtol, atol)
    max_steps = check_count("max_steps", max_steps)
    solver = check_solver(solver, default="tsit5")
    if logit_norm is not None:
        check_positive_real("logit_norm", logit_norm,
                            fix="The target Frobenius norm of the logits, or None for t1 only.")
    dtype = model.factors[0].dtype
    if atol is None:
        atol = default_atol(model, rtol)
    log_target = jnp.inf if logit_norm is None else jnp.log(jnp.asarray(logit_norm, dtype))
    m, t, grown, status, steps = _flow_until_jit(
        model, jnp.asarray(t1, dtype).reshape(1), jnp.asarray(log_target, dtype), solver,
        jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype), max_steps,
    )
    return dict(model=m, t=float(t), grown=bool(grown), status=int(status),
                num_steps=int(steps))


def grown_alignment(
    model,
    *,
    factor: float = 10.0,
    t1: float = 1e8,
    solver=None,
    rtol: float = 1e-6,
    max_steps: int = 4096,
) -> dict:
    """ETF distance of the logits (and of their velocity) once `||Z||_F` has grown by `factor`
    along gradient flow (paper Fig. 5 middle: "after the logit norm has increased by 10x").

    One `flow_until` solve that stops where `||Z(t)||_F = factor ||Z(0)||_F` (event located
    on the dense output, so `growth` is `factor` to the root finder's tolerance), measured
    there. Explicit `Tsit5` by default.

    **Returns:** dict with `t` (GF time), `growth` (`||Z(t)||/||Z(0)||`; `nan` distances when
    the norm did not grow enough before GF time `t1` or `status != 0`), `logit_distance`,
    `velocity_distance`, `status`, `num_steps`.
    """
    n = model.per_class
    z0 = float(_logit_norm(model))
    res = flow_until(model, t1, logit_norm=factor * z0, solver=solver, rtol=rtol,
                     max_steps=max_steps)
    state = res["model"]
    nan = dict(t=np.nan, growth=np.nan, logit_distance=np.nan, velocity_distance=np.nan)
    if res["status"] != 0 or not res["grown"]:
        return dict(nan, status=res["status"], num_steps=res["num_steps"])
    return dict(
        t=res["t"],
        growth=float(_logit_norm(state)) / z0,
        logit_distance=float(etf_distance(state.logits(), n)),
        velocity_distance=float(etf_distance(logit_velocity(state), n)),
        status=res["status"],
        num_steps=res["num_steps"],
    )


def _seeds_for(width: int, num_seeds: int, wide_seeds: int | None, wide_width: int) -> int:
    if wide_seeds is None or width < wide_width:
        return num_seeds
    return min(num_seeds, int(wide_seeds))


def _models_over_widths(key, num_classes, per_class, depth, widths, scale, num_seeds,
                        wide_seeds, wide_width, seeds, progress):
    """Yield `(a, r, model)`: the Gaussian init of seed `r` at width `widths[a]` (the same keys
    at every width), `seeds[a]` seeds per width (`_seeds_for`, written into `seeds`), calling
    `progress(width, seconds)` after each width."""
    keys = jax.random.split(key, num_seeds)
    for a, w in enumerate(widths):
        t0 = time.time()
        seeds[a] = _seeds_for(w, num_seeds, wide_seeds, wide_width)
        for r in range(seeds[a]):
            yield a, r, gaussian_init(keys[r], num_classes, per_class, w, depth, scale)
        if progress is not None:
            progress(w, time.time() - t0)


def grown_alignment_sweep(
    key: PRNGKeyArray,
    num_classes: int,
    per_class: int,
    depth: int,
    widths,
    scale: float,
    num_seeds: int = 5,
    *,
    wide_seeds: int | None = None,
    wide_width: int = 2048,
    progress=None,
    **kwargs,
) -> dict:
    """`grown_alignment` over widths, mean and std over seeds (paper Fig. 5 middle).

    Widths `>= wide_width` use the first `wide_seeds` seeds only (when given); the others are
    `nan` and `seeds (W,)` says how many were run. Keys are the same at every width.
    `progress(width, seconds)` is called after each width. `kwargs` go to `grown_alignment`.
    """
    widths = [int(w) for w in np.asarray(widths).reshape(-1)]
    ld = np.full((len(widths), num_seeds), np.nan)
    vd = np.full_like(ld, np.nan)
    growth = np.full_like(ld, np.nan)
    seeds = np.zeros(len(widths), int)
    for a, r, model in _models_over_widths(key, num_classes, per_class, depth, widths, scale,
                                           num_seeds, wide_seeds, wide_width, seeds, progress):
        res = grown_alignment(model, **kwargs)
        ld[a, r], vd[a, r], growth[a, r] = (
            res["logit_distance"], res["velocity_distance"], res["growth"]
        )
    return dict(
        widths=np.asarray(widths),
        scale=scale,
        seeds=seeds,
        logit_distance=ld,
        velocity_distance=vd,
        growth=growth,
        logit_mean=np.nanmean(ld, -1),
        logit_std=np.nanstd(ld, -1),
    )


def converged_rank_vs_width(
    key: PRNGKeyArray,
    num_classes: int,
    per_class: int,
    depth: int,
    widths,
    scale: float,
    num_seeds: int = 5,
    *,
    t1: float = 1e8,
    solver=None,
    rtol: float = 1e-6,
    max_steps: int = 4096,
    wide_seeds: int | None = None,
    wide_width: int = 2048,
    progress=None,
) -> dict:
    """Effective rank (theory §6) of the class-mean logits `Zbar` at GF time `t1` vs width
    (paper Fig. 5 right, "effective rank at convergence"), mean/std over seeds. Solved with
    `flow_until` (explicit `Tsit5` by default) and stopped exactly at `t1`; failed solves
    (`status != 0`) are `nan` and counted. Widths `>= wide_width` use the first `wide_seeds`
    seeds only (when given; `seeds (W,)` says how many); `progress(width, seconds)` is called
    after each width."""
    widths = [int(w) for w in np.asarray(widths).reshape(-1)]
    er = np.full((len(widths), num_seeds), np.nan)
    failed = np.zeros(len(widths), int)
    seeds = np.zeros(len(widths), int)
    for a, r, model in _models_over_widths(key, num_classes, per_class, depth, widths, scale,
                                           num_seeds, wide_seeds, wide_width, seeds, progress):
        res = flow_until(model, t1, solver=solver, rtol=rtol, max_steps=max_steps)
        if res["status"] == 0:
            er[a, r] = float(effective_rank(res["model"].class_mean_logits()))
        else:
            failed[a] += 1
    return dict(
        widths=np.asarray(widths),
        scale=scale,
        t1=t1,
        seeds=seeds,
        effective_rank=er,
        mean=np.nanmean(er, -1),
        std=np.nanstd(er, -1),
        failed=failed,
    )


def random_vs_hadamard(
    key: PRNGKeyArray,
    num_classes: int = 8,
    depth: int = 4,
    *,
    width: int = 32,
    per_class: int = 1,
    scale: float = 0.3,
    t1: float = 1e8,
    num_saves: int = 97,
    rtol: float = 1e-6,
) -> dict:
    """Singular values of the class-mean logits along gradient flow from a small Gaussian init
    (`solve_flow`) beside the reduced Hadamard trajectory (`solve_hadamard`) from a random
    direction with the same initial norm (paper App. E.4, Figs. 4 and 11). Both are reported
    in GF time: the Hadamard run is solved in reduced time `tau = c t`
    (`hadamard_time_scale`) and mapped back.

    **Returns:** dict with `t (S,)`, `sv_random (S, K)`, `sv_hadamard (S, K-1)` (sorted
    descending, the inert index-0 mode dropped), statuses.
    """
    from ._dynamics import random_directions
    from ..solvers._reduced import solve_hadamard

    k1, k2 = jax.random.split(key)
    model = gaussian_init(k1, num_classes, per_class, width, depth, scale)
    ts = default_save_times(t1, num_saves, 12.0)
    sol = solve_flow(model, t1, ts=ts, rtol=rtol)
    sv0 = jnp.linalg.norm(sol.singular_values[0])
    s0 = random_directions(k2, num_classes, 1, sv0)[0]
    c = hadamard_time_scale(num_classes, per_class, depth)
    hsol = solve_hadamard(s0, float(depth), c * t1, ts=c * ts)
    sv_h = -jnp.sort(-hsol.s[:, 1:], axis=-1)
    return dict(
        width=width,
        depth=depth,
        t=np.asarray(sol.ts),
        sv_random=np.asarray(sol.singular_values),
        status_random=int(sol.status),
        sv_hadamard=np.asarray(sv_h),
        status_hadamard=int(hsol.status),
    )

