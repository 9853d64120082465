"""Writes of the batched loop (`_batched_tsit5.run_batch`) into its result buffers.

The fast path writes only for the slots that have something to write in a step, one
`dynamic_update_slice` each (`_write_rows`, `_write_columns`): a scatter would keep XLA:CPU from
compiling the loop as one function (`ufmflow.fast_cpu_loops`), and gathers and selects over all
slots cost more (with computing each save for all slots and measuring the whole `(N, S, K)`
array: 1.10x in all on 1024 of the benchmark's runs, K=64, depth 1..8, 16 saves; 1.26x with 64
saves). The differentiable path (one slot per run) writes with selects (`_select_rows`), which
reverse-mode differentiation handles without storing a buffer per slot.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _for_masked(mask, body, carry):
    """`carry = body(j, carry)` for every slot `j` with `mask[j]`, in increasing `j`: a loop
    over those slots only (most slots have nothing to write in a given step)."""
    n = mask.shape[0]
    slot = jnp.arange(n, dtype=jnp.int32)

    def next_after(j):  # the first masked slot after j, or n
        later = mask & (slot > j)
        return jnp.where(jnp.any(later), jnp.argmax(later).astype(jnp.int32), jnp.int32(n))

    def step(c):
        j, carry = c
        return next_after(j), body(j, carry)

    return jax.lax.while_loop(lambda c: c[0] < n, step, (next_after(jnp.int32(-1)), carry))[1]


def _write_rows(bufs, index, values, mask):
    """`bufs[index[0][j], index[1][j], ...] = values(j)` for every slot `j` with `mask[j]`
    (pytrees `bufs` and `values(j)` of matching structure; `values(j)` is evaluated for those
    slots only), one `dynamic_update_slice` per such slot: unlike a scatter, this keeps the
    solver loop eligible for XLA:CPU's compilation of a whole `while` as one function
    (`ufmflow.fast_cpu_loops`)."""

    def body(j, bufs):
        start = tuple(i[j].astype(jnp.int32) for i in index)
        return jax.tree_util.tree_map(
            lambda b, v: jax.lax.dynamic_update_slice(
                b, v.reshape((1,) * len(start) + v.shape), start + (jnp.int32(0),) * v.ndim),
            bufs, values(j))

    return _for_masked(mask, body, bufs)


def _write_columns(bufs, values, mask):
    """`bufs[i][:, j] = values(j)[i]` (`(K, slots)` buffers, `(K, 1)` columns) for every slot
    `j` with `mask[j]`, one `dynamic_update_slice` each (as `_write_rows`)."""

    def body(j, bufs):
        return tuple(jax.lax.dynamic_update_slice(b, v, (jnp.int32(0), j))
                     for b, v in zip(bufs, values(j)))

    return _for_masked(mask, body, bufs)



def _select_rows(buf, cols, values, mask):
    """`buf[j, cols[j]] = values[j]` for every row `j` with `mask[j]` (`cols=None`:
    `buf[j] = values[j]`), by a select over the whole buffer: the differentiable path's write
    (one slot per run, so slot `j` writes row `j`)."""
    if cols is None:
        hit = mask
    else:
        hit = mask[:, None] & (jnp.arange(buf.shape[1])[None, :] == cols[:, None])
        values = values[:, None]
    hit = hit.reshape(hit.shape + (1,) * (buf.ndim - hit.ndim))
    return jnp.where(hit, values, buf)
