"""Running a unit: one compiled program per group, its batch sharded over this process's devices.

The batch axis is sharded over `jax.local_devices()` (`NamedSharding` over a 1-D mesh named
`"batch"`), padded to a multiple of the device count by repeating its last run (the padding is
dropped). Each device runs its slice as an independent program (`shard_map`, no collectives:
runs never interact), so a 4-device run equals a 1-device run, and processes of a
multi-process sweep never need to talk to each other.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..solvers._devices import device_order
from ._config import SweepConfig
from ._distributed import local_devices
from ._modes import MODE_TABLE
from ._plan import _Unit

_FAST_COMPILE_MAX_BATCH = 64


def _mesh_sharding() -> NamedSharding:
    mesh = Mesh(np.asarray(local_devices()), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch"))


# diffrax's implicit solvers (optimistix root finder, lineax linear solve) do not trace under
# `shard_map` in JAX 0.10 (closure conversion and `lax.switch` see the manual mesh axis in their
# types: "Closure-converted function called with different dynamic arguments", "switch
# branches must have equal output types"). Their batches run as one plain program on this
# process's first device instead.
_UNSHARDABLE_SOLVERS = ("kvaerno5",)


def _program_sharding(solver: str):
    """How a batch of `solver` is laid out: over every local device (the mesh), or, for the
    solvers that cannot run under `shard_map`, on the first local device."""
    if solver in _UNSHARDABLE_SOLVERS:
        return jax.sharding.SingleDeviceSharding(local_devices()[0])
    return _mesh_sharding()


def _int_dtype():
    return jnp.int64 if jax.config.jax_enable_x64 else jnp.int32


def _float_dtype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def fast_compile_enabled(config: SweepConfig, batch: int = 1) -> bool:
    """`fast_compile`: compile with XLA backend optimization level 0. Measured on the default
    sweep's groups (K=8, width 16, 2-core CPU): compile 4-13 s instead of 12-23 s, batches run
    2-3x slower (depth 8, 5 runs: 1.30 s instead of 0.47 s). Right for sweeps that compile more
    than they run. `auto` = on for gd batches of at most 64 runs on a CPU (one program per depth, a second
    or so of running each); off for full GF (one program for every depth, `_Full`), for bigger
    batches, for hadamard (one program per K, long runs) and for GPUs/TPUs."""
    if config.fast_compile == "auto":
        return (MODE_TABLE[config.mode].fast_compile_auto
                and jax.devices()[0].platform == "cpu" and batch <= _FAST_COMPILE_MAX_BATCH)
    return config.fast_compile == "on"


def _sequential_local_batch(config: SweepConfig, solver: str) -> bool:
    """Whether a device runs its runs one after another (`lax.map`) instead of `vmap`.

    On a CPU, for full-GF runs with any solver (`Mode.sequential_on_cpu`):

    - a vmapped adaptive solve is one `while` loop over the batch that runs every run for as
      many steps as its slowest, each step at the cost of the deepest (padded) run, selecting
      over the whole state each step: one at a time is faster (default sweep, Rosenbrock-W:
      8.7 s against 27.7 s; K=8, width 16, depths 1-4, 5 seeds, Tsit5, t1 1e5: 0.57 s against
      0.84 s);
    - its program is half the compile: the vmapped loop's selects and batched predicates
      roughly double XLA's work (the same two Tsit5 sweeps: 18 s against 34 s and 21 s against
      40 s of compile on a shared 2-core CPU);
    - with several CPU devices jaxlib's batched LAPACK LU (Rosenbrock-W, Kvaerno5)
      parallelizes over the batch on the intra-op thread pool that the devices' own executions
      occupy, and deadlocks (seen with 2 devices on 2 cores).

    The numbers agree with a vmapped run to rounding (~1e-10 relative), not bit for bit.
    Gradient descent (a fixed number of epochs, every run ends together) stays vmapped; an
    accelerator vmaps everything.
    """
    devices = local_devices()
    return (devices[0].platform == "cpu"
            and MODE_TABLE[config.mode].sequential_on_cpu(solver))


@functools.lru_cache(maxsize=128)
def _compile_cached(config, static, solver, batch, devices_key):
    del devices_key  # cache key only
    mode = MODE_TABLE[config.mode]
    sharding = _program_sharding(solver)
    args = [jax.ShapeDtypeStruct((batch,), _int_dtype() if d == "seed" else _float_dtype(),
                                 sharding=sharding) for d in mode.traced]
    # shard_map: every device runs its slice of the batch as an independent program, with no
    # cross-device collectives (runs never interact), and stops when its own slowest run is done.
    local = mode.batch_fn(config, static, solver)
    if local is None:
        one = mode.run_fn(config, static, solver)
        if _sequential_local_batch(config, solver):
            local = lambda *xs: jax.lax.map(lambda x: one(*x), xs)  # noqa: E731
        else:
            local = jax.vmap(one)
    if isinstance(sharding, NamedSharding):
        local = jax.shard_map(local, mesh=sharding.mesh, in_specs=sharding.spec,
                              out_specs=sharding.spec, check_vma=False)
    jitted = jax.jit(local, in_shardings=sharding, out_shardings=sharding)
    options = {"xla_backend_optimization_level": 0} if fast_compile_enabled(config, batch) else {}
    options.update(mode.compiler_options(config, solver))
    return jitted.lower(*args).compile(compiler_options=options or None)


def _padded_batch(n_runs: int) -> int:
    n_dev = len(local_devices())
    return -(-n_runs // n_dev) * n_dev


def _compile(config: SweepConfig, unit: _Unit):
    """The unit's compiled program (cached: one per group shape and settings)."""
    # The program depends on the settings and the group's shapes, not on the grid's values
    # (but on the largest depth: full-GF runs are padded to it, theory §2.9).
    settings_only = dataclasses.replace(
        config, depth=(max(config.depth),), width=(1,), init_scale=(1.0,), seeds=(0,), K=(2,), per_class=(1,),
        chunk=1, out=None,
    )
    devices_key = tuple(str(d) for d in local_devices())
    return _compile_cached(settings_only, unit.static, unit.solver,
                           _padded_batch(len(unit.runs)), devices_key)


def _unit_inputs(config: SweepConfig, unit: _Unit) -> list[np.ndarray]:
    """The program's per-run inputs (`Mode.traced`), padded to the device multiple."""
    dims = config.dims
    cols = {d: [r[i] for r in unit.runs] for i, d in enumerate(dims)}
    pad = _padded_batch(len(unit.runs)) - len(unit.runs)
    arrays = [np.asarray(cols[d], _int_dtype() if d == "seed" else _float_dtype())
              for d in MODE_TABLE[config.mode].traced]
    # The padding repeats the shallowest run (its results are dropped): a device runs its runs
    # one after another on a CPU, and a copy of the last, deepest run cost the default sweep's
    # second device 466 more steps than the first's 5289 (~8% of its run time).
    first = int(np.argmin(cols["depth"])) if "depth" in cols else 0
    return [np.concatenate([a, np.repeat(a[first:first + 1], pad)]) for a in arrays]


def _execute(config: SweepConfig, unit: _Unit, compiled) -> tuple[dict[str, np.ndarray],
                                                                   np.ndarray]:
    """Run a batch: its results in the devices' order, and `runs[i]`, the index in
    `unit.runs` of result row `i` (padding dropped). The rows are not put back in the unit's
    order: the part and the assembly place every run by its coordinates (a copy of every
    output saved, ~10 ms for 2048 hadamard runs)."""
    sharding = _program_sharding(unit.solver)
    inputs = _unit_inputs(config, unit)
    order = device_order(len(inputs[0]), len(local_devices()))
    out = compiled(*[jax.device_put(a[order], sharding) for a in inputs])
    out = {k: np.asarray(v) for k, v in out.items()}
    real = order < len(unit.runs)
    if not real.all():
        out = {k: v[real] for k, v in out.items()}
    return out, order[real]
