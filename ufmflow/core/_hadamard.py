"""Reduced Hadamard singular-value dynamics (theory §4, paper Theorem 4.2 / Eq. 6)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import check_int
from ._model import _log_ce_from_gaps


def _log2(k: int, name: str = "K") -> int:
    k_int = check_int(name, k, fix="pick 2, 4, 8, 16, ... (Sylvester construction).")
    if k_int & (k_int - 1):
        raise ValueError(
            f"{name} must be a power of two (Sylvester construction), got {k!r}; "
            "pick 2, 4, 8, 16, ..."
        )
    return k_int.bit_length() - 1


@functools.lru_cache(maxsize=None)
def _sylvester_np(k: int) -> np.ndarray:
    _log2(k)
    h = np.ones((1, 1), dtype=np.int8)
    while h.shape[0] < k:
        h = np.block([[h, h], [h, -h]])
    return h


def sylvester_hadamard(k: int, dtype=None) -> Float[Array, "K K"]:
    """The Sylvester Hadamard matrix `H_K` (`H_1 = [1]`, `H_2k = [[H_k, H_k], [H_k, -H_k]]`).

    Symmetric, entries `+-1`, `H H = K I`; `H[i, j] = (-1)^popcount(i & j)`.

    **Raises:** `ValueError` if `k` is not a power of two.
    """
    return jnp.asarray(_sylvester_np(k), dtype=dtype or jnp.result_type(float))


def fwht(x: Float[ArrayLike, "... K"]) -> Float[Array, "... K"]:
    """Fast Walsh–Hadamard transform along the last axis: `x @ H_K` in O(K log K).

    Equals `x @ sylvester_hadamard(K)` (Sylvester / natural ordering, unnormalized).
    """
    x = jnp.asarray(x)
    k = x.shape[-1]
    m = _log2(k, "the last axis of x")
    batch = x.shape[:-1]
    h = 1
    for _ in range(m):
        y = x.reshape(*batch, k // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = jnp.stack([a + b, a - b], axis=-2).reshape(*batch, k)
        h *= 2
    return x


def depth_exponent(depth) -> Float[Array, ""]:
    """`alpha = 2L/(L+1)` (theory §4)."""
    return 2.0 * depth / (depth + 1.0)


def hadamard_time_scale(num_classes: int, per_class: int, depth) -> float:
    """`c = (L+1) / (K n^(1/(L+1)))`: reduced time `tau = c t` in GF time `t` (theory §4)."""
    return (depth + 1.0) / (num_classes * per_class ** (1.0 / (depth + 1.0)))


def hadamard_logits(s: Float[ArrayLike, "... K"]) -> Float[Array, "... K"]:
    """Logits of class 0, `Hk s / K` (column 0 of `Zbar = O diag(s) O`); by symmetry every class
    sees a permutation of these."""
    s = jnp.asarray(s)
    return fwht(s) / s.shape[-1]


def _odd_mask(k: int) -> np.ndarray:
    return _sylvester_np(k) < 0  # mask[k, i]: Hk[k, i] = -1


def log_one_minus_lambda(
    s: Float[ArrayLike, "... K"], method: str = "auto"
) -> Float[Array, "... K"]:
    """`log(1 - lam_i(s))` with `lam = Hk^T softmax(Hk s / K)`, stable in log space (theory §4).

    `1 - lam_i = 2 sum_{k : Hk[k, i] = -1} q_k`; index 0 gives `-inf` (`lam_0 = 1`).

    `method="dense"` takes the masked log-sum-exp, O(K^2) and exact to rounding even when the
    rate is far below the largest softmax weight. `method="fast"` uses the fast transform,
    O(K log K): it forms `(sum p - Hk p) / 2` from max-shifted weights `p`, so a rate below
    about `1e-13 K` times the largest off-class weight loses relative accuracy (its absolute
    error stays at rounding level). `"auto"` picks dense for `K <= 256`.
    """
    s = jnp.asarray(s)
    k = s.shape[-1]
    _log2(k, "len(s)")
    if method == "auto":
        method = "dense" if k <= 256 else "fast"
    logq = jax.nn.log_softmax(hadamard_logits(s), axis=-1)
    # Index 0 is -inf, set by a `where` *after* a finite stand-in, so that its derivative is an
    # exact zero rather than NaN (a log-sum-exp over no terms, or log 0, has a NaN derivative,
    # and a NaN row would spoil every Jacobian of the field: theory §4.2).
    first = jnp.arange(k) == 0
    if method == "dense":
        mask = jnp.asarray(_odd_mask(k)) | first  # column 0 gets finite stand-in terms
        terms = jnp.where(mask, logq[..., :, None], -jnp.inf)  # (..., k, i)
        return jnp.where(first, -jnp.inf, jnp.log(2.0) + jax.nn.logsumexp(terms, axis=-2))
    if method == "fast":
        logq_off = logq.at[..., 0].set(-jnp.inf)  # Hk[0, i] = 1: class 0 never enters
        m = jnp.max(logq_off, axis=-1, keepdims=True)
        p = jnp.exp(logq_off - m)
        odd_sum = 0.5 * (jnp.sum(p, axis=-1, keepdims=True) - fwht(p))
        odd_sum = jnp.where(first, 1.0, jnp.maximum(odd_sum, 0.0))
        return jnp.where(first, -jnp.inf, jnp.log(2.0) + m + jnp.log(odd_sum))
    raise ValueError(f"method must be 'auto', 'dense' or 'fast', got {method!r}.")


def _safe_log(s):
    pos = s > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, s, 1.0)), -jnp.inf)


def hadamard_log_rates(
    s: Float[ArrayLike, "... K"], depth, method: str = "auto"
) -> Float[Array, "... K"]:
    """`log(ds_i/dtau) = alpha log s_i + log(1 - lam_i)`; `-inf` where the rate is zero."""
    s = jnp.asarray(s)
    alpha = depth_exponent(depth)
    return alpha * _safe_log(s) + log_one_minus_lambda(s, method)


def hadamard_field(
    s: Float[ArrayLike, "... K"], depth, method: str = "auto"
) -> Float[Array, "... K"]:
    """The reduced Hadamard vector field `ds/dtau = s^alpha (1 - lam(s))` (paper Eq. 6, theory §4).

    **Arguments:**

    - `s`: singular values of the class-mean logits, shape `(..., K)` with `K` a power of two and
      `s >= 0`; index 0 (the all-ones direction) never moves.
    - `depth`: `L`, any real `>= 1` (may be traced, so a depth sweep is a `vmap`);
      `alpha = 2L/(L+1)`.
    - `method`: see `log_one_minus_lambda`.

    **Returns:** `ds/dtau`, shape of `s`. Reduced time is `tau = c t` (`hadamard_time_scale`).

    **Raises:** `ValueError` if the last axis is not a power of two or a concrete depth is < 1.
    """
    if not isinstance(depth, jax.core.Tracer) and np.any(np.asarray(depth) < 1):
        raise ValueError(f"depth must be >= 1, got {depth!r}.")
    return jnp.exp(hadamard_log_rates(s, depth, method))


def hadamard_direction_field(
    s: Float[ArrayLike, "... K"], depth, method: str = "auto"
) -> Float[Array, "... K"]:
    """`d shat/dtau` for the direction `shat = s / ||s||` over `i >= 1` (theory §4).

    `(I - shat shat^T) (ds/dtau) / ||s||` with index 0 excluded (set to zero).
    """
    s = jnp.asarray(s)
    s1 = s.at[..., 0].set(0.0)
    v = hadamard_field(s, depth, method).at[..., 0].set(0.0)
    norm = jnp.linalg.norm(s1, axis=-1, keepdims=True)
    shat = s1 / norm
    return (v - shat * jnp.sum(shat * v, axis=-1, keepdims=True)) / norm


def hadamard_log_loss(s: Float[ArrayLike, "... K"]) -> Float[Array, "..."]:
    """`log loss` of the Hadamard model with singular values `s` (every class alike)."""
    z = hadamard_logits(s)
    gaps = z[..., 1:] - z[..., :1]
    return _log_ce_from_gaps(jax.nn.logsumexp(gaps, axis=-1))


def hadamard_loss(s: Float[ArrayLike, "... K"]) -> Float[Array, "..."]:
    """Cross-entropy of the Hadamard model with singular values `s`."""
    z = hadamard_logits(s)
    return jax.nn.logsumexp(z, axis=-1) - z[..., 0]


def hadamard_margin(s: Float[ArrayLike, "... K"]) -> Float[Array, "..."]:
    """Minimum logit margin `z_0 - max_{k>=1} z_k` of the Hadamard model."""
    z = hadamard_logits(s)
    return z[..., 0] - jnp.max(z[..., 1:], axis=-1)
