"""Ctrl-C stops every analysis command within 2 s (issue 15 point 2): exit 130, one line, no
traceback, no temporary file, finished analyses intact (the sweep's own test is in
tests/sweep/test_failure_injection.py). Real processes, each interrupted while it compiles its
first long computation."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import xarray as xr

from ufmflow.cli import _runfolder as rf
from ufmflow.cli import dynamics as dyn

from helpers import REPO, python_m_like_a_terminal


def _interrupt(module: str, argv: list[str], ready, cwd) -> tuple[subprocess.Popen, str, float]:
    """Start `python -m module argv`, wait until `ready()`, send SIGINT; return the process,
    its stderr and the seconds from the signal to its exit."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(  # the checkout under test
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.Popen(python_m_like_a_terminal(module, *argv), cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "finished before it could be interrupted"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        return proc, err, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()


def _a_second_after(path):
    """`ready()` for `_interrupt`: true one second after `path` appeared."""

    def ready():
        if not path.exists():
            return False
        time.sleep(1.0)
        return True

    return ready


def _temporary_files(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"]


def test_dynamics_all_stops_within_two_seconds_keeping_finished_analyses(tmp_path):
    out = tmp_path / "all"
    argv = ["all", "quick=1", f"out={out}"]
    jobs = dyn.parse_args(argv)
    done = jobs[0].folder  # a finished first analysis (written here: no compute needed)
    rf.start(done, jobs[0].record)
    rf.finish(done, jobs[0].record, xr.Dataset({"x": ("i", np.arange(3.0))}), "table\n")
    stamps = {p.name: p.stat().st_mtime_ns for p in done.iterdir()}
    # the second analysis has started (and is compiling)
    proc, err, elapsed = _interrupt("ufmflow.dynamics", argv,
                                    _a_second_after(jobs[1].folder / "config.json"), REPO)
    assert proc.returncode == 130, err[-2000:]
    assert elapsed < 2.0, elapsed
    assert "Traceback" not in err and f"interrupted; finished: {done} (rerun" in err
    assert not _temporary_files(out)
    assert {p.name: p.stat().st_mtime_ns for p in done.iterdir()} == stamps  # intact
    jobs = dyn.parse_args(argv)
    assert jobs[0].finished and not any(j.finished for j in jobs[1:])  # a rerun resumes


def test_landscape_stops_within_two_seconds_during_a_compile(tmp_path):
    out = tmp_path / "optima"
    argv = ["optima", "K=5", "depth=8", "num=2048", f"out={out}"]
    # the config is written just before the analysis starts compiling
    proc, err, elapsed = _interrupt("ufmflow.landscape", argv,
                                    _a_second_after(out / "config.json"), REPO)
    assert proc.returncode == 130, err[-2000:]
    assert elapsed < 2.0, elapsed
    assert "Traceback" not in err and "ufmflow.landscape: interrupted" in err
    assert not _temporary_files(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]  # nothing half-written


def test_realnet_stops_within_two_seconds(tmp_path):
    """`python -m ufmflow.realnet` runs under the same handler: interrupted once its run folder
    exists (it is training its first group), it exits 130 within 2 s with no temporary file."""
    out = tmp_path / "rn"
    proc, err, seconds = _interrupt("ufmflow.realnet", ["--quick", f"out={out}"],
                                    _a_second_after(out / "config.json"), tmp_path)
    assert proc.returncode == 130, err
    assert seconds < 2.0, seconds
    assert "interrupted" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert _temporary_files(out) == []
