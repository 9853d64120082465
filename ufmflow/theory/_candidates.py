"""The max-margin objective of the asymptotic landscape (Lemma D.7 form) and the unit-margin
candidate structures with their closed-form singular values (theory §5.2, §5.4)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import check_int, real_arg

CANDIDATE_NAMES = ("dnc", "cross_polytope", "cross_polytope_odd", "circle", "hypercube")

_FIX_NAME = f"pick one of {CANDIDATE_NAMES}."


def _check_depth_real(depth) -> None:
    real_arg("depth", depth, minimum=1.0,
               fix="depth is L >= 1, the number of weight matrices (any real L >= 1 here).")


def class_margin(M: Float[Array, "*batch K K"]) -> Float[Array, "*batch"]:
    """Margin of a class-mean logit matrix (theory §5.4): `min_c (M[c, c] - max_{c' != c} M[c', c])`
    (column `c` = logits of class `c`). Batched over leading axes; jit/vmap-friendly.

    **Raises:** `ValueError` if `M` is not `(..., K, K)` with `K >= 2`.
    """
    M = jnp.asarray(M)
    if M.ndim < 2 or M.shape[-1] != M.shape[-2] or M.shape[-1] < 2:
        raise ValueError(f"M must have shape (..., K, K) with K >= 2, got {M.shape}; pass the "
                         "class-mean logit matrix (column c = logits of class c).")
    K = M.shape[-1]
    diag = jnp.diagonal(M, axis1=-2, axis2=-1)  # (..., K): M[c, c]
    off = jnp.where(jnp.eye(K, dtype=bool), -jnp.inf, M)
    return jnp.min(diag - jnp.max(off, axis=-2), axis=-1)


def schatten_sum(s: Float[Array, "*batch K"], p) -> Float[Array, "*batch"]:
    """`sum_i s_i^p` over the non-zero singular values `s` (theory §5.2); entries
    `<= K eps s_max` count as zero (the numerical-rank threshold of theory §5.2), with a gradient
    that is finite everywhere."""
    s = jnp.asarray(s)
    p = jnp.asarray(p, s.dtype)[..., None]
    tol = s.shape[-1] * jnp.finfo(s.dtype).eps * jnp.max(s, axis=-1, keepdims=True)
    nz = s > tol
    safe = jnp.where(nz, s, 1.0)
    return jnp.sum(jnp.where(nz, safe**p, 0.0), axis=-1)


def max_margin_objective(
    M: Float[Array, "*batch K K"], depth, per_class: int = 1
) -> Float[Array, "*batch"]:
    """Objective of the max-margin problem (paper Eq. 3 through Lemma D.7, theory §5.2) at the
    class-mean logit matrix `M` rescaled to unit margin:

        (L + 1) sum_i sigma_i(Z / q)^{2/(L+1)},   Z = M kron 1_n^T,  sigma(Z) = sqrt(n) sigma(M),

    i.e. `(L+1) n^{1/(L+1)} q^{-p} sum_i sigma_i(M)^p` with `p = 2/(L+1)` and `q = class_margin(M)`.
    It equals `min ||theta||^2` over the deep UFMs (width >= rank) whose logits are a unit-margin
    rescaling of `M`, so it is the value the landscape compares (lower is better).

    **Arguments:**
    - `M`: `(..., K, K)` class-mean logits, column `c` = logits of class `c`; batched.
    - `depth`: `L`, any real `>= 1`, scalar or an array broadcasting with `M.shape[:-2]`.
    - `per_class`: `n >= 1` samples per class.

    **Returns:** `(...)` objective values; `+inf` where the margin is `<= 0` (no rescaling makes
    `M` unit-margin), `nan` where `M` has a `nan`. Singular values `<= K eps sigma_1` count as
    zero (theory §5.2). jit/vmap-friendly (the checks only inspect concrete inputs).

    **Raises:** `ValueError` for a bad shape, `depth < 1` (or non-finite) or `per_class < 1`.
    """
    M = jnp.asarray(M, jnp.result_type(float))
    q = class_margin(M)
    _check_depth_real(depth)
    n = check_int("per_class", per_class, fix="n, the number of samples per class.")
    depth = jnp.asarray(depth, M.dtype)
    p = 2.0 / (depth + 1.0)
    s = jnp.linalg.svd(M, compute_uv=False)
    total = schatten_sum(s, jnp.broadcast_to(p, jnp.broadcast_shapes(p.shape, q.shape)))
    qs = jnp.where(q > 0, q, 1.0)
    val = (depth + 1.0) * n ** (p / 2.0) * total / qs**p
    val = jnp.where(q > 0, val, jnp.inf)
    return jnp.where(jnp.isnan(q) | jnp.isnan(total), jnp.nan, val)


def _check_candidate(name, num_classes) -> int:
    if name not in CANDIDATE_NAMES:
        raise ValueError(f"name must be one of {CANDIDATE_NAMES}, got {name!r}; {_FIX_NAME}")
    K = check_int("K", num_classes, minimum=3, fix="the landscape candidates need K >= 3 classes.")
    if name == "cross_polytope" and K % 2:
        raise ValueError(f"K must be even for name='cross_polytope', got K={K}; for odd K use "
                         "name='cross_polytope_odd' (pairs plus a singleton, theory §5.4).")
    if name == "cross_polytope_odd" and not K % 2:
        raise ValueError(f"K must be odd for name='cross_polytope_odd', got K={K}; for even K use "
                         "name='cross_polytope'.")
    if name == "hypercube" and K & (K - 1):
        raise ValueError(f"K must be a power of two for name='hypercube', got K={K}; pick K in "
                         "4, 8, 16, ...")
    return K


def candidate_structure(name: str, K: int) -> Float[np.ndarray, "K K"]:
    """Unit-margin class-mean logit matrix `M` (column `c` = logits of class `c`) of a candidate
    structure of the landscape (theory §5.4):

    - `"dnc"`: `I - 11^T/K` (rank `K-1`);
    - `"cross_polytope"` (even `K`): `[[I, -I], [-I, I]]` in blocks of `K/2` (rank `K/2`);
    - `"cross_polytope_odd"` (odd `K = 2m+1`): the cross-polytope of the `2m` first classes plus a
      centred singleton, `M = [[I, -I, -1/K], [-I, I, -1/K], [0, 0, 1 - 1/K]]` (rank `m+1`; the
      last column is `e_K - 1/K`, the shortest column of margin 1 orthogonal to the pairs);
    - `"circle"`: the regular K-gon `M[j, c] = cos(2 pi (j-c)/K) / (1 - cos(2 pi/K))` (rank 2);
    - `"hypercube"` (`K = 2^k`): `M[j, c] = <x_j, x_c>/2` over the vertices `x` of `{-1, 1}^k`
      (rank `k`).

    **Returns:** a float64 numpy `(K, K)` array of margin exactly 1.

    **Raises:** `ValueError` for an unknown `name`, `K < 3`, or a `K` the structure does not
    exist for (odd `K` for `"cross_polytope"`, even for `"cross_polytope_odd"`, not a power of
    two for `"hypercube"`).
    """
    K = _check_candidate(name, K)
    if name == "dnc":
        return np.eye(K) - np.full((K, K), 1.0 / K)
    if name in ("cross_polytope", "cross_polytope_odd"):
        m = K // 2
        M = np.zeros((K, K))
        pair = np.array([[1.0, -1.0], [-1.0, 1.0]])
        M[: 2 * m, : 2 * m] = np.kron(pair, np.eye(m))
        if K % 2:
            M[:, -1] = -1.0 / K
            M[-1, -1] = 1.0 - 1.0 / K
        return M
    if name == "circle":
        j = np.arange(K)
        return np.cos(2 * np.pi * (j[:, None] - j[None, :]) / K) / (1 - np.cos(2 * np.pi / K))
    k = K.bit_length() - 1
    x = 1.0 - 2.0 * ((np.arange(K)[None, :] >> np.arange(k)[:, None]) & 1)  # (k, K) vertices
    return x.T @ x / 2.0


def candidate_singular_values(name: str, K: int) -> tuple[tuple[float, int], ...]:
    """Closed-form non-zero singular values of `candidate_structure(name, K)` as
    `((value, multiplicity), ...)` (theory §5.4): DNC `((1, K-1),)`; cross-polytope `((2, K/2),)`;
    odd cross-polytope `((2, m), (sqrt((K-1)/K), 1))`; circle `((K / (2 (1 - cos(2 pi/K))), 2),)` (`((1, 2),)`
    at `K = 3`, where it is DNC); hypercube `((K/2, log2 K),)`.

    **Raises:** as `candidate_structure`.
    """
    K = _check_candidate(name, K)
    if name == "dnc":
        return ((1.0, K - 1),)
    if name == "cross_polytope":
        return ((2.0, K // 2),)
    if name == "cross_polytope_odd":
        return ((2.0, K // 2), (math.sqrt((K - 1) / K), 1))
    if name == "circle":
        return ((K / (2.0 * (1.0 - math.cos(2.0 * math.pi / K))), 2),)
    return ((K / 2.0, K.bit_length() - 1),)


def candidate_objective(name: str, K: int, depth, per_class: int = 1) -> np.ndarray:
    """Closed-form max-margin objective of a candidate (theory §5.4):
    `(L+1) n^{1/(L+1)} sum_j m_j s_j^{2/(L+1)}` over `candidate_singular_values(name, K)`;
    `depth` any real `>= 1`, scalar or array (numpy broadcasting).

    **Raises:** as `candidate_structure`, and `ValueError` for `depth < 1` or `per_class < 1`.
    """
    sv = candidate_singular_values(name, K)
    _check_depth_real(depth)
    n = check_int("per_class", per_class, fix="n, the number of samples per class.")
    L = np.asarray(depth, float)
    p = 2.0 / (L + 1.0)
    return (L + 1.0) * n ** (p / 2.0) * sum(m * s**p for s, m in sv)


def candidates_for(K: int, *, include_hypercube: bool = True) -> tuple[str, ...]:
    """The candidate names that exist for `K` (theory §5.4), DNC first: `dnc`, the cross-polytope
    of `K`'s parity, `circle`, and `hypercube` when `K` is a power of two (and requested)."""
    K = check_int("K", K, minimum=3, fix="the landscape candidates need K >= 3 classes.")
    names = ["dnc", "cross_polytope" if K % 2 == 0 else "cross_polytope_odd", "circle"]
    if include_hypercube and not K & (K - 1) and K >= 8:  # K = 4: the hypercube is the square
        names.append("hypercube")
    return tuple(names)

