"""Progress of a long solve (`solve_flow(progress=True)`, theory §2.4): a tqdm bar over the
solver's time `w = log(1 + t)`, updated from inside the compiled step loop.

The step loop (`_integrate.integrate(progress=report)`) calls `report` through
`jax.debug.callback` every `EVERY` attempted steps; `report` runs on the host while the
compiled loop goes on and moves the bar that `bar` opened. Nothing of it is compiled into a
solve without `progress` (a separate program)."""

from __future__ import annotations

import contextlib
import math
import threading
import time

import numpy as np

# Seconds between redraws of a bar whose GF time does not move.
REDRAW_S = 0.5

# Attempted steps between two reports. A report is not free: on a 532-step solve at 0.5 ms per
# step the bar added ~0.05-0.1 s (theory §2.4); long solves take tens of ms per step.
EVERY = 16

_lock = threading.Lock()
_current = None  # the open bar's `_Bar`, or None


class _Bar:
    """The bar of one solve. The tqdm bar opens at the first report, so that its elapsed time
    and rate leave out the compile."""

    def __init__(self, w1: float, desc: str):
        self.w1, self.desc, self.tqdm, self.shown = w1, desc, None, time.monotonic()

    def update(self, w: float, steps: int, rejected: int, status: str = ""):
        done = 1000 if self.w1 <= 0 else int(1000 * min(max(w / self.w1, 0.0), 1.0))
        text = (f"{self.desc}: t={math.expm1(w):.3g}/{math.expm1(self.w1):.3g}, {steps} steps "
                f"({rejected} rejected){', ' + status if status else ''}")
        if self.tqdm is None:
            from tqdm.auto import tqdm

            # Thousandths of `log(1 + t1)`: equal lengths for equal decades of GF time.
            self.tqdm = tqdm(total=1000, initial=done, desc=text, dynamic_ncols=True,
                             bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
            self.shown = time.monotonic()
            return
        self.tqdm.set_description_str(text, refresh=False)
        if done > self.tqdm.n:
            self.tqdm.update(done - self.tqdm.n)
        elif time.monotonic() - self.shown > REDRAW_S or status:
            # GF time can stall for thousands of steps (an escape, a rank-one phase); tqdm
            # redraws only when its count moves, so the steps are shown here.
            self.tqdm.refresh()
        else:
            return
        self.shown = time.monotonic()

    def close(self):
        if self.tqdm is not None:
            self.tqdm.close()


def report(w, num_steps, num_rejected) -> None:
    """The host side of the step loop's callback: move the open bar (if any) to `w`."""
    with _lock:
        if _current is not None:
            _current.update(float(np.min(w)), int(np.max(num_steps)), int(np.max(num_rejected)))


@contextlib.contextmanager
def bar(w1: float, desc: str = "solve_flow"):
    """The bar for a solve to `w1 = log(1 + t1)`: yields the `_Bar` that `report` moves (its
    `update` also sets the final figures and status) and closes it on exit."""
    global _current
    new = _Bar(float(w1), desc)
    with _lock:
        _current = new
    try:
        yield new
    finally:
        with _lock:
            _current = None
        new.close()
