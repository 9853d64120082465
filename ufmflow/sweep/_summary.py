"""A sweep's summary: per configuration, the runs, the failures and the mean and std over seeds
of the mode's summary metrics (`Mode.metrics`), as a table, aligned text and CSV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._modes import MODE_TABLE
from ._store import atomic_write_text

if TYPE_CHECKING:  # imported where used: `import ufmflow` stays free of it
    import xarray as xr


def ok_runs(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with every run whose `status` is not ok (0) set to `nan` in every per-run variable
    (integer variables become float), `status` itself kept: the form for averaging, e.g.
    `ok_runs(ds)["effective_rank"].mean("seed")` averages over ok runs only (nan where none is).
    `ok_runs(ds)["status"]` still says which runs failed; `(ds["status"] == 0).sum("seed")`
    counts the runs each mean rests on."""
    ok = ds["status"] == 0
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if name == "status" or not set(ok.dims) <= set(var.dims):
            continue
        out[name] = var.where(ok)
        out[name].attrs = dict(var.attrs)
    out.attrs["masked"] = "runs with status != 0 set to nan (ufmflow.ok_runs)"
    return out


def sweep_summary(ds: xr.Dataset):
    """Per configuration (every dim but `seed`): `runs`, `failed` (status != 0), `ok` (the
    runs each mean rests on) and, over the runs with status ok, the mean and (population,
    ddof=0) std of each summary metric: effective rank,
    NC1-3 and the normalized margin (hadamard: effective rank, KL to NC, geometric margin; NC
    metrics are not defined by the reduced ODE). Returns a `pandas.DataFrame`, one row each."""
    import xarray as xr

    mode = ds.attrs.get("mode", "full")
    ok = ds["status"] == 0
    cols = {"runs": xr.full_like(ds["status"].isel(seed=0), ds.sizes["seed"]),
            "failed": (~ok).sum("seed"), "ok": ok.sum("seed")}
    for m in MODE_TABLE[mode].metrics:
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
    header = shown + ["runs", "failed", "ok"] + list(MODE_TABLE[mode].metrics)
    rows = []
    for _, r in df.iterrows():
        row = [_fmt_coord(r[d]) for d in shown] + [str(int(r["runs"])), str(int(r["failed"])),
                                                 str(int(r["ok"]))]
        for m in MODE_TABLE[mode].metrics:
            mean, std = r[f"{m}_mean"], r[f"{m}_std"]
            row.append("nan" if not np.isfinite(mean) else f"{mean:.3g} ± {std:.2g}")
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    fixed = {d: ds[d].values[0] for d in dims if d not in shown and ds.sizes[d] == 1}
    title = f"mode={mode}  " + "  ".join(f"{d}={_fmt_coord(v)}" for d, v in fixed.items())
    title += f"  seeds={ds.sizes['seed']}  (mean ± std, ddof=0, over the ok runs: n = ok)"
    return "\n".join([title, line(header), *(line(r) for r in rows)]) + "\n"


def _fmt_coord(v) -> str:
    v = v.item() if hasattr(v, "item") else v
    return f"{v:g}" if isinstance(v, float) else str(v)


def write_summary(ds: xr.Dataset, run_dir: str | os.PathLike, *, tag: str | None = None) -> str:
    """Write `summary.txt` and `summary.csv` (atomically) into `run_dir`; return the text."""
    run_dir = Path(run_dir)
    text = sweep_summary_text(ds)
    atomic_write_text(run_dir / "summary.txt", text, tag=tag)
    atomic_write_text(run_dir / "summary.csv", sweep_summary(ds).to_csv(index=False), tag=tag)
    return text
