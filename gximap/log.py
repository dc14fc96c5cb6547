"""Logging for gximap: Gromox levels, log targets, imap_cmd_debug, io_debug and fail2ban lines.

Gromox levels 1..6 (crit, error, warn, notice, info, debug) map onto Python logging levels, with a
NOTICE level (25) added between INFO and WARNING. Every record is one physical line::

    2026-01-02T03:04:05.123456+00:00 gximap[1234]: <4> message

(local time with its UTC offset; ``<N>`` is the Gromox level). Syslog lines carry the same text
without the time stamp. When standard error is systemd's journal (``JOURNAL_STREAM`` names it,
systemd.exec(5)), each line is ``<P>message``: P is the syslog priority, which journald takes as
the entry's PRIORITY (so ``journalctl -p warning`` works), and the time and process ID are left
to the journal, which records them itself. Control characters in messages are escaped, so
nothing a client sends can start a forged log line; exception tracebacks continue on lines of
their own that repeat the prefix followed by ``| ``.

Authentication events use one stable format that fail2ban can match (see gximap(8gx), LOGGING)::

    rhost=[203.0.113.5]:51234 user=alice LOGIN rejected: bad password
    rhost=[203.0.113.5]:51234 user=alice blocked for 60s: too many failed logins
    rhost=[203.0.113.5]:51234 user=alice LOGIN refused: user blocked
    rhost=[203.0.113.5]:51234 user=alice LOGIN unavailable: passwd-file /etc/dovecot/users cannot be read
    rhost=[203.0.113.5]:51234 user=alice LOGIN ok actor=bob
    rhost=[203.0.113.5]:51234 user=alice LOGIN ok (user blocked; password matched the cache)

"rejected" is a login that may be a password guess (fail2ban counts it); "refused" one turned
away before its password was checked (a block) or despite a right password (e.g. a disabled
account): it says nothing about the client, and the shipped filter does not count it; nor does it
count "unavailable", a login that could not be checked (a file it needs cannot be read). An "ok"
may end in a note in parentheses on how it got in (through a user block: gximap.auth.service).
"""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime

PROGRAM = "gximap"
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

GROMOX_LEVELS: dict[int, int] = {
    1: logging.CRITICAL,
    2: logging.ERROR,
    3: logging.WARNING,
    4: NOTICE,
    5: logging.INFO,
    6: logging.DEBUG,
}

_logger = logging.getLogger(PROGRAM)
_auth_logger = logging.getLogger(f"{PROGRAM}.auth")
# imap_cmd_debug and io_debug have switches of their own and print whatever imap_log_level says,
# as Gromox's imap_cmd_debug does, so their loggers let everything through.
_cmd_logger = logging.getLogger(f"{PROGRAM}.cmd")
_io_logger = logging.getLogger(f"{PROGRAM}.io")
_cmd_logger.setLevel(logging.DEBUG)
_io_logger.setLevel(logging.DEBUG)
# midb is a library with its own logger; the daemon's log target receives its records too.
_ROUTED_LOGGERS = (PROGRAM, "midb")
SYSLOG_SOCKET = "/dev/log"


class LogSetupError(Exception):
    """The log target cannot be opened (missing directory, no /dev/log, bad level)."""


def get_logger(sub: str | None = None) -> logging.Logger:
    """The "gximap" logger, or its child "gximap.<sub>"."""
    return _logger if not sub else logging.getLogger(f"{PROGRAM}.{sub}")


def gromox_level(python_level: int) -> int:
    """The Gromox level (1..6) shown for a Python logging level."""
    for gromox, threshold in GROMOX_LEVELS.items():
        if python_level >= threshold:
            return gromox
    return 6


# ----------------------------------------------------------------------------------------------------
# Escaping
# ----------------------------------------------------------------------------------------------------


def _escape_char(char: str) -> str:
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, decoded with "surrogateescape"
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape_text(text: str) -> str:
    """Escape control and other non-printable characters (line breaks included) as backslash codes."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def escape_token(text: str) -> str:
    """Make ``text`` one unambiguous log token: also escape whitespace and backslashes."""
    out: list[str] = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char.isspace() or not char.isprintable():
            out.append(_escape_char(char))
        else:
            out.append(char)
    return "".join(out)


def _show_bytes(data: bytes | bytearray | memoryview, limit: int | None = None) -> str:
    raw = bytes(data)
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    suffix = ""
    if limit is not None and len(raw) > limit:
        suffix = f"... ({len(raw)} bytes)"
        raw = raw[:limit]
    return escape_text(raw.decode("utf-8", "backslashreplace")) + suffix


# ----------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------


# syslog(3) priorities of the Gromox levels: crit 2, err 3, warning 4, notice 5, info 6, debug 7.
SYSLOG_PRIORITIES = {level: level + 1 for level in GROMOX_LEVELS}


def stderr_is_journal() -> bool:
    """Whether standard error is a stream to systemd's journal. systemd sets JOURNAL_STREAM to
    that stream's device and inode numbers; comparing them with standard error's tells a process
    whose standard error was redirected elsewhere (a shell, a test) from one writing to it."""
    device, sep, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        status = os.fstat(2)
    except OSError:
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


class _Formatter(logging.Formatter):
    def __init__(self, with_time: bool, *, journal: bool = False) -> None:
        super().__init__()
        self._with_time = with_time
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        if self._journal:
            prefix = f"<{SYSLOG_PRIORITIES[gromox_level(record.levelno)]}>"
        else:
            prefix = f"{PROGRAM}[{record.process}]: <{gromox_level(record.levelno)}> "
        if self._with_time:
            stamp = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="microseconds")
            prefix = f"{stamp} {prefix}"
        lines = [prefix + escape_text(record.getMessage())]
        extra: list[str] = []
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            extra.extend(record.exc_text.splitlines())
        if record.stack_info:
            extra.extend(self.formatStack(record.stack_info).splitlines())
        lines.extend(f"{prefix}| {escape_text(line)}" for line in extra)
        return "\n".join(lines)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (it may be replaced, e.g. under test)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _SyslogHandler(logging.handlers.SysLogHandler):
    def mapPriority(self, levelName: str) -> str:  # noqa: N802 - logging's API name
        return "notice" if levelName == "NOTICE" else super().mapPriority(levelName)


class _SwitchableHandler(logging.Handler):
    """The single handler on the routed loggers; setup_logging swaps its target under its lock,
    so a reconfiguration (SIGHUP) never loses or interleaves records of other threads."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.emit(record)

    def switch(self, target: logging.Handler) -> logging.Handler:
        with self.lock:  # type: ignore[union-attr]
            old, self.target = self.target, target
        return old

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self.target.close()
        super().close()


_handler: _SwitchableHandler | None = None


def _open_target(target: str) -> logging.Handler:
    handler: logging.Handler
    if target == "-":
        handler = _StderrHandler(sys.stderr)
        journal = stderr_is_journal()
        handler.setFormatter(_Formatter(with_time=not journal, journal=journal))
        return handler
    check_target(target)
    if target == "syslog":
        try:
            handler = _SyslogHandler(address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_MAIL)
        except OSError as exc:
            raise LogSetupError(f"syslog: cannot connect to {SYSLOG_SOCKET}: {exc.strerror or exc}") from None
        handler.setFormatter(_Formatter(with_time=False))
        return handler
    try:
        handler = logging.FileHandler(target, mode="a", encoding="utf-8", errors="backslashreplace")
    except OSError as exc:
        raise LogSetupError(f"{target}: cannot open log file: {exc.strerror or exc}") from None
    handler.setFormatter(_Formatter(with_time=True))
    return handler


def check_target(target: str) -> None:
    """Raise LogSetupError where setup_logging would for ``target``, without opening it (for a
    configuration check before start-up)."""
    if target == "-":
        return
    if target == "syslog":
        # SysLogHandler silently tolerates a missing socket (and retries per record); say so at once.
        if not os.path.exists(SYSLOG_SOCKET):
            raise LogSetupError(f"syslog: {SYSLOG_SOCKET} does not exist (is a syslog daemon running?)")
        return
    if not target or "\0" in target:
        raise LogSetupError(f"invalid log file name {target!r}")
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise LogSetupError(f"{target}: log directory {directory} does not exist")
    # What opening the file for appending would refuse, in _open_target's words, without
    # creating it (--check promises that a start gets past the log file).
    refusal = None
    if os.path.isdir(target):
        refusal = errno.EISDIR
    elif os.path.exists(target):
        if not os.access(target, os.W_OK):
            refusal = errno.EACCES
    elif not os.access(directory, os.W_OK | os.X_OK):
        refusal = errno.EACCES   # the file would have to be created there
    if refusal is not None:
        raise LogSetupError(f"{target}: cannot open log file: {os.strerror(refusal)}")


def setup_logging(target: str, level: int) -> None:
    """Send the log to ``target`` ("-" stderr, "syslog", or a file appended to) at Gromox ``level``.

    Calling it again reconfigures: the file is reopened (so logrotate can move it away before a
    SIGHUP). On failure the previous target stays in use and LogSetupError is raised.
    """
    global _handler
    if isinstance(level, bool) or not isinstance(level, int) or level not in GROMOX_LEVELS:
        raise LogSetupError(f"log level {level!r} is not one of 1..6")
    new_target = _open_target(target)
    if _handler is None:
        _handler = _SwitchableHandler(new_target)
        for name in _ROUTED_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(_handler)
            logger.propagate = False  # the daemon owns its output; no duplicates via the root logger
    else:
        _handler.switch(new_target).close()
    for name in _ROUTED_LOGGERS:
        logging.getLogger(name).setLevel(GROMOX_LEVELS[level])


def reset_logging() -> None:
    """Undo setup_logging: close the target and hand records back to the root logger."""
    global _handler
    if _handler is None:
        return
    for name in _ROUTED_LOGGERS:
        logger = logging.getLogger(name)
        logger.removeHandler(_handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    _handler.close()
    _handler = None


# ----------------------------------------------------------------------------------------------------
# Authentication lines (fail2ban)
# ----------------------------------------------------------------------------------------------------


def _seconds_text(seconds: float) -> str:
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def auth_failure(rhost: str, user: str, mech: str, reason: str) -> None:
    """``rhost=[203.0.113.5]:51234 user=alice LOGIN rejected: bad password`` at NOTICE."""
    _auth_logger.log(NOTICE, "rhost=%s user=%s %s rejected: %s", escape_token(rhost), escape_token(user),
                     escape_token(mech.upper()), escape_text(reason))


def auth_refusal(rhost: str, user: str, mech: str, reason: str) -> None:
    """``rhost=[203.0.113.5]:51234 user=alice LOGIN refused: user blocked`` at NOTICE: a refusal
    that is no password guess, which fail2ban's filter is not to count."""
    _auth_logger.log(NOTICE, "rhost=%s user=%s %s refused: %s", escape_token(rhost), escape_token(user),
                     escape_token(mech.upper()), escape_text(reason))


def auth_unavailable(rhost: str, user: str, mech: str, reason: str) -> None:
    """``rhost=[203.0.113.5]:51234 user=alice LOGIN unavailable: passwd-file /etc/dovecot/users
    cannot be read`` at NOTICE: a login that could not be checked, told to try again later; no
    guess, which fail2ban's filter is not to count."""
    _auth_logger.log(NOTICE, "rhost=%s user=%s %s unavailable: %s", escape_token(rhost), escape_token(user),
                     escape_token(mech.upper()), escape_text(reason))


def auth_block(rhost: str, user: str, seconds: float) -> None:
    """``rhost=[203.0.113.5]:51234 user=alice blocked for 60s: too many failed logins`` at NOTICE."""
    _auth_logger.log(NOTICE, "rhost=%s user=%s blocked for %ss: too many failed logins",
                     escape_token(rhost), escape_token(user), _seconds_text(seconds))


def auth_success(rhost: str, user: str, mech: str, actor: str | None = None, note: str = "") -> None:
    """``rhost=[203.0.113.5]:51234 user=alice LOGIN ok`` (`` actor=bob`` when impersonating, then
    `` (note)`` when there is one) at INFO."""
    actor_part = f" actor={escape_token(actor)}" if actor is not None else ""
    note_part = f" ({escape_text(note)})" if note else ""
    _auth_logger.info("rhost=%s user=%s %s ok%s%s", escape_token(rhost), escape_token(user),
                      escape_token(mech.upper()), actor_part, note_part)


# ----------------------------------------------------------------------------------------------------
# Redaction
# ----------------------------------------------------------------------------------------------------

_SECRET_COMMAND_RE = re.compile(rb"([^ \r\n]+) +(LOGIN|AUTHENTICATE)(?= |\r|\n|$)", re.IGNORECASE)
_LITERAL_MARKER_RE = re.compile(rb"\{([0-9]{1,20})\+?\}")
_TRAILING_LITERAL_RE = re.compile(rb"\{([0-9]{1,20})\+?\}\r?\n?$")
_REDACTED = b"***"


def _astring_end(data: bytes, start: int) -> int | None:
    """End offset of the IMAP astring starting at ``start``, or None when it is malformed."""
    if start >= len(data):
        return None
    first = data[start:start + 1]
    if first == b'"':
        pos = start + 1
        while pos < len(data):
            char = data[pos:pos + 1]
            if char == b"\\":
                pos += 2
                continue
            if char == b'"':
                return pos + 1
            pos += 1
        return None
    if first == b"{":
        marker = _LITERAL_MARKER_RE.match(data, start)
        if marker is None:
            return None
        body = marker.end()
        if data[body:body + 2] == b"\r\n":
            body += 2
        elif data[body:body + 1] == b"\n":
            body += 1
        else:
            return marker.end()  # only the marker: the literal travels separately
        return min(len(data), body + int(marker.group(1)))
    end = start
    while end < len(data) and data[end:end + 1] not in (b" ", b"\r", b"\n"):
        end += 1
    return end if end > start else None


def redact_command(line: bytes) -> bytes:
    """Hide LOGIN passwords and AUTHENTICATE initial responses in a client command line.

    ``a LOGIN alice secret`` → ``a LOGIN alice ***`` (the user may be an atom, a quoted string or a
    literal, also with its data inline); ``a AUTHENTICATE PLAIN AGFsaWNl...`` →
    ``a AUTHENTICATE PLAIN ***``. Other lines are returned unchanged; the line ending is kept.
    """
    line = bytes(line)
    match = _SECRET_COMMAND_RE.match(line)
    if match is None:
        return line
    body, ending = line, b""
    if body.endswith(b"\r\n"):
        body, ending = body[:-2], b"\r\n"
    elif body.endswith(b"\n"):
        body, ending = body[:-1], b"\n"
    args = match.end()
    while args < len(body) and body[args:args + 1] == b" ":
        args += 1
    if args >= len(body):
        return line
    if match.group(2).upper() == b"LOGIN":
        user_end = _astring_end(body, args)
        if user_end is None:
            return body[:match.end()] + b" " + _REDACTED + ending
    else:
        user_end = body.find(b" ", args)
        if user_end < 0:
            return line
    if not body[user_end:].strip(b" "):
        return line
    return body[:user_end] + b" " + _REDACTED + ending


# ----------------------------------------------------------------------------------------------------
# imap_cmd_debug
# ----------------------------------------------------------------------------------------------------

_cmd_debug = 0
_CMD_LINE_LIMIT = 2048


def set_cmd_debug(level: int) -> None:
    """0 off, 1 log failed commands (NO/BAD), 2 log every command."""
    global _cmd_debug
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 2:
        raise ValueError(f"imap_cmd_debug must be 0, 1 or 2, not {level!r}")
    _cmd_debug = level


def cmd_debug_level() -> int:
    return _cmd_debug


def logs_command(status: str) -> bool:
    """Whether imap_cmd_debug logs a command that ended with ``status``: callers ask first, so
    that the line shown (the command's preview) is only made when it is logged."""
    level = _cmd_debug
    return level == 2 or (level == 1 and status.upper() != "OK")


def log_command(conn_id: str, rhost: str, user: str | None, line: bytes, status: str) -> None:
    """One imap_cmd_debug line: ``cmd conn=7 rhost=[::1]:40512 user=alice NO: a3 SELECT nosuch``."""
    if not logs_command(status):
        return
    status = status.upper()
    _cmd_logger.debug("cmd conn=%s rhost=%s user=%s %s: %s", escape_token(conn_id), escape_token(rhost),
                      "-" if user is None else escape_token(user), escape_token(status),
                      _show_bytes(redact_command(line), _CMD_LINE_LIMIT))


# ----------------------------------------------------------------------------------------------------
# io_debug
# ----------------------------------------------------------------------------------------------------

_io_debug = False
_MAX_PENDING_LINE = 1 << 20  # a client "line" longer than this is summarised, never shown
_MAX_TRACED_CONNECTIONS = 65536
_SERVER_TAIL = 512


@dataclass
class _TraceState:
    """What the wire trace must remember about a connection to keep secrets out of the log."""

    pending: bytearray = field(default_factory=bytearray)  # client bytes short of a line end
    overlong: bool = False  # the current client line exceeded _MAX_PENDING_LINE: hide its rest
    literal_left: int = 0  # bytes of a literal still to come from the client
    literal_secret: bool = False  # ... and whether it is a LOGIN argument
    literal_tag: bytes = b""  # tag of the command the literal belongs to (a tagged reply cancels it)
    secret_bytes: int = 0  # secret literal bytes hidden since the last shown line
    after_secret: bool = False  # the rest of the current line follows a secret literal
    continuation: bool = False  # the rest of the current line follows an ordinary literal
    sasl_tag: bytes = b""  # an AUTHENTICATE exchange with this tag is in progress
    server_tail: bytes = b""  # incomplete last server line (to recognise tagged replies)


_trace_states: dict[str, _TraceState] = {}


def set_io_debug(on: bool) -> None:
    """Switch the wire trace on or off (io_debug; reloadable)."""
    global _io_debug
    _io_debug = bool(on)
    if not _io_debug:
        _trace_states.clear()


def io_debug_enabled() -> bool:
    """Callers may check this before preparing data for io_trace."""
    return _io_debug


def _state_for(conn_id: str) -> _TraceState:
    state = _trace_states.get(conn_id)
    if state is None:
        if len(_trace_states) >= _MAX_TRACED_CONNECTIONS:  # callers that never call io_trace_end
            _trace_states.pop(next(iter(_trace_states)), None)
        state = _trace_states[conn_id] = _TraceState()
    return state


def _tag_of(line: bytes) -> bytes:
    return line.split(b" ", 1)[0]


def _client_line(state: _TraceState, line: bytes, shown: list[str]) -> None:
    """Show one complete client line and update the state from it."""
    trailing = _TRAILING_LITERAL_RE.search(line)
    if state.after_secret or state.sasl_tag:
        hidden = state.secret_bytes + len(line.rstrip(b"\r\n"))
        state.secret_bytes = 0
        shown.append(f"<redacted {hidden} bytes>")
        if state.after_secret:
            state.after_secret = False
            if trailing is not None:
                state.literal_left, state.literal_secret = int(trailing.group(1)), True
        return
    if state.continuation:  # the same command goes on after a literal (APPEND with several)
        state.continuation = False
        shown.append(_show_bytes(line))
        if trailing is not None:
            state.literal_left, state.literal_secret = int(trailing.group(1)), False
        return
    shown.append(_show_bytes(redact_command(line)))
    command = _SECRET_COMMAND_RE.match(line)
    tag = _tag_of(line)
    if command is not None and command.group(2).upper() == b"AUTHENTICATE":
        state.sasl_tag = tag
    elif trailing is not None:
        state.literal_left = int(trailing.group(1))
        state.literal_secret = command is not None  # a LOGIN argument
        state.literal_tag = tag


def _feed_client(state: _TraceState, data: bytes, shown: list[str]) -> None:
    buffer = bytes(state.pending) + data if state.pending else data
    pos = 0
    while pos < len(buffer):
        if state.literal_left:
            take = min(state.literal_left, len(buffer) - pos)
            state.literal_left -= take
            if state.literal_secret:
                state.secret_bytes += take
                state.after_secret = state.literal_left == 0
            else:
                shown.extend(_show_bytes(piece) for piece in buffer[pos:pos + take].splitlines() if piece)
                state.continuation = state.literal_left == 0
            pos += take
            continue
        newline = buffer.find(b"\n", pos)
        if newline < 0:
            break
        line, pos = buffer[pos:newline + 1], newline + 1
        if state.overlong:
            state.overlong = False
            shown.append(f"<rest of an overlong line: {len(line)} bytes>")
            continue
        _client_line(state, line, shown)
    rest = buffer[pos:]
    if len(rest) > _MAX_PENDING_LINE:
        shown.append(f"<{len(rest)} bytes without a line end>")
        state.overlong = True
        rest = b""
    state.pending = bytearray(rest)


def _feed_server(state: _TraceState, data: bytes, shown: list[str]) -> None:
    shown.extend(_show_bytes(piece) for piece in data.splitlines() if piece)
    lines = (state.server_tail + data).split(b"\n")
    tail = lines.pop()
    # A tail too long to be the start of a tagged reply is kept as a non-tag placeholder.
    state.server_tail = tail if len(tail) <= _SERVER_TAIL else b"*"
    for line in lines:
        tag = _tag_of(line)
        if state.sasl_tag and tag == state.sasl_tag:
            state.sasl_tag = b""
        if state.literal_left and tag == state.literal_tag and tag not in (b"*", b"+"):
            # The command was answered before its literal came (a refused synchronising literal).
            state.literal_left = 0
            state.after_secret = state.continuation = False
            state.secret_bytes = 0


def io_trace(conn_id: str, direction: str, data: bytes | bytearray | memoryview, *,
             sensitive: bool = False) -> None:
    """Log wire traffic of one connection when io_debug is on (free when it is off).

    ``direction`` is "C" (from the client) or "S" (to the client). ``sensitive`` data is shown as
    ``<redacted N bytes>``. Client lines pass through redact_command, and the trace follows LOGIN
    literals and AUTHENTICATE exchanges so their secrets never reach the log.
    """
    if not _io_debug:
        return
    if direction not in ("C", "S"):
        raise ValueError(f"direction must be 'C' or 'S', not {direction!r}")
    raw = bytes(data)
    state = _state_for(conn_id)
    shown: list[str] = []
    if direction == "C":
        _feed_client(state, raw, shown)
    else:
        _feed_server(state, raw, shown)
    if sensitive:
        shown = [f"<redacted {len(raw)} bytes>"]
    prefix = f"io conn={escape_token(conn_id)} {direction}: "
    for text in shown:
        _io_logger.debug("%s%s", prefix, text)


def io_trace_file(conn_id: str, size: int) -> None:
    """Server bytes the kernel sends from a file (a FileRegion): logged as their count, not read."""
    if not _io_debug:
        return
    _state_for(conn_id).server_tail = b"*"  # within a literal: no reply line starts there
    _io_logger.debug("io conn=%s S: <%d bytes from a file>", escape_token(conn_id), size)


def io_trace_end(conn_id: str) -> None:
    """The connection is gone: show what was left of an incomplete client line, forget the state."""
    state = _trace_states.pop(conn_id, None)
    if not _io_debug or state is None or not state.pending:
        return
    if state.sasl_tag or state.after_secret or state.overlong:
        text = f"<redacted {len(state.pending)} bytes>"
    else:
        text = _show_bytes(redact_command(bytes(state.pending)))
    _io_logger.debug("io conn=%s C: %s", escape_token(conn_id), text)
