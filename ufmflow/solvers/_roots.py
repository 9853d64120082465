"""Safeguarded Newton for the time where a monotone scalar interpolant reaches a target, with
its derivative by the implicit function theorem: how `integrate` and the batched Tsit5 loop
locate save times and events on a step's dense output (theory §2.4)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_NEWTON_ITERS = 40


def invert_monotone(w_of, target, lo, hi, w_lo, w_hi):
    """`sigma` in `[lo, hi]` with `w_of(sigma) = target`, for `w_of` increasing on the bracket
    with `w_of(lo) = w_lo < target <= w_hi = w_of(hi)` (the dense interpolant of `w` over one
    accepted step, where `dw/dsigma = g/(1+t) > 0`); elementwise, so arrays of brackets work.
    Any `w_of` with `w_of(lo) < target <= w_of(hi)` works (a root of `w_of - target` is kept
    bracketed), e.g. a terminating event.

    Newton's method from the secant guess, each iterate kept inside the current bracket
    (bisection when Newton leaves it). Where `w` is log-like over the step (`t` growing from 0
    by orders of magnitude) Newton creeps at first, hence up to `_NEWTON_ITERS = 40` iterations
    (6 lost up to 1e-3 at some saves, with the bracket test then exclusive); the loop stops as
    soon as no element moves by more than 8 ulps of the bracket's larger end (each iteration is
    a dispatch of several kernels on a CPU, and the batched sweeps locate thousands of saves).

    Differentiable (forward and reverse mode) by the implicit function theorem, at no cost
    when not differentiated: the root `x` of `w(x; theta) = target(theta)` has
    `dx = (d target - dw/dtheta . d theta) / w'(x)`, a `jax.custom_jvp` rule over the
    closure-converted `w_of` (its closed-over arrays, e.g. the interpolant's coefficients, are
    the `theta`); the Newton loop itself is never differentiated. The bracket ends carry no
    derivative (the root is interior).
    """
    # (A fresh lambda: `closure_convert` caches on its function, and a bound method of a module
    # holding tracers cannot be hashed.)
    fn, consts = jax.closure_convert(lambda x: w_of(x), lo)
    return _root(fn, target, lo, hi, w_lo, w_hi, *consts)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _root(fn, target, lo, hi, w_lo, w_hi, *consts):
    return _newton(lambda x: fn(x, *consts), target, lo, hi, w_lo, w_hi)


@_root.defjvp
def _root_jvp(fn, primals, tangents):
    target, lo, hi, w_lo, w_hi, *consts = primals
    d_target = tangents[0]
    d_consts = tangents[5:]
    x = _root(fn, *primals)
    ones = jnp.ones_like(x)
    _, dw_dx = jax.jvp(lambda xx: fn(xx, *consts), (x,), (ones,))
    if consts:
        _, dw_dtheta = jax.jvp(lambda *cs: fn(x, *cs), tuple(consts), tuple(d_consts))
    else:
        dw_dtheta = jnp.zeros_like(x)
    # Guarded like Newton: no root (dw/dx = 0) gives a zero, not an infinite, derivative.
    safe = dw_dx != 0
    dx = jnp.where(safe, (d_target - dw_dtheta) / jnp.where(safe, dw_dx, 1.0), 0.0)
    return x, dx


def _newton(w_of, target, lo, hi, w_lo, w_hi):
    width = hi - lo
    frac = jnp.clip((target - w_lo) / jnp.where(w_hi > w_lo, w_hi - w_lo, 1.0), 0.0, 1.0)
    x = lo + frac * width
    tol = 8 * jnp.finfo(jnp.result_type(x)).eps * jnp.maximum(jnp.abs(lo), jnp.abs(hi))

    def newton(state):
        i, x, a, b, _ = state
        w, dw = jax.jvp(w_of, (x,), (jnp.ones_like(x),))
        below = w < target
        a, b = jnp.where(below, x, a), jnp.where(below, b, x)
        step = (target - w) / jnp.where(dw > 0, dw, 1.0)
        x_new = x + jnp.where(dw > 0, step, 0.0)
        # Inclusive: at an exact hit (`w == target`, so `b = x`) Newton stays put; where the
        # slope is not positive (an event function, not monotone) bisect.
        inside = (x_new >= a) & (x_new <= b) & ((dw > 0) | (w == target))
        x_new = jnp.where(inside, x_new, 0.5 * (a + b))
        return i + 1, x_new, a, b, jnp.any(jnp.abs(x_new - x) > tol)

    def go_on(state):
        return (state[0] < _NEWTON_ITERS) & state[4]

    _, x, _, _, _ = jax.lax.while_loop(go_on, newton, (0, x, lo, hi, jnp.asarray(True)))
    return x
