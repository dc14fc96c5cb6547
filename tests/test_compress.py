"""COMPRESS=DEFLATE (RFC 4978) at the session level: what the session decides and asks the pool
to do. The DEFLATE stream itself is checked on real sockets in test_e2e_compress.py."""

from __future__ import annotations

import pytest
from conversation import Conversation

from gximap.net.handler import TransportAction


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path) as conversation:
        yield conversation


def test_offered_only_after_login_and_until_active(conv):
    assert "COMPRESS=DEFLATE" not in conv.capabilities()
    conv.login()
    assert "COMPRESS=DEFLATE" in conv.capabilities()
    conv.command("COMPRESS DEFLATE")
    assert "COMPRESS=DEFLATE" not in conv.capabilities()


def test_rfc4978_example(conv):
    conv.login()
    conv.script("""
        C: a001 COMPRESS DEFLATE
        S: a001 OK DEFLATE active
    """)
    # The tagged OK goes out first, uncompressed; then the pool switches the stream.
    assert conv.actions == [TransportAction.COMPRESS]
    assert conv.session.compressed
    conv.script("""
        C: a002 NOOP
        S: a002 OK NOOP completed
    """)


def test_second_compress_is_refused(conv):
    conv.login()
    conv.command("COMPRESS DEFLATE")
    conv.script("""
        C: a2 COMPRESS DEFLATE
        S: a2 NO [COMPRESSIONACTIVE] Compression already active
    """)
    assert conv.actions == [TransportAction.COMPRESS]


def test_unknown_algorithm_is_bad(conv):
    conv.login()
    conv.script("""
        C: a1 COMPRESS LZ4
        S: a1 BAD [CLIENTBUG] Unknown compression algorithm
        C: a2 COMPRESS deflate
        S: a2 OK DEFLATE active
    """)
    assert conv.actions == [TransportAction.COMPRESS]


def test_not_valid_before_authentication(conv):
    conv.script("""
        C: a1 COMPRESS DEFLATE
        S: a1 BAD [CLIENTBUG] Log in first
    """)
    assert conv.actions == []


def test_missing_algorithm_is_a_parse_error(conv):
    conv.login()
    lines = conv.send(b"a1 COMPRESS\r\n")
    assert lines[0].startswith(b"a1 BAD ")
    assert conv.actions == []


def test_valid_in_selected_state_with_pending_updates_first(conv):
    conv.login()
    conv.select()
    conv.add_message()  # another client delivers while we are selected
    conv.script("""
        C: a1 COMPRESS DEFLATE
        S: * 1 EXISTS
        S: * 1 RECENT
        S: a1 OK DEFLATE active
    """)
    assert conv.actions == [TransportAction.COMPRESS]


def test_bytes_pipelined_behind_compress_are_discarded(conv):
    # RFC 4978 section 3: the client waits for the tagged response; anything it sent before
    # cannot be told apart from compressed data and must not be executed.
    conv.login()
    lines = conv.send(b"a1 COMPRESS DEFLATE\r\na2 DELETE Trash\r\n")
    assert lines == [b"a1 OK DEFLATE active"]
    assert conv.store.get_folder("alice", "Trash") is not None
    assert conv.send(b"a3 NOOP\r\n") == [b"a3 OK NOOP completed"]


def test_unauthenticate_ends_compression(conv):
    """RFC 8437 section 4.1: with COMPRESS active, the server ends its DEFLATE stream after the
    CRLF of UNAUTHENTICATE's OK, and the client its own after the command's CRLF: what the
    session decoded behind the command came through the old stream and is discarded, as behind
    COMPRESS. After a new login COMPRESS is offered and works again. DEFLATE was kept, and a
    second COMPRESS refused."""
    conv.login()
    conv.command("COMPRESS DEFLATE")
    assert conv.send(b"u1 UNAUTHENTICATE\r\nu2 NOOP\r\n") == [b"u1 OK UNAUTHENTICATE completed"]
    assert conv.actions == [TransportAction.COMPRESS, TransportAction.END_COMPRESS]
    assert not conv.session.compressed
    assert conv.send(b"u3 NOOP\r\n") == [b"u3 OK NOOP completed"]
    conv.login()
    assert "COMPRESS=DEFLATE" in conv.capabilities()
    assert conv.send(b"c1 COMPRESS DEFLATE\r\n") == [b"c1 OK DEFLATE active"]
    assert conv.actions == [TransportAction.COMPRESS, TransportAction.END_COMPRESS, TransportAction.COMPRESS]


def test_unauthenticate_without_compression_changes_no_transport(conv):
    conv.login()
    conv.command("UNAUTHENTICATE")
    assert conv.actions == []


def test_starttls_after_compress_and_unauthenticate(tmp_path):
    """UNAUTHENTICATE ends DEFLATE, so nothing stands in TLS's way: STARTTLS is offered again
    and starts. It was refused (BAD), TLS being unable to start beneath DEFLATE."""
    with Conversation(tmp_path, tls=False, starttls=True, insecure_auth=True) as conv:
        conv.login()
        conv.command("COMPRESS DEFLATE")
        conv.command("UNAUTHENTICATE")
        assert "STARTTLS" in conv.capabilities()
        assert conv.send(b"a1 STARTTLS\r\n") == [b"a1 OK Begin TLS negotiation now"]
        assert conv.actions == [TransportAction.COMPRESS, TransportAction.END_COMPRESS, TransportAction.STARTTLS]


def test_undecodable_compressed_input_ends_the_session_with_a_bye(conv):
    """The pool found the client's DEFLATE stream broken: the session says why, even in the
    middle of a command, and reads nothing more."""
    conv.login()
    conv.command("COMPRESS DEFLATE")
    conv.select()
    assert conv.send(b"i IDLE\r\n") == [b"+ idling"]
    assert conv.undecodable_input() == [b"* BYE Invalid compressed data, closing connection"]
    assert conv.actions == [TransportAction.COMPRESS, TransportAction.CLOSE] and conv.closed


def test_compress_that_finds_the_selected_mailbox_deleted_says_goodbye_compressed(conv):
    """COMPRESS's own sync may find the selected mailbox deleted by another session: the tagged
    OK goes out as usual, the stream switches, and the goodbye follows through the DEFLATE
    stream (as after any other command), not at the client's next command."""
    conv.login()
    conv.command("CREATE Box")
    conv.select("Box")
    conv.store.delete_folder("alice", "Box")
    assert conv.send(b"a1 COMPRESS DEFLATE\r\n") == [
        b"a1 OK DEFLATE active", b"* BYE Selected mailbox was deleted, closing connection"]
    assert conv.actions == [TransportAction.COMPRESS, TransportAction.CLOSE] and conv.closed
