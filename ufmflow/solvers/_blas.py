"""Process-wide CPU setting for the stiff solver's small dense linear algebra:
`single_threaded_lapack` (theory §2.6, "LAPACK threads")."""

from __future__ import annotations


def single_threaded_lapack() -> bool:
    """Run the LAPACK routines that XLA:CPU calls on one thread, for this process.

    On CPU, JAX's `eigh`, `eigvalsh`, `eig` and `lu_factor` are calls into the LAPACK that SciPy
    ships (OpenBLAS in the wheels), which starts its own threads next to XLA's. The stiff
    solver (`solve_flow`'s Krylov `W`, theory §2.6) calls them on `m x m` matrices (`m` up to
    `K + N`) several times per step, between the Arnoldi process's memory-bound passes over
    its basis; OpenBLAS's threads then keep cores busy that XLA's threads need: an Arnoldi
    process of 128 directions over 36,865 parameters (a stand-in Jacobian) took 454-474 ms with
    OpenBLAS's default threads and 359-375 ms with one (2 cores; its 13 `eigvalsh` calls, at
    most `128 x 128`, take 10 ms together alone and about 115 ms inside the loop). Measured
    with the real field (`benchmarks/bench_lapack_threads.py`, theory §2.6 "LAPACK threads"):
    that Arnoldi process
    1.21x faster; K=64 solves 1.17-1.19x, K=16 with n=4 1.08x, the same steps and numbers bit
    for bit; small models (`m = 16`) 1.00x: OpenBLAS runs such sizes on one thread anyway.

    Limits every BLAS library loaded in the process (`threadpoolctl`), NumPy's included, to
    one thread, after loading the one JAX's LAPACK kernels call (`scipy.linalg.cython_lapack`)
    so that the limit reaches it. Takes effect at once, also after JAX has started.
    `python -m ufmflow.sweep` calls it; in a notebook or script:

        import ufmflow as uf
        uf.single_threaded_lapack()

    Undo it with `threadpoolctl.threadpool_limits(os.cpu_count(), user_api="blas")`. Until
    then NumPy or SciPy work of your own on large matrices runs on one thread too.

    **Returns:** `True` if some BLAS library was limited; `False` if none was found, or
    `threadpoolctl` or SciPy is not installed (a checkout run with `PYTHONPATH=.` on a machine
    whose image lacks them): nothing changed, and the solvers run as they would without it.
    """
    try:
        import scipy.linalg.cython_lapack  # noqa: F401  (loads the library JAX's LAPACK calls)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return False

    blas = ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers:
        return False
    blas.limit(limits=1)
    return True
