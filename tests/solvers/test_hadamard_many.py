"""`solve_hadamard_many` (hand-written batched Tsit5 with continuous batching) against
`solve_hadamard` (diffrax's Tsit5 through `_integrate`), an independent implementation of the
same method: same steps, same saves."""

import os
import subprocess
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, xla_flags

import ufmflow as uf

K = 8
DEPTHS = (1.0, 1.5, 3.0, 8.0)
# The case's number of runs (3 starts at each of 2 scales, per depth). Tests that use this `N`,
# `K`, 12 saves and 5 slots reuse its compiled programs (these are static; values are data).
N_CASE = 6 * len(DEPTHS)


def _starts(n, scale=0.3, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.vmap(lambda k: uf.hadamard_initial_direction(k, K, scale))(keys)


@pytest.fixture(scope="session")
def case():
    n_per = 3
    s0 = jnp.concatenate([_starts(n_per, 0.3), _starts(n_per, 2.0, seed=1)])
    s0 = jnp.tile(s0, (len(DEPTHS), 1))
    depth = jnp.repeat(jnp.asarray(DEPTHS), 2 * n_per)
    kw = dict(num_saves=12, rtol=1e-8, atol=1e-12)
    many = uf.solve_hadamard_many(s0, depth, 1e5, slots=5, **kw)
    ref = jax.vmap(lambda s, d: uf.solve_hadamard(s, d, 1e5, method="fast", **kw))(s0, depth)
    return s0, depth, kw, many, ref


def test_same_steps_and_saves_as_solve_hadamard(case):
    _, _, _, many, ref = case
    assert np.all(np.asarray(many.status) == 0) and np.all(np.asarray(ref.status) == 0)
    # Same method, same step-size rules: the same accepted and rejected steps.
    np.testing.assert_array_equal(many.num_steps, ref.num_steps)
    np.testing.assert_array_equal(many.num_rejected, ref.num_rejected)
    scale = np.max(np.abs(np.asarray(ref.s)), axis=-1, keepdims=True)
    assert np.max(np.abs(np.asarray(many.s - ref.s)) / scale) < 1e-10
    np.testing.assert_allclose(many.log_loss, ref.log_loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(many.min_margin, ref.min_margin, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(many.s_final, ref.s_final, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(many.ts[0], ref.ts[0])


def test_dense_rate_reference_agrees(case):
    """Against the O(K^2) masked log-sum-exp rate (`solve_hadamard`'s default at this K): the
    fused fast-transform field differs by rounding only."""
    s0, depth, kw, many, _ = case
    i = np.array([0, 7, 14, 21])
    ref = jax.vmap(lambda s, d: uf.solve_hadamard(s, d, 1e5, **kw))(s0[i], depth[i])
    scale = np.max(np.abs(np.asarray(ref.s)), axis=-1, keepdims=True)
    assert np.max(np.abs(np.asarray(many.s[i] - ref.s)) / scale) < 1e-8


def test_slot_count_and_batch_mates_do_not_change_a_run(case):
    """Rows never interact; only XLA's vectorization of a different array shape may change
    the last bits (seen: 2e-13 relative after ~100 steps)."""
    s0, depth, kw, many, _ = case
    one = uf.solve_hadamard_many(s0[3:4], depth[3:4], 1e5, slots=1, **kw)
    np.testing.assert_allclose(one.s[0], many.s[3], rtol=1e-11, atol=1e-14)
    assert int(one.num_steps[0]) == int(many.num_steps[3])
    wide = uf.solve_hadamard_many(s0, depth, 1e5, slots=64, **kw)  # slots > N: capped at N
    np.testing.assert_allclose(wide.s, many.s, rtol=1e-11, atol=1e-14)
    np.testing.assert_array_equal(wide.num_steps, many.num_steps)


def test_failures_are_per_run_statuses(case):
    """A run that fails gets its status, the others go on. A NaN entry is refused where it can
    be seen; inside `jax.jit` (values traced, not checked) it is the run's status. (The
    module's shared case: the reference solutions and one compiled program are reused.)"""
    s0, depth, kw, _, ref = case
    s0 = s0.at[1, 2].set(jnp.nan)
    with pytest.raises(ValueError, match="s0 must be finite"):
        uf.solve_hadamard_many(s0, depth, 1e5, slots=2, **kw)
    sol = jax.jit(lambda s0: uf.solve_hadamard_many(s0, depth, 1e5, slots=2, **kw))(s0)
    want = [0] * len(depth)
    want[1] = uf.STATUS_NAMES.index("nonfinite")
    assert list(np.asarray(sol.status)) == want
    np.testing.assert_allclose(sol.s[2], ref.s[2], rtol=1e-10)
    capped = uf.solve_hadamard_many(s0[:1], 2.0, 1e3, num_saves=4, max_steps=5)
    assert int(capped.status[0]) == uf.STATUS_NAMES.index("max_steps")
    assert np.isnan(np.asarray(capped.s[0, -1])).all()


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="power of two"):
        uf.solve_hadamard_many(jnp.ones((2, 6)), 2.0, 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        uf.solve_hadamard_many(-jnp.ones((2, 4)), 2.0, 1.0)
    with pytest.raises(ValueError, match="depth"):
        uf.solve_hadamard_many(jnp.ones((2, 4)), 0.5, 1.0)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        uf.solve_hadamard_many(jnp.ones(4), 2.0, 1.0)
    # Each argument checked where it enters, by the shared checks (`_checks`), named.
    ok = jnp.ones((2, 4))
    for kwargs, name in ((dict(rtol=-1.0), "rtol"), (dict(rtol=0.0), "rtol"),
                         (dict(atol=-1e-9), "atol"), (dict(max_steps=0), "max_steps"),
                         (dict(max_steps=2.5), "max_steps"), (dict(slots=0), "slots"),
                         (dict(num_saves=1), "num_saves"), (dict(time_change="arc"), "time_change"),
                         (dict(ts=jnp.asarray([0.0, 2.0, 1.0])), "ts")):
        with pytest.raises(ValueError, match=name):
            uf.solve_hadamard_many(ok, 2.0, 1.0, **kwargs)
    for s0 in (ok.at[0, 1].set(jnp.nan), ok.at[1, 3].set(jnp.inf)):
        with pytest.raises(ValueError, match="s0 must be finite"):
            uf.solve_hadamard_many(s0, 2.0, 1.0)
    for tau1, name in ((-1.0, "tau1"), (float("nan"), "tau1")):
        with pytest.raises(ValueError, match=name):
            uf.solve_hadamard_many(ok, 2.0, tau1)
    with pytest.raises(ValueError, match="depth"):
        uf.solve_hadamard_many(ok, jnp.asarray([2.0, jnp.nan]), 1.0)


def test_edge_times_match_solve_hadamard(case):
    """`tau1 = 0` (every save at the start: no step) and save times that skip 0 (the module's
    shared case: the same compiled programs as its solves)."""
    s0, depth, kw, _, _ = case
    ref = jax.vmap(lambda s, d: uf.solve_hadamard(s, d, 0.0, method="fast", **kw))
    zero = uf.solve_hadamard_many(s0, depth, 0.0, slots=5, **kw)
    zero_ref = ref(s0, depth)
    assert np.all(np.asarray(zero.num_steps) == 0) and np.all(np.asarray(zero_ref.num_steps) == 0)
    np.testing.assert_array_equal(zero.s, zero_ref.s)
    # 12 save times (the case's count), the first two repeated, none at 0
    ts = jnp.asarray([0.5, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 40.0])
    # The case's tolerances (a float `rtol` is a compiled-in constant of `solve_hadamard`);
    # its `num_saves` is unused where `ts` is given.
    late = uf.solve_hadamard_many(s0, depth, 40.0, ts=ts, slots=5, **kw)
    late_ref = jax.vmap(lambda s, d: uf.solve_hadamard(s, d, 40.0, ts=ts, method="fast",
                                                       **kw))(s0, depth)
    np.testing.assert_allclose(late.s, late_ref.s, rtol=1e-10, atol=1e-14)
    # A repeated time, twice, bit for bit: on a run alone (the slot-count test's program). With
    # batch mates the two saves may differ in the last bit (seen: 1 ulp in 1 of 24 runs; the
    # save locations' Newton iterations, likely, running for all slots together).
    i = 13  # depth 3, init scale 0.3
    one = uf.solve_hadamard_many(s0[i:i + 1], depth[i:i + 1], 40.0, ts=ts, slots=1, **kw)
    np.testing.assert_allclose(one.s[0], late_ref.s[i], rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(one.s[0, 0], one.s[0, 1])


@pytest.mark.slow  # 20 s; test_log_float32_agrees_with_float64 covers float32 by default
def test_float32_stays_float32_and_agrees():
    """A float32 batch is solved in float32 (no silent promotion) and agrees with float64 to
    float32 accuracy."""
    s0 = _starts(4)
    kw = dict(num_saves=6, rtol=1e-5, atol=1e-9)
    f32 = uf.solve_hadamard_many(s0.astype(jnp.float32), 3.0, 1e3, **kw)
    f64 = uf.solve_hadamard_many(s0, 3.0, 1e3, **kw)
    assert f32.s.dtype == f32.s_final.dtype == f32.log_loss.dtype == jnp.float32
    assert np.all(np.asarray(f32.status) == 0)
    scale = np.max(np.abs(np.asarray(f64.s)), axis=-1, keepdims=True)
    assert np.max(np.abs(np.asarray(f32.s, np.float64) - np.asarray(f64.s)) / scale) < 1e-4


def test_fast_cpu_loops_flags_keep_the_users(monkeypatch):
    from ufmflow.solvers._xla import _LOOP_OPTION

    env = {}
    assert uf.fast_cpu_loops(env)
    assert env["XLA_FLAGS"] == f"--xla_backend_extra_options={_LOOP_OPTION}={2**62}"
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                        f"--xla_backend_extra_options=foo=1,{_LOOP_OPTION}=5"}
    assert uf.fast_cpu_loops(env)
    assert env["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2",
        f"--xla_backend_extra_options=foo=1,{_LOOP_OPTION}={2**62}"]
    # This process's backend has started: a warning, nothing changed.
    jax.devices()
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    with pytest.warns(UserWarning, match="before the first JAX computation"):
        assert not uf.fast_cpu_loops()


_CHILD = r"""
import sys, numpy as np, ufmflow as uf
assert uf.fast_cpu_loops()
import jax.numpy as jnp
from ufmflow.solvers import _hadamard_many as hm
d = np.load(sys.argv[1])
kw = dict(num_saves=12, rtol=1e-8, atol=1e-12)
sol = uf.solve_hadamard_many(d["s0"], d["depth"], 1e5, slots=5, **kw)
# How XLA compiled the solver: each loop compiled as one function is a call marked small_call.
args = (jnp.asarray(d["s0"]), uf.depth_exponent(jnp.asarray(d["depth"])),
        jnp.log1p(uf.default_save_times(1e5, 12)), jnp.asarray(1e-8), jnp.asarray(1e-12))
text = hm._solve_batch_jit(tuple(sorted(hm.compiler_options().items()))).lower(
    *args, slots=5, max_steps=4096).compile().as_text()
entry = text[text.index("ENTRY"):]
entry = entry[:entry.index("\n}")]
np.savez(sys.argv[2], s=sol.s, num_steps=sol.num_steps, num_rejected=sol.num_rejected,
         s_final=sol.s_final, calls=entry.count("xla_cpu_small_call"),
         whiles=entry.count(" while("))
"""


@pytest.mark.slow  # ~70 s with its fresh process; the flag's parsing is tested by default
def test_fast_cpu_loops_same_results_in_a_fresh_process(case, tmp_path):
    """`fast_cpu_loops()` (every solver loop compiled as one function) in a child process:
    the loops are compiled that way, and give the same steps and the same numbers to rounding
    as XLA's default here."""
    import subprocess
    import sys

    s0, depth, _, many, _ = case
    np.savez(tmp_path / "in.npz", s0=np.asarray(s0), depth=np.asarray(depth))
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = dict(__import__("os").environ, XLA_FLAGS=xla_flags())
    subprocess.run([sys.executable, str(script), str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npz")], check=True, env=env, timeout=600)
    out = np.load(tmp_path / "out.npz")
    # The solver's loop left the program's entry for a call compiled as one function.
    assert int(out["whiles"]) == 0 and int(out["calls"]) >= 1
    np.testing.assert_array_equal(out["num_steps"], many.num_steps)
    np.testing.assert_array_equal(out["num_rejected"], many.num_rejected)
    scale = np.max(np.abs(np.asarray(many.s)), axis=-1, keepdims=True)
    assert np.max(np.abs(out["s"] - np.asarray(many.s)) / scale) < 1e-11
    np.testing.assert_allclose(out["s_final"], many.s_final, rtol=1e-11, atol=1e-14)


# ------------------------------------------------------------------------------------------
# time_change="log": the state log s, the `log_time_field` time change, `_Log` error control
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def log_case(case):
    s0, depth, kw, _, _ = case
    log_kw = dict(kw, rtol=1e-10)
    sol = uf.solve_hadamard_many(s0, depth, 1e5, slots=5, time_change="log", **log_kw)
    return s0, depth, log_kw, sol


def test_log_time_change_agrees_with_relative(case, log_case):
    """Different state variables, time change and error control, the same trajectory: the log
    solution (rtol 1e-10) against diffrax's Tsit5 in `s` (rtol 1e-8), save by save."""
    ref = case[4]
    sol = log_case[3]
    assert np.all(np.asarray(sol.status) == 0)
    np.testing.assert_array_equal(sol.ts[0], ref.ts[0])
    scale = np.max(np.abs(np.asarray(ref.s)), axis=-1, keepdims=True)
    assert np.max(np.abs(np.asarray(sol.s - ref.s)) / scale) < 1e-7  # seen: 4.2e-8
    np.testing.assert_allclose(sol.s_final, ref.s_final, rtol=1e-7)  # seen: 3.3e-8
    np.testing.assert_allclose(sol.log_loss, ref.log_loss, rtol=1e-6, atol=1e-9)


def test_log_slots_do_not_change_a_run(log_case):
    s0, depth, kw, sol = log_case
    one = uf.solve_hadamard_many(s0[9:10], depth[9:10], 1e5, slots=1, time_change="log", **kw)
    np.testing.assert_allclose(one.s[0], sol.s[9], rtol=1e-11, atol=1e-14)
    assert int(one.num_steps[0]) == int(sol.num_steps[9])


def test_log_keeps_zero_singular_values_zero():
    """A low-rank start (theory §4: a support S with s_i = 0 elsewhere): zeros stay exactly 0
    (`log s = -inf`), and the rest follow the `"relative"` solution. (The case's shapes and
    static arguments: its two compiled programs.)"""
    s0 = np.array(_starts(N_CASE, 0.5))
    s0[:, [2, 5]] = 0.0
    s0[1, 7] = 0.0
    kw = dict(num_saves=12, rtol=1e-10, atol=1e-14, slots=5)
    log = uf.solve_hadamard_many(s0, 2.0, 1e4, time_change="log", **kw)
    lin = uf.solve_hadamard_many(s0, 2.0, 1e4, **kw)
    assert np.all(np.asarray(log.status) == 0)
    zero = np.broadcast_to(s0[:, None, :] == 0, log.s.shape)
    assert np.all(np.asarray(log.s)[zero] == 0.0)
    scale = np.max(np.abs(np.asarray(lin.s)), axis=-1, keepdims=True)
    assert np.max(np.abs(np.asarray(log.s - lin.s)) / scale) < 1e-8  # seen: 6.7e-10


def test_log_float32_agrees_with_float64():
    """(The case's shapes and static arguments: the float64 solve reuses the log case's
    compiled program.)"""
    s0 = _starts(N_CASE)
    kw = dict(num_saves=12, rtol=1e-5, time_change="log", slots=5)
    f32 = uf.solve_hadamard_many(s0.astype(jnp.float32), 3.0, 1e3, **kw)
    f64 = uf.solve_hadamard_many(s0, 3.0, 1e3, **kw)
    assert f32.s.dtype == jnp.float32 and np.all(np.asarray(f32.status) == 0)
    scale = np.max(np.abs(np.asarray(f64.s)), axis=-1, keepdims=True)
    err = np.max(np.abs(np.asarray(f32.s, np.float64) - np.asarray(f64.s)) / scale)
    assert err < 1e-4  # seen: 2.5e-5


def test_log_time_change_bad_name():
    with pytest.raises(ValueError, match="time_change"):
        uf.solve_hadamard_many(jnp.ones((2, 4)), 2.0, 1.0, time_change="arc")


def test_float32_from_a_tiny_init_finishes():
    """Float32 from init scale 1e-6 (K=16, depth 1..8, tau 1e6, rtol 1e-6): every run ends ok.
    Regression: with the field's shifts reused across a step's stages in float32 too, the
    stages' different rounding made the error estimate noisy there and 3 of these 16 runs
    ran out of steps (1002 steps per run against 375)."""
    keys = jax.random.split(jax.random.PRNGKey(0), 16)
    s0 = jax.vmap(lambda key: uf.hadamard_initial_direction(key, 16, 1e-6))(keys)
    depth = jnp.repeat(jnp.asarray([1.0, 2.0, 4.0, 8.0]), 4)
    sol = uf.solve_hadamard_many(s0.astype(jnp.float32), depth, 1e6, num_saves=4, rtol=1e-6,
                                 atol=1e-9, time_change="log")
    assert np.all(np.asarray(sol.status) == 0), np.asarray(sol.status)


# ------------------------------------------------------------------------------------------
# Reverse-mode gradients (the differentiable loop behind `_solve_batch_ad`)
# ------------------------------------------------------------------------------------------


# The "relative" form (46 s of CPU, the same loop and correction) is a thorough extra.
@pytest.mark.parametrize("time_change", ["log", pytest.param("relative", marks=pytest.mark.slow)])
def test_gradient_matches_central_differences(time_change):
    """`jax.grad` w.r.t. `s0` and `depth` through the saves, the final state and the log loss,
    against central differences of the plain (fast-loop) solve. Both differentiate the same
    discrete solution (steps, step-size control, save locations), so they agree up to the
    differences' own error: truncation `~eps^2` and rounding `~noise / eps`, where `noise` is
    the solve's rounding-level irregularity as a function of its input (the step-size rule
    amplifies rounding: its error estimate is a difference of nearly equal stage sums). In
    `"log"` eps = 1e-6 (relative) gave 2.6e-8 at most on this case. The `"relative"` solve is
    noisier (~1e-11 in `f`): for one entry the differences gave 2e-6, 1e-5, 1e-4, 1e-2 off the
    gradient at eps = 1e-4, 1e-5, 1e-6, 1e-8 (error growing as 1/eps: rounding, not a wrong
    derivative; its gradient agrees with the `"log"` one to 1e-7), so there eps = 1e-4: 6.4e-7
    at most. The bounds below leave ~40x."""
    k = 4
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    s0 = jax.vmap(lambda key: uf.hadamard_initial_direction(key, k, 0.5))(keys)
    depth = jnp.asarray([1.5, 2.0, 3.0])
    kw = dict(num_saves=4, rtol=1e-10, atol=1e-14, time_change=time_change)

    def f(s0, depth):
        sol = uf.solve_hadamard_many(s0, depth, 100.0, **kw)
        return (jnp.sum(jnp.log(sol.s_final[:, 1:])) + jnp.sum(sol.log_loss[:, 2])
                + jnp.sum(sol.s[:, 1] ** 2))

    value, (g_s0, g_depth) = jax.value_and_grad(f, argnums=(0, 1))(s0, depth)
    # The differentiable loop (one slot per run) computes the fast loop's numbers.
    np.testing.assert_allclose(value, f(s0, depth), rtol=1e-12)
    assert np.all(np.isfinite(np.asarray(g_s0))) and np.all(np.isfinite(np.asarray(g_depth)))
    np.testing.assert_allclose(g_s0[:, 0], 0.0, atol=1e-12)  # s_0 = 0 never moves
    eps = 1e-6 if time_change == "log" else 1e-4
    fd_s0 = np.zeros(s0.shape)
    for i in range(s0.shape[0]):
        for j in range(1, k):
            e = jnp.zeros(s0.shape).at[i, j].set(eps * s0[i, j])
            fd_s0[i, j] = (f(s0 + e, depth) - f(s0 - e, depth)) / (2 * eps * s0[i, j])
    fd_depth = np.array([(f(s0, depth + eps * jnp.eye(3)[i]) - f(s0, depth - eps * jnp.eye(3)[i]))
                         / (2 * eps) for i in range(3)])
    rtol = 1e-6 if time_change == "log" else 3e-5
    np.testing.assert_allclose(g_s0[:, 1:], fd_s0[:, 1:], rtol=rtol)
    np.testing.assert_allclose(g_depth, fd_depth, rtol=rtol)


# ------------------------------------------------------------------------------------------
# Every local device (issue 14 point 5)
# ------------------------------------------------------------------------------------------

SPREAD_SCRIPT = r"""
import sys
import numpy as np
import ufmflow as uf

count = int(sys.argv[3])
assert uf.use_cpu_cores(count) == count  # before the first JAX computation
import jax

assert jax.local_device_count() == count and jax.default_backend() == "cpu"
d = np.load(sys.argv[1])
kw = dict(num_saves=12, rtol=1e-8, atol=1e-12)
full = uf.solve_hadamard_many(d["s0"], d["depth"], 1e5, slots=5, **kw)     # 8 runs per device
short = uf.solve_hadamard_many(d["s0"][:-1], d["depth"][:-1], 1e5, slots=5, **kw)  # padded
np.savez(sys.argv[2], **{f"full_{k}": np.asarray(getattr(full, k)) for k in
                         ("s", "log_loss", "min_margin", "s_final", "status", "num_steps")},
         **{f"short_{k}": np.asarray(getattr(short, k)) for k in ("s", "num_steps")})
"""


def test_runs_spread_over_every_local_device_equal_one_device(case, tmp_path):
    """In a process with three CPU devices (`uf.use_cpu_cores(3)`), `solve_hadamard_many`
    deals the case's 24 runs over the devices by itself (8 each, 5 slots per device, as the
    one-device case) and gives every run its one-device result: the same steps and the same
    saves to rounding; 23 runs (padded to 24) as well. The child runs on the CPU
    (`JAX_PLATFORMS=cpu`); where this process runs on another backend (a GPU), the one-device
    result comes from a one-CPU-device child too, since a GPU's rounding differs from a CPU's."""
    s0, depth, _, many, _ = case
    np.savez(tmp_path / "in.npz", s0=np.asarray(s0), depth=np.asarray(depth))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env["XLA_FLAGS"] = xla_flags()  # this process's compile settings, no device count
    env["JAX_PLATFORMS"] = "cpu"

    def child(count):
        out = tmp_path / f"out{count}.npz"
        res = subprocess.run([sys.executable, "-c", SPREAD_SCRIPT, str(tmp_path / "in.npz"),
                              str(out), str(count)], capture_output=True, text=True,
                             env=env, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return np.load(out)

    out = child(3)
    if jax.default_backend() != "cpu":
        one = child(1)
        many = SimpleNamespace(**{k: one[f"full_{k}"] for k in
                                  ("s", "log_loss", "min_margin", "s_final", "status",
                                   "num_steps")})
    np.testing.assert_array_equal(out["full_status"], many.status)
    np.testing.assert_array_equal(out["full_num_steps"], many.num_steps)
    for name in ("s", "log_loss", "min_margin", "s_final"):
        np.testing.assert_allclose(out[f"full_{name}"], getattr(many, name), rtol=1e-12,
                                   atol=0, err_msg=name)
    np.testing.assert_array_equal(out["short_num_steps"], np.asarray(many.num_steps)[:-1])
    np.testing.assert_allclose(out["short_s"], np.asarray(many.s)[:-1], rtol=1e-12, atol=0)


def test_use_cpu_cores_sets_the_device_count_and_keeps_the_flags():
    env = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    assert uf.use_cpu_cores(4, environ=env) == 4
    assert env["XLA_FLAGS"].split() == ["--xla_cpu_multi_thread_eigen=false",
                                        "--xla_force_host_platform_device_count=4"]
    assert uf.use_cpu_cores(2, environ=env) == 4  # a count already there is the user's: kept
    assert env["XLA_FLAGS"].count("device_count") == 1
    fresh = {}
    assert uf.use_cpu_cores(environ=fresh) >= 1  # default: one per core
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="count"):
            uf.use_cpu_cores(bad, environ={})
    # this test process's backend has started: a warning, nothing changed
    before = os.environ.get("XLA_FLAGS")
    jax.numpy.zeros(1).block_until_ready()
    with pytest.warns(UserWarning, match="before the first JAX computation"):
        assert uf.use_cpu_cores(3) == jax.local_device_count()
    assert os.environ.get("XLA_FLAGS") == before
