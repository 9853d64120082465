"""Gradient flow of the full deep UFM (theory §2): `solve_flow` and `solve_stacked`, the field of
the stacked state (theory §2.9), its error norm and solver (Rosenbrock-W with a Krylov W, theory
§2.6), and what every flow entry point shares (save grids, the default controller). The reduced
ODE is in `_reduced`."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ._checks import (
    check_controller,
    check_count,
    check_solver,
    check_times,
    check_tolerances,
)
from . import _progress
from ._integrate import integrate
from ._rescue import check_factors
from ._status import status_name
from ._time_change import FULL_FLOW_TIME_CHANGES, check_time_change, log_g_bounded
from ._time_change import log_g as time_change_log_g
from ..core._model import DeepUFM, log_loss_from_logits
from ._rosenbrock import RosenbrockW
from ._stacked import Layout, Stacked, stack_model

# Defaults of the full-GF solve (theory §2.6 says how they were chosen).
DEFAULT_RTOL = 1e-5  # session 38: was 1e-6 (theory §2.6, "The default tolerance")
KRYLOV_DIM = 16  # the smallest default Krylov dimension (`default_krylov_dim`)
# Ritz directions with -lambda h gamma above this are put on their quasi-steady manifold at
# every stage (`RosenbrockW.stiff_projection`, theory §2.6 "Projected stages").
STIFF_PROJECTION = 1e3
# A stalled solve goes back 50-100 accepted steps and tries again with rtol and atol divided by
# these factors in turn (`integrate(rescue=...)`, theory §2.7 "Stall rescue").
STALL_RESCUE = (10.0, 30.0, 100.0)


def default_save_times(t1, num_saves: int = 64, decades: float = 8.0) -> Float[Array, " S"]:
    """`0` followed by `num_saves - 1` log-spaced times from `t1 * 10^-decades` to `t1`."""
    if num_saves < 2:
        raise ValueError(f"num_saves must be >= 2 (t = 0 and t1), got {num_saves}.")
    t1 = jnp.asarray(t1, dtype=jnp.result_type(float))
    exponents = jnp.linspace(-decades, 0.0, num_saves - 1, dtype=t1.dtype)
    if num_saves == 2:
        exponents = jnp.zeros((1,), t1.dtype)
    logspaced = (t1 * 10.0**exponents).at[-1].set(t1)
    return jnp.concatenate([jnp.zeros((1,), t1.dtype), logspaced])


# The stiff solver's default controller gains (theory §2.4): proportional-integral control.
STIFF_PCOEFF, STIFF_ICOEFF = 0.2, 0.5


def _controller(rtol, atol, controller, norm=None, *, stiff=False):
    """The default step-size controller, `rtol`/`atol` as arrays so that changing them never
    recompiles: integral control on the scaled error, or with `stiff=True` (the
    Rosenbrock-W solver) proportional-integral control (`STIFF_PCOEFF`, `STIFF_ICOEFF`),
    whose damped step growth avoids most of the rejections that the stiff phases' error,
    growing much faster than `h^3` past a point, causes under integral control (theory §2.4)."""
    if controller is not None:
        return controller
    kwargs = {} if norm is None else dict(norm=norm)
    pcoeff, icoeff = (STIFF_PCOEFF, STIFF_ICOEFF) if stiff else (0.0, 1.0)
    return diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff, **kwargs)


class FlowSolution(eqx.Module):
    """What `solve_flow` / `descend` return. Saved fields have a leading axis over `ts`; entries
    past a failure are `nan`.

    - `ts`: GF times of the saves; `singular_values`: of the class-mean logits, `(S, K)`;
      `loss`, `log_loss`, `min_margin`, `param_norm` (`||theta||`), `balance_residual`
      (`max_l ||D_l(t) - D_l(0)||_F`, theory §2): `(S,)`.
    - `states`: the model at every save (a `DeepUFM` with a leading `S` axis) if requested.
    - `model`: the model at the last save time reached (`t1` when `status == 0`).
    - `status`: 0 ok, 1 max_steps, 2 nonfinite, 3 stalled (`status_name`).
    - `num_steps` (attempted, including rejected), `num_rejected`; `num_rescues`: how often a
      stalled solve went back to a checkpoint with a tighter tolerance (`solve_flow`, theory
      §2.7 "Stall rescue"; 0 for `descend`).
    """

    ts: Float[Array, " S"]
    singular_values: Float[Array, "S K"]
    loss: Float[Array, " S"]
    log_loss: Float[Array, " S"]
    min_margin: Float[Array, " S"]
    param_norm: Float[Array, " S"]
    balance_residual: Float[Array, " S"]
    model: DeepUFM
    status: Int[Array, ""]
    num_steps: Int[Array, ""]
    num_rejected: Int[Array, ""]
    num_rescues: Int[Array, ""]
    states: DeepUFM | None = None

    @property
    def ok(self) -> Array:
        return self.status == 0

    def status_name(self) -> str:
        return status_name(self.status)


def _measure_model(model: DeepUFM, reference: DeepUFM) -> dict:
    """`FlowSolution`'s saved measurements of a `DeepUFM` (for `descend`): the same function
    as the stacked solvers' (`_stacked.Layout.measure`)."""
    state, layout = stack_model(model)
    return layout.measure(state, stack_model(reference)[0])


def stacked_field(layout: Layout, time_change: str):
    """The time-changed GF field `d(theta, w)/dsigma` (theory §2) of a stacked state, with
    `w = log1p(t)`: `dtheta/dsigma = -g loss grad log loss`, `dw/dsigma = g / (1 + t)`, every
    factor formed in log space (`_time_change.log_g`). Frozen layers get an exact zero and are
    left out of the norms (theory §2.9)."""

    def vector_field(sigma, y, args):
        state, w = y
        if time_change == "bounded":
            z, pullback = jax.vjp(layout.logits, state)
            log_loss, grad_z = jax.value_and_grad(log_loss_from_logits)(z, layout.labels)
            (grad,) = pullback(grad_z)
            log_g = log_g_bounded(
                0.5 * jnp.log(layout.sq_norm(state)),
                log_loss,
                0.5 * jnp.log(jnp.sum(grad_z**2)),
                layout.log_gain(state),
                w,
            )
            coef = jnp.exp(log_g + log_loss)
            return jax.tree_util.tree_map(lambda x: -coef * x, grad), jnp.exp(log_g - w)
        log_loss, grad = jax.value_and_grad(layout.log_loss)(state)
        log_g = time_change_log_g(
            time_change,
            0.5 * jnp.log(layout.sq_norm(state)),
            log_loss,
            0.5 * jnp.log(layout.sq_norm(grad)),
        )
        coef = jnp.exp(log_g + log_loss)  # g * loss: dtheta/dsigma = -g loss grad(log loss)
        return jax.tree_util.tree_map(lambda x: -coef * x, grad), jnp.exp(log_g - w)

    return vector_field


def error_norm(layout: Layout):
    """RMS of the scaled error over the *active* parameters and the time coordinate: frozen
    layers (exact zero error) do not dilute it, so a padded model takes the unpadded model's
    steps."""

    def norm(ratio):
        state, w = ratio
        total = layout.sq_norm(state) + w**2
        return jnp.sqrt(total / (layout.size(state) + 1).astype(total.dtype))

    return norm


def default_krylov_dim(num_classes: int, per_class: int = 1) -> int:
    """The default Krylov dimension of the stiff solver's `W`: `max(KRYLOV_DIM, K + N)`, with
    `N = K n` the number of samples (`2 K` at `n = 1`). A small-init rank-one phase has up to
    `K + N - 1` stiff directions (the huge product reaches `K` logit directions through the
    last layer and `N` through the features), and the Krylov space must hold them all with
    room for the slow ones (theory §2.6, "How many Krylov dimensions", "K + N directions":
    K=16, n=4, width 64, depth 8, scale 0.5, seed 1007 to `t = 1e8`: 3027 attempted steps at
    `2 K`, 446 at `K + N`). A step builds fewer where it can: 4 directions where the Jacobian
    is not stiff on it, and above 32 it stops once 8 more add no stiff Ritz value
    (`RosenbrockW(adaptive_dim=True)`, theory §2.6)."""
    return max(KRYLOV_DIM, int(num_classes) * (1 + int(per_class)))


# The full flow's Rosenbrock method: RODAS4, order 4 (theory §2.6, "Order 4"); "ros34pw2" is
# the order-3 W-method that was the default before session 23.
TABLEAU = "rodas4"
# Steps whose Krylov W has only very stiff (projected) and non-stiff Ritz values are projected
# explicit steps (theory §2.6, "Projected explicit steps", session 25).
EXPLICIT_SLOW = True
# Steps whose Krylov space found no stiffness are capped to the stability of the stiff
# directions outside it, found by this many Arnoldi directions of its complement (theory §2.6,
# "Stiff directions the first slope does not excite", session 34).
COMPLEMENT_DIM = 4
# Chord-Newton iterations of the projected stages: at least two, then on to at most this many
# until they converge (`RosenbrockW(projection_max_iters=...)`, theory §2.6, "Chord iterations
# to convergence", session 37).
PROJECTION_MAX_ITERS = 8
# `solve_flow(refind=True)`: the explicit steps re-find their stiff set at every point, and
# qualify at -lam h gamma > REFIND_KAPPA (theory §2.6, "Re-found stiff sets", session 30).
REFIND_KAPPA = 2.5


def flow_solver(solver, krylov_dim: int = KRYLOV_DIM, refind: bool = False):
    """The diffrax solver for the full GF: `"rosenbrock"` becomes `RosenbrockW` with a Krylov
    `W` of dimension `krylov_dim` (exact Jacobian-vector products, theory §2.6) and the order-4
    method RODAS4 (`TABLEAU`, theory §2.6 "Order 4"); an instance is used as it is. The Krylov
    `W`'s very stiff Ritz directions are projected out of every stage (`STIFF_PROJECTION`,
    theory §2.6 "Projected stages") by chord-Newton iterations taken to convergence, at most
    `PROJECTION_MAX_ITERS` (theory §2.6, "Chord iterations to convergence"), the error estimate
    is one that has passed through `(I - h gamma W)^{-1}` (RODAS4's own; `filter_error` for
    ROS34PW2, theory §2.6 "Filtered error"), and a step on which the Jacobian is not stiff
    builds only a few Krylov directions (theory §2.6, "Adaptive Krylov dimension"); such a step
    is capped to the stability of the stiff directions outside its Krylov space
    (`COMPLEMENT_DIM` Arnoldi directions of the complement, theory §2.6 "Stiff directions the
    first slope does not excite"). `refind=True`: the explicit steps re-find their stiff set at
    every point, at `REFIND_KAPPA` (theory §2.6, "Re-found stiff sets"); only with
    `"rosenbrock"` (`ValueError` otherwise)."""
    if isinstance(solver, str):  # "rosenbrock" (check_solver maps the other names)
        return RosenbrockW(krylov_dim=krylov_dim, stiff_projection=STIFF_PROJECTION,
                           projection_max_iters=PROJECTION_MAX_ITERS,
                           filter_error=True, adaptive_dim=True, tableau=TABLEAU,
                           explicit_slow=EXPLICIT_SLOW, refind=refind,
                           explicit_kappa=REFIND_KAPPA if refind else None,
                           complement_dim=COMPLEMENT_DIM)
    if refind:
        raise ValueError("refind=True sets up the default solver ('rosenbrock'); with a solver "
                         "instance pass RosenbrockW(..., refind=True) itself.")
    return solver


def default_atol(model: DeepUFM, rtol):
    """`rtol` times the RMS entry of the parameters (error control relative to the model's
    scale rather than to entries that happen to be near zero)."""
    state, layout = stack_model(model)
    return _default_atol(state, layout, rtol)


def _default_atol(state: Stacked, layout: Layout, rtol):
    size = layout.size(state).astype(state.h.dtype)
    return rtol * jnp.sqrt(layout.sq_norm(state) / size)


def solve_stacked(state, layout, ts, rtol, atol, controller=None, time_change="bounded",
                  solver="rosenbrock", krylov_dim=None, max_steps=10_000,
                  save_states=False, progress=False, stall_rescue=STALL_RESCUE, refind=False):
    """`solve_flow` on a stacked state (`_stacked`), unchecked and unjitted: what the sweep
    calls under its own `vmap`/`jit` with the depth as data. `atol = nan` takes the default;
    `krylov_dim=None` `default_krylov_dim(K, n)`; `progress=True` reports to the bar that
    `_progress.bar` opened."""
    atol = jnp.where(jnp.isnan(atol), _default_atol(state, layout, rtol), atol)
    if krylov_dim is None:
        krylov_dim = default_krylov_dim(layout.num_classes, layout.per_class)
    solver = flow_solver(solver, krylov_dim, refind)
    res = integrate(
        stacked_field(layout, time_change),
        state,
        jnp.log1p(ts),
        lambda x: layout.measure(x, state),
        solver=solver,
        controller=_controller(rtol, atol, controller, error_norm(layout),
                               stiff=isinstance(solver, RosenbrockW)),
        max_steps=max_steps,
        save_states=save_states,
        # The stiff solver saves the end of a sub-step of its own method, never its Hermite
        # dense output (theory §2.4): interpolated states carry the stiff components' errors.
        substep_saves=isinstance(solver, RosenbrockW),
        rescue=stall_rescue,
        progress=_progress.report if progress else None,
        # Gradient flow never raises the loss: a step that does is wrong whatever its error
        # estimate says (theory §2.6, "Steps that raise the loss").
        descent=layout.log_loss if isinstance(solver, RosenbrockW) else None,
    )
    saved = dict(res.saved)
    states = saved.pop("state", None)
    return FlowSolution(
        ts=ts,
        model=layout.to_model(res.x_final),
        status=res.status,
        num_steps=res.num_steps,
        num_rejected=res.num_rejected,
        num_rescues=res.num_rescues,
        states=None if states is None else jax.vmap(layout.to_model)(states),
        **saved,
    )


_solve_flow_jit = eqx.filter_jit(solve_stacked)


def solve_flow(
    model: DeepUFM,
    t1: float,
    *,
    ts: Float[ArrayLike, " S"] | None = None,
    num_saves: int = 64,
    time_change: str = "bounded",
    solver: diffrax.AbstractAdaptiveSolver | str | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float | None = None,
    controller: diffrax.AbstractStepSizeController | None = None,
    max_steps: int = 100_000,
    save_states: bool = False,
    pad_depth: int | None = None,
    krylov_dim: int | None = None,
    progress: bool = False,
    stall_rescue: tuple[float, ...] = STALL_RESCUE,
    refind: bool = False,
) -> FlowSolution:
    """Gradient flow `dtheta/dt = -grad loss(theta)` of a deep UFM to GF time `t1` (theory §2).

    Integrated adaptively in a changed time `sigma` (`dt/dsigma = g`, theory §2.3) so that long
    horizons are cheap; only GF time `t` is reported. The default `time_change="bounded"`
    (theory §2.6) moves the parameters by at most about a fixed fraction of their norm, and `t`
    by at most an e-fold, per unit `sigma`, using a bound on the speed from the layer norms
    rather than the gradient norm itself: robust through the small-init rank-one phases where
    `"relative"` (`g = ||theta|| / ||grad loss||`, normalized gradient flow) chatters across
    stiff valleys. `"arc"` is `g = 1/||grad loss||`, `"loss"` is `g = 1/loss`, `"none"` is
    plain GF. Every quantity is formed from `log_loss` and `grad log_loss`, so the flow stays
    finite after `loss` underflows.

    **Arguments:**

    - `model`: the initial `DeepUFM` (its dtype sets the solve's precision).
    - `t1`: final GF time `>= 0`.
    - `ts`: GF save times (ascending, last one `t1`); default `default_save_times(t1,
      num_saves)`: 0 and log-spaced times over 8 decades below `t1`.
    - `solver`: `"rosenbrock"` (default: the order-4 Rosenbrock method RODAS4, theory §2.6
      "Order 4", whose `W` is the exact Jacobian compressed onto a Krylov space of dimension
      `krylov_dim`, theory §2.6, for the stiff flows of deep models, with its very stiff
      directions projected onto their quasi-steady manifold at every stage, "Projected
      stages", and on steps where every other Ritz value is non-stiff a projected explicit
      Bogacki-Shampine 3(2) step instead, "Projected explicit steps", and on steps whose
      Krylov space found no stiffness a step cap from the stiffness outside it, "Stiff
      directions the first slope does not excite"; with it and with any `RosenbrockW`, a step
      that raises the loss is rejected whatever its error estimate says, theory §2.6 "Steps
      that raise the loss";
      `RosenbrockW(krylov_dim=m, stiff_projection=1e3, filter_error=True, adaptive_dim=True,
      tableau="rodas4", explicit_slow=True)` is the method without that cap,
      `RosenbrockW(krylov_dim=m, stiff_projection=1e3, filter_error=True, adaptive_dim=True,
      tableau="rodas4")` without the explicit steps either,
      `RosenbrockW(krylov_dim=m, tableau="rodas4")` without the projection either, and
      `RosenbrockW(krylov_dim=m, stiff_projection=1e3, filter_error=True, adaptive_dim=True)`
      the order-3 W-method ROS34PW2 that was the default before),
      `"tsit5"`, `"kvaerno5"`, or any `diffrax.AbstractAdaptiveSolver` instance.
    - `rtol`, `atol`: for the default controller (integral control on the RMS of the scaled
      error over the active parameters); or pass `controller`. `atol=None` (default) takes
      `rtol` times the RMS entry of the initial parameters, so the error control is relative to
      the model's scale rather than to entries that happen to be near zero. Default `rtol` 1e-5
      (the sweeps' too): on issue 14's held-out grid samples the effective rank and log-loss at
      t = 1e5 and 1e8 then agree with an rtol-1e-9 solution to 7.5e-5 or better, where 1e-6
      took 1.2-3 times the steps in the case-(ii) valleys (theory §2.6, "The default
      tolerance"; benchmarks/results/bench_flow_grid_rtol1e-5_s38.json). Pass `rtol=1e-6`
      for smaller errors (1.8e-5 on those rows).
    - `max_steps`: attempted steps before giving up with status `max_steps` (default 100,000:
      the small-init rank-one phases of theory §2.6 can take 10^4 steps; a run that finishes
      sooner pays nothing for the headroom).
    - `save_states`: also return the model at every save (memory: `S` copies).
    - `pad_depth`: integrate the model padded with frozen identity layers to this depth (theory
      §2.9): the flow is the same, and every depth up to `pad_depth` shares one compiled
      program. `t1`/`ts`, `rtol`, `atol` and the parameters are data: changing them never
      recompiles.
    - `krylov_dim`: the Krylov dimension of the default solver's `W`; default
      `default_krylov_dim(K, n)` = `max(16, K + N)` (theory §2.6: a small-init rank-one phase has
      up to `K + N - 1` stiff directions).
    - `refind`: the default solver's projected explicit steps re-find their very stiff set at
      every stage point and Newton iterate (`RosenbrockW(refind=True)`, theory §2.6
      "Re-found stiff sets"; opt-in, a separate program): far fewer steps through a curved
      rank-one valley (case (ii): 410 attempted instead of 5907 on the piece measured), ok on
      11 of 12 case-(ii) seeds where the default is ok on 9, not fewer steps over whole runs,
      and each explicit step costs about 18 Arnoldi processes. `ValueError` with a `solver`
      other than `"rosenbrock"`.
    - `stall_rescue`: the tolerance factors of the stall rescue (theory §2.7, under "Returns"
      below); `()` turns it off (a run that would stall then ends `stalled` where it fails).
      Static: each value compiles its own program.
    - `progress`: show a progress bar on stderr (tqdm): GF time reached on a log scale, steps
      and rejections, updated from inside the compiled solve every 16 attempted steps (theory
      §2.4); `solve_flow` then returns once the solve is done. A separate program from the
      one without it (one more compile); not under `jax.jit`/`vmap` (`ValueError`).

    **Returns:** a `FlowSolution`. Failures (step limit, non-finite state, a stalled step size)
    are reported in `status`, never raised, so `eqx.filter_vmap(solve_flow)` over a batch of
    equal-shaped models keeps every other run. Before a run ends `stalled` or `nonfinite` it
    goes back 50-100 accepted steps and tries again with `rtol` and `atol` divided by 10, 30
    and 100 in turn (theory §2.7, "Stall rescue"; `num_rescues` counts the returns): the
    stalls of small-init rank-one phases are single unlucky steps that a slightly tighter
    solve avoids. A run that never stalls is not changed by it.

    **Differentiable** in reverse mode (`jax.grad`, `jax.vjp`; not `jax.jvp`) with respect to
    the floating inputs: the initial parameters (so an init scale or seed-free function of
    them), `ts`/`t1`, `rtol`/`atol`; every floating output (saved measurements, `model`)
    carries a derivative, `status`/`num_steps`/`num_rejected` do not. It is the derivative of
    the discrete solution (`_integrate.integrate`: checkpointed step loop, save times by the
    implicit function theorem; the stiff projection's directions are held constant, theory
    §2.6), which agrees with the flow's sensitivity to solver tolerance.
    Cost, measured on a shared 2-core CPU (K=4, n=2, width 6, depth 2, t1 = 100, `jax.grad`
    of the last saved log-loss, compiled): Tsit5 at rtol 1e-12 (305 steps) 0.37 s against
    0.050 s forward (7.4x); the Rosenbrock-W method (then with its former Gauss-Newton `W`)
    at rtol 1e-10 (2913 steps) 43 s against 1.2 s (35x: each backward step is recomputed from
    the nearest checkpoint), and about 2 minutes to compile. Memory: about `sqrt(2 max_steps)`
    checkpoints of the loop state (447 at `max_steps=100_000`; pass a smaller `max_steps` when
    differentiating a large model), plus the saves; the loop state includes the stall rescue's
    two checkpoints of the parameters.

    **Raises:** `ValueError` naming the argument for a negative or non-finite `t1`/`ts`, an
    unknown `time_change` or `solver`, `rtol <= 0`, `atol < 0`, non-finite tolerances,
    `max_steps`/`num_saves`/`krylov_dim` not an integer `>= 1`/`>= 2`/`>= 1`, or `pad_depth`
    below the model's depth, `progress=True` under a transformation, a `stall_rescue` factor
    below 1, `refind=True` with a solver other than `"rosenbrock"`.
    """
    check_time_change(time_change, FULL_FLOW_TIME_CHANGES)
    check_times(ts, t1)
    check_tolerances(rtol, atol)
    max_steps = check_count("max_steps", max_steps)
    stall_rescue = check_factors("stall_rescue", stall_rescue)
    num_saves = check_count("num_saves", num_saves, minimum=2)
    if krylov_dim is not None:
        krylov_dim = check_count("krylov_dim", krylov_dim)
    solver = check_solver(solver, default="rosenbrock")
    check_controller(controller)
    state, layout = stack_model(model, pad_depth)
    dtype = model.factors[0].dtype
    if ts is None:
        ts = default_save_times(t1, num_saves).astype(dtype)
    else:
        ts = jnp.asarray(ts, dtype)
    rtol = jnp.asarray(rtol, dtype)
    atol = jnp.asarray(jnp.nan if atol is None else atol, dtype)
    args = (state, layout, ts, rtol, atol, controller, time_change, solver, krylov_dim,
            max_steps, save_states)
    if not progress:
        return _solve_flow_jit(*args, stall_rescue=stall_rescue, refind=bool(refind))
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((model, ts))):
        raise ValueError("solve_flow: progress=True needs a call outside jax.jit/vmap/grad "
                         "(the bar lives on the host); pass progress=False there.")
    with _progress.bar(float(jnp.log1p(ts[-1]))) as bar:
        sol = jax.block_until_ready(_solve_flow_jit(*args, progress=True,
                                                    stall_rescue=stall_rescue,
                                                    refind=bool(refind)))
        reached = np.asarray(ts)[np.isfinite(np.asarray(sol.log_loss))]  # saves written
        bar.update(float(np.log1p(reached.max(initial=0.0))), int(sol.num_steps),
                   int(sol.num_rejected), sol.status_name())
    return sol
