"""Analyses of `python -m ufmflow.dynamics` on the stability of structures (theory §4):
`critical-scale`, `perturb`, `minimal-rank`. Each returns `(Dataset, summary text, figures)`,
`figures` a list of `(file name, draw(path))`."""

from __future__ import annotations

import sys
import time

import numpy as np

from ._runfolder import table


def _da(dims, values, long_name, units="1"):
    return (dims, np.asarray(values), {"long_name": long_name, "units": units})


def run_critical_scale(cfg: dict):
    import xarray as xr

    import ufmflow as uf

    from ..theory import _plots as P

    ks = [int(k) for k in cfg["K"]]
    depths = np.asarray(cfg["depth"], float)
    structure = cfg["structure"]
    want_dnc = structure in ("both", "dnc")
    want_cp = structure in ("both", "cross_polytope")
    res = dict(K=ks, depths=depths)
    if want_dnc:
        res["dnc"] = np.zeros((len(ks), depths.size))
    if want_cp:
        res["cross_polytope"] = np.zeros((len(ks), depths.size))
    for i, k in enumerate(ks):
        t0 = time.time()
        if want_dnc:
            res["dnc"][i] = np.asarray(uf.dnc_critical_scale(k, depths))
        if want_cp:
            res["cross_polytope"][i] = np.asarray(uf.cross_polytope_critical_scale(k, depths))
        print(f"  K={k}: {time.time() - t0:.1f}s", file=sys.stderr)
    closed = np.asarray(ks, float)[:, None] * (depths - 1) / (depths + 1)
    header = ["K"] + [f"L={d:g}" for d in depths]
    text = ""
    data = {"closed_form": _da(("K", "depth"), closed, "hand linearization K (L-1)/(L+1)")}
    attrs = {}
    if want_dnc:
        rows = [[k] + list(res["dnc"][i]) for i, k in enumerate(ks)]
        text += table("DNC critical scale x*(K, L) (autodiff Jacobian + root finding)", header,
                      rows)
        dev = float(np.max(np.abs(res["dnc"] - closed) / np.maximum(closed, 1e-300)))
        text += f"max relative deviation from the hand linearization K(L-1)/(L+1): {dev:.2e}\n"
        data["dnc"] = _da(("K", "depth"), res["dnc"], "DNC critical scale x*")
        attrs["max_rel_dev_from_closed_form"] = dev
    if want_cp:
        rows = [[k] + list(res["cross_polytope"][i]) for i, k in enumerate(ks)]
        text += table("cross-polytope critical scale (restricted to its support)", header, rows)
        data["cross_polytope"] = _da(("K", "depth"), res["cross_polytope"],
                                     "cross-polytope critical scale x*")
    ds = xr.Dataset(data, coords={"K": ks, "depth": depths}, attrs=attrs)
    return ds, text, [("critical_scale.png", lambda p: P.plot_critical_scale(res, p))]


def run_perturb(cfg: dict):
    import jax
    import jax.numpy as jnp
    import xarray as xr

    import ufmflow as uf

    from ..theory import _plots as P

    k, depth = int(cfg["K"]), float(cfg["depth"])
    xstar = float(uf.dnc_critical_scale(k, depth))
    key = jax.random.PRNGKey(cfg["seed"])
    stability = jax.vmap(lambda x: uf.dnc_stability(k, depth, x))
    runs, rows = [], []
    for ratio in cfg["ratio"]:
        x = ratio * xstar
        s0 = uf.perturb_structure(key, k, x, cfg["eps"])
        lam = float(uf.dnc_stability(k, depth, x))
        f = float(jnp.exp(uf.hadamard_log_rates(uf.structure_point(k, x), depth)[1]) / x)
        ts = jnp.linspace(0.0, 0.1 / f, 21)  # the structure's norm grows by ~10%
        sol = uf.solve_hadamard(s0, depth, ts[-1], ts=ts, rtol=1e-10, atol=1e-14)
        dist = np.asarray(uf.direction_distance(sol.s))
        # linear theory: log(dist(tau)/dist(0)) = int lambda(x(t)) dt along the trajectory
        xs = jnp.exp(jnp.mean(jnp.log(sol.s[:, 1:]), axis=-1))
        predicted = float(np.trapezoid(np.asarray(stability(xs)), np.asarray(ts)))
        runs.append(dict(K=k, depth=depth, x_over_xstar=ratio, tau_rel=np.asarray(ts) * f,
                         distance=dist))
        rows.append([ratio, x, lam, float(np.log(dist[-1] / dist[0])), predicted,
                     "away" if dist[-1] > dist[0] else "back"])
    header = ["x/x*", "x", "eigenvalue", "log_dist_ratio", "int_eigenvalue_dtau", "moves"]
    text = table(f"DNC perturbations, K={k}, L={depth:g}, x*={xstar:.4g}", header, rows)
    col = lambda j: [r[j] for r in rows]  # noqa: E731
    ds = xr.Dataset(
        {"x": _da("ratio", col(1), "scale x of the perturbed structure"),
         "eigenvalue": _da("ratio", col(2), "largest tangent eigenvalue at x", "1/tau"),
         "log_dist_ratio": _da("ratio", col(3), "log(dist(end) / dist(0)) along the solve"),
         "int_eigenvalue_dtau": _da("ratio", col(4), "integrated eigenvalue (linear theory)"),
         "moves_away": _da("ratio", [r[5] == "away" for r in rows], "distance to DNC grew"),
         "tau_rel": _da(("ratio", "step"), [r["tau_rel"] for r in runs],
                        "reduced time x common log-rate F(x)"),
         "distance": _da(("ratio", "step"), [r["distance"] for r in runs],
                         "distance of the direction to DNC")},
        coords={"ratio": np.asarray(cfg["ratio"], float)},
        attrs={"K": k, "depth": depth, "xstar": xstar})
    return ds, text, [("perturb.png", lambda p: P.plot_perturbation(runs, p))]


def run_minimal_rank(cfg: dict):
    import xarray as xr

    import ufmflow as uf

    from ..theory import _plots as P

    rows = []
    for k in cfg["K"]:
        r = uf.minimal_supports(int(k))
        rows.append([r["num_classes"], r["log2_k"], r["min_size"], r["num_minimal"],
                     r["num_positive"], r["num_supports"], " ".join(map(str, r["examples"][0]))])
    header = ["K", "log2K", "min_support", "num_minimal", "num_positive_margin",
              "num_supports", "example"]
    text = table("smallest support with positive margins (exhaustive, Prop. C.1)", header, rows)
    names = ["log2_k", "min_support", "num_minimal", "num_positive_margin", "num_supports"]
    longs = ["log2 K", "size of the smallest support with positive margins",
             "supports of that size with positive margins", "supports with positive margins",
             "nonempty supports searched"]
    data = {n: _da("K", [r[j + 1] for r in rows], ln) for j, (n, ln) in
            enumerate(zip(names, longs))}
    data["example"] = ("K", np.asarray([r[6] for r in rows], dtype=object),
                       {"long_name": "one minimal support (indices)"})
    ds = xr.Dataset(data, coords={"K": [int(r[0]) for r in rows]})
    figure = lambda p: P.plot_minimal_rank(  # noqa: E731
        [r[0] for r in rows], [r[2] for r in rows], [r[1] for r in rows],
        [r[4] for r in rows], [r[5] for r in rows], p)
    return ds, text, [("minimal_rank.png", figure)]
