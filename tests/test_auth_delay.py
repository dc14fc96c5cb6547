"""imap_auth_failure_delay: the answer to a failed login waits (Dovecot's auth_failure_delay), the
session parked on a timer's future (gximap.auth.delay), holding no thread.

The IMAP tests run the session sans-IO (tests/conversation.py) with the fake clock of
``conv.delays``: nothing is answered until ``conv.advance()`` moves it past the delay."""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
import time
from pathlib import Path

import pytest
from conversation import Conversation
from scram_client import ScramClient

from gximap.auth.delay import DelayTimer
from gximap.session.base import State
from midb.errors import StoreBusy

DELAY = 2.0
FAILED = b"NO [AUTHENTICATIONFAILED] Authentication failed"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _auth_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "gximap.auth"]


@pytest.fixture
def conv(tmp_path: Path):
    with Conversation(tmp_path, users=("alice", "bob"), failure_delay=DELAY, sasl_login=True,
                      sasl_scram=True) as conversation:
        yield conversation


# -- the timer ----------------------------------------------------------------------------------------


def test_the_timer_completes_futures_after_their_delay_in_order() -> None:
    timer = DelayTimer(name="test-delay")
    fired: list[str] = []
    started = time.monotonic()
    late = timer.after(0.2)
    early = timer.after(0.05)  # due before the one the thread sleeps for: it is woken
    late.add_done_callback(lambda _f: fired.append("late"))
    early.add_done_callback(lambda _f: fired.append("early"))
    assert early.result(timeout=5) is None
    assert time.monotonic() - started >= 0.05
    assert not late.done()
    late.result(timeout=5)
    assert time.monotonic() - started >= 0.2
    assert fired == ["early", "late"]
    assert timer.pending() == 0


def test_the_timer_skips_cancelled_futures() -> None:
    timer = DelayTimer(name="test-delay")
    cancelled = timer.after(0.05)
    assert cancelled.cancel()
    kept = timer.after(0.1)
    kept.result(timeout=5)
    assert cancelled.cancelled() and timer.pending() == 0


def test_a_thousand_delays_cost_one_thread() -> None:
    timer = DelayTimer(name="test-delay-many")
    futures = [timer.after(0.1 + index / 10_000) for index in range(1000)]
    assert [thread.name for thread in threading.enumerate()].count("test-delay-many") == 1
    for future in futures:
        future.result(timeout=5)
    assert timer.pending() == 0


def test_a_forked_child_starts_a_timer_thread_of_its_own() -> None:
    """The serving processes fork after the daemon started: a timer thread the parent ran is not
    in the child, whose delays must fire all the same (or its failed logins were never answered)."""
    timer = DelayTimer(name="test-delay-fork")
    timer.after(0.01).result(timeout=5)  # the parent's thread runs
    parent_waits = timer.after(30)  # an entry of the parent's, forgotten in the child
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 when its delay fired, and only its own is pending
        code = 1
        try:
            timer.after(0.05).result(timeout=5)
            code = 0 if timer.pending() == 0 else 2
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent_waits.cancel()  # still pending in the parent


# -- IMAP ---------------------------------------------------------------------------------------------


def test_a_wrong_password_is_answered_after_the_delay_logged_at_once(conv: Conversation,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert conv.send(b"a1 LOGIN alice wrong\r\n") == []
        # Decided, logged (fail2ban reads it now) and counted before the answer.
        assert [line.split(" ", 1)[1] for line in _auth_lines(caplog)] == ["user=alice LOGIN rejected: bad password"]
        assert conv.session.auth_failures == 1
        assert conv.session.awaiting()  # the pool keeps a client that half-closes meanwhile
        assert conv.advance(DELAY - 0.1) == [] and conv.wakes == 0
        assert conv.advance(0.1) == [b"a1 " + FAILED]
    assert conv.delays.pending() == 0


def test_commands_pipelined_behind_a_failed_login_wait_for_its_answer(conv: Conversation) -> None:
    assert conv.send(b"a1 LOGIN alice wrong\r\na2 NOOP\r\na3 LOGIN alice secret\r\n") == []
    lines = conv.advance(DELAY)
    assert lines[0] == b"a1 " + FAILED
    assert lines[1] == b"a2 OK NOOP completed"
    assert lines[2].startswith(b"a3 OK [CAPABILITY ")
    assert conv.session.state is State.AUTHENTICATED


def _scram_with_wrong_proof(conv: Conversation, tag: str) -> list[bytes]:
    client = ScramClient("alice", "wrong")
    challenge = conv.send(f"{tag} AUTHENTICATE SCRAM-SHA-256 {b64(client.first())}\r\n".encode())
    assert len(challenge) == 1 and challenge[0].startswith(b"+ "), challenge  # no delay before the proof
    return conv.send(b64(client.final(base64.b64decode(challenge[0][2:]))).encode() + b"\r\n")


@pytest.mark.parametrize("attempt", [
    "LOGIN alice wrong",  # a wrong password
    "LOGIN mallory secret",  # an unknown user
    "AUTHENTICATE PLAIN " + b64(b"\0alice\0wrong"),
    "AUTHENTICATE PLAIN " + b64(b"no NULs"),  # a PLAIN message naming nobody
    "AUTHENTICATE PLAIN " + b64(b"alice\0bob\0secret"),  # bob's right password, may not act as alice
    "SCRAM",  # a wrong proof
    "SASL LOGIN",
])
def test_every_kind_of_failure_waits_alike(conv: Conversation, attempt: str) -> None:
    if attempt == "SCRAM":
        assert _scram_with_wrong_proof(conv, "a1") == []
    elif attempt == "SASL LOGIN":
        assert conv.send(b"a1 AUTHENTICATE LOGIN\r\n") == [b"+ VXNlcm5hbWU6"]
        assert conv.send(b64(b"alice").encode() + b"\r\n") == [b"+ UGFzc3dvcmQ6"]
        assert conv.send(b64(b"wrong").encode() + b"\r\n") == []
    else:
        assert conv.send(f"a1 {attempt}\r\n".encode()) == []
    lines = conv.advance(DELAY)
    assert len(lines) == 1 and re.match(rb"a1 NO \[(AUTHENTICATIONFAILED|AUTHORIZATIONFAILED)\]", lines[0]), lines


def test_a_blocked_user_waits_too_and_the_block_begins_at_the_failure(tmp_path: Path) -> None:
    with Conversation(tmp_path, users=("alice",), auth_times=2, failure_delay=DELAY) as conv:
        conv.send(b"a1 LOGIN alice wrong1\r\n")
        assert conv.advance(DELAY) == [b"a1 " + FAILED]
        assert conv.send(b"a2 LOGIN alice wrong2\r\n") == []
        assert conv.ctx.auth.user_block_remaining("alice") > 0  # before the answer
        assert conv.advance(DELAY) == [b"a2 " + FAILED, b"* BYE Too many failed logins, closing connection"]
        assert conv.closed
        other = conv.second_session()
        assert other.send(b"b1 LOGIN alice secret\r\n") == []  # refused without a check, yet not at once
        assert other.advance(DELAY) == [b"b1 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"]


def test_success_cancel_and_store_trouble_are_answered_at_once(conv: Conversation,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert conv.send(b"a1 AUTHENTICATE PLAIN\r\n") == [b"+ "]
    assert conv.send(b"*\r\n") == [b"a1 BAD Authentication cancelled"]

    def busy(*args: object, **kwargs: object) -> None:
        raise StoreBusy("lock timeout")

    monkeypatch.setattr(conv.ctx.auth.backend, "authenticate", busy)
    answer = conv.send(b"a2 LOGIN alice wrong\r\n")
    assert len(answer) == 1 and answer[0].startswith(b"a2 NO [UNAVAILABLE]"), answer
    monkeypatch.undo()
    assert conv.send(b"a3 LOGIN alice secret\r\n")[0].startswith(b"a3 OK [CAPABILITY ")
    assert conv.delays.pending() == 0


def test_a_client_that_leaves_during_the_delay_cancels_its_timer(conv: Conversation) -> None:
    assert conv.send(b"a1 LOGIN alice wrong\r\n") == []
    assert conv.delays.pending() == 1
    conv.close()
    assert conv.delays.pending() == 0


def test_no_delay_with_zero(tmp_path: Path) -> None:
    with Conversation(tmp_path, users=("alice",), failure_delay=0) as conv:
        assert conv.send(b"a1 LOGIN alice wrong\r\n") == [b"a1 " + FAILED]
        assert conv.delays.pending() == 0


def test_a_reload_changes_the_delay_of_the_next_failure(tmp_path: Path) -> None:
    """What Daemon._apply does on SIGHUP: the directive is reloadable, sessions stay."""
    from gximap import config as gxconfig
    from gximap.daemon import Daemon

    with Conversation(tmp_path, users=("alice",), failure_delay=DELAY) as conv:
        path = tmp_path / "imap.cfg"
        path.write_text("imap_auth_failure_delay = 5s\n")
        cfg = gxconfig.load_config([path], required=True)
        daemon = Daemon(cfg, [str(path)])
        daemon.ctx = conv.ctx  # type: ignore[assignment] # a served daemon's, whose session this is
        daemon._apply(cfg)
        assert conv.ctx.auth.failure_delay == 5.0
        conv.send(b"a1 LOGIN alice wrong\r\n")
        assert conv.advance(DELAY) == []
        assert conv.advance(3.0) == [b"a1 " + FAILED]
        assert gxconfig.load_config([], required=False).imap_auth_failure_delay == 2.0  # Dovecot's default
