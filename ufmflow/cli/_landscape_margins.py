"""Fig. 3 right as an analysis of `python -m ufmflow.landscape` (`fig3-right`; theory §5.5):
the normalized margin of deep UFM runs that converge to rank `r`, averaged per rank, beside the
softmax code of width `r` (the best margin any rank-`r` class-mean logit matrix can have).

The normalized margin of a class-mean logit matrix `M` is `q(M) / ||M||_*` (margin over nuclear
norm; scale-invariant, depth-independent). The softmax code of width `r` maximizes it over
`rank M <= r` (theory §5.5: `min 2||M||_*` at unit margin, so its value is `2 / objective`),
so every run of rank `r` lies at or below the code's value, with equality when the run's
geometry is the code (the K-gon at `r = 2`, DNC at `r = K - 1`). Returns `(Dataset, summary
text, figures)`."""

from __future__ import annotations

import math
import sys

import numpy as np

from ._dynamics_stability import _da
from ._landscape_runs import _plt
from ._runfolder import table


def nuclear_margin(M: np.ndarray) -> float:
    """`q(M) / ||M||_*` (theory §5.5): `nan` for a non-finite `M`, `<= 0` without a margin."""
    import ufmflow as uf

    M = np.asarray(M, float)
    if not np.all(np.isfinite(M)):
        return math.nan
    return float(uf.class_margin(M)) / float(np.linalg.svd(M, compute_uv=False).sum())


def run_fig3_right(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    K, seeds = int(cfg["K"]), int(cfg["seeds"])
    depths, widths = [int(d) for d in cfg["depth"]], [int(w) for w in cfg["width"]]
    key = jax.random.PRNGKey(cfg["seed"])
    ranks = np.arange(2, K)
    # softmax codes: the best q/||M||_* of rank <= r (one solve per r)
    code = np.full(ranks.size, np.nan)
    code_name = np.full(ranks.size, "", dtype=object)
    for j, r in enumerate(ranks):
        c = uf.softmax_code(jax.random.fold_in(key, 1000 + int(r)), K, int(r), int(cfg["num"]))
        code[j], code_name[j] = 2.0 / c["objective"], c["structure"]
    print(f"  softmax codes r=2..{K - 1} done", file=sys.stderr, flush=True)
    # deep runs (the paper's GD protocol), seeds vmapped per (depth, width)
    shape = (len(depths), len(widths), seeds)
    rank = np.zeros(shape, int)
    margin, fro, status = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, int)
    for a, L in enumerate(depths):
        for b, w in enumerate(widths):
            res = uf.kgon_runs(jax.random.fold_in(jax.random.fold_in(key, L), w), [K], L, seeds,
                               method="gd", width=w, scale=cfg["scale"], lr=cfg["lr"],
                               epochs=int(cfg["epochs"]), weight_decay=cfg["weight_decay"],
                               decay_epochs=int(cfg["decay_epochs"]), rtol=cfg["rtol"])
            status[a, b] = res["status"][0]
            for s in range(seeds):
                M = res["logits"][0, s, :K, :K]
                if status[a, b, s] != 0 or not np.all(np.isfinite(M)):
                    continue
                rank[a, b, s] = res["rank"][0, s]
                margin[a, b, s] = nuclear_margin(M)
                fro[a, b, s] = float(uf.class_margin(M)) / float(np.linalg.norm(M))
            print(f"  depth {L}, width {w}: ranks {rank[a, b].tolist()} in "
                  f"{float(res['seconds'][0]):.1f}s", file=sys.stderr, flush=True)
    full = (status == 0) & (rank >= K)  # not at a margin-maximizing rank (<= K - 1) yet
    ok = (status == 0) & (rank >= 2) & (rank <= K - 1) & np.isfinite(margin)
    n_r = np.array([int(np.sum(ok & (rank == r))) for r in ranks])
    with np.errstate(all="ignore"):
        mean_r = np.array([np.mean(margin[ok & (rank == r)]) if n else np.nan
                           for r, n in zip(ranks, n_r)])
        std_r = np.array([np.std(margin[ok & (rank == r)]) if n else np.nan
                          for r, n in zip(ranks, n_r)])
    ratio = np.where(ok, margin / code[np.clip(rank - 2, 0, ranks.size - 1)], np.nan)
    rows = [[int(r), code[j], code_name[j], int(n_r[j]), mean_r[j], std_r[j]]
            for j, r in enumerate(ranks)]
    text = table(f"Fig. 3 right: normalized margin q/||M||_* (K={K}; deep runs: GD protocol, "
                 f"depths {','.join(map(str, depths))}, widths {','.join(map(str, widths))}, "
                 f"{seeds} seeds; rank: sigma_i/sigma_1 > {cfg['rtol']:g}; mean ± std ddof=0 "
                 "over the ok runs of each rank; theory §5.5)",
                 ["rank_r", "softmax_code", "code_structure", "deep_runs_n", "deep_mean",
                  "deep_std"], rows)
    with np.errstate(all="ignore"):
        worst = float(np.nanmax(ratio)) if np.isfinite(ratio).any() else math.nan
    text += (f"largest deep-run margin / code of its rank: {worst:.6g} (<= 1: no rank-r run "
             f"beats the code); runs not ok: {int(np.sum(status != 0))} of {status.size}; ok "
             f"runs of full rank K (not counted): {int(full.sum())}\n")
    dims = ("depth", "width", "seed")
    ds = xr.Dataset(
        {"code_margin": _da("rank", code, "q/||M||_* of the softmax code of width r"),
         "code_structure": ("rank", code_name.astype(str)),
         "rank_of_run": _da(dims, rank, "numerical rank of the run's class-mean logits (0: "
                            "failed)"),
         "margin": _da(dims, margin, "q/||M||_* of the run's class-mean logits"),
         "frobenius_margin": _da(dims, fro, "q/||M||_F of the run's class-mean logits"),
         "status": _da(dims, status, "descend status (uf.status_name)"),
         "runs_per_rank": _da("rank", n_r, "ok runs at each rank"),
         "mean_margin": _da("rank", mean_r, "mean q/||M||_* of the ok runs at each rank"),
         "std_margin": _da("rank", std_r, "std (ddof=0) of q/||M||_* of those runs")},
        coords={"rank": ranks, "depth": depths, "width": widths, "seed": np.arange(seeds)},
        attrs={"K": K, "num": int(cfg["num"]), "rtol": float(cfg["rtol"]),
               "max_ratio_to_code": worst})

    def draw(path):
        plt, save = _plt()
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.plot(ranks, code, "k-o", label="softmax code of width r (best rank <= r)")
        for a, L in enumerate(depths):
            sel = ok[a]
            if sel.any():
                jitter = 0.06 * (a - (len(depths) - 1) / 2)
                ax.plot(rank[a][sel] + jitter, margin[a][sel], ".", alpha=0.5,
                        label=f"runs at depth {L}")
        have = n_r > 0
        ax.errorbar(ranks[have], mean_r[have], yerr=std_r[have], fmt="s", mfc="none", ms=9,
                    capsize=4, color="C3", label="deep runs: mean ± std per rank")
        for r, m, n in zip(ranks[have], mean_r[have], n_r[have]):
            ax.annotate(f"n={n}", (r, m), textcoords="offset points", xytext=(8, -12),
                        fontsize=7)
        ax.set(xlabel="rank r of the class-mean logits", ylabel="normalized margin q / ||M||_*",
               xticks=ranks, title=f"Fig. 3 right: K={K}, widths {','.join(map(str, widths))}, "
               f"{seeds} seeds")
        ax.legend(fontsize=7)
        save(fig, path)

    return ds, text, [("fig3_right.png", draw)]
