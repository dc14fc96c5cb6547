"""Deterministic test mail, identical for every server.

Message ``n`` is always the same bytes, so fills and searches are comparable across servers and runs.
A few markers make search results predictable: every :data:`SUBJECT_NEEDLE_EVERY`-th message
starts a conversation with :data:`SUBJECT_NEEDLE` in its Subject (its replies carry it too), every
:data:`BODY_NEEDLE_EVERY`-th message has :data:`BODY_NEEDLE` in its body, and one message in
:data:`UNSEEN_EVERY` is unseen.

Conversations, so that THREAD and the header listing see what a real mailbox holds: about
:data:`REPLY_PERCENT` % of the messages answer one of the :data:`REPLY_WINDOW` messages before them
("Re: " and the conversation's subject, In-Reply-To, References from the conversation's first
message on), at most :data:`MAX_DEPTH` replies deep. Some replies answer the user's own reply, which
is not in the folder (filed in Sent: a message THREAD knows only from References), and some carry
In-Reply-To alone, as older clients write. Each message joins a conversation with fewer than
1/(1 - 0.6) = 2.5 messages on average (most have one or two, a few a dozen or more).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from email.utils import formatdate
from functools import lru_cache

SUBJECT_NEEDLE = "quokka"
BODY_NEEDLE = "zanzibar"
SUBJECT_NEEDLE_EVERY = 1000
BODY_NEEDLE_EVERY = 1000
UNSEEN_EVERY = 3
BASE_DATE = 1_700_000_000
REPLY_PERCENT = 60
REPLY_WINDOW = 50
MAX_DEPTH = 12
# Of the replies, one in OWN_REPLY_EVERY answers the user's reply to its parent (not in the
# folder), and one in BARE_REPLY_EVERY has In-Reply-To but no References.
OWN_REPLY_EVERY = 5
BARE_REPLY_EVERY = 10

_WORDS = ("the quick brown fox jumps over lazy dog mail server index folder message body store "
          "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
          "meeting report invoice schedule project update review please attached thanks regards").split()
_BODY_VARIANTS = 256


@lru_cache(maxsize=1)
def _bodies() -> tuple[bytes, ...]:
    """A fixed set of plain-text bodies (1-4 KB) shared by all messages; building 100,000 distinct
    bodies would make the fill measure the generator instead of the server."""
    rng = random.Random(20240601)
    bodies = []
    for _ in range(_BODY_VARIANTS):
        paragraphs = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(15, 50)))
                      for _ in range(rng.randint(3, 10))]
        bodies.append("\r\n\r\n".join(_wrap(p) for p in paragraphs).encode("ascii") + b"\r\n")
    return tuple(bodies)


def _wrap(paragraph: str, width: int = 72) -> str:
    lines: list[str] = []
    line = ""
    for word in paragraph.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return "\r\n".join(lines)


def _mixed(number: int) -> int:
    """A fixed 32-bit hash of ``number`` (message ``n`` must not depend on the messages before it
    having been made, nor on the order of the calls)."""
    value = (number * 0x9E3779B1) & 0xFFFFFFFF
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & 0xFFFFFFFF
    return value ^ (value >> 13)


@lru_cache(maxsize=8192)
def parent_of(number: int) -> int | None:
    """The earlier message that message ``number`` answers, or None when it starts a conversation."""
    mixed = _mixed(number)
    if mixed % 100 >= REPLY_PERCENT:
        return None
    parent = number - 1 - (mixed >> 8) % REPLY_WINDOW
    if parent < 1 or depth_of(parent) >= MAX_DEPTH:
        return None
    return parent


def ancestors_of(number: int) -> list[int]:
    """The messages message ``number`` answers: its parent first, its conversation's first last."""
    ancestors: list[int] = []
    while (parent := parent_of(number)) is not None:
        ancestors.append(parent)
        number = parent
    return ancestors


def depth_of(number: int) -> int:
    """How many replies deep message ``number`` is (0: it starts its conversation)."""
    return len(ancestors_of(number))


def root_of(number: int) -> int:
    """The first message of message ``number``'s conversation."""
    ancestors = ancestors_of(number)
    return ancestors[-1] if ancestors else number


def _reply_kind(number: int) -> int:
    return (_mixed(number) >> 20) % (OWN_REPLY_EVERY * BARE_REPLY_EVERY)


def answers_own_reply(number: int) -> bool:
    """Whether reply ``number`` answers the user's reply to its parent (a message not in the folder)."""
    return parent_of(number) is not None and _reply_kind(number) % OWN_REPLY_EVERY == 0


def message_id(number: int) -> str:
    return f"<{number}.bench@example.org>"


def _own_reply_id(number: int) -> str:
    """The user's reply that message ``number`` answers (see answers_own_reply)."""
    return f"<{number}.sent@bench.invalid>"


def references_of(number: int) -> list[str]:
    """Message-IDs message ``number`` answers, from its conversation's first message to its parent."""
    ancestors = ancestors_of(number)
    chain: list[str] = []
    # (child, parent) pairs: the first sequence is one longer, its last (the root) unpaired
    for current, parent in zip((number, *ancestors), ancestors, strict=False):
        if answers_own_reply(current):
            chain.append(_own_reply_id(current))
        chain.append(message_id(parent))
    chain.reverse()
    return chain


def _topic(number: int) -> str:
    words = " ".join(_WORDS[(number * 7 + k * 13) % len(_WORDS)] for k in range(4))
    if number % SUBJECT_NEEDLE_EVERY == 7 % SUBJECT_NEEDLE_EVERY:
        words = f"{words} {SUBJECT_NEEDLE}"
    return f"{words} #{number}"


def subject_of(number: int) -> str:
    """The Subject: a conversation's first message names its topic; replies answer it with "Re: "."""
    root = root_of(number)
    return _topic(number) if root == number else f"Re: {_topic(root)}"


def is_seen(number: int) -> bool:
    return number % UNSEEN_EVERY != 0


FILLER_LINE = bytes(range(33, 109)) + b"\r\n"


def filler(octets: int) -> bytes:
    """``octets`` bytes of text lines (78 printable characters each, no word a search looks for),
    ending in CRLF when ``octets`` allows."""
    if octets <= 0:
        return b""
    text = FILLER_LINE * (octets // len(FILLER_LINE) + 1)
    return text[:octets - 2] + b"\r\n" if octets >= 2 else text[:octets]


def make_message(number: int, *, to: str = "user@bench.invalid", size: int = 0) -> bytes:
    """The RFC 5322 message number ``number`` (CRLF line ends, 7-bit); with ``size``, its body is
    padded with :func:`filler` lines to that many bytes in all (a message already as large keeps
    its length)."""
    sender = number % 97
    date = formatdate(BASE_DATE + number * 60)
    body = _bodies()[number % _BODY_VARIANTS]
    if number % BODY_NEEDLE_EVERY == 13 % BODY_NEEDLE_EVERY:
        body = body + f"the shipment goes to {BODY_NEEDLE} on friday\r\n".encode("ascii")
    headers = (
        f"Return-Path: <sender{sender}@example.org>\r\n"
        f"Received: from mx.example.org by mail.bench.invalid; {date}\r\n"
        f"From: Sender {sender} <sender{sender}@example.org>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {subject_of(number)}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: {message_id(number)}\r\n"
        f"{_reply_headers(number)}"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
    )
    message = headers.encode("ascii") + body
    return message + filler(size - len(message))


def _reply_headers(number: int) -> str:
    references = references_of(number)
    if not references:
        return ""
    in_reply_to = f"In-Reply-To: {references[-1]}\r\n"
    if _reply_kind(number) % BARE_REPLY_EVERY == 1:
        return in_reply_to
    # Folded as mail clients fold a long References field: one Message-ID per line.
    return in_reply_to + "References: " + "\r\n ".join(references) + "\r\n"


def message_stream(count: int, *, first: int = 1, size: int = 0) -> Iterator[tuple[int, bytes, bool]]:
    """(number, bytes, seen) for messages ``first`` .. ``first + count - 1`` (``size``: see
    :func:`make_message`)."""
    for number in range(first, first + count):
        yield number, make_message(number, size=size), is_seen(number)


def expected_hits(count: int, *, first: int = 1) -> dict[str, int]:
    """How many of messages ``first..first+count-1`` match each search the workloads run."""
    numbers = range(first, first + count)
    return {
        "unseen": sum(1 for n in numbers if not is_seen(n)),
        "subject": sum(1 for n in numbers if SUBJECT_NEEDLE in subject_of(n)),
        "body": sum(1 for n in numbers if n % BODY_NEEDLE_EVERY == 13 % BODY_NEEDLE_EVERY),
    }
