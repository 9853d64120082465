"""Checks of the model's static inputs (sizes, depths, scales), run once where they enter. Each
raises `ValueError` naming the argument, the value and the fix; traced values pass through."""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np


def check_int(name: str, value, *, minimum: int = 1, fix: str = "") -> int:
    """`value` as an `int >= minimum`; an integral float (`8.0`) is accepted, `2.5`, `nan`,
    `True` and strings are not."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(value, numbers.Real) and not ok and not isinstance(value, bool):
        ok = math.isfinite(float(value)) and float(value) == int(value)
    if not ok or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}. {fix}".rstrip())
    return int(value)


def check_real(name: str, value, *, minimum: float | None = None, strict: bool = False,
               fix: str = "") -> None:
    """Every entry of a concrete `value` finite (and `>= minimum`, or `> minimum` if `strict`)."""
    if isinstance(value, jax.core.Tracer):
        return
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}. {fix}".rstrip()) from None
    bad = ~np.isfinite(arr)
    if minimum is not None:
        bad |= (arr <= minimum) if strict else (arr < minimum)
    if np.any(bad):
        bound = "" if minimum is None else f" and {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be finite{bound}, got {value!r}. {fix}".rstrip())


def check_depth(depth, *, integer: bool = True, name: str = "depth") -> None:
    """Raise a `ValueError` unless `depth >= 1` (and an integer when `integer`)."""
    if integer:
        check_int(name, depth, fix="L, the number of weight matrices (L = 1 is the shallow UFM).")
        return
    check_real(name, depth, minimum=1.0,
               fix="L, the number of weight matrices: any real >= 1 in the reduced ODE.")


def check_power_of_two(num_classes, *, name: str = "num_classes") -> int:
    """Return `log2 K`, raising `ValueError` unless `K` is a power of two `>= 2`."""
    fix = "pick K in 2, 4, 8, 16, ... (the Hadamard construction needs a power of two)."
    k = check_int(name, num_classes, minimum=2, fix=fix)
    if k & (k - 1):
        raise ValueError(f"{name} must be a power of two >= 2 for the Hadamard construction, got "
                         f"{num_classes!r}; {fix}")
    return k.bit_length() - 1
