"""`python -m ufmflow.landscape`: help lists every analysis with its keys and defaults; bad
input exits 2 with one line naming the key and writes nothing; a tiny end-to-end run writes a
run folder (config, labelled netCDF, summary, PNG) that a rerun loads without recomputing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import helpers
from ufmflow.cli import landscape as cli
from ufmflow.cli._landscape_keys import ANALYSES, COMMON_KEYS


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
        listed = dict(ln.strip().split("=", 1) for ln in block if not ln.startswith("     "))
        assert list(listed) == [k.name for k in a.keys], name
        for key in a.keys:
            assert key.parse(listed[key.name]) == a.defaults[key.name], (name, key.name)
    for key in COMMON_KEYS:
        assert f"\n    {key.name}=" in out
    assert set(ANALYSES) == {"map", "optima", "softmax-codes", "kgon", "fig1", "fig3-right",
                             "fig7", "fig8"}


@pytest.mark.parametrize("argv, key", [
    ([], "analysis"),
    (["kgn"], "analysis"),
    (["K=3"], "analysis"),
    (["kgon", "K=2..5"], "K"),
    (["kgon", "method=sgd"], "method"),
    (["kgon", "depht=8"], "depht"),
    (["kgon", "epochs=10", "decay_epochs=20"], "decay_epochs"),
    (["map", "depth_max=1"], "depth_max"),
    (["fig1", "K=5"], "K"),
    (["fig1", "K=6", "low_rank=hypercube"], "K"),
    (["optima", "depth=0..3"], "depth"),
    (["kgon", "rtol=2"], "rtol"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, key, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main([*argv, f"out={tmp_path / 'o'}"] if argv else argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"key '{key}'" in err
    assert list(tmp_path.iterdir()) == []


def test_quick_kgon_resolves_its_sizes_and_given_values_win():
    job = cli.parse_args(["kgon", "quick=1", "seeds=3"])[0]
    assert job.settings["K"] == (3, 4) and job.settings["seeds"] == 3
    assert job.settings["epochs"] == 3000 and job.settings["method"] == "gd"
    assert not job.finished
    assert cli.parse_args(["kgon"])[0].settings["K"] == tuple(range(3, 17))


def test_module_entry_point_help_and_bad_input():
    ok = helpers.run_module("ufmflow.landscape", "--help")
    assert ok.returncode == 0 and "kgon" in ok.stdout and ok.stderr == ""
    bad = helpers.run_module("ufmflow.landscape", "kgon", "seeds=0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "key 'seeds'" in bad.stderr


def test_tiny_kgon_end_to_end_and_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "kgon"
    argv = ["kgon", "K=3", "depth=4", "seeds=1", "method=gd", "width=6", "epochs=3000",
            "decay_epochs=1000", "lr=0.1", f"out={out}"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "kgon.png", "results.nc",
                                                     "summary.txt"]
    assert json.loads((out / "config.json").read_text())["analysis"] == "kgon"
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        assert ds["min_angle"].dims == ("method", "K", "seed")
        assert ds["logits"].shape == (1, 1, 1, 3, 3)
        assert int(ds["status"].values.ravel()[0]) == 0
        gaps_ok = ds["max_angle"] >= ds["min_angle"]
        assert bool(gaps_ok.all()) and ds["min_angle"].attrs["units"] == "rad"
        np.testing.assert_allclose(ds["ideal"].values, 2 * np.pi / 3)
    assert (out / "summary.txt").read_text() == first and "rank2" in first
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    import ufmflow as uf

    monkeypatch.setattr(uf, "kgon_runs", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == first and "nothing recomputed" in captured.err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_fig3_right_margin_is_twice_the_inverse_depth1_objective():
    """`q/||M||_*` (Fig. 3 right) of every candidate equals `2 / objective(depth 1)` (theory
    §5.5: the depth-1 objective is `2||M||_*` at unit margin), whatever the scale of `M`."""
    import ufmflow as uf
    from ufmflow.cli._landscape_margins import nuclear_margin

    for K in range(3, 9):
        for name in uf.candidates_for(K):
            M = uf.candidate_structure(name, K)
            want = 2.0 / float(uf.candidate_objective(name, K, 1.0))
            assert nuclear_margin(3.7 * M) == pytest.approx(want, rel=1e-12), (K, name)
    assert np.isnan(nuclear_margin(np.full((3, 3), np.nan)))
