"""Analyses of `python -m ufmflow.landscape` (theory §5): `map` (Theorem 3.1), `optima`
(numerical max-margin solutions), `softmax-codes`, `kgon` (Theorem 3.2 / Fig. 3 left and
middle). Each returns `(Dataset, summary text, figures)`, `figures` a list of
`(file name, draw(path))`."""

from __future__ import annotations

import math
import sys

import numpy as np

from ._dynamics_stability import _da
from ._runfolder import table

STRUCTURES = ("dnc", "cross_polytope", "cross_polytope_odd", "circle", "hypercube", "other")


def _plt():
    from ..theory._plots import _save, plt

    return plt, _save


def run_map(cfg: dict):
    import ufmflow as uf

    step = cfg["depth_step"]
    depths = np.round(np.arange(1.0, cfg["depth_max"] + step / 2, step), 10)
    ds = uf.landscape_map(list(cfg["K"]), depths)
    ints = tuple(d for d in (1, 2, 3, 4, 6, 8, 12, 16) if d in set(depths.tolist()))
    text = uf.landscape_table(ds, depths=ints or (1,)).rstrip("\n") + "\n"

    def draw(path):
        plt, save = _plt()
        fig, ax = plt.subplots(figsize=(8, 4.5))
        uf.plot_landscape_map(ds, ax=ax)
        save(fig, path)

    return ds, text, [("landscape_map.png", draw)]


def run_optima(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    K, key = int(cfg["K"]), jax.random.PRNGKey(cfg["seed"])
    depths = list(cfg["depth"])
    freq = np.zeros((len(depths), len(STRUCTURES)))
    best_obj, best_name, failed, rows = [], [], [], []
    dnc = [float(uf.candidate_objective("dnc", K, L)) for L in depths]
    for i, L in enumerate(depths):
        res = uf.solve_max_margin(jax.random.fold_in(key, L), K, L, int(cfg["num"]),
                                  outer=int(cfg["outer"]), inner=int(cfg["inner"]))
        opts = res["optima"]
        failed.append(res["failed"])
        for o in opts:
            freq[i, STRUCTURES.index(o["structure"])] += o["frequency"]
            rows.append([L, o["objective"], dnc[i], o["rank"], o["structure"], o["count"],
                         round(o["frequency"], 4), o["normalized_margin"]])
        best_obj.append(opts[0]["objective"] if opts else math.nan)
        best_name.append(opts[0]["structure"] if opts else "")
        print(f"  depth {L}: {len(opts)} distinct optima, {res['failed']} failed",
              file=sys.stderr, flush=True)
    text = table(f"distinct local optima of the max-margin problem (K={K}, {cfg['num']} starts "
                 "per depth; theory §5.7)", ["depth", "objective", "dnc_objective", "rank",
                                             "structure", "count", "frequency",
                                             "normalized_margin"], rows)
    text += table("best found per depth", ["depth", "best_structure", "best_objective",
                                           "dnc_objective", "failed"],
                  [[L, best_name[i], best_obj[i], dnc[i], failed[i]]
                   for i, L in enumerate(depths)])
    ds = xr.Dataset(
        {"frequency": _da(("depth", "structure"), freq, "fraction of successful starts ending "
                          "at each structure"),
         "best_objective": _da("depth", best_obj, "lowest objective found"),
         "best_structure": ("depth", np.asarray(best_name, dtype=str)),
         "dnc_objective": _da("depth", dnc, "closed-form DNC objective"),
         "failed": _da("depth", failed, "starts ending with margin <= 0")},
        coords={"depth": depths, "structure": list(STRUCTURES)},
        attrs={"K": K, "num": int(cfg["num"])})

    def draw(path):
        plt, save = _plt()
        fig, ax = plt.subplots(figsize=(7, 4))
        bottom = np.zeros(len(depths))
        x = np.arange(len(depths))
        for j, s in enumerate(STRUCTURES):
            if freq[:, j].any():
                ax.bar(x, freq[:, j], bottom=bottom, label=s)
                bottom += freq[:, j]
        ax.set_xticks(x, [str(d) for d in depths])
        ax.set(xlabel="depth L", ylabel="fraction of starts",
               title=f"local optima of the max-margin problem, K={K}")
        ax.legend(fontsize=7)
        save(fig, path)

    return ds, text, [("optima.png", draw)]


def run_softmax_codes(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    ks = list(cfg["K"])
    rs = list(range(2, max(ks)))
    obj = np.full((len(ks), len(rs)), np.nan)
    geo, names, rows = obj.copy(), np.full(obj.shape, "", dtype=object), []
    key = jax.random.PRNGKey(cfg["seed"])
    for i, K in enumerate(ks):
        for j, r in enumerate(rs):
            if r > K - 1:
                continue
            code = uf.softmax_code(jax.random.fold_in(key, 1000 * K + r), K, r, int(cfg["num"]))
            obj[i, j], geo[i, j], names[i, j] = (code["objective"], code["geometric_margin"],
                                                 code["structure"])
            rows.append([K, r, code["objective"], code["geometric_margin"], code["rank"],
                         code["structure"]])
        print(f"  K={K} done", file=sys.stderr, flush=True)
    text = table(f"softmax codes: width-r single-layer max-margin ({cfg['num']} starts each; "
                 "objective 2||M||_*, geometric margin q/||M||_F; theory §5.5)",
                 ["K", "r", "objective", "geometric_margin", "rank", "structure"], rows)
    ds = xr.Dataset(
        {"objective": _da(("K", "r"), obj, "2 ||M||_* of the best unit-margin code (nan: r >= K)"),
         "geometric_margin": _da(("K", "r"), geo, "q / ||M||_F"),
         "structure": (("K", "r"), names.astype(str))},
        coords={"K": ks, "r": rs}, attrs={"num": int(cfg["num"])})

    def draw(path):
        plt, save = _plt()
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, K in enumerate(ks):
            ax.plot(rs, geo[i], "o-", label=f"K={K}")
        ax.set(xlabel="width r", ylabel="geometric margin q/||M||_F",
               title="softmax codes (width-bottlenecked single-layer UFM)")
        ax.legend(fontsize=7)
        save(fig, path)

    return ds, text, [("softmax_codes.png", draw)]


def run_kgon(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    methods = ("gd", "gf") if cfg["method"] == "both" else (cfg["method"],)
    ks = list(cfg["K"])
    key = jax.random.PRNGKey(cfg["seed"])
    res = {}
    for m in methods:
        res[m] = uf.kgon_runs(
            key, ks, int(cfg["depth"]), int(cfg["seeds"]), method=m, width=int(cfg["width"]),
            scale=cfg["scale"], lr=cfg["lr"], epochs=int(cfg["epochs"]),
            weight_decay=cfg["weight_decay"], decay_epochs=int(cfg["decay_epochs"]),
            t1=cfg["t1"], rtol=cfg["rtol"],
            progress=lambda K, sec, m=m: print(f"  {m}: K={K} in {sec:.1f}s", file=sys.stderr,
                                               flush=True))
    rows = []
    for m in methods:
        r = res[m]
        for i, K in enumerate(ks):
            ok = r["is_rank2"][i]
            ideal = 360.0 / K
            lo = np.degrees(np.min(r["min_angle"][i][ok])) if ok.any() else math.nan
            hi = np.degrees(np.max(r["max_angle"][i][ok])) if ok.any() else math.nan
            st = ",".join(uf.status_name(s) for s in r["status"][i])
            rows.append([m, K, f"{int(ok.sum())}/{ok.size}", ideal, lo, hi,
                         (hi - lo) / ideal if ok.any() else math.nan,
                         np.nanmax(r["sigma3"][i]), round(float(r["seconds"][i]), 1), st])
    text = table(f"Theorem 3.2: adjacent angles of the rank-2 Gram factor (degrees), depth "
                 f"{cfg['depth']}, {cfg['seeds']} seeds, rank 2 iff sigma3/sigma1 < "
                 f"{cfg['rtol']:g} (theory §5.4)",
                 ["method", "K", "rank2", "360/K", "min_angle", "max_angle", "spread/(360/K)",
                  "max_sigma3", "seconds", "status"], rows)
    data, dims = {}, ("method", "K", "seed")
    stack = lambda name: np.stack([res[m][name] for m in methods])  # noqa: E731
    data["status"] = _da(dims, stack("status"), "solver status (uf.status_name)")
    data["rank"] = _da(dims, stack("rank"), "numerical rank of the class-mean logits")
    data["is_rank2"] = _da(dims, stack("is_rank2"), "rank 2 (sigma3/sigma1 < rtol)")
    data["sigma2"] = _da(dims, stack("sigma2"), "sigma_2 / sigma_1")
    data["sigma3"] = _da(dims, stack("sigma3"), "sigma_3 / sigma_1")
    data["min_angle"] = _da(dims, stack("min_angle"), "smallest adjacent angle", "rad")
    data["max_angle"] = _da(dims, stack("max_angle"), "largest adjacent angle", "rad")
    data["normalized_margin"] = _da(dims, stack("normalized_margin"), "q / ||theta||^(L+1)")
    data["logits"] = _da(dims + ("row", "col"), stack("logits"),
                         "final class-mean logits (zero-padded to max K)")
    data["seconds"] = _da(("method", "K"), stack("seconds"), "wall time of the batch", "s")
    data["ideal"] = _da("K", 2 * np.pi / np.asarray(ks), "2 pi / K", "rad")
    ds = xr.Dataset(data, coords={"method": list(methods), "K": ks,
                                  "seed": np.arange(int(cfg["seeds"]))},
                    attrs={"depth": int(cfg["depth"]), "rtol": float(cfg["rtol"])})
    return ds, text, [("kgon.png", lambda p: plot_kgon(ds, p))]


def plot_kgon(ds, path):
    """Fig. 3 left: min/max adjacent angle of the rank-2 runs vs K with the 2pi/K line; middle:
    the recovered class points of one rank-2 run (largest K with one) on the unit circle."""
    import ufmflow as uf

    plt, save = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    ks = ds.K.values
    kk = np.linspace(ks.min(), ks.max(), 200)
    ax[0].plot(kk, 360 / kk, "k-", lw=1, label="360/K")
    shown = None
    for off, (m, mk) in zip((-0.12, 0.12), zip(ds.method.values, ("o", "s"))):
        ok = ds.is_rank2.sel({"method": m}).values
        lo = np.degrees(np.where(ok, ds.min_angle.sel({"method": m}).values, np.nan))
        hi = np.degrees(np.where(ok, ds.max_angle.sel({"method": m}).values, np.nan))
        with np.errstate(all="ignore"):
            lo_k, hi_k = np.nanmin(lo, axis=1), np.nanmax(hi, axis=1)
        ax[0].plot(ks + off, lo_k, mk, mfc="none", label=f"{m}: smallest angle")
        ax[0].plot(ks + off, hi_k, mk, label=f"{m}: largest angle")
        for i in range(len(ks) - 1, -1, -1):
            if shown is None and ok[i].any():
                shown = (m, int(ks[i]), int(np.argmax(ok[i])))
    ax[0].set(xlabel="K", ylabel="adjacent angle (degrees)",
              title="rank-2 runs: angles between adjacent class means")
    ax[0].legend(fontsize=7)
    t = np.linspace(0, 2 * np.pi, 300)
    ax[1].plot(np.cos(t), np.sin(t), ":", color="0.6")
    if shown is not None:
        m, K, j = shown
        M = ds.logits.sel({"method": m, "K": K}).values[j][:K, :K]
        G = uf.gram_factor(M)
        G = G / np.linalg.norm(G, axis=0).mean()
        ax[1].scatter(G[0], G[1], c=np.arange(K), cmap="hsv", zorder=3)
        for c in range(K):
            ax[1].annotate(str(c), G[:, c] * 1.12, ha="center", va="center", fontsize=7)
        ideal = np.exp(2j * np.pi * np.arange(K) / K) * np.exp(1j * np.arctan2(G[1, 0], G[0, 0]))
        ax[1].plot(ideal.real, ideal.imag, "k+", ms=9, label="regular K-gon")
        ax[1].set_title(f"Gram factor of a rank-2 run ({m}, K={K}, seed {j})")
        ax[1].legend(fontsize=7)
    else:
        ax[1].set_title("no run reached rank 2")
    ax[1].set(aspect="equal", xticks=[], yticks=[], xlim=(-1.3, 1.3), ylim=(-1.3, 1.3))
    save(fig, path)
