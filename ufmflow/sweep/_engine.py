"""Batched, sharded, resumable sweeps: a grid of configurations -> a labeled xarray Dataset.

`run_sweep(SweepConfig(...))` is the engine behind `python -m ufmflow.sweep` (README "Sweeps").

- **Grouping.** Shapes are static in XLA, so configurations are grouped by the values that fix
  array shapes: `(K, per_class, width, depth)` for `mode="full"`/`"gd"`, `K` alone for
  `mode="hadamard"` (depth is a traced scalar of the reduced ODE). Inside a group every run
  (`init_scale x seed`, plus `depth` for hadamard) is one row of a `vmap`ped batch: one compile
  per group, never one per configuration. A group larger than `chunk` runs is split into equal
  chunks (same shape, so still one compile).
- **Sharding.** The batch axis is sharded over `jax.devices()` (`NamedSharding` over a 1-D mesh
  named `"batch"`), padded to a multiple of the device count by repeating its last run (the
  padding is dropped). Every run is independent, so a 4-device run equals a 1-device run.
- **Checkpoints.** Each finished chunk is written atomically (tmp file + `os.replace`) to
  `out/parts/<group>-<hash>.nc`, the hash taken over everything that determines its numbers.
  A rerun of the same command loads finished parts and computes only the missing ones, so a
  killed sweep resumes and ends with the same Dataset as an uninterrupted run.
- **Failures** (solver step limit, non-finite state, stalled step size) are per-run `status`
  codes (`STATUS_NAMES`); the sweep goes on.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import time
from pathlib import Path
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..solvers._flow import solve_flow, solve_hadamard
from ..core._hadamard import hadamard_margin
from ..solvers._hadamard_many import HADAMARD_MANY_TIME_CHANGES
from ._store import atomic_write_netcdf, atomic_write_text
from ..core._init import DIRECTION_DISTRIBUTIONS, gaussian_init, hadamard_initial_direction
from ..solvers._status import STATUS_NAMES
from ..solvers._time_change import FLOW_TIME_CHANGES as TIME_CHANGES
from ..core._metrics import effective_rank_from_singular_values, kl_to_nc, nc_metrics

MODES = ("full", "gd", "hadamard")
# "log": the reduced ODE in log variables (`solve_hadamard_many(time_change="log")`, hadamard
# with Tsit5 only); "auto": "log" where it applies, else "relative".
SWEEP_TIME_CHANGES = ("auto",) + TIME_CHANGES + ("log",)
SOLVERS = ("auto", "rosenbrock", "tsit5", "kvaerno5")
DTYPES = ("float64", "float32")
FAST_COMPILE = ("auto", "on", "off")
_AUTO_TSIT5_MAX_DEPTH = 4  # solver=auto: explicit Tsit5 up to this depth, Rosenbrock-W above
_GRID_DIMS = {
    "full": ("K", "per_class", "width", "depth", "init_scale", "seed"),
    "gd": ("K", "per_class", "width", "depth", "init_scale", "seed"),
    "hadamard": ("K", "depth", "init_scale", "seed"),
}
_ENGINE_VERSION = 2  # bump when a part's numbers would change for the same config


class SweepInputError(ValueError):
    """A bad sweep setting: names the `key`, the offending `token` and the fix."""

    def __init__(self, key: str, token: str, reason: str):
        self.key, self.token, self.reason = key, token, reason
        super().__init__(f"key '{key}': bad value '{token}': {reason}")


def _tuple(value, cast, key):
    values = value if isinstance(value, (tuple, list, np.ndarray, range)) else (value,)
    out = []
    for v in values:
        try:
            c = cast(v)
        except (TypeError, ValueError):
            raise SweepInputError(key, str(v), f"expected {cast.__name__} values") from None
        if cast is int and c != v:
            raise SweepInputError(key, str(v), "expected an integer")
        out.append(c)
    if not out:
        raise SweepInputError(key, "", "empty: give at least one value")
    if len(set(out)) != len(out):
        dup = next(v for v in out if out.count(v) > 1)
        raise SweepInputError(key, str(dup), "duplicate value (each value labels a coordinate)")
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a sweep; the CLI builds one from `key=value` words.

    Grid keys (tuples; a scalar means one value): `depth`, `width`, `init_scale`, `seeds`, `K`,
    `per_class`. `seeds` may be an int `n`, meaning seeds `0..n-1`. The defaults are the paper's
    Fig. 2 experiment on a laptop budget (see `python -m ufmflow.sweep --help` for each key).

    **Modes.**

    - `"full"`: gradient flow of the deep UFM from `gaussian_init(PRNGKey(seed), K, per_class,
      width, depth, init_scale)` to GF time `t1` (`solve_flow`).
    - `"gd"`: gradient descent (`descend`) with step `lr` for `round(t1 / lr)` epochs, so its
      time axis is also GF time `lr * epoch`.
    - `"hadamard"`: the reduced ODE to reduced time `tau = t1`, any real `depth >= 1`, `K` a
      power of two; `width`/`per_class` do not enter. With Tsit5 (`solver="auto"`) and the
      default `time_change="auto"` it runs `solve_hadamard_many(time_change="log")` (log
      variables; 1.7x faster than `"relative"` on the K=64 benchmark); with Tsit5 and
      `time_change="relative"`, `solve_hadamard_many`'s default (`solve_hadamard`'s method,
      batched); otherwise a vmapped `solve_hadamard`. Seed `i` starts at
      `hadamard_initial_direction(PRNGKey(i), K, init_scale, distribution=direction)`: `g` with
      `g[0] = 0` and the other entries i.i.d. `U[0, 1]` (`direction="uniform"`, the paper's
      Fig. 4 protocol, default) or `|N(0, 1)|` (`"half_normal"`), then `s0 = init_scale * g /
      ||g[1:]||`; the same seed gives the same direction at every depth and scale.

    **Raises:** `SweepInputError` (a `ValueError`) naming the key, the value and the fix.
    """

    mode: str = "full"
    depth: tuple = tuple(range(1, 9))
    width: tuple = (16,)
    init_scale: tuple = (0.75,)
    seeds: tuple = (0, 1, 2, 3, 4)
    K: tuple = (8,)
    per_class: tuple = (1,)
    t1: float = 1e5
    dtype: str = "float64"
    rtol: float = 1e-5
    atol: float | None = None
    num_saves: int = 32
    max_steps: int = 4096
    solver: str = "auto"
    time_change: str = "auto"
    lr: float = 0.1
    weight_decay: float = 0.0
    decay_epochs: int = 0
    chunk: int | None = None
    fast_compile: str = "auto"
    direction: str = "uniform"
    out: str | None = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        _choice("mode", self.mode, MODES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("solver", self.solver, SOLVERS)
        _choice("time_change", self.time_change, SWEEP_TIME_CHANGES)
        _choice("fast_compile", self.fast_compile, FAST_COMPILE)
        _choice("direction", self.direction, DIRECTION_DISTRIBUTIONS)
        hadamard = self.mode == "hadamard"
        if isinstance(self.seeds, (int, np.integer)) and not isinstance(self.seeds, bool):
            if self.seeds < 1:
                raise SweepInputError("seeds", str(self.seeds), "the number of seeds must be >= 1")
            set_("seeds", tuple(range(int(self.seeds))))
        set_("depth", _tuple(self.depth, float if hadamard else int, "depth"))
        for key in ("width", "K", "per_class", "seeds"):
            set_(key, _tuple(getattr(self, key), int, key))
        set_("init_scale", _tuple(self.init_scale, float, "init_scale"))
        for key, low in (("depth", 1), ("width", 1), ("K", 2), ("per_class", 1), ("seeds", 0)):
            for v in getattr(self, key):
                if not v >= low:
                    raise SweepInputError(key, _fmt(v), f"must be >= {low}")
        for v in self.init_scale:
            if not (v > 0 and math.isfinite(v)):
                raise SweepInputError("init_scale", _fmt(v), "must be a finite number > 0")
        if hadamard:
            for k in self.K:
                if k & (k - 1):
                    raise SweepInputError(
                        "K", str(k), "mode=hadamard needs K a power of two (2, 4, 8, 16, ...)"
                    )
            if self.solver == "rosenbrock":
                raise SweepInputError(
                    "solver", self.solver, "mode=hadamard takes solver=auto, tsit5 or kvaerno5"
                )
        if self.time_change == "auto":
            tsit5 = self.solver in ("auto", "tsit5")
            set_("time_change", "log" if hadamard and tsit5 else "relative")
        elif self.time_change == "log" and not (hadamard and self.solver in ("auto", "tsit5")):
            raise SweepInputError(
                "time_change", "log", "log is for mode=hadamard with solver=auto or tsit5; "
                "use relative (or auto)")
        for key in ("t1", "rtol", "atol", "lr"):
            if key == "atol" and self.atol is None:
                continue
            try:
                v = float(getattr(self, key))
            except (TypeError, ValueError):
                v = math.nan
            if not (v > 0 and math.isfinite(v)):
                raise SweepInputError(key, _fmt(getattr(self, key)), "must be a finite number > 0")
            set_(key, v)
        if not (self.weight_decay >= 0):
            raise SweepInputError("weight_decay", _fmt(self.weight_decay), "must be >= 0")
        set_("weight_decay", float(self.weight_decay))
        for key, low in (("num_saves", 2), ("max_steps", 1), ("decay_epochs", 0), ("chunk", 1)):
            v = getattr(self, key)
            if key == "chunk" and v is None:
                continue
            if isinstance(v, bool) or int(v) != v or v < low:
                raise SweepInputError(key, str(v), f"must be an integer >= {low}")
            set_(key, int(v))
        if self.mode == "gd" and round(self.t1 / self.lr) < 1:
            raise SweepInputError("t1", _fmt(self.t1), "mode=gd needs t1 >= lr (one epoch)")
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise SweepInputError(
                "dtype", "float64", "JAX runs without x64 (UFMFLOW_X64=0): pass dtype=float32"
            )

    @property
    def dims(self) -> tuple[str, ...]:
        """The Dataset's configuration dims, in order (then `time`, `sv`)."""
        return _GRID_DIMS[self.mode]

    def grid(self) -> dict[str, tuple]:
        """`{dim: coordinate values}` for every configuration dim."""
        named = {"seed": self.seeds}
        return {d: named.get(d, getattr(self, d, None)) for d in self.dims}

    @property
    def num_runs(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists); `SweepConfig(**d)` rebuilds it."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def results_dict(self) -> dict:
        """The settings that determine the numbers (everything but `out` and `chunk`), with the
        keys that do not enter this mode dropped."""
        d = self.to_dict()
        d.pop("out")
        d.pop("chunk")
        if self.mode == "hadamard":
            for k in ("width", "per_class", "lr", "weight_decay", "decay_epochs"):
                d.pop(k)
        if self.mode != "hadamard":
            d.pop("direction")
        if self.mode != "gd":
            for k in ("lr", "weight_decay", "decay_epochs"):
                d.pop(k, None)
        if self.mode == "gd":
            for k in ("solver", "rtol", "atol", "max_steps", "time_change"):
                d.pop(k)
        return d

    def short_hash(self) -> str:
        """10 hex digits identifying `results_dict()`: the default run folder's suffix."""
        return _hash(self.results_dict())

    def run_dir(self) -> Path:
        """`out`, or `runs/<mode>-<short hash>` by default."""
        return Path(self.out) if self.out else Path("runs") / f"{self.mode}-{self.short_hash()}"


def _choice(key, value, choices):
    if value not in choices:
        raise SweepInputError(key, str(value), f"choose one of {', '.join(choices)}")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------
# Planning: groups and chunks
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Unit:
    """One compiled batch: `static` shape values, `runs` (grid coordinates, dims order)."""

    static: tuple
    runs: tuple
    label: str
    key: str  # part file stem


def chunk_size(config: SweepConfig, num_classes: int) -> int:
    """Most runs per batch (a batch is also the unit of checkpointing): `config.chunk`, or by
    default 4096, except hadamard sweeps on a CPU that vmap `solve_hadamard` (Kvaerno5, or the
    arc/loss/none time changes), capped at `2^20 / K^2` runs (16..4096; 256 for K=64) so the
    dense `(batch, K, K)` temporaries of that field stay in cache. Hadamard sweeps with Tsit5
    (`solve_hadamard_many`, which sizes its own working set) take `max(1024, 2^17 / K)` runs
    per device per batch on a CPU (2048 at K=64, about half a second there; 1024 from K=128,
    a few seconds at K=1024), so the progress bar and the checkpoints stay frequent while each
    device's continuous batching drains its slots (the last runs, with some slots idle) once
    per batch. Measured on the 4096-run hadamard benchmark (K=64, 2 CPU devices, 30 alternating
    repeats): one batch of 2048 runs per device took 0.492 s (min) / 0.538 s (median) against
    0.502 / 0.572 s for two batches of 1024."""
    if config.chunk is not None:
        return config.chunk
    cpu = jax.devices()[0].platform == "cpu"
    if config.mode == "hadamard" and cpu:
        if _hadamard_many_applies(config):
            return max(1024, 2**17 // num_classes) * len(jax.devices())
        return int(min(4096, max(16, 2**20 // num_classes**2)))
    return 4096


def plan_units(config: SweepConfig) -> list[_Unit]:
    """Split the grid into vmapped batches (groups by shape, chunks of at most `chunk`)."""
    grid = config.grid()
    if config.mode == "hadamard":
        groups = [((k,), [(k, *r) for r in itertools.product(*list(grid.values())[1:])])
                  for k in grid["K"]]
    else:
        groups = []
        for k, n, w, depth in itertools.product(grid["K"], grid["per_class"], grid["width"],
                                                grid["depth"]):
            runs = [(k, n, w, depth, s, seed) for s, seed in
                    itertools.product(grid["init_scale"], grid["seed"])]
            groups.append(((k, n, w, depth), runs))
    settings = config.results_dict()
    for key in ("depth", "width", "init_scale", "seeds", "K", "per_class"):
        settings.pop(key, None)
    units = []
    for static, runs in groups:
        n_chunks = -(-len(runs) // chunk_size(config, static[0]))
        size = -(-len(runs) // n_chunks)
        names = ("K", "n", "d", "L")
        label = "-".join(f"{a}{b}" for a, b in zip(names, static))
        for c in range(n_chunks):
            chunk = tuple(runs[c * size : (c + 1) * size])
            clabel = label if n_chunks == 1 else f"{label}-c{c}"
            h = _hash(dict(settings=settings, static=list(static), runs=[list(r) for r in chunk],
                           engine=_ENGINE_VERSION))
            units.append(_Unit(static, chunk, clabel, f"{clabel}-{h}"))
    return units


# --------------------------------------------------------------------------------------------
# Compiled batch functions
# --------------------------------------------------------------------------------------------


def solver_for(config: SweepConfig, depth):
    """The diffrax solver a run uses (`None`: `solve_flow`'s Rosenbrock-W). `solver="auto"`:
    full GF takes explicit Tsit5 up to depth 4 (fast to compile, not stiff there) and the
    Rosenbrock-W method from depth 5 (stiff after escape); the reduced ODE takes Tsit5."""
    import diffrax

    name, mode = config.solver, config.mode
    auto_tsit5 = mode == "hadamard" or (mode == "full" and depth <= _AUTO_TSIT5_MAX_DEPTH)
    if name == "tsit5" or (name == "auto" and auto_tsit5):
        return diffrax.Tsit5()
    if name == "kvaerno5":
        return diffrax.Kvaerno5()
    return None


def _one_run_fn(config: SweepConfig, static: tuple):
    """`f(seed, scale[, depth]) -> dict` of one run's results (vmapped by the caller)."""
    dtype = jnp.dtype(config.dtype)
    mode = config.mode

    if mode == "hadamard":
        (k,) = static

        def one(seed, scale, depth):
            s0 = hadamard_initial_direction(jax.random.PRNGKey(seed), k, scale,
                                            distribution=config.direction).astype(dtype)
            atol = {} if config.atol is None else {"atol": config.atol}
            sol = solve_hadamard(
                s0, depth, config.t1, num_saves=config.num_saves, time_change=config.time_change,
                solver=solver_for(config, None), rtol=config.rtol, max_steps=config.max_steps,
                **atol,
            )
            s = sol.s_final
            norm = jnp.linalg.norm(s)
            return dict(
                ts=sol.ts, singular_values=sol.s, loss_t=sol.loss, log_loss_t=sol.log_loss,
                min_margin_t=sol.min_margin,
                effective_rank_t=effective_rank_from_singular_values(sol.s),
                status=sol.status, num_steps=sol.num_steps, num_rejected=sol.num_rejected,
                effective_rank=effective_rank_from_singular_values(s), kl_to_nc=kl_to_nc(s),
                min_margin=hadamard_margin(s), geometric_margin=hadamard_margin(s) / norm,
            )

        return one

    k, n, width, depth = static

    def one(seed, scale):
        model = gaussian_init(jax.random.PRNGKey(seed), k, n, width, depth, scale)
        model = jax.tree_util.tree_map(lambda x: x.astype(dtype), model)
        if mode == "gd":
            from ..solvers import _descent

            sol = _descent.descend(
                model, config.lr, max(1, round(config.t1 / config.lr)),
                num_saves=config.num_saves, weight_decay=config.weight_decay,
                decay_epochs=config.decay_epochs,
            )
        else:
            sol = solve_flow(
                model, config.t1, num_saves=config.num_saves, time_change=config.time_change,
                solver=solver_for(config, depth), rtol=config.rtol, atol=config.atol,
                max_steps=config.max_steps,
            )
        out = dict(
            ts=jnp.broadcast_to(sol.ts, sol.loss.shape), singular_values=sol.singular_values,
            loss_t=sol.loss, log_loss_t=sol.log_loss, min_margin_t=sol.min_margin,
            param_norm_t=sol.param_norm, balance_residual_t=sol.balance_residual,
            effective_rank_t=effective_rank_from_singular_values(sol.singular_values),
            status=sol.status, num_steps=sol.num_steps, num_rejected=sol.num_rejected,
        )
        out.update(nc_metrics(sol.model))
        return out

    return one


def _hadamard_many_applies(config: SweepConfig) -> bool:
    """Hadamard sweeps with Tsit5 and the `"log"` (default) or `"relative"` time change run
    through `solve_hadamard_many` (continuous batching, 3.4x faster per run on a CPU than
    vmapping `solve_hadamard` with the same method); other settings vmap `solve_hadamard`."""
    return (config.mode == "hadamard" and config.time_change in HADAMARD_MANY_TIME_CHANGES
            and config.solver in ("auto", "tsit5"))


def _hadamard_many_fn(config: SweepConfig, static: tuple):
    """`f(seeds, scales, depths) -> dict` of a batch's results via `solve_hadamard_many`."""
    from ..solvers._flow import _check_times, default_save_times
    from ..core._hadamard import depth_exponent
    from ..solvers._hadamard_many import _solve_batch, default_slots

    (k,) = static
    dtype = jnp.dtype(config.dtype)
    atol = 1e-12 if config.atol is None else config.atol  # solve_hadamard's default
    _check_times(None, config.t1)

    def batch(seeds, scales, depths):
        s0 = jax.vmap(lambda seed, scale: hadamard_initial_direction(
            jax.random.PRNGKey(seed), k, scale, distribution=config.direction))(seeds, scales).astype(dtype)
        ts = default_save_times(config.t1, config.num_saves).astype(dtype)
        n = s0.shape[0]
        out = _solve_batch(s0, depth_exponent(depths.astype(dtype)), jnp.log1p(ts),
                           jnp.asarray(config.rtol, dtype), jnp.asarray(atol, dtype),
                           slots=min(n, default_slots(k)), max_steps=config.max_steps,
                           time_change=config.time_change)
        s = out["s_final"]
        norm = jnp.linalg.norm(s, axis=-1)
        margin = hadamard_margin(s)
        return dict(
            ts=jnp.broadcast_to(ts, (n,) + ts.shape), singular_values=out["s"],
            loss_t=out["loss"], log_loss_t=out["log_loss"], min_margin_t=out["min_margin"],
            effective_rank_t=out["effective_rank"],
            status=out["status"], num_steps=out["num_steps"],
            num_rejected=out["num_rejected"],
            effective_rank=effective_rank_from_singular_values(s), kl_to_nc=kl_to_nc(s),
            min_margin=margin, geometric_margin=margin / norm,
        )

    return batch


def _mesh_sharding() -> NamedSharding:
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch"))


def _int_dtype():
    return jnp.int64 if jax.config.jax_enable_x64 else jnp.int32


_FAST_COMPILE_MAX_BATCH = 64


def fast_compile_enabled(config: SweepConfig, batch: int = 1) -> bool:
    """`fast_compile`: compile with XLA backend optimization level 0. Measured on the default
    sweep's groups (K=8, width 16, 2-core CPU): compile 4-13 s instead of 12-23 s, batches run
    2-3x slower (depth 8, 5 runs: 1.30 s instead of 0.47 s). Right for sweeps that compile more
    than they run. `auto` = on for full/gd batches of at most 64 runs on a CPU (the 5-seed
    default sweep: one program per depth, a second or so of running each); off for bigger
    batches, for hadamard (one program per K, long runs) and for GPUs/TPUs."""
    if config.fast_compile == "auto":
        return (config.mode != "hadamard" and jax.devices()[0].platform == "cpu"
                and batch <= _FAST_COMPILE_MAX_BATCH)
    return config.fast_compile == "on"


def _sequential_local_batch(config: SweepConfig, static: tuple) -> bool:
    """Whether a device runs its runs one after another (`lax.map`) instead of `vmap`.

    Only for several CPU devices with a solver that LU-factorizes (Rosenbrock-W, Kvaerno5):
    jaxlib's batched LAPACK LU parallelizes over the batch on the intra-op thread pool that the
    devices' own executions occupy, and deadlocks (seen with 2 devices on 2 cores). One at a
    time is as fast as `vmap` on a CPU (measured); the numbers agree with a 1-device (vmapped)
    run to rounding (~1e-10 relative), not bit for bit.
    """
    if config.mode != "full" or len(jax.devices()) == 1:
        return False
    if jax.devices()[0].platform != "cpu":
        return False
    return solver_for(config, static[3]) is None or config.solver == "kvaerno5"


@functools.lru_cache(maxsize=128)
def _compile_cached(config, static, batch, devices_key):
    del devices_key  # cache key only
    sharding = _mesh_sharding()
    one = _one_run_fn(config, static)
    fdt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    args = [jax.ShapeDtypeStruct((batch,), _int_dtype(), sharding=sharding),
            jax.ShapeDtypeStruct((batch,), fdt, sharding=sharding)]
    if config.mode == "hadamard":
        args.append(jax.ShapeDtypeStruct((batch,), fdt, sharding=sharding))
    # shard_map: every device runs its slice of the batch as an independent program, with no
    # cross-device collectives (runs never interact), and stops when its own slowest run is done.
    if _hadamard_many_applies(config):
        local = _hadamard_many_fn(config, static)
    elif _sequential_local_batch(config, static):
        local = lambda *xs: jax.lax.map(lambda x: one(*x), xs)  # noqa: E731
    else:
        local = jax.vmap(one)
    per_device = jax.shard_map(local, mesh=sharding.mesh, in_specs=sharding.spec,
                               out_specs=sharding.spec, check_vma=False)
    jitted = jax.jit(per_device, in_shardings=sharding, out_shardings=sharding)
    fast = fast_compile_enabled(config, batch)
    options = {"xla_backend_optimization_level": 0} if fast else {}
    if _hadamard_many_applies(config):
        from ..solvers._hadamard_many import compiler_options

        options.update(compiler_options())
    return jitted.lower(*args).compile(compiler_options=options or None)


def _padded_batch(n_runs: int) -> int:
    n_dev = len(jax.devices())
    return -(-n_runs // n_dev) * n_dev


def _compile(config: SweepConfig, unit: _Unit):
    # The program depends on the settings and the group's shapes, not on the grid's values.
    settings_only = dataclasses.replace(
        config, depth=(1,), width=(1,), init_scale=(1.0,), seeds=(0,), K=(2,), per_class=(1,),
        chunk=1, out=None,
    )
    devices_key = tuple(str(d) for d in jax.devices())
    return _compile_cached(settings_only, unit.static, _padded_batch(len(unit.runs)),
                           devices_key)


def _unit_inputs(config: SweepConfig, unit: _Unit) -> list[np.ndarray]:
    dims = config.dims
    cols = {d: [r[i] for r in unit.runs] for i, d in enumerate(dims)}
    batch = _padded_batch(len(unit.runs))
    fdt = np.float64 if jax.config.jax_enable_x64 else np.float32
    arrays = [np.asarray(cols["seed"], _int_dtype()), np.asarray(cols["init_scale"], fdt)]
    if config.mode == "hadamard":
        arrays.append(np.asarray(cols["depth"], fdt))
    pad = batch - len(unit.runs)
    return [np.concatenate([a, np.repeat(a[-1:], pad)]) for a in arrays]


def _device_order(batch: int, n_dev: int) -> np.ndarray:
    """`order[p]`: the run at batch position `p`, where device `d` takes the contiguous block
    of positions `[d B/n, (d+1) B/n)`. Runs are dealt round-robin (device `d` gets runs
    `d, d + n, d + 2n, ...`): a grid in depth-major order then gives every device the same mix
    of depths, instead of giving the first devices the quick shallow runs and leaving them idle
    while the last ones finish the deep ones. Measured on the 4096-run hadamard benchmark (K=64,
    depth 1..8, 2 CPU devices, 8 alternating repeats in one process): 0.610 s instead of 0.649 s
    (min), 0.639 s instead of 0.684 s (median); dealing each device's runs deepest first as well
    gained nothing more (0.610 / 0.654 s)."""
    return np.arange(batch).reshape(batch // n_dev, n_dev).T.reshape(-1)


def _execute(config: SweepConfig, unit: _Unit, compiled) -> tuple[dict[str, np.ndarray],
                                                                   np.ndarray]:
    """Run a batch: its results in the devices' order, and `runs[i]`, the index in
    `unit.runs` of result row `i` (padding dropped). The rows are not put back in the unit's
    order: the part and the assembly place every run by its coordinates (a copy of every
    output saved, ~10 ms for 2048 hadamard runs)."""
    sharding = _mesh_sharding()
    inputs = _unit_inputs(config, unit)
    order = _device_order(len(inputs[0]), len(jax.devices()))
    out = compiled(*[jax.device_put(a[order], sharding) for a in inputs])
    out = {k: np.asarray(v) for k, v in out.items()}
    real = order < len(unit.runs)
    if not real.all():
        out = {k: v[real] for k, v in out.items()}
    return out, order[real]


# --------------------------------------------------------------------------------------------
# Parts and assembly
# --------------------------------------------------------------------------------------------

_DESCRIPTIONS = {
    "singular_values": "singular values of the class-mean logits Zbar (descending; hadamard: s, "
    "index 0 the all-ones direction), nan-padded to max K",
    "loss_t": "cross-entropy loss",
    "log_loss_t": "log of the loss, computed stably",
    "min_margin_t": "smallest sample margin q_min",
    "param_norm_t": "||theta|| (all factors)",
    "balance_residual_t": "max_l ||D_l(t) - D_l(0)||_F, conserved under GF (theory §2)",
    "effective_rank_t": "effective rank of Zbar over time (uncentred, Roy & Vetterli)",
    "status": "0 ok, 1 max_steps, 2 nonfinite, 3 stalled (ufmflow.STATUS_NAMES)",
    "num_steps": "solver steps attempted (gd: epochs)",
    "num_rejected": "rejected solver steps",
    "effective_rank": "effective rank of the final Zbar (uncentred)",
    "nc1": "NC1 = tr(Sigma_W Sigma_B^+)/K of the final model",
    "nc2": "NC2 of the final model (distance of centred class-mean Gram to the simplex ETF)",
    "nc3": "NC3 of the final model (self-duality)",
    "min_margin": "final smallest margin q_min",
    "normalized_margin": "q_min / ||theta||^(L+1) of the final model",
    "geometric_margin": "q_min / ||Z||_F of the final model (hadamard: q_min / ||s||)",
    "kl_to_nc": "KL(uniform || s_i / sum s) over i >= 1 of the final s (theory §4)",
}


def _part_dataset(config: SweepConfig, unit: _Unit, out: dict[str, np.ndarray],
                  runs: np.ndarray) -> xr.Dataset:
    """A batch's results as a Dataset over `run` (row `i` is `unit.runs[runs[i]]`)."""
    dims = config.dims
    coords = {d: ("run", np.asarray([r[i] for r in unit.runs])[runs])
              for i, d in enumerate(dims)}
    data = {}
    for name, value in out.items():
        if name == "ts":
            continue
        trailing = ("time", "sv")[: value.ndim - 1]
        data[name] = (("run",) + trailing, value)
    ds = xr.Dataset(data, coords=dict(coords, time=out["ts"][0]))
    ds.attrs["part_key"] = unit.key
    return ds


def _load_part(path: Path, unit: _Unit) -> xr.Dataset | None:
    if not path.exists():
        return None
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except Exception:  # an unreadable part is recomputed (writes are atomic, so unexpected)
        return None
    return ds if ds.attrs.get("part_key") == unit.key else None


def _grid_positions(values, wanted) -> np.ndarray:
    """Index in the grid axis `values` (distinct) of every element of `wanted` (all in it)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    pos = order[np.minimum(np.searchsorted(values, wanted, sorter=order), len(values) - 1)]
    if not np.array_equal(values[pos], wanted):
        raise RuntimeError("a part holds runs outside the sweep's grid; delete the run folder "
                           "and rerun.")
    return pos


def _assemble(config: SweepConfig, parts: list[xr.Dataset]) -> xr.Dataset:
    """The sweep's Dataset from its parts: every run placed at its grid cell by its coordinates
    (`nan`, or `-1` for integers, where no part has a run, and in the `sv` entries beyond a
    run's `K`). When the parts cover the grid, the arrays are not filled first: for the
    4096-run hadamard benchmark (a 35 MB `singular_values`) this took 9-17 ms instead of 16-33."""
    grid = config.grid()
    dims = config.dims
    shape = tuple(len(v) for v in grid.values())
    cells = int(np.prod(shape))
    max_k = max(grid["K"])
    time_vals = parts[0]["time"].values
    flat_pos = []
    covered: dict[str, np.ndarray] = {}  # per variable: the cells some part writes
    for part in parts:
        if not np.array_equal(part["time"].values, time_vals):
            raise RuntimeError("parts disagree on save times; delete the run folder and rerun.")
        pos = tuple(_grid_positions(grid[d], part[d].values) for d in dims)
        flat_pos.append(np.ravel_multi_index(pos, shape))
        for name in part.data_vars:
            covered.setdefault(name, np.zeros(cells, bool))[flat_pos[-1]] = True
    arrays: dict[str, np.ndarray] = {}
    var_dims: dict[str, tuple] = {}
    for part, pos in zip(parts, flat_pos):
        for name, var in part.data_vars.items():
            trailing = var.dims[1:]
            if name not in arrays:
                tshape = tuple(max_k if t == "sv" else len(time_vals) for t in trailing)
                kind = var.dtype.kind
                fill, dt = (-1, np.int64) if kind in "iu" else (np.nan, np.float64)
                arrays[name] = (np.empty((cells,) + tshape, dt) if covered[name].all()
                                else np.full((cells,) + tshape, fill, dt))
                var_dims[name] = dims + trailing
            value = var.values
            target = arrays[name]
            k = value.shape[-1] if "sv" in trailing else None
            if k is not None and k < max_k:
                target[pos, ..., :k] = value
                target[pos, ..., k:] = np.nan
            else:
                target[pos] = value
    arrays = {name: a.reshape(shape + a.shape[1:]) for name, a in arrays.items()}
    coords = {d: np.asarray(v) for d, v in grid.items()}
    coords["time"] = time_vals
    coords["sv"] = np.arange(max_k)
    ds = xr.Dataset({n: (var_dims[n], a) for n, a in arrays.items()}, coords=coords)
    for name in ds.data_vars:
        ds[name].attrs["description"] = _DESCRIPTIONS.get(name, "")
    ds["time"].attrs["description"] = {
        "full": "gradient-flow time t", "gd": "GF time lr * epoch",
        "hadamard": "reduced time tau (tau = c t, ufmflow.hadamard_time_scale)",
    }[config.mode]
    ds["seed"].attrs["description"] = "jax.random.PRNGKey(seed) draws the initialization"
    ds.attrs.update(
        mode=config.mode,
        config=json.dumps(config.to_dict(), sort_keys=True),
        status_names=", ".join(f"{i} {n}" for i, n in enumerate(STATUS_NAMES)),
        ufmflow_version=_version(),
    )
    return ds


def _version() -> str:
    from .._version import __version__

    return __version__


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


def run_sweep(
    config: SweepConfig,
    *,
    progress: bool = True,
    write: bool = True,
    stats: dict | None = None,
) -> xr.Dataset:
    """Run every configuration of `config` in vmapped, sharded batches; return the Dataset.

    **Arguments:**

    - `config`: a `SweepConfig`.
    - `progress`: show a tqdm bar (runs done / total, elapsed, ETA) on stderr.
    - `write`: write the run folder `config.run_dir()`: `config.json`, `parts/` (one netCDF per
      finished batch, atomic), `results.nc`, `summary.txt`, `summary.csv` and PNG plots.
      Finished parts already there are loaded, not recomputed (resume). With `write=False`
      nothing touches the disk.
    - `stats`: if a dict, filled with timings: `compile_s`/`run_s` (per computed batch, seconds),
      `resumed` (batches loaded from parts), `units` (batches in total), `devices`.

    **Returns:** an `xarray.Dataset` with dims `config.dims` (e.g. `K, per_class, width, depth,
    init_scale, seed`) plus `time` and `sv`; per-run `status` (0 ok, 1 max_steps, 2 nonfinite,
    3 stalled), final metrics (`effective_rank`, `nc1`..`nc3`, margins) and time series
    (`singular_values`, `loss_t`, ...). `load_sweep(run_dir)` reads it back.
    """
    from tqdm.auto import tqdm

    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}.")
    units = plan_units(config)
    run_dir = config.run_dir()
    parts_dir = run_dir / "parts"
    if write:
        parts_dir.mkdir(parents=True, exist_ok=True)
        for stale in parts_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    if stats is not None:
        stats.update(compile_s=[], run_s=[], resumed=0, units=len(units),
                     devices=len(jax.devices()))

    parts: list[xr.Dataset | None] = [
        _load_part(parts_dir / f"{u.key}.nc", u) if write else None for u in units
    ]
    todo = [i for i, p in enumerate(parts) if p is None]
    done_runs = sum(len(u.runs) for u, p in zip(units, parts) if p is not None)
    if stats is not None:
        stats["resumed"] = len(units) - len(todo)
    bar = tqdm(total=config.num_runs, initial=done_runs, unit="run", disable=not progress,
               desc=f"sweep {config.mode}", dynamic_ncols=True)

    def timed_compile(unit):
        t0 = time.perf_counter()
        compiled = _compile(config, unit)
        return compiled, time.perf_counter() - t0

    # One background thread compiles the next batches while the current one runs.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    futures = {i: pool.submit(timed_compile, units[i]) for i in todo}
    try:
        for i in todo:
            unit = units[i]
            bar.set_postfix_str(unit.label)
            compiled, compile_s = futures[i].result()
            t0 = time.perf_counter()
            out, runs = _execute(config, unit, compiled)
            run_s = time.perf_counter() - t0
            part = _part_dataset(config, unit, out, runs)
            if write:
                atomic_write_netcdf(part, parts_dir / f"{unit.key}.nc")
            parts[i] = part
            if stats is not None:
                stats["compile_s"].append(compile_s)
                stats["run_s"].append(run_s)
            bar.update(len(unit.runs))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()

    ds = _assemble(config, parts)
    ds.attrs["num_devices"] = len(jax.devices())
    if write:
        atomic_write_netcdf(ds, run_dir / "results.nc")
        from ._plots import plot_sweep

        write_summary(ds, run_dir)
        plot_sweep(ds, run_dir)
    return ds


def load_sweep(path: str | os.PathLike) -> xr.Dataset:
    """Load a sweep's Dataset from its run folder (or the `results.nc` file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.nc"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pass a run folder written by `python -m ufmflow.sweep` "
            "(it holds results.nc once the sweep has finished)."
        )
    return xr.load_dataset(path, engine="h5netcdf")


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

_SUMMARY_METRICS = {
    "full": ("effective_rank", "nc1", "nc2", "nc3", "normalized_margin"),
    "gd": ("effective_rank", "nc1", "nc2", "nc3", "normalized_margin"),
    "hadamard": ("effective_rank", "kl_to_nc", "geometric_margin"),
}


def sweep_summary(ds: xr.Dataset):
    """Per configuration (every dim but `seed`): `runs`, `failed` (status != 0) and, over the
    runs with status ok, the mean and (population) std of each summary metric: effective rank,
    NC1-3 and the normalized margin (hadamard: effective rank, KL to NC, geometric margin; NC
    metrics are not defined by the reduced ODE). Returns a `pandas.DataFrame`, one row each."""
    mode = ds.attrs.get("mode", "full")
    ok = ds["status"] == 0
    cols = {"runs": xr.full_like(ds["status"].isel(seed=0), ds.sizes["seed"]),
            "failed": (~ok).sum("seed")}
    for m in _SUMMARY_METRICS[mode]:
        v = ds[m].where(ok)
        cols[f"{m}_mean"] = v.mean("seed")
        cols[f"{m}_std"] = v.std("seed")
    table = xr.Dataset(cols).drop_vars(["seed"], errors="ignore")
    return table.to_dataframe().reset_index()


def sweep_summary_text(ds: xr.Dataset) -> str:
    """The summary as an aligned text table (the dims that vary, plus `mean ± std` columns)."""
    df = sweep_summary(ds)
    mode = ds.attrs.get("mode", "full")
    dims = [d for d in ds["status"].dims if d != "seed"]
    shown = [d for d in dims if ds.sizes[d] > 1] or ["depth"]
    header = shown + ["runs", "failed"] + list(_SUMMARY_METRICS[mode])
    rows = []
    for _, r in df.iterrows():
        row = [_fmt_coord(r[d]) for d in shown] + [str(int(r["runs"])), str(int(r["failed"]))]
        for m in _SUMMARY_METRICS[mode]:
            mean, std = r[f"{m}_mean"], r[f"{m}_std"]
            row.append("nan" if not np.isfinite(mean) else f"{mean:.3g} ± {std:.2g}")
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    fixed = {d: ds[d].values[0] for d in dims if d not in shown and ds.sizes[d] == 1}
    title = f"mode={mode}  " + "  ".join(f"{d}={_fmt_coord(v)}" for d, v in fixed.items())
    title += f"  seeds={ds.sizes['seed']}  (mean ± std over runs with status ok)"
    return "\n".join([title, line(header), *(line(r) for r in rows)]) + "\n"


def _fmt_coord(v) -> str:
    v = v.item() if hasattr(v, "item") else v
    return f"{v:g}" if isinstance(v, float) else str(v)


def write_summary(ds: xr.Dataset, run_dir: str | os.PathLike) -> str:
    """Write `summary.txt` and `summary.csv` (atomically) into `run_dir`; return the text."""
    run_dir = Path(run_dir)
    text = sweep_summary_text(ds)
    atomic_write_text(run_dir / "summary.txt", text)
    atomic_write_text(run_dir / "summary.csv", sweep_summary(ds).to_csv(index=False))
    return text
