"""Bad inputs to the core API are refused where they enter, with a ValueError naming the
argument (issue 15's corpus, core part)."""

import math

import jax
import jax.numpy as jnp
import pytest

import ufmflow as uf

KEY = jax.random.PRNGKey(0)
S8 = jnp.linspace(0.0, 1.0, 8)

BAD = {
    # gaussian_init(key, num_classes, per_class, width, depth, scale)
    "gaussian depth float": (lambda: uf.gaussian_init(KEY, 4, 1, 6, 2.5, 0.1), "depth"),
    "gaussian depth 0": (lambda: uf.gaussian_init(KEY, 4, 1, 6, 0, 0.1), "depth"),
    "gaussian depth bool": (lambda: uf.gaussian_init(KEY, 4, 1, 6, True, 0.1), "depth"),
    "gaussian K float": (lambda: uf.gaussian_init(KEY, 2.5, 1, 6, 2, 0.1), "num_classes"),
    "gaussian K 1": (lambda: uf.gaussian_init(KEY, 1, 1, 6, 2, 0.1), "num_classes"),
    "gaussian n 0": (lambda: uf.gaussian_init(KEY, 4, 0, 6, 2, 0.1), "per_class"),
    "gaussian n str": (lambda: uf.gaussian_init(KEY, 4, "2", 6, 2, 0.1), "per_class"),
    "gaussian width 0": (lambda: uf.gaussian_init(KEY, 4, 1, 0, 2, 0.1), "width"),
    "gaussian width nan": (lambda: uf.gaussian_init(KEY, 4, 1, math.nan, 2, 0.1), "width"),
    "gaussian scale nan": (lambda: uf.gaussian_init(KEY, 4, 1, 6, 2, math.nan), "scale"),
    "gaussian scale inf": (lambda: uf.gaussian_init(KEY, 4, 1, 6, 2, math.inf), "scale"),
    "gaussian scale negative": (lambda: uf.gaussian_init(KEY, 4, 1, 6, 2, -0.1), "scale"),
    # hadamard_init(key, s, per_class, width, depth)
    "hadamard K 6": (lambda: uf.hadamard_init(KEY, jnp.ones(6), 1, 8, 2), "len(s)"),
    "hadamard width < K": (lambda: uf.hadamard_init(KEY, S8, 1, 4, 2), "width"),
    "hadamard s negative": (lambda: uf.hadamard_init(KEY, -S8, 1, 8, 2), "s"),
    "hadamard s nan": (lambda: uf.hadamard_init(KEY, S8.at[1].set(jnp.nan), 1, 8, 2), "s"),
    "hadamard s matrix": (lambda: uf.hadamard_init(KEY, jnp.ones((2, 8)), 1, 8, 2), "s"),
    "hadamard depth 1.5": (lambda: uf.hadamard_init(KEY, S8, 1, 8, 1.5), "depth"),
    "hadamard per_class 0": (lambda: uf.hadamard_init(KEY, S8, 0, 8, 2), "per_class"),
    # Hadamard algebra and the direction sampler
    "sylvester 12": (lambda: uf.sylvester_hadamard(12), "K"),
    "sylvester 2.5": (lambda: uf.sylvester_hadamard(2.5), "K"),
    "directions K 10": (lambda: uf.random_directions(KEY, 10, 3, 1.0), "num_classes"),
    "directions distribution": (
        lambda: uf.random_directions(KEY, 8, 3, 1.0, distribution="gauss"), "distribution"),
    "initial direction K 3": (lambda: uf.hadamard_initial_direction(KEY, 3, 1.0), "num_classes"),
    # metrics
    "effective rank of a vector": (lambda: uf.effective_rank(S8), "m"),
    "singular values of a scalar": (lambda: uf.singular_values(1.0), "m"),
    "kl_to_nc of a scalar": (lambda: uf.kl_to_nc(1.0), "s"),
    "kl_to_nc of K=1": (lambda: uf.kl_to_nc(jnp.ones(1)), "s"),
    "kl_to_nc negative": (lambda: uf.kl_to_nc(S8.at[3].set(-0.1)), "s"),
    "kl_to_nc inf": (lambda: uf.kl_to_nc(S8.at[3].set(jnp.inf)), "s"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_core_input_is_refused_naming_the_argument(name):
    call, argument = BAD[name]
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(f"{argument} "), str(info.value)


def test_integral_floats_are_accepted_as_sizes():
    a = uf.gaussian_init(KEY, 4.0, 1.0, 6.0, 2.0, 0.1)
    b = uf.gaussian_init(KEY, 4, 1, 6, 2, 0.1)
    assert a.depth == 2 and a.num_classes == 4
    for x, y in zip(a.factors, b.factors):
        assert jnp.array_equal(x, y)


def test_effective_rank_of_a_history_is_per_row():
    """A saved history `(S, K)` of singular values gives one effective rank per save."""
    hist = jnp.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert jnp.allclose(uf.effective_rank_from_singular_values(hist), jnp.array([2.0, 4.0, 1.0]))
