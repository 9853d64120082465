"""Figure 3 (right) / softmax codes (theory §5.5): the normalized margin q/||M||_* of the
class-mean logits of deep UFMs (the paper's GD protocol, several depths, widths and seeds) that
converge to rank r, averaged per rank, beside the softmax code of width r: the largest
q/||M||_* any logit matrix of rank <= r reaches (the K-gon at r = 2, DNC at r = K - 1). Runs
`python -m ufmflow.landscape fig3-right`, writes fig3_right.png and the numbers (results.nc,
summary.txt) into its run folder (--run), copies the figure to --out, and asserts the claim:
no deep run of rank r beats the code of width r, and the code's margin grows with r.

    python examples/fig3_right_softmax_margins.py            # K = 6, depths 1, 2, 4, 8, widths 8, 16
    python examples/fig3_right_softmax_margins.py --quick    # K = 4, depths 2, 6, short runs
"""

import argparse
import shutil
import sys

import numpy as np
import xarray as xr

from ufmflow.cli import landscape


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="fig3_right_softmax_margins.png", help="the figure (PNG)")
    p.add_argument("--run", default="runs/fig3_right", help="the run folder (+ _quick with "
                   "--quick)")
    a = p.parse_args()
    out = a.run + ("_quick" if a.quick else "")
    code = landscape.main(["fig3-right", f"quick={int(a.quick)}", f"out={out}"])
    if code:
        sys.exit(code)
    shutil.copyfile(f"{out}/fig3_right.png", a.out)
    with xr.open_dataset(f"{out}/results.nc", engine="h5netcdf") as ds:
        codes = ds.code_margin.values
        n = ds.runs_per_rank.values
        worst = float(ds.attrs["max_ratio_to_code"])
        print(f"softmax codes q/||M||_* for r = {ds['rank'].values.tolist()}: "
              f"{np.round(codes, 4).tolist()}; deep runs per rank: {n.tolist()}; largest run / "
              f"code of its rank: {worst:.4f}")
        # the codes come from finitely many random starts: allow their optimizer's tolerance
        assert np.all(np.diff(codes) > -1e-3), "a wider code has at least the narrower's margin"
        assert n.sum() >= 1, "no deep run at a rank 2..K-1"
        assert worst <= 1.0 + 1e-2, "a deep run beats the softmax code of its rank"


if __name__ == "__main__":
    main()
