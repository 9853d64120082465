"""The Krylov `W` of the stiff solver (theory §2.6): the vector field's Jacobian compressed onto
the Krylov space of a step's first slope by Arnoldi's process, matrix-free (exact
Jacobian-vector products), as a low-rank `W = U M U^T` that `RosenbrockW` solves with by the
Woodbury identity."""

from __future__ import annotations

import functools
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl


class LowRankJacobian(eqx.Module):
    """`W = U M U^T` in flattened state coordinates, with `U` given matrix-free.

    - `u(v)`: `U v` for `v` of shape `(m,)` -> shape `(P,)`;
    - `ut(r)`: `U^T r` for `r` of shape `(P,)` -> shape `(m,)`;
    - `gram`: `U^T U`, shape `(m, m)`; `core`: `M`, shape `(m, m)`;
    - `rows`: `None`, or, for a Krylov `W`, the index in `_row_buckets(m)` of the fewest rows
      of `U^T` that hold all its filled ones (`_filled_bucket`);
    - `held`: `None`, or, for a Krylov `W` held constant in differentiation (`hold_krylov_w`),
      `(basis, x0, consts)` with `field` (static) the vector field `field(x, *consts)`: then
      `resolve` and `w_stage` take their derivative with respect to the state from the field's
      (`_held_tangent`), never from the Arnoldi basis.
    """

    u: Callable
    ut: Callable
    gram: jax.Array
    core: jax.Array
    held: tuple | None = None
    rows: jax.Array | None = None
    field: Callable | None = eqx.field(static=True, default=None)

    @classmethod
    def from_matrices(cls, u, m):
        return cls(lambda v: u @ v, lambda r: u.T @ r, u.T @ u, m)


def woodbury_lu(jac: LowRankJacobian, a):
    """LU factors of the `m x m` matrix `I - a M U^T U`, for `resolve`."""
    m = jac.core
    return jsl.lu_factor(jnp.eye(m.shape[0], dtype=m.dtype) - a * (m @ jac.gram))


def resolve(jac: LowRankJacobian, a, lu, r):
    """`(I - a W)^{-1} r = r + a U (I - a M U^T U)^{-1} M U^T r` for `W = U M U^T` (Woodbury),
    `lu = woodbury_lu(jac, a)`: two passes over `U` and an `m x m` solve."""
    if jac.held is not None:
        basis, x0, consts = jac.held
        return _resolve_held(jac.field, a, r, lu, basis, jac.core, x0, *consts)
    return _resolve(jac, a, lu, r)


def _resolve(jac, a, lu, r):
    return r + a * jac.u(jsl.lu_solve(lu, jac.core @ jac.ut(r)))


def hold_krylov_w(basis, hess, vf_flat, x0) -> LowRankJacobian:
    """The Krylov `W = V H V^T` (`basis` V as rows, `hess` H) held constant in differentiation,
    with the derivative that `W` takes instead from the field's Jacobian `J` at `x0` (theory
    §2.6, "Differentiating through stiff steps"): `dW = dJ - (I - P) dJ (I - P)`, `P = V^T V`
    the projector onto the Krylov space, i.e. `dW z = (I - P) dJ (P z) + P dJ z`, with
    `dJ z` the field's second derivative along the state's tangent and `z`. Where the space
    is the whole state space this is `dJ`, the derivative of the exact Jacobian; elsewhere it
    keeps how `J` changes on the space and how the space's images turn out of it (the turning
    of stiff directions that a W held outright misses: the circle's gradient through a
    broken-down Krylov space was 1.82 instead of 0.75 with `W` held, theory §2.6), and never
    differentiates the Arnoldi basis, whose derivative near a breakdown or a near-degenerate
    Krylov space is unbounded (case (ii), seed 2: gradients of 1e114). Costs nothing unless
    differentiated: then two second-order Jacobian-vector products per `resolve`."""
    basis, hess = jax.lax.stop_gradient((basis, hess))
    closed = jax.make_jaxpr(lambda x: vf_flat(x))(x0)
    plain = _krylov_w(basis, hess)
    return LowRankJacobian(plain.u, plain.ut, plain.gram, plain.core,
                           held=(basis, x0, tuple(closed.consts)), rows=plain.rows,
                           field=functools.partial(_field_of, closed.jaxpr))


def _held_dw(fn, basis, x0, consts, dx0, dconsts, z):
    """`dW z = (I - P) dJ (P z) + P dJ z` (`hold_krylov_w`), `dJ` the derivative of the
    Jacobian of `fn(., *consts)` at `x0` along `(dx0, dconsts)`."""
    def dj(v):
        return jax.jvp(lambda x, *cs: jax.jvp(lambda y: fn(y, *cs), (x,), (v,))[1],
                       (x0, *consts), (dx0, *dconsts))[1]

    pz = basis.T @ (basis @ z)
    djpz, djz = jax.vmap(dj)(jnp.stack([pz, z]))
    return djpz - basis.T @ (basis @ djpz) + basis.T @ (basis @ djz)


def w_stage(jac: LowRankJacobian, h, a, lu, fi, e, ecoords):
    """A Rosenbrock stage `k = (I - a W)^{-1} (fi + h W e)` and its coordinates `U^T k`
    (`ecoords = U^T e`), in `U`'s coordinates: two passes over `U` (ROS34PW2's stages,
    `_ros34pw2._stages`). With `jac.held`, differentiated as `hold_krylov_w` says."""
    if jac.held is not None:
        basis, x0, consts = jac.held
        return _stage_held(jac.field, h, a, lu, fi, e, ecoords, basis, jac.core, x0, *consts)
    return _stage(jac, h, a, lu, fi, ecoords)


def _stage(jac, h, a, lu, fi, ecoords):
    m, gram = jac.core, jac.gram
    uf = jac.ut(fi)
    hme = h * (m @ ecoords)
    q = jsl.lu_solve(lu, m @ (uf + gram @ hme))
    coeff = hme + a * q
    return fi + jac.u(coeff), uf + gram @ coeff


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _stage_held(fn, h, a, lu, fi, e, ecoords, basis, core, x0, *consts):
    """`w_stage` with the held `W`: `dk = (I - a W)^{-1} (dfi + h W de + dh W e + da W k +
    dW (h e + a k))`."""
    return _stage(_krylov_w(basis, core), h, a, lu, fi, ecoords)


@_stage_held.defjvp
def _stage_held_jvp(fn, primals, tangents):
    h, a, lu, fi, e, ecoords, basis, core, x0, *consts = primals
    dh, da, _, dfi, de, _, _, _, dx0, *dconsts = tangents
    jac = _krylov_w(basis, core)
    k, c = _stage(jac, h, a, lu, fi, ecoords)

    def w(z):
        return jac.u(core @ jac.ut(z))

    dw = _held_dw(fn, basis, x0, consts, dx0, dconsts, h * e + a * k)
    dk = _resolve(jac, a, lu, dfi + w(h * de + dh * e + da * k) + dw)
    return (k, c), (dk, jac.ut(dk))


def _field_of(jaxpr, x, *consts):
    """The field `vf(x)` traced to `jaxpr`, with its closed-over values `consts` as arguments
    (`jax.closure_convert` hoists only floating ones, and the field closes over integer
    tracers too)."""
    return jax.core.eval_jaxpr(jaxpr, consts, x)[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _resolve_held(fn, a, r, lu, basis, core, x0, *consts):
    """`resolve` with the held `W = V M V^T` (`hold_krylov_w`): `k = (I - a W)^{-1} r`,
    `dk = (I - a W)^{-1} (dr + da W k + a dW k)`."""
    return _resolve(_krylov_w(basis, core), a, lu, r)


@_resolve_held.defjvp
def _resolve_held_jvp(fn, primals, tangents):
    a, r, lu, basis, core, x0, *consts = primals
    da, dr, _, _, _, dx0, *dconsts = tangents
    jac = _krylov_w(basis, core)
    k = _resolve(jac, a, lu, r)
    wk = jac.u(core @ jac.ut(k))
    dwk = _held_dw(fn, basis, x0, consts, dx0, dconsts, k)
    return k, _resolve(jac, a, lu, dr + da * wk + a * dwk)


# Adaptive Krylov dimension (`_arnoldi`'s `stop_scale`, theory §2.6): the process stops once
# it has at least MIN_KRYLOV_DIM vectors and `h gamma ||H||_F <= KRYLOV_STOP`.
MIN_KRYLOV_DIM = 4
KRYLOV_STOP = 0.3
# ... and, in spaces of more than 32 directions, at the first multiple of STIFF_CHUNK from 32
# on whose last STIFF_CHUNK directions added no stiff Ritz value (`h gamma |lambda| > 1`,
# symmetric part of H): theory §2.6, "Stiff directions found".
STIFF_CHUNK = 8
STIFF_CHUNK_FROM = 32

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


def _arnoldi(jvp: Callable, start, dim: int, stop_scale=None):
    """`arnoldi_jacobian`'s basis `V` (`dim` rows) and Hessenberg matrix `H`.

    `stop_scale = h gamma` (a step's size times the W-method's `gamma`): stop once the space
    has at least `MIN_KRYLOV_DIM` vectors and `h gamma ||H||_F <= KRYLOV_STOP`, i.e. the
    Jacobian is not stiff on this step in any direction the space has found, nor in the
    direction it would add next (`H`'s subdiagonal is in the norm); the remaining rows of `V`
    and columns of `H` stay zero (theory §2.6, "Adaptive Krylov dimension"). A space of
    `dim > STIFF_CHUNK_FROM` directions also stops at `j >= STIFF_CHUNK_FROM` directions (`j`
    a multiple of `STIFF_CHUNK`) when the symmetric part of `H`'s leading `j x j` block has no
    more eigenvalues with `h gamma |lambda| > 1` than that of `j - STIFF_CHUNK` (theory §2.6,
    "Stiff directions found"). The loop still runs `dim` times, the skipped iterations as a
    `lax.cond` that does nothing, so that it stays reverse-differentiable and its index stays
    unbatched under `vmap` (a `while_loop` that ended at the stop was measured, session 31:
    at `dim = 320`, `P = 81,920` a process that stopped at 33 rows took 317 ms, 148 ms at
    `dim = 128`, and the `while_loop` took grid row 41 from 8.4 s to 5.9 s; not kept,
    because under `vmap` its counter is batched and every branch of the projection's
    `lax.switch` would run)."""
    size = start.shape[0]
    nrm = _safe_norm(start)
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
                w = w - c @ sub  # (not sub.T @ c: XLA copies a transposed sub)
                coef = coef + c
            return jnp.zeros((dim,), start.dtype).at[:r].set(coef), w

        return against_first_rows

    def column(i, basis):
        """`J v_i` orthogonalized: the next basis row (zero at a breakdown) and `H[:, i]`."""
        w = jvp(basis[i])
        scale = _safe_norm(w)
        # rows 0..i are filled: project against the first `rows[b] > i` of them
        coef, w = jax.lax.switch(jnp.minimum(i // block, len(rows) - 1),
                                 [project(r) for r in rows], basis, w)
        nw = _safe_norm(w)
        ok = nw > 1e-12 * scale
        return (jnp.where(ok, w / jnp.where(ok, nw, 1.0), 0.0),
                coef.at[i + 1].set(jnp.where(ok, nw, 0.0)))

    def write(i, basis, hess, row, col):
        return basis.at[i + 1].set(row), hess.at[:, i].set(col)

    def extend(i, carry):
        return write(i, *carry, *column(i, carry[0]))

    # The last step's new vector has no row to go to (dropped: out of bounds), only its
    # coefficients: column `dim - 1` of `H` is `V^T J v_(dim-1)`. One loop, so the
    # Jacobian-vector product is compiled once.
    if stop_scale is None:
        return jax.lax.fori_loop(0, dim, extend, (basis, hess))

    def stiff_ritz_count(hess, j):
        """Eigenvalues of the symmetric part of `H[:j, :j]` with `h gamma |lambda| > 1`, from
        the smallest leading block of `_row_buckets(dim)` rows that holds it (the rest of it
        zero: zero eigenvalues, which do not count)."""
        lead = jnp.arange(dim) < j
        block = jnp.where(lead[:, None] & lead[None, :], hess, 0.0)
        sym = 0.5 * (block + block.T)

        def count(r):
            lam = jnp.linalg.eigvalsh(sym[:r, :r])
            return jnp.sum(stop_scale * jnp.abs(lam) > 1.0)

        return on_rows(_bucket_of(j, dim), dim, count)

    def extend_or_stop(i, carry):
        basis, hess, done, stiff = carry
        # Only the new row and column come out of the `cond`: the basis is written outside
        # it, in place (a `cond` that returned the basis would copy it at every iteration).
        nothing = (jnp.zeros_like(start), jnp.zeros((dim,), start.dtype))
        row, col = jax.lax.cond(done, lambda: nothing, lambda: column(i, basis))
        basis, hess = write(i, basis, hess, row, col)
        # Columns 0..i of H are filled (the rest are zero): ||H||_F bounds every Ritz value
        # and the residual of the Arnoldi relation.
        quiet = stop_scale * jnp.sqrt(jnp.sum(hess**2)) <= KRYLOV_STOP
        done = done | ((i + 1 >= MIN_KRYLOV_DIM) & quiet)
        if dim > STIFF_CHUNK_FROM:  # (static: smaller spaces compile none of this)
            j = i + 1
            check = ((j % STIFF_CHUNK == 0) & (j >= STIFF_CHUNK_FROM - STIFF_CHUNK)
                     & (j < dim) & ~done)
            count = jax.lax.cond(check, lambda: stiff_ritz_count(hess, j), lambda: stiff)
            done = done | (check & (j >= STIFF_CHUNK_FROM) & (count <= stiff))
            stiff = count
        return basis, hess, done, stiff

    basis, hess, _, _ = jax.lax.fori_loop(0, dim, extend_or_stop,
                                          (basis, hess, jnp.array(False), jnp.array(0)))
    return basis, hess


def _safe_norm(x):
    """`||x||`, with derivative 0 at `x = 0` (`jnp.linalg.norm`'s is `nan` there, and a `nan`
    cotangent survives a `where` that discards the value): zero vectors are a Krylov
    space's breakdown, and a zero first slope is an equilibrium."""
    sq = jnp.sum(x**2)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _row_buckets(dim: int) -> tuple[int, ...]:
    """The static row counts that products with a Krylov basis of `dim` rows read: the first
    `MIN_KRYLOV_DIM + 1` (an early stop on a step that is not stiff), all `dim`, and for
    `dim > STIFF_CHUNK_FROM` (spaces that stop where the stiff directions end) also
    `STIFF_CHUNK_FROM` and its doublings below `dim`. A read is then at most twice the filled
    rows. Few counts, because under `vmap` the index is batched and every branch runs
    (`lax.switch` becomes a select): at `dim = 320` the branches add up to 2.5 passes over the
    basis, where the earlier two-way choice (the first rows or all) was about one."""
    counts = {min(dim, MIN_KRYLOV_DIM + 1), dim}
    r = STIFF_CHUNK_FROM
    while dim > STIFF_CHUNK_FROM and r < dim:
        counts.add(r)
        r *= 2
    return tuple(sorted(counts))


def _bucket_of(filled, dim: int):
    """The index in `_row_buckets(dim)` of the fewest rows that hold `filled` rows."""
    return jnp.searchsorted(jnp.asarray(_row_buckets(dim)), filled).astype(jnp.int32)


def _filled_bucket(hess):
    """`_bucket_of` the filled rows of the Krylov basis whose Hessenberg matrix is `hess`:
    rows come first (the rest are zero after an early stop or a breakdown), and row `i + 1`
    is filled exactly where `H[i + 1, i] != 0` (`_arnoldi` writes a zero row and a zero
    subdiagonal entry together). From `H`, not from the basis: reading the basis's norms
    would be a pass over all its `dim x P` entries, however few are filled."""
    return _bucket_of(1 + jnp.sum(jnp.diagonal(hess, -1) != 0), hess.shape[0])


def on_rows(rows, dim: int, fn: Callable, *operands):
    """`fn(r, *operands)` with `r = _row_buckets(dim)[rows]` static (a `lax.switch`)."""
    return jax.lax.switch(rows, [functools.partial(fn, r) for r in _row_buckets(dim)],
                          *operands)


def basis_dot(basis, rows, x):
    """`V x` for the basis `V` (rows), reading only the first `_row_buckets(dim)[rows]` rows
    (the others are zero)."""
    dim = basis.shape[0]
    return on_rows(rows, dim, lambda r, x: jnp.zeros((dim,), x.dtype).at[:r].set(basis[:r] @ x),
                   x)


def dot_basis(c, basis, rows):
    """`V^T c` (`c @ V`), reading only the first `_row_buckets(dim)[rows]` rows of `V`."""
    return on_rows(rows, basis.shape[0], lambda r, c: c[:r] @ basis[:r], c)


def _krylov_w(basis, hess) -> LowRankJacobian:
    """`W = V H V^T`. Products with `V` read only as many of its rows as hold the filled ones
    (`basis_dot`, `dot_basis`: a `lax.switch` over the static counts `_row_buckets`, the
    filled count read off `H`), so a space that stopped early (`_arnoldi`'s `stop_scale`) or
    broke down costs about what it holds, not its largest dimension (session 31, grid row 41,
    K=64, n=4, width 256, depth 1, scale 0.5, warm, one core: 5.6 s at `m = 128`; at
    `m = K + N = 320` 13.5 s reading every row, 7.4-8.9 s with this, and 4.1 s at 128).
    `gram = V^T V` is taken as `diag(|v_i|^2)`: Arnoldi's two Gram-Schmidt passes leave the
    rows orthonormal to rounding (zero rows past a breakdown or an early stop), and the
    `m x m x P` product would cost more than the rest of a step's linear algebra (theory §2.6,
    "Adaptive Krylov dimension")."""
    dim = basis.shape[0]
    rows = _filled_bucket(hess)

    if dim > STIFF_CHUNK_FROM:
        sq = on_rows(rows, dim, lambda r: jnp.zeros((dim,), basis.dtype).at[:r].set(
            jnp.sum(basis[:r] ** 2, axis=1)))
    else:  # every row, as before session 31: a reduction over fewer rows rounds differently,
        # and case (ii)'s runs turn on rounding (grid row 6 ended `stalled` instead of ok)
        sq = jnp.sum(basis**2, axis=1)
    return LowRankJacobian(lambda c: dot_basis(c, basis, rows),
                           lambda x: basis_dot(basis, rows, x), jnp.diag(sq), hess, rows=rows)
