"""Issue 14's grid in one table: the latest measurement of each of the 60 sampled
configurations (`bench_flow_grid.sample_grid(60, 0)`, seeds 1000 + row), gathered from the
result files that the grid benchmark and its large-row runs wrote over the sessions.

No solve runs here: this reads `benchmarks/results/` and prints, per row, status, accepted and
rejected steps, compile and warm wall time, time per attempted step, the session and file the
figures come from, and for a run that did not end ok how far it got; then the counts against
the issue's targets (ok to t = 1e8; at most 1000 accepted steps). Rows are taken from the files
in the order of `SOURCES` (later sessions replace earlier ones; a row that a later file only
records as stopped from outside does not replace a measured one).

    python benchmarks/grid_table.py [--out benchmarks/results/grid_table.json]

The figures come from different commits and machines (the `source` column says which): the
small rows from session 25's full rerun on one core (row 31 from session 22's), 31 of them
with P <= 1.2e5 and row 27 from session 31's rerun after its Krylov dimension K + N, the
large ones (P > 2e5) from sessions 25-29, one core each, and grid row 51 from the GPU
(session 29), where alone it was run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# (file under results/, session, machine), oldest first.
SOURCES = [
    ("bench_flow_grid_s22.json", 22, "cpu"),
    ("bench_flow_grid_s23.json", 23, "cpu"),
    ("bench_flow_grid_s25_rerun.json", 25, "cpu"),
    ("bench_flow_grid_large_s25.json", 25, "cpu"),
    ("bench_flow_grid_large_s26.json", 26, "cpu"),
    ("bench_flow_grid_large_s28.json", 28, "cpu"),
    ("gpu_s29/flow_device_s29.json", 29, "gpu"),
    ("bench_flow_grid_large_s29.json", 29, "cpu"),
    ("bench_flow_grid_s31_rerun.json", 31, "cpu"),
]

MEASURED = ("ok", "max_steps", "stalled", "nonfinite")


def _key(c):
    return (c["K"], c["n"], c["width"], c["depth"], str(c["init"]))


def gather(results=RESULTS):
    """`{row index: row}`: the latest measurement of every grid row found in `SOURCES`."""
    sys.path.insert(0, HERE)
    import bench_flow_grid as grid

    configs = grid.sample_grid(60, 0)
    by_key = {}
    for c in configs:
        by_key.setdefault(_key(c), []).append(c["index"])
    table = {}
    for name, session, machine in SOURCES:
        path = os.path.join(results, name)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            data = json.load(f)
        rows = data["rows"] if isinstance(data, dict) else data
        for r in rows:
            if "K" not in r:
                continue
            if r.get("index") is not None:
                indices = [r["index"]]
            else:  # older files: match the configuration and the seed 1000 + row
                indices = [i for i in by_key.get(_key(r), []) if r.get("seed") == 1000 + i]
            for i in indices:
                old = table.get(i)
                if old is not None and old["status"] in MEASURED and \
                        r.get("status") not in MEASURED:
                    continue
                table[i] = dict(r, index=i, session=session, machine=machine, file=name)
    return configs, table


def summarize(configs, table):
    measured = [table[i] for i in sorted(table) if table[i]["status"] in MEASURED]
    ok = [r for r in measured if r["status"] == "ok"]
    within = [r for r in ok if r["steps"] <= 1000]
    return dict(
        rows=len(configs),
        measured=len(measured),
        ok=len(ok),
        ok_within_1000_accepted=len(within),
        not_ok=[r["index"] for r in measured if r["status"] != "ok"],
        ok_over_1000=[r["index"] for r in ok if r["steps"] > 1000],
        not_measured_to_the_end=[
            c["index"] for c in configs
            if c["index"] not in table or table[c["index"]]["status"] not in MEASURED
        ],
    )


def _fmt(r, c):
    init = c["init"] if c["init"] == "hadamard" else f"{c['init']:g}"
    head = (f"{c['index']:>3} {c['K']:>3} {c['n']:>2} {c['width']:>4} {c['depth']:>3} "
            f"{init:>8}")
    if r is None:
        return head + "  not measured"
    steps = "-" if r.get("steps") is None else r["steps"]
    rej = "-" if r.get("rejected") is None else r["rejected"]
    line = (f"{head} {r.get('P', 0):>9} {r['status']:<9} {steps!s:>5} {rej!s:>5} "
            f"{r.get('compile_s') or 0:6.1f} {r.get('wall_s') or 0:8.1f} "
            f"{r.get('ms_per_step') or 0:8.1f}  s{r['session']} {r['machine']}")
    if r.get("attempted_at_stop") is not None:
        line += (f"  stopped from outside after {r['attempted_at_stop']} attempted steps "
                 f"({r['rejected_at_stop']} rejected, {r['solve_s_at_stop']} s)")
    if r.get("t_reached") is not None and r["status"] != "ok":
        line += f"  reached t={r['t_reached']:.3g}"
    return line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write the table and the counts as JSON")
    args = p.parse_args(argv)
    configs, table = gather()
    print("row   K  n width  L     init         P status    steps   rej compile     wall"
          "  ms/step  source")
    for c in configs:
        print(_fmt(table.get(c["index"]), c))
    counts = summarize(configs, table)
    print(json.dumps(counts))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(counts=counts, rows=[table.get(c["index"]) for c in configs]), f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
