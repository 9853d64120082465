"""Dynamics of depth (issue 4): DNC stability, rich-get-richer, KL to NC, minimal rank, width.

Every claim is checked against an independent computation: a numpy re-implementation of the
reduced field with finite differences, a closed form derived in the test's docstring, a scipy
root or ODE solve, or a direct `solve_hadamard` / `solve_flow` trajectory.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize

import ufmflow as uf

KEY = jax.random.PRNGKey(0)


def _alpha(depth):
    return 2.0 * depth / (depth + 1.0)


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
    return (s[support] ** (_alpha(depth) - 1.0) * (1.0 - lam[support]))


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
        a = _alpha(depth)
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
            a = _alpha(depth)
            root = scipy.optimize.brentq(
                lambda x: (a - 1) * (k - 2 + 2 * math.exp(-x / 2)) - x, 1e-9, 4.0 * k, xtol=1e-14
            )
            got = float(uf.cross_polytope_critical_scale(k, depth))
            assert got == pytest.approx(root, rel=1e-9)
            assert got < k * (depth - 1) / (depth + 1)  # stable a little before DNC
    assert float(uf.cross_polytope_critical_scale(8, 1.0)) == 0.0  # (within its support)


def test_dnc_perturbations_move_away_below_and_back_above_the_critical_scale():
    """A tangent perturbation `u = log(x) 1 + eps xi` obeys `du/dtau = J(x(tau)) du` to first
    order, and at DNC every tangent direction has the same eigenvalue `lambda(x)`, so
    `log(dist(tau)/dist(0)) = int_0^tau lambda(x(t)) dt` for the distance of `shat` to DNC:
    checked on a direct `solve_hadamard` trajectory (the scale `x(t)`, the geometric mean of
    `s`, read off the same trajectory; the integral by the trapezoid rule)."""
    k, depth = 8, 4.0
    xstar = float(uf.dnc_critical_scale(k, depth))
    stability = jax.vmap(lambda x: uf.dnc_stability(k, depth, x))
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
    for depth in [1.0, 2.0, 5.5]:
        ratios, ratios0 = [], []
        for c in [1e-2, 1e-3, 1e-4]:
            s = dirs * c
            full = uf.hadamard_field(s, depth)
            lin = uf.hadamard_linearized_field(s, depth)
            zeroth = (s ** _alpha(depth)).at[:, 0].set(0.0)
            size = jnp.linalg.norm(full, axis=-1)
            ratios.append(np.asarray(jnp.linalg.norm(full - lin, axis=-1) / size / c**2))
            ratios0.append(np.asarray(jnp.linalg.norm(full - zeroth, axis=-1) / size / c**2))
        assert np.all(ratios[-1] < 1.0)
        np.testing.assert_allclose(ratios[-1], ratios[-2], rtol=2e-2)
        assert np.all(ratios0[-1] > 50 * ratios0[0])


def test_rich_get_richer_sign_at_small_scale():
    """Theorem 4.4: `d log(s_i/s_j)/dtau` has the sign of `s_i - s_j` for `L > 1` and the
    opposite sign for `L = 1`, for every pair, at small scale (full field, not linearized)."""
    s = np.asarray(uf.random_directions(KEY, 8, 200, 1e-3))
    pairs = list(itertools.combinations(range(1, 8), 2))
    for depth, sign in [(1.0, -1.0), (1.5, 1.0), (4.0, 1.0)]:
        for i, j in pairs:
            rate = np.asarray(uf.log_ratio_rate(jnp.asarray(s), depth, i, j))
            assert np.all(np.sign(rate) == sign * np.sign(s[:, i] - s[:, j]))


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
    for depth in [1.0, 3.0]:
        v = uf.hadamard_field(s, depth)
        h = 1e-6
        fd = (uf.kl_to_nc(s + h * v) - uf.kl_to_nc(s - h * v)) / (2 * h)
        np.testing.assert_allclose(uf.kl_rate(s, depth), fd, rtol=1e-6, atol=1e-12)


def test_kl_never_increases_at_depth_one():
    """Garrod et al. (2025): for `L = 1` the KL divergence to NC is non-increasing along every
    trajectory with positive singular values. Checked pointwise (`kl_rate <= 0` at 4000 random
    points over six decades of scale) and along 64 vmapped trajectories."""
    k = 16
    scales = jnp.asarray(np.geomspace(1e-3, 1e3, 4000))[:, None]
    pts = uf.random_directions(KEY, k, 4000, 1.0) * scales
    assert float(jnp.max(uf.kl_rate(pts, 1.0))) <= 0.0
    assert float(jnp.max(uf.kl_rate(pts, 2.0))) > 0.0  # not so at depth 2
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
    alpha = _alpha(depth)
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


def _np_logit_velocity(factors, k, n):
    """`Zdot = -sum_l A_l A_l^T G B_l^T B_l` with `A_l = W_L..W_{l+1}`, `B_l = W_{l-1}..W_1 H`
    (`B_0 = I`, factor 0 is `H`), `G = dloss/dZ = (softmax(Z) - Y)/N` (theory §1, §6)."""
    f = [np.asarray(x) for x in factors]
    depth = len(f) - 1
    z = f[-1]
    for w in reversed(f[:-1]):
        z = z @ w
    p = np.exp(z - z.max(0))
    p /= p.sum(0)
    y = np.repeat(np.eye(k), n, axis=1)
    g = (p - y) / (k * n)
    zdot = np.zeros_like(z)
    for l in range(depth + 1):
        a = np.eye(k)
        for w in reversed(f[l + 1:]):
            a = a @ w
        b = np.eye(k * n) if l == 0 else f[0]
        for w in f[1:l]:
            b = w @ b
        zdot -= a @ a.T @ g @ b.T @ b
    return zdot


def test_logit_velocity_matches_explicit_formula():
    m = uf.gaussian_init(KEY, 4, 3, 10, 3, 0.7)
    np.testing.assert_allclose(
        uf.logit_velocity(m), _np_logit_velocity(m.factors, 4, 3), rtol=1e-10, atol=1e-15
    )


def test_initial_velocity_aligns_with_etf_as_width_grows():
    """Theorem 4.5: the distance falls with width. With `eps -> 0`, `G -> -(E kron 1^T)/N` and
    `A A^T`, `B^T B` concentrate around multiples of the identity with relative fluctuations
    `~ d^(-1/2)`, so the squared distance falls like `1/d`: a 16x wider model should be at
    least ~4x closer on average (a loose bound on the 16x the scaling predicts)."""
    res = uf.width_alignment(KEY, 4, 2, 2, [16, 64, 256], [0.01], num_seeds=4)
    mean = res["mean"][:, 0]
    assert np.all(np.diff(mean) < 0)
    assert mean[0] > 4 * mean[-1]
    # one value against the explicit numpy velocity
    m = uf.gaussian_init(jax.random.split(KEY, 4)[0], 4, 2, 16, 2, 0.01)
    direct = float(uf.etf_distance(_np_logit_velocity(m.factors, 4, 2), 2))
    assert res["values"][0, 0, 0] == pytest.approx(direct, rel=1e-9)


def _np_gf_rhs(shapes, k, n):
    """Plain gradient flow `dtheta/dt = -grad loss` of the deep UFM in numpy (theory §1-2):
    `dloss/dF_l = A_l^T G B_l^T`, `A_l = F_L..F_{l+1}`, `B_l = F_{l-1}..F_0`,
    `G = (softmax(Z) - Y)/N`, for scipy."""
    sizes = [int(np.prod(sh)) for sh in shapes]
    y = np.repeat(np.eye(k), n, axis=1)

    def rhs(t, theta):
        f = [a.reshape(sh) for a, sh in zip(np.split(theta, np.cumsum(sizes)[:-1]), shapes)]
        b = [np.eye(k * n)]
        for x in f[:-1]:
            b.append(x @ b[-1])
        z = f[-1] @ b[-1]
        p = np.exp(z - z.max(0))
        p /= p.sum(0)
        g = (p - y) / (k * n)
        a = np.eye(k)
        grads = [None] * len(f)
        for l in range(len(f) - 1, -1, -1):
            grads[l] = a.T @ g @ b[l].T
            a = a @ f[l]
        return -np.concatenate([x.ravel() for x in grads])

    return rhs


def _np_logits(theta, shapes):
    sizes = [int(np.prod(sh)) for sh in shapes]
    f = [a.reshape(sh) for a, sh in zip(np.split(theta, np.cumsum(sizes)[:-1]), shapes)]
    z = f[0]
    for x in f[1:]:
        z = x @ z
    return z


def test_flow_until_matches_scipy_gradient_flow_and_stops_at_its_events():
    """`flow_until` (time-changed GF under diffrax Tsit5, terminating events) against plain
    gradient flow in GF time written in numpy and solved by scipy's DOP853 at rtol 1e-11.

    Time event: stopped at `t1` exactly; at rtol 1e-9 the logits are within 1e-7 of scipy's
    (relative to the largest entry; measured: 1.5e-5, 1.2e-7, 6.5e-9, 3.9e-10 at rtol 1e-6,
    1e-8, 1e-9, 1e-10, against 1e-11 between scipy at rtol 1e-11 and 1e-13). Growth event: at the returned `t*` the
    logit norm is the target (root found on the dense output, to 1e-10), scipy's logits at
    `t*` agree to 1e-6, and at 40 earlier times on scipy's trajectory the norm is still below
    the target (first crossing). A GF time cap below `t*` ends the solve there without the
    growth event. Then the width sweeps' seed cap (`wide_seeds`, `wide_width`).
    """
    k, n, d = 4, 2, 24
    m = uf.gaussian_init(KEY, k, n, d, 3, 0.5)
    shapes = [f.shape for f in m.factors]
    theta0 = lambda mm: np.concatenate([np.asarray(f).ravel() for f in mm.factors])  # noqa
    res = uf.flow_until(m, 1e4, rtol=1e-9)
    assert res["status"] == 0 and not res["grown"]
    assert res["t"] == pytest.approx(1e4, rel=1e-9)
    ref = scipy.integrate.solve_ivp(_np_gf_rhs(shapes, k, n), (0.0, 1e4), theta0(m),
                                    method="DOP853", rtol=1e-11, atol=1e-14)
    zref = _np_logits(ref.y[:, -1], shapes)
    z = np.asarray(res["model"].logits())
    assert np.max(np.abs(z - zref)) < 1e-7 * np.max(np.abs(zref))

    m = uf.gaussian_init(KEY, k, n, d, 3, 0.1)
    z0 = float(jnp.linalg.norm(m.logits()))
    res = uf.flow_until(m, 1e8, logit_norm=10 * z0, rtol=1e-9)
    assert res["status"] == 0 and res["grown"]
    t_star = res["t"]
    assert float(jnp.linalg.norm(res["model"].logits())) == pytest.approx(10 * z0, rel=1e-9)
    ts = np.linspace(0.0, t_star, 41)
    ref = scipy.integrate.solve_ivp(_np_gf_rhs(shapes, k, n), (0.0, t_star), theta0(m),
                                    method="DOP853", t_eval=ts, rtol=1e-11, atol=1e-16)
    norms = np.array([np.linalg.norm(_np_logits(th, shapes)) for th in ref.y.T])
    assert norms[-1] == pytest.approx(10 * z0, rel=1e-6)
    assert np.all(norms[:-1] < 10 * z0)

    early = uf.flow_until(m, 0.5 * t_star, logit_norm=10 * z0)
    assert early["status"] == 0 and not early["grown"]
    assert early["t"] == pytest.approx(0.5 * t_star, rel=1e-9)
    g = uf.grown_alignment(m, t1=0.5 * t_star)
    assert math.isnan(g["logit_distance"]) and g["status"] == 0

    # seed cap: widths >= wide_width run the first wide_seeds keys only (same keys)
    conv = uf.converged_rank_vs_width(KEY, k, n, 3, [16, d], 0.5, num_seeds=3, t1=1e2,
                                      wide_seeds=1, wide_width=d)
    assert list(conv["seeds"]) == [3, 1]
    assert np.all(np.isfinite(conv["effective_rank"][0]))
    assert np.all(np.isnan(conv["effective_rank"][1, 1:]))
    full = uf.converged_rank_vs_width(KEY, k, n, 3, [d], 0.5, num_seeds=3, t1=1e2)
    assert conv["effective_rank"][1, 0] == full["effective_rank"][0, 0]


@pytest.mark.slow
def test_grown_alignment_and_converged_rank_trends():
    res = uf.grown_alignment_sweep(KEY, 4, 4, 3, [16, 256], 0.1, num_seeds=2)
    # the growth event is located on the dense output: the norm has grown 10x, not more
    np.testing.assert_allclose(res["growth"], 10.0, rtol=1e-8)
    assert res["logit_mean"][1] < res["logit_mean"][0]
    # Fig. 5 right: wide models end near DNC (effective rank K - 1 = 3), narrow ones lower
    conv = uf.converged_rank_vs_width(KEY, 4, 4, 3, [8, 256], 0.5, num_seeds=5, t1=1e5)
    assert conv["failed"].sum() == 0
    assert np.all(conv["effective_rank"][1] > 2.9)
    assert conv["mean"][0] < conv["mean"][1] - 0.3


# ------------------------------------------------------------------------------------------
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
