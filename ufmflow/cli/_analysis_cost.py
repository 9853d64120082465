"""The resource guard of the analysis commands (`python -m ufmflow.dynamics`, `python -m
ufmflow.landscape`; issue 15 point 2): before an analysis starts (before anything is written)
estimate its memory and its work from its settings, and refuse with one line what cannot fit
this machine, as the sweep's guard does (`ufmflow.sweep._guard`: the same limits, the same
override keys `max_memory_gb=<GB>` and `allow_big=1`). Pure Python: no JAX.

Estimates (bytes of float64, `B = 8`; work in multiply-adds, an upper bound):

- **reduced Hadamard runs** (`basins`, `effective-rank`, `rich-get-richer`, `kl`, `perturb`):
  `R` runs of `K` modes with `S` saves hold `B R K (S + 2)` of results, and a batch of
  `min(R, 1024)` runs (the chunk of `solve_hadamard_batch`) `20 B K` per run (the solver's
  stages, state, error and proposal) plus the `K x K` Hadamard matrix; work `R K^2 max_steps`
  (`max_steps = 4096`, the solver's bound).
- **deep UFM runs** (`width`, `random-vs-hadamard`, `kgon`, `fig3-right`, `fig7`, `fig8`):
  `P = d K n + (L - 1) d^2 + K d` parameters, a run holds `20 B P` (stages and state) plus the
  logits, a batch of seeds runs at once (vmapped); work `R (P + K^2 n) steps`, steps =
  `max_steps` (full GF: 10000, `flow_until`: 4096) or the epochs (gradient descent, 3 passes
  per epoch).
- **max-margin solves** (`optima`, `softmax-codes`, the codes of `fig3-right`): `P = 2 K w +
  (L - 1) w^2` per start, 6 copies (parameters, gradient, Adam moments, multipliers) for a
  chunk of `min(starts, 1024)` starts; work `3 starts P outer inner`.
- **closed forms** (`critical-scale`, `minimal-rank`, `map`, `fig1`): the `K x K` matrices
  (`critical-scale`: a Jacobian per depth and 60 root-finding steps of `K^3`; `minimal-rank`:
  `2^(K-1)` supports).

Limits (`ufmflow.sweep._guard`): memory 80% of the physical RAM, or `max_memory_gb`; work
`1e15` (about a day); integer depths of unrolled programs (full GF, gradient descent, the
max-margin factors) at most 64. `allow_big=1` skips every check.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

from ._grammar import Key, UsageError, format_value

B = 8.0
HADAMARD_STEPS = 4096
FLOW_STEPS = 10_000
CHUNK = 1024

GUARD_KEYS: tuple[Key, ...] = (
    Key("max_memory_gb", "real", None, "memory limit of the resource guard in GB (auto = 80% "
        "of RAM): an analysis whose estimated memory is larger is refused before it starts",
        gt=0, none="auto"),
    Key("allow_big", "bool", False, "0 | 1: skip the resource guard (memory; work, limit "
        "1e15 multiply-adds; depths over 64 of unrolled programs)"),
)
GUARD_NAMES = tuple(k.name for k in GUARD_KEYS)


@dataclasses.dataclass(frozen=True)
class Cost:
    """What an analysis needs: `memory` (bytes, peak), `work` (multiply-adds, a bound), `what`
    (the sizes behind them, for the message) and `depth` (its largest unrolled depth, 0 when
    it has none)."""

    memory: float
    work: float
    what: str
    depth: float = 0.0


def _hadamard(runs: float, k: float, saves: float = 2, batch: float | None = None) -> Cost:
    batch = min(runs, CHUNK) if batch is None else batch
    memory = B * runs * k * (saves + 2) + B * batch * 20 * k + B * k * k
    return Cost(memory, runs * k * k * HADAMARD_STEPS,
                f"{runs:.3g} reduced runs of K={k:g}, max_steps={HADAMARD_STEPS}")


def _params(k: float, n: float, width: float, depth: float) -> float:
    return width * k * n + (depth - 1) * width * width + k * width


def _deep(runs: float, batch: float, k: float, n: float, width: float, depth: float,
          steps: float, what: str) -> Cost:
    p = _params(k, n, width, depth)
    memory = B * batch * (20 * p + 3 * k * k * n)
    return Cost(memory, runs * (p + k * k * n) * steps,
                f"{runs:.3g} runs of {p:.3g} parameters, {what}", depth)


def _total(costs: list[Cost]) -> Cost:
    """Run one after another: the largest memory, the summed work, the deepest depth."""
    big = max(costs, key=lambda c: c.memory)
    work = sum(c.work for c in costs)
    return Cost(big.memory, work, big.what if len(costs) == 1 else
                f"{len(costs)} solves, the largest: {big.what}", max(c.depth for c in costs))


def _combine(a: Cost, b: Cost) -> Cost:
    return _total([a, b])


# --------------------------------------------------------------------------------------------
# python -m ufmflow.dynamics


def _critical_scale(c: dict) -> Cost:
    nd = len(c["depth"])
    k = max(c["K"])
    return Cost(B * 6 * nd * k * k, sum(60 * nd * kk**3 for kk in c["K"]) * 2,
                f"{nd} depths of K up to {k} (a K x K Jacobian each)")


def _perturb(c: dict) -> Cost:
    return _hadamard(len(c["ratio"]) * 2, c["K"], saves=21)


def _rich(c: dict) -> Cost:
    runs = len(c["depth"]) * len(c["scale"]) * c["num"]
    return _hadamard(runs, c["K"], saves=2, batch=c["num"])


def _kl(c: dict) -> Cost:
    return _combine(_hadamard(c["num"], c["K"], saves=64), _hadamard(2, c["K"], saves=64))


def _basins(c: dict) -> Cost:
    runs = len(c["depth"]) * len(c["scale"]) * c["num"]
    return _total([_hadamard(runs * len(c["K"]), k) for k in c["K"]])


def _minimal_rank(c: dict) -> Cost:
    k = max(c["K"])
    return Cost(B * 2 ** (k - 1) * k * 4, sum(2 ** (kk - 1) * kk * kk for kk in c["K"]),
                f"2^{k - 1} supports of K={k}")


def _effective_rank(c: dict) -> Cost:
    runs = (len(c["depth"]) + len(c["scale_depth"]) * len(c["scale"])) * c["num"]
    return _hadamard(runs, c["K"])


def _width(c: dict) -> Cost:
    k, n, depth = c["K"], c["n"], c["depth"]
    widths = set(c["width"]) | set(c["grown_width"] or ()) | set(c["conv_width"] or ())
    runs_per = len(c["scale"]) + bool(c["grown_width"]) + bool(c["conv_width"])
    costs = [_deep(c["seeds"] * runs_per, 1, k, n, w, depth, HADAMARD_STEPS,
                   f"width {w}, max_steps={HADAMARD_STEPS}") for w in sorted(widths)]
    return _total(costs)


def _random_vs_hadamard(c: dict) -> Cost:
    return _deep(1, 1, c["K"], c["n"], c["width"], c["depth"], FLOW_STEPS,
                 f"max_steps={FLOW_STEPS}")


DYNAMICS_COSTS: dict[str, Callable[[dict], Cost]] = {
    "critical-scale": _critical_scale, "perturb": _perturb, "rich-get-richer": _rich,
    "kl": _kl, "basins": _basins, "minimal-rank": _minimal_rank,
    "effective-rank": _effective_rank, "width": _width,
    "random-vs-hadamard": _random_vs_hadamard,
}


# --------------------------------------------------------------------------------------------
# python -m ufmflow.landscape


def _map(c: dict) -> Cost:
    nd = c["depth_max"] / c["depth_step"] + 1
    nk = len(c["K"])
    return Cost(B * 3 * 8 * nk * nd, 8 * nk * nd, f"{nk} K x {nd:.3g} depths")


def _max_margin(k: float, width: float, depth: float, starts: float, outer: float,
                inner: float) -> Cost:
    p = 2 * k * width + (depth - 1) * width * width
    memory = B * (6 * min(starts, CHUNK) * (p + k * k) + 2 * starts * k * k)
    return Cost(memory, 3 * starts * (p + k * k) * outer * inner,
                f"{starts:.3g} starts of {p:.3g} parameters, {outer:g} x {inner:g} steps",
                depth)


def _optima(c: dict) -> Cost:
    return _total([_max_margin(c["K"], c["K"], d, c["num"], c["outer"], c["inner"])
                   for d in c["depth"]])


def _softmax_codes(c: dict) -> Cost:
    return _total([_max_margin(k, r, 1, c["num"], 50, 200)
                   for k in c["K"] for r in range(2, k)])


def _gd_or_gf(c: dict, method: str) -> tuple[float, str]:
    if method == "gd":
        return 3.0 * c["epochs"], f"{c['epochs']:g} epochs"
    return float(FLOW_STEPS), f"max_steps={FLOW_STEPS}"


def _kgon(c: dict) -> Cost:
    methods = ("gd", "gf") if c["method"] == "both" else (c["method"],)
    costs = []
    for m in methods:
        steps, what = _gd_or_gf(c, m)
        costs += [_deep(c["seeds"], c["seeds"], k, 1, c["width"], c["depth"], steps, what)
                  for k in c["K"]]
    return _total(costs)


def _fig1(c: dict) -> Cost:
    k = c["K"]
    return Cost(B * 8 * k * k, 10 * k**3, f"K={k} (K x K matrices and their SVD)")


def _fig7(c: dict) -> Cost:
    steps, what = _gd_or_gf(c, "gd")
    return _total([_deep(1, 1, c["K"], 1, c["width"], d, steps, what) for d in c["depth"]])


def _fig8(c: dict) -> Cost:
    steps, what = _gd_or_gf(c, "gd")
    return _deep(c["seeds"], 1, c["K"], 1, c["width"], c["depth"], steps, what)


def _fig3_right(c: dict) -> Cost:
    steps, what = _gd_or_gf(c, "gd")
    deep = [_deep(c["seeds"], c["seeds"], c["K"], 1, w, d, steps, what)
            for w in c["width"] for d in c["depth"]]
    codes = [_max_margin(c["K"], r, 1, c["num"], 50, 200) for r in range(2, c["K"])]
    return _total(deep + codes)


LANDSCAPE_COSTS: dict[str, Callable[[dict], Cost]] = {
    "map": _map, "optima": _optima, "softmax-codes": _softmax_codes, "kgon": _kgon,
    "fig1": _fig1, "fig7": _fig7, "fig8": _fig8, "fig3-right": _fig3_right,
}


# --------------------------------------------------------------------------------------------
# The check


def _gb(x: float) -> str:
    return f"{x / 1e9:.3g} GB"


def check_cost(analysis: str, cost: Cost, given: Mapping) -> None:
    """Refuse (`UsageError`, one line with the estimate, the limit and the override) an
    analysis that cannot fit: its memory over the limit (80% of RAM or `max_memory_gb`), its
    work over `1e15`, an unrolled depth over 64. `allow_big` in `given` skips the checks."""
    from ..sweep._guard import MAX_UNROLLED_DEPTH, RAM_FRACTION, WORK_LIMIT, physical_memory

    if given.get("allow_big"):
        return
    gb = given.get("max_memory_gb")
    limit = gb * 1e9 if gb is not None else RAM_FRACTION * physical_memory()
    if cost.depth > MAX_UNROLLED_DEPTH:
        raise UsageError("depth", format_value(cost.depth), f"{analysis} unrolls one chain of "
                         f"operations per layer, so depths over {MAX_UNROLLED_DEPTH} would "
                         "compile for many minutes; pass allow_big=1 if you know better")
    if not cost.memory <= limit:
        raise UsageError("memory", _gb(cost.memory), f"{analysis} needs about "
                         f"{_gb(cost.memory)} ({cost.what}) but the limit is {_gb(limit)}; "
                         "shrink it, or pass max_memory_gb=<GB> or allow_big=1 if you know "
                         "better")
    if not cost.work <= WORK_LIMIT:
        raise UsageError("work", f"{cost.work:.3g}", f"{analysis} is bounded by "
                         f"{cost.work:.3g} multiply-adds ({cost.what}), over the limit "
                         f"{WORK_LIMIT:.0e} (about a day); shrink it, or pass allow_big=1")


def estimate(costs: Mapping[str, Callable[[dict], Cost]], analysis: str, settings: dict) -> Cost:
    """The cost of one analysis with its resolved settings (math only: never runs anything)."""
    try:
        cost = costs[analysis](settings)
    except OverflowError:  # sizes beyond floats (K=1e300): nothing could hold them
        return Cost(math.inf, math.inf, "sizes beyond floating point")
    if not all(math.isfinite(x) for x in (cost.memory, cost.work)):
        return dataclasses.replace(cost, memory=math.inf)
    return cost
