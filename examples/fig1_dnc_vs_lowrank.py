"""Figure 1 (theory §5.3): angular versus Euclidean separation. For balanced factors of equal
Frobenius norm rho, a structure whose normalized logits have r equal singular values reaches
||Z||_F = rho^(L+1) r^(-L/2) (paper Eq. 4). We build Z for DNC (r = K-1) and a canonical
low-rank structure (cross-polytope, r = K/2, paper Eq. 14), then take, as App. E.1 says, the
angles between class-mean columns (dot products) and the logit distances Z[c, c] - Z[c', c]
(diagonal minus off-diagonal), keeping for each structure the smallest of each (the one that
sets the loss at large norm). DNC has the larger angle; the low-rank structure, on a larger
sphere, has the larger logit distance once L > L*(K) (theory §5.6).

    python examples/fig1_dnc_vs_lowrank.py                 # K = 4, L = 4, rho = 1
    python examples/fig1_dnc_vs_lowrank.py --quick         # same, asserts the claim
    python examples/fig1_dnc_vs_lowrank.py --K 8 --depth 3 --low-rank hypercube
"""

import argparse
import json
import os

import matplotlib
import numpy as np

import ufmflow as uf
from ufmflow.cli._landscape_figs import eq4_logits, smallest_angle_and_distance

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def lr_wins(rows, name):
    return rows[name]["logit_distance"] > rows["dnc"]["logit_distance"]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="default parameters, assert the claim")
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--rho", type=float, default=1.0)
    p.add_argument("--low-rank", default="cross_polytope",
                   choices=["cross_polytope", "hypercube", "circle"])
    p.add_argument("--out", default="fig1_dnc_vs_lowrank.png")
    a = p.parse_args()
    rows = {}
    for name in ("dnc", a.low_rank):
        Z, r = eq4_logits(name, a.K, a.depth, a.rho)
        ang, dist, radius = smallest_angle_and_distance(Z)
        rows[name] = dict(rank=r, angle_deg=ang, logit_distance=dist, radius=radius,
                          frobenius=float(np.linalg.norm(Z)))
        print(f"{name:>15}: rank {r:3d}  smallest angle {ang:8.3f} deg  smallest logit distance "
              f"{dist:.6g}  column norm {radius:.6g}  ||Z||_F {np.linalg.norm(Z):.6g}")
    # crossing with DNC of this candidate alone (theory §5.6): r s^p = K - 1, p = 2/(L+1); with
    # equal singular values, equal-norm balanced factors are optimal, so the logit distances
    # compare exactly as the max-margin objectives do
    (s, r), = uf.candidate_singular_values(a.low_rank, a.K)
    ls = 2 * np.log(s) / np.log((a.K - 1) / r) - 1
    print(f"{a.low_rank} crosses DNC at L = {ls:.6f}: it has the larger logit distance iff "
          f"L > {ls:.6f}")
    assert lr_wins(rows, a.low_rank) == (a.depth > ls)
    d, lr = rows["dnc"], rows[a.low_rank]
    assert d["angle_deg"] > lr["angle_deg"], "DNC maximizes the angle"
    if a.quick:  # K = 4, L = 4 > L*(4) = 2.42: the low-rank structure wins on logit distance
        assert lr["logit_distance"] > d["logit_distance"] and lr["radius"] > d["radius"]

    fig, ax = plt.subplots(1, 2, figsize=(10, 4.5))
    t = np.linspace(0, np.pi, 200)
    for (name, row), c in zip(rows.items(), ["#4c72b0", "#dd8452"]):
        R, th = row["radius"], np.radians(row["angle_deg"])
        ax[0].plot(R * np.cos(t), R * np.sin(t), ":", color=c, lw=1)
        for sgn in (-1, 1):
            phi = np.pi / 2 + sgn * th / 2
            ax[0].annotate("", xy=(R * np.cos(phi), R * np.sin(phi)), xytext=(0, 0),
                           arrowprops=dict(arrowstyle="->", color=c, lw=2))
        ax[0].plot([], [], color=c, lw=2, label=f"{name} (rank {row['rank']}): angle "
                   f"{row['angle_deg']:.1f}°, radius {R:.3g}")
    ax[0].set(aspect="equal", title=f"class means in one plane (K={a.K}, L={a.depth}, "
              f"ρ={a.rho:g})", xticks=[], yticks=[])
    ax[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02))
    names = list(rows)
    x = np.arange(2)
    ax[1].bar(x - 0.2, [rows[n]["logit_distance"] for n in names], 0.4, color="#777",
              label="smallest logit distance")
    ax2 = ax[1].twinx()
    ax2.bar(x + 0.2, [rows[n]["angle_deg"] for n in names], 0.4, color="#bbb",
            label="smallest angle (deg)")
    ax[1].set_xticks(x, names)
    ax[1].set(ylabel="logit distance Z[c,c] - Z[c',c]", title="Euclidean vs angular separation")
    ax2.set_ylabel("angle (deg)")
    ax[1].legend(loc="upper left", fontsize=7)
    ax2.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    js = os.path.splitext(a.out)[0] + ".json"
    with open(js, "w") as f:
        json.dump(dict(K=a.K, depth=a.depth, rho=a.rho, transition_depth=ls, **rows), f, indent=1)
    print(f"wrote {a.out} and {js}")


if __name__ == "__main__":
    main()
