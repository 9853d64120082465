"""Sweeps: CLI parsing and errors, batched == one by one, 4 devices == 1, kill and resume, the
run folder end to end (issue 3). Sizes are tiny (K=4, width 6, depth 1..2, t1=100) so the file
runs in about a minute on 2 cores; compiled work is shared through module-scoped fixtures."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import ufmflow as uf
from ufmflow.sweep import MODE_TABLE, _execute, _store, plan_units
from ufmflow.cli import sweep as cli
from ufmflow.solvers._devices import device_order

from helpers import REPO, jax_cache, run_module, xla_flags

# The shared tiny full-GF sweep: 2 depth groups x (3 scales x 3 seeds); 9 runs per batch pad to
# 12 on 4 devices, so the multi-device test also exercises the padding. Scale 1e200 overflows
# the logits: those runs fail (status nonfinite) inside the same batches as the good ones.
# chunk=9: the one (K, n, width) program runs as two batches (the depth-1 and the depth-2 runs),
# so resuming, killing and splitting over processes have two parts to work with.
FULL_ARGS = ["K=4", "width=6", "depth=1,2", "init_scale=0.1,1,1e200", "seeds=3", "t1=100",
             "num_saves=8", "chunk=9"]
SCALES = (0.1, 1.0, 1e200)
FULL = uf.SweepConfig(K=4, width=6, depth=(1, 2), init_scale=SCALES, seeds=3, t1=100.0,
                      num_saves=8, chunk=9)
HADAMARD = uf.SweepConfig(mode="hadamard", K=4, depth=(1.0, 1.5, 2.0), init_scale=(0.01, 1.0),
                          seeds=3, t1=1e3, num_saves=6, rtol=1e-6)

# Same machine, same program, same inputs: runs that differ only in batching, device count or
# process give identical numbers; 1e-12 leaves room for reassociation in batched kernels.
SAME = dict(rtol=1e-12, atol=0.0)


def _cli(args, *, env_extra=None, cwd=None):
    return run_module("ufmflow.sweep", *args, env=env_extra, cwd=cwd)


# ------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------


def test_parse_integer_ranges_and_lists():
    assert cli.parse_values("depth", "2..8", real=False) == tuple(range(2, 9))
    assert cli.parse_values("depth", "1,2,4", real=False) == (1, 2, 4)
    assert cli.parse_values("depth", "1..3,8", real=False) == (1, 2, 3, 8)
    assert cli.parse_values("width", "16", real=False) == (16,)
    assert cli.parse_values("depth", "1,1.5,2", real=True) == (1.0, 1.5, 2.0)


def test_parse_geometric_range():
    values = cli.parse_values("init_scale", "1e-3:1e0:7", real=True)
    np.testing.assert_allclose(values, 10.0 ** np.linspace(-3, 0, 7), rtol=1e-14)
    assert cli.parse_values("init_scale", "0.5:0.5:1", real=True) == (0.5,)


def test_parse_args_builds_config():
    config, cache = cli.parse_args(["depth=2..4", "init_scale=1e-2:1:3", "seeds=4", "K=8",
                                    "dtype=float32", "out=somewhere"])
    assert config.depth == (2, 3, 4) and config.seeds == (0, 1, 2, 3) and config.K == (8,)
    np.testing.assert_allclose(config.init_scale, [1e-2, 1e-1, 1.0], rtol=1e-14)
    assert config.dtype == "float32" and config.run_dir() == Path("somewhere")
    assert cache == "auto"
    assert cli.parse_args(["seeds=3..5"])[0].seeds == (3, 4, 5)
    assert cli.parse_args(["seeds=0,7"])[0].seeds == (0, 7)
    had, _ = cli.parse_args(["mode=hadamard", "depth=1,1.5", "K=4,16", "atol=auto"])
    assert had.depth == (1.0, 1.5) and had.K == (4, 16) and had.atol is None
    # time_change=auto: the log variables for hadamard with Tsit5, "bounded" for the full GF,
    # "relative" otherwise.
    assert had.time_change == "log" and uf.SweepConfig().time_change == "bounded"
    assert uf.SweepConfig(mode="gd").time_change == "relative"
    with pytest.raises(uf.SweepInputError, match="time_change"):
        uf.SweepConfig(mode="hadamard", time_change="bounded")
    assert cli.parse_args(["mode=hadamard", "solver=kvaerno5"])[0].time_change == "relative"
    assert cli.parse_args(["mode=hadamard", "time_change=relative"])[0].time_change == "relative"
    assert cli.parse_args([])[0] == uf.SweepConfig()


def test_default_run_folder_is_keyed_by_config():
    a, b = uf.SweepConfig(), uf.SweepConfig(depth=(2, 3))
    assert a.run_dir() == Path("runs") / f"full-{a.short_hash()}"
    assert a.short_hash() != b.short_hash()
    assert a.short_hash() == uf.SweepConfig(out="elsewhere").short_hash()


def test_run_folder_names_are_stable():
    """The hash covers exactly the settings that enter a mode (its `MODE_TABLE` keys); pinned so
    that a refactor cannot silently orphan existing run folders and their parts."""
    # Session 15 moved the full GF's defaults (width 32, init scale 0.3, t1 1e8, 20,000 steps):
    # a new default folder; the earlier defaults, named, keep theirs (nothing orphaned).
    assert uf.SweepConfig().short_hash() == "f5e1db42af"
    earlier = uf.SweepConfig(width=16, init_scale=0.75, t1=1e5, max_steps=4096)
    assert earlier.short_hash() == "1640df16f1"
    assert uf.SweepConfig(mode="gd", t1=2.0).short_hash() == "bf66612f74"
    had = uf.SweepConfig(mode="hadamard", K=(4, 64), depth=(1.0, 2.5))
    assert had.short_hash() == "262057f63f"
    # Keys of other modes do not enter: gd's lr does not rename a full sweep's folder.
    assert uf.SweepConfig(lr=0.5).short_hash() == uf.SweepConfig().short_hash()
    assert set(uf.SweepConfig(mode="hadamard").results_dict()) == MODE_TABLE["hadamard"].keys


@pytest.mark.parametrize(
    "args, key, token, words",
    [
        (["dpeth=2..8"], "dpeth", "dpeth=2..8", ["did you mean 'depth'"]),
        (["depth=2..x"], "depth", "2..x", ["not a number"]),
        (["depth=5..2"], "depth", "5..2", ["empty range"]),
        (["init_scale=1e-3:1:0"], "init_scale", "1e-3:1:0", ["empty range"]),
        (["depth=1.5"], "depth", "1.5", ["not an integer"]),
        (["depth=1:4:3"], "depth", "1:4:3", ["geometric"]),
        (["mode=hadamard", "K=6"], "K", "6", ["power of two"]),
        (["depth"], "depth", "depth", ["key=value"]),
        (["K=4", "K=8"], "K", "K=8", ["twice"]),
        (["init_scale=-1"], "init_scale", "-1", ["> 0"]),
        (["dtype=float16"], "dtype", "float16", ["float64"]),
        (["time_change=log"], "time_change", "log", ["mode=hadamard"]),
        (["mode=hadamard", "solver=kvaerno5", "time_change=log"], "time_change", "log",
         ["tsit5"]),
        (["mode=hadamard", "width=4"], "width", "width=4", ["does not apply"]),
        (["seeds=0"], "seeds", "0", [">= 1"]),
        (["depth=1,,2"], "depth", "1,,2", ["empty item"]),
        (["depth=2,2"], "depth", "2,2", ["duplicate"]),
        (["--verbose"], "--verbose", "--verbose", ["--help"]),
    ],
)
def test_bad_input_exits_2_with_one_line(args, key, token, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main([*args, f"out={tmp_path / 'run'}"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert f"key '{key}'" in lines[0] and f"token '{token}'" in lines[0]
    for w in words:
        assert w in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    res = _cli(["K=6", "mode=hadamard"], cwd=tmp_path)
    assert res.returncode == 2
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and "key 'K'" in res.stderr and "token '6'" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_documents_every_key_with_its_default(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    defaults = uf.SweepConfig()
    for key in [f.name for f in dataclasses.fields(uf.SweepConfig)] + ["cache"]:
        assert f"\n  {key}=" in text, key
    assert "\n  depth=1..8\n" in text and "\n  seeds=5\n" in text
    assert f"\n  width={defaults.width[0]}\n" in text
    assert f"\n  init_scale={defaults.init_scale[0]:g}\n" in text
    assert "1e-3:1e0:7" in text and "2..8" in text


# ------------------------------------------------------------------------------------------
# The engine: batched == one by one
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """The tiny sweep, in process, uninterrupted, written to a run folder."""
    out = tmp_path_factory.mktemp("full") / "run"
    config = dataclasses.replace(FULL, out=str(out))
    # Another test in this process may have compiled the same groups already (the trust and
    # failure-injection tests run this sweep too): count from an empty cache.
    _execute._compile_cached.cache_clear()
    misses = _execute._compile_cached.cache_info().misses
    stats = {}
    ds = uf.run_sweep(config, progress=False, stats=stats)
    compiles = _execute._compile_cached.cache_info().misses - misses
    return dict(ds=ds, config=config, out=out, stats=stats, compiles=compiles)


def test_one_compile_per_group(full_run):
    """Depth is a per-run input (frozen identity layers, theory §2.4): one (K, n, width) group,
    one compile, for both depths (here in two batches of 9 runs)."""
    units = plan_units(FULL)
    assert len(units) == 2 and len({u.static for u in units}) == 1
    assert [sorted({r[3] for r in u.runs}) for u in units] == [[1], [2]]
    assert full_run["compiles"] == 1
    assert full_run["stats"]["resumed"] == 0 and len(full_run["stats"]["run_s"]) == 2
    assert full_run["stats"]["num_processes"] == 1 and full_run["stats"]["computed"] == [0, 1]
    assert [u.solver for u in units] == ["tsit5", "tsit5"]  # solver=auto when every depth <= 4


def test_dataset_layout(full_run):
    ds = full_run["ds"]
    assert ds["singular_values"].dims == ("K", "per_class", "width", "depth", "init_scale",
                                          "seed", "time", "sv")
    assert ds.sizes["depth"] == 2 and ds.sizes["seed"] == 3 and ds.sizes["time"] == 8
    assert list(ds["depth"].values) == [1, 2] and list(ds["seed"].values) == [0, 1, 2]
    np.testing.assert_allclose(ds["time"], uf.default_save_times(100.0, 8), rtol=1e-15)
    assert ds["status"].dtype.kind == "i"
    assert np.all(ds["status"].sel(init_scale=[0.1, 1.0]) == 0)
    for name in ("effective_rank", "nc1", "nc2", "nc3", "normalized_margin", "loss_t",
                 "num_rescues"):
        assert name in ds and ds[name].attrs["description"]
    assert json.loads(ds.attrs["config"])["depth"] == [1, 2]


def test_batched_sweep_equals_direct_solve_flow(full_run):
    ds = full_run["ds"].squeeze(["K", "per_class", "width"])
    for depth in (1, 2):
        for scale in SCALES:
            for seed in range(3):
                model = uf.gaussian_init(jax.random.PRNGKey(seed), 4, 1, 6, depth, scale)
                # solver=auto takes Tsit5 at depth <= 4; atol=None is solve_flow's default.
                sol = uf.solve_flow(model, 100.0, num_saves=8, rtol=FULL.rtol,
                                    solver=diffrax.Tsit5())
                run = ds.sel(depth=depth, init_scale=scale, seed=seed)
                assert int(run["status"]) == int(sol.status) == (2 if scale > 1e100 else 0)
                assert int(run["num_steps"]) == int(sol.num_steps)
                # the overflowing run is sent back by the stall rescue once per factor
                assert int(run["num_rescues"]) == int(sol.num_rescues) == (3 if scale > 1e100
                                                                           else 0)
                if scale > 1e100:
                    continue  # nonfinite: its saves are nan, checked in the failure test
                tol = dict(rtol=1e-6, atol=1e-12)  # batched vs unbatched kernels: rounding only
                np.testing.assert_allclose(run["singular_values"], sol.singular_values, **tol)
                np.testing.assert_allclose(run["log_loss_t"], sol.log_loss, **tol)
                np.testing.assert_allclose(run["param_norm_t"], sol.param_norm, **tol)
                metrics = uf.nc_metrics(sol.model)
                np.testing.assert_allclose(
                    run["effective_rank"], uf.effective_rank(sol.model.class_mean_logits()),
                    **tol)
                for name in ("nc2", "nc3", "normalized_margin", "min_margin"):
                    np.testing.assert_allclose(run[name], metrics[name], **tol)


def test_summary_matches_dataset(full_run):
    ds, out = full_run["ds"], full_run["out"]
    table = uf.sweep_summary(ds)
    assert len(table) == 6  # depth x init_scale
    row = table[(table["depth"] == 2) & (table["init_scale"] == 1.0)].iloc[0]
    er = ds["effective_rank"].sel(depth=2, init_scale=1.0).values.ravel()
    assert row["runs"] == 3 and row["failed"] == 0
    np.testing.assert_allclose(row["effective_rank_mean"], er.mean(), rtol=1e-12)
    np.testing.assert_allclose(row["effective_rank_std"], er.std(), rtol=1e-12)
    assert (out / "summary.txt").read_text() == uf.sweep_summary_text(ds)
    csv = (out / "summary.csv").read_text().splitlines()
    assert len(csv) == 7 and "effective_rank_mean" in csv[0] and "failed" in csv[0]


def test_rerun_resumes_every_batch_in_process(full_run):
    stats = {}
    again = uf.run_sweep(full_run["config"], progress=False, stats=stats)
    assert stats["resumed"] == 2 and stats["run_s"] == []
    xr.testing.assert_identical(again, full_run["ds"])


def test_missing_part_is_recomputed_alone(full_run, tmp_path):
    out = tmp_path / "copy"
    config = dataclasses.replace(FULL, out=str(out))
    parts = sorted((full_run["out"] / "parts").glob("*.nc"))
    (out / "parts").mkdir(parents=True)
    (out / "parts" / parts[1].name).write_bytes(parts[1].read_bytes())
    stats = {}
    ds = uf.run_sweep(config, progress=False, stats=stats)
    assert stats["resumed"] == 1 and len(stats["run_s"]) == 1
    xr.testing.assert_allclose(ds, full_run["ds"], **SAME)


def test_failed_runs_are_recorded_and_the_sweep_goes_on(full_run):
    ds = full_run["ds"]
    bad = ds.sel(init_scale=1e200)
    assert np.all(bad["status"] == 2) and uf.STATUS_NAMES[2] == "nonfinite"
    assert "2 nonfinite" in ds.attrs["status_names"]
    assert np.all(np.isnan(bad["singular_values"].isel(time=-1)))
    good = ds.sel(init_scale=[0.1, 1.0])
    assert np.all(good["status"] == 0) and np.all(np.isfinite(good["effective_rank"]))
    table = uf.sweep_summary(ds)
    failed = table.set_index(["depth", "init_scale"])["failed"]
    assert failed[(1, 1e200)] == failed[(2, 1e200)] == 3 and failed[(2, 1.0)] == 0
    assert table[table["init_scale"] == 1e200]["effective_rank_mean"].isna().all()
    assert (full_run["out"] / "results.nc").exists()


def test_chunks_split_big_groups_evenly():
    config = dataclasses.replace(FULL, chunk=4)
    units = plan_units(config)
    assert [len(u.runs) for u in units] == [4, 4, 4, 3, 3]  # 18 runs in one group: 5 chunks
    assert len({u.key for u in units}) == 5
    runs = [r for u in units for r in u.runs]
    assert len(set(runs)) == FULL.num_runs == 18


# ------------------------------------------------------------------------------------------
# Devices, kill and resume, the CLI end to end (subprocesses)
# ------------------------------------------------------------------------------------------


@pytest.mark.slow  # 24 s; the three-device hadamard sweep and the two-process sweep run by default
def test_four_host_devices_equal_one(full_run, tmp_path):
    res = _cli([*FULL_ARGS, f"out={tmp_path / 'dev4'}", f"cache={jax_cache()}"],
               env_extra={"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4")})
    assert res.returncode == 0, res.stderr
    assert "on 4 cpu device(s)" in res.stdout
    ds4 = uf.load_sweep(tmp_path / "dev4")
    assert ds4.attrs["num_devices"] == 4 and full_run["ds"].attrs["num_devices"] == 1
    xr.testing.assert_allclose(ds4, full_run["ds"], **SAME)


@pytest.fixture(scope="session")
def killed_and_resumed(tmp_path_factory):
    """Run the CLI, SIGKILL it as soon as the first batch's part file appears, rerun it."""
    base = tmp_path_factory.mktemp("kill")
    out = base / "run"
    args = [*FULL_ARGS, f"out={out}", f"cache={jax_cache()}"]
    proc = subprocess.Popen([sys.executable, "-m", "ufmflow.sweep", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    parts: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list((out / "parts").glob("*.nc")) if (out / "parts").exists() else []
        if parts:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(parts) == 1, "the sweep ended before it could be killed mid-way"
    killed_with = sorted(p.name for p in (out / "parts").glob("*.nc"))
    first = parts[0]
    before = first.stat().st_mtime_ns
    assert not (out / "results.nc").exists()
    res = _cli(args)
    return dict(out=out, res=res, killed_with=killed_with, first=first, before=before)


def test_kill_and_resume_equals_uninterrupted(killed_and_resumed, full_run):
    k = killed_and_resumed
    assert k["res"].returncode == 0, k["res"].stderr
    assert len(k["killed_with"]) == 1
    assert "resumed 1 of 2 batches" in k["res"].stdout
    assert k["first"].stat().st_mtime_ns == k["before"]  # the finished part was not redone
    xr.testing.assert_allclose(uf.load_sweep(k["out"]), full_run["ds"], **SAME)


def test_cli_end_to_end_writes_the_run_folder(killed_and_resumed):
    out, res = killed_and_resumed["out"], killed_and_resumed["res"]
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "results.nc", "summary.txt", "summary.csv", "parts",
            "effective_rank_vs_depth.png", "singular_values.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert len(list((out / "parts").glob("*.nc"))) == 2
    for png in ("effective_rank_vs_depth.png", "singular_values.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    summary = (out / "summary.txt").read_text()
    assert summary in res.stdout  # printed too
    assert summary.splitlines()[1].split()[:2] == ["depth", "init_scale"]
    saved = json.loads((out / "config.json").read_text())
    assert uf.SweepConfig(**saved) == dataclasses.replace(FULL, out=str(out))
    ds = uf.load_sweep(out / "results.nc")
    assert ds.attrs["mode"] == "full" and ds.sizes["seed"] == 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


# The two-process sweep: gradient descent, whose programs compile in a few seconds (the split
# of units over processes does not depend on the mode); one program and one unit per depth.
GD_ARGS = ["mode=gd", "K=4", "width=6", "depth=1,2", "init_scale=0.5,1", "seeds=2", "t1=2",
           "lr=0.1", "num_saves=5"]
GD = uf.SweepConfig(mode="gd", K=4, width=6, depth=(1, 2), init_scale=(0.5, 1.0), seeds=2,
                    t1=2.0, lr=0.1, num_saves=5)


@pytest.fixture(scope="session")
def gd_run(tmp_path_factory):
    """The tiny gradient-descent sweep, in process."""
    out = tmp_path_factory.mktemp("gd") / "run"
    return uf.run_sweep(dataclasses.replace(GD, out=str(out)), progress=False)


@pytest.fixture(scope="session")
def two_processes(tmp_path_factory):
    """The tiny gradient-descent sweep as two local CPU processes under `jax.distributed`,
    started from the environment by `python -m ufmflow.sweep` (each initializes
    `localhost:<port>`, 2, i)."""
    out = tmp_path_factory.mktemp("dist") / "run"
    env = dict(os.environ, XLA_FLAGS=xla_flags())  # one device each
    env.update(UFMFLOW_COORDINATOR=f"localhost:{_free_port()}", UFMFLOW_NUM_PROCESSES="2")
    procs = [subprocess.Popen([sys.executable, "-m", "ufmflow.sweep", *GD_ARGS, f"out={out}",
                               f"cache={jax_cache()}"], cwd=REPO,
                              env=dict(env, UFMFLOW_PROCESS_ID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return dict(out=out, codes=[p.returncode for p in procs], results=results)


def test_two_processes_split_the_batches_and_equal_one(two_processes, gd_run):
    out, results = two_processes["out"], two_processes["results"]
    assert two_processes["codes"] == [0, 0], [err[-2000:] for _, err in results]
    # Unit i ran on process i mod 2: one part each, in the one run folder.
    parts = sorted((out / "parts").glob("*.nc"))
    assert len(parts) == 2
    owners = [xr.load_dataset(p, engine="h5netcdf").attrs for p in parts]
    assert sorted(a["process_index"] for a in owners) == [0, 1]
    assert all(a["num_processes"] == 2 for a in owners)
    ds = uf.load_sweep(out)
    assert ds.attrs["num_processes"] == 2 and ds.attrs["num_devices"] == 2
    xr.testing.assert_allclose(ds, gd_run, **SAME)
    # Every process returns the assembled sweep (and the command prints its summary);
    # process 0 wrote the run folder's results.
    for stdout, _ in results:
        assert (out / "summary.txt").read_text() in stdout
    assert (out / "singular_values.png").exists()
    assert not list(out.rglob(".*.tmp"))


# ------------------------------------------------------------------------------------------
# Hadamard and gradient-descent modes
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hadamard_run(tmp_path_factory):
    config = dataclasses.replace(HADAMARD, out=str(tmp_path_factory.mktemp("had") / "r"))
    misses = _execute._compile_cached.cache_info().misses
    ds = uf.run_sweep(config, progress=False)
    return ds, _execute._compile_cached.cache_info().misses - misses


def test_hadamard_sweep_is_one_compile_per_K(hadamard_run):
    ds, compiles = hadamard_run
    assert compiles == 1 and len(plan_units(HADAMARD)) == 1
    assert ds["singular_values"].dims == ("K", "depth", "init_scale", "seed", "time", "sv")
    assert list(ds["depth"].values) == [1.0, 1.5, 2.0]


def test_hadamard_sweep_equals_direct_solve_hadamard(hadamard_run):
    ds = hadamard_run[0].squeeze("K")
    for seed in range(3):
        # direction="uniform" (the default, the paper's): g[0] = 0, g[1:] i.i.d. U[0, 1].
        g = np.zeros(4)
        g[1:] = np.asarray(jax.random.uniform(jax.random.PRNGKey(seed), (3,), jnp.float64))
        for scale in (0.01, 1.0):
            s0 = scale * g / np.linalg.norm(g[1:])
            run0 = ds.sel(init_scale=scale, seed=seed, depth=1.0)
            np.testing.assert_allclose(run0["singular_values"][0], s0, rtol=1e-14)
            for depth in (1.0, 1.5, 2.0):
                # The sweep's method (`solve_hadamard_many`, time_change="log"), one run at a
                # time: the same steps, so agreement to rounding.
                sol = uf.solve_hadamard_many(s0[None], depth, 1e3, num_saves=6, rtol=1e-6,
                                             time_change="log")
                run = ds.sel(init_scale=scale, seed=seed, depth=depth)
                assert int(run["status"]) == int(sol.status[0]) == 0
                tol = dict(rtol=1e-9, atol=1e-14)
                np.testing.assert_allclose(run["singular_values"], sol.s[0], **tol)
                np.testing.assert_allclose(
                    run["effective_rank"],
                    uf.effective_rank_from_singular_values(sol.s_final[0]), **tol)
                np.testing.assert_allclose(run["kl_to_nc"], uf.kl_to_nc(sol.s_final[0]), **tol)
                # An independent method (diffrax's Tsit5 in `s`, "relative" time change, at a
                # tighter rtol): agreement to the sweep's tolerance.
                ref = uf.solve_hadamard(s0, depth, 1e3, num_saves=6, rtol=1e-10)
                # seen: 3.6e-6
                np.testing.assert_allclose(run["singular_values"], ref.s, rtol=1e-5, atol=1e-12)


def test_hadamard_sweep_on_three_host_devices_equals_one(hadamard_run, tmp_path):
    """18 runs on 3 devices: 6 per device, so each device's `solve_hadamard_many` batch has a
    different size from the 1-device run's (rounding only, see `SAME`)."""
    res = _cli(["mode=hadamard", "K=4", "depth=1,1.5,2", "init_scale=0.01,1", "seeds=3",
                "t1=1e3", "num_saves=6", "rtol=1e-6", f"out={tmp_path / 'dev3'}",
                f"cache={jax_cache()}"],
               env_extra={"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=3")})
    assert res.returncode == 0, res.stderr
    ds3 = uf.load_sweep(tmp_path / "dev3")
    assert ds3.attrs["num_devices"] == 3
    xr.testing.assert_allclose(ds3, hadamard_run[0], **SAME)


def test_hadamard_rejects_non_power_of_two():
    with pytest.raises(uf.SweepInputError, match="power of two"):
        uf.SweepConfig(mode="hadamard", K=(4, 12))


@pytest.mark.skipif(not hasattr(uf, "descend"), reason="uf.descend (mode=gd) not available yet")
def test_gd_sweep_equals_direct_descend(gd_run):
    ds = gd_run.sel(init_scale=0.5).squeeze(["K", "per_class", "width"])
    for depth in (2,):
        for seed in range(2):
            model = uf.gaussian_init(jax.random.PRNGKey(seed), 4, 1, 6, depth, 0.5)
            sol = uf.descend(model, 0.1, 20, num_saves=5)
            run = ds.sel(depth=depth, seed=seed)
            np.testing.assert_allclose(ds["time"], sol.ts, rtol=1e-14)
            np.testing.assert_allclose(run["singular_values"], sol.singular_values, rtol=1e-9)
            np.testing.assert_allclose(run["loss_t"], sol.loss, rtol=1e-9)
            assert int(run["status"]) == int(sol.status) == 0


@pytest.mark.slow
def test_rosenbrock_and_float32_batches_equal_direct(tmp_path):
    config = uf.SweepConfig(K=4, width=6, depth=1, init_scale=(0.1, 1.0), seeds=2, t1=100.0,
                            num_saves=8, solver="rosenbrock", dtype="float32",
                            out=str(tmp_path / "ros"))
    ds = uf.run_sweep(config, progress=False).squeeze(["K", "per_class", "width", "depth"])
    assert ds["status"].values.tolist() == [[0, 0], [0, 0]]
    for scale in (0.1, 1.0):
        for seed in range(2):
            # drawn in float32, as the sweep draws it (a float64 draw cast down is another init)
            model = uf.gaussian_init(jax.random.PRNGKey(seed), 4, 1, 6, 1, scale,
                                     dtype=jnp.float32)
            sol = uf.solve_flow(model, 100.0, num_saves=8, rtol=1e-5)
            run = ds.sel(init_scale=scale, seed=seed)
            # float32: batched and unbatched kernels round differently (eps ~ 1e-7).
            np.testing.assert_allclose(run["singular_values"], sol.singular_values, rtol=2e-4)


def test_kvaerno5_sweeps_equal_direct_calls(tmp_path):
    """`solver=kvaerno5` sweeps (diffrax's implicit solver cannot trace under `shard_map`, so
    its batches run as one plain program) against the same solver called directly."""
    had = uf.run_sweep(uf.SweepConfig(mode="hadamard", K=4, depth=(1.5, 2.0), init_scale=0.5,
                                      seeds=2, t1=100.0, num_saves=6, solver="kvaerno5",
                                      time_change="relative", rtol=1e-6,
                                      out=str(tmp_path / "had")), progress=False)
    full = uf.run_sweep(uf.SweepConfig(K=4, width=6, depth=2, init_scale=0.5, seeds=2,
                                       t1=100.0, num_saves=6, solver="kvaerno5", rtol=1e-6,
                                       out=str(tmp_path / "full")), progress=False)
    had = had.squeeze(["K", "init_scale"])
    full = full.squeeze(["K", "per_class", "width", "depth", "init_scale"])
    for seed in range(2):
        s0 = uf.hadamard_initial_direction(jax.random.PRNGKey(seed), 4, 0.5)
        for depth in (1.5, 2.0):
            ref = uf.solve_hadamard(s0, depth, 100.0, num_saves=6, solver="kvaerno5",
                                    time_change="relative", rtol=1e-6)
            run = had.sel(seed=seed, depth=depth)
            assert int(run["status"]) == int(ref.status) == 0
            np.testing.assert_allclose(run["singular_values"], ref.s, rtol=1e-9, atol=1e-14)
        model = uf.gaussian_init(jax.random.PRNGKey(seed), 4, 1, 6, 2, 0.5)
        ref = uf.solve_flow(model, 100.0, num_saves=6, rtol=1e-6, solver="kvaerno5")
        run = full.sel(seed=seed)
        assert int(run["status"]) == int(ref.status) == 0
        np.testing.assert_allclose(run["singular_values"], ref.singular_values, rtol=1e-9,
                                   atol=1e-14)


@pytest.mark.slow
def test_rosenbrock_on_two_host_devices_equals_one(tmp_path):
    # Several CPU devices run LU-based solvers one run at a time (jaxlib's batched LU deadlocks
    # there); the numbers then agree with the vmapped 1-device run to rounding, not bit for bit.
    args = ["K=4", "width=6", "depth=1", "init_scale=0.1,1", "seeds=2", "t1=100", "num_saves=8",
            "solver=rosenbrock"]
    res = _cli([*args, f"out={tmp_path / 'two'}", f"cache={jax_cache()}"],
               env_extra={"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=2")})
    assert res.returncode == 0, res.stderr
    config, _ = cli.parse_args([*args, f"out={tmp_path / 'one'}"])
    one = uf.run_sweep(config, progress=False)
    two = uf.load_sweep(tmp_path / "two")
    assert two.attrs["num_devices"] == 2 and np.all(two["status"] == 0)
    np.testing.assert_array_equal(two["num_steps"], one["num_steps"])
    for name in ("singular_values", "effective_rank", "nc2", "log_loss_t"):
        np.testing.assert_allclose(two[name], one[name], rtol=1e-8, atol=1e-14)


def test_device_order_deals_runs_round_robin():
    """Each device's contiguous block of the sharded batch holds runs d, d + n, d + 2n, ...
    (a depth-major grid then gives every device the same mix of depths)."""
    order = device_order(12, 3)
    assert sorted(order.tolist()) == list(range(12))
    assert [order[4 * d : 4 * d + 4].tolist() for d in range(3)] == [
        [0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    assert device_order(5, 1).tolist() == [0, 1, 2, 3, 4]


def test_padding_repeats_the_shallowest_run(monkeypatch):
    """A batch padded to the device count repeats its shallowest run, not its last (deepest):
    on a CPU each device runs its runs one after another, so a padded copy of the deepest run
    would lengthen one device's share (its results are dropped either way)."""
    monkeypatch.setattr(_execute, "local_devices", lambda: ["cpu0", "cpu1"])
    config = uf.SweepConfig(mode="full", depth=(5, 2, 8), seeds=(3,), init_scale=(0.4,))
    dims = config.dims
    unit = plan_units(config)[0]
    depths = [run[dims.index("depth")] for run in unit.runs]
    assert len(unit.runs) == 3 and depths[-1] == max(depths)
    inputs = dict(zip(MODE_TABLE["full"].traced, _execute._unit_inputs(config, unit)))
    assert len(inputs["depth"]) == 4
    for i, run in enumerate(unit.runs):
        assert all(inputs[d][i] == run[dims.index(d)] for d in inputs)
    shallowest = unit.runs[depths.index(min(depths))]
    assert all(inputs[d][3] == shallowest[dims.index(d)] for d in inputs)


def _fake_part(config, unit, rng):
    """A part with known values: every output a function of the run's grid coordinates, rows in
    a random order (as the devices return them)."""
    coords = np.asarray(unit.runs, np.float64)  # (n, len(dims))
    code = coords @ (10.0 ** np.arange(coords.shape[1]))  # distinct per run
    n, k, s = len(unit.runs), unit.static[0], config.num_saves
    out = {
        "ts": np.tile(np.linspace(0.0, 1.0, s), (n, 1)),
        "singular_values": code[:, None, None] + np.arange(s)[:, None] / 10 + np.arange(k) / 1e3,
        "loss_t": code[:, None] + np.arange(s) / 10,
        "effective_rank": code.copy(),
        "status": (np.arange(n) % 3).astype(np.int32),
    }
    perm = rng.permutation(n)
    return _store._part_dataset(config, unit, {key: v[perm] for key, v in out.items()}, perm), out


def test_assemble_places_every_run_by_its_coordinates():
    """`_assemble` against a placement computed cell by cell: mixed K (the `sv` entries beyond a
    run's K are nan), rows in device order, and a missing part (nan / -1 there)."""
    config = uf.SweepConfig(mode="hadamard", K=(4, 8), depth=(1.0, 2.0, 3.0), init_scale=0.1,
                            seeds=3, t1=10.0, num_saves=4)
    units = plan_units(config)
    assert len(units) == 2 and {u.static[0] for u in units} == {4, 8}
    rng = np.random.default_rng(0)
    made = [_fake_part(config, u, rng) for u in units]
    dims = config.dims
    for keep in (slice(None), slice(1, None)):  # all parts; the first missing
        ds = _store._assemble(config, [p for p, _ in made[keep]])
        assert ds["singular_values"].dims == dims + ("time", "sv")
        assert ds.sizes["sv"] == 8 and ds["status"].dtype == np.int64
        placed = 0
        for i, (unit, (_, out)) in enumerate(zip(units, made)):
            present = i >= (keep.start or 0)
            for r, run in enumerate(unit.runs):
                cell = ds.sel(dict(zip(dims, run)))
                k = unit.static[0]
                sv = cell["singular_values"].values
                if present:
                    np.testing.assert_array_equal(sv[:, :k], out["singular_values"][r])
                    assert np.all(np.isnan(sv[:, k:]))
                    np.testing.assert_array_equal(cell["loss_t"], out["loss_t"][r])
                    assert cell["effective_rank"] == out["effective_rank"][r]
                    assert cell["status"] == out["status"][r]
                    placed += 1
                else:
                    assert np.all(np.isnan(sv)) and np.isnan(cell["effective_rank"])
                    assert cell["status"] == -1
        assert placed == sum(len(u.runs) for u in units[keep])


def test_defaults_are_per_mode():
    """`width`, `init_scale`, `t1`, `max_steps` left unset take the mode's defaults (the full
    GF's Fig. 2 regime; gd and hadamard keep 16, 0.75, 1e5, 4096); set values win in any mode."""
    full, gd, had = (uf.SweepConfig(mode=m) for m in ("full", "gd", "hadamard"))
    assert (full.width, full.init_scale, full.t1, full.max_steps) == ((32,), (0.3,), 1e8, 20_000)
    assert (gd.width, gd.init_scale, gd.t1) == ((16,), (0.75,), 1e5)
    assert (had.init_scale, had.t1, had.max_steps) == ((0.75,), 1e5, 4096)
    set_ = uf.SweepConfig(mode="gd", width=8, init_scale=0.1, t1=3.0)
    assert (set_.width, set_.init_scale, set_.t1) == ((8,), (0.1,), 3.0)
    assert cli.parse_args(["width=24", "t1=1e3"])[0].width == (24,)


def test_default_full_sweep_reaches_t1_and_rank_falls_with_depth(tmp_path):
    """The default sweep's regime (small init, width 4K, t1 = 1e8) on a seed the other tests
    don't use: its shallowest and deepest depths end ok at t1, and depth lowers the effective
    rank (measured over seeds 0-24: depth 2 between 3.3 and 4.9, depth 8 at most 1.01)."""
    config = uf.SweepConfig(depth=(2, 8), seeds=(11,), out=str(tmp_path / "run"))
    ds = uf.run_sweep(config, progress=False).squeeze(["K", "per_class", "width", "init_scale",
                                                       "seed"])
    assert (ds["status"].values == 0).all(), ds["status"].values
    assert float(ds["time"][-1]) == 1e8
    erank = ds["effective_rank"]
    assert float(erank.sel(depth=8)) < float(erank.sel(depth=2)) - 1.0, erank.values
