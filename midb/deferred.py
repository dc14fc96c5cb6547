"""Parse stored bodies a moment after they are stored, not while the APPEND waits (midb_parse_delay).

A body's MIME digest (ENVELOPE, BODYSTRUCTURE, part offsets) and search summary are caches of
the body: FETCH, SEARCH, SORT and THREAD compute one from the body when the index has none
(Store.digest, Store.summaries). So a serving store need not parse a message inside the APPEND
or LMTP delivery that stores it. With a parse delay, the store hands each new body to a
:class:`DeferredParser` once it is committed; a thread of the parser parses the bodies whose delay
has passed and writes their records in one transaction per batch. Meanwhile:

- a reader that needs the digest first computes it itself, as for any body without one, and
  hands it to the parser, which stores it with the next batch instead of parsing again;
- a body expunged before its turn is never parsed (the batch looks for its reference record).
  A client that deletes or moves what it has just stored (drafts saved every few seconds, a
  filter refiling delivered mail, the bench's mixed load) costs no parse at all.

This is what Dovecot does with its cache file: it parses a message when a client first asks
for a field, not when the message arrives. The queue lives in memory: bodies still waiting when
the process stops (or dies) stay unparsed until the first reader parses them, and that reader's
result is stored as above. Nothing here decides whether mail is kept: a lost parse costs time,
never a message.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("midb")

BATCH = 256                 # bodies parsed and written per transaction
# The thread wakes this long after the first body of a batch is due (or a reader's digest
# arrives), not for each body: under a steady stream of APPENDs it runs a few times a second,
# each time with everything due, instead of taking the GIL for every message.
DUE_WINDOW = 0.5
PARSED_WINDOW = 0.1
QUEUE_LIMIT = 100_000       # bodies waiting at most; beyond that a new one is left to its first reader
# Items of cache writes from readers waiting at most: two 100,000-message folders' sort entries
# (about 15 MiB each, see Store.sort_values).
LATER_LIMIT = 200_000

# (body id, digest already computed by a reader or None) -> None; see Store.store_parsed
Persist = Callable[[list[tuple[str, object | None]]], None]


class DeferredParser:
    """Bodies waiting for their parse, and the thread that parses them when they are due."""

    def __init__(self, persist: Persist, delay: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._persist = persist
        self.delay = max(0.0, float(delay))
        self._clock = clock
        self._lock = threading.Lock()
        self._due: collections.deque[tuple[float, str]] = collections.deque()   # in order of due time
        self._parsed: dict[str, object] = {}   # computed by readers: stored with the next batch
        self._parsed_since = 0.0               # when the first of them arrived
        self._places: dict[str, object] = {}   # body -> where it was stored (stored(places=...))
        self._later: list[Callable[[], object]] = []   # other cache writes readers handed over
        self._later_items = 0                   # what they write, in all (entries, bodies...)
        self._later_since = 0.0
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0   # bodies not queued because the queue was full

    # -- what the store tells it --------------------------------------------------------------

    def stored(self, blobs: Iterable[str], places: Iterable[object] | None = None) -> None:
        """Bodies just committed without a digest: parse them once the delay has passed.
        ``places``: where each was stored (the store's business: it takes them back with
        take_places when it persists the parse, to write what it keeps per message)."""
        due = self._clock() + self.delay
        with self._lock:
            if self._closed:
                return
            idle = not self._due and not self._parsed
            pairs = ((blob, None) for blob in blobs) if places is None else zip(blobs, places, strict=True)
            for blob, place in pairs:
                if len(self._due) + len(self._parsed) >= QUEUE_LIMIT:
                    self.dropped += 1
                    continue
                self._due.append((due, blob))
                if place is not None:
                    self._places[blob] = place
            self._start_locked()
            if idle:   # else the thread already waits for an earlier body, and takes these with it
                self._wake.notify()

    def parsed(self, blob: str, digest: object) -> None:
        """A reader computed the digest of a body the index had none of: store it."""
        with self._lock:
            if self._closed or len(self._due) + len(self._parsed) >= QUEUE_LIMIT:
                return
            if not self._parsed:
                self._parsed_since = self._clock()
                self._wake.notify()
            self._parsed[blob] = digest
            self._start_locked()

    def later(self, write: Callable[[], object], items: int = 1) -> None:
        """Run a cache write a reader prepared (Store.store_sort_entries: ``items`` entries) in
        the thread, with the next batch: the reader's command does not wait for a commit.
        Dropped when LATER_LIMIT items wait already or the parser is closed (the next reader
        derives the cache again)."""
        with self._lock:
            if self._closed or self._later_items + items > LATER_LIMIT:
                return
            if not self._later:
                self._later_since = self._clock()
                self._wake.notify()
            self._later.append(write)
            self._later_items += items
            self._start_locked()

    def take_places(self, blobs: Iterable[str]) -> dict[str, object]:
        """The places stored() was given for these bodies, forgotten here."""
        with self._lock:
            return {blob: place for blob in blobs if (place := self._places.pop(blob, None)) is not None}

    def pending(self) -> int:
        with self._lock:
            return len(self._due) + len(self._parsed) + len(self._later)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread; what is still queued stays unparsed until read (see the module text)."""
        with self._lock:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------------

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="midb-parse", daemon=True)
            self._thread.start()

    def take_due(self, now: float) -> list[tuple[str, object | None]]:
        """The next batch: digests readers computed first, then bodies whose delay has passed."""
        with self._lock:
            return self._take_locked(now)

    def _take_locked(self, now: float) -> list[tuple[str, object | None]]:
        batch: list[tuple[str, object | None]] = []
        while self._parsed and len(batch) < BATCH:
            batch.append(self._parsed.popitem())
        while self._due and len(batch) < BATCH and self._due[0][0] <= now:
            blob = self._due.popleft()[1]
            batch.append((blob, self._parsed.pop(blob, None)))
        return batch

    def _wait_locked(self, now: float) -> float | None:
        """Seconds until the next batch should be taken (0: now); None: nothing is queued."""
        moments = []
        if self._parsed:
            moments.append(self._parsed_since + PARSED_WINDOW)
        if self._due:
            moments.append(self._due[0][0] + DUE_WINDOW)
        if self._later:
            moments.append(self._later_since + PARSED_WINDOW)
        return max(0.0, min(moments) - now) if moments else None

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    now = self._clock()
                    wait = self._wait_locked(now)
                    if wait == 0.0:
                        batch = self._take_locked(now)
                        if self._parsed:   # more than a batch: the rest goes next, at once
                            self._parsed_since = now - PARSED_WINDOW
                        writes, self._later, self._later_items = self._later, [], 0
                        if batch or writes:
                            break
                        continue
                    self._wake.wait(wait)
            failed = False
            if batch:
                try:
                    self._persist(batch)
                except Exception:   # a cache left unwritten; the next reader computes it again
                    log.exception("deferred parse of %d bodies failed", len(batch))
                    failed = True
            for write in writes:
                try:
                    write()
                except Exception:   # the same: a cache the next reader derives again
                    log.exception("deferred cache write failed")
                    failed = True
            if failed:
                time.sleep(1.0)   # a store in trouble (disk full, closing) must not be hammered
