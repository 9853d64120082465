"""Run-folder storage: atomic writes (a temporary file in the same folder, then `os.replace`), so
an interrupted command never leaves a half-written file under its final name."""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr


def atomic_write_netcdf(ds: xr.Dataset, path: Path) -> None:
    """Write `ds` to `path` as netCDF (h5netcdf) atomically: a tmp file, then `os.replace`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    ds.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a tmp file in the same folder, then `os.replace`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
