"""Measurements of a deep UFM (theory §6) and of Hadamard singular values (theory §4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._hadamard import sylvester_hadamard
from ._model import DeepUFM


def singular_values(m: Float[ArrayLike, "... a b"]) -> Float[Array, "... r"]:
    """Singular values, descending, of the matrix in the last two axes (leading axes batched).

    **Raises:** `ValueError` for fewer than two axes."""
    m = jnp.asarray(m)
    if m.ndim < 2:
        raise ValueError(
            f"m must be a matrix (..., a, b), got shape {m.shape}; for a vector of singular "
            "values use effective_rank_from_singular_values."
        )
    return jnp.linalg.svd(m, compute_uv=False)


def effective_rank_from_singular_values(sv: Float[ArrayLike, "... r"]) -> Float[Array, "..."]:
    """Roy & Vetterli (2007) effective rank `exp(-sum p_i log p_i)`, `p = sv / sum sv`, `0 log 0 = 0`.

    Singular values must be non-negative; an all-zero vector, or one with a `nan`, gives `nan`.
    The last axis holds one spectrum; leading axes are batched (e.g. a saved history `(S, K)`
    gives `(S,)`).
    """
    sv = jnp.abs(jnp.asarray(sv))
    p = sv / jnp.sum(sv, axis=-1, keepdims=True)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), jnp.where(p == 0, 0.0, p))
    return jnp.exp(-jnp.sum(plogp, axis=-1))


def effective_rank(m: Float[ArrayLike, "... a b"]) -> Float[Array, "..."]:
    """Effective rank (Roy & Vetterli 2007, theory §6) of a matrix, batched over leading axes.

    Between 1 and `min(a, b)`; for the deep UFM apply it to `model.class_mean_logits()`
    (uncentred). For a rank-`r` matrix with equal non-zero singular values it equals `r`.

    **Batch axes:** the last two axes are the matrix, every leading axis is a batch. A saved
    history of singular values (`FlowSolution.singular_values`, shape `(S, K)`) is *not* a
    matrix: `effective_rank` would take its singular values as one `S x K` matrix's. For a
    history use `effective_rank_from_singular_values(sol.singular_values)` (shape `(S,)`), or
    `effective_rank(sol.states.class_mean_logits())` with `save_states=True`.

    **Raises:** `ValueError` for fewer than two axes (a vector of singular values).
    """
    return effective_rank_from_singular_values(singular_values(m))


def hadamard_departure(zbar: Float[ArrayLike, "... K K"]) -> Float[Array, "..."]:
    """How far class-mean logits are from the Hadamard form `O diag(s) O` (theory §6.8):
    `||offdiag(O Zbar O)||_F / ||diag(O Zbar O)||_2`, `O = H_K / sqrt(K)`.

    Zero (to rounding, about 1e-15) for `hadamard_init` and along the exact flow from it
    (paper Theorem 4.2); a full-GF solution that has left the form shows a positive value, e.g.
    `hadamard_departure(sol.states.class_mean_logits())` with `save_states=True` for its
    history. Leading axes are batched.

    **Raises:** `ValueError` if the last two axes are not a square `K x K` with `K` a power of
    two.
    """
    zbar = jnp.asarray(zbar)
    if zbar.ndim < 2 or zbar.shape[-1] != zbar.shape[-2]:
        raise ValueError(
            f"zbar must be class-mean logits (..., K, K), got shape {zbar.shape}; pass "
            "model.class_mean_logits()."
        )
    k = zbar.shape[-1]
    o = sylvester_hadamard(k, dtype=zbar.dtype) / jnp.sqrt(jnp.asarray(k, zbar.dtype))
    d = o @ zbar @ o
    diag = jnp.diagonal(d, axis1=-2, axis2=-1)
    off = d - diag[..., :, None] * jnp.eye(k, dtype=d.dtype)
    return jnp.linalg.norm(off, axis=(-2, -1)) / jnp.linalg.norm(diag, axis=-1)


def kl_to_nc(s: Float[ArrayLike, "... K"]) -> Float[Array, "..."]:
    """KL divergence from the uniform distribution to `p_i = s_i / sum_{j>=1} s_j` (theory §4).

    `KL(u || p) = sum_{i>=1} (1/(K-1)) log((1/(K-1)) / p_i)`; zero exactly at DNC (all equal),
    `+inf` when some `s_i = 0`. Index 0 (the all-ones direction) is ignored. The last axis holds
    one vector of singular values; leading axes are batched.

    A `nan` entry (a saved value past a failed solve) gives `nan` for its vector.

    **Raises:** `ValueError` for fewer than 2 entries on the last axis (or a scalar), or, when
    `s` is concrete (not traced), a negative or infinite entry.
    """
    s = jnp.asarray(s)
    if s.ndim < 1 or s.shape[-1] < 2:
        raise ValueError(
            f"s must have K >= 2 singular values on its last axis, got shape {s.shape}; pass "
            "the vector (..., K) of Hadamard singular values."
        )
    if not isinstance(s, jax.core.Tracer) and bool(jnp.any(jnp.isinf(s) | (s < 0))):
        raise ValueError(
            "s must be >= 0 and finite (singular values); got a negative or infinite entry."
        )
    s1 = s[..., 1:]
    k1 = s1.shape[-1]
    p = s1 / jnp.sum(s1, axis=-1, keepdims=True)
    return jnp.mean(-jnp.log(k1 * p), axis=-1)


def balancedness(model: DeepUFM) -> Float[Array, "L d d"]:
    """The conserved matrices `D_l = W_{l+1}^T W_{l+1} - W_l W_l^T`, `l = 0..L-1`, `W_0 = H`.

    Gradient flow keeps them constant (theory §2); a balanced initialization has them all zero.
    """
    f = model.factors
    return jnp.stack([f[l + 1].T @ f[l + 1] - f[l] @ f[l].T for l in range(model.depth)])


def balancedness_residual(model: DeepUFM, reference: DeepUFM) -> Float[Array, ""]:
    """`max_l ||D_l(model) - D_l(reference)||_F`: drift of the conserved quantities (theory §2)."""
    diff = balancedness(model) - balancedness(reference)
    return jnp.max(jnp.sqrt(jnp.sum(diff**2, axis=(-2, -1))))


def min_margin(model: DeepUFM) -> Float[Array, ""]:
    """`q_min`: the smallest sample margin `z[c] - max_{c' != c} z[c']` (theory §6)."""
    return jnp.min(model.margins())


def normalized_margin(model: DeepUFM) -> Float[Array, ""]:
    """Lyu & Li normalized margin `q_min / ||theta||^(L+1)` of the `(L+1)`-homogeneous model."""
    return min_margin(model) / model.sq_norm() ** ((model.depth + 1) / 2)


def geometric_margin(model: DeepUFM) -> Float[Array, ""]:
    """Geometry-only normalized margin `q_min / ||Z||_F` (theory §6)."""
    return min_margin(model) / jnp.linalg.norm(model.logits())


def _class_means(model: DeepUFM):
    h = model.features()
    d = h.shape[0]
    k, n = model.num_classes, model.per_class
    per_class = h.reshape(d, k, n)
    means = per_class.mean(-1)  # (d, K)
    return per_class, means


def _simplex_etf(k: int, dtype) -> Array:
    return jnp.eye(k, dtype=dtype) - jnp.full((k, k), 1.0 / k, dtype)


def nc1(model: DeepUFM) -> Float[Array, ""]:
    """NC1 `= tr(Sigma_W Sigma_B^+) / K` of the penultimate features (theory §6).

    Features are `W_{L-1} ... W_1 H` (`H` for `L = 1`). `Sigma_W = (1/N) sum (h - mu_c)(h -
    mu_c)^T`, `Sigma_B = (1/K) sum_c (mu_c - mu_G)(mu_c - mu_G)^T`, `^+` the Moore–Penrose
    pseudo-inverse with relative cutoff `100 d eps` (rank of `Sigma_B` is at most `K - 1`). With
    this `/K` normalisation NC1 is 0 at collapse; with `per_class = 1` it is identically 0.
    """
    per_class, means = _class_means(model)
    d, k, n = per_class.shape
    within = (per_class - means[:, :, None]).reshape(d, k * n)
    sigma_w = within @ within.T / (k * n)
    centred = means - means.mean(-1, keepdims=True)
    sigma_b = centred @ centred.T / k
    eps = jnp.finfo(sigma_b.dtype).eps
    pinv = jnp.linalg.pinv(sigma_b, rtol=100 * d * eps, hermitian=True)
    return jnp.trace(sigma_w @ pinv) / k


def nc2(model: DeepUFM) -> Float[Array, ""]:
    """NC2 `= || Mc^T Mc / ||Mc^T Mc||_F - E / ||E||_F ||_F`, `E = I - 11^T/K` (theory §6).

    `Mc` are the globally centred class means of the penultimate features (columns).
    """
    _, means = _class_means(model)
    centred = means - means.mean(-1, keepdims=True)
    gram = centred.T @ centred
    e = _simplex_etf(model.num_classes, gram.dtype)
    return jnp.linalg.norm(gram / jnp.linalg.norm(gram) - e / jnp.linalg.norm(e))


def nc3(model: DeepUFM) -> Float[Array, ""]:
    """NC3 `= || W_L / ||W_L||_F - Mc^T / ||Mc||_F ||_F` (theory §6): self-duality of the classifier."""
    _, means = _class_means(model)
    centred = means - means.mean(-1, keepdims=True)
    w = model.factors[-1]
    return jnp.linalg.norm(w / jnp.linalg.norm(w) - centred.T / jnp.linalg.norm(centred))


def logit_velocity(model: DeepUFM) -> Float[Array, "K N"]:
    """`Zdot`: the JVP of the logits along `-grad loss` (theory §6, paper Theorem 4.5)."""
    grads = jax.grad(lambda f: DeepUFM(f, model.num_classes, model.per_class).loss())(
        model.factors
    )
    tangent = jax.tree_util.tree_map(lambda g: -g, grads)
    _, zdot = jax.jvp(
        lambda f: DeepUFM(f, model.num_classes, model.per_class).logits(),
        (model.factors,),
        (tangent,),
    )
    return zdot


def etf_distance(z: Float[ArrayLike, "K N"], per_class: int) -> Float[Array, ""]:
    """`|| Z/||Z||_F - (E kron 1_n^T)/||E kron 1_n^T||_F ||_F^2` (paper Fig. 5, theory §6)."""
    z = jnp.asarray(z)
    k = z.shape[0]
    target = jnp.repeat(_simplex_etf(k, z.dtype), per_class, axis=1)
    diff = z / jnp.linalg.norm(z) - target / jnp.linalg.norm(target)
    return jnp.sum(diff**2)


def nc_metrics(model: DeepUFM) -> dict[str, Array]:
    """Every theory §6 metric of one model, as a dict of scalars (vmap for a batch)."""
    return {
        "effective_rank": effective_rank(model.class_mean_logits()),
        "nc1": nc1(model),
        "nc2": nc2(model),
        "nc3": nc3(model),
        "min_margin": min_margin(model),
        "normalized_margin": normalized_margin(model),
        "geometric_margin": geometric_margin(model),
    }
