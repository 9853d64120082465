import pytest

import ufmflow  # noqa: F401  (switches float64 on before any test builds arrays)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: thorough case, run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
