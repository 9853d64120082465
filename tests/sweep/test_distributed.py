"""The multi-process machinery of sweeps, without starting `jax.distributed` (the two-process
sweep itself runs in test_sweep.py, against the in-process sweep it shares)."""

from __future__ import annotations

import threading
import time

import jax
import pytest

import ufmflow as uf
from ufmflow.sweep import _distributed

_ENV = ("UFMFLOW_COORDINATOR", "UFMFLOW_NUM_PROCESSES", "UFMFLOW_PROCESS_ID",
        "UFMFLOW_DISTRIBUTED", "UFMFLOW_WAIT_TIMEOUT")


@pytest.fixture
def clean_env(monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_units_are_dealt_round_robin():
    assert [_distributed.owner(i, 3) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert {_distributed.owner(i, 1) for i in range(5)} == {0}


def test_one_process_without_the_environment(clean_env):
    assert not _distributed.requested_by_env()
    assert _distributed.process_layout(None, True) == (0, 1)
    assert _distributed.process_layout(False, False) == (0, 1)
    assert _distributed.devices_per_process() == len(jax.devices())


def test_environment_requests(clean_env):
    clean_env.setenv("UFMFLOW_DISTRIBUTED", "1")
    assert _distributed.requested_by_env()
    clean_env.setenv("UFMFLOW_DISTRIBUTED", "0")
    assert not _distributed.requested_by_env()
    clean_env.setenv("UFMFLOW_COORDINATOR", "node0:1234")
    assert _distributed.requested_by_env()


def test_bad_environment_names_the_variable(clean_env):
    clean_env.setenv("UFMFLOW_COORDINATOR", "localhost:1")
    clean_env.setenv("UFMFLOW_NUM_PROCESSES", "two")
    clean_env.setenv("UFMFLOW_PROCESS_ID", "0")
    # Raised while reading the environment, before jax.distributed is touched.
    with pytest.raises(ValueError, match="UFMFLOW_NUM_PROCESSES='two'"):
        uf.initialize_distributed()


def test_wait_timeout_default_and_environment(clean_env):
    assert _distributed.wait_timeout(None) == 3600.0
    assert _distributed.wait_timeout(5) == 5.0
    clean_env.setenv("UFMFLOW_WAIT_TIMEOUT", "12.5")
    assert _distributed.wait_timeout(None) == 12.5


def test_wait_for_parts_returns_when_they_arrive(tmp_path):
    paths = {0: tmp_path / "a.nc", 3: tmp_path / "b.nc"}
    paths[0].write_text("a")
    timer = threading.Timer(0.3, lambda: paths[3].write_text("b"))
    timer.start()
    seen = []
    t0 = time.monotonic()
    got = _distributed.wait_for_parts(paths, lambda i, p: p.read_text(), timeout=30,
                                      owners={0: 0, 3: 1}, on_part=lambda i, _: seen.append(i))
    timer.join()
    assert got == {0: "a", 3: "b"} and seen == [0, 3]
    assert 0.25 < time.monotonic() - t0 < 10


def test_wait_for_parts_times_out_with_the_missing_parts(tmp_path):
    paths = {1: tmp_path / "K4-L2-abc.nc"}
    with pytest.raises(TimeoutError, match=r"K4-L2-abc.nc \(process 1\).*UFMFLOW_WAIT_TIMEOUT"):
        _distributed.wait_for_parts(paths, lambda i, p: None, timeout=0.2, owners={1: 1})
