"""Steps and response reading shared by the ports of Dovecot imaptest's scripts to conversations
(tests/test_imaptest_*.py; repository dovecot/imaptest, src/tests/).

How the scripts read (imaptest's test-exec.c and test-parser.c):
* ``ok``/``no``/``bad`` before a command is the tagged status it must get; a ``* ...`` line after
  it an untagged response that must come, ``! ...`` one that must not.
* ``{{{`` newline, text, newline ``}}}`` is a literal of the text between, with LF made CRLF: the
  scripts' expected bodies (``Another bodybody3``) show that the newline before ``}}}`` is not
  part of it. Here :func:`lit` builds one, as LITERAL+ (imaptest sends LITERAL+ when the server
  has it; one step per script sends a synchronising literal too).
* ``$name`` captures a value on its first appearance and must equal it afterwards.
* The list of a ``* STATUS`` (and a ``* n FETCH``) is matched as ``$!unordered=2`` by default:
  the items in any order, extra items allowed (gximap's UNSEEN in NOTIFY's STATUS is one).
* A test starts in the state its ``state:`` line names (default: the test mailbox selected) with
  the mailbox ``$mailbox`` made anew (:func:`fill`); ``$mailbox_url`` is its name as a URL path
  segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from conversation import Conversation

MAILBOX = "imaptest"
Message = tuple[str, str | None]  # (message text with LF newlines, APPEND date-time or None)

# -- commands ------------------------------------------------------------------------------------


def text(script_text: str) -> bytes:
    """The octets of an imaptest ``{{{ }}}`` literal: LF made CRLF."""
    return script_text.replace("\n", "\r\n").encode()


def lit(script_text: str) -> bytes:
    data = text(script_text)
    return b"{%d+}\r\n%s" % (len(data), data)


def run(conv: Conversation, command: bytes) -> tuple[list[bytes], bytes]:
    """Send ``command`` with the next tag: its untagged responses and its tagged reply, the tag
    taken off (``OK [...] text``)."""
    tag = conv.next_tag().encode()
    lines = conv.send(tag + b" " + command + b"\r\n")
    assert lines and lines[-1].startswith(tag + b" "), (command, lines)
    return lines[:-1], lines[-1][len(tag) + 1:]


def ok(conv: Conversation, command: bytes) -> list[bytes]:
    """``ok command``: the tagged OK; the untagged responses before it."""
    untagged, reply = run(conv, command)
    assert reply.startswith(b"OK "), (command, untagged, reply)
    return untagged


def no(conv: Conversation, command: bytes, code: bytes) -> bytes:
    """``no command``: the tagged NO, here with the response code ``code`` too."""
    untagged, reply = run(conv, command)
    assert reply.startswith(b"NO [" + code), (command, untagged, reply)
    return reply


def bad(conv: Conversation, command: bytes) -> bytes:
    """A command gximap refuses as a protocol error: tagged BAD with a response code."""
    untagged, reply = run(conv, command)
    assert reply.startswith(b"BAD ["), (command, untagged, reply)
    return reply


def append(conv: Conversation, message: str | Message, mailbox: str = MAILBOX) -> None:
    """imaptest's bare ``append``: a message of the mbox, without flags (with its date, if any)."""
    body, date = (message, None) if isinstance(message, str) else message
    when = b"" if date is None else b'"' + date.encode() + b'" '
    ok(conv, b"APPEND " + mailbox.encode() + b" " + when + lit(body))


def fill(conv: Conversation, messages: Sequence[str | Message]) -> None:
    """imaptest's default start: ``$mailbox`` made anew, the messages of the script's mbox
    APPENDed, then SELECTed."""
    ok(conv, b"CREATE " + MAILBOX.encode())
    for message in messages:
        append(conv, message)
    ok(conv, b"SELECT " + MAILBOX.encode())


# -- reading responses ---------------------------------------------------------------------------


class Atom(str):
    """An atom of a response (a number, a flag, a FETCH item name); strings are ``bytes``."""


def parse_response(line: bytes) -> list[Any]:
    """The tokens of one logical response line: ``Atom``, ``bytes`` (quoted string or literal,
    literal8 too), ``None`` (NIL) and nested lists. A bracketed section (``BODY[HEADER.FIELDS
    (FROM)]<0>``) stays one atom."""
    pos = 0

    def parse_list(closing: int | None) -> list[Any]:
        nonlocal pos
        out: list[Any] = []
        while pos < len(line):
            char = line[pos]
            if char == 0x20:
                pos += 1
            elif char == 0x29:  # ")"
                assert closing == 0x29, line
                pos += 1
                return out
            elif char == 0x28:  # "("
                pos += 1
                out.append(parse_list(0x29))
            elif char == 0x22:  # quoted string
                end = pos + 1
                value = bytearray()
                while line[end] != 0x22:
                    if line[end] == 0x5C:
                        end += 1
                    value.append(line[end])
                    end += 1
                out.append(bytes(value))
                pos = end + 1
            elif char == 0x7B or line.startswith(b"~{", pos):  # literal, literal8
                start = line.index(b"{", pos) + 1
                close = line.index(b"}", start)
                size = int(line[start:close].rstrip(b"+"))
                data_start = close + 3  # "}" CRLF
                out.append(line[data_start:data_start + size])
                pos = data_start + size
            else:
                end = pos
                depth = 0
                while end < len(line) and (depth or line[end] not in b" ()"):
                    depth += {0x5B: 1, 0x5D: -1}.get(line[end], 0)
                    end += 1
                word = line[pos:end].decode()
                out.append(None if word.upper() == "NIL" else Atom(word))
                pos = end
        assert closing is None, f"unclosed list in {line!r}"
        return out

    return parse_list(None)


def as_text(value: Any) -> Any:
    """A parsed value with its strings as ``str``, as imaptest compares them: an atom and a
    string of the same text are alike."""
    if isinstance(value, list):
        return [as_text(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def caseless(value: Any) -> Any:
    """A parsed value with its atoms and strings folded to lower case."""
    if isinstance(value, list):
        return [caseless(item) for item in value]
    if isinstance(value, bytes | str):
        return value.lower()
    return value


def fetches(lines: Iterable[bytes]) -> list[tuple[int, dict[str, Any]]]:
    """The ``* n FETCH (...)`` responses among ``lines``, in order: (n, items by upper-case name)."""
    found = []
    for line in lines:
        tokens = parse_response(line)
        if len(tokens) == 4 and tokens[0] == "*" and str(tokens[2]).upper() == "FETCH":
            pairs = tokens[3]
            assert isinstance(pairs, list), line
            items = {str(name).upper(): value for name, value in zip(pairs[::2], pairs[1::2], strict=True)}
            found.append((int(tokens[1]), items))
    return found


def fetched(lines: Iterable[bytes], seq: int) -> dict[str, Any]:
    """The items of every ``* seq FETCH`` response among ``lines``, keyed by upper-case name."""
    items: dict[str, Any] = {}
    for number, found in fetches(lines):
        if number == seq:
            items.update(found)
    return items


def uids(lines: Iterable[bytes]) -> dict[int, int]:
    """{seq: UID} of the FETCH responses among ``lines``, each of which must carry its UID."""
    out: dict[int, int] = {}
    for seq, items in fetches(lines):
        assert "UID" in items, (seq, items)
        out[seq] = int(items["UID"])
    return out
