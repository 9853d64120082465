"""The max-margin solver's random starts are sharded over the devices like the sweeps (issue 16
point 3): with two CPU devices (a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=2`) the sharded solve equals the one-device
solve to rounding (measured: 4.4e-16 on logits of size 1.6), for a start count that needs
padding (5 starts on 2 devices) and over two chunks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from helpers import REPO, xla_flags

SCRIPT = r"""
import json
import jax
import numpy as np
import ufmflow as uf

assert len(jax.local_devices()) == 2
key = jax.random.PRNGKey(3)
kw = dict(outer=4, inner=25)
one = uf.solve_max_margin(key, 4, 2, 5, num_devices=1, **kw)
two = uf.solve_max_margin(key, 4, 2, 5, **kw)              # default: every local device
chunked = uf.solve_max_margin(key, 4, 2, 5, chunk=3, **kw)  # 3 + 2 starts, both padded
diff = float(np.max(np.abs(one["logits"] - two["logits"])))
scale = float(np.max(np.abs(one["logits"])))
print(json.dumps(dict(devices=[one["devices"], two["devices"], chunked["devices"]],
                      shape=list(two["logits"].shape), diff=diff, scale=scale,
                      chunk_diff=float(np.max(np.abs(chunked["logits"] - one["logits"]))),
                      optima=[[o["objective"], o["count"]] for o in one["optima"]],
                      optima_sharded=[[o["objective"], o["count"]] for o in two["optima"]])))
"""


def test_sharded_starts_equal_one_device_starts():
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags("--xla_force_host_platform_device_count=2")
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["devices"] == [1, 2, 2]
    assert out["shape"] == [5, 4, 4]  # the padding start is dropped
    assert out["diff"] <= 1e-12 * out["scale"], out
    assert out["chunk_diff"] <= 1e-12 * out["scale"], out
    np.testing.assert_allclose(out["optima_sharded"], out["optima"], rtol=1e-12)
