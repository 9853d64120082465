"""Input checks of the theory functions (issue 15 point 1), on top of `ufmflow.core._checks`:
each raises `ValueError` naming the argument, the value and the fix, where the input enters;
traced values (inside `jit`/`vmap`) pass through."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core._checks import check_int, check_real

__all__ = ["check_fractions", "check_grid", "check_int", "check_real", "check_reals", "check_rtol",
           "real_arg", "vectors"]


def real_arg(name: str, value, *, minimum: float | None = None, strict: bool = False,
             fix: str = "") -> None:
    """`check_real` that also refuses text, `None` and booleans (which numpy would read as
    numbers, or fail on later with a `TypeError`)."""
    if isinstance(value, (str, bytes, bool, type(None))) or (
            isinstance(value, np.ndarray) and value.dtype.kind not in "iuf"):
        raise ValueError(f"{name} must be a real number, got {value!r}. {fix}".rstrip())
    check_real(name, value, minimum=minimum, strict=strict, fix=fix)


def check_reals(name: str, values, *, minimum: float | None = None, strict: bool = False,
                fix: str = "") -> np.ndarray:
    """A non-empty 1-D float array of concrete finite values (each `>= minimum`, or `>` if
    `strict`)."""
    if isinstance(values, (str, bytes, type(None))):
        raise ValueError(f"{name} must be real numbers, got {values!r}. {fix}".rstrip())
    try:
        arr = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be real numbers, got {values!r}. {fix}".rstrip()) from None
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty. {fix}".rstrip())
    check_real(name, arr, minimum=minimum, strict=strict, fix=fix)
    return arr


def check_rtol(name: str, value) -> float:
    """A relative threshold in `(0, 1)` (numerical rank: singular values `> rtol sigma_1`)."""
    real_arg(name, value, minimum=0.0, strict=True,
             fix="a relative threshold 0 < rtol < 1 (e.g. 1e-3).")
    if not float(value) < 1:
        raise ValueError(f"{name} must be < 1, got {value!r}; a relative threshold "
                         "0 < rtol < 1 (e.g. 1e-3).")
    return float(value)


def vectors(s) -> jax.Array:
    """`s` as an array of shape `(..., K)`; a scalar is refused naming `s`."""
    s = jnp.asarray(s)
    if s.ndim < 1:
        raise ValueError(f"s must have shape (..., K) (singular values, batched over leading "
                         f"axes), got shape {s.shape}.")
    return s


def check_fractions(dnc_frac, min_tol) -> None:
    """`classify_structure`'s thresholds: `0 < dnc_frac <= 1`, `min_tol >= 0`."""
    real_arg("dnc_frac", dnc_frac, minimum=0.0, strict=True,
             fix="the DNC threshold as a fraction 0 < dnc_frac <= 1 of K - 1.")
    if not dnc_frac <= 1:
        raise ValueError(f"dnc_frac must be <= 1, got {dnc_frac!r}; the DNC threshold as a "
                         "fraction 0 < dnc_frac <= 1 of K - 1.")
    real_arg("min_tol", min_tol, minimum=0.0, fix="min_tol >= 0 over log2 K.")


def check_grid(depths, scales, num, num_name):
    """A `(depth, scale)` grid of random directions: depths `>= 1`, scales `> 0`, `num >= 1`."""
    depths = check_reals("depths", depths, minimum=1.0, fix="depths are reals L >= 1.")
    scales = check_reals("scales", scales, minimum=0.0, strict=True,
                         fix="scales are initial norms ||s|| > 0.")
    check_int(num_name, num, fix="the number of random directions per cell.")
    return depths, scales
