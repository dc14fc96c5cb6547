"""COPY, MOVE and their UID forms (RFC 3501 section 6.4.7, RFC 6851, COPYUID of RFC 4315).

COPY answers ``OK [COPYUID uidvalidity source-uids destination-uids]``. MOVE copies and expunges
in one store transaction per piece (gximap.session.pieces); it sends the COPYUID in an untagged
OK first, then the EXPUNGE (or, with QRESYNC, VANISHED) responses for the moved messages, then the
tagged OK (RFC 6851 section 4.3), which with QRESYNC carries the source's new ``[HIGHESTMODSEQ n]``
as EXPUNGE's does (RFC 7162 section 3.2.7). A missing destination is ``NO [TRYCREATE]``.

If the set names messages this session knows another one expunged (read at its last update
check, not yet announced to the client), the command fails with ``NO [EXPUNGEISSUED]`` and copies
nothing (RFC 2180 section 4.4.1, Dovecot's choice): a partial copy would leave the client unsure
what arrived. A message expunged since that check is simply not found by the store: the command
copies the rest, its EXPUNGE goes out before the tagged OK, and COPYUID names exactly what was
copied, so the client still knows what arrived.

Many messages are copied or moved in pieces, one write transaction each, so that one user's
``MOVE 1:* Trash`` of a large folder does not hold the shard's write lock and a worker for
seconds. Before its first piece, a COPY checks that the account's quota can take the whole set,
and is refused NO [OVERQUOTA] with nothing written if not: the pieces, which check only
themselves, would use up the quota for as long as the COPY ran, refusing deliveries meanwhile,
only to be undone. A COPY that fails after some pieces (or whose client leaves) removes the
copies it made, those of a piece whose commit stands but whose flush failed (NotDurable) too:
the destination is left as it was, as RFC 3501 requires, although a session
watching it may see them come and go. A crash in the middle leaves the copies made so far, which only duplicates
mail (every piece is durable: its new UIDs are seen by other sessions at once). A MOVE that
fails part-way reports what it moved, then NO (RFC 6851 section 3.3).

A MOVE piece whose commit stands but whose flush failed (NotDurable) counts as moved: its
messages are reported (COPYUID, EXPUNGE) with the pieces before it, then NO [UNAVAILABLE] says
that the move is not safely on disk. It is not undone as a COPY's copies are: RFC 3501 wants a
failed COPY to leave the destination as it was, but RFC 6851 section 3.3 lets a MOVE answered NO
have moved messages, provided each is in one mailbox, which one transaction per piece ensures
(a power failure brings back all of a piece's originals or none). Moving them back would give
them new UIDs in the source (UIDs only grow), a second write on a disk that has just failed,
as unsure; the client would still have to learn of both moves.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.session import pieces
from gximap.session.base import SELECTED, Await, CommandFailed, Done, command
from gximap.session.errors import done_for_store_error, log_store_trouble, trycreate_folder
from gximap.session.pieces import in_pieces
from gximap.session.searching import resolve_uids
from midb.blobs import PoolClosed
from midb.errors import MidbError, NotDurable, OverQuota


def _copyuid(uidvalidity: int, pairs: list[tuple[int, int]]) -> bytes:
    """``COPYUID v src dst``: both sets in the same (ascending source) order, as RFC 4315 wants."""
    sources = encode.sequence_set([source for source, _ in pairs])
    targets = encode.sequence_set([target for _, target in pairs])
    return b"COPYUID %d %s %s" % (uidvalidity, sources, targets)


class _Transferred:
    """What the pieces of a COPY or MOVE did: the destination's UIDVALIDITY and the (source,
    destination) UID pairs, recorded by ``write`` as each piece commits (on a bulk-write thread,
    while the session waits), so that a piece the client left during is known to the clean-up.
    ``check_first``, if given, runs once before the first piece, on the same thread. A piece
    whose commit stands but whose flush failed (NotDurable) is recorded too, ``unflushed`` set:
    a COPY removes its copies with the others, a MOVE reports its messages moved."""

    def __init__(self, transfer: Callable[..., tuple[int, list[tuple[int, int]]]], view: Any,
                 target_id: int, *, check_first: Callable[[], None] | None = None) -> None:
        self._transfer = transfer   # Store.copy or Store.move
        self._view = view
        self._target_id = target_id
        self._check_first = check_first
        self.unflushed = False
        self.uidvalidity = 0
        self.pairs: list[tuple[int, int]] = []

    def write(self, piece: Sequence[int]) -> None:
        check, self._check_first = self._check_first, None
        if check is not None:
            check()
        # Every piece is durable, not only the last: the new UIDs are seen by other sessions at
        # once, and a crash that undid a piece would give them to other messages.
        view = self._view
        try:
            self.uidvalidity, pairs = self._transfer(view.account, view.folder_id, piece, self._target_id)
        except NotDurable as error:
            # Committed, but its flush failed: it stands (a COPY's to undo, a MOVE's to report).
            if error.result is not None:
                self.uidvalidity, pairs = error.result
                self.pairs.extend(pairs)
                self.unflushed = bool(pairs)
            raise
        self.pairs.extend(pairs)


def _undo_copies(session: Any, account: str, target_id: int, uids: list[int]) -> None:
    """Remove the copies a failed COPY made, a piece per transaction as they were made; run by
    BULK_WRITERS (see copy()). One that cannot be removed (the destination deleted meanwhile, the
    store failing) is logged and left: the COPY's own error is the answer. A removal whose flush
    failed (NotDurable) stands as the COPY did, so the rest are removed all the same."""
    try:
        for start in range(0, len(uids), pieces.FIRST_PIECE):
            with contextlib.suppress(NotDurable):
                session.store.remove_messages(account, target_id, uids[start:start + pieces.FIRST_PIECE])
    except MidbError as error:
        session.ctx.log.warning("session %s: the copies of a failed COPY were not all removed: %s",
                                session.id, error)
    except Exception:  # noqa: BLE001 - the COPY's own error stays the answer
        session.ctx.log.exception("session %s: the copies of a failed COPY were not all removed", session.id)


def _hand_over_undo(session: Any, account: str, target_id: int, uids: list[int]) -> Future[None] | None:
    """_undo_copies, submitted to BULK_WRITERS; None when the daemon has stopped them (this
    worker outlived the stop's grace period and the store is closing): the copies stay, logged."""
    try:
        writers = pieces.BULK_WRITERS.get()
    except PoolClosed:
        session.ctx.log.warning("session %s: the server stopped; the %d copies of an interrupted COPY"
                                " were left in place", session.id, len(uids))
        return None
    # In the session's context: the removals are its client's own (gximap.session.notify.AUTHOR).
    return writers.submit(contextvars.copy_context().run, _undo_copies, session, account, target_id, uids)


def _check_copy_quota(session: Any, view: Any, uids: list[int]) -> None:
    """OverQuota when the account cannot take copies of all of ``uids``. A COPY written in
    pieces checks its whole set first (RFC 9208 refuses what would take usage past a limit),
    since each piece checks only itself: the first pieces would use up the quota, a delivery
    meanwhile be refused (LMTP: a bounce), then a later piece fail and all be undone. Each piece
    still checks itself: usage may grow between this read and its write."""
    exceeded = session.store.copy_quota_exceeded(view.account, view.folder_id, uids)
    if exceeded is not None:
        raise OverQuota(exceeded)


def _nothing_to_report(_piece: Sequence[int], _result: None) -> tuple[()]:
    return ()


def _prepare(session: Any, cmd: cmds.Copy | cmds.Move) -> tuple[list[int], Any]:
    """The source UIDs and the destination folder; raises CommandFailed for the refusals."""
    view = session.selected
    uids = resolve_uids(session, cmd.seqset, cmd.uid)
    target = trycreate_folder(session, cmd.mailbox.name)
    if view.pending_expunge and not view.pending_expunge.isdisjoint(uids):
        raise CommandFailed(Code.NO_EXPUNGE_ISSUED, status="NO")
    return uids, target


@command(cmds.Copy, states=SELECTED)
def copy(session: Any, cmd: cmds.Copy) -> Generator[bytes | Await, Any, Done]:
    view = session.selected
    uids, target = _prepare(session, cmd)
    if not uids:
        return Done(Code.OK_COPY_NOTHING)
    # Up to FIRST_PIECE messages are one transaction, whose own check covers the whole set. The
    # check of a larger set is a read of every record (about 50 ms for 100,000), made by the
    # bulk-write thread before the first piece: off the worker, as the pieces are.
    check_first = None
    if len(uids) > pieces.FIRST_PIECE:
        check_first = functools.partial(_check_copy_quota, session, view, uids)
    copied = _Transferred(session.store.copy, view, target.id, check_first=check_first)
    try:
        yield from in_pieces(uids, copied.write, _nothing_to_report, progress=session.progress)
    except BaseException as failure:
        # A COPY that fails leaves the destination as it was (RFC 3501 section 6.4.7), also when
        # the client left while it ran (GeneratorExit): the pieces already committed are removed,
        # off the worker as they were made (only a COPY in pieces has committed any). The failed
        # COPY's answer waits for that; a client gone is not waited for (this runs on the
        # pool's thread then), and its removal ends by itself.
        if copied.pairs:
            undone = _hand_over_undo(session, view.account, target.id, [new for _old, new in copied.pairs])
            if undone is not None and isinstance(failure, Exception):
                yield Await(undone)
        raise
    if not copied.pairs:
        # Everything named was expunged between the last sync and the copy.
        return Done(Code.NO_EXPUNGE_ISSUED, status="NO")
    if target.id == view.folder_id:
        view.note_own_arrivals(new for _old, new in copied.pairs)
    return Done(Code.OK_COPY, code=_copyuid(copied.uidvalidity, copied.pairs))


@command(cmds.Move, states=SELECTED)
def move(session: Any, cmd: cmds.Move) -> Generator[bytes | Await, Any, Done]:
    view = session.selected
    uids, target = _prepare(session, cmd)
    if view.readonly:
        raise CommandFailed(Code.NO_READ_ONLY, status="NO")  # MOVE expunges from the source
    if not uids:
        return Done(Code.OK_MOVE_NOTHING)
    moved = _Transferred(session.store.move, view, target.id)

    # Each piece moves its messages in one transaction; a failure leaves the pieces before it
    # moved, and they are reported before the NO, as RFC 6851 section 3.3 allows (every message
    # is in exactly one of the two mailboxes). So is a piece whose flush failed (see the module's
    # text), the NO then saying so. A client gone meanwhile is told nothing.
    failure: Done | None = None
    try:
        yield from in_pieces(uids, moved.write, _nothing_to_report, progress=session.progress)
    except Exception as exc:  # noqa: BLE001 - a store error after some pieces: report those first
        failure = done_for_store_error(exc)
        if failure is None or not moved.pairs:
            raise
        log_store_trouble(session, "MOVE", exc)
        if moved.unflushed:
            failure = Done(Code.NO_MOVE_NOT_DURABLE, status="NO")
    if not moved.pairs:
        return Done(Code.NO_EXPUNGE_ISSUED, status="NO")
    if target.id == view.folder_id:
        view.note_own_arrivals(new for _old, new in moved.pairs)
    yield b"* OK [" + _copyuid(moved.uidvalidity, moved.pairs) + b"] " + session.text(Code.INFO_MOVED) + b"\r\n"
    yield from view.expunge_responses([source for source, _ in moved.pairs])
    view.force_highestmodseq = True
    return failure or Done(Code.OK_MOVE)
