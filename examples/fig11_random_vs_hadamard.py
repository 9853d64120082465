"""Paper Fig. 11 (App. E.4): singular values of the class-mean logits from a small random
init (full gradient flow, `uf.solve_flow`) beside a Hadamard trajectory (reduced ODE) from a
random direction of the same norm; both show rich-get-richer and a low-rank end state.

    python examples/fig11_random_vs_hadamard.py            # K=8, L=4, width 32, t=1e8
    python examples/fig11_random_vs_hadamard.py --quick    # t=1e5
"""

import argparse

import jax

import ufmflow as uf
from ufmflow.theory._plots import plot_random_vs_hadamard


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="fig11_random_vs_hadamard.png")
    args = p.parse_args()
    res = uf.random_vs_hadamard(jax.random.PRNGKey(0), 8, 4, width=32, scale=0.3,
                                t1=1e5 if args.quick else 1e8)
    print("random  :", res["sv_random"][-1].round(3), "status", res["status_random"])
    print("hadamard:", res["sv_hadamard"][-1].round(3), "status", res["status_hadamard"])
    plot_random_vs_hadamard(res, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
