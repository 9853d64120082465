"""Matplotlib figures of the depth-dynamics analyses (`python -m ufmflow.dynamics`)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
    """Write the figure as PNG atomically (a temporary file in the same folder, then
    `os.replace`), so an interrupted command never leaves half a PNG under its name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.tight_layout()
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_critical_scale(res: dict, path):
    """`x*/K` vs depth, one line per K, DNC solid and cross-polytope dashed; the hand
    linearization `(L-1)/(L+1)` in black."""
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    depths = res["depths"]
    cmap = plt.get_cmap("viridis")
    ks = res["K"]
    for i, k in enumerate(ks):
        c = cmap(i / max(len(ks) - 1, 1))
        pos = lambda v: np.where(v > 0, v, np.nan)  # noqa: E731  (x* = 0: always stable)
        if "dnc" in res:
            ax[0].plot(depths, pos(res["dnc"][i]), "o-", color=c, label=f"K={k}")
            ax[1].plot(depths, res["dnc"][i] / k, "o-", color=c, label=f"K={k}")
        if "cross_polytope" in res:
            ax[0].plot(depths, pos(res["cross_polytope"][i]), "s--", color=c, ms=3)
            if "dnc" not in res:
                ax[1].plot(depths, res["cross_polytope"][i] / k, "s--", color=c, label=f"K={k}")
    ld = np.linspace(1, depths.max(), 200)
    ax[1].plot(ld, (ld - 1) / (ld + 1), "k:", label="(L-1)/(L+1)")
    ax[0].set(xlabel="depth L", ylabel="critical scale x*", yscale="log",
              title="DNC (solid) / cross-polytope (dashed)")
    ax[1].set(xlabel="depth L", ylabel="x*/K",
              title=("DNC" if "dnc" in res else "cross-polytope") + " critical scale / K")
    ax[1].legend(fontsize=7)
    return _save(fig, path)


def plot_perturbation(runs: list[dict], path):
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        ax.plot(r["tau_rel"], r["distance"] / r["distance"][0],
                label=f"x/x* = {r['x_over_xstar']:g}")
    ax.set(xlabel="reduced time x common log-rate F(x)", ylabel="dist(shat, DNC) / initial",
           title=f"DNC perturbations, K={runs[0]['K']}, L={runs[0]['depth']:g}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_fraction_heatmaps(res: dict, keys: list[str], titles: list[str], path, vmin=0, vmax=1):
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key, title in zip(axes[0], keys, titles):
        im = ax.imshow(res[key], origin="lower", aspect="auto", vmin=vmin, vmax=vmax,
                       cmap="magma")
        ax.set_xticks(range(len(res["scales"])), [f"{s:g}" for s in res["scales"]], rotation=45)
        ax.set_yticks(range(len(res["depths"])), [f"{d:g}" for d in res["depths"]])
        ax.set(xlabel="init scale ||s||", ylabel="depth L", title=title)
        fig.colorbar(im, ax=ax)
    return _save(fig, path)


def plot_kl(res: dict, path):
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    tau = res["tau"]
    s = res["s"][:, 1:]
    shat = s / np.linalg.norm(s, axis=-1, keepdims=True)
    for i in range(shat.shape[1]):
        ax[0].semilogx(tau[1:], shat[1:, i], color="C0" if res["on_support"][i] else "C3")
    ax[0].set(xlabel="tau", ylabel="normalized singular values",
              title=f"Fig. 10: x={res['x']:g}, delta={res['delta']:.3g}, K={res['K']}, "
              f"L={res['depth']:g}")
    ax[1].semilogx(tau[1:], res["kl"][1:], label=f"L={res['depth']:g}")
    if "kl_depth1" in res:
        ax[1].semilogx(tau[1:], res["kl_depth1"][1:], label="L=1 (same init)")
    ax[1].set(xlabel="tau", ylabel="KL(u || p)", title="KL divergence to NC")
    ax[1].legend()
    return _save(fig, path)


def plot_erank(res_depth: dict, res_scale: dict, path):
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].errorbar(res_depth["depths"], res_depth["mean"][:, 0], res_depth["std"][:, 0], fmt="o-")
    ax[0].axhline(res_depth["log2_k"], color="k", ls=":", label="log2 K")
    ax[0].set(xlabel="depth L", ylabel="effective rank at late time",
              title=f"scale {res_depth['scales'][0]:g}")
    ax[0].legend()
    for i, d in enumerate(res_scale["depths"]):
        ax[1].errorbar(res_scale["scales"], res_scale["mean"][i], res_scale["std"][i], fmt="o-",
                       label=f"L={d:g}")
    ax[1].set(xscale="log", xlabel="init scale ||s||", ylabel="effective rank at late time")
    ax[1].legend()
    return _save(fig, path)


def _width_ticks(ax, widths):
    ax.set_xticks(list(widths), [str(int(w)) for w in widths])
    ax.minorticks_off()


def plot_width(vel: dict, grown: dict | None, conv: dict | None, path):
    n = 1 + (grown is not None) + (conv is not None)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.8), squeeze=False)
    ax = axes[0]
    for c, eps in enumerate(vel["scales"]):
        ax[0].errorbar(vel["widths"], vel["mean"][:, c], vel["std"][:, c], fmt="o-",
                       label=f"eps={eps:g}")
    ax[0].set(xscale="log", yscale="log", xlabel="width d", ylabel="ETF distance of Zdot(0)",
              title="initial logit velocity")
    ax[0].legend(fontsize=8)
    _width_ticks(ax[0], vel["widths"])
    i = 1
    if grown is not None:
        ax[i].errorbar(grown["widths"], grown["logit_mean"], grown["logit_std"], fmt="o-")
        ax[i].set(xscale="log", yscale="log", xlabel="width d", ylabel="ETF distance of Z",
                  title=f"after ||Z|| grew 10x (eps={grown['scale']:g})")
        _width_ticks(ax[i], grown["widths"])
        i += 1
    if conv is not None:
        ax[i].errorbar(conv["widths"], conv["mean"], conv["std"], fmt="o-")
        ax[i].set(xscale="log", xlabel="width d", ylabel="effective rank of Zbar",
                  title=f"at convergence (eps={conv['scale']:g})")
        _width_ticks(ax[i], conv["widths"])
    return _save(fig, path)


def plot_random_vs_hadamard(res: dict, path):
    fig, ax = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    t = res["t"]
    ax[0].semilogx(t[1:], res["sv_random"][1:])
    ax[0].set(xlabel="GF time t", ylabel="singular values of Zbar",
              title=f"small random init (width {res['width']})")
    ax[1].semilogx(t[1:], res["sv_hadamard"][1:])
    ax[1].set(xlabel="GF time t", title="Hadamard init (reduced ODE)")
    ax[0].set_yscale("symlog", linthresh=1e-3)
    return _save(fig, path)


def plot_minimal_rank(ks, min_size, log2_k, num_positive, num_supports, path):
    """Prop. C.1: the smallest support with positive margins against `log2 K`, and the share of
    supports with positive margins, per K."""
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    x = np.arange(len(ks))
    ax[0].bar(x - 0.2, min_size, 0.4, label="smallest positive-margin support")
    ax[0].bar(x + 0.2, log2_k, 0.4, label="log2 K")
    ax[0].set_xticks(x, [str(k) for k in ks])
    ax[0].set(xlabel="K", ylabel="support size", title="minimal rank (exhaustive)")
    ax[0].legend(fontsize=8)
    ax[1].bar(x, np.asarray(num_positive) / np.asarray(num_supports))
    ax[1].set_xticks(x, [str(k) for k in ks])
    ax[1].set(xlabel="K", ylabel="fraction of supports", title="positive margins")
    return _save(fig, path)
