"""A file's parsed contents, re-read when the file changes (passwd-file, name-map file tables).

Readers compare a cheap stat signature on every use and reload under a lock only when it
changed. A file that exists but cannot be read (EACCES, EIO, a directory or a FIFO in its place,
over the reader's size bound) is a temporary failure: ``current()`` raises FileUnavailable until
it can be read again, as Dovecot's passwd-file fails a lookup as an internal error. A missing
file is the reader's choice: the empty value (a map file, documented so) or that failure (the
passwd-file: a broken deployment, not "no users"). Each change of state is logged once, not at
every lookup: the error with its errno when the file becomes unusable, a warning when it can be
read again.

The previous contents are not served while the file cannot be read. The change that made it
unreadable is often the very edit meant to revoke a password or a name (a new file written with
the wrong owner or mode): serving the old contents would keep what the administrator removed
working, with nothing but a log line to say so. A temporary failure makes clients try again
later, counts toward no login block, and shows at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from midb.errors import FileUnavailable

T = TypeVar("T")

# While the file cannot be read and its stat has not changed, it is tried again at most this
# often: an EIO or a security policy may pass without the file changing (a chmod, chown or ACL
# change does change its ctime, and is seen at the next lookup). Between tries, lookups fail at
# once. A file unusable as a whole (not a regular file, too large) is not tried again until its
# stat changes: its mode and size, in the signature, are what made it so.
RETRY_INTERVAL = 1.0

_MISSING_ERRNOS = (errno.ENOENT, errno.ENOTDIR)


class _Unusable(Exception):
    """The file exists but cannot be used as a whole (not a regular file, too large)."""


@dataclass(frozen=True, slots=True)
class _State(Generic[T]):
    signature: tuple[object, ...]  # the stat that was read (or the stat error); never a real one at first
    contents: T
    failure: str | None = None  # why the file cannot be used now: lookups raise FileUnavailable
    missing: bool = False  # the file is missing and the reader takes that as the empty value
    retry_at: float = 0.0  # the clock reading from which an unusable file is tried again (inf: not by time)


def _signature(result: os.stat_result | OSError) -> tuple[object, ...]:
    if isinstance(result, OSError):
        return ("error", result.errno)
    return (result.st_mtime_ns, result.st_ctime_ns, result.st_size, result.st_ino, result.st_dev, result.st_mode)


def describe_os_error(exc: OSError) -> str:
    """``Permission denied (EACCES)``: the text and the errno's name, for the administrator."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


class ReloadingFile(Generic[T]):
    def __init__(self, path: str, parse: Callable[[bytes], T], empty: T, *, what: str, log: logging.Logger,
                 missing_message: str | None = None, max_bytes: int | None = None,
                 on_loaded: Callable[[T], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``parse`` turns the file's bytes into the contents (skipping and logging what it cannot
        use; it does not fail as a whole). ``what`` names the file in messages ("passwd-file").
        ``missing_message`` (logged with the path): a missing file is the ``empty`` value; None:
        a missing file is unusable, as an unreadable one is. ``max_bytes``: a larger file is
        unusable, not read. ``on_loaded`` is called with each new contents."""
        self.path = path
        self.what = what
        self._parse = parse
        self._empty = empty
        self._missing_message = missing_message
        self._max_bytes = max_bytes
        self._log = log
        self._on_loaded = on_loaded
        self._clock = clock
        self._lock = threading.Lock()
        self._state: _State[T] = _State(("unread",), empty)  # one attribute: readers see one state

    def current(self) -> T:
        """The contents; FileUnavailable while the file cannot be read (or is missing, unless
        that is the empty value)."""
        seen = self._stat()
        state = self._state
        if self._stale(state, _signature(seen)):
            with self._lock:
                seen = self._stat()  # again: a thread that held the lock may have read a newer file
                signature = _signature(seen)
                state = self._state
                if self._stale(state, signature):
                    state = self._read(seen, signature)
                    self._settle(state)
        if state.failure is not None:
            raise FileUnavailable(self.what, self.path, state.failure)
        return state.contents

    def read_at_start(self) -> None:
        """Read the file now, so that one that cannot be read is logged at start, not at the
        first lookup; raises nothing (the daemon starts, the lookups fail)."""
        with contextlib.suppress(FileUnavailable):
            self.current()

    def _stat(self) -> os.stat_result | OSError:
        try:
            return os.stat(self.path)
        except OSError as exc:
            return exc

    def _stale(self, state: _State[T], signature: tuple[object, ...]) -> bool:
        return state.signature != signature or (state.failure is not None and self._clock() >= state.retry_at)

    def _read(self, seen: os.stat_result | OSError, signature: tuple[object, ...]) -> _State[T]:
        try:
            if isinstance(seen, OSError):
                raise seen
            # O_NONBLOCK: a FIFO put in the file's place must not hang the lookup (and its lock).
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with open(fd, "rb") as handle:
                st = os.fstat(fd)
                signature = _signature(st)  # what was read: a rename meanwhile is seen next time
                if stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                if not stat.S_ISREG(st.st_mode):
                    raise _Unusable("not a regular file")
                limit = self._max_bytes
                if limit is not None and st.st_size > limit:  # known unread: no allocation of its size
                    raise _Unusable(f"larger than {limit} bytes")
                # limit + 1 all the same: the file may grow between the fstat and the read.
                data = handle.read() if limit is None else handle.read(limit + 1)
                if limit is not None and len(data) > limit:
                    raise _Unusable(f"larger than {limit} bytes")
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS and self._missing_message is not None:
                return _State(signature, self._empty, missing=True)
            return _State(signature, self._empty, failure=describe_os_error(exc),
                          retry_at=self._clock() + RETRY_INTERVAL)
        except _Unusable as exc:
            return _State(signature, self._empty, failure=str(exc), retry_at=math.inf)
        return _State(signature, self._parse(data))

    def _settle(self, state: _State[T]) -> None:
        """Make ``state`` current (lock held); log the change of state, if it is one."""
        previous, self._state = self._state, state
        if state.failure is not None:
            if state.failure != previous.failure:
                self._log.error("%s %s cannot be read: %s; lookups in it fail as a temporary error "
                                "until it can", self.what, self.path, state.failure)
            return
        if state.missing:
            if not previous.missing:
                self._log.error(self._missing_message, self.path)
            return
        if previous.failure is not None or previous.missing:
            self._log.warning("%s %s can be read again", self.what, self.path)
        if self._on_loaded is not None:
            self._on_loaded(state.contents)
