"""An adaptive ODE loop over a time-changed flow that saves at requested *physical* times.

Both flows (full GF, theory §2; reduced Hadamard ODE, theory §4) are integrated in a solver time
`sigma` related to the physical time `t` by `dt/dsigma = g(x) > 0` (theory §2: time changes keep the
path). The state is `(x, w)` with `w = log1p(t)`, so `t` can run to 1e300 and beyond without
overflow, and `dw/dsigma = g / (1 + t)` is formed in log space.

The loop is diffrax's manual-stepping pattern (`solver.step` + `controller.adapt_step_size`) in
one `lax.while_loop`: after each accepted step every save time crossed inside it is located by
bisection on the solver's dense interpolant and measured there, so saving never shortens steps
and no state history is stored. Failures become a status code, never an exception, so a vmapped
batch keeps its other members.
"""

from __future__ import annotations

from typing import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, Int

from ._status import STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK, STATUS_STALLED

_MAX_CONSECUTIVE_REJECTS = 60
_NEWTON_ITERS = 40


class IntegrationResult(eqx.Module):
    saved: dict  # name -> (S, ...) arrays, nan where not reached
    x_final: object  # the state at the last save time reached
    t_reached: Float[Array, ""]
    status: Int[Array, ""]
    num_steps: Int[Array, ""]
    num_rejected: Int[Array, ""]


def _all_finite(tree) -> Array:
    leaves = jtu.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def integrate(
    vector_field: Callable,
    x0,
    w_targets: Float[Array, " S"],
    measure: Callable[[object], dict],
    *,
    solver: diffrax.AbstractAdaptiveSolver,
    controller: diffrax.AbstractStepSizeController,
    max_steps: int,
    save_states: bool = False,
) -> IntegrationResult:
    """Integrate `d(x, w)/dsigma = vector_field(sigma, (x, w), None)` from `(x0, 0)` until
    `w >= w_targets[-1]`, calling `measure(x)` at every `w_targets[i]` (ascending, `>= 0`).
    """
    dtype = jnp.result_type(*jtu.tree_leaves(x0))
    y0 = (x0, jnp.zeros((), dtype))
    term = diffrax.ODETerm(vector_field)
    w_targets = jnp.asarray(w_targets, dtype)
    n_save = w_targets.shape[0]

    def record(buffers, idx, x):
        values = dict(measure(x))
        if save_states:
            values["state"] = x
        return jtu.tree_map(lambda b, v: b.at[idx].set(v), buffers, values)

    example = dict(measure(x0))
    if save_states:
        example["state"] = x0
    buffers = jtu.tree_map(
        lambda v: jnp.full((n_save,) + jnp.shape(v), jnp.nan, jnp.result_type(v)), example
    )

    # Save times at (or before) the initial time.
    def init_cond(c):
        idx, _ = c
        return (idx < n_save) & (w_targets[jnp.minimum(idx, n_save - 1)] <= 0.0)

    def init_body(c):
        idx, buf = c
        return idx + 1, record(buf, idx, x0)

    save_idx, buffers = jax.lax.while_loop(init_cond, init_body, (jnp.array(0), buffers))

    order = solver.order(term)
    sigma0 = jnp.zeros((), dtype)
    sigma_next, controller_state = controller.init(
        term, sigma0, sigma0 + 1.0, y0, None, None, solver.func, order
    )
    solver_state = solver.init(term, sigma0, sigma_next, y0, None)

    carry0 = dict(
        sigma=sigma0,
        sigma_next=jnp.asarray(sigma_next, dtype),
        y=y0,
        x_last=x0,
        solver_state=solver_state,
        controller_state=controller_state,
        made_jump=jnp.array(False),
        save_idx=save_idx,
        buffers=buffers,
        num_steps=jnp.array(0),
        num_rejected=jnp.array(0),
        consecutive_rejects=jnp.array(0),
        status=jnp.array(STATUS_OK),
    )

    def cond(c):
        return (c["save_idx"] < n_save) & (c["status"] == STATUS_OK)

    def body(c):
        sigma, sigma_next, y = c["sigma"], c["sigma_next"], c["y"]
        y1, y_err, dense_info, solver_state1, res = solver.step(
            term, sigma, sigma_next, y, None, c["solver_state"], c["made_jump"]
        )
        finite = _all_finite(y1) & _all_finite(y_err)
        # Non-finite candidates are rejected (the controller then shrinks the step).
        y_err = jtu.tree_map(lambda e: jnp.where(finite, e, jnp.inf), y_err)
        keep, sig_new, sig_next_new, made_jump, cstate, res2 = controller.adapt_step_size(
            sigma, sigma_next, y, y1, None, y_err, order, c["controller_state"]
        )
        ok = (res == diffrax.RESULTS.successful) & (res2 == diffrax.RESULTS.successful)
        accept = keep & finite & ok

        # Save every target crossed inside [sigma, sigma_next] on the dense interpolant.
        interp = solver.interpolation_cls(t0=sigma, t1=sigma_next, **dense_info)
        # The bisection only needs `w`: an interpolant of that component alone (every
        # dense_info entry is a `(x, w)` pair like the state) costs O(1) per evaluation.
        interp_w = solver.interpolation_cls(
            t0=sigma, t1=sigma_next, **{name: v[1] for name, v in dense_info.items()}
        )
        w_end = y1[1]

        def save_cond(sc):
            idx, _, _ = sc
            return accept & (idx < n_save) & (w_targets[jnp.minimum(idx, n_save - 1)] <= w_end)

        def save_body(sc):
            idx, buf, _ = sc
            sigma_at = _invert_monotone(interp_w.evaluate, w_targets[idx], sigma, sigma_next,
                                        y[1], w_end)
            x_at = interp.evaluate(sigma_at)[0]
            return idx + 1, record(buf, idx, x_at), x_at

        save_idx, buffers, x_last = jax.lax.while_loop(
            save_cond, save_body, (c["save_idx"], c["buffers"], c["x_last"])
        )

        keep_tree = lambda new, old: jtu.tree_map(  # noqa: E731
            lambda a, b: jnp.where(accept, a, b), new, old
        )
        consecutive = jnp.where(accept, 0, c["consecutive_rejects"] + 1)
        num_steps = c["num_steps"] + 1
        status = c["status"]
        status = jnp.where(~ok & (status == STATUS_OK), STATUS_STALLED, status)
        status = jnp.where(
            (consecutive >= _MAX_CONSECUTIVE_REJECTS) & (status == STATUS_OK),
            jnp.where(finite, STATUS_STALLED, STATUS_NONFINITE),
            status,
        )
        stalled = (sig_next_new - sig_new) <= 16 * jnp.finfo(dtype).eps * jnp.abs(sig_new)
        status = jnp.where(stalled & (status == STATUS_OK), STATUS_STALLED, status)
        status = jnp.where(
            (num_steps >= max_steps) & (save_idx < n_save) & (status == STATUS_OK),
            STATUS_MAX_STEPS,
            status,
        )
        return dict(
            sigma=jnp.where(accept, sig_new, sigma),
            sigma_next=sig_next_new,
            y=keep_tree(y1, y),
            x_last=x_last,
            solver_state=keep_tree(solver_state1, c["solver_state"]),
            controller_state=cstate,
            made_jump=made_jump,
            save_idx=save_idx,
            buffers=buffers,
            num_steps=num_steps,
            num_rejected=c["num_rejected"] + (~accept).astype(jnp.int32),
            consecutive_rejects=consecutive,
            status=status,
        )

    out = jax.lax.while_loop(cond, body, carry0)
    return IntegrationResult(
        saved=out["buffers"],
        x_final=out["x_last"],
        t_reached=jnp.expm1(out["y"][1]),
        status=out["status"],
        num_steps=out["num_steps"],
        num_rejected=out["num_rejected"],
    )


def _invert_monotone(w_of, target, lo, hi, w_lo, w_hi):
    """`sigma` in `[lo, hi]` with `w_of(sigma) = target`, for `w_of` increasing on the bracket
    with `w_of(lo) = w_lo < target <= w_hi = w_of(hi)` (the dense interpolant of `w` over one
    accepted step, where `dw/dsigma = g/(1+t) > 0`); elementwise, so arrays of brackets work.
    Newton's method from the secant guess, each iterate kept inside the current bracket
    (bisection when Newton leaves it). Where `w` is log-like over the step (`t` growing from 0
    by orders of magnitude) Newton creeps at first, hence up to `_NEWTON_ITERS = 40` iterations
    (6 lost up to 1e-3 at some saves, with the bracket test then exclusive); the loop stops as
    soon as no element moves by more than 8 ulps of the bracket's larger end (each iteration is
    a dispatch of several kernels on a CPU, and the batched sweeps locate thousands of saves)."""
    width = hi - lo
    frac = jnp.clip((target - w_lo) / jnp.where(w_hi > w_lo, w_hi - w_lo, 1.0), 0.0, 1.0)
    x = lo + frac * width
    tol = 8 * jnp.finfo(jnp.result_type(x)).eps * jnp.maximum(jnp.abs(lo), jnp.abs(hi))

    def newton(state):
        i, x, a, b, _ = state
        w, dw = jax.jvp(w_of, (x,), (jnp.ones_like(x),))
        below = w < target
        a, b = jnp.where(below, x, a), jnp.where(below, b, x)
        step = (target - w) / jnp.where(dw > 0, dw, 1.0)
        x_new = x + jnp.where(dw > 0, step, 0.0)
        # Inclusive: at an exact hit (`w == target`, so `b = x`) Newton stays put.
        inside = (x_new >= a) & (x_new <= b)
        x_new = jnp.where(inside, x_new, 0.5 * (a + b))
        return i + 1, x_new, a, b, jnp.any(jnp.abs(x_new - x) > tol)

    def go_on(state):
        return (state[0] < _NEWTON_ITERS) & state[4]

    _, x, _, _, _ = jax.lax.while_loop(go_on, newton, (0, x, lo, hi, jnp.asarray(True)))
    return x


def log_norm(tree) -> Array:
    """`log ||tree||_2` over all leaves, without overflow or underflow."""
    leaves = jtu.tree_leaves(tree)
    sq = sum(jnp.sum(jnp.abs(x) ** 2) for x in leaves)
    return 0.5 * jnp.log(sq)
