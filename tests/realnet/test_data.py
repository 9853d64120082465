"""Loaders of the real-network experiment (theory §7.1): shapes, class balance, the stratified
split, standardization with training statistics, and one-line errors for bad files."""

import numpy as np
import pytest

import ufmflow as uf
from ufmflow.realnet import split_standardize


@pytest.fixture(scope="session")
def mnist():
    return uf.load_mnist()


def test_mnist_shapes_balance_and_standardization(mnist):
    # 5,000 digits, 500 per class; test_fraction 0.2 -> 400 train / 100 test per class.
    assert mnist.x_train.shape == (4000, 1, 28, 28) and mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int32
    assert np.array_equal(np.bincount(mnist.y_train), [400] * 10)
    assert np.array_equal(np.bincount(mnist.y_test), [100] * 10)
    assert mnist.num_classes == 10 and mnist.image_shape == (1, 28, 28)
    # standardized with the training set's own statistics: mean 0, std 1 there (float32 data)
    assert abs(mnist.x_train.astype(np.float64).mean()) < 1e-5
    assert abs(mnist.x_train.astype(np.float64).std() - 1) < 1e-5
    # raw pixels are 0..255 integers: undoing the standardization gives them back, both sets
    for x in (mnist.x_train, mnist.x_test):
        raw = x.astype(np.float64) * mnist.std[0] + mnist.mean[0]
        assert np.allclose(raw, np.round(raw), atol=1e-3) and raw.min() > -1e-3
        assert raw.max() < 255 + 1e-3
    # the test set is not standardized with its own statistics
    assert abs(mnist.x_test.astype(np.float64).mean()) > 1e-4


def test_mnist_subsets(mnist):
    small = uf.load_mnist(train_per_class=5, test_per_class=3, seed=0)
    assert np.array_equal(np.bincount(small.y_train), [5] * 10)
    assert np.array_equal(np.bincount(small.y_test), [3] * 10)
    with pytest.raises(ValueError, match="train_per_class=401"):
        uf.load_mnist(train_per_class=401)


def test_digits():
    d = uf.load_digits()
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.y_train) + len(d.y_test) == 1797
    counts = np.bincount(d.y_train) + np.bincount(d.y_test)
    # stratified: each class loses round(0.2 n_c) images to the test set
    assert np.array_equal(np.bincount(d.y_test), np.round(0.2 * counts).astype(int))
    assert abs(d.x_train.astype(np.float64).mean()) < 1e-5


def test_split_is_stratified_disjoint_and_seeded():
    # image i holds the value i everywhere (plus a pixel offset), so the split can be read back
    n = 60
    labels = np.repeat(np.arange(3), 20)
    images = np.arange(n, dtype=np.float64)[:, None, None, None] + np.arange(4.0).reshape(1, 1, 2, 2)
    a = split_standardize("t", images, labels, test_fraction=0.25, seed=1)
    ids = lambda x: np.round(x[:, 0, 0, 0].astype(np.float64) * a.std[0] + a.mean[0])  # noqa: E731
    tr, te = ids(a.x_train), ids(a.x_test)
    assert sorted(np.concatenate([tr, te])) == list(range(n))  # a partition
    assert np.array_equal(np.bincount(a.y_test), [5, 5, 5])
    assert np.array_equal(labels[tr.astype(int)], a.y_train)  # labels travel with images
    b = split_standardize("t", images, labels, test_fraction=0.25, seed=1)
    c = split_standardize("t", images, labels, test_fraction=0.25, seed=2)
    assert np.array_equal(a.x_test, b.x_test) and not np.array_equal(a.x_test, c.x_test)
    # mean / std are the training images' (per channel), not the test images'
    raw_train = images[tr.astype(int)]
    assert np.isclose(a.mean[0], raw_train.mean()) and np.isclose(a.std[0], raw_train.std())


def _one_line(err):
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_npz_roundtrip_channels_last_and_test_set(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar_like.npz"
    np.savez(path, images=rng.uniform(0, 255, (40, 6, 6, 3)), labels=np.repeat(np.arange(4), 10),
             test_images=rng.uniform(0, 255, (8, 6, 6, 3)), test_labels=np.repeat(np.arange(4), 2))
    d = uf.load_npz(path)
    assert d.x_train.shape == (40, 3, 6, 6) and d.x_test.shape == (8, 3, 6, 6)
    assert d.num_classes == 4 and d.name == "cifar_like"
    assert np.allclose(d.x_train.astype(np.float64).mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_npz_errors(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError) as err:
        uf.load_npz(missing)
    assert str(missing) in _one_line(err) and "np.savez" in str(err.value)

    text = tmp_path / "garbage.npz"
    text.write_text("not an archive\n")
    with pytest.raises(ValueError) as err:
        uf.load_npz(text)
    assert str(text) in _one_line(err) and "np.savez" in str(err.value)

    npy = tmp_path / "array.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match="one array"):
        uf.load_npz(npy)

    cases = {
        "keys": dict(pixels=np.zeros((4, 3, 3)), labels=np.arange(4)),
        "negative": dict(images=np.zeros((4, 3, 3)), labels=np.array([0, 1, -1, 1])),
        "fractional": dict(images=np.zeros((4, 3, 3)), labels=np.array([0, 1, 0.5, 1])),
        "length": dict(images=np.zeros((4, 3, 3)), labels=np.array([0, 1, 0])),
        "absent class": dict(images=np.zeros((4, 3, 3)), labels=np.array([0, 2, 0, 2])),
        "shape": dict(images=np.zeros((4, 9)), labels=np.array([0, 1, 0, 1])),
    }
    expected = {"keys": "missing key", "negative": "negative", "fractional": "not integers",
                "length": "one label per image", "absent class": "absent",
                "shape": "need numbers of shape"}
    for name, arrays in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError) as err:
            uf.load_npz(path)
        msg = _one_line(err)
        assert str(path) in msg and expected[name] in msg, (name, msg)
