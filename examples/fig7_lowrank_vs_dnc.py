"""Figure 7 (theory §5.4, paper App. E.2): normalized class-mean logit matrices M/||M||_F of
converged deep UFMs (the paper's GD protocol): depth 1 converges to DNC (effective rank near
K-1), a deep run to a low-rank structure. Runs `python -m ufmflow.landscape fig7`, writes
fig7.png and the numbers into its run folder (--run), copies the figure to --out and asserts
the claim.

    python examples/fig7_lowrank_vs_dnc.py            # K = 8, depths 1 and 8
    python examples/fig7_lowrank_vs_dnc.py --quick    # K = 6, short runs
"""

import argparse
import shutil
import sys

import xarray as xr

from ufmflow.cli import landscape


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="fig7_lowrank_vs_dnc.png", help="the figure (PNG)")
    p.add_argument("--run", default="runs/fig7", help="the run folder (+ _quick with --quick)")
    a = p.parse_args()
    out = a.run + ("_quick" if a.quick else "")
    code = landscape.main(["fig7", f"quick={int(a.quick)}", f"out={out}"])
    if code:
        sys.exit(code)
    shutil.copyfile(f"{out}/fig7.png", a.out)
    with xr.open_dataset(f"{out}/results.nc", engine="h5netcdf") as ds:
        er = ds.effective_rank.values
        K = int(ds.attrs["K"])
        print(f"effective ranks at depths {ds.depth.values.tolist()}: {er.round(3).tolist()}")
        assert er[0] > K - 2 and er[-1] < er[0] - 1, "depth 1: DNC; deep: low rank"


if __name__ == "__main__":
    main()
