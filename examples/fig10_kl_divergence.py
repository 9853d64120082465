"""Paper Fig. 10: a trajectory along which the KL divergence to NC grows without bound.

`s = x (1_S + delta 1_T)` with `S` the cross-polytope support and `delta` below the threshold
`((K-2)/K)^(1/(alpha-1))` (`uf.cross_polytope_ratio_threshold`, derived in its docstring): the
normalized singular values tend to the cross-polytope and KL increases monotonically; at depth
1 the same init returns to NC.

    python examples/fig10_kl_divergence.py            # K=8, L=4
    python examples/fig10_kl_divergence.py --quick    # shorter horizon
"""

import argparse

import matplotlib
import numpy as np

import ufmflow as uf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="fig10_kl_divergence.png")
    p.add_argument("--depth", type=float, default=4.0)
    args = p.parse_args()
    k, x = 8, 1.0
    tau1 = 1e30 if args.quick else 1e300
    delta = 0.5 * uf.cross_polytope_ratio_threshold(k, args.depth)
    s0 = uf.cross_polytope_mixture(k, x, delta)
    ts = uf.default_save_times(tau1, 200, np.log10(tau1) + 2)
    on = np.zeros(k, bool)
    on[uf.cross_polytope_support(k)] = True
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    kls = {}
    for depth, style in [(args.depth, "-"), (1.0, ":")]:
        sol = uf.solve_hadamard(s0, depth, tau1, ts=ts)
        s = np.asarray(sol.s[:, 1:])
        shat = s / np.linalg.norm(s, axis=-1, keepdims=True)
        for i in range(k - 1):
            ax[0].semilogx(ts[1:], shat[1:, i], style, color="C0" if on[i + 1] else "C3")
        kl = np.asarray(uf.kl_to_nc(sol.s))
        kls[depth] = kl
        ax[1].semilogx(ts[1:], kl[1:], style, label=f"L={depth:g}")
        print(f"L={depth:g}: KL {kl[0]:.3f} -> {kl[-1]:.3f}, nondecreasing: "
              f"{bool(np.all(np.diff(kl) >= -1e-12))}")
    ax[0].set(xlabel="tau", ylabel="s_i/||s|| (blue: S, red: T)",
              title=f"x={x}, delta={delta:.3f} (solid L={args.depth:g}, dotted L=1)")
    ax[1].set(xlabel="tau", ylabel="KL(u || p)")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    # the claim (Thm 4.3 iii / Fig. 10): KL to NC grows monotonically at depth L > 1 from
    # this init, and returns toward 0 (NC) at depth 1
    deep, shallow = kls[args.depth], kls[1.0]
    assert np.all(np.diff(deep) >= -1e-12) and deep[-1] > 5 * deep[0], deep[[0, -1]]
    assert shallow[-1] < 0.1 * shallow[0], shallow[[0, -1]]


if __name__ == "__main__":
    main()
