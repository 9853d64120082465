"""XLA compiler options for programs that run the batched reduced-ODE loop
(`solve_hadamard_many`, the `mode=hadamard` sweeps), and a probe of which options this jaxlib
knows. See also `ufmflow.fast_cpu_loops` (an `XLA_FLAGS` setting, read once per process)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def compiler_options() -> dict:
    """XLA options for programs that run this loop on the default backend (empty elsewhere).

    On a CPU: no YNNPACK fusions (`xla_cpu_experimental_ynn_fusion_type`, where this jaxlib
    knows it; XLA turns some of the loop's reductions into such library calls, which keep XLA
    from compiling the loop as one function, see `ufmflow.fast_cpu_loops`), and, on a CPU with
    AVX-512, 512-bit vectors (`xla_cpu_prefer_vector_width`; XLA's default is 256; measured on
    the K=64 benchmark loop: 1.19x per step in float64, 1.08x in float32)."""
    if jax.default_backend() != "cpu":
        return {}
    options = {}
    if _option_supported("xla_cpu_experimental_ynn_fusion_type", ""):
        options["xla_cpu_experimental_ynn_fusion_type"] = ""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            features = {}
    if features.get("AVX512F"):
        options["xla_cpu_prefer_vector_width"] = 512
    return options


@functools.lru_cache(maxsize=None)
def _option_supported(name: str, value) -> bool:
    """Whether this jaxlib's XLA accepts compiler option `name` (an unknown one fails the
    compile), by compiling a one-element program with it once."""
    try:
        jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(
            jnp.zeros((1,), jnp.float32)).compile()
    except Exception:  # noqa: BLE001 - any refusal means: not supported here
        return False
    return True

