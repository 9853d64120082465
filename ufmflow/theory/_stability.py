"""Local stability of equal-valued structures of the reduced Hadamard dynamics (theory §4,
paper Theorem 4.3 i-ii).

A *structure* is a support `S` of `{1..K-1}` with `s_i = x` on `S` and `0` elsewhere: DNC is
`S = {1..K-1}`, the cross-polytope is `S = {i : popcount(i & v) odd}`. Its stability at scale `x`
is read off the Jacobian of the log-rate field

    F_i(u) = d u_i / d tau = s_i^(alpha-1) (1 - lam_i(s)),   u = log s,   i in S,

at `u = log(x) 1_S` (off-support entries held at zero), restricted to the tangent space
`{du : sum_{i in S} du_i = 0}`: a perturbation that only rescales the structure does not change
its direction. The structure is (linearly) stable when every tangent eigenvalue is negative.

The Jacobian is `J = diag(s^(alpha-1)) [(alpha-1) diag(1 - lam) - C diag(s)]` with
`C_ij = d lam_i / d s_j = (lam_{i xor j} - lam_i lam_j) / K` symmetric (from
`d q_k / d s_j = q_k (Hk[k, j] - lam_j) / K` and `Hk[k, i] Hk[k, j] = Hk[k, i xor j]`), so
where all support values are equal `J` is symmetric and its tangent eigenvalues are real; they
are computed with `eigvalsh` (jit-, vmap- and accelerator-friendly).

Everything is formed in log space from `hadamard_log_rates`, so scales where the rates underflow
(`x` in the hundreds) stay finite: with `relative=True` the Jacobian is divided by the largest
rate on the support (`exp(max_i log F_i)`, a positive number, so signs and the critical scale are
unchanged); the result is dimensionless.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..core._hadamard import _log2, hadamard_log_rates
from ._checks import check_int, real_arg


def _check_k(k: int) -> int:
    m = _log2(k, "K")
    if k < 4:
        raise ValueError(
            f"K must be a power of two >= 4 (DNC's tangent space has dimension K - 2), got {k}."
        )
    return m


def _check_depth(depth) -> None:
    if isinstance(depth, jax.core.Tracer):
        return
    try:
        real_arg("depth", depth)
        ok = bool(np.all(np.asarray(depth, dtype=float) >= 1))
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"depth must be >= 1 and finite (any real; alpha = 2L/(L+1)), got "
                         f"{depth!r}.")


def _check_x(x) -> None:
    real_arg("x", x, minimum=0.0, strict=True,
             fix="x > 0 is the structure's common singular value (a scalar; vmap for batches).")


def dnc_support(k: int) -> np.ndarray:
    """Indices `1..K-1`: every singular value on (DNC, theory §4)."""
    _log2(k, "K")
    return np.arange(1, k)


def cross_polytope_support(k: int, v: int = 1) -> np.ndarray:
    """`S = {i : popcount(i & v) odd}` (theory §4), `|S| = K/2`, for a nonzero `v < K`.

    With `s = x 1_S` the logits of class 0 are `x/2` on class 0, `-x/2` on class `v` and `0`
    elsewhere: the cross-polytope geometry with margin `x/2`.

    **Raises:** `ValueError` if `K` is not a power of two or `v` is not in `1..K-1`.
    """
    _log2(k, "K")
    if not 1 <= int(v) < k:
        raise ValueError(f"v must be a nonzero index below K = {k}, got {v!r}; pass v=1.")
    i = np.arange(k)
    parity = np.array([bin(int(a) & int(v)).count("1") % 2 for a in i])
    return i[parity == 1]


def _support_tuple(k: int, support) -> tuple[int, ...]:
    if support is None:
        return tuple(range(1, k))
    sup = np.asarray(support).reshape(-1)
    if sup.dtype == bool:
        if sup.shape != (k,):
            raise ValueError(f"a boolean support must have shape ({k},), got {sup.shape}.")
        sup = np.nonzero(sup)[0]
    sup = np.unique(sup.astype(int))
    if sup.size == 0 or sup[0] < 1 or sup[-1] >= k:
        raise ValueError(
            f"support must be indices in 1..K-1 = 1..{k - 1} (index 0 is inert), got {support!r}."
        )
    return tuple(int(i) for i in sup)


def _log_rate_fn(k: int, support: tuple[int, ...], depth, method: str, base: Array):
    """`u_S -> log F_S(u)`, with the off-support entries of `base` held fixed."""
    idx = np.asarray(support)

    def log_f(u):
        s = base.at[idx].set(jnp.exp(u))
        return hadamard_log_rates(s, depth, method)[idx] - u

    return log_f


def log_rate_jacobian(
    s: Float[ArrayLike, " K"],
    depth,
    support=None,
    *,
    relative: bool = False,
    method: str = "auto",
) -> Float[Array, "n n"]:
    """Jacobian `dF_i/du_j` (`i, j` in `support`) of the log-rate field at `s` (Theorem 4.3).

    `F_i(u) = s_i^(alpha-1) (1 - lam_i(s))` with `u = log s`, `alpha = 2L/(L+1)` (theory §4);
    entries of `s` outside `support` are held fixed. Computed by forward-mode autodiff of the
    log-space rates (`hadamard_log_rates`).

    **Arguments:**

    - `s`: singular values, shape `(K,)`, positive on `support`.
    - `depth`: `L`, any real `>= 1` (may be traced).
    - `support`: indices in `1..K-1` (or a boolean mask of shape `(K,)`); default all of them.
      Static (it fixes the output shape).
    - `relative`: divide by the largest rate `max_i F_i(u)` on the support (positive), so that
      the result stays finite where the rates themselves underflow.
    - `method`: passed to `log_one_minus_lambda` (`"auto"`: dense for `K <= 256`, else fast).

    **Returns:** the `(n, n)` Jacobian, `n = len(support)`.

    **Raises:** `ValueError` for a bad support, `K` not a power of two, or `depth < 1`.
    """
    s = jnp.asarray(s)
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(jnp.result_type(float))
    k = s.shape[-1]
    _log2(k, "len(s)")
    _check_depth(depth)
    sup = _support_tuple(k, support)
    return _jacobian_jit(s, jnp.asarray(depth, s.dtype), sup, relative, method)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _jacobian_jit(s, depth, sup, relative, method):
    idx = np.asarray(sup)
    log_f = _log_rate_fn(s.shape[-1], sup, depth, method, s)
    u0 = jnp.log(s[idx])
    shift = jax.lax.stop_gradient(jnp.max(log_f(u0))) if relative else 0.0
    return jax.jacfwd(lambda u: jnp.exp(log_f(u) - shift))(u0)


def tangent_eigenvalues(jac: Float[ArrayLike, "... n n"]) -> Float[Array, "... n-1"]:
    """Eigenvalues (ascending) of a Jacobian restricted to `{v : sum v = 0}` (Theorem 4.3).

    The symmetric part of `P J P` is diagonalized with `P = I - 11^T/n` (the centring of rows
    and columns, O(n^2)) and a shift of `-c 11^T/n`, `c` above the spectral radius, that sends
    the excluded `1` direction to the bottom of the spectrum, where it is dropped. `J` is
    symmetric at equal-valued structures (module docstring), where this is exact.
    """
    jac = jnp.asarray(jac)
    n = jac.shape[-1]
    sym = 0.5 * (jac + jnp.swapaxes(jac, -1, -2))
    centred = (
        sym
        - jnp.mean(sym, axis=-1, keepdims=True)
        - jnp.mean(sym, axis=-2, keepdims=True)
        + jnp.mean(sym, axis=(-2, -1), keepdims=True)
    )
    # shift by twice the Frobenius norm (>= spectral radius): rounding stays relative to ||J||
    c = 2.0 * jnp.sqrt(jnp.sum(sym**2, axis=(-2, -1)))[..., None, None]
    shifted = centred - (c + jnp.finfo(sym.dtype).tiny) / n
    return jnp.linalg.eigvalsh(shifted)[..., 1:]


def structure_point(k: int, x, support=None, dtype=None) -> Float[Array, "... K"]:
    """`s = x 1_S` (zero off the support and at index 0), batched over the shape of `x`.

    **Raises:** `ValueError` for a bad support or a concrete `x <= 0` or not finite."""
    _check_x(x)
    sup = np.asarray(_support_tuple(k, support))
    mask = np.zeros(k)
    mask[sup] = 1.0
    x = jnp.asarray(x, dtype=dtype or jnp.result_type(float))
    return x[..., None] * jnp.asarray(mask, x.dtype)


@functools.partial(jax.jit, static_argnums=(0, 1, 4, 5))
def _max_tangent_eig(k, sup, depth, x, relative, method):
    s = structure_point(k, x, sup)
    jac = log_rate_jacobian(s, depth, sup, relative=True, method=method)
    eig = tangent_eigenvalues(jac)[-1]
    if relative:
        return eig
    # undo the relative scaling in log space (underflows to -0.0 / 0.0 only where it must)
    idx = np.asarray(sup)
    log_ref = jnp.max(_log_rate_fn(k, sup, depth, method, s)(jnp.log(s[idx])))
    return eig * jnp.exp(log_ref)


def structure_stability(
    num_classes: int,
    depth,
    x,
    support=None,
    *,
    relative: bool = False,
    method: str = "auto",
) -> Float[Array, ""]:
    """Largest tangent eigenvalue of the log-rate Jacobian at `s = x 1_S` (Theorem 4.3).

    Positive: the structure is unstable at scale `x` (a small change of direction grows);
    negative: stable within its support. Note that this is restricted to the support: off the
    support (entries held at `0`) the linearization says nothing; for `alpha > 1` a mode at
    exactly zero never grows, and a small one grows at a rate `~ s_j^(alpha-1)`.

    **Arguments:** `num_classes` `K` (power of two `>= 4`); `depth` real `>= 1`; `x > 0` the
    common value (scalar; `vmap` for batches); `support` (default DNC); `relative`, `method` as
    in `log_rate_jacobian`.

    **Returns:** the eigenvalue (scalar); with `relative=True` divided by the (common) rate
    `F_i` of the structure, i.e. the instability's growth rate per unit of log-growth of `s`.

    **Raises:** `ValueError` for `K` not a power of two `>= 4`, a bad support, `depth < 1` or
    not finite, `x <= 0` or not finite (concrete values; traced ones pass).
    """
    _check_k(num_classes)
    _check_depth(depth)
    _check_x(x)
    sup = _support_tuple(num_classes, support)
    if len(sup) < 2:
        raise ValueError("the support needs at least 2 indices to have a tangent direction.")
    return _max_tangent_eig(num_classes, sup, depth, x, relative, method)


def dnc_stability(num_classes: int, depth, x, *, relative: bool = False, method: str = "auto"):
    """Largest tangent eigenvalue of the log-rate Jacobian at DNC `s = x (0, 1, ..., 1)`
    (theory §4, paper Theorem 4.3 i). Positive: DNC is unstable at scale `x`.

    A hand computation (tests/theory/test_stability.py) gives `J = x^(alpha-1)/D [((alpha-1)K - x) I -
    x lam 11^T]`, `D = e^x + K - 1`, so the value is `x^(alpha-1) ((alpha-1)K - x) / D`
    (`relative=True`: `(alpha-1) - x/K`); this function does not use that formula, it
    differentiates the field. See `structure_stability` for the arguments.
    """
    return structure_stability(num_classes, depth, x, None, relative=relative, method=method)


def cross_polytope_stability(
    num_classes: int, depth, x, *, v: int = 1, relative: bool = False, method: str = "auto"
):
    """Largest tangent eigenvalue at the cross-polytope `s = x 1_S`, `S = {i : popcount(i&v)
    odd}` (paper Theorem 4.3 ii), restricted to the support. See `structure_stability`."""
    sup = cross_polytope_support(num_classes, v)
    return structure_stability(num_classes, depth, x, sup, relative=relative, method=method)


def _illinois(g, a, b, ga, gb, xtol, maxiter):
    """Root of `g` on `[a, b]` with `ga > 0 > gb`, Illinois (modified regula falsi)."""

    def cond(state):
        a, b, ga, gb, side, it = state
        return (jnp.abs(b - a) > xtol * (1.0 + jnp.abs(a))) & (it < maxiter)

    def body(state):
        a, b, ga, gb, side, it = state
        c = b - gb * (b - a) / (gb - ga)
        inside = (c > a) & (c < b) & jnp.isfinite(c)
        c = jnp.where(inside, c, 0.5 * (a + b))
        gc = g(c)
        pos = gc > 0
        # Illinois: halve the stale endpoint's value when the same side moves twice.
        new_gb = jnp.where(pos & (side == 1), 0.5 * gb, gb)
        new_ga = jnp.where(~pos & (side == -1), 0.5 * ga, ga)
        a2 = jnp.where(pos, c, a)
        ga2 = jnp.where(pos, gc, new_ga)
        b2 = jnp.where(pos, b, c)
        gb2 = jnp.where(pos, new_gb, gc)
        exact = gc == 0
        a2 = jnp.where(exact, c, a2)
        b2 = jnp.where(exact, c, b2)
        return a2, b2, ga2, gb2, jnp.where(pos, 1, -1), it + 1

    state = (a, b, ga, gb, jnp.asarray(0), jnp.asarray(0))
    a, b, ga, gb, _, it = jax.lax.while_loop(cond, body, state)
    return 0.5 * (a + b), it


@functools.lru_cache(maxsize=None)
def _critical_scale_fn(k, sup, method, lo, hi, xtol, maxiter):
    def g(depth, logx):
        return _max_tangent_eig(k, sup, depth, jnp.exp(logx), True, method)

    def one(depth):
        dtype = jnp.result_type(float)
        a = jnp.log(jnp.asarray(lo, dtype))
        b = jnp.log(jnp.asarray(hi, dtype))
        ga, gb = g(depth, a), g(depth, b)
        bracketed = (ga > 0) & (gb < 0)
        # outside the bracket the search is skipped (dummy finite bracket, masked below)
        ga_s = jnp.where(bracketed, ga, 1.0)
        gb_s = jnp.where(bracketed, gb, -1.0)
        root, _ = _illinois(lambda lx: g(depth, lx), a, b, ga_s, gb_s, xtol, maxiter)
        x = jnp.exp(root)
        x = jnp.where(ga <= 0, 0.0, x)  # stable at every scale in the bracket
        return jnp.where(gb >= 0, jnp.inf, x)  # unstable at every scale in the bracket

    # `lax.map`, not `vmap`: a vmapped root finder would batch the eigendecompositions
    # (LAPACK, K-1 up to 1023) inside the while loop, and jaxlib's batched LAPACK calls share
    # XLA's intra-op thread pool with the loop's own kernels: seen to hang (all threads idle)
    # at K = 1024 under a concurrent test run on 2 cores. Depths run one after another.
    return jax.jit(lambda depths: jax.lax.map(one, depths))


def structure_critical_scale(
    num_classes: int,
    depth,
    support=None,
    *,
    lo: float = 1e-9,
    hi: float | None = None,
    xtol: float = 1e-12,
    maxiter: int = 100,
    method: str = "auto",
) -> Float[Array, "..."]:
    """Critical scale `x*` where the largest tangent eigenvalue at `x 1_S` changes sign.

    Root finding in `log x` on `[lo, hi]` (Illinois' modified regula falsi, a `lax.while_loop`,
    jitted and mapped over `depth`) of the *relative* eigenvalue (`structure_stability(...,
    relative=True)`): positive below `x*`, negative above for DNC and the cross-polytope.

    **Arguments:** `num_classes` `K` (power of two `>= 4`); `depth` a real `>= 1` or an array
    of them (one compile per `K`, support and options); `support` (default DNC); `lo`, `hi`
    the bracket (default `hi = 4K`); `xtol` relative tolerance in `log x`; `maxiter`.

    **Returns:** `x*` with the shape of `depth`. `0.0` where the structure is stable at every
    scale of the bracket (e.g. DNC at `depth = 1`: Garrod et al. 2025), `inf` where it is
    unstable at every scale of the bracket.

    **Raises:** `ValueError` for `K` not a power of two `>= 4`, a support with fewer than 2
    indices, `depth < 1` (or not finite), `not 0 < lo < hi`, `xtol <= 0` or `maxiter < 1`.
    """
    _check_k(num_classes)
    _check_depth(depth)
    sup = _support_tuple(num_classes, support)
    if len(sup) < 2:
        raise ValueError("the support needs at least 2 indices to have a tangent direction.")
    real_arg("lo", lo, minimum=0.0, strict=True, fix="the bracket needs 0 < lo < hi.")
    if hi is not None:
        real_arg("hi", hi, minimum=0.0, strict=True, fix="the bracket needs 0 < lo < hi.")
    hi = 4.0 * num_classes if hi is None else float(hi)
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi for the bracket, got lo={lo}, hi={hi}.")
    real_arg("xtol", xtol, minimum=0.0, strict=True, fix="a relative tolerance in log x > 0.")
    maxiter = check_int("maxiter", maxiter, fix="the root finder's iteration limit.")
    depth = jnp.asarray(depth, jnp.result_type(float))
    fn = _critical_scale_fn(num_classes, sup, method, float(lo), hi, float(xtol), int(maxiter))
    return fn(depth.reshape(-1)).reshape(depth.shape)


def dnc_critical_scale(num_classes: int, depth, **kwargs) -> Float[Array, "..."]:
    """`x*(K, L)`: DNC is unstable below, stable above (paper Theorem 4.3 i, theory §4).

    Computed numerically (autodiff Jacobian + root finding; `structure_critical_scale`) for any
    real `depth >= 1` or an array of depths. Returns `0.0` where DNC is stable at every scale:
    at `depth = 1` the tangent eigenvalue is `-x^0 x / (e^x + K - 1) < 0` for all `x > 0`.
    (A hand linearization gives `x* = K (L-1)/(L+1)`; the tests compare against it.)
    """
    return structure_critical_scale(num_classes, depth, None, **kwargs)


def cross_polytope_critical_scale(num_classes: int, depth, *, v: int = 1, **kwargs):
    """Critical scale of the cross-polytope support (paper Theorem 4.3 ii), restricted to the
    support: stable within its support above it. See `structure_critical_scale`.

    At `depth = 1` this returns `0.0` (stable within the support at every scale) but the
    structure is still unstable *off* its support there: a small off-support mode grows at the
    rate `(1 - lam_j) = K/Z`, faster in log terms than the support's. For `depth > 1` an
    off-support mode `s_j` grows at `s_j^(alpha-1) K/Z`, which vanishes as `s_j -> 0`.
    """
    sup = cross_polytope_support(num_classes, v)
    return structure_critical_scale(num_classes, depth, sup, **kwargs)
