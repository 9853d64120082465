"""Gradient descent's inputs: refused where they enter; `epochs` is always what runs."""

import math

import jax
import pytest

import ufmflow as uf

MODEL = uf.gaussian_init(jax.random.PRNGKey(5), 3, 1, 4, 2, 0.5)

BAD = {
    "lr 0": (dict(lr=0.0), "lr"),
    "lr nan": (dict(lr=math.nan), "lr"),
    "lr inf": (dict(lr=math.inf), "lr"),
    "epochs -1": (dict(epochs=-1), "epochs"),
    "epochs 2.5": (dict(epochs=2.5), "epochs"),
    "weight_decay -1": (dict(weight_decay=-1.0), "weight_decay"),
    "decay_epochs 1.5": (dict(decay_epochs=1.5), "decay_epochs"),
    "num_saves 1": (dict(num_saves=1), "num_saves"),
    "save_epochs short": (dict(save_epochs=[0, 5]), "save_epochs"),
    "save_epochs decreasing": (dict(save_epochs=[0, 8, 4, 10]), "save_epochs"),
    "save_epochs fractional": (dict(save_epochs=[0, 2.5, 10]), "save_epochs"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_descent_input_is_refused(name):
    kwargs, argument = BAD[name]
    args = dict(lr=0.1, epochs=10) | kwargs
    with pytest.raises(ValueError) as info:
        uf.descend(MODEL, args.pop("lr"), args.pop("epochs"), **args)
    assert str(info.value).startswith(f"{argument} "), str(info.value)


def test_explicit_save_epochs_run_every_epoch():
    """The final model is after `epochs` steps whether the saves are given or defaulted."""
    a = uf.descend(MODEL, 0.1, 10, save_epochs=[0, 3, 10])
    b = uf.descend(MODEL, 0.1, 10, num_saves=4)
    assert int(a.num_steps) == 10 == int(b.num_steps)
    for x, y in zip(a.model.factors, b.model.factors):
        assert jax.numpy.allclose(x, y, rtol=1e-12, atol=0)
