"""Paper Fig. 9: late-time effective rank of the Hadamard singular values falls with depth
toward log2 K (left) and rises with the init scale (right); mean and std over random
directions (`uf.effective_rank_sweep`, vmapped `solve_hadamard` to tau = 1e300).

    python examples/fig9_effective_rank_hadamard.py            # K=16, 128 directions
    python examples/fig9_effective_rank_hadamard.py --quick    # K=8, 16 directions

`--quick` solves every (depth, scale) cell of both panels in one batch (one compiled program;
the same directions per cell, so the same numbers as two sweeps).
"""

import argparse

import jax
import matplotlib
import numpy as np

import ufmflow as uf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="fig9_effective_rank_hadamard.png")
    args = p.parse_args()
    k, num = (8, 16) if args.quick else (16, 128)
    key = jax.random.PRNGKey(0)
    depths = [1, 2, 3, 4, 6, 8, 12, 16]
    scales = list(np.geomspace(1e-2, 1e2, 5))
    if args.quick:  # one batch, one compile: the left panel is its scale-1e-2 column
        both = uf.effective_rank_sweep(key, k, depths, scales, num)
        rows = [depths.index(d) for d in (2, 4, 8)]
        rd = {m: both[m][:, :1] for m in ("mean", "std")}
        rs = {m: both[m][rows] for m in ("mean", "std")}
    else:
        rd = uf.effective_rank_sweep(key, k, depths, [1e-2], num)
        rs = uf.effective_rank_sweep(key, k, [2, 4, 8], scales, num)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].errorbar(depths, rd["mean"][:, 0], rd["std"][:, 0], fmt="o-")
    ax[0].axhline(np.log2(k), color="k", ls=":", label="log2 K")
    ax[0].set(xlabel="depth L", ylabel="effective rank at tau=1e300", title=f"K={k}, scale 0.01")
    ax[0].legend()
    for i, d in enumerate([2, 4, 8]):
        ax[1].errorbar(scales, rs["mean"][i], rs["std"][i], fmt="o-", label=f"L={d}")
    ax[1].set(xscale="log", xlabel="init scale ||s||", ylabel="effective rank")
    ax[1].legend()
    for d, m in zip(depths, rd["mean"][:, 0]):
        print(f"L={d}: effective rank {m:.3f}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    # the claim (Fig. 9 left): NC (rank K-1) at depth 1, falling with depth toward log2 K
    m = rd["mean"][:, 0]
    assert m[0] > k - 1.5 and np.all(np.diff(m) < 1e-2) and abs(m[-1] - np.log2(k)) < 0.5, m


if __name__ == "__main__":
    main()
