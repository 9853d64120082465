"""`python -m ufmflow.dynamics`: help lists every analysis with its keys and defaults, run
folders (config, labelled netCDF, summary, PNG), resume without recomputing, refusal of a folder
holding another config, `all`'s subfolders. Tiny sizes: critical-scale with K=4,8 and two
depths, minimal-rank K=4 and a basins cell of 8 directions."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ufmflow.cli import _runfolder as rf
from ufmflow.cli import dynamics as cli
from ufmflow.cli._dynamics_keys import ANALYSES, COMMON_KEYS

CRIT = ["critical-scale", "K=4,8", "depth=1,3", "structure=dnc"]


def test_help_lists_every_analysis_with_its_keys_and_defaults(capsys):
    assert cli.main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    for name, a in ANALYSES.items():
        start = lines.index(next(ln for ln in lines if ln.startswith(f"  {name}: ")))
        block = []
        for ln in lines[start + 1:]:
            if not ln.startswith("    "):
                break
            block.append(ln)
        listed = dict(ln.strip().split("=", 1) for ln in block if ln.startswith("    ")
                      and not ln.startswith("     "))
        assert list(listed) == [k.name for k in a.keys], name
        for key in a.keys:  # the listed default parses back to the default
            assert key.parse(listed[key.name]) == a.defaults[key.name], (name, key.name)
    for key in COMMON_KEYS:
        assert f"\n    {key.name}=" in out
    assert "resume" in out and "results.nc" in out and "Exit codes" in out
    assert cli.DEFAULTS["width"]["conv_width"] == (8, 16, 32, 64, 128, 256, 1024, 4096)


@pytest.fixture(scope="session")
def crit(tmp_path_factory):
    """critical-scale run once into a fresh folder (one that does not exist yet)."""
    out = tmp_path_factory.mktemp("crit") / "new" / "run"
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        code = cli.main([*CRIT, f"out={out}"])
    return dict(out=out, code=code, stdout=buf_out.getvalue(), stderr=buf_err.getvalue())


def test_run_folder_holds_config_labelled_results_summary_and_png(crit):
    out = crit["out"]
    assert crit["code"] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "critical_scale.png", "results.nc", "summary.txt"]
    assert (out / "critical_scale.png").stat().st_size > 0
    config = json.loads((out / "config.json").read_text())
    assert config["analysis"] == "critical-scale"
    assert config["settings"] == {"K": [4, 8], "depth": [1.0, 3.0], "structure": "dnc",
                                  "seed": 0}
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        assert ds["dnc"].dims == ("K", "depth")
        assert list(ds["K"].values) == [4, 8] and list(ds["depth"].values) == [1.0, 3.0]
        # x* = K (L-1)/(L+1): 0 at L=1, K/2 at L=3 (theory §4)
        np.testing.assert_allclose(ds["dnc"].values, [[0.0, 2.0], [0.0, 4.0]], atol=1e-9)
        np.testing.assert_allclose(ds["dnc"], ds["closed_form"], atol=1e-9)
        assert ds["dnc"].attrs["long_name"] and json.loads(ds.attrs["config"])["K"] == [4, 8]
    summary = (out / "summary.txt").read_text()
    assert summary == crit["stdout"] and "DNC critical scale" in summary
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files


def test_rerun_finds_the_finished_folder_and_recomputes_nothing(crit, capsys, monkeypatch):
    out = crit["out"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    import ufmflow as uf

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(uf, "dnc_critical_scale", boom)
    assert cli.main([*CRIT, f"out={out}"]) == 0
    captured = capsys.readouterr()
    assert captured.out == crit["stdout"]
    assert "nothing recomputed" in captured.err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_another_config_in_the_same_folder_is_refused(crit, capsys):
    out = crit["out"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert cli.main(["critical-scale", "K=4", "depth=1,3", "structure=dnc", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "key 'out'" in err and "another config" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_default_folder_is_keyed_by_the_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["minimal-rank", "K=4"]) == 0
    record = rf.config_record("minimal-rank", {"K": (4,), "seed": 0})
    folder = Path("runs") / f"minimal-rank-{rf.config_hash(record)}"
    assert [p for p in (tmp_path / "runs").iterdir()] == [tmp_path / folder]
    with xr.open_dataset(folder / "results.nc", engine="h5netcdf") as ds:
        assert int(ds["min_support"].sel(K=4)) == 2 == int(ds["log2_k"].sel(K=4))
        assert int(ds["num_minimal"].sel(K=4)) == 3  # {1,2}, {1,3}, {2,3}
    assert (folder / "minimal_rank.png").stat().st_size > 0
    assert "smallest support" in capsys.readouterr().out
    other = cli.parse_args(["minimal-rank", "K=4", "seed=1"])[0].folder
    assert other != folder and other.parent == Path("runs")


def test_all_runs_each_analysis_into_its_own_subfolder(tmp_path):
    jobs = cli.parse_args(["all", "quick=1", f"out={tmp_path / 'smoke'}"])
    assert [j.analysis for j in jobs] == list(ANALYSES)
    assert all(j.folder == tmp_path / "smoke" / j.analysis and not j.finished for j in jobs)
    assert jobs[0].settings["K"] == ANALYSES["critical-scale"].quick["K"]
    assert list(tmp_path.iterdir()) == []  # parsing writes nothing
    default = cli.parse_args(["all"])[0].folder
    assert default.parent.parent == Path("runs") and default.parent.name.startswith("all-")
    # the quick sizes give way to the given values
    job = cli.parse_args(["basins", "quick=1", "num=8"])[0]
    assert job.settings["num"] == 8 and job.settings["K"] == (8,)


@pytest.mark.slow  # 21 s; the run-folder layout is also checked by the fast end-to-end test
def test_basins_dataset_has_K_depth_scale_structure(tmp_path, capsys):
    out = tmp_path / "basins"
    assert cli.main(["basins", "K=4", "depth=1,2", "scale=0.1", "num=8", "tau1=1e3",
                     f"out={out}"]) == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        assert ds["fraction"].dims == ("K", "depth", "scale", "structure")
        assert list(ds["structure"].values) == ["dnc", "between", "minimal"]
        assert ds["effective_rank"].shape == (1, 2, 1, 8)
        ok = ds["failed"] == 0
        np.testing.assert_allclose(ds["fraction"].sum("structure").where(ok), 1.0)
    assert (out / "basins_K4.png").stat().st_size > 0
    assert capsys.readouterr().out.count("\n") > 3
