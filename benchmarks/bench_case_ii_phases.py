"""Where a full-GF run's steps go, phase by phase (theory §2.6, "Session 33: where the case-(ii)
steps go").

An experiment, not a timing. For chosen rows of issue 14's grid sample
(`bench_flow_grid.sample_grid(60, s)`, seed s + 1000 + row, as `bench_flow_grid.py --seed s`),
`solve_flow` runs at its defaults to t = 1e8 (`--max-steps` attempted steps, default 100,000 as
`solve_flow`'s own) with `--per-decade` times (log10(t1) + 2) + 1 log-spaced saves from 0.1 to t1
(the default 20: 201 saves to 1e8, about 22 per decade), and every
attempted step's GF time is recorded (through the progress report, `_progress._Bar.update`,
with `_integrate.EVERY` set to 1: the same steps, bit for bit, as without the report; grid row 6
of sample 1 takes 2226 attempted steps, 443 rejected, either way). The steps are then counted in
five windows of GF time, bounded by saves (s1, s2 the two largest singular values of the
class-mean logits):

1. `origin`: up to the last save before the first with s1 >= 1 (the plateau at the origin);
2. `escape_1`: from that save to the first with s1 >= 1 (the first mode's escape);
3. `rank_one`: from there to the last save before the first later one with s2 >= 1 (the
   rank-one phase: the valley of case (ii), where s1 grows to 1e9-1e10); empty when that is the
   next save, and then `escape_2` holds the rank-one stretch;
4. `escape_2`: from that save to the first with s2 >= 1 (the second mode's escape);
5. `after`: the rest, to t1.

A window is empty where its crossing never happens (a large init starts with s1 >= 1; a run
that stays rank one has no second escape). Steps that a stall rescue repeats are counted where
they are taken (`num_rescues` says how many returns there were). The JSON keeps each row's
trace of `(t, attempted, rejected)` per attempted step, thinned to about 400 entries. Rows
already in `--out` (by sample and row) are skipped, so runs can add to one file.

Session 33 (one core each; `benchmarks/results/bench_case_ii_phases.json`, read by theory §2.6
and the README):

    python benchmarks/bench_case_ii_phases.py --sample-seed 1 --rows 6,17,47,56,7,38,25 \
        --out benchmarks/results/bench_case_ii_phases.json
    python benchmarks/bench_case_ii_phases.py --sample-seed 0 --rows 6 \
        --out benchmarks/results/bench_case_ii_phases.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PHASES = ("origin", "escape_1", "rank_one", "escape_2", "after")


def _record_steps():
    """Patch the progress report to record `(w, attempted, rejected)` at every attempted step;
    returns the list it appends to."""
    from ufmflow.solvers import _integrate, _progress

    record = []

    def update(self, w, steps, rejected, status=""):
        record.append((float(w), int(steps), int(rejected)))

    _progress._Bar.update = update
    _integrate.EVERY = 1
    return record


def windows(ts, s1, s2):
    """The five windows (module docstring) as `(lo, hi)` GF-time bounds, `lo <= t < hi`, or
    `None` for a window whose crossing does not happen; from the saves `ts` and the two largest
    singular values there (saves a failed run did not reach are `nan` and left out)."""
    ts, s1, s2 = (np.asarray(a, float) for a in (ts, s1, s2))
    reached = np.isfinite(s1)
    ts, s1, s2 = ts[reached], s1[reached], s2[reached]
    inf = math.inf
    out = dict.fromkeys(PHASES)

    above1 = np.flatnonzero(s1 >= 1.0)
    if not above1.size:  # never escapes from the origin
        out["origin"] = (-inf, inf)
        return out
    i = int(above1[0])
    if i > 0:
        out["origin"] = (-inf, ts[i - 1])
        out["escape_1"] = (ts[i - 1], ts[i])
    start = ts[i] if i > 0 else -inf
    above2 = np.flatnonzero(s2[i:] >= 1.0)
    if not above2.size:  # rank one to the end
        out["rank_one"] = (start, inf)
        return out
    j = i + int(above2[0])
    if j == i:  # both modes escape together: no rank-one phase, no second escape
        out["after"] = (start, inf)
        return out
    out["rank_one"] = (start, ts[j - 1])
    out["escape_2"] = (ts[j - 1], ts[j])
    out["after"] = (ts[j], inf)
    return out


def count_phases(record, wins):
    """Attempted and rejected steps in each window of `wins` (`windows`), from the record of
    `(w, attempted, rejected)` at every attempted step."""
    rec = np.asarray(record, float).reshape(-1, 3)
    t = np.expm1(rec[:, 0])
    attempted = np.diff(np.concatenate([[0.0], rec[:, 1]]))
    rejected = np.diff(np.concatenate([[0.0], rec[:, 2]]))
    out = {}
    for name in PHASES:
        m = np.zeros_like(t, bool)
        if wins[name] is not None:
            lo, hi = wins[name]
            m = (t >= lo) & (t < hi)
        out[name] = dict(attempted=int(attempted[m].sum()), rejected=int(rejected[m].sum()))
    return out


def run_row(c, seed, t1, max_steps, per_decade, record):
    import jax
    import ufmflow as uf
    import bench_flow_grid as grid

    model = grid.make_model(c, seed)
    decades = int(round(math.log10(t1))) + 2
    ts = np.unique(np.concatenate([[0.0], np.logspace(-1.0, math.log10(t1),
                                                         per_decade * decades + 1)]))
    record.clear()
    t0 = time.perf_counter()
    sol = uf.solve_flow(model, t1, ts=ts, max_steps=max_steps, progress=True)
    jax.block_until_ready(sol.log_loss)
    wall = time.perf_counter() - t0
    sv = np.asarray(sol.singular_values)
    s2 = sv[:, 1] if sv.shape[1] > 1 else np.zeros(len(ts))
    wins = windows(ts, sv[:, 0], s2)
    phases = count_phases(record, wins)
    ll = np.asarray(sol.log_loss)

    def at(t):
        if not np.isfinite(t):
            return None
        i = int(np.argmin(np.abs(ts - t)))
        return dict(t=float(ts[i]), s1=float(sv[i, 0]), s2=float(s2[i]), log_loss=float(ll[i]))

    thin = record[:: max(1, len(record) // 400)]
    return dict(c, seed=seed, status=sol.status_name(), attempted=int(sol.num_steps),
                rejected=int(sol.num_rejected), rescues=int(sol.num_rescues),
                wall_s_with_compile=wall, phases=phases,
                windows={p: None if w is None else [at(w[0]), at(w[1])]
                         for p, w in wins.items()},
                trace=[(float(f"{math.expm1(w):.8g}"), s, r) for w, s, r in thin])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", required=True, help="comma-separated grid row indices")
    ap.add_argument("--sample-seed", type=int, default=1)
    ap.add_argument("--t1", type=float, default=1e8)
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument("--per-decade", type=int, default=20)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, HERE)
    import bench_flow_grid as grid

    record = _record_steps()
    configs = grid.sample_grid(60, args.sample_seed)
    rows = []
    if os.path.exists(args.out):
        rows = json.load(open(args.out))["rows"]
    done = {(r["sample_seed"], r["index"]) for r in rows}
    print(f"{'row':>4} {'K':>3} {'n':>2} {'w':>4} {'L':>3} {'init':>8} {'status':>9} "
          f"{'att':>6} {'rej':>5} {'resc':>4} " + " ".join(f"{p:>9}" for p in PHASES))
    for i in (int(x) for x in args.rows.split(",")):
        c = configs[i]
        seed = args.sample_seed + 1000 + i
        if (args.sample_seed, i) in done:
            continue
        row = dict(sample_seed=args.sample_seed,
                   **run_row(c, seed, args.t1, args.max_steps, args.per_decade, record))
        rows.append(row)
        ph = row["phases"]
        print(f"{i:4d} {c['K']:3d} {c['n']:2d} {c['width']:4d} {c['depth']:3d} "
              f"{str(c['init']):>8} {row['status']:>9} {row['attempted']:6d} "
              f"{row['rejected']:5d} {row['rescues']:4d} "
              + " ".join(f"{ph[p]['attempted']:9d}" for p in PHASES), flush=True)
        json.dump(dict(how=" ".join(sys.argv), jax=jax.__version__, rows=rows),
                  open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
