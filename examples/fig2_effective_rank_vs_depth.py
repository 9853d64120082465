"""Paper Fig. 2: effective rank of the converged class-mean logits falls with depth.

Full gradient flow from a Gaussian init (K=8, n=1, width 32, scale 0.5) to GF time 1e5 for
depths 1..8, five seeds each (vmapped), with the core API only. `python -m ufmflow.sweep` runs
the experiment as a resumable sweep at its own defaults (width 32, scale 0.3, t1 1e8).

    python examples/fig2_effective_rank_vs_depth.py            # depths 1..8, 5 seeds
    python examples/fig2_effective_rank_vs_depth.py --quick    # depths 1..3, 2 seeds, t = 1e3

`--quick` solves one run at a time with Tsit5 (not stiff at depths <= 3) on models padded to
depth 3 (`pad_depth`: frozen identity layers, the same flow), so all six runs share one compiled
program.
"""

import argparse

import equinox as eqx
import jax
import matplotlib
import numpy as np

import ufmflow as uf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="fig2_effective_rank_vs_depth.png")
    args = p.parse_args()
    depths = range(1, 4) if args.quick else range(1, 9)
    seeds = 2 if args.quick else 5
    t1 = 1e3 if args.quick else 1e5
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    means, stds = [], []
    for depth in depths:
        if args.quick:  # one compile for every depth and seed (see the docstring)
            one = [uf.solve_flow(uf.gaussian_init(k, 8, 1, 32, depth, 0.5), t1, rtol=1e-6,
                                 atol=1e-9, num_saves=4, solver="tsit5", pad_depth=max(depths))
                   for k in keys]
            sol = jax.tree_util.tree_map(lambda *a: np.stack(a), *one)
        else:
            models = eqx.filter_vmap(lambda k: uf.gaussian_init(k, 8, 1, 32, depth, 0.5))(keys)
            sol = eqx.filter_vmap(
                lambda m: uf.solve_flow(m, t1, rtol=1e-6, atol=1e-9, num_saves=4)
            )(models)
        ok = np.asarray(sol.status) == 0
        er = np.asarray(uf.effective_rank_from_singular_values(sol.singular_values[:, -1]))[ok]
        means.append(er.mean())
        stds.append(er.std())
        print(f"depth {depth}: effective rank {er.mean():.3f} +- {er.std():.3f} "
              f"({ok.sum()}/{seeds} runs ok)", flush=True)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.errorbar(list(depths), means, yerr=stds, marker="o", capsize=3)
    ax.set_xlabel("depth L")
    ax.set_ylabel(f"effective rank of class-mean logits (t={t1:.0e})")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    # the claim (Fig. 2): the effective rank falls with depth
    assert np.all(np.diff(means) < 0), means
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
