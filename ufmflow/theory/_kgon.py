"""Theorem 3.2 / paper Fig. 3 (left, middle) and Fig. 8: do deep UFMs that converge to rank 2
form the regular K-gon? The rank-2 Gram factor of a class-mean logit matrix, the angles between
adjacent class means on its circle, the circulant order of the classes, and the deep runs that
measure them (full gradient flow and the paper's GD protocol; theory §5.4, App. E.1)."""

from __future__ import annotations

import math
import time

import numpy as np
from jaxtyping import Float

from ._checks import check_int, check_rtol, real_arg

RANK_RTOL_KGON = 1e-3
"""A run's class-mean logits have numerical rank 2 when `sigma_3 / sigma_1 < RANK_RTOL_KGON`
(theory §5.4): the third singular value of a converged rank-2 run decays only like a power of
time, so the threshold is looser than the solver's `RANK_RTOL`."""

KGON_METHODS = ("gd", "gf")


def _matrix(M) -> np.ndarray:
    M = np.asarray(M, float)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 3:
        raise ValueError(f"M must be a (K, K) class-mean logit matrix with K >= 3, got shape "
                         f"{M.shape}; pass model.class_mean_logits().")
    if not np.all(np.isfinite(M)):
        raise ValueError("M must be finite; a failed run has no class-mean geometry.")
    return M


def numerical_rank(M: Float[np.ndarray, "K K"], rtol: float = RANK_RTOL_KGON) -> int:
    """Number of singular values `> rtol * sigma_1` (theory §5.4; 0 for `M = 0`).

    **Raises:** `ValueError` for a bad `M` or `rtol` outside `(0, 1)`."""
    check_rtol("rtol", rtol)
    s = np.linalg.svd(_matrix(M), compute_uv=False)
    return int(np.sum(s > rtol * s[0])) if s[0] > 0 else 0


def gram_factor(M: Float[np.ndarray, "K K"], rank: int = 2) -> Float[np.ndarray, "r K"]:
    """Gram factor `G = Sigma_r^{1/2} V_r^T` of the class-mean logits `M = U Sigma V^T` (theory
    §5.4, paper App. E.1): for a positive semi-definite `M` of rank `r` (the structure of
    Theorem 3.2) `G^T G = M` exactly and column `c` is class `c`'s point; for a run's `M` (not
    exactly symmetric) it is the factor of the nearest rank-`r` PSD matrix with `M`'s right
    singular vectors. Unique up to a rotation (and the signs of the singular vectors).

    **Raises:** `ValueError` for a bad `M` or `rank` outside `1..K`.
    """
    M = _matrix(M)
    rank = check_int("rank", rank, fix=f"the Gram factor has 1..K = {M.shape[0]} rows.")
    if rank > M.shape[0]:
        raise ValueError(f"rank must be <= K = {M.shape[0]}, got {rank}.")
    _, s, vt = np.linalg.svd(M)
    return np.sqrt(s[:rank])[:, None] * vt[:rank]


def circle_angles(M: Float[np.ndarray, "K K"]) -> Float[np.ndarray, " K"]:
    """Angle in `[0, 2 pi)` of each class's point of the rank-2 Gram factor (`gram_factor(M,
    2)`), measured from the first singular direction."""
    G = gram_factor(M, 2)
    return np.mod(np.arctan2(G[1], G[0]), 2 * np.pi)


def circle_order(M: Float[np.ndarray, "K K"]) -> np.ndarray:
    """The classes in the order they sit on the circle of the rank-2 Gram factor, starting with
    class 0 and going counter-clockwise (paper Fig. 8): permuting a regular K-gon's classes by it
    makes the matrix circulant (`permute_classes`)."""
    a = circle_angles(M)
    return np.argsort(np.mod(a - a[0], 2 * np.pi), kind="stable")


def adjacent_angles(M: Float[np.ndarray, "K K"]) -> Float[np.ndarray, " K"]:
    """Angles between adjacent class points on the circle of the rank-2 Gram factor, in circle
    order (`K` gaps summing to `2 pi`); all `2 pi / K` for the regular K-gon (Theorem 3.2)."""
    a = np.sort(circle_angles(M))
    return np.diff(np.concatenate([a, a[:1] + 2 * np.pi]))


def permute_classes(M: Float[np.ndarray, "K K"], order) -> np.ndarray:
    """`M` with its classes (rows and columns together) relabelled: `M[order][:, order]`.

    **Raises:** `ValueError` unless `M` is square and `order` a permutation of `0..K-1`."""
    M = np.asarray(M)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be a square (K, K) matrix, got shape {M.shape}.")
    order = np.asarray(order)
    if order.shape != (M.shape[0],) or not np.array_equal(np.sort(order), np.arange(M.shape[0])):
        raise ValueError(f"order must be a permutation of 0..K-1 = 0..{M.shape[0] - 1}, got "
                         f"{order.tolist()!r}; pass circle_order(M).")
    return M[np.ix_(order, order)]


def circulant_defect(M: Float[np.ndarray, "K K"]) -> float:
    """`max_{i,j} |M[i, j] - M[0, (j - i) mod K]| / max |M|`: 0 iff `M` is circulant.

    **Raises:** `ValueError` for a bad `M` or `M = 0` (no scale to measure against)."""
    M = _matrix(M)
    if not np.any(M):
        raise ValueError("M must not be all zeros (the defect is relative to max |M|).")
    K = M.shape[0]
    i, j = np.indices((K, K))
    return float(np.max(np.abs(M - M[0, (j - i) % K])) / np.max(np.abs(M)))


def kgon_measure(M: Float[np.ndarray, "K K"], rtol: float = RANK_RTOL_KGON) -> dict:
    """The Theorem 3.2 measurements of one class-mean logit matrix (theory §5.4):

    `rank` (`numerical_rank(M, rtol)`), `is_rank2`, `sigma` (singular values / `sigma_1`),
    `min_angle`, `max_angle` (adjacent angles of the rank-2 Gram factor, radians; measured for
    every `M`, meaningful when `is_rank2`), `ideal` (`2 pi / K`), `angle_error`
    (`max |gap - 2 pi/K| / (2 pi/K)`), `asymmetry` (`||M - M^T||_F / ||M||_F`) and `order`
    (`circle_order`).

    **Raises:** `ValueError` for a bad `M` or `rtol` outside `(0, 1)`.
    """
    check_rtol("rtol", rtol)
    M = _matrix(M)
    K = M.shape[0]
    s = np.linalg.svd(M, compute_uv=False)
    gaps = adjacent_angles(M)
    ideal = 2 * np.pi / K
    rank = numerical_rank(M, rtol)
    return dict(rank=rank, is_rank2=rank == 2, sigma=s / s[0], min_angle=float(gaps.min()),
                max_angle=float(gaps.max()), ideal=ideal,
                angle_error=float(np.max(np.abs(gaps - ideal)) / ideal),
                asymmetry=float(np.linalg.norm(M - M.T) / np.linalg.norm(M)),
                order=circle_order(M))


def kgon_runs(key, ks, depth: int, seeds: int, *, method: str = "gd", width: int = 16,
              per_class: int = 1, scale: float = 0.7, lr: float = 0.05, epochs: int = 100_000,
              weight_decay: float = 1e-3, decay_epochs: int = 20_000, t1: float = 1e8,
              rtol: float = RANK_RTOL_KGON, progress=None) -> dict:
    """Deep UFM runs for Theorem 3.2 / Fig. 3 (theory §5.4, paper App. E.1): for each `K` in
    `ks`, `seeds` Gaussian inits (`gaussian_init(key_K, K, per_class, width, depth, scale)`,
    `key_K = fold_in(key, K)`, split over seeds) trained, vmapped over seeds, by

    - `method="gd"`: the paper's protocol, `descend(lr, epochs, weight_decay, decay_epochs)`:
      weight decay during the first `decay_epochs` epochs, then unregularized;
    - `method="gf"`: full gradient flow `solve_flow(model, t1)` (no regularization);

    then `kgon_measure` of each final class-mean logit matrix.

    **Returns:** dict of numpy arrays over `(K, seed)`: `status` (`uf.Status` codes), `rank`,
    `is_rank2`, `sigma3` (`sigma_3/sigma_1`), `sigma2` (`sigma_2/sigma_1`), `min_angle`,
    `max_angle` (radians, `nan` for failed runs), `normalized_margin`, `seconds` (per K, the
    whole batch), plus `logits` `(K, seed, Kmax, Kmax)` zero-padded and `ks`, `ideal`
    (`2 pi / K`).

    **Raises:** `ValueError` for an unknown `method`, no `ks` or a `K < 3`, `depth < 1`,
    `seeds < 1`, `width < 1`, `per_class < 1`, non-positive `scale`, `lr`, `t1`, `epochs < 1`,
    `weight_decay < 0`, `decay_epochs` outside `0..epochs`, `rtol` outside `(0, 1)`.
    """
    import equinox as eqx
    import jax

    from ..core._init import gaussian_init
    from ..core._metrics import normalized_margin
    from ..solvers._descent import descend
    from ..solvers._flow import solve_flow

    if method not in KGON_METHODS:
        raise ValueError(f"method must be one of {KGON_METHODS}, got {method!r}.")
    ks = [check_int("ks", k, minimum=3, fix="a K-gon needs K >= 3 classes.") for k in ks]
    if not ks:
        raise ValueError("ks must name at least one class count K >= 3.")
    depth = check_int("depth", depth)
    seeds = check_int("seeds", seeds)
    width = check_int("width", width, fix="the feature width d.")
    per_class = check_int("per_class", per_class, fix="n, samples per class.")
    for name, v in (("scale", scale), ("lr", lr), ("t1", t1)):
        real_arg(name, v, minimum=0.0, strict=True, fix="pass a positive number.")
    epochs = check_int("epochs", epochs, fix="the number of gradient-descent epochs.")
    real_arg("weight_decay", weight_decay, minimum=0.0, fix="weight decay >= 0.")
    decay_epochs = check_int("decay_epochs", decay_epochs, minimum=0,
                             fix="epochs with weight decay, 0..epochs.")
    if decay_epochs > epochs:
        raise ValueError(f"decay_epochs must be <= epochs = {epochs}, got {decay_epochs}.")
    check_rtol("rtol", rtol)
    kmax = max(ks)
    shape = (len(ks), seeds)
    out = {name: np.full(shape, np.nan) for name in
           ("sigma3", "sigma2", "min_angle", "max_angle", "normalized_margin")}
    out.update(status=np.zeros(shape, int), rank=np.zeros(shape, int),
               is_rank2=np.zeros(shape, bool), seconds=np.zeros(len(ks)),
               logits=np.zeros(shape + (kmax, kmax)))
    for i, K in enumerate(ks):
        t0 = time.time()
        keys = jax.random.split(jax.random.fold_in(key, K), seeds)
        models = eqx.filter_vmap(
            lambda k: gaussian_init(k, K, per_class, width, depth, scale))(keys)  # noqa: B023
        if method == "gd":
            run = lambda m: descend(m, lr, epochs, weight_decay=weight_decay,  # noqa: E731
                                    decay_epochs=decay_epochs, num_saves=4)
        else:
            run = lambda m: solve_flow(m, t1, num_saves=4)  # noqa: E731
        sol = eqx.filter_vmap(run)(models)
        Ms = np.asarray(eqx.filter_vmap(lambda m: m.class_mean_logits())(sol.model))
        nm = np.asarray(eqx.filter_vmap(normalized_margin)(sol.model))
        out["status"][i] = np.asarray(sol.status)
        for j in range(seeds):
            M = Ms[j]
            out["logits"][i, j, :K, :K] = M
            if out["status"][i, j] != 0 or not np.all(np.isfinite(M)):
                continue
            m = kgon_measure(M, rtol)
            out["rank"][i, j], out["is_rank2"][i, j] = m["rank"], m["is_rank2"]
            out["sigma2"][i, j], out["sigma3"][i, j] = m["sigma"][1], m["sigma"][2]
            out["min_angle"][i, j], out["max_angle"][i, j] = m["min_angle"], m["max_angle"]
            out["normalized_margin"][i, j] = nm[j]
        out["seconds"][i] = time.time() - t0
        if progress is not None:
            progress(K, out["seconds"][i])
    out["ks"] = np.asarray(ks)
    out["ideal"] = 2 * math.pi / out["ks"]
    return out
