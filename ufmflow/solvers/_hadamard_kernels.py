"""The reduced Hadamard ODE's kernels for the batched solver (theory §4), in the `(K, B)` layout
of `_batched_tsit5` (column `b` is one system: transforms and reductions over `K` then work on
whole contiguous rows, measured 1.4x faster on a CPU than one system per row):

- the field under the `"relative"` time change in `s` (`relative_time_field`) and under the
  `"log"` time change in `u = log s` (`log_time_field`), each fused: the rates
  `1 - lam = 2 q_max sum_{odd} p` in the max-shifted linear form of
  `log_one_minus_lambda(method="fast")` (two Walsh-Hadamard transforms: butterflies,
  O(K log K), or one dense product for `K <= 32`), scaled so that only the norm
  `||ds/dtau||` (never a component) is formed in log space, with a vectorizable `log`;
  the per-column shifts (largest value, largest logit: they keep the exponentials in range and
  cancel from the result) may be passed in, so that a step's inner stages reuse those of its
  start (`_batched_tsit5.tsit5_step`);
- the Walsh-Hadamard transform along axis 0 (`_fwht0`), the softmax weights (`_odd_weights`),
  a vectorizable `log` (`_log`, differentiable: `d log x = dx / x`);
- loss, log loss, margin and effective rank of saved states, in blocks in the loop's layout
  (`_save_metrics`: 6.5 ms instead of 22 ms for 1024 runs x 17 saves at K=64).

The field evaluations are ~75% of a float64 `"log"` step (K=64, 64 slots, with
`ufmflow.fast_cpu_loops()`; measured by adding a seventh evaluation per stage: 5.7 ns per
element each; by a count of its operations ~100 per element, ~65 of them in its three `exp`,
so XLA's code runs near one vector operation per cycle). A hand-written `exp` and reciprocals
instead of divisions did not help.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core._hadamard import sylvester_hadamard
from ..core._model import _log_ce_from_gaps

_DENSE_MAX_K = 32  # measured: the dense product is faster up to K = 32, slower from 64

# ln 2 split so that `e * _LN2[0]` is exact for every binary exponent `e` of the dtype.
_LN2 = {
    jnp.dtype("float64"): (float.fromhex("0x1.62e42fee00000p-1"),
                           float.fromhex("0x1.a39ef35793c76p-33")),
    jnp.dtype("float32"): (0.693145751953125, 1.428606765330187e-06),
}



@jax.custom_jvp
def _log(x: Array) -> Array:
    """Natural logarithm, elementwise, for float32/float64 (other dtypes: `jnp.log`).

    XLA's CPU `log` for float64 is a scalar loop (measured 7 ns/element against 2 ns for
    `exp`); this one is vectorizable: split `x = m 2^e` by bit manipulation (`m` in
    `[sqrt(1/2), sqrt(2))`), then `log m = 2 atanh(r)`, `r = (m - 1)/(m + 1)`, `|r| <= 0.172`,
    by its odd series to below half an ulp (11 terms in float64, 5 in float32). A subnormal
    `x = M 2^(1 - bias - nmant)` is read from its bits as the normal number `M 2^-nmant`
    (arithmetic on the subnormal itself may be flushed to zero). Measured <= 2 ulp from
    `numpy.log` over all finite positive numbers on a CPU (float32 on an H200 GPU: 2.97, a
    known shortfall; tests/solvers/test_hadamard_kernels.py);
    `+-0 -> -inf`, `inf -> inf`, negative or NaN -> NaN.

    Differentiable (a `custom_jvp`: `d log x = dx / x`); without the rule the bit manipulation
    would give a derivative of 0.
    """
    dtype = x.dtype
    if dtype == jnp.float64:
        uint, nbits, nmant, bias, terms = jnp.uint64, 64, 52, 1023, 11
    elif dtype == jnp.float32:
        uint, nbits, nmant, bias, terms = jnp.uint32, 32, 23, 127, 5
    else:
        return jnp.log(x)

    def as_float(bits):
        return jax.lax.bitcast_convert_type(bits, dtype)

    bits = jax.lax.bitcast_convert_type(x, uint)
    mant, one = bits & uint((1 << nmant) - 1), uint(bias << nmant)
    magnitude = bits & uint((1 << (nbits - 1)) - 1)
    sub = magnitude < uint(1 << nmant)  # zero or subnormal: exponent field 0
    negative = (bits >> uint(nbits - 1)) != 0
    mant_sub = jax.lax.bitcast_convert_type(as_float(mant | one) - 1, uint)  # M 2^-nmant
    bits = jnp.where(sub, mant_sub, bits)
    mant = bits & uint((1 << nmant) - 1)
    m = as_float(mant | one)
    # The biased exponent as the low bits of the mantissa of 2^nmant: exact, no int->float.
    e = as_float((bits >> uint(nmant)) | uint((bias + nmant) << nmant)) - (2.0**nmant + bias)
    big = m > 1.4142135623730951
    m = jnp.where(big, 0.5 * m, m)
    e = jnp.where(big, e + 1, e) - jnp.where(sub, bias - 1, 0)
    f = m - 1
    r = f / (2 + f)
    r2 = r * r
    poly = jnp.asarray(1.0 / (2 * terms + 1), dtype)
    for j in range(terms - 1, 0, -1):
        poly = poly * r2 + 1.0 / (2 * j + 1)
    ln2_hi, ln2_lo = _LN2[jnp.dtype(dtype)]
    out = e * ln2_hi + ((2 * r + 2 * r * r2 * poly) + e * ln2_lo)
    out = jnp.where(negative | jnp.isnan(x), jnp.nan, jnp.where(x == jnp.inf, jnp.inf, out))
    return jnp.where(magnitude == 0, -jnp.inf, out)


@_log.defjvp
def _log_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _log(x), dx / x


def _fwht0(x: Float[Array, "K B"]) -> Float[Array, "K B"]:
    """`fwht` along axis 0: in the `(K, slots)` layout every butterfly adds whole rows."""
    k = x.shape[0]
    if k <= _DENSE_MAX_K:
        return jnp.dot(jnp.asarray(sylvester_hadamard(k), x.dtype), x,
                       precision=jax.lax.Precision.HIGHEST)
    h = 1
    while 4 * h <= k:  # radix 4: two butterfly levels per pass (half the kernels)
        y = x.reshape(k // (4 * h), 4, h, -1)
        a, b, c, d = y[:, 0], y[:, 1], y[:, 2], y[:, 3]
        ab, a_b, cd, c_d = a + b, a - b, c + d, c - d
        x = jnp.stack([ab + cd, a_b + c_d, ab - cd, a_b - c_d], axis=1).reshape(x.shape)
        h *= 4
    if h < k:
        y = x.reshape(k // (2 * h), 2, h, -1)
        a, b = y[:, 0], y[:, 1]
        x = jnp.stack([a + b, a - b], axis=1).reshape(x.shape)
    return x


def _odd_weights(s: Float[Array, "K B"], first, z_off=None):
    """`(odd, log q_off, z_off)` per column (`relative_time_field`'s docstring): with
    `z = Hk s / K`, `p_k = exp(z_k - z_off)` (`p_0 = 0`), `odd_i = (sum p - (Hk p)_i) / 2` and
    `q_off = exp(z_off) / sum_k exp(z_k)`, so that `1 - lam_i = 2 q_off odd_i` (theory §4) for
    any shift `z_off`; by default `max_{k>=1} z_k` (then `q_off = softmax(z)` there)."""
    k = s.shape[0]
    z = _fwht0(s) / k
    if z_off is None:
        z_off = jnp.max(jnp.where(first, -jnp.inf, z), axis=0)
    p = jnp.where(first, 0.0, jnp.exp(z - z_off))
    p_sum = jnp.sum(p, axis=0)
    odd = jnp.where(first, 0.0, jnp.maximum(0.5 * (p_sum - _fwht0(p)), 0.0))
    return odd, -_log(p_sum + jnp.exp(z[0] - z_off)), z_off


def relative_time_field(s: Float[Array, "K B"], w: Float[Array, " B"], alpha: Float[Array, " B"]):
    """`(ds/dsigma, dw/dsigma)` of the reduced ODE under the `"relative"` time change
    (`dtau/dsigma = ||s_{1:}|| / ||ds/dtau||`, `w = log1p(tau)`), columns independent.

    Layout `(K, B)`: column `b` is one system (measured 1.4x faster on a CPU than rows: the
    transforms and the reductions over `K` become operations on whole contiguous rows).
    With `z = Hk s / K`, `p_k = exp(z_k - max_{k>=1} z_k)` (`p_0 = 0`) and
    `q_max = softmax(z)` at that maximum, `1 - lam_i = 2 q_max odd_i` where
    `odd_i = sum_{k: Hk[k, i] = -1} p_k = (sum p - (Hk p)_i) / 2` (theory §4). The common factor
    `2 q_max max(s)^alpha` cancels from `ds/dsigma` and enters `dw/dsigma` through a logarithm.
    """
    return _relative_field(s, w, alpha)[:2]


def _relative_field(s, w, alpha, shifts=None):
    """`relative_time_field` and the shifts it used, `(max_{i>=1} s_i, z_off)`, or with given
    `shifts` (per column, e.g. those of the step's start: `_batched_tsit5.tsit5_step`)."""
    first = (jnp.arange(s.shape[0]) == 0)[:, None]
    odd, log_q_off, z_off = _odd_weights(s, first, None if shifts is None else shifts[1])
    s1 = jnp.where(first, 0.0, s)
    s_max = jnp.max(s1, axis=0) if shifts is None else shifts[0]
    ratio = s1 / s_max
    # alpha >= 1: a ratio below the smallest normal number contributes below it, i.e. 0.
    pos = ratio >= jnp.finfo(s.dtype).tiny
    powered = jnp.where(pos, jnp.exp(alpha * _log(jnp.where(pos, ratio, 1.0))), 0.0)
    v = powered * odd
    v_norm = jnp.sqrt(jnp.sum(v * v, axis=0))
    s_norm = jnp.sqrt(jnp.sum(s1 * s1, axis=0))
    ds = (s_norm / v_norm) * v
    log_speed = math.log(2.0) + log_q_off + alpha * _log(s_max) + _log(v_norm)
    dw = jnp.exp(_log(s_norm) - log_speed - w)
    return ds, dw, (s_max, z_off)


# Weight of the logits' speed in the `"log"` time change. Mean Tsit5 steps per run measured on
# 1024 runs (K=64, depth 1..8, tau 1e6, rtol 1e-6): 0: 92, 0.05: 79, 0.1: 78, 0.25: 83,
# 0.5: 85, 1: 90 (the `"relative"` time change: 108).
_LOGIT_WEIGHT = 0.1


def log_time_field(u: Float[Array, "K B"], w: Float[Array, " B"], alpha: Float[Array, " B"]):
    """`(du/dsigma, dw/dsigma)` of the reduced ODE in log variables `u = log s` under the
    `"log"` time change, columns independent (layout as `relative_time_field`).

    `d u_i/dtau = s_i^(alpha - 1) (1 - lam_i)` (theory §4, the log-rate field of Theorem 4.3) and
    `dtau/dsigma = 1 / (||du/dtau|| + _LOGIT_WEIGHT ||dz/dtau||)`, where `z = Hk s / K` are the
    softmax's inputs (`||dz|| = ||ds|| / sqrt(K)`: `Hk / sqrt(K)` is orthogonal). The first
    term makes every singular value move by a bounded *relative* amount per unit `sigma`, the
    second bounds how fast the softmax changes once the values are large. On 1024 runs (K=64,
    depth 1..8, tau 1e6, rtol 1e-6) Tsit5 took 27% fewer steps than with the `"relative"` time
    change (28-33% fewer at depth 4-8, 16% more at depth 1).
    Row 0 (`s_0`, which does not move) and entries with `exp(u) == 0` (`u = -inf` for
    `s_i = 0`, which stays 0) have rate 0.
    """
    return _log_field(u, w, alpha)[:2]


def _log_field(u, w, alpha, shifts=None):
    """`log_time_field` and the shifts it used, `(max_{i>=1} u_i, z_off)`, or with given
    `shifts` (per column; any values give the same field up to rounding, as long as the
    exponentials stay in range: in float64 the solver passes those of the step's start to the
    stages inside a step, which saves two reductions over `K` per evaluation:
    `_batched_tsit5.tsit5_step`)."""
    k = u.shape[0]
    first = (jnp.arange(k) == 0)[:, None]
    s = jnp.exp(u)
    live = (~first) & (s > 0)
    odd, log_q_off, z_off = _odd_weights(s, first, None if shifts is None else shifts[1])
    u_max = jnp.max(jnp.where(live, u, -jnp.inf), axis=0) if shifts is None else shifts[0]
    # v = (du/dtau) / C with C = 2 q_max s_max^(alpha - 1): rates relative to the largest value.
    v = jnp.where(live, jnp.exp((alpha - 1) * (jnp.where(live, u, u_max) - u_max)), 0.0) * odd
    vs = v * s
    speed = jnp.sqrt(jnp.sum(v * v, axis=0)) \
        + (_LOGIT_WEIGHT / math.sqrt(k)) * jnp.sqrt(jnp.sum(vs * vs, axis=0))
    du = v / speed
    log_speed = math.log(2.0) + log_q_off + (alpha - 1) * u_max + _log(speed)
    dw = jnp.exp(-log_speed - w)
    return du, dw, (u_max, z_off)



def _column_metrics(x: Float[Array, "K B"]) -> dict:
    """`hadamard_loss`, `hadamard_log_loss`, `hadamard_margin` and the effective rank
    (`effective_rank_from_singular_values`) of every column of `x`, from one transform."""
    k = x.shape[0]
    z = _fwht0(x) / k
    gaps = z[1:] - z[:1]
    g_max = jnp.max(gaps, axis=0)
    z_max = jnp.max(z, axis=0)
    lse_z = z_max + jnp.log(jnp.sum(jnp.exp(z - z_max), axis=0))
    lse_gaps = g_max + jnp.log(jnp.sum(jnp.exp(gaps - g_max), axis=0))
    total = jnp.sum(x, axis=0)
    p = x / total
    plogp = jnp.where(p > 0, p * _log(jnp.where(p > 0, p, 1.0)), 0.0)
    out = dict(loss=lse_z - z[0], log_loss=_log_ce_from_gaps(lse_gaps), min_margin=-g_max,
               effective_rank=jnp.exp(-jnp.sum(plogp, axis=0)))
    # NaN for a NaN state (no save there): XLA:CPU's `max` reduction may skip NaNs.
    return {name: jnp.where(jnp.isnan(total), jnp.nan, v) for name, v in out.items()}


def _save_metrics(s: Float[Array, "*batch K"]) -> dict:
    """`_column_metrics` of every saved state `s[..., :]`, in blocks of `max(16, 16384 // K)`
    states, each transposed to the loop's `(K, B)` layout. Measured on the benchmark's saves
    (1024 runs x 17 saves, K=64, float64): 6.5 ms instead of 22 ms for the three functions
    applied to the whole `(..., K)` array, whose reductions over `K` (across a long minor axis,
    or with a long stride) are slow on a CPU."""
    k = s.shape[-1]
    rows = s.reshape(-1, k)
    m = rows.shape[0]
    block = min(m, max(16, 16384 // k))
    rows = jnp.concatenate([rows, jnp.zeros(((-m) % block, k), s.dtype)])
    out = jax.lax.map(lambda b: _column_metrics(b.T), rows.reshape(-1, block, k))
    return {name: v.reshape(-1)[:m].reshape(s.shape[:-1]) for name, v in out.items()}
