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
