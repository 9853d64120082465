"""An adaptive ODE loop over a time-changed flow that saves at requested *physical* times.

Both flows (full GF, theory §2; reduced Hadamard ODE, theory §4) are integrated in a solver time
`sigma` related to the physical time `t` by `dt/dsigma = g(x) > 0` (theory §2: time changes keep the
path). The state is `(x, w)` with `w = log1p(t)`, so `t` can run to 1e300 and beyond without
overflow, and `dw/dsigma = g / (1 + t)` is formed in log space.

The loop is diffrax's manual-stepping pattern (`solver.step` + `controller.adapt_step_size`) in
one checkpointed while loop (`equinox.internal.while_loop`, as diffrax's own
`RecursiveCheckpointAdjoint`): after each accepted step every save time crossed inside it is
located by safeguarded Newton on the solver's dense interpolant and measured there (a stiff
solver's state there is a sub-step of its own method, `substep_saves`, taken in loop iterations
of their own after the step: `_substep_saves`), so saving never shortens steps and no state
history is stored. An optional terminating event (a scalar function of the state reaching 0)
is located the same way; `flow_until` is such an event. Failures
become a status code (`_status`), never an exception, so a vmapped batch keeps its other members;
with `rescue`, a run that would stall first goes back a few dozen steps and retries with a tighter
tolerance (theory §2.7). Reverse-mode differentiable (see `integrate`).
"""

from __future__ import annotations

from typing import Callable

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Bool, Float, Int

from diffrax._root_finder import use_stepsize_tol  # diffrax's "take the controller's" marker

from ._progress import EVERY
from ._roots import invert_monotone as _invert_monotone
from ._status import STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK, STATUS_STALLED
from ._status import all_finite as _all_finite
from ._status import moved
from ._complement import capped
from ._monotone import descent_check
from ._rebase import rebased
from ._rescue import StallRescue, no_tightening
from ._substep_saves import pending_saves_body, pending_saves_carry

_MAX_CONSECUTIVE_REJECTS = 60


class IntegrationResult(eqx.Module):
    saved: dict  # name -> (S, ...) arrays, nan where not reached
    x_final: object  # the state where the integration stopped: last save reached, or the event
    t_final: Float[Array, ""]  # the time of `x_final` (the save time, or the event's time)
    t_reached: Float[Array, ""]  # the end of the last accepted step
    event_fired: Bool[Array, ""]
    status: Int[Array, ""]
    num_steps: Int[Array, ""]
    num_rejected: Int[Array, ""]
    num_rescues: Int[Array, ""]  # returns to a checkpoint with a tighter tolerance (`rescue`)


def _with_root_finder_tolerances(solver, controller):
    """An implicit solver (e.g. `diffrax.Kvaerno5()`) whose root finder leaves its tolerances
    to the step-size controller (diffrax's default) gets the controller's `rtol`, `atol` and
    `norm`, as `diffrax.diffeqsolve` does; any other solver is returned as it is."""
    if not isinstance(solver, diffrax.AbstractImplicitSolver):
        return solver
    names = [a for a in ("rtol", "atol", "norm")
             if getattr(solver.root_finder, a) is use_stepsize_tol]
    if not names:
        return solver
    if not isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
        raise ValueError(
            f"integrate: {type(solver).__name__}'s root finder takes its tolerances from an "
            f"adaptive step-size controller; pass one (e.g. diffrax.PIDController) or give the "
            f"root finder its own rtol, atol and norm.")
    return eqx.tree_at(lambda s: tuple(getattr(s.root_finder, a) for a in names), solver,
                       tuple(getattr(controller, a) for a in names))


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
    event: Callable[[object], Array] | None = None,
    substep_saves: bool = False,
    progress: Callable | None = None,
    rescue: tuple[float, ...] = (),
    descent: Callable[[object], Array] | None = None,
) -> IntegrationResult:
    """Integrate `d(x, w)/dsigma = vector_field(sigma, (x, w), None)` from `(x0, 0)` until
    `w >= w_targets[-1]`, calling `measure(x)` at every `w_targets[i]` (ascending, `>= 0`).

    **Arguments:** `vector_field` (diffrax's `(t, y, args)` signature, `y = (x, w)`), `x0`,
    `w_targets` (`log1p` of the save times), `measure(x) -> dict` of arrays (recorded at each
    save; `save_states` also records `x`), `solver` (any `diffrax.AbstractAdaptiveSolver`,
    e.g. `Tsit5`, `Kvaerno5`, `RosenbrockW`), `controller` (a diffrax step-size controller),
    `max_steps` (attempted steps), and `event`: an optional terminating event, a scalar
    function of the state `x`; the integration stops where `event(x)` first becomes `>= 0`
    (at once if `event(x0) >= 0`), located like the saves on the solver's dense interpolant,
    to a few ulps of `sigma`. Saves after the event stay `nan`.

    `substep_saves=True`: the state at a save (or the event) is the end of a step of the
    solver's own method from the crossing step's start to the save time
    (`solver.step_with_substep`, e.g. `RosenbrockW`), not its dense interpolant; the crossing
    step is kept. For stiff solvers: their cubic Hermite dense output uses the raw field at
    both ends, which multiplies the stiff components' small deviations by `h` times the stiff
    eigenvalues (theory §2.4). The save time itself is still located on the interpolant of
    the scalar `w`, which is smooth. With no `event` and a solver that can restart a step
    from its start with the step's own state (`with_first_slope`, `first_slope`:
    `RosenbrockW`), each such sub-step is an iteration of the step loop of its own, running
    the solver's `step` (so the method is compiled once, not once more for the saves; the
    very-stiff projection is then that of the sub-step's size); otherwise
    `step_with_substep`'s sub-step function runs inside the save loop.

    `progress`: a host function `progress(w, num_steps, num_rejected)` called through
    `jax.debug.callback` every `_progress.EVERY` attempted steps (`_progress.report`); `None`
    (default) compiles no callback.

    `rescue`: tolerance factors `(r_1, r_2, ...)` for a stalled solve (theory §2.7, "Stall
    rescue"; `_rescue`). Where the run would end `stalled` or `nonfinite` (an accepted step that
    changed nothing, or `_MAX_CONSECUTIVE_REJECTS` rejections in a row), it returns
    to a state it kept between `_rescue.RESCUE_CHECKPOINT` and twice as many accepted steps
    earlier and integrates again with the scaled error multiplied by `r_k` (that is, `rtol`
    and `atol` divided by it) until it has taken that many accepted steps past the point of
    the failure; a failure before that goes back to the same state with the next factor. The
    run ends `stalled` (`nonfinite`) only when the last factor fails too. Every attempted step
    counts towards `max_steps`. A run that never stalls is the same, bit for bit, as without
    `rescue`; `()` (default) compiles none of it. Not with an `event`.

    `descent`: a scalar function of `x` that the exact flow never increases (for gradient
    flow the log-loss); a step that would be kept but along which it rose by more than
    `_monotone.DESCENT_SLACK (1 + |descent(x)|)` is rejected and retried at half its length
    (theory §2.6, "Steps that raise the loss"; `_monotone`). `None` (default) compiles none
    of it.

    **Returns:** an `IntegrationResult`; `status` from `_status` (0 ok: the last save time or
    the event was reached).

    **Differentiation:** reverse mode (`jax.grad`, `jax.vjp`) through every output but the
    integer ones (`status`, `num_steps`, `num_rejected`) and `event_fired`: the step loop is
    `equinox.internal.while_loop(kind="checkpointed")` (online binomial checkpointing,
    about `sqrt(2 max_steps)` checkpoints of the loop's carry, each backward step recomputed
    from the nearest checkpoint), the save loop is checkpointed with `S` checkpoints, and the
    save and event times found by Newton's method carry their derivative by the implicit
    function theorem (`_invert_monotone`). Forward mode (`jax.jvp`) is not supported by the
    checkpointed loop. This differentiates the discrete solution (discretise-then-optimise),
    including the dependence of the accepted step sizes on the inputs.
    """
    dtype = jnp.result_type(*jtu.tree_leaves(x0))
    solver = _with_root_finder_tolerances(solver, controller)
    y0 = (x0, jnp.zeros((), dtype))
    term = diffrax.ODETerm(vector_field)
    w_targets = jnp.asarray(w_targets, dtype)
    n_save = w_targets.shape[0]

    def values_at(x):
        values = dict(measure(x))
        if save_states:
            values["state"] = x
        return values

    # Save times at (or before) the initial time: the measure of x0, broadcast.
    values0 = values_at(x0)
    at_start = w_targets <= 0.0
    save_idx = jnp.sum(at_start.astype(jnp.int32))
    buffers = jtu.tree_map(
        lambda v: jnp.where(
            at_start.reshape((n_save,) + (1,) * jnp.ndim(v)),
            jnp.broadcast_to(v, (n_save,) + jnp.shape(v)),
            jnp.nan,
        ).astype(jnp.result_type(v)),
        values0,
    )

    order = solver.order(term)
    sigma0 = jnp.zeros((), dtype)
    sigma_next, controller_state = controller.init(
        term, sigma0, sigma0 + 1.0, y0, None, None, solver.func, order
    )
    solver_state = solver.init(term, sigma0, sigma_next, y0, None)
    if event is None:
        event_value0, fired0 = jnp.zeros((), dtype), jnp.array(False)
    else:
        event_value0 = jnp.asarray(event(x0), dtype)
        fired0 = event_value0 >= 0

    carry0 = dict(
        sigma=sigma0,
        sigma_next=jnp.asarray(sigma_next, dtype),
        y=y0,
        x_last=x0,
        w_last=jnp.where(save_idx > 0, 0.0, jnp.nan).astype(dtype),
        solver_state=solver_state,
        controller_state=controller_state,
        made_jump=jnp.array(False),
        save_idx=save_idx,
        buffers=buffers,
        event_value=event_value0,
        fired=fired0,
        num_steps=jnp.array(0),
        num_rejected=jnp.array(0),
        consecutive_rejects=jnp.array(0),
        status=jnp.array(STATUS_OK),
    )
    if event is not None:
        # Fired at the start: stop at t = 0 with the initial state.
        carry0["w_last"] = jnp.where(fired0, 0.0, carry0["w_last"])
    stall_rescue = None
    if rescue:
        if event is not None:
            raise ValueError("integrate: rescue is for runs without an event (the state an "
                             "event ends on is not checkpointed); pass rescue=() with an event.")
        stall_rescue = StallRescue(rescue, dtype)
        carry0.update(stall_rescue.carry(y0))
    tightened = no_tightening if stall_rescue is None else stall_rescue.tighten
    if substep_saves and not hasattr(solver, "step_with_substep"):
        raise ValueError(
            f"integrate: substep_saves needs a solver with step_with_substep (e.g. "
            f"RosenbrockW), got {type(solver).__name__}; pass substep_saves=False.")

    # With sub-step saves and no event, a save is an iteration of the step loop of its own
    # (`_substep_saves`), so the method's stages are compiled once, not twice (theory §2.4).
    merged = (substep_saves and event is None and hasattr(solver, "with_first_slope"))
    if merged:
        carry0.update(pending_saves_carry(solver, y0, solver_state, dtype))

    def cond(c):
        going = (c["save_idx"] < n_save) & (c["status"] == STATUS_OK) & ~c["fired"]
        # (merged: the saves an accepted step crossed are written even if the run then stops)
        going = going | c["pending"] if merged else going
        return going | stall_rescue.rescuable(c, merged) if stall_rescue else going

    # diffrax's PIDController never makes a jump (only ClipStepSizeController does): tell the
    # solver so statically, and a first-same-as-last solver compiles no field evaluation for
    # the jump case.
    never_jumps = isinstance(controller, diffrax.PIDController)

    def step_status(c, accept, ok, finite, sig_new, sig_next_new, fired, saves_left,
                    moved=True):
        """After an attempted step: the consecutive rejections, the step count, the status
        (`saves_left`: save times the steps have not reached yet; `moved`: whether the step
        changed the state at all, an accepted step that did not has stalled)."""
        consecutive = jnp.where(accept, 0, c["consecutive_rejects"] + 1)
        num_steps = c["num_steps"] + 1
        status = c["status"]
        status = jnp.where(~ok & (status == STATUS_OK), STATUS_STALLED, status)
        status = jnp.where(
            (consecutive >= _MAX_CONSECUTIVE_REJECTS) & (status == STATUS_OK),
            jnp.where(finite, STATUS_STALLED, STATUS_NONFINITE),
            status,
        )
        # (the loop rebases sigma to 0 at every step, `_rebase`: this stops only a step
        # size that collapsed within one step; a step that cannot move the state stops too)
        stalled = (sig_next_new - sig_new) <= 16 * jnp.finfo(dtype).eps * jnp.abs(sig_new)
        stalled = stalled | (accept & ~moved)
        status = jnp.where(stalled & ~fired & (status == STATUS_OK), STATUS_STALLED, status)
        status = jnp.where(
            (num_steps >= max_steps) & saves_left & ~fired & (status == STATUS_OK),
            STATUS_MAX_STEPS,
            status,
        )
        return consecutive, num_steps, status

    def body(c):
        sigma, sigma_next, y = c["sigma"], c["sigma_next"], c["y"]
        step_args = (term, sigma, sigma_next, y, None, c["solver_state"],
                     False if never_jumps else c["made_jump"])
        if substep_saves:
            y1, y_err, dense_info, solver_state1, res, substep = solver.step_with_substep(
                *step_args)
            state_at = lambda sg: substep(sg)[0]  # noqa: E731
        else:
            y1, y_err, dense_info, solver_state1, res = solver.step(*step_args)
            state_at = lambda sg: interp.evaluate(sg)[0]  # noqa: E731
        finite = _all_finite(y1) & _all_finite(y_err)
        # Non-finite candidates, and steps whose solver failed (an implicit solver's
        # nonlinear solve that did not converge), are rejected: the controller then shrinks
        # the step, as in `diffrax.diffeqsolve`.
        solver_ok = res == diffrax.RESULTS.successful
        y_err = jtu.tree_map(lambda e: jnp.where(finite & solver_ok, e, jnp.inf), y_err)
        y_err = tightened(c, y_err)
        keep, sig_new, sig_next_new, made_jump, cstate, res2 = controller.adapt_step_size(
            sigma, sigma_next, y, y1, None, y_err, order, c["controller_state"]
        )
        keep, sig_new, sig_next_new, cstate = descent_check(
            descent, y[0], y1[0], sigma, sigma_next, keep, sig_new, sig_next_new, cstate,
            c["controller_state"])
        keep, sig_new, sig_next_new = capped(getattr(solver_state1, "cap", None), sigma,
                                             sigma_next, keep, sig_new, sig_next_new)
        ok = res2 == diffrax.RESULTS.successful
        accept = keep & finite & solver_ok & ok

        interp = solver.interpolation_cls(t0=sigma, t1=sigma_next, **dense_info)
        # The bisection only needs `w`: an interpolant of that component alone (every
        # dense_info entry is a `(x, w)` pair like the state) costs O(1) per evaluation.
        interp_w = solver.interpolation_cls(
            t0=sigma, t1=sigma_next, **{name: v[1] for name, v in dense_info.items()}
        )
        w_end = y1[1]

        # The event, located on the dense interpolant where it first becomes >= 0.
        if event is None:
            event_value, fired = c["event_value"], c["fired"]
            x_event, w_event = c["x_last"], w_end
        else:
            event_end = jnp.asarray(event(y1[0]), dtype)
            crossed = accept & (event_end >= 0)

            def locate_event():
                sigma_at = _invert_monotone(
                    lambda sg: event(interp.evaluate(sg)[0]), jnp.zeros((), dtype), sigma,
                    sigma_next, c["event_value"], event_end,
                )
                return state_at(sigma_at), interp_w.evaluate(sigma_at)

            x_event, w_event = jax.lax.cond(crossed, locate_event, lambda: y1)
            # Only an event before the last save time ends the integration there; one later
            # in the same step leaves the last save as the end.
            fired = crossed & (w_event <= w_targets[-1])
            event_value = jnp.where(accept, event_end, c["event_value"])
        w_stop = jnp.where(fired, w_event, w_end)

        # Save every target crossed inside [sigma, sigma_next] (before the event).
        def save_cond(sc):
            idx, _, _, _ = sc
            return (accept & (idx < n_save)
                    & (w_targets[jnp.minimum(idx, n_save - 1)] <= w_stop))

        def save_body(sc):
            idx, buf, _, _ = sc
            sigma_at = _invert_monotone(interp_w.evaluate, w_targets[idx], sigma,
                                        sigma_next, y[1], w_end)
            x_at = state_at(sigma_at)
            # The values lead the tree_map: inside a checkpointed loop each buffer is an
            # `eqxi` buffer object (a pytree node of its own).
            buf = jtu.tree_map(lambda v, b: b.at[idx].set(v), values_at(x_at), buf)
            return idx + 1, buf, x_at, w_targets[idx]

        save_idx, buffers, x_last, w_last = eqxi.while_loop(
            save_cond, save_body, (c["save_idx"], c["buffers"], c["x_last"], c["w_last"]),
            max_steps=n_save, buffers=lambda sc: sc[1], kind="checkpointed",
            checkpoints=n_save,
        )
        if event is not None:
            x_last = jtu.tree_map(lambda a, b: jnp.where(fired, a, b), x_event, x_last)
            w_last = jnp.where(fired, w_event, w_last)

        keep_tree = lambda new, old: jtu.tree_map(  # noqa: E731
            lambda a, b: jnp.where(accept, a, b), new, old
        )
        # A solver may keep part of a rejected attempt's state for the retry (`RosenbrockW`
        # keeps the Jacobian approximation it built at this point).
        rejected_state = c["solver_state"]
        if hasattr(solver, "after_rejection"):
            rejected_state = solver.after_rejection(rejected_state, solver_state1)
        consecutive, num_steps, status = step_status(
            c, accept, ok, finite, sig_new, sig_next_new, fired, save_idx < n_save, moved(y, y1))
        return dict(
            sigma=jnp.where(accept, sig_new, sigma),
            sigma_next=sig_next_new,
            y=keep_tree(y1, y),
            x_last=x_last,
            w_last=w_last,
            solver_state=keep_tree(solver_state1, rejected_state),
            controller_state=cstate,
            made_jump=made_jump,
            save_idx=save_idx,
            buffers=buffers,
            event_value=event_value,
            fired=fired,
            num_steps=num_steps,
            num_rejected=c["num_rejected"] + (~accept).astype(c["num_rejected"].dtype),
            consecutive_rejects=consecutive,
            status=status,
        )

    if merged:
        body = pending_saves_body(
            solver=solver, term=term, controller=controller, order=order,
            never_jumps=never_jumps, w_targets=w_targets, values_at=values_at,
            no_values=jtu.tree_map(jnp.zeros_like, values0), step_status=step_status,
            tightened=tightened, descent=descent)
    body = rebased(body)
    if stall_rescue is not None:
        body = stall_rescue.wrap(body, merged, term, solver, controller, order)
    if progress is not None:
        body = _reporting(body, progress)
    out = eqxi.while_loop(
        cond, body, carry0,
        max_steps=max_steps + n_save if merged else max_steps,
        buffers=lambda c: c["buffers"], kind="checkpointed",
    )
    return IntegrationResult(
        saved=out["buffers"],
        x_final=out["x_last"],
        t_final=jnp.expm1(out["w_last"]),
        t_reached=jnp.expm1(out["y"][1]),
        event_fired=out["fired"],
        status=out["status"],
        num_steps=out["num_steps"],
        num_rejected=out["num_rejected"],
        num_rescues=out["num_rescues"] if stall_rescue else jnp.array(0),
    )


def _reporting(body, progress):
    """`body` followed by `progress(w, num_steps, num_rejected)` on the host every
    `EVERY` attempted steps (`jax.debug.callback`, theory §2.4)."""

    def reporting_body(c):
        out = body(c)
        jax.lax.cond(
            out["num_steps"] % EVERY == 0,
            lambda: jax.debug.callback(progress, out["y"][1], out["num_steps"],
                                       out["num_rejected"]),
            lambda: None)
        return out

    return reporting_body


def log_norm(tree) -> Array:
    """`log ||tree||_2` over all leaves, without overflow or underflow."""
    leaves = jtu.tree_leaves(tree)
    sq = sum(jnp.sum(jnp.abs(x) ** 2) for x in leaves)
    return 0.5 * jnp.log(sq)
