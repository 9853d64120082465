"""The resource guard: before a sweep starts (before anything is written) estimate its memory
and its work, and refuse with one line what cannot fit this machine.

Estimates (bytes; `b` the dtype's item size, `S` saves, `K` classes, `n` samples per class,
`d` width, `L` depth, `R` runs):

- **parameters** `P = d K n + (L - 1) d^2 + K d` (full/gd), `P = K` (hadamard);
- **results** `8 R (S (K_max + 6) + 16)`: `singular_values` (`S x K`), six other time series
  and the final metrics, all stored as float64/int64; counted 3 times (the parts, the assembled
  Dataset and the netCDF writer's copy);
- **one batch** (the largest unit, per device) `b B (10 P + 3 K^2 n + S (K + 6) + J)`: the
  solver's stages (Tsit5: 7, plus the state, the error and the proposal), the logits and their
  gradient, the saved series, and `J` for an implicit solver's linear algebra (`kvaerno5`:
  the dense `P^2` Jacobian; `rosenbrock`: `(K n)^2 + 2 P K n`, the low-rank `W`; hadamard off
  `solve_hadamard_many`: `2 K^2`, the dense field);
- **work** `R x (P + K^2 n) x steps`, steps = `max_steps` (the solver's bound) or, for gradient
  descent, `round(t1 / lr)` epochs (not bounded by `max_steps`).

Full/gd depths over 64 are refused too (the compiled program grows with depth). The memory
limit is 80% of the physical RAM (`os.sysconf`), or `max_memory_gb`; on a GPU or
TPU the batch is also held against the device's `bytes_limit`. The work limit is `1e15`
(about a day at 1e10 multiply-adds per second). `allow_big=True` skips both checks.
"""

from __future__ import annotations

import dataclasses
import os

from ._errors import SweepInputError

WORK_LIMIT = 1e15
MAX_UNROLLED_DEPTH = 64  # full/gd: XLA programs grow with depth (one chain of ops per layer)
RAM_FRACTION = 0.8
MAX_SEEDS = 2**24  # seeds=n materializes n seed labels; more is refused before that


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a sweep needs: host bytes (results + one batch), the largest batch's bytes per
    device, and its work (parameter-steps)."""

    results_bytes: float
    batch_bytes: float
    work: float
    epochs: float | None = None


def physical_memory() -> float:
    """This machine's RAM in bytes (`SC_PHYS_PAGES x SC_PAGE_SIZE`), or inf if unknown."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return float("inf")


def _device_limit() -> float:
    import jax

    dev = jax.local_devices()[0]
    if dev.platform == "cpu":
        return float("inf")
    try:
        return float((dev.memory_stats() or {}).get("bytes_limit", float("inf")))
    except Exception:  # noqa: BLE001 - backends without memory_stats
        return float("inf")


def _params(mode: str, k: int, n: int, d: int, depth: float) -> float:
    if mode == "hadamard":
        return float(k)
    return float(d * k * n + (depth - 1) * d * d + k * d)


def results_bytes(config) -> float:
    """The results' bytes (cheap: no plan needed), counted 3 times (see the module docstring)."""
    return 3 * 8 * float(config.num_runs) * (config.num_saves * (max(config.K) + 6) + 16)


def estimate(config, units) -> Estimate:
    """The estimate of `config`'s sweep planned as `units` (see the module docstring)."""
    import jax
    import numpy as np

    from ..solvers._flow import default_krylov_dim

    b = np.dtype(config.dtype).itemsize
    saves = config.num_saves
    grid = config.grid()
    results = results_bytes(config)
    devices = max(1, len(jax.local_devices()))
    epochs = round(config.t1 / config.lr) if config.mode == "gd" else None
    steps = float(epochs if epochs is not None else config.max_steps)
    work = 0.0
    batch = 0.0
    from ._modes import MODE_TABLE

    static_dims = MODE_TABLE[config.mode].static
    for u in units:
        s = dict(zip(static_dims, u.static))
        k, n, d = s["K"], s.get("per_class", 1), s.get("width", 0)
        # depth is a per-run input padded to the largest (full, hadamard) or a group's own (gd)
        p = _params(config.mode, k, n, d, s.get("depth", max(grid["depth"])))
        logits = float(k * k * n) if config.mode != "hadamard" else float(k * k)
        m = default_krylov_dim(k, n)
        if u.solver == "kvaerno5":
            extra = p * p
        elif u.solver == "rosenbrock":  # the Krylov basis and its images, theory §2.6
            extra = float(2 * m * p + m**2)
        elif config.mode == "hadamard":
            extra = 2.0 * k * k
        else:
            extra = 0.0
        per_run = b * (10 * p + 3 * logits + saves * (k + 6) + extra)
        batch = max(batch, per_run * -(-len(u.runs) // devices))
        per_step = m if u.solver == "rosenbrock" else 1
        work += len(u.runs) * (p + logits) * steps * per_step
    return Estimate(results, batch, work, epochs)


def _plan(config):
    from ._plan import plan_units

    return plan_units(config)


def _gb(x: float) -> str:
    return f"{x / 1e9:.3g} GB"


def check_seeds_count(n: int) -> None:
    """Refuse `seeds=n` beyond `MAX_SEEDS` before the labels are materialized."""
    if n > MAX_SEEDS:
        raise SweepInputError("seeds", str(n), f"{n:.3g} seeds is more than this machine can "
                              f"hold labels for (at most {MAX_SEEDS}); split the sweep "
                              "(seeds=a..b per run folder)")


def check_resources(config, units=None, *, max_memory_gb: float | None = None,
                    allow_big: bool = False) -> Estimate:
    """Refuse (`SweepInputError`, one line with the estimate and the limit) a sweep whose
    memory or work cannot fit this machine; return the estimate. `max_memory_gb` replaces the
    limit (80% of RAM); `allow_big` skips the checks."""
    if max_memory_gb is not None:
        try:
            ok = float(max_memory_gb) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise SweepInputError("max_memory_gb", str(max_memory_gb), "must be a number > 0")
    if allow_big:
        return estimate(config, units if units is not None else _plan(config))
    limit = (float(max_memory_gb) * 1e9 if max_memory_gb is not None
             else RAM_FRACTION * physical_memory())
    fix = "shrink the grid, or pass max_memory_gb=<GB> or allow_big=1 if you know better"
    early = results_bytes(config)
    if early > limit:  # before planning: a plan of 1e7 runs alone takes a minute
        raise SweepInputError(
            "memory", f"{_gb(early)}", f"the sweep's results alone need about {_gb(early)} "
            f"({config.num_runs} runs x {config.num_saves} saves) but the limit is "
            f"{_gb(limit)}; {fix}")
    if config.mode != "hadamard" and max(config.depth) > MAX_UNROLLED_DEPTH:
        raise SweepInputError(
            "depth", str(max(config.depth)), f"full/gd programs grow with depth (one chain of "
            f"operations per layer; compiling depth 8 takes 4-13 s on a CPU), so depths over "
            f"{MAX_UNROLLED_DEPTH} would compile for many minutes; pass allow_big=1 if you "
            "know better, or use mode=hadamard (any real depth)")
    est = estimate(config, units if units is not None else _plan(config))
    need = est.results_bytes + est.batch_bytes
    if need > limit:
        raise SweepInputError(
            "memory", f"{_gb(need)}", f"the sweep needs about {_gb(need)} (results "
            f"{_gb(est.results_bytes)}, largest batch {_gb(est.batch_bytes)}) but the limit is "
            f"{_gb(limit)}; {fix}")
    dev = _device_limit()
    if est.batch_bytes > RAM_FRACTION * dev:
        raise SweepInputError(
            "memory", f"{_gb(est.batch_bytes)}", f"the largest batch needs about "
            f"{_gb(est.batch_bytes)} per device but a device holds {_gb(dev)}; pass chunk=<fewer "
            "runs per batch>, or allow_big=1")
    if est.work > WORK_LIMIT:
        what = (f"{est.epochs:.3g} epochs (t1/lr) per run" if est.epochs is not None
                else f"max_steps={config.max_steps} per run")
        raise SweepInputError(
            "work", f"{est.work:.3g}", f"the sweep is bounded by {est.work:.3g} parameter-steps "
            f"({config.num_runs} runs, {what}), over the limit {WORK_LIMIT:.0e} (about a day); "
            "shrink it, or pass allow_big=1")
    return est
