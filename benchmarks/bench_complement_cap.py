"""The step cap for stiff directions outside the Krylov W, on rows of issue 14's grid (session 34).

`solve_flow`'s default caps a step whose Krylov space found no stiffness to the stability of
the stiff directions outside that space (`RosenbrockW(complement_dim=4)`, theory §2.6 "Stiff
directions the first slope does not excite"). For each row of a sample of
`bench_flow_grid.py`'s grid this runs, in one process and one after the other, the default
and the same solver without the cap (`RosenbrockW(..., complement_dim=None)`), to t = 1e8 at
rtol 1e-6, and records accepted and rejected steps, the first call (compile included), a
second call (warm), and the effective rank and log-loss at t = 1e5 and 1e8. For Hadamard
rows it also integrates the reduced ODE (`solve_hadamard`, rtol 1e-11), the exact flow, and
records how far each run ends from it.

    python benchmarks/bench_complement_cap.py --rows 29,43 \
        --out benchmarks/results/bench_complement_cap.json
    python benchmarks/bench_complement_cap.py --rows 54,0,42,18 --no-warm

Each row is added to `--out`'s `rows` as it finishes (the file rewritten), so an interrupted
run keeps what it measured. Prints a table. Timings are on a shared machine: compare the two
solvers within a row, not rows with each other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import ufmflow as uf  # noqa: E402
from ufmflow.solvers import _flow  # noqa: E402
from ufmflow.solvers._rosenbrock import RosenbrockW  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import bench_flow_grid as grid  # noqa: E402

T1 = 1e8


def erank(sv):
    return float(uf.effective_rank_from_singular_values(np.asarray(sv)))


def solvers(c):
    """The default solver (`flow_solver("rosenbrock")`) and the same without the cap."""
    m = _flow.default_krylov_dim(c["K"], c["n"])
    default = _flow.flow_solver("rosenbrock", m)
    uncapped = RosenbrockW(krylov_dim=m, stiff_projection=_flow.STIFF_PROJECTION,
                           filter_error=True, adaptive_dim=True, tableau=_flow.TABLEAU,
                           explicit_slow=_flow.EXPLICIT_SLOW)
    assert default.complement_dim == _flow.COMPLEMENT_DIM
    return dict(default=default, uncapped=uncapped)


def run(model, solver, ts, i5, max_steps, warm):
    t0 = time.perf_counter()
    sol = uf.solve_flow(model, T1, ts=ts, solver=solver, max_steps=max_steps)
    jax.block_until_ready(sol.log_loss)
    first = time.perf_counter() - t0
    out = dict(status=sol.status_name(), accepted=int(sol.num_steps) - int(sol.num_rejected),
               rejected=int(sol.num_rejected), first_call_s=first,
               erank_1e5=erank(sol.singular_values[i5]), erank_1e8=erank(sol.singular_values[-1]),
               logloss_1e5=float(sol.log_loss[i5]), logloss_1e8=float(sol.log_loss[-1]))
    if warm:
        t0 = time.perf_counter()
        jax.block_until_ready(uf.solve_flow(model, T1, ts=ts, solver=solver,
                                            max_steps=max_steps).log_loss)
        out["warm_s"] = time.perf_counter() - t0
    return out


def measure(sample_seed, index, max_steps, warm):
    c = grid.sample_grid(60, sample_seed)[index]
    seed = sample_seed + 1000 + index
    model = grid.make_model(c, seed)
    ts = jnp.array(np.unique(np.concatenate([[0.0, 1e5, T1], np.logspace(-1, 8, 37)])))
    i5 = int(np.argmin(np.abs(np.asarray(ts) - 1e5)))
    row = dict(c, sample_seed=sample_seed, seed=seed, P=grid.params(c["K"], c["n"], c["width"],
                                                                    c["depth"]))
    for name, solver in solvers(c).items():
        row[name] = run(model, solver, ts, i5, max_steps, warm)
    if c["init"] == "hadamard":
        s0 = uf.hadamard_initial_direction(jax.random.PRNGKey(seed), c["K"], 0.1)
        scale = uf.hadamard_time_scale(c["K"], c["n"], c["depth"])
        red = uf.solve_hadamard(s0, c["depth"], float(scale * T1), ts=scale * ts, rtol=1e-11,
                                atol=1e-14, max_steps=100_000)
        row["reduced"] = dict(erank_1e5=erank(red.s[i5, 1:]), erank_1e8=erank(red.s[-1, 1:]))
        for name in ("default", "uncapped"):
            row[name]["d_reduced_erank"] = max(
                abs(row[name][f"erank_{t}"] - row["reduced"][f"erank_{t}"]) for t in ("1e5", "1e8"))
    return row


def line(r):
    cfg = f"{r['index']:>3} K{r['K']} n{r['n']} w{r['width']} L{r['depth']} {r['init']}"
    d, u = r["default"], r["uncapped"]
    warm = (f" warm {u['warm_s']:.2f}/{d['warm_s']:.2f} s" if "warm_s" in d else "")
    extra = ""
    if "reduced" in r:
        extra = f" | vs reduced ODE {u['d_reduced_erank']:.1e}/{d['d_reduced_erank']:.1e}"
    diff = max(abs(d[f"erank_{t}"] - u[f"erank_{t}"]) for t in ("1e5", "1e8"))
    return (f"{cfg:<32} {u['status']}/{d['status']} accepted {u['accepted']}/{d['accepted']} "
            f"rejected {u['rejected']}/{d['rejected']}{warm} | erank diff {diff:.1e}{extra}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", required=True, help="indices of the grid sample, comma-separated")
    ap.add_argument("--sample-seed", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--no-warm", action="store_true", help="skip the second (warm) call")
    ap.add_argument("--out", default="benchmarks/results/bench_complement_cap.json")
    args = ap.parse_args()
    print("uncapped/default per row (default: the step cap, complement_dim="
          f"{_flow.COMPLEMENT_DIM}); rtol 1e-6, t1 = 1e8; jax {jax.__version__}, "
          f"{jax.devices()[0]}")
    for index in (int(i) for i in args.rows.split(",")):
        r = measure(args.sample_seed, index, args.max_steps, not args.no_warm)
        r["commit"] = grid._commit()
        print(line(r), flush=True)
        path = Path(args.out)
        done = json.loads(path.read_text()) if path.exists() else dict(rows=[])
        done["rows"].append(r)
        path.write_text(json.dumps(done, indent=1))


if __name__ == "__main__":
    main()
