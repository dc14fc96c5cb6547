"""Large body ranges sent from their files by the kernel (FileRegion, sendfile(2)): the transport's
queueing and partial sends, its fallback under DEFLATE, and when the IMAP session hands a range
over rather than reading it."""

from __future__ import annotations

import io
import os
import socket
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from conversation import Conversation

from gximap.net.handler import FileRegion
from gximap.net.transport import Transport
from midb.mime import Digest
from midb.store import INLINE_MAX

MIB = 1 << 20


def _body(size: int) -> bytes:
    line = bytes(range(33, 33 + 76)) + b"\r\n"
    return (line * (size // len(line) + 1))[:size]


def _region(path: Path, offset: int, length: int) -> FileRegion:
    return FileRegion(open(path, "rb", buffering=0), offset, length)  # noqa: SIM115 - the region owns it


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server_side, client_side = socket.socketpair()
    try:
        yield server_side, client_side
    finally:
        server_side.close()
        client_side.close()


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte counts os.sendfile was asked for, by any caller during the test."""
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        calls.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


def _receive_all(client_side: socket.socket, total: int, transport: Transport) -> bytes:
    """Read ``total`` bytes while the transport flushes (the socket buffers hold far less)."""
    received = bytearray()
    client_side.settimeout(10)
    while len(received) < total:
        transport.flush()
        received += client_side.recv(MIB)
    assert transport.flush()
    return bytes(received)


def test_a_region_goes_out_from_the_file_between_the_bytes_around_it(
        tmp_path: Path, pair: tuple[socket.socket, socket.socket], sendfile_calls: list[int]) -> None:
    server_side, client_side = pair
    body = _body(3 * MIB)
    path = tmp_path / "body"
    path.write_bytes(body)
    transport = Transport(server_side)
    offset, length = 100, 2 * MIB + 7
    region = _region(path, offset, length)
    head = b"* 1 FETCH (BODY[]<100> {%d}\r\n" % length
    transport.write(head)
    transport.write(region)
    transport.write(b")\r\n")
    assert transport.pending_output == len(head) + length + 3
    received = _receive_all(client_side, len(head) + length + 3, transport)
    assert received == head + body[offset:offset + length] + b")\r\n"
    assert sum(sendfile_calls) >= length  # the kernel sent the range: no read through Python
    assert region.file.closed
    assert transport.pending_output == 0
    assert transport.bytes_sent == len(received)


def test_a_region_for_a_reader_that_does_not_keep_up_resumes_where_it_stopped(
        tmp_path: Path, pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, client_side = pair
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    body = _body(4 * MIB)
    path = tmp_path / "body"
    path.write_bytes(body)
    transport = Transport(server_side)
    region = _region(path, 0, len(body))
    transport.write(region)
    assert not transport.flush()  # the socket is full long before 4 MiB
    assert 0 < transport.bytes_sent < len(body)
    assert transport.pending_output == len(body) - transport.bytes_sent
    assert not region.file.closed
    assert _receive_all(client_side, len(body), transport) == body
    assert region.file.closed


def test_a_file_that_ends_before_its_region_is_padded_with_spaces(
        tmp_path: Path, pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, client_side = pair
    path = tmp_path / "short"
    path.write_bytes(b"x" * 1000)
    transport = Transport(server_side)
    transport.write(_region(path, 0, 1500))
    transport.write(b")\r\n")
    assert _receive_all(client_side, 1503, transport) == b"x" * 1000 + b" " * 500 + b")\r\n"


def test_a_region_under_deflate_is_read_and_compressed_like_bytes(
        tmp_path: Path, pair: tuple[socket.socket, socket.socket], sendfile_calls: list[int]) -> None:
    server_side, client_side = pair
    body = _body(MIB + 3)
    path = tmp_path / "body"
    path.write_bytes(body)
    transport = Transport(server_side)
    transport.start_compress()
    region = _region(path, 3, MIB)
    transport.write(b"{%d}\r\n" % MIB)
    transport.write(region)
    transport.end_batch()
    assert region.file.closed  # read at once: nothing of the file waits in the queue
    inflate = zlib.decompressobj(-15)
    received = bytearray()
    client_side.settimeout(10)
    reader = threading.Thread(target=lambda: _drain_into(client_side, received))
    reader.start()
    try:
        while not transport.flush():
            pass
    finally:
        server_side.shutdown(socket.SHUT_WR)
        reader.join(10)
    assert inflate.decompress(bytes(received)) == b"{%d}\r\n" % MIB + body[3:3 + MIB]
    assert sendfile_calls == []


def _drain_into(sock: socket.socket, into: bytearray) -> None:
    while data := sock.recv(MIB):
        into += data


def test_closing_the_transport_closes_the_files_of_unsent_regions(
        tmp_path: Path, pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, _client_side = pair
    path = tmp_path / "body"
    path.write_bytes(_body(MIB))
    transport = Transport(server_side)
    region = _region(path, 0, MIB)
    transport.write(region)
    transport.close(graceful=False)
    assert region.file.closed


def test_an_empty_region_is_closed_and_sends_nothing(tmp_path: Path, pair: tuple[socket.socket, socket.socket]) -> None:
    server_side, _client_side = pair
    path = tmp_path / "body"
    path.write_bytes(b"abc")
    transport = Transport(server_side)
    region = FileRegion(io.FileIO(path), 0, 0)
    transport.write(region)
    assert region.file.closed and transport.pending_output == 0


# -- the IMAP session: which ranges are handed over ---------------------------------------------


def _fetch(conv: Conversation, text: str) -> bytes:
    lines = conv.send(f"f {text}\r\n".encode())
    assert lines[-1].startswith(b"f OK"), lines
    return b"\r\n".join(lines[:-1])


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Conversation]:
    conversation = Conversation(tmp_path, tls=False, file_regions=True, insecure_auth=True)
    try:
        conversation.login()
        yield conversation
    finally:
        conversation.close()


MESSAGE = b"From: big@example.org\r\nSubject: large\r\n\r\n" + _body(2 * MIB)


def test_a_large_body_goes_to_the_pool_as_a_region_of_its_file(plain: Conversation) -> None:
    plain.add_message(data=MESSAGE)
    plain.select()
    answer = _fetch(plain, "FETCH 1 BODY.PEEK[]")
    assert answer == b"* 1 FETCH (BODY[] {%d}\r\n" % len(MESSAGE) + MESSAGE + b")"
    assert plain.regions == [(0, len(MESSAGE))]
    start, length = 5, 3 * MIB // 2
    answer = _fetch(plain, f"FETCH 1 BODY.PEEK[]<{start}.{length}>")
    assert answer.endswith(b"{%d}\r\n" % length + MESSAGE[start:start + length] + b")")
    assert plain.regions[-1] == (start, length)
    assert _fetch(plain, "FETCH 1 BODY.PEEK[]<0.100>").endswith(MESSAGE[:100] + b")")
    assert len(plain.regions) == 2  # a small range is read as before


def test_ranges_larger_than_any_body_the_index_keeps_are_regions(plain: Conversation) -> None:
    plain.add_message(data=MESSAGE)
    plain.select()
    assert _fetch(plain, f"FETCH 1 BODY.PEEK[]<0.{INLINE_MAX}>").endswith(MESSAGE[:INLINE_MAX] + b")")
    assert plain.regions == []  # read at once, as the bodies kept in the index are
    assert _fetch(plain, f"FETCH 1 BODY.PEEK[]<0.{INLINE_MAX + 1}>").endswith(MESSAGE[:INLINE_MAX + 1] + b")")
    assert plain.regions == [(0, INLINE_MAX + 1)]


def test_a_body_with_a_nul_is_read_and_the_nul_replaced(plain: Conversation) -> None:
    data = MESSAGE[:MIB] + b"\x00" + MESSAGE[MIB + 1:]
    plain.add_message(data=data)
    plain.select()
    answer = _fetch(plain, "FETCH 1 BODY.PEEK[]")
    assert answer.endswith(MESSAGE[:MIB] + b"\x80" + MESSAGE[MIB + 1:] + b")")
    assert plain.regions == []


@pytest.mark.parametrize("nul", [False, True], ids=["text", "with-nul"])
@pytest.mark.parametrize("digest", ["older", "not-parsed-yet"])
def test_without_a_digest_that_knows_the_range_is_looked_at(
        plain: Conversation, monkeypatch: pytest.MonkeyPatch, nul: bool, digest: str) -> None:
    data = MESSAGE[:MIB] + b"\x00" + MESSAGE[MIB + 1:] if nul else MESSAGE
    plain.add_message(data=data)
    plain.select()
    store = plain.store
    known = store.known_digest
    monkeypatch.setattr(store, "known_digest", lambda blob: (
        cast(Digest, known(blob))._replace(contains_nul=None) if digest == "older" else None))
    answer = _fetch(plain, "FETCH 1 BODY.PEEK[]")
    assert answer.endswith(data.replace(b"\x00", b"\x80") + b")")
    assert plain.regions == ([] if nul else [(0, len(data))])
    assert _fetch(plain, f"FETCH 1 BODY.PEEK[]<{MIB + 1}.{MIB + 100}>").endswith(data[MIB + 1:2 * MIB + 101] + b")")
    assert len(plain.regions) == (1 if nul else 2)  # after the NUL: no NUL in this range


@pytest.mark.parametrize(("tls", "file_regions"), [(True, True), (False, False)], ids=["tls", "pool-without"])
def test_no_regions_under_tls_or_for_a_pool_without_them(tmp_path: Path, tls: bool, file_regions: bool) -> None:
    conv = Conversation(tmp_path, tls=tls, file_regions=file_regions, insecure_auth=True)
    try:
        conv.login()
        conv.add_message(data=MESSAGE)
        conv.select()
        assert _fetch(conv, "FETCH 1 BODY.PEEK[]").endswith(MESSAGE + b")")
        assert conv.regions == []
    finally:
        conv.close()


def test_no_regions_once_compression_is_on(plain: Conversation) -> None:
    plain.add_message(data=MESSAGE)
    plain.select()
    plain.command("COMPRESS DEFLATE")  # every byte goes through zlib from here on (not in this harness)
    assert _fetch(plain, "FETCH 1 BODY.PEEK[]").endswith(MESSAGE + b")")
    assert plain.regions == []


def test_a_region_still_queued_in_the_session_when_the_connection_goes_is_closed(
        tmp_path: Path, plain: Conversation) -> None:
    path = tmp_path / "body"
    path.write_bytes(b"abc")
    region = _region(path, 0, 3)
    plain.session._out.append(region)  # rendered, not yet taken by the pool
    plain.close()
    assert region.file.closed
