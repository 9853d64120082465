"""One status vocabulary for every solver (theory §2): a per-run code, never an exception, so a
vmapped batch keeps its other runs. Stored as integers in results (`status` variables)."""

from __future__ import annotations

import enum

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np


class Status(enum.IntEnum):
    """Per-run outcome of a solve, in the manner of diffrax's `RESULTS`."""

    OK = 0
    MAX_STEPS = 1
    NONFINITE = 2
    STALLED = 3


STATUS_OK = int(Status.OK)
STATUS_MAX_STEPS = int(Status.MAX_STEPS)
STATUS_NONFINITE = int(Status.NONFINITE)
STATUS_STALLED = int(Status.STALLED)
STATUS_NAMES = tuple(s.name.lower() for s in Status)

STATUS_MESSAGES = {
    Status.OK: "reached the final time",
    Status.MAX_STEPS: "ran out of steps before the final time; raise max_steps (or loosen rtol). "
    "A small-init deep run whose top logit singular value has exploded (the rank-one phase of "
    "docs/theory.md §2.6, case ii) needs ~10^4 steps per decade of it at any tolerance",
    Status.NONFINITE: "the state or its error estimate became non-finite (overflow: a smaller "
    "init scale, or float64)",
    Status.STALLED: "the step size collapsed or every step was rejected (the flow is too stiff "
    "for this solver: try the Rosenbrock-W solver, or tighten rtol). solve_flow has already "
    "gone back and retried with rtol / 10, / 30 and / 100 (docs/theory.md §2.7, stall "
    "rescue); in the rank-one phase of §2.6, case ii, a run can still stall where a second "
    "mode escapes under a 1e10 times larger one: try another rtol",
}


def _code(code) -> int:
    arr = np.asarray(code)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer) or int(arr) not in Status._value2member_map_:
        raise ValueError(
            f"status code must be one of {[int(s) for s in Status]} "
            f"({', '.join(f'{int(s)}: {s.name.lower()}' for s in Status)}), got {code!r}; for an "
            "array of codes use np.vectorize(status_name) or STATUS_NAMES[code]."
        )
    return int(arr)


def status_name(code) -> str:
    """Readable name of a status code (`0: ok, 1: max_steps, 2: nonfinite, 3: stalled`).

    **Raises:** `ValueError` for anything but one integer code."""
    return STATUS_NAMES[_code(code)]


def status_message(code) -> str:
    """What a status code means and what to do about it."""
    return STATUS_MESSAGES[Status(_code(code))]


def all_finite(tree):
    """Whether every entry of every leaf is finite (`STATUS_NONFINITE` otherwise)."""
    leaves = jtu.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def moved(y, y1):
    """Whether `y1` differs from `y` in any entry (a step that changes nothing has
    `STATUS_STALLED`)."""
    return jnp.any(jnp.stack([jnp.any(a != b) for a, b in zip(jtu.tree_leaves(y),
                                                                jtu.tree_leaves(y1))]))
