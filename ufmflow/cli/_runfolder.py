"""Run folders of the analysis commands, the same kind as the sweep's: `config.json`, labelled
netCDF results (`results.nc`, an xarray Dataset), `summary.txt` (the table the command printed)
and PNG figures, every file written atomically (a temporary file, then `os.replace`).

A folder is *finished* when its `config.json` holds the same config and `results.nc` exists
(written last); rerunning the same command then loads it instead of recomputing. A folder that
holds a different config is refused (before anything is written), so results are never
overwritten by another config's.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from .._version import __version__
from ._grammar import UsageError

CONFIG, RESULTS, SUMMARY = "config.json", "results.nc", "summary.txt"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    return obj


def config_record(analysis: str, settings: dict) -> dict:
    """What identifies a run: the analysis and every setting that determines its numbers."""
    return {"analysis": analysis, "settings": _jsonable(settings)}


def config_hash(record: dict) -> str:
    """10 hex digits of the sha1 of the canonical JSON of `record`."""
    return hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]


def default_folder(record: dict) -> Path:
    """`runs/<analysis>-<config hash>` (relative to the working directory, as the sweep's)."""
    return Path("runs") / f"{record['analysis']}-{config_hash(record)}"


def _read_record(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    return {"analysis": data.get("analysis"), "settings": data.get("settings")}


def check_folder(folder: Path, record: dict, key: str = "out") -> bool:
    """Validate a run folder before anything is written; return whether it is finished.

    **Raises:** `UsageError` naming `key` if the folder (or a parent) exists and is not a
    folder, cannot be written, or holds another config's results.
    """
    token = str(folder)
    for part in folder.parts:
        if len(part.encode()) > 255:
            raise UsageError(key, token, f"a path component is {len(part.encode())} bytes long "
                             "(at most 255)")
    if folder.exists() and not folder.is_dir():
        raise UsageError(key, token, "exists and is not a folder")
    parent = folder
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(key, token, f"'{parent}' is not a folder")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(key, token, f"'{parent}' is not writable")
    if not folder.is_dir():
        return False
    found = _read_record(folder)
    if found is None:
        if any(p for p in folder.iterdir() if not p.name.startswith(".")):
            raise UsageError(key, token, f"is not empty and has no {CONFIG}: not a run folder "
                             "of this command; pick another out=")
        return False
    if found != json.loads(json.dumps(record)):
        raise UsageError(key, token, f"holds another config's results ({folder / CONFIG}); "
                         "pick another out= or delete the folder")
    return (folder / RESULTS).is_file() and (folder / SUMMARY).is_file()


def write_text(path: Path, text: str) -> None:
    from ..sweep._store import atomic_write_text

    atomic_write_text(path, text)


def start(folder: Path, record: dict) -> None:
    """Create the folder and write `config.json` (with the package version and the date)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = dict(record, ufmflow=__version__,
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    write_text(folder / CONFIG, json.dumps(data, indent=2, sort_keys=True) + "\n")


def finish(folder: Path, record: dict, ds, summary: str) -> None:
    """Write `summary.txt`, then `results.nc` (last: its presence marks the run finished)."""
    from ..sweep._store import atomic_write_netcdf

    ds = ds.copy()
    ds.attrs.update(analysis=record["analysis"], ufmflow=__version__,
                    config=json.dumps(record["settings"], sort_keys=True))
    write_text(folder / SUMMARY, summary)
    atomic_write_netcdf(ds, folder / RESULTS)


def load(folder: Path):
    """`(Dataset, summary text)` of a finished folder."""
    import xarray as xr

    with xr.open_dataset(folder / RESULTS, engine="h5netcdf") as ds:
        return ds.load(), (folder / SUMMARY).read_text()


# --------------------------------------------------------------------------------------------
# Tables (the summaries)


def fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return str(v) if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def table(title: str, header: list[str], rows: list[list]) -> str:
    """A right-aligned text table under `title` (`%.4g` reals), as the command prints it."""
    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    lines = [f"\n{title}", "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines) + "\n"
