"""Bulk writes in pieces, off the workers: STORE, COPY, MOVE, EXPUNGE and CLOSE over many
messages commit one piece of the set per write transaction, each piece written by a thread of
BULK_WRITERS while the session waits without a worker (an Await).

Written in one transaction on the worker, ``COPY 1:*`` of 100,000 messages held for about 3 s
both the worker (a process has a handful: two with the default context_num on two CPUs) and its
shard's LMDB write lock, which every process shares. With a few users doing so at once, the
other sessions of a process got no answer for seconds, and every writer of those shards,
deliveries included, waited as long.

Now the worker is free while a piece is written, and the lock is held for about PIECE_SECONDS
at a time: other writers of the shard get their turn between pieces (a delivery waits for one
piece, not for the command). Pieces cannot be much shorter: each commit syncs the pages it
wrote, and a piece rewrites pages the one before it wrote (the branch pages of the randomly
keyed body records above all). Measured on 100,000 messages with midb_fsync on, COPY and EXPUNGE
took 2.2 and 2.1 times as long in pieces of 20 ms, about 1.3 and 1.7 times in pieces of 250 ms.

A set of up to FIRST_PIECE messages, what clients send nearly always, is written as before: in
one transaction, on the worker.

What a command written in pieces promises is its own (see each one): STORE, EXPUNGE and MOVE may
be left part-done by a failure, which IMAP allows (RFC 6851 section 3.3 for MOVE: each message is
moved or untouched); COPY removes the copies it made when a later piece fails (RFC 3501 section
6.4.7).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from gximap.session.base import Await
from gximap.session.progress import Progress
from midb.blobs import ProcessPool

T = TypeVar("T")
R = TypeVar("R")

# Sets up to this size are written in one transaction on the worker, as every set was before:
# about 60 ms for a COPY (30 µs a message on a 100,000-message folder), 40 ms for an EXPUNGE,
# 20 ms for a STORE. Larger sets start with a piece of this size.
FIRST_PIECE = 2000
# How long a piece should take, its commit included; later pieces are sized from the time the
# one before took. See the module docstring for why not shorter.
PIECE_SECONDS = 0.25
# Bounds of that sizing: a slow disk must not make one piece hold the lock for long, nor shrink
# pieces until they do nothing but commit.
MIN_PIECE = 200
MAX_PIECE = 50_000

# Threads that write the pieces, per process. A third bulk command waits for one of them (the
# session holding no worker): bulk writes to one shard would wait for its lock anyway.
BULK_WRITERS = ProcessPool(2, "bulk-write")
# The thread that expires an account's Trash and Junk at its login or delivery (gximap.expiring):
# one, of its own, so that a burst of logins (one period after an upgrade, every Trash is due at
# once) never keeps a client's bulk command waiting for the threads above.
EXPIRY_WRITERS = ProcessPool(1, "autoexpunge")


def in_pieces(items: Sequence[T], write: Callable[[Sequence[T]], R],
              report: Callable[[Sequence[T], R], Iterable[bytes]], *,
              progress: Progress | None = None) -> Generator[bytes | Await, Any, None]:
    """``write(piece)`` for consecutive pieces of ``items`` (each its own durable write
    transaction), then ``report(piece, result)`` on the session's worker for the lines to send.
    Pieces after the first are written by BULK_WRITERS while the session awaits them, and sized
    to take about PIECE_SECONDS. ``progress`` (the command's, for INPROGRESS) is given the items
    written so far of them all.

    ``write`` must touch the store only (it runs on another thread); session state belongs in
    ``report``. Once this generator is closed or fails, no ``write`` runs any more: one in
    progress is waited for, so what it did is known to the caller's clean-up."""
    total = len(items)
    if not total:
        return   # nothing to write: no transaction (an EXPUNGE or CLOSE with nothing \Deleted)
    if total <= FIRST_PIECE:
        yield from report(items, write(items))
        return
    size = FIRST_PIECE
    start = 0
    while start < total:
        piece = items[start:start + size]
        if progress is not None:
            progress.note(start, total)
        start += len(piece)
        # In the session's context: what the piece commits is its client's own (RFC 5465
        # section 5, gximap.session.notify.AUTHOR).
        future = BULK_WRITERS.get().submit(contextvars.copy_context().run, _timed, write, piece)
        try:
            result, took = yield Await(future)
        except BaseException:
            _settle(future)
            raise
        yield from report(piece, result)
        size = max(MIN_PIECE, min(MAX_PIECE, int(len(piece) * PIECE_SECONDS / max(took, 1e-4))))


def _timed(write: Callable[[Sequence[T]], R], piece: Sequence[T]) -> tuple[R, float]:
    began = time.monotonic()
    result = write(piece)
    return result, time.monotonic() - began


def _settle(future: Future[Any]) -> None:
    """A piece abandoned (the client left, the server stops): not started, it never will be;
    started, it is waited for."""
    if not future.cancel():
        with contextlib.suppress(BaseException):
            future.result()
