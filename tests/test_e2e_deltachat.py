"""Delta Chat on gximap: two accounts of Delta Chat's own core (the deltachat-rpc-server binary,
driven by deltachat-rpc-client) chat through gximap and the private Postfix of
tests/postfix_helpers.py.

Each account is configured by hand, with no autoconfig and no DNS: IMAP on gximap's implicit-TLS
port (certificate checks off for the test's self-signed certificate), SMTP on Postfix's
submission port, which asks gximap's auth socket and delivers to its LMTP socket; everything on
127.0.0.1. Delta Chat then does its IMAP side itself: LOGIN, COMPRESS, GETQUOTAROOT, GETMETADATA,
SELECT, UID FETCH of headers then BODY.PEEK[], IDLE, UID STORE of \\Seen or \\Deleted and CLOSE.
This core (2.65) keeps to INBOX: it no longer creates a DeltaChat folder or moves mail there.
Alice keeps her mail on the server (bcc_self, as with a second device) and only marks it \\Seen;
Bob, a single device, deletes what he has downloaded. Every wait is bounded and the rpc server
is stopped at the end, whatever happens.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postfix_helpers import DEADLINE, DOMAIN, NEEDS_POSTFIX, Stack, fetch_all, postfix_stack, wait_for

pytest.importorskip("deltachat_rpc_client", reason="deltachat-rpc-client is not installed (pip install -e '.[test]')")
from deltachat_rpc_client import Account, DeltaChat, EventType, Rpc  # noqa: E402

# The console script of the deltachat-rpc-server wheel, next to this interpreter in a virtualenv.
RPC_SERVER = shutil.which("deltachat-rpc-server",
                          path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,  # a few seconds: starting gximap and Postfix, then two seconds of chat
    *NEEDS_POSTFIX,
    pytest.mark.skipif(RPC_SERVER is None, reason="deltachat-rpc-server is not installed (pip install -e '.[test]')"),
]

ACCOUNTS = {"alice": "secret", "bob": "hunter2"}
STOP_TIMEOUT = 15.0


class ChatUser:
    """A Delta Chat account of the rpc server, with waits for its events that end in a bound."""

    def __init__(self, rpc: Rpc, stack: Stack, name: str) -> None:
        self.rpc = rpc
        self.stack = stack
        self.name = name
        self.address = f"{name}@{DOMAIN}"
        self.account: Account = DeltaChat(rpc).add_account()
        self.events: queue.Queue[dict[str, Any]] = rpc.get_queue(self.account.id)
        self.recent: collections.deque[str] = collections.deque(maxlen=80)  # for a failure's report

    def wait_for(self, kind: str, msg_id: int | None = None, timeout: float = DEADLINE) -> dict[str, Any]:
        """Consume this account's events up to the first of ``kind`` (about message ``msg_id``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.recent.append(f"{event.get('kind')}: {event.get('msg') or event.get('comment') or ''}")
            if event.get("kind") == kind and (msg_id is None or event.get("msgId") == msg_id):
                return event
        recent = "\n".join(self.recent)
        raise AssertionError(f"{self.name}: no {kind} event within {timeout} s; the last events:\n{recent}\n"
                             f"{self.stack.logs()}")

    def configure(self) -> None:
        """The transport, entered in full so that Delta Chat looks nothing up."""
        stack = self.stack
        params = {
            "addr": self.address,
            "password": ACCOUNTS[self.name],
            "imapServer": "127.0.0.1",
            "imapPort": stack.gximap.tls_port,
            "imapSecurity": "ssl",
            "imapUser": self.name,
            "smtpServer": "127.0.0.1",
            "smtpPort": stack.postfix.submission_port,
            "smtpSecurity": "plain",  # the test's Postfix offers no TLS
            "smtpUser": self.name,
            "certificateChecks": "acceptInvalidCertificates",
        }
        result = self.rpc.add_or_update_transport.future(self.account.id, params)
        # ConfigureProgress ends at 1000 (done) or 0 (failed, with the reason as its comment).
        while (progress := self.wait_for(EventType.CONFIGURE_PROGRESS)["progress"]) not in (0, 1000):
            pass
        assert progress == 1000, f"{self.name}: configuration failed: {self.recent[-1]}\n{self.stack.logs()}"
        result()  # answered by now: the progress comes before the call's result
        assert self.account.is_configured()


@contextlib.contextmanager
def delta_chat_rpc(directory: Path) -> Iterator[Rpc]:
    """The rpc server with its accounts in ``directory``, its log in ``directory``/rpc-server.log."""
    assert RPC_SERVER is not None
    directory.mkdir()
    with (directory / "rpc-server.log").open("wb") as log:
        rpc = Rpc(accounts_dir=str(directory / "accounts"), rpc_server_path=RPC_SERVER, stderr=log)
        try:
            rpc.start()
            yield rpc
        finally:
            _stop_rpc(rpc)


def _stop_rpc(rpc: Rpc) -> None:
    """Rpc.close() stops the accounts' I/O, then closes the server's stdin, on which it exits. A
    server that does not is killed by its id, which also ends the client's threads."""
    process: subprocess.Popen[bytes] | None = getattr(rpc, "process", None)
    if process is None:  # never started
        return
    closer = threading.Thread(target=rpc.close, name="deltachat-rpc-close", daemon=True)
    closer.start()
    closer.join(STOP_TIMEOUT)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)
    closer.join(STOP_TIMEOUT)


def _message_id(info: str) -> bytes:
    """The Message-ID in Delta Chat's description of a message (Message.get_info())."""
    found = re.search(r"^Message-ID: (\S+)$", info, re.MULTILINE)
    assert found, info
    return b"<" + found.group(1).encode() + b">"


@pytest.fixture
def stack() -> Iterator[Stack]:
    with postfix_stack("gximap-deltachat-", ACCOUNTS, tls=True) as running:
        yield running


def test_two_delta_chat_accounts_chat_through_gximap(stack: Stack) -> None:
    with delta_chat_rpc(stack.root / "deltachat") as rpc:
        alice, bob = ChatUser(rpc, stack, "alice"), ChatUser(rpc, stack, "bob")
        for user in (alice, bob):
            user.configure()
        alice.account.set_config("bcc_self", "1")
        for user in (alice, bob):
            user.account.start_io()
            user.wait_for(EventType.IMAP_INBOX_IDLE)

        # Alice writes first: the chat is encrypted to the key in Bob's vCard. Bob, in IDLE,
        # hears of the delivery, fetches the message and deletes it from the server.
        hello = alice.account.create_chat(bob.account).send_text("Hello Bob, this came through gximap.")
        alice.wait_for(EventType.MSG_DELIVERED, hello.id)
        received = bob.account.get_message_by_id(bob.wait_for(EventType.INCOMING_MSG)["msgId"]).get_snapshot()
        assert received.text == "Hello Bob, this came through gximap."
        assert received.sender.get_snapshot().address == alice.address
        assert received.show_padlock  # decrypted: the message came through whole
        bob.wait_for(EventType.IMAP_MESSAGE_DELETED)

        # Bob answers; Alice reads it, which stores \Seen on the server and sends Bob a receipt.
        received.chat.accept()
        reply = received.chat.send_text("Hi Alice!")
        answer = alice.account.get_message_by_id(alice.wait_for(EventType.INCOMING_MSG)["msgId"])
        assert answer.get_snapshot().text == "Hi Alice!"
        answer.mark_seen()
        bob.wait_for(EventType.MSG_READ, reply.id)
        reply_id = _message_id(reply.get_info())

        # The server as Delta Chat left it, seen with imaplib: Alice keeps her mail, all of it
        # \Seen (Bob's answer, her copy of her own message and of her receipt); Bob deleted his.
        def alice_inbox_settled() -> list[tuple[bytes, bytes]] | None:
            messages = fetch_all(stack, "alice", ACCOUNTS["alice"])
            settled = messages and all(b"\\Seen" in flags for flags, _ in messages)
            return messages if settled else None

        alice_inbox = wait_for(alice_inbox_settled, "every message in alice's INBOX \\Seen")
        assert any(reply_id in message for _, message in alice_inbox), alice_inbox
        assert not any(b"\\Deleted" in flags for flags, _ in alice_inbox)
        wait_for(lambda: fetch_all(stack, "bob", ACCOUNTS["bob"]) == [], "bob's INBOX emptied by Delta Chat")

    # Every command Delta Chat sent was answered OK; both accounts waited for mail in IDLE and
    # fetched it with BODY.PEEK[]; Alice's reading stored \Seen, Bob's deleting \Deleted.
    commands = [(user, status, text.strip()) for user, status, text in
                re.findall(r" cmd conn=\S+ rhost=\S+ user=(\S+) (\w+): \S+ (.*)", stack.gximap.log())]
    assert commands and all(status == "OK" for _, status, _ in commands), stack.logs()

    def sent(user: str, pattern: str) -> bool:
        return any(name == user and re.fullmatch(pattern, text) for name, _, text in commands)

    for name in ACCOUNTS:
        assert sent(name, "IDLE") and sent(name, r"UID FETCH \d+ \(FLAGS BODY\.PEEK\[\]\)"), commands
    assert sent("alice", r"UID STORE \S+ \+FLAGS \(\\Seen\)"), commands
    assert sent("bob", r"UID STORE \S+ \+FLAGS \(\\Deleted\)") and sent("bob", "CLOSE"), commands
