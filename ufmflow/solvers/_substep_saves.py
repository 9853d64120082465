"""Sub-step saves as iterations of the step loop (theory §2.4, "A save is an iteration of the
step loop"): `_integrate.integrate`'s loop body when a stiff solver saves by sub-steps and no
event is given. An accepted step that crosses save times leaves them pending, with its start,
its first slope and the `w` parts of its dense output; each following iteration takes one
pending save by running the solver's own `step` from that start to the save time (the step's
`W`, no new Krylov space), so the method's stages are compiled once, not once more for the
saves."""

from __future__ import annotations

from typing import Callable

import diffrax
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._complement import capped
from ._monotone import descent_check
from ._roots import invert_monotone as _invert_monotone
from ._status import all_finite as _all_finite
from ._status import moved



def pending_saves_carry(solver, y0, solver_state, dtype) -> dict:
    """The loop carry's entries for pending saves, at the start (none pending)."""
    sigma0 = jnp.zeros((), dtype)
    return dict(
        pending=jnp.array(False),
        y_prev=y0,
        f0_prev=solver.first_slope(solver_state),
        sigma_prev=sigma0,
        sigma_prev_end=sigma0,
        # the `w` parts of the accepted step's Hermite dense output (`RosenbrockW`'s)
        dense_w_prev={k: jnp.zeros((), dtype) for k in ("y0", "y1", "k0", "k1")},
        w_prev_end=jnp.zeros((), dtype),
    )


def pending_saves_body(*, solver, term, controller, order, never_jumps: bool, w_targets,
                       values_at: Callable, no_values, step_status: Callable,
                       tightened: Callable, descent: Callable | None = None) -> Callable:
    """The loop body: `integrate`'s carry (with `pending_saves_carry`'s entries) to the next.

    `solver` has `first_slope` and `with_first_slope` (`RosenbrockW`); `values_at(x)` are the
    measurements at a save, `no_values` zeros of their shapes; `step_status` is `integrate`'s
    status update after an attempted step; `tightened(c, y_err)` scales the error estimate
    (the stall rescue's tighter tolerance, `_rescue`); `descent` a function of the state that
    the flow never increases (`_monotone`), checked on steps, not on saves."""
    n_save = w_targets.shape[0]

    def body(c):
        """One iteration: a save of the last accepted step, if one is pending, else a step.

        A save runs the solver's step from the accepted step's start `(sigma_prev, y_prev)`,
        with its first slope and its `W` (the state's, built there: no new Krylov space), to
        the save time located on the step's interpolant of `w`: the sub-step of
        `step_with_substep` (its very-stiff projection taken for the sub-step's size). Saves
        count no step."""
        is_save = c["pending"]
        idx = jnp.minimum(c["save_idx"], n_save - 1)

        def pick(a, b):  # a in a save iteration, else b
            return jtu.tree_map(lambda u, v: jnp.where(is_save, u, v), a, b)

        s0, s1 = c["sigma_prev"], c["sigma_prev_end"]
        interp_prev = solver.interpolation_cls(t0=s0, t1=s1, **c["dense_w_prev"])
        sigma_at = jax.lax.cond(
            is_save,
            lambda: _invert_monotone(interp_prev.evaluate, w_targets[idx], s0, s1,
                                     c["y_prev"][1], c["w_prev_end"]),
            lambda: s1)
        sigma, sigma_next, y = c["sigma"], c["sigma_next"], c["y"]
        t0 = jnp.where(is_save, s0, sigma)
        t1 = jnp.where(is_save, sigma_at, sigma_next)
        y0 = pick(c["y_prev"], y)
        state0 = pick(solver.with_first_slope(c["solver_state"], c["f0_prev"]),
                      c["solver_state"])
        y1, y_err, dense_info, solver_state1, res = solver.step(
            term, t0, t1, y0, None, state0,
            False if never_jumps else c["made_jump"] & ~is_save)

        # The step's bookkeeping, as in `body` (discarded in a save iteration).
        finite = _all_finite(y1) & _all_finite(y_err)
        solver_ok = res == diffrax.RESULTS.successful
        y_err = jtu.tree_map(lambda e: jnp.where(finite & solver_ok, e, jnp.inf), y_err)
        y_err = tightened(c, y_err)
        # (not in a save iteration: its derivative could be non-finite there, at h = 0)
        keep, sig_new, sig_next_new, made_jump, cstate, res2 = jax.lax.cond(
            is_save,
            lambda: (jnp.array(False), sigma, sigma_next, jnp.asarray(c["made_jump"]),
                     c["controller_state"], diffrax.RESULTS.successful),
            lambda: controller.adapt_step_size(
                t0, t1, y0, y1, None, y_err, order, c["controller_state"]))
        keep, sig_new, sig_next_new, cstate = descent_check(
            descent, y0[0], y1[0], t0, t1, keep, sig_new, sig_next_new, cstate,
            c["controller_state"])
        keep, sig_new, sig_next_new = capped(getattr(solver_state1, "cap", None), t0, t1, keep,
                                             sig_new, sig_next_new)
        ok = res2 == diffrax.RESULTS.successful
        accept = keep & finite & solver_ok & ok
        stepped = accept & ~is_save  # an accepted step
        w_end = y1[1]

        # A save iteration writes its save; an accepted step that crosses save times leaves
        # them pending, with what their sub-steps need.
        values = jax.lax.cond(is_save, lambda: values_at(y1[0]),
                              lambda: no_values)
        buffers = jtu.tree_map(lambda v, b: eqxi.buffer_at_set(b, idx, v, pred=is_save),
                               values, c["buffers"])
        save_idx = c["save_idx"] + is_save.astype(c["save_idx"].dtype)
        nxt = w_targets[jnp.minimum(save_idx, n_save - 1)]
        pending = (save_idx < n_save) & jnp.where(is_save, nxt <= c["w_prev_end"],
                                                  stepped & (nxt <= w_end))

        def if_stepped(a, b):
            return jtu.tree_map(lambda u, v: jnp.where(stepped, u, v), a, b)

        # A step past the last save time has finished the run (its saves are pending).
        saves_left = (save_idx < n_save) & ~(stepped & (w_end >= w_targets[-1]))
        consecutive, num_steps, status = step_status(
            c, accept, ok, finite, sig_new, sig_next_new, jnp.array(False), saves_left,
            moved(y0, y1))
        rejected_state = solver.after_rejection(c["solver_state"], solver_state1)
        stepped_state = jtu.tree_map(lambda a, b: jnp.where(accept, a, b), solver_state1,
                                     rejected_state)
        # After a save the state is the one before it: a save builds no `W`, so only the
        # first slope differs (selecting the rest would copy the basis every iteration).
        state = pick(solver.with_first_slope(stepped_state, solver.first_slope(
            c["solver_state"])), stepped_state)
        return dict(
            sigma=jnp.where(stepped, sig_new, sigma),
            sigma_next=jnp.where(is_save, sigma_next, sig_next_new),
            y=if_stepped(y1, y),
            x_last=pick(y1[0], c["x_last"]),
            w_last=jnp.where(is_save, w_targets[idx], c["w_last"]),
            solver_state=state,
            controller_state=pick(c["controller_state"], cstate),
            made_jump=jnp.where(is_save, c["made_jump"], made_jump),
            save_idx=save_idx,
            buffers=buffers,
            event_value=c["event_value"],
            fired=c["fired"],
            num_steps=jnp.where(is_save, c["num_steps"], num_steps),
            num_rejected=c["num_rejected"] + (~accept & ~is_save).astype(
                c["num_rejected"].dtype),
            consecutive_rejects=jnp.where(is_save, c["consecutive_rejects"], consecutive),
            status=jnp.where(is_save, c["status"], status),
            pending=pending,
            y_prev=if_stepped(y, c["y_prev"]),
            f0_prev=if_stepped(solver.first_slope(c["solver_state"]), c["f0_prev"]),
            sigma_prev=jnp.where(stepped, sigma, s0),
            sigma_prev_end=jnp.where(stepped, sigma_next, s1),
            dense_w_prev=if_stepped({k: v[1] for k, v in dense_info.items()},
                                    c["dense_w_prev"]),
            w_prev_end=jnp.where(stepped, w_end, c["w_prev_end"]),
        )

    return body
