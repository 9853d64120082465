"""Input checks of the theory functions (issue 15 point 1), on top of `ufmflow.core._checks`:
each raises `ValueError` naming the argument, the value and the fix, where the input enters;
traced values (inside `jit`/`vmap`) pass through."""

from __future__ import annotations

import jax
import numpy as np

from ..core._checks import check_int, check_real

__all__ = ["check_int", "check_real", "check_reals", "check_rtol", "real_arg"]


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


def is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)
