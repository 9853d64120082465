"""Least-squares lines with the slope's confidence interval (theory §7.1), without scipy.

The slope of `y = a + b x` fitted by ordinary least squares over `n` points has standard error
`se(b) = sqrt(SSR / (n - 2) / Sxx)`; its two-sided `level` confidence interval is
`b +- t_{(1 + level) / 2, n - 2} se(b)`, with the Student-t quantile computed here by bisection
on the t distribution's CDF, `1 - I_{nu / (nu + t^2)}(nu / 2, 1 / 2) / 2` for `t >= 0` (`I` the
regularized incomplete beta function, `jax.scipy.special.betainc`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def student_t_cdf(t: float, dof: float) -> float:
    """CDF of Student's t distribution with `dof` degrees of freedom at `t`."""
    from jax.scipy.special import betainc

    x = dof / (dof + t * t)
    tail = 0.5 * float(betainc(0.5 * dof, 0.5, np.float64(x)))
    return 1.0 - tail if t >= 0 else tail


def student_t_ppf(q: float, dof: float) -> float:
    """Quantile `t` with `student_t_cdf(t, dof) = q`, `0 < q < 1` (bisection to 1e-12)."""
    if not 0 < q < 1 or not dof > 0:
        raise ValueError(f"student_t_ppf: q={q!r} must be in (0, 1) and dof={dof!r} > 0")
    if q < 0.5:
        return -student_t_ppf(1.0 - q, dof)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, dof) < q:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if student_t_cdf(mid, dof) < q else (lo, mid)
    return 0.5 * (lo + hi)


@dataclasses.dataclass(frozen=True)
class LineFit:
    """`y = intercept + slope x` by least squares over `n` points: `slope_se`, the slope's
    `level` confidence interval `(slope_lo, slope_hi)`, Pearson `r`."""

    slope: float
    intercept: float
    slope_se: float
    slope_lo: float
    slope_hi: float
    r: float
    n: int
    level: float

    def text(self, x: str = "x", y: str = "y") -> str:
        return (f"{y} = {self.intercept:.4g} + {self.slope:.4g} {x}; slope "
                f"{100 * self.level:.0f}% CI [{self.slope_lo:.4g}, {self.slope_hi:.4g}], "
                f"r = {self.r:.3f}, n = {self.n}")


def fit_line(x, y, level: float = 0.95) -> LineFit:
    """Ordinary least squares of `y` on `x` over the finite pairs (theory §7.1).

    **Returns:** a `LineFit`; with fewer than 3 points or constant `x` the standard error and
    interval are `nan`.
    """
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    nan = float("nan")
    if n < 2 or np.ptp(x) == 0:
        return LineFit(nan, nan, nan, nan, nan, nan, n, level)
    xm, ym = x.mean(), y.mean()
    sxx, sxy, syy = np.sum((x - xm) ** 2), np.sum((x - xm) * (y - ym)), np.sum((y - ym) ** 2)
    slope = sxy / sxx
    intercept = ym - slope * xm
    r = sxy / math.sqrt(sxx * syy) if syy > 0 else nan
    if n < 3:
        return LineFit(slope, intercept, nan, nan, nan, r, n, level)
    ssr = np.sum((y - intercept - slope * x) ** 2)
    se = math.sqrt(ssr / (n - 2) / sxx)
    half = student_t_ppf(0.5 * (1.0 + level), n - 2) * se
    return LineFit(float(slope), float(intercept), se, float(slope - half), float(slope + half),
                   float(r), n, level)
