"""Store errors: how LMDB's are named (midb.env.translate_lmdb_error), what the client is answered
and what the administrator reads in the log (gximap.session.errors)."""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import conversation
import lmdb
import pytest
from conversation import Conversation
from store_helpers import FailingSync

from gximap.session import session as session_module
from gximap.session.errors import log_store_trouble
from midb import errors
from midb.env import WriteEffects, _Pending, translate_lmdb_error
from midb.keys import message_key
from midb.store import Store


@pytest.mark.parametrize(("error", "kind"), [
    (lmdb.MapFullError("mdb_put: MDB_MAP_FULL"), errors.StoreFull),
    (lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.ENOSPC)}"), errors.StoreFull),
    (lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.EDQUOT)}"), errors.StoreFull),
    (lmdb.ReadersFullError("mdb_txn_begin: MDB_READERS_FULL"), errors.StoreBusy),
    (lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.EIO)}"), errors.MidbError),
])
def test_lmdb_errors_are_named_by_what_the_administrator_must_do(error: lmdb.Error, kind: type) -> None:
    assert type(translate_lmdb_error(error)) is kind


@pytest.mark.parametrize(("free", "kind", "said"), [
    (0, errors.StoreFull, "no room left for the index: mdb_txn_commit: {eio} (its file system has 0 bytes free)"),
    (200 << 10, errors.StoreFull, "no room left for the index: mdb_txn_commit: {eio} (its file system has 204800 "
                                  "bytes free)"),
    (50 << 30, errors.MidbError, "LMDB error: mdb_txn_commit: {eio} (its file system has 53687091200 bytes free)"),
])
def test_an_io_error_of_a_commit_on_a_full_file_system_is_no_room(free: int, kind: type, said: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """LMDB reports a write the file system cut short as EIO: with next to nothing free (less
    than one of its writes), that is a full file system; the free space is said either way."""
    asked: list[str] = []

    def statvfs(path: str) -> os.statvfs_result:
        asked.append(path)
        return os.statvfs_result((4096, 4096, 1 << 20, free // 4096, free // 4096, 0, 0, 0, 0, 255))

    monkeypatch.setattr(os, "statvfs", statvfs)
    error = translate_lmdb_error(lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.EIO)}"), "/srv/midb/index")
    assert type(error) is kind and str(error) == said.format(eio=os.strerror(errno.EIO))
    assert asked == ["/srv/midb/index"]


def test_a_commit_cut_short_by_a_full_file_system_is_reported_as_store_full(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "s", fsync=False) as store:
        def short_write(txn: Any, dbs: Any, effects: Any) -> None:
            raise lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.EIO)}")

        monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 1 << 20, 0, 0, 0, 0, 0, 0, 255)))
        with pytest.raises(errors.StoreFull, match="its file system has 0 bytes free"):
            store._shared.write(short_write, durable=False)


@pytest.mark.parametrize(("exc", "level"), [
    (errors.StoreFull("cannot store message body: No space left on device"), logging.ERROR),
    (errors.MidbError("LMDB error: mdb_txn_commit: Input/output error"), logging.ERROR),
    (errors.NoSuchBody("ab12"), logging.ERROR),
    (errors.StoreBusy("too many concurrent readers"), logging.WARNING),
    (errors.OverQuota("STORAGE"), None),   # the client's doing: answered, not logged
    (errors.NoSuchFolder("x"), None),
    (errors.TooBig("x"), None),
    (ValueError("a bug"), None),   # logged with its traceback by the session instead
])
def test_store_trouble_is_logged_at_its_level(exc: BaseException, level: int | None,
                                              caplog: pytest.LogCaptureFixture) -> None:
    session = SimpleNamespace(id=7, user="alice", ctx=SimpleNamespace(log=logging.getLogger("gximap")))
    caplog.set_level(logging.DEBUG, logger="gximap")
    log_store_trouble(session, "APPEND", exc)
    assert [record.levelno for record in caplog.records] == ([] if level is None else [level])
    if level is not None:
        assert caplog.records[0].getMessage() == f"session 7: user=alice APPEND failed: {exc}"


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def test_an_append_refused_for_a_full_disk_is_answered_and_logged(conv: Conversation, caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_args: object, **_kwargs: object) -> None:
        raise errors.StoreFull("cannot store message body: No space left on device")

    monkeypatch.setattr(conv.store, "append", full)
    caplog.set_level(logging.WARNING, logger="gximap")
    data = b"Subject: x\r\n\r\ny\r\n"
    assert conv.send(b"a1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data)) == [
        b"a1 NO [UNAVAILABLE] Try again later: cannot store message body: No space left on device"]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage().endswith("user=alice APPEND failed: cannot store message body: No space left on device")


# -- a catch-up with the selected mailbox that meets a store error --------------------------------

_BUSY = "too many concurrent readers"
_DELAYED = b"* NO [UNAVAILABLE] Changes to the mailbox will be reported later: " + _BUSY.encode()


def _fail_once(monkeypatch: pytest.MonkeyPatch, store: object, method: str) -> SimpleNamespace:
    """Make the store's ``method`` raise StoreBusy the next time it is called; ``.armed`` tells
    whether it still waits for that call."""
    original = getattr(store, method)
    state = SimpleNamespace(armed=True)

    def flaky(*args: object, **kwargs: object) -> object:
        if state.armed:
            state.armed = False
            raise errors.StoreBusy(_BUSY)
        return original(*args, **kwargs)

    monkeypatch.setattr(store, method, flaky)
    return state


@pytest.mark.parametrize(("failing", "examine"), [
    (None, False), ("highestmodseq", False), ("view_changes_since", False), ("keywords", False),
    ("claim_recent_range", False), (None, True), ("recent_floor", True),
])
def test_a_catch_up_that_meets_a_store_error_misses_nothing(conv: Conversation, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture, failing: str | None,
                                                           examine: bool) -> None:
    """Whichever store access of the catch-up fails, the command keeps its answer, the client
    is warned, and the next catch-up reports everything: the expunge, the new keyword, the new
    message (\\Recent included) and the flag change. The error escaped the session, and the pool
    dropped the connection with a traceback and no answer; and a catch-up failing after it had
    begun changing the view would have lost what it had read."""
    conv.add_message()
    conv.add_message()
    conv.select(examine=examine)
    other = conv.second_session()
    other.login()
    other.select()
    other.command("STORE 1 +FLAGS (\\Flagged)")
    other.command("STORE 2 +FLAGS (\\Deleted)")
    other.command("EXPUNGE")
    conv.add_message(flags=("$Urgent",))
    caplog.set_level(logging.WARNING, logger="gximap")
    if failing is not None:
        fault = _fail_once(monkeypatch, conv.store, failing)
        assert conv.send(b"n1 NOOP\r\n") == [_DELAYED, b"n1 OK NOOP completed"]
        assert not fault.armed
        (record,) = caplog.records
        assert record.levelno == logging.WARNING
        assert record.getMessage().endswith(f"user=alice catching up with the selected mailbox failed: {_BUSY}")
    flags = b"\\Answered \\Flagged \\Deleted \\Seen \\Draft $Urgent"
    announced = [b"* FLAGS (" + flags + b")"]
    if not examine:   # a read-only view has no PERMANENTFLAGS to add to
        announced.append(b"* OK [PERMANENTFLAGS (" + flags + b" \\*)] Flags permitted")
    # \Recent: message 1 since the SELECT, message 3 as this session is the first told of it
    assert conv.send(b"n2 NOOP\r\n") == [b"* 2 EXPUNGE", *announced, b"* 2 EXISTS", b"* 2 RECENT",
                                         b"* 1 FETCH (FLAGS (\\Flagged \\Recent))", b"n2 OK NOOP completed"]


@pytest.mark.parametrize("interval", [0.0, 120.0])
def test_an_idle_push_that_meets_a_store_error_is_made_again_a_second_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: float) -> None:
    """A push in IDLE that fails warns the client; the session's idle timer comes back a second
    later (session.IDLE_RETRY_FIRST) and makes it, with a keepalive line where they are sent,
    rather than leave it for another change, the next keepalive (none with 0) or DONE."""
    with Conversation(tmp_path, idle_notify_interval=interval) as conv:
        conv.login()
        conv.select()
        assert conv.send(b"i1 IDLE\r\n") == [b"+ idling"]
        conv.add_message()
        _fail_once(monkeypatch, conv.store, "view_changes_since")
        assert conv.wake() == [_DELAYED]
        assert 0 < conv.session.idle_timeout() <= session_module.IDLE_RETRY_FIRST + 0.5
        keepalive = [b"* OK Still here"] if interval else []
        assert conv.timeout() == [*keepalive, b"* 1 EXISTS", b"* 1 RECENT"]
        assert conv.session.idle_timeout() > 100   # the keepalive's timer, or the autologout's
        if interval:
            assert conv.timeout() == keepalive
        assert conv.send(b"DONE\r\n") == [b"i1 OK IDLE terminated"]


def test_a_store_error_as_idle_begins_leaves_it_idling(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    conv.select()
    conv.add_message()
    _fail_once(monkeypatch, conv.store, "highestmodseq")
    assert conv.send(b"i1 IDLE\r\n") == [b"+ idling", _DELAYED]
    assert conv.send(b"DONE\r\n") == [b"* 1 EXISTS", b"* 1 RECENT", b"i1 OK IDLE terminated"]


def test_a_failed_catch_up_after_a_fetch_still_leaves_out_what_the_fetch_showed(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags a FETCH showed are left out of the catch-up after it (note_flags_shown). A
    catch-up that fails keeps that note for the next one: it was dropped before the first read,
    and the next NOOP sent the change the FETCH had shown again."""
    conv.add_message()
    conv.select()
    other = conv.second_session()
    other.login()
    other.select()
    other.command("STORE 1 +FLAGS (\\Flagged)")
    fault = _fail_once(monkeypatch, conv.store, "view_changes_since")
    assert conv.send(b"f1 FETCH 1 (FLAGS)\r\n") == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))", _DELAYED,
                                                   b"f1 OK FETCH completed"]
    assert not fault.armed
    assert conv.send(b"n1 NOOP\r\n") == [b"n1 OK NOOP completed"]


def test_a_full_store_refuses_mail_but_lets_the_user_delete_some(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """At the map's reserve (midb.env.growth_limit) APPEND is refused as for a full disk, while
    STORE \\Deleted, EXPUNGE and DELETE, which need pages of the map too, still work."""
    monkeypatch.setattr(conversation, "Store", functools.partial(Store, map_size=1 << 20, inline_limit=0))
    with Conversation(tmp_path) as conv:
        store = conv.store
        inbox = conv.folder("INBOX").id
        old = store.create_folder("alice", "Old").id
        with pytest.raises(errors.StoreFull):
            for n in range(5000):   # the map holds about 500
                store.append("alice", old if n % 2 else inbox, b"Subject: %d\r\n\r\n" % n + b"x" * 200)
        messages = len(store.uids("alice", inbox))
        conv.login()
        caplog.set_level(logging.WARNING, logger="gximap")
        data = b"Subject: x\r\n\r\ny\r\n"
        assert conv.send(b"a1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data)) == [
            b"a1 NO [UNAVAILABLE] Try again later: message store is full (the rest of the LMDB map is kept for "
            b"deleting mail)"]
        assert caplog.records[-1].levelno == logging.ERROR
        assert conv.send(b"a2 SELECT INBOX\r\n")[-1].startswith(b"a2 OK")
        assert conv.send(b"a3 STORE 1:* +FLAGS.SILENT (\\Deleted)\r\n") == [b"a3 OK STORE completed"]
        out = conv.send(b"a4 EXPUNGE\r\n")
        assert len(out) == messages + 1 and out[-1] == b"a4 OK EXPUNGE completed"
        assert conv.send(b"a5 DELETE Old\r\n") == [b"a5 OK DELETE completed"]
        assert conv.send(b"a6 APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data))[-1].startswith(b"a6 OK")


def test_an_expunge_refused_for_a_full_store_is_not_answered_ok(conv: Conversation,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    conv.add_message(flags=["\\Deleted"])
    assert conv.send(b"a1 SELECT INBOX\r\n")[-1].startswith(b"a1 OK")

    def full(*_args: object, **_kwargs: object) -> None:
        raise errors.StoreFull("message store is full (LMDB map size reached)")

    monkeypatch.setattr(conv.store, "expunge_tombstones", full)
    for command in (b"a2 EXPUNGE", b"a3 UID EXPUNGE 1"):
        assert conv.send(command + b"\r\n") == [
            command[:3] + b"NO [UNAVAILABLE] Try again later: message store is full (LMDB map size reached)"]


def test_an_append_whose_sync_failed_is_not_acknowledged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """With metasync off, the sync after the commit is what puts the meta page making it current
    on disk: when it fails, a power failure may undo the commit, so no UID is returned (APPEND OK,
    LMTP 250 would promise the message). It stands meanwhile, and its body is kept."""
    with Store(tmp_path / "s", fsync=True) as store:
        store.create_account("alice")
        inbox = store.get_folder("alice", "INBOX")
        assert inbox is not None
        monkeypatch.setattr(store._shared, "env", FailingSync(store._shared.env))
        caplog.set_level(logging.ERROR, logger="midb")
        with pytest.raises(errors.NotDurable, match="could not be flushed") as raised:
            store.append("alice", inbox.id, b"Subject: x\r\n\r\nbody\r\n")
        assert list(raised.value.changes) == [(store.account_id("alice"), inbox.id)]
        (outcome,) = store.append_batch([("alice", inbox.id, b"Subject: y\r\n\r\nbody\r\n", ())])
        assert isinstance(outcome, errors.NotDurable)
        assert [record.levelno for record in caplog.records if "answered as failed" in record.getMessage()] == [
            logging.CRITICAL] * 2
        monkeypatch.undo()
        metas = store.messages("alice", inbox.id)
        assert len(metas) == 2 and all(store.read_body(meta.blob).startswith(b"Subject: ") for meta in metas)
        assert store.verify() == []


def test_messages_whose_sync_failed_are_still_parsed_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An APPEND, REPLACE or delivery whose flush failed is answered NO, but its message stands:
    the deferred parser (midb.deferred) is told of it as of any stored message, so that its
    digest, summary and sort entry are written ahead instead of by its first reader."""
    with Store(tmp_path / "s", fsync=True, parse_delay=3600) as store:   # the parser's thread never gets there
        store.create_account("alice")
        inbox = store.get_folder("alice", "INBOX")
        assert inbox is not None and store._parser is not None
        _validity, draft = store.append("alice", inbox.id, b"Subject: draft\r\n\r\nv1\r\n")
        store._parser.take_due(math.inf)   # (the draft's own parse: not what is looked at)
        monkeypatch.setattr(store._shared, "env", FailingSync(store._shared.env))
        with pytest.raises(errors.NotDurable):
            store.append("alice", inbox.id, b"Subject: a\r\n\r\nbody\r\n")
        with pytest.raises(errors.NotDurable):
            store.replace("alice", inbox.id, b"Subject: draft\r\n\r\nv2\r\n", replacing=(inbox.id, draft))
        (outcome,) = store.append_batch([("alice", inbox.id, b"Subject: b\r\n\r\nbody\r\n", ())])
        assert isinstance(outcome, errors.NotDurable)
        monkeypatch.undo()
        metas = store.messages("alice", inbox.id)
        assert [meta.uid for meta in metas] == [2, 3, 4]   # all three stand
        due = store._parser.take_due(math.inf)
        assert sorted(blob for blob, _digest in due) == sorted(meta.blob for meta in metas)
        store.store_parsed(due)   # what the parser's thread does with them
        assert all(store.known_digest(meta.blob) is not None for meta in metas)
        shared = store._shared
        with shared.read() as txn:
            account_id = store._account_id(txn, shared.dbs, "alice")
            assert all(txn.get(message_key(account_id, inbox.id, meta.uid), db=shared.dbs.sort_records)
                       for meta in metas)   # each message's place was passed on with its body
        assert store.verify() == []


def test_a_failed_sync_fails_the_durable_writers_of_its_batch_only(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers of one group commit share its sync: each durable one is told its commit may be
    lost; a flag change (never promised durable) stands answered; a job that failed keeps its
    own error. None hands a body file to the remover."""
    with Store(tmp_path / "s", fsync=True) as store:
        shared = store._shared
        released = bytes(16).hex()

        def releases(txn: Any, dbs: Any, effects: WriteEffects) -> str:
            effects.unlink.append(released)
            effects.changed(1, 1, 7)
            return "done"

        def fails(txn: Any, dbs: Any, effects: WriteEffects) -> None:
            raise errors.NoSuchFolder("gone")

        batch = [_Pending(releases, True), _Pending(releases, False), _Pending(fails, True)]
        monkeypatch.setattr(shared, "env", FailingSync(shared.env))
        shared._run_batch(shared.env.begin(write=True), batch)
        durable, flags, failed = batch
        assert isinstance(durable.error, errors.NotDurable) and durable.error.changes == {(1, 1): 7}
        assert flags.error is None and flags.result == "done"
        assert isinstance(failed.error, errors.NoSuchFolder)
        assert all(pending.done and pending.effects.unlink == [] for pending in batch)


def test_an_append_whose_sync_failed_is_answered_no(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conv.store, "fsync", True)
    monkeypatch.setattr(conv.store._shared, "env", FailingSync(conv.store._shared.env))
    data = b"Subject: x\r\n\r\ny\r\n"
    assert conv.send(b"a1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data)) == [
        b"a1 NO [UNAVAILABLE] Try again later: the index could not be flushed to disk: the change may be lost"]
