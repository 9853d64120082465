"""Case (ii)'s configuration from several seeds: status and steps to t = 1e8 (session 35).

K=8, n=1, width 8, depth 7, Gaussian scale 0.1 (theory §2.6, case (ii)), `solve_flow` at its
defaults to t = 1e8 with 37 log-spaced saves (as `bench_complement_cap.py`), capped at
`--max-steps` attempted steps, for each seed of `--seeds` (`gaussian_init(PRNGKey(seed), ...)`).
Records status, accepted and rejected steps, stall-rescue returns, wall time (first call,
compile included, for the first seed) and the log-loss and effective rank at 1e5 and 1e8.
Run it from a checkout of another commit (`PYTHONPATH=that/checkout`) to compare solvers:

    python benchmarks/bench_case_ii_seeds.py --out benchmarks/results/bench_case_ii_seeds.json
    PYTHONPATH=/tmp/old python benchmarks/bench_case_ii_seeds.py --label c783713 \\
        --out benchmarks/results/bench_case_ii_seeds.json

Each run is added to `--out` under its `--label` (default: the commit of the imported
package's checkout), so the two calls above fill one file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import ufmflow as uf  # noqa: E402


def _commit():
    root = Path(uf.__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1004,1006,0,1,2,3,4")
    ap.add_argument("--max-steps", type=int, default=5000)
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default="benchmarks/results/bench_case_ii_seeds.json")
    args = ap.parse_args()
    label = args.label or _commit()
    ts = jnp.array(np.unique(np.concatenate([[0.0, 1e5, 1e8], np.logspace(-1, 8, 37)])))
    i5 = int(np.argmin(np.abs(np.asarray(ts) - 1e5)))
    rows = []
    print(f"{label}: K=8, n=1, width 8, depth 7, scale 0.1, t1 = 1e8, cap {args.max_steps}")
    for seed in (int(s) for s in args.seeds.split(",")):
        model = uf.gaussian_init(jax.random.PRNGKey(seed), 8, 1, 8, 7, 0.1)
        t0 = time.perf_counter()
        sol = uf.solve_flow(model, 1e8, ts=ts, max_steps=args.max_steps)
        jax.block_until_ready(sol.log_loss)
        wall = time.perf_counter() - t0
        sv = np.asarray(sol.singular_values)
        ll = np.asarray(sol.log_loss)
        er = [float(uf.effective_rank_from_singular_values(sv[i])) for i in (i5, -1)]
        r = dict(seed=seed, status=sol.status_name(),
                 accepted=int(sol.num_steps) - int(sol.num_rejected),
                 rejected=int(sol.num_rejected), rescues=int(sol.num_rescues), wall_s=wall,
                 erank_1e5=er[0], erank_1e8=er[1], logloss_1e5=float(ll[i5]),
                 logloss_1e8=float(ll[-1]))
        rows.append(r)
        print(f"seed {seed:>5}: {r['status']:>9} {r['accepted']:>5} accepted ({r['rejected']} "
              f"rejected, {r['rescues']} rescues), {wall:.1f} s, log-loss at 1e8 "
              f"{r['logloss_1e8']:.7f}", flush=True)
    path = Path(args.out)
    done = json.loads(path.read_text()) if path.exists() else {}
    done[label] = dict(rows=rows, jax=jax.__version__, device=str(jax.devices()[0]),
                       package=os.path.dirname(uf.__file__))
    path.write_text(json.dumps(done, indent=1))


if __name__ == "__main__":
    main()
