"""The stacked layout of the full-GF solvers (theory §2.9): depth as data, frozen identity
layers, one compile per shape."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufmflow as uf
from ufmflow.solvers._flow import _solve_flow_jit
from ufmflow.solvers._stacked import stack_model

SAVED = ("singular_values", "loss", "log_loss", "min_margin", "param_norm", "balance_residual")


def _compare(a, b, rtol):
    for name in SAVED:
        # balance_residual is the solver's own drift (~1e-6 here), so its rounding differences
        # are compared against the size of the factors instead of its own size
        atol = 1e-12 if (name == "balance_residual" and rtol) else 0
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol,
                                   err_msg=name)
    np.testing.assert_allclose(a.model.logits(), b.model.logits(), rtol=rtol, atol=0)


def test_layout_measures_equal_the_model_functions():
    model = uf.gaussian_init(jax.random.PRNGKey(3), 4, 2, 5, 3, 0.8)
    for capacity in (3, 6):
        state, layout = stack_model(model, capacity)
        np.testing.assert_allclose(layout.logits(state), model.logits(), rtol=1e-14)
        np.testing.assert_allclose(layout.sq_norm(state), model.sq_norm(), rtol=1e-14)
        np.testing.assert_allclose(layout.balancedness(state)[:3], uf.balancedness(model),
                                   rtol=1e-13, atol=1e-14)
        assert np.all(np.asarray(layout.balancedness(state)[3:]) == 0.0)
        assert int(layout.size(state)) == sum(f.size for f in model.factors)
        padded = layout.to_model(state)
        assert padded.depth == capacity
        np.testing.assert_allclose(padded.logits(), model.logits(), rtol=1e-14)
    with pytest.raises(ValueError, match="max_depth"):
        stack_model(model, 2)


# The padded runs reuse the compiled program of another test of this module: the Rosenbrock-W
# one of test_depth_8_small_init_reaches_1e8_with_the_defaults (K=4, n=1, width 8, capacity 8,
# 4 saves), the Tsit5 one of test_t1_tolerances_scale_seed_and_depth_are_data (K=4, n=2,
# width 6, capacity 5, 6 saves).
@pytest.mark.parametrize("solver, per_class, width, depth, pad, saves", [
    ("rosenbrock", 1, 8, 3, 8, 4), ("tsit5", 2, 6, 3, 5, 6)])
def test_padded_model_flows_like_the_shallow_one(solver, per_class, width, depth, pad, saves):
    """Frozen identity layers change nothing: same steps, same saves. Tsit5 sums nothing over
    the padded axis, so it is bit-exact; the Krylov W's dot products run over a longer vector
    (zeros included) and may round differently: measured <= 1e-13 relative."""
    model = uf.gaussian_init(jax.random.PRNGKey(7), 4, per_class, width, depth, 0.5)
    shallow = uf.solve_flow(model, 1e3, num_saves=saves, solver=solver)
    padded = uf.solve_flow(model, 1e3, num_saves=saves, solver=solver, pad_depth=pad)
    assert shallow.status_name() == padded.status_name() == "ok"
    assert int(shallow.num_steps) == int(padded.num_steps)
    _compare(shallow, padded, 0.0 if solver == "tsit5" else 1e-10)
    # the flow really moved the logits (the comparison is not between two initial states)
    assert float(shallow.log_loss[-1]) < float(shallow.log_loss[0]) - 1.0
    # and the padded run's frozen layers are still identities
    eye = np.eye(width)
    assert len(padded.model.factors[depth:-1]) == pad - depth
    for w in padded.model.factors[depth:-1]:
        np.testing.assert_array_equal(w, eye)


def test_t1_tolerances_scale_seed_and_depth_are_data():
    """One compile serves every t1, rtol, atol, init scale, seed, and depth up to pad_depth."""
    # the shapes of the Tsit5 case of test_padded_model_flows_like_the_shallow_one (one compile)
    run = lambda m, **kw: uf.solve_flow(m, kw.pop("t1", 50.0), num_saves=6,  # noqa: E731
                                        solver="tsit5", pad_depth=5, **kw)
    run(uf.gaussian_init(jax.random.PRNGKey(0), 4, 2, 6, 2, 0.5))
    before = _solve_flow_jit._cached._cache_size()
    run(uf.gaussian_init(jax.random.PRNGKey(0), 4, 2, 6, 2, 0.5), t1=70.0)
    run(uf.gaussian_init(jax.random.PRNGKey(0), 4, 2, 6, 2, 0.5), rtol=1e-7)
    run(uf.gaussian_init(jax.random.PRNGKey(0), 4, 2, 6, 2, 0.5), rtol=1e-7, atol=1e-9)
    run(uf.gaussian_init(jax.random.PRNGKey(1), 4, 2, 6, 2, 0.9))
    run(uf.gaussian_init(jax.random.PRNGKey(1), 4, 2, 6, 4, 0.9))
    run(uf.gaussian_init(jax.random.PRNGKey(1), 4, 2, 6, 1, 0.9))
    assert _solve_flow_jit._cached._cache_size() == before


@pytest.mark.parametrize("width, scale", [
    (8, 0.3),  # 781 steps ("bounded"; 1038 with "relative"), ~15 s
    # 3229 steps ("bounded"; 14203, later max_steps, with "relative"): theory §2.6
    pytest.param(16, 0.1, marks=pytest.mark.slow),
])
def test_depth_8_small_init_reaches_1e8_with_the_defaults(width, scale):
    """The regime the paper studies (small init, deep): the defaults finish to t = 1e8 on a
    seed no other test uses (theory §2.6; the step counts are a benchmark figure)."""
    model = uf.gaussian_init(jax.random.PRNGKey(91817), 4, 1, width, 8, scale)
    sol = uf.solve_flow(model, 1e8, num_saves=4)
    assert sol.status_name() == "ok", sol.status_name()
    assert float(sol.log_loss[-1]) < float(sol.log_loss[0]) - 5.0
