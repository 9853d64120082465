"""Dynamics of depth from the shell: `python -m ufmflow.dynamics <analysis> key=value ...`.

Analyses (paper Sections 4.2-4.4, App. C, E.3, E.4; theory §4, §6):

- `critical-scale`   DNC / cross-polytope critical scale x*(K, L) (Theorem 4.3 i-ii)
- `perturb`          DNC perturbations below / above x* along solve_hadamard trajectories
- `rich-get-richer`  how often the gap between two modes grows near the origin (Theorem 4.4)
- `kl`               KL to NC: depth-1 monotonicity over random inits; a diverging L >= 2 path
- `basins`           fraction of random directions ending at DNC / between / minimal rank
                     (2048 directions per cell, K = 8, 16, 32: ~4 min on 2 CPU cores)
- `minimal-rank`     exhaustive search for the smallest support with positive margins (Prop. C.1)
- `effective-rank`   Fig. 9: late-time effective rank vs depth and vs init scale
- `width`            Theorem 4.5 / Fig. 5: ETF alignment vs width, and rank at convergence
                     (widths 16..4096, 3 seeds at 4096 and 5 below: ~12 min on 2 CPU cores)
- `random-vs-hadamard`  Fig. 11: singular values from a small random init beside Hadamard
- `all`              every analysis above (add `quick=1` for a smoke run)

Values: numbers, comma lists (`K=8,16`), integer ranges (`depth=1..8`), geometric ranges
(`scale=1e-2:1e2:5`, i.e. 5 log-spaced values). Common keys: `out` (folder, default `out`),
`seed`, `quick` (small sizes). Every analysis prints its table and writes `<name>.csv`,
`<name>.json` and `<name>.png` to `out`. For `width`: widths `>= wide_width` run only the
first `wide_seeds` of the `seeds` keys; `t1` is the GF time at which the effective rank is
read ("at convergence"); `rtol` is the flows' tolerance.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time

import numpy as np

USAGE = __doc__

DEFAULTS = {
    "critical-scale": dict(
        K=[4, 8, 16, 32, 64, 128, 256, 512, 1024],
        depth=[1, 1.25, 1.5, 2, 2.5, 3, 4, 6, 8, 12, 16],
        structure="both",
    ),
    "perturb": dict(K=8, depth=4.0, ratio=[0.1, 0.5, 2.0, 5.0], eps=1e-4),
    "rich-get-richer": dict(
        K=16, depth=[1, 1.5, 2, 4, 8], scale=[1e-3, 1e-2, 1e-1, 1, 10], num=512
    ),
    "kl": dict(K=8, depth=4.0, x=1.0, delta=None, num=256, tau1=1e100),
    "basins": dict(
        K=[8, 16, 32], depth=[1, 2, 3, 4, 5, 6, 7, 8], scale=[1e-2, 1e-1, 1, 10, 100],
        num=2048, tau1=1e300,
    ),
    "minimal-rank": dict(K=[4, 8, 16]),
    "effective-rank": dict(
        K=16, depth=[1, 2, 3, 4, 5, 6, 7, 8, 12, 16], scale=[1e-2, 1e-1, 1, 10, 100],
        scale_depth=[2, 4, 8], depth_scale=1e-2, num=128, tau1=1e300,
    ),
    "width": dict(
        K=4, n=4, depth=3, width=[16, 64, 256, 1024, 4096], scale=[0.01, 0.1, 0.5, 1.0],
        seeds=5, wide_seeds=3, wide_width=4096,
        grown_width=[16, 64, 256, 1024, 4096], grown_scale=0.1,
        conv_width=[8, 16, 32, 64, 128, 256, 1024, 4096], conv_scale=0.5, t1=1e8, rtol=1e-6,
    ),
    "random-vs-hadamard": dict(K=8, depth=4, width=32, n=1, scale=0.3, t1=1e8),
}
QUICK = {
    "critical-scale": dict(K=[4, 8, 16, 32], depth=[1, 1.5, 2, 4, 8]),
    "perturb": dict(),
    "rich-get-richer": dict(K=8, depth=[1, 2, 4], scale=[1e-2, 1], num=64),
    "kl": dict(num=32),
    "basins": dict(K=[8], depth=[1, 2, 4], scale=[1e-2, 1], num=64),
    "minimal-rank": dict(K=[4, 8]),
    "effective-rank": dict(K=8, depth=[1, 2, 4, 8], scale=[1e-2, 1], scale_depth=[4], num=16),
    "width": dict(width=[16, 64, 256], scale=[0.1], seeds=2, grown_width=[16, 64],
                  conv_width=[8, 64], t1=1e4),
    "random-vs-hadamard": dict(t1=1e6),
}
COMMON = {"out": "out", "seed": 0, "quick": 0}


def _parse_value(text: str):
    if text.lower() in ("none", ""):
        return None
    if ".." in text and ":" not in text:
        a, b = text.split("..")
        return list(range(int(a), int(b) + 1))
    if text.count(":") == 2:
        a, b, n = text.split(":")
        return [float(v) for v in np.geomspace(float(a), float(b), int(n))]
    if "," in text:
        return [_parse_value(t) for t in text.split(",") if t]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def usage() -> str:
    """The module docstring followed by every analysis's keys and defaults."""
    lines = [USAGE.rstrip(), "", "Defaults (key=value; `quick=1` shrinks them):"]
    for name, cfg in DEFAULTS.items():
        words = [f"{k}={','.join(map(_fmt, v)) if isinstance(v, list) else _fmt(v)}"
                 for k, v in cfg.items()]
        lines.append(f"  {name}: " + " ".join(words))
    lines.append("  common: " + " ".join(f"{k}={v}" for k, v in COMMON.items()))
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[str, dict]:
    """`[analysis, key=value, ...]` -> `(analysis, config)` with defaults filled in.

    **Raises:** `ValueError` for an unknown analysis or key, naming the valid ones.
    """
    if not argv or argv[0] in ("-h", "--help", "help"):
        raise SystemExit(usage())
    name = argv[0].replace("_", "-")
    if name != "all" and name not in DEFAULTS:
        raise ValueError(
            f"unknown analysis {argv[0]!r}; pick one of: {', '.join(DEFAULTS)}, all."
        )
    given = {}
    for word in argv[1:]:
        if "=" not in word:
            raise ValueError(f"expected key=value, got {word!r} (e.g. K=8,16 depth=1..8).")
        key, value = word.split("=", 1)
        given[key] = _parse_value(value)
    allowed = set(COMMON) if name == "all" else set(COMMON) | set(DEFAULTS[name])
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} for {name!r}; valid keys: {', '.join(sorted(allowed))}."
        )
    return name, given


def _config(name: str, given: dict) -> dict:
    cfg = dict(COMMON)
    cfg.update(DEFAULTS[name])
    if given.get("quick"):
        cfg.update(QUICK[name])
    cfg.update({k: v for k, v in given.items() if k in cfg})
    return cfg


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]


def _write(out: str, name: str, header: list[str], rows: list[list], meta: dict) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(dict(meta, header=header, rows=rows), f, indent=1, default=_jsonable)


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


# --------------------------------------------------------------------------------------------


def run_critical_scale(cfg: dict) -> dict:
    import ufmflow as uf

    from ..theory import _plots as P

    ks = [int(k) for k in _as_list(cfg["K"])]
    depths = np.asarray(_as_list(cfg["depth"]), float)
    structure = cfg["structure"]
    res = dict(K=ks, depths=depths, dnc=np.zeros((len(ks), depths.size)))
    if structure in ("both", "cross_polytope"):
        res["cross_polytope"] = np.zeros_like(res["dnc"])
    for i, k in enumerate(ks):
        t0 = time.time()
        res["dnc"][i] = np.asarray(uf.dnc_critical_scale(k, depths))
        if "cross_polytope" in res:
            res["cross_polytope"][i] = np.asarray(uf.cross_polytope_critical_scale(k, depths))
        print(f"  K={k}: {time.time() - t0:.1f}s", file=sys.stderr)
    header = ["K"] + [f"L={d:g}" for d in depths]
    rows = [[k] + list(res["dnc"][i]) for i, k in enumerate(ks)]
    print_table("DNC critical scale x*(K, L) (autodiff Jacobian + root finding)", header, rows)
    closed = np.asarray(ks)[:, None] * (depths - 1) / (depths + 1)
    dev = np.max(np.abs(res["dnc"] - closed) / np.maximum(closed, 1e-300))
    print(f"max relative deviation from the hand linearization K(L-1)/(L+1): {dev:.2e}")
    out_rows = [["dnc", k] + list(res["dnc"][i]) for i, k in enumerate(ks)]
    if "cross_polytope" in res:
        cp_rows = [[k] + list(res["cross_polytope"][i]) for i, k in enumerate(ks)]
        print_table("cross-polytope critical scale (restricted to its support)", header, cp_rows)
        out_rows += [["cross_polytope"] + r for r in cp_rows]
    _write(cfg["out"], "critical_scale", ["structure"] + header, out_rows,
           dict(config=cfg, max_rel_dev_from_closed_form=dev))
    P.plot_critical_scale(res, os.path.join(cfg["out"], "critical_scale.png"))
    return res


def run_perturb(cfg: dict) -> dict:
    import jax
    import jax.numpy as jnp

    import ufmflow as uf

    from ..theory import _plots as P

    k, depth = int(cfg["K"]), float(cfg["depth"])
    xstar = float(uf.dnc_critical_scale(k, depth))
    key = jax.random.PRNGKey(cfg["seed"])
    stability = jax.vmap(lambda x: uf.dnc_stability(k, depth, x))
    runs, rows = [], []
    for ratio in _as_list(cfg["ratio"]):
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
    print_table(f"DNC perturbations, K={k}, L={depth:g}, x*={xstar:.4g}", header, rows)
    _write(cfg["out"], "perturb", header, rows, dict(config=cfg, xstar=xstar))
    P.plot_perturbation(runs, os.path.join(cfg["out"], "perturb.png"))
    return dict(rows=rows)


def run_rich_get_richer(cfg: dict) -> dict:
    import jax

    import ufmflow as uf

    from ..theory import _plots as P

    res = uf.rich_get_richer(jax.random.PRNGKey(cfg["seed"]), int(cfg["K"]),
                             _as_list(cfg["depth"]), _as_list(cfg["scale"]), int(cfg["num"]))
    header = ["depth"] + [f"scale={s:g}" for s in res["scales"]]
    rows = [[d] + list(res["frac_extreme_grows"][i]) for i, d in enumerate(res["depths"])]
    print_table(f"fraction of inits whose max-min gap grows (K={cfg['K']}; Thm 4.4: ~1 for L>1,"
                " ~0 for L=1 at small scale)", header, rows)
    rows2 = [[d] + list(res["frac_random_grows"][i]) for i, d in enumerate(res["depths"])]
    print_table("same, for a random pair of modes", header, rows2)
    _write(cfg["out"], "rich_get_richer", ["pair"] + header,
           [["extreme"] + r for r in rows] + [["random"] + r for r in rows2],
           dict(config=cfg, failed=res["failed"]))
    P.plot_fraction_heatmaps(res, ["frac_extreme_grows", "frac_random_grows"],
                             ["max-min gap grows", "random-pair gap grows"],
                             os.path.join(cfg["out"], "rich_get_richer.png"))
    return res


def run_kl(cfg: dict) -> dict:
    import jax
    import jax.numpy as jnp

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
    # depth >= 2: a path whose KL grows without bound (paper Fig. 10)
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
    header = ["quantity", "value"]
    rows = [
        ["depth-1 runs", num],
        ["depth-1 failed solves", int(np.sum(np.asarray(status) != 0))],
        ["depth-1 max KL increase between saves", max_inc],
        ["depth-1 max dKL/dtau at the inits", rate1],
        [f"L={depth:g}: threshold on delta ((K-2)/K)^(1/(alpha-1))", thr],
        [f"L={depth:g}: delta used", delta],
        [f"L={depth:g}: KL nondecreasing", bool(np.all(np.diff(kl) >= -1e-12))],
        [f"L={depth:g}: KL at tau=0", kl[0]],
        [f"L={depth:g}: KL at tau={cfg['tau1']:g}", kl[-1]],
        [f"L={depth:g}: b/a at the end", float(sol.s[-1, 2] / sol.s[-1, 1])],
        ["L=1 from the same init: KL at the end", float(res["kl_depth1"][-1])],
    ]
    print_table("KL divergence to NC", header, rows)
    _write(cfg["out"], "kl", header, rows, dict(config=cfg, tau=res["tau"], kl=kl))
    P.plot_kl(res, os.path.join(cfg["out"], "kl.png"))
    return res


def run_basins(cfg: dict) -> dict:
    import jax

    import ufmflow as uf

    from ..theory import _plots as P

    results = {}
    all_rows = []
    for k in _as_list(cfg["K"]):
        k = int(k)
        t0 = time.time()
        res = uf.basins_of_attraction(jax.random.PRNGKey(cfg["seed"]), k, _as_list(cfg["depth"]),
                                      _as_list(cfg["scale"]), int(cfg["num"]), tau1=cfg["tau1"])
        print(f"  K={k}: {time.time() - t0:.1f}s", file=sys.stderr)
        header = ["depth", "scale", "dnc", "between", "minimal", "mean_erank", "failed"]
        rows = []
        for i, d in enumerate(res["depths"]):
            for j, c in enumerate(res["scales"]):
                fr = res["fractions"][i, j]
                rows.append([d, c, fr[0], fr[1], fr[2],
                             float(np.nanmean(res["effective_rank"][i, j])),
                             int(res["failed"][i, j])])
        print_table(f"basins of attraction, K={k} ({cfg['num']} directions per cell; DNC: erank >="
                    f" 0.9(K-1); minimal: erank <= log2 K + 0.5)", header, rows)
        all_rows += [[k] + r for r in rows]
        for c, name in enumerate(uf.STRUCTURE_NAMES):
            res[name] = res["fractions"][..., c]
        P.plot_fraction_heatmaps(res, list(uf.STRUCTURE_NAMES),
                                 [f"K={k}: fraction -> {n}" for n in uf.STRUCTURE_NAMES],
                                 os.path.join(cfg["out"], f"basins_K{k}.png"))
        results[k] = res
    _write(cfg["out"], "basins", ["K"] + header, all_rows, dict(config=cfg))
    return results


def run_minimal_rank(cfg: dict) -> dict:
    import ufmflow as uf

    rows = []
    for k in _as_list(cfg["K"]):
        r = uf.minimal_supports(int(k))
        rows.append([r["num_classes"], r["log2_k"], r["min_size"], r["num_minimal"],
                     r["num_positive"], r["num_supports"], " ".join(map(str, r["examples"][0]))])
    header = ["K", "log2K", "min_support", "num_minimal", "num_positive_margin",
              "num_supports", "example"]
    print_table("smallest support with positive margins (exhaustive, Prop. C.1)", header, rows)
    _write(cfg["out"], "minimal_rank", header, rows, dict(config=cfg))
    return dict(rows=rows)


def run_effective_rank(cfg: dict) -> dict:
    import jax

    import ufmflow as uf

    from ..theory import _plots as P

    key = jax.random.PRNGKey(cfg["seed"])
    k = int(cfg["K"])
    rd = uf.effective_rank_sweep(key, k, _as_list(cfg["depth"]), [cfg["depth_scale"]],
                                 int(cfg["num"]), tau1=cfg["tau1"])
    rs = uf.effective_rank_sweep(key, k, _as_list(cfg["scale_depth"]), _as_list(cfg["scale"]),
                                 int(cfg["num"]), tau1=cfg["tau1"])
    rows = [["depth", d, cfg["depth_scale"], rd["mean"][i, 0], rd["std"][i, 0]]
            for i, d in enumerate(rd["depths"])]
    rows += [["scale", d, c, rs["mean"][i, j], rs["std"][i, j]]
             for i, d in enumerate(rs["depths"]) for j, c in enumerate(rs["scales"])]
    header = ["sweep", "depth", "scale", "erank_mean", "erank_std"]
    print_table(f"late-time effective rank (K={k}, log2 K={rd['log2_k']}, Fig. 9)", header, rows)
    _write(cfg["out"], "effective_rank", header, rows, dict(config=cfg))
    P.plot_erank(rd, rs, os.path.join(cfg["out"], "effective_rank.png"))
    return dict(depth=rd, scale=rs)


def _mean_std(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "nan"
    return f"{v.mean():.5g} ± {v.std():.2g} ({v.size})"


def run_width(cfg: dict) -> dict:
    import jax

    import ufmflow as uf

    from ..theory import _plots as P

    key = jax.random.PRNGKey(cfg["seed"])
    k, n, depth, seeds = int(cfg["K"]), int(cfg["n"]), int(cfg["depth"]), int(cfg["seeds"])
    wide = dict(wide_seeds=cfg["wide_seeds"], wide_width=int(cfg["wide_width"]))

    def progress(part):
        return lambda w, sec: print(f"  {part}: width {w} in {sec:.1f}s", file=sys.stderr,
                                    flush=True)

    t0 = time.time()
    vel = uf.width_alignment(key, k, n, depth, _as_list(cfg["width"]), _as_list(cfg["scale"]),
                             seeds)
    print(f"  initial velocity: {time.time() - t0:.1f}s", file=sys.stderr)
    rows = [["velocity", w, eps, vel["mean"][i, j], vel["std"][i, j], seeds]
            for i, w in enumerate(vel["widths"]) for j, eps in enumerate(vel["scales"])]
    grown = conv = None
    if cfg["grown_width"]:
        t0 = time.time()
        grown = uf.grown_alignment_sweep(key, k, n, depth, _as_list(cfg["grown_width"]),
                                         cfg["grown_scale"], seeds, rtol=cfg["rtol"],
                                         progress=progress("after 10x growth"), **wide)
        print(f"  after 10x growth: {time.time() - t0:.1f}s", file=sys.stderr)
        rows += [["logits_after_10x", w, cfg["grown_scale"], grown["logit_mean"][i],
                  grown["logit_std"][i], grown["seeds"][i]]
                 for i, w in enumerate(grown["widths"])]
    if cfg["conv_width"]:
        t0 = time.time()
        conv = uf.converged_rank_vs_width(key, k, n, depth, _as_list(cfg["conv_width"]),
                                          cfg["conv_scale"], seeds, t1=cfg["t1"],
                                          rtol=cfg["rtol"], progress=progress("convergence"),
                                          **wide)
        print(f"  convergence: {time.time() - t0:.1f}s", file=sys.stderr)
        rows += [["erank_at_t1", w, cfg["conv_scale"], conv["mean"][i], conv["std"][i],
                  conv["seeds"][i]] for i, w in enumerate(conv["widths"])]
        if conv["failed"].any():
            print(f"  failed solves per width: {conv['failed'].tolist()}", file=sys.stderr)
    header = ["quantity", "width", "scale", "mean", "std", "seeds"]
    print_table(f"width at random init (K={k}, n={n}, L={depth}; ETF distance of Fig. 5, "
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
    print_table("per width: mean ± std (seeds)", sheader, summary)
    _write(cfg["out"], "width", header, rows, dict(config=cfg, summary_header=sheader,
                                                   summary=summary))
    P.plot_width(vel, grown, conv, os.path.join(cfg["out"], "width.png"))
    return dict(velocity=vel, grown=grown, converged=conv)


def run_random_vs_hadamard(cfg: dict) -> dict:
    import jax

    import ufmflow as uf

    from ..theory import _plots as P

    res = uf.random_vs_hadamard(jax.random.PRNGKey(cfg["seed"]), int(cfg["K"]),
                                int(cfg["depth"]), width=int(cfg["width"]),
                                per_class=int(cfg["n"]), scale=cfg["scale"], t1=cfg["t1"])
    header = ["t"] + [f"random_{i}" for i in range(res["sv_random"].shape[1])] + [
        f"hadamard_{i + 1}" for i in range(res["sv_hadamard"].shape[1])]
    rows = [[t] + list(a) + list(b) for t, a, b in
            zip(res["t"], res["sv_random"], res["sv_hadamard"])]
    print_table("final singular values (random | Hadamard)", ["run", "status", "values"],
                [["random", res["status_random"], np.round(res["sv_random"][-1], 3).tolist()],
                 ["hadamard", res["status_hadamard"],
                  np.round(res["sv_hadamard"][-1], 3).tolist()]])
    _write(cfg["out"], "random_vs_hadamard", header, rows, dict(config=cfg))
    P.plot_random_vs_hadamard(res, os.path.join(cfg["out"], "random_vs_hadamard.png"))
    return res


RUNNERS = {
    "critical-scale": run_critical_scale,
    "perturb": run_perturb,
    "rich-get-richer": run_rich_get_richer,
    "kl": run_kl,
    "basins": run_basins,
    "minimal-rank": run_minimal_rank,
    "effective-rank": run_effective_rank,
    "width": run_width,
    "random-vs-hadamard": run_random_vs_hadamard,
}


def main(argv: list[str] | None = None) -> dict:
    """Entry point: parse, run, print, write `out/<analysis>.{csv,json,png}`."""
    name, given = parse_args(sys.argv[1:] if argv is None else argv)
    names = list(RUNNERS) if name == "all" else [name]
    results = {}
    for nm in names:
        cfg = _config(nm, given)
        os.makedirs(cfg["out"], exist_ok=True)  # plots may be written before the tables
        t0 = time.time()
        results[nm] = RUNNERS[nm](cfg)
        print(f"[{nm}] done in {time.time() - t0:.1f}s; wrote to {cfg['out']}/", file=sys.stderr)
    return results
