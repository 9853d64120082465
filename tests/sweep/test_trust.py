"""Issue 15 for the sweep: the resource guard's refusals (exit 2, one line, nothing written),
failed runs masked everywhere (`ok_runs`, summaries, plot labels), run folders you can trust
(checksums, ranges, lock, config check, overwrite) and provenance. The tiny sweep is
test_sweep's (`FULL`): in one pytest process its two programs compile once for both files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr

import ufmflow as uf
from ufmflow.cli import sweep as cli
from ufmflow.sweep import _guard, _trust, plan_units

# chunk=9: two batches (depth 1, depth 2) of the one (K, n, width) program, two parts
FULL = uf.SweepConfig(K=4, width=6, depth=(1, 2), init_scale=(0.1, 1.0, 1e200), seeds=3,
                      t1=100.0, num_saves=8, chunk=9)
SAME = dict(rtol=1e-12, atol=0.0)


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("trust") / "run"
    config = dataclasses.replace(FULL, out=str(out))
    ds = uf.run_sweep(config, progress=False)
    return dict(ds=ds, out=out, config=config)


def _copy(base, tmp_path, name="copy"):
    out = tmp_path / name
    shutil.copytree(base["out"], out)
    return out, dataclasses.replace(FULL, out=str(out))


# ------------------------------------------------------------------------------------------
# The resource guard and other refusals: exit 2, one line, the key named, nothing written
# ------------------------------------------------------------------------------------------

BAD = [
    (["seeds=1e9"], "seeds", "at most 16777216"),
    (["seeds=0..999999999"], "seeds", "at most 16777216"),
    (["K=100000"], "memory", "limit is"),
    (["K=4096", "seeds=1000", "max_memory_gb=100"], "memory", "largest batch"),
    (["num_saves=1e8"], "memory", "limit is"),
    (["depth=1000"], "depth", "allow_big=1"),
    (["depth=1000", "width=1000"], "depth", "allow_big=1"),
    (["mode=gd", "lr=1e-9"], "work", "1e+14 epochs"),
    (["mode=gd", "t1=1e9", "lr=1e-3"], "work", "epochs"),
    (["max_steps=1e9", "seeds=1000", "depth=8"], "work", "max_steps"),
    (["solver=kvaerno5", "depth=8", "width=2000"], "memory", "largest batch"),
    (["mode=hadamard", "K=65536", "seeds=100000"], "memory", "limit is"),
    (["mode=hadamard", "K=1024", "seeds=1e6", "depth=1:8:15"], "memory", "results alone"),
    (["K=8", "max_memory_gb=1e-6"], "memory", "1e-06 GB"),
    (["max_memory_gb=0"], "max_memory_gb", "> 0"),
    (["max_memory_gb=-1"], "max_memory_gb", "> 0"),
    (["max_memory_gb=abc"], "max_memory_gb", "not a number"),
    (["allow_big=2"], "allow_big", "1 or 0"),
    (["overwrite=maybe"], "overwrite", "1 or 0"),
]


@pytest.mark.parametrize("words,key,reason", BAD, ids=[" ".join(w) for w, _, _ in BAD])
def test_guard_refuses_with_one_line(words, key, reason, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main([*words, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"key '{key}'" in err and reason in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("out,reason", [
    ("x" * 300, "255"), ("/etc/hostname", "not a folder"), ("/etc/hostname/run", "not a folder"),
    ("/proc/no/such/run", "cannot create"),
])
def test_bad_out_paths_exit_2(out, reason, capsys):
    assert cli.main(["K=4", "width=6", "depth=1", "seeds=1", "t1=1", f"out={out}",
                     "cache=none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "key 'out'" in err and reason in err, err


def test_guard_formulas_and_overrides():
    est = _guard.estimate(FULL, plan_units(FULL))
    runs, saves = FULL.num_runs, FULL.num_saves
    assert est.results_bytes == 3 * 8 * runs * (saves * (4 + 6) + 16)
    p2 = 6 * 4 + 6 * 6 + 4 * 6  # depth 2: d K n + (L-1) d^2 + K d
    assert est.batch_bytes == 8 * (10 * p2 + 3 * 16 + saves * 10) * 9
    # every run is padded to the largest depth (theory §2.4): both batches cost depth 2's
    assert est.work == 2 * 9 * (p2 + 16) * FULL.max_steps
    big = uf.SweepConfig(mode="gd", lr=1e-9)
    with pytest.raises(uf.SweepInputError, match="work"):
        _guard.check_resources(big)
    assert _guard.check_resources(big, allow_big=True).epochs == 10**14
    with pytest.raises(uf.SweepInputError, match="limit is 1e-06 GB"):
        uf.run_sweep(dataclasses.replace(FULL, out="/nonexistent/never"), max_memory_gb=1e-6)
    assert not os.path.exists("/nonexistent/never")
    assert _guard.physical_memory() > 1e8


def test_new_run_keys_do_not_enter_the_hash():
    config, _, options = cli.parse_command(["overwrite=1", "max_memory_gb=3", "allow_big=1"])
    assert options == dict(overwrite=True, max_memory_gb=3.0, allow_big=True)
    assert config == uf.SweepConfig() and config.short_hash() == uf.SweepConfig().short_hash()


# ------------------------------------------------------------------------------------------
# Failed runs never leak into numbers
# ------------------------------------------------------------------------------------------


def test_ok_runs_masks_failed_runs(base):
    ds = base["ds"]
    masked = uf.ok_runs(ds)
    bad = ds["status"] != 0
    assert int(bad.sum()) == 6  # init_scale 1e200 overflows: nonfinite
    assert masked["effective_rank"].where(bad).isnull().all()
    assert masked["num_steps"].dtype.kind == "f" and masked["num_steps"].where(bad).isnull().all()
    xr.testing.assert_equal(masked["status"], ds["status"])
    good = ds["effective_rank"].where(~bad)
    xr.testing.assert_equal(masked["effective_rank"], good)
    table = uf.sweep_summary(ds)
    mean = masked["effective_rank"].mean("seed").squeeze().to_series()
    np.testing.assert_allclose(table["effective_rank_mean"].values, mean.values, rtol=1e-14)
    assert list(table["ok"]) == [3, 3, 0, 3, 3, 0]
    assert (table["ok"] + table["failed"] == table["runs"]).all()
    text = uf.sweep_summary_text(ds)
    assert "ddof=0" in text and " ok " in text.splitlines()[1] + " "


def test_plot_states_n_error_bars_and_nc_line(base, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from ufmflow.sweep import _plots

    seen = {}

    def keep(fig, path):
        seen["fig"] = fig
        return path

    monkeypatch.setattr(_plots, "_save", keep)
    ds = base["ds"].copy()
    ds["status"] = ds["status"].copy()
    ds["status"][dict(depth=0, init_scale=1, seed=0)] = 1  # one point rests on 2 runs
    _plots.plot_effective_rank(ds, tmp_path / "er.png")
    fig: Figure = seen["fig"]
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "n=2" in texts and "n=3" in texts and "n=0" in texts
    assert "ddof=0" in ax.get_title() and "ok runs" in ax.get_title()
    labels = ax.get_legend_handles_labels()[1]
    assert any("K-1" in lab for lab in labels)
    assert any(abs(line.get_ydata()[0] - 3) < 1e-12 for line in ax.lines
               if len(line.get_ydata()) == 2)


def test_singular_value_plot_skips_infinite_values(base, tmp_path):
    """A diverging run's singular values may reach `inf` or near it (a gd sweep past its
    stable step), and 1e-250 next to 1e250: the figure is still drawn, without them
    (matplotlib's log axis placed ticks past the float range and raised OverflowError in
    `tight_layout`; seen in a gd sweep at lr 1.6)."""
    from ufmflow.sweep import _plots

    ds = base["ds"].copy()
    sv = ds["singular_values"].values.copy()
    first = (0,) * (sv.ndim - 2)  # the run the figure's first panel draws
    sv[first][-3:, 0] = np.inf
    sv[first][-6:-3, 0] = 1e250  # with 1e-250 below: log ticks past the float range
    sv[first][1:3, 0] = 1e-250
    ds["singular_values"] = (ds["singular_values"].dims, sv)
    path = _plots.plot_singular_values(ds, tmp_path / "sv.png")
    assert path.stat().st_size > 0


# ------------------------------------------------------------------------------------------
# Run folders you can trust
# ------------------------------------------------------------------------------------------


def _parts(out):
    return sorted((out / "parts").glob("*.nc"))


def test_parts_carry_checksum_and_config_hash(base):
    for path in _parts(base["out"]):
        part = xr.load_dataset(path, engine="h5netcdf")
        assert part.attrs["config_hash"] == FULL.short_hash()
        assert part.attrs["sha256"] == _trust.checksum(part)
        assert part.attrs["solver"] == "tsit5" and part.attrs["time_change"] == "bounded"
        assert part.attrs["compile_s"] >= 0 and part.attrs["run_s"] > 0
        assert _trust.range_problem(part) is None


def _flip_data_byte(path):
    """Flip one byte inside the `effective_rank` data of an HDF5 file that still opens."""
    part = xr.load_dataset(path, engine="h5netcdf")
    raw = bytearray(path.read_bytes())
    needle = np.ascontiguousarray(part["effective_rank"].values).tobytes()
    at = raw.find(needle)
    assert at > 0, "the data is stored uncompressed and contiguous"
    raw[at + 5] ^= 0x10  # a mantissa byte of the first value: still a finite number
    path.write_bytes(bytes(raw))
    xr.load_dataset(path, engine="h5netcdf")  # still opens


@pytest.mark.parametrize("damage", ["bitflip", "truncate", "range", "foreign"])
def test_damaged_part_is_detected_and_recomputed(base, tmp_path, damage):
    out, config = _copy(base, tmp_path)
    victim = _parts(out)[0]
    other = _parts(out)[1]
    mtime = other.stat().st_mtime_ns
    if damage == "bitflip":
        _flip_data_byte(victim)
        why = "checksum mismatch"
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        why = "unreadable"
    else:  # impossible values with a consistent checksum, or another config's part
        part = xr.load_dataset(victim, engine="h5netcdf")
        if damage == "range":
            part["effective_rank"][0] = 36.2
            why = "effective_rank outside [1, K]"
        else:
            part.attrs["config_hash"] = "0123456789"
            why = "another config"
        _trust.seal_part(part, part.attrs["config_hash"])
        part.to_netcdf(victim, engine="h5netcdf")
    stats = {}
    with pytest.warns(UserWarning, match=re.escape(f"part {victim}") + f".*{re.escape(why)}.*"
                      "recomputing"):
        ds = uf.run_sweep(config, progress=False, stats=stats)
    assert stats["resumed"] == 1 and len(stats["run_s"]) == 1
    assert other.stat().st_mtime_ns == mtime  # the intact part was not redone
    xr.testing.assert_allclose(ds, base["ds"], **SAME)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten part verifies
        uf.run_sweep(config, progress=False, stats=stats)
    assert stats["resumed"] == 2


def test_range_checks():
    ds = xr.Dataset({"status": ("run", [0, 4]), "effective_rank": ("run", [1.0, 2.0])},
                    coords={"K": ("run", [4, 4])})
    assert "status" in _trust.range_problem(ds)
    ds["status"] = ("run", [0, 1])
    assert _trust.range_problem(ds) is None
    ds["effective_rank"] = ("run", [0.5, np.nan])
    assert "outside" in _trust.range_problem(ds)
    ds["effective_rank"] = ("run", [4.0 + 1e-9, np.nan])  # rounding is fine; nan = failed run
    assert _trust.range_problem(ds) is None
    ds["singular_values"] = (("run", "sv"), [[1.0, -0.5], [np.nan, 0.0]])
    assert "negative" in _trust.range_problem(ds)


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(base, tmp_path, capsys):
    out, config = _copy(base, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{holder.pid} {os.uname().nodename}\n")
        with pytest.raises(uf.SweepInputError, match=f"in use by process {holder.pid}"):
            uf.run_sweep(config, progress=False)
        assert cli.main([*_words(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"in use by process {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    stats = {}  # the holder is dead now: its lock is stale and taken over
    uf.run_sweep(config, progress=False, stats=stats)
    assert stats["resumed"] == 2 and not (out / ".lock").exists()


def _words(out):
    return ["K=4", "width=6", "depth=1,2", "init_scale=0.1,1,1e200", "seeds=3", "t1=100",
            "num_saves=8", f"out={out}", "cache=none"]


def test_other_config_is_refused_unless_overwrite(base, tmp_path, capsys):
    out, config = _copy(base, tmp_path)
    # another init scale in place of 1e200: batches of the base sweep's shapes (no new compile)
    other = dataclasses.replace(config, init_scale=(0.1, 1.0, 2.0))
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    old_parts = {p.name for p in _parts(out)}
    with pytest.raises(uf.SweepInputError, match="another config's results.*overwrite=1"):
        uf.run_sweep(other, progress=False)
    words = [w for w in _words(out) if not w.startswith("init_scale")]
    assert cli.main([*words, "init_scale=0.1,1,2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "key 'out'" in err and "overwrite=1" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    ds = uf.run_sweep(other, progress=False, overwrite=True)
    new_parts = {p.name for p in _parts(out)}  # the old parts were removed first
    assert len(new_parts) == 2 and not new_parts & old_parts
    assert uf.SweepConfig(**json.loads((out / "config.json").read_text())) == other
    common = dict(init_scale=[0.1, 1.0])
    xr.testing.assert_allclose(ds.sel(common), base["ds"].sel(common), **SAME)
    assert np.all(ds["status"].sel(init_scale=2.0) == 0)


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(uf.SweepInputError, match="not a sweep's run folder"):
        uf.run_sweep(dataclasses.replace(FULL, out=str(tmp_path)), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------------------------------
# Provenance and CF attributes
# ------------------------------------------------------------------------------------------


def test_results_carry_provenance_and_cf_attributes(base):
    ds = uf.load_sweep(base["out"])
    import importlib.metadata as md

    for pkg in ("jax", "jaxlib", "diffrax", "equinox", "numpy", "xarray"):
        assert ds.attrs[f"{pkg}_version"] == md.version(pkg)
    assert ds.attrs["ufmflow_version"] == uf.__version__
    assert len(ds.attrs["git_commit"]) in (40, 7)  # a commit, or "unknown"
    assert ds.attrs["date_utc"].endswith("+00:00") and ds.attrs["device_platform"] == "cpu"
    assert ds.attrs["device_kind"] and ds.attrs["num_devices"] >= 1
    assert ds.attrs["num_processes"] == 1
    batches = json.loads(ds.attrs["batches"])
    assert set(batches) == {u.label for u in plan_units(FULL)}
    for b in batches.values():
        assert b["solver"] == "tsit5" and b["time_change"] == "bounded"
        assert b["compile_s"] >= 0 and b["run_s"] > 0
    for name in list(ds.data_vars) + ["time", "depth", "seed", "init_scale"]:
        assert ds[name].attrs["long_name"] and ds[name].attrs["units"], name
    assert ds["time"].attrs["units"] == "GF time"
    assert ds["effective_rank"].attrs["units"] == "1"
