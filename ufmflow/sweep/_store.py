"""Run-folder storage: parts (one netCDF per finished batch), their assembly into the sweep's
Dataset, and atomic writes (a temporary file in the same folder, then `os.replace`), so an
interrupted command never leaves a half-written file under its final name.

A run folder holds `config.json`, `parts/<label>-<hash>.nc` (the hash taken over everything
that determines the part's numbers), `results.nc`, `summary.txt`, `summary.csv` and PNG plots.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .._version import __version__
from ..solvers._status import STATUS_NAMES
from ._modes import MODE_TABLE
from ._trust import add_cf_attrs, verify_part

if TYPE_CHECKING:
    import xarray as xr
    from ._config import SweepConfig
    from ._plan import _Unit


# Writes hold `WRITE_LOCK` and register their tmp file in `LIVE_TMP`, so an interrupt handler
# (the command line's Ctrl-C) can wait for a write to end and remove what is half-written.
WRITE_LOCK = threading.Lock()
LIVE_TMP: set[Path] = set()


def _tmp_path(path: Path, tag: str | None) -> Path:
    return path.with_name(f".{path.name}.{tag or os.getpid()}.tmp")


def atomic_write(path: Path, write: Callable[[Path], None], *, tag: str | None = None) -> None:
    """`write(tmp)` then `os.replace(tmp, path)`: a tmp file in the same folder, so `path`
    is never half-written. `tag` names the tmp file (default the process id)."""
    path = Path(path)
    tmp = _tmp_path(path, tag)
    with WRITE_LOCK:
        LIVE_TMP.add(tmp)
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            LIVE_TMP.discard(tmp)
            if tmp.exists():
                tmp.unlink(missing_ok=True)


def atomic_write_netcdf(ds: xr.Dataset, path: Path, *, tag: str | None = None) -> None:
    """Write `ds` to `path` as netCDF (h5netcdf) atomically: a tmp file, then `os.replace`.
    `tag` names the tmp file (default the process id; unique per writer)."""
    atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"), tag=tag)


def atomic_write_text(path: Path, text: str, *, tag: str | None = None) -> None:
    """Write `text` to `path` atomically (a tmp file in the same folder, then `os.replace`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text), tag=tag)


def remove_live_tmp(timeout: float = 1.5) -> None:
    """For an interrupt: wait (at most `timeout` s) for a write in progress, then delete every
    tmp file still registered. The write lock is kept: nothing is written after this."""
    WRITE_LOCK.acquire(timeout=timeout)
    for tmp in list(LIVE_TMP):
        tmp.unlink(missing_ok=True)


def remove_stale_tmp(folder: Path, tag: str | None = None) -> None:
    """Delete tmp files left by a killed writer: all of them, or only those of writer `tag`'s
    pattern (a glob, e.g. `p1-*`: process 1's, whatever its pid was)."""
    for stale in Path(folder).glob(f".*.{tag or '*'}.tmp"):
        stale.unlink(missing_ok=True)


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
    "num_rescues": "returns of the stall rescue (theory §2.7; full and gd modes)",
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
                  runs: np.ndarray, *, process: tuple[int, int] = (0, 1)) -> xr.Dataset:
    """A batch's results as a Dataset over `run` (row `i` is `unit.runs[runs[i]]`)."""
    import xarray as xr

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
    add_cf_attrs(ds, config.mode)
    ds.attrs["process_index"], ds.attrs["num_processes"] = process  # who computed it
    return ds


def read_part(path: Path, key: str, what: str = "batch") -> xr.Dataset | None:
    """The part at `path` if it exists, opens and carries `part_key == key`; else `None`, with a
    warning naming it when it exists but is unreadable or belongs to another `what` (the caller
    recomputes it). Shared by the sweep and `ufmflow.realnet`."""
    import xarray as xr

    if not path.exists():
        return None
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except Exception as err:  # noqa: BLE001 - truncated or garbled: recompute
        warnings.warn(f"part {path} is unreadable ({type(err).__name__}); recomputing it",
                      stacklevel=3)
        return None
    if ds.attrs.get("part_key") != key:
        warnings.warn(f"part {path} belongs to another {what}; recomputing it", stacklevel=3)
        return None
    return ds


def _load_part(path: Path, unit: _Unit, config_hash: str | None = None) -> xr.Dataset | None:
    """A finished part, or `None` (missing; or unreadable, corrupt: recomputed with a warning
    naming it, `_trust.verify_part`)."""
    ds = read_part(path, unit.key)
    if ds is None:
        return None
    if config_hash is not None and not verify_part(ds, path, config_hash):
        return None
    return ds


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
    import xarray as xr

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
    ds["time"].attrs["description"] = MODE_TABLE[config.mode].time_description
    ds["seed"].attrs["description"] = "jax.random.PRNGKey(seed) draws the initialization"
    add_cf_attrs(ds, config.mode)
    ds.attrs.update(
        mode=config.mode,
        config=json.dumps(config.to_dict(), sort_keys=True),
        status_names=", ".join(f"{i} {n}" for i, n in enumerate(STATUS_NAMES)),
        ufmflow_version=__version__,
    )
    return ds


def load_sweep(path: str | os.PathLike) -> xr.Dataset:
    """Load a sweep's Dataset from its run folder (or the `results.nc` file itself)."""
    import xarray as xr

    path = Path(path)
    if path.is_dir():
        path = path / "results.nc"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; pass a run folder written by `python -m ufmflow.sweep` "
            "(it holds results.nc once the sweep has finished)."
        )
    return xr.load_dataset(path, engine="h5netcdf")
