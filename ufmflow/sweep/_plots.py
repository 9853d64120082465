"""PNG figures of a sweep's Dataset (matplotlib, Agg canvas: no display needed).

`plot_sweep(ds, folder)` writes

- `effective_rank_vs_<x>.png`: effective rank of the final class-mean logits (mean ± std over the
  seeds whose run ended with status ok) against the swept parameter `x` (the first of depth,
  init_scale, width, K, per_class that has several values), one line per value of the other
  swept parameters (paper Fig. 2 / Fig. 9);
- `singular_values.png`: the singular values of the class-mean logits over (GF or reduced) time,
  one panel per value of `x`, for the first seed and the first value of every other parameter
  (paper Fig. 4 / Fig. 11).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_X_ORDER = ("depth", "init_scale", "width", "K", "per_class")
_MAX_LINES = 10
_MAX_PANELS = 8


def _label(v) -> str:
    v = v.item() if hasattr(v, "item") else v
    return f"{v:g}" if isinstance(v, float) else str(v)


def swept_parameter(ds: xr.Dataset) -> str:
    """The x axis of the plots: the first of depth, init_scale, width, K, per_class that varies."""
    for d in _X_ORDER:
        if d in ds.dims and ds.sizes[d] > 1:
            return d
    return "depth"


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
    return path


def plot_effective_rank(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Final effective rank (mean ± std over ok seeds) vs the swept parameter; returns the path."""
    x = swept_parameter(ds)
    ok = ds["status"] == 0
    er = ds["effective_rank"].where(ok)
    mean, std = er.mean("seed"), er.std("seed")
    others = [d for d in mean.dims if d != x and ds.sizes[d] > 1]
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    combos = list(itertools.product(*(range(ds.sizes[d]) for d in others)))[:_MAX_LINES]
    xs = ds[x].values
    for combo in combos:
        sel = dict(zip(others, combo))
        m = mean.isel(sel).squeeze()
        s = std.isel(sel).squeeze()
        label = ", ".join(f"{d}={_label(ds[d].values[i])}" for d, i in sel.items()) or None
        ax.errorbar(xs, np.atleast_1d(m.values), yerr=np.atleast_1d(s.values), marker="o",
                    capsize=3, label=label)
    if x == "init_scale":
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("effective rank of class-mean logits")
    mode = ds.attrs.get("mode", "")
    ax.set_title(f"{mode}: effective rank vs {x} ({ds.sizes['seed']} seeds)")
    if len(combos) > 1:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_singular_values(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Singular values of the class-mean logits over time, one panel per value of the swept
    parameter (first seed, first value of the other parameters); returns the path."""
    x = swept_parameter(ds)
    n_panels = min(ds.sizes[x], _MAX_PANELS)
    cols = min(n_panels, 4)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows))
    t = ds["time"].values
    fixed = {d: 0 for d in ds["singular_values"].dims if d not in (x, "time", "sv")}
    hadamard = ds.attrs.get("mode") == "hadamard"
    for p in range(n_panels):
        ax = fig.add_subplot(rows, cols, p + 1)
        sv = ds["singular_values"].isel({**fixed, x: p}).values  # (time, sv)
        keep = t > 0
        for i in range(1 if hadamard else 0, sv.shape[1]):
            y = sv[keep, i]
            if np.all(~np.isfinite(y)):
                continue
            ax.plot(t[keep], np.where(y > 0, y, np.nan), lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{x}={_label(ds[x].values[p])}", fontsize=9)
        ax.set_xlabel("reduced time tau" if hadamard else "GF time t", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("singular values of the class-mean logits (first seed)", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_sweep(ds: xr.Dataset, folder: str | os.PathLike) -> list[Path]:
    """Write every sweep figure into `folder`; returns their paths."""
    folder = Path(folder)
    x = swept_parameter(ds)
    return [
        plot_effective_rank(ds, folder / f"effective_rank_vs_{x}.png"),
        plot_singular_values(ds, folder / "singular_values.png"),
    ]
