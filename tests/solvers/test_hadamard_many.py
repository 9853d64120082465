"""`solve_hadamard_many` (hand-written batched Tsit5 with continuous batching) against
`solve_hadamard` (diffrax's Tsit5 through `_integrate`), an independent implementation of the
same method: same steps, same saves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufmflow as uf

K = 8
DEPTHS = (1.0, 1.5, 3.0, 8.0)


def _starts(n, scale=0.3, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.vmap(lambda k: uf.hadamard_initial_direction(k, K, scale))(keys)


@pytest.fixture(scope="module")
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


def test_failures_are_per_run_statuses():
    s0 = _starts(3)
    s0 = s0.at[1, 2].set(jnp.nan)
    sol = uf.solve_hadamard_many(s0, 2.0, 1e3, num_saves=4, slots=2)
    assert list(np.asarray(sol.status)) == [0, uf.STATUS_NAMES.index("nonfinite"), 0]
    ref = uf.solve_hadamard(s0[2], 2.0, 1e3, num_saves=4, method="fast")
    np.testing.assert_allclose(sol.s[2], ref.s, rtol=1e-10)
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


def test_edge_times_match_solve_hadamard():
    """`tau1 = 0` (every save at the start: no step) and save times that skip 0."""
    s0 = _starts(2)
    zero = uf.solve_hadamard_many(s0, 2.0, 0.0, num_saves=3)
    ref = uf.solve_hadamard(s0[0], 2.0, 0.0, num_saves=3)
    assert int(zero.num_steps[0]) == int(ref.num_steps) == 0
    np.testing.assert_array_equal(zero.s[0], ref.s)
    ts = jnp.asarray([0.5, 0.5, 7.0, 40.0])
    late = uf.solve_hadamard_many(s0, 3.0, 40.0, ts=ts, rtol=1e-9)
    ref = uf.solve_hadamard(s0[1], 3.0, 40.0, ts=ts, rtol=1e-9, method="fast")
    np.testing.assert_allclose(late.s[1], ref.s, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(late.s[1, 0], late.s[1, 1])  # a repeated time, twice


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vectorized_log_matches_numpy(dtype):
    """The bit-manipulation `log` used by the batched field (XLA's float64 `log` is scalar on a
    CPU) against numpy's, in ulps of the dtype, over all positive finite numbers (subnormals
    included: XLA's own float64 `log` flushes those to zero) and near 1."""
    from ufmflow.solvers._hadamard_many import _log

    fi = np.finfo(dtype)
    rng = np.random.default_rng(0)
    x = np.concatenate([np.geomspace(float(fi.smallest_subnormal), float(fi.max) / 2, 100001).astype(dtype),
                        np.asarray([fi.max], dtype),
                        rng.random(20000).astype(dtype) + fi.tiny,
                        (1 + 1e-3 * rng.standard_normal(20000)).astype(dtype)])
    got = np.asarray(jax.jit(_log)(jnp.asarray(x)))
    assert got.dtype == dtype
    ref = np.log(x.astype(np.float64))
    ulps = np.abs(got - ref) / np.spacing(np.abs(ref).astype(dtype))
    assert np.max(ulps) <= 2.0
    special = jnp.asarray([0.0, -0.0, -1.0, -fi.smallest_subnormal, np.inf, -np.inf, np.nan],
                          dtype)
    np.testing.assert_array_equal(_log(special), [-np.inf, -np.inf] + [np.nan] * 2
                                  + [np.inf] + [np.nan] * 2)


def test_transform_forms_agree(monkeypatch):
    """`_fwht0` (columns) as dense product and as butterflies, against `fwht` (rows)."""
    from ufmflow.solvers import _hadamard_many as hm

    for k in (4, 16, 64, 128):
        x = jax.random.normal(jax.random.PRNGKey(k), (k, 5))
        ref = uf.fwht(x.T).T
        for dense_max in (0, 1024):
            monkeypatch.setattr(hm, "_DENSE_MAX_K", dense_max)
            np.testing.assert_allclose(hm._fwht0(x), ref, rtol=1e-13, atol=1e-12 * k)


def test_save_location_converges_and_stops():
    """The early-exit Newton of `_invert_monotone` on log-like interpolants (where it creeps),
    against bisection to the last bit; rows without a save stay at 0."""
    from ufmflow.solvers._hadamard_many import _locate

    scale = jnp.asarray([1.0, 1e3, 1e6, 1e9])

    def w_at(theta):  # increasing on [0, 1], log-like for large scales
        return jnp.log1p(scale * theta) + 0.1 * theta

    target = w_at(jnp.asarray([0.25, 1e-4, 0.77, 0.5]))
    do = jnp.asarray([True, True, True, True])
    theta = _locate(w_at, target, do)
    lo, hi = jnp.zeros(4), jnp.ones(4)
    for _ in range(80):  # bisection reference
        mid = 0.5 * (lo + hi)
        below = w_at(mid) < target
        lo, hi = jnp.where(below, mid, lo), jnp.where(below, hi, mid)
    np.testing.assert_allclose(theta, hi, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(theta, [0.25, 1e-4, 0.77, 0.5], rtol=1e-12)
    skip = _locate(w_at, target, jnp.asarray([True, False, True, False]))
    assert float(skip[1]) == 0.0 and float(skip[3]) == 0.0
    np.testing.assert_allclose(skip[::2], theta[::2], rtol=1e-13, atol=1e-15)


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


def test_write_rows_and_columns_match_indexed_assignment():
    """The solver's per-slot writes (`dynamic_update_slice` in a loop over the masked slots,
    used instead of a scatter) against numpy's indexed assignment."""
    from ufmflow.solvers._hadamard_many import _write_columns, _write_rows

    rng = np.random.default_rng(0)
    buf = rng.standard_normal((7, 5, 3))
    rows, cols = np.array([2, 6, 0, 99, 4]), np.array([4, 1, 0, 99, 4])  # slot 3: masked out
    mask = np.array([True, True, True, False, True])
    vals = rng.standard_normal((5, 3))
    vals_j = jnp.asarray(vals)
    got = _write_rows(jnp.asarray(buf), (jnp.asarray(rows), jnp.asarray(cols)),
                      lambda j: vals_j[j], jnp.asarray(mask))
    want = buf.copy()
    want[rows[mask], cols[mask]] = vals[mask]
    np.testing.assert_array_equal(np.asarray(got), want)
    flat, ints = rng.standard_normal((7, 3)), np.arange(7, dtype=np.int32)
    news = np.array([10, 11, 12, 13, 14], np.int32)
    news_j = jnp.asarray(news)
    cols_buf = rng.standard_normal((3, 5))
    for m in (mask, np.zeros(5, bool), np.ones(5, bool) & (rows < 7)):
        got_f, got_i = _write_rows((jnp.asarray(flat), jnp.asarray(ints)), (jnp.asarray(rows),),
                                   lambda j: (vals_j[j], news_j[j]), jnp.asarray(m))
        want_f, want_i = flat.copy(), ints.copy()
        want_f[rows[m]], want_i[rows[m]] = vals[m], news[m]
        np.testing.assert_array_equal(np.asarray(got_f), want_f)
        np.testing.assert_array_equal(np.asarray(got_i), want_i)
        # Columns: column j of a (3, 5) buffer takes row j of `vals`.
        (got_c,) = _write_columns((jnp.asarray(cols_buf),), lambda j: (vals_j[j][:, None],),
                                  jnp.asarray(m))
        want_c = cols_buf.copy()
        want_c[:, m] = vals[m].T
        np.testing.assert_array_equal(np.asarray(got_c), want_c)


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
    env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
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


def test_log_field_is_the_reduced_ode_in_log_variables():
    """Pointwise, to rounding: `du/dtau` of `log_time_field` is the dense closed form
    `exp(hadamard_log_rates) / s` (theory §4), and its time change makes
    `||du/dsigma|| + 0.1 ||dz/dsigma|| = 1` with `z = Hk s / K`."""
    from ufmflow.solvers._hadamard_many import _LOGIT_WEIGHT, log_time_field

    k = 16
    rng = np.random.default_rng(3)
    s = rng.uniform(0.05, 40.0, (6, k))
    s[:, 0] = 0.0
    s[1, 5] = s[2, 3] = 0.0  # zeros stay zero: rate 0
    depth = np.array([1.0, 1.5, 2.0, 3.0, 8.0, 100.0])
    alpha = 2 * depth / (depth + 1)
    tau = np.array([0.0, 1.0, 10.0, 1e3, 1e6, 1e12])
    with np.errstate(divide="ignore"):
        u = np.log(s)
    du, dw = log_time_field(jnp.asarray(u.T), jnp.asarray(np.log1p(tau)), jnp.asarray(alpha))
    du, dw = np.asarray(du).T, np.asarray(dw)
    dtau = (1 + tau) * dw  # dtau/dsigma
    rates = np.exp(np.asarray(uf.hadamard_log_rates(jnp.asarray(s), jnp.asarray(depth)[:, None],
                                                    method="dense")))
    want = np.where(s > 0, rates / np.where(s > 0, s, 1.0), 0.0)  # d log s / dtau
    np.testing.assert_allclose(du / dtau[:, None], want, rtol=1e-12, atol=0)
    assert du[1, 5] == du[2, 3] == 0.0 and np.all(du[:, 0] == 0.0)
    h = np.asarray(uf.sylvester_hadamard(k))
    dz = (s * du) @ h.T / k
    np.testing.assert_allclose(
        np.linalg.norm(du, axis=1) + _LOGIT_WEIGHT * np.linalg.norm(dz, axis=1), 1.0, rtol=1e-13)


def test_field_shifts_do_not_change_the_field():
    """The solver's stages evaluate both fields with the per-column shifts (largest value,
    largest logit) of the step's start instead of their own: any shifts give the same field
    to rounding, and with none the field returns its own (the maxima)."""
    from ufmflow.solvers._hadamard_many import _log_field, _relative_field

    k = 16
    rng = np.random.default_rng(5)
    s = rng.uniform(0.05, 40.0, (k, 6))
    s[0] = 0.0
    s[5, 1] = 0.0
    depth = np.array([1.0, 1.5, 2.0, 3.0, 8.0, 100.0])
    alpha = jnp.asarray(2 * depth / (depth + 1))
    w = jnp.asarray(np.log1p([0.0, 1.0, 10.0, 1e3, 1e6, 1e12]))
    with np.errstate(divide="ignore"):
        u = np.log(s)
    z = np.asarray(uf.sylvester_hadamard(k)) @ s / k
    for field, x, own in ((_log_field, jnp.asarray(u), np.max(u[1:], axis=0)),
                          (_relative_field, jnp.asarray(s), np.max(s[1:], axis=0))):
        dx, dw, shifts = field(x, w, alpha)
        np.testing.assert_allclose(shifts[0], own, rtol=1e-15)
        np.testing.assert_allclose(shifts[1], np.max(z[1:], axis=0), rtol=1e-14)
        offset = jnp.asarray(rng.uniform(-3.0, 3.0, (2, 6)))
        moved = (shifts[0] + offset[0] if field is _log_field else shifts[0] * jnp.exp(offset[0]),
                 shifts[1] + offset[1])
        dx2, dw2, back = field(x, w, alpha, moved)
        assert all(np.array_equal(a, b) for a, b in zip(back, moved))
        np.testing.assert_allclose(dx2, dx, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(dw2, dw, rtol=1e-13)


@pytest.fixture(scope="module")
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
    (`log s = -inf`), and the rest follow the `"relative"` solution."""
    s0 = np.array(_starts(3, 0.5))
    s0[:, [2, 5]] = 0.0
    s0[1, 7] = 0.0
    kw = dict(num_saves=8, rtol=1e-10, atol=1e-14)
    log = uf.solve_hadamard_many(s0, 2.0, 1e4, time_change="log", **kw)
    lin = uf.solve_hadamard_many(s0, 2.0, 1e4, **kw)
    assert np.all(np.asarray(log.status) == 0)
    zero = np.broadcast_to(s0[:, None, :] == 0, log.s.shape)
    assert np.all(np.asarray(log.s)[zero] == 0.0)
    scale = np.max(np.abs(np.asarray(lin.s)), axis=-1, keepdims=True)
    assert np.max(np.abs(np.asarray(log.s - lin.s)) / scale) < 1e-8  # seen: 3.2e-10


def test_log_float32_agrees_with_float64():
    s0 = _starts(4)
    kw = dict(num_saves=6, rtol=1e-5, time_change="log")
    f32 = uf.solve_hadamard_many(s0.astype(jnp.float32), 3.0, 1e3, **kw)
    f64 = uf.solve_hadamard_many(s0, 3.0, 1e3, **kw)
    assert f32.s.dtype == jnp.float32 and np.all(np.asarray(f32.status) == 0)
    scale = np.max(np.abs(np.asarray(f64.s)), axis=-1, keepdims=True)
    assert np.max(np.abs(np.asarray(f32.s, np.float64) - np.asarray(f64.s)) / scale) < 1e-4


def test_log_time_change_bad_name():
    with pytest.raises(ValueError, match="time_change"):
        uf.solve_hadamard_many(jnp.ones((2, 4)), 2.0, 1.0, time_change="arc")


def test_save_metrics_match_the_public_functions():
    """The solver's blocked metrics of the saved states against `hadamard_loss`,
    `hadamard_log_loss`, `hadamard_margin` and `effective_rank_from_singular_values` applied
    to the whole array: a number of states that is not a multiple of the block, NaN rows (no
    save) staying NaN, and a zero entry (index 0, `s_0 = 0`)."""
    from ufmflow.solvers._hadamard_many import _save_metrics

    rng = np.random.default_rng(3)
    s = np.abs(rng.standard_normal((37, 5, 64))) * np.exp(rng.uniform(-3, 3, (37, 5, 1)))
    s[..., 0] = 0.0
    s[4, 3:] = np.nan
    got = jax.jit(_save_metrics)(jnp.asarray(s))
    want = dict(loss=uf.hadamard_loss(s), log_loss=uf.hadamard_log_loss(s),
                min_margin=uf.hadamard_margin(s),
                effective_rank=uf.effective_rank_from_singular_values(s))
    for name, value in want.items():
        assert np.all(np.isnan(np.asarray(got[name])[4, 3:])), name
        # loss = logsumexp(z) - z_0 cancels: its rounding is absolute, ~eps |z_0| (seen 1.8e-15)
        atol = 1e-13 if name == "loss" else 1e-15
        np.testing.assert_allclose(got[name], value, rtol=1e-13, atol=atol, err_msg=name)


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
