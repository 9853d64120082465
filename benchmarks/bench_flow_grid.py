"""Full gradient flow over the issue-14 grid: steps, rejections, compile and wall time, accuracy.

For a sample of configurations (K, per_class, width, depth, init) of the grid
K in {4, 8, 16, 32, 64}, per_class in {1, 4}, width in {K, 4K, 256}, depth in 1..8, 12, 16,
Gaussian scale in {0.01, 0.1, 0.5, 1} or a Hadamard init, this runs `uf.solve_flow(model, t1)`
on its defaults (the path users take) to t1 = 1e8 and records: status, accepted and rejected
steps, compile time (first call minus a warm call), warm wall time, time per attempted step,
the effective rank and log-loss at t = 1e5 and 1e8; with `--reference`, also the same from an
rtol-1e-9 solve and the differences. It prints a table, writes JSON, and fits the per-step cost
against the parameter count P and the number of logits K N on a log-log plot (slopes in the
JSON and the plot's legend).

    python benchmarks/bench_flow_grid.py --sample 60 --seed 0 --max-params 2e5 --reference \
        --out benchmarks/results/bench_flow_grid.json --plot benchmarks/results/flow_step_cost.png
    (session 22: `--out benchmarks/results/bench_flow_grid_s22.json --plot
    benchmarks/results/flow_step_cost_s22.png`; that command runs all 39 in order, about
    two hours on one core. Session 22 split it, with `--resume --skip 31` and then
    configuration 31 alone through `run(sample_grid(60, 0)[31], 1031, 1e8, True, 5000)`,
    merged into the rows and summarized)

The committed results come from that command at commit 53f22b0, pinned to one core (`taskset
-c 1`), stopped after 34 of the 60 configurations (about 85 minutes), and finished with the
same command plus `--resume --commit 53f22b0` at commit 3967d48 (the remaining 26, about 40
minutes; the solver's steps and numbers are the same at both commits, its time per step is
not). Every row records its commit.

What the committed results show where the issue's targets are not met (theory §2.6 has the
measurements): the 4 runs that hit the 5000-step cap (K=8, n=1, width 8, depth 7, 0.1;
K=16, n=4, width 64, depth 8, 0.1 and 0.5; K=64, n=1, width 64, depth 7, 0.1) are the
small-init rank-one phase of case (ii). After the escape the top singular value of the logits
grows to 1e10 and more while the loss depends on within-group differences of the logits about
1e-10 of their size: about 20,000 accepted steps per decade of that growth at rtol 1e-6, with
every W, error estimate, implicit method, tolerance and time change measured; at rtol 1e-6
the local errors also break ties that more accurate solutions keep, and each break is a very
fast event costing tens of thousands of steps (case (ii) at the defaults ends `stalled` at
t = 2.2e6). Of the accuracy misses, K=64, n=4, width 64, depth 16, Hadamard (0.18 in effective
rank) leaves the Hadamard manifold at the escape; K=16, n=4, width 64, depth 5, 0.01 (1.4e-3)
is still on the plateau at the origin, where the effective rank measures singular values of
order 1e-10.

Session 22 reran the same sample (`benchmarks/results/bench_flow_grid_s22.json`, plot
`flow_step_cost_s22.png`). Configurations 0-30 ran at commit f63d7d1, pinned to one core,
with the full solve run twice. The run was stopped at configuration 31 (K=64, n=1, width 64,
depth 7, 0.1: case (ii) at K=64, about 0.5 s per attempted step in the escape, so about 40
minutes per solve, twice). The rest ran with `--resume --skip 31` at 475766d, with the
compile measured on a short solve. Configuration 31 then ran alone at 3b093bf: `max_steps`
after 2004 s. 39 runs, 36 ok, 34 within 1000 accepted steps. The same 3 case-(ii) runs as
before hit the cap. K=16, n=4, width 64, depth 8, 0.5 is now ok in 3576
steps. 33 of the 36 agree with the reference within 1e-3. The per-step cost fits P^1.01.
Commit e3a7be4 changed only runs with K >= 17. Its effect on the K >= 32 rows of 0-30,
rerun with the same seeds: the same steps within 2, effective ranks within 1e-5 (K=64,
width 64, depth 16, Hadamard: 4.348 against 4.356; the reference differs from both by
about 1.5), and 1.1-2.2x less time.

Session 23 ran the sample again with `solve_flow`'s new default, the order-4 method RODAS4
(theory §2.6, "Order 4"), at 8874d48, one core, without `--reference`: `--max-steps 5000
--skip 5,6,11,18,31,53` and then those indices but 31 alone (the skip list was meant for other
rows), merged with each row's accuracy taken against session 22's reference of the same
configuration and seed (`bench_flow_grid_s23.json`, `flow_step_cost_s23.png`). 38 runs, 36
ok, 35 within 1000 accepted steps (median 89), the same two case-(ii) runs at the cap; 33 of
34 within 2.0e-4 of the reference; 0.55x session 22's accepted steps (median over the 36 ok
in both), 1.12x its time per step.

`benchmarks/grid_table.py` gathers the latest measurement of each of the 60 rows from all
these result files (and the large rows' and the GPU's) into one table.

`--max-params` skips configurations above a parameter count (the largest corner of the grid,
K=64, n=4, width 256, depth 16, has 1.1e6 parameters: minutes per run on 2 CPU cores); the
skipped ones are listed in the JSON, not silently dropped.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import ufmflow as uf

KS = (4, 8, 16, 32, 64)
NS = (1, 4)
DEPTHS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16)
INITS = (0.01, 0.1, 0.5, 1.0, "hadamard")


def widths(k):
    return (k, 4 * k, 256)


def params(k, n, d, depth):
    return d * k * n + (depth - 1) * d * d + k * d


def sample_grid(num, seed):
    """`num` configurations covering every value of every axis at least once, then random."""
    rng = np.random.default_rng(seed)
    out = []
    axes = dict(K=KS, n=NS, width_kind=(0, 1, 2), depth=DEPTHS, init=INITS)
    longest = max(len(v) for v in axes.values())
    for i in range(longest):  # covering: value i of every axis (cycled)
        out.append({a: v[i % len(v)] for a, v in axes.items()})
    while len(out) < num:
        out.append({a: v[rng.integers(len(v))] for a, v in axes.items()})
    for i, c in enumerate(out):
        c["index"] = i
        c["width"] = widths(c["K"])[c.pop("width_kind")]
        if c["init"] == "hadamard" and c["width"] < c["K"]:
            c["width"] = c["K"]
    return out


def make_model(c, seed):
    key = jax.random.PRNGKey(seed)
    if c["init"] == "hadamard":
        s0 = uf.hadamard_initial_direction(key, c["K"], 0.1)
        return uf.hadamard_init(jax.random.fold_in(key, 1), s0, c["n"], c["width"], c["depth"])
    return uf.gaussian_init(key, c["K"], c["n"], c["width"], c["depth"], c["init"])


def at(sol, t):
    i = int(np.argmin(np.abs(np.asarray(sol.ts) - t)))
    sv = np.asarray(sol.singular_values[i])
    return float(uf.effective_rank_from_singular_values(sv)), float(sol.log_loss[i])


def _timed(model, t1, ts, max_steps, progress=False):
    t0 = time.perf_counter()
    sol = uf.solve_flow(model, t1, ts=ts, max_steps=max_steps, progress=progress)
    jax.block_until_ready(sol.log_loss)
    return sol, time.perf_counter() - t0


def run(c, seed, t1, reference, max_steps, dense=False):
    """One configuration. The compile is measured on a short solve of the same program
    (`t1` and `ts` are data: a first call to t = 1e-3 minus a second one), then the full solve
    runs once, compiled (rows before session 22 ran the full solve twice instead). `dense`
    adds saves at 10^-1, 10^-0.5, .., t1 (saves do not change the steps: theory §2.4) and
    records how far a failed run got: `t_reached`, the last save reached, with its log-loss
    and two largest singular values; its solves show `solve_flow`'s progress bar on stderr
    (how far a run stopped from outside got)."""
    model = make_model(c, seed)
    short = jnp.array([0.0, 1e-4, 1e-3])
    _, first = _timed(model, 1e-3, short, max_steps, dense)
    _, again = _timed(model, 1e-3, short, max_steps, dense)
    ts = jnp.array([0.0, 1e5, t1])
    if dense:
        grid = np.logspace(-1.0, np.log10(t1), int(round(2 * (np.log10(t1) + 1))) + 1)
        ts = jnp.array(np.unique(np.concatenate([[0.0, 1e5, t1], grid])))
    sol, warm = _timed(model, t1, ts, max_steps, dense)
    row = dict(c, seed=seed, P=params(c["K"], c["n"], c["width"], c["depth"]),
               KN=c["K"] * c["K"] * c["n"], status=sol.status_name(),
               steps=int(sol.num_steps) - int(sol.num_rejected), rejected=int(sol.num_rejected),
               compile_s=max(first - again, 0.0), wall_s=warm,
               ms_per_step=1e3 * warm / max(int(sol.num_steps), 1), timing="short-probe")
    if dense:
        reached = np.flatnonzero(np.isfinite(np.asarray(sol.log_loss)))
        last = int(reached[-1]) if reached.size else 0
        sv = np.asarray(sol.singular_values[last])
        row.update(t_reached=float(sol.ts[last]), logloss_reached=float(sol.log_loss[last]),
                   s1_reached=float(sv[0]), s2_reached=float(sv[1]) if sv.size > 1 else None)
    row["erank_1e5"], row["logloss_1e5"] = at(sol, 1e5)
    row["erank_1e8"], row["logloss_1e8"] = at(sol, t1)
    if reference and row["status"] == "ok":  # a failed run has nothing to compare
        ref = uf.solve_flow(model, t1, ts=ts, rtol=1e-9, max_steps=max_steps)
        for tag, t in (("1e5", 1e5), ("1e8", t1)):
            er, ll = at(ref, t)
            row[f"ref_erank_{tag}"], row[f"ref_logloss_{tag}"] = er, ll
            row[f"d_erank_{tag}"] = abs(row[f"erank_{tag}"] - er)
            row[f"d_logloss_{tag}"] = abs(row[f"logloss_{tag}"] - ll)
        row["ref_status"] = ref.status_name()
    return row


def _commit():
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _resume(configs, path, max_params, commit=None, skip=()):
    """The rows and skipped configurations already in `path`, and the index of the first
    configuration of `configs` they do not cover. Checks that they are this sample's first
    configurations, in order; rows without a commit get the file's (or `commit`)."""
    with open(path) as f:
        done = json.load(f)
    rows, skipped = done["rows"], done["skipped"]
    start = len(rows) + len(skipped)
    keys = ("K", "n", "width", "depth", "init")
    it_rows, it_skip = iter(rows), iter(skipped)
    for c in configs[:start]:
        big = params(c["K"], c["n"], c["width"], c["depth"]) > max_params or c["index"] in skip
        got = next(it_skip if big else it_rows, None)
        if got is None or any(got[k] != c[k] for k in keys):
            raise SystemExit(f"--resume: {path} does not hold this sample's first {start} "
                             "configurations (other --sample, --seed or --max-params?)")
    old = done.get("commit") or done.get("summary", {}).get("commit") or commit
    for r in rows:
        r.setdefault("commit", old)
    return rows, skipped, start


def fit_slope(x, y):
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0])


def summarize(rows, skipped, args, interrupted=False, commit=None):
    """The summary (printed and written with the rows) and the per-step cost plot. `commit`:
    the code the rows were measured with (default: this checkout's)."""
    ok = [r for r in rows if r["status"] == "ok"]
    summary = dict(
        runs=len(rows), ok=len(ok), skipped=len(skipped),
        within_1000_steps=sum(r["steps"] <= 1000 for r in ok),
        median_steps=float(np.median([r["steps"] for r in ok])) if ok else None,
        max_steps=max((r["steps"] for r in ok), default=None),
        # The cost per step is measured on every run, failed ones included.
        slope_vs_P=fit_slope([r["P"] for r in rows], [r["ms_per_step"] for r in rows]),
        slope_vs_KN=fit_slope([r["KN"] for r in rows], [r["ms_per_step"] for r in rows]),
        max_steps_per_solve=args.max_steps, commit=commit or _commit(),
        row_commits=sorted({r["commit"] for r in rows if r.get("commit")}), jax=jax.__version__,
        device=str(jax.devices()[0]),
    )
    if args.reference and ok:
        for k in ("d_erank_1e5", "d_erank_1e8", "d_logloss_1e5", "d_logloss_1e8"):
            summary["max_" + k] = max(r[k] for r in ok)
    summary["interrupted"] = interrupted  # the sample's remaining configurations not run
    print(json.dumps(summary, indent=1))
    with open(args.out, "w") as f:
        json.dump(dict(summary=summary, rows=rows, skipped=skipped), f, indent=1)
    if rows and args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, key, slope in ((axes[0], "P", summary["slope_vs_P"]),
                               (axes[1], "KN", summary["slope_vs_KN"])):
            ax.loglog([r[key] for r in rows], [r["ms_per_step"] for r in rows], "o", ms=4,
                      label=f"slope {slope:.2f}")
            ax.set_xlabel("parameters P" if key == "P" else "logits K N")
            ax.set_ylabel("ms per attempted step")
            ax.legend()
        fig.suptitle(f"solve_flow defaults, cost per step ({len(rows)} runs, {jax.devices()[0]})")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0, help="sampling seed and first init seed")
    ap.add_argument("--t1", type=float, default=1e8)
    ap.add_argument("--max-params", type=float, default=2e5)
    ap.add_argument("--reference", action="store_true", help="also an rtol-1e-9 solve")
    ap.add_argument("--max-steps", type=int, default=5_000,
                    help="attempted steps per solve (solve_flow's default is 100,000; the "
                         "target is 1000 accepted, so a run that needs 5000 has failed it)")
    ap.add_argument("--out", default="benchmarks/results/bench_flow_grid.json")
    ap.add_argument("--plot", default="benchmarks/results/flow_step_cost.png")
    ap.add_argument("--commit", default=None,
                    help="with --summarize: the commit the rows were measured at, if the rows "
                         "file does not say")
    ap.add_argument("--resume", action="store_true",
                    help="continue the sample where the rows already in --out stop (same "
                         "--sample and --seed; every row keeps the commit it was measured at)")
    ap.add_argument("--skip", default="",
                    help="comma-separated sample indices not to run (listed in the JSON's "
                         "skipped with the reason), e.g. a case known to take an hour")
    ap.add_argument("--summarize", action="store_true",
                    help="only rebuild the summary and plot from the rows already in --out "
                         "(e.g. of an interrupted run; marked interrupted)")
    args = ap.parse_args()
    if args.summarize:
        with open(args.out) as f:
            done = json.load(f)
        summarize(done["rows"], done["skipped"], args, interrupted=True,
                  commit=done.get("commit") or args.commit)
        return
    configs = sample_grid(args.sample, args.seed)
    skip = {int(i) for i in args.skip.split(",") if i.strip()}
    rows, skipped, start = [], [], 0
    if args.resume:
        rows, skipped, start = _resume(configs, args.out, args.max_params, args.commit, skip)
    print(f"{'K':>3} {'n':>2} {'d':>4} {'L':>3} {'init':>8} {'P':>8} {'status':>9} {'steps':>6} "
          f"{'rej':>5} {'compile':>8} {'wall':>8} {'ms/step':>8} {'erank':>7}")
    for i, c in enumerate(configs):
        if i < start:
            continue
        if params(c["K"], c["n"], c["width"], c["depth"]) > args.max_params:
            skipped.append(c)
            continue
        if i in skip:
            skipped.append(dict(c, reason="--skip"))
            continue
        r = run(c, args.seed + 1000 + i, args.t1, args.reference, args.max_steps)
        r["commit"] = _commit()
        rows.append(r)
        print(f"{r['K']:>3} {r['n']:>2} {r['width']:>4} {r['depth']:>3} {str(r['init']):>8} "
              f"{r['P']:>8} {r['status']:>9} {r['steps']:>6} {r['rejected']:>5} "
              f"{r['compile_s']:>7.1f}s {r['wall_s']:>7.2f}s {r['ms_per_step']:>8.2f} "
              f"{r['erank_1e8']:>7.3f}", flush=True)
        with open(args.out, "w") as f:  # nothing lost on interruption
            json.dump(dict(rows=rows, skipped=skipped, commit=_commit()), f, indent=1)
    summarize(rows, skipped, args)


if __name__ == "__main__":
    main()
