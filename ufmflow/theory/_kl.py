"""The KL divergence to NC along the reduced dynamics (Theorem 4.3 iii, paper Fig. 10; theory
§4.7): the cross-polytope mixture whose KL grows without bound, its threshold, and the rate
`dKL/dtau` along the field."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..core._hadamard import _log2, depth_exponent, hadamard_log_rates
from ._checks import real_arg
from ._stability import _check_depth, cross_polytope_support


def cross_polytope_mixture(num_classes: int, x, delta, *, v: int = 1, dtype=None):
    """`s = x (1_S + delta 1_T)` with `S` the cross-polytope support and `T = {1..K-1} \\ S`
    (paper Eq. 49, Fig. 10): `delta = 1` is DNC, `delta = 0` the cross-polytope.

    **Raises:** `ValueError` for a bad `num_classes` or `v`, `x <= 0`, `delta < 0` or
    non-finite values (concrete ones)."""
    real_arg("x", x, minimum=0.0, strict=True, fix="x > 0, the scale of the mixture.")
    real_arg("delta", delta, minimum=0.0, fix="delta >= 0, the off-support ratio (1: DNC).")
    sup = cross_polytope_support(num_classes, v)
    dtype = dtype or jnp.result_type(float)
    x = jnp.asarray(x, dtype)
    s = jnp.full((num_classes,), delta, dtype).at[0].set(0.0).at[sup].set(1.0)
    return x * s


def cross_polytope_ratio_threshold(num_classes: int, depth) -> float:
    """Sufficient condition for the KL divergence to NC to grow without bound (Theorem 4.3 iii).

    Along `s = a 1_S + b 1_T` (cross-polytope support `S`, `|S| = K/2`, `T` the other
    `K/2 - 1` nonzero indices; the form is preserved by the flow) the logits of class 0 are
    `(a+b)/2` on class 0, `(b-a)/2` on class `v` and 0 elsewhere, so with
    `Z = e^((a+b)/2) + e^((b-a)/2) + K - 2`

        da/dtau = a^alpha (K - 2 + 2 e^(-(a-b)/2)) / Z,     db/dtau = b^alpha K / Z,

    and `r = b/a` obeys `d log r / d log a = r^(alpha-1) K / (K - 2 + 2e^(-(a-b)/2)) - 1
    <= r^(alpha-1) K/(K-2) - 1`. If `r0 < ((K-2)/K)^(1/(alpha-1))` this is `<= -c < 0`
    forever, so `r <= r0 (a/a0)^(-c) -> 0` as `a -> infinity` and
    `KL -> infinity` (like `(K/2-1)/(K-1) log(1/r)`). Returns that threshold on `r0 = delta`
    (`0` for `depth = 1`: there `r` always grows toward DNC).

    **Raises:** `ValueError` for `num_classes` not a power of two `>= 4` or `depth < 1`.
    """
    if _log2(num_classes, "num_classes") < 2:
        raise ValueError(f"num_classes must be >= 4 (the cross-polytope has K/2 modes), got "
                         f"{num_classes!r}.")
    _check_depth(depth)
    alpha = float(depth_exponent(float(depth)))
    if alpha <= 1.0:
        return 0.0
    return ((num_classes - 2) / num_classes) ** (1.0 / (alpha - 1.0))


def kl_rate(s: Float[ArrayLike, "... K"], depth) -> Float[Array, "..."]:
    """`d KL(u || p)/dtau` along the reduced field, `p_i = s_i / sum_{j>=1} s_j` (theory §4):

    `KL = -mean_i log((K-1) p_i)` gives `dKL/dtau = sum_{i>=1} (p_i - 1/(K-1)) F_i` with
    `F_i = (ds_i/dtau)/s_i = s_i^(alpha-1)(1 - lam_i)`. Needs `s_i > 0` for `i >= 1`.

    **Raises:** `ValueError` for `depth < 1` (concrete) or a concrete `s` with an entry
    `s_i <= 0`, `i >= 1`, or not finite.
    """
    _check_depth(depth)
    if not isinstance(s, jax.core.Tracer):
        arr = np.asarray(s, dtype=float)
        if arr.ndim < 1 or arr.shape[-1] < 2 or not np.all(np.isfinite(arr[..., 1:])
                                                           & (arr[..., 1:] > 0)):
            raise ValueError("s must be (..., K) singular values with s_i > 0 and finite for "
                             f"i >= 1 (the KL rate divides by them), got shape {arr.shape}.")
    s = jnp.asarray(s)
    s1 = s[..., 1:]
    p = s1 / jnp.sum(s1, axis=-1, keepdims=True)
    f = jnp.exp(hadamard_log_rates(s, depth)[..., 1:] - jnp.log(s1))
    return jnp.sum((p - 1.0 / s1.shape[-1]) * f, axis=-1)
