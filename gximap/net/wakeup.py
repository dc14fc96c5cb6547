"""A self-pipe that a signal handler may poke: the one safe way to wake a waiting main thread.

Python runs signal handlers in the main thread, between two bytecodes of whatever it was doing.
A handler that calls ``threading.Event.set()`` takes the event's lock; if the main thread was
interrupted inside ``Event.wait()`` or ``clear()`` with that lock held, the handler waits for a
lock only it could release, and the process hangs for good (seen as a gximap that SIGTERM left
running until it was killed). ``poke()`` only writes a byte to a non-blocking pipe, which takes no
lock; ``wait()`` sleeps in ``select()`` on the pipe's other end.
"""

from __future__ import annotations

import contextlib
import os
import select


class WakePipe:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def poke(self) -> None:
        """Safe in a signal handler. A full pipe already holds a wake-up, so that one is enough.
        After close() it does nothing: the descriptor number may belong to another file by then."""
        if self._write < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._write, b"\0")

    def wait(self, timeout: float, also: tuple[int, ...] = ()) -> bool:
        """Sleep until poked, one of the ``also`` descriptors is readable, or ``timeout`` passes;
        True if poked. Pokes are drained: each wait sees those made since the previous one."""
        watched = [fd for fd in (self._read, *also) if fd >= 0]
        with contextlib.suppress(InterruptedError):
            select.select(watched, [], [], timeout)
        return self.drain()

    def drain(self) -> bool:
        poked = False
        if self._read < 0:
            return poked
        while True:
            try:
                data = os.read(self._read, 256)
            except OSError:   # empty (BlockingIOError), interrupted, or closed
                return poked
            if not data:
                return poked
            poked = True

    def close(self) -> None:
        # Forget the descriptors before closing them: a handler running in between must not
        # write to a number that is being reused.
        descriptors, self._read, self._write = (self._read, self._write), -1, -1
        for fd in descriptors:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
