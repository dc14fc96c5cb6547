"""Small raw-socket IMAP and LMTP clients for the load generator (asyncio, no imaplib).

:class:`ImapConnection` is an :class:`asyncio.Protocol`: responses are split on CRLF with server
literals (``{n}``) skipped as a whole, tagged completions resolve per-tag futures, so several
commands may be in flight on one connection (pipelining). Untagged responses are only kept when a
command asks for them (``collect=True``); ``* n EXISTS`` is always tracked because IDLE and
EXPUNGE bookkeeping need it. The parser does as little as possible per line so that one load
generator process can drive thousands of connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

_CRLF = b"\r\n"
_LITERAL_RE = re.compile(rb"\{(\d+)\+?\}$")
# A line start that is not an untagged response ("* "): a tagged completion or a continuation.
_NOT_UNTAGGED_RE = re.compile(rb"\n[^*]")
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_UID_RE = re.compile(rb"\bUID (\d+)")
_HIGHESTMODSEQ_RE = re.compile(rb"HIGHESTMODSEQ (\d+)")


class ImapError(Exception):
    """The server refused a command the workload depends on, or the connection broke."""


class Reply:
    """A tagged completion: ``status`` is b"OK", b"NO" or b"BAD"; ``untagged`` the responses
    collected for it.

    A long answer's untagged responses arrive as runs of CRLF-terminated lines, which are kept
    as they came and split into lines only when ``untagged`` is first read: the 100,000 lines
    of ``UID FETCH 1:*`` would cost the load generator 7 ms of its own inside the timed step,
    where the server's part is 20 to 40 ms. ``count`` counts them without splitting."""

    __slots__ = ("status", "line", "_pieces", "_lines")

    def __init__(self, status: bytes, line: bytes, untagged: Iterable[bytes | tuple[bytes]] = ()) -> None:
        self.status = status
        self.line = line
        self._pieces = list(untagged)  # one response each, or (a run of CRLF-terminated lines,)
        self._lines: list[bytes] | None = None

    @property
    def untagged(self) -> list[bytes]:
        if self._lines is None:
            lines: list[bytes] = []
            for piece in self._pieces:
                if isinstance(piece, tuple):
                    lines += piece[0].split(_CRLF)[:-1]
                else:
                    lines.append(piece)
            self._lines = lines
        return self._lines

    @property
    def count(self) -> int:
        """The number of untagged responses."""
        if self._lines is not None:
            return len(self._lines)
        return sum(piece[0].count(_CRLF) if isinstance(piece, tuple) else 1 for piece in self._pieces)

    @property
    def ok(self) -> bool:
        return self.status == b"OK"

    def append_uid(self) -> int | None:
        found = _APPENDUID_RE.search(self.line)
        return int(found.group(2)) if found else None

    def uids(self) -> list[int]:
        """UIDs named by ``UID n`` in the collected untagged FETCH responses."""
        result: list[int] = []
        for response in self.untagged:
            found = _UID_RE.search(response)
            if found:
                result.append(int(found.group(1)))
        return result

    def ordering(self, kind: bytes) -> dict[str, Any]:
        """What a SORT or THREAD answer (``kind`` b"SORT" / b"THREAD") holds: how many numbers,
        how many threads (top-level groups), and a digest of the answer, so that two servers'
        answers can be compared without keeping 100,000 numbers."""
        prefix = b"* " + kind
        body = b"".join(response[len(prefix):].strip() for response in self.untagged
                        if response.startswith(prefix))
        numbers = len(re.findall(rb"\d+", body))
        summary: dict[str, Any] = {"numbers": numbers, "answer_sha256": hashlib.sha256(body).hexdigest()[:16]}
        if kind == b"THREAD":
            depth = threads = 0
            for byte in body:
                if byte == 0x28:  # (
                    threads += depth == 0
                    depth += 1
                elif byte == 0x29:
                    depth -= 1
            summary["threads"] = threads
        return summary

    def search_hits(self) -> int:
        """Number of results in ``* SEARCH ...`` (or ``* ESEARCH ... COUNT n``) responses."""
        hits = 0
        for response in self.untagged:
            if response.startswith(b"* SEARCH"):
                hits += len(response.split()) - 2
            elif response.startswith(b"* ESEARCH"):
                found = re.search(rb"COUNT (\d+)", response)
                if found:
                    hits += int(found.group(1))
        return hits

    def highest_modseq(self) -> int | None:
        for response in (*self.untagged, self.line):
            found = _HIGHESTMODSEQ_RE.search(response)
            if found:
                return int(found.group(1))
        return None


class ImapConnection(asyncio.Protocol):
    """One IMAP client connection (see the module docstring)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._segment = 0  # where the current response's last line segment starts (after literals)
        self._waiters: dict[bytes, asyncio.Future[Reply]] = {}
        self._continuations: deque[asyncio.Future[bytes]] = deque()
        self._untagged: list[bytes | tuple[bytes]] = []
        self._collecting = 0
        self._tag_number = 0
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._greeting: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.exists = 0
        self.capabilities: frozenset[bytes] = frozenset()
        # Called with every untagged response (IDLE watchers); keep it cheap.
        self.on_untagged: Callable[[bytes], None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = ImapError(f"connection closed: {exc or 'EOF'}")
        pending: list[asyncio.Future[Any]] = [*self._waiters.values(), *self._continuations, self._greeting]
        self._waiters.clear()
        self._continuations.clear()
        for waiter in pending:
            if not waiter.done():
                waiter.set_exception(error)
                # Nobody may be waiting (an IDLE completion, a pipelined command): mark the
                # exception as seen so asyncio does not log it; awaiting still raises it.
                waiter.exception()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._segment == 0 and self._untagged_run():
            return
        start = 0
        scan = self._segment
        while True:
            end = buffer.find(_CRLF, scan)
            if end < 0:
                break
            if end > scan and buffer[end - 1] == 0x7D:  # "}": a literal follows this line
                found = _LITERAL_RE.search(buffer, scan, end)
                if found:
                    literal_end = end + 2 + int(found.group(1))
                    if len(buffer) < literal_end:
                        break  # wait for the rest of the literal, re-examine this line then
                    scan = literal_end
                    continue
            response = bytes(buffer[start:end])
            start = scan = end + 2
            self._dispatch(response)
        self._segment = scan - start
        if start:
            del buffer[:start]

    def _untagged_run(self) -> bool:
        """Take the buffer's leading run of complete plain untagged lines in one go, which is
        what long answers are (100,000 ``* n FETCH`` lines of ``UID FETCH 1:*``): they are
        found and kept (when collected) by C loops, not by a Python step per line, so that the
        generator does not spend more time reading an answer than the server producing it.
        True when that was every complete line. The run ends before the first line that needs
        looking at (tagged, continuation); a literal, an EXISTS or EXPUNGE to count, the
        greeting or an IDLE watcher leave the whole buffer to the line-by-line parser. Each
        scan for those is a memchr-speed search for one byte, the exact test only when it hits:
        the previous two-byte counts cost the generator 20 ms per 100,000 lines."""
        buffer = self._buffer
        end = buffer.rfind(_CRLF)
        if end < 0 or buffer[:1] != b"*" or self.on_untagged is not None or not self._greeting.done():
            return False
        stop = end + 2
        other = _NOT_UNTAGGED_RE.search(buffer, 0, stop)
        if other is not None:
            stop = other.start() + 1
        lines = bytes(memoryview(buffer)[:stop])
        if ((b"}" in lines and b"}\r\n" in lines)
                or (b"X" in lines and (b" EXISTS\r\n" in lines or b" EXPUNGE\r\n" in lines))):
            return False
        if self._collecting:
            self._untagged.append((lines,))
        del buffer[:stop]
        return other is None

    # -- dispatch -----------------------------------------------------------------------------------

    def _dispatch(self, response: bytes) -> None:
        first = response[:1]
        if first == b"*":
            if response.endswith(b" EXISTS"):
                try:
                    self.exists = int(response[2:-7])
                except ValueError:
                    pass
            elif response.endswith(b" EXPUNGE"):
                self.exists -= 1
            if not self._greeting.done():
                self._greeting.set_result(response)
                return
            if self._collecting:
                self._untagged.append(response)
            if self.on_untagged is not None:
                self.on_untagged(response)
        elif first == b"+":
            while self._continuations:
                continuation = self._continuations.popleft()
                if not continuation.done():
                    continuation.set_result(response)
                    break
        else:
            tag, _, rest = response.partition(b" ")
            waiter = self._waiters.pop(tag, None)
            if waiter is None or waiter.done():
                return
            status = rest.split(b" ", 1)[0].upper()
            untagged = self._untagged
            self._untagged = []
            waiter.set_result(Reply(status, response, untagged))

    # -- API ----------------------------------------------------------------------------------------

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float = 30.0) -> ImapConnection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, protocol = await loop.create_connection(cls, host, port)
            greeting = await protocol._greeting
        if not greeting.startswith(b"* OK"):
            protocol.close()
            raise ImapError(f"unexpected greeting {greeting[:100]!r}")
        found = re.search(rb"\[CAPABILITY ([^\]]*)\]", greeting)
        if found:
            protocol.capabilities = frozenset(found.group(1).upper().split())
        return protocol

    def _next_tag(self) -> bytes:
        self._tag_number += 1
        return b"a%d" % self._tag_number

    def _write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ImapError("connection closed")
        self._transport.write(data)

    def send(self, text: bytes, *, collect: bool = False) -> asyncio.Future[Reply]:
        """Send one command line (no literal) and return the future of its completion."""
        tag = self._next_tag()
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiters[tag] = waiter
        if collect:
            self._collecting += 1
            waiter.add_done_callback(self._stop_collecting)
        self._write(tag + b" " + text + _CRLF)
        return waiter

    def _stop_collecting(self, _: object) -> None:
        self._collecting -= 1

    async def command(self, text: bytes, *, collect: bool = False, timeout: float = 60.0,
                      literal: bytes | None = None) -> Reply:
        """Run one command; ``literal`` is appended as a (non-synchronising when possible) literal."""
        async with asyncio.timeout(timeout):
            if literal is None:
                return await self.send(text, collect=collect)
            if b"LITERAL+" in self.capabilities or b"LITERAL-" in self.capabilities:
                return await self.send(text + b" {%d+}\r\n" % len(literal) + literal, collect=collect)
            # Synchronising literal: wait for the server's "+" before sending the bytes.
            tag = self._next_tag()
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[Reply] = loop.create_future()
            go_ahead: asyncio.Future[bytes] = loop.create_future()
            self._waiters[tag] = waiter
            self._continuations.append(go_ahead)
            if collect:
                self._collecting += 1
                waiter.add_done_callback(self._stop_collecting)
            self._write(tag + b" " + text + b" {%d}\r\n" % len(literal))
            either: set[asyncio.Future[Any]] = {waiter, go_ahead}
            done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                return waiter.result()
            self._write(literal + _CRLF)
            return await waiter

    async def checked(self, text: bytes, *, collect: bool = False, timeout: float = 60.0,
                      literal: bytes | None = None) -> Reply:
        """Like :meth:`command`, but anything other than OK raises :class:`ImapError`."""
        reply = await self.command(text, collect=collect, timeout=timeout, literal=literal)
        if not reply.ok:
            raise ImapError(f"{text[:60]!r} -> {reply.line[:200]!r}")
        return reply

    async def login(self, user: str, password: str, *, timeout: float = 60.0) -> Reply:
        reply = await self.command(b"LOGIN " + quote(user) + b" " + quote(password), timeout=timeout)
        if reply.ok:
            found = re.search(rb"\[CAPABILITY ([^\]]*)\]", reply.line)
            if found:
                self.capabilities = frozenset(found.group(1).upper().split())
        return reply

    async def fetch_capabilities(self) -> frozenset[bytes]:
        reply = await self.checked(b"CAPABILITY", collect=True)
        for response in reply.untagged:
            if response.startswith(b"* CAPABILITY "):
                self.capabilities = frozenset(response[13:].upper().split())
        return self.capabilities

    async def start_idle(self, *, timeout: float = 60.0) -> asyncio.Future[Reply]:
        """Send IDLE and wait for the continuation; returns the future of the final completion."""
        loop = asyncio.get_running_loop()
        go_ahead: asyncio.Future[bytes] = loop.create_future()
        self._continuations.append(go_ahead)
        completion = self.send(b"IDLE")
        async with asyncio.timeout(timeout):
            either: set[asyncio.Future[Any]] = {completion, go_ahead}
            done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if completion in done:
            raise ImapError(f"IDLE refused: {completion.result().line[:200]!r}")
        if go_ahead not in done:
            raise TimeoutError("no IDLE continuation")
        return completion

    def end_idle(self) -> None:
        self._write(b"DONE\r\n")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def quote(text: str) -> bytes:
    """An IMAP quoted string."""
    return b'"' + text.encode("utf-8").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class LmtpError(Exception):
    """An LMTP reply other than the expected one."""


class LmtpConnection:
    """A sequential LMTP client (RFC 2033) over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float = 30.0) -> LmtpConnection:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            connection = cls(reader, writer)
            await connection._expect(220)
            writer.write(b"LHLO bench.invalid\r\n")
            await connection._expect(250)
        return connection

    async def _reply(self) -> tuple[int, bytes]:
        lines = []
        while True:
            line = await self._reader.readline()
            if not line:
                raise LmtpError("connection closed")
            lines.append(line.rstrip(b"\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            raise LmtpError(f"malformed reply {lines[-1][:100]!r}") from None
        return code, b"\n".join(lines)

    async def _expect(self, code: int) -> bytes:
        got, text = await self._reply()
        if got != code:
            raise LmtpError(f"expected {code}, got {text[:200]!r}")
        return text

    async def deliver(self, sender: str, recipients: list[str], message: bytes, *,
                      timeout: float = 60.0) -> list[int]:
        """Deliver one message; returns the per-recipient reply codes after DATA."""
        writer = self._writer
        async with asyncio.timeout(timeout):
            writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
            await self._expect(250)
            accepted = 0
            for recipient in recipients:
                writer.write(f"RCPT TO:<{recipient}>\r\n".encode())
                code, text = await self._reply()
                if code // 100 != 2:
                    raise LmtpError(f"RCPT {recipient}: {text[:200]!r}")
                accepted += 1
            writer.write(b"DATA\r\n")
            await self._expect(354)
            writer.write(dot_stuff(message) + b".\r\n")
            codes = []
            for _ in range(accepted):
                code, _text = await self._reply()
                codes.append(code)
        return codes

    async def close(self) -> None:
        try:
            self._writer.write(b"QUIT\r\n")
            async with asyncio.timeout(5):
                await self._reply()
        except (OSError, LmtpError, TimeoutError):
            pass
        self._writer.close()


def dot_stuff(message: bytes) -> bytes:
    """SMTP/LMTP transparency (RFC 5321 4.5.2) and a final CRLF."""
    if message.startswith(b"."):
        message = b"." + message
    message = message.replace(b"\r\n.", b"\r\n..")
    if not message.endswith(_CRLF):
        message += _CRLF
    return message
