"""Theorem 3.1 map (theory §5.6): which unit-margin candidate (DNC, cross-polytope or its odd
analogue, regular K-gon, hypercube) has the lowest max-margin objective (L+1) sum sigma^(2/(L+1))
over (K, depth), and the exact real depth L*(K) beyond which DNC is not the best of them.
Prints the table, writes the heat map and the numbers (netCDF-free: a CSV beside the PNG).

    python examples/thm31_landscape_map.py            # K = 3..64, depths 1..16 (step 0.05)
    python examples/thm31_landscape_map.py --quick    # K = 3..16, depths 1..16 (step 0.25)
"""

import argparse
import math
import os

import matplotlib
import numpy as np

import ufmflow as uf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="K = 3..16, coarse depth grid")
    p.add_argument("--out", default="thm31_landscape_map.png")
    args = p.parse_args()
    ks = range(3, 17) if args.quick else range(3, 65)
    step = 0.25 if args.quick else 0.05
    depths = np.round(np.arange(1.0, 16.0 + step / 2, step), 10)
    ds = uf.landscape_map(ks, depths)
    print(uf.landscape_table(ds))

    # the claims (theory §5.6): DNC is the best candidate at L = 1 for every K; L*(K) for even K
    # is the cross-polytope closed form 2/log2(2 - 2/K) - 1; Theorem 3.1 at integer depths
    assert set(ds.best_name.sel(depth=1.0).values.tolist()) == {"dnc"}
    for K in ds.K.values:
        ls = float(ds.transition_depth.sel(K=K))
        if K % 2 == 0:
            assert math.isclose(ls, 2 / math.log2(2 - 2 / K) - 1, rel_tol=1e-12)
        if K >= 6:
            assert ls < 2
    assert math.isinf(float(ds.transition_depth.sel(K=3)))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    uf.plot_landscape_map(ds, ax=ax)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    csv = os.path.splitext(args.out)[0] + ".csv"
    with open(csv, "w") as f:
        f.write("K,transition_depth,first_beaten_by\n")
        for K in ds.K.values:
            row = ds.sel(K=K)
            f.write(f"{K},{float(row.transition_depth):.15g},{row.transition_by.item()}\n")
    print(f"wrote {args.out} and {csv}")


if __name__ == "__main__":
    main()
