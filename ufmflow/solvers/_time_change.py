"""The time-change table (theory §2): every solver integrates in a solver time `sigma` with
`dt/dsigma = g(x) > 0`, which keeps the path and changes only how it is parametrized. Defined
once here; each integration path says which of these it implements.
"""

from __future__ import annotations

import jax.numpy as jnp

# name -> what g is (for messages and --help).
TIME_CHANGES: dict[str, str] = {
    "bounded": "g = min(max(||x|| / B, 1 / loss), 1 + t), smoothed, with B >= ||dx/dt|| a bound "
    "from the layer norms: no faster than a fixed fraction of the norm or an e-fold of t per "
    "unit sigma, and smooth where the speed itself is not (full GF only; its default)",
    "relative": "g = ||x|| / ||dx/dt||: the state moves a fixed fraction of its norm per unit "
    "sigma (the default)",
    "arc": "g = 1 / ||dx/dt||: arc length",
    "loss": "g = 1 / loss: dx/dsigma = -grad log loss (the lazy late phase)",
    "none": "g = 1: plain GF time",
    "log": "the state is log s and g bounds both the relative change of every singular value "
    "and the change of the softmax (batched reduced ODE only, solve_hadamard_many)",
}

# Which integration path implements which entries.
FLOW_TIME_CHANGES = ("relative", "arc", "loss", "none")  # solve_hadamard, flow_until
FULL_FLOW_TIME_CHANGES = ("bounded",) + FLOW_TIME_CHANGES  # solve_flow (the full GF)
BATCHED_TIME_CHANGES = ("relative", "log")  # solve_hadamard_many


def check_time_change(name, allowed=FLOW_TIME_CHANGES) -> str:
    """`name` if it is one of `allowed`, else `ValueError` naming the choices and the default."""
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(
            f"time_change must be one of {tuple(allowed)}, got {name!r}; "
            f"'{allowed[0]}' (the default): {TIME_CHANGES[allowed[0]]}."
        )
    return name


def log_g_bounded(log_scale, log_loss, log_logit_grad, log_gain, w):
    """`log g` of the `"bounded"` time change (theory §2.6): `g` is a smooth
    `min(max(||x|| / B, 1 / loss), 1 + t)` with `B = loss ||grad_Z log loss|| gain`, where
    `gain = sqrt(sum_l prod_{k != l} ||W_k||^2)` (Frobenius norms of the active factors, `H`
    included), so `B >= ||dx/dt||` (chain rule and submultiplicativity). `w = log1p(t)`.

    Unlike `"relative"` it never divides by `||grad loss||` itself, which varies on the stiff
    scale near the floor of a stiff valley (there the normalized flow chatters and the steps
    collapse); `1 / loss` keeps `t` moving where `B` is loose, and `1 + t` keeps the
    clock at no more than an e-fold of `t` per unit sigma on plateaus."""
    log_g_speed = log_scale - (log_loss + log_logit_grad + log_gain)
    return -jnp.logaddexp(-jnp.logaddexp(log_g_speed, -log_loss), -w)


def log_g(time_change: str, log_scale, log_loss, log_speed=None, *, log_velocity=None):
    """`log g` (theory §2) from `log ||x||` (`log_scale`), `log loss` and either
    `log_speed = log ||grad log loss||` (the full GF: `||dx/dt|| = loss * exp(log_speed)`) or,
    for a flow whose velocity norm is known directly (the reduced ODE), `log_velocity =
    log ||dx/dt||`. `log_loss` may be a zero-argument callable: it is then evaluated only by
    the time changes that need it."""
    check_time_change(time_change)
    if time_change == "none":
        return jnp.zeros_like(log_scale)
    if log_velocity is not None:
        if time_change == "loss":
            return -(log_loss() if callable(log_loss) else log_loss)
        if time_change == "arc":
            return -log_velocity
        return log_scale - log_velocity  # "relative"
    log_loss = log_loss() if callable(log_loss) else log_loss
    if time_change == "loss":
        return -log_loss
    if time_change == "arc":
        return -log_loss - log_speed
    return log_scale - log_loss - log_speed  # "relative"
