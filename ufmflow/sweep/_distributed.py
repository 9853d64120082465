"""Sweeps across processes: JAX's multi-controller runtime (`jax.distributed`) and the run folder.

A multi-process sweep needs no collectives. Every process computes the same plan; unit `i` (in
plan order) belongs to process `i mod P`, which runs it on its own devices
(`jax.local_devices()`) and writes its part into the one run folder, a shared file system.
Every process then waits for the other processes' parts and assembles the same Dataset;
process 0 alone writes `results.nc`, the summary and the plots. A rerun resumes as usual: each
process computes only its missing units.

Turn it on with `initialize_distributed()` (or `jax.distributed.initialize(...)`) before any
JAX computation, then `run_sweep` splits the units whenever `jax.process_count() > 1`.
`python -m ufmflow.sweep` initializes from the environment: `UFMFLOW_COORDINATOR`
(`host:port` of process 0), `UFMFLOW_NUM_PROCESSES`, `UFMFLOW_PROCESS_ID`, or
`UFMFLOW_DISTRIBUTED=1` for JAX's own cluster detection (SLURM, Open MPI, ...).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax

ENV_COORDINATOR = "UFMFLOW_COORDINATOR"
ENV_NUM_PROCESSES = "UFMFLOW_NUM_PROCESSES"
ENV_PROCESS_ID = "UFMFLOW_PROCESS_ID"
ENV_DISTRIBUTED = "UFMFLOW_DISTRIBUTED"
ENV_WAIT_TIMEOUT = "UFMFLOW_WAIT_TIMEOUT"
DEFAULT_WAIT_TIMEOUT = 3600.0  # seconds without a new part from another process


def requested_by_env() -> bool:
    """Whether the environment asks for a multi-process sweep (`UFMFLOW_COORDINATOR` set, or
    `UFMFLOW_DISTRIBUTED` one of 1, true, yes)."""
    flag = os.environ.get(ENV_DISTRIBUTED, "").strip().lower()
    return bool(os.environ.get(ENV_COORDINATOR)) or flag in ("1", "true", "yes")


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer; set it to "
                         "the number of processes / this process's index (0-based).") from None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
) -> tuple[int, int]:
    """Start JAX's multi-controller runtime so that `run_sweep` splits a sweep over processes.

    Call it in every process before any JAX computation. Does nothing if `jax.distributed` is
    already initialized.

    **Arguments:**

    - `coordinator_address`: `host:port` of process 0 (every process passes the same); default
      the environment variable `UFMFLOW_COORDINATOR`.
    - `num_processes`, `process_id`: default `UFMFLOW_NUM_PROCESSES`, `UFMFLOW_PROCESS_ID`.
      Given none of the three (nor their variables), `jax.distributed.initialize()` detects the
      cluster itself (SLURM's `srun`, Open MPI, ...).
    - `initialization_timeout`: seconds to wait for every process to connect.

    **Returns:** `(process_index, process_count)`.

    **Raises:** `ValueError` for a non-integer variable; `RuntimeError` if JAX has already
    started its backend (call this first).
    """
    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    num = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    pid = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    try:
        jax.distributed.initialize(address, num, pid,
                                   initialization_timeout=initialization_timeout)
    except RuntimeError as err:
        if "before any JAX computations" in str(err):
            raise RuntimeError(
                "jax.distributed must start before JAX runs anything: call "
                "ufmflow.initialize_distributed() (or set UFMFLOW_COORDINATOR etc. before "
                "`python -m ufmflow.sweep`) at the top of the script.") from err
        raise
    return jax.process_index(), jax.process_count()


def process_layout(distributed: bool | None, write: bool) -> tuple[int, int]:
    """`(index, count)` of this process among those that share the sweep's units.

    `distributed=None` (default): initialize from the environment if it asks to (see
    `requested_by_env`), then split over `jax.process_count()` processes. `True`: the same, and
    initialize from JAX's cluster detection if nothing did yet. `False`: this process runs
    every unit on its own devices.
    """
    if distributed is False:
        return 0, 1
    if not jax.distributed.is_initialized() and (distributed or requested_by_env()):
        initialize_distributed()
    count = jax.process_count()
    if count > 1 and not write:
        raise ValueError(
            "distributed sweeps exchange their results through the run folder: pass "
            "write=True, or distributed=False to run every batch in this process.")
    return jax.process_index(), count


def local_devices() -> list:
    """The devices this process runs its batches on."""
    return jax.local_devices()


def devices_per_process() -> int:
    """Process 0's device count: the same number in every process, so every process plans the
    same units (on one process: `len(jax.devices())`)."""
    return sum(1 for d in jax.devices() if d.process_index == 0)


def owner(unit_index: int, count: int) -> int:
    """The process that computes unit `unit_index` (plan order) of `count`: round-robin."""
    return unit_index % count


def wait_timeout(value: float | None) -> float:
    """`value`, or `UFMFLOW_WAIT_TIMEOUT`, or one hour."""
    if value is not None:
        return float(value)
    text = os.environ.get(ENV_WAIT_TIMEOUT, "").strip()
    return float(text) if text else DEFAULT_WAIT_TIMEOUT


def wait_for_parts(paths: dict[int, Path], load, *, timeout: float, owners: dict[int, int],
                   on_part=None, poll: float = 0.2) -> dict:
    """Wait until every part in `paths` (`{unit index: path}`) exists and loads; return
    `{unit index: load(index, path)}`. `load` returns `None` for a file that is not (yet) a
    readable part. `on_part(index, part)` is called as each arrives.

    **Raises:** `TimeoutError` when no new part arrives for `timeout` seconds, naming the
    missing parts and the processes that owe them.
    """
    pending = dict(paths)
    got = {}
    last = time.monotonic()
    while pending:
        for i, path in list(pending.items()):
            part = load(i, path) if path.exists() else None
            if part is not None:
                got[i] = part
                del pending[i]
                last = time.monotonic()
                if on_part is not None:
                    on_part(i, part)
        if not pending:
            break
        if time.monotonic() - last > timeout:
            missing = sorted(pending.items())
            names = ", ".join(f"{p.name} (process {owners[i]})" for i, p in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise TimeoutError(
                f"no new part arrived in {timeout:g} s; still missing {len(missing)}: "
                f"{names}{more} in {missing[0][1].parent}. Did a process fail? Rerun the same "
                f"command on every process to resume, or raise {ENV_WAIT_TIMEOUT} (seconds) or "
                "run_sweep(wait_timeout=...) for slow batches.")
        time.sleep(poll)
        poll = min(2.0, poll * 1.5)
    return got
