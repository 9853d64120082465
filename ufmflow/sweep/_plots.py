"""PNG figures of a sweep's Dataset (matplotlib, Agg canvas: no display needed).

`plot_sweep(ds, folder)` writes

- `effective_rank_vs_<x>.png`: effective rank of the final class-mean logits (mean ± std,
  ddof=0, over the seeds whose run ended with status ok; each point labelled with its `n`, the
  dashed line at K-1 is neural collapse) against the swept parameter `x` (the first of depth,
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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: `import ufmflow` stays free of them (~0.6 s)
    import xarray as xr
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
    from ._store import atomic_write

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return path


def plot_effective_rank(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Final effective rank (mean ± std over ok seeds) vs the swept parameter; returns the path."""
    x = swept_parameter(ds)
    ok = ds["status"] == 0
    er = ds["effective_rank"].where(ok)
    mean, std, n_ok = er.mean("seed"), er.std("seed"), ok.sum("seed")
    others = [d for d in mean.dims if d != x and ds.sizes[d] > 1]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    combos = list(itertools.product(*(range(ds.sizes[d]) for d in others)))[:_MAX_LINES]
    xs = ds[x].values
    for combo in combos:
        sel = dict(zip(others, combo))
        m = mean.isel(sel).squeeze()
        s = std.isel(sel).squeeze()
        n = np.atleast_1d(n_ok.isel(sel).squeeze().values)
        label = ", ".join(f"{d}={_label(ds[d].values[i])}" for d, i in sel.items()) or None
        ys = np.atleast_1d(m.values)
        ax.errorbar(xs, ys, yerr=np.atleast_1d(s.values), marker="o", capsize=3, label=label)
        for xv, yv, nv in zip(xs, ys, n):  # the runs each point rests on
            ax.annotate(f"n={int(nv)}", (xv, yv if np.isfinite(yv) else 1.0), fontsize=6,
                        textcoords="offset points", xytext=(3, 4))
    ks = np.unique(ds["K"].values) if "K" in ds.coords else []
    if x == "K":
        ax.plot(xs, xs - 1, "k--", lw=0.8, label="neural collapse: K-1")
    else:
        for i, k in enumerate(ks[:3]):
            ax.axhline(k - 1, color="k", ls="--", lw=0.8,
                       label="neural collapse: K-1" + (f" (K={k})" if len(ks) > 1 else ""))
    if x == "init_scale":
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("effective rank of class-mean logits")
    mode = ds.attrs.get("mode", "")
    n_all = n_ok.values
    ax.set_title(f"{mode}: effective rank vs {x}\nmean ± std (ddof=0) over ok runs, "
                 f"n = {int(n_all.min())}..{int(n_all.max())} of {ds.sizes['seed']} per point",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(path))


_SV_RANGE = (1e-200, 1e200)


def plot_singular_values(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Singular values of the class-mean logits over time, one panel per value of the swept
    parameter (first seed, first value of the other parameters); values outside
    `[1e-200, 1e200]` (a diverging run) are left out; returns the path."""
    x = swept_parameter(ds)
    n_panels = min(ds.sizes[x], _MAX_PANELS)
    cols = min(n_panels, 4)
    rows = -(-n_panels // cols)
    from matplotlib.figure import Figure

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
            # Drawn within [1e-200, 1e200]: a diverging run's values (inf, or 1e-250 next to
            # 1e250) would give the log axis ticks past the float range (OverflowError).
            y = np.where((y >= _SV_RANGE[0]) & (y <= _SV_RANGE[1]), y, np.nan)
            if np.all(np.isnan(y)):
                continue
            ax.plot(t[keep], y, lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.minorticks_off()  # log minor ticks over many decades: 60% of the figure's time
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
