"""Shared by the test packages (`import helpers`; `tests/` is on pytest's `pythonpath`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, cwd=None, env=None, timeout: float = 300):
    """Run `python -m <module> args...` as a user would, from `cwd` (default the repository),
    and return the `CompletedProcess` with text stdout/stderr."""
    full_env = dict(os.environ)
    # The checkout under test, not whatever copy of ufmflow happens to be installed.
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=full_env, timeout=timeout)


def xla_flags(*extra: str) -> str:
    """The test session's `XLA_FLAGS` (tests/conftest.py sets XLA's optimization level there)
    without any device count, plus `extra`: for subprocesses whose results are compared with
    this process's, so that both compile alike."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join(kept + list(extra))


def jax_cache() -> str:
    """The test session's persistent compilation cache (tests/conftest.py): command lines that
    compile a program another test process compiled before take it from there."""
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


def alpha(depth):
    """The reduced ODE's depth exponent `2L/(L+1)` (theory §4), written out independently of
    `uf.depth_exponent` for the tests that check it."""
    return 2.0 * depth / (depth + 1.0)


# Run as `python -c`: SIGINT unblocked and raising KeyboardInterrupt, then the module as `-m`.
_LIKE_A_TERMINAL = (
    "import runpy, signal, sys; "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "module = sys.argv[1]; del sys.argv[0]; "
    "runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


def python_m_like_a_terminal(module: str, *args: str) -> list[str]:
    """The argv of `python -m module args...` for a child that a test interrupts with SIGINT,
    as Ctrl-C in a terminal would: the child first unblocks SIGINT and installs Python's
    KeyboardInterrupt handler. A child inherits the signal mask and an ignored SIGINT from the
    test process, and earlier tests (libraries they load) may have left SIGINT ignored or
    blocked there; its Python then never raises KeyboardInterrupt. (Done in the child's own
    startup rather than in a `preexec_fn`, which runs Python between fork and exec of a
    multithreaded process and can deadlock there.)"""
    return [sys.executable, "-c", _LIKE_A_TERMINAL, module, *args]
