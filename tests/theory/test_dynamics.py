"""Dynamics of depth (Theorems 4.3 iii and 4.4, Prop. C.1; theory §4.6-§4.8): perturbations of
DNC along trajectories, rich-get-richer, KL to NC, basins, minimal rank, each against an
independent computation (finite differences, a closed form, a scipy ODE solve, an exhaustive
search) or a direct `solve_hadamard` trajectory; and the library's error messages.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import ufmflow as uf
from helpers import alpha as depth_alpha

KEY = jax.random.PRNGKey(0)
# Library functions are jitted in these tests where they are called on several depths or many
# times (depth traced: one compiled program instead of one per operation, issue 13).


def test_dnc_perturbations_move_away_below_and_back_above_the_critical_scale():
    """A tangent perturbation `u = log(x) 1 + eps xi` obeys `du/dtau = J(x(tau)) du` to first
    order, and at DNC every tangent direction has the same eigenvalue `lambda(x)`, so
    `log(dist(tau)/dist(0)) = int_0^tau lambda(x(t)) dt` for the distance of `shat` to DNC:
    checked on a direct `solve_hadamard` trajectory (the scale `x(t)`, the geometric mean of
    `s`, read off the same trajectory; the integral by the trapezoid rule)."""
    k, depth = 8, 4.0
    xstar = float(uf.dnc_critical_scale(k, depth))
    stability = jax.jit(jax.vmap(lambda x: uf.dnc_stability(k, depth, x)))
    for ratio in [0.1, 0.5, 2.0, 5.0]:
        x = ratio * xstar
        s0 = uf.perturb_structure(KEY, k, x, 1e-5)
        f = float(np.exp(uf.hadamard_log_rates(uf.structure_point(k, x), depth)[1]) / x)
        ts = jnp.linspace(0.0, 0.05 / f, 9)  # the scale grows by ~5%
        sol = uf.solve_hadamard(s0, depth, ts[-1], ts=ts, rtol=1e-11, atol=1e-16)
        dist = np.asarray(uf.direction_distance(sol.s))
        assert (dist[-1] > dist[0]) == (ratio < 1)  # away below x*, back above
        xs = jnp.exp(jnp.mean(jnp.log(sol.s[:, 1:]), axis=-1))
        predicted = np.trapezoid(np.asarray(stability(xs)), np.asarray(ts))
        assert np.log(dist[-1] / dist[0]) == pytest.approx(predicted, rel=2e-2)


# ------------------------------------------------------------------------------------------
# Theorem 4.4: rich-get-richer


def test_linearized_field_is_second_order_accurate():
    """`hadamard_linearized_field` drops `s^alpha O(|s|^2)`: the error relative to the field,
    divided by `scale^2`, must settle to a constant as the scale -> 0; the zeroth-order field
    `s^alpha` has a first-order error, so the same ratio for it blows up like `1/scale`."""
    dirs = uf.random_directions(KEY, 16, 6, 1.0)

    @jax.jit
    def errors(c, depth):  # the two relative errors / scale^2
        s = dirs * c
        full = uf.hadamard_field(s, depth)
        lin = uf.hadamard_linearized_field(s, depth)
        zeroth = (s ** depth_alpha(depth)).at[:, 0].set(0.0)
        size = jnp.linalg.norm(full, axis=-1)
        return (jnp.linalg.norm(full - lin, axis=-1) / size / c**2,
                jnp.linalg.norm(full - zeroth, axis=-1) / size / c**2)

    for depth in [1.0, 2.0, 5.5]:
        ratios, ratios0 = [], []
        for c in [1e-2, 1e-3, 1e-4]:
            err, err0 = errors(c, depth)
            ratios.append(np.asarray(err))
            ratios0.append(np.asarray(err0))
        assert np.all(ratios[-1] < 1.0)
        np.testing.assert_allclose(ratios[-1], ratios[-2], rtol=2e-2)
        assert np.all(ratios0[-1] > 50 * ratios0[0])


def test_rich_get_richer_sign_at_small_scale():
    """Theorem 4.4: `d log(s_i/s_j)/dtau` has the sign of `s_i - s_j` for `L > 1` and the
    opposite sign for `L = 1`, for every pair, at small scale (full field, not linearized)."""
    s = np.asarray(uf.random_directions(KEY, 8, 200, 1e-3))
    pairs = list(itertools.combinations(range(1, 8), 2))
    rates = jax.jit(lambda s, depth: [uf.log_ratio_rate(s, depth, i, j) for i, j in pairs])
    for depth, sign in [(1.0, -1.0), (1.5, 1.0), (4.0, 1.0)]:
        for (i, j), rate in zip(pairs, rates(jnp.asarray(s), depth)):
            assert np.all(np.sign(np.asarray(rate)) == sign * np.sign(s[:, i] - s[:, j]))


def test_rich_get_richer_batched_fractions():
    """Along trajectories (the mean mode grows 1.5x), the log-ratio gap of the extreme pair and
    of a random pair shrinks at `L = 1` and grows at `L = 3` from small inits."""
    res = uf.rich_get_richer(KEY, 8, [1.0, 3.0], [1e-2], num=64)
    assert res["failed"].sum() == 0
    assert res["frac_extreme_grows"][0, 0] == 0.0
    assert res["frac_extreme_grows"][1, 0] == 1.0
    assert res["frac_random_grows"][0, 0] <= 0.05
    assert res["frac_random_grows"][1, 0] >= 0.95


# ------------------------------------------------------------------------------------------
# KL divergence to NC


def test_kl_rate_matches_finite_difference_along_the_field():
    s = uf.random_directions(KEY, 8, 32, 2.0)

    @jax.jit
    def rate_and_fd(s, depth):
        v = uf.hadamard_field(s, depth)
        h = 1e-6
        return uf.kl_rate(s, depth), (uf.kl_to_nc(s + h * v) - uf.kl_to_nc(s - h * v)) / (2 * h)

    for depth in [1.0, 3.0]:
        rate, fd = rate_and_fd(s, depth)
        np.testing.assert_allclose(rate, fd, rtol=1e-6, atol=1e-12)


def test_kl_never_increases_at_depth_one():
    """Garrod et al. (2025): for `L = 1` the KL divergence to NC is non-increasing along every
    trajectory with positive singular values. Checked pointwise (`kl_rate <= 0` at 4000 random
    points over six decades of scale) and along 64 vmapped trajectories."""
    k = 16
    scales = jnp.asarray(np.geomspace(1e-3, 1e3, 4000))[:, None]
    pts = uf.random_directions(KEY, k, 4000, 1.0) * scales
    max_rate = jax.jit(lambda pts, depth: jnp.max(uf.kl_rate(pts, depth)))
    assert float(max_rate(pts, 1.0)) <= 0.0
    assert float(max_rate(pts, 2.0)) > 0.0  # not so at depth 2
    s0 = uf.random_directions(jax.random.PRNGKey(3), k, 64, 1.0)
    s0 = s0 * jnp.asarray(np.geomspace(1e-2, 1e2, 64))[:, None]
    ts = uf.default_save_times(1e60, 48, 70.0)
    s, status = uf.solve_hadamard_batch(s0, jnp.ones(64), ts, rtol=1e-10, atol=1e-14)
    assert np.all(np.asarray(status) == 0)
    kl = np.asarray(uf.kl_to_nc(s))
    # solver tolerance 1e-10 relative on s: KL errors of order 1e-10 * K
    assert np.max(np.diff(kl, axis=1)) <= 1e-8
    assert np.all(kl[:, -1] < kl[:, 0])


def _two_value_ode(tau, y, k, alpha):
    """The reduced flow on `s = a 1_S + b 1_T` (docstring of
    `uf.cross_polytope_ratio_threshold`): logits `(a+b)/2`, `(b-a)/2`, 0 give
    `da = a^alpha (K - 2 + 2 e^((b-a)/2))/Z`, `db = b^alpha K/Z`, in log form for stability."""
    a, b = np.exp(y)
    z0, zv = (a + b) / 2, (b - a) / 2
    m = max(z0, zv, 0.0)
    zsum = math.exp(z0 - m) + math.exp(zv - m) + (k - 2) * math.exp(-m)
    da = a ** (alpha - 1) * (2 * math.exp(zv - m) + (k - 2) * math.exp(-m)) / zsum
    db = b ** (alpha - 1) * k * math.exp(-m) / zsum
    return [da, db]


@pytest.mark.parametrize("depth", [2.0, 4.0])
def test_kl_diverges_for_depth_two_and_more(depth):
    """Theorem 4.3 (iii), paper Fig. 10: from `s = x (1_S + delta 1_T)` with `delta` below
    `((K-2)/K)^(1/(alpha-1))` the ratio `r = b/a` obeys `r <= r0 (a/a0)^(-c)`,
    `c = 1 - r0^(alpha-1) K/(K-2) > 0`, so KL -> infinity as `a -> infinity`."""
    k, x = 8, 1.0
    alpha = depth_alpha(depth)
    thr = uf.cross_polytope_ratio_threshold(k, depth)
    assert thr == pytest.approx(((k - 2) / k) ** (1 / (alpha - 1)))
    delta = 0.5 * thr
    s0 = uf.cross_polytope_mixture(k, x, delta)
    ts = uf.default_save_times(1e100, 64, 100.0)
    sol = uf.solve_hadamard(s0, depth, 1e100, ts=ts)
    assert int(sol.status) == 0
    s = np.asarray(sol.s)
    on = np.zeros(k, bool)
    on[uf.cross_polytope_support(k)] = True
    off = ~on
    off[0] = False
    a, b = s[:, on], s[:, off]
    np.testing.assert_allclose(a, a[:, :1].repeat(a.shape[1], 1), rtol=1e-12)  # form preserved
    np.testing.assert_allclose(b, b[:, :1].repeat(b.shape[1], 1), rtol=1e-12)
    a, b = a[:, 0], b[:, 0]
    kl = np.asarray(uf.kl_to_nc(sol.s))
    assert np.all(np.diff(kl) >= -1e-12)
    c = 1 - delta ** (alpha - 1) * k / (k - 2)
    assert c > 0
    np.testing.assert_array_less(b / a, delta * (a / x) ** (-c) * (1 + 1e-9))
    assert a[-1] > 400 and kl[-1] > kl[0] + 1.0
    # the two-value ODE (scipy, independent) agrees with the full reduced field early on
    t_check = float(ts[20])
    ode = scipy.integrate.solve_ivp(
        _two_value_ode, (0, t_check), np.log([x, x * delta]), args=(k, alpha),
        rtol=1e-11, atol=1e-13, method="LSODA",
    )
    np.testing.assert_allclose(np.exp(ode.y[:, -1]), [a[20], b[20]], rtol=1e-6)
    # from the same init, depth 1 goes back toward NC
    kl1 = np.asarray(uf.kl_to_nc(uf.solve_hadamard(s0, 1.0, 1e100, ts=ts).s))
    assert kl1[-1] < kl1[0]


# ------------------------------------------------------------------------------------------
# Basins, minimal rank


def test_classify_structure_rule():
    k = 8
    dnc = uf.structure_point(k, 5.0)
    cross = uf.structure_point(k, 5.0, uf.cross_polytope_support(k))
    basis = uf.structure_point(k, 5.0, [1, 2, 4])
    cls, r = uf.classify_structure(jnp.stack([dnc, cross, basis]))
    np.testing.assert_allclose(r, [7.0, 4.0, 3.0], rtol=1e-12)
    assert list(np.asarray(cls)) == [0, 1, 2]


def test_basins_depth_one_goes_to_dnc_and_depth_helps_low_rank():
    res = uf.basins_of_attraction(KEY, 8, [1.0, 6.0], [1e-2], 32)
    assert res["failed"].sum() == 0
    assert res["fractions"][0, 0, 0] == 1.0  # L = 1: DNC is the only attractor (Garrod et al.)
    assert res["fractions"][1, 0, 0] < 0.2  # L = 6 from small init: rarely DNC
    assert np.nanmean(res["effective_rank"][1]) < np.nanmean(res["effective_rank"][0]) - 1


def _gf2_rank(vectors):
    basis = []
    for v in vectors:
        for b in basis:
            v = min(v, v ^ b)
        if v:
            basis.append(v)
    return len(basis)


@pytest.mark.parametrize("k", [4, 8, 16])
def test_minimal_support_exhaustive_search(k):
    """Proposition C.1 via its proof: the margin of `1_S` is `(2/K) min_{k != 0}
    #{i in S : <i, k> odd}`, positive iff no nonzero `k` is orthogonal (mod 2) to all of `S`,
    i.e. iff `S` spans `F_2^m`. So the smallest positive-margin support has `m = log2 K`
    elements; there are `prod_{i<m} (2^m - 2^i) / m!` of them (the bases of `F_2^m`), and the
    positive-margin supports are exactly the spanning sets (counted here by GF(2) elimination).
    """
    m = int(math.log2(k))
    res = uf.minimal_supports(k)
    assert res["min_size"] == m == res["log2_k"]
    bases = math.prod(2**m - 2**i for i in range(m)) // math.factorial(m)
    assert res["num_minimal"] == bases
    spanning = sum(
        _gf2_rank([i + 1 for i in range(k - 1) if code >> i & 1]) == m
        for code in range(1, 2 ** (k - 1))
    )
    assert res["num_positive"] == spanning
    for ex in res["examples"]:
        assert _gf2_rank(ex) == m
        assert float(uf.hadamard_margin(uf.structure_point(k, 1.0, ex))) > 0


# ------------------------------------------------------------------------------------------
# Theorem 4.5: width at random init


# Errors (the command line's are in tests/cli)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="power of two"):
        uf.dnc_critical_scale(6, 2.0)
    with pytest.raises(ValueError, match=">= 4"):
        uf.dnc_stability(2, 2.0, 1.0)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        uf.dnc_critical_scale(8, 0.5)
    with pytest.raises(ValueError, match="num_classes=4, 8 or 16"):
        uf.minimal_supports(32)
    with pytest.raises(ValueError, match="support must be indices"):
        uf.structure_stability(8, 2.0, 1.0, [0, 1, 2])
