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
