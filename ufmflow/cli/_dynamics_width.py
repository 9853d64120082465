"""Analyses of `python -m ufmflow.dynamics` on the full deep UFM flow (theory §4, §6): `width`
(Theorem 4.5 / Fig. 5) and `random-vs-hadamard` (Fig. 11). Each returns `(Dataset, summary
text, figures)`, `figures` a list of `(file name, draw(path))`."""

from __future__ import annotations

import sys
import time

import numpy as np

from ._dynamics_stability import _da
from ._runfolder import table


def _mean_std(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "nan"
    return f"{v.mean():.5g} ± {v.std():.2g} ({v.size})"


def run_width(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    from ..theory import _plots as P

    key = jax.random.PRNGKey(cfg["seed"])
    k, n, depth, seeds = int(cfg["K"]), int(cfg["n"]), int(cfg["depth"]), int(cfg["seeds"])
    wide = dict(wide_seeds=cfg["wide_seeds"], wide_width=int(cfg["wide_width"]))

    def progress(part):
        return lambda w, sec: print(f"  {part}: width {w} in {sec:.1f}s", file=sys.stderr,
                                    flush=True)

    t0 = time.time()
    vel = uf.width_alignment(key, k, n, depth, list(cfg["width"]), list(cfg["scale"]), seeds)
    print(f"  initial velocity: {time.time() - t0:.1f}s", file=sys.stderr)
    rows = [["velocity", w, eps, vel["mean"][i, j], vel["std"][i, j], seeds]
            for i, w in enumerate(vel["widths"]) for j, eps in enumerate(vel["scales"])]
    data = {"velocity_distance": _da(("width", "scale", "seed"), vel["values"],
                                     "ETF distance of Zdot(0)")}
    coords = {"width": vel["widths"], "scale": vel["scales"], "seed": np.arange(seeds)}
    grown = conv = None
    if cfg["grown_width"]:
        t0 = time.time()
        grown = uf.grown_alignment_sweep(key, k, n, depth, list(cfg["grown_width"]),
                                         cfg["grown_scale"], seeds, rtol=cfg["rtol"],
                                         progress=progress("after 10x growth"), **wide)
        print(f"  after 10x growth: {time.time() - t0:.1f}s", file=sys.stderr)
        rows += [["logits_after_10x", w, cfg["grown_scale"], grown["logit_mean"][i],
                  grown["logit_std"][i], grown["seeds"][i]]
                 for i, w in enumerate(grown["widths"])]
        dims = ("grown_width", "seed")
        data.update(
            grown_logit_distance=_da(dims, grown["logit_distance"],
                                     "ETF distance of Z after ||Z|| grew 10x (nan: not run)"),
            grown_velocity_distance=_da(dims, grown["velocity_distance"],
                                        "ETF distance of Zdot after ||Z|| grew 10x"),
            grown_seeds=_da("grown_width", grown["seeds"], "seeds run"))
        coords["grown_width"] = grown["widths"]
    if cfg["conv_width"]:
        t0 = time.time()
        conv = uf.converged_rank_vs_width(key, k, n, depth, list(cfg["conv_width"]),
                                          cfg["conv_scale"], seeds, t1=cfg["t1"],
                                          rtol=cfg["rtol"], progress=progress("convergence"),
                                          **wide)
        print(f"  convergence: {time.time() - t0:.1f}s", file=sys.stderr)
        rows += [["erank_at_t1", w, cfg["conv_scale"], conv["mean"][i], conv["std"][i],
                  conv["seeds"][i]] for i, w in enumerate(conv["widths"])]
        if conv["failed"].any():
            print(f"  failed solves per width: {conv['failed'].tolist()}", file=sys.stderr)
        data.update(
            conv_effective_rank=_da(("conv_width", "seed"), conv["effective_rank"],
                                    "effective rank of Zbar at GF time t1 (nan: failed or not "
                                    "run)"),
            conv_seeds=_da("conv_width", conv["seeds"], "seeds run"),
            conv_failed=_da("conv_width", conv["failed"], "failed solves"))
        coords["conv_width"] = conv["widths"]
    header = ["quantity", "width", "scale", "mean", "std", "seeds"]
    text = table(f"width at random init (K={k}, n={n}, L={depth}; ETF distance of Fig. 5, "
                 f"effective rank of Zbar at GF time t1={cfg['t1']:g})", header, rows)
    # one row per width: the three Fig. 5 quantities side by side (mean ± std (seeds))
    eps0 = cfg["grown_scale"] if grown is not None else vel["scales"][0]
    col = int(np.argmin(np.abs(np.log(vel["scales"] / eps0))))
    all_w = sorted({int(w) for part in (vel, grown, conv) if part is not None
                    for w in part["widths"]})
    summary = []
    for w in all_w:
        row = [w]
        i = np.nonzero(vel["widths"] == w)[0]
        row.append(_mean_std(vel["values"][i[0], col]) if i.size else "")
        if grown is not None:
            i = np.nonzero(grown["widths"] == w)[0]
            row.append(_mean_std(grown["logit_distance"][i[0]]) if i.size else "")
        if conv is not None:
            i = np.nonzero(conv["widths"] == w)[0]
            row.append(_mean_std(conv["effective_rank"][i[0]]) if i.size else "")
        summary.append(row)
    sheader = ["width", f"ETF_dist_Zdot(0)_eps={vel['scales'][col]:g}"]
    if grown is not None:
        sheader.append(f"ETF_dist_Z_after_10x_eps={cfg['grown_scale']:g}")
    if conv is not None:
        sheader.append(f"erank_Zbar_t={cfg['t1']:g}_eps={cfg['conv_scale']:g}")
    text += table("per width: mean ± std (seeds)", sheader, summary)
    ds = xr.Dataset(data, coords=coords, attrs={
        "K": k, "n": n, "depth": depth, "grown_scale": float(cfg["grown_scale"]),
        "conv_scale": float(cfg["conv_scale"]), "t1": float(cfg["t1"]),
        "rtol": float(cfg["rtol"])})
    return ds, text, [("width.png", lambda p: P.plot_width(vel, grown, conv, p))]


def run_random_vs_hadamard(cfg: dict):
    import jax
    import xarray as xr

    import ufmflow as uf

    from ..theory import _plots as P

    res = uf.random_vs_hadamard(jax.random.PRNGKey(cfg["seed"]), int(cfg["K"]),
                                int(cfg["depth"]), width=int(cfg["width"]),
                                per_class=int(cfg["n"]), scale=cfg["scale"], t1=cfg["t1"])
    text = table("final singular values (random | Hadamard)", ["run", "status", "values"],
                 [["random", res["status_random"], np.round(res["sv_random"][-1], 3).tolist()],
                  ["hadamard", res["status_hadamard"],
                   np.round(res["sv_hadamard"][-1], 3).tolist()]])
    ds = xr.Dataset(
        {"sv_random": _da(("t", "sv"), res["sv_random"],
                          "singular values of Zbar from the random init"),
         "sv_hadamard": _da(("t", "sv_hadamard"), res["sv_hadamard"],
                            "singular values s_1..s_{K-1} of the Hadamard run, sorted")},
        coords={"t": res["t"]},
        attrs={"status_random": int(res["status_random"]),
               "status_hadamard": int(res["status_hadamard"]), "width": int(cfg["width"]),
               "depth": int(cfg["depth"])})
    return ds, text, [("random_vs_hadamard.png", lambda p: P.plot_random_vs_hadamard(res, p))]
