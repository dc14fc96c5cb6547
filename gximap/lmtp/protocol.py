"""LMTP (RFC 2033) server side, sans-IO: bytes in, events and reply bytes out.

    proto = LmtpProtocol("mx.example.org", max_message_size=64 << 20, max_line_length=64 << 10)
    proto.greet()
    proto.receive(data)
    while (event := proto.next_event()) is not None:
        if isinstance(event, RecipientRequest):
            proto.accept_recipient(Recipient(event.address, event.orcpt, accounts)) or proto.reply(...)
        elif isinstance(event, MessageComplete):
            for rcpt in event.envelope.recipients: proto.reply(result for rcpt)
            proto.message_done()
    wire = proto.data_to_send()

The protocol answers whatever needs no outside knowledge itself (LHLO, MAIL, RSET, NOOP, VRFY,
HELP, QUIT, XFORWARD, syntax and sequence errors) and stops at the two points that do: a
recipient to look up (:class:`RecipientRequest`, answered with :meth:`accept_recipient` or
:meth:`reply`) and a complete message (:class:`MessageComplete`, answered with one :meth:`reply`
per accepted recipient, in order, then :meth:`message_done`). Until the caller has answered,
:meth:`next_event` returns the same event again and no further input is parsed, so pipelined
commands (RFC 2920) are answered strictly in order.

Extensions: PIPELINING, ENHANCEDSTATUSCODES (RFC 2034), 8BITMIME (RFC 6152), SIZE (RFC 1870),
DSN parameters (RFC 3461: NOTIFY/ORCPT/RET/ENVID are accepted; ORCPT feeds {original_rcpt_to}),
SMTPUTF8 (RFC 6531), Postfix's XFORWARD (client name, address, HELO; for filters and logs) and the
MAIL AUTH= parameter (RFC 4954, for {auth_user}).

Message data (RFC 5321 4.5.2): the end is CRLF "." CRLF only (a bare LF never ends data, so no
SMTP smuggling through LMTP); a leading dot is removed from every line that has one. The body is
kept byte for byte otherwise. Lines are scanned in bulk: Python-level work happens per line that
starts with a dot, not per line. Over ``max_message_size`` the body is dropped (memory stays
bounded) and the rest is read up to the final dot; so is a body with a line longer than
``max_line_length`` bytes (CRLF included). Either way every recipient then gets the same error.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "Envelope",
    "LmtpProtocol",
    "MessageComplete",
    "Recipient",
    "RecipientRequest",
    "Reply",
    "State",
    "decode_xtext",
    "parse_path",
]

MAX_PATH_OCTETS = 256  # RFC 5321 4.5.3.1.3, brackets included
DEFAULT_MAX_COMMAND = 4096  # 512 (RFC 5321) plus room for extension parameters (ORCPT, AUTH, ENVID)
DEFAULT_MAX_RECIPIENTS = 1000
DEFAULT_MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply: code, enhanced status code (RFC 3463; "" for none, as in the greeting) and text."""

    code: int
    status: str
    text: str

    @property
    def positive(self) -> bool:
        return self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def encode(self) -> bytes:
        text = _CONTROL_RE.sub("?", self.text)
        # Replies are ASCII (a folder or address with other characters is shown escaped).
        return f"{self._head()}{text}\r\n".encode("ascii", "backslashreplace")

    def _head(self) -> str:
        return f"{self.code} {self.status} " if self.status else f"{self.code} "

    def __str__(self) -> str:
        return self._head() + self.text


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
START_DATA = Reply(354, "2.0.0", "Start mail input; end with <CRLF>.<CRLF>")
VRFY_REPLY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP_REPLY = Reply(214, "2.0.0", "Commands: LHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP XFORWARD")
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Error: command not recognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
BAD_CHARACTERS = Reply(500, "5.5.2", "Error: invalid characters in command")
USE_LHLO = Reply(500, "5.5.1", "Error: this is an LMTP server, use LHLO")
NEED_LHLO = Reply(503, "5.5.1", "Error: send LHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: no valid recipients")
XFORWARD_IN_TRANSACTION = Reply(503, "5.5.1", "Error: XFORWARD not allowed within a mail transaction")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Error: too many errors")
NO_TLS = Reply(502, "5.5.1", "Error: STARTTLS not offered")
BODY_UNSUPPORTED = Reply(555, "5.5.4", "Error: unsupported BODY type")


# ----------------------------------------------------------------------------------------------------
# Grammar (RFC 5321 4.1.2, with RFC 6531's UTF-8 where SMTPUTF8 allows it)
# ----------------------------------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED_STRING = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"'
_LET_DIG = r"[A-Za-z0-9\u0080-\U0010ffff]"
_SUB_DOMAIN = rf"{_LET_DIG}(?:[A-Za-z0-9\-\u0080-\U0010ffff]*{_LET_DIG})?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
_ADDRESS_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_MAILBOX_RE = re.compile(rf"(?:{_DOT_STRING}|{_QUOTED_STRING})@(?:{_DOMAIN}|{_ADDRESS_LITERAL})")
_ADL_RE = re.compile(rf"@{_DOMAIN}(?:,@{_DOMAIN})*:")  # source route: obsolete, ignored
_ESMTP_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_ESMTP_VALUE_RE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")
_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


class _SyntaxError(Exception):
    """A command argument is malformed; carries the reply to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _syntax(text: str, status: str = "5.5.4", code: int = 501) -> _SyntaxError:
    return _SyntaxError(Reply(code, status, text))


def decode_xtext(text: str) -> str:
    """RFC 3461 xtext: ``+XX`` stands for the octet XX. Raises ValueError when malformed."""
    if not _XTEXT_RE.fullmatch(text):
        raise ValueError(f"malformed xtext {text!r}")
    if "+" not in text:
        return text
    raw = re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise ValueError(f"xtext {text!r} is not UTF-8") from None


def parse_path(text: str, *, reverse: bool) -> tuple[str, str]:
    """Split ``<address> params`` into (address, params). ``reverse`` allows ``<>`` (the null
    sender). A recipient may be ``<postmaster>`` without a domain (RFC 5321 4.5.1).
    Raises ValueError with a reason."""
    text = text.lstrip(" ")
    if not text.startswith("<"):
        raise ValueError("address must be enclosed in <>")
    close = _path_end(text)
    if close < 0:
        raise ValueError("unterminated <address>")
    inner, rest = text[1:close], text[close + 1:]
    if rest and not rest.startswith(" "):
        raise ValueError("garbage after the address")
    if len(text[:close + 1].encode("utf-8")) > MAX_PATH_OCTETS:
        raise ValueError(f"address longer than {MAX_PATH_OCTETS} octets")
    adl = _ADL_RE.match(inner)
    if adl is not None:
        inner = inner[adl.end():]
    if inner == "":
        if reverse and adl is None:
            return "", rest.strip(" ")
        raise ValueError("empty address")
    if not reverse and inner.lower() == "postmaster":
        return inner, rest.strip(" ")
    if not _MAILBOX_RE.fullmatch(inner):
        raise ValueError(f"malformed address {inner!r}")
    return inner, rest.strip(" ")


def _path_end(text: str) -> int:
    """Index of the ``>`` closing the path (a ``>`` inside a quoted local part does not count)."""
    quoted = escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def _parse_params(text: str) -> dict[str, str | None]:
    """``KEY=VALUE KEY`` → {"KEY": "VALUE", "KEY": None}; keys upper-cased, duplicates refused."""
    params: dict[str, str | None] = {}
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not _ESMTP_KEYWORD_RE.fullmatch(key) or (eq and not _ESMTP_VALUE_RE.fullmatch(value)):
            raise _syntax(f"Error: malformed parameter {item!r}", "5.5.4", 501)
        key = key.upper()
        if key in params:
            raise _syntax(f"Error: duplicate parameter {key}", "5.5.4", 501)
        params[key] = value if eq else None
    return params


# ----------------------------------------------------------------------------------------------------
# Events and the envelope
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    """An accepted recipient: the address as given, ORCPT's address (or None) and the accounts the
    caller resolved it to."""

    address: str
    orcpt: str | None = None
    accounts: tuple[str, ...] = ()


@dataclass(slots=True)
class Envelope:
    lhlo: str = ""
    sender: str = ""  # "" is the null reverse-path <>
    size_hint: int | None = None  # MAIL SIZE=
    body_type: str = "7BIT"
    smtputf8: bool = False
    auth_user: str | None = None  # MAIL AUTH= (None: not given or <>)
    envid: str | None = None
    ret: str | None = None
    recipients: list[Recipient] = field(default_factory=list)
    xforward: dict[str, str] = field(default_factory=dict)  # NAME ADDR PORT PROTO HELO IDENT SOURCE


@dataclass(frozen=True, slots=True)
class RecipientRequest:
    """RCPT TO: look the address up, then accept_recipient() or reply() with a refusal."""

    address: str
    orcpt: str | None
    notify: tuple[str, ...]
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """The final dot: reply() once per accepted recipient, in order, then message_done().
    ``failure`` is set (and ``body`` empty) when the message broke a limit: send it for each."""

    envelope: Envelope
    body: bytes
    failure: Reply | None


Event = RecipientRequest | MessageComplete


class State(enum.Enum):
    START = "start"  # greeted, waiting for LHLO
    READY = "ready"  # LHLO done, no transaction
    MAIL = "mail"  # MAIL accepted, RCPTs and DATA may follow
    DATA = "data"  # reading the message
    CLOSED = "closed"  # QUIT or a fatal error: output the rest, then close


class _Await(enum.Enum):
    NOTHING = 0
    RECIPIENT = 1
    RESULTS = 2


# ----------------------------------------------------------------------------------------------------
# Message data
# ----------------------------------------------------------------------------------------------------


class _DataReader:
    """Dot-unstuffing and the end-of-data marker, over input arriving in arbitrary chunks."""

    __slots__ = ("body", "size", "max_size", "max_line", "too_big", "line_too_long", "_line_len",
                 "_at_line_start")

    def __init__(self, max_size: int, max_line: int) -> None:
        self.body = bytearray()
        self.size = 0  # unstuffed bytes seen, also past the limit
        self.max_size = max_size
        self.max_line = max_line  # CRLF included; 0 = unlimited
        self.too_big = False
        self.line_too_long = False
        self._line_len = 0  # bytes of the unfinished line (appended so far)
        self._at_line_start = True  # the data starts as if after a CRLF

    def consume(self, buf: bytearray) -> tuple[int, bool]:
        """Read what can be read from ``buf``; -> (bytes consumed, end of data reached)."""
        pos, end = 0, len(buf)
        while pos < end:
            if self._at_line_start:
                if buf[pos] == 0x2E:  # "."
                    if end - pos < 3 and (end - pos == 1 or buf[pos + 1] == 0x0D):
                        return pos, False  # "." or ".\r": the end marker, or a stuffed line?
                    if buf[pos + 1] == 0x0D and buf[pos + 2] == 0x0A:
                        return pos + 3, True
                    pos += 1  # a stuffed dot
                self._at_line_start = False
                if pos >= end:
                    break
            # Up to (and including) the CRLF before the next line that starts with a dot, or else
            # the last CRLF there is: everything in between is plain body, taken in bulk.
            marker = buf.find(b"\r\n.", pos)
            if marker >= 0:
                self._append(buf, pos, marker + 2)
                pos = marker + 2
                self._at_line_start = True
                continue
            last = buf.rfind(b"\r\n", pos)
            if last >= 0:
                self._append(buf, pos, last + 2)
                pos = last + 2
                self._at_line_start = True
                continue
            # An unfinished line: keep a trailing CR back, it may start the next chunk's CRLF.
            stop = end - 1 if buf[end - 1] == 0x0D else end
            if stop > pos:
                self._append(buf, pos, stop)
            return stop, False
        return pos, False

    def _append(self, buf: bytearray, start: int, stop: int) -> None:
        segment = bytes(buf[start:stop])
        self.size += len(segment)
        if self.too_big or self.line_too_long:
            return  # the message is refused anyway: only look for its end
        if self.size > self.max_size:
            self.too_big = True
        elif self.max_line:
            self.line_too_long = self._check_lines(segment)
        if self.too_big or self.line_too_long:
            self.body = bytearray()  # nothing will be delivered: free the memory now
            return
        self.body += segment

    def _check_lines(self, segment: bytes) -> bool:
        """Track line lengths (CRLF included) across segments; True when one is too long."""
        limit = self.max_line
        parts = segment.split(b"\n")
        if len(parts) == 1:
            self._line_len += len(segment)
            return self._line_len >= limit  # even its LF would take it over the limit
        first = self._line_len + len(parts[0]) + 1
        middle = max(map(len, parts[1:-1]), default=-1) + 1
        self._line_len = len(parts[-1])
        return first > limit or middle > limit or self._line_len >= limit


# ----------------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------------


class LmtpProtocol:
    def __init__(self, host_id: str, *, max_message_size: int, max_line_length: int = 0,
                 max_command_length: int = DEFAULT_MAX_COMMAND,
                 max_recipients: int = DEFAULT_MAX_RECIPIENTS, max_errors: int = DEFAULT_MAX_ERRORS,
                 software: str = "gximap") -> None:
        if max_message_size < 1 or max_command_length < 64 or max_recipients < 1 or max_errors < 1:
            raise ValueError("LMTP limits must be positive (command length at least 64)")
        self.host_id = host_id
        self.software = software
        self.max_message_size = max_message_size
        self.max_line_length = max_line_length
        self.max_command_length = max_command_length
        self.max_recipients = max_recipients
        self.max_errors = max_errors
        self.state = State.START
        self.envelope = Envelope()
        self.errors = 0
        self.transactions = 0  # messages completed on this connection
        self._in = bytearray()
        self._out: list[bytes] = []
        self._discarding = False  # skipping the rest of an over-long command line
        self._reader: _DataReader | None = None
        self._await = _Await.NOTHING
        self._pending: Event | None = None
        self._results = 0
        self._lhlo_domain = ""

    # -- input and output ------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.state is State.CLOSED

    @property
    def buffered(self) -> int:
        return len(self._in)

    def receive(self, data: bytes) -> None:
        if self.state is not State.CLOSED:
            self._in += data

    def data_to_send(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def has_output(self) -> bool:
        return bool(self._out)

    def greet(self) -> None:
        # RFC 5321 4.2: the greeting's first word is the server's name; no enhanced status code
        # (RFC 2034 gives greetings none), as Postfix and Dovecot greet.
        self._send(Reply(220, "", f"{self.host_id} LMTP {self.software} ready"))

    def goodbye(self, reply: Reply) -> None:
        """Say ``reply`` (a 421) and close, whatever the state (time-out, shutdown)."""
        if self.state is State.CLOSED:
            return
        self._send(reply)
        self._close()

    # -- answers from the caller -----------------------------------------------------------------

    def accept_recipient(self, recipient: Recipient) -> None:
        if self._await is not _Await.RECIPIENT:
            raise RuntimeError("no recipient is waiting for an answer")
        self.envelope.recipients.append(recipient)
        self._await, self._pending = _Await.NOTHING, None
        self._send(RECIPIENT_OK)

    def reply(self, reply: Reply) -> None:
        """Refuse the waiting recipient, or give the next recipient's result after the data."""
        if self._await is _Await.RECIPIENT:
            self._await, self._pending = _Await.NOTHING, None
            self._send(reply)
            return
        if self._await is _Await.RESULTS:
            if self._results >= len(self.envelope.recipients):
                raise RuntimeError("more results than accepted recipients")
            self._results += 1
            self._send(reply)
            return
        raise RuntimeError("no recipient or message is waiting for an answer")

    def message_done(self) -> None:
        if self._await is not _Await.RESULTS:
            raise RuntimeError("no message is waiting for its results")
        if self._results != len(self.envelope.recipients):
            raise RuntimeError("one result per accepted recipient is required")
        self._await, self._pending = _Await.NOTHING, None
        self.transactions += 1
        self._reset_transaction()

    # -- the parser ------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """Parse buffered input until an event needs the caller; None: more input needed (or
        closing). Replies for everything handled internally are queued meanwhile."""
        if self._await is not _Await.NOTHING:
            return self._pending
        while self.state is not State.CLOSED:
            if self.state is State.DATA:
                event = self._read_data()
                if event is None:
                    return None
                return event
            line = self._next_line()
            if line is None:
                return None
            event = self._command(line)
            if event is not None:
                return event
        return None

    def _next_line(self) -> bytes | None:
        while True:
            newline = self._in.find(b"\n")
            if self._discarding:
                if newline < 0:
                    self._in.clear()
                    return None
                del self._in[:newline + 1]
                self._discarding = False
                continue
            if newline < 0:
                # + 1: a line of the longest length may have arrived without its LF yet, but with its CR.
                if len(self._in) > self.max_command_length + 1:
                    self._in.clear()
                    self._discarding = True
                    self._error(LINE_TOO_LONG)
                return None
            line = bytes(self._in[:newline])
            del self._in[:newline + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_command_length:
                self._error(LINE_TOO_LONG)
                if self.state is State.CLOSED:
                    return None
                continue
            return line

    def _command(self, raw: bytes) -> Event | None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error(BAD_CHARACTERS)
            return None
        if "\0" in line:
            self._error(BAD_CHARACTERS)
            return None
        verb, _, args = line.partition(" ")
        verb = verb.upper()
        try:
            if verb == "LHLO":
                self._lhlo(args)
            elif verb in ("HELO", "EHLO"):
                self._error(USE_LHLO)
            elif verb == "MAIL":
                self._mail(args)
            elif verb == "RCPT":
                return self._rcpt(args)
            elif verb == "DATA":
                self._data(args)
            elif verb == "RSET":
                self._no_args(args)
                if self.state is not State.START:
                    self._reset_transaction()
                self._send(OK)
            elif verb == "NOOP":
                self._send(OK)
            elif verb == "QUIT":
                self._send(Reply(221, "2.0.0", f"{self.host_id} closing connection"))
                self._close()
            elif verb == "VRFY":
                self._send(VRFY_REPLY)
            elif verb == "HELP":
                self._send(HELP_REPLY)
            elif verb == "XFORWARD":
                self._xforward(args)
            elif verb == "STARTTLS":
                self._error(NO_TLS)
            else:
                self._error(UNKNOWN_COMMAND)
        except _SyntaxError as exc:
            self._error(exc.reply)
        return None

    @staticmethod
    def _no_args(args: str) -> None:
        if args.strip(" "):
            raise _syntax("Error: this command takes no arguments")

    def _lhlo(self, args: str) -> None:
        domain = args.strip(" ")
        if not domain or " " in domain:
            raise _syntax("Error: LHLO needs one argument, the client's domain")
        self._lhlo_domain = domain
        self._reset_transaction()
        self.state = State.READY
        lines = [self.host_id, "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME",
                 f"SIZE {self.max_message_size}", "DSN", "SMTPUTF8",
                 "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"]
        self._out.append("".join(f"250{'-' if i < len(lines) - 1 else ' '}{text}\r\n"
                                 for i, text in enumerate(lines)).encode())

    def _mail(self, args: str) -> None:
        if self.state is State.START:
            self._error(NEED_LHLO)
            return
        if self.state is State.MAIL:
            self._error(NESTED_MAIL)
            return
        if not args[:5].upper() == "FROM:":
            raise _syntax("Error: syntax is MAIL FROM:<address>")
        try:
            sender, rest = parse_path(args[5:], reverse=True)
        except ValueError as exc:
            raise _syntax(f"Error: bad sender address: {exc}", "5.1.7") from None
        params = _parse_params(rest)
        size_hint: int | None = None
        body_type = "7BIT"
        smtputf8 = False
        auth_user = envid = ret = None
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not (value.isascii() and value.isdigit()) or len(value) > 20:
                    raise _syntax("Error: bad SIZE parameter")
                if int(value) > self.max_message_size:
                    self._send(Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size"))
                    return
                size_hint = int(value)
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    self._error(BODY_UNSUPPORTED)
                    return
                body_type = value.upper()
            elif key == "SMTPUTF8":
                if value is not None:
                    raise _syntax("Error: SMTPUTF8 takes no value")
                smtputf8 = True
            elif key == "AUTH":
                auth_user = self._xtext(value, key) if value != "<>" else None
            elif key == "ENVID":
                envid = self._xtext(value, key)
            elif key == "RET":
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    raise _syntax("Error: bad RET parameter")
                ret = value.upper()
            else:
                self._error(Reply(555, "5.5.4", f"Error: unsupported parameter {key}"))
                return
        envelope = self.envelope
        envelope.size_hint, envelope.body_type, envelope.smtputf8 = size_hint, body_type, smtputf8
        envelope.auth_user, envelope.envid, envelope.ret = auth_user, envid, ret
        envelope.sender = sender
        envelope.lhlo = self._lhlo_domain
        envelope.recipients = []
        self.state = State.MAIL
        self._send(SENDER_OK)

    @staticmethod
    def _xtext(value: str | None, key: str) -> str:
        if value is None:
            raise _syntax(f"Error: {key} needs a value")
        try:
            return decode_xtext(value)
        except ValueError:
            raise _syntax(f"Error: bad {key} parameter") from None

    def _rcpt(self, args: str) -> Event | None:
        if self.state is not State.MAIL:
            self._error(NEED_LHLO if self.state is State.START else NEED_MAIL)
            return None
        if not args[:3].upper() == "TO:":
            raise _syntax("Error: syntax is RCPT TO:<address>")
        try:
            address, rest = parse_path(args[3:], reverse=False)
        except ValueError as exc:
            raise _syntax(f"Error: bad recipient address: {exc}", "5.1.3") from None
        params = _parse_params(rest)
        orcpt: str | None = None
        notify: tuple[str, ...] = ()
        for key, value in params.items():
            if key == "ORCPT":
                addr_type, semi, xtext = (value or "").partition(";")
                if not semi or not addr_type:
                    raise _syntax("Error: bad ORCPT parameter")
                decoded = self._xtext(xtext, key)
                orcpt = decoded if addr_type.lower() in ("rfc822", "utf-8") else None
            elif key == "NOTIFY":
                words = tuple((value or "").upper().split(","))
                if words != ("NEVER",) and not (words and all(word in _NOTIFY_VALUES for word in words)):
                    raise _syntax("Error: bad NOTIFY parameter")
                notify = words
            else:
                self._error(Reply(555, "5.5.4", f"Error: unsupported parameter {key}"))
                return None
        if len(self.envelope.recipients) >= self.max_recipients:
            self._send(TOO_MANY_RECIPIENTS)
            return None
        self._await = _Await.RECIPIENT
        self._pending = RecipientRequest(address, orcpt, notify, self.envelope)
        return self._pending

    def _data(self, args: str) -> None:
        self._no_args(args)
        if self.state is not State.MAIL:
            self._error(NEED_LHLO if self.state is State.START else NEED_MAIL)
            return
        if not self.envelope.recipients:
            self._error(NEED_RCPT)
            return
        self._reader = _DataReader(self.max_message_size, self.max_line_length)
        self.state = State.DATA
        self._send(START_DATA)

    def _read_data(self) -> Event | None:
        reader = self._reader
        assert reader is not None
        consumed, done = reader.consume(self._in)
        if consumed:
            del self._in[:consumed]
        if not done:
            return None
        self._reader = None
        self.state = State.MAIL  # until message_done()
        failure: Reply | None = None
        if reader.too_big:
            failure = Reply(552, "5.3.4", f"Error: message exceeds the size limit of "
                                          f"{self.max_message_size} bytes")
        elif reader.line_too_long:
            failure = Reply(554, "5.6.0", f"Error: message has a line longer than {self.max_line_length} bytes")
        self._await = _Await.RESULTS
        self._results = 0
        self._pending = MessageComplete(self.envelope, bytes(reader.body) if failure is None else b"", failure)
        return self._pending

    _XFORWARD_ATTRIBUTES = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"})

    def _xforward(self, args: str) -> None:
        if self.state is State.START:
            self._error(NEED_LHLO)
            return
        if self.state is not State.READY:
            self._error(XFORWARD_IN_TRANSACTION)
            return
        params = _parse_params(args)
        if not params:
            raise _syntax("Error: XFORWARD needs attributes")
        update: dict[str, str] = {}
        for key, value in params.items():
            if key not in self._XFORWARD_ATTRIBUTES or value is None:
                raise _syntax(f"Error: bad XFORWARD attribute {key}")
            decoded = self._xtext(value, key)
            # [UNAVAILABLE] / [TEMPUNAVAIL]: Postfix knows the attribute but not its value.
            update[key] = "" if decoded.upper() in ("[UNAVAILABLE]", "[TEMPUNAVAIL]") else decoded
        self.envelope.xforward.update(update)
        self._send(OK)

    # -- helpers ---------------------------------------------------------------------------------

    def _send(self, reply: Reply) -> None:
        self._out.append(reply.encode())

    def _error(self, reply: Reply) -> None:
        self._send(reply)
        self.errors += 1
        if self.errors >= self.max_errors and self.state is not State.CLOSED:
            self._send(TOO_MANY_ERRORS)
            self._close()

    def _close(self) -> None:
        self.state = State.CLOSED
        self._in.clear()
        self._reader = None

    def _reset_transaction(self) -> None:
        # XFORWARD attributes describe one transaction: RSET, LHLO and its end clear them.
        self.envelope = Envelope(lhlo=self._lhlo_domain)
        if self.state in (State.MAIL, State.DATA):
            self.state = State.READY
        self._reader = None


def lhlo_lines(reply: bytes) -> Iterable[str]:
    """The keywords of an LHLO reply (for tests and clients)."""
    for line in reply.decode().split("\r\n"):
        if line[:3] == "250" and len(line) > 4:
            yield line[4:]
