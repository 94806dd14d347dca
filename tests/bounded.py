"""Run a call that must not hang, so that a regression fails the test instead of the suite."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest


def run_bounded(fn, seconds: float = 10.0, fifo: str | os.PathLike | None = None):
    """What `fn()` returns or raises, within `seconds`; else the test fails.

    `fn` runs in a daemon thread. If it is still running when time is up and `fifo` is given, a
    writer opens and closes the FIFO, so that a reader blocked on it sees its end and the thread
    finishes instead of lingering.
    """
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (returned for the test to check)
            outcome["value"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:
            try:
                os.close(os.open(Path(fifo), os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"still running after {seconds} s: it hangs (a read that never ends?)")
    return outcome["value"]
