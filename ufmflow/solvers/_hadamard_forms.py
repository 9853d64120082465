"""The two forms of the reduced ODE that `solve_hadamard_many` integrates (theory §2, §4): the
state variables, the field (`_hadamard_kernels`) and the error weights of each time change in
`BATCHED_TIME_CHANGES`. A form is what `_batched_tsit5.run_batch` needs to know of a problem:
`field(x, w, alpha, shifts) -> (dx, dw, shifts)`, `to_state`/`to_s` (the state from and to the
singular values), `scales`, `error` (the scaled error norm of a step, `< 1` accepts), `finite`
and `size` (the state's size for the initial step), all per column of `(K, B)` arrays.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._batched_tsit5 import rms
from ._hadamard_kernels import _log_field, _relative_field
from ._time_change import BATCHED_TIME_CHANGES


class _Linear:
    """The `"relative"` time change in the variables `s` (`solve_hadamard`'s default): errors
    weighted by `atol + rtol |y|`, as diffrax's controller."""

    field = staticmethod(_relative_field)

    @staticmethod
    def to_state(s):
        return s

    @staticmethod
    def to_s(x):
        return x

    @staticmethod
    def scales(x, w, x1, w1, rtol, atol):
        return (atol + jnp.maximum(jnp.abs(x), jnp.abs(x1)) * rtol,
                atol + jnp.maximum(jnp.abs(w), jnp.abs(w1)) * rtol)

    @classmethod
    def error(cls, es, ew, f1s, f1w, x, w, x1, w1, rtol, atol):
        sc_s, sc_w = cls.scales(x, w, x1, w1, rtol, atol)
        return rms(es / sc_s, ew / sc_w)

    @staticmethod
    def finite(x):
        return jnp.all(jnp.isfinite(x), 0)

    @staticmethod
    def size(x):
        return x


class _Log:
    """The `"log"` time change (`log_time_field`) in the variables `u = log s` (`-inf` for
    `s_i = 0`) and `w = log1p(tau)`.

    Error per step: the error of `u` *at the physical time reached* (the embedded estimate of
    `u` minus `du/dw` times that of `w`: what a save at a given `tau` sees) weighted by `rtol`,
    i.e. a relative error of `rtol` in each `s_i` (`atol` does not enter); and the error of `w`
    weighted by `rtol (1 + |w|)`, as the `"relative"` form weights it. On the benchmark runs
    (1024, K=64, depth 1..8, rtol 1e-6) this took 79 steps per run against 83 for `rtol` alone
    on both `u` and `w`, and its largest relative error at the saves was 2.4e-4 against 4.4e-4
    for the raw `u` error, with `w` weighted by `rtol`."""

    field = staticmethod(_log_field)

    @staticmethod
    def to_state(s):
        return jnp.where(s > 0, jnp.log(jnp.where(s > 0, s, 1.0)), -jnp.inf)

    @staticmethod
    def to_s(x):
        return jnp.exp(x)

    @staticmethod
    def scales(x, w, x1, w1, rtol, atol):
        return rtol, rtol * (1 + jnp.maximum(jnp.abs(w), jnp.abs(w1)))

    @classmethod
    def error(cls, es, ew, f1s, f1w, x, w, x1, w1, rtol, atol):
        pos = f1w > 0
        du_dw = jnp.where(pos, f1s / jnp.where(pos, f1w, 1.0), 0.0)
        sc_s, sc_w = cls.scales(x, w, x1, w1, rtol, atol)
        return rms((es - du_dw * ew) / sc_s, ew / sc_w)

    @staticmethod
    def finite(x):
        return jnp.all(~jnp.isnan(x) & (x < jnp.inf), 0)

    @staticmethod
    def size(x):  # `-inf` entries (s_i = 0) do not count towards the state's size
        return jnp.where(x > -jnp.inf, x, 0.0)


FORMS = {"relative": _Linear, "log": _Log}
assert tuple(FORMS) == BATCHED_TIME_CHANGES
