"""The plan of a sweep: its grid cut into units, each one compiled batch and one part file.

Shapes are static in XLA, so runs are grouped by the mode's shape dims (`Mode.static`:
`(K, per_class, width, depth)` for full/gd, `K` alone for hadamard, whose depth is a traced
scalar of the reduced ODE); a group larger than the chunk size is split into equal chunks (same
shape, so still one compile). Every process of a multi-process sweep computes the same plan.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax

from ._config import SweepConfig, _hash
from ._distributed import devices_per_process
from ._modes import MODE_TABLE

_ENGINE_VERSION = 3  # bump when a part's numbers would change (3: Krylov W, padded depth)
_LABELS = {"K": "K", "per_class": "n", "width": "d", "depth": "L"}  # unit label per static dim


@dataclasses.dataclass(frozen=True)
class _Unit:
    """One compiled batch: `static` shape values, `runs` (grid coordinates, dims order)."""

    static: tuple
    runs: tuple
    label: str
    key: str  # part file stem
    solver: str  # chosen once here (`Mode.solver_for`), passed on to the run function


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
    0.502 / 0.572 s for two batches of 1024. "Per device" counts one process's devices (every
    process of a multi-process sweep plans alike)."""
    if config.chunk is not None:
        return config.chunk
    cpu = jax.devices()[0].platform == "cpu"
    return MODE_TABLE[config.mode].default_chunk(config, num_classes, devices_per_process(), cpu)


def plan_units(config: SweepConfig) -> list[_Unit]:
    """Split the grid into vmapped batches (groups by shape, chunks of at most `chunk`).
    Computed once per config and device layout (cached): the command line and `run_sweep`
    share it."""
    return list(_plan(config, devices_per_process(), jax.devices()[0].platform))


@functools.lru_cache(maxsize=32)
def _plan(config: SweepConfig, devices: int, platform: str) -> tuple[_Unit, ...]:
    del devices, platform  # cache key only (chunk_size reads them)
    mode = MODE_TABLE[config.mode]
    grid = config.grid()
    n_static = len(mode.static)
    groups = []
    for static in itertools.product(*(grid[d] for d in mode.static)):
        rest = itertools.product(*(grid[d] for d in mode.dims[n_static:]))
        groups.append((static, [(*static, *r) for r in rest]))
    settings = config.results_dict()
    for key in ("depth", "width", "init_scale", "seeds", "K", "per_class"):
        settings.pop(key, None)
    if "depth" not in mode.static and config.mode == "full":
        settings["capacity"] = max(grid["depth"])  # runs are padded to it (theory §2.9)
    units = []
    for static, runs in groups:
        n_chunks = -(-len(runs) // chunk_size(config, static[0]))
        # as even as possible: the first len % n_chunks chunks take one run more
        sizes = [len(runs) // n_chunks + (c < len(runs) % n_chunks) for c in range(n_chunks)]
        starts = [sum(sizes[:c]) for c in range(n_chunks + 1)]
        label = "-".join(f"{_LABELS[d]}{v}" for d, v in zip(mode.static, static))
        solver = mode.solver_for(config, static)
        for c in range(n_chunks):
            chunk = tuple(runs[starts[c] : starts[c + 1]])
            clabel = label if n_chunks == 1 else f"{label}-c{c}"
            h = _hash(dict(settings=settings, static=list(static), runs=[list(r) for r in chunk],
                           engine=_ENGINE_VERSION))
            units.append(_Unit(static, chunk, clabel, f"{clabel}-{h}", solver))
    return tuple(units)
