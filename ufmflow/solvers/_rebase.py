"""The solver time rebased at every step (theory §2.7, "Steps below the resolution of sigma"):
`_integrate.integrate`'s loop body wrapped so that `sigma` restarts from 0 after each accepted
step (after its pending sub-step saves, `_substep_saves`). The flows are autonomous in
`sigma`, so only the rounding changes, and a step is never limited by the resolution of a
large `sigma`."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp


def rebased(body):
    """`body` with the solver time `sigma` shifted to 0 after every iteration (and with it
    every solver time the carry holds: the next step's end, the last accepted step's for
    pending saves, the solver state's `t_built`), once an accepted step's pending saves are
    written. The flows are autonomous in `sigma`, so nothing changes but the rounding, and a
    step size is never limited by the resolution of a large `sigma` (theory §2.7, "Steps below the resolution of sigma": a case-(ii) valley
    at `sigma = 8.4e5`, where the valley needs steps of `1e-11`, stalled at `3e-9`)."""

    def rebased_body(c):
        out = body(c)
        shift = out["sigma"]
        if "pending" in out:
            # not while an accepted step's saves are pending: they are sub-steps from its
            # start, in the frame the step was taken in (as the saves of the looped path)
            shift = jnp.where(out["pending"], jnp.zeros_like(shift), shift)
        out["sigma"] = out["sigma"] - shift
        out["sigma_next"] = out["sigma_next"] - shift
        for key in ("sigma_prev", "sigma_prev_end"):
            if key in out:
                out[key] = out[key] - shift
        state = out["solver_state"]
        if hasattr(state, "t_built"):
            out["solver_state"] = eqx.tree_at(lambda s: s.t_built, state,
                                              state.t_built - shift)
        return out

    return rebased_body
