"""Examples run end to end in their --quick mode (slow: each compiles several solves)."""

import subprocess
import sys

import pytest
from helpers import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_quick(script, tmp_path):
    out = tmp_path / "fig.png"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], check=True,
                   cwd=tmp_path, timeout=600)
    assert out.exists() and out.stat().st_size > 1000
