"""A file's parsed contents, re-read when the file changes (passwd-file, name-map file tables).

Readers compare a cheap stat signature on every use and reload under a lock only when it
changed; a missing file yields the empty value and is logged once, not on every lookup.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReloadingFile(Generic[T]):
    def __init__(self, path: str, load: Callable[[], T | None], empty: T, *, missing_message: str,
                 log: logging.Logger, on_loaded: Callable[[T], None] | None = None) -> None:
        """``load`` returns the parsed contents, or None to keep the previous ones (until the file
        changes again); ``missing_message`` is logged with the path when the file is gone."""
        self.path = path
        self._load = load
        self._empty = empty
        self._missing_message = missing_message
        self._log = log
        self._on_loaded = on_loaded
        self._lock = threading.Lock()
        self._signature: tuple[int, ...] | None = (-1,)  # never matches a real file
        self._contents: T = empty

    def current(self) -> T:
        try:
            st = os.stat(self.path)
            signature: tuple[int, ...] | None = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = None
        if signature == self._signature:
            return self._contents
        with self._lock:
            if signature != self._signature:
                if signature is None:
                    self._log.error(self._missing_message, self.path)
                    self._contents = self._empty
                else:
                    loaded = self._load()
                    if loaded is not None:
                        self._contents = loaded
                        if self._on_loaded is not None:
                            self._on_loaded(loaded)
                self._signature = signature
            return self._contents
