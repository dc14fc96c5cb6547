"""A small thread-safe least-recently-used map with a fixed number of entries."""

from __future__ import annotations

import collections
import contextlib
import itertools
import operator
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``capacity`` entries; a get() refreshes its entry, a put() beyond the capacity
    drops the entry least recently used. For values that never change for a key (a body's MIME
    digest, keyed by the body's id), so nothing is ever invalidated. Keys must hash and compare
    without Python code (str, bytes, numbers and tuples of them): get() reads without the lock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        # No lock: each OrderedDict call is one step under the GIL (these keys hash and compare
        # in C), and a FETCH asks once per message. An entry that a put() drops between the two
        # calls is just not refreshed.
        entries = self._entries
        value = entries.get(key)
        if value is not None:
            try:
                entries.move_to_end(key)
            except KeyError:
                pass
        return value

    def get_many(self, keys: list[K]) -> list[V | None]:
        """get() of each key, in C-level passes: a folder listing asks for a batch of bodies'
        entries at once. Values must not be None."""
        entries = self._entries
        values = list(map(entries.get, keys))
        present = list(itertools.compress(keys, map(operator.is_not, values, itertools.repeat(None))))
        try:
            collections.deque(map(entries.move_to_end, present), maxlen=0)
        except KeyError:  # dropped by a put() meanwhile: the rest refreshed one by one
            for key in present:
                with contextlib.suppress(KeyError):
                    entries.move_to_end(key)
        return values

    def put(self, key: K, value: V) -> None:
        if not self.capacity:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
