"""Dovecot's authentication protocol, server side (client <-> server part, major version 1), sans-IO.

The wire: LF-terminated lines of TAB-separated fields. The server greets first, without waiting::

    S: VERSION 1 2 / MECH PLAIN plaintext / MECH LOGIN plaintext / [MECH SCRAM-SHA-256 mutual-auth] /
       SPID <pid> / CUID <n> / COOKIE <32 hex digits> / DONE
    C: VERSION 1 <minor> / CPID <pid>
    C: AUTH <id> <mech> service=smtp [lip=…] [rip=…] [secured] [nologin] [final-resp-ok] [resp=<base64>]
    S: OK <id> user=<name> [resp=<base64>]  |  FAIL <id> [reason=<text>] [temp]  |  CONT <id> <base64>
    C: CONT <id> <base64>   (answers a server CONT)      C: CANCEL <id>   (gives up a request)

Optional parameters are ``name=value`` or bare booleans; unknown ones are ignored, as the
protocol asks. Values use Dovecot's tab-escaping (``\\x01`` followed by ``0`` NUL, ``1`` itself,
``t`` TAB, ``r`` CR, ``n``/``l`` LF), decoded on input and applied on output.

Lines are bounded (``max_line``, 16 KiB as in Dovecot); an over-long line, a command with missing
fields, a request id that is not a number, or anything before the client's VERSION is a protocol
error (:class:`AuthProtocolError`): the caller drops the connection, as Dovecot does. Unknown
commands are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "AuthProtocolError",
    "AuthRequest",
    "AuthServerProtocol",
    "CancelRequest",
    "ClientCpid",
    "ClientVersion",
    "ContinueRequest",
    "escape",
    "unescape",
]

MAX_LINE = 16384  # Dovecot's AUTH_CLIENT_MAX_LINE_LENGTH
MAJOR_VERSION = 1
MINOR_VERSION = 2
MAX_REQUEST_ID = 0xFFFFFFFF

_ESCAPES = {"0": "\0", "1": "\x01", "t": "\t", "r": "\r", "n": "\n", "l": "\n"}
_ESCAPE_OUT = str.maketrans({"\x01": "\x011", "\0": "\x010", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"})


class AuthProtocolError(Exception):
    """The client broke the protocol; the connection should be closed."""


def unescape(text: str) -> str:
    if "\x01" not in text:
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\x01" and index + 1 < len(text):
            following = text[index + 1]
            out.append(_ESCAPES.get(following, following))
            index += 2
            continue
        if char != "\x01":
            out.append(char)
        index += 1
    return "".join(out)


def escape(text: str) -> str:
    return text.translate(_ESCAPE_OUT)


@dataclass(frozen=True, slots=True)
class ClientVersion:
    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class ClientCpid:
    pid: str


@dataclass(frozen=True, slots=True)
class AuthRequest:
    id: int
    mechanism: str  # upper case
    params: dict[str, str | None]  # unescaped; bare booleans map to None; "resp" excluded
    response: str | None  # the base64 initial response (resp=), None when absent

    @property
    def service(self) -> str:
        return self.params.get("service") or ""

    def flag(self, name: str) -> bool:
        return name in self.params


@dataclass(frozen=True, slots=True)
class ContinueRequest:
    id: int
    data: str  # base64


@dataclass(frozen=True, slots=True)
class CancelRequest:
    id: int


Event = ClientVersion | ClientCpid | AuthRequest | ContinueRequest | CancelRequest


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() refuses or reads."""
    return text.isascii() and text.isdigit()


def _request_id(text: str) -> int:
    if not _digits(text) or len(text) > 10 or int(text) > MAX_REQUEST_ID:
        raise AuthProtocolError(f"bad request id {text[:20]!r}")
    return int(text)


class AuthServerProtocol:
    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.version_seen = False
        self.cpid: str | None = None
        self.ignored = 0  # unknown commands skipped
        self._in = bytearray()

    @staticmethod
    def handshake(mechanisms: Iterable[tuple[str, Iterable[str]]], *, spid: int, cuid: int, cookie: str) -> bytes:
        lines = [f"VERSION\t{MAJOR_VERSION}\t{MINOR_VERSION}"]
        lines += ["\t".join(["MECH", name, *flags]) for name, flags in mechanisms]
        lines += [f"SPID\t{spid}", f"CUID\t{cuid}", f"COOKIE\t{cookie}", "DONE"]
        return ("\n".join(lines) + "\n").encode("ascii")

    @staticmethod
    def ok(request_id: int, **params: str) -> bytes:
        return _reply("OK", request_id, params)

    @staticmethod
    def fail(request_id: int, *flags: str, **params: str) -> bytes:
        return _reply("FAIL", request_id, params, flags)

    @staticmethod
    def cont(request_id: int, data: str) -> bytes:
        return f"CONT\t{request_id}\t{data}\n".encode("ascii")

    def receive(self, data: bytes) -> None:
        self._in += data

    @property
    def buffered(self) -> int:
        return len(self._in)

    def next_event(self) -> Event | None:
        """The next client command, None when more input is needed. Raises AuthProtocolError."""
        while True:
            newline = self._in.find(b"\n")
            if newline < 0:
                if len(self._in) > self.max_line:
                    raise AuthProtocolError(f"line longer than {self.max_line} bytes")
                return None
            if newline > self.max_line:
                raise AuthProtocolError(f"line longer than {self.max_line} bytes")
            raw = bytes(self._in[:newline])
            del self._in[:newline + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw:
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise AuthProtocolError("line is not UTF-8") from None
            event = self._parse(line.split("\t"))
            if event is not None:
                return event

    def _parse(self, fields: list[str]) -> Event | None:
        command = fields[0]
        if command == "VERSION":
            if len(fields) < 3 or not _digits(fields[1]) or not _digits(fields[2]) \
                    or len(fields[1]) > 9 or len(fields[2]) > 9:
                raise AuthProtocolError("malformed VERSION")
            self.version_seen = True
            return ClientVersion(int(fields[1]), int(fields[2]))
        if not self.version_seen:
            raise AuthProtocolError(f"{command[:20]!r} before VERSION")
        if command == "CPID":
            if len(fields) < 2 or not fields[1]:
                raise AuthProtocolError("malformed CPID")
            self.cpid = fields[1]
            return ClientCpid(fields[1])
        if command == "AUTH":
            if len(fields) < 3 or not fields[2]:
                raise AuthProtocolError("AUTH needs an id and a mechanism")
            params: dict[str, str | None] = {}
            response: str | None = None
            for item in fields[3:]:
                name, eq, value = item.partition("=")
                if not name:
                    continue
                if name == "resp":
                    response = unescape(value)
                else:
                    params[name] = unescape(value) if eq else None
            return AuthRequest(_request_id(fields[1]), unescape(fields[2]).upper(), params, response)
        if command == "CONT":
            if len(fields) < 2:
                raise AuthProtocolError("CONT needs an id")
            return ContinueRequest(_request_id(fields[1]), unescape(fields[2]) if len(fields) > 2 else "")
        if command == "CANCEL":
            if len(fields) < 2:
                raise AuthProtocolError("CANCEL needs an id")
            return CancelRequest(_request_id(fields[1]))
        self.ignored += 1
        return None


def _reply(command: str, request_id: int, params: dict[str, str], flags: Iterable[str] = ()) -> bytes:
    fields = [command, str(request_id), *flags, *(f"{name}={escape(value)}" for name, value in params.items())]
    return ("\t".join(fields) + "\n").encode("utf-8")
