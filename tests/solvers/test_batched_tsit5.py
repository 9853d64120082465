"""The batched Tsit5 loop's parts (`ufmflow.solvers._batched_tsit5`, `_batched_writes`): the
method is diffrax's, the save location, the per-slot writes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest



def test_save_location_converges_and_stops():
    """The early-exit Newton of `_invert_monotone` on log-like interpolants (where it creeps),
    against bisection to the last bit; rows without a save stay at 0."""
    from ufmflow.solvers._batched_tsit5 import _locate

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


def test_write_rows_and_columns_match_indexed_assignment():
    """The solver's per-slot writes (`dynamic_update_slice` in a loop over the masked slots,
    used instead of a scatter) against numpy's indexed assignment."""
    from ufmflow.solvers._batched_writes import _write_columns, _write_rows

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


def test_method_is_diffrax_tsit5():
    """The loop's tableau, dense output and step-size rules are diffrax's: the coefficients are
    read from `diffrax.Tsit5.tableau`, the dense-output weights equal those of
    `diffrax.Tsit5.interpolation_cls` bit for bit, the controller's constants are
    `diffrax.PIDController`'s defaults."""
    import diffrax

    from ufmflow.solvers import _batched_tsit5 as bt

    tab = diffrax.Tsit5.tableau
    assert bt._C == tuple(tab.c) and bt._E == tuple(tab.b_error) and bt._B == tuple(tab.b_sol)
    assert all(a == tuple(row) for a, row in zip(bt._A, tab.a_lower, strict=True))
    pid = diffrax.PIDController(rtol=1e-6, atol=1e-9)
    assert (bt._SAFETY, bt._FACTOR_MIN, bt._FACTOR_MAX) == (pid.safety, pid.factormin,
                                                            pid.factormax)
    assert bt._ERROR_ORDER == diffrax.Tsit5().order(None) == 5
    # Dense output: diffrax's interpolation over [0, 1] with the identity as its 7 stages.
    interp = diffrax.Tsit5.interpolation_cls(t0=0.0, t1=1.0, y0=jnp.zeros(7), y1=None,
                                             k=jnp.eye(7))
    theta = jnp.linspace(0.0, 1.0, 101)
    want = jax.vmap(interp.evaluate)(theta)
    got = jnp.stack(bt._dense_weights(theta), axis=-1)
    np.testing.assert_array_equal(got, want)


def test_differentiable_loop_needs_one_slot_per_run():
    from ufmflow.solvers._batched_tsit5 import run_batch
    from ufmflow.solvers._hadamard_forms import FORMS

    with pytest.raises(ValueError, match="one slot per run"):
        run_batch(FORMS["log"], jnp.ones((3, 4)), jnp.ones(3), jnp.zeros(2), 1e-6, 1e-9,
                  slots=2, max_steps=10, differentiable=True)
