"""Every solver entry point validates its inputs once, where they enter (`solvers._checks`): a
bad value raises `ValueError` naming the argument, before anything is compiled or run."""

import diffrax
import jax
import jax.numpy as jnp
import pytest

import ufmflow as uf

KEY = jax.random.PRNGKey(0)
MODEL = uf.gaussian_init(KEY, 4, 1, 6, 2, 1.0)
S0 = jnp.array([0.3, 0.1, 0.2, 0.4])


def _flow(**kw):
    return uf.solve_flow(MODEL, kw.pop("t1", 10.0), num_saves=4, **kw)


def _hadamard(**kw):
    return uf.solve_hadamard(S0, kw.pop("depth", 2.0), kw.pop("t1", 10.0), num_saves=4, **kw)


def _until(**kw):
    return uf.flow_until(MODEL, kw.pop("t1", 10.0), **kw)


ENTRY_POINTS = {"solve_flow": _flow, "solve_hadamard": _hadamard, "flow_until": _until}

# (keyword arguments, the argument the message must name)
BAD = [
    (dict(rtol=-1.0), "rtol"),  # solve_flow used to return status ok with the loss grown 6000x
    (dict(rtol=0.0), "rtol"),
    (dict(rtol=float("nan")), "rtol"),
    (dict(atol=-1e-9), "atol"),
    (dict(atol=float("inf")), "atol"),
    (dict(max_steps=0), "max_steps"),
    (dict(max_steps=2.5), "max_steps"),
    (dict(max_steps="many"), "max_steps"),
    (dict(t1=-1.0), "t1"),
    (dict(t1=float("nan")), "t1"),
    (dict(t1=float("inf")), "t1"),
    (dict(solver="euler"), "solver"),
    (dict(solver=diffrax.Euler()), "solver"),  # no error estimate: not adaptive
    (dict(solver=3), "solver"),
]
BAD_SAVES = [
    (dict(ts=jnp.array([0.0, -1.0, 2.0])), "ts"),
    (dict(ts=jnp.array([0.0, jnp.nan])), "ts"),
    (dict(ts=jnp.array([0.0, 2.0, 1.0])), "ts"),
    (dict(time_change="fast"), "time_change"),
    (dict(controller="pid"), "controller"),
]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("kwargs, name", BAD)
def test_bad_inputs_raise_value_error_naming_the_argument(entry, kwargs, name):
    if entry == "solve_hadamard" and name == "t1":
        name = "^tau1"  # solve_hadamard's final time is the reduced time tau1
    with pytest.raises(ValueError, match=name):
        ENTRY_POINTS[entry](**kwargs)


@pytest.mark.parametrize("entry", ["solve_flow", "solve_hadamard"])
@pytest.mark.parametrize("kwargs, name", BAD_SAVES)
def test_bad_save_times_and_options_raise(entry, kwargs, name):
    with pytest.raises(ValueError, match=name):
        ENTRY_POINTS[entry](**kwargs)


def test_unknown_solver_lists_the_choices():
    with pytest.raises(ValueError, match="tsit5.*rosenbrock.*kvaerno5"):
        _flow(solver="dopri5")


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="logit_norm"):
        _until(logit_norm=-1.0)
    with pytest.raises(ValueError, match="num_saves"):
        uf.solve_flow(MODEL, 1.0, num_saves=1)
    with pytest.raises(ValueError, match="depth"):
        _hadamard(depth=float("nan"))
    with pytest.raises(ValueError, match="s0"):
        uf.solve_hadamard(jnp.array([0.3, jnp.inf, 0.2, 0.4]), 2.0, 1.0)


@pytest.mark.slow  # 32 s: compiles a solve per solver (kvaerno5's is the cost)
def test_solver_names_equal_instances():
    """`solver="tsit5"` (an AttributeError before) is `diffrax.Tsit5()`, for every entry point,
    and `HadamardSolution` names its status like `FlowSolution`."""
    a = _flow(solver="tsit5")
    b = _flow(solver=diffrax.Tsit5())
    assert a.status_name() == "ok"
    assert jnp.array_equal(a.log_loss, b.log_loss)
    h = _hadamard(solver="tsit5")
    assert h.status_name() == "ok"
    assert jnp.array_equal(h.s, _hadamard().s)
    assert _until(solver="tsit5")["t"] == _until()["t"]
