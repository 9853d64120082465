"""`python -m ufmflow.realnet` (theory §7.1): the tiny pipeline end to end into a run folder,
resume from parts, and one-line exit-2 errors for bad input with nothing written."""

import json

import numpy as np
import pytest
import xarray as xr

import ufmflow as uf
from ufmflow.cli import realnet as cli

# A few dozen images: 3 training + 2 test images per class of the 8x8 digits; three heads
# (1, 8), (2, 8), (2, 16); 2 seeds; 40 epochs.
TINY = ["data=digits", "extractor=mlp", "extractor_width=16", "extractor_depth=1", "depths=1,2",
        "fixed_width=8", "widths=8,16", "fixed_depth=2", "seeds=2", "epochs=40", "checkpoints=2",
        "lr=0.05", "train_per_class=3", "test_per_class=2", "progress=0"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("realnet") / "run"
    code = cli.main(TINY + [f"out={out}"])
    return code, out


def test_pipeline_end_to_end(tiny_run, capsys):
    code, out = tiny_run
    assert code == 0
    for name in ("config.json", "results.nc", "summary.txt", "numbers.json",
                 "fig6_real_networks.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "parts").glob("digits-L*-w*-*.nc"))) == 3
    ds = xr.load_dataset(out / "results.nc", engine="h5netcdf")
    assert dict(ds["effective_rank"].sizes) == {"data": 1, "group": 3, "seed": 2}
    assert ds["depth"].values.tolist() == [1, 2, 2] and ds["width"].values.tolist() == [8, 8, 16]
    assert ds["depth_panel"].values.tolist() == [True, True, False]
    assert ds["width_panel"].values.tolist() == [False, True, True]
    assert ds["epoch"].values.tolist() == [0, 20, 40]
    er = ds["effective_rank"].values
    assert np.all((er >= 1) & (er <= 10))
    # the stored rank is the effective rank of the stored class-mean logits
    assert np.allclose(er, uf.effective_rank(ds["class_mean_logits"].values), rtol=1e-6)
    assert int(ds["num_train"].values[0]) == 30 and int(ds["num_test"].values[0]) == 20
    numbers = json.loads((out / "numbers.json").read_text())["digits"]
    assert [r["depth"] for r in numbers["rank_vs_depth"]] == [1, 2]
    assert [r["width"] for r in numbers["rank_vs_width"]] == [8, 16]
    assert numbers["accuracy_vs_rank"]["n"] == 6
    assert "slope" in (out / "summary.txt").read_text()


def test_rerun_loads_and_resumes_from_parts(tiny_run, capsys, monkeypatch):
    code, out = tiny_run
    capsys.readouterr()

    def refuse(*a, **k):
        raise AssertionError("a finished group was trained again")

    monkeypatch.setattr(uf.realnet._experiment, "run_group", refuse)
    ref = xr.load_dataset(out / "results.nc", engine="h5netcdf")
    assert cli.main(TINY + [f"out={out}"]) == 0  # finished folder: loaded
    assert "nothing recomputed" in capsys.readouterr().err
    # an interrupted run (no results.nc) resumes from its parts without training
    (out / "results.nc").unlink()
    assert cli.main(TINY + [f"out={out}"]) == 0
    again = xr.load_dataset(out / "results.nc", engine="h5netcdf")
    assert np.array_equal(again["effective_rank"].values, ref["effective_rank"].values)


@pytest.mark.parametrize("args,key", [
    (["depth=2"], "depth"),  # unknown key (did you mean depths?)
    (["depths=0,2"], "depths"),
    (["epochs=100", "checkpoints=7"], "epochs"),
    (["data=cifar"], "data"),
    (["data=/no/such/file.npz"], "data"),
    (["lr=-1"], "lr"),
    (["--fast"], "--fast"),
])
def test_bad_input_exits_2_with_one_line(args, key, tmp_path, capsys):
    out = tmp_path / "never"
    assert cli.main(args + [f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ufmflow.realnet: error:") and f"'{key}'" in err
    assert not out.exists()


def test_malformed_npz_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 3, 3)), labels=np.array([0, 1, -1, 1]))
    assert cli.main([f"data={bad}", f"out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "negative" in err and str(bad) in err


def test_help_and_quick(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--quick" in text and "H200" in text and "depths=1..8" in text
    config, folder, record, finished, progress = cli.parse_args(["--quick", "seeds=2"])
    assert config == uf.RealNetConfig.quick(seeds=2)
    assert config.extractor == "mlp" and not finished


@pytest.mark.slow
def test_entry_point_bad_key():
    # `python -m ufmflow.realnet` as a user runs it: one line, exit 2 (slow: a subprocess that
    # imports ufmflow; the in-process tests above cover the same code)
    from helpers import run_module

    proc = run_module("ufmflow.realnet", "--quick", "sedes=2")
    assert proc.returncode == 2 and proc.stdout == ""
    line = proc.stderr.strip()
    assert "\n" not in line and "did you mean 'seeds'" in line
