"""Numerical solutions of the max-margin problem (paper Eq. 3, theory §5.7): an augmented-
Lagrangian solver on the factors of a deep UFM (one sample per class), vmapped over thousands of
random starts, with deduplication and classification of the local optima found; softmax codes
(the width-bottlenecked single-layer problem, theory §5.5)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Float, PRNGKeyArray

from ._checks import check_int, check_rtol, real_arg
from ._candidates import (
    candidate_singular_values,
    candidates_for,
    class_margin,
    max_margin_objective,
)

RANK_RTOL = 1e-5
"""Numerical rank of a solution: singular values `> RANK_RTOL * sigma_1` (theory §5.7)."""


def _logits(factors):
    Z = factors[0]
    for F in factors[1:]:
        Z = F @ Z
    return Z


@functools.lru_cache(maxsize=None)
def _solver(K, depth, width, outer, inner, lr, rho, init_scale, num_devices=1):
    shapes = [(width, K)] + [(width, width)] * (depth - 1) + [(K, width)]
    opt = optax.adam(optax.exponential_decay(lr, outer * inner, 1e-3))

    def violation(th, mask):  # g[c', c] = 1 - (Z[c, c] - Z[c', c]) <= 0 for c' != c
        Z = _logits(th)
        return jnp.where(mask, 1.0 - (jnp.diagonal(Z)[None, :] - Z), 0.0)

    def lagrangian(th, lam, mask):
        g = violation(th, mask)
        pen = jnp.where(mask, jnp.maximum(0.0, lam + rho * g) ** 2 - lam**2, 0.0)
        return 0.5 * sum(jnp.sum(F**2) for F in th) + jnp.sum(pen) / (2.0 * rho)

    def one(key, active):
        # classes >= the active count are padding: unconstrained, their factor rows decay to 0
        mask = active[:, None] & active[None, :] & ~jnp.eye(K, dtype=bool)
        ks = jax.random.split(key, depth + 1)
        th = [init_scale * jax.random.normal(k, s) / jnp.sqrt(s[1]) for k, s in zip(ks, shapes)]

        def outer_step(carry, _):
            th, lam, st = carry

            def inner_step(c, _):
                th, st = c
                up, st = opt.update(jax.grad(lagrangian)(th, lam, mask), st)
                return (optax.apply_updates(th, up), st), None

            (th, st), _ = jax.lax.scan(inner_step, (th, st), None, inner)
            lam = jnp.where(mask, jnp.maximum(0.0, lam + rho * violation(th, mask)), 0.0)
            return (th, lam, st), None

        carry = (th, jnp.zeros((K, K)), opt.init(th))
        (th, _, _), _ = jax.lax.scan(outer_step, carry, None, outer)
        return _logits(th), sum(jnp.sum(F**2) for F in th)

    batched = jax.vmap(one, in_axes=(0, None))
    if num_devices == 1:
        return jax.jit(batched)
    # like the sweeps (ufmflow.sweep._execute): the starts' axis sharded over a 1-D mesh,
    # every device running its slice as an independent program (starts never interact)
    sharding = _batch_sharding(num_devices)
    spec = sharding.spec
    per_device = jax.shard_map(batched, mesh=sharding.mesh, in_specs=(spec, PartitionSpec()),
                               out_specs=(spec, spec), check_vma=False)
    return jax.jit(per_device)


def _batch_sharding(num_devices: int) -> NamedSharding:
    """`NamedSharding` of the starts' axis over the first `num_devices` local devices."""
    mesh = Mesh(np.asarray(jax.local_devices()[:num_devices]), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch"))


def _run_sharded(fn, keys, active, num_devices: int):
    """`fn(keys, active)` with the keys padded (the last key repeated) to a multiple of
    `num_devices` and placed on the mesh; the padding is dropped from the logits."""
    n = keys.shape[0]
    if num_devices == 1:
        return fn(keys, active)[0]
    pad = -n % num_devices
    if pad:
        keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)])
    Z, _ = fn(jax.device_put(keys, _batch_sharding(num_devices)), active)
    return Z[:n]


def _signature(M, depth):
    """Permutation-invariant fingerprint of a unit-margin `M`: its sorted singular values and
    the sorted multiset of its `K(K-1)` logit gaps `M[c, c] - M[c', c]` (theory §5.7)."""
    s = np.linalg.svd(M, compute_uv=False)
    K = M.shape[0]
    gaps = (np.diag(M)[None, :] - M)[~np.eye(K, dtype=bool)]
    return s, np.sort(gaps)


def classify_optimum(M: Float[np.ndarray, "K K"], *, rtol: float = 1e-4) -> str:
    """Name of the candidate (theory §5.4) whose unit-margin singular values match those of `M`
    rescaled to unit margin within `rtol` (`"dnc"`, `"cross_polytope"`, `"cross_polytope_odd"`,
    `"circle"`, `"hypercube"`), else `"other"`. Candidates are tried DNC first, so the `K = 3`
    circle reads as DNC and the `K = 4` circle as the cross-polytope (they are the same
    matrices up to permutation)."""
    check_rtol("rtol", rtol)
    M = np.asarray(M, float)
    if M.ndim != 2:
        raise ValueError(f"M must be one (K, K) logit matrix, got shape {M.shape}.")
    K = M.shape[-1]
    q = float(class_margin(M))
    if not q > 0:
        return "other"
    s = np.linalg.svd(M / q, compute_uv=False)
    for name in candidates_for(K):
        ref = np.zeros(K)
        vals = [v for v, m in candidate_singular_values(name, K) for _ in range(m)]
        ref[: len(vals)] = sorted(vals, reverse=True)
        if np.allclose(s, ref, rtol=rtol, atol=rtol * ref[0]):
            return name
    return "other"


def distinct_optima(Ms: Float[np.ndarray, "S K K"], depth, *, rtol: float = 1e-4) -> list[dict]:
    """Deduplicate logit matrices `Ms` up to class permutation and scale (theory §5.7): two are
    the same optimum when, after rescaling to unit margin, their objectives, sorted singular
    values and sorted logit-gap multisets agree within `rtol`. Matrices with margin `<= 0` are
    dropped (counted as failed by the caller).

    **Returns:** a list sorted by objective of dicts `objective`, `count`, `frequency` (over
    the successful matrices), `rank` (singular values `> RANK_RTOL sigma_1`),
    `singular_values` (unit margin), `normalized_margin` (`q / ||theta||^{L+1}` at the optimal
    factorization, `= objective^{-(L+1)/2}`), `geometric_margin` (`q / ||M||_F`), `structure`
    (`classify_optimum`) and `M` (one representative, unit margin).
    """
    check_rtol("rtol", rtol)
    Ms = np.asarray(Ms, float)
    if Ms.ndim != 3:
        raise ValueError(f"Ms must be a stack (S, K, K) of logit matrices, got shape {Ms.shape}; "
                         "pass M[None] for one.")
    obj = np.asarray(max_margin_objective(Ms, depth))
    depth = float(depth)
    ok = np.isfinite(obj)
    groups: list[dict] = []
    for i in np.flatnonzero(ok)[np.argsort(obj[ok], kind="stable")]:
        M = Ms[i] / float(class_margin(Ms[i]))
        s, gaps = _signature(M, depth)
        for g in groups:
            if (abs(obj[i] - g["objective"]) <= rtol * g["objective"]
                    and np.allclose(s, g["singular_values"], rtol=rtol, atol=rtol * s[0])
                    and np.allclose(gaps, g["_gaps"], rtol=rtol, atol=rtol * s[0])):
                g["count"] += 1
                break
        else:
            groups.append(dict(objective=float(obj[i]), count=1, singular_values=s, _gaps=gaps,
                               M=M))
    total = max(int(ok.sum()), 1)
    for g in groups:
        g.pop("_gaps")
        s = g["singular_values"]
        g["frequency"] = g["count"] / total
        g["rank"] = int(np.sum(s > RANK_RTOL * s[0]))
        g["normalized_margin"] = g["objective"] ** (-(float(depth) + 1) / 2)
        g["geometric_margin"] = 1.0 / float(np.linalg.norm(g["M"]))
        g["structure"] = classify_optimum(g["M"])
    return groups


def solve_max_margin(
    key: PRNGKeyArray,
    K: int,
    depth: int,
    num_starts: int = 1024,
    *,
    width: int | None = None,
    outer: int = 50,
    inner: int = 200,
    lr: float = 0.03,
    rho: float = 10.0,
    init_scale: float = 1.0,
    chunk: int = 1024,
    rtol: float = 1e-4,
    pad_to: int | None = None,
    num_devices: int | None = None,
) -> dict:
    """Local optima of the max-margin problem (paper Eq. 3, theory §5.7) for `K` classes, one
    sample per class, from `num_starts` random starts at once:

        min (1/2) sum_l ||F_l||_F^2   s.t.   Z[c, c] - Z[c', c] >= 1 (c' != c),  Z = F_L ... F_0,

    with `F_0` of shape `(width, K)`, `F_L` `(K, width)`, the others `(width, width)`. Solved by an
    augmented Lagrangian (multipliers `lam >= 0`, penalty `rho`) whose inner problems are `inner`
    Adam steps (learning rate `lr`, decayed exponentially to `1e-3 lr` over the whole run),
    `outer` multiplier updates; Gaussian starts with factor entries of variance
    `init_scale^2 / fan_in`. vmapped over starts and jitted (one compile per static setting),
    run `chunk` starts at a time, each chunk sharded like the sweeps: `NamedSharding` of the
    starts' axis over a 1-D mesh of `num_devices` local devices (default all of
    `jax.local_devices()`, the same as `jax.devices()` in one process), padded to a multiple
    of the device count (the padding is dropped); every device solves its starts as an
    independent program, so the solutions equal a one-device run's. By Lemma D.7, at a local optimum the objective `||theta||^2`
    equals `max_margin_objective(Z, depth)` (which is what is reported, so every value is that of
    an actual unit-margin logit matrix). With `width = r < K` and `depth = 1` this is the
    softmax-code problem (theory §5.5). `pad_to = K' >= K` solves the problem embedded in `K'`
    classes of which the last `K' - K` are unconstrained (their logits decay to 0 and are
    dropped), so one compile serves every `K <= K'` (same solutions; `width` defaults to `K'`).

    **Returns:** dict with `logits (S, K, K)` (raw solutions), `objective (S,)`
    (`max_margin_objective` per start, `inf` where the start ended with margin `<= 0`),
    `failed` (count of those), `optima`: `distinct_optima(logits, depth)`, and `devices` (the
    number of devices the starts were sharded over).

    **Raises:** `ValueError` for `K < 3`, a non-integer `depth < 1`, `num_starts < 1`,
    `width < 2`, non-positive `lr`, `rho`, `init_scale`, `rtol` outside `(0, 1)`, or
    `num_devices` outside `1..len(jax.local_devices())`.
    """
    K = check_int("K", K, minimum=3, fix="the max-margin landscape needs K >= 3 classes.")
    depth = check_int("depth", depth, fix="the solver factors the logits into depth + 1 "
                      "matrices, so depth must be an integer >= 1 (use max_margin_objective "
                      "for real depths).")
    num_starts = check_int("num_starts", num_starts)
    kp = K if pad_to is None else check_int("pad_to", pad_to, minimum=K,
                                             fix=f"pad_to must be >= K = {K} (or None).")
    width = kp if width is None else check_int("width", width, minimum=2,
                                              fix="width >= 2 (rank 1 cannot separate K >= 3).")
    outer = check_int("outer", outer)
    inner = check_int("inner", inner)
    chunk = check_int("chunk", chunk)
    for name, v in (("lr", lr), ("rho", rho), ("init_scale", init_scale)):
        real_arg(name, v, minimum=0.0, strict=True, fix="pass a positive number.")
    check_rtol("rtol", rtol)
    available = len(jax.local_devices())
    devices = available if num_devices is None else check_int(
        "num_devices", num_devices, fix=f"shard over 1..{available} local devices (or None: "
        "all of them).")
    if devices > available:
        raise ValueError(f"num_devices must be <= {available} (the local devices), got "
                         f"{devices}; pass None to use all of them.")
    fn = _solver(kp, depth, width, outer, inner, float(lr), float(rho), float(init_scale),
                 devices)
    keys = jax.random.split(key, num_starts)
    active = jnp.arange(kp) < K
    Zs = []
    for a in range(0, num_starts, chunk):
        Z = _run_sharded(fn, keys[a: a + chunk], active, devices)
        Zs.append(np.asarray(Z)[:, :K, :K])
    Z = np.concatenate(Zs)
    obj = np.asarray(max_margin_objective(Z, depth))
    return dict(logits=Z, objective=obj, failed=int(np.sum(~np.isfinite(obj))),
                optima=distinct_optima(Z, depth, rtol=rtol), devices=devices)


def softmax_code(
    key: PRNGKeyArray, K: int, width: int, num_starts: int = 64, **solver_kwargs
) -> dict:
    """Softmax code (Jiang et al. 2023; theory §5.5): the max-margin geometry of a single-layer
    UFM of width `r = width` (`Z = W H`, `W` of shape `(K, r)`, `H` `(r, K)`), i.e. the minimum of
    the nuclear norm `||M||_*` over unit-margin `M` of rank `<= r` (`max_margin_objective(M, 1)
    = 2 ||M||_*`), found by `solve_max_margin(key, K, 1, num_starts, width=r)`.

    **Returns:** the best optimum's dict (see `distinct_optima`) with `objective = 2 ||M||_*`,
    `normalized_margin = q / ||theta||^2 = 1/objective` (Lyu & Li at depth 1) and
    `geometric_margin = q / ||M||_F`, plus `K`, `width` and `found` (all distinct optima).

    **Raises:** as `solve_max_margin`.
    """
    res = solve_max_margin(key, K, 1, num_starts, width=width, **solver_kwargs)
    if not res["optima"]:
        raise RuntimeError(f"softmax_code: every one of {num_starts} starts failed for K={K}, "
                           f"width={width}; raise num_starts or outer/inner.")
    best = dict(res["optima"][0])
    best.update(K=int(K), width=int(width), found=res["optima"])
    return best
