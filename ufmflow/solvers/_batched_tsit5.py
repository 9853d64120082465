"""A batched adaptive Tsit5 loop with continuous batching (`run_batch`), for many small systems
of the same shape, each a column of `(K, slots)` arrays, whose problem is given as a *form*
(`_hadamard_forms`: state variables, field, error weights).

The method is `solve_hadamard`'s default, taken from diffrax: Tsitouras' 5(4) pair with the
coefficients of `diffrax.Tsit5.tableau` (`_A`, `_B`, `_C`, `_E` below are read from it, not
retyped) and its dense output (`_dense_weights`: the polynomials of
`diffrax.Tsit5.interpolation_cls`, checked equal to them bit for bit by
tests/solvers/test_batched_tsit5.py), an integral step-size controller with the rules of
`diffrax.PIDController(pcoeff=0, icoeff=1)` and its default `safety`, `factormin`,
`factormax` (read from the class: 0.9, 0.2, 10; the factor lies in `[1, factormax]` after an
accepted step and `[factormin, safety]` after a rejected one; error order 5, the solver's),
and diffrax's initial step size (`_select_initial_step`). Each column's arithmetic is that of
one diffrax solve; tests/solvers/test_hadamard_many.py checks the same accepted and rejected
steps as `solve_hadamard`.

- *Continuous batching*: `slots` systems advance together, and a slot whose run has finished
  takes the next waiting run, so the cost is the total number of steps over the runs (divided
  by the slot count), not the slowest run's count times the batch size.
- Saves at requested times `w = log1p(tau)` are located on the dense output (`_locate`:
  Newton's method on `w`, `_roots.invert_monotone`); `s` there is computed and written
  only for the slots that save in a step (`_batched_writes`); a refilled slot's columns are
  copied one slot at a time; the final state is the last save, read after the loop.
- In float64 the field's per-column shifts are taken from the step's start for its inner
  stages (`tsit5_step`): two reductions over `K` fewer in five of the six evaluations, 1.06x
  per step (K=64).
- Other step-size controllers (PI, safety 0.8-0.95, growth limits 1.5-5) and Dopri8 (more
  evaluations, checked with scipy's DOP853 on the same time change) were measured slower.

With `differentiable=True` (one slot per run) the same arithmetic is reverse-mode
differentiable: the step loop is `equinox.internal.while_loop(kind="checkpointed")`, the loop
over a step's saves `kind="bounded"`, writes are selects, and a save's location `theta` is
found without derivatives and then given the implicit-function derivative
`dtheta = -dw(theta) / w'(theta)` by a Newton correction whose value is exactly 0.
"""

from __future__ import annotations

import dataclasses
import functools

import diffrax
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

from ._batched_writes import _select_rows, _write_columns, _write_rows
from ._roots import invert_monotone as _invert_monotone
from ._status import STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK, STATUS_STALLED

# Tsitouras (2011) 5(4) pair: diffrax's tableau, as Python floats (weakly typed: a float32
# state stays float32). `_A[i]`: stage i+1's row; `_B == _A[-1] + (0,)` (FSAL); `_E`: error.
_TABLEAU = diffrax.Tsit5.tableau
_A = tuple(tuple(float(a) for a in row) for row in _TABLEAU.a_lower)
_B = tuple(float(b) for b in _TABLEAU.b_sol)
_C = tuple(float(c) for c in _TABLEAU.c)
_E = tuple(float(e) for e in _TABLEAU.b_error)
assert _B == _A[-1] + (0.0,), "Tsit5 is FSAL: its last stage is the new point"
_ERROR_ORDER = diffrax.Tsit5().order(None)  # diffrax passes the solver's order (5)
_PID = {f.name: f.default for f in dataclasses.fields(diffrax.PIDController)}
_SAFETY, _FACTOR_MIN, _FACTOR_MAX = (float(_PID[n]) for n in ("safety", "factormin", "factormax"))
_MAX_CONSECUTIVE_REJECTS = 60  # as `_integrate`


def rms(a_s, a_w):
    """Per column, the RMS norm over the `K` rows of `a_s` and `a_w`: diffrax's `rms_norm` of the
    state `(s, w)`."""
    k1 = a_s.shape[0] + 1
    return jnp.sqrt((jnp.sum(a_s * a_s, axis=0) + a_w * a_w) / k1)


def _dense_weights(theta):
    """Tsit5 dense-output weights `b_j(theta)`, `theta in [0, 1]` (Tsitouras 2011): the
    polynomials of `diffrax.Tsit5.interpolation_cls.evaluate`, elementwise in `theta`."""
    t = theta
    t2 = t * t
    return (
        -1.0530884977290216 * t * (t - 1.3299890189751412)
        * (t2 - 1.4364028541716351 * t + 0.7139816917074209),
        0.1017 * t2 * (t2 - 2.1966568338249754 * t + 1.2949852507374631),
        2.490627285651252793 * t2 * (t2 - 2.38535645472061657 * t + 1.57803468208092486),
        -16.54810288924490272 * (t - 1.21712927295533244) * (t - 0.61620406037800089) * t2,
        47.37952196281928122 * (t - 1.203071208372362603) * (t - 0.658047292653547382) * t2,
        -34.87065786149660974 * (t - 1.2) * (t - 0.666666666666666667) * t2,
        2.5 * (t - 1) * (t - 0.6) * t2,
    )


def _locate(w_at, target, do):
    """Per slot where `do`, `theta in [0, 1]` with `w_at(theta) = target` on the dense output of
    `w` over an accepted step (`_roots.invert_monotone`, elementwise); elsewhere 0 (the
    target is replaced by `w_at(0)`, which converges at once, so that slots without a save do not
    keep the Newton loop going)."""
    zeros, ones = jnp.zeros_like(target), jnp.ones_like(target)
    w_lo = w_at(zeros)
    return _invert_monotone(w_at, jnp.where(do, target, w_lo), zeros, ones, w_lo, w_at(ones))


def _locate_differentiable(w_of, args, target, do):
    """`_locate(w_at, target, do)` for `w_at(theta) = w_of(theta, *args)`, with the
    implicit-function derivative `-dw_at(theta) / w_at'(theta)` in `args` and `target` (the
    Newton iterations run without derivatives; the correction added is exactly 0)."""
    fixed = jax.lax.stop_gradient(args)
    theta = _locate(lambda t: w_of(t, *fixed), jax.lax.stop_gradient(target), do)
    theta = jax.lax.stop_gradient(theta)
    w, dw = jax.jvp(lambda t: w_of(t, *args), (theta,), (jnp.ones_like(theta),))
    ok = do & (dw > 0)
    step = jnp.where(ok, (w - target) / jnp.where(ok, dw, 1.0), 0.0)
    return theta - (step - jax.lax.stop_gradient(step))


def initial_step(form, s0, w0, f0s, f0w, alpha, rtol, atol):
    """diffrax's `_select_initial_step` (Hairer, Norsett & Wanner II.4), columns independent,
    in the variables and error weights of `form`."""
    sc_s, sc_w = form.scales(s0, w0, s0, w0, rtol, atol)
    d0 = rms(form.size(s0) / sc_s, w0 / sc_w)
    d1 = rms(f0s / sc_s, f0w / sc_w)
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = jnp.where(small, 1e-6, 0.01 * d0 / jnp.where(small, 1.0, d1))
    f1s, f1w, _ = form.field(s0 + h0 * f0s, w0 + h0 * f0w, alpha)
    d2 = rms((f1s - f0s) / sc_s, (f1w - f0w) / sc_w) / h0
    max_d = jnp.maximum(d1, d2)
    h1 = jnp.where(max_d <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3),
                   (0.01 / max_d) ** (1.0 / _ERROR_ORDER))
    return jnp.minimum(100 * h0, h1)


def tsit5_step(field, s, w, f0s, f0w, h, alpha, shifts):
    """One Tsit5 step. In float64 the inner stages evaluate the field with the `shifts` of the
    step's start; the last one (the new point, FSAL) computes its own, returned for the next
    step. Shifts change the field's rounding, so the stages then differ by rounding patterns
    of their own; in float32 that noise (~1e-7 relative, in the time change's logarithms) is
    comparable to the tolerances the error estimate must resolve (measured: 64 runs, K=64,
    depth 1..8, scale 1e-6, rtol 1e-6: 16 failed, 1506 steps per run, against none failed and
    638 steps with every stage computing its own), so there every stage computes its own."""
    reuse = s.dtype == jnp.float64
    ks, kw = [f0s], [f0w]
    for i, row in enumerate(_A):
        si = s + h * sum(a * kk for a, kk in zip(row, ks))
        wi = w + h * sum(a * kk for a, kk in zip(row, kw))
        inner = reuse and i < len(_A) - 1
        fs, fw, shifts1 = field(si, wi, alpha, shifts if inner else None)
        ks.append(fs)
        kw.append(fw)
    # The 6th stage is the new point (FSAL): b == a[-1].
    s1, w1 = si, wi
    es = h * sum(e * kk for e, kk in zip(_E, ks))
    ew = h * sum(e * kk for e, kk in zip(_E, kw))
    return s1, w1, ks, kw, es, ew, shifts1


def run_batch(form, s0, alpha, w_targets, rtol, atol, *, slots, max_steps, pcoeff=0.0,
              icoeff=1.0, differentiable=False):
    """Integrate `N` systems of `form` from the rows of `s0 (N, K)` (parameters `alpha (N,)`),
    saving `to_s` of the state at the targets `w_targets (S,)` of `w = log1p(tau)`.

    Returns a dict: `s (N, S, K)` (NaN where not reached), `s_final (N, K)` (the last save
    made, else `s0`), `status`, `num_steps`, `num_rejected` `(N,)`.

    `slots`: systems advanced together (continuous batching); `differentiable=True` needs
    `slots == N` (see the module docstring). `pcoeff`, `icoeff`: diffrax's PID coefficients
    (`d = 0`); the default is the integral controller of `solve_hadamard`. (PI settings
    0.2-0.4 / 0.3-0.4 were tried on the K=64, depth 1..8 benchmark: fewer rejections but
    10-20% more steps.)"""
    n_runs, k = s0.shape
    n_save = w_targets.shape[0]
    dtype = s0.dtype
    if differentiable and slots != n_runs:
        raise ValueError(f"differentiable=True needs one slot per run, got slots={slots} for "
                         f"{n_runs} runs.")
    w0 = jnp.zeros((n_runs,), dtype)
    x0_cols = form.to_state(s0.T)  # the loop's layout: (K, runs), one system per column

    # Per run, before the loop: first derivative (FSAL) and initial step, and the saves at 0.
    f0s_all, f0w_all, shifts_all = form.field(x0_cols, w0, alpha)
    h0_all = initial_step(form, x0_cols, w0, f0s_all, f0w_all, alpha, rtol, atol)
    n_init = jnp.sum(w_targets <= 0.0)
    at_zero = (w_targets <= 0.0)[None, :, None]
    out = dict(
        s=jnp.where(at_zero, s0[:, None], jnp.nan).astype(dtype),
        status=jnp.zeros((n_runs,), jnp.int32),
        num_steps=jnp.zeros((n_runs,), jnp.int32),
        num_rejected=jnp.zeros((n_runs,), jnp.int32),
        num_saved=jnp.zeros((n_runs,), jnp.int32),
    )

    def load(slot_run, columns=True):
        """Fresh per-slot state for runs `slot_run` (`n_runs`: empty slot); without the
        `(K, slots)` columns `s`, `f0s` if not `columns`."""
        r = jnp.minimum(slot_run, n_runs - 1)
        cols = dict(s=x0_cols[:, r], f0s=f0s_all[:, r]) if columns else {}
        return dict(
            cols, run=slot_run, w=jnp.zeros_like(w0[r]),
            sigma=jnp.zeros_like(w0[r]), h=h0_all[r], prev_inv=jnp.ones_like(h0_all[r]),
            f0w=f0w_all[r], alpha=alpha[r], shifts=tuple(a[r] for a in shifts_all),
            save_idx=jnp.full(slot_run.shape, n_init, jnp.int32),
            steps=jnp.zeros(slot_run.shape, jnp.int32),
            rejected=jnp.zeros(slot_run.shape, jnp.int32),
            consecutive=jnp.zeros(slot_run.shape, jnp.int32),
            status=jnp.zeros(slot_run.shape, jnp.int32),
        )

    first_runs = jnp.arange(slots)
    slot = load(jnp.where(first_runs < n_runs, first_runs, n_runs))
    carry0 = dict(slot=slot, out=out, next_run=jnp.asarray(min(slots, n_runs)))

    def cond(c):
        return jnp.any(c["slot"]["run"] < n_runs)

    def body(c):
        st, out = c["slot"], c["out"]
        occupied = st["run"] < n_runs
        active = occupied & (st["save_idx"] < n_save)  # (all saves at tau = 0: no step)
        s, w, h, sigma = st["s"], st["w"], st["h"], st["sigma"]
        s1, w1, ks, kw, es, ew, shifts1 = tsit5_step(form.field, s, w, st["f0s"], st["f0w"],
                                                     h, st["alpha"], st["shifts"])
        finite = form.finite(s1) & jnp.isfinite(w1) \
            & jnp.all(jnp.isfinite(es), 0) & jnp.isfinite(ew)
        err = form.error(es, ew, ks[-1], kw[-1], s, w, s1, w1, rtol, atol)
        err = jnp.where(finite, err, jnp.inf)
        accept = (err < 1) & active
        inv = 1.0 / err
        factor = _SAFETY * inv ** ((icoeff + pcoeff) / _ERROR_ORDER)
        if pcoeff:
            factor = factor * st["prev_inv"] ** (-pcoeff / _ERROR_ORDER)
        inv_state = jnp.where((inv == 0) | jnp.isinf(inv), 1.0, inv)
        prev_inv = jnp.where(accept, inv_state, st["prev_inv"])
        factor = jnp.clip(factor,
                          jnp.where(accept, 1.0, _FACTOR_MIN),
                          jnp.where(accept, _FACTOR_MAX, _SAFETY))
        sigma_new = jnp.where(accept, sigma + h, sigma)
        h_new = h * factor
        if differentiable:  # a finished run's slot stays as it is (no 0 * inf in its gradient)
            h_new = jnp.where(active, h_new, h)

        # Saves crossed inside the accepted step, on the dense output.
        def w_dense(theta, w, h, kw):
            b = _dense_weights(theta)
            return w + h * sum(bj * kj for bj, kj in zip(b, kw))

        w_at = functools.partial(w_dense, w=w, h=h, kw=kw)

        def s_at(b, j):  # slot j's `s` on the dense output, weights `b` (per slot)
            return form.to_s(s[:, j] + h[j] * sum(bi[j] * ki[:, j] for bi, ki in zip(b, ks)))

        def target(idx):
            return w_targets[jnp.minimum(idx, n_save - 1)]

        def needs_save(idx):
            return accept & (idx < n_save) & (target(idx) <= w1)

        def save_cond(sc):
            return jnp.any(needs_save(sc[0]))

        def save_body(sc):
            # Every slot's next save time on the dense output; `s` there for the saving slots
            # only (most slots have no save in a given step).
            idx, out = sc
            do = needs_save(idx)
            if differentiable:
                b = _dense_weights(_locate_differentiable(w_dense, (w, h, kw), target(idx),
                                                          do))
                s_all = form.to_s(s + h * sum(bi * ki for bi, ki in zip(b, ks)))
                out["s"] = _select_rows(out["s"], idx, s_all.T, do)
            else:
                b = _dense_weights(_locate(w_at, target(idx), do))
                out["s"] = _write_rows(out["s"], (st["run"], idx), functools.partial(s_at, b),
                                       do)
            return idx + do.astype(idx.dtype), out

        sc0 = (st["save_idx"], dict(out))
        if differentiable:
            save_idx, out = eqxi.while_loop(save_cond, save_body, sc0, max_steps=n_save,
                                            kind="bounded")
        else:
            save_idx, out = jax.lax.while_loop(save_cond, save_body, sc0)

        steps = st["steps"] + active.astype(jnp.int32)
        consecutive = jnp.where(accept, 0, st["consecutive"] + 1)
        status = st["status"]
        status = jnp.where((consecutive >= _MAX_CONSECUTIVE_REJECTS) & (status == STATUS_OK),
                           jnp.where(finite, STATUS_STALLED, STATUS_NONFINITE), status)
        stalled = h_new <= 16 * jnp.finfo(dtype).eps * jnp.abs(sigma_new)
        status = jnp.where(stalled & (status == STATUS_OK), STATUS_STALLED, status)
        status = jnp.where((steps >= max_steps) & (save_idx < n_save) & (status == STATUS_OK),
                           STATUS_MAX_STEPS, status)
        st = dict(
            st, s=jnp.where(accept, s1, s), w=jnp.where(accept, w1, w),
            sigma=sigma_new, h=h_new,
            f0s=jnp.where(accept, ks[-1], st["f0s"]),
            f0w=jnp.where(accept, kw[-1], st["f0w"]),
            shifts=tuple(jnp.where(accept, a, b) for a, b in zip(shifts1, st["shifts"])),
            save_idx=save_idx, steps=steps, prev_inv=prev_inv,
            rejected=st["rejected"] + (active & ~accept).astype(jnp.int32),
            consecutive=consecutive, status=status,
        )

        # Finished runs hand in their results; their slots take the next waiting runs.
        done = occupied & ((save_idx >= n_save) | (status != STATUS_OK))
        finals = (status, steps, st["rejected"], save_idx)
        names = ("status", "num_steps", "num_rejected", "num_saved")
        if differentiable:  # slot j is run j; no run waits
            for name, value in zip(names, finals):
                out[name] = _select_rows(out[name], None, value, done)
            st["run"] = jnp.where(done, n_runs, st["run"])
            return dict(slot=st, out=out, next_run=c["next_run"])
        written = _write_rows(tuple(out[n] for n in names), (st["run"],),
                              lambda j: tuple(a[j] for a in finals), done)
        out.update(zip(names, written))

        def refill(st):
            order = jnp.cumsum(done.astype(jnp.int32)) - 1
            new_run = jnp.where(done, jnp.minimum(c["next_run"] + order, n_runs), st["run"])
            fresh = load(new_run, columns=False)
            st = dict(st, **jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), fresh,
                                                    {key: st[key] for key in fresh}))

            def columns(j):  # the refilled slot's columns, copied (not a (K, slots) gather)
                r = jnp.minimum(new_run[j], n_runs - 1)
                return (jax.lax.dynamic_slice_in_dim(x0_cols, r, 1, axis=1),
                        jax.lax.dynamic_slice_in_dim(f0s_all, r, 1, axis=1))

            st["s"], st["f0s"] = _write_columns((st["s"], st["f0s"]), columns, done)
            return st

        st = jax.lax.cond(jnp.any(done), refill, lambda st: st, st)
        return dict(slot=st, out=out, next_run=c["next_run"] + jnp.sum(done))

    if differentiable:
        # Every run is done after `max_steps` iterations (its status is then set).
        out = eqxi.while_loop(cond, body, carry0, max_steps=max(int(max_steps), 1),
                              kind="checkpointed")["out"]
    else:
        out = jax.lax.while_loop(cond, body, carry0)["out"]
    # The final state is the last save made (the one at `tau1` for a finished run), else `s0`.
    num_saved = out.pop("num_saved")
    last = jnp.take_along_axis(out["s"], jnp.maximum(num_saved - 1, 0)[:, None, None], axis=1)
    out["s_final"] = jnp.where((num_saved > 0)[:, None], last[:, 0], s0)
    return out
