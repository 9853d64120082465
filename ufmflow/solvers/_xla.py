"""Process-wide XLA:CPU setting for the solver loops: `fast_cpu_loops`."""

from __future__ import annotations

import os
import shlex
import warnings
from collections.abc import MutableMapping

# XLA:CPU compiles a `while` loop whose body's estimated bytes accessed are below this backend
# option's value as one function (`SmallWhileLoopHoistingPass`; default 1024 bytes); above it,
# every kernel of the body is dispatched separately at each iteration.
_LOOP_OPTION = "xla_cpu_small_while_loop_byte_threshold"
_LOOP_THRESHOLD = 2**62
_EXTRA = "--xla_backend_extra_options="


def _with_loop_option(flags: str) -> str:
    """`flags` (an `XLA_FLAGS` value) with the loop option set, keeping every other flag and
    any `xla_backend_extra_options` entries already there (the option is a map: one flag)."""
    tokens = shlex.split(flags)
    entry = f"{_LOOP_OPTION}={_LOOP_THRESHOLD}"
    for i, token in enumerate(tokens):
        if token.startswith(_EXTRA):
            kept = [e for e in token[len(_EXTRA):].split(",")
                    if e and e.split("=")[0] != _LOOP_OPTION]
            tokens[i] = _EXTRA + ",".join(kept + [entry])
            return shlex.join(tokens)
    return shlex.join(tokens + [_EXTRA + entry])


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - layout of a future jax
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else False


def fast_cpu_loops(environ: MutableMapping[str, str] | None = None) -> bool:
    """Let XLA:CPU compile every `while` loop as one function, for this process.

    By default XLA:CPU runs each kernel of a loop body as a separate task at every iteration
    (~0.5-1 us each). The batched reduced-ODE loop (`solve_hadamard_many`, `mode=hadamard`
    sweeps) launches a few hundred per step, so this overhead is a large share of its time;
    compiled as one function it ran 1.2x faster per step in float64 and 1.35x in float32
    (1024-2048 runs, K=64, one CPU device), with the same steps and the same numbers to
    rounding (~1e-11 relative seen: code compiled this way vectorizes differently); its compile
    took 2-3x as long (5.5 s -> 11-16 s for the benchmark's K=64 program). The full-GF default
    sweep's run and compile times were unchanged within the machine's noise (run 2.1-2.4 s
    with XLA's default, 2.3-2.5 s with this; compile ~45-50 s either way).

    Sets XLA's backend option `xla_cpu_small_while_loop_byte_threshold` (a loop whose body
    accesses fewer bytes is compiled as one function) to a value above any loop, in the
    `XLA_FLAGS` environment variable, keeping the flags there. `python -m ufmflow.sweep` calls
    it; in a notebook or script call it before the first JAX computation:

        import ufmflow as uf
        uf.fast_cpu_loops()

    Loops that call a library routine (e.g. LAPACK) or a collective are left as they are by
    XLA. Unknown to an older jaxlib, the option is then ignored.

    **Arguments:** `environ`: the environment to change (default `os.environ`).

    **Returns:** `True` if the setting will apply to this process's JAX programs; `False`
    (with a warning, nothing changed) if JAX's backend has already started, since XLA reads
    `XLA_FLAGS` once, when it starts.
    """
    env = os.environ if environ is None else environ
    if environ is None and _backend_started():
        if f"{_LOOP_OPTION}=" in env.get("XLA_FLAGS", ""):
            return True
        warnings.warn("ufmflow.fast_cpu_loops() has no effect once JAX's backend has started: "
                      "call it before the first JAX computation (or set XLA_FLAGS='"
                      f"{_EXTRA}{_LOOP_OPTION}={_LOOP_THRESHOLD}' before starting Python).",
                      stacklevel=2)
        return False
    env["XLA_FLAGS"] = _with_loop_option(env.get("XLA_FLAGS", ""))
    return True
