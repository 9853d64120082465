"""The stiffness the Krylov `W` does not see, and the step-size cap that keeps it stable
(theory §2.6, "Stiff directions the first slope does not excite").

A Krylov `W` is built from the step's first slope `f`, so it holds the stiff directions that
`f` excites. Directions with no component in `f` are taken explicitly: RODAS4 with `W = 0` is
stable on the negative real axis only for `h |lambda| <~ 1.3` (`|R(-1)| = 0.60`,
`|R(-1.5)| = 1.17`, `|R(-5)| = 71`). Where the flow keeps an invariant subspace (a Hadamard
init, theory §4.1) the directions transverse to it are such directions: their content is
rounding, `1e-16` of the state, and steps sized for the motion along the subspace multiply it
by tens to hundreds per step until the error estimate sees it at the tolerance's level, while
the exact flow never leaves the subspace. `complement_min_eigenvalue` compresses the Jacobian
onto a few Arnoldi directions of the orthogonal complement of `W`'s space, started from a
pseudo-random function of the first slope; `step_cap` turns its most negative eigenvalue into the largest
stable step, and `capped` applies it to the step-size controller's decision
(`_integrate.integrate`, `_substep_saves`). `RosenbrockW(complement_dim=...)` caps only steps
whose own Krylov space found no stiffness (`h gamma ||H||_F <= KRYLOV_STOP`, the adaptive
dimension's quiet stop): where it did, the step is already a stiff step and the stiff
directions its first slope excites are in `W`."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ._krylov import KRYLOV_STOP, _arnoldi, _filled_bucket, basis_dot, dot_basis

# A step longer than REJECT_FACTOR times the cap is rejected; shorter ones are kept and the
# next step is capped. `|R(-1.5)| = 1.17` for RODAS4 with `W = 0`: at most a mild growth.
REJECT_FACTOR = 1.5


def complement_min_eigenvalue(jvp: Callable, f0, basis, hess, dim: int):
    """The most negative eigenvalue of the symmetric part of the Jacobian (`jvp(v) = J v`)
    compressed onto `dim` Arnoldi directions of the orthogonal complement of the Krylov
    basis's rows (`basis`, `hess` from `_krylov._arnoldi`: orthonormal rows, then zero rows;
    only the filled ones are read), started from a pseudo-random function of the first slope
    `f0` (`_start`); 0 where no eigenvalue is negative. Costs `dim` Jacobian-vector products
    and `2 dim` passes over the filled rows. Held constant in differentiation (a numerical
    device, like `W`)."""
    basis, hess = jax.lax.stop_gradient((basis, hess))
    rows = _filled_bucket(hess)

    def proj(v):
        return v - dot_basis(basis_dot(basis, rows, v), basis, rows)

    start = proj(_start(jax.lax.stop_gradient(f0)))
    _, small = _arnoldi(lambda v: proj(jvp(v)), start, dim)
    lam = jnp.linalg.eigvalsh(0.5 * (small + small.T))
    return jax.lax.stop_gradient(jnp.minimum(lam[0], 0.0))


def _start(f0):
    """The probe's start: a pseudo-random function of the first slope `f0`, entry by entry
    (the fractional part of `7919 f0 / max|f0|`, shifted to `[-0.5, 0.5)`), and 0 where `f0` is
    0. It does not depend on where an entry sits in the state, and it is 0 on parameters the
    field leaves alone, so frozen identity layers (`pad_depth`, theory §2.9) change neither
    the probe's Krylov space nor its eigenvalue; neither is it in the span of `f0` (the
    fractional part is not linear). A multiply and a floor per entry: a sine hash cost two
    Jacobian-vector products at P = 67,584 (1.95 ms against 1.03 ms)."""
    top = jnp.max(jnp.abs(f0))
    u = 7919.0 * f0 / jnp.where(top > 0, top, 1.0) + 0.31
    return jnp.where(f0 != 0, u - jnp.floor(u) - 0.5, 0.0)


def quiet_step_cap(jvp: Callable, f0, basis, hess, h, gamma, dim: int, limit):
    """The step cap of a new Krylov `W` (`RosenbrockW(complement_dim=dim)`): `step_cap` of
    `complement_min_eigenvalue` where the space stopped quietly (`h gamma ||H||_F <=
    KRYLOV_STOP`: no stiffness along it), `inf` elsewhere (a stiff step's first slope excites
    the stiff directions it has, and the error control sees what grows)."""
    quiet = h * gamma * jnp.sqrt(jnp.sum(hess**2)) <= KRYLOV_STOP
    return jax.lax.cond(
        quiet,
        lambda: step_cap(complement_min_eigenvalue(jvp, f0, basis, hess, dim), limit),
        lambda: jnp.full((), jnp.inf, basis.dtype))


def step_cap(lam_min, limit):
    """The largest step `h` with `h |lam_min| <= limit` (`inf` where `lam_min = 0`)."""
    neg = lam_min < 0
    return jnp.where(neg, limit / jnp.where(neg, -lam_min, 1.0), jnp.inf)


def capped(cap, t0, t1, keep, sig_new, sig_next_new):
    """The controller's decision `(keep, sig_new, sig_next_new)` for the attempted step
    `[t0, t1]` with the solver's step cap `cap` (`None`: unchanged): a step longer than
    `REJECT_FACTOR * cap` is rejected and retried at most `cap` long; every next step is at
    most `cap` long."""
    if cap is None:
        return keep, sig_new, sig_next_new
    over = (t1 - t0) > REJECT_FACTOR * cap
    proposed = jnp.minimum(sig_next_new - sig_new, cap)
    sig_new = jnp.where(over, t0, sig_new)
    return keep & ~over, sig_new, sig_new + proposed
