"""Independent runs spread over this process's devices: `device_order`, `use_cpu_cores`.

The batched solvers' runs never interact, so a batch splits over `jax.local_devices()` with no
communication: each device runs a contiguous block of the (reordered, padded) batch as its own
program (`jax.shard_map`), and stops when its own slowest run is done. On a GPU there is one
device per chip; on a CPU, JAX makes one device for the whole machine unless told otherwise
before it starts, and one device runs one program on one core at a time: `use_cpu_cores`
asks for one device per core.
"""

from __future__ import annotations

import os
import shlex
import warnings
from collections.abc import MutableMapping

import numpy as np

from ._xla import _backend_started

_COUNT_FLAG = "--xla_force_host_platform_device_count"


def device_order(batch: int, n_dev: int) -> np.ndarray:
    """`order[p]`: the run at batch position `p`, where device `d` takes the contiguous block
    of positions `[d B/n, (d+1) B/n)` (`batch` a multiple of `n_dev`). Runs are dealt
    round-robin (device `d` gets runs `d, d + n, d + 2n, ...`): a grid in depth-major order
    then gives every device the same mix of depths, instead of giving the first devices the
    quick shallow runs and leaving them idle while the last ones finish the deep ones.
    Measured on the 4096-run hadamard benchmark (K=64, depth 1..8, 2 CPU devices, 8
    alternating repeats in one process): 0.610 s instead of 0.649 s (min), 0.639 s instead of
    0.684 s (median); dealing each device's runs deepest first as well gained nothing more
    (0.610 / 0.654 s)."""
    return np.arange(batch).reshape(batch // n_dev, n_dev).T.reshape(-1)


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_cpu_cores(count: int | None = None,
                  environ: MutableMapping[str, str] | None = None) -> int:
    """Give JAX one CPU device per core, for this process, so that `solve_hadamard_many`
    (which spreads its runs over every local device by itself) uses every core.

    By default JAX makes a single CPU device, and a device runs one program on one core at a
    time: a batch of independent runs then uses one core. This sets XLA's
    `--xla_force_host_platform_device_count` in the `XLA_FLAGS` environment variable (keeping
    the flags there), as `python -m ufmflow.sweep mode=hadamard` does. Call it before the first
    JAX computation (XLA reads `XLA_FLAGS` once, when it starts), e.g. with
    `ufmflow.fast_cpu_loops()`:

        import ufmflow as uf
        uf.use_cpu_cores()
        uf.fast_cpu_loops()

    Programs that do not spread their work (e.g. `solve_flow`, a plain `jax.jit`) still run on
    the first device; `jax.devices()` then lists `count` CPU devices.

    **Arguments:**

    - `count`: devices to make (default: the cores this process may use, `os.sched_getaffinity`).
    - `environ`: the environment to change (default `os.environ`).

    **Returns:** the device count this process's JAX will have: `count`; the count already in
    `XLA_FLAGS` if the flag is there (left as it is); or, with a warning and nothing changed,
    the current `len(jax.local_devices())` if JAX's backend has already started.

    **Raises:** `ValueError` for `count < 1`.
    """
    if count is not None and (isinstance(count, bool) or int(count) != count or count < 1):
        raise ValueError(f"count={count!r}: give a whole number of CPU devices >= 1, or None "
                         "for one per core.")
    env = os.environ if environ is None else environ
    flags = shlex.split(env.get("XLA_FLAGS", ""))
    given = [f for f in flags if f.startswith(_COUNT_FLAG + "=")]
    if given:
        return int(given[-1].split("=", 1)[1])
    if environ is None and _backend_started():
        import jax

        warnings.warn("ufmflow.use_cpu_cores() has no effect once JAX's backend has started: "
                      "call it before the first JAX computation (or set XLA_FLAGS="
                      f"'{_COUNT_FLAG}=N' before starting Python).", stacklevel=2)
        return len(jax.local_devices())
    count = cpu_cores() if count is None else int(count)
    env["XLA_FLAGS"] = shlex.join(flags + [f"{_COUNT_FLAG}={count}"])
    return count
