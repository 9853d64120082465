"""`_projection.stiff_projection`: the band rule of the projected explicit step (its
`explicit`, theory §2.6 "Ritz values below the rounding of the stiffest"): a slow Ritz value
counts against the explicit step only above the rounding of a product with the stiffest
eigenvalue (`RITZ_NOISE eps max|lam|`); and its chord-Newton iterations, which with `max_iters`
go on to convergence (theory §2.6, "Chord iterations to convergence"), checked against the
closed-form iterates of a valley whose manifold is known."""

import jax.numpy as jnp
import numpy as np
import pytest

from ufmflow.solvers._krylov import _krylov_w
from ufmflow.solvers._projection import RITZ_NOISE, stiff_projection

GAMMA = 0.25


def _w(eigenvalues, seed=0):
    """A Krylov `W` over the whole (small) state whose `H` is symmetric with the given
    eigenvalues in a random orthonormal basis, the linear field `f(x) = H x` it belongs to, and
    a point."""
    n = len(eigenvalues)
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    hess = jnp.asarray(q @ np.diag(eigenvalues) @ q.T)
    basis = jnp.eye(n)
    return _krylov_w(basis, hess), (lambda x: hess @ x), jnp.asarray(rng.standard_normal(n)), basis


def _explicit(eigenvalues, h):
    jac, field, x0, basis = _w(eigenvalues)
    proj = stiff_projection(jac, h, 1e3, 2, field, GAMMA, x0, basis)
    return bool(proj.explicit)


@pytest.mark.parametrize("stiffest, explicit", [(-1e15, True), (-1e9, False)])
def test_slow_ritz_values_count_in_the_band_only_above_the_rounding_of_the_stiffest(
        stiffest, explicit):
    # Slow Ritz values of +-0.05, and a step of h = 1e3 (|lam| h = 50): under a stiffest of
    # 1e15 they are below its rounding (10 eps 1e15 = 2.2) and the step is the projected
    # explicit one; under a stiffest of 1e9 (floor 2.2e-6) they are the field's and keep it
    # implicit. Every stiff eigenvalue is projected at this h (-lam h gamma > 1e3).
    eigenvalues = [stiffest, 0.4 * stiffest, 0.1 * stiffest, -0.05, 0.05, 0.0]
    floor = RITZ_NOISE * np.finfo(np.float64).eps * abs(stiffest)
    assert bool(0.05 < floor) is explicit
    assert _explicit(eigenvalues, 1e3) is explicit
    # a step short enough that the slow pair is not stiff is explicit either way
    assert _explicit(eigenvalues, 10.0)


LAM = 1e8  # the stiff curvature of `_valley`


def _valley():
    """A gradient field `f = -grad E` on the plane, `E = LAM (s^2/2 + s^4/4) + 0.05 r^2` in the
    rotated coordinates `s = (u - v)/sqrt 2` (very stiff) and `r = (u + v)/sqrt 2` (slow): its
    quasi-steady manifold is the line `s = 0`. From a start `x0` on it the Jacobian is
    `-LAM` along `s`, so a chord iteration frozen there takes `s` to `-s^3`: from `s = 0.3`,
    `-0.3^3`, `0.3^9 = 1.9683e-5`, `-0.3^27 = -7.6e-15`."""
    rot = jnp.asarray([[1.0, -1.0], [1.0, 1.0]]) / jnp.sqrt(2.0)  # rows: s, r

    def field(x):
        s, r = rot @ x
        return -(rot.T @ jnp.stack([LAM * (s + s**3), 0.1 * r]))

    x0 = rot.T @ jnp.asarray([0.0, 1.0])
    jacobian = -(rot.T @ jnp.diag(jnp.asarray([LAM, 0.1])) @ rot)
    basis = jnp.eye(2)
    return _krylov_w(basis, jacobian), field, x0, basis, rot


@pytest.mark.parametrize("max_iters, off", [(None, 0.3**9), (8, 0.0)])
def test_chord_iterations_go_on_to_convergence_with_max_iters(max_iters, off):
    # Two iterations (`max_iters=None`) leave the point 0.3^9 off the manifold `s = 0` (a
    # residual of 2e3 in the field); with `max_iters` the iterations go on while they still
    # converge, and the third lands on it to rounding (its correction, 0.3^9, is 6e-5 of the
    # first, 0.3 + 0.3^3: below `CHORD_CONVERGED`, so it is the last; the second's is 0.08 of
    # it). The slow coordinate never moves.
    jac, field, x0, basis, rot = _valley()
    proj = stiff_projection(jac, 1.0, 1e3, 2, field, GAMMA, x0, basis, max_iters=max_iters)
    y = rot.T @ jnp.asarray([0.3, 2.0])
    x, moved = proj.project(y)
    s, r = np.asarray(rot @ x)
    assert abs(s - off) <= 1e-12 + 1e-9 * off
    assert abs(r - 2.0) <= 1e-15
    # the last correction is what the step's error estimate sees: 0.3^3 + 0.3^9 after two
    # iterations, 0.3^9 (+ 7.6e-15) after the third
    last = 0.3**3 + 0.3**9 if off else 0.3**9
    assert np.linalg.norm(np.asarray(moved)) == pytest.approx(last, rel=1e-9)
