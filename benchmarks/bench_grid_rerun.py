"""Rerun chosen rows of issue 14's grid at today's defaults, beside their last measurement.

Each row is `bench_flow_grid.run` (the grid benchmark's own solve: `solve_flow` at its
defaults to t1, seed 1000 + row, the compile measured on a short solve and excluded from
`wall_s`), and records next to it the figures `grid_table.json` held for that row before
(`old_steps`, `old_rejected`, `old_wall_s`, `old_status`, `old_session`) and the absolute
differences in effective rank and log-loss at t = 1e5 and t1 (`d_erank_1e5`, ...). The file
written is one of `grid_table.py`'s sources once listed there.

    python benchmarks/bench_grid_rerun.py --rows 0,6,7 --out benchmarks/results/x.json

Session 31 (the Krylov dimension K + N, theory §2.6): the 34 rows with P <= 1.2e5 other than
the case-(ii) rows 27 and 31, in processes pinned to one core each (two at a time):

    taskset -c 0 python benchmarks/bench_grid_rerun.py --out /tmp/a.json \
        --rows 0,6,11,17,18,24,29,43,45,47,50,55,58,1,3,14,26,28,30,33,35,54
    taskset -c 1 python benchmarks/bench_grid_rerun.py --out /tmp/b.json \
        --rows 7,9,12,13,15,19,41,52,53
    taskset -c 1 python benchmarks/bench_grid_rerun.py --out /tmp/c.json --rows 16,34,39

merged into `benchmarks/results/bench_flow_grid_s31_rerun.json` (with row 27's solve from
t = 0 at the new default, recorded by hand there: its `note` says how).

`--sample-seed s` takes the rows of `bench_flow_grid.sample_grid(60, s)` instead, seed
s + 1000 + row, as `bench_flow_grid.py --seed s` would; the "before" columns are then empty
(`grid_table.json` holds sample 0). Session 32's held-out rows of sample 1 above the grid
benchmark's `--max-params 3e4` (one core each, three runs, merged into
`benchmarks/results/bench_flow_grid_seed1.json`; row 39 of the third was stopped unfinished):

    python benchmarks/bench_grid_rerun.py --sample-seed 1 --max-steps 3000 \
        --rows 7,15,16,46,51,55,59,2,11 --out /tmp/seed1_more.json
    python benchmarks/bench_grid_rerun.py --sample-seed 1 --max-steps 3000 \
        --rows 36,31,23,33,35,4,52,5 --out /tmp/seed1_big.json
    python benchmarks/bench_grid_rerun.py --sample-seed 1 --max-steps 3000 \
        --rows 41,28,14,39,40,30,19 --out /tmp/seed1_big2.json

Session 33, the rows of that sample not run before (one core each) and the three case-(ii)
rows that stopped at the 3000 cap, with a cap of 30,000 (the file's `beyond_the_cap`):

    python benchmarks/bench_grid_rerun.py --sample-seed 1 --max-steps 3000 \
        --rows 30,19,44 --out /tmp/big3.json
    python benchmarks/bench_grid_rerun.py --sample-seed 1 --max-steps 3000 \
        --rows 8,38 --out /tmp/big4.json
    python benchmarks/bench_grid_rerun.py --sample-seed 1 --max-steps 30000 \
        --rows 47,56,25 --out /tmp/capped.json

Session 35 (steps that raise the loss rejected, the solver time rebased): the case-(ii) rows of
held-out sample 2 and three rows of sample 1 not rerun since session 33:

    python benchmarks/bench_grid_rerun.py --sample-seed 2 --max-steps 3000 --rows 6,47,30,58 \
        --out benchmarks/results/bench_flow_grid_seed2_s35.json
    python benchmarks/bench_grid_rerun.py --sample-seed 1 --max-steps 3000 --rows 44,31,8 \
        --out benchmarks/results/bench_flow_grid_seed1_s35.json

and the other 22 rows of sample 2 with P <= 3e4 (`--rows 0,1,3,13,14,17,18,21,29,35,40,44,49,52,51`,
`--rows 10,11,24,26,37,53`, `--rows 46`, the same options), merged with the four above into
`benchmarks/results/bench_flow_grid_seed2_s35_all.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", required=True, help="comma-separated grid row indices")
    ap.add_argument("--sample-seed", type=int, default=0,
                    help="which sample of the grid (bench_flow_grid.py --seed)")
    ap.add_argument("--t1", type=float, default=1e8)
    ap.add_argument("--max-steps", type=int, default=5_000)
    ap.add_argument("--table", default=os.path.join(HERE, "results", "grid_table.json"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, HERE)
    import bench_flow_grid as grid

    old = {}
    if args.sample_seed == 0:
        with open(args.table) as f:
            old = {r["index"]: r for r in json.load(f)["rows"]}
    configs = grid.sample_grid(60, args.sample_seed)
    rows = []
    for i in (int(a) for a in args.rows.split(",")):
        r = grid.run(configs[i], args.sample_seed + 1000 + i, args.t1, False, args.max_steps)
        o = old.get(i, {})
        r.update(old_steps=o.get("steps"), old_rejected=o.get("rejected"),
                 old_wall_s=o.get("wall_s"), old_status=o.get("status"),
                 old_session=o.get("session"))
        for key in ("erank_1e5", "logloss_1e5", "erank_1e8", "logloss_1e8"):
            both = r.get(key) is not None and o.get(key) is not None
            r["d_" + key] = abs(r[key] - o[key]) if both else None
        rows.append(r)
        print(f"row {i:2d}: {r['status']} {r['steps']} accepted ({r['rejected']} rejected), "
              f"{r['wall_s']:.1f} s; before: {o.get('status')} {o.get('steps')} "
              f"({o.get('rejected')}), {o.get('wall_s') or float('nan'):.1f} s (session "
              f"{o.get('session')}); |d| erank/log-loss at 1e5, t1: "
              + " ".join(f"{r['d_' + k]:.1e}" if r["d_" + k] is not None else "-"
                         for k in ("erank_1e5", "logloss_1e5", "erank_1e8", "logloss_1e8")),
              flush=True)
        with open(args.out, "w") as f:
            json.dump(dict(rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
