"""The band rule of the projected explicit step (`_projection.stiff_projection`'s `explicit`,
theory §2.6 "Ritz values below the rounding of the stiffest"): a slow Ritz value counts against
the explicit step only above the rounding of a product with the stiffest eigenvalue
(`RITZ_NOISE eps max|lam|`)."""

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
