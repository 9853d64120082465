"""The sweep's modes, one object each: what a run computes and how it is labelled.

A `Mode` holds everything that differs between `mode="full"`, `"gd"` and `"hadamard"`: the
Dataset's dims, which of them fix array shapes (one compiled program per group of equal shapes)
and which are per-run inputs of that program, the settings that determine the numbers, the
mode's own input rules, the solver choice, the run function (one run, vmapped by the engine) or
the batch function (a whole device's batch), the chunk size and the summary metrics. The rest
of the engine looks these up in `MODE_TABLE` instead of branching on the mode's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import diffrax
import jax
import jax.numpy as jnp

from ..core._hadamard import depth_exponent, hadamard_margin
from ..core._init import gaussian_init, gaussian_init_padded, hadamard_initial_direction
from ..core._metrics import effective_rank_from_singular_values, kl_to_nc, nc_metrics
from ..solvers import default_save_times, descend, solve_hadamard
from ..solvers._flow import solve_stacked
from ..solvers._stacked import stack_padded
from ..solvers._hadamard_many import HADAMARD_MANY_TIME_CHANGES
from ._errors import SweepInputError

if TYPE_CHECKING:
    from ._config import SweepConfig

_AUTO_TSIT5_MAX_DEPTH = 4  # solver=auto: explicit Tsit5 up to this depth, Rosenbrock-W above
# The config fields (grid and settings) that determine a mode's numbers: `SweepConfig.
# results_dict()`, hashed into the run folder's and the parts' names.
_COMMON_KEYS = frozenset({"mode", "depth", "init_scale", "seeds", "K", "dtype", "t1",
                          "num_saves", "fast_compile"})
_SOLVE_KEYS = frozenset({"solver", "rtol", "atol", "max_steps", "time_change"})


def solver_argument(name: str) -> diffrax.AbstractAdaptiveSolver | str:
    """What `solve_flow`/`solve_hadamard` take for a solver chosen by `solver_for`: a diffrax
    instance for `"tsit5"`/`"kvaerno5"`; `"rosenbrock"` stays the name: `solve_flow` builds
    the Rosenbrock-W method with its Krylov `W` (theory §2.6)."""
    return {"tsit5": diffrax.Tsit5, "kvaerno5": diffrax.Kvaerno5}.get(name, lambda: name)()


class Mode:
    """One sweep mode (a singleton in `MODE_TABLE`); subclasses fill in the run functions."""

    name: str
    dims: tuple[str, ...]  # the Dataset's configuration dims, in order (then `time`, `sv`)
    static: tuple[str, ...]  # dims that fix array shapes: one compiled program per group
    traced: tuple[str, ...]  # per-run inputs of the program, in argument order
    keys: frozenset[str]  # settings that determine the numbers
    depth_type: type = int
    metrics: tuple[str, ...] = ("effective_rank", "nc1", "nc2", "nc3", "normalized_margin")
    time_description: str = ""
    fast_compile_auto: bool = False  # fast_compile=auto turns it on for small CPU batches
    # The mode's defaults of the keys that `SweepConfig` leaves at None (`_config`).
    defaults: dict = {"width": (16,), "init_scale": (0.75,), "t1": 1e5, "max_steps": 4096}

    def check_grid(self, config: SweepConfig) -> None:
        """The mode's own rules on the grid (after the generic checks of the values)."""

    def check_settings(self, config: SweepConfig) -> None:
        """The mode's own rules on the scalar settings (after the generic checks)."""

    def log_time_change_ok(self, solver: str) -> bool:
        """Whether `time_change="log"` (the reduced ODE in log variables) applies."""
        return False

    def solver_for(self, config: SweepConfig, static: tuple) -> str:
        """The solver a group runs with: `"tsit5"`, `"kvaerno5"`, `"rosenbrock"` or `"gd"`."""
        raise NotImplementedError

    def run_fn(self, config: SweepConfig, static: tuple, solver: str) -> Callable:
        """`f(*traced) -> dict` of one run's outputs (`ts` plus the Dataset's variables)."""
        raise NotImplementedError

    def batch_fn(self, config: SweepConfig, static: tuple, solver: str) -> Callable | None:
        """`f(*traced arrays) -> dict` for a device's whole batch, or `None` (vmap `run_fn`)."""
        return None

    def compiler_options(self, config: SweepConfig, solver: str) -> dict:
        """Extra XLA compiler options for the program."""
        return {}

    def sequential_on_cpu(self, solver: str) -> bool:
        """Whether a CPU device runs its runs one after another (see
        `_execute._sequential_local_batch`)."""
        return False

    def default_chunk(self, config: SweepConfig, num_classes: int, devices: int,
                      cpu: bool) -> int:
        """Most runs per batch when `chunk` is not given (see `_plan.chunk_size`)."""
        return 4096


def _flow_outputs(sol, depth=None) -> dict:
    """A `FlowSolution` (or gradient descent's solution) as the sweep's per-run outputs."""
    out = dict(
        ts=jnp.broadcast_to(sol.ts, sol.loss.shape), singular_values=sol.singular_values,
        loss_t=sol.loss, log_loss_t=sol.log_loss, min_margin_t=sol.min_margin,
        param_norm_t=sol.param_norm, balance_residual_t=sol.balance_residual,
        effective_rank_t=effective_rank_from_singular_values(sol.singular_values),
        status=sol.status, num_steps=sol.num_steps, num_rejected=sol.num_rejected,
        num_rescues=sol.num_rescues,
    )
    out.update(nc_metrics(sol.model))
    # The model may carry frozen identity layers (theory §2.9): the normalized margin takes the
    # run's own depth and the norm of its active layers (`param_norm`).
    if depth is not None:
        out["normalized_margin"] = out["min_margin"] / sol.param_norm[-1] ** (depth + 1)
    return out


class _Full(Mode):
    """`mode="full"`: gradient flow of the deep UFM (`solve_flow`) from `gaussian_init`.

    Depth is a per-run input: every run is padded with frozen identity layers to the sweep's
    largest depth (theory §2.9), so a sweep compiles one program per `(K, n, width)`."""

    name = "full"
    dims = ("K", "per_class", "width", "depth", "init_scale", "seed")
    static = ("K", "per_class", "width")
    traced = ("depth", "seed", "init_scale")
    keys = _COMMON_KEYS | _SOLVE_KEYS | {"width", "per_class"}
    time_description = "gradient-flow time t"
    # One program per (K, n, width): its compile is paid once, so it is optimized (measured on
    # the default sweep: 23 s compile + 8.7 s run, against 17 s + 32 s at optimization level 0).
    fast_compile_auto = False
    # The paper's Fig. 2 regime (README, "Defaults"): a small init (the product of 9 factors
    # starts near 0.3^9 ~ 2e-5) and width 4K, run until the effective rank has settled.
    defaults = {"width": (32,), "init_scale": (0.3,), "t1": 1e8, "max_steps": 20_000}

    def solver_for(self, config, static):
        """`solver="auto"`: explicit Tsit5 when every depth is at most 4 (fast to compile, not
        stiff there), else the Rosenbrock-W method with a Krylov W (stiff after escape)."""
        if config.solver == "tsit5" or (config.solver == "auto"
                                        and max(config.depth) <= _AUTO_TSIT5_MAX_DEPTH):
            return "tsit5"
        return "kvaerno5" if config.solver == "kvaerno5" else "rosenbrock"

    def sequential_on_cpu(self, solver):
        return True  # every solver: adaptive runs of unequal length (see `_execute`)

    def run_fn(self, config, static, solver):
        k, n, width = static
        capacity = int(max(config.depth))
        dtype = jnp.dtype(config.dtype)
        ts = default_save_times(config.t1, config.num_saves).astype(dtype)
        rtol = jnp.asarray(config.rtol, dtype)
        atol = jnp.asarray(jnp.nan if config.atol is None else config.atol, dtype)

        def one(depth, seed, scale):
            depth = depth.astype(jnp.int32)
            model = gaussian_init_padded(jax.random.PRNGKey(seed), k, n, width, depth,
                                         capacity, scale, dtype=dtype)
            state, layout = stack_padded(model, depth)
            sol = solve_stacked(state, layout, ts, rtol, atol, None, config.time_change,
                                solver_argument(solver), max_steps=config.max_steps)
            return _flow_outputs(sol, depth)

        return one


class _GradientDescent(_Full):
    """`mode="gd"`: gradient descent (`descend`) with step `lr` for `round(t1 / lr)` epochs."""

    name = "gd"
    fast_compile_auto = True  # one program per depth, each run briefly
    # Gradient descent cannot reach the full GF's t1 = 1e8 (1e9 epochs at lr 0.1): it keeps
    # the earlier mid-scale defaults, which settle by t = 1e5.
    defaults = Mode.defaults
    static = ("K", "per_class", "width", "depth")
    traced = ("seed", "init_scale")
    keys = _COMMON_KEYS | {"width", "per_class", "lr", "weight_decay", "decay_epochs"}
    time_description = "GF time lr * epoch"

    def check_settings(self, config):
        if round(config.t1 / config.lr) < 1:
            raise SweepInputError("t1", f"{config.t1:g}", "mode=gd needs t1 >= lr (one epoch)")

    def solver_for(self, config, static):
        return "gd"

    def sequential_on_cpu(self, solver):
        return False  # a fixed number of epochs: vmapped runs all end together

    def run_fn(self, config, static, solver):
        k, n, width, depth = static
        dtype = jnp.dtype(config.dtype)

        def one(seed, scale):
            model = gaussian_init(jax.random.PRNGKey(seed), k, n, width, depth, scale)
            model = jax.tree_util.tree_map(lambda x: x.astype(dtype), model)
            return _flow_outputs(self._solve(config, model, solver))

        return one

    def _solve(self, config, model, solver):
        return descend(model, config.lr, max(1, round(config.t1 / config.lr)),
                       num_saves=config.num_saves, weight_decay=config.weight_decay,
                       decay_epochs=config.decay_epochs)


class _Hadamard(Mode):
    """`mode="hadamard"`: the reduced ODE (theory §4) from random directions, any real depth."""

    name = "hadamard"
    dims = ("K", "depth", "init_scale", "seed")
    static = ("K",)
    traced = ("seed", "init_scale", "depth")
    keys = _COMMON_KEYS | _SOLVE_KEYS | {"direction"}
    depth_type = float
    metrics = ("effective_rank", "kl_to_nc", "geometric_margin")
    time_description = "reduced time tau (tau = c t, ufmflow.hadamard_time_scale)"

    def check_grid(self, config):
        for k in config.K:
            if k & (k - 1):
                raise SweepInputError(
                    "K", str(k), "mode=hadamard needs K a power of two (2, 4, 8, 16, ...)")
        if config.solver == "rosenbrock":
            raise SweepInputError(
                "solver", config.solver, "mode=hadamard takes solver=auto, tsit5 or kvaerno5")

    def log_time_change_ok(self, solver):
        return solver in ("auto", "tsit5")

    def solver_for(self, config, static):
        return "kvaerno5" if config.solver == "kvaerno5" else "tsit5"

    def _many(self, config, solver) -> bool:
        """Tsit5 with the `"log"` (default) or `"relative"` time change runs through
        `solve_hadamard_many` (continuous batching, 3.4x faster per run on a CPU than vmapping
        `solve_hadamard` with the same method); other settings vmap `solve_hadamard`."""
        return solver == "tsit5" and config.time_change in HADAMARD_MANY_TIME_CHANGES

    def default_chunk(self, config, num_classes, devices, cpu):
        if not cpu:
            return 4096
        if self._many(config, self.solver_for(config, (num_classes,))):
            return max(1024, 2**17 // num_classes) * devices
        return int(min(4096, max(16, 2**20 // num_classes**2)))

    def compiler_options(self, config, solver):
        if not self._many(config, solver):
            return {}
        from ..solvers._hadamard_many import compiler_options

        return compiler_options()

    def run_fn(self, config, static, solver):
        (k,) = static
        dtype = jnp.dtype(config.dtype)
        atol = {} if config.atol is None else {"atol": config.atol}

        def one(seed, scale, depth):
            s0 = hadamard_initial_direction(jax.random.PRNGKey(seed), k, scale,
                                            distribution=config.direction).astype(dtype)
            sol = solve_hadamard(
                s0, depth, config.t1, num_saves=config.num_saves, time_change=config.time_change,
                solver=solver_argument(solver), rtol=config.rtol, max_steps=config.max_steps,
                **atol,
            )
            return dict(ts=sol.ts, singular_values=sol.s, loss_t=sol.loss,
                        log_loss_t=sol.log_loss, min_margin_t=sol.min_margin,
                        effective_rank_t=effective_rank_from_singular_values(sol.s),
                        status=sol.status, num_steps=sol.num_steps,
                        num_rejected=sol.num_rejected, **_final_s_metrics(sol.s_final))

        return one

    def batch_fn(self, config, static, solver):
        if not self._many(config, solver):
            return None
        from ..solvers._hadamard_many import _solve_batch, default_slots

        (k,) = static
        dtype = jnp.dtype(config.dtype)
        atol = 1e-12 if config.atol is None else config.atol  # solve_hadamard's default

        def batch(seeds, scales, depths):
            s0 = jax.vmap(lambda seed, scale: hadamard_initial_direction(
                jax.random.PRNGKey(seed), k, scale, distribution=config.direction)
            )(seeds, scales).astype(dtype)
            ts = default_save_times(config.t1, config.num_saves).astype(dtype)
            n = s0.shape[0]
            out = _solve_batch(s0, depth_exponent(depths.astype(dtype)), jnp.log1p(ts),
                               jnp.asarray(config.rtol, dtype), jnp.asarray(atol, dtype),
                               slots=min(n, default_slots(k)), max_steps=config.max_steps,
                               time_change=config.time_change)
            return dict(ts=jnp.broadcast_to(ts, (n,) + ts.shape), singular_values=out["s"],
                        loss_t=out["loss"], log_loss_t=out["log_loss"],
                        min_margin_t=out["min_margin"], effective_rank_t=out["effective_rank"],
                        status=out["status"], num_steps=out["num_steps"],
                        num_rejected=out["num_rejected"], **_final_s_metrics(out["s_final"]))

        return batch


def _final_s_metrics(s) -> dict:
    """Final metrics of reduced-ODE states `s` (`(..., K)`): theory §4 and §6."""
    margin = hadamard_margin(s)
    return dict(effective_rank=effective_rank_from_singular_values(s), kl_to_nc=kl_to_nc(s),
                min_margin=margin, geometric_margin=margin / jnp.linalg.norm(s, axis=-1))


MODE_TABLE: dict[str, Mode] = {m.name: m for m in (_Full(), _GradientDescent(), _Hadamard())}
MODES = tuple(MODE_TABLE)


def solver_for(config: SweepConfig, depth=None) -> str:
    """The solver a run of `config` at `depth` uses, chosen once per group and passed on:
    full GF takes explicit Tsit5 up to depth 4 and the Rosenbrock-W method from depth 5 under
    `solver="auto"`; the reduced ODE takes Tsit5; `"gd"` for gradient descent.
    `solver_argument(name)` is what `solve_flow`/`solve_hadamard` take."""
    mode = MODE_TABLE[config.mode]
    static = (None,) * (len(mode.static) - 1) + (depth,)
    return mode.solver_for(config, static)


def hadamard_many_applies(config: SweepConfig) -> bool:
    """Whether a hadamard sweep's batches run through `solve_hadamard_many`."""
    mode = MODE_TABLE[config.mode]
    return isinstance(mode, _Hadamard) and mode._many(config, mode.solver_for(config, (None,)))
