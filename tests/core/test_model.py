"""Model, initializations, the Hadamard field and the metrics against closed forms."""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import ufmflow as uf

KEY = jax.random.PRNGKey(0)
# Test inputs from numpy where any numbers do: `jax.random.normal` compiles a sampler per shape
# (~1-4 s each on a CPU). Library calls are jitted here (one compiled program per shape rather
# than one per operation) where a test calls them on several shapes or many times.
RNG_SEED = 0


def _numpy_ce(z, labels):
    z = np.asarray(z, dtype=np.float64)
    lse = np.log(np.sum(np.exp(z - z.max(0)), axis=0)) + z.max(0)
    return np.mean(lse - z[labels, np.arange(z.shape[1])])


def test_logits_and_class_means_match_numpy():
    m = uf.gaussian_init(KEY, 4, 3, 6, 3, 1.0)
    h, w1, w2, w3 = (np.asarray(f) for f in m.factors)
    z = w3 @ w2 @ w1 @ h
    np.testing.assert_allclose(m.logits(), z, rtol=1e-12)
    # class-major columns: sample i of class c is column c*n + i
    zbar = np.stack([z[:, c * 3 : (c + 1) * 3].mean(1) for c in range(4)], axis=1)
    np.testing.assert_allclose(m.class_mean_logits(), zbar, rtol=1e-12)
    labels = np.repeat(np.arange(4), 3)
    np.testing.assert_allclose(m.loss(), _numpy_ce(z, labels), rtol=1e-12)
    np.testing.assert_allclose(m.log_loss(), np.log(_numpy_ce(z, labels)), rtol=1e-12)


def test_log_loss_matches_high_precision_far_past_underflow():
    # Hadamard logits are known exactly: class 0 sees Hk s / K. With s = x (0, 1, ..., 1) the
    # correct logit is x (K-1)/K and every wrong one is -x/K (rows k >= 1 of Hk sum to 0), so
    # every gap is -x and the per-sample loss is log(1 + (K-1) e^{-x}); its log is evaluated
    # in 50-digit mpmath.
    k = 4
    for x in [1.0, 40.0, 800.0, 5000.0]:
        s = jnp.array([0.0] + [x] * (k - 1))
        m = uf.hadamard_init(KEY, s, 2, 5, 2)
        mpmath.mp.dps = 50
        exact = float(mpmath.log(mpmath.log1p((k - 1) * mpmath.exp(-x))))
        got = float(m.log_loss())
        assert np.isfinite(got)
        # factors of the Hadamard init round at 1e-16 relative, so logits at x * 1e-15 absolute
        assert abs(got - exact) <= 1e-12 * max(1.0, abs(exact)) + 1e-13 * x
        if x > 40:
            assert float(m.loss()) == 0.0  # plain loss has underflowed
        np.testing.assert_allclose(uf.hadamard_log_loss(s), exact, rtol=1e-12)


def test_log_loss_float32_past_underflow():
    s = jnp.array([0.0, 200.0, 200.0, 200.0], dtype=jnp.float32)
    m = uf.hadamard_init(KEY, s, 1, 4, 1, dtype=jnp.float32)
    assert m.factors[0].dtype == jnp.float32
    assert float(m.loss()) == 0.0
    # log(log1p(3 e^-200)) = log 3 - 200 up to e^-200
    np.testing.assert_allclose(float(m.log_loss()), np.log(3.0) - 200.0, rtol=1e-5)


def test_log_loss_gradient_matches_finite_differences():
    m = uf.gaussian_init(KEY, 3, 2, 4, 2, 1.5)
    flat, unravel = jax.flatten_util.ravel_pytree(m.factors)
    for fn in (
        lambda x: uf.DeepUFM(unravel(x), 3, 2).log_loss(),
        lambda x: uf.DeepUFM(unravel(x), 3, 2).loss(),
    ):
        fn = jax.jit(fn)
        g = jax.jit(jax.grad(fn))(flat)
        eps = 1e-6
        idx = np.arange(0, flat.size, 3)
        fd = [(fn(flat.at[i].add(eps)) - fn(flat.at[i].add(-eps))) / (2 * eps) for i in idx]
        # central differences: truncation O(eps^2 f''') ~ 1e-12, rounding ~ 1e-16/eps = 1e-10
        np.testing.assert_allclose(g[idx], np.array(fd), atol=1e-8, rtol=1e-6)


def test_gaussian_init_statistics_and_shapes():
    m = uf.gaussian_init(KEY, 5, 2, 400, 3, 0.3)
    assert [f.shape for f in m.factors] == [(400, 10), (400, 400), (400, 400), (5, 400)]
    w = np.asarray(m.factors[1]).ravel()
    # 160000 samples: the sample variance is within 1% of eps^2/d with overwhelming probability
    np.testing.assert_allclose(w.var(), 0.3**2 / 400, rtol=0.02)
    assert abs(w.mean()) < 5 * 0.3 / 20 / 400


@pytest.mark.parametrize("partitionable", [True, False])
def test_padded_gaussian_init_draws_gaussian_init_at_a_traced_depth(partitionable):
    # theory §2.9: the active layers are gaussian_init's very draws (the same random bits; a
    # compiled program may round the scaling differently by an ulp), the rest identities;
    # with JAX's partitionable threefry (the default) or not.
    from ufmflow.core._init import gaussian_init_padded

    key, k, n, d, cap, scale = jax.random.PRNGKey(11), 3, 2, 5, 4, 0.3
    padded = jax.jit(lambda depth: gaussian_init_padded(key, k, n, d, depth, cap, scale))
    with jax.threefry_partitionable(partitionable):
        for depth in range(1, cap + 1):
            got = padded(depth).factors
            want = uf.gaussian_init(key, k, n, d, depth, scale).factors
            assert len(got) == cap + 1
            for a, b in zip(got[:depth] + got[-1:], want):
                np.testing.assert_array_max_ulp(np.asarray(a), np.asarray(b), maxulp=4)
            for eye in got[depth:-1]:
                np.testing.assert_array_equal(np.asarray(eye), np.eye(d))


def test_hadamard_init_is_balanced_with_the_right_spectrum():
    k, n, d, depth = 8, 3, 11, 3
    s = jnp.array([0.7, 0.1, 0.5, 2.0, 0.0, 1.0, 0.3, 0.9])
    m = uf.hadamard_init(KEY, s, n, d, depth)
    o = np.asarray(uf.sylvester_hadamard(k)) / np.sqrt(k)
    np.testing.assert_allclose(m.class_mean_logits(), o @ np.diag(s) @ o, atol=1e-14)
    a = np.sort((np.sqrt(n) * np.asarray(s)) ** (1 / (depth + 1)))
    for f in m.factors:
        sv = np.sort(np.linalg.svd(np.asarray(f), compute_uv=False))[-k:]
        np.testing.assert_allclose(sv, a, atol=1e-12)
    np.testing.assert_allclose(uf.balancedness(m), 0.0, atol=1e-13)


def test_sylvester_and_fast_transform():
    for k in (1, 2, 4, 16, 64):
        h = np.asarray(uf.sylvester_hadamard(k))
        np.testing.assert_array_equal(h @ h, k * np.eye(k))
        np.testing.assert_array_equal(h, h.T)
        i, j = np.indices((k, k))
        popcount = np.vectorize(lambda v: bin(v).count("1"))(i & j)
        np.testing.assert_array_equal(h, (-1.0) ** popcount)
        x = np.random.default_rng(RNG_SEED).standard_normal((3, 2, k))
        np.testing.assert_allclose(jax.jit(uf.fwht)(x), x @ h, rtol=1e-12, atol=1e-12)


def test_hadamard_field_closed_form_k2_and_methods_agree():
    # K = 2: logits (s0 + s1, s0 - s1)/2, q_1 = sigmoid(-s1), 1 - lam_1 = 2 sigmoid(-s1).
    s1 = jnp.linspace(0.01, 30.0, 7)
    s = jnp.stack([jnp.zeros_like(s1), s1], -1)
    field = jax.jit(uf.hadamard_field, static_argnames="method")  # depth traced: one program
    for depth in (1.0, 2.5, 8.0):
        alpha = 2 * depth / (depth + 1)
        expected = s1**alpha * 2 * jax.nn.sigmoid(-s1)
        got = field(s, depth)
        np.testing.assert_allclose(got[:, 1], expected, rtol=1e-12)
        np.testing.assert_array_equal(got[:, 0], 0.0)
    # dense (masked log-sum-exp) and fast (Walsh-Hadamard) rates agree at moderate scales
    s = jnp.asarray(np.abs(np.random.default_rng(RNG_SEED).standard_normal((5, 32))) * 3.0)
    np.testing.assert_allclose(
        field(s, 3.0, method="dense"), field(s, 3.0, method="fast"),
        rtol=1e-9, atol=1e-300,
    )
    # the dense rate equals the definition lam = H^T softmax(H s / K) directly
    h = np.asarray(uf.sylvester_hadamard(32))
    q = np.asarray(jax.nn.softmax(s @ h / 32, axis=-1))
    lam = q @ h
    np.testing.assert_allclose(
        field(s, 3.0), np.asarray(s) ** 1.5 * (1 - lam), rtol=1e-9, atol=1e-14
    )


def test_hadamard_field_is_batched_and_depth_vmappable():
    s = jnp.asarray(np.abs(np.random.default_rng(RNG_SEED).standard_normal((4, 8))))
    depths = jnp.array([1.0, 1.5, 3.0, 7.0])
    batched = jax.jit(jax.vmap(uf.hadamard_field))(s, depths)
    one = jax.jit(uf.hadamard_field)  # depth traced: one program for the four depths
    for i in range(4):
        np.testing.assert_allclose(batched[i], one(s[i], float(depths[i])), rtol=1e-13)


def test_effective_rank_and_kl_closed_forms():
    # a rank-r matrix with equal singular values has effective rank exactly r
    u, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))
    for r in (1, 3, 5):
        m = u[:, :r] @ u[:, :r].T * 2.5
        np.testing.assert_allclose(uf.effective_rank(m), r, rtol=1e-10)
    # DNC: Zbar = x (I - 11^T/K) has K-1 equal singular values
    np.testing.assert_allclose(uf.effective_rank(3.0 * (np.eye(8) - 1 / 8)), 7.0, rtol=1e-10)
    # batched over leading axes
    batch = np.stack([np.eye(4), np.diag([1.0, 0, 0, 0])])
    np.testing.assert_allclose(uf.effective_rank(batch), [4.0, 1.0], rtol=1e-10)
    # from singular values: zeros count as 0 log 0 = 0; a nan (nothing saved) stays nan
    got = uf.effective_rank_from_singular_values(jnp.array([[2.0, 2.0, 0.0], [1.0, np.nan, 1.0],
                                                             [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(got[0], 2.0, rtol=1e-14)
    assert np.isnan(got[1]) and np.isnan(got[2])
    # KL(u || p): zero at DNC, and the closed form for p = (1/2, 1/4, 1/4)
    np.testing.assert_allclose(uf.kl_to_nc(jnp.array([9.0, 1.0, 1.0, 1.0])), 0.0, atol=1e-15)
    p = np.array([0.5, 0.25, 0.25])
    expected = np.sum(np.log((1 / 3) / p)) / 3
    np.testing.assert_allclose(uf.kl_to_nc(jnp.array([0.0, 2.0, 1.0, 1.0])), expected, rtol=1e-13)


def test_hadamard_departure_closed_form_and_the_init():
    # Zbar = O (diag(s) + E) O with E off-diagonal: the departure is ||E||_F / ||s|| exactly
    k = 8
    o = np.asarray(uf.sylvester_hadamard(k)) / np.sqrt(k)
    rng = np.random.default_rng(3)
    s = rng.uniform(0.5, 2.0, size=k)
    e = rng.normal(size=(k, k)) * 1e-3
    np.fill_diagonal(e, 0.0)
    zbar = o @ (np.diag(s) + e) @ o
    np.testing.assert_allclose(uf.hadamard_departure(zbar), np.linalg.norm(e) / np.linalg.norm(s),
                               rtol=1e-10)
    # batched over leading axes; the Hadamard form itself gives zero
    got = uf.hadamard_departure(np.stack([zbar, o @ np.diag(s) @ o]))
    assert got.shape == (2,) and got[1] < 1e-14
    # a Hadamard init is on the form, a Gaussian one is not
    model = uf.hadamard_init(KEY, jnp.asarray(s), 2, 12, 3)
    assert uf.hadamard_departure(model.class_mean_logits()) < 1e-13
    gauss = uf.gaussian_init(KEY, k, 2, 12, 3, 1.0)
    assert uf.hadamard_departure(gauss.class_mean_logits()) > 0.1


def test_nc_metrics_at_exact_collapse():
    # A Hadamard init with equal s on i >= 1 and n > 1 is exact neural collapse: NC1 = 0
    # (identical columns), NC2 = 0 (simplex ETF means), NC3 = 0 (classifier = means, balanced).
    k, n = 4, 3
    s = jnp.array([0.0, 2.0, 2.0, 2.0])
    m = uf.hadamard_init(KEY, s, n, 6, 1)
    metrics = uf.nc_metrics(m)
    assert abs(float(metrics["nc1"])) < 1e-12
    assert float(metrics["nc2"]) < 1e-12
    assert float(metrics["nc3"]) < 1e-12
    # margin of the DNC structure Zbar = (x/K)(K I - 11^T) ... with x = 2: gaps are exactly 2
    np.testing.assert_allclose(metrics["min_margin"], 2.0, rtol=1e-12)
    sq = float(m.sq_norm())
    np.testing.assert_allclose(metrics["normalized_margin"], 2.0 / sq, rtol=1e-12)
    np.testing.assert_allclose(
        metrics["geometric_margin"], 2.0 / np.linalg.norm(np.asarray(m.logits())), rtol=1e-12
    )
    # a random model is far from collapse
    r = uf.nc_metrics(uf.gaussian_init(KEY, k, n, 6, 1, 1.0))
    assert float(r["nc1"]) > 0.01 and float(r["nc2"]) > 0.01 and float(r["nc3"]) > 0.01


def test_etf_distance_of_the_etf_is_zero():
    k, n = 4, 2
    target = np.repeat(np.eye(k) - 1 / k, n, axis=1)
    assert float(uf.etf_distance(3.0 * target, n)) < 1e-28
    assert float(uf.etf_distance(np.ones((k, k * n)) + target, n)) > 0.1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: uf.hadamard_init(KEY, jnp.ones(6), 1, 8, 2), "power of two"),
        (lambda: uf.hadamard_init(KEY, jnp.ones(8), 1, 4, 2), "width must be >= K"),
        (lambda: uf.hadamard_init(KEY, jnp.ones(8), 1, 8, 0), "depth"),
        (lambda: uf.hadamard_init(KEY, jnp.ones((2, 8)), 1, 8, 1), "vector"),
        (lambda: uf.hadamard_init(KEY, -jnp.ones(8), 1, 8, 1), "non-negative"),
        (lambda: uf.gaussian_init(KEY, 4, 1, 8, 0, 1.0), "depth"),
        (lambda: uf.gaussian_init(KEY, 4, 1, 8, 2, -1.0), "scale"),
        (lambda: uf.solve_hadamard(jnp.ones(6), 2.0, 1.0), "power of two"),
        (lambda: uf.solve_hadamard(jnp.ones(8), 0.5, 1.0), "depth"),
        (lambda: uf.solve_hadamard(jnp.ones(8), 2.0, -1.0), "t1"),
        (lambda: uf.hadamard_field(jnp.ones(8), 0.5), "depth"),
        (lambda: uf.sylvester_hadamard(12), "power of two"),
        (lambda: uf.hadamard_departure(jnp.ones((6, 6))), "power of two"),
        (lambda: uf.hadamard_departure(jnp.ones((4, 8))), "class_mean_logits"),
        (lambda: uf.descend(uf.gaussian_init(KEY, 4, 1, 8, 1, 1.0), -0.1, 10), "lr"),
    ],
)
def test_bad_input_raises_value_error_naming_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_times_for_solve_flow():
    m = uf.gaussian_init(KEY, 4, 1, 8, 1, 1.0)
    with pytest.raises(ValueError, match="t1"):
        uf.solve_flow(m, -1.0)
    with pytest.raises(ValueError, match="time_change"):
        uf.solve_flow(m, 1.0, time_change="fast")
