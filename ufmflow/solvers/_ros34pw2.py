"""ROS34PW2, the order-3 W-method of the stiff solver (theory §2.6; `RosenbrockW`'s default
tableau, `_rosenbrock`): the coefficients and one step's stages with a low-rank `W`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._krylov import resolve, w_stage, woodbury_lu

# ROS34PW2 coefficients (published tableau).
GAMMA = 4.3586652150845900e-01
_A = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [8.7173304301691801e-01, 0.0, 0.0, 0.0],
        [8.4457060015369423e-01, -1.1299064236484185e-01, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ]
)
_G = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [-8.7173304301691801e-01, 0.0, 0.0, 0.0],
        [-9.0338057013044082e-01, 5.4180672388095326e-02, 0.0, 0.0],
        [2.4212380706095346e-01, -1.2232505839045147e00, 5.4526025533510214e-01, 0.0],
    ]
)
_B = np.array([2.4212380706095346e-01, -1.2232505839045147e00, 1.5452602553351020e00, GAMMA])
_BHAT = np.array(
    [3.7810903145819369e-01, -9.6042292212423178e-02, 0.5, 2.1793326075422950e-01]
)
# Python floats (weakly typed) so a float32 state stays float32 under jax_enable_x64.
_A, _G, _B, _BHAT = (x.tolist() for x in (_A, _G, _B, _BHAT))


def ros34pw2_step(h, t0, x0, f0_flat, vf_flat, jac, proj=None, filter_error=False):
    """One ROS34PW2 step of size `h` from `x0` (first slope `f0_flat`) with `W = jac`
    (`None`: `W = 0`): `(x1, err, f1, moved)` like `_rodas4.rodas4_step`, `err` the difference
    from the embedded order-2 solution, passed through `(I - h gamma W)^{-1}` with
    `filter_error` (`_filtered`)."""
    x1, ks, f1_flat, moved = _stages(h, t0, x0, f0_flat, vf_flat, jac, with_f1=True, proj=proj)
    err = h * sum((_B[i] - _BHAT[i]) * ks[i] for i in range(4))
    if filter_error and jac is not None:
        err = _filtered(jac, h, err)
    return x1, err, f1_flat, moved


def _filtered(jac, h, r):
    """`(I - h gamma W)^{-1} r` (Woodbury, `W = U M U^T`): the error estimate with its stiff
    components damped as the method damps them (Shampine's filter; theory §2.6)."""
    a = h * GAMMA
    return resolve(jac, a, woodbury_lu(jac, a), r)


def _stages(h, t0, x0, f0_flat, vf_flat, jac, with_f1, proj=None):
    """The four stages of one ROS34PW2 step of size `h` from `x0` (first slope `f0_flat`),
    with `W = jac` (`None`: `W = 0`, explicit RK3): `(x1, ks, f1, moved)`, `f1 = f(x1)` when
    `with_f1` (the next step's first slope), else `None`. With `proj`
    (`_projection.stiff_projection`) every stage point and `x1` are projected before use, and
    `moved` is `x1`'s last Newton correction (zeros without `proj`)."""
    dtype = x0.dtype
    if jac is None:
        ks = [f0_flat]
        for i in range(1, 4):
            ks.append(vf_flat(x0 + h * sum(_A[i][j] * ks[j] for j in range(i)),
                              t0 + h * sum(_A[i])))
        x1 = x0 + h * sum(_B[i] * ks[i] for i in range(4))
        return x1, ks, vf_flat(x1, t0 + h) if with_f1 else None, jnp.zeros_like(x1)
    a = h * GAMMA
    m = jac.core
    lu = woodbury_lu(jac, a)
    # Each stage in the basis coordinates (`cs[j] = U^T k_j`), two passes over `U`:
    # rhs = f_i + h U M e,  e = sum_j g_ij cs[j];
    # k_i = rhs + a U (I - a M U^T U)^{-1} M U^T rhs   (Woodbury, W = U M U^T).
    # Stages 1-3 and the next step's first slope `f1 = f(y1)` run in one loop over the
    # tableau's rows (then `b`), so the field is compiled once for all four (not four times).
    rows = jnp.asarray(_A + [_B], dtype)
    g_rows = jnp.asarray(_G, dtype)

    def stage(i, fi, ks, cs):
        # rows j >= i of ks and cs are still zero
        k, c = w_stage(jac, h, a, lu, fi, g_rows[i] @ ks, g_rows[i] @ cs)
        return ks.at[i].set(k), cs.at[i].set(c)

    def point(i, ks):
        y = x0 + h * (rows[i] @ ks)
        if proj is None:
            return y, jnp.zeros_like(y)
        return proj.project(y)

    def later_stage(i, carry):
        ks, cs, _, _, _ = carry
        y, moved = point(i, ks)
        fi = vf_flat(y, t0 + h * jnp.sum(rows[i]))
        ks, cs = jax.lax.cond(i < 4, lambda: stage(jnp.minimum(i, 3), fi, ks, cs),
                              lambda: (ks, cs))
        return ks, cs, fi, y, moved

    # The end point is the loop's last row, also without `with_f1` (a sub-step at a save):
    # one field evaluation more there, and the field and the projection compiled once.
    zeros = (jnp.zeros((4,) + x0.shape, dtype), jnp.zeros((4, m.shape[0]), dtype))
    ks, _, f1_flat, x1, moved = jax.lax.fori_loop(
        1, 5, later_stage,
        (*stage(0, f0_flat, *zeros), jnp.zeros_like(x0), x0, jnp.zeros_like(x0)))
    return x1, ks, f1_flat if with_f1 else None, moved

