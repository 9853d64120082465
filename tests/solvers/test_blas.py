"""`single_threaded_lapack`: the BLAS behind JAX's CPU LAPACK kernels runs on one thread, and a
solve is the same, bit for bit (theory §2.6, "LAPACK threads")."""

import jax
import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

import ufmflow as uf


@pytest.fixture
def restored_blas_threads():
    """The process's BLAS thread counts, put back after the test (the setting is
    process-wide, and an xdist worker runs other tests after this one)."""
    before = ThreadpoolController().select(user_api="blas").info()
    yield before
    controller = ThreadpoolController()
    for lib in before:
        controller.select(filepath=lib["filepath"]).limit(limits=lib["num_threads"])


def test_every_blas_library_runs_on_one_thread_after_it(restored_blas_threads):
    assert uf.single_threaded_lapack() is True
    libs = ThreadpoolController().select(user_api="blas").info()
    assert libs and all(lib["num_threads"] == 1 for lib in libs)
    # the library JAX's LAPACK kernels call (SciPy's, loaded by the call) is among them
    import scipy.linalg.cython_lapack as lapack

    scipy_dir = lapack.__file__.split("scipy")[0]
    assert any(lib["filepath"].startswith(scipy_dir) for lib in libs)


def test_a_solve_is_the_same_bit_for_bit(restored_blas_threads):
    model = uf.gaussian_init(jax.random.PRNGKey(1717), 4, 1, 8, 4, 0.3)
    before = uf.solve_flow(model, 1e4, num_saves=8)
    assert bool(before.ok) and int(before.num_steps) > 20  # a stiff solve, eigh and LU inside
    uf.single_threaded_lapack()
    after = uf.solve_flow(model, 1e4, num_saves=8)
    assert int(after.num_steps) == int(before.num_steps)
    np.testing.assert_array_equal(np.asarray(after.log_loss), np.asarray(before.log_loss))
    np.testing.assert_array_equal(np.asarray(after.singular_values),
                                  np.asarray(before.singular_values))


def test_without_threadpoolctl_it_changes_nothing(monkeypatch, restored_blas_threads):
    """A checkout run with `PYTHONPATH=.` where the image lacks threadpoolctl (the sweep's
    command line calls it there too) goes on as without it."""
    import sys

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # `import` raises ImportError
    assert uf.single_threaded_lapack() is False
    monkeypatch.undo()
    now = ThreadpoolController().select(user_api="blas").info()
    assert [lib["num_threads"] for lib in now] == \
        [lib["num_threads"] for lib in restored_blas_threads]
