"""The batched solver's Hadamard kernels (`ufmflow.solvers._hadamard_kernels`): the fields against
the closed forms of theory §4, the transform, the vectorized `log`, the save metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufmflow as uf


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vectorized_log_matches_numpy(dtype):
    """The bit-manipulation `log` used by the batched field (XLA's float64 `log` is scalar on a
    CPU) against numpy's, in ulps of the dtype, over all positive finite numbers (subnormals
    included: XLA's own float64 `log` flushes those to zero) and near 1."""
    from ufmflow.solvers._hadamard_kernels import _log

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
    special = jnp.asarray([0.0, -0.0, -1.0, -fi.smallest_subnormal, np.inf, -np.inf, np.nan],
                          dtype)
    np.testing.assert_array_equal(_log(special), [-np.inf, -np.inf] + [np.nan] * 2
                                  + [np.inf] + [np.nan] * 2)
    if np.max(ulps) > 2.0 and jax.default_backend() != "cpu" and dtype == np.float32:
        # Known shortfall, not a wider bound: on an H200 GPU (session 27) float32 reached 2.97
        # ulps (float64 stayed within 2); the cause (the GPU's float32 division or flushed
        # subnormal intermediates) was not isolated.
        pytest.xfail(f"float32 log on {jax.default_backend()}: {np.max(ulps):.2f} ulps > 2")
    assert np.max(ulps) <= 2.0


def test_transform_forms_agree(monkeypatch):
    """`_fwht0` (columns) as dense product and as butterflies, against `fwht` (rows)."""
    from ufmflow.solvers import _hadamard_kernels as hk

    # Jitted (one compiled program per shape instead of one per butterfly operation); a fresh
    # `jax.jit` per setting, since `_DENSE_MAX_K` is read when the function is traced. Inputs
    # from numpy: `jax.random.normal` compiles a sampler per shape (~1-4 s each on a CPU).
    for k in (4, 16, 64, 128):
        x = jnp.asarray(np.random.default_rng(k).standard_normal((k, 5)))
        ref = jax.jit(uf.fwht)(x.T).T
        for dense_max in (0, 1024):
            monkeypatch.setattr(hk, "_DENSE_MAX_K", dense_max)
            got = jax.jit(lambda x: hk._fwht0(x))(x)
            np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-12 * k)


def test_log_field_is_the_reduced_ode_in_log_variables():
    """Pointwise, to rounding: `du/dtau` of `log_time_field` is the dense closed form
    `exp(hadamard_log_rates) / s` (theory §4), and its time change makes
    `||du/dsigma|| + 0.1 ||dz/dsigma|| = 1` with `z = Hk s / K`."""
    from ufmflow.solvers._hadamard_kernels import _LOGIT_WEIGHT, log_time_field

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
    du, dw = jax.jit(log_time_field)(jnp.asarray(u.T), jnp.asarray(np.log1p(tau)),
                                     jnp.asarray(alpha))
    du, dw = np.asarray(du).T, np.asarray(dw)
    dtau = (1 + tau) * dw  # dtau/dsigma
    rates = np.exp(np.asarray(jax.jit(uf.hadamard_log_rates, static_argnames="method")(
        jnp.asarray(s), jnp.asarray(depth)[:, None], method="dense")))
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
    from ufmflow.solvers._hadamard_kernels import _log_field, _relative_field

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
        jitted = jax.jit(field)  # one compiled program per call form, not one per operation
        dx, dw, shifts = jitted(x, w, alpha)
        np.testing.assert_allclose(shifts[0], own, rtol=1e-15)
        np.testing.assert_allclose(shifts[1], np.max(z[1:], axis=0), rtol=1e-14)
        offset = jnp.asarray(rng.uniform(-3.0, 3.0, (2, 6)))
        moved = (shifts[0] + offset[0] if field is _log_field else shifts[0] * jnp.exp(offset[0]),
                 shifts[1] + offset[1])
        dx2, dw2, back = jitted(x, w, alpha, moved)
        assert all(np.array_equal(a, b) for a, b in zip(back, moved))
        np.testing.assert_allclose(dx2, dx, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(dw2, dw, rtol=1e-13)


def test_save_metrics_match_the_public_functions():
    """The solver's blocked metrics of the saved states against `hadamard_loss`,
    `hadamard_log_loss`, `hadamard_margin` and `effective_rank_from_singular_values` applied
    to the whole array: a number of states that is not a multiple of the block, NaN rows (no
    save) staying NaN, and a zero entry (index 0, `s_0 = 0`)."""
    from ufmflow.solvers._hadamard_kernels import _save_metrics

    rng = np.random.default_rng(3)
    s = np.abs(rng.standard_normal((37, 5, 64))) * np.exp(rng.uniform(-3, 3, (37, 5, 1)))
    s[..., 0] = 0.0
    s[4, 3:] = np.nan
    got = jax.jit(_save_metrics)(jnp.asarray(s))
    # the public functions jitted together: one compiled program, not one per operation
    want = jax.jit(lambda s: dict(loss=uf.hadamard_loss(s), log_loss=uf.hadamard_log_loss(s),
                                  min_margin=uf.hadamard_margin(s),
                                  effective_rank=uf.effective_rank_from_singular_values(s)))(
        jnp.asarray(s))
    for name, value in want.items():
        assert np.all(np.isnan(np.asarray(got[name])[4, 3:])), name
        # loss = logsumexp(z) - z_0 cancels: its rounding is absolute, ~eps |z_0| (seen 1.8e-15)
        atol = 1e-13 if name == "loss" else 1e-15
        np.testing.assert_allclose(got[name], value, rtol=1e-13, atol=atol, err_msg=name)
