"""Full-batch GD on real networks (theory §7.1): 100% training accuracy on a tiny set, the
microbatched gradient against the one-pass gradient, class-mean logits, and the effective rank
measurement on constructed class-mean logit matrices."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufmflow as uf
from ufmflow.realnet import class_mean_logits, first_perfect_epoch, make_classifier
from ufmflow.realnet._experiment import _part_dataset
from ufmflow.realnet._train import _pad, full_batch_gradient


@pytest.fixture(scope="session")
def tiny():
    return uf.load_digits(train_per_class=3, test_per_class=2)


def _models(data, seeds=2, **kw):
    return uf.realnet.stack_models([
        make_classifier(jax.random.PRNGKey(s), data.image_shape, data.num_classes,
                        extractor="mlp", extractor_width=32, **kw) for s in range(seeds)])


def test_full_batch_gd_reaches_100_percent(tiny):
    models = _models(tiny, head_depth=3, head_width=16)
    trained, rec = uf.train_full_batch(models, tiny.x_train, tiny.y_train, tiny.x_test,
                                       tiny.y_test, num_classes=10, epochs=200, lr=0.05,
                                       checkpoints=4)
    assert rec["loss"].shape == (200, 2) and rec["class_means"].shape == (5, 2, 10, 10)
    assert np.array_equal(rec["epoch"], [0, 50, 100, 150, 200])
    assert np.all(rec["train_accuracy_t"][-1] == 1.0)  # 30 images, every seed
    assert np.all(first_perfect_epoch(rec["train_accuracy"]) >= 0)
    assert np.all(rec["finite"][-1])
    assert rec["loss"][-1].max() < rec["loss"][0].min()  # the loss fell
    # the seeds are distinct models
    assert not np.allclose(rec["class_means"][-1, 0], rec["class_means"][-1, 1])


def test_microbatched_gradient_is_the_full_batch_gradient(tiny):
    model = make_classifier(jax.random.PRNGKey(3), tiny.image_shape, 10, extractor="mlp",
                            extractor_width=8, head_depth=2, head_width=6)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    grad = jax.jit(full_batch_gradient, static_argnums=(1, 5))
    x, y, w = _pad(tiny.x_train, tiny.y_train, None)
    loss, acc, g = grad(params, static, x, y, w, None)
    xm, ym, wm = _pad(tiny.x_train, tiny.y_train, 7)  # 30 images -> 5 chunks of 7, 5 padded
    assert xm.shape[0] == 35 and float(wm.sum()) == 30
    loss_m, acc_m, g_m = grad(params, static, xm, ym, wm, 7)
    # float32 sums in another order: agreement to a few ulps of the gradient's scale
    assert np.isclose(loss, loss_m, rtol=1e-6) and float(acc) == float(acc_m)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_m)):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-6)
    # and it is the gradient of the mean cross-entropy (autodiff of an independent loss)
    def ce(p):
        logits = jax.vmap(eqx.combine(p, static))(x)
        return jnp.mean(jax.nn.logsumexp(logits, 1) - logits[jnp.arange(30), y])
    for a, b in zip(jax.tree_util.tree_leaves(g),
                    jax.tree_util.tree_leaves(jax.jit(jax.grad(ce))(params))):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_class_mean_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 3))
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 2])
    zbar = np.asarray(class_mean_logits(jnp.asarray(logits), jnp.asarray(labels), 3))
    for c in range(3):  # column c: the mean logit vector of class c
        assert np.allclose(zbar[:, c], logits[labels == c].mean(axis=0))


def test_effective_rank_measurement_on_constructed_rank_2():
    # Class-mean logits of rank 2: Zbar = U diag(3, 1, 0, ...) V^T (K = 5), built from per-sample
    # logits whose class means are the columns of Zbar; the measurement (class means -> the
    # part's effective_rank) must give exp(H(p)) with p = (3/4, 1/4), and 2 for equal values.
    K, n = 5, 4
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.normal(size=(K, K)))
    v, _ = np.linalg.qr(rng.normal(size=(K, K)))
    labels = np.repeat(np.arange(K), n)
    expected = {(3.0, 1.0): np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))),
                (1.0, 1.0): 2.0}
    means = []
    for s in expected:
        zbar = u[:, :2] @ np.diag(s) @ v[:, :2].T
        noise = rng.normal(size=(K * n, K))
        noise -= np.repeat(noise.reshape(K, n, K).mean(axis=1), n, axis=0)  # zero class means
        logits = zbar.T[labels] + noise
        means.append(np.asarray(class_mean_logits(jnp.asarray(logits), jnp.asarray(labels), K)))
        assert np.allclose(means[-1], zbar, atol=1e-12)
    cm = np.stack(means)[None]  # (checkpoint 1, seed 2, K, K)
    record = dict(class_means=cm, train_loss=np.zeros((1, 2)), train_accuracy_t=np.ones((1, 2)),
                  test_loss=np.zeros((1, 2)), test_accuracy=np.ones((1, 2)),
                  finite=np.ones((1, 2), bool), train_accuracy=np.ones((3, 2)),
                  epoch=np.array([0]))
    data = uf.realnet.ImageData("t", np.zeros((1, 1, 1, 1)), labels, np.zeros((1, 1, 1, 1)),
                                labels, K, np.zeros(1), np.ones(1))
    part = _part_dataset(record, data, "key", 0)
    assert np.allclose(part["effective_rank"].values, list(expected.values()), atol=1e-10)
    assert np.allclose(part["singular_values"].values[:, :3], [[3, 1, 0], [1, 1, 0]], atol=1e-10)
    assert np.allclose(part["effective_rank"].values,
                       uf.effective_rank(jnp.asarray(cm[0])), atol=1e-12)


def test_first_perfect_epoch():
    acc = np.array([[0.5, 0.9], [1.0, 0.95], [1.0, 0.99]])
    assert first_perfect_epoch(acc).tolist() == [1, -1]
