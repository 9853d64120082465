"""Full gradient flow on whatever device JAX has (GPU figures): chosen configurations of the
issue-14 grid, each in its own process with a wall-clock limit, through `bench_flow_grid.run`
(the same measurement as the grid benchmark: `uf.solve_flow(model, t1)` on its defaults,
compile measured on a short solve of the same program, then one warm full solve).

The configurations are issue 14's two size targets and the largest grid rows measured on the
CPU (`bench_flow_grid_large_s25.json`, `..._s26.json`: their CPU wall time is in `cpu_wall_s`
for the ratio, measured on one core of the 2-core machine, not in this run):

    python benchmarks/bench_flow_device.py --out flow_device.json [--budget 200]

A configuration whose process runs past its share of `--budget` is recorded as `timeout` with
its limit (its progress bar, on stderr, shows how far it got). Not a test: prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, config, t1, max_steps, cpu_wall_s): configs in bench_flow_grid's form (sample_grid
# index where there is one); cpu_wall_s = the warm full solve on the CPU, from the JSON above.
CASES = [
    ("grid-42", dict(index=42, K=64, n=4, width=256, depth=5, init=0.5), 1e8, 5000, 1100.5),
    ("target-2a", dict(index=None, K=32, n=4, width=40, depth=4, init="hadamard"), 1e5, 5000,
     None),
    ("grid-23", dict(index=23, K=4, n=4, width=256, depth=12, init=0.5), 1e8, 5000, 96.0),
    ("grid-20", dict(index=20, K=32, n=1, width=128, depth=16, init="hadamard"), 1e8, 5000,
     98.7),
    ("target-2b", dict(index=None, K=64, n=1, width=64, depth=8, init=0.1), 1e8, 1500, None),
    # the grid rows never measured to the end on the CPU (session 28: 38 hit its 2000-step cap
    # in 3285 s; 25 and 59 did not finish in 20 minutes; 51 was not run): with --dense, how
    # far each gets within its cap
    ("grid-38", dict(index=38, K=16, n=4, width=256, depth=16, init=0.5), 1e8, 3000, None),
    ("grid-25", dict(index=25, K=64, n=1, width=256, depth=6, init=0.1), 1e8, 2000, None),
    ("grid-59", dict(index=59, K=64, n=1, width=256, depth=8, init=0.1), 1e8, 2000, None),
    ("grid-51", dict(index=51, K=64, n=1, width=256, depth=16, init=0.1), 1e8, 1000, None),
]


def child(name: str, dense: bool = False) -> dict:
    sys.path.insert(0, HERE)
    import jax

    jax.config.update("jax_enable_x64", True)
    import bench_flow_grid as grid

    case = {c[0]: c for c in CASES}[name]
    _, config, t1, max_steps, cpu = case
    seed = 1000 + config["index"] if config["index"] is not None else 0
    t0 = time.perf_counter()
    row = grid.run(dict(config), seed, t1, False, max_steps, dense=dense)
    row.update(name=name, t1=t1, max_steps=max_steps, cpu_wall_s=cpu,
               total_s=time.perf_counter() - t0, backend=jax.default_backend(),
               device=str(jax.devices()[0]))
    if cpu:
        row["cpu_over_device"] = cpu / row["wall_s"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="flow_device.json")
    p.add_argument("--budget", type=float, default=200.0, help="seconds for all cases")
    p.add_argument("--cases", default=",".join(c[0] for c in CASES))
    p.add_argument("--dense", action="store_true",
                   help="saves at half decades: record how far a failed run got (t_reached)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("ROW " + json.dumps(child(args.child, args.dense)), flush=True)
        return 0
    names = args.cases.split(",")
    deadline = time.monotonic() + args.budget
    rows = []
    for i, name in enumerate(names):
        left = deadline - time.monotonic()
        limit = left / (len(names) - i) if name != names[-1] else left
        limit = max(limit, 5.0)
        t0 = time.perf_counter()
        try:
            res = subprocess.run([sys.executable, __file__, "--child", name]
                                 + (["--dense"] if args.dense else []),
                                 capture_output=True, text=True, timeout=limit)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("ROW ")]
            row = json.loads(lines[-1][4:]) if lines else dict(
                name=name, status="error", stderr=res.stderr[-2000:])
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            row = dict(name=name, status="timeout", limit_s=limit, stderr=err[-1500:])
        row["process_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{name:<10} {row.get('status'):<9} steps {row.get('steps', '-')!s:>5} "
              f"rej {row.get('rejected', '-')!s:>4} compile {row.get('compile_s', 0):6.1f}s "
              f"warm {row.get('wall_s', 0):7.1f}s {row.get('ms_per_step', 0):8.1f} ms/step "
              f"cpu/dev {row.get('cpu_over_device', 0):.2f} t_reached {row.get('t_reached', '-')}",
              flush=True)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
