"""`SweepConfig`: everything that defines a sweep, each setting validated once, here, where it
enters (the command line builds one from `key=value` words); its hash names the run folder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import jax
import numpy as np

from ..core._init import DIRECTION_DISTRIBUTIONS
from ..solvers._time_change import FLOW_TIME_CHANGES as TIME_CHANGES
from ._errors import SweepInputError
from ._modes import MODE_TABLE, MODES

# "log": the reduced ODE in log variables (`solve_hadamard_many(time_change="log")`, hadamard
# with Tsit5 only); "bounded": the full GF's default (theory §2.6, mode=full only); "auto":
# "log" or "bounded" where they apply, else "relative".
SWEEP_TIME_CHANGES = ("auto", "bounded") + TIME_CHANGES + ("log",)
SOLVERS = ("auto", "rosenbrock", "tsit5", "kvaerno5")
DTYPES = ("float64", "float32")
FAST_COMPILE = ("auto", "on", "off")


def _tuple(value, cast, key):
    values = value if isinstance(value, (tuple, list, np.ndarray, range)) else (value,)
    out = []
    for v in values:
        try:
            c = cast(v)
        except (TypeError, ValueError):
            raise SweepInputError(key, str(v), f"expected {cast.__name__} values") from None
        if cast is int and c != v:
            raise SweepInputError(key, str(v), "expected an integer")
        out.append(c)
    if not out:
        raise SweepInputError(key, "", "empty: give at least one value")
    if len(set(out)) != len(out):
        dup = next(v for v in out if out.count(v) > 1)
        raise SweepInputError(key, str(dup), "duplicate value (each value labels a coordinate)")
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a sweep; the CLI builds one from `key=value` words.

    Grid keys (tuples; a scalar means one value): `depth`, `width`, `init_scale`, `seeds`, `K`,
    `per_class`. `seeds` may be an int `n`, meaning seeds `0..n-1`. The defaults are the paper's
    Fig. 2 experiment (see `python -m ufmflow.sweep --help` for each key). `width`,
    `init_scale`, `t1` and `max_steps` left at `None` take the mode's own default
    (`Mode.defaults`): for `"full"` width 32, init scale 0.3, `t1 = 1e8`, 20,000 steps (a small
    init at width 4K, run until the effective rank has settled; README, "Defaults"); for `"gd"`
    and `"hadamard"` 16, 0.75, `1e5`, 4096.

    **Modes.**

    - `"full"`: gradient flow of the deep UFM from `gaussian_init(PRNGKey(seed), K, per_class,
      width, depth, init_scale)` to GF time `t1` (`solve_flow`).
    - `"gd"`: gradient descent (`descend`) with step `lr` for `round(t1 / lr)` epochs, so its
      time axis is also GF time `lr * epoch`.
    - `"hadamard"`: the reduced ODE to reduced time `tau = t1`, any real `depth >= 1`, `K` a
      power of two; `width`/`per_class` do not enter. With Tsit5 (`solver="auto"`) and the
      default `time_change="auto"` it runs `solve_hadamard_many(time_change="log")` (log
      variables; 1.7x faster than `"relative"` on the K=64 benchmark); with Tsit5 and
      `time_change="relative"`, `solve_hadamard_many`'s default (`solve_hadamard`'s method,
      batched); otherwise a vmapped `solve_hadamard`. Seed `i` starts at
      `hadamard_initial_direction(PRNGKey(i), K, init_scale, distribution=direction)`: `g` with
      `g[0] = 0` and the other entries i.i.d. `U[0, 1]` (`direction="uniform"`, the paper's
      Fig. 4 protocol, default) or `|N(0, 1)|` (`"half_normal"`), then `s0 = init_scale * g /
      ||g[1:]||`; the same seed gives the same direction at every depth and scale.

    **Raises:** `SweepInputError` (a `ValueError`) naming the key, the value and the fix.
    """

    mode: str = "full"
    depth: tuple = tuple(range(1, 9))
    width: tuple | None = None
    init_scale: tuple | None = None
    seeds: tuple = (0, 1, 2, 3, 4)
    K: tuple = (8,)
    per_class: tuple = (1,)
    t1: float | None = None
    dtype: str = "float64"
    rtol: float = 1e-5
    atol: float | None = None
    num_saves: int = 32
    max_steps: int | None = None
    solver: str = "auto"
    time_change: str = "auto"
    lr: float = 0.1
    weight_decay: float = 0.0
    decay_epochs: int = 0
    chunk: int | None = None
    fast_compile: str = "auto"
    direction: str = "uniform"
    out: str | None = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        _choice("mode", self.mode, MODES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("solver", self.solver, SOLVERS)
        _choice("time_change", self.time_change, SWEEP_TIME_CHANGES)
        _choice("fast_compile", self.fast_compile, FAST_COMPILE)
        _choice("direction", self.direction, DIRECTION_DISTRIBUTIONS)
        mode = MODE_TABLE[self.mode]
        for key, value in mode.defaults.items():  # None: the mode's default
            if getattr(self, key) is None:
                set_(key, value)
        if isinstance(self.seeds, (int, np.integer)) and not isinstance(self.seeds, bool):
            if self.seeds < 1:
                raise SweepInputError("seeds", str(self.seeds), "the number of seeds must be >= 1")
            from ._guard import check_seeds_count

            check_seeds_count(int(self.seeds))
            set_("seeds", tuple(range(int(self.seeds))))
        set_("depth", _tuple(self.depth, mode.depth_type, "depth"))
        for key in ("width", "K", "per_class", "seeds"):
            set_(key, _tuple(getattr(self, key), int, key))
        set_("init_scale", _tuple(self.init_scale, float, "init_scale"))
        for key, low in (("depth", 1), ("width", 1), ("K", 2), ("per_class", 1), ("seeds", 0)):
            for v in getattr(self, key):
                if not v >= low:
                    raise SweepInputError(key, _fmt(v), f"must be >= {low}")
        for v in self.init_scale:
            if not (v > 0 and math.isfinite(v)):
                raise SweepInputError("init_scale", _fmt(v), "must be a finite number > 0")
        mode.check_grid(self)
        log_ok = mode.log_time_change_ok(self.solver)
        if self.time_change == "auto":
            full = self.mode == "full"
            set_("time_change", "log" if log_ok else "bounded" if full else "relative")
        elif self.time_change == "bounded" and self.mode != "full":
            raise SweepInputError(
                "time_change", "bounded", "bounded is for mode=full (the full GF); use relative "
                "(or auto)")
        elif self.time_change == "log" and not log_ok:
            raise SweepInputError(
                "time_change", "log", "log is for mode=hadamard with solver=auto or tsit5; "
                "use relative (or auto)")
        for key in ("t1", "rtol", "atol", "lr"):
            if key == "atol" and self.atol is None:
                continue
            try:
                v = float(getattr(self, key))
            except (TypeError, ValueError):
                v = math.nan
            if not (v > 0 and math.isfinite(v)):
                raise SweepInputError(key, _fmt(getattr(self, key)), "must be a finite number > 0")
            set_(key, v)
        if not (self.weight_decay >= 0):
            raise SweepInputError("weight_decay", _fmt(self.weight_decay), "must be >= 0")
        set_("weight_decay", float(self.weight_decay))
        for key, low in (("num_saves", 2), ("max_steps", 1), ("decay_epochs", 0), ("chunk", 1)):
            v = getattr(self, key)
            if key == "chunk" and v is None:
                continue
            if isinstance(v, bool) or int(v) != v or v < low:
                raise SweepInputError(key, str(v), f"must be an integer >= {low}")
            set_(key, int(v))
        mode.check_settings(self)
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise SweepInputError(
                "dtype", "float64", "JAX runs without x64 (UFMFLOW_X64=0): pass dtype=float32"
            )

    @property
    def dims(self) -> tuple[str, ...]:
        """The Dataset's configuration dims, in order (then `time`, `sv`)."""
        return MODE_TABLE[self.mode].dims

    def grid(self) -> dict[str, tuple]:
        """`{dim: coordinate values}` for every configuration dim."""
        named = {"seed": self.seeds}
        return {d: named.get(d, getattr(self, d, None)) for d in self.dims}

    @property
    def num_runs(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists); `SweepConfig(**d)` rebuilds it."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def results_dict(self) -> dict:
        """The settings that determine the numbers: the grid and the settings this mode uses
        (not `out`, `chunk`, nor the keys of other modes)."""
        keys = MODE_TABLE[self.mode].keys
        return {k: v for k, v in self.to_dict().items() if k in keys}

    def short_hash(self) -> str:
        """10 hex digits identifying `results_dict()`: the default run folder's suffix."""
        return _hash(self.results_dict())

    def run_dir(self) -> Path:
        """`out`, or `runs/<mode>-<short hash>` by default."""
        return Path(self.out) if self.out else Path("runs") / f"{self.mode}-{self.short_hash()}"


def _choice(key, value, choices):
    if value not in choices:
        raise SweepInputError(key, str(value), f"choose one of {', '.join(choices)}")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]
