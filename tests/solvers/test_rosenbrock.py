"""The Rosenbrock-W method as a diffrax solver: `diffrax.diffeqsolve` with a PID controller on a
stiff linear ODE, against the exact solution `expm(A t) y0`; its Krylov `W` (`arnoldi_jacobian`)
against an independent Arnoldi process."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest

from ufmflow.solvers._krylov import (
    KRYLOV_STOP,
    MIN_KRYLOV_DIM,
    STIFF_CHUNK,
    STIFF_CHUNK_FROM,
    LowRankJacobian,
    _arnoldi,
    _krylov_w,
    arnoldi_jacobian,
)
from ufmflow.solvers._rosenbrock import RosenbrockW

# Eigenvalues -1e4 and -1 (a non-normal pair): the fast mode dies at once, the slow one sets
# the path; an explicit solver is held to steps ~ 3 / 1e4 by stability alone.
A = jnp.array([[-1e4, 50.0], [0.0, -1.0]])
Y0 = jnp.array([1.0, 2.0])
TS = jnp.array([0.0, 1e-3, 0.1, 1.0, 5.0])


def _solve(solver, max_steps=4096):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: A @ y), solver, 0.0, 5.0, None, Y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
        saveat=diffrax.SaveAt(ts=TS), max_steps=max_steps,
    )


def test_diffeqsolve_with_rosenbrock_w_matches_the_matrix_exponential():
    solver = RosenbrockW(lambda y: LowRankJacobian.from_matrices(jnp.eye(2), A))
    assert isinstance(solver, diffrax.AbstractAdaptiveSolver)
    sol = _solve(solver)
    exact = np.stack([np.asarray(jsl.expm(A * t) @ Y0) for t in TS])
    # rtol 1e-8 per step on a contracting system; the saves between steps come from the cubic
    # Hermite interpolant (diffrax's): global error well under 1e-6 of the solution's size
    err = np.max(np.abs(np.asarray(sol.ys) - exact)) / np.max(np.abs(exact))
    assert err < 1e-6, err
    # stiff-stable: far fewer steps than explicit Tsit5 needs for stability (~1e4 * 5 / 3)
    steps = int(sol.stats["num_steps"])
    tsit5 = _solve(diffrax.Tsit5(), max_steps=100_000)
    assert steps < int(tsit5.stats["num_steps"]) / 10, (steps, int(tsit5.stats["num_steps"]))


def _numpy_arnoldi(a, f, dim):
    """Textbook Arnoldi with modified Gram-Schmidt (an independent implementation): the basis
    `V` (rows) and `H = V A V^T`, stopping at a breakdown."""
    basis = [f / np.linalg.norm(f)]
    for _ in range(dim - 1):
        w = a @ basis[-1]
        for v in basis:
            w = w - (v @ w) * v
        for v in basis:  # a second pass, as ufmflow's
            w = w - (v @ w) * v
        if np.linalg.norm(w) <= 1e-12 * np.linalg.norm(a @ basis[-1]):
            break
        basis.append(w / np.linalg.norm(w))
    v = np.array(basis)
    return v, v @ a @ v.T


# dims 1, a block's size, the default 16 and 20 (its last blocks of rows clipped to the dim).
@pytest.mark.parametrize("dim", [1, 2, 7, 16, 20])
def test_arnoldi_compression_equals_an_independent_arnoldi(dim):
    rng = np.random.default_rng(dim)
    size = 40
    a = rng.normal(size=(size, size)) + np.diag(-np.logspace(0, 6, size))  # stiff, non-normal
    f = rng.normal(size=size)
    jac = arnoldi_jacobian(lambda x: jnp.asarray(a) @ x, jnp.asarray(f), dim)
    v_ref, h_ref = _numpy_arnoldi(a, f, dim)
    basis = np.asarray(jax.vmap(jac.u)(jnp.eye(dim)))  # row i = U e_i = v_i
    np.testing.assert_allclose(basis, v_ref, atol=1e-9)
    np.testing.assert_allclose(np.asarray(jac.gram), np.eye(dim), atol=1e-12)
    scale = np.abs(h_ref).max()
    np.testing.assert_allclose(np.asarray(jac.core), h_ref, atol=1e-10 * scale)
    # W = V^T H V acts as A on the Krylov space: W f = A f
    w_f = jac.u(jac.core @ jac.ut(jnp.asarray(f)))
    if dim > 1:
        np.testing.assert_allclose(np.asarray(w_f), a @ f, rtol=1e-9, atol=1e-9 * np.abs(a @ f).max())


def test_arnoldi_breakdown_leaves_zero_rows_that_gram_accounts_for():
    # f lies in a 3-dimensional invariant subspace (exactly: A is block diagonal and f is zero
    # outside the first block), so the Krylov space stops growing at 3.
    rng = np.random.default_rng(0)
    a = np.zeros((12, 12))
    a[:3, :3] = rng.normal(size=(3, 3)) - 5 * np.eye(3)
    a[3:, 3:] = rng.normal(size=(9, 9)) - 1e3 * np.eye(9)
    f = np.concatenate([rng.normal(size=3), np.zeros(9)])
    jac = arnoldi_jacobian(lambda x: jnp.asarray(a) @ x, jnp.asarray(f), 8)
    basis = np.asarray(jax.vmap(jac.u)(jnp.eye(8)))
    np.testing.assert_array_equal(basis[3:], 0.0)
    np.testing.assert_allclose(np.asarray(jac.gram), np.diag([1.0] * 3 + [0.0] * 5), atol=1e-12)
    v_ref, h_ref = _numpy_arnoldi(a, f, 8)
    assert v_ref.shape[0] == 3
    np.testing.assert_allclose(basis[:3], v_ref, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jac.core)[:3, :3], h_ref, atol=1e-12 * np.abs(h_ref).max())
    np.testing.assert_array_equal(np.asarray(jac.core)[3:], 0.0)
    # W = A on the invariant subspace: W f = A f
    w_f = jac.u(jac.core @ jac.ut(jnp.asarray(f)))
    np.testing.assert_allclose(np.asarray(w_f), a @ f, atol=1e-12 * np.abs(a @ f).max())


# A curved stiff valley: the unit circle attracts at rate LAMBDA while the flow turns along it
# at unit speed, so the exact solution from (1, 0) is (cos t, sin t). A linearly implicit step
# leaves the circle by about h^2 / 2, and LAMBDA times that is a stiff residual that holds the
# plain W-method to tiny steps (theory §2.6, "Projected stages").
LAMBDA = 1e8


def _circle(t, y, args):
    r = jnp.sqrt(y[0] ** 2 + y[1] ** 2)
    return -LAMBDA * (r - 1.0) * y / r + jnp.array([-y[1], y[0]]) / r


def _solve_circle(solver, rtol, t1=10.0):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_circle), solver, 0.0, t1, 1e-3, jnp.array([1.0, 0.0]),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol * 1e-3),
        max_steps=100_000,
    )
    y = np.asarray(sol.ys[-1])
    return float(np.linalg.norm(y - [np.cos(t1), np.sin(t1)])), abs(np.linalg.norm(y) - 1.0), \
        int(sol.stats["num_steps"])


def test_stiff_projection_follows_a_curved_stiff_valley():
    plain = _solve_circle(RosenbrockW(krylov_dim=2), 1e-6)
    projected = _solve_circle(RosenbrockW(krylov_dim=2, stiff_projection=1e3), 1e-6)
    # measured: plain 26,912 steps, error 6.5e-3; projected 711 steps, error 1.2e-3, on the
    # circle to 2e-10 (the rest of the error is a phase error, see theory §2.6)
    assert projected[2] * 10 < plain[2], (projected, plain)
    assert projected[0] < plain[0] and projected[0] < 5e-3, (projected, plain)
    assert projected[1] < 1e-8, projected
    # the error falls with the tolerance: rtol 1e-8 gives 7e-5
    assert _solve_circle(RosenbrockW(krylov_dim=2, stiff_projection=1e3), 1e-8)[0] < 3e-4


def test_projected_explicit_steps_follow_a_curved_stiff_valley_in_fewer_steps():
    # The circle's Krylov W has the radial Ritz value -1e8 (projected) and a tangential one
    # near 0, so every step once h > 4e-5 is the projected explicit BS3 step (theory §2.6,
    # "Projected explicit steps"). Measured: 503 steps, error 2.2e-3, on the circle to 1.4e-10;
    # RODAS4 with the same projection: 1276 steps, 3.5e-4; at rtol 1e-8 1.1e-4 (2138 steps).
    def solver(explicit):
        return RosenbrockW(krylov_dim=2, stiff_projection=1e3, tableau="rodas4",
                           explicit_slow=explicit)

    rodas = _solve_circle(solver(False), 1e-6)
    explicit = _solve_circle(solver(True), 1e-6)
    assert explicit[2] * 2 < rodas[2], (explicit, rodas)
    assert explicit[1] < 1e-8 and explicit[0] < 5e-3, explicit
    tight = _solve_circle(solver(True), 1e-8)
    assert tight[0] < explicit[0] / 10 and tight[0] < 3e-4, tight


def test_refound_stiff_sets_follow_the_circle_without_its_phase_error():
    # The explicit steps with directions held from the step's start shift the point along the
    # circle by (offset) x (turning angle) per step, a phase error the estimate does not see
    # (2.2e-3 at rtol 1e-6); re-found at every stage point and Newton iterate, the directions
    # are the radial one wherever the point is (theory §2.6, "Re-found stiff sets"). Measured:
    # 503 steps either way, error 1.3e-9 with re-found sets (1.1e-5 with explicit_kappa 2.5,
    # which also projects moderately stiff modes), on the circle to rounding.
    def solver(**kw):
        return RosenbrockW(krylov_dim=2, stiff_projection=1e3, tableau="rodas4",
                           explicit_slow=True, **kw)

    held = _solve_circle(solver(), 1e-6)
    refound = _solve_circle(solver(refind=True), 1e-6)
    assert refound[0] < 1e-7 and refound[0] * 1e4 < held[0], (refound, held)
    assert refound[1] < 1e-12, refound
    low = _solve_circle(solver(refind=True, explicit_kappa=2.5), 1e-6)
    assert low[0] < 1e-4 and low[1] < 1e-12, low


def test_refound_stiff_sets_leave_a_step_without_explicit_steps_unchanged():
    # With every threshold above what the linear system's -1e4 reaches (h <= 5, gamma 1/4),
    # no step is the explicit one: the Rosenbrock method's solution, bit for bit. With a low
    # threshold the explicit steps run and end on the exact solution to the tolerance of
    # their quasi-steady approximation of this non-normal pair (measured 2.3e-6 relative)
    def solve(**kw):
        return _solve(RosenbrockW(krylov_dim=2, tableau="rodas4", explicit_slow=True, **kw))

    plain = solve(stiff_projection=1e5)
    same = solve(stiff_projection=1e5, refind=True, explicit_kappa=1e5)
    np.testing.assert_array_equal(np.asarray(plain.ys), np.asarray(same.ys))
    low = solve(stiff_projection=1e2, refind=True, explicit_kappa=2.5)
    exact = np.stack([np.asarray(jsl.expm(A * t) @ Y0) for t in TS])
    assert int(low.stats["num_steps"]) != int(plain.stats["num_steps"])
    assert np.max(np.abs(np.asarray(low.ys) - exact)) / np.max(np.abs(exact)) < 1e-5


@pytest.mark.parametrize("solver", [
    RosenbrockW(krylov_dim=3),
    RosenbrockW(krylov_dim=2, stiff_projection=1e3, tableau="rodas4", explicit_slow=True),
    RosenbrockW(krylov_dim=2, stiff_projection=1e3, tableau="rodas4", explicit_slow=True,
                refind=True),
], ids=["breakdown", "projected", "refound"])
def test_reverse_mode_through_krylov_steps_on_the_circle(solver):
    # From angle a the solution is (cos(t + a), sin(t + a)): d y_0(t1) / da = -sin(t1 + a).
    # A 3-dimensional Krylov space of the 2-D field breaks down (a zero residual, whose norm
    # had a nan derivative: every gradient was nan before session 26); the projected steps
    # hold their directions constant in reverse mode (theory §2.6, "Differentiating through
    # stiff steps"), and W is held with the derivative it takes from the field's
    # (`hold_w`): with W held outright, without that derivative, the first case gave 1.82
    # for 0.75 (the stiff radial direction turns with the state). Measured at rtol 1e-8:
    # errors 2.9e-5 and 1.5e-5 (the solution's own is ~1e-4 there, the phase error of the
    # projected steps); re-found sets (the last set's projection differentiated with its
    # turning at the point where it was found): 7.5e-9, its solution within 2e-11.
    def first_coordinate(a):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_circle), solver, 0.0, 2.0, 1e-3, jnp.array([jnp.cos(a), jnp.sin(a)]),
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-11), max_steps=100_000)
        return sol.ys[-1, 0]

    g = float(jax.jit(jax.grad(first_coordinate))(0.3))
    assert abs(g + np.sin(2.3)) < 3e-4, (g, -np.sin(2.3))


def test_reverse_mode_near_a_krylov_breakdown_matches_the_matrix_exponential():
    # A linear field y' = A y, A symmetric with eigenvalues -1e4, -1, -0.5, -2; the start's
    # field lies within 1e-10 of a 2-D invariant subspace, so the 3-dimensional Krylov space
    # nearly breaks down (its third direction is the 1e-10 component, normalized, with a
    # derivative of order 1e10). The gradient of w . y(2) with respect to y(0) is
    # expm(2 A)^T w. With W held (`hold_w`, theory §2.6 "Differentiating through W"; dJ = 0
    # here) the derivative is the method applied to the variational equation with the same W,
    # and ROS34PW2, a W-method, keeps its order: measured 6.9e-9. Differentiated through the
    # basis (`hold_w=False`) the error was 8.6e-7 here and depends on the rounding (RODAS4:
    # 2.5e-7 in one process, 7.9e-6 under the test suite's XLA flags). RODAS4 with W held is
    # order about one in the step size where W != J: 8.0e-5 at this rtol, 1.2e-5 at 1e-12.
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))[0]
    a = jnp.asarray(q @ np.diag([-1e4, -1.0, -0.5, -2.0]) @ q.T)
    w = jnp.asarray(np.random.default_rng(1).standard_normal(4))
    solver = RosenbrockW(krylov_dim=3)

    def value(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: a @ y), solver, 0.0, 2.0, 1e-4, y0,
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-11),
            max_steps=100_000)
        return w @ sol.ys[-1]

    g = jax.jit(jax.grad(value))(jnp.asarray(q[:, 0] + q[:, 1] + 1e-10 * q[:, 2]))
    exact = jsl.expm(2.0 * a).T @ w
    err = float(jnp.max(jnp.abs(g - exact)) / jnp.max(jnp.abs(exact)))
    assert err < 1e-7, err


def test_explicit_slow_steps_only_between_projected_and_non_stiff_directions():
    # eigenvalues -1e4 and -1 with h <= 5 (RODAS4, gamma = 1/4). With kappa = 1e5 nothing is
    # projected, so no step may be explicit: the Rosenbrock method's solution, bit for bit.
    # With kappa = 1e2 the steps with 0.04 < h < 1 project the fast mode and integrate the
    # slow one explicitly: a different step sequence (measured 435 steps against 339), the
    # exact solution to the tolerance (4.2e-9 relative, as without them)
    def solve(kappa, explicit):
        return _solve(RosenbrockW(krylov_dim=2, stiff_projection=kappa, tableau="rodas4",
                                  explicit_slow=explicit))

    plain = solve(1e5, False)
    np.testing.assert_array_equal(np.asarray(plain.ys), np.asarray(solve(1e5, True).ys))
    exact = np.stack([np.asarray(jsl.expm(A * t) @ Y0) for t in TS])
    implicit, explicit = solve(1e2, False), solve(1e2, True)
    assert int(explicit.stats["num_steps"]) != int(implicit.stats["num_steps"])
    for sol in (implicit, explicit):
        assert np.max(np.abs(np.asarray(sol.ys) - exact)) / np.max(np.abs(exact)) < 1e-7


def test_stiff_projection_is_the_plain_method_without_very_stiff_directions():
    # eigenvalues -1e4 and -1 with h <= 5: -lambda h gamma stays below 1e5 on every step, so
    # no direction is projected and the steps are the plain method's, bit for bit
    plain = _solve(RosenbrockW(krylov_dim=2))
    projected = _solve(RosenbrockW(krylov_dim=2, stiff_projection=1e5))
    assert int(plain.stats["num_steps"]) == int(projected.stats["num_steps"])
    np.testing.assert_array_equal(np.asarray(plain.ys), np.asarray(projected.ys))
    # with a low threshold the fast mode is projected: the path is the same to the tolerance
    low = _solve(RosenbrockW(krylov_dim=2, stiff_projection=10.0))
    exact = np.stack([np.asarray(jsl.expm(A * t) @ Y0) for t in TS])
    assert np.max(np.abs(np.asarray(low.ys) - exact)) / np.max(np.abs(exact)) < 1e-6


@pytest.mark.parametrize("kwargs, match", [
    (dict(stiff_projection=1e3), "krylov_dim"),
    (dict(krylov_dim=4, stiff_projection=0.0), "stiff_projection"),
    (dict(krylov_dim=4, stiff_projection=1e3, projection_iters=0), "projection_iters"),
    (dict(krylov_dim=4, stiff_projection=1e3, projection_iters=3, projection_max_iters=2),
     "projection_max_iters"),
    (dict(adaptive_dim=True), "krylov_dim"),
    (dict(krylov_dim=4, explicit_slow=True), "stiff_projection"),
    (dict(krylov_dim=4, stiff_projection=1e3, refind=True), "explicit_slow"),
    (dict(krylov_dim=4, stiff_projection=1e3, explicit_slow=True, explicit_kappa=2.5),
     "refind"),
    (dict(krylov_dim=4, stiff_projection=1e3, explicit_slow=True, refind=True,
          explicit_kappa=0.0), "explicit_kappa"),
    (dict(krylov_dim=4, stiff_projection=1e3, explicit_slow=True, refind=True,
          explicit_growth=-1.0), "explicit_growth"),
    (dict(complement_dim=4), "krylov_dim"),
    (dict(krylov_dim=4, complement_dim=0), "complement_dim"),
    (dict(krylov_dim=4, complement_dim=4, complement_limit=0.0), "complement_limit"),
])
def test_stiff_projection_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RosenbrockW(**kwargs)


def test_a_rejected_step_keeps_its_krylov_w_and_an_accepted_one_does_not():
    solver = RosenbrockW(krylov_dim=2, stiff_projection=1e3)
    term = diffrax.ODETerm(_circle)
    y0 = jnp.array([0.6, 0.8 + 1e-6])

    @jax.jit
    def step(t0, t1, y, state):
        return solver.step(term, t0, t1, y, None, state, False)

    fresh = solver.init(term, 0.0, 0.1, y0, None)
    attempted = step(0.0, 0.5, y0, fresh)[3]
    retry = solver.after_rejection(fresh, attempted)
    # the retry from the same point uses the W the attempt built there: the same step as one
    # that builds W again, bit for bit ...
    kept, rebuilt = step(0.0, 0.1, y0, retry), step(0.0, 0.1, y0, fresh)
    np.testing.assert_array_equal(np.asarray(kept[0]), np.asarray(rebuilt[0]))
    np.testing.assert_array_equal(np.asarray(kept[1]), np.asarray(rebuilt[1]))
    # ... and it is that W which is used: a different one changes the step
    poisoned = eqx.tree_at(lambda s: s.hess, retry, 0.5 * retry.hess)
    assert not np.array_equal(np.asarray(step(0.0, 0.1, y0, poisoned)[0]), np.asarray(kept[0]))
    # after an accepted step the next one (a new start time) builds W at its own start (the
    # same first slope: the stiff field's rounding differs between programs)
    y1, _, _, state1, _ = rebuilt
    fresh1 = eqx.tree_at(lambda s: s.f0, solver.init(term, 0.1, 0.2, y1, None), state1.f0)
    np.testing.assert_array_equal(np.asarray(step(0.1, 0.2, y1, state1)[0]),
                                  np.asarray(step(0.1, 0.2, y1, fresh1)[0]))


# A stiff offset at the start: the component along the eigenvalue -1e10 sits 1e-3 off its
# steady state 0. The method damps it (L-stable), but the embedded estimate multiplies it by
# the difference of the two stability functions at h*lambda -> -inf, a constant: an error floor
# that no step size removes (the theory's collapse of the step size, §2.6 "Filtered error").
A_OFF = jnp.diag(jnp.array([-1e10, -1.0]))
Y_OFF = jnp.array([1e-3, 1.0])


def test_filtered_error_estimate_has_no_floor_from_a_stiff_offset():
    term = diffrax.ODETerm(lambda t, y, args: A_OFF @ y)
    hs = (1e-6, 1e-4, 1e-2)

    def estimates(solver):
        state = solver.init(term, 0.0, 1.0, Y_OFF, None)
        steps = [solver.step(term, 0.0, h, Y_OFF, None, state, False) for h in hs]
        return [float(jnp.max(jnp.abs(s[1]))) for s in steps], [s[0] for s in steps]

    raw, _ = estimates(RosenbrockW(krylov_dim=2))
    filtered, ends = estimates(RosenbrockW(krylov_dim=2, filter_error=True))
    # the floor: the same estimate, a fraction of the offset, at every step size
    assert max(raw) < 1.01 * min(raw) and min(raw) > 0.1 * float(Y_OFF[0]), raw
    assert all(f < 1e-3 * r for f, r in zip(filtered, raw)), (filtered, raw)
    # the filtered estimate still bounds the slow component's true error; the stiff one's is
    # not bounded by it (measured: 2.9e-7 against 1.1e-7 at h = 1e-6), but the step has damped
    # it to a small fraction of the offset, and the following steps damp it further
    for h, f, y1 in zip(hs, filtered, ends):
        true = np.abs(np.asarray(y1 - jnp.exp(jnp.diag(A_OFF) * h) * Y_OFF))
        assert true[1] <= f, (h, true, f)
        assert true[0] < 1e-3 * float(Y_OFF[0]), (h, true)


def test_filtered_error_solves_the_stiff_offset_accurately_in_fewer_steps():
    def solve(solver):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: A_OFF @ y), solver, 0.0, 5.0, None, Y_OFF,
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
            saveat=diffrax.SaveAt(t1=True), max_steps=100_000)

    raw, filtered = solve(RosenbrockW(krylov_dim=2)), solve(RosenbrockW(krylov_dim=2,
                                                                          filter_error=True))
    exact = np.exp(np.diag(np.asarray(A_OFF)) * 5.0) * np.asarray(Y_OFF)
    for sol in (raw, filtered):
        assert np.max(np.abs(np.asarray(sol.ys[-1]) - exact)) < 1e-8 * 5
    assert int(filtered.stats["num_steps"]) < int(raw.stats["num_steps"]), (
        int(filtered.stats["num_steps"]), int(raw.stats["num_steps"]))


# The adaptive Krylov dimension (theory §2.6): with `stop_scale = h gamma` the Arnoldi process
# stops at MIN_KRYLOV_DIM vectors where `h gamma ||H||_F <= KRYLOV_STOP` (||H||_F only grows
# with the dimension, so it stops there or runs to the end).
def _stiff_nonnormal(seed=16, size=40):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(size, size)) + np.diag(-np.logspace(0, 6, size)), rng.normal(size=size)


# ||H_4||_F = 1.23e6 for this matrix: scales 1e-9 and 1e-7 stop, 1e-6 and 1 do not.
@pytest.mark.parametrize("scale", [1e-9, 1e-7, 1e-6, 1.0])
def test_arnoldi_stops_early_exactly_where_the_jacobian_is_not_stiff_on_the_step(scale):
    a, f = _stiff_nonnormal()
    dim = 16
    jvp = lambda x: jnp.asarray(a) @ x  # noqa: E731
    full_v, full_h = (np.asarray(x) for x in _arnoldi(jvp, jnp.asarray(f), dim))
    v, h = (np.asarray(x) for x in _arnoldi(jvp, jnp.asarray(f), dim, jnp.asarray(scale)))
    # the documented rule, evaluated on the full process's H
    j = MIN_KRYLOV_DIM
    stops = scale * np.linalg.norm(full_h[:j + 1, :j]) <= KRYLOV_STOP
    assert stops == (scale < 1e-6)
    used = j if stops else dim
    # the first `used` columns (and the basis rows they reach) are the full process's ...
    tol = 1e-12 * np.abs(full_h).max()
    np.testing.assert_allclose(h[:, :used], full_h[:, :used], atol=tol)
    np.testing.assert_allclose(v[:used + 1], full_v[:used + 1], atol=1e-12)
    # ... and the rest is zero
    np.testing.assert_array_equal(h[:, used:], 0.0)
    np.testing.assert_array_equal(v[used + 1:], 0.0)


# A gradient flow's symmetric Jacobian with `stiff` eigenvalues -1e4..-1e8 and 90 - stiff
# mild ones in -1e-2..-1; at h gamma = 1e-3 the stiff ones have h gamma |lambda| >= 10.
def _stiff_block(stiff, seed=0):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.normal(size=(90, 90)))[0]
    lam = np.concatenate([-np.logspace(4, 8, stiff), -np.logspace(-2, 0, 90 - stiff)])
    return (q * lam) @ q.T, rng.normal(size=90)


@pytest.mark.parametrize("stiff", [6, 60])
def test_arnoldi_stops_once_a_chunk_finds_no_new_stiff_direction(stiff):
    a, f = _stiff_block(stiff)
    dim, scale = 64, 1e-3
    jvp = lambda x: jnp.asarray(a) @ x  # noqa: E731
    full_v, full_h = (np.asarray(x) for x in _arnoldi(jvp, jnp.asarray(f), dim))
    v, h = (np.asarray(x) for x in _arnoldi(jvp, jnp.asarray(f), dim, jnp.asarray(scale)))

    # the documented rule on the full process's H: stiff Ritz values of the symmetric part
    # of the leading j x j block, at every multiple of STIFF_CHUNK
    def count(j):
        block = full_h[:j, :j]
        return int(np.sum(scale * np.abs(np.linalg.eigvalsh(0.5 * (block + block.T))) > 1))

    used = next((j for j in range(STIFF_CHUNK_FROM, dim, STIFF_CHUNK)
                 if count(j) <= count(j - STIFF_CHUNK)), dim)
    # 6 stiff directions are all found within 24, 60 keep every chunk finding more
    assert used == (STIFF_CHUNK_FROM if stiff == 6 else dim), used
    assert count(used) == min(stiff, used)
    tol = 1e-12 * np.abs(full_h).max()
    np.testing.assert_allclose(h[:, :used], full_h[:, :used], atol=tol)
    np.testing.assert_allclose(v[:used + 1], full_v[:used + 1], atol=1e-12)
    np.testing.assert_array_equal(h[:, used:], 0.0)
    np.testing.assert_array_equal(v[used + 1:], 0.0)
    # W on the shortened space still holds every stiff direction: its Woodbury solve of a
    # first stage (I - h gamma W)^-1 f is the exact (I - h gamma A)^-1 f, as the full space's
    def first_stage(w):  # (I - scale W)^-1 f by the Woodbury identity
        c = np.linalg.solve(np.eye(dim) - scale * np.asarray(w.core) @ np.asarray(w.gram),
                            np.asarray(w.core) @ np.asarray(w.ut(jnp.asarray(f))))
        return f + scale * np.asarray(w.u(jnp.asarray(c)))

    exact = np.linalg.solve(np.eye(90) - scale * a, f)
    err = [np.linalg.norm(first_stage(_krylov_w(*vh)) - exact) / np.linalg.norm(exact)
           for vh in ((jnp.asarray(v), jnp.asarray(h)), (jnp.asarray(full_v), jnp.asarray(full_h)))]
    assert err[0] < 1e-9, err


def test_krylov_w_of_a_partly_filled_basis_is_the_dense_w():
    # products with V read only the filled rows' blocks: the same as the dense matrices
    a, f = _stiff_nonnormal(seed=3)
    v, h = _arnoldi(lambda x: jnp.asarray(a) @ x, jnp.asarray(f), 16, jnp.asarray(1e-9))
    jac = _krylov_w(v, h)
    v, h = np.asarray(v), np.asarray(h)
    assert np.count_nonzero(np.abs(v).sum(axis=1)) == MIN_KRYLOV_DIM + 1
    rng = np.random.default_rng(0)
    c, r = rng.normal(size=16), rng.normal(size=40)
    np.testing.assert_allclose(np.asarray(jac.u(jnp.asarray(c))), v.T @ c, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jac.ut(jnp.asarray(r))), v @ r, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jac.gram), v @ v.T, atol=1e-12)


def test_a_large_basis_that_stopped_early_is_used_by_its_filled_rows():
    # dim 64 with 40 filled rows (a stop of the stiff-direction rule): products with V and
    # the projection's eigh of H read a leading block, with the dense results
    from ufmflow.solvers._krylov import _row_buckets
    from ufmflow.solvers._projection import _leading_eigh

    rng = np.random.default_rng(11)
    dim, filled, size = 64, 40, 100
    v = np.zeros((dim, size))
    v[:filled] = np.linalg.qr(rng.normal(size=(size, filled)))[0].T
    h = np.zeros((dim, dim))
    h[:filled, :filled] = rng.normal(size=(filled, filled))
    jac = _krylov_w(jnp.asarray(v), jnp.asarray(h))
    counts, k = _row_buckets(dim), int(jac.rows)  # the fewest rows that hold the filled ones
    assert counts[k] >= filled and (k == 0 or counts[k - 1] < filled), (counts, k)
    c, r = rng.normal(size=dim), rng.normal(size=size)
    np.testing.assert_allclose(np.asarray(jac.u(jnp.asarray(c))), v.T @ c, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jac.ut(jnp.asarray(r))), v @ r, atol=1e-12)
    sym = 0.5 * (h + h.T)
    lam, y = (np.asarray(a) for a in _leading_eigh(jnp.asarray(sym), jac.rows))
    np.testing.assert_allclose(y @ np.diag(lam) @ y.T, sym, atol=1e-12)
    np.testing.assert_allclose(y.T @ y, np.eye(dim), atol=1e-12)
    np.testing.assert_allclose(np.sort(lam), np.linalg.eigvalsh(sym), atol=1e-12)


def test_adaptive_krylov_dimension_keeps_the_stiff_solution_and_shrinks_the_mild_one():
    # a gradient flow's symmetric Jacobian, eigenvalues -1 .. -1e6 (stiff) or scaled by 1e-6
    rng = np.random.default_rng(5)
    q = np.linalg.qr(rng.normal(size=(24, 24)))[0]
    lam, y0, t1 = -np.logspace(0, 6, 24), rng.normal(size=24), 2.0

    def solve(mat, adaptive):
        solver = RosenbrockW(krylov_dim=12, filter_error=True, adaptive_dim=adaptive)
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: jnp.asarray(mat) @ y), solver, 0.0, t1, None,
            jnp.asarray(y0), stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
            saveat=diffrax.SaveAt(t1=True), max_steps=100_000)

    for c in (1.0, 1e-6):  # stiff, and mild
        mat = q @ np.diag(c * lam) @ q.T
        exact = q @ (np.exp(c * lam * t1) * (q.T @ y0))
        sols = [solve(mat, adaptive) for adaptive in (False, True)]
        for sol in sols:
            assert np.abs(np.asarray(sol.ys[-1]) - exact).max() < 1e-6 * np.abs(y0).max()
        steps = [int(sol.stats["num_steps"]) for sol in sols]
        assert steps[1] <= 1.1 * steps[0], (c, steps)
    # on the mild problem a step builds only MIN_KRYLOV_DIM directions
    solver = RosenbrockW(krylov_dim=12, adaptive_dim=True)
    term = diffrax.ODETerm(lambda t, y, args: jnp.asarray(mat) @ y)
    y = jnp.asarray(y0)
    state = solver.step(term, 0.0, 0.1, y, None, solver.init(term, 0.0, 0.1, y, None), False)[3]
    assert np.count_nonzero(np.abs(np.asarray(state.basis)).sum(axis=1)) == MIN_KRYLOV_DIM + 1


def _nonlinear(t, y, args):  # a forced van der Pol oscillator coupled to a third variable
    return jnp.array([y[1], (1 - y[0] ** 2) * y[1] - y[0] + 0.3 * jnp.sin(y[2]),
                      -0.5 * y[2] + y[0] * y[1]])


def _fixed_step_errors(solver, steps=(8, 16, 32, 64), t1=1.0):
    term, y0 = diffrax.ODETerm(_nonlinear), jnp.array([2.0, 0.0, 0.5])
    ref = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, t1, 1e-3, y0, max_steps=100_000,
                              stepsize_controller=diffrax.PIDController(rtol=1e-13, atol=1e-13))
    # dt0 as an array: one compiled solve for every step count
    return np.array([float(jnp.linalg.norm(
        diffrax.diffeqsolve(term, solver, 0.0, t1, jnp.asarray(t1 / n), y0, max_steps=1000).ys[-1]
        - ref.ys[-1])) for n in steps])


def _exact_w(y):
    return LowRankJacobian.from_matrices(jnp.eye(3), jax.jacfwd(lambda z: _nonlinear(0, z, None))(y))


@pytest.mark.parametrize("w", ["exact", "krylov"])
def test_rodas4_converges_at_order_4_where_ros34pw2_converges_at_order_3(w):
    # theory §2.6, "Order 4": with W = J (the dense Jacobian, or a Krylov space that spans the
    # whole 3-dimensional state) RODAS4's error falls 16-fold per halving of h, ROS34PW2's
    # 8-fold (measured: orders 3.90-3.95 and 2.91-2.97; errors 1.1e-6 against 1.6e-4 at 8 steps)
    make = ((lambda tab: RosenbrockW(_exact_w, tableau=tab)) if w == "exact"
            else (lambda tab: RosenbrockW(krylov_dim=3, tableau=tab)))
    order = lambda e: np.log2(e[:-1] / e[1:])  # noqa: E731
    four, three = _fixed_step_errors(make("rodas4")), _fixed_step_errors(make("ros34pw2"))
    assert np.all(np.abs(order(four) - 4) < 0.15), order(four)
    assert np.all(np.abs(order(three) - 3) < 0.15), order(three)
    assert np.all(four * 50 < three), (four, three)
    assert make("rodas4").order(None) == 4 and make("ros34pw2").order(None) == 3


def test_rodas4_is_l_stable_and_its_error_estimate_sees_no_stiff_offset():
    # y' = lam (y - cos t) - sin t, lam = -1e8, from an offset of 1 (exact: cos t + e^{lam t}):
    # one step of h = 0.1 with the exact W lands on the slow solution (R(inf) = 0), and
    # RODAS4's unfiltered estimate (its embedded method is L-stable too) is the slow flow's
    # local error only; ROS34PW2's unfiltered estimate reports 48% of the offset (its embedded
    # method's R(inf) = -0.48, theory §2.6 "Filtered error"). Measured: RODAS4 y1 off by
    # 8.8e-7, estimate 4.5e-7; ROS34PW2 y1 off by 2.9e-7, estimate 0.478.
    lam = -1e8
    term = diffrax.ODETerm(lambda t, y, args: lam * (y - jnp.cos(t)) - jnp.sin(t))
    w = lambda y: LowRankJacobian.from_matrices(jnp.eye(1), jnp.array([[lam]]))  # noqa: E731

    def one_step(tableau):
        solver, y0 = RosenbrockW(w, tableau=tableau), jnp.array([2.0])
        state = solver.init(term, 0.0, 0.1, y0, None)
        y1, err, *_ = solver.step(term, 0.0, 0.1, y0, None, state, False)
        return abs(float(y1[0]) - np.cos(0.1)), abs(float(err[0]))

    off, est = one_step("rodas4")
    assert off < 2e-6 and est < 2e-6, (off, est)
    off, est = one_step("ros34pw2")
    assert off < 2e-6 and est > 0.4, (off, est)


def test_rodas4_needs_a_w():
    with pytest.raises(ValueError, match="krylov_dim or jacobian"):
        RosenbrockW(tableau="rodas4")
    with pytest.raises(ValueError, match="tableau must be one of"):
        RosenbrockW(krylov_dim=2, tableau="rodas5")
