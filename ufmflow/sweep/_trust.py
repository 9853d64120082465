"""Run folders you can trust: part checksums and range checks, the folder lock, the folder's
config check (and `overwrite`), provenance, and CF-style `long_name`/`units` of every variable.

- **Parts.** Each part carries `sha256` (of its variables' and coordinates' names, dtypes,
  shapes and bytes) and `config_hash` (`SweepConfig.short_hash()`); `verify_part` recomputes
  the checksum and checks every value's possible range (effective rank in `[1, K]` up to
  rounding, singular values >= 0, status codes known). A part that fails is recomputed, with a
  warning naming it.
- **Lock.** `out/.lock`, created with `O_CREAT | O_EXCL`, holds the writer's PID and host; a
  second process is refused with one line naming the holder; the lock of a dead process on this
  host is taken over.
- **Config.** A folder whose `config.json` holds another sweep's settings is refused unless
  `overwrite=True`, which removes the old results first.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import warnings
from pathlib import Path

import numpy as np

from ._errors import SweepInputError

LOCK_NAME = ".lock"
HELD_LOCKS: set[Path] = set()  # this process's locks (an interrupt handler releases them)
RANK_SLACK = 1e-6  # effective rank may leave [1, K] by rounding only
# What a run folder holds (anything else in a folder without config.json: not ours).
_OURS_FILES = {"config.json", "results.nc", "summary.txt", "summary.csv", "parts"}


# --------------------------------------------------------------------------------------------
# Checksums and ranges


def checksum(ds) -> str:
    """sha256 over every variable and coordinate of `ds`: name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(ds.variables):
        a = np.ascontiguousarray(ds[name].values)
        if a.dtype.kind == "f":  # one NaN bit pattern (netCDF decoding canonicalizes them)
            a = np.where(np.isnan(a), np.nan, a).astype(a.dtype)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def range_problem(ds) -> str | None:
    """Why a part's values are impossible, or `None`: status codes outside the known ones,
    negative singular values, an effective rank outside `[1, K]` (beyond rounding)."""
    from ..solvers._status import STATUS_NAMES

    if "status" in ds:
        st = ds["status"].values
        if np.any((st < 0) | (st >= len(STATUS_NAMES))):
            return f"status codes outside 0..{len(STATUS_NAMES) - 1}"
    if "singular_values" in ds:
        sv = ds["singular_values"].values
        if np.any(sv[np.isfinite(sv)] < -RANK_SLACK * max(1.0, np.nanmax(np.abs(sv), initial=0))):
            return "negative singular values"
    k = ds["K"].values if "K" in ds.coords else None
    for name in ("effective_rank", "effective_rank_t"):
        if name not in ds or k is None:
            continue
        er = ds[name].values
        kk = np.reshape(k, k.shape + (1,) * (er.ndim - k.ndim)) if er.ndim else k
        fin = np.isfinite(er)
        bad = fin & ((er < 1 - RANK_SLACK) | (er > kk + RANK_SLACK))
        if np.any(bad):
            return f"{name} outside [1, K]"
    return None


def verify_part(ds, path: Path, config_hash: str) -> bool:
    """Whether a loaded part is intact (checksum, config hash, ranges); warns when not."""
    why = None
    if ds.attrs.get("config_hash") != config_hash:
        why = "written for another config" if "config_hash" in ds.attrs else "no config hash"
    elif ds.attrs.get("sha256") != checksum(ds):
        why = "checksum mismatch" if "sha256" in ds.attrs else "no checksum"
    else:
        why = range_problem(ds)
    if why:
        warnings.warn(f"part {path} is corrupt ({why}); recomputing it", stacklevel=3)
        return False
    return True


def seal_part(ds, config_hash: str) -> None:
    """Stamp `ds` (a part) with its config hash and checksum (in place)."""
    ds.attrs["config_hash"] = config_hash
    ds.attrs["sha256"] = checksum(ds)


# --------------------------------------------------------------------------------------------
# The folder: path checks, config check, overwrite, lock


def check_path(folder: Path) -> None:
    """Refuse (one line naming `out`) a folder path that cannot be a run folder: a component
    over 255 bytes, a file in its place or above it, an unwritable parent."""
    token = str(folder)
    for part in folder.parts:
        if len(part.encode()) > 255:
            raise SweepInputError("out", token, f"a path component is {len(part.encode())} "
                                  "bytes long (at most 255)")
    if len(os.fsencode(folder.absolute())) > 4000:
        raise SweepInputError("out", token, "the path is over 4000 bytes long")
    if folder.exists() and not folder.is_dir():
        raise SweepInputError("out", token, "exists and is not a folder")
    parent = folder
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise SweepInputError("out", token, f"'{parent}' is not a folder")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise SweepInputError("out", token, f"'{parent}' is not writable")


def check_config(folder: Path, config, *, overwrite: bool) -> bool:
    """Refuse a folder holding another sweep (unless `overwrite`); return whether its old
    contents must be removed (overwrite of another config's folder)."""
    if not folder.is_dir():
        return False
    cfg = folder / "config.json"
    if not cfg.exists():
        foreign = [p.name for p in folder.iterdir()
                   if not p.name.startswith(".") and p.name not in _OURS_FILES
                   and not p.name.endswith(".png")]
        if foreign and not overwrite:
            raise SweepInputError("out", str(folder), "is not empty and has no config.json: not "
                                  "a sweep's run folder; pick another out=")
        return False
    try:
        from ._config import SweepConfig

        saved = SweepConfig(**json.loads(cfg.read_text())).results_dict()
    except Exception:  # noqa: BLE001 - unreadable, or another version's keys
        saved = None
    if saved == config.results_dict():
        return False
    if not overwrite:
        raise SweepInputError("out", str(folder), "holds another config's results "
                              f"({cfg}); pick another out=, or pass overwrite=1 to replace them")
    return True


def clear_folder(folder: Path) -> None:
    """Remove a run folder's results (config, parts, results, summaries, plots, tmp files)."""
    for p in folder.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and p.name == "parts":
            shutil.rmtree(p)
        elif p.name in _OURS_FILES or p.suffix == ".png" or p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(folder: Path, name: str = LOCK_NAME) -> Path:
    """Create `folder/name` atomically (`O_EXCL`) holding `pid host`; a lock held by a live
    process is refused (`SweepInputError` naming the PID), a dead one's on this host taken
    over. Returns the lock's path (`release_lock` removes it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweepInputError("out", str(folder), f"cannot create the folder ({err.strerror}); "
                              "pick another out=") from None
    path = folder / name
    host = socket.gethostname()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except PermissionError as err:
            raise SweepInputError("out", str(folder), f"cannot write the folder "
                                  f"({err.strerror}); pick another out=") from None
        except FileExistsError:
            try:
                words = path.read_text().split()
                pid, holder_host = int(words[0]), (words[1] if len(words) > 1 else host)
            except (OSError, ValueError, IndexError):
                pid, holder_host = None, host
            if pid is not None and (holder_host != host or _alive(pid)):
                raise SweepInputError(
                    "out", str(folder), f"in use by process {pid} on {holder_host} (lock file "
                    f"{path}); wait for it to finish, or delete the lock if that process is gone"
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is dead (or the file is empty)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {host}\n")
        HELD_LOCKS.add(path)
        return path
    raise SweepInputError("out", str(folder), f"could not take the lock {path}; retry")


def release_lock(path: Path | None) -> None:
    """Remove a lock this process holds (only if it still holds our PID)."""
    if path is None:
        return
    HELD_LOCKS.discard(path)
    try:
        if path.read_text().split()[0] == str(os.getpid()):
            path.unlink()
    except (OSError, IndexError):
        pass


def release_all_locks() -> None:
    """Release every lock this process holds (for an interrupt handler)."""
    for path in list(HELD_LOCKS):
        release_lock(path)


# --------------------------------------------------------------------------------------------
# Provenance


def _git_commit() -> str:
    repo = Path(__file__).resolve().parents[2]
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=5)
        return res.stdout.strip() if res.returncode == 0 else ""
    except Exception:  # noqa: BLE001 - no git, not a repository: provenance without it
        return ""


def provenance() -> dict:
    """Package versions, git commit (when available), date (UTC ISO), device kind and count,
    process count: attributes of every part and of `results.nc`."""
    from importlib import metadata

    import jax

    from .._version import __version__

    out = {"ufmflow_version": __version__}
    for pkg in ("jax", "jaxlib", "diffrax", "equinox", "numpy", "xarray"):
        try:
            out[f"{pkg}_version"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[f"{pkg}_version"] = "unknown"
    out["git_commit"] = _git_commit() or "unknown"
    out["date_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    devs = jax.devices()
    out["device_kind"] = str(devs[0].device_kind)
    out["device_platform"] = str(devs[0].platform)
    out["num_devices"] = len(devs)
    out["num_processes"] = jax.process_count()
    return out


# --------------------------------------------------------------------------------------------
# CF attributes

TIME_UNITS = {"full": "GF time", "gd": "GF time (lr x epoch)", "hadamard": "reduced time tau"}
# name -> (long_name, units); "1" = dimensionless
CF = {
    "singular_values": ("singular values of the class-mean logits", "1"),
    "loss_t": ("cross-entropy loss", "1"),
    "log_loss_t": ("log of the cross-entropy loss", "1"),
    "min_margin_t": ("smallest sample margin", "1"),
    "param_norm_t": ("norm of all parameters", "1"),
    "balance_residual_t": ("balance residual max_l ||D_l(t) - D_l(0)||_F", "1"),
    "effective_rank_t": ("effective rank of the class-mean logits", "1"),
    "status": ("run status code (0 ok)", "1"),
    "num_steps": ("solver steps attempted", "1"),
    "num_rejected": ("rejected solver steps", "1"),
    "num_rescues": ("returns of the stall rescue to a checkpoint", "1"),
    "effective_rank": ("final effective rank of the class-mean logits", "1"),
    "nc1": ("NC1 within-class variability", "1"),
    "nc2": ("NC2 distance to the simplex ETF", "1"),
    "nc3": ("NC3 self-duality", "1"),
    "min_margin": ("final smallest margin", "1"),
    "normalized_margin": ("final normalized margin", "1"),
    "geometric_margin": ("final geometric margin", "1"),
    "kl_to_nc": ("KL divergence to neural collapse", "1"),
    "K": ("number of classes", "1"),
    "per_class": ("samples per class", "1"),
    "width": ("feature width", "1"),
    "depth": ("depth L (weight matrices)", "1"),
    "init_scale": ("initialization scale", "1"),
    "seed": ("PRNG seed of the initialization", "1"),
    "sv": ("singular value index", "1"),
}


def add_cf_attrs(ds, mode: str) -> None:
    """`long_name` and `units` on every variable and coordinate of `ds` (in place)."""
    for name in ds.variables:
        if name == "time":
            ds[name].attrs.update(long_name=TIME_UNITS.get(mode, "time"),
                                  units=TIME_UNITS.get(mode, "1"))
        elif name in CF:
            long_name, units = CF[name]
            ds[name].attrs.update(long_name=long_name, units=units)
