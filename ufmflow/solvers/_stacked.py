"""The deep UFM in the solvers' layout: hidden layers stacked and scanned, depth as data
(theory §2.9).

`solve_flow` integrates `(H, W_stack, W_L)` with `W_stack` of shape `(D - 1, d, d)` for a
*capacity* `D >= L`: hidden layer `l` (1-based) is active when `l < L`; the others are frozen
identity layers. A frozen layer passes its input through unchanged (`jnp.where`, so not even a
product with the identity), receives an exact zero gradient, and is left out of every norm and
count (time change, error norm, default `atol`, measurements). The flow of the padded model is
therefore the shallower model's, to the last bit (tests/solvers/test_stacked.py), while the
compiled program depends only on `(K, n, d, D)`: a sweep over depth compiles once, and the
scanned layers keep the compile time flat in `D`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core._metrics import singular_values
from ..core._model import DeepUFM, log_loss_from_logits, margins_per_column


class Stacked(eqx.Module):
    """`(H, W_stack, W_L)`: the state the full-GF solvers integrate."""

    h: Float[Array, "d N"]
    hidden: Float[Array, "Dm1 d d"]
    last: Float[Array, "K d"]


class Layout(eqx.Module):
    """What a stacked state means: `depth` (data, `1 <= depth <= capacity`) and the labels."""

    depth: Int[Array, ""]
    num_classes: int = eqx.field(static=True)
    per_class: int = eqx.field(static=True)

    @property
    def labels(self) -> Array:
        return jnp.repeat(jnp.arange(self.num_classes), self.per_class)

    def active(self, state: Stacked) -> Array:
        """`(D - 1,)` booleans: hidden layer `l = 1..D-1` is active when `l < depth`."""
        return jnp.arange(1, state.hidden.shape[0] + 1) < self.depth

    def features(self, state: Stacked) -> Float[Array, "d N"]:
        def layer(h, xs):
            w, on = xs
            return jnp.where(on, w @ h, h), None

        h, _ = jax.lax.scan(layer, state.h, (state.hidden, self.active(state)))
        return h

    def logits(self, state: Stacked) -> Float[Array, "K N"]:
        return state.last @ self.features(state)

    def log_loss(self, state: Stacked) -> Float[Array, ""]:
        return log_loss_from_logits(self.logits(state), self.labels)

    def layer_sq_norms(self, state: Stacked) -> Float[Array, " D1"]:
        """Squared Frobenius norms `(H, W_1..W_{D-1}, W_L)`, frozen layers as 0."""
        hidden = jnp.where(self.active(state), jnp.sum(state.hidden**2, axis=(1, 2)), 0.0)
        return jnp.concatenate(
            [jnp.sum(state.h**2)[None], hidden, jnp.sum(state.last**2)[None]]
        )

    def log_gain(self, state: Stacked) -> Float[Array, ""]:
        """`log sqrt(sum_l prod_{k != l} ||W_k||_F^2)` over the active factors `H, W_1, ..,
        W_L` (theory §2.6): `||grad_theta f|| <= ||grad_Z f|| * gain` for any function `f` of
        the logits."""
        sq = self.layer_sq_norms(state)
        on = jnp.concatenate([jnp.ones((1,), bool), self.active(state), jnp.ones((1,), bool)])
        log_sq = jnp.where(on, jnp.log(jnp.where(on, sq, 1.0)), 0.0)
        terms = jnp.where(on, _ordered_sum(log_sq) - log_sq, -jnp.inf)
        top = jax.lax.stop_gradient(jnp.max(terms))
        return 0.5 * (top + jnp.log(_ordered_sum(jnp.exp(terms - top))))

    def sq_norm(self, state: Stacked) -> Float[Array, ""]:
        """`||theta||^2` over the active layers, summed in layer order (a frozen layer adds an
        exact zero, so the padded sum is the unpadded one bit for bit)."""
        return _ordered_sum(self.layer_sq_norms(state))

    def size(self, state: Stacked) -> Array:
        """Number of active parameters."""
        d = state.h.shape[0]
        return state.h.size + state.last.size + (self.depth - 1) * d * d

    def balancedness(self, state: Stacked) -> Float[Array, "D d d"]:
        """`D_l = W_{l+1}^T W_{l+1} - W_l W_l^T` (theory §2) of the active chain
        `H, W_1, .., W_{L-1}, W_L`; entries `l >= depth` are zero."""
        # W_l W_l^T for l = 0..D-1 (W_0 = H) and W_l^T W_l for l = 1..D-1, then W_L^T W_L.
        outer = jnp.concatenate(
            [(state.h @ state.h.T)[None], jnp.einsum("lij,lkj->lik", state.hidden, state.hidden)]
        )
        inner = jnp.einsum("lji,ljk->lik", state.hidden, state.hidden)
        last_gram = state.last.T @ state.last
        top = max(inner.shape[0] - 1, 0)

        def one(l):
            upper = last_gram if inner.shape[0] == 0 else jnp.where(
                l + 1 == self.depth, last_gram, inner[jnp.minimum(l, top)])
            return jnp.where(l < self.depth, upper - outer[l], 0.0)

        idx = jnp.arange(outer.shape[0])
        return jax.vmap(one)(idx)

    def class_mean_logits(self, state: Stacked) -> Float[Array, "K K"]:
        z = self.logits(state)
        k, n = self.num_classes, self.per_class
        return z.reshape(k, k, n).mean(-1)

    def to_model(self, state: Stacked) -> DeepUFM:
        """The `DeepUFM` of depth `D` with these factors: frozen layers are identities, so its
        logits are the depth-`depth` model's."""
        eye = jnp.eye(state.h.shape[0], dtype=state.h.dtype)
        hidden = jnp.where(self.active(state)[:, None, None], state.hidden, eye)
        factors = (state.h, *hidden, state.last)
        return DeepUFM(factors, self.num_classes, self.per_class)

    def measure(self, state: Stacked, reference: Stacked) -> dict:
        """The saved measurements of `FlowSolution` (theory §6)."""
        z = self.logits(state)
        k, n = self.num_classes, self.per_class
        drift = self.balancedness(state) - self.balancedness(reference)
        return dict(
            singular_values=singular_values(z.reshape(k, k, n).mean(-1)),
            loss=_loss(z, self.labels),
            log_loss=log_loss_from_logits(z, self.labels),
            min_margin=jnp.min(margins_per_column(z, self.labels)),
            param_norm=jnp.sqrt(self.sq_norm(state)),
            balance_residual=jnp.max(jnp.sqrt(jnp.sum(drift**2, axis=(-2, -1)))),
        )


def _ordered_sum(x: Float[Array, " D"]) -> Float[Array, ""]:
    """`sum(x)` added in index order, so that exact zeros (frozen layers) leave it bit for bit
    unchanged whatever the length (a tree reduction's order depends on the length)."""

    def add(total, v):
        return total + v, None

    total, _ = jax.lax.scan(add, jnp.zeros((), x.dtype), x)
    return total


def _loss(z, labels):
    lse = jax.nn.logsumexp(z, axis=0)
    correct = jnp.take_along_axis(z, labels[None, :], axis=0)[0]
    return jnp.mean(lse - correct)


def stack_padded(model: DeepUFM, depth) -> tuple[Stacked, Layout]:
    """A `DeepUFM` whose hidden layers from `depth` on are frozen identities (e.g.
    `gaussian_init_padded`) as a stacked state; `depth` may be traced."""
    h, *ws = model.factors
    d = h.shape[0]
    hidden = jnp.stack(ws[:-1]) if len(ws) > 1 else jnp.zeros((0, d, d), h.dtype)
    layout = Layout(jnp.asarray(depth).astype(jnp.int32), model.num_classes, model.per_class)
    return Stacked(h, hidden, ws[-1]), layout


def stack_model(model: DeepUFM, capacity: int | None = None) -> tuple[Stacked, Layout]:
    """`model` as a stacked state of capacity `D = capacity` (default its depth), frozen
    identity layers after its hidden layers.

    **Raises:** `ValueError` if `capacity < model.depth`."""
    depth = model.depth
    capacity = depth if capacity is None else int(capacity)
    if capacity < depth:
        raise ValueError(
            f"capacity must be >= the model's depth {depth}, got {capacity}; pass "
            "max_depth >= every depth of the sweep."
        )
    h, *ws = model.factors
    d = h.shape[0]
    hidden = list(ws[:-1]) + [jnp.eye(d, dtype=h.dtype)] * (capacity - depth)
    hidden = jnp.stack(hidden) if hidden else jnp.zeros((0, d, d), h.dtype)
    layout = Layout(jnp.asarray(depth, jnp.int32), model.num_classes, model.per_class)
    return Stacked(h, hidden, ws[-1]), layout
