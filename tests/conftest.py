import atexit
import os
import shutil
import tempfile

import pytest

# One persistent JAX compilation cache per test session, empty at its start (unless the caller
# names one): the xdist workers and the command-line subprocesses the tests start share the
# programs they compile instead of each compiling its own (the same sweep program runs in
# several processes). Set before JAX starts; the workers and subprocesses inherit it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="ufmflow-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

# XLA:CPU at optimization level 0 for the test session (the workers and the subprocesses the
# tests start inherit it): the suite's time is mostly XLA compiling small programs, which level 0
# cuts by a third or more, and the tests' runs are short. Measured on a clean clone, 2 cores,
# cold cache: 8 min 42 s against 10 min 57 s at XLA's default level, every test passing at both.
# The numbers are IEEE arithmetic either way (no fast-math); the tests compare computations made
# under the same setting. `UFMFLOW_TEST_XLA_OPT=default` runs the suite at XLA's default level;
# an `XLA_FLAGS` that sets the level wins.
if (os.environ.get("UFMFLOW_TEST_XLA_OPT", "0") != "default"
        and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

import ufmflow  # noqa: E402, F401  (switches float64 on before any test builds arrays)

# in case a plugin imported JAX before this file ran (JAX reads the variable at import)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


# Expensive fixtures (a solve, a sweep) are session-scoped even where one module uses them: under
# xdist a worker tears a module fixture down whenever its next item belongs to another module,
# and rebuilds it (seen: the flow and sweep fixtures built twice in one run, ~35 s).
#
# Modules whose fixtures (a sweep, a compiled solve) are expensive: under
# `--dist loadgroup` (pyproject addopts) each group runs on one xdist worker, so its fixtures are
# built once rather than once per worker. The two sweep modules share compiled programs too.
_XDIST_GROUPS = {
    "test_sweep.py": "sweep", "test_trust.py": "sweep", "test_failure_injection.py": "kill",
    "test_flow.py": "flow", "test_grad.py": "grad", "test_hadamard_many.py": "many",
    "test_landscape.py": "landscape", "test_dynamics_cli.py": "dynamics-cli",
    "test_cli_realnet.py": "realnet", "test_data.py": "realnet", "test_train.py": "realnet",
    "test_examples.py": "examples",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        group = _XDIST_GROUPS.get(item.path.name)
        if group is not None and item.path.parent.name in ("tests", "sweep", "solvers", "theory",
                                                            "cli", "realnet"):
            item.add_marker(pytest.mark.xdist_group(name=group))
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: thorough case, run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
