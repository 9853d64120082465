"""Stability of structures (Theorem 4.3 i-ii, theory §4.5): the log-rate Jacobian against a numpy
re-implementation with finite differences, DNC's tangent eigenvalue and critical scale against
their closed forms (derived below), the cross-polytope's against its implicit equation (scipy).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import ufmflow as uf
from helpers import alpha as depth_alpha

KEY = jax.random.PRNGKey(0)


def _np_sylvester(k):
    h = np.ones((1, 1))
    while h.shape[0] < k:
        h = np.kron(np.array([[1.0, 1.0], [1.0, -1.0]]), h)
    return h


def _np_log_rate_field(u_support, s_full, support, depth):
    """`F_i = s_i^(alpha-1) (1 - lam_i)` on the support, straight from theory §4 in numpy."""
    k = s_full.size
    s = s_full.copy()
    s[support] = np.exp(u_support)
    h = _np_sylvester(k)
    z = h @ s / k
    q = np.exp(z - z.max())
    q /= q.sum()
    lam = h.T @ q
    return (s[support] ** (depth_alpha(depth) - 1.0) * (1.0 - lam[support]))


# ------------------------------------------------------------------------------------------
# Theorem 4.3 (i): the Jacobian, its closed form at DNC, and the critical scale


@pytest.mark.parametrize(
    "point", ["dnc", "random", "cross_polytope"], ids=["dnc", "random", "cross_polytope"]
)
def test_log_rate_jacobian_matches_finite_differences(point):
    k, depth = 8, 2.7
    rng = np.random.default_rng(1)
    if point == "dnc":
        support, s = np.arange(1, k), np.r_[0.0, np.full(k - 1, 1.3)]
    elif point == "random":
        support, s = np.arange(1, k), np.r_[0.0, rng.uniform(0.2, 3.0, k - 1)]
    else:
        support = uf.cross_polytope_support(k)
        s = np.zeros(k)
        s[support] = 2.0
    jac = np.asarray(uf.log_rate_jacobian(jnp.asarray(s), depth, support))
    # central differences of the numpy field, step 1e-5 in log s: truncation ~1e-10, rounding
    # ~1e-16/1e-5 ~ 1e-11, relative to entries of order 0.1
    u0, h = np.log(s[support]), 1e-5
    fd = np.stack(
        [
            (_np_log_rate_field(u0 + h * e, s, support, depth)
             - _np_log_rate_field(u0 - h * e, s, support, depth)) / (2 * h)
            for e in np.eye(support.size)
        ],
        axis=1,
    )
    np.testing.assert_allclose(jac, fd, atol=1e-8 * np.abs(fd).max())
    rel = np.asarray(uf.log_rate_jacobian(jnp.asarray(s), depth, support, relative=True))
    f0 = _np_log_rate_field(u0, s, support, depth)
    np.testing.assert_allclose(rel * f0.max(), jac, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("k", [4, 16])
def test_dnc_tangent_eigenvalue_closed_form(k):
    """At DNC every `s_i = x`: `z = Hk s/K` is `x(K-1)/K` on class 0 and `-x/K` elsewhere, so
    `q = (e^x, 1, ..., 1)/D`, `D = e^x + K - 1`, and `1 - lam_i = K/D`. With
    `d lam_i/d s_j = (lam_{i xor j} - lam_i lam_j)/K` and `lam_0 = 1`, `lam_i = 1 - K/D`
    (`i >= 1`): `dF_i/du_j = x^(alpha-1)/D [((alpha-1)K - x) delta_ij - x lam]`. The rank-one
    part vanishes on the tangent space, so every tangent eigenvalue is
    `x^(alpha-1) ((alpha-1)K - x)/D`, relative to the rate `F = x^(alpha-1) K/D`:
    `(alpha-1) - x/K`. Hence `x* = (alpha-1) K = K (L-1)/(L+1)`.
    """
    for depth, x in itertools.product([1.0, 2.0, 3.5], [0.3, 3.0, 30.0]):
        a = depth_alpha(depth)
        exact = x ** (a - 1) * ((a - 1) * k - x) / (math.exp(x) + k - 1)
        got = float(uf.dnc_stability(k, depth, x))
        assert got == pytest.approx(exact, rel=1e-9, abs=1e-300)
        rel = float(uf.dnc_stability(k, depth, x, relative=True))
        assert rel == pytest.approx((a - 1) - x / k, rel=1e-9, abs=1e-12)
    # all K - 2 tangent eigenvalues are equal at DNC (J = a I + b 11^T)
    s = uf.structure_point(k, 2.0)
    eig = np.asarray(uf.tangent_eigenvalues(uf.log_rate_jacobian(s, 3.0, relative=True)))
    assert eig.shape == (k - 2,)
    np.testing.assert_allclose(eig, eig[0], atol=1e-12)


def test_dnc_critical_scale_matches_closed_form_and_sign_change():
    depths = np.array([1.0, 1.3, 2.0, 4.0, 7.5, 16.0])
    for k in [8, 64]:
        xs = np.asarray(uf.dnc_critical_scale(k, depths))
        closed = k * (depths - 1) / (depths + 1)  # see test_dnc_tangent_eigenvalue_closed_form
        np.testing.assert_allclose(xs, closed, rtol=1e-9, atol=0)
        assert xs[0] == 0.0  # depth 1: stable at every scale
    for depth, x in zip(depths[1:], xs[1:]):
        assert float(uf.dnc_stability(64, depth, 0.9 * x, relative=True)) > 0
        assert float(uf.dnc_stability(64, depth, 1.1 * x, relative=True)) < 0


@pytest.mark.slow
def test_dnc_critical_scale_large_k_fast_transform():
    # large K and scales: the rates underflow (~e^-900) but the log-space Jacobian does not;
    # K = 1024 uses the O(K log K) transform ("auto")
    xs = np.asarray(uf.dnc_critical_scale(1024, np.array([2.0, 16.0])))
    np.testing.assert_allclose(xs, 1024 * np.array([1 / 3, 15 / 17]), rtol=1e-9)


def test_cross_polytope_critical_scale_solves_implicit_equation():
    """On `S = {i : popcount(i & v) odd}` with `s = x 1_S` the class-0 logits are `x/2` (class
    0), `-x/2` (class v), 0 elsewhere. With `Z = e^(x/2) + e^(-x/2) + K - 2`:
    `1 - lam_i = 2(e^(-x/2) + K/2 - 1)/Z` on `S` and `K/Z` off it (`i != 0`). For `i != j` in
    `S`, `i xor j` is off `S`, so the Jacobian on `S` is diagonal plus a constant: its tangent
    eigenvalue is `x^(alpha-1)[(alpha-1)(1 - lam_S) - (x/K)(1 - lam_off)]`, which changes sign
    where `x = (alpha-1)(K - 2 + 2 e^(-x/2))`.
    """
    for k in [4, 8, 16]:
        s = uf.structure_point(k, 3.0, uf.cross_polytope_support(k))
        z = np.asarray(uf.hadamard_logits(s))
        expected = np.zeros(k)
        expected[0], expected[1] = 1.5, -1.5  # v = 1
        np.testing.assert_allclose(z - z[2], expected, atol=1e-12)
        for depth in [2.0, 4.0, 9.0]:
            a = depth_alpha(depth)
            root = scipy.optimize.brentq(
                lambda x: (a - 1) * (k - 2 + 2 * math.exp(-x / 2)) - x, 1e-9, 4.0 * k, xtol=1e-14
            )
            got = float(uf.cross_polytope_critical_scale(k, depth))
            assert got == pytest.approx(root, rel=1e-9)
            assert got < k * (depth - 1) / (depth + 1)  # stable a little before DNC
    assert float(uf.cross_polytope_critical_scale(8, 1.0)) == 0.0  # (within its support)
