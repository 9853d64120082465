"""Theorem 3.1 map: which candidate structure minimizes the max-margin objective over
(K, depth), and the exact depth at which DNC stops being the best of them (theory §5.4, §5.6)."""

from __future__ import annotations

import math

import numpy as np

from ._checks import check_int, check_reals
from ._candidates import (
    candidate_objective,
    candidate_singular_values,
    candidates_for,
)

_RTOL_TIE = 1e-12


def _sum_pow(sv, p):
    return sum(m * s**p for s, m in sv)


def _root_p(sv, K):
    """Largest `p` in (0, 1] with `sum m s^p = K - 1` (the DNC value), or `nan` if the candidate
    never beats DNC (theory §5.6: the difference is convex in p)."""
    f = lambda p: _sum_pow(sv, p) - (K - 1)  # noqa: E731
    lo, hi = 1e-15, 1.0
    if not (f(lo) < 0 < f(hi)):
        return math.nan
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 4e-16:
            break
    return 0.5 * (lo + hi)


def dnc_transition_depth(K: int, *, include_hypercube: bool = True) -> tuple[float, str]:
    """Real depth `L*` beyond which DNC is no longer the best candidate (Theorem 3.1, theory
    §5.6): for `L > L*` some candidate of `candidates_for(K)` has a strictly lower max-margin
    objective than DNC, at `L = L*` the best of them ties with DNC. Each candidate's objective
    minus DNC's, `sum_j m_j s_j^p - (K-1)` with `p = 2/(L+1)`, is convex in `p`, negative as
    `p -> 0` (lower rank) and `>= 0` at `p = 1` (DNC is optimal at `L = 1`), so it has one root
    `p*`, found by bisection to machine precision; `L* = 2/p* - 1`. Closed forms: cross-polytope
    `L* = 2/log2(2 - 2/K) - 1`; circle `L* = 2 log s_K / log((K-1)/2) - 1`; the odd
    cross-polytope's root `m 2^p + ((K-1)/K)^{p/2} = 2m` has none (theory §5.6).

    **Returns:** `(L*, name)` of the first candidate to beat DNC; `(inf, "")` if none ever does
    (`K = 3`, where the circle is DNC and the odd cross-polytope is always worse).

    **Raises:** `ValueError` for `K < 3`.
    """
    K = check_int("K", K, minimum=3, fix="the landscape candidates need K >= 3 classes.")
    best_p, best = -1.0, ""
    for name in candidates_for(K, include_hypercube=include_hypercube)[1:]:
        p = _root_p(candidate_singular_values(name, K), K)
        if not math.isnan(p) and p > best_p:
            best_p, best = p, name
    if best_p <= 0:
        return math.inf, ""
    return 2.0 / best_p - 1.0, best


def best_candidate(K: int, depth, *, include_hypercube: bool = True) -> np.ndarray:
    """Name of the candidate with the lowest closed-form objective at `(K, depth)` (theory
    §5.6); ties within a relative `1e-12` go to the earlier of `candidates_for(K)` (DNC first),
    so the `K = 3` circle (which is DNC) and the `K = 4` circle (the cross-polytope) never win.

    **Returns:** numpy array of names, shaped like `depth`.
    """
    names = candidates_for(K, include_hypercube=include_hypercube)
    vals = np.stack([candidate_objective(n, K, depth) for n in names])
    best = vals.min(0)
    idx = np.argmax(vals <= best * (1 + _RTOL_TIE), axis=0)
    return np.asarray(names, dtype=object)[idx]


def landscape_map(ks=range(3, 65), depths=None, *, include_hypercube: bool = True):
    """The Theorem 3.1 map (theory §5.6) as an `xarray.Dataset` over `K` and real `depth`:

    - `objective (candidate, K, depth)`: closed-form objective per unit sample (`n = 1`),
      `nan` where the candidate does not exist for `K`;
    - `best (K, depth)`: index into `candidate` of the lowest objective (ties to DNC, as
      `best_candidate`); `best_name` the same as strings;
    - `transition_depth (K)`: `dnc_transition_depth(K)` (`inf` if none), `transition_by (K)`.

    **Arguments:** `ks` class counts `>= 3`; `depths` real depths `>= 1` (default `1..16` in
    steps of 0.25).

    **Raises:** `ValueError` for no `ks` or a `K < 3`, no `depths` or a depth `< 1` or not
    finite.
    """
    import xarray as xr

    ks = [check_int("ks", k, minimum=3, fix="the landscape candidates need K >= 3.") for k in
          np.asarray(list(ks), dtype=object).reshape(-1)]
    if not ks:
        raise ValueError("ks must name at least one class count K >= 3.")
    depths = (np.arange(1.0, 16.0001, 0.25) if depths is None
              else check_reals("depths", depths, minimum=1.0, fix="depths are L >= 1."))
    cands = ("dnc", "cross_polytope", "circle", "hypercube")  # odd K: cross_polytope_odd
    obj = np.full((len(cands), len(ks), depths.size), np.nan)
    best = np.zeros((len(ks), depths.size), int)
    lstar = np.zeros(len(ks))
    by = []
    for i, K in enumerate(ks):
        names = candidates_for(K, include_hypercube=include_hypercube)
        for n in names:
            row = cands.index("cross_polytope" if n == "cross_polytope_odd" else n)
            obj[row, i] = candidate_objective(n, K, depths)
        winners = best_candidate(K, depths, include_hypercube=include_hypercube)
        best[i] = [cands.index("cross_polytope" if w == "cross_polytope_odd" else w)
                   for w in winners]
        lstar[i], b = dnc_transition_depth(K, include_hypercube=include_hypercube)
        by.append("cross_polytope" if b == "cross_polytope_odd" else b)
    ds = xr.Dataset(
        dict(
            objective=(("candidate", "K", "depth"), obj),
            best=(("K", "depth"), best),
            best_name=(("K", "depth"), np.asarray(cands, dtype=object)[best].astype(str)),
            transition_depth=(("K",), lstar),
            transition_by=(("K",), np.asarray(by, dtype=str)),
        ),
        coords=dict(candidate=list(cands), K=ks, depth=depths),
        attrs=dict(
            description="max-margin objective (L+1) sum sigma^(2/(L+1)) of unit-margin "
            "candidates, n = 1 (theory §5.6); cross_polytope is the odd analogue for odd K",
        ),
    )
    return ds


def landscape_table(ds, depths=(1, 2, 3, 4, 6, 8, 12, 16)) -> str:
    """Text table of a `landscape_map` Dataset (theory §5.6): per `K`, the transition depth `L*`,
    who beats DNC first, and the best candidate at a few integer depths (`D` DNC, `X`
    cross-polytope (odd analogue for odd K), `O` circle, `H` hypercube).

    **Raises:** `ValueError` unless `ds` is a `landscape_map` Dataset."""
    if not all(hasattr(ds, "data_vars") and v in ds.data_vars
               for v in ("best_name", "transition_depth", "transition_by")):
        raise ValueError(f"ds must be the Dataset of landscape_map(ks, depths), got "
                         f"{type(ds).__name__}.")
    abbrev = dict(dnc="D", cross_polytope="X", circle="O", hypercube="H")
    depths = [d for d in depths if np.any(np.isclose(ds.depth.values, d))]
    head = f"{'K':>4} {'L*':>9} {'first beaten by':>16} | " + " ".join(f"L={d:<3g}" for d in depths)
    lines = [head, "-" * len(head)]
    for K in ds.K.values:
        row = ds.sel(K=K)
        ls = float(row.transition_depth)
        names = [abbrev[str(row.best_name.sel(depth=d, method="nearest").values)] for d in depths]
        lines.append(f"{K:>4} {ls:>9.5f} {str(row.transition_by.values) or '-':>16} | "
                     + " ".join(f"{n:<5}" for n in names))
    lines.append("D = DNC, X = cross-polytope (pairs + centred singleton for odd K), O = K-gon, "
                 "H = hypercube; L* = real depth beyond which DNC is not the best candidate")
    return "\n".join(lines)


def plot_landscape_map(ds, ax=None):
    """Heat map of the best candidate over `(K, depth)` with the transition curve `L*(K)`
    (theory §5.6). Returns the matplotlib `Axes`."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    cands = list(ds.candidate.values)
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(cands)]
    ks, depths = ds.K.values, ds.depth.values
    dk = np.diff(ks).min() if len(ks) > 1 else 1
    dd = np.diff(depths).min() if len(depths) > 1 else 1
    ax.imshow(ds.best.values.T, origin="lower", aspect="auto", interpolation="nearest",
              cmap=ListedColormap(colors), vmin=-0.5, vmax=len(cands) - 0.5,
              extent=(ks[0] - dk / 2, ks[-1] + dk / 2, depths[0] - dd / 2, depths[-1] + dd / 2))
    ls = ds.transition_depth.values
    ok = np.isfinite(ls)
    ax.plot(ks[ok], ls[ok], "k.-", lw=1, ms=3, label="L*(K): DNC stops being best")
    for c, name in zip(colors, cands):
        ax.plot([], [], "s", color=c, label=name)
    ax.set(xlabel="K", ylabel="depth L", ylim=(depths[0] - dd / 2, depths[-1] + dd / 2),
           title="lowest max-margin objective among the candidates (Thm 3.1)")
    ax.legend(fontsize=7, loc="upper right")
    return ax

