"""Real networks in Equinox (theory §7.1): a feature extractor followed by a fully connected ReLU
head whose depth and width are the experiment's variables.

- `ResNetExtractor`: ResNet-20 style (He et al. 2016, the CIFAR variant): a 3x3 stem, three
  stages of `blocks` residual blocks with `width`, `2 width`, `4 width` channels (stride 2 at
  the start of stages 2 and 3; parameter-free "option A" shortcuts: subsample and zero-pad the
  channels), global average pooling; `width=16, blocks=3` is ResNet-20's layout. GroupNorm
  stands in for BatchNorm: it is stateless, so full-batch GD, `vmap` over seeds and evaluation
  all apply the same function (no running statistics).
- `MLPExtractor`: flatten, then `depth` fully connected ReLU layers of `width` units.
- `ReLUHead`: `depth` linear layers, a ReLU after each but the last; hidden width `width`; the
  last layer maps to the K logits. `depth=1` is a single linear classifier (the UFM's `L = 1`);
  depth `L` matches the deep UFM's `W_L ... W_1` with ReLUs in between (theory §1).

Fully connected layers use He (Kaiming) normal weights, std `sqrt(2 / fan_in)`, for layers
followed by a ReLU and `sqrt(1 / fan_in)` for the last (logit) layer; biases start at zero.
Convolutions use He normal weights and no bias. The weights are drawn with numpy from a
generator seeded by the JAX `key` (`key` must be concrete). Every parameter is float32 unless
`dtype` says otherwise (ufmflow switches float64 on at import; these networks do not need it).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

EXTRACTORS = ("mlp", "resnet")


def _rng(key, stream: int | None = None) -> np.random.Generator:
    """A numpy generator seeded by a concrete JAX key (and `stream`), or `key` itself if it is
    one. Weights are drawn on the host: drawing them with `jax.random` would compile one program
    per weight shape (seconds per layer on a busy CPU)."""
    if isinstance(key, np.random.Generator):
        return key
    try:
        data = np.asarray(jax.random.key_data(key)).ravel().tolist()
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        raise ValueError("key: the models draw their weights on the host, so build them outside "
                         "jit/vmap and stack them (as run_group does)") from None
    return np.random.default_rng(data + ([] if stream is None else [stream]))


def _shapes(build):
    """The module `build()` makes, as shapes only (traced, nothing computed or compiled)."""
    return eqx.filter_eval_shape(build)


def _he(rng, shape, fan_in: int, gain: float, dtype):
    return jnp.asarray((math.sqrt(gain / fan_in) * rng.standard_normal(shape)).astype(dtype))


def _linear(rng, fan_in: int, fan_out: int, gain: float, dtype) -> eqx.nn.Linear:
    layer = _shapes(lambda: eqx.nn.Linear(fan_in, fan_out, use_bias=True, dtype=dtype,
                                          key=jax.random.PRNGKey(0)))
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer,
                       (_he(rng, (fan_out, fan_in), fan_in, gain, dtype),
                        jnp.asarray(np.zeros(fan_out, dtype))))


def _conv(rng, c_in: int, c_out: int, stride: int, dtype) -> eqx.nn.Conv2d:
    conv = _shapes(lambda: eqx.nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1,
                                         use_bias=False, dtype=dtype, key=jax.random.PRNGKey(0)))
    return eqx.tree_at(lambda m: m.weight, conv,
                       _he(rng, (c_out, c_in, 3, 3), 9 * c_in, 2.0, dtype))


def _norm(channels: int, dtype) -> eqx.nn.GroupNorm:
    norm = _shapes(lambda: eqx.nn.GroupNorm(math.gcd(channels, 8), channels, dtype=dtype))
    return eqx.tree_at(lambda m: (m.weight, m.bias), norm,
                       (jnp.asarray(np.ones(channels, dtype)),
                        jnp.asarray(np.zeros(channels, dtype))))


def _check_positive(cls, **values):
    for name, v in values.items():
        if int(v) != v or v < 1:
            raise ValueError(f"{cls}: {name}={v!r} must be a positive integer")


class ResidualBlock(eqx.Module):
    """Two 3x3 convolutions with GroupNorm and ReLU, plus the option-A shortcut."""

    conv1: eqx.nn.Conv2d
    norm1: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    norm2: eqx.nn.GroupNorm
    c_in: int = eqx.field(static=True)
    c_out: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)

    def __init__(self, c_in: int, c_out: int, stride: int, *, key: PRNGKeyArray,
                 dtype=jnp.float32):
        rng = _rng(key)
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.conv1, self.norm1 = _conv(rng, c_in, c_out, stride, dtype), _norm(c_out, dtype)
        self.conv2, self.norm2 = _conv(rng, c_out, c_out, 1, dtype), _norm(c_out, dtype)

    def __check_init__(self):
        if self.c_out < self.c_in or self.stride not in (1, 2):
            raise ValueError(f"ResidualBlock: c_in={self.c_in}, c_out={self.c_out}, "
                             f"stride={self.stride}; need c_out >= c_in and stride 1 or 2")

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "c2 h2 w2"]:
        out = jax.nn.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        short = x[:, ::self.stride, ::self.stride]
        if self.c_out > self.c_in:
            lo = (self.c_out - self.c_in) // 2
            short = jnp.pad(short, ((lo, self.c_out - self.c_in - lo), (0, 0), (0, 0)))
        return jax.nn.relu(out + short)


class ResNetExtractor(eqx.Module):
    """ResNet-20-style feature extractor (theory §7.1): `(C, H, W)` image -> `4 width` features.

    **Arguments:** `in_shape` `(C, H, W)`; `width` (16 = ResNet-20); `blocks` per stage (3 =
    ResNet-20: `6 blocks + 2 = 20` weight layers with the final classifier); `key`; `dtype`.

    **Raises:** `ValueError` for a non-positive width or block count.
    """

    stem: eqx.nn.Conv2d
    stem_norm: eqx.nn.GroupNorm
    blocks: tuple[ResidualBlock, ...]
    in_shape: tuple[int, int, int] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    num_blocks: int = eqx.field(static=True)

    def __init__(self, in_shape, width: int = 16, blocks: int = 3, *, key: PRNGKeyArray,
                 dtype=jnp.float32):
        _check_positive("ResNetExtractor", width=width, blocks=blocks)
        self.in_shape, self.width, self.num_blocks = tuple(int(s) for s in in_shape), width, blocks
        rng = _rng(key)
        self.stem, self.stem_norm = _conv(rng, self.in_shape[0], width, 1, dtype), _norm(
            width, dtype)
        layers, c = [], width
        for stage in range(3):
            c_out = width * 2**stage
            for b in range(blocks):
                stride = 2 if (stage > 0 and b == 0) else 1
                layers.append(ResidualBlock(c, c_out, stride, key=rng, dtype=dtype))
                c = c_out
        self.blocks = tuple(layers)

    @property
    def feature_dim(self) -> int:
        return 4 * self.width

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, " f"]:
        h = jax.nn.relu(self.stem_norm(self.stem(x)))
        for block in self.blocks:
            h = block(h)
        return jnp.mean(h, axis=(1, 2))


class MLPExtractor(eqx.Module):
    """Fully connected feature extractor (theory §7.1): flattened image -> `width` features
    after `depth` ReLU layers.

    **Raises:** `ValueError` for a non-positive width or depth.
    """

    layers: tuple[eqx.nn.Linear, ...]
    in_shape: tuple[int, int, int] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)

    def __init__(self, in_shape, width: int = 128, depth: int = 1, *, key: PRNGKeyArray,
                 dtype=jnp.float32):
        _check_positive("MLPExtractor", width=width, depth=depth)
        self.in_shape, self.width, self.depth = tuple(int(s) for s in in_shape), width, depth
        sizes = [math.prod(self.in_shape)] + [width] * depth
        rng = _rng(key)
        self.layers = tuple(_linear(rng, a, b, 2.0, dtype) for a, b in zip(sizes[:-1], sizes[1:]))

    @property
    def feature_dim(self) -> int:
        return self.width

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, " f"]:
        h = jnp.ravel(x)
        for layer in self.layers:
            h = jax.nn.relu(layer(h))
        return h


class ReLUHead(eqx.Module):
    """Fully connected ReLU head (theory §7.1): `depth` linear layers, ReLU between them, hidden
    width `width`, the last layer linear to `num_classes` logits (`depth=1`: one linear layer,
    `width` unused).

    **Raises:** `ValueError` for non-positive sizes or `num_classes < 2`.
    """

    layers: tuple[eqx.nn.Linear, ...]
    in_features: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)

    def __init__(self, in_features: int, depth: int, width: int, num_classes: int, *,
                 key: PRNGKeyArray, dtype=jnp.float32):
        _check_positive("ReLUHead", in_features=in_features, depth=depth, width=width,
                        num_classes=num_classes)
        self.in_features, self.depth, self.width = in_features, depth, width
        self.num_classes = num_classes
        sizes = [in_features] + [width] * (depth - 1) + [num_classes]
        rng = _rng(key)
        gains = [2.0] * (depth - 1) + [1.0]
        self.layers = tuple(_linear(rng, a, b, g, dtype)
                            for a, b, g in zip(sizes[:-1], sizes[1:], gains))

    def __check_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"ReLUHead: num_classes={self.num_classes}; need at least 2")

    def __call__(self, h: Float[Array, " f"]) -> Float[Array, " K"]:
        for layer in self.layers[:-1]:
            h = jax.nn.relu(layer(h))
        return self.layers[-1](h)


class Classifier(eqx.Module):
    """`head(extractor(x))`: one image `(C, H, W)` -> K logits (theory §7.1)."""

    extractor: ResNetExtractor | MLPExtractor
    head: ReLUHead

    def __check_init__(self):
        if self.extractor.feature_dim != self.head.in_features:
            raise ValueError(f"Classifier: the extractor gives {self.extractor.feature_dim} "
                             f"features, the head takes {self.head.in_features}")

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, " K"]:
        return self.head(self.extractor(x))


def make_classifier(key: PRNGKeyArray, in_shape, num_classes: int, *, extractor: str = "mlp",
                    extractor_width: int = 128, extractor_depth: int = 1, head_depth: int = 2,
                    head_width: int = 100, dtype=jnp.float32) -> Classifier:
    """A `Classifier` (theory §7.1). The extractor's weights are drawn from stream 0 of `key`
    and the head's from stream 1, so one seed gives the same extractor whatever the head.

    **Arguments:** `extractor`: `"mlp"` (`extractor_width` units, `extractor_depth` layers) or
    `"resnet"` (`extractor_width` base channels, `extractor_depth` blocks per stage);
    `head_depth`, `head_width`: the ReLU head's.

    The weights are drawn on the host (numpy, seeded by `key`), so `key` must be concrete: build
    the models of several seeds one by one and stack them (`run_group`), not under `vmap`.

    **Raises:** `ValueError` for an unknown extractor or bad sizes.
    """
    k_ext, k_head = _rng(key, 0), _rng(key, 1)
    if extractor == "mlp":
        ext = MLPExtractor(in_shape, extractor_width, extractor_depth, key=k_ext, dtype=dtype)
    elif extractor == "resnet":
        ext = ResNetExtractor(in_shape, extractor_width, extractor_depth, key=k_ext, dtype=dtype)
    else:
        raise ValueError(f"extractor={extractor!r}: choose one of {', '.join(EXTRACTORS)}")
    head = ReLUHead(ext.feature_dim, head_depth, head_width, num_classes, key=k_head, dtype=dtype)
    return Classifier(ext, head)


def stack_models(models) -> eqx.Module:
    """Models of one structure -> one model whose array leaves have a leading axis (stacked
    with numpy: no compilation), for `vmap` over seeds."""
    return jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs])),
                                  *models)


def parameter_count(model: eqx.Module) -> int:
    """Number of trainable scalars (inexact array leaves) of `model`; also of its shapes
    (`eqx.filter_eval_shape`, `jax.ShapeDtypeStruct` leaves), which cost nothing to build."""
    def inexact(x):
        return (isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact)
                ) or eqx.is_inexact_array(x)

    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(model) if inexact(x))
