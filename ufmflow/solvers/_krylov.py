"""The Krylov `W` of the stiff solver (theory §2.6): the vector field's Jacobian compressed onto
the Krylov space of a step's first slope by Arnoldi's process, matrix-free (exact
Jacobian-vector products), as a low-rank `W = U M U^T` that `RosenbrockW` solves with by the
Woodbury identity."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp


class LowRankJacobian(eqx.Module):
    """`W = U M U^T` in flattened state coordinates, with `U` given matrix-free.

    - `u(v)`: `U v` for `v` of shape `(m,)` -> shape `(P,)`;
    - `ut(r)`: `U^T r` for `r` of shape `(P,)` -> shape `(m,)`;
    - `gram`: `U^T U`, shape `(m, m)`; `core`: `M`, shape `(m, m)`.
    """

    u: Callable
    ut: Callable
    gram: jax.Array
    core: jax.Array

    @classmethod
    def from_matrices(cls, u, m):
        return cls(lambda v: u @ v, lambda r: u.T @ r, u.T @ u, m)


# The Arnoldi basis is projected against in this many blocks of rows (`arnoldi_jacobian`):
# measured at width 32, depth 8 (P = 7681), dim 16, one Jacobian compression: 5.7 ms with every
# row, 5.3 ms with 4 blocks, 4.9 ms with 8 (min of 30; theory §2.6).
_ORTH_BLOCKS = 8


def arnoldi_jacobian(jvp: Callable, start, dim: int) -> LowRankJacobian:
    """`W = V H V^T`: the Jacobian `J` (given by `jvp(v) = J v`) compressed onto the Krylov
    space `span{f, J f, .., J^(dim-1) f}` of `start = f` (theory §2.6), `H = V^T J V` the
    Arnoldi (Hessenberg) matrix.

    Arnoldi with two passes of classical Gram-Schmidt: column `i < dim - 1` of `H` is the sum
    of both passes' coefficients and the norm of what remains (`J v_i = V H[:, i]` to rounding),
    the last column is `V^T J v_(dim-1)` (both passes' coefficients). No `(dim, P)` array of
    images is kept: the basis is the only large array (`dim` rows), read four times per
    Arnoldi step, and only as far as its filled rows: step `i` projects against the first
    multiple of `ceil(dim / _ORTH_BLOCKS)` rows above `i` (a `lax.switch` over static row
    counts), about half the work of projecting against every row, the zero rows included. At
    a breakdown (an invariant subspace found) the remaining basis vectors are zero and
    `gram = V^T V` accounts for them. The extreme (stiffest) eigenvalues of `J` are the first
    that a Krylov space resolves, so a small `dim` captures the stiff directions the step
    excites. Costs `dim` Jacobian-vector products and `O(dim^2 P)` flops; nothing larger than
    `dim x dim` is factorized. A W-method keeps its order for any `W`, so rounding in the basis
    changes only how well `W` matches `J`, never the method's consistency.
    """
    return _krylov_w(*_arnoldi(jvp, start, dim))


def _arnoldi(jvp: Callable, start, dim: int):
    """`arnoldi_jacobian`'s basis `V` (`dim` rows) and Hessenberg matrix `H`."""
    size = start.shape[0]
    nrm = jnp.linalg.norm(start)
    v0 = jnp.where(nrm > 0, start / jnp.where(nrm > 0, nrm, 1.0), 0.0)
    basis = jnp.zeros((dim, size), start.dtype).at[0].set(v0)
    hess = jnp.zeros((dim, dim), start.dtype)

    block = -(-dim // _ORTH_BLOCKS)
    rows = sorted({min(dim, block * (b + 1)) for b in range(_ORTH_BLOCKS)})

    def project(r):
        def against_first_rows(basis, w):  # rows >= r are still zero at this step
            sub = basis[:r]
            coef = jnp.zeros((r,), start.dtype)
            for _ in range(2):
                c = sub @ w
                w = w - sub.T @ c
                coef = coef + c
            return jnp.zeros((dim,), start.dtype).at[:r].set(coef), w

        return against_first_rows

    def extend(i, carry):
        basis, hess = carry
        w = jvp(basis[i])
        scale = jnp.linalg.norm(w)
        # rows 0..i are filled: project against the first `rows[b] > i` of them
        coef, w = jax.lax.switch(jnp.minimum(i // block, len(rows) - 1),
                                 [project(r) for r in rows], basis, w)
        nw = jnp.linalg.norm(w)
        ok = nw > 1e-12 * scale
        hess = hess.at[:, i].set(coef.at[i + 1].set(jnp.where(ok, nw, 0.0)))
        return basis.at[i + 1].set(jnp.where(ok, w / jnp.where(ok, nw, 1.0), 0.0)), hess

    # The last step's new vector has no row to go to (dropped: out of bounds), only its
    # coefficients: column `dim - 1` of `H` is `V^T J v_(dim-1)`. One loop, so the
    # Jacobian-vector product is compiled once.
    return jax.lax.fori_loop(0, dim, extend, (basis, hess))


def _krylov_w(basis, hess) -> LowRankJacobian:
    return LowRankJacobian(lambda c: basis.T @ c, lambda r: basis @ r, basis @ basis.T, hess)
