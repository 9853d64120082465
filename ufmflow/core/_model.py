"""The deep unconstrained features model (theory §1)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _log_ce_from_gaps(a: Float[Array, "..."]) -> Float[Array, "..."]:
    """`log(log1p(exp(a)))`, accurate for every real `a` (theory §1 numerics).

    For `a < -30` the double-where form `a - exp(a)/2` is used: `log1p(exp(a)) = exp(a)(1 -
    exp(a)/2 + ...)`, so its log is `a - exp(a)/2 + O(exp(2a))`, exact to rounding there. The
    gradient stays finite on both branches because each branch sees a safe argument.
    """
    small = a < -30.0
    a_big = jnp.where(small, 0.0, a)
    a_small = jnp.where(small, a, -30.0)
    big = jnp.log(jax.nn.softplus(a_big))
    tiny = a_small - 0.5 * jnp.exp(a_small)
    return jnp.where(small, tiny, big)


def log_ce_per_column(
    z: Float[Array, "K N"], labels: Array
) -> Float[Array, " N"]:
    """`log CE` of every column of a logit matrix, labels of shape (N,) (theory §1)."""
    k = z.shape[0]
    correct = jnp.take_along_axis(z, labels[None, :], axis=0)  # (1, N)
    gaps = z - correct
    mask = jnp.arange(k)[:, None] == labels[None, :]
    gaps = jnp.where(mask, -jnp.inf, gaps)
    a = jax.nn.logsumexp(gaps, axis=0)
    return _log_ce_from_gaps(a)


def log_loss_from_logits(z: Float[Array, "K N"], labels: Array) -> Float[Array, ""]:
    """`log` of the mean cross-entropy of logits `z`, stable far below underflow (theory §1)."""
    log_ce = log_ce_per_column(z, labels)
    return jax.nn.logsumexp(log_ce) - jnp.log(log_ce.shape[0])


def margins_per_column(z: Float[Array, "K N"], labels: Array) -> Float[Array, " N"]:
    """`z[c] - max_{c' != c} z[c']` for every column (theory §6)."""
    k = z.shape[0]
    correct = jnp.take_along_axis(z, labels[None, :], axis=0)[0]
    mask = jnp.arange(k)[:, None] == labels[None, :]
    others = jnp.where(mask, -jnp.inf, z).max(axis=0)
    return correct - others


class DeepUFM(eqx.Module):
    """A deep unconstrained features model (theory §1).

    `factors = (H, W_1, ..., W_L)` with `H` of shape `(d, K n)` (class-major columns: sample `i`
    of class `c` is column `c*n + i`), `W_l` of shape `(d, d)` for `l < L` and `W_L` of shape
    `(K, d)`. Logits are `Z = W_L ... W_1 H`.

    **Arguments:**

    - `factors`: the `L + 1` factor matrices, features first.
    - `num_classes`: `K` (static).
    - `per_class`: `n`, samples per class (static).

    **Raises:** `ValueError` (at construction) if the factor shapes are inconsistent.
    """

    factors: tuple[Float[Array, "..."], ...]
    num_classes: int = eqx.field(static=True)
    per_class: int = eqx.field(static=True)

    def __check_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}; pass K >= 2.")
        if self.per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {self.per_class}; pass n >= 1.")
        if len(self.factors) < 2:
            raise ValueError(
                "DeepUFM needs at least two factors (H, W_1): depth must be >= 1; "
                f"got {len(self.factors)} factor(s)."
            )
        h, *ws = self.factors
        n_samples = self.num_classes * self.per_class
        # Shapes are checked on the trailing two axes so a vmapped (batched) model is allowed.
        if h.shape[-1] != n_samples:
            raise ValueError(
                f"H must have K*n = {n_samples} columns, got shape {h.shape}; "
                "pass features of shape (width, num_classes * per_class)."
            )
        width = h.shape[-2]
        for i, w in enumerate(ws[:-1], start=1):
            if w.shape[-2:] != (width, width):
                raise ValueError(
                    f"W_{i} must have shape ({width}, {width}), got {w.shape}; "
                    "hidden layers are square of the feature width."
                )
        if ws[-1].shape[-2:] != (self.num_classes, width):
            raise ValueError(
                f"W_L must have shape ({self.num_classes}, {width}), got {ws[-1].shape}."
            )

    @property
    def depth(self) -> int:
        """`L`, the number of weight matrices."""
        return len(self.factors) - 1

    @property
    def width(self) -> int:
        return self.factors[0].shape[-2]

    @property
    def labels(self) -> Array:
        """Class label of every column, shape `(K n,)`."""
        return jnp.repeat(jnp.arange(self.num_classes), self.per_class)

    def features(self) -> Float[Array, "d N"]:
        """Penultimate features `W_{L-1} ... W_1 H` (equal to `H` when `L = 1`)."""
        h = self.factors[0]
        for w in self.factors[1:-1]:
            h = w @ h
        return h

    def logits(self) -> Float[Array, "K N"]:
        """`Z = W_L ... W_1 H` (theory §1)."""
        return self.factors[-1] @ self.features()

    def class_mean_logits(self) -> Float[Array, "K K"]:
        """`Zbar`: column `c` is the mean of class `c`'s logit columns (theory §1)."""
        z = self.logits()
        return z.reshape(self.num_classes, self.num_classes, self.per_class).mean(-1)

    def log_loss(self) -> Float[Array, ""]:
        """`log` of the unregularized cross-entropy, computed stably (theory §1 numerics).

        Finite far past the point where `loss()` underflows to zero.
        """
        return log_loss_from_logits(self.logits(), self.labels)

    def loss(self) -> Float[Array, ""]:
        """Mean cross-entropy over the `K n` samples (paper Eq. 1)."""
        z = self.logits()
        lse = jax.nn.logsumexp(z, axis=0)
        correct = jnp.take_along_axis(z, self.labels[None, :], axis=0)[0]
        return jnp.mean(lse - correct)

    def sq_norm(self) -> Float[Array, ""]:
        """`||theta||^2`: the sum of every factor's squared Frobenius norm (theory §6)."""
        return sum(jnp.sum(f**2) for f in self.factors)

    def margins(self) -> Float[Array, " N"]:
        """Margin of every sample (theory §6)."""
        return margins_per_column(self.logits(), self.labels)
