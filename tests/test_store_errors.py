"""Store errors: how LMDB's are named (midb.env.translate_lmdb_error), what the client is answered
and what the administrator reads in the log (gximap.session.errors)."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import lmdb
import pytest
from conversation import Conversation

from gximap.session.errors import log_store_trouble
from midb import errors
from midb.env import translate_lmdb_error


@pytest.mark.parametrize(("error", "kind"), [
    (lmdb.MapFullError("mdb_put: MDB_MAP_FULL"), errors.StoreFull),
    (lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.ENOSPC)}"), errors.StoreFull),
    (lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.EDQUOT)}"), errors.StoreFull),
    (lmdb.ReadersFullError("mdb_txn_begin: MDB_READERS_FULL"), errors.StoreBusy),
    (lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.EIO)}"), errors.MidbError),
])
def test_lmdb_errors_are_named_by_what_the_administrator_must_do(error: lmdb.Error, kind: type) -> None:
    assert type(translate_lmdb_error(error)) is kind


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


def test_an_idle_push_that_meets_a_store_error_is_made_again_by_the_keepalive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A push in IDLE that fails warns the client; the next keepalive makes it, rather than
    leave it for another change or for DONE."""
    with Conversation(tmp_path, idle_notify_interval=120.0) as conv:
        conv.login()
        conv.select()
        assert conv.send(b"i1 IDLE\r\n") == [b"+ idling"]
        conv.add_message()
        _fail_once(monkeypatch, conv.store, "view_changes_since")
        assert conv.wake() == [_DELAYED]
        assert conv.timeout() == [b"* OK Still here", b"* 1 EXISTS", b"* 1 RECENT"]
        assert conv.timeout() == [b"* OK Still here"]
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
