"""Ctrl-C for every command (issue 15 point 2): stop within 2 s, keep what is finished, leave
no temporary file and no lock.

A running XLA computation (or compilation) cannot be interrupted from Python, so the work runs
in a worker thread while the main thread waits in short, interruptible steps. On Ctrl-C
(SIGINT) the main thread waits for a file write in progress (at most 1.5 s: writes hold
`ufmflow.sweep._store.WRITE_LOCK`), removes the registered temporary files, this process's
stray `.<name>.<pid>.tmp` files in the given folders and its locks, prints one line and ends
the process with exit code 130 (`os._exit`: the worker thread is not waited for). Finished
files stay: every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

EXIT_INTERRUPTED = 130
WRITE_WAIT_S = 1.5


def interruptible(work: Callable[[], Any], message: Callable[[], str],
                  folders: Callable[[], Iterable[Path]] = tuple) -> Any:
    """`work()` in a worker thread; its result, or its exception re-raised here. On Ctrl-C:
    clean up (see the module docstring), print `message()` on stderr and exit with 130.
    `folders()` names the folders whose `.*.<pid>.tmp` files are removed too."""
    from ..sweep._store import remove_live_tmp, remove_stale_tmp
    from ..sweep._trust import release_all_locks

    box: dict = {}

    def target():
        try:
            box["result"] = work()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            box["error"] = err

    thread = threading.Thread(target=target, name="ufmflow-work", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.05)
    except KeyboardInterrupt:
        remove_live_tmp(timeout=WRITE_WAIT_S)  # keeps the write lock: nothing is written after
        for folder in folders():
            if Path(folder).is_dir():
                remove_stale_tmp(folder, str(os.getpid()))
        release_all_locks()
        print(f"\n{message()}", file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)
    if "error" in box:
        raise box["error"]
    return box["result"]
