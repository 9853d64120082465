"""The least-squares line and its slope's confidence interval (theory §7.1) against scipy."""

import numpy as np
import pytest
from scipy import stats

from ufmflow.realnet import fit_line, student_t_ppf


@pytest.mark.parametrize("q,dof", [(0.975, 1), (0.975, 3), (0.975, 43), (0.9, 8), (0.1, 5)])
def test_student_t_ppf(q, dof):
    assert np.isclose(student_t_ppf(q, dof), stats.t.ppf(q, dof), rtol=1e-9)


def test_fit_line_against_linregress():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 9, 45)
    y = 0.9 - 0.02 * x + 0.01 * rng.normal(size=45)
    f = fit_line(x, y)
    ref = stats.linregress(x, y)
    assert np.isclose(f.slope, ref.slope) and np.isclose(f.intercept, ref.intercept)
    assert np.isclose(f.slope_se, ref.stderr) and np.isclose(f.r, ref.rvalue)
    half = stats.t.ppf(0.975, 43) * ref.stderr
    assert np.isclose(f.slope_lo, ref.slope - half) and np.isclose(f.slope_hi, ref.slope + half)
    assert f.n == 45


def test_fit_line_degenerate():
    assert np.isnan(fit_line([1, 1, 1], [1, 2, 3]).slope)  # constant x
    f = fit_line([0, 1], [0, 2])  # two points: a line, no interval
    assert f.slope == 2 and np.isnan(f.slope_lo)
    f = fit_line([0, 1, 2, np.nan], [0, 1, 2, 5])  # nan pairs are dropped; exact fit
    assert f.n == 3 and np.isclose(f.slope, 1) and np.isclose(f.slope_lo, 1)
