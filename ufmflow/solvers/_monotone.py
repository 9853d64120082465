"""Steps that raise the loss are rejected (theory §2.6, "Steps that raise the loss").

Along gradient flow the loss never rises, whatever the time change: `d log L / dsigma = -g L
||grad log L||^2 <= 0` (theory §2.3). A step whose end has a higher log-loss than its start is
therefore wrong, whatever its error estimate says. In a case-(ii) valley (theory §2.6) the
estimate misses exactly such steps: an error of the tolerance's size along a Hessian
eigenvalue of `1e12` raises the loss by `lambda delta^2 / 2`, and the filtered estimate
(`RosenbrockW(filter_error=True)`) divides that component by `1 + h gamma |lambda|`. Accepted,
such a step leaves the state far up the valley's wall, where the projected stages of the next
steps fail, and the run crawls at steps of `1e-9` (measured: theory §2.6).

`descent_check` turns the controller's decision into a rejection where the log-loss rose by
more than `DESCENT_SLACK (1 + |log L|)`, and retries the step at `DESCENT_CUT` of its length
with the controller's state from before the step. The slack is far above the rounding of
the log-loss (`1e-11` at the case-(ii) states measured, where the top singular value of the
logits is `1.6e10`) and far below any change that matters to a run's results."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# A rise of the log-loss by more than DESCENT_SLACK * (1 + |log L|) rejects the step.
DESCENT_SLACK = 1e-8
# ... and the retry is this fraction of the rejected step.
DESCENT_CUT = 0.5


def descent_check(descent: Callable | None, x0, x1, t0, t1, keep, sig_new, sig_next_new,
                  cstate_new, cstate_old):
    """The controller's decision `(keep, sig_new, sig_next_new, controller_state)` for the
    attempted step `[t0, t1]` from `x0` to `x1`, with `descent(x)` a function that the exact
    flow never increases (the log-loss; `None`: unchanged). A kept step along which it rose
    by more than `DESCENT_SLACK (1 + |descent(x0)|)` is rejected, the retry `DESCENT_CUT`
    times as long, and the controller's state is the one from before the step."""
    if descent is None:
        return keep, sig_new, sig_next_new, cstate_new
    v0, v1 = descent(x0), descent(x1)
    rise = keep & (v1 - v0 > DESCENT_SLACK * (1.0 + jnp.abs(v0)))
    sig_new = jnp.where(rise, t0, sig_new)
    sig_next_new = jnp.where(rise, t0 + DESCENT_CUT * (t1 - t0), sig_next_new)
    cstate = jax.tree_util.tree_map(lambda a, b: jnp.where(rise, b, a), cstate_new, cstate_old)
    return keep & ~rise, sig_new, sig_next_new, cstate
