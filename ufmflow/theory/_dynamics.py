"""Dynamics of depth in the reduced Hadamard model (theory §4, paper Sections 4.2-4.3, App. C,
D.4, D.5, E.3): rich-get-richer, perturbations of structures, basins of attraction and the
minimal rank (the KL divergence to NC is in `_kl`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ..solvers._hadamard_many import solve_hadamard_many
from ..core._hadamard import _log2, depth_exponent, hadamard_log_rates, hadamard_margin
from ..core._init import random_directions
from ..core._metrics import effective_rank_from_singular_values
from ._checks import check_fractions, check_grid, check_int, real_arg, vectors
from ._stability import _check_depth, _support_tuple

# --------------------------------------------------------------------------------------------
# Rich-get-richer: the small-scale (linearized) field, paper Theorem 4.4 / App. D.5


def hadamard_linearized_field(s: Float[ArrayLike, "... K"], depth) -> Float[Array, "... K"]:
    """The reduced field to first order in the scale (paper Theorem 4.4, App. D.5):

        ds_i/dtau ~= s_i^alpha (1 - s_i / K),   i >= 1;   ds_0/dtau = 0.

    Derivation. The logits of class 0 are `z = Hk s / K`; their mean is
    `(1/K) sum_k (Hk s)_k / K = s_0 / K` (the rows of `Hk` sum to `K e_0`). For small `s`,
    `softmax(z)_k = (1/K)(1 + z_k - mean(z)) + O(|s|^2)`, so

        q_k = (1/K) (1 + ((Hk s)_k - s_0) / K) + O(|s|^2).

    Then `lam = Hk^T q = (1/K) Hk^T 1 + (1/K^2) Hk^T Hk s - (s_0/K^2) Hk^T 1
    = e_0 + (s - s_0 e_0)/K + O(|s|^2)` using `Hk^T 1 = K e_0` and `Hk^T Hk = K I`. Hence
    `1 - lam_i = 1 - s_i/K + O(|s|^2)` for `i >= 1` (and `1 - lam_0 = 0` exactly): the modes
    decouple. The error of the field is `s^alpha O(|s|^2)`, i.e. second order in the scale
    relative to the field itself.

    Consequence: `d/dtau log(s_i/s_j) = (s_i^(alpha-1) - s_j^(alpha-1)) - (s_i^alpha -
    s_j^alpha)/K`. For `L = 1` (`alpha = 1`) the first term vanishes and the ratio moves toward
    1 (modes are driven together, DNC is the only stable direction); for `L > 1` the first term
    dominates at small scale and has the sign of `s_i - s_j` (the larger mode grows relatively
    faster: rich-get-richer; DNC is critical but unstable).

    **Arguments:** `s` of shape `(..., K)` (`s >= 0`); `depth` real `>= 1` (may be traced).

    **Raises:** `ValueError` for `s` not `(..., K)` with `K` a power of two, or a concrete
    `depth < 1` or not finite.
    """
    _check_depth(depth)
    s = vectors(s)
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(jnp.result_type(float))
    k = s.shape[-1]
    _log2(k, "len(s)")
    alpha = depth_exponent(depth)
    pos = s > 0
    s_alpha = jnp.where(pos, jnp.exp(alpha * jnp.log(jnp.where(pos, s, 1.0))), 0.0)
    field = s_alpha * (1.0 - s / k)
    return field.at[..., 0].set(0.0)


def log_ratio_rate(s: Float[ArrayLike, "... K"], depth, i: int, j: int) -> Float[Array, "..."]:
    """`d/dtau log(s_i / s_j)` under the full reduced field: `F_i - F_j`, `F = ds/dtau / s`."""
    s = jnp.asarray(s)
    log_f = hadamard_log_rates(s, depth) - jnp.log(s)
    return jnp.exp(log_f[..., i]) - jnp.exp(log_f[..., j])


# --------------------------------------------------------------------------------------------
# Directions and perturbations (the KL divergence to NC: `_kl`)


def direction_distance(s: Float[ArrayLike, "... K"], support=None) -> Float[Array, "..."]:
    """`|| shat - 1_S/sqrt|S| ||`, `shat = s_{1:}/||s_{1:}||`: distance of the direction to the
    equal-valued structure on `support` (default DNC, the uniform direction; theory §4).

    **Raises:** `ValueError` for `s` not `(..., K)` or a bad support."""
    s = vectors(s)
    k = s.shape[-1]
    sup = np.asarray(_support_tuple(k, support))
    target = np.zeros(k)
    target[sup] = 1.0 / np.sqrt(sup.size)
    s1 = s.at[..., 0].set(0.0)
    shat = s1 / jnp.linalg.norm(s1, axis=-1, keepdims=True)
    return jnp.linalg.norm(shat - jnp.asarray(target, s.dtype), axis=-1)


def perturb_structure(
    key: PRNGKeyArray, num_classes: int, x, eps: float, support=None, *, dtype=None
) -> Float[Array, " K"]:
    """`s = x exp(eps xi)` on the support (0 elsewhere) with `xi` a random unit vector orthogonal
    to `1_S`: a perturbation of the structure `x 1_S` that changes its direction only, in the
    log coordinates `u = log s` of Theorem 4.3.

    **Raises:** `ValueError` for `num_classes` not a power of two, a bad support, `x <= 0` or
    a non-finite `x` or `eps` (concrete values)."""
    _log2(num_classes, "num_classes")
    real_arg("x", x, minimum=0.0, strict=True, fix="x > 0, the structure's common value.")
    real_arg("eps", eps, fix="eps, the size of the perturbation in log coordinates.")
    sup = np.asarray(_support_tuple(num_classes, support))
    dtype = dtype or jnp.result_type(float)
    xi = jax.random.normal(key, (sup.size,), dtype)
    xi = xi - jnp.mean(xi)
    xi = xi / jnp.linalg.norm(xi)
    s = jnp.zeros(num_classes, dtype)
    return s.at[sup].set(jnp.asarray(x, dtype) * jnp.exp(eps * xi))


# --------------------------------------------------------------------------------------------
# Batched solves, classification, basins of attraction


def solve_hadamard_batch(
    s0: Float[ArrayLike, "B K"],
    depth: Float[ArrayLike, " B"],
    ts: Float[ArrayLike, " S"],
    *,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    max_steps: int = 4096,
    chunk: int = 1024,
) -> tuple[Float[Array, "B S K"], Int[Array, " B"]]:
    """`solve_hadamard` over many initial values and depths, returning `(s at ts, status)`.

    Runs `solve_hadamard_many` (the same method as `solve_hadamard`'s defaults, batched with
    continuous batching) on chunks of `chunk` runs, so memory stays bounded."""
    s0 = jnp.asarray(s0)
    depth = jnp.broadcast_to(jnp.asarray(depth, s0.dtype), s0.shape[:1])
    ts = jnp.asarray(ts, s0.dtype)
    b = s0.shape[0]
    outs_s, outs_st = [], []
    for start in range(0, b, chunk):
        sl = slice(start, min(start + chunk, b))
        sol = solve_hadamard_many(s0[sl], depth[sl], ts[-1], ts=ts, rtol=rtol, atol=atol,
                                  max_steps=max_steps)
        outs_s.append(sol.s)
        outs_st.append(sol.status)
    return jnp.concatenate(outs_s), jnp.concatenate(outs_st)


STRUCTURE_NAMES = ("dnc", "between", "minimal")


def classify_structure(
    s: Float[ArrayLike, "... K"], *, dnc_frac: float = 0.9, min_tol: float = 0.5
) -> tuple[Int[Array, "..."], Float[Array, "..."]]:
    """Classify late-time singular values by the effective rank `r` of `diag(s_1..s_{K-1})`.

    Rule (documented for the basin tables): `0 = "dnc"` if `r >= dnc_frac (K-1)`; `2 =
    "minimal"` if `r <= log2 K + min_tol` (Proposition C.1: no support with positive margins
    has fewer than `log2 K` modes); `1 = "between"` otherwise. The effective rank tends to the
    support size of the limiting structure, but slowly: in the lazy late phase the direction
    moves by O(1) per e-fold of `||s||`, i.e. per e-fold of `log tau`. At depth 1 from a
    random direction `r/(K-1)` is typically ~0.95 at `tau = 1e100` and ~0.99 at `1e300`
    (K = 32), hence the relative DNC threshold; evaluate at a late reduced time (the default
    sweeps use `tau = 1e300`, margins of several hundred).

    **Returns:** `(class, effective_rank)`.

    **Raises:** `ValueError` for `len(s)` not a power of two, `dnc_frac` outside `(0, 1]` or
    `min_tol < 0`.
    """
    check_fractions(dnc_frac, min_tol)
    s = jnp.asarray(s)
    if s.ndim < 1:
        raise ValueError(f"s must be (..., K) singular values, got shape {s.shape}.")
    k = s.shape[-1]
    m = _log2(k, "len(s)")
    r = effective_rank_from_singular_values(s[..., 1:])
    cls = jnp.where(r >= dnc_frac * (k - 1), 0, jnp.where(r <= m + min_tol, 2, 1))
    return cls, r


def basins_of_attraction(
    key: PRNGKeyArray,
    num_classes: int,
    depths,
    scales,
    num_directions: int = 1000,
    *,
    tau1: float = 1e300,
    dnc_frac: float = 0.9,
    min_tol: float = 0.5,
    chunk: int = 1024,
    rtol: float = 1e-6,
    atol: float = 1e-12,
) -> dict:
    """Fraction of random initial directions ending at DNC / in between / at the minimal rank.

    For every `(depth, scale)` cell the same `num_directions` directions
    (`random_directions`) are rescaled to `||s_{1:}|| = scale`, solved to reduced time `tau1`
    (vmapped over directions and depths, `solve_hadamard_batch`) and classified by
    `classify_structure`.

    **Returns:** a dict of numpy arrays: `depths (D,)`, `scales (C,)`, `effective_rank
    (D, C, B)`, `cls (D, C, B)`, `fractions (D, C, 3)` in `STRUCTURE_NAMES` order (failed
    solves excluded), `failed (D, C)` counts.

    **Raises:** `ValueError` for `num_classes` not a power of two, empty or bad `depths`
    (`>= 1`) or `scales` (`> 0`), `num_directions < 1`, `tau1 <= 0` or not finite, bad
    `dnc_frac`, `min_tol` or `chunk`.
    """
    _log2(num_classes, "num_classes")
    depths, scales = check_grid(depths, scales, num_directions, "num_directions")
    real_arg("tau1", tau1, minimum=0.0, strict=True, fix="the final reduced time tau1 > 0.")
    check_fractions(dnc_frac, min_tol)
    check_int("chunk", chunk, fix="runs per batch.")
    dirs = random_directions(key, num_classes, num_directions, 1.0)
    d_grid, c_grid = np.meshgrid(depths, scales, indexing="ij")
    s0 = (dirs[None, None] * jnp.asarray(c_grid)[..., None, None]).reshape(-1, num_classes)
    dd = jnp.repeat(jnp.asarray(d_grid).reshape(-1), num_directions)
    ts = jnp.asarray([0.0, tau1])
    s, status = solve_hadamard_batch(s0, dd, ts, rtol=rtol, atol=atol, chunk=chunk)
    cls, r = classify_structure(s[:, -1], dnc_frac=dnc_frac, min_tol=min_tol)
    shape = (depths.size, scales.size, num_directions)
    cls = np.asarray(cls).reshape(shape)
    r = np.asarray(r).reshape(shape)
    ok = np.asarray(status).reshape(shape) == 0
    counts = np.stack([((cls == c) & ok).sum(-1) for c in range(3)], axis=-1)
    fractions = counts / np.maximum(ok.sum(-1, keepdims=True), 1)
    return dict(
        depths=depths,
        scales=scales,
        effective_rank=np.where(ok, r, np.nan),
        cls=cls,
        fractions=fractions,
        failed=(~ok).sum(-1),
    )


def rich_get_richer(
    key: PRNGKeyArray,
    num_classes: int,
    depths,
    scales,
    num: int = 512,
    *,
    growth: float = 1.5,
) -> dict:
    """How often the gap between two modes grows near the origin (paper Theorem 4.4).

    For random small inits (`random_directions`) at each `(depth, scale)`, solve the full
    reduced ODE until the mean mode has grown by `growth` under the leading-order field
    `ds/dtau = s^alpha` (`tau = xbar^(1-alpha) (1 - growth^(1-alpha))/(alpha-1)`, `log growth`
    at `alpha = 1`) and compare the gap `|log(s_i/s_j)| = |log(shat_i/shat_j)|` of two modes
    before and after: the initially largest and smallest mode, and a random pair. Theorem 4.4
    predicts the gap grows for `L > 1` and shrinks for `L = 1` at small scale. (The ratio,
    not the difference `shat_i - shat_j`: at `L = 1` two small modes both gain on the norm, so
    their normalized difference can grow while their ratio tends to 1.)

    **Returns:** dict of numpy arrays `depths`, `scales`, `frac_extreme_grows (D, C)`,
    `frac_random_grows (D, C)`, `failed (D, C)`.

    **Raises:** `ValueError` for `num_classes` not a power of two `>= 4`, empty or bad
    `depths` (`>= 1`) or `scales` (`> 0`), `num < 1`, `growth <= 1` or not finite.
    """
    k = num_classes
    if _log2(k, "num_classes") < 2:
        raise ValueError(f"num_classes must be >= 4 (two modes to compare besides the inert "
                         f"s_0 and another), got {num_classes!r}.")
    depths, scales = check_grid(depths, scales, num, "num")
    real_arg("growth", growth, minimum=1.0, strict=True,
             fix="growth > 1, the factor by which the mean mode grows.")
    k1, k2 = jax.random.split(key)
    dirs = np.asarray(random_directions(k1, k, num, 1.0))
    pick = lambda kk: jax.random.choice(kk, jnp.arange(1, k), (2,), replace=False)  # noqa: E731
    pairs = np.asarray(jax.vmap(pick)(jax.random.split(k2, num)))
    ext = np.stack([np.argmax(dirs[:, 1:], -1) + 1, np.argmin(dirs[:, 1:], -1) + 1], -1)
    frac_ext = np.zeros((depths.size, scales.size))
    frac_rnd = np.zeros_like(frac_ext)
    failed = np.zeros_like(frac_ext, dtype=int)
    rows = np.arange(num)
    for a, depth in enumerate(depths):
        alpha = 2 * depth / (depth + 1)
        for c, scale in enumerate(scales):
            xbar = scale / math.sqrt(k - 1)
            if alpha > 1:
                tau = xbar ** (1 - alpha) * (1 - growth ** (1 - alpha)) / (alpha - 1)
            else:
                tau = math.log(growth)
            s0 = jnp.asarray(dirs * scale)
            s, status = solve_hadamard_batch(
                s0, jnp.full((num,), depth), jnp.asarray([0.0, tau]), chunk=num
            )
            s = np.asarray(s)
            ok = np.asarray(status) == 0

            def grows(p):
                g0 = np.abs(np.log(s[rows, 0, p[:, 0]] / s[rows, 0, p[:, 1]]))
                g1 = np.abs(np.log(s[rows, -1, p[:, 0]] / s[rows, -1, p[:, 1]]))
                return g1 > g0

            frac_ext[a, c] = np.mean(grows(ext)[ok])
            frac_rnd[a, c] = np.mean(grows(pairs)[ok])
            failed[a, c] = int((~ok).sum())
    return dict(
        depths=depths,
        scales=scales,
        frac_extreme_grows=frac_ext,
        frac_random_grows=frac_rnd,
        failed=failed,
    )


# --------------------------------------------------------------------------------------------
# Minimal rank, Proposition C.1


def minimal_supports(num_classes: int) -> dict:
    """Exhaustive search over supports `S` of `{1..K-1}` for the smallest with positive margins
    (Proposition C.1): the margin of `s = 1_S` is `hadamard_margin`, evaluated for all
    `2^(K-1) - 1` nonempty supports in one batch.

    **Returns:** dict with `min_size` (to compare with `log2 K`), `num_minimal` (number of
    supports of that size with positive margin), `examples` (up to 8 of them, as index lists),
    `num_positive` (all supports with positive margin), `num_supports`.

    **Raises:** `ValueError` for `K > 16` (`2^(K-1)` supports) or `K` not a power of two.
    """
    k = num_classes
    _log2(k, "num_classes")
    if k > 16 or k < 2:
        raise ValueError(
            f"num_classes must be 2..16 for an exhaustive search (2^(K-1) supports), got {k}; "
            "pass num_classes=4, 8 or 16."
        )
    codes = np.arange(1, 2 ** (k - 1), dtype=np.int64)
    bits = (codes[:, None] >> np.arange(k - 1)[None, :]) & 1  # bit b <-> index b + 1
    s = np.concatenate([np.zeros((codes.size, 1)), bits.astype(float)], axis=1)
    margin = np.asarray(hadamard_margin(jnp.asarray(s)))
    pos = margin > 1e-12
    sizes = bits.sum(1)
    min_size = int(sizes[pos].min())
    minimal = pos & (sizes == min_size)
    examples = [list(np.nonzero(b)[0] + 1) for b in bits[minimal][:8]]
    return dict(
        num_classes=k,
        min_size=min_size,
        log2_k=_log2(k),
        num_minimal=int(minimal.sum()),
        num_positive=int(pos.sum()),
        num_supports=int(codes.size),
        examples=[[int(i) for i in e] for e in examples],
    )


def effective_rank_sweep(
    key: PRNGKeyArray, num_classes: int, depths, scales, num: int = 64, *, tau1: float = 1e300
) -> dict:
    """Effective rank of `diag(s_{1:})` at reduced time `tau1` from random inits (paper Fig. 9):
    mean and std over `num` directions per `(depth, scale)` (a thin wrapper of
    `basins_of_attraction`, whose checks apply; `num` must be an integer >= 1)."""
    check_int("num", num, fix="the number of random directions per (depth, scale) cell.")
    res = basins_of_attraction(key, num_classes, depths, scales, num, tau1=tau1)
    r = res["effective_rank"]
    return dict(
        depths=res["depths"],
        scales=res["scales"],
        mean=np.nanmean(r, -1),
        std=np.nanstd(r, -1),
        log2_k=_log2(num_classes),
    )
