"""gximap.lmtp.session and .delivery over a real midb store: replies per recipient, quota, store
trouble, headers, quarantine, IMAP filters, IMAP notification; then through the connection pool
on TCP and UNIX sockets with Python's LMTP client, and in the daemon (SIGHUP reload)."""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import signal
import smtplib
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conversation import DATA_DIR, Conversation
from net_helpers import TIMEOUT, wait_until
from store_helpers import FailingSync

from gximap.auth.maps import NameMap
from gximap.filters import FilterCommand
from gximap.lmtp.delivery import DeliveryAgent, DeliverySettings, header_fields, unquote_address
from gximap.lmtp.session import SERIAL_COPY_SIZE, LmtpContext, LmtpSession, LmtpSettings
from gximap.net.handler import INPUT_HIGH_WATER, ConnectionInfo, TransportAction
from gximap.net.listener import ListenerSpec, bind_listeners
from gximap.net.pool import Server
from midb import columns
from midb.env import SharedEnv
from midb.errors import StoreBusy
from midb.store import Store

MESSAGE = (b"From: Carol <carol@example.org>\r\nTo: alice@test.example\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"
           b"Message-ID: <m1@example.org>\r\n\r\nHello.\r\n.dot line\r\n")
WIRE = MESSAGE.replace(b"\r\n.dot", b"\r\n..dot") + b".\r\n"


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "midb", fsync=False, data_path=[str(DATA_DIR)])
    for name in ("alice", "bob"):
        store.create_account(name)
    yield store
    store.close()


_CONTEXTS: list[LmtpContext] = []


@pytest.fixture(autouse=True)
def _close_contexts():
    yield
    while _CONTEXTS:
        _CONTEXTS.pop().close()  # joins the delivery threads


def make_context(store: Any, *, table: str = "email_localpart", **delivery: Any) -> LmtpContext:
    agent = DeliveryAgent(store, NameMap.from_directives(table, "auto"), DeliverySettings(**delivery))
    ctx = LmtpContext(LmtpSettings(host_id="mx.test.example", max_message_size=1 << 20), agent)
    _CONTEXTS.append(ctx)
    return ctx


class Client:
    """Drives an LmtpSession the way the pool does, without sockets."""

    def __init__(self, ctx: LmtpContext) -> None:
        conn = ConnectionInfo(peer_host="127.0.0.1", peer_port=40000, local_host="127.0.0.1", local_port=24,
                              tls=False, starttls_available=False, listener="lmtp")
        self.woken = threading.Event()
        self.session = LmtpSession(ctx, conn, self.woken.set)
        self.closed = False
        self.session.start()
        self.greeting = self._run()

    def _run(self) -> list[str]:
        out: list[bytes] = []
        for _ in range(10_000):
            more = self.session.process(8)
            out.extend(self._output())
            if more:
                continue
            if not self.session.delivering:
                break
            # Copies are being stored by the delivery threads: wait for the waker, as the pool does.
            assert self.woken.wait(TIMEOUT), "the waker did not fire"
            self.woken.clear()
            self.session.wakeup()
        return b"".join(out).decode("utf-8", "replace").split("\r\n")[:-1]

    def _output(self) -> list[bytes]:
        out = []
        while (item := self.session.next_output()) is not None:
            if item is TransportAction.CLOSE:
                self.closed = True
            else:
                out.append(bytes(item))  # type: ignore[arg-type]
        return out

    def send(self, data: bytes) -> list[str]:
        self.session.data_received(data)
        return self._run()

    def transaction(self, recipients: list[str], wire: bytes = WIRE, sender: str = "carol@example.org") -> list[str]:
        """LHLO, MAIL, RCPTs, DATA, message: the replies after the LHLO lines."""
        lines = self.send(b"LHLO client\r\n")
        assert lines[-1].startswith("250 ")
        rcpts = b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in recipients)
        replies = self.send(b"MAIL FROM:<%s>\r\n%sDATA\r\n" % (sender.encode(), rcpts))
        if replies[-1].startswith("354"):
            replies += self.send(wire)
        return replies


def stored(store: Store, account: str, folder: str = "INBOX") -> list[tuple[bytes, tuple[str, ...]]]:
    info = store.get_folder(account, folder)
    assert info is not None
    return [(store.read_body(meta.blob), meta.flags) for meta in store.messages(account, info.id)]


def expected_copy(rcpt: str, sender: str = "carol@example.org") -> bytes:
    return f"Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n".encode() + MESSAGE


# -- delivery -----------------------------------------------------------------------------------------


def test_replies_in_order_and_headers_per_recipient(store: Store) -> None:
    client = Client(make_context(store))
    assert client.greeting == ["220 mx.test.example LMTP gximap ready"]
    replies = client.transaction(["alice@test.example", "nobody@test.example", "Bob@Test.Example"])
    assert replies[0] == "250 2.1.0 Ok"
    assert replies[1:4] == ["250 2.1.5 Ok",
                            "550 5.1.1 <nobody@test.example>: Recipient address rejected: User unknown",
                            "250 2.1.5 Ok"]
    assert replies[4].startswith("354 ")
    assert replies[5].startswith("250 2.0.0 <alice@test.example> ") and replies[5].endswith("(alice/INBOX)")
    assert replies[6].startswith("250 2.0.0 <Bob@Test.Example> ")
    assert len(replies) == 7
    assert stored(store, "alice") == [(expected_copy("alice@test.example"), ())]
    assert stored(store, "bob") == [(expected_copy("Bob@Test.Example"), ())]
    assert store.get_account("nobody") is None  # delivery never creates accounts
    assert client.send(b"QUIT\r\n") == ["221 2.0.0 mx.test.example closing connection"] and client.closed


def test_null_sender_and_quoted_local_part(store: Store) -> None:
    store.create_account("john.doe")
    client = Client(make_context(store))
    replies = client.transaction(['"john.doe"@test.example'], sender="")
    assert replies[-1].startswith("250 2.0.0")
    assert stored(store, "john.doe")[0][0].startswith(b'Return-Path: <>\r\nDelivered-To: "john.doe"@test.example\r\n')
    assert unquote_address('"a\\"b"@x.example') == 'a"b@x.example'


def test_bare_lf_in_the_data_is_stored_as_crlf(store: Store) -> None:
    """An MTA passing LF-only mail on: the copy is stored with CRLF (as Dovecot's LMTP does);
    lone CR and the end-of-data rule (CRLF "." CRLF only) are untouched."""
    client = Client(make_context(store))
    wire = b"Subject: lf only\nX-Note: a\rb\n\nbody\n.\nstill body\r\n.\r\n"
    replies = client.transaction(["alice@test.example"], wire=wire)
    assert replies[-1].startswith("250 2.0.0 <alice@test.example> ")
    assert stored(store, "alice") == [(b"Return-Path: <carol@example.org>\r\nDelivered-To: alice@test.example\r\n"
                                       b"Subject: lf only\r\nX-Note: a\rb\r\n\r\nbody\r\n.\r\nstill body\r\n", ())]


def test_quota_full_at_rcpt_and_exceeded_after_data(store: Store) -> None:
    store.update_account("alice", quota_messages=1)
    inbox = store.get_folder("alice", "INBOX")
    assert inbox is not None
    store.append("alice", inbox.id, b"Subject: old\r\n\r\nx\r\n")
    store.update_account("bob", quota_bytes=100)  # empty, so RCPT passes; the message is bigger
    client = Client(make_context(store))
    replies = client.transaction(["alice@test.example", "bob@test.example"])
    assert replies[1] == "552 5.2.2 <alice@test.example>: Mailbox full"
    assert replies[2] == "250 2.1.5 Ok"
    assert replies[4] == "552 5.2.2 <bob@test.example>: Mailbox full"
    assert stored(store, "bob") == []


def test_disabled_account_is_refused(store: Store) -> None:
    store.update_account("bob", disabled=True)
    replies = Client(make_context(store)).transaction(["bob@test.example"])
    assert replies[1] == "550 5.2.1 <bob@test.example>: Mailbox disabled"
    assert replies[2].startswith("503 5.5.1")  # DATA without a valid recipient


def test_unreadable_delivery_map_file_defers_with_451_not_550(store: Store, tmp_path: Path) -> None:
    """A delivery_map ``file`` table that cannot be read says nothing about the address: the MTA
    keeps the mail and tries again (451), where "User unknown" (550) would bounce it. A missing
    file still maps no names (documented): that is the 550."""
    path = tmp_path / "delivery_map"
    path.write_text("alice@test.example: alice\n")
    ctx = make_context(store, table=f"file {path}")
    assert Client(ctx).transaction(["alice@test.example"])[1].startswith("250 ")
    path.unlink()
    path.mkdir()  # EISDIR, for root too
    replies = Client(ctx).transaction(["alice@test.example"])
    assert replies[1] == "451 4.3.0 Temporary failure, try again later"
    assert replies[2].startswith("503 5.5.1")  # DATA without a valid recipient
    path.rmdir()
    assert Client(ctx).transaction(["alice@test.example"])[1] == \
        "550 5.1.1 <alice@test.example>: Recipient address rejected: User unknown"


class BusyStore:
    """The store, except that appends fail as when the LMDB map is full or a lock times out."""

    def __init__(self, store: Store, fail_for: set[str]) -> None:
        self._store = store
        self.fail_for = fail_for

    def append(self, account: str, *args: Any, **kwargs: Any) -> Any:
        if account in self.fail_for:
            raise StoreBusy("map full")
        return self._store.append(account, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_temporary_store_trouble_gives_451_for_that_recipient_only(store: Store) -> None:
    client = Client(make_context(BusyStore(store, {"alice"})))
    replies = client.transaction(["alice@test.example", "bob@test.example"])
    assert replies[4] == "451 4.3.0 Temporary failure, try again later"
    assert replies[5].startswith("250 2.0.0 <bob@test.example>")
    assert stored(store, "alice") == [] and len(stored(store, "bob")) == 1


def test_a_shard_at_its_map_reserve_defers_mail_with_451(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Mail is refused once an LMDB map has only its reserve left (kept for deleting mail,
    midb.env.growth_limit): the MTA is told to retry, the administrator why."""
    monkeypatch.setattr(SharedEnv, "room_to_grow", lambda _self: False)
    client = Client(make_context(store))
    with caplog.at_level(logging.ERROR, logger="gximap.lmtp"):
        replies = client.transaction(["alice@test.example", "bob@test.example"])
    assert replies[4:6] == ["451 4.3.0 Temporary failure, try again later"] * 2
    assert stored(store, "alice") == stored(store, "bob") == []
    assert "store full, mail deferred: message store is full (the rest of the LMDB map is kept" in caplog.text
    assert not [path for path in (Path(store.path) / "eml").rglob("*") if path.is_file()]   # no body written


def test_a_delivery_whose_index_flush_failed_gets_451(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A commit whose sync failed may be undone by a power failure: 250 would promise the mail."""
    monkeypatch.setattr(store, "fsync", True)
    monkeypatch.setattr(store._shared, "env", FailingSync(store._shared.env))
    client = Client(make_context(store))
    with caplog.at_level(logging.ERROR, logger="gximap.lmtp"):
        replies = client.transaction(["alice@test.example", "bob@test.example"])
    assert replies[4:6] == ["451 4.3.0 Temporary failure, try again later"] * 2
    assert "store error, mail deferred: the index could not be flushed to disk" in caplog.text


def test_one_recipient_without_a_filter_is_stored_by_the_serving_thread(store: Store) -> None:
    """Nothing to parallelise: no delivery thread is started, and the reply is there as soon as
    process() returns (no waker round trip)."""
    ctx = make_context(store)
    client = Client(ctx)
    client.send(b"LHLO c\r\n")
    client.session.data_received(b"MAIL FROM:<>\r\nRCPT TO:<alice@test.example>\r\nDATA\r\n" + WIRE)
    client.session.process(8)
    lines = b"".join(client._output()).decode().split("\r\n")[:-1]
    assert lines[-1].startswith("250 2.0.0 <alice@test.example>")
    assert not client.session.delivering and not client.woken.is_set()
    assert ctx._executor is None
    assert stored(store, "alice") == [(expected_copy("alice@test.example", sender=""), ())]


def test_one_recipient_store_trouble_on_the_serving_thread_is_a_451(store: Store) -> None:
    ctx = make_context(BusyStore(store, {"alice"}))
    replies = Client(ctx).transaction(["alice@test.example"])
    assert replies[-1] == "451 4.3.0 Temporary failure, try again later"
    assert ctx._executor is None


def _transaction_with_a_bug(store: Store, caplog: pytest.LogCaptureFixture, method: str,
                            recipients: list[str]) -> tuple[Client, list[str]]:
    """A client whose DeliveryAgent ``method`` has a bug (it raises "a bug in <method>"), and its
    replies to one transaction for ``recipients``, with the errors logged into ``caplog``."""
    ctx = make_context(store)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"a bug in {method}")

    setattr(ctx.agent, method, broken)
    client = Client(ctx)
    with caplog.at_level(logging.ERROR, logger="gximap.lmtp"):
        return client, client.transaction(recipients)


def test_one_recipient_with_a_bug_on_the_serving_thread_is_a_451(store: Store,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    client, replies = _transaction_with_a_bug(store, caplog, "deliver", ["alice@test.example"])
    assert replies[-1] == "451 4.3.0 Internal error, try again later"
    assert "a bug" in caplog.text
    again = client.send(b"MAIL FROM:<>\r\nRCPT TO:<bob@test.example>\r\nDATA\r\n" + WIRE)
    assert again[-1].startswith("451")                 # the connection goes on


def test_a_recipient_mapped_to_several_accounts(store: Store) -> None:
    client = Client(make_context(store, table="static team@test.example:alice,bob,ghost"))
    replies = client.transaction(["team@test.example"])
    assert replies[-1].startswith("250 2.0.0 <team@test.example>") and "alice/INBOX, bob/INBOX" in replies[-1]
    assert stored(store, "alice")[0][0] == expected_copy("team@test.example")
    assert stored(store, "bob")[0][0] == expected_copy("team@test.example")
    # One account full (permanent): the other copy counts, the failure is logged.
    store.update_account("bob", quota_messages=2)
    bob_inbox = store.get_folder("bob", "INBOX")
    assert bob_inbox is not None
    store.append("bob", bob_inbox.id, b"x\r\n")
    replies = Client(make_context(store, table="static team@test.example:alice,bob")).transaction(["team@test.example"])
    assert replies[1] == "250 2.1.5 Ok" and replies[-1].startswith("250 2.0.0") and "bob" not in replies[-1]


def test_size_limit_refuses_every_recipient(store: Store) -> None:
    ctx = make_context(store)
    ctx.settings = LmtpSettings(host_id="mx", max_message_size=50)
    replies = Client(ctx).transaction(["alice@test.example", "bob@test.example"])
    assert replies[-2:] == ["552 5.3.4 Error: message exceeds the size limit of 50 bytes"] * 2
    assert stored(store, "alice") == []


def test_spam_is_quarantined_to_junk_without_filters(store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = _script(tmp_path, f"touch {marker}\nprintf 'INBOX\\n$Filtered\\n'\n")
    ctx = make_context(store, spam_header=("x-spam", "yes"), filter=FilterCommand.parse(str(script)))
    spam = b"X-Spam:  YES \r\n" + WIRE
    replies = Client(ctx).transaction(["alice@test.example"], wire=spam)
    assert replies[-1].startswith("250 2.0.0") and replies[-1].endswith("(alice/Junk)")
    ((body, flags),) = stored(store, "alice", "Junk")
    assert body.endswith(b"X-Spam:  YES \r\n" + MESSAGE) and flags == ()
    assert not marker.exists()
    # Not spam: the filter runs.
    Client(ctx).transaction(["alice@test.example"], wire=b"X-Spam: no\r\n" + WIRE)
    assert marker.exists() and stored(store, "alice")[0][1] == ("$Filtered",)


def test_quarantine_creates_junk_when_missing(store: Store) -> None:
    store.delete_folder("alice", "Junk")
    ctx = make_context(store, spam_header=("x-spam-flag", "yes"))
    Client(ctx).transaction(["alice@test.example"], wire=b"X-Spam-Flag: Yes\r\n" + WIRE)
    junk = store.get_folder("alice", "Junk")
    assert junk is not None and junk.special_use == "\\Junk" and store.messages("alice", junk.id)


def _script(tmp_path: Path, body: str, name: str = "filter.sh") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_filter_picks_folder_and_flags_with_placeholders(store: Store, tmp_path: Path) -> None:
    store.create_folder("alice", "Lists/Python")
    args_file = tmp_path / "args"
    script = _script(tmp_path, f"printf '%s\\n' \"$@\" > {args_file}\ncat > /dev/null\n"
                               "printf 'Lists/Python\\n$Label1 \\\\Flagged\\nbad(flag\\n'\n")
    command = FilterCommand.parse(f"{script} {{account_name}} {{sender}} {{rcpt_to}} {{original_rcpt_to}} "
                                  "{subject} {msg_id} {source_ip} {source_host} {source_rdns} {auth_user} "
                                  "{address} {unknown}")
    client = Client(make_context(store, filter=command))
    client.send(b"LHLO c\r\nXFORWARD ADDR=192.0.2.9 HELO=helo.example NAME=rdns.example\r\n")
    replies = client.send(b"MAIL FROM:<carol@example.org> AUTH=carol+40example.org\r\n"
                          b"RCPT TO:<alice@test.example> ORCPT=rfc822;all@test.example\r\nDATA\r\n" + WIRE)
    assert replies[-1].endswith("(alice/Lists/Python)")
    ((body, flags),) = stored(store, "alice", "Lists/Python")
    assert body == expected_copy("alice@test.example") and flags == ("\\Flagged", "$Label1")
    args = args_file.read_text().splitlines()
    assert args[:6] == ["alice", "carol@example.org", "alice@test.example", "all@test.example", "Grüße",
                        args[5]] and args[5].startswith("L")
    assert args[6:] == ["192.0.2.9", "helo.example", "rdns.example", "carol@example.org", "alice@test.example",
                        "{unknown}"]


def test_filter_special_use_and_missing_folder(store: Store, tmp_path: Path) -> None:
    script = _script(tmp_path, "cat >/dev/null\nprintf '%s\\n' \"$1\" '$Tag'\n")
    ctx = make_context(store, filter=FilterCommand.parse(f"{script} {{subject}}"))
    Client(ctx).transaction(["alice@test.example"], wire=b"Subject: \\archive\r\n\r\nx\r\n.\r\n")
    assert stored(store, "alice", "Archive")[0][1] == ("$Tag",)
    Client(ctx).transaction(["alice@test.example"], wire=b"Subject: No Such Folder\r\n\r\nx\r\n.\r\n")
    assert stored(store, "alice")[0][1] == ("$Tag",)  # INBOX, flags kept


def test_keywords_an_account_has_no_id_left_for_are_dropped_not_the_mail(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    inbox = store.get_folder("alice", "INBOX")
    assert inbox is not None
    store.append("alice", inbox.id, b"Subject: old\r\n\r\nx\r\n", flags=("$Old",))   # the one id allowed
    monkeypatch.setattr(columns, "MAX_KEYWORD_SET", 1)
    script = _script(tmp_path, "cat >/dev/null\nprintf 'INBOX\\n$New \\\\Flagged\\n'\n")
    ctx = make_context(store, filter=FilterCommand.parse(str(script)))
    with caplog.at_level("INFO", logger="gximap.lmtp"):
        replies = Client(ctx).transaction(["alice@test.example"])
    assert replies[-1].startswith("250 ")
    assert [flags for _body, flags in stored(store, "alice")] == [("$Old",), ("\\Flagged",)]
    messages = [record.getMessage() for record in caplog.records]
    assert any("too many distinct keyword combinations" in text and "$New" in text for text in messages)
    assert any("(filtered, keywords dropped)" in text for text in messages)


def test_failing_filter_means_inbox_unchanged(store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = _script(tmp_path, "echo Lists; echo '$Tag'; echo oops >&2; exit 3\n")
    ctx = make_context(store, filter=FilterCommand.parse(str(script)))
    with caplog.at_level(logging.WARNING, logger="gximap.lmtp"):
        replies = Client(ctx).transaction(["alice@test.example"])
    assert replies[-1].endswith("(alice/INBOX)")
    assert stored(store, "alice") == [(expected_copy("alice@test.example"), ())]
    assert "exit status 3: oops" in caplog.text


# -- session life -------------------------------------------------------------------------------------


class GatedStore:
    """The store, except that appends wait until the test opens the gate."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.gate = threading.Event()

    def append(self, *args: Any, **kwargs: Any) -> Any:
        assert self.gate.wait(TIMEOUT)
        return self._store.append(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _let_the_copies_through(gated: GatedStore, session: LmtpSession) -> None:
    """Open the gate and play the pool until the session's copies are stored."""
    gated.gate.set()
    deadline = time.monotonic() + TIMEOUT
    while session.delivering and time.monotonic() < deadline:
        session.process(8)
        time.sleep(0.01)


def _storing_two_copies(client: Client) -> LmtpSession:
    """One message to alice and bob, sent and handed over: its copies are being stored."""
    client.send(b"LHLO c\r\n")
    session = client.session
    session.data_received(b"MAIL FROM:<>\r\nRCPT TO:<alice@test.example>\r\nRCPT TO:<bob@test.example>\r\n"
                          b"DATA\r\n" + WIRE)
    assert session.process(8) is False and session.delivering
    return session


def test_shutdown_while_storing_answers_what_was_stored(store: Store) -> None:
    gated = GatedStore(store)
    client = Client(make_context(gated))
    session = _storing_two_copies(client)
    opener = threading.Timer(0.1, gated.gate.set)
    opener.start()
    session.shutdown()  # waits for the copies, answers them, then says goodbye
    opener.join()
    lines = b"".join(client._output()).decode().split("\r\n")[:-1]
    assert client.closed
    assert lines[-3].startswith("250 2.0.0 <alice@test.example>")
    assert lines[-2].startswith("250 2.0.0 <bob@test.example>")
    assert lines[-1] == "421 4.3.2 mx.test.example Service shutting down"
    assert len(stored(store, "alice")) == 1 and len(stored(store, "bob")) == 1
    session.connection_lost()


def test_input_paused_while_storing_with_a_backlog(store: Store) -> None:
    """A client pipelining behind a message whose copies are being stored is no longer read
    once INPUT_HIGH_WATER bytes wait (the pool's PARK_WAKE); reading resumes when they are."""
    gated = GatedStore(store)
    client = Client(make_context(gated))
    session = _storing_two_copies(client)
    assert not session.input_paused()  # nothing waits behind the message
    session.data_received(b"NOOP\r\n" * (INPUT_HIGH_WATER // 6 + 1))
    assert session.input_paused()
    _let_the_copies_through(gated, session)
    assert not session.input_paused()
    session.connection_lost()


def test_awaiting_while_copies_are_stored(store: Store) -> None:
    """The pool keeps a half-closed connection while the session awaits its copies' replies."""
    gated = GatedStore(store)
    client = Client(make_context(gated))
    assert not client.session.awaiting()
    session = _storing_two_copies(client)
    assert session.awaiting()
    _let_the_copies_through(gated, session)
    assert not session.awaiting()
    session.connection_lost()


def test_lost_connection_drops_copies_not_started(store: Store) -> None:
    gated = GatedStore(store)
    ctx = make_context(gated)
    ctx.settings = LmtpSettings(host_id="mx", max_message_size=1 << 20, delivery_threads=1)
    client = Client(ctx)
    session = _storing_two_copies(client)
    session.connection_lost()  # bob's copy waits for the one delivery thread: it is dropped
    gated.gate.set()
    ctx.close()
    assert len(stored(store, "alice")) == 1 and stored(store, "bob") == []


def test_idle_timeout(store: Store) -> None:
    client = Client(make_context(store))
    assert client.session.idle_timeout() == 300.0
    client.session.timed_out()
    assert client._run() == ["421 4.4.2 mx.test.example Error: timeout exceeded"] and client.closed


def test_the_idle_timer_waits_for_copies_being_stored(store: Store) -> None:
    """The idle timer expiring while a slow disk or filter stores the copies is a keepalive: a
    421 then would make the MTA retry recipients whose copies are stored meanwhile."""
    gated = GatedStore(store)
    client = Client(make_context(gated))
    session = _storing_two_copies(client)
    assert session.timed_out() is False and not client.closed
    _let_the_copies_through(gated, session)
    lines = b"".join(client._output()).decode().split("\r\n")[:-1]
    assert [line[:10] for line in lines[-2:]] == ["250 2.0.0 "] * 2
    assert session.timed_out() is True
    assert client._run() == ["421 4.4.2 mx.test.example Error: timeout exceeded"] and client.closed


def test_a_subject_the_email_package_cannot_decode_is_delivered(store: Store) -> None:
    """A charset name that is not ASCII made email.header raise CharsetError, which escaped:
    the connection dropped with no reply, and the MTA retried the message for days."""
    wire = "Subject: =?ü?q?a?=\r\n\r\nbody\r\n.\r\n".encode()
    replies = Client(make_context(store)).transaction(["alice@test.example", "bob@test.example"], wire=wire)
    assert [line[:10] for line in replies[-2:]] == ["250 2.0.0 "] * 2
    assert stored(store, "alice")[0][0].endswith("Subject: =?ü?q?a?=\r\n\r\nbody\r\n".encode())


def test_a_message_that_cannot_be_prepared_gets_451_per_recipient(store: Store,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    client, replies = _transaction_with_a_bug(store, caplog, "prepare", ["alice@test.example", "bob@test.example"])
    assert replies[-2:] == ["451 4.3.0 Internal error, try again later"] * 2
    assert "a bug in prepare" in caplog.text
    assert client.send(b"NOOP\r\n") == ["250 2.0.0 Ok"]  # the connection goes on


def test_a_large_message_is_stored_one_copy_at_a_time(store: Store) -> None:
    """Each copy holds the whole message: from SERIAL_COPY_SIZE on, the copies for several
    recipients are made in turn, so that a message to N recipients is not in memory N times."""
    for name in ("carol", "dave"):
        store.create_account(name)
    ctx = make_context(store)
    ctx.settings = LmtpSettings(host_id="mx", max_message_size=4 << 20, delivery_threads=4)
    deliver = ctx.agent.deliver
    busy = [0]
    most = [0]
    lock = threading.Lock()

    def counting(*args: Any, **kwargs: Any) -> Any:
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        try:
            time.sleep(0.02)  # time for the other delivery threads to overlap, were they used
            return deliver(*args, **kwargs)
        finally:
            with lock:
                busy[0] -= 1

    ctx.agent.deliver = counting  # type: ignore[method-assign]
    recipients = [f"{name}@test.example" for name in ("alice", "bob", "carol", "dave")]
    large = b"Subject: large\r\n\r\n" + b"x" * 78 + b"\r\n"
    large *= SERIAL_COPY_SIZE // len(large) + 1
    replies = Client(ctx).transaction(recipients, wire=large + b".\r\n")
    assert [line[:10] for line in replies[-4:]] == ["250 2.0.0 "] * 4
    assert most[0] == 1
    assert all(len(stored(store, name)) == 1 for name in ("alice", "bob", "carol", "dave"))
    most[0] = 0
    replies = Client(ctx).transaction(recipients)  # small: in parallel, as before
    assert [line[:10] for line in replies[-4:]] == ["250 2.0.0 "] * 4
    assert most[0] > 1


def test_a_large_message_s_copies_not_started_are_dropped_with_the_connection(store: Store) -> None:
    gated = GatedStore(store)
    ctx = make_context(gated)
    ctx.settings = LmtpSettings(host_id="mx", max_message_size=4 << 20)
    client = Client(ctx)
    client.send(b"LHLO c\r\n")
    session = client.session
    large = b"Subject: large\r\n\r\n" + (b"x" * 78 + b"\r\n") * (SERIAL_COPY_SIZE // 80 + 1)
    session.data_received(b"MAIL FROM:<>\r\nRCPT TO:<alice@test.example>\r\nRCPT TO:<bob@test.example>\r\n"
                          b"DATA\r\n" + large + b".\r\n")
    assert session.process(8) is False and session.delivering
    time.sleep(0.05)  # alice's copy has started and waits at the gate
    session.connection_lost()
    gated.gate.set()
    ctx.close()
    assert len(stored(store, "alice")) == 1 and stored(store, "bob") == []


def test_accounts_of_a_group_left_out_at_rcpt_are_logged(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    store.create_account("carol")
    store.update_account("bob", quota_messages=1)
    bob_inbox = store.get_folder("bob", "INBOX")
    assert bob_inbox is not None
    store.append("bob", bob_inbox.id, b"x\r\n")
    store.update_account("carol", disabled=True)
    client = Client(make_context(store, table="static team@test.example:alice,bob,carol"))
    with caplog.at_level(logging.INFO, logger="gximap.lmtp"):
        replies = client.transaction(["team@test.example"])
    assert replies[-1].startswith("250 2.0.0 <team@test.example>")
    assert "recipient <team@test.example>: account bob is at its quota; no copy for it" in caplog.text
    assert "recipient <team@test.example>: account carol is disabled; no copy for it" in caplog.text


def test_the_received_trace_field(store: Store) -> None:
    """RFC 5321 4.4: the delivering server adds a Received field (lmtp_add_received_header)."""
    ctx = make_context(store, received_by="mx.test.example")
    client = Client(ctx)
    replies = client.transaction(["alice@test.example"])
    delivery_id = replies[-1].split()[3]
    copy = stored(store, "alice")[0][0]
    head, received, rest = copy.partition(b"Received: ")
    assert head == b"Return-Path: <carol@example.org>\r\nDelivered-To: alice@test.example\r\n"
    field, _, body = rest.partition(b"\r\n" + MESSAGE[:5])
    lines = field.decode().split("\r\n")
    assert lines[0] == "from client ([127.0.0.1])"
    assert lines[1] == f"\tby mx.test.example with LMTP id {delivery_id}"
    assert lines[2].startswith("\tfor <alice@test.example>; ")
    email.utils.parsedate_to_datetime(lines[2].partition("; ")[2])  # an RFC 5322 date
    assert MESSAGE[:5] + body == MESSAGE
    # An LHLO name with controls or parentheses cannot break or forge the field.
    client = Client(ctx)
    client.send(b"LHLO a(b)\x01c\r\n")
    client.send(b"MAIL FROM:<>\r\nRCPT TO:<bob@test.example>\r\nDATA\r\n" + WIRE)
    assert stored(store, "bob")[0][0].split(b"\r\n")[2] == b"Received: from a?b??c ([127.0.0.1])"


def test_selected_imap_session_is_woken_and_idle_gets_exists(tmp_path: Path) -> None:
    with Conversation(tmp_path, users=("alice",)) as conv:
        conv.login()
        conv.select()
        conv.send(b"i1 IDLE\r\n")
        replies = Client(make_context(conv.store)).transaction(["alice@test.example"])
        assert replies[-1].startswith("250 2.0.0")
        assert conv.wakes > 0
        assert b"* 1 EXISTS" in conv.wake()


def test_header_fields() -> None:
    fields = header_fields(b"A: 1\r\nB: two\r\n  folded\r\nbad line\r\n\r\nC: body\r\n")
    assert fields == [("a", b"1"), ("b", b"two folded")]
    assert header_fields(b"\r\nbody only") == []


# -- through the pool -----------------------------------------------------------------------------


class LmtpPool(NamedTuple):
    server: Server
    port: int  # on 127.0.0.1
    socket_path: str


@contextlib.contextmanager
def serving(ctx: LmtpContext, tmp_path: Path) -> Iterator[LmtpPool]:
    """A pool serving LMTP for ``ctx`` on TCP and on a UNIX socket."""
    socket_path = str(tmp_path / "lmtp.sock")
    listeners = bind_listeners([ListenerSpec("127.0.0.1", 0, False, "lmtp"),
                                ListenerSpec("", 0, False, "lmtp", path=socket_path, mode=0o600)])
    server = Server(listeners, lambda conn, waker: LmtpSession(ctx, conn, waker), context_num=4,
                    thread_init_num=1, thread_charge_num=2, conn_timeout=5.0, ssl_context=None,
                    busy_response=b"421 4.3.2 busy\r\n")
    server.start()
    try:
        yield LmtpPool(server, listeners[0].port, socket_path)
    finally:
        server.stop(grace=1.0)
    assert not os.path.exists(socket_path)  # removed with the listener


@pytest.fixture
def pool(store: Store, tmp_path: Path) -> Iterator[tuple[int, str]]:
    with serving(make_context(store), tmp_path) as served:
        yield served.port, served.socket_path


def test_python_lmtp_client_over_tcp_and_unix_socket(pool: tuple[int, str], store: Store) -> None:
    port, path = pool
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    targets: tuple[tuple[str, dict[str, Any]], ...] = ((path, {}), ("127.0.0.1", {"port": port}))
    for host, kwargs in targets:
        with smtplib.LMTP(host, timeout=TIMEOUT, **kwargs) as client:
            client.ehlo_or_helo_if_needed()
            assert client.has_extn("pipelining") and client.has_extn("enhancedstatuscodes")
            assert client.sendmail("carol@example.org", ["alice@test.example"], MESSAGE) == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("carol@example.org", ["nobody@test.example"], MESSAGE)
    assert [body for body, _ in stored(store, "alice")] == [expected_copy("alice@test.example")] * 2


def test_pipelined_multi_recipient_over_a_socket(pool: tuple[int, str], store: Store) -> None:
    port, _path = pool
    for i in range(5):
        store.create_account(f"u{i}")
    recipients = [f"u{i % 5}@test.example" for i in range(10)]  # each twice: 5 copies, 10 replies
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"LHLO c\r\nMAIL FROM:<carol@example.org>\r\n"
                     + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in recipients) + b"DATA\r\n")
        data = b""
        deadline = time.monotonic() + TIMEOUT
        while b"354 " not in data and time.monotonic() < deadline:
            data += sock.recv(65536)
        sock.sendall(WIRE + b"QUIT\r\n")
        while b"221 " not in data and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    lines = data.decode().split("\r\n")
    results = lines[lines.index(next(line for line in lines if line.startswith("354"))) + 1:-2]
    assert [line.split()[2] for line in results] == [f"<{r}>" for r in recipients]
    assert [len(stored(store, f"u{i}")) for i in range(5)] == [1] * 5


def _connect(served: LmtpPool, over: str) -> socket.socket:
    if over == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(served.socket_path)
        return sock
    return socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT)


def _read_until(sock: socket.socket, reply_start: bytes) -> bytes:
    """What the server sends up to and including the line that starts with ``reply_start``."""
    data = b""
    while not (data.startswith(reply_start) or b"\r\n" + reply_start in data) or not data.endswith(b"\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before {reply_start!r}: {data!r}")
        data += chunk
    return data


def _read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _eof_read(server: Server) -> bool:
    """The pool has read a client's EOF and keeps its connection (awaiting its replies)."""
    with server._lock:
        return any(conn.eof for conn in server._conns)


@pytest.mark.parametrize("over", ["tcp", "unix"])
def test_an_mta_that_half_closes_while_the_copies_are_stored_gets_every_reply(
        store: Store, tmp_path: Path, over: str) -> None:
    """An MTA that sends the message and QUIT, then shuts down its sending side (SHUT_WR), still
    reads one reply per recipient and QUIT's 221. The EOF used to close the connection before
    the replies: the MTA, not knowing the copies were stored, would have delivered them again."""
    gated = GatedStore(store)  # the copies wait here until the EOF has been read
    with serving(make_context(gated), tmp_path) as served, _connect(served, over) as sock:
        assert _read_until(sock, b"220 ").startswith(b"220 ")
        sock.sendall(b"LHLO mta\r\nMAIL FROM:<carol@example.org>\r\n"
                     b"RCPT TO:<alice@test.example>\r\nRCPT TO:<bob@test.example>\r\nDATA\r\n")
        _read_until(sock, b"354 ")
        sock.sendall(WIRE + b"QUIT\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: _eof_read(served.server) or served.server.stats().sessions == 0, TIMEOUT)
        assert served.server.stats().sessions == 1, "the EOF closed the connection before the replies"
        gated.gate.set()
        lines = _read_to_eof(sock).decode().split("\r\n")
        assert wait_until(lambda: served.server.stats().sessions == 0, TIMEOUT)
    assert len(lines) == 4 and lines[-1] == ""
    assert lines[0].startswith("250 2.0.0 <alice@test.example> ")
    assert lines[1].startswith("250 2.0.0 <bob@test.example> ")
    assert lines[2] == "221 2.0.0 mx.test.example closing connection"
    assert stored(store, "alice") == [(expected_copy("alice@test.example"), ())]
    assert stored(store, "bob") == [(expected_copy("bob@test.example"), ())]


# -- in the daemon ------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_daemon_serves_lmtp_and_reloads_the_filter(tmp_path: Path) -> None:
    from e2e import GximapProcess, free_port

    lmtp_port = free_port()
    sock_path = tmp_path / "lmtp.sock"
    script = _script(tmp_path, "cat >/dev/null; echo Archive\n")
    gximap = GximapProcess(tmp_path, tls=False, extra={
        "lmtp_listen": f"127.0.0.1:{lmtp_port} unix:{sock_path}", "delivery_map": "email_localpart",
        "unix_socket_mode": "0666"})
    gximap.start()
    try:
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o666
        with smtplib.LMTP(str(sock_path), timeout=TIMEOUT) as client:
            assert client.sendmail("carol@example.org", ["alice@test.example"], MESSAGE) == {}
        gximap.write_config(imap_filter_command=str(script))
        gximap.signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT
        while "configuration reloaded" not in gximap.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        with smtplib.LMTP("127.0.0.1", lmtp_port, timeout=TIMEOUT) as client:
            assert client.sendmail("carol@example.org", ["alice@test.example"], MESSAGE) == {}
    finally:
        gximap.stop()
    assert not sock_path.exists()
    log = gximap.log()
    assert "folder=INBOX uid=1 " in log and "folder=Archive uid=1 " in log, log


def _delete_folder_after_planning(store: Store, monkeypatch: pytest.MonkeyPatch, folder: str) -> None:
    """The filter picked ``folder`` and a client deletes it before the copy is stored."""
    plan = DeliveryAgent._destination

    def destination(agent: DeliveryAgent, *args: Any) -> tuple[int, str, tuple[str, ...], str]:
        planned = plan(agent, *args)
        store.delete_folder("alice", folder)
        return planned

    monkeypatch.setattr(DeliveryAgent, "_destination", destination)


def test_a_folder_deleted_between_filter_and_store_means_inbox(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_folder("alice", "Lists")
    _delete_folder_after_planning(store, monkeypatch, "Lists")
    script = _script(tmp_path, "cat >/dev/null\nprintf 'Lists\\n$Tag\\n'\n")
    replies = Client(make_context(store, filter=FilterCommand.parse(str(script)))).transaction(
        ["alice@test.example"])
    assert replies[-1].endswith("(alice/INBOX)")
    assert [flags for _body, flags in stored(store, "alice")] == [("$Tag",)]


def test_a_deleted_folder_and_exhausted_keywords_together_still_deliver(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = store.get_folder("alice", "INBOX")
    assert inbox is not None
    store.append("alice", inbox.id, b"Subject: old\r\n\r\nx\r\n", flags=("$Old",))   # the one id allowed
    monkeypatch.setattr(columns, "MAX_KEYWORD_SET", 1)
    store.create_folder("alice", "Lists")
    _delete_folder_after_planning(store, monkeypatch, "Lists")
    script = _script(tmp_path, "cat >/dev/null\nprintf 'Lists\\n$New \\\\Flagged\\n'\n")
    replies = Client(make_context(store, filter=FilterCommand.parse(str(script)))).transaction(
        ["alice@test.example"])
    assert replies[-1].startswith("250 ") and replies[-1].endswith("(alice/INBOX)")
    assert [flags for _body, flags in stored(store, "alice")] == [("$Old",), ("\\Flagged",)]


# -- repeated recipients ------------------------------------------------------------------------------

DETAIL_TABLE = r"regexp ([a-z]+)(\+[a-z]*)?@test\.example $1"  # alice+anything@ is alice


def _counting_lookups(ctx: LmtpContext) -> list[str]:
    looked_up: list[str] = []
    check = ctx.agent.check_recipient

    def counting(address: str) -> Any:
        looked_up.append(address)
        return check(address)

    ctx.agent.check_recipient = counting  # type: ignore[method-assign]
    return looked_up


def test_a_repeated_recipient_is_stored_once_and_answered_per_rcpt(store: Store) -> None:
    """1,000 identical RCPTs (a broken or hostile MTA) stored 1,000 copies: now one, looked up
    once, with 1,000 replies after the data as RFC 2033 wants (Dovecot does the same)."""
    ctx = make_context(store)
    looked_up = _counting_lookups(ctx)
    client = Client(ctx)
    replies = client.transaction(["alice@test.example"] * 1000)
    assert replies[1:1001] == ["250 2.1.5 Ok"] * 1000
    assert replies[1001].startswith("354 ")
    results = replies[1002:]
    assert len(results) == 1000 and set(results) == {results[0]}
    assert results[0].startswith("250 2.0.0 <alice@test.example> ") and results[0].endswith("(alice/INBOX)")
    assert looked_up == ["alice@test.example"]
    assert stored(store, "alice") == [(expected_copy("alice@test.example"), ())]
    assert store.usage("alice") == (len(expected_copy("alice@test.example")), 1)
    assert ctx._executor is None  # one copy: stored by the serving thread
    # The next transaction looks the address up again, and stores its own copy.
    again = client.send(b"MAIL FROM:<>\r\nRCPT TO:<alice@test.example>\r\nRCPT TO:<alice@test.example>\r\n"
                        b"DATA\r\n" + WIRE)
    assert again[-2].startswith("250 2.0.0 <alice@test.example>") and again[-1] == again[-2]
    assert looked_up == ["alice@test.example"] * 2 and len(stored(store, "alice")) == 2


def test_a_repeated_recipient_is_looked_up_again_after_rset(store: Store) -> None:
    client = Client(make_context(store))
    client.send(b"LHLO c\r\n")
    assert client.send(b"MAIL FROM:<>\r\nRCPT TO:<alice@test.example>\r\nRSET\r\n")[-2:] == [
        "250 2.1.5 Ok", "250 2.0.0 Ok"]
    store.update_account("alice", disabled=True)
    replies = client.send(b"MAIL FROM:<>\r\nRCPT TO:<alice@test.example>\r\n")
    assert replies[-1] == "550 5.2.1 <alice@test.example>: Mailbox disabled"


def test_only_the_same_address_shares_a_copy_without_a_filter_too(store: Store) -> None:
    """As Dovecot: the domain in any case, but another local part (in other case, or with a
    +detail) of the same account is another recipient, with a copy that names it."""
    client = Client(make_context(store, table=DETAIL_TABLE))
    recipients = ["alice@test.example", "alice@TEST.example", "ALICE@test.example", "alice+lists@test.example",
                  "alice@test.example"]
    replies = client.transaction(recipients)
    assert replies[1:6] == ["250 2.1.5 Ok"] * 5
    results = replies[7:]
    assert len(results) == 5
    assert results[0].startswith("250 2.0.0 <alice@test.example> ") and results[0].endswith("(alice/INBOX)")
    assert results[1] == results[4] == results[0]
    assert results[2].startswith("250 2.0.0 <ALICE@test.example> ")
    assert results[3].startswith("250 2.0.0 <alice+lists@test.example> ")
    assert sorted(body for body, _flags in stored(store, "alice")) == sorted(
        expected_copy(address) for address in ("alice@test.example", "ALICE@test.example", "alice+lists@test.example"))


def test_with_a_filter_the_addresses_it_is_given_tell_targets_apart(store: Store, tmp_path: Path) -> None:
    """A filter may pick a folder by {rcpt_to}: recipients are then the same target only with the
    same address (the domain compared case-insensitively, as Dovecot does) and ORCPT."""
    store.create_folder("alice", "Lists")
    runs = tmp_path / "runs"
    script = _script(tmp_path, f"cat >/dev/null\necho \"$1\" >> {runs}\n"
                               "case \"$1\" in *+lists@*) echo Lists;; *) echo INBOX;; esac\n")
    client = Client(make_context(store, table=DETAIL_TABLE, filter=FilterCommand.parse(f"{script} {{rcpt_to}}")))
    client.send(b"LHLO c\r\n")
    rcpts = [b"alice+lists@test.example", b"alice@test.example", b"alice+lists@TEST.EXAMPLE",
             b"alice@test.example", b"Alice@test.example", b"alice+lists@test.example"]
    replies = client.send(b"MAIL FROM:<carol@example.org>\r\n"
                          + b"".join(b"RCPT TO:<%s>\r\n" % rcpt for rcpt in rcpts)
                          + b"RCPT TO:<alice@test.example> ORCPT=rfc822;all@test.example\r\nDATA\r\n" + WIRE)
    results = replies[-7:]
    assert results[0].startswith("250 2.0.0 <alice+lists@test.example> ") and results[0].endswith("(alice/Lists)")
    assert results[1].startswith("250 2.0.0 <alice@test.example> ") and results[1].endswith("(alice/INBOX)")
    assert results[2] == results[5] == results[0] and results[3] == results[1]
    assert results[4].startswith("250 2.0.0 <Alice@test.example> ")            # a local part differing in case
    assert results[6].startswith("250 2.0.0 <alice@test.example> ")  # another ORCPT: a copy of its own
    assert sorted(runs.read_text().splitlines()) == ["Alice@test.example", "alice+lists@test.example",
                                                     "alice@test.example", "alice@test.example"]
    assert stored(store, "alice", "Lists") == [(expected_copy("alice+lists@test.example"), ())]
    assert sorted(body for body, _flags in stored(store, "alice")) == sorted(
        [expected_copy("alice@test.example")] * 2 + [expected_copy("Alice@test.example")])


def test_recipients_with_different_accounts_each_get_their_copy(store: Store) -> None:
    """Only the same accounts make the same target: a list that includes alice is another one."""
    table = "static team@test.example:alice,bob alice@test.example:alice"
    replies = Client(make_context(store, table=table)).transaction(
        ["team@test.example", "alice@test.example", "team@test.example"])
    results = replies[-3:]
    assert "alice/INBOX, bob/INBOX" in results[0] and results[2] == results[0]
    assert results[1].startswith("250 2.0.0 <alice@test.example> ")
    assert len(stored(store, "alice")) == 2 and len(stored(store, "bob")) == 1


def test_a_duplicate_gets_the_failure_of_the_first_copy(store: Store) -> None:
    store.update_account("bob", quota_bytes=100)  # empty, so RCPT passes; the message is bigger
    client = Client(make_context(store))
    replies = client.transaction(["bob@test.example", "alice@test.example", "bob@test.example",
                                  "bob@TEST.example"])
    results = replies[-4:]
    assert results[0] == results[2] == results[3] == "552 5.2.2 <bob@test.example>: Mailbox full"
    assert results[1].startswith("250 2.0.0 <alice@test.example> ")
    assert stored(store, "bob") == [] and store.usage("bob") == (0, 0)
    assert len(stored(store, "alice")) == 1


def test_a_duplicate_gets_the_temporary_failure_of_the_first_copy(store: Store) -> None:
    client = Client(make_context(BusyStore(store, {"alice"})))
    replies = client.transaction(["alice@test.example", "bob@test.example", "alice@test.example"])
    assert replies[-3] == replies[-1] == "451 4.3.0 Temporary failure, try again later"
    assert replies[-2].startswith("250 2.0.0 <bob@test.example>")
    assert stored(store, "alice") == [] and len(stored(store, "bob")) == 1


def test_a_duplicate_of_a_copy_that_hit_a_bug_gets_its_451_and_one_traceback(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_context(store)
    deliver = ctx.agent.deliver
    calls: list[str] = []

    def broken_for_alice(prepared: Any, recipient: Any, **kwargs: Any) -> Any:
        calls.append(recipient.address)
        if recipient.address == "alice@test.example":
            raise RuntimeError("a bug")
        return deliver(prepared, recipient, **kwargs)

    ctx.agent.deliver = broken_for_alice  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="gximap.lmtp"):
        replies = Client(ctx).transaction(["alice@test.example", "bob@test.example", "alice@test.example"])
    assert replies[-3] == replies[-1] == "451 4.3.0 Internal error, try again later"
    assert replies[-2].startswith("250 2.0.0 <bob@test.example>")
    assert sorted(calls) == ["alice@test.example", "bob@test.example"]
    assert [record.getMessage() for record in caplog.records] == [
        "L1: delivery L1.1 to <alice@test.example> failed"]
