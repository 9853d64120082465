"""Paper Fig. 4: Hadamard singular values near the origin — rich-get-richer, then low rank.

`s_1..s_{K-1}` uniform on [0, 1], rescaled to a small norm, evolved by the reduced ODE
(`uf.solve_hadamard`, theory §4) at depth 1 and at depth L; beside it the first-order field of
Theorem 4.4 (`uf.hadamard_linearized_field`) from the same init, valid while the scale is small.

    python examples/fig4_hadamard_rich_get_richer.py            # K=16, L=4, scale 0.01
    python examples/fig4_hadamard_rich_get_richer.py --quick    # K=8
"""

import argparse

import diffrax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import ufmflow as uf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="fig4_hadamard_rich_get_richer.png")
    p.add_argument("--depth", type=float, default=4.0)
    p.add_argument("--scale", type=float, default=0.01)
    args = p.parse_args()
    k = 8 if args.quick else 16
    s0 = uf.random_directions(jax.random.PRNGKey(0), k, 1, args.scale)[0]
    ts = uf.default_save_times(1e60, 200, 64.0)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    eranks = []
    for a, depth in zip(ax[:2], [1.0, args.depth]):
        sol = uf.solve_hadamard(s0, depth, ts[-1], ts=ts)
        s = np.asarray(sol.s[:, 1:])
        a.semilogx(np.asarray(ts[1:]), s[1:] / np.linalg.norm(s[1:], axis=-1, keepdims=True))
        er = float(uf.effective_rank_from_singular_values(sol.s[-1, 1:]))
        a.set(xlabel="reduced time tau", ylabel="s_i / ||s||",
              title=f"L={depth:g}: final effective rank {er:.2f}")
        print(f"L={depth:g}: status {int(sol.status)}, effective rank {er:.3f}")
        assert int(sol.status) == 0
        eranks.append(er)
    # linearized vs full field over the small-scale phase (until ||s|| ~ 1)
    term = diffrax.ODETerm(lambda t, y, _: uf.hadamard_linearized_field(y, args.depth))
    # as many save times as `ts`: the full solve below reuses the program compiled above
    tl = jnp.geomspace(1e-2, 1.0, len(ts)) * float(
        args.scale ** (1 - 2 * args.depth / (args.depth + 1)))
    lin = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, tl[-1], None, s0,
                              saveat=diffrax.SaveAt(ts=tl), max_steps=100000,
                              stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-14))
    full = uf.solve_hadamard(s0, args.depth, tl[-1], ts=tl)
    for i in range(1, k):
        ax[2].loglog(tl, full.s[:, i], color=f"C{i % 10}")
        ax[2].loglog(tl, lin.ys[:, i], ":", color=f"C{i % 10}")
    ax[2].set(xlabel="tau", ylabel="s_i", title="full (solid) vs linearized (dotted)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    # the claim (Fig. 4): depth 1 returns to NC (rank K-1), depth L ends at a lower rank
    assert eranks[0] > k - 1.5 and eranks[1] < eranks[0] - 1, eranks


if __name__ == "__main__":
    main()
