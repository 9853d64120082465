"""The validation corpus (issue 13 point 4, issue 15 points 1-2): bad command lines of every
command (sweep, dynamics, landscape; the resource guard's refusals among them), each run in
process through `main(argv)`: exit code 2, stdout empty, one line on stderr naming the key (or
`analysis`, `memory`, `work`) and the token, and nothing written in the working directory. A few run as real processes for the exit code, and `--help` exits 0 on stdout."""

from __future__ import annotations

import pytest

from ufmflow.cli import dynamics as dyn
from ufmflow.cli import landscape as land
from ufmflow.cli import sweep as sweep

from helpers import run_module

ALL = ", ".join(dyn.NAMES)

# (command, argv, key, token, words in the message)
CORPUS = [
    # dynamics: the analysis
    ("dynamics", [], "analysis", "", ["give an analysis"]),
    ("dynamics", ["nope"], "analysis", "nope", ["unknown analysis"]),
    ("dynamics", ["critcal-scale"], "analysis", "critcal-scale", ["did you mean 'critical-scale'"]),
    ("dynamics", ["K=8"], "analysis", "K=8", ["first word is the analysis"]),
    ("dynamics", ["--verbose"], "analysis", "--verbose", ["first word"]),
    # dynamics: words and keys
    ("dynamics", ["basins", "widht=3"], "widht", "widht=3", ["unknown key"]),
    ("dynamics", ["basins", "deph=1..3"], "deph", "deph=1..3", ["did you mean 'depth'"]),
    ("dynamics", ["basins", "K"], "K", "K", ["key=value"]),
    ("dynamics", ["critical-scale", "K=4", "K=8"], "K", "K=8", ["twice"]),
    ("dynamics", ["all", "K=8"], "K", "K=8", ["unknown key"]),
    ("dynamics", ["minimal-rank", "depth=2"], "depth", "depth=2", ["unknown key"]),
    # dynamics: numbers, lists, ranges
    ("dynamics", ["critical-scale", "K=6"], "K", "6", ["power of two"]),
    ("dynamics", ["critical-scale", "K=2"], "K", "2", [">= 4"]),
    ("dynamics", ["critical-scale", "K=8.5"], "K", "8.5", ["not an integer"]),
    ("dynamics", ["critical-scale", "K=1e400"], "K", "1e400", ["not finite"]),
    ("dynamics", ["critical-scale", "K=4,,8"], "K", "4,,8", ["empty item"]),
    ("dynamics", ["critical-scale", "depth=0.5"], "depth", "0.5", [">= 1"]),
    ("dynamics", ["critical-scale", "depth=nan"], "depth", "nan", ["not finite"]),
    ("dynamics", ["critical-scale", "depth=1:8:0"], "depth", "1:8:0", ["empty range"]),
    ("dynamics", ["critical-scale", "depth=8..2"], "depth", "8..2", ["empty range"]),
    ("dynamics", ["critical-scale", "depth=2,2"], "depth", "2,2", ["duplicate"]),
    ("dynamics", ["critical-scale", "depth="], "depth", "", ["empty value"]),
    ("dynamics", ["critical-scale", "structure=ring"], "structure", "ring", ["choose one of"]),
    ("dynamics", ["perturb", "depth=1"], "depth", "1", ["> 1"]),
    ("dynamics", ["perturb", "ratio=0"], "ratio", "0", ["> 0"]),
    ("dynamics", ["perturb", "eps=-1e-4"], "eps", "-1e-4", ["> 0"]),
    ("dynamics", ["perturb", "K=8,16"], "K", "8,16", ["one number"]),
    ("dynamics", ["rich-get-richer", "num=0"], "num", "0", [">= 1"]),
    ("dynamics", ["rich-get-richer", "scale=-1"], "scale", "-1", ["> 0"]),
    ("dynamics", ["rich-get-richer", "scale=1e-3:1:x"], "scale", "1e-3:1:x", ["not a number"]),
    ("dynamics", ["kl", "delta=0"], "delta", "0", ["> 0"]),
    ("dynamics", ["kl", "delta=none"], "delta", "none", ["not a number"]),
    ("dynamics", ["kl", "x=inf"], "x", "inf", ["not finite"]),
    ("dynamics", ["kl", "tau1=-5"], "tau1", "-5", ["> 0"]),
    ("dynamics", ["basins", "num=-3"], "num", "-3", [">= 1"]),
    ("dynamics", ["basins", "K=12"], "K", "12", ["power of two"]),
    ("dynamics", ["basins", "scale=abc"], "scale", "abc", ["not a number"]),
    ("dynamics", ["basins", "depth=1:4:3", "tau1=0"], "tau1", "0", ["> 0"]),
    ("dynamics", ["minimal-rank", "K=32"], "K", "32", ["<= 16"]),
    ("dynamics", ["minimal-rank", "K=3"], "K", "3", ["power of two"]),
    ("dynamics", ["effective-rank", "scale_depth=0"], "scale_depth", "0", [">= 1"]),
    ("dynamics", ["effective-rank", "depth_scale=0"], "depth_scale", "0", ["> 0"]),
    ("dynamics", ["width", "depth=1.5"], "depth", "1.5", ["not an integer"]),
    ("dynamics", ["width", "width=0"], "width", "0", [">= 1"]),
    ("dynamics", ["width", "seeds=0"], "seeds", "0", [">= 1"]),
    ("dynamics", ["width", "rtol=2"], "rtol", "2", ["< 1"]),
    ("dynamics", ["width", "K=1"], "K", "1", [">= 2"]),
    ("dynamics", ["width", "grown_width=16:64:3"], "grown_width", "16:64:3", ["geometric"]),
    ("dynamics", ["random-vs-hadamard", "K=6"], "K", "6", ["power of two"]),
    ("dynamics", ["random-vs-hadamard", "width=0"], "width", "0", [">= 1"]),
    ("dynamics", ["all", "quick=2"], "quick", "2", ["choose 0 or 1"]),
    ("dynamics", ["basins", "quick=yes please"], "quick", "yes please", ["choose 0 or 1"]),
    ("dynamics", ["basins", "seed=-1"], "seed", "-1", [">= 0"]),
    ("dynamics", ["basins", "seed=1.5"], "seed", "1.5", ["not an integer"]),
    ("dynamics", ["basins", "out="], "out", "", ["empty value"]),
    # dynamics: the resource guard (issue 15 point 2): the estimate, the limit, the override
    ("dynamics", ["basins", "num=1e9"], "memory", "1.23e+05 GB", ["limit is", "allow_big=1",
                                                                  "max_memory_gb=<GB>"]),
    ("dynamics", ["effective-rank", "num=1e12"], "memory", "1.28e+07 GB", ["limit is"]),
    ("dynamics", ["kl", "num=1e11"], "memory", "4.22e+05 GB", ["reduced runs"]),
    ("dynamics", ["width", "width=100000"], "memory", "3.2e+03 GB", ["width 100000"]),
    ("dynamics", ["width", "depth=1000"], "depth", "1000", ["over 64", "allow_big=1"]),
    ("dynamics", ["critical-scale", "K=1048576"], "memory", "5.81e+05 GB", ["Jacobian"]),
    ("dynamics", ["minimal-rank", "max_memory_gb=1e-9"], "memory", "0.0168 GB",
     ["limit is 1e-09 GB"]),
    ("dynamics", ["all", "quick=1", "max_memory_gb=1e-9"], "memory", "0.000246 GB",
     ["critical-scale needs"]),
    ("dynamics", ["basins", "K=4096", "num=1e5", "depth=1", "scale=1", "max_memory_gb=1000"],
     "work", "6.87e+15", ["over the limit 1e+15"]),
    ("dynamics", ["basins", "max_memory_gb=0"], "max_memory_gb", "0", ["> 0"]),
    ("dynamics", ["basins", "max_memory_gb=lots"], "max_memory_gb", "lots", ["not a number"]),
    ("dynamics", ["basins", "allow_big=2"], "allow_big", "2", ["choose 0 or 1"]),
    ("dynamics", ["basins", "scale=1e-3:1:100000000"], "scale", "1e-3:1:100000000",
     ["at most 16777216"]),
    # landscape: the analysis, words and keys
    ("landscape", [], "analysis", "", ["give an analysis"]),
    ("landscape", ["kgn"], "analysis", "kgn", ["did you mean 'kgon'"]),
    ("landscape", ["K=3"], "analysis", "K=3", ["first word is the analysis"]),
    ("landscape", ["all"], "analysis", "all", ["unknown analysis"]),
    ("landscape", ["kgon", "depht=8"], "depht", "depht=8", ["did you mean 'depth'"]),
    ("landscape", ["map", "K=3", "K=4"], "K", "K=4", ["twice"]),
    # landscape: numbers, lists, cross-key checks
    ("landscape", ["kgon", "K=2..5"], "K", "2..5", [">= 3"]),
    ("landscape", ["kgon", "method=sgd"], "method", "sgd", ["choose one of"]),
    ("landscape", ["kgon", "seeds=0"], "seeds", "0", [">= 1"]),
    ("landscape", ["kgon", "epochs=10", "decay_epochs=20"], "decay_epochs", "20",
     ["<= epochs"]),
    ("landscape", ["kgon", "rtol=2"], "rtol", "2", ["< 1"]),
    ("landscape", ["kgon", "lr=-0.1"], "lr", "-0.1", ["> 0"]),
    ("landscape", ["kgon", "t1=inf"], "t1", "inf", ["not finite"]),
    ("landscape", ["map", "depth_max=1"], "depth_max", "1", ["> 1"]),
    ("landscape", ["map", "depth_step=1e-9"], "depth_step", "1e-9", ["too fine"]),
    ("landscape", ["map", "K=3..100000000"], "K", "3..100000000", ["at most 16777216"]),
    ("landscape", ["fig1", "K=5"], "K", "5", ["even K"]),
    ("landscape", ["fig1", "K=6", "low_rank=hypercube"], "K", "6", ["power of two"]),
    ("landscape", ["fig1", "depth=0.5"], "depth", "0.5", [">= 1"]),
    ("landscape", ["fig1", "rho=0"], "rho", "0", ["> 0"]),
    ("landscape", ["optima", "depth=0..3"], "depth", "0..3", [">= 1"]),
    ("landscape", ["optima", "K=4.5"], "K", "4.5", ["not an integer"]),
    ("landscape", ["softmax-codes", "num=0"], "num", "0", [">= 1"]),
    ("landscape", ["fig3-right", "width=1"], "width", "1", [">= 2"]),
    ("landscape", ["fig7", "depth=2,2"], "depth", "2,2", ["duplicate"]),
    ("landscape", ["fig8", "quick=maybe"], "quick", "maybe", ["choose 0 or 1"]),
    ("landscape", ["fig8", "out="], "out", "", ["empty value"]),
    # landscape: the resource guard
    ("landscape", ["kgon", "epochs=1e14"], "work", "4.63e+19", ["over the limit 1e+15",
                                                                "allow_big=1"]),
    ("landscape", ["kgon", "depth=1000"], "depth", "1000", ["over 64", "allow_big=1"]),
    ("landscape", ["optima", "depth=100"], "depth", "100", ["over 64"]),
    ("landscape", ["optima", "num=1e9"], "memory", "400 GB", ["starts"]),
    ("landscape", ["fig1", "K=1000000"], "memory", "6.4e+04 GB", ["limit is"]),
    ("landscape", ["fig8", "seeds=1e9"], "work", "6.34e+17", ["over the limit"]),
    ("landscape", ["fig3-right", "epochs=1e13"], "work", "4.46e+17", ["over the limit"]),
    ("landscape", ["map", "max_memory_gb=1e-9"], "memory", "0.00382 GB", ["limit is 1e-09 GB"]),
    # the sweep (more in tests/sweep/test_sweep.py)
    ("sweep", ["mode=nope"], "mode", "nope", ["choose one of"]),
    ("sweep", ["depht=2..8"], "depht", "depht=2..8", ["did you mean 'depth'"]),
    ("sweep", ["K=1"], "K", "1", [">= 2"]),
    ("sweep", ["width=-4"], "width", "-4", [">= 1"]),
    ("sweep", ["width=0..3"], "width", "0", [">= 1"]),
    ("sweep", ["seeds=1.5"], "seeds", "1.5", ["not an integer"]),
    ("sweep", ["init_scale=nan"], "init_scale", "nan", ["not finite"]),
    ("sweep", ["init_scale=0"], "init_scale", "0", ["> 0"]),
    ("sweep", ["t1=0"], "t1", "0", ["> 0"]),
    ("sweep", ["rtol=-1"], "rtol", "-1", ["> 0"]),
    ("sweep", ["num_saves=1"], "num_saves", "1", [">= 2"]),
    ("sweep", ["max_steps=0"], "max_steps", "0", [">= 1"]),
    ("sweep", ["chunk=0"], "chunk", "0", [">= 1"]),
    ("sweep", ["solver=euler"], "solver", "euler", ["choose one of"]),
    ("sweep", ["mode=hadamard", "depth=0.5"], "depth", "0.5", [">= 1"]),
    ("sweep", ["mode=gd", "lr=0"], "lr", "0", ["> 0"]),
    ("sweep", ["fast_compile=maybe"], "fast_compile", "maybe", ["choose one of"]),
    ("sweep", ["mode=hadamard", "direction=gaussian"], "direction", "gaussian", ["uniform"]),
    ("sweep", ["cache="], "cache", "", ["auto or none"]),
    ("sweep", ["out="], "out", "", ["empty path"]),
]
MAINS = {"dynamics": dyn.main, "landscape": land.main, "sweep": sweep.main}


def _main(command, argv) -> int:
    try:
        return MAINS[command](argv)
    except SystemExit as exc:  # a command may also exit; the code is what counts
        return exc.code


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 60
    assert {c[0] for c in CORPUS} == set(MAINS)  # every command line
    assert len({c[2] for c in CORPUS if c[0] == "dynamics"}) >= 20  # keys named
    assert len({c[2] for c in CORPUS if c[0] == "landscape"}) >= 15
    for command in ("dynamics", "landscape"):  # the guard's refusals of each analysis command
        assert {"memory", "work", "depth"} <= {c[2] for c in CORPUS if c[0] == command}


@pytest.mark.parametrize("command, argv, key, token, words", CORPUS,
                         ids=[f"{c[0]}:{' '.join(c[1]) or '(none)'}" for c in CORPUS])
def test_bad_command_line_exits_2_with_one_line(command, argv, key, token, words, tmp_path,
                                                monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _main(command, argv)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"ufmflow.{command}: error: ")
    assert f"key '{key}'" in lines[0] and f"token '{token}'" in lines[0], lines[0]
    for w in words:
        assert w in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bad_run_folders_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for argv, reason in [
        (["minimal-rank", "out=file"], "not a folder"),
        (["minimal-rank", "out=file/sub"], "not a folder"),
        (["all", "out=file"], "not a folder"),
        (["minimal-rank", "out=stranger"], "not a run folder"),
        (["minimal-rank", "out=" + "x" * 300], "at most 255"),
    ]:
        assert dyn.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "key 'out'" in err and reason in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# ------------------------------------------------------------------------------------------
# Real processes


@pytest.mark.slow  # 23 s; the in-process corpus and the --help subprocess tests run by default
def test_dynamics_process_exit_2_one_line_no_traceback(tmp_path):
    res = run_module("ufmflow.dynamics", "basins", "K=6", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr == "ufmflow.dynamics: error: key 'K', token '6': must be a power of two " \
        "(2, 4, 8, 16, ...)\n"
    assert list(tmp_path.iterdir()) == []
    res = run_module("ufmflow.dynamics", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "key 'analysis'" in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", ["ufmflow.dynamics", "ufmflow.landscape", "ufmflow.sweep"])
def test_help_exits_0_on_stdout(module, tmp_path):
    res = run_module(module, "--help", cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout.startswith(f"usage: python -m {module}")
    for cmd in (dyn, land):
        if module == f"ufmflow.{cmd.COMMAND.prog.split('.')[-1]}":
            for name in cmd.NAMES:
                assert f"\n  {name}: " in res.stdout
    assert list(tmp_path.iterdir()) == []
