"""Futures that one timer thread per process completes after a delay: the wait before the answer to
a failed login (``imap_auth_failure_delay``, Dovecot's ``auth_failure_delay``).

Why a future and one thread, not a sleep: the session that waits for the delay parks its command on
the future (an Await, as on a password check), holding no worker, and the future's completion fires
the session's waker (gximap.net.pool); the auth socket queues its FAIL line behind one the same way.
Thousands of connections failing at once then cost heap entries of this one thread, never a thread
each, and the workers keep serving every other session meanwhile.

A future cancelled before it is due (its client left) stays in the heap until then and is dropped
unfired: at most one delay's worth of entries per failing connection. The thread starts at the first
delay a process asks for, and again in a forked child (threads do not survive fork(): the serving
processes fork after the daemon started), where the parent's entries are forgotten with the
connections they belonged to.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future


class DelayTimer:
    """``after(seconds)``: a future completed (with None) once ``seconds`` have passed."""

    _instances: weakref.WeakSet[DelayTimer] = weakref.WeakSet()

    def __init__(self, name: str = "gximap-delay", clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._reset()
        DelayTimer._instances.add(self)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Future[None]]] = []
        self._order = itertools.count()  # ties keep their order; futures are never compared
        self._thread: threading.Thread | None = None

    def after(self, seconds: float) -> Future[None]:
        future: Future[None] = Future()
        due = self._clock() + seconds
        with self._cond:
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (due, next(self._order), future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif earliest is None or due < earliest:
                self._cond.notify()  # the thread sleeps until a later instant, or for good
        return future

    def pending(self) -> int:
        """Entries not yet due, cancelled ones included (for tests and the curious)."""
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - self._clock()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                now = self._clock()
                due: list[Future[None]] = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            # Outside the lock: the callbacks fire wakers, which take the pool's locks.
            for future in due:
                if future.set_running_or_notify_cancel():  # False: cancelled, its client left
                    future.set_result(None)

    @classmethod
    def _forget_after_fork(cls) -> None:
        for instance in list(cls._instances):
            instance._reset()


os.register_at_fork(after_in_child=DelayTimer._forget_after_fork)

# The process's one timer thread for delayed answers (AuthService.failure_pause).
DELAYS = DelayTimer()
