"""Input checks shared by every solver entry point, run once where a value enters (not inside
traced code). Each raises `ValueError` naming the argument, the value and the fix. Traced
values (inside `jit`/`vmap`) cannot be inspected and are passed through."""

from __future__ import annotations

import math
import numbers

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..core._hadamard import _log2


def _concrete(value) -> bool:
    return value is not None and not isinstance(value, jax.core.Tracer)


def check_positive_real(name: str, value, *, allow_zero: bool = False, fix: str = "") -> None:
    """`value` a finite real number `> 0` (`>= 0` with `allow_zero`), every entry if an array."""
    if not _concrete(value):
        return
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}. {fix}".rstrip()) from None
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if np.any(bad):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}. {fix}".rstrip())


def check_tolerances(rtol, atol) -> None:
    """`rtol > 0` and `atol >= 0` (or `None`: the solver's default), both finite."""
    check_positive_real("rtol", rtol, fix="A relative tolerance such as 1e-6 or 1e-8.")
    if atol is not None:
        check_positive_real("atol", atol, allow_zero=True,
                            fix="An absolute tolerance such as 1e-12, or None for the default.")


def check_count(name: str, value, *, minimum: int = 1) -> int:
    """`value` an integer `>= minimum` (a float with an integer value is accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
        isinstance(value, float) and not (math.isfinite(value) and value == int(value))
    ):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_times(ts, t1, *, name: str = "t1") -> None:
    """`t1` (named `name`) and every save time finite and `>= 0`; `ts` a non-empty,
    non-decreasing 1-D array."""
    for label, value in ((name, t1), ("ts", ts)):
        if not _concrete(value):
            continue
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"{label} must be a real number >= 0 (times: t1/tau1 the final "
                             f"time, ts the save times), got {value!r}.") from None
        if np.any(arr < 0) or not np.all(np.isfinite(arr)):
            raise ValueError(f"{label} must be finite and >= 0 (times: t1/tau1 the final time, "
                             f"ts the save times), got {value!r}.")
    if _concrete(ts):
        arr = np.asarray(ts)
        if arr.ndim != 1 or arr.size == 0 or np.any(np.diff(arr) < 0):
            raise ValueError("ts must be a non-empty, non-decreasing 1-D array of times.")


def check_depth_values(depth) -> None:
    """Every (real) depth `>= 1` and finite."""
    if not _concrete(depth):
        return
    arr = np.asarray(depth, dtype=float)
    if not np.all(np.isfinite(arr) & (arr >= 1)):
        raise ValueError(f"depth must be a real number >= 1 (the number of weight matrices), "
                         f"got {depth!r}.")


def check_singular_values(s0, *, batched: bool) -> jax.Array:
    """`s0` as a float array of shape `(K,)` (or `(N, K)` if `batched`), `K` a power of two,
    entries `>= 0` and finite. Returns it as a floating array."""
    s0 = jnp.asarray(s0)
    if not jnp.issubdtype(s0.dtype, jnp.floating):
        s0 = s0.astype(jnp.result_type(float))
    if batched and (s0.ndim != 2 or s0.shape[0] == 0):
        raise ValueError(f"s0 must have shape (N, K) with N >= 1, got {s0.shape}.")
    if not batched and s0.ndim != 1:
        raise ValueError(
            f"s0 must have shape (K,), got {s0.shape}; use solve_hadamard_many (or jax.vmap) "
            "for batches."
        )
    _log2(s0.shape[-1], "s0.shape[-1]" if batched else "len(s0)")
    if _concrete(s0) and not bool(jnp.all(jnp.isfinite(s0) & (s0 >= 0))):
        raise ValueError("s0 must be finite and non-negative (singular values).")
    return s0


# The solvers every entry point accepts by name (`solver="..."`), besides any
# `diffrax.AbstractAdaptiveSolver` instance.
SOLVER_NAMES = ("tsit5", "rosenbrock", "kvaerno5")
_SOLVER_HELP = (
    "'tsit5' (explicit, diffrax.Tsit5), 'rosenbrock' (the Rosenbrock-W method for stiff flows, "
    "RosenbrockW), 'kvaerno5' (implicit, diffrax.Kvaerno5), or a diffrax.AbstractAdaptiveSolver "
    "instance"
)


def check_solver(solver, *, default: str):
    """`solver` as one of `SOLVER_NAMES` (a string) or a `diffrax.AbstractAdaptiveSolver`
    instance; `None` gives `default`. The names `"tsit5"` and `"kvaerno5"` become diffrax
    instances; `"rosenbrock"` stays a name (each flow builds its own Jacobian for it)."""
    if solver is None:
        solver = default
    if isinstance(solver, str):
        if solver not in SOLVER_NAMES:
            raise ValueError(f"solver must be one of {SOLVER_NAMES}, got {solver!r}; "
                             f"choices: {_SOLVER_HELP}.")
        if solver == "tsit5":
            return diffrax.Tsit5()
        if solver == "kvaerno5":
            return diffrax.Kvaerno5()
        return solver
    if isinstance(solver, diffrax.AbstractAdaptiveSolver):
        return solver
    raise ValueError(f"solver must be a name in {SOLVER_NAMES} or a "
                     f"diffrax.AbstractAdaptiveSolver (with an error estimate for the step-size "
                     f"control), got {solver!r}; choices: {_SOLVER_HELP}.")


def check_controller(controller) -> None:
    """`None` or a `diffrax.AbstractStepSizeController`."""
    if controller is not None and not isinstance(controller,
                                                 diffrax.AbstractStepSizeController):
        raise ValueError(f"controller must be None (a PID controller from rtol/atol) or a "
                         f"diffrax.AbstractStepSizeController, got {controller!r}.")
