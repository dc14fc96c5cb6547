"""The byte pipe under one connection: a non-blocking socket, optionally TLS, optionally DEFLATE.

Layering, outermost first: application bytes <-> DEFLATE (RFC 4978) <-> TLS <-> [proxy link TLS]
<-> socket. The proxy link is a TLS session with a reverse proxy that sends its PROXY header
inside it (maddy's ``proxy_protocol { tls }``): it starts before anything else is read, and the
PROXY header, the endpoint's own TLS and the IMAP bytes all travel inside it. TLS runs on
``ssl.SSLObject`` with memory BIOs rather than ``SSLSocket``, so that

- bytes read before TLS starts (after a PROXY header, or while sniffing an untrusted peer) can be
  handed to the TLS engine, since PROXY comes first on the wire even on implicit-TLS ports;
- every layer has the same non-blocking semantics: ``read`` returns what can be decoded now,
  ``write`` only encodes and queues, and ``flush`` moves queued wire bytes to the socket until it
  would block. Nothing here ever blocks or waits.

Public API (used by gximap.net.pool):
    Transport(sock, *, raw_chunk=65536)
    .read(limit) -> bytes          decoded bytes available now (b"" if none); sets .at_eof
    .input_backlog                 True when more decoded input may be available without socket I/O
    .write(data) / .end_batch()    queue application bytes (or a FileRegion); end_batch ends a DEFLATE
                                   batch (sync flush)
    .flush() -> bool               send queued bytes; True when nothing remains queued
    .pending_output, .bytes_sent
    .read_raw(limit), .prepend_raw(data)      raw access before any layer exists (PROXY, sniffing)
    .start_tls(context) / .handshake() -> bool / .tls / .tls_established / .tls_version / .tls_cipher
    .start_link_tls(context) / .link_handshake() -> bool / .linked / .link_tls_version
                                   the proxy link, before any other layer (raw access reads inside it)
    .start_compress() / .end_compress() / .compressed
    .close(graceful=True)
Errors: OSError from the socket; TransportError when the peer breaks TLS or DEFLATE, raised as
InvalidDeflateInput when only the client's DEFLATE stream is broken (what we send still decodes).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import socket
import ssl
import zlib
from collections.abc import Callable

from gximap.net.handler import FileRegion
from gximap.net.linger import LINGER

__all__ = ["InvalidDeflateInput", "Transport", "TransportError"]

# Plaintext items smaller than this are coalesced before compression/encryption, so a stream of
# small response lines becomes full TLS records instead of one record (and one SSL call) each.
_COALESCE_LIMIT = 16 * 1024
_MAX_IOVECS = 512  # stays well under IOV_MAX (1024 on Linux)
_REGION_READ = 256 * 1024  # a FileRegion under TLS or DEFLATE is read and encoded this much at a time
_CLOSE_DRAIN_ROUNDS = 4
# After UNAUTHENTICATE ended DEFLATE, at most this many bytes are held back to learn whether they
# end the client's stream (a late final block, Z_FINISH, is 2 to 5 bytes) or are plain input.
_LATE_END_LIMIT = 64


class TransportError(Exception):
    """The peer broke the TLS or DEFLATE layer; the connection must be dropped."""


class InvalidDeflateInput(TransportError):
    """The client's DEFLATE stream is broken. Only its input: our DEFLATE stream (and TLS under
    it) is intact, so the connection can still tell the client why before it closes."""


def _encrypt(session: ssl.SSLObject, data: bytes | bytearray | memoryview, layer: str) -> None:
    """All of ``data`` into ``session`` (its records wait in the session's outgoing BIO)."""
    view = memoryview(data)
    try:
        while view:
            written = session.write(view)
            view = view[written:]
    except ssl.SSLError as exc:
        raise TransportError(f"{layer} error while sending: {exc.reason or exc}") from exc


class _LinkTls:
    """The TLS session with a proxy, under every other layer; its own object so that a
    connection without one (nearly all of them) pays a single slot for it."""

    __slots__ = ("session", "incoming", "outgoing", "established")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.session = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.established = False


class Transport:
    # One per connection, most of them idle: slots, and the output queue exists only while bytes
    # wait in it (an empty deque still holds a 64-slot block).
    __slots__ = ("_sock", "_raw_chunk", "_raw_pending", "_link", "_tls", "_tls_in", "_tls_out", "_handshake_done",
                 "_deflate", "_inflate", "_deflate_dirty", "_plain_pending", "_wire", "_wire_bytes",
                 "_wire_regions", "_read_hit_limit", "_plain_input", "_late_inflate", "_late_input", "at_eof",
                 "bytes_sent", "bytes_received")

    def __init__(self, sock: socket.socket, *, raw_chunk: int = 64 * 1024) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._raw_chunk = raw_chunk
        self._raw_pending = b""  # raw bytes read ahead of the layers (PROXY remainder, sniffed bytes)
        self._link: _LinkTls | None = None
        self._tls: ssl.SSLObject | None = None
        self._tls_in: ssl.MemoryBIO | None = None
        self._tls_out: ssl.MemoryBIO | None = None
        self._handshake_done = False
        self._deflate: zlib._Compress | None = None
        self._inflate: zlib._Decompress | None = None
        self._deflate_dirty = False  # compressed bytes since the last sync flush
        self._plain_pending = bytearray()  # small items waiting to go through the layers together
        self._wire: collections.deque[bytes | bytearray | memoryview | FileRegion] | None = None
        self._wire_bytes = 0
        self._wire_regions = 0  # FileRegions in self._wire (flush() sends them with sendfile(2))
        self._read_hit_limit = False
        self._plain_input = b""  # input after the client's DEFLATE stream ended (end_compress)
        # The client's stream, not ended at end_compress(): the first bytes after it may still end
        # it (_read_late_end), held in _late_input until that is known.
        self._late_inflate: zlib._Decompress | None = None
        self._late_input = b""
        self.at_eof = False
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- state -------------------------------------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @property
    def tls_established(self) -> bool:
        return self._handshake_done

    @property
    def tls_version(self) -> str | None:
        return self._tls.version() if self._tls is not None and self._handshake_done else None

    @property
    def tls_cipher(self) -> str | None:
        if self._tls is None or not self._handshake_done:
            return None
        cipher = self._tls.cipher()
        return cipher[0] if cipher else None

    @property
    def linked(self) -> bool:
        """The connection runs inside a TLS session with a proxy (start_link_tls)."""
        return self._link is not None

    @property
    def link_tls_version(self) -> str | None:
        link = self._link
        return link.session.version() if link is not None and link.established else None

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    @property
    def pending_output(self) -> int:
        """Bytes accepted by write() and not yet handed to the kernel."""
        return self._wire_bytes + len(self._plain_pending)

    @property
    def input_backlog(self) -> bool:
        """More input may be decodable without the socket becoming readable again."""
        if self._raw_pending or self._read_hit_limit or self._plain_input:
            return True
        if self._inflate is not None and self._inflate.unconsumed_tail:
            return True
        link = self._link
        if link is not None and link.established and (link.session.pending() > 0 or link.incoming.pending > 0):
            return True
        if self._tls is None or not self._handshake_done:
            return False
        # pending() counts decrypted bytes only; ciphertext that arrived together with the
        # handshake's last flight still sits in the incoming BIO, and the socket will not become
        # readable again for it.
        return self._tls.pending() > 0 or (self._tls_in is not None and self._tls_in.pending > 0)

    def ends_without_input(self) -> bool:
        """The client has closed its side having sent nothing more: no input buffered here and
        nothing but the end of stream in the kernel (a peek, so the stream is left as it is)."""
        if self.at_eof or self.input_backlog or self._late_input:
            return False  # read already (a worker's to finish), or input to decode first
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except OSError:  # nothing yet (EAGAIN), or reset: not known to be only an end
            return False

    # -- raw access (before any layer) -------------------------------------------------------

    def prepend_raw(self, data: bytes) -> None:
        """Give back raw bytes that were read ahead; they are decoded before any new socket data."""
        if data:
            self._raw_pending = data + self._raw_pending

    def read_raw(self, limit: int) -> bytes:
        """Raw bytes from the wire (read-ahead first); b"" when none now. Sets at_eof."""
        return self._recv_raw(limit) or b""

    def _recv_raw(self, limit: int) -> bytes | None:
        """None: nothing available now; b"": end of stream (at_eof set). Inside the proxy link
        when there is one."""
        if self._raw_pending:
            data, self._raw_pending = self._raw_pending[:limit], self._raw_pending[limit:]
            return data
        if self.at_eof:
            return b""
        if self._link is not None:
            return self._recv_link(limit)
        return self._recv_socket(limit)

    def _recv_socket(self, limit: int) -> bytes | None:
        while True:
            try:
                data = self._sock.recv(limit)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            if not data:
                self.at_eof = True
            self.bytes_received += len(data)
            return data

    def _recv_link(self, limit: int) -> bytes | None:
        link = self._link
        assert link is not None
        if not link.established:
            raise RuntimeError("read before the proxy link's TLS handshake completed")
        try:
            while True:
                try:
                    data = link.session.read(limit)
                except ssl.SSLWantReadError:
                    raw = self._recv_socket(self._raw_chunk)
                    if not raw:
                        return raw  # None: nothing now; b"": EOF without close_notify, a close too
                    link.incoming.write(raw)
                    continue
                except ssl.SSLZeroReturnError:
                    data = b""
                except ssl.SSLError as exc:
                    raise TransportError(f"proxy TLS error: {exc.reason or exc}") from exc
                if not data:  # the proxy's close_notify
                    self.at_eof = True
                return data
        finally:
            self._pull_link_output()  # the alert, or protocol output of a read (a KeyUpdate)

    # -- layers ------------------------------------------------------------------------------

    def start_link_tls(self, context: ssl.SSLContext) -> None:
        """Begin the TLS session with a proxy, under everything else (see the module docstring):
        from here on, raw access and every other layer read and write inside it."""
        if self._link is not None or self._tls is not None or self._deflate is not None:
            raise RuntimeError("the proxy link must be the first layer of a connection")
        self._link = link = _LinkTls(context)
        if self._raw_pending:
            link.incoming.write(self._raw_pending)
            self._raw_pending = b""

    def link_handshake(self) -> bool:
        """Advance the proxy link's handshake, as handshake() does the endpoint's."""
        link = self._link
        if link is None:
            raise RuntimeError("link_handshake() without start_link_tls()")
        if not link.established:
            link.established = self._advance_handshake(link.session, link.incoming, self._recv_socket,
                                                       self._pull_link_output, "proxy TLS")
        return link.established

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Begin a server-side TLS session; read-ahead raw bytes become the first TLS input."""
        if self._tls is not None:
            raise RuntimeError("TLS is already active on this connection")
        if self._deflate is not None:
            raise RuntimeError("TLS cannot start under an active DEFLATE layer")
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._tls_in, self._tls_out, server_side=True)
        if self._raw_pending:
            self._tls_in.write(self._raw_pending)
            self._raw_pending = b""

    def handshake(self) -> bool:
        """Advance the TLS handshake. True when complete; False when it needs more from the peer
        (or must first get its own queued bytes out: check pending_output)."""
        if self._tls is None or self._tls_in is None:
            raise RuntimeError("handshake() without start_tls()")
        if not self._handshake_done:
            self._handshake_done = self._advance_handshake(self._tls, self._tls_in, self._recv_raw,
                                                           self._pull_tls_output, "TLS")
        return self._handshake_done

    def _advance_handshake(self, session: ssl.SSLObject, incoming: ssl.MemoryBIO,
                           receive: Callable[[int], bytes | None], pull_output: Callable[[], None],
                           layer: str) -> bool:
        """Shared by both TLS layers: True when the handshake is complete, False when it waits
        for the peer."""
        while True:
            try:
                session.do_handshake()
            except ssl.SSLWantReadError:
                pull_output()
                raw = receive(self._raw_chunk)
                if raw is None:
                    return False
                if not raw:
                    raise TransportError(f"connection closed during the {layer} handshake") from None
                incoming.write(raw)
                continue
            except ssl.SSLError as exc:
                pull_output()  # the alert, so the peer learns why
                raise TransportError(f"{layer} handshake failed: {exc.reason or exc}") from exc
            pull_output()
            return True

    def start_compress(self) -> None:
        """RFC 4978 COMPRESS=DEFLATE: raw DEFLATE (no zlib header) both ways from here on."""
        if self._deflate is not None:
            raise RuntimeError("DEFLATE is already active on this connection")
        self._encode_plain_pending()
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)

    def end_compress(self) -> None:
        """End DEFLATE both ways (RFC 8437 section 4.1, UNAUTHENTICATE): what was written is
        compressed and the stream ended with its final block, in place of the sync flush that
        would end the batch, so that the end comes in the same bytes as the answer before it;
        from here on output is plain. The client ends its stream after its command: input from
        there is plain, and what it sent behind the end of the stream (Z_FINISH) is read first.
        A client that ends its stream only once it has the answer sends that end (a final block
        with nothing in it) in front of its next plain command: while its stream has not ended,
        the first bytes read are checked for it (_read_late_end). Compressed input not inflated
        yet belongs to the old stream and is dropped."""
        deflate, inflate = self._deflate, self._inflate
        if deflate is None or inflate is None:
            raise RuntimeError("DEFLATE is not active on this connection")
        self._encode_plain_pending()
        self._deflate = self._inflate = None
        self._deflate_dirty = False
        self._encode_lower(deflate.flush(zlib.Z_FINISH))
        if inflate.eof:
            self._plain_input = inflate.unused_data
        else:
            self._plain_input = b""
            self._late_inflate = inflate if not inflate.unconsumed_tail else None

    # -- reading -----------------------------------------------------------------------------

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` decoded bytes available now; b"" if none (check at_eof).

        The limit also bounds what DEFLATE may expand to per call: a small compressed input
        claiming gigabytes is decompressed ``limit`` bytes at a time (input_backlog stays set).
        """
        if limit <= 0:
            raise ValueError("read limit must be positive")
        if self._late_inflate is not None and not self._read_late_end():
            self._read_hit_limit = False
            return b""  # held: they may still end the client's stream
        if self._plain_input:  # what _read_late_end() or end_compress() found to be plain, first
            data, self._plain_input = self._plain_input[:limit], self._plain_input[limit:]
            self._read_hit_limit = False
            return data
        if self._inflate is not None:
            data, self._read_hit_limit = self._read_inflated(limit)
        else:
            data, self._read_hit_limit = self._read_decrypted(limit)
        return data

    def _read_decrypted(self, limit: int) -> tuple[bytes, bool]:
        """(data, stopped_at_limit) from the TLS layer, or from the socket when there is none."""
        if self._tls is None:
            chunks: list[bytes] = []
            got = 0
            while got < limit:
                want = limit - got
                data = self._recv_raw(want)
                if not data:
                    break
                chunks.append(data)
                got += len(data)
                if len(data) < want and not self._raw_pending and self._link is None:
                    break  # the kernel buffer is drained; an extra recv would only say EAGAIN
            return b"".join(chunks), got >= limit
        if not self._handshake_done:
            raise RuntimeError("read() before the TLS handshake completed")
        assert self._tls_in is not None
        out = bytearray()
        while len(out) < limit:
            try:
                chunk = self._tls.read(limit - len(out))
                if not chunk:  # the peer's close_notify (CPython returns b"" rather than raising)
                    self.at_eof = True
                    break
                out += chunk
            except ssl.SSLWantReadError:
                raw = self._recv_raw(self._raw_chunk)
                if not raw:
                    break  # None: nothing now; b"": EOF without close_notify, treated as a close
                self._tls_in.write(raw)
            except ssl.SSLZeroReturnError:
                self.at_eof = True
                break
            except ssl.SSLError as exc:
                self._pull_tls_output()
                raise TransportError(f"TLS error: {exc.reason or exc}") from exc
        self._pull_tls_output()  # a read may produce protocol output (e.g. a TLS 1.3 KeyUpdate)
        return bytes(out), len(out) >= limit

    def _read_late_end(self) -> bool:
        """After end_compress(), with the client's stream not ended: True once it is known
        whether the first bytes that came end that stream cleanly (they inflate to nothing and
        reach its end; what follows the end is plain) or are plain input themselves (anything
        else: undecodable, decoding to data, or a line's end or _LATE_END_LIMIT bytes without an
        end). False while they could still be the start of a final block: they are held."""
        inflate = self._late_inflate
        assert inflate is not None
        more = self._read_decrypted(self._raw_chunk)[0]
        if not more and not self.at_eof:
            return False
        held = self._late_input + more
        probe = inflate.copy()  # all the held bytes again, from where the stream stood
        try:
            ended = not probe.decompress(held, 1) and probe.eof
        except zlib.error:
            ended = False
        if ended:
            held = probe.unused_data
        elif not (self.at_eof or b"\n" in held or len(held) >= _LATE_END_LIMIT):
            # Undecided: the start of a final block, or of a plain line (a whole line always
            # decides: a complete command is never held back).
            self._late_input = held
            return False
        self._late_inflate = None
        self._late_input = b""
        self._plain_input = held
        return True

    def _read_inflated(self, limit: int) -> tuple[bytes, bool]:
        inflate = self._inflate
        assert inflate is not None
        if inflate.eof:
            # The client ended its stream, and no end_compress() followed (no UNAUTHENTICATE,
            # after which it may): anything more from it is not DEFLATE data.
            if inflate.unused_data or self._read_decrypted(self._raw_chunk)[0]:
                raise InvalidDeflateInput("data after the end of the client's DEFLATE stream")
            return b"", False
        chunks: list[bytes] = []
        got = 0
        lower_backlog = False
        while got < limit:
            compressed = inflate.unconsumed_tail
            if not compressed:
                compressed, lower_backlog = self._read_decrypted(self._raw_chunk)
                if not compressed:
                    break
            try:
                data = inflate.decompress(compressed, limit - got)
            except zlib.error as exc:
                raise InvalidDeflateInput(f"invalid DEFLATE data from the client: {exc}") from exc
            chunks.append(data)
            got += len(data)
            if inflate.eof:
                break  # what follows (unused_data) is plain, if end_compress() comes next
        backlog = got >= limit or lower_backlog or bool(inflate.unconsumed_tail)
        return b"".join(chunks), backlog

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview | FileRegion) -> None:
        """Queue application bytes (encoded through the active layers). Never blocks.

        A FileRegion on a plain connection is queued as it is: flush() has the kernel send it
        from the file. Under TLS or DEFLATE it is read and encoded at once, like bytes would be
        (its producer, the session, sends such regions only on plain connections)."""
        if type(data) is FileRegion:
            self._write_region(data)
            return
        if isinstance(data, memoryview) and data.format != "B":
            data = data.cast("B")
        if not data:
            return
        if self._tls is None and self._deflate is None and self._link is None:
            self._queue_wire(data)
            return
        if len(data) < _COALESCE_LIMIT:
            self._plain_pending += data
            if len(self._plain_pending) >= _COALESCE_LIMIT:
                self._encode_plain_pending()
            return
        self._encode_plain_pending()
        self._encode(data)

    def _write_region(self, region: FileRegion) -> None:
        if not region.length:
            region.close()
        elif self._tls is None and self._deflate is None and self._link is None:
            self._wire_regions += 1
            self._queue_wire(region)
        else:
            try:
                for chunk in region.chunks(_REGION_READ):
                    self.write(chunk)
            finally:
                region.close()

    def end_batch(self) -> None:
        """The end of a batch of output: push everything through, with a DEFLATE sync flush so
        the client can decode all of it now (interactive replies, IDLE updates)."""
        self._encode_plain_pending()
        if self._deflate is not None and self._deflate_dirty:
            self._deflate_dirty = False
            self._encode_lower(self._deflate.flush(zlib.Z_SYNC_FLUSH))

    def _encode_plain_pending(self) -> None:
        if self._plain_pending:
            data = bytes(self._plain_pending)
            self._plain_pending.clear()
            self._encode(data)

    def _encode(self, data: bytes | bytearray | memoryview) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data)
            self._deflate_dirty = True
        self._encode_lower(data)

    def _encode_lower(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._tls is None:
            self._below_tls(data)
            return
        _encrypt(self._tls, data, "TLS")
        self._pull_tls_output()

    def _pull_tls_output(self) -> None:
        if self._tls_out is not None and self._tls_out.pending:
            self._below_tls(self._tls_out.read())

    def _below_tls(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes for the peer from above the proxy link: through it when there is one."""
        link = self._link
        if link is None:
            self._queue_wire(data)
            return
        _encrypt(link.session, data, "proxy TLS")
        self._pull_link_output()

    def _pull_link_output(self) -> None:
        link = self._link
        if link is not None and link.outgoing.pending:
            self._queue_wire(link.outgoing.read())

    def _queue_wire(self, data: bytes | bytearray | memoryview | FileRegion) -> None:
        if self._wire is None:
            self._wire = collections.deque()
        self._wire.append(data)
        self._wire_bytes += len(data)

    def flush(self) -> bool:
        """Hand queued bytes to the kernel until it would block. True when nothing is left."""
        if self._plain_pending:
            self._encode_plain_pending()
        wire = self._wire
        while wire:
            head = wire[0]
            if self._wire_regions and type(head) is FileRegion:
                if not self._send_region(head):
                    return False
                continue
            try:
                if len(wire) == 1:
                    sent = self._sock.send(head)  # type: ignore[arg-type]  # not a FileRegion (above)
                else:
                    items = list(itertools.islice(wire, _MAX_IOVECS))
                    flags = 0
                    if self._wire_regions:
                        for index, item in enumerate(items):
                            if type(item) is FileRegion:
                                # The bytes before a region (a literal's header) share its packets.
                                items, flags = items[:index], socket.MSG_MORE
                                break
                    # No FileRegion in items: none queued, or items cut before the first (above).
                    sent = self._sock.sendmsg(items, (), flags)  # type: ignore[arg-type]
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            self.bytes_sent += sent
            self._wire_bytes -= sent
            while sent:
                head = wire[0]
                if sent >= len(head):
                    sent -= len(head)
                    wire.popleft()
                else:
                    wire[0] = memoryview(head)[sent:]  # type: ignore[arg-type]  # bytes: sendmsg took it
                    sent = 0
        self._wire = None
        return True

    def _send_region(self, region: FileRegion) -> bool:
        """Have the kernel send the FileRegion at the head of the queue; False when the socket
        would block first. Sent whole, it is closed and taken off the queue; a file that ends
        early leaves spaces in its place (FileRegion)."""
        wire = self._wire
        assert wire is not None and wire[0] is region
        sock_fd = self._sock.fileno()
        while region.length > 0:
            try:
                sent = os.sendfile(sock_fd, region.fileno(), region.offset, region.length)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            if sent == 0:  # end of file before the promised length
                wire[0] = b" " * region.length
                break
            region.advance(sent)
            self.bytes_sent += sent
            self._wire_bytes -= sent
        else:
            wire.popleft()
        region.close()
        self._wire_regions -= 1
        return True

    def _drop_regions(self) -> None:
        """Close the files of regions that will not be sent now (the connection is closing)."""
        if self._wire_regions and self._wire is not None:
            for item in self._wire:
                if type(item) is FileRegion:
                    item.close()
        self._wire_regions = 0

    # -- closing -----------------------------------------------------------------------------

    def close(self, *, graceful: bool = True) -> None:
        """Close the socket. Graceful: TLS close_notify, last bytes flushed (best effort, without
        blocking), our side shut down, unread input discarded, so the kernel does not answer
        the peer with a reset that could destroy the final response in flight."""
        lingering = False
        try:
            if graceful:
                lingering = self._close_gracefully()
        finally:
            self._drop_regions()
            self._wire = None
            self._wire_bytes = 0
            self._plain_pending.clear()
            # A peer still sending gets time to read our last bytes and finish (gximap.net.linger).
            if not (lingering and LINGER.adopt(self._sock)):
                with contextlib.suppress(OSError):
                    self._sock.close()

    def _close_gracefully(self) -> bool:
        """Flush and shut down our side; True when the peer has not closed its side yet, so the
        socket should linger rather than be closed at once."""
        with contextlib.suppress(OSError, TransportError, ssl.SSLError):
            self.end_batch()
            if self._deflate is not None:
                # The DEFLATE stream's final block: the client's inflater then sees the stream
                # end before the connection does, rather than an EOF inside a stream (zlib's
                # Z_BUF_ERROR, which Delta Chat logs as an IDLE failure at every server stop).
                deflate, self._deflate = self._deflate, None
                self._encode_lower(deflate.flush(zlib.Z_FINISH))
        if self._tls is not None and self._handshake_done:
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()  # queues close_notify; waiting for the peer's is not needed
            with contextlib.suppress(TransportError):  # the proxy link's, when it carries it
                self._pull_tls_output()
        link = self._link
        if link is not None and link.established:
            with contextlib.suppress(ssl.SSLError):
                link.session.unwrap()
            self._pull_link_output()
        with contextlib.suppress(OSError):
            self.flush()
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False  # not connected any more: nothing to wait for
        # Linger only for a peer caught sending: one that waits for our answer (a LOGOUT) sends
        # nothing more, and its socket is closed at once (the lingering thread costs a login
        # rate some 10 %). And only when something was sent: a refusal that wrote nothing (a
        # TLS listener's when busy) has no answer to protect, and a ClientHello would hold a
        # lingering slot just when the server is short of them.
        sending = False
        for _ in range(_CLOSE_DRAIN_ROUNDS):
            try:
                if not self._sock.recv(self._raw_chunk):
                    return False  # the peer's end-of-file: a close now resets nothing
            except BlockingIOError:
                break
            except OSError:
                return False
            sending = True
        return sending and self.bytes_sent > 0
