"""Width (Theorem 4.5, theory §6.5): the initial logit velocity against an explicit formula, its
ETF alignment as width grows, `flow_until` against a scipy gradient flow and its events.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import ufmflow as uf

KEY = jax.random.PRNGKey(0)


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
