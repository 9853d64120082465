"""The stall rescue of `_integrate.integrate` (theory §2.7, "Stall rescue"): where a run would
end `stalled` or `nonfinite`, it goes back to a state kept a few dozen accepted steps earlier
and integrates on with a tighter tolerance (`integrate(rescue=(r_1, r_2, ...))`).

Its loop-carry entries: `rescue_level` (0, or the index of the factor in use), `rescue_w` (the
`w` where the failure happened), `rescue_passed` (accepted steps past it), `num_rescues`, the
two kept states `checkpoint_old`/`checkpoint_new` and `checkpoint_count` (accepted steps since
the last was kept)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._status import STATUS_NONFINITE, STATUS_OK, STATUS_STALLED

# A state is kept every this many accepted steps; a failure goes back to the one before the
# last, and the tighter tolerance lasts until this many accepted steps past the failure.
RESCUE_CHECKPOINT = 50

_KEYS = ("rescue_level", "rescue_w", "rescue_passed", "num_rescues", "checkpoint_old",
         "checkpoint_new", "checkpoint_count")


def check_factors(name: str, factors) -> tuple[float, ...]:
    """`factors` as a tuple of floats, each `>= 1` (`ValueError` naming `name` otherwise)."""
    factors = tuple(float(r) for r in factors)
    if not all(r >= 1.0 for r in factors):
        raise ValueError(f"{name} factors must be >= 1 (they divide rtol and atol), got "
                         f"{factors}; pass () to turn the rescue off.")
    return factors


def no_tightening(c, y_err):
    """`y_err` unchanged: the error scaling of a run without the rescue."""
    return y_err


class StallRescue:
    """The rescue with tolerance factors `factors` (each `>= 1`) in a loop of dtype `dtype`."""

    def __init__(self, factors: tuple[float, ...], dtype):
        self.factors = check_factors("integrate: rescue", factors)
        self.dtype = dtype
        self.scales = jnp.asarray((1.0,) + factors, dtype)

    def carry(self, y0) -> dict:
        """The loop carry's entries at the start (`y0` kept as both checkpoints)."""
        return dict(rescue_level=jnp.array(0), rescue_w=jnp.zeros((), self.dtype),
                    rescue_passed=jnp.array(0), num_rescues=jnp.array(0),
                    checkpoint_old=y0, checkpoint_new=y0, checkpoint_count=jnp.array(0))

    def tighten(self, c, y_err):
        """`y_err` times the factor in use: `rtol` and `atol` divided by it."""
        scale = self.scales[c["rescue_level"]]
        return jtu.tree_map(lambda e: e * scale, y_err)

    def rescuable(self, c, merged: bool):
        """A failure the rescue takes back to a checkpoint (with `merged` sub-step saves, once
        its pending saves are written)."""
        failed = (c["status"] == STATUS_STALLED) | (c["status"] == STATUS_NONFINITE)
        can = failed & (c["rescue_level"] < len(self.factors))
        return can & ~c["pending"] if merged else can

    def wrap(self, body: Callable, merged: bool, term, solver, controller, order) -> Callable:
        """`body` with the rescue: an iteration that starts from a rescuable failure first
        returns to `checkpoint_old` (between one and two checkpoint intervals back) with a
        fresh solver state and initial step and the next factor; the factor returns to 1 once
        the run has taken `RESCUE_CHECKPOINT` accepted steps past the point of the failure.
        Inside a rescue the checkpoints stay where they are, so a second failure goes back to
        the same state; after it they start afresh."""
        dtype = self.dtype

        def restart(c):
            y = c["checkpoint_old"]
            sigma = c["sigma"]
            sigma_next, cstate = controller.init(term, sigma, sigma + 1.0, y, None, None,
                                                 solver.func, order)
            return dict(
                c, y=y, sigma_next=jnp.asarray(sigma_next, dtype), controller_state=cstate,
                solver_state=solver.init(term, sigma, sigma_next, y, None),
                made_jump=jnp.array(False), status=jnp.array(STATUS_OK),
                consecutive_rejects=jnp.zeros_like(c["consecutive_rejects"]),
                rescue_level=c["rescue_level"] + 1,
                rescue_w=jnp.maximum(c["rescue_w"], c["y"][1]),
                rescue_passed=jnp.zeros_like(c["rescue_passed"]),
                num_rescues=c["num_rescues"] + 1)

        def rescuing_body(c):
            c = jax.lax.cond(self.rescuable(c, merged), restart, lambda c: c, c)
            out = body(c)
            out.update({k: c[k] for k in _KEYS})
            accepted = (out["num_steps"] > c["num_steps"]) & (
                out["num_rejected"] == c["num_rejected"])
            rescuing = c["rescue_level"] > 0
            passed = c["rescue_passed"] + (
                rescuing & accepted & (out["y"][1] > c["rescue_w"])).astype(
                c["rescue_passed"].dtype)
            done = rescuing & (passed >= RESCUE_CHECKPOINT)
            count = c["checkpoint_count"] + (accepted & ~rescuing).astype(
                c["checkpoint_count"].dtype)
            rotate = (count >= RESCUE_CHECKPOINT) | done
            out["checkpoint_count"] = jnp.where(rotate, 0, count)
            out["checkpoint_old"] = jtu.tree_map(
                lambda y, new, old: jnp.where(done, y, jnp.where(rotate, new, old)),
                out["y"], c["checkpoint_new"], c["checkpoint_old"])
            out["checkpoint_new"] = jtu.tree_map(lambda a, b: jnp.where(rotate, a, b),
                                                 out["y"], c["checkpoint_new"])
            out["rescue_passed"] = jnp.where(done, 0, passed)
            out["rescue_level"] = jnp.where(done, 0, c["rescue_level"])
            out["rescue_w"] = jnp.where(done, 0.0, c["rescue_w"]).astype(dtype)
            return out

        return rescuing_body
