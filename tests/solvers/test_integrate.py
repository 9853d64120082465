"""The one driver `integrate` on `dx/dt = x` (closed form `x0 e^t`): saves, the terminating
event (the mechanism of `flow_until`) and the derivative of the event time."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ufmflow.solvers._integrate import integrate
from ufmflow.solvers._status import STATUS_OK


def _field(sigma, y, args):
    x, w = y
    return x, jnp.exp(-w)  # g = 1: sigma = t, w = log1p(t)


@jax.jit
def _run(x0, ts, level):
    res = integrate(
        _field, x0, jnp.log1p(ts), lambda x: dict(x=x),
        solver=diffrax.Tsit5(),
        controller=diffrax.PIDController(rtol=1e-11, atol=1e-13),
        max_steps=1000, event=lambda x: x - level,
    )
    return res.saved["x"], res.x_final, res.t_final, res.event_fired, res.status


TS = jnp.array([0.0, 0.5, 1.0, 2.0])


def test_event_stops_at_its_root_and_saves_before_it():
    x0 = jnp.asarray(1.0)
    saved, x, t, fired, status = _run(x0, TS, 3.0)
    assert bool(fired) and int(status) == STATUS_OK
    assert float(t) == pytest.approx(np.log(3.0), rel=1e-10)
    assert float(x) == pytest.approx(3.0, rel=1e-10)
    np.testing.assert_allclose(saved[:3], np.exp(np.asarray(TS[:3])), rtol=1e-9)
    assert np.isnan(float(saved[3]))  # after the event: not reached


def test_last_save_before_the_event_ends_the_run_even_in_the_same_step():
    # t1 = 1.0986 < ln 3 = 1.098612...: the event lies past t1, inside the same step (as many
    # saves as TS: the compiled `_run` of the other tests serves)
    ts = jnp.array([0.0, 0.5, 1.0, 1.0986])
    saved, x, t, fired, status = _run(jnp.asarray(1.0), ts, 3.0)
    assert not bool(fired) and int(status) == STATUS_OK
    assert float(t) == pytest.approx(1.0986, rel=1e-12)
    assert float(x) == pytest.approx(np.exp(1.0986), rel=1e-9)
    np.testing.assert_allclose(saved, np.exp(np.asarray(ts)), rtol=1e-9)


def test_event_already_true_at_the_start_stops_at_once():
    _, x, t, fired, _ = _run(jnp.asarray(4.0), TS, 3.0)
    assert bool(fired) and float(t) == 0.0 and float(x) == 4.0


def test_event_time_is_differentiable():
    """`t* = log(level / x0)`: `dt*/dx0 = -1/x0`, `dt*/dlevel = 1/level` (implicit function
    theorem on the dense interpolant; the step sizes also depend on `x0`, an O(rtol) term)."""
    g = jax.grad(lambda x0, lv: _run(x0, TS, lv)[2], argnums=(0, 1))(jnp.asarray(1.5), 3.0)
    np.testing.assert_allclose([float(g[0]), float(g[1])], [-1 / 1.5, 1 / 3.0], rtol=1e-8)


def _prothero_robinson(lam):
    """`dx/dt = lam (x - cos t) - sin t` in the loop's `(x, w = log1p(t))` form, `g = 1`:
    `x = cos t + (x0 - 1) e^(lam t)`."""

    def field(sigma, y, args):
        x, w = y
        t = jnp.expm1(w)
        return lam * (x - jnp.cos(t)) - jnp.sin(t), jnp.exp(-w)

    return field


def test_stiff_solver_saves_by_substeps_match_the_exact_solution():
    # Prothero-Robinson, dx/dt = lam (x - cos t) - sin t with lam = -1e6: x = cos t exactly.
    # The Rosenbrock-W steps stay on cos t to the tolerance, but its Hermite dense output
    # (raw field at both ends) carries an endpoint's deviation e as h lam e into the step
    # (3.7e-3 here when saving on it). `substep_saves` saves the end of a step of the method
    # from the crossing step's start to the save time (theory §2.4).
    from ufmflow.solvers._rosenbrock import RosenbrockW

    field = _prothero_robinson(-1e6)

    ts = jnp.linspace(0.0, 3.0, 16)

    def run(substep_saves):
        return jax.jit(lambda: integrate(
            field, jnp.array([1.0]), jnp.log1p(ts), lambda x: dict(x=x[0]),
            solver=RosenbrockW(krylov_dim=2),
            controller=diffrax.PIDController(rtol=1e-6, atol=1e-9, pcoeff=0.0, icoeff=1.0),
            max_steps=10_000, substep_saves=substep_saves))()

    res, interpolated = run(True), run(False)
    assert int(res.status) == STATUS_OK
    # The sub-steps leave the step sequence alone: same steps as saving on the interpolant.
    assert int(res.num_steps) == int(interpolated.num_steps)
    np.testing.assert_allclose(res.saved["x"], np.cos(np.asarray(ts)), rtol=0, atol=1e-5)
    # ... and the interpolant is what fails here (the reason for substeps).
    assert np.max(np.abs(interpolated.saved["x"] - np.cos(np.asarray(ts)))) > 1e-3
    with pytest.raises(ValueError, match="substep_saves"):
        integrate(field, jnp.array([1.0]), jnp.log1p(ts), lambda x: dict(x=x[0]),
                  solver=diffrax.Tsit5(), controller=diffrax.PIDController(1e-6, 1e-9),
                  max_steps=10, substep_saves=True)


def test_substep_saves_as_loop_iterations_equal_those_of_the_save_loop():
    # With no event, `integrate` runs RosenbrockW's sub-step saves as iterations of the step
    # loop of their own (the stages compiled once); with an event, inside the save loop
    # (theory §2.4). Without the very-stiff projection (the one difference: its step size)
    # both are the same method: the same steps and the same saved states. More saves than
    # steps: several saves fall in one step. A run given exactly the steps it needs still
    # writes the saves of its last step.
    from ufmflow.solvers._rosenbrock import RosenbrockW

    field = _prothero_robinson(-50.0)

    ts = jnp.linspace(0.0, 3.0, 400)

    def run(event, max_steps=10_000):
        return jax.jit(lambda: integrate(
            field, jnp.array([1.3]), jnp.log1p(ts), lambda x: dict(x=x[0]),
            solver=RosenbrockW(krylov_dim=2),
            controller=diffrax.PIDController(rtol=1e-6, atol=1e-9),
            max_steps=max_steps, substep_saves=True, event=event))()

    merged = run(None)
    looped = run(lambda x: x[0] - 10.0)  # never fires
    assert int(merged.status) == int(looped.status) == STATUS_OK
    assert int(merged.num_steps) == int(looped.num_steps) < len(ts)
    assert int(merged.num_rejected) == int(looped.num_rejected)
    # (bit for bit at XLA's default optimization level; at the suite's level 0 the two
    # programs round the rebased solver time differently, `_rebase.rebased`: 6e-13)
    np.testing.assert_allclose(merged.saved["x"], looped.saved["x"], rtol=2e-12, atol=1e-15)
    np.testing.assert_allclose(merged.x_final, looped.x_final, rtol=2e-12)
    t = np.asarray(ts)
    np.testing.assert_allclose(merged.saved["x"], np.cos(t) + 0.3 * np.exp(-50.0 * t),
                               atol=1e-4)  # the exact solution from x0 = 1.3
    exact = run(None, max_steps=int(merged.num_steps))
    assert int(exact.status) == STATUS_OK
    np.testing.assert_array_equal(exact.saved["x"], merged.saved["x"])
    short = run(None, max_steps=int(merged.num_steps) - 1)
    assert int(short.status) != STATUS_OK and np.isnan(np.asarray(short.saved["x"])[-1])


# Stall rescue (theory §2.7): a run that would end `stalled`/`nonfinite` goes back to its last
# save with a tighter tolerance.

def _walled(t_from, t_to):
    """`dx/dt = -x` whose field is nan for `t_from < t < t_to`: no step can enter that span, so
    every solve stalls at its start (the step shrinks to nothing), whatever the tolerance."""

    def field(sigma, y, args):
        x, w = y
        t = jnp.expm1(w)
        inside = (t > t_from) & (t < t_to)
        return jnp.where(inside, jnp.nan, -x), jnp.exp(-w)

    return field


def _rescue_run(field, ts, rescue, max_steps=5000):
    return jax.jit(lambda: integrate(
        field, jnp.asarray(1.0), jnp.log1p(ts), lambda x: dict(x=x),
        solver=diffrax.Tsit5(), controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
        max_steps=max_steps, rescue=rescue))()


def test_rescue_leaves_a_run_that_never_stalls_unchanged_bit_for_bit():
    ts = jnp.linspace(0.0, 3.0, 7)
    plain = _rescue_run(_walled(10.0, 11.0), ts, ())
    rescued = _rescue_run(_walled(10.0, 11.0), ts, (10.0, 30.0))
    assert int(plain.status) == int(rescued.status) == STATUS_OK
    assert int(rescued.num_rescues) == 0
    assert int(plain.num_steps) == int(rescued.num_steps)
    np.testing.assert_array_equal(plain.saved["x"], rescued.saved["x"])
    np.testing.assert_allclose(rescued.saved["x"], np.exp(-np.asarray(ts)), rtol=1e-7)


def test_rescue_goes_back_to_the_last_save_once_per_factor_then_reports_the_failure():
    # The wall (1.25, 1.6) stops every tolerance: the run goes back to its save at t = 1 once
    # per factor, and then ends as it would have without the rescue, at the same save, with
    # the saves before it exact and one more attempt's steps for each return.
    from ufmflow.solvers._status import STATUS_STALLED

    ts = jnp.array([0.0, 0.5, 1.0, 2.0, 3.0])
    plain = _rescue_run(_walled(1.25, 1.6), ts, ())
    rescued = _rescue_run(_walled(1.25, 1.6), ts, (10.0, 30.0, 100.0))
    assert int(plain.status) == int(rescued.status) == STATUS_STALLED
    assert int(plain.num_rescues) == 0 and int(rescued.num_rescues) == 3
    for res in (plain, rescued):
        np.testing.assert_allclose(res.saved["x"][:3], np.exp(-np.asarray(ts[:3])), rtol=1e-7)
        assert np.all(np.isnan(np.asarray(res.saved["x"][3:])))
        assert float(res.t_final) == 1.0
    np.testing.assert_array_equal(plain.x_final, rescued.x_final)
    assert int(rescued.num_steps) > 2 * int(plain.num_steps)


def test_rescue_passes_a_wall_that_only_a_tighter_tolerance_avoids():
    # Prothero-Robinson (lam = -50, x = cos t) whose field is nan for 1.2 < t < 2 wherever
    # |x - cos t| > 5e-6: Tsit5 at rtol 1e-3 strays further than that there and stalls; at
    # rtol 1e-5 (the rescue's factor 100) it stays inside (errors measured: 1.9e-5 and
    # 8.7e-9 at t = 1.6). The rescue goes back to the save at t = 1.1 once; the errors made
    # before it decay by e^(-50 (t - 1.1)), so the tighter run stays in the tube.
    width = 5e-6
    pr = _prothero_robinson(-50.0)

    def field(sigma, y, args):
        x, w = y
        t = jnp.expm1(w)
        off = (t > 1.2) & (t < 2.0) & (jnp.abs(x - jnp.cos(t)) > width)
        dx, dw = pr(sigma, y, args)
        return jnp.where(off, jnp.nan, dx), dw

    ts = jnp.array([0.0, 1.0, 1.1, 1.6, 3.0])

    def run(rescue):
        return jax.jit(lambda: integrate(
            field, jnp.asarray(1.0), jnp.log1p(ts), lambda x: dict(x=x),
            solver=diffrax.Tsit5(), controller=diffrax.PIDController(rtol=1e-3, atol=1e-12),
            max_steps=5000, rescue=rescue))()

    plain, rescued = run(()), run((100.0,))
    assert int(plain.status) != STATUS_OK and np.isnan(float(plain.saved["x"][3]))
    assert int(rescued.status) == STATUS_OK and int(rescued.num_rescues) == 1
    exact = np.cos(np.asarray(ts))
    assert abs(float(rescued.saved["x"][3]) - exact[3]) < width
    np.testing.assert_allclose(rescued.saved["x"], exact, atol=2e-3)  # rtol 1e-3 elsewhere
    np.testing.assert_array_equal(rescued.saved["x"][:3], plain.saved["x"][:3])


def test_rescue_rejects_bad_settings():
    ts = jnp.array([0.0, 1.0])
    with pytest.raises(ValueError, match=">= 1"):
        _rescue_run(_walled(5.0, 6.0), ts, (0.5,))
    with pytest.raises(ValueError, match="event"):
        integrate(_walled(5.0, 6.0), jnp.asarray(1.0), jnp.log1p(ts), lambda x: dict(x=x),
                  solver=diffrax.Tsit5(), controller=diffrax.PIDController(1e-6, 1e-9),
                  max_steps=10, event=lambda x: x - 2.0, rescue=(10.0,))
