"""Extractors and the ReLU head (theory §7.1): forward shapes, parameter counts against hand
counts, initialization scale, and bad sizes."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufmflow as uf
from ufmflow.realnet import make_classifier, parameter_count

KEY = jax.random.PRNGKey(0)


def _resnet_count(c_in, width, blocks):
    """By hand: 3x3 convolutions without bias, GroupNorm with a scale and a shift per channel;
    option-A shortcuts have no parameters."""
    count = 9 * c_in * width + 2 * width  # stem
    c = width
    for stage in range(3):
        out = width * 2**stage
        for _ in range(blocks):
            count += 9 * c * out + 9 * out * out + 4 * out
            c = out
    return count


def _shape(cls, *args, **kw):
    return cls(*args, key=KEY, **kw)


def test_resnet20_parameter_count():
    # ResNet-20's layout (width 16, 3 blocks per stage); the 268,784 below is the hand count
    # of the convolutions and norms: 176 + 14,016 + 51,072 + 203,520.
    ext = _shape(uf.ResNetExtractor, (1, 28, 28), 16, 3)
    assert parameter_count(ext) == _resnet_count(1, 16, 3) == 268_784
    assert ext.feature_dim == 64 and len(ext.blocks) == 9
    assert parameter_count(_shape(uf.ResNetExtractor, (3, 32, 32), 16, 3)) == 268_784 + 288
    feats = eqx.filter_eval_shape(ext, jax.ShapeDtypeStruct((1, 28, 28), jnp.float32))
    assert feats.shape == (64,) and feats.dtype == jnp.float32


def test_resnet_forward_shapes():
    model = make_classifier(KEY, (1, 8, 8), 10, extractor="resnet", extractor_width=2,
                            extractor_depth=1, head_depth=3, head_width=5)
    assert parameter_count(model.extractor) == _resnet_count(1, 2, 1) == 1230
    assert parameter_count(model) == 1230 + (8 * 5 + 5) + (5 * 5 + 5) + (5 * 10 + 10)
    x = jax.random.normal(KEY, (4, 1, 8, 8), dtype=jnp.float32)
    feats, logits = eqx.filter_jit(lambda m, x: (jax.vmap(m.extractor)(x), jax.vmap(m)(x)))(
        model, x)
    assert feats.shape == (4, 8) and feats.dtype == jnp.float32
    assert bool(jnp.all(feats >= 0))  # the average of ReLU outputs
    assert logits.shape == (4, 10)


def test_mlp_and_head_counts_and_shapes():
    model = make_classifier(KEY, (1, 8, 8), 4, extractor="mlp", extractor_width=7,
                            extractor_depth=2, head_depth=3, head_width=5)
    # MLP: 64*7 + 7, then 7*7 + 7; head: 7*5 + 5, 5*5 + 5, 5*4 + 4
    assert parameter_count(model.extractor) == 455 + 56
    assert parameter_count(model.head) == 40 + 30 + 24
    assert parameter_count(model) == 511 + 94
    out = eqx.filter_eval_shape(model, jax.ShapeDtypeStruct((1, 8, 8), jnp.float32))
    assert out.shape == (4,)
    # depth 1: one linear layer to the logits, whatever the width
    one = make_classifier(KEY, (1, 8, 8), 4, extractor="mlp", extractor_width=7,
                          head_depth=1, head_width=200).head
    assert len(one.layers) == 1 and parameter_count(one) == 7 * 4 + 4
    h = jnp.arange(7.0, dtype=jnp.float32)
    assert np.allclose(one(h), one.layers[0].weight @ h + one.layers[0].bias, atol=1e-5)


def test_he_initialization_scale():
    head = uf.ReLUHead(400, 3, 400, 10, key=KEY)
    w_hidden, w_last = head.layers[1].weight, head.layers[2].weight
    assert w_hidden.dtype == jnp.float32
    # std sqrt(2/fan_in) for layers before a ReLU, sqrt(1/fan_in) for the logit layer; biases 0
    assert abs(float(jnp.std(w_hidden)) / np.sqrt(2 / 400) - 1) < 0.02  # 160,000 draws
    assert abs(float(jnp.std(w_last)) / np.sqrt(1 / 400) - 1) < 0.05  # 4,000 draws
    assert float(jnp.max(jnp.abs(head.layers[0].bias))) == 0.0


def test_seeded_and_concrete_keys_only():
    a, b = (uf.ReLUHead(6, 2, 5, 3, key=jax.random.PRNGKey(s)) for s in (1, 1))
    c = uf.ReLUHead(6, 2, 5, 3, key=jax.random.PRNGKey(2))
    assert np.array_equal(a.layers[0].weight, b.layers[0].weight)
    assert not np.array_equal(a.layers[0].weight, c.layers[0].weight)
    # the same seed gives the same extractor whatever the head (streams 0 and 1 of the key)
    m1 = make_classifier(KEY, (1, 4, 4), 3, extractor_width=5, head_depth=1)
    m2 = make_classifier(KEY, (1, 4, 4), 3, extractor_width=5, head_depth=3, head_width=7)
    assert np.array_equal(m1.extractor.layers[0].weight, m2.extractor.layers[0].weight)
    with pytest.raises(ValueError, match="outside jit/vmap"):
        jax.vmap(lambda k: uf.ReLUHead(6, 2, 5, 3, key=k))(jax.random.split(KEY, 2))


def test_bad_sizes():
    with pytest.raises(ValueError, match="depth=0"):
        _shape(uf.ReLUHead, 8, 0, 10, 4)
    with pytest.raises(ValueError, match="num_classes"):
        _shape(uf.ReLUHead, 8, 2, 10, 1)
    with pytest.raises(ValueError, match="width=0"):
        _shape(uf.MLPExtractor, (1, 8, 8), 0)
    with pytest.raises(ValueError, match="extractor='vgg'"):
        make_classifier(KEY, (1, 8, 8), 4, extractor="vgg")
