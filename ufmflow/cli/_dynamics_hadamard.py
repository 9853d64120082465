"""Analyses of `python -m ufmflow.dynamics` along the reduced Hadamard ODE (theory §4, §6):
`rich-get-richer`, `kl`, `basins`, `effective-rank`. Each returns `(Dataset, summary text,
figures)`, `figures` a list of `(file name, draw(path))`."""

from __future__ import annotations

import sys
import time

import numpy as np

from ._dynamics_stability import _da
from ._runfolder import table


def run_rich_get_richer(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    from ..theory import _plots as P

    res = uf.rich_get_richer(jax.random.PRNGKey(cfg["seed"]), int(cfg["K"]), list(cfg["depth"]),
                             list(cfg["scale"]), int(cfg["num"]))
    header = ["depth"] + [f"scale={s:g}" for s in res["scales"]]
    rows = [[d] + list(res["frac_extreme_grows"][i]) for i, d in enumerate(res["depths"])]
    text = table(f"fraction of inits whose max-min gap grows (K={cfg['K']}; Thm 4.4: ~1 for L>1,"
                 " ~0 for L=1 at small scale)", header, rows)
    rows2 = [[d] + list(res["frac_random_grows"][i]) for i, d in enumerate(res["depths"])]
    text += table("same, for a random pair of modes", header, rows2)
    dims = ("depth", "scale")
    ds = xr.Dataset(
        {"frac_extreme_grows": _da(dims, res["frac_extreme_grows"],
                                   "fraction of inits whose max-min log-gap grows"),
         "frac_random_grows": _da(dims, res["frac_random_grows"],
                                  "fraction of inits whose random-pair log-gap grows"),
         "failed": _da(dims, res["failed"], "failed solves")},
        coords={"depth": res["depths"], "scale": res["scales"]},
        attrs={"K": int(cfg["K"]), "num": int(cfg["num"])})
    figure = lambda p: P.plot_fraction_heatmaps(  # noqa: E731
        res, ["frac_extreme_grows", "frac_random_grows"],
        ["max-min gap grows", "random-pair gap grows"], p)
    return ds, text, [("rich_get_richer.png", figure)]


def run_kl(cfg: dict):
    import jax
    import jax.numpy as jnp
    import xarray as xr

    import ufmflow as uf

    from ..theory import _plots as P

    k, depth = int(cfg["K"]), float(cfg["depth"])
    key = jax.random.PRNGKey(cfg["seed"])
    # depth 1: KL never increases along any trajectory with s_i > 0
    num = int(cfg["num"])
    scales = jnp.asarray(np.geomspace(1e-2, 1e2, num))
    s0 = uf.random_directions(key, k, num, 1.0) * scales[:, None]
    ts = uf.default_save_times(cfg["tau1"], 64, 100.0)
    s, status = uf.solve_hadamard_batch(s0, jnp.ones(num), ts, rtol=1e-10, atol=1e-14)
    kl1 = np.asarray(uf.kl_to_nc(s))
    max_inc = float(np.nanmax(np.diff(kl1, axis=1)))
    rate1 = float(jnp.max(uf.kl_rate(s0, 1.0)))
    # depth > 1: a path whose KL grows without bound (paper Fig. 10)
    thr = uf.cross_polytope_ratio_threshold(k, depth)
    delta = cfg["delta"] if cfg["delta"] is not None else 0.5 * thr
    s0 = uf.cross_polytope_mixture(k, cfg["x"], delta)
    sol = uf.solve_hadamard(s0, depth, cfg["tau1"], ts=ts)
    sol1 = uf.solve_hadamard(s0, 1.0, cfg["tau1"], ts=ts)
    kl = np.asarray(uf.kl_to_nc(sol.s))
    on = np.zeros(k, bool)
    on[uf.cross_polytope_support(k)] = True
    res = dict(K=k, depth=depth, x=cfg["x"], delta=delta, tau=np.asarray(ts), s=np.asarray(sol.s),
               kl=kl, kl_depth1=np.asarray(uf.kl_to_nc(sol1.s)), on_support=on[1:])
    failed1 = int(np.sum(np.asarray(status) != 0))
    nondecreasing = bool(np.all(np.diff(kl) >= -1e-12))
    ratio_end = float(sol.s[-1, 2] / sol.s[-1, 1])
    rows = [
        ["depth-1 runs", num],
        ["depth-1 failed solves", failed1],
        ["depth-1 max KL increase between saves", max_inc],
        ["depth-1 max dKL/dtau at the inits", rate1],
        [f"L={depth:g}: threshold on delta ((K-2)/K)^(1/(alpha-1))", thr],
        [f"L={depth:g}: delta used", delta],
        [f"L={depth:g}: KL nondecreasing", nondecreasing],
        [f"L={depth:g}: KL at tau=0", kl[0]],
        [f"L={depth:g}: KL at tau={cfg['tau1']:g}", kl[-1]],
        [f"L={depth:g}: b/a at the end", ratio_end],
        ["L=1 from the same init: KL at the end", float(res["kl_depth1"][-1])],
    ]
    text = table("KL divergence to NC", ["quantity", "value"], rows)
    ds = xr.Dataset(
        {"kl": _da("tau", kl, f"KL(u || p) along the mixture path at L={depth:g}"),
         "kl_depth1": _da("tau", res["kl_depth1"], "KL(u || p) from the same init at L=1"),
         "s": _da(("tau", "mode"), res["s"], "singular values along the mixture path"),
         "on_support": _da("mode", on, "mode in the cross-polytope support")},
        coords={"tau": res["tau"], "mode": np.arange(k)},
        attrs={"K": k, "depth": depth, "x": float(cfg["x"]), "delta": float(delta),
               "delta_threshold": float(thr), "depth1_runs": num, "depth1_failed": failed1,
               "depth1_max_kl_increase": max_inc, "depth1_max_kl_rate": rate1,
               "kl_nondecreasing": int(nondecreasing), "b_over_a_end": ratio_end})
    return ds, text, [("kl.png", lambda p: P.plot_kl(res, p))]


def run_basins(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    from ..theory import _plots as P

    ks = [int(k) for k in cfg["K"]]
    depths = np.asarray(cfg["depth"], float)
    scales = np.asarray(cfg["scale"], float)
    num = int(cfg["num"])
    frac = np.zeros((len(ks), depths.size, scales.size, 3))
    erank = np.zeros((len(ks), depths.size, scales.size, num))
    failed = np.zeros((len(ks), depths.size, scales.size), int)
    text, figures = "", []
    header = ["depth", "scale", "dnc", "between", "minimal", "mean_erank", "failed"]
    for a, k in enumerate(ks):
        t0 = time.time()
        res = uf.basins_of_attraction(jax.random.PRNGKey(cfg["seed"]), k, depths, scales, num,
                                      tau1=cfg["tau1"])
        print(f"  K={k}: {time.time() - t0:.1f}s", file=sys.stderr)
        frac[a], erank[a], failed[a] = res["fractions"], res["effective_rank"], res["failed"]
        rows = []
        for i, d in enumerate(res["depths"]):
            for j, c in enumerate(res["scales"]):
                fr = res["fractions"][i, j]
                with np.errstate(all="ignore"):
                    mean = float(np.nanmean(res["effective_rank"][i, j])) \
                        if np.isfinite(res["effective_rank"][i, j]).any() else float("nan")
                rows.append([d, c, fr[0], fr[1], fr[2], mean, int(res["failed"][i, j])])
        text += table(f"basins of attraction, K={k} ({num} directions per cell; DNC: erank >="
                      f" 0.9(K-1); minimal: erank <= log2 K + 0.5)", header, rows)
        for c, name in enumerate(uf.STRUCTURE_NAMES):
            res[name] = res["fractions"][..., c]
        figures.append((f"basins_K{k}.png", lambda p, res=res, k=k: P.plot_fraction_heatmaps(
            res, list(uf.STRUCTURE_NAMES),
            [f"K={k}: fraction -> {n}" for n in uf.STRUCTURE_NAMES], p)))
    dims = ("K", "depth", "scale")
    with np.errstate(all="ignore"):
        ok = np.isfinite(erank)
        mean = np.where(ok.any(-1), np.nansum(erank, -1) / np.maximum(ok.sum(-1), 1), np.nan)
    ds = xr.Dataset(
        {"fraction": _da(dims + ("structure",), frac,
                         "fraction of the ok runs ending at each structure"),
         "mean_effective_rank": _da(dims, mean, "mean effective rank of diag(s_1..s_{K-1}) "
                                    "at tau1 over ok runs"),
         "effective_rank": _da(dims + ("direction",), erank,
                               "effective rank of diag(s_1..s_{K-1}) at tau1 (nan: failed)"),
         "failed": _da(dims, failed, "failed solves")},
        coords={"K": ks, "depth": depths, "scale": scales,
                "structure": list(uf.STRUCTURE_NAMES)},
        attrs={"num": num, "tau1": float(cfg["tau1"])})
    return ds, text, figures


def run_effective_rank(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    from ..theory import _plots as P

    key = jax.random.PRNGKey(cfg["seed"])
    k = int(cfg["K"])
    rd = uf.effective_rank_sweep(key, k, list(cfg["depth"]), [cfg["depth_scale"]],
                                 int(cfg["num"]), tau1=cfg["tau1"])
    rs = uf.effective_rank_sweep(key, k, list(cfg["scale_depth"]), list(cfg["scale"]),
                                 int(cfg["num"]), tau1=cfg["tau1"])
    rows = [["depth", d, cfg["depth_scale"], rd["mean"][i, 0], rd["std"][i, 0]]
            for i, d in enumerate(rd["depths"])]
    rows += [["scale", d, c, rs["mean"][i, j], rs["std"][i, j]]
             for i, d in enumerate(rs["depths"]) for j, c in enumerate(rs["scales"])]
    header = ["sweep", "depth", "scale", "erank_mean", "erank_std"]
    text = table(f"late-time effective rank (K={k}, log2 K={rd['log2_k']}, Fig. 9)", header,
                 rows)
    er = "effective rank of diag(s_1..s_{K-1}) at tau1"
    ds = xr.Dataset(
        {"erank_mean_vs_depth": _da("depth", rd["mean"][:, 0], f"mean {er} (at depth_scale)"),
         "erank_std_vs_depth": _da("depth", rd["std"][:, 0], f"std {er} (at depth_scale)"),
         "erank_mean": _da(("scale_depth", "scale"), rs["mean"], f"mean {er}"),
         "erank_std": _da(("scale_depth", "scale"), rs["std"], f"std {er}")},
        coords={"depth": rd["depths"], "scale_depth": rs["depths"], "scale": rs["scales"]},
        attrs={"K": k, "log2_k": int(rd["log2_k"]), "depth_scale": float(cfg["depth_scale"]),
               "num": int(cfg["num"]), "tau1": float(cfg["tau1"])})
    return ds, text, [("effective_rank.png", lambda p: P.plot_erank(rd, rs, p))]
