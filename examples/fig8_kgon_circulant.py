"""Figure 8 (theory §5.4, paper App. E.2): a converged rank-2 deep UFM whose classes, permuted
into the order they sit on the circle of the rank-2 Gram factor, show the circulant structure of
the regular K-gon. Runs `python -m ufmflow.landscape fig8`, writes fig8.png and the numbers into
its run folder (--run), copies the figure to --out and asserts the claim.

    python examples/fig8_kgon_circulant.py            # K = 8, L = 8
    python examples/fig8_kgon_circulant.py --quick    # K = 5, short runs
"""

import argparse
import shutil
import sys

import xarray as xr

import ufmflow as uf
from ufmflow.cli import landscape


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="fig8_kgon_circulant.png", help="the figure (PNG)")
    p.add_argument("--run", default="runs/fig8", help="the run folder (+ _quick with --quick)")
    a = p.parse_args()
    out = a.run + ("_quick" if a.quick else "")
    code = landscape.main(["fig8", f"quick={int(a.quick)}", f"out={out}"])
    if code:
        sys.exit(code)
    shutil.copyfile(f"{out}/fig8.png", a.out)
    with xr.open_dataset(f"{out}/results.nc", engine="h5netcdf") as ds:
        assert ds.attrs["found"] == 1, "no run reached rank 2"
        before = uf.circulant_defect(ds.normalized_logits.values)
        after = float(ds.attrs["circulant_defect"])
        print(f"circulant defect: {before:.3g} as trained, {after:.3g} in circle order; "
              f"distance to the K-gon {float(ds.attrs['distance_to_kgon']):.3g}")
        assert after <= before and float(ds.attrs["distance_to_kgon"]) < 0.3


if __name__ == "__main__":
    main()
