"""Theorem 4.3 (i)-(ii): the scale x*(K, L) below which DNC (and the cross-polytope, within
its support) is unstable, from the autodiff Jacobian of the log-rate field plus root finding,
against the hand linearization x* = K (L-1)/(L+1) for DNC.

    python examples/thm43_critical_scale.py            # K = 4..1024, depths 1..16
    python examples/thm43_critical_scale.py --quick    # K = 4, 16
"""

import argparse
import os

# single-threaded XLA Eigen pool on CPU: the multi-threaded one occasionally hangs in this
# vmapped while-loop search under CPU contention (see README, "Dynamics of depth")
if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

import matplotlib
import numpy as np

import ufmflow as uf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="thm43_critical_scale.png")
    args = p.parse_args()
    ks = [4, 16] if args.quick else [2**m for m in range(2, 11)]
    depths = np.array([1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16], float)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for i, k in enumerate(ks):
        dnc = np.asarray(uf.dnc_critical_scale(k, depths))
        cp = np.asarray(uf.cross_polytope_critical_scale(k, depths))
        c = plt.get_cmap("viridis")(i / max(len(ks) - 1, 1))
        ax[0].plot(depths, dnc / k, "o-", color=c, label=f"K={k}")
        ax[1].plot(depths, cp / k, "s--", color=c, label=f"K={k}")
        print(f"K={k:5d}  DNC x*: " + " ".join(f"{x:8.3f}" for x in dnc))
        # the claim (Thm 4.3 i): the autodiff + root-finding x* is the hand linearization
        np.testing.assert_allclose(dnc, k * (depths - 1) / (depths + 1), rtol=1e-6, atol=1e-9)
    ld = np.linspace(1, 16, 200)
    ax[0].plot(ld, (ld - 1) / (ld + 1), "k:", label="(L-1)/(L+1)")
    ax[0].set(xlabel="depth L", ylabel="x*/K", title="DNC")
    ax[1].set(xlabel="depth L", ylabel="x*/K", title="cross-polytope (within its support)")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
