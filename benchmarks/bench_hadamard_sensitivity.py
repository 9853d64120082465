"""How far the full GF from a Hadamard init is determined by its initial data (session 32).

An experiment, not a timing. A Hadamard init lies on an invariant linear subspace of the
parameters (every factor diagonal in fixed frames, SPEC §3-4): the exact flow stays on it and
is the reduced Hadamard ODE. On a held-out sample of issue 14's grid (`bench_flow_grid.py
--seed 1`), rows 29 (K=32, n=1, width 32, depth 6) and 43 (K=32, n=4, width 32, depth 12) ended
1.1-1.3 away in effective rank from their rtol-1e-9 reference at `solve_flow`'s defaults. For
each configuration this measures

1. the reduced ODE (`solve_hadamard`, rtol 1e-11): the exact-arithmetic flow; and from `s0`
   multiplied by `1 + 1e-6 g` (`reduced_perturbed`): its own conditioning;
2. `solve_flow` at several tolerances: effective rank at 1e5 and t1, steps, and the largest
   off-manifold part of the class-mean logits over the saves, `uf.hadamard_departure`
   (`||offdiag(O Zbar O)|| / ||diag(O Zbar O)||`, theory §6.8; 1e-15 at the init);
3. `solve_flow` at rtol 1e-9 from the init with every parameter multiplied by `1 + eps g`
   (g standard normal; two draws per eps): how large a perturbation off the subspace changes
   the answer.

    python benchmarks/bench_hadamard_sensitivity.py --trace 60,110,26 --trace-rows 1:29 \
        --out benchmarks/results/bench_hadamard_sensitivity.json

About ten minutes on one core for the two default rows. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import ufmflow as uf  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import bench_flow_grid as grid  # noqa: E402


def erank(sv):
    return float(uf.effective_rank_from_singular_values(np.asarray(sv)))


def off_manifold(states):
    """`hadamard_departure` of the class-mean logits at every save (theory §6.8)."""
    zs = jax.vmap(lambda m: m.class_mean_logits())(states)
    return [float(v) for v in np.asarray(uf.hadamard_departure(zs))]


def trace(model, a, b, n):
    """Off-manifold part at `n` times in `[a, b]`, four solvers (item 4)."""
    ts = jnp.concatenate([jnp.zeros(1), jnp.linspace(a, b, n)])
    out = dict(ts=[float(t) for t in ts[1:]], runs=[])
    for rtol in (1e-6, 1e-9):
        for solver in (None, "tsit5"):
            kw = dict(solver=solver) if solver else {}
            sol = uf.solve_flow(model, b, ts=ts, rtol=rtol, max_steps=20_000, save_states=True,
                                **kw)
            out["runs"].append(dict(rtol=rtol, solver=solver or "default",
                                    attempted=int(sol.num_steps),
                                    off_manifold=off_manifold(sol.states)[1:]))
    return out


def perturbed(model, eps, rng, per_entry=True):
    """Every parameter times `1 + eps g`: `g` per entry, or one `g` per factor."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, tree = jax.tree_util.tree_flatten(params)
    leaves = [a * (1 + eps * rng.standard_normal(a.shape if per_entry else ())) for a in leaves]
    return eqx.combine(jax.tree_util.tree_unflatten(tree, leaves), static)


def measure(grid_seed, index, t1, rtols, epss, draws, window=None):
    c = grid.sample_grid(60, grid_seed)[index]
    if c["init"] != "hadamard":
        raise ValueError(f"row {index} of sample {grid_seed} is not a Hadamard init: {c}")
    seed = grid_seed + 1000 + index
    model = grid.make_model(c, seed)
    s0 = uf.hadamard_initial_direction(jax.random.PRNGKey(seed), c["K"], 0.1)
    ts = jnp.array(np.unique(np.concatenate([[0.0, 1e5, t1], np.logspace(-1, np.log10(t1), 37)])))
    i5, i1 = int(np.argmin(np.abs(np.asarray(ts) - 1e5))), len(ts) - 1
    scale = uf.hadamard_time_scale(c["K"], c["n"], c["depth"])
    red = uf.solve_hadamard(s0, c["depth"], float(scale * t1), ts=scale * ts, rtol=1e-11,
                            atol=1e-14, max_steps=100_000)
    out = dict(c, grid_seed=grid_seed, seed=seed, t1=t1,
               reduced=dict(erank_1e5=erank(red.s[i5, 1:]), erank_t1=erank(red.s[i1, 1:]),
                            status=red.status_name()),
               tolerances=[], perturbed=[], reduced_perturbed=[])
    rng_s0 = np.random.default_rng(1)
    for _ in range(draws):
        red_p = uf.solve_hadamard(s0 * (1 + 1e-6 * rng_s0.standard_normal(s0.shape)), c["depth"],
                                  float(scale * t1), ts=scale * ts, rtol=1e-11, atol=1e-14,
                                  max_steps=100_000)
        out["reduced_perturbed"].append(dict(eps=1e-6, erank_1e5=erank(red_p.s[i5, 1:]),
                                             erank_t1=erank(red_p.s[i1, 1:])))
    for rtol in rtols:
        t0 = time.perf_counter()
        sol = uf.solve_flow(model, t1, ts=ts, rtol=rtol, max_steps=20_000, save_states=True)
        jax.block_until_ready(sol.log_loss)
        out["tolerances"].append(dict(
            rtol=rtol, status=sol.status_name(), attempted=int(sol.num_steps),
            rejected=int(sol.num_rejected), erank_1e5=erank(sol.singular_values[i5]),
            erank_t1=erank(sol.singular_values[i1]),
            off_manifold=max(off_manifold(sol.states)),
            wall_s=time.perf_counter() - t0))
    rng = np.random.default_rng(0)
    for eps in epss:
        for _ in range(draws):
            sol = uf.solve_flow(perturbed(model, eps, rng), t1, ts=ts, rtol=1e-9,
                                max_steps=20_000)
            out["perturbed"].append(dict(eps=eps, status=sol.status_name(),
                                         erank_1e5=erank(sol.singular_values[i5]),
                                         erank_t1=erank(sol.singular_values[i1])))
    out["layer_scaled"] = []
    for _ in range(draws):
        sol = uf.solve_flow(perturbed(model, 1e-4, rng, per_entry=False), t1, ts=ts, rtol=1e-9,
                            max_steps=20_000)
        out["layer_scaled"].append(dict(eps=1e-4, erank_1e5=erank(sol.singular_values[i5]),
                                        erank_t1=erank(sol.singular_values[i1])))
    if window is not None:
        out["trace"] = trace(model, *window)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1:29,1:43",
                    help="grid_seed:index pairs of bench_flow_grid's samples (Hadamard rows)")
    ap.add_argument("--t1", type=float, default=1e8)
    ap.add_argument("--rtols", default="1e-6,1e-7,1e-8,1e-9")
    ap.add_argument("--eps", default="1e-15,1e-14,1e-12,1e-10")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--trace", default=None, help="a,b,n: item 4's window (GF times) and saves")
    ap.add_argument("--trace-rows", default="1:29", help="rows that get item 4")
    ap.add_argument("--out", default="benchmarks/results/bench_hadamard_sensitivity.json")
    args = ap.parse_args()
    rows = []
    for pair in args.rows.split(","):
        gs, idx = (int(v) for v in pair.split(":"))
        window = None
        if args.trace and pair in args.trace_rows.split(","):
            a, b, n = args.trace.split(",")
            window = (float(a), float(b), int(n))
        r = measure(gs, idx, args.t1, [float(v) for v in args.rtols.split(",")],
                    [float(v) for v in args.eps.split(",")], args.draws, window)
        rows.append(r)
        red = r["reduced"]
        print(f"sample {gs} row {idx}: K={r['K']} n={r['n']} width={r['width']} "
              f"depth={r['depth']}; reduced ODE effective rank {red['erank_1e5']:.5f} (1e5), "
              f"{red['erank_t1']:.5f} (t1); from s0 (1 + 1e-6 g): "
              + ", ".join(f"{p['erank_t1']:.6f}" for p in r["reduced_perturbed"]))
        print(f"  {'rtol':>8} {'status':>9} {'attempted':>9} {'erank 1e5':>10} {'erank t1':>9} "
              f"{'off-manifold':>12}")
        for t in r["tolerances"]:
            print(f"  {t['rtol']:>8.0e} {t['status']:>9} {t['attempted']:>9} "
                  f"{t['erank_1e5']:>10.5f} {t['erank_t1']:>9.5f} {t['off_manifold']:>12.1e}")
        print(f"  {'eps':>8} {'erank t1 (rtol 1e-9, perturbed init)':>40}")
        for p in r["perturbed"]:
            print(f"  {p['eps']:>8.0e} {p['erank_t1']:>40.5f}")
        for p in r["layer_scaled"]:
            print(f"  {p['eps']:>8.0e} {p['erank_t1']:>40.5f} (whole factors scaled)")
        if "trace" in r:
            runs = r["trace"]["runs"]
            print("  off-manifold part: t, then " + ", ".join(
                f"{u['solver']} rtol {u['rtol']:.0e} ({u['attempted']} attempted)" for u in runs))
            for i, t in enumerate(r["trace"]["ts"]):
                print(f"  {t:>8.1f} " + " ".join(f"{u['off_manifold'][i]:>9.2e}" for u in runs))
        with open(args.out, "w") as f:  # nothing lost on interruption
            json.dump(dict(rows=rows, jax=jax.__version__), f, indent=1)


if __name__ == "__main__":
    main()
