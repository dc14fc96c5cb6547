"""Shared pieces for the networking tests: a line-protocol test handler, a blocking test client,
and a server context manager. Everything is bounded in time."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from gximap.net.handler import ConnectionInfo, OutputItem, TransportAction, Waker
from gximap.net.listener import ListenerSpec, bind_listeners
from gximap.net.pool import Server, blocking_section
from gximap.net.siblings import SiblingChannel

BIG_CHUNK = 16 * 1024
TIMEOUT = 5.0

_open_clients: list[Client] = []  # closed when the server context they were used with ends


class Recorder:
    """What the handlers of one server saw, readable from the test thread."""

    def __init__(self, idle_timeout: float = 0.0, *, handler_class: type[LineHandler] | None = None) -> None:
        self.idle_timeout = idle_timeout
        self.handler_class = handler_class or LineHandler
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.handlers: list[LineHandler] = []
        self.wakers: list[Waker] = []
        self.go = threading.Event()  # releases handlers waiting in BLOCKED

    def record(self, kind: str, detail: str = "") -> None:
        with self.lock:
            self.events.append((kind, detail))

    def count(self, kind: str, detail: str | None = None) -> int:
        with self.lock:
            return sum(1 for k, d in self.events if k == kind and (detail is None or d == detail))

    def details(self, kind: str) -> list[str]:
        with self.lock:
            return [d for k, d in self.events if k == kind]

    def factory(self, info: ConnectionInfo, waker: Waker) -> LineHandler:
        handler = self.handler_class(info, waker, self)
        with self.lock:
            self.handlers.append(handler)
        return handler


class LineHandler:
    """One command per CRLF line: NOOP, ECHO text, PEER, SLOW seconds, BIG n, TRICKLE n seconds,
    LAZY, WAIT, STARTTLS, COMPRESS, UNCOMPRESS, QUIT, BOOM (raises). BIG streams n bytes lazily, counting what
    was generated; TRICKLE streams n short lines, each taking that long to make (a FETCH whose
    every response needs a body read)."""

    def __init__(self, info: ConnectionInfo, waker: Waker, recorder: Recorder) -> None:
        self.info = info
        self.waker = waker
        self.recorder = recorder
        self.buffer = bytearray()
        # No FileRegion: this handler never queues one (next_output() passes through the rest).
        self.output: deque[bytes | memoryview | TransportAction | Iterator[bytes]] = deque()
        self.generated = 0
        self.lazy_pending = 0  # LAZY commands whose answer next_output() has not produced yet
        self.tls = info.tls

    def start(self) -> None:
        self.recorder.record("start", self.info.peer_host)
        self.output.append(b"* OK test server ready\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data

    def process(self, budget: int) -> bool:
        for _ in range(budget):
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return self.lazy_pending > 0
            line = bytes(self.buffer[:end]).decode("utf-8", "replace")
            del self.buffer[: end + 2]
            self.recorder.record("line", line)
            self._execute(line)
        return b"\r\n" in self.buffer or self.lazy_pending > 0

    def _execute(self, line: str) -> None:
        command, _, argument = line.partition(" ")
        command = command.upper()
        if command == "NOOP":
            self.output.append(b"OK NOOP\r\n")
        elif command == "ECHO":
            self.output.append(f"OK {argument}\r\n".encode())
        elif command == "PEER":
            info = self.info
            text = (
                f"OK {info.peer_host} {info.peer_port} {info.local_host} {info.local_port} "
                f"tls={self.tls} starttls={info.starttls_available} proxied={info.proxied} "
                f"kind={info.listener}\r\n"
            )
            self.output.append(text.encode())
        elif command == "THREAD":
            self.output.append(f"OK {threading.current_thread().name}\r\n".encode())
        elif command == "SLOW":
            time.sleep(float(argument))
            self.output.append(b"OK slow\r\n")
        elif command == "BLOCKED":
            # Waits for the test's go-ahead inside a declared blocking section (as midb's commit
            # waits do), nested once to show that only the outermost section counts.
            with blocking_section(), blocking_section():
                self.recorder.go.wait(float(argument or 10))
            self.output.append(b"OK unblocked\r\n")
        elif command == "BIG":
            self.output.append(self._big(int(argument)))
            self.output.append(b"\r\nOK big\r\n")
        elif command == "TRICKLE":
            count, seconds = argument.split()
            self.output.append(self._trickle(int(count), float(seconds)))
        elif command == "LAZY":
            # Answered by next_output(), the way an IMAP session runs its commands: until then
            # process() reports more work.
            self.lazy_pending += 1
            self.output.append(self._lazy())
        elif command == "WAIT":
            with self.recorder.lock:
                self.recorder.wakers.append(self.waker)
            self.output.append(b"OK waiting\r\n")
        elif command == "STARTTLS":
            self.output.append(b"OK begin TLS\r\n")
            self.output.append(TransportAction.STARTTLS)
            self.buffer.clear()  # what was pipelined after STARTTLS must never be executed
        elif command == "COMPRESS":
            self.output.append(b"OK DEFLATE active\r\n")
            self.output.append(TransportAction.COMPRESS)
        elif command == "UNCOMPRESS":  # as IMAP's UNAUTHENTICATE under COMPRESS (RFC 8437 section 4.1)
            self.output.append(b"OK uncompressed\r\n")
            self.output.append(TransportAction.END_COMPRESS)
            self.buffer.clear()  # decoded from the client's old DEFLATE stream
        elif command == "QUIT":
            self.output.append(b"* BYE bye\r\n")
            self.output.append(TransportAction.CLOSE)
        elif command == "BOOM":
            raise RuntimeError("BOOM requested by the client")
        else:
            self.output.append(b"BAD unknown command\r\n")

    def _lazy(self) -> Iterator[bytes]:
        self.lazy_pending -= 1
        yield b"OK lazy\r\n"

    def _trickle(self, count: int, seconds: float) -> Iterator[bytes]:
        for number in range(count):
            time.sleep(seconds)
            yield f"* {number + 1} TRICKLE\r\n".encode()
        self.recorder.record("trickled")
        yield b"OK trickled\r\n"

    def _big(self, size: int) -> Iterator[bytes]:
        chunk = b"x" * BIG_CHUNK
        remaining = size
        while remaining > 0:
            piece = chunk if remaining >= BIG_CHUNK else chunk[:remaining]
            self.generated += len(piece)
            remaining -= len(piece)
            yield piece

    def next_output(self) -> OutputItem | None:
        while self.output:
            head = self.output[0]
            if isinstance(head, bytes | memoryview | TransportAction):
                self.output.popleft()
                return head
            piece = next(head, None)
            if piece is not None:
                return piece
            self.output.popleft()
        return None

    def idle_timeout(self) -> float:
        return self.recorder.idle_timeout

    def timed_out(self) -> bool:
        self.recorder.record("timed_out", self.info.peer_host)
        self.output.append(b"* BYE idle timeout\r\n")
        self.output.append(TransportAction.CLOSE)
        return True

    def wakeup(self) -> None:
        self.recorder.record("wakeup")
        self.output.append(b"* WOKE\r\n")

    def shutdown(self) -> None:
        self.recorder.record("shutdown")
        self.output.append(b"* BYE server shutting down\r\n")
        self.output.append(TransportAction.CLOSE)

    def input_undecodable(self) -> None:
        self.recorder.record("input_undecodable")
        self.output.append(b"* BYE undecodable input\r\n")
        self.output.append(TransportAction.CLOSE)

    def transport_changed(self, action: TransportAction, tls: bool) -> None:
        self.tls = tls
        self.recorder.record("transport_changed", f"{action.value} tls={tls}")

    def connection_lost(self) -> None:
        self.recorder.record("connection_lost", self.info.peer_host)


class LoginLineHandler(LineHandler):
    """A LineHandler with a login state: LOGIN logs in; until then the pool may displace it."""

    logged_in = False

    def _execute(self, line: str) -> None:
        command, _, argument = line.partition(" ")
        if command.upper() != "LOGIN":
            super()._execute(line)
            return
        if argument == "slow":  # a password check: waits for the test's go-ahead, as BLOCKED
            with blocking_section():
                self.recorder.go.wait(10)
        self.logged_in = True
        self.output.append(b"OK logged in\r\n")

    def displaceable(self) -> bool:
        return not self.logged_in

    def displaced(self) -> None:
        self.recorder.record("displaced", str(self.info.peer_port))
        self.output.append(b"* BYE displaced\r\n")
        self.output.append(TransportAction.CLOSE)


class CheckingLoginLineHandler(LoginLineHandler):
    """A LoginLineHandler that tells the pool when its password check is in flight (awaiting)."""

    checking = False

    def _execute(self, line: str) -> None:
        self.checking = line == "LOGIN slow"
        try:
            super()._execute(line)
        finally:
            self.checking = False

    def awaiting(self) -> bool:
        return self.checking


class AsyncLoginLineHandler(LoginLineHandler):
    """A LoginLineHandler whose ``LOGIN async`` is checked off the workers, as gximap's sessions
    check passwords: the connection is parked meanwhile, awaiting() is True, and the waker
    fires when the check (waiting for recorder.go) is done."""

    checking = False
    checked = False

    def _execute(self, line: str) -> None:
        if line != "LOGIN async":
            super()._execute(line)
            return
        self.checking = True

        def check() -> None:
            self.recorder.go.wait(10)
            self.checked = True
            self.waker()

        threading.Thread(target=check, daemon=True).start()

    def process(self, budget: int) -> bool:
        if self.checked and self.checking:
            self.checking = False
            self.logged_in = True
            self.output.append(b"OK logged in\r\n")
        return super().process(budget)

    def awaiting(self) -> bool:
        return self.checking and not self.checked


class Client:
    """A blocking line client with optional TLS and DEFLATE, every call bounded by a timeout."""

    def __init__(self, host: str, port: int, *, rcvbuf: int | None = None, timeout: float = TIMEOUT,
                 source: str | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if source is not None:  # another loopback address (127.0.0.0/8), as a second host
            sock.bind((source, 0))
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError:
            sock.close()
            raise
        self.sock: socket.socket = sock
        _open_clients.append(self)
        self.host = host
        self.buffer = bytearray()
        self.deflate: Any = None
        self.inflate: Any = None
        self.raw_received = 0

    def send(self, data: bytes) -> None:
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(256 * 1024)
        if not data:
            return False
        self.raw_received += len(data)
        if self.inflate is not None:
            data = self.inflate.decompress(data)
        self.buffer += data
        return True

    def readline(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[: end + 2])
                del self.buffer[: end + 2]
                return line
            if not self._fill():
                raise EOFError(f"connection closed; unterminated data {bytes(self.buffer[:80])!r}")

    def command(self, line: str) -> bytes:
        self.send(line.encode() + b"\r\n")
        return self.readline()

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise EOFError("connection closed")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_until_eof(self) -> bytes:
        """Everything up to the end of the stream (a reset also counts as the end)."""
        with contextlib.suppress(ConnectionResetError):
            while self._fill():
                pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def starttls(self, context: ssl.SSLContext) -> None:
        """TLS from here on; a second call nests a TLS session inside the first (a client's TLS
        inside a proxy's, as over gximap's proxy link)."""
        assert not self.buffer, "plaintext left over before the TLS handshake"
        if isinstance(self.sock, ssl.SSLSocket | TlsInside):
            self.sock = TlsInside(self.sock, context)  # type: ignore[assignment]  # socket-like
        else:
            self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def start_compress(self) -> None:
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class ByteStream(Protocol):
    """What TlsInside needs of the stream carrying it."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, size: int, /) -> bytes: ...
    def close(self) -> None: ...


class TlsInside:
    """A client TLS session carried by another one (ssl.SSLSocket cannot wrap an SSLSocket):
    the socket calls Client makes, over an SSLObject whose records go through ``outer``."""

    def __init__(self, outer: ByteStream, context: ssl.SSLContext) -> None:
        self.outer = outer
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.session = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.session.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._exchange()
        self._push()

    def _push(self) -> None:
        if self.outgoing.pending:
            self.outer.sendall(self.outgoing.read())

    def _exchange(self) -> bool:
        """Send what the session wrote, then feed it what the outer layer has; False at EOF."""
        self._push()
        data = self.outer.recv(256 * 1024)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def sendall(self, data: bytes) -> None:
        self.session.write(data)
        self._push()

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self.session.read(size)
            except ssl.SSLWantReadError:
                if not self._exchange():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def close(self) -> None:
        self.outer.close()


def close_clients() -> None:
    while _open_clients:
        _open_clients.pop().close()


def client_tls_context(cert_path: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cert_path)
    return context


def sibling_channels(count: int) -> tuple[SiblingChannel, list[SiblingChannel]]:
    """The parent's channel and ``count`` attached copies of it, as that many forked processes
    hold them (the same sockets and secret). The caller closes the copies and the parent's
    sockets."""
    parent = SiblingChannel.create(count)
    channels = [SiblingChannel(parent._pairs, parent.secret) for _ in range(count)]
    for index, channel in enumerate(channels):
        channel.attach(index)
    return parent, channels


def sibling_processes() -> tuple[SiblingChannel, SiblingChannel, SiblingChannel]:
    """The parent's channel and two attached copies of it (sibling_channels)."""
    parent, (first, second) = sibling_channels(2)
    return parent, first, second


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@contextlib.contextmanager
def running_server(
    recorder: Recorder,
    *,
    tls_ports: bool = False,
    plain_port: bool = True,
    host: str = "127.0.0.1",
    **options: Any,
) -> Iterator[tuple[Server, dict[str, int]]]:
    """A started Server on ephemeral ports; yields (server, {"plain": port, "tls": port})."""
    specs = []
    if plain_port:
        specs.append(ListenerSpec(host, 0, False))
    if tls_ports:
        specs.append(ListenerSpec(host, 0, True, "imaps"))
    listeners = bind_listeners(specs)
    ports = {("tls" if listener.tls else "plain"): listener.port for listener in listeners}
    settings: dict[str, Any] = {
        "context_num": 20,
        "thread_init_num": 2,
        "thread_charge_num": 5,
        "conn_timeout": 5.0,
        "ssl_context": None,
        "busy_response": b"* BYE Service not available\r\n",
    }
    settings.update(options)
    server = Server(listeners, recorder.factory, **settings)
    server.start()
    try:
        yield server, ports
    finally:
        close_clients()
        server.stop(grace=0.5)


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed localhost certificate (DNS localhost, IP 127.0.0.1 and ::1)."""
    from gximap.net.certs import generate_self_signed

    cert_path = f"{directory}/cert.pem"
    key_path = f"{directory}/key.pem"
    generate_self_signed(cert_path, key_path, ["localhost", "127.0.0.1", "::1"])
    return cert_path, key_path
