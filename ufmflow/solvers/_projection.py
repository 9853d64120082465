"""The very stiff directions of a Krylov `W` and what the stiff solver does with them (theory
§2.6): `stiff_projection` puts points on their quasi-steady manifold by chord-Newton
iterations ("Projected stages"), and `projected_bs3` is the explicit step taken between them
where nothing else on the step is stiff ("Projected explicit steps"); `refound_bs3` is that
step with the stiff set re-found at every point it projects ("Re-found stiff sets"). Used by
`RosenbrockW` (`_rosenbrock`) and `rodas4_step` (`_rodas4`). Reverse mode differentiates them
by perturbation theory and the implicit function theorem, never through the Arnoldi basis
("Differentiating through stiff steps")."""

from __future__ import annotations

import functools
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from ._krylov import _arnoldi, _field_of, _krylov_w, _row_buckets, basis_dot, dot_basis, on_rows


class _Projection(eqx.Module):
    """`project(y) -> (y on the quasi-steady manifold, last Newton correction)` and
    `slow(r)`: `r` without its very stiff components (`stiff_projection`); `project_more`:
    `project` with at least `EXPLICIT_ITERS` iterations; `explicit`: whether this step may be the
    projected explicit one (`RosenbrockW.explicit_slow`)."""

    project: Callable
    slow: Callable
    project_more: Callable
    explicit: jax.Array


# A Ritz value of magnitude below `RITZ_NOISE * eps * max|lam|` is not counted in the band of
# the projected explicit step: a Jacobian-vector product with eigenvalues up to `max|lam|`
# carries rounding of `eps max|lam|` in every component, so the Krylov `H`'s small Ritz
# values are at that level whatever the field's slow eigenvalues are (theory §2.6, "Ritz
# values below the rounding of the stiffest", session 36).
RITZ_NOISE = 10.0

# Where `stiff_projection` is given `max_iters`, its chord-Newton iterations go on past the
# `iters` it must take, to at most `max_iters` in all, until a correction is below
# CHORD_CONVERGED times the first. In a second mode's escape (case (ii), theory §2.6, "Chord
# iterations to convergence", session 37) the first correction of a stage point can be undone
# by the second, and a step that stopped there left the state off the valley floor, where no
# step of any size was accepted for tens of tries.
CHORD_CONVERGED = 1e-4

# Chord-Newton iterations per projection in a projected explicit step, whose steps are 10-100
# times longer than the Rosenbrock method's there: with 2, a step of h = 3000 in case (ii)
# left an error 80 times the one with 6 (theory §2.6, "Projected explicit steps").
EXPLICIT_ITERS = 6


def projected_bs3(h, t0, x0, f0_flat, vf_flat, proj):
    """One step of the Bogacki-Shampine 3(2) pair in the directions that are not very stiff,
    every stage point and the end projected onto the very stiff directions' quasi-steady
    manifold (`proj.project_more`), the slopes without their very stiff components
    (`proj.slow`): `(x1, err, f(x1), moved)` like `rodas4_step` (theory §2.6, "Projected
    explicit steps"). It uses no `W` outside the projected directions, so it does not carry
    the Krylov `W`'s error there into the step; it is stable where those directions' Ritz
    values have `|lam| h < 1` (`stiff_projection`'s `explicit`, which also passes Ritz values
    below the rounding of the stiffest). The two stages and the
    end run in one loop, so the field and the projection are compiled once."""
    dtype = x0.dtype
    rows = jnp.asarray(_BS3_A, dtype)
    alpha = jnp.asarray(_BS3_C, dtype)

    def stage(i, carry):
        ks, _, _, _ = carry
        y, moved = proj.project_more(x0 + h * (rows[i] @ ks))
        fi = vf_flat(y, t0 + h * alpha[i])
        return ks.at[i + 1].set(proj.slow(fi)), fi, y, moved

    ks = jnp.zeros((4,) + x0.shape, dtype).at[0].set(proj.slow(f0_flat))
    ks, f1, x1, moved = jax.lax.fori_loop(
        0, 3, stage, (ks, jnp.zeros_like(x0), x0, jnp.zeros_like(x0)))
    return x1, h * (jnp.asarray(_BS3_E, dtype) @ ks), f1, moved


def refound_bs3(h, t0, x0, f0_flat, vf_flat, proj, *, dim, kappa, gamma, iters, stop_scale):
    """`projected_bs3` with the very stiff set re-found at every stage point and every Newton
    iterate (theory §2.6, "Re-found stiff sets"). At a point `y` the directions are the Ritz
    vectors of a fresh Krylov `W` of the field's Jacobian at `y` (`dim` directions from
    `f(y)`, `_arnoldi`, `stop_scale` as there) with `-lam h gamma > kappa`, and `y` moves by
    one Newton correction in them; after `iters - 1` such iterations the last set is found and
    used as `stiff_projection` uses a step's own (two chord iterations, differentiated by the
    implicit function theorem with the directions' turning at the point where they were
    found), and the stage's slope is the field there without its components in that set. The
    first slope is `proj.slow(f0)` (the step's own `W`, found at `x0`). Where a step carries
    the state along a curved stiff valley the directions turn within the step, and chord
    iterations with the start's directions leave the stage points off the valley floor (and
    the step behind or ahead along it); these do not. Costs `iters` Arnoldi processes per
    stage point."""
    dtype = x0.dtype
    rows = jnp.asarray(_BS3_A, dtype)
    alpha = jnp.asarray(_BS3_C, dtype)

    def found_at(x, t):
        field = functools.partial(lambda t, z: vf_flat(z, t), t)
        basis, hess = jax.lax.stop_gradient(
            _arnoldi(jax.linearize(field, x)[1], field(x), dim, stop_scale))
        return stiff_projection(_krylov_w(basis, hess), h, kappa, 2, field, gamma, x, basis)

    def settle(x, t):
        def newton(_, x):  # values only: the last set's projection carries the derivative
            return jax.lax.stop_gradient(found_at(x, t).project(x)[0])

        x = x + (jax.lax.fori_loop(0, iters - 1, newton, jax.lax.stop_gradient(x))
                 - jax.lax.stop_gradient(x))
        last = found_at(x, t)
        y, moved = last.project(x)
        fy = vf_flat(y, t)
        return y, moved, fy, last.slow(fy)

    def stage(i, carry):
        ks, _, _, _ = carry
        y, moved, fi, slow = settle(x0 + h * (rows[i] @ ks), t0 + h * alpha[i])
        return ks.at[i + 1].set(slow), fi, y, moved

    ks = jnp.zeros((4,) + x0.shape, dtype).at[0].set(proj.slow(f0_flat))
    ks, f1, x1, moved = jax.lax.fori_loop(
        0, 3, stage, (ks, jnp.zeros_like(x0), x0, jnp.zeros_like(x0)))
    return x1, h * (jnp.asarray(_BS3_E, dtype) @ ks), f1, moved


# Bogacki-Shampine 3(2): stage rows (the last is the order-3 solution, FSAL), their times,
# and the error weights (order 3 minus the embedded order 2).
_BS3_A = [[0.5, 0.0, 0.0, 0.0], [0.0, 0.75, 0.0, 0.0], [2 / 9, 1 / 3, 4 / 9, 0.0]]
_BS3_C = [0.5, 0.75, 1.0]
_BS3_E = [2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8]


def stiff_projection(jac, h, kappa, iters, vf_flat, gamma, x0, basis, growth=None,
                     max_iters=None):
    """The very stiff directions of a Krylov `W = V H V^T` on a step of size `h`, and the
    chord-Newton map onto their quasi-steady manifold (theory §2.6, "Projected stages").

    The directions are `Q_S = V Y_S`: eigenvectors `Y` of the symmetric part of `H` (the field
    of a gradient flow has a nearly symmetric Jacobian) whose eigenvalue `lam` has
    `-lam h gamma > kappa`, i.e. modes that relax within a tiny fraction of the step. A point
    `x` moves by `Q_S d`, `d = -(Y_S^T H Y_S)^{-1} Q_S^T f(x)`, `iters` times (the Jacobian
    frozen at the step's start); with `max_iters`, then on to at most `max_iters` iterations in
    all until a correction is below `CHORD_CONVERGED` times the first (`project_more`: at least
    `EXPLICIT_ITERS`, at most the larger of that and `max_iters`). With no such direction the
    map is the identity and costs nothing (`lax.cond`). `explicit` (whether the step may be a
    projected explicit one): some direction is projected and every other Ritz value has
    `|lam| h < 1` or lies below the rounding of the stiffest (`|lam| <= RITZ_NOISE eps
    max|lam|`, theory §2.6 "Ritz values below the rounding of the stiffest"); with `growth=c`
    (`RosenbrockW.explicit_growth`) a growing mode (`lam > 0`) counts against it only from
    `lam h >= c`.

    Reverse mode (theory §2.6, "Differentiating through stiff steps"): `jac` comes with its
    basis `V` (`basis`, rows) held constant; how the directions turn with the step's start
    `x0` enters by first-order perturbation theory instead,
    `dQ_S = (I - Q_S Q_S^T) (dJ Q_S) diag(1/lam_S)` (`_turning`), well-conditioned by the gap
    between the very stiff and the other eigenvalues where the Arnoldi basis's own derivative
    is not; the map itself is differentiated by the implicit function theorem (`_projected`)."""
    # The directions and the chord matrix are a numerical device, like `W` itself: no
    # derivative flows through them (eigh's derivative is singular at the repeated Ritz values
    # of a breakdown, and `RosenbrockW` passes a basis held constant); it flows through the
    # field.
    m = jax.lax.stop_gradient(jac.core)
    dtype = m.dtype
    dim = m.shape[0]
    rows = jnp.asarray(len(_row_buckets(dim)) - 1 if jac.rows is None else jac.rows)
    lam, y = _leading_eigh(0.5 * (m + m.T), rows)
    mask = ((-lam) * jax.lax.stop_gradient(h) * gamma > kappa).astype(dtype)
    core = y.T @ m @ y
    core = core * mask[:, None] * mask[None, :] + jnp.diag(1.0 - mask)
    lu = jsl.lu_factor(core)
    any_stiff = jnp.any(mask > 0)
    coeffs = y * mask[None, :]  # `Q_S = coeffs^T V`: the projected directions as rows
    inv = jnp.where(mask > 0, 1.0 / jnp.where(mask > 0, lam, 1.0), 0.0)
    # The field with every closed-over value an argument (`jax.closure_convert` hoists only
    # floating ones, and the field closes over integer tracers too).
    closed = jax.make_jaxpr(lambda x: vf_flat(x))(x0)
    fn, consts = functools.partial(_field_of, closed.jaxpr), closed.consts
    # zero, with the directions' turning `dQ_S` as its derivative (rows: Ritz indices)
    zero = jax.lax.cond(any_stiff, lambda: _turning(fn, coeffs, basis, inv, x0, *consts),
                        lambda: jnp.zeros((lam.shape[0],) + x0.shape, dtype))

    def stiff_coords(r):
        return mask * (y.T @ jac.ut(r))

    def projector(n):
        most = n if max_iters is None else max(n, max_iters)

        def newton(x):
            return _projected(fn, n, most, x, zero, lu, coeffs, mask, basis, rows, *consts)

        def project(x):  # nothing to do (and no field evaluations) without such directions
            return jax.lax.cond(any_stiff, newton, lambda x: (x, jnp.zeros_like(x)), x)

        return project

    # The projected explicit step is taken where every Ritz value is very stiff (projected)
    # or not stiff on this step, and at least one is projected (`RosenbrockW.explicit_slow`).
    hs = jax.lax.stop_gradient(h)
    # Counted: not projected, and above the rounding of the stiffest (`RITZ_NOISE`).
    counted = (mask == 0) & (jnp.abs(lam) > RITZ_NOISE * jnp.finfo(dtype).eps
                             * jnp.max(jnp.abs(lam)))
    band = (jnp.abs(lam) * hs >= 1.0) & counted
    if growth is not None:  # growing modes (lam > 0) are explicit's up to lam h < growth
        band = ((-lam * hs >= 1.0) | (lam * hs >= growth)) & counted
    explicit = any_stiff & ~jnp.any(band)

    def slow(r):
        return r - jac.u(y @ stiff_coords(r)) + _turned_slow(r, zero, coeffs, basis)

    return _Projection(projector(iters), slow, projector(EXPLICIT_ITERS), explicit)


def _leading_eigh(sym, rows):
    """`eigh` of the symmetric `m x m` matrix `sym` whose rows and columns past the first
    `_row_buckets(m)[rows]` are zero (a Krylov `H` of a space that stopped early): that
    leading block's eigenpairs, and the unit vectors with eigenvalue 0 for the rest."""
    dim = sym.shape[0]

    def leading(r):
        lam, y = jnp.linalg.eigh(sym[:r, :r])
        return (jnp.zeros((dim,), sym.dtype).at[:r].set(lam),
                jnp.eye(dim, dtype=sym.dtype).at[:r, :r].set(y))

    return on_rows(rows, dim, leading)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _projected(fn, n, most, x, zero, lu, coeffs, mask, basis, rows, *consts):
    """`n` chord-Newton iterations from `x` onto `Q_S^T f = 0` (`stiff_projection`, `Q_S`
    the rows of `coeffs^T V`, `coeffs = Y * mask`, `V = basis`, `f = fn(., *consts)`), then
    more, to `most` in all, while the last correction is above `CHORD_CONVERGED` times the
    first: `(x*, last correction)`.

    Differentiated by the implicit function theorem at `x*`, not through the iterations
    (theory §2.6, "Differentiating through stiff steps"): with `x* = x + Q_S c` and
    `Q_S^T f(x*) = 0`, `dx* = b + Q_S dc`, `b = dx + dQ_S^T c`,
    `dc = -(Q_S^T J Q_S)^{-1} (Q_S^T (J b + df/dconsts dconsts) + dQ_S f(x*))`, `J` the
    Jacobian at `x*` (`len(Q_S)` Jacobian-vector products, only when differentiated) and
    `dQ_S` the tangent of `zero` (`_turning`). The iterations' own derivative converges to it
    only as fast as they do, and with two iterations it left case (ii)'s gradients 30 times
    too large. The last correction, zero at the exact projection, gets a zero derivative."""
    def going(carry):
        _, moved, first, k = carry
        return (k < n) | ((k < most) & (jnp.linalg.norm(moved) > CHORD_CONVERGED * first))

    def iteration(carry):  # a loop, not unrolled: the field is compiled once
        x, _, first, k = carry
        d = -jsl.lu_solve(lu, coeffs.T @ basis_dot(basis, rows, fn(x, *consts)))
        moved = dot_basis(coeffs @ d, basis, rows)
        return x + moved, moved, jnp.where(k == 0, jnp.linalg.norm(moved), first), k + 1

    x, moved, _, _ = jax.lax.while_loop(
        going, iteration, (x, jnp.zeros_like(x), jnp.zeros((), x.dtype), jnp.zeros((), int)))
    return x, moved


@_projected.defjvp
def _projected_jvp(fn, n, most, primals, tangents):
    x, zero, lu, coeffs, mask, basis, rows, *consts = primals
    dx, dq, *_ = tangents
    d_consts = tuple(tangents[7:])
    x_star, moved = _projected(fn, n, most, *primals)
    q = coeffs.T @ basis  # rows: the projected directions (others zero)
    c = q @ (x_star - x)
    b = dx + c @ dq
    f_star, jb = jax.jvp(fn, (x_star, *consts), (b, *d_consts))
    jq = _jacobian_rows(fn, x_star, q, consts)
    core = (q @ jq.T) * mask[:, None] * mask[None, :] + jnp.diag(1.0 - mask)
    dc = -jnp.linalg.solve(core, mask * (q @ jb + dq @ f_star))
    return (x_star, moved), (b + dc @ q, jnp.zeros_like(moved))


@jax.custom_jvp
def _turned_slow(r, zero, coeffs, basis):
    """Zeros like `r`, whose derivative is what the directions' turning `dQ_S` (the tangent of
    `zero`, `_turning`) adds to that of `slow(r) = r - Q_S^T Q_S r` (rows `Q_S`):
    `-(dQ_S^T Q_S r + Q_S^T dQ_S r)`; costs nothing unless differentiated. (On the circle of
    `tests/solvers/test_rosenbrock.py` the projected explicit steps' gradient is 0.25% off
    without it.)"""
    return jnp.zeros_like(r)


@_turned_slow.defjvp
def _turned_slow_jvp(primals, tangents):
    r, zero, coeffs, basis = primals
    dq = tangents[1]
    q = coeffs.T @ basis
    return jnp.zeros_like(r), -(dq.T @ (q @ r) + q.T @ (dq @ r))


def _jacobian_rows(fn, x, q, consts):
    """`J(x) q_i` for every row `q_i` of `q`, `J` the Jacobian of `fn(., *consts)`."""
    return jax.vmap(lambda qi: jax.jvp(lambda z: fn(z, *consts), (x,), (qi,))[1])(q)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _turning(fn, coeffs, basis, inv, x0, *consts):
    """Zeros of shape `(m, P)` whose derivative is row `i` of `dQ_S`: how the very stiff Ritz
    direction `q_i = V y_i` (`coeffs` = `Y` with the other columns zero, `basis` = `V`) turns
    with the step's start `x0` and the field's closed-over arrays `consts` (`fn(x, *consts)`
    is the field): `dq_i = (I - Q_S Q_S^T) (dJ q_i) / lam_i` (`inv` = `1/lam_i`, zero for
    the others), first-order perturbation of an invariant subspace whose eigenvalues are far
    from the rest (`stiff_projection`). Costs nothing unless differentiated."""
    return jnp.zeros((coeffs.shape[1],) + x0.shape, x0.dtype)


@_turning.defjvp
def _turning_jvp(fn, primals, tangents):
    coeffs, basis, inv, x0, *consts = primals
    q = coeffs.T @ basis

    _, dg = jax.jvp(lambda x, *cs: _jacobian_rows(fn, x, q, cs), (x0, *consts),
                    tuple(tangents[3:]))
    dg = dg - (dg @ q.T) @ q
    return _turning(fn, *primals), inv[:, None] * dg
