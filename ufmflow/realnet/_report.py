"""The numbers, table and figure of the Figure 6 experiment (theory §7.1).

Means and standard deviations over seeds are population ones (ddof 0, theory §6.7) over the
models whose parameters stayed finite; the line of test accuracy on effective rank is fitted
over every finite model of the data set (both panels, each `(depth, width)` once), with the
slope's 95% confidence interval (`fit_line`). So that "does depth lower the rank?" is answered
by a number and not by eye, the same fit of effective rank on head depth over the depth panel's
models is reported too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from ._stats import fit_line

if TYPE_CHECKING:  # imported where used: `import ufmflow` stays free of it
    import xarray as xr


def _rows(sub: xr.Dataset, panel: str, axis: str) -> list[dict]:
    rows = []
    for g in np.flatnonzero(sub[panel].values):
        one = sub.isel(group=g)
        ok = one["finite"].values == 1
        er = one["effective_rank"].values[ok]
        e100 = one["epoch_100"].values
        rows.append({
            axis: int(one[axis].values),
            "depth": int(one["depth"].values), "width": int(one["width"].values),
            "effective_rank_mean": float(er.mean()) if er.size else float("nan"),
            "effective_rank_std": float(er.std()) if er.size else float("nan"),
            "finite": int(ok.sum()), "seeds": int(ok.size),
            "train_accuracy_min": float(one["train_accuracy"].values.min()),
            "test_accuracy_mean": float(one["test_accuracy"].values[ok].mean())
            if ok.any() else float("nan"),
            "reached_100": int(np.sum(e100 >= 0)),
            "epoch_100_max": int(e100.max()) if np.all(e100 >= 0) else -1,
        })
    return sorted(rows, key=lambda r: r[axis])


def realnet_numbers(ds: xr.Dataset) -> dict:
    """Per data set: the depth and width panels (mean ± std of the effective rank per setting),
    the fit of test accuracy on effective rank, the fit of effective rank on depth, and how many
    models reached 100% training accuracy (theory §7.1). Plain JSON-able types."""
    out = {}
    for name in ds["data"].values:
        sub = ds.sel(data=name)
        ok = sub["finite"].values == 1
        er, acc = sub["effective_rank"].values, sub["test_accuracy"].values
        dp = sub.isel(group=np.flatnonzero(sub["depth_panel"].values))
        dok = dp["finite"].values == 1
        depth_grid = np.broadcast_to(dp["depth"].values[:, None], dp["effective_rank"].shape)
        out[str(name)] = {
            "num_train": int(sub["num_train"].values), "num_test": int(sub["num_test"].values),
            "rank_vs_depth": _rows(sub, "depth_panel", "depth"),
            "rank_vs_width": _rows(sub, "width_panel", "width"),
            "accuracy_vs_rank": dataclasses.asdict(fit_line(er[ok], acc[ok])),
            "rank_vs_depth_fit": dataclasses.asdict(
                fit_line(depth_grid[dok], dp["effective_rank"].values[dok])),
            "models": int(ok.size), "finite_models": int(ok.sum()),
            "models_at_100pct_train": int(np.sum(sub["train_accuracy"].values >= 1.0)),
        }
    return out


def _pm(m, s):
    return "nan" if not math.isfinite(m) else f"{m:.3f} ± {s:.3f}"


def _table(header, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def realnet_summary(ds: xr.Dataset) -> str:
    """The experiment's tables as text (what `python -m ufmflow.realnet` prints)."""
    config = ds.attrs.get("config", "")
    parts = [f"Figure 6 on real networks (theory §7.1); config {config}"]
    header = ["", "erank mean ± std", "ok", "train acc min", "100% reached", "epochs to 100%",
              "test acc"]
    for name, num in realnet_numbers(ds).items():
        parts.append(f"\n== {name}: {num['num_train']} train / {num['num_test']} test images ==")
        for panel, axis, fixed in (("rank_vs_depth", "depth", "width"),
                                   ("rank_vs_width", "width", "depth")):
            rows = num[panel]
            if not rows:
                continue
            head = [f"{axis} (head {fixed} {rows[0][fixed]})"] + header[1:]
            parts.append(_table(head, [[
                str(r[axis]), _pm(r["effective_rank_mean"], r["effective_rank_std"]),
                f"{r['finite']}/{r['seeds']}", f"{r['train_accuracy_min']:.4f}",
                f"{r['reached_100']}/{r['seeds']}",
                "-" if r["epoch_100_max"] < 0 else f"<= {r['epoch_100_max']}",
                f"{r['test_accuracy_mean']:.4f}"] for r in rows]))
        fa, fd = num["accuracy_vs_rank"], num["rank_vs_depth_fit"]
        parts.append(_line("test accuracy vs effective rank (all models)", fa))
        parts.append(_line("effective rank vs head depth (depth panel)", fd))
        parts.append(f"models at 100% train accuracy at the end: "
                     f"{num['models_at_100pct_train']}/{num['models']}; finite: "
                     f"{num['finite_models']}/{num['models']}")
    return "\n".join(parts) + "\n"


def _line(title, f):
    if not math.isfinite(f["slope"]):
        return f"{title}: no fit (n = {f['n']})"
    return (f"{title}: slope {f['slope']:.4g}, 95% CI [{f['slope_lo']:.4g}, "
            f"{f['slope_hi']:.4g}], intercept {f['intercept']:.4g}, r = {f['r']:.3f}, "
            f"n = {f['n']}")


def plot_real_networks(ds: xr.Dataset, path) -> None:
    """Figure 6 as a PNG: effective rank vs head depth, vs head width (mean ± std over seeds),
    and test accuracy vs effective rank with the least-squares line, one colour per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = realnet_numbers(ds)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for i, (name, num) in enumerate(numbers.items()):
        color = f"C{i}"
        for ax, panel, axis in ((axes[0], "rank_vs_depth", "depth"),
                                (axes[1], "rank_vs_width", "width")):
            rows = num[panel]
            if rows:
                ax.errorbar([r[axis] for r in rows], [r["effective_rank_mean"] for r in rows],
                            yerr=[r["effective_rank_std"] for r in rows], marker="o", capsize=3,
                            color=color, label=name)
        sub = ds.sel(data=name)
        ok = sub["finite"].values == 1
        er, acc = sub["effective_rank"].values[ok], sub["test_accuracy"].values[ok]
        axes[2].scatter(er, acc, s=12, color=color, alpha=0.7, label=name)
        f = num["accuracy_vs_rank"]
        if math.isfinite(f["slope"]):
            xs = np.linspace(er.min(), er.max(), 2)
            axes[2].plot(xs, f["intercept"] + f["slope"] * xs, color=color, lw=1,
                         label=f"slope {f['slope']:.3g} [{f['slope_lo']:.2g}, "
                               f"{f['slope_hi']:.2g}]")
    fixed = numbers[next(iter(numbers))]
    w = fixed["rank_vs_depth"][0]["width"] if fixed["rank_vs_depth"] else "?"
    d = fixed["rank_vs_width"][0]["depth"] if fixed["rank_vs_width"] else "?"
    axes[0].set(xlabel="head depth", ylabel="effective rank (class-mean logits)",
                title=f"head width {w}")
    axes[1].set(xlabel="head width", ylabel="effective rank", title=f"head depth {d}")
    axes[2].set(xlabel="effective rank", ylabel="test accuracy", title="all models")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
