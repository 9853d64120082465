"""The very stiff directions of a Krylov `W` and what the stiff solver does with them (theory
§2.6): `stiff_projection` puts points on their quasi-steady manifold by chord-Newton
iterations ("Projected stages"), and `projected_bs3` is the explicit step taken between them
where nothing else on the step is stiff ("Projected explicit steps"). Used by `RosenbrockW`
(`_rosenbrock`) and `rodas4_step` (`_rodas4`)."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl


class _Projection(eqx.Module):
    """`project(y) -> (y on the quasi-steady manifold, last Newton correction)` and
    `slow(r)`: `r` without its very stiff components (`stiff_projection`); `project_more`:
    `project` with `EXPLICIT_ITERS` iterations; `explicit`: whether this step may be the
    projected explicit one (`RosenbrockW.explicit_slow`)."""

    project: Callable
    slow: Callable
    project_more: Callable
    explicit: jax.Array


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
    values have `|lam| h < 1` (`stiff_projection`'s `explicit`). The two stages and the
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


# Bogacki-Shampine 3(2): stage rows (the last is the order-3 solution, FSAL), their times,
# and the error weights (order 3 minus the embedded order 2).
_BS3_A = [[0.5, 0.0, 0.0, 0.0], [0.0, 0.75, 0.0, 0.0], [2 / 9, 1 / 3, 4 / 9, 0.0]]
_BS3_C = [0.5, 0.75, 1.0]
_BS3_E = [2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8]


def stiff_projection(jac, h, kappa, iters, vf_flat, gamma):
    """The very stiff directions of a Krylov `W = V H V^T` on a step of size `h`, and the
    chord-Newton map onto their quasi-steady manifold (theory §2.6, "Projected stages").

    The directions are `Q_S = V Y_S`: eigenvectors `Y` of the symmetric part of `H` (the field
    of a gradient flow has a nearly symmetric Jacobian) whose eigenvalue `lam` has
    `-lam h gamma > kappa`, i.e. modes that relax within a tiny fraction of the step. A point
    `x` moves by `Q_S d`, `d = -(Y_S^T H Y_S)^{-1} Q_S^T f(x)`, `iters` times (the Jacobian
    frozen at the step's start). With no such direction the map is the identity and costs
    nothing (`lax.cond`)."""
    # The directions and the chord matrix are a numerical device, like `W` itself: no
    # derivative flows through them (eigh's derivative is singular at the repeated Ritz values
    # of a breakdown); it flows through the field and the basis.
    m = jax.lax.stop_gradient(jac.core)
    dtype = m.dtype
    lam, y = jnp.linalg.eigh(0.5 * (m + m.T))
    mask = ((-lam) * jax.lax.stop_gradient(h) * gamma > kappa).astype(dtype)
    core = y.T @ m @ y
    core = core * mask[:, None] * mask[None, :] + jnp.diag(1.0 - mask)
    lu = jsl.lu_factor(core)

    def stiff_coords(r):
        return mask * (y.T @ jac.ut(r))

    def projector(n):
        def newton(x):
            def iteration(_, carry):  # a loop, not unrolled: the field is compiled once
                x, _ = carry
                d = -jsl.lu_solve(lu, stiff_coords(vf_flat(x)))
                moved = jac.u(y @ (mask * d))
                return x + moved, moved

            return jax.lax.fori_loop(0, n, iteration, (x, jnp.zeros_like(x)))

        def project(x):  # nothing to do (and no field evaluations) without such directions
            return jax.lax.cond(jnp.any(mask > 0), newton, lambda x: (x, jnp.zeros_like(x)), x)

        return project

    # The projected explicit step is taken where every Ritz value is very stiff (projected)
    # or not stiff on this step, and at least one is projected (`RosenbrockW.explicit_slow`).
    band = (jnp.abs(lam) * jax.lax.stop_gradient(h) >= 1.0) & (mask == 0)
    explicit = jnp.any(mask > 0) & ~jnp.any(band)

    def slow(r):
        return r - jac.u(y @ stiff_coords(r))

    return _Projection(projector(iters), slow, projector(EXPLICIT_ITERS), explicit)
