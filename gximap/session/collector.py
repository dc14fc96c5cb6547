"""Pausing Python's cyclic garbage collector around building many short-lived objects.

A command that builds an object or more per message of a large folder (a SORT or THREAD reading
its values, a SEARCH testing each message) would otherwise start a collection every 700
allocations, and every few of those one of all the process's objects (its caches included).
What such a command builds is freed by reference counting when it is done (nothing is left in a
reference cycle), so it needs no collection; the collector runs again when the last pause ends.
Pauses of concurrent sessions overlap; should they keep the collector off for longer than
_LONGEST_PAUSE, the next one to start runs a full collection first, so that reference cycles
other sessions leave meanwhile are still collected.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator

__all__ = ["collector_paused"]

_pause_lock = threading.Lock()
_pauses = 0  # threads inside collector_paused()
_collector_was_enabled = False
_paused_since = 0.0  # time.monotonic() when the collector was last turned off or run
_LONGEST_PAUSE = 5.0  # seconds


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Run without the cyclic collector. Measured on a first THREAD of 100,000 messages in
    conversations: 70 of 270 ms reading the values were collections (and 120 of 500 ms
    threading them, when the threads were an object per message). Nested and concurrent uses
    share one pause; the last one out enables the collector again (unless it was off before
    the first)."""
    global _pauses, _collector_was_enabled, _paused_since
    collect_first = False
    with _pause_lock:
        now = time.monotonic()
        if _pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
            _paused_since = now
        elif _collector_was_enabled and now - _paused_since > _LONGEST_PAUSE:
            collect_first = True
            _paused_since = now
        _pauses += 1
    if collect_first:
        gc.collect()
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _collector_was_enabled:
                gc.enable()
