import pytest

import ufmflow  # noqa: F401  (switches float64 on before any test builds arrays)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


# Modules whose module-scoped fixtures (a sweep, a compiled solve) are expensive: under
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
