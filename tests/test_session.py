"""Session-core behaviour seen from the wire: greeting, pipelining, literals, errors, the BAD
streak, timeouts, STARTTLS input discarding, LOGOUT and connection loss."""

from __future__ import annotations

import math
import time

import pytest
from conversation import Conversation, split_responses

from gximap.net.handler import TransportAction
from gximap.session.base import State


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path) as conversation:
        yield conversation


def test_greeting_advertises_capabilities_and_host(tmp_path):
    with Conversation(tmp_path, host_id="mx.example.org") as conv:
        conv.script("""
            S: * OK [CAPABILITY IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ENABLE AUTH=PLAIN] mx.example.org IMAP4rev1 service ready
            C: a1 NOOP
            S: a1 OK NOOP completed
        """)


def test_pipelined_commands_are_answered_in_order(conv):
    lines = conv.send(b"a1 NOOP\r\na2 CAPABILITY\r\na3 LOGIN alice secret\r\na4 NOOP\r\n")
    assert lines[0] == b"a1 OK NOOP completed"
    assert lines[1].startswith(b"* CAPABILITY IMAP4rev1 ")
    assert lines[2] == b"a2 OK CAPABILITY completed"
    assert lines[3].startswith(b"a3 OK [CAPABILITY IMAP4rev1 ")
    assert lines[4] == b"a4 OK NOOP completed"
    assert len(lines) == 5


def test_command_split_over_several_packets(conv):
    assert conv.send(b"a1 NO") == []
    assert conv.send(b"OP") == []
    assert conv.send(b"\r") == []
    assert conv.send(b"\n") == [b"a1 OK NOOP completed"]


def test_synchronising_literal_gets_a_continuation(conv):
    conv.script("""
        C: a1 LOGIN {5}
        S: + Ready for literal data
        C: alice {6}
        S: + Ready for literal data
        C: secret
        S: a1 OK [CAPABILITY {*}] Logged in
    """)
    assert conv.session.state is State.AUTHENTICATED


def test_non_synchronising_literal_needs_no_continuation(conv):
    lines = conv.send(b"a1 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
    assert len(lines) == 1 and lines[0].startswith(b"a1 OK [CAPABILITY ")


def test_missing_tag_and_garbage(conv):
    conv.script("""
        C: * NOOP
        S: * BAD [CLIENTBUG] Missing or invalid tag
        C: a1 FROBNICATE
        S: a1 BAD {*}
        C: a2 NOOP extra
        S: a2 BAD [CLIENTBUG] Parse error: {*}
    """)


def test_command_in_wrong_state_is_bad(conv):
    conv.script("""
        C: a1 SELECT INBOX
        S: a1 BAD [CLIENTBUG] Log in first
        C: a2 LIST "" *
        S: a2 BAD [CLIENTBUG] Log in first
        C: a3 CLOSE
        S: a3 BAD [CLIENTBUG] Log in first
    """)


def test_overlong_line_is_refused_and_the_session_goes_on(tmp_path):
    with Conversation(tmp_path, max_line=100) as conv:
        conv.script(f"""
            C: a1 NOOP {"x" * 150}
            S: a1 BAD [TOOBIG] Line too long
            C: a2 NOOP
            S: a2 OK NOOP completed
        """)


def test_too_many_bad_commands_disconnect(tmp_path):
    with Conversation(tmp_path, max_bad_commands=3) as conv:
        conv.script("""
            C: a1 BOGUS
            S: a1 BAD {*}
            C: a2 BOGUS
            S: a2 BAD {*}
            C: a3 BOGUS
            S: a3 BAD {*}
            S: * BYE Too many invalid commands
        """)
        assert conv.closed
        assert conv.actions == [TransportAction.CLOSE]


def test_untagged_literal_announcements_count_as_bad_commands(tmp_path):
    """``{1}`` with no tag cannot be answered with a continuation; each is one more bad command."""
    with Conversation(tmp_path, max_bad_commands=3) as conv:
        out = conv.send(b"{1}\r\n{1}\r\n{1}\r\n")
        assert out == [b"* BAD [CLIENTBUG] Missing or invalid tag"] * 3 + [b"* BYE Too many invalid commands"]
        assert conv.closed


def test_a_literal_of_an_unknown_command_is_refused_before_it_is_sent(conv):
    """No ``+`` for a command that will fail whatever follows: the client does not send the
    literal (up to imap_max_literal_size octets), and the session goes on."""
    conv.login()
    assert conv.send(b"a1 FROBNICATE {600000}\r\n") == [b"a1 BAD [CLIENTBUG] Unknown command"]
    assert conv.send(b"a2 {5}\r\n") == [b"a2 BAD [CLIENTBUG] Unknown command"]
    assert conv.send(b"a3 NOOP\r\n") == [b"a3 OK NOOP completed"]
    assert conv.send(b"a5 " + b"X" * 40 + b" {5}\r\n") == [b"a5 BAD [CLIENTBUG] Unknown command"]
    long_tag = b"T" * 125  # the name lies past the first 128 octets: still found
    assert conv.send(long_tag + b" APPEND INBOX {5}\r\n")[0].startswith(b"+ ")
    assert conv.send(b"hello\r\n")[-1].startswith(long_tag + b" OK [APPENDUID ")
    assert conv.send(b"a4 LOGOUT {3}\r\n")[0].startswith(b"+ ")  # known: its parser judges it


def test_literals_of_commands_but_append_have_a_smaller_bound(conv):
    """A SEARCH (or any command but APPEND and SETMETADATA) holds its literals whole while it
    runs: 1 MiB of them, against imap_max_literal_size for APPEND's message and SETMETADATA's
    values (RFC 5464 wants a value over its limit refused with NO [METADATA MAXSIZE]: before
    the upload when the literal is synchronising, after it when it is sent ahead)."""
    conv.login()
    conv.select()
    assert conv.send(b"a1 SEARCH TEXT {1048577}\r\n") == [b"a1 BAD [TOOBIG] Literal too big"]
    assert conv.send(b"a2 UID SEARCH TEXT {1048577}\r\n") == [b"a2 BAD [TOOBIG] Literal too big"]
    assert conv.send(b"a3 SEARCH TEXT {1048576}\r\n")[0].startswith(b"+ ")
    assert conv.send(b"x" * 1_048_576 + b"\r\n") == [b"* SEARCH", b"a3 OK SEARCH completed"]
    assert conv.send(b"a4 APPEND INBOX {3000000}\r\n")[0].startswith(b"+ ")
    assert conv.send(b"x" * 3_000_000 + b"\r\n")[-1].startswith(b"a4 OK [APPENDUID ")
    maxsize = b"NO [METADATA MAXSIZE 65536] Metadata value too long"
    assert conv.send(b"a5 SETMETADATA INBOX (/private/comment {2000000}\r\n") == [b"a5 " + maxsize]
    assert conv.send(b"a6 SETMETADATA INBOX (/private/comment {2000000+}\r\n" + b"x" * 2_000_000 + b")\r\n") == [
        b"a6 " + maxsize]


def test_a_good_command_resets_the_bad_streak(tmp_path):
    with Conversation(tmp_path, max_bad_commands=3) as conv:
        for round_number in range(3):
            conv.send(b"b1 BOGUS\r\nb2 BOGUS\r\n")
            assert conv.send(b"n%d NOOP\r\n" % round_number) == [b"n%d OK NOOP completed" % round_number]
        assert not conv.closed


def test_login_deadline_counts_from_connecting(tmp_path):
    """imap_login_timeout: the idle limit before login shrinks to the time left until the
    deadline, however recently the client sent something; past it, the goodbye says why."""
    with Conversation(tmp_path, conn_timeout=180.0, login_timeout=600.0) as conv:
        session = conv.session
        assert session.idle_timeout() == 180.0
        session.connected_at -= 500.0
        # (1e-9: the deadline and the last input are sums of clock readings, rounded)
        assert 99.0 < session.idle_timeout() <= 100.0 + 1e-9
        session.connected_at -= 200.0
        assert session.idle_timeout() == 0.001
        assert conv.timeout() == [b"* BYE Too long without logging in, closing connection"]
    with Conversation(tmp_path / "late", conn_timeout=1000.0, login_timeout=600.0) as conv:
        # The pool adds the limit to the time of the last input: reckoned from then, the
        # goodbye lands on the deadline even when the slice runs later (a password check done).
        session = conv.session
        session.connected_at -= 500.0
        session.last_activity = session.connected_at + 400.0
        assert session.last_activity + session.idle_timeout() == pytest.approx(session.connected_at + 600.0)
    with Conversation(tmp_path / "none", conn_timeout=180.0, login_timeout=0.0) as conv:
        conv.session.connected_at -= 10_000.0
        assert conv.session.idle_timeout() == 180.0
        conv.login()
        assert conv.session.idle_timeout() == conv.ctx.settings.autologout


def test_unauthenticate_restarts_the_login_deadline(tmp_path):
    """RFC 8437: after UNAUTHENTICATE the session is as if the connection were new, so the
    login deadline counts from then, not from the connection."""
    with Conversation(tmp_path, conn_timeout=180.0, login_timeout=60.0) as conv:
        conv.login()
        conv.session.connected_at -= 1000.0
        assert conv.session.hard_deadline() == math.inf  # logged in: no deadline
        conv.command("UNAUTHENTICATE")
        assert 59.0 < conv.session.idle_timeout() <= 60.1
        assert 69.0 < conv.session.hard_deadline() - time.monotonic() <= 70.0  # + LOGIN_GRACE (10 s)


def test_timeout_before_login_says_inactivity(conv):
    assert conv.ctx.settings.conn_timeout - 5 < conv.session.idle_timeout() <= conv.ctx.settings.conn_timeout
    assert conv.timeout() == [b"* BYE Disconnected for inactivity"]
    assert conv.closed


def test_timeout_after_login_is_autologout(tmp_path):
    with Conversation(tmp_path, autologout=600.0, conn_timeout=30.0) as conv:
        conv.login()
        assert conv.session.idle_timeout() == 600.0
        assert conv.timeout() == [b"* BYE Autologout; idle for too long"]
        assert conv.actions == [TransportAction.CLOSE]


def test_only_a_session_not_logged_in_may_be_displaced_and_it_says_why(conv):
    """With every context taken the pool closes a connection not logged in to make
    room for a new one (gximap.net.pool); a session that logged out again counts as new."""
    assert conv.session.displaceable()
    conv.login()
    assert not conv.session.displaceable()
    conv.command("UNAUTHENTICATE")
    assert conv.session.displaceable()
    assert conv.displaced() == [b"* BYE Connection queue full, closing connection"]
    assert conv.actions == [TransportAction.CLOSE] and conv.closed


def test_shutdown_says_goodbye(conv):
    conv.login()
    assert conv.shutdown() == [b"* BYE Server shutting down"]
    assert conv.closed


def test_logout_in_every_state(conv):
    conv.script("""
        C: a1 LOGOUT
        S: * BYE localhost IMAP server logging out
        S: a1 OK LOGOUT completed
    """)
    assert conv.closed and conv.actions == [TransportAction.CLOSE]


def test_logout_when_selected_sends_no_updates_after_bye(conv):
    conv.login()
    conv.select()
    conv.add_message()
    lines = conv.send(b"a1 LOGOUT\r\n")
    assert lines == [b"* BYE localhost IMAP server logging out", b"a1 OK LOGOUT completed"]


def test_commands_pipelined_after_logout_are_ignored(conv):
    lines = conv.send(b"a1 LOGOUT\r\na2 NOOP\r\n")
    assert lines[-1] == b"a1 OK LOGOUT completed"
    assert conv.closed


def test_starttls_discards_pipelined_plaintext(tmp_path):
    """CVE-2011-0411: a command injected behind STARTTLS must never run."""
    with Conversation(tmp_path, tls=False, starttls=True) as conv:
        lines = conv.send(b"a1 STARTTLS\r\na2 LOGIN alice secret\r\n")
        assert lines == [b"a1 OK Begin TLS negotiation now"]
        assert conv.actions == [TransportAction.STARTTLS]
        assert conv.session.tls
        assert conv.session.state is State.NOT_AUTHENTICATED
        # The connection goes on under TLS; nothing of the injected command is left.
        assert conv.send(b"a3 NOOP\r\n") == [b"a3 OK NOOP completed"]


def test_bytes_arriving_before_the_handshake_are_dropped(tmp_path):
    with Conversation(tmp_path, tls=False, starttls=True) as conv:
        session = conv.session
        session.data_received(b"a1 STARTTLS\r\n")
        session.process(16)
        out = []
        while (item := session.next_output()) is not None:
            out.append(item)
        assert out == [b"a1 OK Begin TLS negotiation now\r\n", TransportAction.STARTTLS]
        # Before the pool reports the handshake, input is ignored.
        session.data_received(b"a2 LOGIN alice secret\r\n")
        assert session.process(16) is False
        assert session.next_output() is None
        session.transport_changed(TransportAction.STARTTLS, True)
        session.data_received(b"a3 NOOP\r\n")
        session.process(16)
        assert session.next_output() == b"a3 OK NOOP completed\r\n"


def test_connection_lost_while_idling_releases_the_watch(conv):
    conv.login()
    conv.select()
    assert conv.send(b"a1 IDLE\r\n") == [b"+ idling"]
    conv.session.connection_lost()
    conv.closed = True
    conv.add_message()  # must not reach the closed session
    assert conv.wakes == 0
    assert conv.session.selected is None


def test_split_responses_keeps_literals_inside_their_line():
    data = b"* 1 FETCH (BODY[] {7}\r\nab\r\ncd)\r\na1 OK done\r\n"
    assert split_responses(data) == [b"* 1 FETCH (BODY[] {7}\r\nab\r\ncd)", b"a1 OK done"]


def test_script_reports_the_failing_line(conv):
    with pytest.raises(AssertionError) as info:
        conv.script("""
            C: a1 NOOP
            S: a1 OK something else
        """)
    assert "test_session.py:" in str(info.value)
    assert "a1 OK NOOP completed" in str(info.value)


def test_script_captures_and_repeats_values(conv):
    conv.login()
    conv.script("""
        C: a1 STATUS INBOX (UIDVALIDITY)
        S: * STATUS INBOX (UIDVALIDITY {n:uv})
        S: a1 OK STATUS completed
        C: a2 STATUS INBOX (UIDVALIDITY)
        S: * STATUS INBOX (UIDVALIDITY {=uv})
        S: a2 OK STATUS completed
    """)
    assert int(conv.captured["uv"]) > 0


def test_selected_mailbox_deleted_by_another_session(conv):
    conv.login()
    conv.command("CREATE Box")
    conv.select("Box")
    other = conv.second_session()
    other.login()
    other.command("DELETE Box")
    conv.script("""
        C: a1 NOOP
        S: a1 OK NOOP completed
        S: * BYE Selected mailbox was deleted, closing connection
    """)
    assert conv.closed


def test_selected_mailbox_deleted_while_idling(conv):
    conv.login()
    conv.command("CREATE Box")
    conv.select("Box")
    assert conv.send(b"a1 IDLE\r\n") == [b"+ idling"]
    conv.store.delete_folder("alice", "Box")
    assert conv.wake() == [b"* BYE Selected mailbox was deleted, closing connection"]
    assert conv.closed
