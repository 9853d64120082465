"""Initializations of the deep UFM (theory §3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import check_depth, check_int, check_power_of_two, check_real
from ._hadamard import sylvester_hadamard
from ._model import DeepUFM


def gaussian_init(
    key: PRNGKeyArray,
    num_classes: int,
    per_class: int,
    width: int,
    depth: int,
    scale: float,
    *,
    dtype=None,
) -> DeepUFM:
    """Gaussian initialization (theory §3): every entry i.i.d. `N(0, scale^2 / width)`.

    **Arguments:** `key`; `num_classes` `K >= 2`; `per_class` `n >= 1`; `width` `d >= 1`;
    `depth` `L >= 1` (integer); `scale` `eps >= 0` (may be a traced scalar); `dtype` (default:
    JAX's default float).

    **Returns:** a `DeepUFM` with factors `(H, W_1, ..., W_L)`.

    **Raises:** `ValueError` for a non-integer size or depth, `depth < 1`, `width < 1`,
    `per_class < 1`, `num_classes < 2`, or a negative or non-finite concrete `scale`.
    """
    num_classes = check_int("num_classes", num_classes, minimum=2, fix="K, the number of classes.")
    per_class = check_int("per_class", per_class, fix="n, the samples per class.")
    width = check_int("width", width, fix="d, the feature width.")
    check_depth(depth)
    depth = int(depth)
    check_real("scale", scale, minimum=0.0, fix="pass the init scale eps >= 0 (e.g. 0.1).")
    dtype = dtype or jnp.result_type(float)
    shapes = [(width, num_classes * per_class)]
    shapes += [(width, width)] * (depth - 1)
    shapes += [(num_classes, width)]
    keys = jax.random.split(key, len(shapes))
    std = jnp.asarray(scale, dtype) / jnp.sqrt(jnp.asarray(width, dtype))
    factors = tuple(std * jax.random.normal(k, s, dtype) for k, s in zip(keys, shapes))
    return DeepUFM(factors, num_classes=num_classes, per_class=per_class)


def gaussian_init_padded(
    key: PRNGKeyArray,
    num_classes: int,
    per_class: int,
    width: int,
    depth,
    capacity: int,
    scale,
    *,
    dtype=None,
) -> DeepUFM:
    """`gaussian_init(key, K, n, d, depth, scale)` with frozen identity layers appended to its
    hidden layers up to depth `capacity` (theory §2.9): a `DeepUFM` of depth `capacity` with the
    same logits, whose active layers are the very draws of `gaussian_init` at `depth`. `depth`
    may be traced (`1 <= depth <= capacity`), so one program serves every depth of a sweep.
    """
    capacity = check_int("capacity", capacity, fix="the largest depth of the sweep.")
    dtype = dtype or jnp.result_type(float)
    depth = jnp.asarray(depth).astype(jnp.int32)
    std = jnp.asarray(scale, dtype) / jnp.sqrt(jnp.asarray(width, dtype))
    eye = jnp.eye(width, dtype=dtype)
    shapes = [(width, num_classes * per_class), (width, width), (num_classes, width)]
    if jax.config.jax_threefry_partitionable:
        # With JAX's partitionable threefry (its default) a draw is elementwise in the flat
        # index: split(key, m)[i] does not depend on m, and normal(k, (M,))[:a b] reshaped is
        # normal(k, (a, b)). So every depth's keys are a prefix of split(key, capacity + 1),
        # and one vmapped draw of the largest factor's size per key gives every factor's
        # values: one threefry and one erf_inv in the program instead of 3 capacity + 1.
        keys = jax.random.split(key, capacity + 1)
        size = max(r * c for r, c in shapes)
        # The draw sits in a `cond` (always taken: `depth >= 1`) so that XLA materializes it
        # once. Otherwise it fuses the float64 erf_inv (~280 HLO lines) into each of the ~9
        # fusions that read the initial state (the first measure, the first step size, ...).
        # Both together: the init's share of the default sweep program's optimized HLO went
        # from ~3300 lines to ~660 and its compile from ~12 s to ~10 s (3 alternating runs).
        draws = jax.lax.cond(
            depth > 0, lambda: std * jax.vmap(lambda k: jax.random.normal(k, (size,), dtype))(keys),
            lambda: jnp.zeros((capacity + 1, size), dtype))

        def factor(flat, shape):
            return flat[:shape[0] * shape[1]].reshape(shape)

        h = factor(draws[0], shapes[0])
        active = jnp.arange(1, capacity)[:, None, None] < depth
        hidden = list(jnp.where(active, jax.vmap(lambda f: factor(f, shapes[1]))(
            draws[1:capacity]), eye))
        last = factor(draws[depth], shapes[2])
    else:  # split(key, m)[i] depends on m: build every candidate split, pick this depth's
        splits = jnp.stack([
            jnp.concatenate([jax.random.split(key, c + 1),
                             jnp.zeros((capacity - c,) + key.shape, key.dtype)])
            for c in range(1, capacity + 1)
        ])
        keys = splits[depth - 1]  # (capacity + 1, ...): factor i of the depth-`depth` init
        h = std * jax.random.normal(keys[0], shapes[0], dtype)
        hidden = [
            jnp.where(l < depth, std * jax.random.normal(keys[l], shapes[1], dtype), eye)
            for l in range(1, capacity)
        ]
        last = std * jax.random.normal(keys[depth], shapes[2], dtype)
    return DeepUFM((h, *hidden, last), num_classes=num_classes, per_class=per_class)


def _orthonormal_frame(key, width: int, k: int, dtype) -> Float[Array, "d K"]:
    q, r = jnp.linalg.qr(jax.random.normal(key, (width, k), dtype))
    # Fix signs so the frame is a deterministic function of the key (Haar distributed).
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def hadamard_init(
    key: PRNGKeyArray,
    s: Float[ArrayLike, " K"],
    per_class: int,
    width: int,
    depth: int,
    *,
    dtype=None,
) -> DeepUFM:
    """Hadamard (spectral) initialization with logit singular values `s` (theory §3).

    Every factor is balanced with singular values `a = (sqrt(n) s)^(1/(L+1))` and the class-mean
    logits are `Zbar = O diag(s) O` with `O = Hk / sqrt(K)`; the frames `Q_0..Q_{L-1}` are Haar
    random orthonormal `(width, K)` matrices drawn from `key`. Under gradient flow only `s`
    moves (paper Theorem 4.2), following `hadamard_field`. That form is invariant but not
    attracting: at K >= 32, after the escape from the origin, perturbations of 1e-12 relative
    already change the effective rank by about one. `solve_flow`'s default keeps its steps
    stable in the stiff directions transverse to the form (theory §2.6, "Stiff directions the
    first slope does not excite"), so that rounding is not amplified there; the reduced ODE
    (`solve_hadamard`) is the exact-arithmetic flow and far cheaper (theory §4.1, "Where the
    two part").

    **Arguments:** `key`; `s` of shape `(K,)`, `K` a power of two, `s >= 0` (index 0 is the
    all-ones direction, which never moves); `per_class` `n`; `width` `d >= K`; `depth` `L >= 1`.

    **Raises:** `ValueError` if `K` is not a power of two, `width < K`, `depth < 1`, a size is
    not an integer, `s` is not a vector or a concrete `s` has a negative or non-finite entry.
    """
    check_depth(depth)
    depth = int(depth)
    per_class = check_int("per_class", per_class, fix="n, the samples per class.")
    width = check_int("width", width, fix="d, the feature width (>= K for this init).")
    s = jnp.asarray(s, dtype=dtype)
    if s.ndim != 1:
        raise ValueError(
            f"s must be a vector of K singular values, got shape {s.shape}; "
            "use jax.vmap over hadamard_init for a batch."
        )
    k = s.shape[0]
    check_power_of_two(k, name="len(s) (= num_classes)")
    if width < k:
        raise ValueError(
            f"width must be >= K = {k} for the Hadamard initialization, got {width}; "
            f"pass width={k} or more."
        )
    check_real("s", s, minimum=0.0, fix="s are singular values: finite and non-negative.")
    dtype = s.dtype
    o = sylvester_hadamard(k, dtype=dtype) / jnp.sqrt(jnp.asarray(k, dtype))
    a = (jnp.sqrt(jnp.asarray(per_class, dtype)) * s) ** (1.0 / (depth + 1))
    keys = jax.random.split(key, depth)
    qs = [_orthonormal_frame(kk, width, k, dtype) for kk in keys]
    h_mean = qs[0] @ (a[:, None] * o) / jnp.sqrt(jnp.asarray(per_class, dtype))
    factors = [jnp.repeat(h_mean, per_class, axis=1)]
    for l in range(1, depth):
        factors.append((qs[l] * a[None, :]) @ qs[l - 1].T)
    factors.append((o * a[None, :]) @ qs[depth - 1].T)
    return DeepUFM(tuple(factors), num_classes=k, per_class=per_class)


DIRECTION_DISTRIBUTIONS = ("uniform", "half_normal")


def random_directions(
    key: PRNGKeyArray, num_classes: int, num: int | None, scale, *,
    distribution: str = "uniform", dtype=None,
) -> Float[Array, "*num K"]:
    """Random initial singular values of the reduced Hadamard ODE (theory §4): the one sampler
    every command and analysis uses.

    `s_1..s_{K-1}` are drawn i.i.d. and rescaled so that `||s_{1:}|| = scale`; `s_0 = 0` (the
    all-ones direction never moves).

    - `distribution="uniform"` (default): `U[0, 1]` entries, as the paper's Fig. 4 (App. E.1)
      states, and so also its Figs. 9 and 11, which follow the same protocol.
    - `"half_normal"`: `|N(0, 1)|` entries (the sweep's earlier default; `direction=half_normal`
      in `python -m ufmflow.sweep mode=hadamard`).

    **Arguments:** `key`; `num_classes` `K` (a power of two); `num` vectors from this one key, or
    `None` for a single vector of shape `(K,)`; `scale` (broadcast against the leading axis).

    **Returns:** shape `(num, K)`, or `(K,)` when `num is None`.
    """
    check_power_of_two(num_classes)
    if distribution not in DIRECTION_DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DIRECTION_DISTRIBUTIONS}, got "
                         f"{distribution!r}; 'uniform' is the paper's (Fig. 4, App. E.1).")
    dtype = dtype or jnp.result_type(float)
    lead = () if num is None else (num,)
    if distribution == "uniform":
        u = jax.random.uniform(key, lead + (num_classes - 1,), dtype)
    else:
        u = jnp.abs(jax.random.normal(key, lead + (num_classes,), dtype))[..., 1:]
    u = u / jnp.linalg.norm(u, axis=-1, keepdims=True) * jnp.asarray(scale, dtype)
    return jnp.concatenate([jnp.zeros(lead + (1,), dtype), u], axis=-1)


def hadamard_initial_direction(
    key: PRNGKeyArray, num_classes: int, scale: Float[ArrayLike, ""], *,
    distribution: str = "uniform",
) -> Float[Array, " K"]:
    """One random initial singular-value vector, `random_directions(key, K, None, scale,
    distribution=...)`: what `mode=hadamard` sweeps draw for seed `i` from `PRNGKey(i)` (the
    same seed gives the same direction at every depth and scale). `vmap` over keys for a batch.
    """
    return random_directions(key, num_classes, None, scale, distribution=distribution)
