"""Full-batch gradient descent with optax: the paper's training protocol (theory §2)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._flow import FlowSolution, _measure_model
from ._status import all_finite as _all_finite
from ._status import STATUS_NONFINITE, STATUS_OK
from ..core._checks import check_int, check_real
from ..core._model import DeepUFM


def default_save_epochs(epochs: int, num_saves: int = 64) -> np.ndarray:
    """Epoch 0 and up to `num_saves - 1` distinct log-spaced epochs ending at `epochs`."""
    if epochs < 1:
        return np.zeros(1, dtype=np.int64)
    if num_saves < 2:
        raise ValueError(f"num_saves must be >= 2 (epoch 0 and the last epoch), got {num_saves}.")
    grid = np.round(np.geomspace(1, epochs, num_saves - 1)).astype(np.int64)
    grid[-1] = epochs  # geomspace with one point returns its start
    return np.concatenate([[0], np.unique(grid)])


@eqx.filter_jit
def _descend_jit(model, lr, weight_decay, decay_epochs, save_epochs):
    k, n = model.num_classes, model.per_class
    rebuild = lambda f: DeepUFM(f, k, n)  # noqa: E731
    optimizer = optax.sgd(lr)
    grad_fn = jax.grad(lambda f: rebuild(f).loss())

    def step(epoch, carry):
        factors, opt_state = carry
        grads = grad_fn(factors)
        wd = jnp.where(epoch < decay_epochs, weight_decay, 0.0)
        grads = jax.tree_util.tree_map(lambda g, p: g + wd * p, grads, factors)
        updates, opt_state = optimizer.update(grads, opt_state, factors)
        return optax.apply_updates(factors, updates), opt_state

    def segment(carry, bounds):
        start, stop = bounds
        carry = jax.lax.fori_loop(start, stop, step, carry)
        return carry, _measure_model(rebuild(carry[0]), model)

    bounds = (jnp.concatenate([save_epochs[:1], save_epochs[:-1]]), save_epochs)
    init = (model.factors, optimizer.init(model.factors))
    (factors, _), saved = jax.lax.scan(segment, init, bounds)
    final = rebuild(factors)
    status = jnp.where(_all_finite(factors), STATUS_OK, STATUS_NONFINITE)
    return final, saved, status


def descend(
    model: DeepUFM,
    lr: float,
    epochs: int,
    *,
    num_saves: int = 64,
    save_epochs=None,
    weight_decay: float = 0.0,
    decay_epochs: int = 0,
) -> FlowSolution:
    """Full-batch gradient descent `theta <- theta - lr (grad loss + wd theta)` (theory §2).

    Weight decay `weight_decay` (the `lambda` of `(lambda/2) sum ||factor||^2`) applies during
    the first `decay_epochs` epochs only, then training is unregularized (the paper's protocol).
    GD with step `lr` for `E` epochs approximates GF time `t = lr E`.

    **Arguments:** `model`; `lr > 0`; `epochs >= 0`; `num_saves` or explicit `save_epochs`
    (ascending integers; default: 0 and log-spaced epochs up to `epochs`).

    **Returns:** a `FlowSolution` with `ts = lr * save_epochs`, the same saved quantities as
    `solve_flow`, `num_steps = epochs`, `num_rejected = 0`; status `nonfinite` if GD diverged.

    **Raises:** `ValueError` for `lr <= 0` or non-finite, negative or non-integer
    `epochs`/`decay_epochs`, negative `weight_decay`, or `save_epochs` that are not ascending
    integers ending at `epochs`.
    """
    check_real("lr", lr, minimum=0.0, strict=True, fix="A step size such as 0.1.")
    epochs = check_int("epochs", epochs, minimum=0)
    check_real("weight_decay", weight_decay, minimum=0.0)
    decay_epochs = check_int("decay_epochs", decay_epochs, minimum=0)
    if save_epochs is None:
        save_epochs = default_save_epochs(epochs, check_int("num_saves", num_saves, minimum=2))
    save_epochs = np.asarray(save_epochs)
    if (save_epochs.ndim != 1 or save_epochs.size == 0
            or not np.all(np.isfinite(save_epochs)) or np.any(save_epochs != np.round(save_epochs))
            or np.any(np.diff(save_epochs) < 0) or save_epochs[0] < 0):
        raise ValueError("save_epochs must be a non-decreasing 1-D array of integer epochs >= 0.")
    save_epochs = save_epochs.astype(np.int64)
    if save_epochs[-1] != epochs:
        raise ValueError(f"save_epochs must end at epochs = {epochs} (training stops at the last "
                         f"save), got {int(save_epochs[-1])}; append {epochs} to save_epochs.")
    dtype = model.factors[0].dtype
    final, saved, status = _descend_jit(
        model,
        jnp.asarray(lr, dtype),
        jnp.asarray(weight_decay, dtype),
        jnp.asarray(decay_epochs),
        jnp.asarray(save_epochs),
    )
    return FlowSolution(
        ts=jnp.asarray(save_epochs, dtype) * lr,
        model=final,
        status=status,
        num_steps=jnp.asarray(int(save_epochs[-1])),
        num_rejected=jnp.asarray(0),
        num_rescues=jnp.asarray(0),
        **saved,
    )
