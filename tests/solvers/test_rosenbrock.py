"""The Rosenbrock-W method as a diffrax solver: `diffrax.diffeqsolve` with a PID controller on a
stiff linear ODE, against the exact solution `expm(A t) y0`."""

import diffrax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from ufmflow.solvers._rosenbrock import LowRankJacobian, RosenbrockW

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
