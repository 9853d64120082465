"""Steps that raise the loss are rejected (`_monotone`, theory §2.6 "Steps that raise the
loss"), and the loop's solver time is rebased at every step (`_rebase.rebased`, theory §2.7
"Steps below the resolution of sigma")."""

import diffrax
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import ufmflow as uf
from ufmflow.solvers._integrate import integrate
from ufmflow.solvers._monotone import DESCENT_CUT, DESCENT_SLACK, descent_check
from ufmflow.solvers._status import STATUS_OK

LAM = jnp.array([1.0, 1000.0])


def test_descent_check_rejects_a_rise_and_halves_the_step():
    log_v = lambda x: jnp.log(x)  # noqa: E731
    old, new = (jnp.array(1.0),), (jnp.array(2.0),)
    x0 = jnp.asarray(np.e)  # log V = 1
    # a rise by twice the slack: rejected, the retry DESCENT_CUT as long, the old state
    rise = jnp.exp(1.0 + 2 * DESCENT_SLACK * 2.0)
    keep, s, sn, cs = descent_check(log_v, x0, rise, 0.5, 1.5, jnp.array(True), 1.5, 2.5,
                                    new, old)
    assert not bool(keep) and float(s) == 0.5 and float(sn) == 0.5 + DESCENT_CUT
    assert float(cs[0]) == 1.0
    # a rise below the slack, a fall, and a step already rejected: unchanged
    for x1, kept in ((jnp.exp(1.0 + 0.25 * DESCENT_SLACK * 2.0), True),
                     (jnp.asarray(1.0), True), (rise, False)):
        keep, s, sn, cs = descent_check(log_v, x0, x1, 0.5, 1.5, jnp.array(kept), 1.5, 2.5,
                                        new, old)
        assert bool(keep) == kept and float(s) == 1.5 and float(sn) == 2.5
        assert float(cs[0]) == 2.0
    assert descent_check(None, x0, rise, 0.5, 1.5, True, 1.5, 2.5, new, old)[0] is True


class _Blind(diffrax.Heun):
    """Heun's method with its error estimate set to 0: the controller accepts every step and
    grows it tenfold, so only the descent check can keep it stable."""

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, err, dense, state, res = super().step(terms, t0, t1, y0, args, solver_state,
                                                  made_jump)
        return y1, jtu.tree_map(jnp.zeros_like, err), dense, state, res


def _gradient_flow(sigma, y, args):
    x, w = y
    return -LAM * x, jnp.exp(-w)  # GF of V = sum lam x^2 / 2, g = 1


def _log_v(x):
    return jnp.log(0.5 * jnp.sum(LAM * x**2))


@pytest.fixture(scope="module")
def blind_runs():
    ts = jnp.array([0.0, 0.5, 1.0, 2.0])

    def run(descent):
        return jax.jit(lambda: integrate(
            _gradient_flow, jnp.array([1.0, 1.0]), jnp.log1p(ts),
            lambda x: dict(log_v=_log_v(x)), solver=_Blind(),
            controller=diffrax.PIDController(rtol=1e-6, atol=1e-9), max_steps=20_000,
            descent=descent))()

    exact = np.log(0.5 * (np.exp(-2 * np.asarray(ts)) + 1000 * np.exp(-2000 * np.asarray(ts))))
    return run(None), run(_log_v), exact


def test_without_the_check_a_blind_solver_blows_up(blind_runs):
    res, _, exact = blind_runs
    log_v = np.asarray(res.saved["log_v"])
    assert not (np.all(np.isfinite(log_v[1:])) and np.all(np.abs(log_v - exact) < 1.0))


def test_the_check_keeps_a_blind_solver_on_the_gradient_flow(blind_runs):
    """Every kept step lowers V, so Heun's steps stay within its stability interval
    (`h lam <= 2` for the stiff mode once it matters) and follow the flow. Not to the
    tolerance (no error estimate): near `h lam = 2` Heun leaves the stiff mode undamped
    (`R(-2) = 1`), which holds it at about `1e-3` of V (measured: 6.1e-4)."""
    _, res, exact = blind_runs
    assert int(res.status) == STATUS_OK
    log_v = np.asarray(res.saved["log_v"])
    assert np.all(np.diff(log_v) < 0)
    np.testing.assert_allclose(log_v, exact, atol=2e-3)


def test_case_ii_run_that_stalled_at_a_large_sigma_reaches_1e8():
    """K=8, n=1, width 8, depth 7, scale 0.1, seed 1008 (issue 14's grid, held-out sample 2,
    row 6): before the rebased solver time it ended `stalled` at t = 2.11e6 (sigma = 8.4e5,
    where the steps its second escape needs, below 3e-9, are not representable), with the
    loss raised by accepted steps on the way. Now ok to 1e8, rank one, and the saved
    log-loss never rises."""
    model = uf.gaussian_init(jax.random.PRNGKey(1008), 8, 1, 8, 7, 0.1)
    ts = jnp.asarray(np.unique(np.concatenate([[0.0, 1e5, 1e8], np.logspace(-1, 8, 181)])))
    sol = uf.solve_flow(model, 1e8, ts=ts, max_steps=5000)
    assert sol.status_name() == "ok"
    log_loss = np.asarray(sol.log_loss)
    assert np.all(np.diff(log_loss) <= 1e-8 * (1 + np.abs(log_loss[:-1])))
    assert float(uf.effective_rank_from_singular_values(sol.singular_values[-1])) == \
        pytest.approx(1.0, abs=1e-3)
    assert log_loss[-1] < -25.0
