"""APPENDLIMIT (RFC 7889): the APPENDLIMIT= capability, STATUS / LIST-STATUS APPENDLIMIT, and
NO [TOOBIG] for an oversized APPEND before the client has sent the literal."""

from __future__ import annotations

import socket
import time

import pytest
from conversation import Conversation
from e2e import GximapProcess

LIMIT = 4096


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path, max_literal=LIMIT) as conversation:
        conversation.login()
        yield conversation


def test_capability_and_status_agree(conv):
    caps = conv.command("CAPABILITY")[0].decode().split()
    assert f"APPENDLIMIT={LIMIT}" in caps
    conv.script("""
        C: a1 STATUS INBOX (APPENDLIMIT)
        S: * STATUS INBOX (APPENDLIMIT 4096)
        S: a1 OK STATUS completed
        C: a2 STATUS Sent (MESSAGES APPENDLIMIT UIDNEXT)
        S: * STATUS Sent (MESSAGES 0 APPENDLIMIT 4096 UIDNEXT 1)
        S: a2 OK STATUS completed
    """)


def test_list_return_status_appendlimit(conv):
    conv.command("CREATE Work")
    conv.script("""
        C: a1 LIST "" (INBOX Work) RETURN (STATUS (APPENDLIMIT))
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * STATUS INBOX (APPENDLIMIT 4096)
        S: * LIST (\\HasNoChildren) "/" Work
        S: * STATUS Work (APPENDLIMIT 4096)
        S: a1 OK LIST completed
    """)


def test_the_stores_own_limit_lowers_it(conv):
    conv.store.max_message_size = 2048
    assert "APPENDLIMIT=2048" in conv.command("CAPABILITY")[0].decode().split()
    assert conv.send(b"a1 STATUS INBOX (APPENDLIMIT)\r\n")[0] == b"* STATUS INBOX (APPENDLIMIT 2048)"
    data = b"x" * 3000  # under the literal limit, over the store's: refused once read
    assert conv.send(b"a2 APPEND INBOX {3000+}\r\n" + data + b"\r\n") == [b"a2 NO [TOOBIG] Message too big"]
    assert conv.folder("INBOX").messages == 0


def test_oversized_append_is_refused_before_the_literal(conv):
    # No "+" continuation: the client learns at once and never sends the octets.
    assert conv.send(b"a1 APPEND INBOX (\\Seen) {4097}\r\n") == [b"a1 NO [TOOBIG] Message too big"]
    # "UID APPEND" is no command: its literal is one of a command that is not APPEND
    assert conv.send(b"a2 UID APPEND INBOX {99999}\r\n") == [b"a2 BAD [TOOBIG] Literal too big"]
    conv.script("""
        C: a3 APPEND INBOX {5}
        S: + Ready for literal data
        C: hello
        S: a3 OK [APPENDUID {n} 1] APPEND completed
    """)


def test_oversized_multiappend_is_refused_as_a_whole(conv):
    # Each message within APPENDLIMIT, the two together above the limit on one command's
    # literals: not TOOBIG (no message is too big), LIMIT with a text that says what to do.
    lines = conv.send(b"a1 APPEND INBOX {3000+}\r\n" + b"x" * 3000 + b" {2000}\r\n")
    assert lines == [b"a1 NO [LIMIT] The messages of one command together exceed 4096 octets;"
                     b" append them one at a time"]
    assert conv.folder("INBOX").messages == 0
    # The same messages sent one APPEND at a time are taken.
    assert conv.send(b"a2 APPEND INBOX {3000+}\r\n" + b"x" * 3000 + b"\r\n")[-1].startswith(b"a2 OK")
    assert conv.send(b"a3 APPEND INBOX {2000+}\r\n" + b"y" * 2000 + b"\r\n")[-1].startswith(b"a3 OK")


def test_a_multiappend_message_too_big_by_itself_is_toobig(conv):
    # A second message over the limit by itself: TOOBIG, as for a single APPEND, with its
    # octets (already on their way, {n+}) read and dropped and the stream kept in sync.
    lines = conv.send(b"a1 APPEND INBOX {100+}\r\n" + b"x" * 100 + b" {4097+}\r\n" + b"y" * 4097
                      + b"\r\na2 NOOP\r\n")
    assert lines == [b"a1 NO [TOOBIG] Message too big", b"a2 OK NOOP completed"]
    assert conv.folder("INBOX").messages == 0


def test_literals_together_over_the_limit_of_another_command_stay_bad(conv):
    lines = conv.send(b"a1 LOGIN {3000+}\r\n" + b"x" * 3000 + b" {2000}\r\n")
    assert lines == [b"a1 BAD [TOOBIG] Literal too big"]


def test_oversized_nonsynchronising_literal_is_skipped(conv):
    # LITERAL+: the octets are already on their way; they are read, dropped, and the stream
    # stays in sync for the next command.
    data = b"y" * 5000
    lines = conv.send(b"a1 APPEND INBOX {5000+}\r\n" + data + b"\r\na2 NOOP\r\n")
    assert lines == [b"a1 NO [TOOBIG] Message too big", b"a2 OK NOOP completed"]
    assert conv.folder("INBOX").messages == 0


# -- over a real socket ---------------------------------------------------------------------------


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while marker not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {marker!r} within {timeout}s; got {data!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed; got {data!r}")
        data += chunk
    return data


@pytest.mark.e2e
def test_real_server_answers_toobig_without_the_literal(tmp_path):
    server = GximapProcess(tmp_path, tls=False, extra={"imap_max_literal_size": "4K"}).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            _read_until(sock, b"\r\n")
            sock.sendall(b"a1 LOGIN alice secret\r\n")
            assert b"APPENDLIMIT=4096" in _read_until(sock, b"a1 OK")
            # Announce 10 MB and send nothing more: the answer must come anyway.
            sock.sendall(b"a2 APPEND INBOX {10485760}\r\n")
            reply = _read_until(sock, b"\r\n")
            assert reply == b"a2 NO [TOOBIG] Message too big\r\n"
            sock.sendall(b"a3 STATUS INBOX (MESSAGES APPENDLIMIT)\r\n")
            reply = _read_until(sock, b"a3 OK")
            assert b"* STATUS INBOX (MESSAGES 0 APPENDLIMIT 4096)\r\n" in reply
            sock.sendall(b"a4 LOGOUT\r\n")
            _read_until(sock, b"a4 OK")
    finally:
        server.stop()


def test_a_refused_append_is_in_the_command_log(conv, caplog: pytest.LogCaptureFixture) -> None:
    """imap_cmd_debug (1: NO and BAD) shows the APPEND refused for its size, the case an
    administrator turns it on for ("my client cannot upload big attachments")."""
    from gximap.log import set_cmd_debug

    set_cmd_debug(1)
    try:
        with caplog.at_level("DEBUG", logger="gximap.cmd"):
            assert conv.send(b"a1 APPEND INBOX (\\Seen) {4097}\r\n") == [b"a1 NO [TOOBIG] Message too big"]
            conv.send(b"a2 APPEND INBOX {5000+}\r\n" + b"x" * 5000 + b"\r\n")
    finally:
        set_cmd_debug(0)
    lines = [record.getMessage() for record in caplog.records if record.name == "gximap.cmd"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("cmd conn=") and " user=alice NO: a1 APPEND {4097} (" in lines[0]
    assert " NO: a2 APPEND {5000+} (" in lines[1]
