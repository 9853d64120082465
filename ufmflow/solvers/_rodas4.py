"""RODAS4, the full flow's Rosenbrock method (theory §2.6, "Order 4"): the coefficients and one
step's stages with a low-rank `W` (`RosenbrockW(tableau="rodas4")` in `_rosenbrock`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._krylov import resolve, woodbury_lu

# RODAS4 (Hairer & Wanner, Solving ODEs II, §IV.7; 6 stages, order 4, embedded order 3, both
# stiffly accurate), in their transformed variables `u_i = h v_i`:
#   (I - h g W) v_i = g (f(y + h sum_j a_ij v_j) + sum_j c_ij v_j),
#   y1 = y + h (sum_j a_6j v_j + v_6),   error h v_6   (theory §2.6, "Order 4").
# Row i of `_R4_A` holds stage i's `a_ij` (j < i); its last row is the step's end.
GAMMA = 0.25
_R4_ALPHA = [0.0, 0.386, 0.21, 0.63, 1.0, 1.0, 1.0]
_R4_A5 = [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950]
_R4_A = [
    [0.0] * 6,
    [1.544] + [0.0] * 5,
    [0.9466785280815826, 0.2557011698983284] + [0.0] * 4,
    [3.314825187068521, 2.896124015972201, 0.9986419139977817] + [0.0] * 3,
    _R4_A5 + [0.0, 0.0],
    _R4_A5 + [1.0, 0.0],
    _R4_A5 + [1.0, 1.0],
]
_R4_C = [
    [0.0] * 6,
    [-5.6688] + [0.0] * 5,
    [-2.430093356833875, -0.2063599157091915] + [0.0] * 4,
    [-0.1073529058151375, -9.594562251023355, -20.47028614809616] + [0.0] * 3,
    [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160, 0.0, 0.0],
    [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136,
     -6.058818238834054, 0.0],
]


def rodas4_step(h, t0, x0, f0_flat, vf_flat, jac, proj=None):
    """One RODAS4 step of size `h` from `x0` (first slope `f0_flat`) with `W = jac`:
    `(x1, err, f1, moved)`, `err = h v_6` the difference from the embedded order-3 solution,
    `f1 = f(x1)`. With `proj` every stage point and `x1` are projected before use (as in
    `_ros34pw2._stages`), and `moved` is `x1`'s last Newton correction. Each stage costs one field
    evaluation and two passes over `U` (`(I - a W)^{-1} r = r + a U (I - a M U^T U)^{-1} M U^T
    r`, Woodbury); the five later stages and `f(x1)` run in one loop, so the field is compiled
    once."""
    dtype = x0.dtype
    g = GAMMA
    a = h * g
    lu = woodbury_lu(jac, a)
    rows = jnp.asarray(_R4_A, dtype)
    crows = jnp.asarray(_R4_C, dtype)
    alpha = jnp.asarray(_R4_ALPHA, dtype)

    def slope(rhs):  # g (I - a W)^{-1} rhs
        return g * resolve(jac, a, lu, rhs)

    def later_stage(i, carry):
        vs, _, _, _ = carry
        y = x0 + h * (rows[i] @ vs)
        moved = jnp.zeros_like(y)
        if proj is not None:
            y, moved = proj.project(y)
        fi = vf_flat(y, t0 + h * alpha[i])
        vs = jax.lax.cond(i < 6, lambda: vs.at[jnp.minimum(i, 5)].set(
            slope(fi + crows[jnp.minimum(i, 5)] @ vs)), lambda: vs)
        return vs, fi, y, moved

    vs = jnp.zeros((6,) + x0.shape, dtype).at[0].set(slope(f0_flat))
    vs, f1_flat, x1, moved = jax.lax.fori_loop(
        1, 7, later_stage, (vs, jnp.zeros_like(x0), x0, jnp.zeros_like(x0)))
    return x1, h * vs[5], f1_flat, moved
