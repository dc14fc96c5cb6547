"""Split the client's byte stream into commands: lines and literals, with limits, before parsing.

This is the IMAP "fragmentizer" (after imap-codec) in the sans-IO style of h11: the session feeds
bytes in with :meth:`Framer.feed` and pulls events out with :meth:`Framer.next_event`.  Nothing
here parses the grammar beyond what framing needs: where a line ends, whether it ends with a
literal announcement (``{n}``, ``{n+}``, ``~{n}``, ``~{n+}``), and the leading tag so that errors
can be answered with it.

Events:

* :class:`CommandFrame` - one complete command.  ``parts`` alternates line pieces and literals and
  always starts and ends with a line piece (possibly empty); CRLFs and the literal announcements
  themselves are removed, so ``A LOGIN {5}CRLF alice "pw"CRLF`` becomes
  ``(b"A LOGIN ", Literal(b"alice"), b' "pw"')``.  The parser walks these pieces in place.
* :class:`NeedContinuation` - a synchronising literal was announced and is acceptable.  The
  session sends ``+ Ready`` (or calls :meth:`Framer.reject_literal` and answers the tag itself);
  the framer then expects the announced bytes.
* :class:`FrameError` - line too long, literal too big, or a LITERAL- violation.  Reported before
  any byte of an oversized literal is read, with the tag and command name when the line has them,
  so the session can answer ``NO [TOOBIG]`` (APPEND) or ``BAD``; with the limit, so that it can
  tell a literal too big by itself from one that only takes the command's literals together
  past it (:attr:`FrameError.too_big_together`: a MULTIAPPEND of messages each within the limit).

Limits and resynchronisation:

* The line text of one command (all pieces together) may not exceed ``max_line``.  A longer line
  is reported as soon as it is known to be too long, and the rest of it is discarded as it
  arrives; framing resumes after its line end.
* The literals of one command may not together exceed ``max_literal``, or the smaller
  ``max_command_literal`` for any command but APPEND, REPLACE and SETMETADATA.  A synchronising literal
  over the limit is refused before the client sends it, so the framer only drops the command's
  pieces.  A non-synchronising one (``{n+}``) is already on its way: RFC 7888 section 4 leaves a
  server that will not accept it the choice of reading and discarding its octets or closing the
  connection.  We read and discard - streaming, never buffering them - and then discard the rest
  of that command (its remaining line text and any further ``{m+}`` literals), so the client's
  next command is framed correctly and the session may still decide to close.
* A client that sends a synchronising literal without waiting for ``+`` (RFC 3501 section 7.5
  forbids it; some clients do it) is caught when its octets are already here as the literal is
  refused (too big, or :meth:`Framer.reject_literal`): nothing was answered yet, so those bytes
  can only be the literal. They are discarded as a refused ``{n+}`` literal's are, and so is a
  further literal of the command whose octets have come too, instead of being run as commands.
* With ``literal_minus`` set (LITERAL- advertised instead of LITERAL+), a non-synchronising literal
  over 4096 octets is refused the same way (RFC 7888 section 5).
* Apart from bytes the client sent ahead of the command being framed (see :attr:`buffered`, which
  the caller can use for back-pressure), the framer holds at most ``max_line + max_literal`` bytes
  (transiently twice one literal while it is copied out of the receive buffer).
* Spooling: given a ``spool`` factory, a literal of ``spool_threshold`` octets or more (or one that
  would take the command's literals held in memory to that) is passed
  to a :class:`LiteralSpool` (the server's is an unnamed temporary file) as its octets arrive, and
  read back only when the whole command has arrived (all its literals, a MULTIAPPEND's too). A client that uploads a large message slowly then holds
  no memory for it meanwhile; without this, every session could hold a literal of
  ``max_literal`` octets for as long as its client cared to take. The framer does no I/O of its
  own: the factory is the caller's. A spool that fails (``OSError``: the disk is full, say) ends
  the command with :class:`FrameError` ``LITERAL_UNSPOOLED``; the literal's remaining octets and
  the rest of the command are discarded, as for a refused ``{n+}`` literal.

Lines are found with one linear scan (the search resumes where the previous one stopped), so a
slowly dripped long line costs O(n), not O(n^2).  A bare LF is accepted as a line end, as most
servers do.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

# RFC 7888 section 5: the largest non-synchronising literal a LITERAL- server must accept.
LITERAL_MINUS_MAX = 4096
# Compact the receive buffer once this much of it has been consumed (amortised O(1) per byte).
_COMPACT_THRESHOLD = 64 * 1024
# While discarding an overlong line, keep this much of its end to spot a "{n+}" announcement.
_SKIP_TAIL = 64
# tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR = ATOM-CHAR / "]"
_TAG_RE = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+\Z")
_COMMAND_NAME_RE = re.compile(rb"[A-Za-z][A-Za-z0-9.-]*\Z")
_PREVIEW_TAG_SCAN = 128  # how far into a line to look for the tag
_LONGEST_COMMAND_NAME = 32  # longer than any command's name (UNAUTHENTICATE has 14 letters)


class FrameErrorKind(enum.Enum):
    LINE_TOO_LONG = "line-too-long"
    LITERAL_TOO_BIG = "literal-too-big"
    LITERAL_MINUS = "literal-minus"  # {n+} with n > 4096 while only LITERAL- is advertised
    LITERAL_UNSPOOLED = "literal-unspooled"  # the spool holding an arriving literal failed


@dataclass(frozen=True, slots=True)
class Literal:
    """The payload of one literal, between two line pieces of a command."""

    data: bytes
    binary: bool = False  # announced as literal8 "~{n}" (RFC 3516)
    synchronizing: bool = True  # "{n}" (the server sent a continuation) rather than "{n+}"

    def __len__(self) -> int:
        return len(self.data)


class LiteralSpool(Protocol):
    """Where a large literal's octets go while they arrive (see the module docstring)."""

    def write(self, data: memoryview) -> None:
        """Keep ``data`` (all of it) after what was written before; may raise OSError."""

    def read_all(self) -> bytes:
        """Everything written, in order; may raise OSError."""

    def close(self) -> None:
        """Release the spool (called once, also when the literal is abandoned)."""


# A command's pieces: line text first (and last), literals between; so never empty.
CommandParts = tuple[bytes, *tuple[bytes | Literal, ...]]


@dataclass(frozen=True, slots=True)
class CommandFrame:
    tag: bytes | None
    parts: CommandParts

    @property
    def command_name(self) -> bytes | None:
        return _command_name(self.parts[0]) if self.parts else None

    def preview(self, limit: int = 200) -> bytes:
        """The command as text for logs: literal contents replaced by their size."""
        out = bytearray()
        for part in self.parts:
            if isinstance(part, Literal):
                out += b"%s{%d}" % (b"~" if part.binary else b"", len(part.data))
            else:
                out += part
            if len(out) >= limit:
                return bytes(out[:limit]) + b"..."
        return bytes(out)


@dataclass(frozen=True, slots=True)
class _Spooled:
    """A complete literal of a command still being framed, waiting in its spool: read back
    only when the command is complete, so that a command with several literals (MULTIAPPEND)
    holds none of them in memory while a later one arrives."""

    spool: LiteralSpool
    size: int
    binary: bool
    synchronizing: bool

    def read_back(self) -> Literal:
        return Literal(self.spool.read_all(), self.binary, self.synchronizing)


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    tag: bytes | None  # None: the line has no valid tag, so the command is certainly invalid
    size: int
    command: bytes | None = None  # upper-cased command name, when the first line has one
    binary: bool = False
    command_octets: int = 0  # the literal octets of the command so far, this literal's included
    literals: int = 1  # the command's literals so far, this one included
    first_literal_size: int = 0  # the size of the command's first literal
    head: bytes = b""  # the command's text before its first literal ("a APPEND " for a literal name)
    # The command's pieces since the previous NeedContinuation of the same command (all of them
    # for its first): line text, and the size of each literal between; the last is the line text
    # announcing this literal (whose size is ``size``). With ``fresh``, the first report of the
    # command. So a session can follow a command's literals in O(1) per piece
    # (gximap.imap.parser.AppendTally) without the framer knowing its grammar.
    pieces: tuple[bytes | int, ...] = ()
    fresh: bool = True


@dataclass(frozen=True, slots=True)
class FrameError:
    tag: bytes | None
    kind: FrameErrorKind
    text: str
    command: bytes | None = None
    size: int | None = None  # the announced literal size for the literal errors
    synchronizing: bool = True  # for literal errors: False when the octets are being discarded
    unwaited: bool = False  # a synchronising literal's octets came without "+": being discarded
    limit: int | None = None  # LITERAL_TOO_BIG: the bound on the command's literals together

    @property
    def too_big_together(self) -> bool:
        """LITERAL_TOO_BIG for a literal within the limit by itself, refused because the
        command's literals together exceed it (a MULTIAPPEND's messages, say)."""
        return (self.kind is FrameErrorKind.LITERAL_TOO_BIG and self.size is not None
                and self.limit is not None and self.size <= self.limit)


FrameEvent = CommandFrame | NeedContinuation | FrameError


class _State(enum.Enum):
    LINE = 1  # reading line text of a command (or between commands)
    LITERAL = 2  # reading the payload of an accepted literal
    SKIP_LINE = 3  # discarding up to the end of the current line
    SKIP_BYTES = 4  # discarding the octets of a refused literal already on its way


def extract_tag(line: bytes) -> bytes | None:
    """The tag of a command line, or None when the line does not start with a valid tag."""
    head = line[:_PREVIEW_TAG_SCAN]
    space = head.find(b" ")
    candidate = head if space < 0 else head[:space]
    if space < 0 and len(line) > _PREVIEW_TAG_SCAN:
        return None
    return candidate if _TAG_RE.match(candidate) else None


# Commands whose literals max_command_literal does not bound: APPEND's and REPLACE's message, and
# SETMETADATA's values, which RFC 5464 wants refused one by one with NO [METADATA MAXSIZE n], not BAD.
_LARGE_LITERAL_COMMANDS = frozenset({b"APPEND", b"REPLACE", b"UID REPLACE", b"SETMETADATA"})
# The commands whose literal is a message: one over the literal limit gets NO [TOOBIG].
MESSAGE_COMMANDS = frozenset({b"APPEND", b"REPLACE", b"UID REPLACE"})


def _command_name(line: bytes) -> bytes | None:
    """The upper-cased command name after a valid tag; for a UID command, both words ("UID
    REPLACE"). The name is looked for past the tag's window too: a tag of nearly
    _PREVIEW_TAG_SCAN octets must not cut a valid name short (the session refuses a literal of a
    command it does not know)."""
    tag_end = line.find(b" ", 0, _PREVIEW_TAG_SCAN)
    if tag_end < 0 or not _TAG_RE.match(line[:tag_end]):
        return None
    name, name_end = _word_at(line, tag_end + 1)
    if name is None:
        return None
    if name == b"UID" and name_end >= 0:
        sub, _sub_end = _word_at(line, name_end + 1)
        if sub is not None:
            return b"UID " + sub
    return name


def _word_at(line: bytes, start: int) -> tuple[bytes | None, int]:
    """(the upper-cased command-name word at ``start`` or None, the index of the space after
    it or -1)."""
    stop = start + _LONGEST_COMMAND_NAME + 1
    end = line.find(b" ", start, stop)
    if end < 0 and len(line) > stop:
        return None, -1  # a word longer than any command's name: not one, and not to be shown cut
    word = line[start:end if end >= 0 else stop]
    if not _COMMAND_NAME_RE.match(word):
        return None, -1
    return word.upper(), end


def _literal_marker(line: bytes) -> tuple[int, int, bool, bool] | None:
    """If ``line`` ends with a literal announcement, (start, size, synchronizing, binary).

    Sizes too large to matter are clamped (the caller refuses them) rather than converted, so a
    line of a million digits costs nothing."""
    if not line.endswith(b"}"):
        return None
    brace = line.rfind(b"{")
    if brace < 0:
        return None
    digits = line[brace + 1 : -1]
    synchronizing = True
    if digits.endswith(b"+"):
        digits = digits[:-1]
        synchronizing = False
    if not digits or not digits.isdigit():
        return None
    significant = digits.lstrip(b"0")
    size = int(significant or b"0") if len(significant) <= 18 else 1 << 62
    binary = brace > 0 and line[brace - 1 : brace] == b"~"
    start = brace - 1 if binary else brace
    return start, size, synchronizing, binary


class Framer:
    """Incremental command framer.  See the module docstring for the protocol."""

    def __init__(self, max_line: int, max_literal: int, literal_minus: bool = False,
                 max_command_literal: int | None = None,
                 spool: Callable[[int], LiteralSpool] | None = None, spool_threshold: int = 1 << 20) -> None:
        if max_line < 16:
            raise ValueError("max_line too small to hold a command")
        if max_literal < 0:
            raise ValueError("max_literal must not be negative")
        self.max_line = max_line
        self.max_literal = max_literal
        # The literals of a command other than APPEND and SETMETADATA (SEARCH strings, names,
        # passwords) are held whole while it runs: a smaller bound of their own.
        self.max_command_literal = max_literal if max_command_literal is None else max_command_literal
        self.literal_minus = literal_minus
        self._spool_factory = spool  # makes a spool for a literal of the given size
        self.spool_threshold = spool_threshold
        self._spool: LiteralSpool | None = None  # LITERAL: the spool of the literal arriving
        self._spools: list[LiteralSpool] = []  # every spool of the command, closed with it
        self._literal_spooled = False  # LITERAL: its octets go to a spool as they arrive
        self._literal_size = 0  # LITERAL: its announced size
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed bytes in _buf
        self._scan = 0  # where the search for the next LF resumes (>= _pos)
        self._state = _State.LINE
        self._pieces: list[bytes | Literal | _Spooled] = []
        self._line_total = 0  # line text of the command so far (excluding CRLFs)
        self._literal_total = 0  # literal octets of the command so far
        self._literal_in_memory = 0  # ... of them not spooled
        self._literal_count = 0  # literals of the command so far
        self._first_literal = 0  # the size of the command's first literal
        self._reported = 0  # the pieces up to here were passed on in a NeedContinuation
        self._literal_need = 0  # LITERAL: octets still expected; SKIP_BYTES: octets to drop
        self._literal_binary = False
        self._literal_sync = True
        self._skip_tail = b""  # SKIP_LINE: the last bytes seen of the line being discarded
        self._skip_literals = True  # SKIP_LINE: honour a trailing "{n+}" of the skipped line
        # SKIP_LINE: the client sends synchronising literals without waiting for "+", so a
        # trailing "{n}" with bytes already behind it is discarded too (see reject_literal).
        self._skip_unwaited = False

    # -- input ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add received bytes.  Bytes that are being discarded are dropped right here."""
        if not data:
            return
        self._compact()
        self._buf += data
        if self._state in (_State.SKIP_LINE, _State.SKIP_BYTES):
            self._drain_skip()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed (the caller may stop reading while this is high)."""
        return len(self._buf) - self._pos

    @property
    def held_bytes(self) -> int:
        """Everything the framer holds: buffered input plus the pieces of the pending command."""
        pieces = sum(len(piece) for piece in self._pieces if not isinstance(piece, _Spooled))  # on disk
        return len(self._buf) - self._pos + pieces

    @property
    def in_command(self) -> bool:
        """True when part of a command has been framed but the command is not complete."""
        return bool(self._pieces) or self._state is not _State.LINE

    def discard_buffer(self) -> None:
        """Forget everything buffered and any partial command (after STARTTLS: bytes a client
        pipelined before the TLS handshake must not be executed; RFC 9051 section 6.2.1)."""
        self._buf = bytearray()
        self._pos = self._scan = 0
        self._state = _State.LINE
        self._skip_unwaited = False
        self._reset_command()

    def reject_literal(self, *, discard_sent: bool = True) -> bool:
        """Call instead of sending ``+`` after :class:`NeedContinuation`: the session answered the
        command with a tagged error, so the client will not send the literal.

        Unless it already has: a client that sends a synchronising literal without waiting for
        ``+`` (RFC 3501 section 7.5 says it must wait; some do not) would have the octets framed
        as commands, message text run as IMAP. Bytes buffered now, before any answer went out,
        can only be such octets, so they are discarded as a refused ``{n+}`` literal's are, with
        the rest of the command. Returns True then. Bytes that arrive after the answer cannot be
        told from the client's next command and are framed as one. ``discard_sent=False`` for a
        line that is no command at all: garbage is framed on, and counted as bad commands."""
        if self._state is not _State.LITERAL or not self._literal_sync:
            return False
        need = self._literal_need
        self._reset_command()
        if discard_sent and self.buffered:
            self._start_bytes_skip(need, unwaited=True)
            return True
        self._state = _State.LINE
        return False

    # -- output -----------------------------------------------------------------------------

    def next_event(self) -> FrameEvent | None:
        """The next framing event, or None when more input is needed."""
        while True:
            state = self._state
            if state is _State.SKIP_LINE or state is _State.SKIP_BYTES:
                self._drain_skip()
                if self._state is not _State.LINE:
                    return None
                continue
            if state is _State.LITERAL:
                literal: Literal | _Spooled
                if self._literal_spooled:
                    spooled = self._spool_arrived()
                    if spooled is None or isinstance(spooled, FrameError):
                        return spooled
                    literal = spooled
                else:
                    if len(self._buf) - self._pos < self._literal_need:
                        return None
                    literal = Literal(self._take(self._literal_need), self._literal_binary, self._literal_sync)
                self._pieces.append(literal)
                self._state = _State.LINE
                self._compact()  # do not keep a consumed multi-megabyte literal around
                self._scan = self._pos
                continue
            event = self._next_line_event()
            if event is not _AGAIN:
                return event

    def next_raw_line(self) -> bytes | FrameError | None:
        """One line without literal processing, for AUTHENTICATE responses and IDLE's ``DONE``.

        Returns the line without its CRLF, None when no complete line is buffered yet, or a
        :class:`FrameError` (LINE_TOO_LONG) for a line longer than ``max_line``; the rest of that
        line is then discarded as it arrives.  Only valid between commands."""
        if self._state is _State.SKIP_LINE or self._state is _State.SKIP_BYTES:
            self._drain_skip()
            if self._state is not _State.LINE:
                return None
        if self._pieces or self._state is not _State.LINE:
            raise RuntimeError("next_raw_line() called in the middle of a command")
        lf = self._buf.find(b"\n", self._scan)
        if lf < 0:
            self._scan = len(self._buf)
            if self._scan - self._pos > self.max_line:
                self._start_line_skip(self._take(self._scan - self._pos), honour_literals=False)
                return FrameError(None, FrameErrorKind.LINE_TOO_LONG, "Line too long")
            return None
        line = self._take(lf - self._pos)
        self._pos += 1  # the LF
        self._scan = self._pos
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line:
            return FrameError(None, FrameErrorKind.LINE_TOO_LONG, "Line too long")
        return line

    # -- internals --------------------------------------------------------------------------

    def _next_line_event(self) -> FrameEvent | None | _Again:
        buf = self._buf
        lf = buf.find(b"\n", self._scan)
        if lf < 0:
            self._scan = len(buf)
            pending = self._scan - self._pos
            if self._line_total + pending > self.max_line:
                partial = self._take(pending)
                # _pieces, when not empty, starts with line text (never a literal)
                first = cast(bytes, self._pieces[0]) if self._pieces else partial
                error = self._error(FrameErrorKind.LINE_TOO_LONG, "Line too long", first)
                self._reset_command()
                self._start_line_skip(partial, honour_literals=True)
                return error
            return None
        line = self._take(lf - self._pos)
        self._pos += 1
        self._scan = self._pos
        if line.endswith(b"\r"):
            line = line[:-1]
        if not self._pieces and not line:
            return _AGAIN  # empty line between commands: ignored
        first = cast(bytes, self._pieces[0]) if self._pieces else line  # as above
        total = self._line_total + len(line)
        marker = _literal_marker(line)
        if total > self.max_line:
            error = self._error(FrameErrorKind.LINE_TOO_LONG, "Line too long", first)
            self._reset_command()
            if marker is not None and not marker[2]:
                self._start_bytes_skip(marker[1])
            return error
        if marker is None:
            self._pieces.append(line)
            return self._complete(first)
        start, size, synchronizing, binary = marker
        if not synchronizing and self.literal_minus and size > LITERAL_MINUS_MAX:
            error = self._error(
                FrameErrorKind.LITERAL_MINUS,
                "Non-synchronizing literal larger than 4096 octets",
                first,
                size=size,
                synchronizing=False,
            )
            self._reset_command()
            self._start_bytes_skip(size)
            return error
        limit = self.max_literal
        if _command_name(first) not in _LARGE_LITERAL_COMMANDS:
            limit = min(limit, self.max_command_literal)
        if size > limit - self._literal_total:
            # As in reject_literal(), for what looks like a command: garbage is framed on.
            unwaited = (synchronizing and self.buffered > 0 and extract_tag(first) is not None
                        and _command_name(first) is not None)
            error = self._error(
                FrameErrorKind.LITERAL_TOO_BIG,
                "Literal too big" if size > limit else "Literals too big together", first, size=size,
                synchronizing=synchronizing, unwaited=unwaited, limit=limit,
            )
            self._reset_command()
            if not synchronizing or unwaited:
                self._start_bytes_skip(size, unwaited=unwaited)
            return error
        self._pieces.append(line[:start])
        self._line_total = total
        self._literal_total += size
        if not self._literal_count:
            self._first_literal = size
        self._literal_count += 1
        self._literal_need = self._literal_size = size
        self._literal_binary = binary
        self._literal_sync = synchronizing
        # Spooled: a literal of spool_threshold octets or more, and one that would take the
        # command's literals held in memory past that (a MULTIAPPEND of many smaller messages).
        # (Never an empty one: a spool opens with the first octet, so a spooled literal always
        # has one, and a command with spooled literals has spools: _complete relies on it.)
        self._literal_spooled = (self._spool_factory is not None and size > 0
                                 and self._literal_in_memory + size >= self.spool_threshold)
        if not self._literal_spooled:
            self._literal_in_memory += size
        self._state = _State.LITERAL
        if synchronizing:
            fresh = self._reported == 0
            pieces = tuple(piece if isinstance(piece, bytes) else len(piece) if isinstance(piece, Literal)
                           else piece.size for piece in self._pieces[self._reported:])
            self._reported = len(self._pieces) + 1  # this literal's size is the event's own
            return NeedContinuation(extract_tag(first), size, _command_name(first), binary,
                                    self._literal_total, self._literal_count, self._first_literal,
                                    cast(bytes, self._pieces[0]), pieces, fresh)
        return _AGAIN

    def _error(
        self,
        kind: FrameErrorKind,
        text: str,
        first_line: bytes,
        size: int | None = None,
        synchronizing: bool = True,
        unwaited: bool = False,
        limit: int | None = None,
    ) -> FrameError:
        return FrameError(
            extract_tag(first_line), kind, text, _command_name(first_line), size, synchronizing,
            unwaited, limit,
        )

    def _take(self, count: int) -> bytes:
        """Consume ``count`` bytes from the receive buffer with a single copy."""
        start = self._pos
        with memoryview(self._buf) as view:
            data = bytes(view[start : start + count])
        self._pos = start + count
        return data

    def _compact(self) -> None:
        pos = self._pos
        if pos and (pos >= len(self._buf) or pos > _COMPACT_THRESHOLD):
            del self._buf[:pos]
            self._scan -= pos
            self._pos = 0

    def _spool_arrived(self) -> _Spooled | FrameError | None:
        """LITERAL, spooled: pass the literal's octets received so far to its spool; the piece
        standing for the literal once they are all there; a FrameError when the spool fails."""
        available = min(len(self._buf) - self._pos, self._literal_need)
        if available:
            try:
                if self._spool is None:
                    assert self._spool_factory is not None  # _literal_spooled says so
                    self._spool = self._spool_factory(self._literal_size)
                    self._spools.append(self._spool)
                start = self._pos
                # Both views released even when write() raises (its traceback keeps the slice),
                # or the receive buffer could not be resized.
                with memoryview(self._buf) as view, view[start : start + available] as piece:
                    self._spool.write(piece)
            except OSError as exc:
                return self._spool_failed(exc)
            self._pos = start + available
            self._literal_need -= available
            self._compact()
            self._scan = self._pos
        if self._literal_need:
            return None
        assert self._spool is not None  # a spooled literal is never empty: its first octet opened it
        spooled = _Spooled(self._spool, self._literal_size, self._literal_binary, self._literal_sync)
        self._spool = None
        self._literal_spooled = False
        return spooled

    def _complete(self, first: bytes) -> CommandFrame | FrameError:
        """The command complete: its spooled literals (if any) read back, the frame built."""
        pieces: list[bytes | Literal | _Spooled] | list[bytes | Literal] = self._pieces
        if self._spools:
            try:
                pieces = [piece.read_back() if isinstance(piece, _Spooled) else piece for piece in pieces]
            except OSError as exc:
                return self._spool_failed(exc)
        # A CommandParts: the pieces start (and, with the last line, end) with line text.
        frame = CommandFrame(extract_tag(first), cast(CommandParts, tuple(pieces)))
        self._reset_command()
        return frame

    def _spool_failed(self, exc: OSError) -> FrameError:
        """The command is refused; the literal's octets still to come (if any) and the rest of
        the command are discarded as they arrive."""
        first = cast(bytes, self._pieces[0])  # the pieces start with line text
        sizes = [piece.size for piece in self._pieces if isinstance(piece, _Spooled)]
        size = self._literal_size if self._state is _State.LITERAL else max(sizes, default=None)
        error = self._error(FrameErrorKind.LITERAL_UNSPOOLED, f"Cannot hold the literal: {exc.strerror or exc}",
                            first, size=size, synchronizing=self._literal_sync)
        in_literal, need = self._state is _State.LITERAL, self._literal_need
        self._reset_command()
        if in_literal:
            self._start_bytes_skip(need)
        return error

    def _close_spools(self) -> None:
        spools, self._spools = self._spools, []
        self._spool = None
        self._literal_spooled = False
        for spool in spools:
            spool.close()

    def _reset_command(self) -> None:
        self._close_spools()
        self._pieces = []
        self._line_total = 0
        self._literal_total = 0
        self._literal_in_memory = 0
        self._literal_count = 0
        self._first_literal = 0
        self._reported = 0
        self._literal_need = 0

    def _start_line_skip(self, seen: bytes, *, honour_literals: bool) -> None:
        self._state = _State.SKIP_LINE
        self._skip_tail = seen[-_SKIP_TAIL:]
        self._skip_literals = honour_literals
        self._skip_unwaited = False
        self._drain_skip()

    def _start_bytes_skip(self, count: int, *, unwaited: bool = False) -> None:
        self._state = _State.SKIP_BYTES
        self._literal_need = count
        self._skip_literals = True
        self._skip_unwaited = unwaited
        self._drain_skip()

    def _drain_skip(self) -> None:
        buf = self._buf
        while True:
            if self._state is _State.SKIP_BYTES:
                available = len(buf) - self._pos
                taken = min(available, self._literal_need)
                self._pos += taken
                self._literal_need -= taken
                if self._literal_need:
                    break
                # After the octets comes the rest of the command line: discard it too.
                self._state = _State.SKIP_LINE
                self._skip_tail = b""
            elif self._state is _State.SKIP_LINE:
                lf = buf.find(b"\n", self._pos)
                if lf < 0:
                    recent = bytes(buf[max(self._pos, len(buf) - _SKIP_TAIL) :])
                    self._skip_tail = (self._skip_tail + recent)[-_SKIP_TAIL:]
                    self._pos = len(buf)
                    break
                tail = (self._skip_tail + bytes(buf[max(self._pos, lf - _SKIP_TAIL) : lf]))[-_SKIP_TAIL:]
                self._pos = lf + 1
                self._skip_tail = b""
                marker = _literal_marker(tail.rstrip(b"\r")) if self._skip_literals else None
                if marker is not None and (not marker[2] or (self._skip_unwaited and len(buf) > self._pos)):
                    self._state = _State.SKIP_BYTES
                    self._literal_need = marker[1]
                else:
                    # A synchronising literal is never sent: the client waits for "+", gets
                    # the tagged error instead, and abandons the command.
                    self._state = _State.LINE
                    self._literal_need = 0
                    self._skip_unwaited = False
            else:
                break
        self._scan = max(self._scan, self._pos)
        self._compact()


class _Again(enum.Enum):
    """Internal: a line was consumed without an event (an empty line between commands, a line
    announcing a non-synchronizing literal); the framer keeps going."""

    AGAIN = 0


_AGAIN = _Again.AGAIN
