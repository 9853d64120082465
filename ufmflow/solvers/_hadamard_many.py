"""Many reduced Hadamard ODEs at once: `solve_hadamard_many` (theory §4).

`jax.vmap(solve_hadamard)` turns the adaptive loop into one `while` over the batch whose every
iteration selects over every carried array (the save buffers included) and which runs until the
slowest member is done. For the sweeps and basin studies, where thousands of small (`K <= 1024`)
systems are solved, the batch loop is written by hand, in three parts:

- `_batched_tsit5`: the loop (diffrax's Tsit5 tableau and step-size rules, continuous batching:
  a finished run's slot takes the next waiting run; saves located on the dense output and
  written only for the slots that save; `_batched_writes`);
- `_hadamard_forms`: what the loop integrates for each time change, `"relative"` (in `s`,
  `solve_hadamard`'s method) and `"log"` (in `log s`, the sweeps' default: 27% fewer steps,
  no `log` per element), with their error weights;
- `_hadamard_kernels`: the fused fields (two Walsh-Hadamard transforms per evaluation), the
  vectorizable `log`, and the measurements of the saved states (once, after the loop);

and `_compiler.compiler_options` for the program that runs it.

On a CPU, XLA by default dispatches each kernel of the loop body separately (a few hundred per
iteration, ~0.5 us each), which costs as much as the arithmetic; with `ufmflow.fast_cpu_loops()`
(the command line and the benchmark call it) the whole loop is compiled as one function and
runs 1.2x (float64) to 1.35x (float32) faster per step. The field evaluations are then ~75%
of a float64 `"log"` step (K=64, 64 slots), the saves ~7% at 16 per run.

Every run's arithmetic depends only on its own state, so a run's result does not depend on which
runs share the batch; a different slot count is a different array shape, which XLA may
vectorize differently, so results can differ in the last bits (~1e-13 relative seen).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import ArrayLike, Float

from ..core._hadamard import depth_exponent
from ._batched_tsit5 import run_batch
from ._checks import (check_count, check_depth_values, check_singular_values, check_times,
                      check_tolerances)
from ._compiler import compiler_options as compiler_options
from ._devices import device_order
from ._flow import default_save_times
from ._reduced import HadamardSolution
from ._hadamard_forms import FORMS
from ._hadamard_kernels import _save_metrics
from ._time_change import BATCHED_TIME_CHANGES, check_time_change

HADAMARD_MANY_TIME_CHANGES = BATCHED_TIME_CHANGES  # the name the sweep engine imports


def _solve_batch(s0, alpha, w_targets, rtol, atol, *, slots, max_steps, time_change="relative",
                 pcoeff=0.0, icoeff=1.0, differentiable=False):
    """The loop behind `solve_hadamard_many`: `s0 (N, K)`, `alpha (N,)`, save targets in
    `w = log1p(tau)`. Returns a dict of `(N, S, ...)` saves (`s` and its `_save_metrics`)
    and `(N, ...)` finals (`s_final`, `status`, `num_steps`, `num_rejected`).
    `time_change`: a key of `_hadamard_forms.FORMS`; the other keywords: `run_batch`'s."""
    out = run_batch(FORMS[time_change], s0, alpha, w_targets, rtol, atol, slots=slots,
                    max_steps=max_steps, pcoeff=pcoeff, icoeff=icoeff,
                    differentiable=differentiable)
    # The measurements of the saved states, once after the loop (NaN where nothing was saved).
    out.update(_save_metrics(out["s"]))
    return out


_INTEGER_OUTPUTS = ("status", "num_steps", "num_rejected")


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _solve_batch_ad(s0, alpha, w_targets, rtol, atol, config):
    """`_solve_batch` (the fast loop), reverse-mode differentiable in `s0` and `alpha`: under
    `jax.grad`/`jax.vjp` the forward pass is instead `_solve_batch(differentiable=True)` with
    one slot per run, whose pullback is kept. `config`: `_solve_batch`'s keywords, as a tuple
    of pairs (static)."""
    return _solve_batch(s0, alpha, w_targets, rtol, atol, **dict(config))


def _solve_batch_ad_fwd(s0, alpha, w_targets, rtol, atol, config):
    kw = dict(config, slots=s0.shape[0], differentiable=True)

    def floats(s0, alpha):
        out = _solve_batch(s0, alpha, w_targets, rtol, atol, **kw)
        ints = {name: out.pop(name) for name in _INTEGER_OUTPUTS}
        return out, ints

    out, pullback, ints = jax.vjp(floats, s0, alpha, has_aux=True)
    return dict(out, **ints), (pullback, w_targets, rtol, atol)


def _solve_batch_ad_bwd(config, residuals, cotangents):
    pullback, w_targets, rtol, atol = residuals
    floats = {name: v for name, v in cotangents.items() if name not in _INTEGER_OUTPUTS}
    d_s0, d_alpha = pullback(floats)
    return d_s0, d_alpha, jnp.zeros_like(w_targets), jnp.zeros_like(rtol), jnp.zeros_like(atol)


_solve_batch_ad.defvjp(_solve_batch_ad_fwd, _solve_batch_ad_bwd)


@functools.lru_cache(maxsize=8)
def _solve_batch_jit(options: tuple):
    """`_solve_batch`, differentiable (`_solve_batch_ad`), jitted with XLA `options`."""

    def solve(s0, alpha, w_targets, rtol, atol, *, slots, max_steps, time_change="relative",
              pcoeff=0.0, icoeff=1.0):
        config = (("slots", slots), ("max_steps", max_steps), ("time_change", time_change),
                  ("pcoeff", pcoeff), ("icoeff", icoeff))
        return _solve_batch_ad(s0, alpha, w_targets, rtol, atol, config)

    return jax.jit(solve, static_argnames=("slots", "max_steps", "time_change", "pcoeff",
                                           "icoeff"),
                   compiler_options=dict(options) or None)


@functools.lru_cache(maxsize=8)
def _solve_spread_jit(options: tuple, devices: tuple):
    """`_solve_batch` with its runs split over `devices` (a 1-D mesh; `shard_map`, no
    collectives: every device runs its contiguous block of the batch as its own loop), jitted
    with XLA `options`. Not differentiable (the differentiable path runs on one device)."""
    mesh = Mesh(np.asarray(devices), ("runs",))
    runs, same = PartitionSpec("runs"), PartitionSpec()

    def solve(s0, alpha, w_targets, rtol, atol, *, slots, max_steps, time_change="relative"):
        local = functools.partial(_solve_batch, slots=slots, max_steps=max_steps,
                                  time_change=time_change)
        return jax.shard_map(local, mesh=mesh, in_specs=(runs, runs, same, same, same),
                             out_specs=runs, check_vma=False)(s0, alpha, w_targets, rtol, atol)

    return jax.jit(solve, static_argnames=("slots", "max_steps", "time_change"),
                   compiler_options=dict(options) or None)


def _spread(s0, alpha, w_targets, rtol, atol, *, slots, max_steps, time_change, options):
    """Run the batch over every local device: rows dealt round-robin (`device_order`),
    padded to a multiple of the device count by repeating the last run, then put back in
    order and the padding dropped. Each device advances `min(slots, its runs)` at a time."""
    devices = tuple(jax.local_devices())
    n_dev, n_runs = len(devices), s0.shape[0]
    batch = -(-n_runs // n_dev) * n_dev
    order = device_order(batch, n_dev)
    take = np.minimum(order, n_runs - 1)  # padding positions repeat the last run
    out = _solve_spread_jit(options, devices)(
        s0[take], alpha[take], w_targets, rtol, atol, slots=min(slots, batch // n_dev),
        max_steps=max_steps, time_change=time_change)
    back = np.argsort(order)[:n_runs]  # the position of run i
    return {name: v[back] for name, v in out.items()}


def default_slots(num_classes: int) -> int:
    """Systems advanced together by default: on a CPU `max(16, 4096 // K)` (64 at `K = 64`:
    the step's ~20 temporaries of `(slots, K)` then stay in the core's cache; measured fastest
    among 16..512), elsewhere 4096 (an accelerator wants the widest batch)."""
    if jax.default_backend() == "cpu":
        return max(16, 4096 // int(num_classes))
    return 4096


def solve_hadamard_many(
    s0: Float[ArrayLike, "N K"],
    depth,
    tau1: float,
    *,
    ts: Float[ArrayLike, " S"] | None = None,
    num_saves: int = 64,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    max_steps: int = 4096,
    slots: int | None = None,
    time_change: str = "relative",
):
    """Solve `N` reduced Hadamard ODEs (theory §4) to reduced time `tau1`, batched.

    The same problem, method and result fields as `solve_hadamard` with its defaults
    (`time_change="relative"`, Tsit5, integral controller) for every row of `s0`, returned as a
    `HadamardSolution` whose fields have a leading axis `N`; measured 3.4x faster on a CPU than
    `jax.vmap(solve_hadamard)` (4.1x with `ufmflow.fast_cpu_loops()`; 2048 runs, K=64, depths
    1..8, rtol 1e-6, one device; see the module docstring for why).
    Results agree with `solve_hadamard` to rounding in the rate (its `"fast"` form), not bit
    for bit.

    **Arguments:**

    - `s0`: initial singular values, `(N, K)`, `K` a power of two, entries finite and `>= 0`.
    - `depth`: scalar or `(N,)`, any real `>= 1` per run.
    - `tau1`, `ts`, `num_saves`, `rtol`, `atol`, `max_steps`: as `solve_hadamard`.
    - `slots`: systems advanced together on each device (default `min(N, default_slots(K))`);
      any value gives the same steps and the same numbers up to rounding.
    - `time_change`: `"relative"` (default: `solve_hadamard`'s method, above) or `"log"`: the
      state is `log s` and the time change `log_time_field`'s, with the error control of
      `_Log` (relative error `rtol` in each `s_i` at the time reached; `atol` unused). Measured
      on 1024 runs (K=64, depth 1..8, tau 1e6, rtol 1e-6, float64, one CPU device): 79 steps per
      run instead of 108 and a 1.2x cheaper field, 1.7x faster in all (float32: 1.8x); the
      largest relative error over the saves against an rtol-1e-10 solution was 2.4e-4 (the
      `"relative"` method's: 1.4e-4), both in the same depth-8 transition. `ufmflow.sweep`
      uses `"log"` for `mode=hadamard` by default.

    **Devices:** the runs are spread over every local device (`jax.local_devices()`: the
    GPUs, or the CPU devices that `ufmflow.use_cpu_cores()` makes, one per core) by
    themselves, dealt round-robin so that every device gets the same mix of depths; each
    device runs its share as its own loop. The numbers do not depend on the device count
    beyond rounding (a device's batch has another size). Measured on the 4096-run benchmark
    case (K=64, depth 1..8, tau 1e6, rtol 1e-6, `"log"`): see `benchmarks/bench_batched_api.py`
    and the README. A call under `jax.jit`, `jax.vmap` or `jax.grad` runs on one device.

    **Returns:** a `HadamardSolution` with a leading axis `N` on every field.

    **Differentiable:** reverse mode (`jax.grad`, `jax.vjp`) with respect to `s0` and `depth`,
    through every float output (`s`, `s_final`, `loss`, `log_loss`, `min_margin`): the
    derivative of the computed solution itself (discretize-then-differentiate: through the
    steps, the step-size control and the save locations), as diffrax's default
    `RecursiveCheckpointAdjoint`. Not with respect to `tau1`, `ts`, the tolerances (zero), nor
    in forward mode (`jax.jvp`). A call that is not differentiated runs the fast loop above;
    under `jax.grad` the forward pass is a second, differentiable version of the same loop
    (one slot per run, no continuous batching, a checkpointed step loop: the same steps and the
    same numbers to rounding), and costs far more than a plain call: measured on 64 runs (K=64,
    depth 1..8, tau1 1e6, rtol 1e-6, 16 saves, `"log"`, one CPU device shared with other work)
    1.67 s for `jax.grad` of the final log loss against 0.039 s for the call (43x; compile 97 s
    against 22 s). Memory: up to `sqrt(2 max_steps)` checkpoints of the loop's state (90 at
    the default `max_steps`), whose largest part is the `(N, S, K)` save buffer. A run whose
    trial step overflows (a non-finite rejected step) gets a NaN gradient. Checked against
    central differences in tests/solvers/test_hadamard_many.py.

    **Raises:** `ValueError`, naming the argument, for `s0` not `(N, K)`, `K` not a power of
    two, entries negative or not finite; `depth < 1`; bad times (`tau1`, `ts` negative, not
    finite or decreasing; `num_saves < 2`); `rtol <= 0`, `atol < 0`; `max_steps < 1`,
    `slots < 1`; an unknown `time_change`.
    """
    check_time_change(time_change, BATCHED_TIME_CHANGES)
    check_times(ts, tau1, name="tau1")
    check_tolerances(rtol, atol)
    max_steps = check_count("max_steps", max_steps)
    if ts is None:
        num_saves = check_count("num_saves", num_saves, minimum=2)
    s0 = check_singular_values(s0, batched=True)
    check_depth_values(depth)
    n_runs = s0.shape[0]
    depth = jnp.broadcast_to(jnp.asarray(depth, s0.dtype), (n_runs,))
    if slots is None:
        slots = min(n_runs, default_slots(s0.shape[1]))
    else:
        slots = min(check_count("slots", slots), n_runs)
    ts = default_save_times(tau1, num_saves) if ts is None else jnp.asarray(ts)
    ts = ts.astype(s0.dtype)
    # XLA options apply to a top-level program only (not inside `jit`, `grad` or `vmap`).
    traced = any(isinstance(a, jax.core.Tracer) for a in (s0, depth, ts, rtol, atol))
    options = () if traced else tuple(sorted(compiler_options().items()))
    args = (s0, depth_exponent(depth), jnp.log1p(ts), jnp.asarray(rtol, s0.dtype),
            jnp.asarray(atol, s0.dtype))
    kw = dict(slots=slots, max_steps=max_steps, time_change=time_change)
    if not traced and n_runs > 1 and jax.local_device_count() > 1:
        out = _spread(*args, **kw, options=options)
    else:
        out = _solve_batch_jit(options)(*args, **kw)
    return HadamardSolution(
        ts=jnp.broadcast_to(ts, (n_runs,) + ts.shape), s=out["s"], loss=out["loss"],
        log_loss=out["log_loss"], min_margin=out["min_margin"], s_final=out["s_final"],
        status=out["status"], num_steps=out["num_steps"], num_rejected=out["num_rejected"],
    )
