"""Examples run end to end in their --quick mode: CI runs every one (issue 16), each computing
its figure's numbers at a small size and asserting its claim on them (about 5-25 s each on 2
CPU cores, mostly import and XLA compilation); every example script takes `--quick` and writes
its figure to `--out` (checked fast, from the source)."""

import os
import subprocess
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


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_quick(script, tmp_path):
    out = tmp_path / "fig.png"
    # the checkout under test, not whatever copy of ufmflow happens to be installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], check=True,
                   cwd=tmp_path, env=env, timeout=600)
    assert out.exists() and out.stat().st_size > 1000
