"""Width at random initialization (paper Theorem 4.5, Fig. 5) and random vs Hadamard
trajectories (App. E.4, Fig. 11), on the full deep UFM.
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ._flow import default_save_times, solve_flow
from ._hadamard import hadamard_time_scale
from ._init import gaussian_init
from ._metrics import effective_rank, etf_distance, logit_velocity


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
    SPEC §6): the paper's Fig. 5 (left) metric for one draw. Tends to 0 as `width -> inf`
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


def grown_alignment(
    model,
    *,
    factor: float = 10.0,
    t1: float = 1e8,
    decades: float = 12.0,
    num_saves: int = 97,
    num_refine: int = 16,
    solver=None,
    rtol: float = 1e-6,
    max_steps: int = 4096,
) -> dict:
    """ETF distance of the logits (and of their velocity) once `||Z||_F` has grown by `factor`
    along gradient flow (paper Fig. 5 middle: "after the logit norm has increased by 10x").

    Two solves with `solve_flow`: a coarse one (`num_saves` log-spaced GF times over `decades`
    below `t1`, no states) finds the first save interval where the class-mean logit norm has
    grown by `factor` (a proxy that is exact once features collapse; the test is then redone
    on the full logits); a second one saves `num_refine` evenly spaced states across that
    interval and the first with `||Z(t)|| >= factor ||Z(0)||` is measured. Explicit `Tsit5` by
    default (the Gauss-Newton Rosenbrock solver stores a `(K N) x P` Jacobian, too large for
    wide models; the early phase is not stiff).

    **Returns:** dict with `t` (GF time), `growth` (actual `||Z(t)||/||Z(0)||`, `>= factor`
    unless `status != 0` or the norm never grew enough before `t1`: then `nan` distances),
    `logit_distance`, `velocity_distance`, `status`.
    """
    solver = diffrax.Tsit5() if solver is None else solver
    n = model.per_class
    z0 = float(_logit_norm(model))
    ts = default_save_times(t1, num_saves, decades)
    coarse = solve_flow(model, t1, ts=ts, solver=solver, rtol=rtol, max_steps=max_steps)
    zbar0 = float(jnp.linalg.norm(model.class_mean_logits())) * np.sqrt(n)
    zbar = np.asarray(jnp.linalg.norm(coarse.singular_values, axis=-1)) * np.sqrt(n)
    # the full-logit norm is >= sqrt(n) ||Zbar||_F; use the class-mean proxy to bracket
    hit = np.nonzero(np.nan_to_num(zbar) >= factor * max(z0, zbar0))[0]
    nan = dict(t=np.nan, growth=np.nan, logit_distance=np.nan, velocity_distance=np.nan)
    if hit.size == 0:
        return dict(nan, status=int(coarse.status))
    j = int(hit[0])
    lo = float(ts[j - 1]) if j > 0 else 0.0
    refine = jnp.concatenate([jnp.zeros(1), jnp.linspace(lo, float(ts[j]), num_refine + 1)[1:]])
    fine = solve_flow(
        model, float(ts[j]), ts=refine, solver=solver, rtol=rtol, max_steps=max_steps,
        save_states=True,
    )
    norms = np.asarray(jax.vmap(_logit_norm)(fine.states))
    idx = np.nonzero(norms >= factor * z0)[0]
    if idx.size == 0:
        idx = np.array([norms.size - 1])
    i = int(idx[0])
    state = jax.tree_util.tree_map(lambda x: x[i], fine.states)
    return dict(
        t=float(refine[i]),
        growth=float(norms[i] / z0),
        logit_distance=float(etf_distance(state.logits(), n)),
        velocity_distance=float(etf_distance(logit_velocity(state), n)),
        status=int(fine.status),
    )


def grown_alignment_sweep(
    key: PRNGKeyArray,
    num_classes: int,
    per_class: int,
    depth: int,
    widths,
    scale: float,
    num_seeds: int = 5,
    **kwargs,
) -> dict:
    """`grown_alignment` over widths, mean and std over seeds (paper Fig. 5 middle)."""
    widths = [int(w) for w in np.asarray(widths).reshape(-1)]
    keys = jax.random.split(key, num_seeds)
    ld = np.full((len(widths), num_seeds), np.nan)
    vd = np.full_like(ld, np.nan)
    growth = np.full_like(ld, np.nan)
    for a, w in enumerate(widths):
        for r in range(num_seeds):
            model = gaussian_init(keys[r], num_classes, per_class, w, depth, scale)
            res = grown_alignment(model, **kwargs)
            ld[a, r], vd[a, r], growth[a, r] = (
                res["logit_distance"], res["velocity_distance"], res["growth"]
            )
    return dict(
        widths=np.asarray(widths),
        scale=scale,
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
) -> dict:
    """Effective rank of the class-mean logits at GF time `t1` vs width (paper Fig. 5 right),
    mean/std over seeds; failed solves (`status != 0`) are `nan` and counted."""
    widths = [int(w) for w in np.asarray(widths).reshape(-1)]
    keys = jax.random.split(key, num_seeds)
    er = np.full((len(widths), num_seeds), np.nan)
    failed = np.zeros(len(widths), int)
    for a, w in enumerate(widths):
        for r in range(num_seeds):
            model = gaussian_init(keys[r], num_classes, per_class, w, depth, scale)
            sol = solve_flow(model, t1, num_saves=2, solver=solver, rtol=rtol, max_steps=max_steps)
            if int(sol.status) == 0:
                er[a, r] = float(effective_rank(sol.model.class_mean_logits()))
            else:
                failed[a] += 1
    return dict(
        widths=np.asarray(widths),
        scale=scale,
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
    from ._flow import solve_hadamard

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

