"""Failure injection on the command line (issue 15, point 6): `kill -9` at random points then
resume -> the uninterrupted Dataset, nothing saved recomputed; Ctrl-C stops within 2 s with
finished parts intact and no temporary files; two processes on one folder -> one refused.
The sweep is test_sweep's tiny one (K=4, width 6, depth 1,2, 3 seeds, t1=100, 8 saves)."""

from __future__ import annotations

import dataclasses
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import xarray as xr

import ufmflow as uf

from helpers import REPO, python_m_like_a_terminal, run_module

# chunk=9: two batches of 9 runs (the depth-1 and the depth-2 runs; depth is a per-run input of
# one program), so a kill can land between the parts; tests/sweep/test_sweep.py's sweep too.
ARGS = ["K=4", "width=6", "depth=1,2", "init_scale=0.1,1,1e200", "seeds=3", "t1=100",
        "num_saves=8", "chunk=9"]
FULL = uf.SweepConfig(K=4, width=6, depth=(1, 2), init_scale=(0.1, 1.0, 1e200), seeds=3,
                      t1=100.0, num_saves=8, chunk=9)
SAME = dict(rtol=1e-12, atol=0.0)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted sweep (in process) and a warm persistent compilation cache."""
    base = tmp_path_factory.mktemp("inject")
    ds = uf.run_sweep(dataclasses.replace(FULL, out=str(base / "ref")), progress=False)
    return dict(ds=ds, base=base, cache=base / "cache")


def _start(out, cache):
    return subprocess.Popen(python_m_like_a_terminal("ufmflow.sweep", *ARGS, f"out={out}",
                                                     f"cache={cache}"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _leftovers(out: Path) -> list[str]:
    return [p.name for p in out.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"]


def _kill_and_resume(reference, out, delay):
    """SIGKILL the CLI `delay` s after it starts, check the folder, resume, compare."""
    proc = _start(out, reference["cache"])
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    parts = sorted((out / "parts").glob("*.nc")) if (out / "parts").exists() else []
    saved = {p.name: p.stat().st_mtime_ns for p in parts}
    res = run_module("ufmflow.sweep", *ARGS, f"out={out}", f"cache={reference['cache']}")
    assert res.returncode == 0, res.stderr[-2000:]
    # Nothing saved was recomputed: the old parts are untouched and the command says so.
    for p in parts:
        assert p.stat().st_mtime_ns == saved[p.name], p
    assert f"computed {2 - len(parts)} batches" in res.stdout
    xr.testing.assert_allclose(uf.load_sweep(out), reference["ds"], **SAME)
    assert not _leftovers(out)
    return len(parts)


@pytest.mark.slow  # 63 s; tests/sweep/test_sweep.py's kill-and-resume runs by default
def test_kill_at_a_random_point_then_resume(reference):
    rng = random.Random(15)
    _kill_and_resume(reference, reference["base"] / "kill0", rng.uniform(2.0, 12.0))


@pytest.mark.slow
def test_kill_at_several_random_points_then_resume(reference):
    rng = random.Random(1515)
    found = [_kill_and_resume(reference, reference["base"] / f"kill{i + 1}",
                              rng.uniform(1.0, 20.0)) for i in range(3)]
    assert all(0 <= n <= 2 for n in found)


def test_ctrl_c_stops_within_two_seconds(reference):
    out = reference["base"] / "sigint"
    proc = _start(out, "none")  # no cache: it compiles for a while (a long batch)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / ".lock").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    elapsed = time.monotonic() - t0
    assert proc.returncode == 130, err[-2000:]
    assert elapsed < 2.0, elapsed
    assert "interrupted; finished parts are kept" in err and "Traceback" not in err
    assert not _leftovers(out)
    for part in (out / "parts").glob("*.nc"):  # finished parts stay intact
        xr.load_dataset(part, engine="h5netcdf")


@pytest.mark.slow  # 28 s; test_trust's lock test (live holder refused) runs by default
def test_two_processes_on_one_folder_one_is_refused(reference):
    out = reference["base"] / "two"
    procs = [_start(out, "none") for _ in range(2)]
    try:
        results = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [e[-1500:] for _, e in results]
    refused = next(e for p, (_, e) in zip(procs, results) if p.returncode == 2)
    winner = next(p for p in procs if p.returncode == 0)
    assert refused.strip().count("\n") == 0 and "key 'out'" in refused
    assert f"in use by process {winner.pid}" in refused
    xr.testing.assert_allclose(uf.load_sweep(out), reference["ds"], **SAME)
    assert not _leftovers(out)
