"""`run_sweep`: plan, compile, run and store a sweep's units, resumably, on one or many processes.

- **Batches.** The grid is planned once into units (`plan_units`): one compiled program per
  group of equal shapes, every run of a unit a row of its sharded batch (`_execute`).
- **Checkpoints.** Each finished unit is written atomically to `out/parts/<label>-<hash>.nc`;
  a rerun of the same command loads finished parts and computes only the missing ones, so a
  killed sweep resumes and ends with the same Dataset as an uninterrupted run.
- **Processes.** Under `jax.distributed` unit `i` belongs to process `i mod P`; every process
  waits for the others' parts and assembles the same Dataset, process 0 writes it
  (`_distributed`).
- **Failures** (solver step limit, non-finite state, stalled step size) are per-run `status`
  codes (`STATUS_NAMES`); the sweep goes on.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from typing import TYPE_CHECKING

import jax

from . import _distributed
from ._config import SweepConfig
from ._execute import _compile, _execute
from ._plan import plan_units
from ._store import (_assemble, _load_part, _part_dataset, atomic_write_netcdf,
                     atomic_write_text, remove_stale_tmp)
from ._guard import check_resources
from ._summary import write_summary
from ._trust import (LOCK_NAME, acquire_lock, check_config, check_path, clear_folder,
                     provenance, release_lock, seal_part)

if TYPE_CHECKING:  # imported where used: `import ufmflow` stays free of it
    import xarray as xr


def run_sweep(
    config: SweepConfig,
    *,
    progress: bool = True,
    write: bool = True,
    stats: dict | None = None,
    distributed: bool | None = None,
    wait_timeout: float | None = None,
    overwrite: bool = False,
    max_memory_gb: float | None = None,
    allow_big: bool = False,
) -> xr.Dataset:
    """Run every configuration of `config` in vmapped, sharded batches; return the Dataset.

    **Arguments:**

    - `config`: a `SweepConfig`.
    - `progress`: show a tqdm bar (runs done / total, elapsed, ETA) on stderr (process 0 only).
    - `write`: write the run folder `config.run_dir()`: `config.json`, `parts/` (one netCDF per
      finished batch, atomic), `results.nc`, `summary.txt`, `summary.csv` and PNG plots.
      Finished parts already there are loaded, not recomputed (resume). With `write=False`
      nothing touches the disk.
    - `stats`: if a dict, filled with timings: `compile_s`/`run_s` (per batch computed here,
      seconds), `resumed` (batches loaded from parts at the start), `units` (batches in total),
      `devices` (all processes'), `process_index`, `num_processes`, `computed` (the indices, in
      plan order, of the batches this process computed).
    - `distributed`: split the batches over the processes of `jax.distributed` (see
      `initialize_distributed`): unit `i` to process `i mod P`, each on its own devices, all
      writing into the one run folder (a file system every process sees). `None` (default):
      whenever `jax.process_count() > 1`, after initializing from the environment if
      `UFMFLOW_COORDINATOR` or `UFMFLOW_DISTRIBUTED` is set. `True`: also initialize through
      JAX's cluster detection (SLURM, ...) if nothing did yet. `False`: this process runs
      every batch.
    - `wait_timeout`: seconds a process waits for the next part of another process before it
      gives up (default `UFMFLOW_WAIT_TIMEOUT` or 3600).

    - `overwrite`: a run folder holding another config's results is refused (`SweepInputError`
      naming `out`) unless `overwrite=True`, which removes those results first.
    - `max_memory_gb`, `allow_big`: the resource guard (`_guard`): before anything is written
      the sweep's memory (results, largest batch) and work (runs x parameters x steps bound;
      gd: `t1/lr` epochs) are estimated and a sweep over the limits is refused
      (`SweepInputError` with the estimate and the limit). `max_memory_gb` replaces the memory
      limit (80% of RAM); `allow_big=True` skips the guard.

    **Folder safety.** A lock file `out/.lock` (the PID) stops a second process from writing the
    same folder (`SweepInputError` naming the holder); every part carries a sha256 checksum and
    the config hash, verified on load with the values' ranges: a corrupt or unreadable part is
    recomputed with a warning naming it. The parts and `results.nc` carry provenance (package
    versions, git commit, date, devices, processes, the solver and time change of each batch,
    compile and run seconds).

    **Returns:** an `xarray.Dataset` with dims `config.dims` (e.g. `K, per_class, width, depth,
    init_scale, seed`) plus `time` and `sv`; per-run `status` (0 ok, 1 max_steps, 2 nonfinite,
    3 stalled), final metrics (`effective_rank`, `nc1`..`nc3`, margins) and time series
    (`singular_values`, `loss_t`, ...). Every process of a distributed sweep returns the same
    Dataset. `load_sweep(run_dir)` reads it back.

    **Raises:** `TypeError` for a `config` that is not a `SweepConfig`; `ValueError` for a
    distributed sweep with `write=False`; `SweepInputError` (a `ValueError`) for a sweep over
    the resource limits, a folder path that cannot be written, a folder of another config
    (without `overwrite`) or one locked by another process; `TimeoutError` when another process's parts stop
    arriving.
    """
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}.")
    index, count = _distributed.process_layout(distributed, write)
    tag = f"p{index}-{os.getpid()}" if count > 1 else None  # tmp names unique per process
    check_resources(config, max_memory_gb=max_memory_gb, allow_big=allow_big)
    units = plan_units(config)
    run_dir = config.run_dir()
    parts_dir = run_dir / "parts"
    paths = [parts_dir / f"{u.key}.nc" for u in units]
    chash = config.short_hash()
    lock = None
    if write:
        check_path(run_dir)
        clear = check_config(run_dir, config, overwrite=overwrite) if index == 0 else False
        lock = acquire_lock(run_dir, LOCK_NAME if count == 1 else f"{LOCK_NAME}.p{index}")
    try:
        if write:
            if clear:
                clear_folder(run_dir)
            parts_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_tmp(parts_dir, f"p{index}-*" if count > 1 else None)
            if index == 0:
                remove_stale_tmp(run_dir, None if count == 1 else "p0-*")
                atomic_write_text(run_dir / "config.json",
                                  json.dumps(config.to_dict(), indent=2) + "\n", tag=tag)
        return _run_units(config, units, paths, run_dir, chash, write=write, progress=progress,
                          stats=stats, index=index, count=count, tag=tag,
                          wait_timeout=wait_timeout)
    finally:
        release_lock(lock)


def _run_units(config, units, paths, run_dir, chash, *, write, progress, stats, index, count,
               tag, wait_timeout) -> xr.Dataset:
    from tqdm.auto import tqdm

    prov = provenance()
    parts: list[xr.Dataset | None] = [
        _load_part(path, u, chash) if write else None for u, path in zip(units, paths)
    ]
    owner = [_distributed.owner(i, count) for i in range(len(units))]
    todo = [i for i, p in enumerate(parts) if p is None and owner[i] == index]
    elsewhere = {i: paths[i] for i, p in enumerate(parts) if p is None and owner[i] != index}
    if stats is not None:
        stats.update(compile_s=[], run_s=[], resumed=len(units) - len(todo) - len(elsewhere),
                     units=len(units), devices=len(jax.devices()), process_index=index,
                     num_processes=count, computed=list(todo))
    done_runs = sum(len(u.runs) for u, p in zip(units, parts) if p is not None)
    desc = f"sweep {config.mode}" + (f" [process {index}/{count}]" if count > 1 else "")
    bar = tqdm(total=config.num_runs, initial=done_runs, unit="run", desc=desc,
               disable=not progress or index != 0, dynamic_ncols=True)

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
            part = _part_dataset(config, unit, out, runs, process=(index, count))
            part.attrs.update(prov, solver=unit.solver, time_change=_time_change(config, unit),
                              compile_s=compile_s, run_s=run_s)
            seal_part(part, chash)
            if write:
                atomic_write_netcdf(part, paths[i], tag=tag)
            parts[i] = part
            if stats is not None:
                stats["compile_s"].append(compile_s)
                stats["run_s"].append(run_s)
            bar.update(len(unit.runs))
        if elsewhere:
            bar.set_postfix_str(f"waiting for {len(elsewhere)} parts of other processes")

            def arrived(i, part):
                parts[i] = part
                bar.update(len(units[i].runs))

            _distributed.wait_for_parts(
                elsewhere, lambda i, path: _load_part(path, units[i], chash),
                timeout=_distributed.wait_timeout(wait_timeout), owners=dict(enumerate(owner)),
                on_part=arrived)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()

    ds = _assemble(config, parts)
    ds.attrs.update(prov)
    ds.attrs["num_devices"] = len(jax.devices())
    ds.attrs["num_processes"] = count
    # The date of the newest part (a resumed sweep assembles the same Dataset), and per batch
    # the solver and time change it ran with and its compile/run seconds.
    ds.attrs["date_utc"] = max(str(p.attrs.get("date_utc", "")) for p in parts) or prov["date_utc"]
    ds.attrs["batches"] = json.dumps({
        u.label: dict(solver=p.attrs.get("solver", u.solver),
                      time_change=p.attrs.get("time_change", _time_change(config, u)),
                      compile_s=float(p.attrs.get("compile_s", float("nan"))),
                      run_s=float(p.attrs.get("run_s", float("nan"))),
                      date_utc=str(p.attrs.get("date_utc", "")))
        for u, p in zip(units, parts)}, sort_keys=True)
    ds.attrs["solvers"] = ", ".join(sorted({f"{u.solver}/{_time_change(config, u)}"
                                            for u in units}))
    if write and index == 0:
        atomic_write_netcdf(ds, run_dir / "results.nc", tag=tag)
        from ._plots import plot_sweep

        write_summary(ds, run_dir, tag=tag)
        plot_sweep(ds, run_dir)
    return ds


def _time_change(config: SweepConfig, unit) -> str:
    """The time change a batch ran with (`"gd"` has none)."""
    return "none (gradient descent)" if unit.solver == "gd" else config.time_change
