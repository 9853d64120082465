"""Full-batch gradient descent on real networks, vmapped over seeds (theory §7.1).

The loss is the mean cross-entropy over the whole training set, with no weight decay or other
regularization; every epoch is one `optax.sgd` step on the exact full-batch gradient (paper
App. E.1 approximated full batch with batches of 10,000; here it is exact). `microbatch` splits
the forward and backward pass into chunks whose gradients are summed, to bound memory: the
update is the same full-batch step.

A batch of models (leading axis `S`, one per seed, e.g. `eqx.filter_vmap(make)(keys)`) trains
in one compiled program: the epochs run in `lax.scan` chunks of `epochs / checkpoints`, and after
each chunk the models are evaluated (class-mean logits on the training set, losses and
accuracies on the training and test sets). A model whose parameters become non-finite is
flagged, not raised on: the rest of the batch is kept (DESIGN: per-run status).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int


def _pad(x: np.ndarray, y: np.ndarray, microbatch: int | None):
    """Pad to a multiple of `microbatch` (zero images, weight 0); weights 1 on real samples."""
    n = len(y)
    m = n if microbatch is None else -(-n // microbatch) * microbatch
    w = np.zeros(m, np.float32)
    w[:n] = 1.0
    if m > n:
        x = np.concatenate([x, np.zeros((m - n,) + x.shape[1:], x.dtype)])
        y = np.concatenate([y, np.zeros(m - n, y.dtype)])
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)


def _sums(model, x, y, w):
    """Weighted sums of the cross-entropy and of correct predictions, and the logits."""
    logits = jax.vmap(model)(x)
    picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    ce = jax.nn.logsumexp(logits, axis=1) - picked
    correct = (jnp.argmax(logits, axis=1) == y).astype(logits.dtype)
    return jnp.sum(ce * w), (jnp.sum(correct * w), logits)


def _chunks(microbatch, *arrays):
    return [a.reshape((-1, microbatch) + a.shape[1:]) for a in arrays]


def full_batch_gradient(params, static, x, y, w, microbatch: int | None = None):
    """`(mean loss, accuracy, gradient of the mean loss)` over all samples of weight 1.

    With `microbatch`, `x` (padded to a multiple of it) is processed in chunks whose summed
    gradients are divided by the sample count: the same full-batch gradient (up to rounding).
    """
    def f(p, xb, yb, wb):
        s, (c, _) = _sums(eqx.combine(p, static), xb, yb, wb)
        return s, c

    n = jnp.sum(w)
    if microbatch is None:
        (s, c), g = jax.value_and_grad(f, has_aux=True)(params, x, y, w)
    else:
        def body(acc, chunk):
            (s, c), g = jax.value_and_grad(f, has_aux=True)(params, *chunk)
            return jax.tree_util.tree_map(jnp.add, acc, (s, c, g)), None

        zero = (jnp.zeros((), x.dtype), jnp.zeros((), x.dtype),
                jax.tree_util.tree_map(jnp.zeros_like, params))
        (s, c, g), _ = jax.lax.scan(body, zero, _chunks(microbatch, x, y, w))
    return s / n, c / n, jax.tree_util.tree_map(lambda a: a / n, g)


def logits_of(model, x, microbatch: int | None = None) -> Float[Array, "N K"]:
    """Logits of `model` on every image of `x` (chunked with `microbatch`; `x` padded to a
    multiple of it)."""
    if microbatch is None:
        return jax.vmap(model)(x)
    out = jax.lax.map(jax.vmap(model), x.reshape((-1, microbatch) + x.shape[1:]))
    return out.reshape((-1,) + out.shape[2:])


def class_mean_logits(logits: Float[Array, "N K"], labels: Int[Array, " N"], num_classes: int,
                      weights: Float[Array, " N"] | None = None) -> Float[Array, "K K"]:
    """`Zbar` with column `c` the mean logit vector of the samples of class `c` (theory §1.2,
    §6.1; `weights` 0 drop padded samples)."""
    w = jnp.ones(labels.shape, logits.dtype) if weights is None else weights
    onehot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype) * w[:, None]
    return (logits.T @ onehot) / jnp.sum(onehot, axis=0)


def _evaluate(model, xtr, ytr, wtr, xte, yte, wte, num_classes, microbatch):
    out = {}
    for tag, x, y, w in (("train", xtr, ytr, wtr), ("test", xte, yte, wte)):
        logits = logits_of(model, x, microbatch)
        picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
        ce = jax.nn.logsumexp(logits, axis=1) - picked
        correct = (jnp.argmax(logits, axis=1) == y).astype(logits.dtype)
        out[f"{tag}_loss"] = jnp.sum(ce * w) / jnp.sum(w)
        out[f"{tag}_accuracy"] = jnp.sum(correct * w) / jnp.sum(w)
        if tag == "train":
            out["class_means"] = class_mean_logits(logits, y, num_classes, w)
    finite = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda a: jnp.all(jnp.isfinite(a)),
                               eqx.filter(model, eqx.is_inexact_array)))
    out["finite"] = jnp.all(jnp.stack(finite))
    return out


def train_full_batch(models: eqx.Module, x_train, y_train, x_test, y_test, *, num_classes: int,
                     epochs: int, lr: float, checkpoints: int = 20,
                     microbatch: int | None = None,
                     on_chunk: Callable[[int], None] | None = None):
    """Train a seed-batch of models by full-batch GD (theory §7.1); return `(models, record)`.

    **Arguments:**

    - `models`: a `Classifier` whose array leaves have a leading seed axis `S`.
    - `x_train (N, C, H, W)`, `y_train (N,)`, `x_test`, `y_test`: numpy or JAX arrays.
    - `epochs`: GD steps; `lr`: the `optax.sgd` learning rate (no momentum, no weight decay).
    - `checkpoints`: evaluations after every `epochs / checkpoints` epochs (plus one at epoch 0).
    - `microbatch`: chunk size of the forward/backward passes (memory only; same update).
    - `on_chunk(epochs_done)`: called after each chunk (progress bars).

    **Returns:** the trained models and a dict of numpy arrays: `loss`, `train_accuracy`
    `(epochs, S)` (each epoch's, before its update), `epoch` `(checkpoints + 1,)` and, at those
    epochs, `class_means` `(C+1, S, K, K)`, `train_loss`, `train_accuracy_t`, `test_loss`,
    `test_accuracy` `(C+1, S)`, `finite` `(C+1, S)`.

    **Raises:** `ValueError` if `epochs` is not a positive multiple of `checkpoints`.
    """
    if checkpoints < 1 or epochs < 1 or epochs % checkpoints:
        raise ValueError(f"epochs={epochs}, checkpoints={checkpoints}: epochs must be a positive "
                         "multiple of checkpoints")
    chunk = epochs // checkpoints
    xtr, ytr, wtr = _pad(np.asarray(x_train), np.asarray(y_train), microbatch)
    xte, yte, wte = _pad(np.asarray(x_test), np.asarray(y_test), microbatch)
    params, static = eqx.partition(models, eqx.is_inexact_array)
    opt = optax.sgd(lr)
    opt_state = jax.vmap(opt.init)(params)

    def step(p, s, x, y, w):
        loss, acc, g = full_batch_gradient(p, static, x, y, w, microbatch)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss, acc

    vstep = jax.vmap(step, in_axes=(0, 0, None, None, None))

    @jax.jit
    def run_chunk(p, s, x, y, w):
        def body(carry, _):
            p, s, loss, acc = vstep(*carry, x, y, w)
            return (p, s), (loss, acc)

        (p, s), hist = jax.lax.scan(body, (p, s), None, length=chunk)
        return p, s, hist

    @jax.jit
    def evaluate(p, *arrays):
        return jax.vmap(lambda q: _evaluate(eqx.combine(q, static), *arrays, num_classes,
                                            microbatch))(p)

    evals = [jax.device_get(evaluate(params, xtr, ytr, wtr, xte, yte, wte))]
    losses, accs = [], []
    for i in range(checkpoints):
        params, opt_state, (loss, acc) = run_chunk(params, opt_state, xtr, ytr, wtr)
        evals.append(jax.device_get(evaluate(params, xtr, ytr, wtr, xte, yte, wte)))
        losses.append(np.asarray(loss))
        accs.append(np.asarray(acc))
        if on_chunk is not None:
            on_chunk((i + 1) * chunk)
    record = {k: np.stack([np.asarray(e[k]) for e in evals]) for k in evals[0]}
    record["train_accuracy_t"] = record.pop("train_accuracy")
    record["test_accuracy"] = record.pop("test_accuracy")
    record["loss"] = np.concatenate(losses)
    record["train_accuracy"] = np.concatenate(accs)
    record["epoch"] = np.arange(checkpoints + 1) * chunk
    return eqx.combine(params, static), record


def first_perfect_epoch(train_accuracy: np.ndarray) -> np.ndarray:
    """Per seed, the number of GD epochs after which the training accuracy first reached 100%
    (from `record["train_accuracy"]`, each epoch's before its update), or -1 if it never did."""
    perfect = np.asarray(train_accuracy) >= 1.0
    first = np.argmax(perfect, axis=0)
    return np.where(perfect.any(axis=0), first, -1)
