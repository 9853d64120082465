"""A Rosenbrock-W solver with a low-rank Jacobian, for the stiff phase of deep models (theory §2).

After escaping the origin a deep UFM (e.g. L = 8) passes saddles and rank-one phases where a few
Hessian eigenvalues are orders of magnitude larger than the path speed; explicit solvers then
need millions of steps. A Rosenbrock-W method keeps its order for *any* Jacobian approximation
`W`, so a low-rank `W = U M U^T` costs only an `m x m` solve per stage (Woodbury identity). The
full flow's default `W` is the exact Jacobian compressed onto an `m`-dimensional Krylov space of
the step's first slope (`arnoldi_jacobian`, theory §2.6): `m` Jacobian-vector products per step,
nothing factorized beyond `m x m`.

Methods (`RosenbrockW(tableau=...)`):

- `"ros34pw2"` (the default of the class; Rang & Angermann 2005): 4 stages, order 3 for *any*
  `W` (a W-method), embedded order 2, L-stable for exact `W`. Stage equations (Hairer–Wanner
  form, `k_i` slopes):

      (I - h g W) k_i = f(y + h sum_j a_ij k_j) + h W sum_j g_ij k_j,   y1 = y + h sum b_i k_i.

- `"rodas4"` (Hairer & Wanner 1996; `solve_flow`'s default): 6 stages, order 4 with embedded
  order 3, both stiffly accurate and L-stable, in transformed variables (`_rodas4.rodas4_step`).
  It is a Rosenbrock method, not a W-method: order 4 needs `W = J` on the directions the step
  moves in. The Krylov `W` of the step's first slope is exact on that space, which in the
  full flow's escapes holds them (theory §2.6, "Order 4"): half the steps of ROS34PW2 there.

Dense output is the cubic Hermite interpolant on `(y0, f0, y1, f1)` (`f1` is reused as the next
step's first stage): diffrax's `ThirdOrderHermitePolynomialInterpolation`, so `RosenbrockW` is a
`diffrax.AbstractAdaptiveSolver` usable with `diffrax.diffeqsolve` and any step-size controller,
as well as with this package's driver (`_integrate.integrate`). In a stiff phase that
interpolant carries the stiff components' errors into the step, so the driver saves with
`step_with_substep` instead: a second step of the method, with the same `W`, from the step's
start to the save time (theory §2.4).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._complement import quiet_step_cap
from ._krylov import _arnoldi, _krylov_w, hold_krylov_w
from ._projection import EXPLICIT_ITERS, projected_bs3, refound_bs3, stiff_projection
from ._rodas4 import GAMMA as _R4_GAMMA
from ._rodas4 import rodas4_step
from ._ros34pw2 import GAMMA as _GAMMA
from ._ros34pw2 import ros34pw2_step

# The methods `RosenbrockW(tableau=...)` implements (module docstring).
TABLEAUS = ("ros34pw2", "rodas4")


class RosenbrockW(diffrax.AbstractAdaptiveSolver):
    """Rosenbrock(-W) solver (theory §2), ROS34PW2 or RODAS4 (`tableau`): a
    `diffrax.AbstractAdaptiveSolver` for ODE terms,
    usable with `diffrax.diffeqsolve` (with e.g. a `PIDController`) and with `integrate`.

    `jacobian(y) -> LowRankJacobian` gives the approximation `W = U M U^T` of the vector
    field's Jacobian in the flattened coordinates of `y` (`ravel_pytree` order). With
    `krylov_dim=m` instead, `W` is the exact Jacobian compressed onto the `m`-dimensional Krylov
    space of the step's first slope (`arnoldi_jacobian`; exact Jacobian-vector products, no
    user Jacobian needed). With neither, `W = 0` and the method is an explicit third-order
    Runge–Kutta method (still correct, not stiff-stable).

    `stiff_projection=kappa` (with `krylov_dim`): the Ritz directions of the Krylov `W` whose
    eigenvalue `lam` has `-lam h gamma > kappa` are *very stiff* on this step; every stage
    point and the step's end are put on their quasi-steady manifold `Q_S^T f(y) = 0` by
    `projection_iters` chord-Newton iterations, and the error estimate is taken in the other
    directions plus the last Newton correction (theory §2.6, "Projected stages"). As `h -> 0`
    no direction qualifies and the method is the plain W-method. `solve_flow`'s default.
    `projection_max_iters=n` (`solve_flow`: 8): the iterations go on past `projection_iters`,
    to at most `n`, until a correction is below `_projection.CHORD_CONVERGED` times the first
    (theory §2.6, "Chord iterations to convergence"); `None`: exactly
    `projection_iters`.

    `filter_error=True`: the error estimate is `(I - h gamma W)^{-1}` times the embedded one
    (Shampine's filter), so that a stiff offset at the step's start, which the method damps,
    does not hold the estimate at a floor that no step size removes (theory §2.6, "Filtered
    error"). `solve_flow`'s default.

    `adaptive_dim=True` (with `krylov_dim`): the Arnoldi process stops at `MIN_KRYLOV_DIM`
    directions where `h gamma ||H||_F <= KRYLOV_STOP` (the Jacobian is not stiff on this step
    in the directions found so far), else builds all `krylov_dim` (theory §2.6, "Adaptive
    Krylov dimension"); a space of more than 32 directions also stops once 8 more directions
    add no stiff Ritz value (theory §2.6, "Stiff directions found"). `solve_flow`'s
    default.

    `explicit_slow=True` (with `stiff_projection`; `solve_flow`'s default): on a step where
    every Ritz value of the Krylov `W` is either very stiff (projected) or not stiff at all
    (`|lam| h < 1`, or below the stiffest's rounding, theory §2.6), the step is the projected
    explicit Bogacki-Shampine 3(2) pair (`_projection.projected_bs3`) instead of the
    Rosenbrock stages: the very stiff directions held on their quasi-steady manifold, the rest
    explicit, no `W` in them (theory §2.6, "Projected explicit steps"). Elsewhere the
    Rosenbrock method as without it.

    `refind=True` (with `explicit_slow`; opt-in): the projected explicit step re-finds its
    very stiff set at every stage point and every Newton iterate, from a fresh Krylov `W` at
    that point (`_projection.refound_bs3`), instead of holding the directions found at the
    step's start; the step qualifies, and the directions are projected, at
    `-lam h gamma > explicit_kappa` (default `stiff_projection`); with `explicit_growth=c`
    a growing mode (`lam > 0`) no longer keeps the step implicit while `lam h < c` (theory
    §2.6, "Re-found stiff sets"). Costs `EXPLICIT_ITERS` (six) Arnoldi processes per stage
    point; crosses a curved rank-one valley in far fewer steps, and is not faster elsewhere.

    `complement_dim=c` (with `krylov_dim`): where a step's own Krylov space found no
    stiffness (the adaptive dimension's quiet stop, `h gamma ||H||_F <= KRYLOV_STOP`), the
    Jacobian is also compressed onto `c` Arnoldi directions of the complement of that space
    (`_complement.complement_min_eigenvalue`, from a pseudo-random function of `f`), and the
    step is capped at `complement_limit / |lambda_min|` (default limit 1.0; RODAS4 with
    `W = 0` is stable to about 1.3): stiff directions the first slope does not excite, such as those
    transverse to an invariant subspace, are otherwise taken explicitly and multiply their
    rounding-level content by up to hundreds per step (theory §2.6, "Stiff directions the
    first slope does not excite"). The cap is applied by `_integrate.integrate` (the
    solver's state carries it); `diffrax.diffeqsolve` ignores it. `c` Jacobian-vector
    products per new `W`.

    `tableau="rodas4"` (`solve_flow`'s default): the order-4 Rosenbrock method RODAS4 instead
    of ROS34PW2 (module docstring; theory §2.6, "Order 4"). Its embedded method is L-stable,
    so its error estimate needs no filter and `filter_error` does nothing for it. It needs a
    `W` (`jacobian` or `krylov_dim`).

    `hold_w=True` (default; with `krylov_dim`): in differentiation the Krylov `W` is held
    constant and takes its derivative from the field's instead (`_krylov.hold_krylov_w`,
    theory §2.6 "Differentiating through W"): gradients are then a consistent approximation
    of the flow's, bounded where the Arnoldi basis's derivative is not (a stiff valley's
    gradient of 1e114 became right to 0.03%), but not the exact derivative of the computed
    solution: RODAS4, whose order needs `W = J`, carries the derivative in the directions
    the Krylov space lacks at order about one (2e-6 relative at rtol 1e-10 on
    `tests/solvers/test_grad.py`'s case; ROS34PW2, a W-method, keeps its order).
    `hold_w=False`: the exact derivative of the computed solution, Arnoldi basis included.
    The forward solve is the same bit for bit either way.

    ROS34PW2: order 3 (embedded order 2 for the error estimate); first-same-as-last: the solver state is
    the vector field at the current point, and with a Krylov `W` also the last `W` built, which
    a retry after a rejected step reuses (`after_rejection`, theory §2.6). Dense output: cubic
    Hermite on `(y0, f0, y1, f1)`
    (`diffrax.ThirdOrderHermitePolynomialInterpolation`, dense info `y0, y1, k0 = h f0,
    k1 = h f1`).
    """

    jacobian: Callable | None = None
    krylov_dim: int | None = eqx.field(static=True, default=None)
    stiff_projection: float | None = eqx.field(static=True, default=None)
    projection_iters: int = eqx.field(static=True, default=2)
    projection_max_iters: int | None = eqx.field(static=True, default=None)
    filter_error: bool = eqx.field(static=True, default=False)
    adaptive_dim: bool = eqx.field(static=True, default=False)
    tableau: str = eqx.field(static=True, default="ros34pw2")
    explicit_slow: bool = eqx.field(static=True, default=False)
    hold_w: bool = eqx.field(static=True, default=True)
    refind: bool = eqx.field(static=True, default=False)
    explicit_kappa: float | None = eqx.field(static=True, default=None)
    explicit_growth: float | None = eqx.field(static=True, default=None)
    complement_dim: int | None = eqx.field(static=True, default=None)
    complement_limit: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if self.tableau not in TABLEAUS:
            raise ValueError(f"tableau must be one of {TABLEAUS}, got {self.tableau!r}.")
        if self.tableau == "rodas4" and self.jacobian is None and self.krylov_dim is None:
            raise ValueError("tableau='rodas4' is a Rosenbrock method: it needs a W; pass "
                             "krylov_dim or jacobian.")
        if self.jacobian is not None and self.krylov_dim is not None:
            raise ValueError("RosenbrockW takes a jacobian or a krylov_dim, not both; pass one.")
        if self.krylov_dim is not None and self.krylov_dim < 1:
            raise ValueError(f"krylov_dim must be >= 1, got {self.krylov_dim}.")
        if self.stiff_projection is not None:
            if self.krylov_dim is None:
                raise ValueError("stiff_projection needs the Krylov W (its Ritz directions); "
                                 "pass krylov_dim too.")
            if not self.stiff_projection > 0:
                raise ValueError(f"stiff_projection must be > 0, got {self.stiff_projection}.")
        if self.explicit_slow and self.stiff_projection is None:
            raise ValueError("explicit_slow steps between projected directions; pass "
                             "stiff_projection too.")
        if self.adaptive_dim and self.krylov_dim is None:
            raise ValueError("adaptive_dim needs the Krylov W (it stops the Arnoldi process); "
                             "pass krylov_dim too.")
        if self.refind and not self.explicit_slow:
            raise ValueError("refind re-finds the stiff set in the projected explicit steps; "
                             "pass explicit_slow=True too.")
        for name in ("explicit_kappa", "explicit_growth"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}.")
        if (self.explicit_kappa is not None or self.explicit_growth is not None) \
                and not self.refind:
            raise ValueError("explicit_kappa and explicit_growth set the re-found explicit "
                             "steps; pass refind=True too.")
        if self.complement_dim is not None:
            if self.krylov_dim is None:
                raise ValueError("complement_dim probes the complement of the Krylov W's "
                                 "space; pass krylov_dim too.")
            if self.complement_dim < 1:
                raise ValueError(f"complement_dim must be >= 1, got {self.complement_dim}.")
        if not self.complement_limit > 0:
            raise ValueError(f"complement_limit must be > 0, got {self.complement_limit}.")
        if self.projection_iters < 1:
            raise ValueError(f"projection_iters must be >= 1, got {self.projection_iters}.")
        if self.projection_max_iters is not None \
                and self.projection_max_iters < self.projection_iters:
            raise ValueError(f"projection_max_iters ({self.projection_max_iters}) must be >= "
                             f"projection_iters ({self.projection_iters}); raise it or pass "
                             "None for exactly projection_iters iterations.")

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., diffrax.ThirdOrderHermitePolynomialInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation
    )

    def order(self, terms):
        return 4 if self.tableau == "rodas4" else 3

    @property
    def gamma(self) -> float:
        """The method's diagonal coefficient: every stage solves with `I - h gamma W`."""
        return _R4_GAMMA if self.tableau == "rodas4" else _GAMMA

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def init(self, terms, t0, t1, y0, args):
        f0 = terms.vf(t0, y0, args)
        if self.krylov_dim is None:
            return f0
        x0 = ravel_pytree(y0)[0]
        dim = min(self.krylov_dim, x0.shape[0])
        cap = None if self.complement_dim is None else jnp.full((), jnp.inf, x0.dtype)
        return _KrylovState(f0, jnp.zeros((dim, x0.shape[0]), x0.dtype),
                            jnp.zeros((dim, dim), x0.dtype),
                            jnp.full((), jnp.nan, jnp.result_type(t0)), cap)

    def after_rejection(self, state, attempted):
        """The solver state for the retry from the same point after a step that returned
        `attempted` was rejected: `state`'s field, and the Krylov `W` the attempt built at this
        point, so the retry with a smaller step runs no new Arnoldi process (its `W` would be
        the same, bit for bit; theory §2.6, "Rejected steps keep W"). Called by
        `_integrate.integrate`; `diffrax.diffeqsolve` returns to `state` instead, and the retry
        builds `W` again."""
        if self.krylov_dim is None:
            return state
        return _KrylovState(state.f0, attempted.basis, attempted.hess, attempted.t_built,
                            attempted.cap)

    def first_slope(self, state):
        """The field at the state's point (the next step's first slope)."""
        return state.f0 if self.krylov_dim is not None else state

    def with_first_slope(self, state, f0):
        """`state` with first slope `f0` and the same `W`: with the state after an accepted
        step and `f0` the field at that step's start, a `step` from its start reruns the
        method with the step's own `W` (no new Krylov space: `W` was built there), to any
        time inside it (`_integrate.integrate`'s saves; theory §2.4)."""
        if self.krylov_dim is None:
            return f0
        return _KrylovState(f0, state.basis, state.hess, state.t_built, state.cap)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        return self.step_with_substep(terms, t0, t1, y0, args, solver_state, made_jump)[:5]

    def step_with_substep(self, terms, t0, t1, y0, args, solver_state, made_jump):
        """`step`, and a function `substep(t)` that takes the step from `(t0, y0)` to any
        `t` in `[t0, t1]` instead (theory §2.4): the same method, the same `W` and first slope,
        so it costs three field evaluations and no new Krylov space. Its end is a state of
        the L-stable method, not of the Hermite dense output, so the stiff components stay
        damped: what the stiff solver saves."""
        krylov = self.krylov_dim is not None
        cached = solver_state if krylov else None
        f0 = cached.f0 if krylov else solver_state
        if made_jump is not False:  # known statically (`integrate` with a PIDController)
            f0 = jax.lax.cond(made_jump, lambda: terms.vf(t0, y0, args), lambda: f0)
        h = t1 - t0
        x0, unravel = ravel_pytree(y0)

        def vf_flat(x, t=t0):
            return ravel_pytree(terms.vf(t, unravel(x), args))[0]

        f0_flat = ravel_pytree(f0)[0]
        if self.jacobian is None and self.krylov_dim is None:  # W = 0: explicit RK3
            jac = None
        elif krylov:
            # Build W at this point unless the state's was built here (a retry after a
            # rejection, `after_rejection`).
            build = cached.t_built != t0
            if made_jump is not False:
                build = build | made_jump

            def built():
                jvp = jax.linearize(vf_flat, x0)[1]
                basis, hess = _arnoldi(jvp, f0_flat, cached.basis.shape[0],
                                       h * self.gamma if self.adaptive_dim else None)
                if self.complement_dim is None:
                    return basis, hess, None
                return basis, hess, quiet_step_cap(jvp, f0_flat, basis, hess, h, self.gamma,
                                                   self.complement_dim, self.complement_limit)

            basis, hess, cap = jax.lax.cond(build, built,
                                            lambda: (cached.basis, cached.hess, cached.cap))
            # W is a numerical device: held constant in reverse mode, with the derivative it
            # takes from the field's instead (`hold_krylov_w`, theory §2.6).
            jac = (hold_krylov_w(basis, hess, vf_flat, x0) if self.hold_w
                   else _krylov_w(basis, hess))
        else:
            jac = self.jacobian(y0)
        proj = None
        if jac is not None and self.stiff_projection is not None:
            # The projection's directions are a numerical device like its chord matrix: the
            # basis is held constant there in reverse mode (near a breakdown of the Arnoldi
            # process its derivative is unbounded, and the projected stages multiplied it up
            # to 1e78, theory §2.6 "Differentiating through stiff steps").
            held = jax.lax.stop_gradient((basis, hess))
            proj = stiff_projection(_krylov_w(*held), h, self.stiff_projection,
                                     self.projection_iters, vf_flat, self.gamma, x0, held[0],
                                     max_iters=self.projection_max_iters)
        if proj is not None and self.refind:
            # the explicit steps' own threshold (their stiff set is re-found at every point)
            kappa_e = (self.stiff_projection if self.explicit_kappa is None
                       else self.explicit_kappa)
            proj = (proj, stiff_projection(_krylov_w(*held), h, kappa_e, self.projection_iters,
                                           vf_flat, self.gamma, x0, held[0],
                                           growth=self.explicit_growth,
                                           max_iters=self.projection_max_iters))
            stop = h * self.gamma if self.adaptive_dim else None
            refound = dict(dim=basis.shape[0], kappa=kappa_e, gamma=self.gamma,
                           iters=EXPLICIT_ITERS, stop_scale=stop)
        else:
            refound = None
        x1, err, f1_flat, moved = self._method(h, t0, x0, f0_flat, vf_flat, jac, proj, refound)
        if refound is not None:
            err = jnp.where(proj[1].explicit, proj[1].slow(err), proj[0].slow(err)) + moved
        elif proj is not None:
            err = proj.slow(err) + moved
        y1 = unravel(x1)
        f1 = unravel(f1_flat)
        scale = lambda f: jax.tree_util.tree_map(lambda v: h * v, f)  # noqa: E731
        dense_info = dict(y0=y0, y1=y1, k0=scale(f0), k1=scale(f1))
        state1 = f1
        if krylov:
            state1 = _KrylovState(f1, basis, hess, jnp.asarray(t0, cached.t_built.dtype), cap)

        def substep(t):
            return unravel(self._method(t - t0, t0, x0, f0_flat, vf_flat, jac, proj,
                                        refound)[0])

        return y1, unravel(err), dense_info, state1, diffrax.RESULTS.successful, substep


    def _method(self, h, t0, x0, f0_flat, vf_flat, jac, proj, refound=None):
        """One step of the tableau's stages from `x0`: `(x1, err, f(x1), moved)`, `err` the
        embedded estimate before the projection's (`_stages`, `rodas4_step`). With `refound`
        (`refind=True`), `proj` is the pair (the Rosenbrock stages' projection, the explicit
        steps' at `explicit_kappa`) and the explicit step is `refound_bs3`."""
        if refound is not None:
            proj, proj_e = proj
            return jax.lax.cond(
                proj_e.explicit,
                lambda: refound_bs3(h, t0, x0, f0_flat, vf_flat, proj_e, **refound),
                lambda: self._implicit(h, t0, x0, f0_flat, vf_flat, jac, proj))
        if self.explicit_slow and proj is not None:
            return jax.lax.cond(
                proj.explicit,
                lambda: projected_bs3(h, t0, x0, f0_flat, vf_flat, proj),
                lambda: self._implicit(h, t0, x0, f0_flat, vf_flat, jac, proj))
        return self._implicit(h, t0, x0, f0_flat, vf_flat, jac, proj)

    def _implicit(self, h, t0, x0, f0_flat, vf_flat, jac, proj):
        """`_method` without the projected explicit step: the tableau's Rosenbrock stages."""
        if self.tableau == "rodas4":  # its estimate is already (I - h gamma W)^{-1} f: no filter
            return rodas4_step(h, t0, x0, f0_flat, vf_flat, jac, proj)
        return ros34pw2_step(h, t0, x0, f0_flat, vf_flat, jac, proj, self.filter_error)

class _KrylovState(eqx.Module):
    """`RosenbrockW`'s state with a Krylov `W`: the field `f0` at the current point, and the
    `W = V H V^T` last built (`basis` V, `hess` H), at solver time `t_built`."""

    f0: object
    basis: jax.Array
    hess: jax.Array
    t_built: jax.Array
    cap: jax.Array | None = None  # the step cap of `complement_dim` (`_complement`), or None
