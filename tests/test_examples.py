"""Examples run end to end in their --quick mode: CI runs every one (issue 16), each computing
its figure's numbers at a small size and asserting its claim on them; every example script
takes `--quick` and writes its figure to `--out` (checked fast, from the source).

The scripts run in this test process, as `python <script> --quick --out <png>` would run them
(`runpy` with `__name__ == "__main__"`, the same `sys.argv`, from a scratch working directory),
all on one xdist worker (tests/conftest.py): a fresh interpreter per script would spend ~5 s
importing JAX and ufmflow each time, and the scripts share compiled programs (the same solver
at the same shapes) across one process. The checkout under test is the one imported, since
the test process imports it."""

import os
import runpy
import sys

import pytest
from helpers import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def test_every_figure_script_has_a_quick_mode_writing_its_png():
    names = {p.name for p in EXAMPLES}
    assert {n for n in names if n.startswith(("fig", "thm"))} == names
    figures = {n.split("_")[0] for n in names if n.startswith("fig")}
    # issue 16 point 7 (figures 1-5, 7-11) and issue 17 (figure 6)
    assert figures == {f"fig{i}" for i in range(1, 12)}
    for p in EXAMPLES:
        src = p.read_text()
        assert '"--quick"' in src and '"--out"' in src, p.name
        assert 'if __name__ == "__main__":' in src, p.name


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_quick(script, tmp_path, monkeypatch):
    out = tmp_path / "fig.png"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "--quick", "--out", str(out)])
    monkeypatch.setattr(sys, "path", [str(script.parent)] + sys.path)
    # a script's own setting of XLA_FLAGS (thm43) must not leak into later tests' subprocesses
    monkeypatch.setitem(os.environ, "XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    import matplotlib.pyplot as plt

    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:  # a script ends with sys.exit(code) on failure
        assert exit_.code in (None, 0), f"{script.name} exited with {exit_.code}"
    finally:
        plt.close("all")
    assert out.exists() and out.stat().st_size > 1000
