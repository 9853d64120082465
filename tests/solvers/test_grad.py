"""Reverse-mode gradients through `solve_flow` and `solve_hadamard` (issue 13) against central
finite differences of the same solves.

Tolerance: `jax.grad` gives the exact derivative of the *discrete* solution (checkpointed step
loop; save times by the implicit function theorem), except through the stiff solver's Krylov
`W`, which is held constant by default (`RosenbrockW.hold_w`, theory §2.6 "Differentiating
through W"); a central difference with step `h` differs
from it by `O(h^2)` truncation plus the solution's non-smooth part over `2h` (a change of the
accepted-step sequence moves a saved value by about the local error, `rtol`), i.e. about
`rtol / h`. At `rtol = 1e-12` and `h = 1e-5` that is ~1e-7 of the value's scale; the bounds below
are ~10x the errors measured (in the comments).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufmflow as uf

KEY = jax.random.PRNGKey(0)


def _central(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.fixture(scope="session")
def hadamard_case():
    s0 = jnp.array([0.3, 0.1, 0.2, 0.05])
    ts = jnp.array([0.0, 10.0, 100.0, 1e3])

    def value(s0, depth):
        sol = uf.solve_hadamard(s0, depth, 1e3, ts=ts, rtol=1e-12, atol=1e-15,
                                max_steps=20_000)
        # a saved log-loss and a saved singular value, mid-transition and at the end
        return sol.log_loss[2] + sol.s[-1, 2]

    # one compiled program gives both the value (for the finite differences) and the gradient
    value_and_grad = jax.jit(jax.value_and_grad(value, argnums=(0, 1)))
    f = lambda s0, depth: value_and_grad(s0, depth)[0]  # noqa: E731
    return s0, f, value_and_grad(s0, 3.0)[1]


def test_solve_hadamard_gradient_wrt_s0_matches_finite_differences(hadamard_case):
    s0, f, (g_s0, _) = hadamard_case
    h = 1e-5
    fd = np.array([_central(lambda x: f(s0.at[i].set(x), 3.0), s0[i], h) for i in range(4)])
    scale = np.max(np.abs(fd))
    assert scale > 1e-2  # the value really depends on s0
    np.testing.assert_allclose(np.asarray(g_s0), fd, rtol=0, atol=1e-6 * scale)


def test_solve_hadamard_gradient_wrt_depth_matches_finite_differences(hadamard_case):
    s0, f, (_, g_depth) = hadamard_case
    fd = _central(lambda d: f(s0, d), 3.0, 1e-5)
    assert abs(float(fd)) > 1e-2
    assert abs(float(g_depth) - float(fd)) < 1e-6 * abs(float(fd))


def _flow_scale_gradient(solver):
    """d(final log-loss)/d(init scale) of a Gaussian init; the default `atol` (rtol times the
    initial RMS entry) depends on the scale too and is differentiated along."""
    ts = jnp.array([0.0, 1.0, 10.0, 100.0])
    rtol = 1e-12 if solver == "tsit5" else 1e-10  # third order: 1e-12 costs ~5x the steps

    def value(scale):
        m = uf.gaussian_init(KEY, 4, 2, 6, 2, scale)
        return uf.solve_flow(m, 100.0, ts=ts, solver=solver, rtol=rtol).log_loss[-1]

    # one compiled program gives both the value (for the finite difference) and the gradient
    value_and_grad = jax.jit(jax.value_and_grad(value))
    g = float(value_and_grad(0.7)[1])
    fd = float(_central(lambda x: value_and_grad(x)[0], 0.7, 1e-5))
    assert abs(fd) > 1e-2
    return g, fd


def test_solve_flow_gradient_wrt_init_scale_matches_finite_differences():
    g, fd = _flow_scale_gradient("tsit5")
    assert abs(g - fd) < 1e-6 * abs(fd), (g, fd)  # measured 4.6e-8


@pytest.mark.slow
def test_solve_flow_gradient_through_rosenbrock_w():
    """Through the default stiff solver's steps (RODAS4, Krylov `W`): slow, each gradient
    compiles in about a minute. With `hold_w=False` the exact derivative of the computed
    solution; with `W` held (the default) RODAS4 carries the derivative at order about one in
    the directions the Krylov space lacks (its order needs `W = J`), so it is further from
    the differences of the computed solution (theory §2.6, "Differentiating through W")."""
    from ufmflow.solvers._flow import flow_solver

    g, fd = _flow_scale_gradient(dataclasses.replace(flow_solver("rosenbrock"), hold_w=False))
    assert abs(g - fd) < 1e-6 * abs(fd), (g, fd)  # measured 1.3e-7
    g, fd = _flow_scale_gradient("rosenbrock")
    assert abs(g - fd) < 2e-5 * abs(fd), (g, fd)  # measured 2.0e-6


def _valley_gradient(seed, t0, fd_step):
    """Case (ii) (K=8, n=1, width 8, depth 7, scale 0.1) from seed `seed`'s state at `t0` to
    `t0 + 100`: the log-loss's derivative along the slow part of a random direction (its
    components on the Hessian's eigenvectors above 1e5 removed: those relax at once and would
    make the differences measure the solver's transient) at rtol 1e-10, and its central
    difference with step `fd_step`. Also returns the number of those very stiff directions."""
    from jax.flatten_util import ravel_pytree

    model = uf.gaussian_init(jax.random.PRNGKey(seed), 8, 1, 8, 7, 0.1)
    start = uf.solve_flow(model, t0, ts=jnp.array([0.0, t0])).model
    x0, unravel = ravel_pytree(start)
    lam, vecs = np.linalg.eigh(np.asarray(jax.hessian(lambda x: unravel(x).loss())(x0)))
    stiff = vecs[:, lam > 1e5]
    v = np.asarray(jax.random.normal(jax.random.PRNGKey(3), x0.shape))
    v = jnp.asarray(v - stiff @ (stiff.T @ v))
    ts = jnp.array([0.0, 100.0])

    def value(a):
        sol = uf.solve_flow(unravel(x0 + a * v), 100.0, ts=ts, rtol=1e-10, stall_rescue=())
        return sol.log_loss[-1]

    value_and_grad = jax.jit(jax.value_and_grad(value))
    g = float(value_and_grad(0.0)[1])
    fd = float(_central(lambda a: value_and_grad(a)[0], 0.0, fd_step))
    return g, fd, stiff.shape[1]


@pytest.mark.slow  # ~70 s alone: a depth-7 solve to 1.2e6, a dense Hessian, a gradient's compile
def test_solve_flow_gradient_through_projected_stiff_steps():
    """Theory §2.6, "Differentiating through stiff steps": seed 0 from its state at t = 1.2e6
    (case (ii)'s valley: six Hessian eigenvalues of 5e10-2e11, every step projects them),
    `_valley_gradient`. Before session 26 this was -3.5e78 (at the default rtol; `nan`
    further on). Measured: -2.3792e-5 against central differences -2.3850e-5."""
    g, fd, stiff = _valley_gradient(0, 1.2e6, 1e-5)
    assert stiff >= 6  # the valley's very stiff directions
    assert abs(fd) > 1e-6
    assert abs(g - fd) < 2e-2 * abs(fd), (g, fd)


@pytest.mark.slow  # ~3.5 min beside another test process: a solve to 1.5e6, a Hessian
def test_solve_flow_gradient_where_the_arnoldi_basis_derivative_is_unbounded():
    """The same from seed 2's state at t = 1.5e6: with the Arnoldi basis differentiated inside
    `W` (before `RosenbrockW.hold_w`) the gradient was -7.7e114 at rtol 1e-10 (RODAS4 without
    the projection: 1.2e42). Measured with `W` held: 5.7401e-6 against central differences
    5.7385e-6 (step 1e-4; at 1e-5 and 1e-6 the differences are rounding-bound: 5.82e-6,
    7.4e-6)."""
    g, fd, _ = _valley_gradient(2, 1.5e6, 1e-4)
    assert abs(fd) > 1e-6
    assert abs(g - fd) < 1e-2 * abs(fd), (g, fd)
