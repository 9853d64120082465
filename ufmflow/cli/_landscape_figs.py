"""Figures 1, 7 and 8 as analyses of `python -m ufmflow.landscape` (theory §5.3, §5.4, paper
App. E.1-E.2). Each returns `(Dataset, summary text, figures)`."""

from __future__ import annotations

import math

import numpy as np

from ._dynamics_stability import _da
from ._landscape_runs import _plt
from ._runfolder import table


# ---------------------------------------------------------------- Figure 1 (theory §5.3)
# the same computation as examples/fig1_dnc_vs_lowrank.py


def eq4_logits(name: str, K: int, depth: float, rho: float):
    """`Z = rho^(L+1) r^(-L/2) M / ||M||_F` (paper Eq. 4) for a candidate `M` with `r` equal
    non-zero singular values; returns `(Z, r)`."""
    import ufmflow as uf

    M = uf.candidate_structure(name, K)
    (_, r), = uf.candidate_singular_values(name, K)
    return rho ** (depth + 1) * r ** (-depth / 2) * M / np.linalg.norm(M), r


def smallest_angle_and_distance(Z):
    """Smallest angle (degrees) between class-mean columns, smallest logit distance
    `Z[c, c] - Z[c', c]`, mean column norm (App. E.1)."""
    K = Z.shape[0]
    off = ~np.eye(K, dtype=bool)
    u = Z / np.linalg.norm(Z, axis=0, keepdims=True)
    ang = np.degrees(np.arccos(np.clip(u.T @ u, -1, 1)))[off].min()
    dist = (np.diag(Z)[None, :] - Z)[off].min()
    return float(ang), float(dist), float(np.linalg.norm(Z, axis=0).mean())


def run_fig1(cfg: dict):
    import xarray as xr

    import ufmflow as uf

    K, L, rho, low = int(cfg["K"]), float(cfg["depth"]), float(cfg["rho"]), cfg["low_rank"]
    names = ("dnc", low)
    rows, vals = [], {}
    for name in names:
        Z, r = eq4_logits(name, K, L, rho)
        ang, dist, radius = smallest_angle_and_distance(Z)
        vals[name] = dict(rank=r, angle=ang, distance=dist, radius=radius)
        rows.append([name, r, ang, dist, radius, float(np.linalg.norm(Z))])
    (s, r), = uf.candidate_singular_values(low, K)
    crossing = 2 * math.log(s) / math.log((K - 1) / r) - 1
    text = table(f"Fig. 1: DNC vs {low} at K={K}, L={L:g}, rho={rho:g} (paper Eq. 4; theory "
                 "§5.3)", ["structure", "rank", "smallest_angle_deg", "smallest_logit_distance",
                           "column_norm", "frobenius"], rows)
    text += (f"\n{low} has the larger logit distance iff L > {crossing:.6f} (its crossing with "
             f"DNC): here {vals[low]['distance'] > vals['dnc']['distance']}\n")
    ds = xr.Dataset(
        {"rank": _da("structure", [vals[n]["rank"] for n in names], "rank"),
         "angle": _da("structure", [vals[n]["angle"] for n in names],
                      "smallest angle between class means", "degree"),
         "logit_distance": _da("structure", [vals[n]["distance"] for n in names],
                               "smallest Z[c,c] - Z[c',c]"),
         "radius": _da("structure", [vals[n]["radius"] for n in names], "mean column norm")},
        coords={"structure": list(names)},
        attrs={"K": K, "depth": L, "rho": rho, "crossing_depth": crossing})

    def draw(path):
        plt, save = _plt()
        fig, ax = plt.subplots(1, 2, figsize=(10, 4.5))
        t = np.linspace(0, np.pi, 200)
        for name, c in zip(names, ["#4c72b0", "#dd8452"]):
            R, th = vals[name]["radius"], np.radians(vals[name]["angle"])
            ax[0].plot(R * np.cos(t), R * np.sin(t), ":", color=c, lw=1)
            for sgn in (-1, 1):
                phi = np.pi / 2 + sgn * th / 2
                ax[0].annotate("", xy=(R * np.cos(phi), R * np.sin(phi)), xytext=(0, 0),
                               arrowprops=dict(arrowstyle="->", color=c, lw=2))
            ax[0].plot([], [], color=c, lw=2, label=f"{name} (rank {vals[name]['rank']}): "
                       f"angle {vals[name]['angle']:.1f}°, radius {R:.3g}")
        ax[0].set(aspect="equal", xticks=[], yticks=[],
                  title=f"class means in one plane (K={K}, L={L:g}, ρ={rho:g})")
        ax[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02))
        x = np.arange(2)
        ax[1].bar(x - 0.2, [vals[n]["distance"] for n in names], 0.4, color="#777",
                  label="smallest logit distance")
        ax2 = ax[1].twinx()
        ax2.bar(x + 0.2, [vals[n]["angle"] for n in names], 0.4, color="#bbb",
                label="smallest angle (deg)")
        ax[1].set_xticks(x, list(names))
        ax[1].set(ylabel="logit distance", title="Euclidean vs angular separation")
        ax2.set_ylabel("angle (deg)")
        ax[1].legend(loc="upper left", fontsize=7)
        ax2.legend(loc="upper right", fontsize=7)
        save(fig, path)

    return ds, text, [("fig1.png", draw)]


# ---------------------------------------------------------------- Figures 7 and 8


def _gd_run(cfg, K, depth, seed_key):
    import ufmflow as uf

    model = uf.gaussian_init(seed_key, K, 1, int(cfg["width"]), int(depth), cfg["scale"])
    sol = uf.descend(model, cfg["lr"], int(cfg["epochs"]), weight_decay=cfg["weight_decay"],
                     decay_epochs=int(cfg["decay_epochs"]), num_saves=4)
    M = np.asarray(sol.model.class_mean_logits())
    return M, int(sol.status), float(uf.normalized_margin(sol.model))


def run_fig7(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    K, depths = int(cfg["K"]), list(cfg["depth"])
    key = jax.random.PRNGKey(cfg["seed"])
    Ms, rows, er, st, nm = [], [], [], [], []
    for L in depths:
        M, status, margin = _gd_run(cfg, K, L, jax.random.fold_in(key, L))
        Ms.append(M / np.linalg.norm(M))
        e = float(uf.effective_rank(M)) if np.all(np.isfinite(M)) else math.nan
        s = np.linalg.svd(M, compute_uv=False)
        er.append(e), st.append(status), nm.append(margin)
        rows.append([L, uf.status_name(status), e, int(np.sum(s > 1e-3 * s[0])),
                     float(uf.class_margin(M / np.linalg.norm(M))), margin])
    text = table(f"Fig. 7: class-mean logits of deep UFMs (K={K}, GD protocol, width "
                 f"{cfg['width']}; theory §5.4)", ["depth", "status", "effective_rank",
                                                   "rank(1e-3)", "margin_of_M/||M||_F",
                                                   "normalized_margin"], rows)
    ds = xr.Dataset(
        {"normalized_logits": _da(("depth", "row", "col"), np.stack(Ms), "M / ||M||_F"),
         "effective_rank": _da("depth", er, "effective rank of M"),
         "status": _da("depth", st, "descend status"),
         "normalized_margin": _da("depth", nm, "q / ||theta||^(L+1)")},
        coords={"depth": depths}, attrs={"K": K})

    def draw(path):
        plt, save = _plt()
        fig, ax = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 4))
        ax = np.atleast_1d(ax)
        v = max(np.abs(m).max() for m in Ms)
        for a, L, m, e in zip(ax, depths, Ms, er):
            im = a.imshow(m, cmap="RdBu_r", vmin=-v, vmax=v)
            a.set(title=f"L = {L}: effective rank {e:.2f}", xlabel="class c (column)",
                  ylabel="logit")
        fig.colorbar(im, ax=ax[-1], shrink=0.8)
        save(fig, path)

    return ds, text, [("fig7.png", draw)]


def run_fig8(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    K, L = int(cfg["K"]), int(cfg["depth"])
    key = jax.random.PRNGKey(cfg["seed"])
    rows, chosen = [], None
    for j in range(int(cfg["seeds"])):
        M, status, _ = _gd_run(cfg, K, L, jax.random.fold_in(key, j))
        ok = status == 0 and np.all(np.isfinite(M))
        m = uf.kgon_measure(M, cfg["rtol"]) if ok else None
        rows.append([j, uf.status_name(status), m["rank"] if m else -1,
                     m["sigma"][2] if m else math.nan,
                     np.degrees(m["min_angle"]) if m else math.nan,
                     np.degrees(m["max_angle"]) if m else math.nan])
        if chosen is None and m is not None and m["is_rank2"]:
            chosen = (j, M, m)
    text = table(f"Fig. 8: deep UFM runs (K={K}, L={L}, GD protocol); the first at rank 2 is "
                 f"shown permuted into circle order (theory §5.4)",
                 ["seed", "status", "rank", "sigma3/sigma1", "min_angle_deg", "max_angle_deg"],
                 rows)
    if chosen is None:
        text += "\nno run reached rank 2: nothing to permute\n"
        ds = xr.Dataset(attrs={"K": K, "depth": L, "found": 0})
        return ds, text, []
    j, M, m = chosen
    N = M / np.linalg.norm(M)
    P = uf.permute_classes(N, m["order"])
    defect = uf.circulant_defect(P)
    ideal = uf.candidate_structure("circle", K)
    ideal = ideal / np.linalg.norm(ideal)
    dist = float(np.linalg.norm(P - ideal))
    text += (f"\nseed {j}: circle order {m['order'].tolist()}; circulant defect of the permuted "
             f"matrix {defect:.3g}; ||P - K-gon||_F (both normalized) {dist:.3g}\n")
    ds = xr.Dataset(
        {"normalized_logits": _da(("row", "col"), N, "M / ||M||_F"),
         "permuted_logits": _da(("row", "col"), P, "M / ||M||_F, classes in circle order"),
         "order": _da("col", m["order"], "class at each position on the circle")},
        attrs={"K": K, "depth": L, "seed_index": j, "circulant_defect": defect,
               "distance_to_kgon": dist, "found": 1})

    def draw(path):
        plt, save = _plt()
        fig, ax = plt.subplots(1, 2, figsize=(9, 4))
        v = np.abs(N).max()
        ax[0].imshow(N, cmap="RdBu_r", vmin=-v, vmax=v)
        ax[0].set(title=f"M/||M|| (K={K}, L={L}), classes as trained")
        im = ax[1].imshow(P, cmap="RdBu_r", vmin=-v, vmax=v)
        ax[1].set(title=f"classes in circle order: circulant defect {defect:.2g}")
        ax[1].set_xticks(range(K), [str(c) for c in m["order"]], fontsize=7)
        ax[1].set_yticks(range(K), [str(c) for c in m["order"]], fontsize=7)
        fig.colorbar(im, ax=ax[-1], shrink=0.8)
        save(fig, path)

    return ds, text, [("fig8.png", draw)]
