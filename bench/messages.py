"""Deterministic test mail, identical for every server.

Message ``n`` is always the same bytes, so fills and searches are comparable across servers and runs.
A few markers make search results predictable: every :data:`SUBJECT_NEEDLE_EVERY`-th message has
:data:`SUBJECT_NEEDLE` in its Subject, every :data:`BODY_NEEDLE_EVERY`-th message has
:data:`BODY_NEEDLE` in its body, and one message in :data:`UNSEEN_EVERY` is unseen.
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


def subject_of(number: int) -> str:
    words = " ".join(_WORDS[(number * 7 + k * 13) % len(_WORDS)] for k in range(4))
    if number % SUBJECT_NEEDLE_EVERY == 7 % SUBJECT_NEEDLE_EVERY:
        words = f"{words} {SUBJECT_NEEDLE}"
    return f"{words} #{number}"


def is_seen(number: int) -> bool:
    return number % UNSEEN_EVERY != 0


def make_message(number: int, *, to: str = "user@bench.invalid") -> bytes:
    """The RFC 5322 message number ``number`` (CRLF line ends, 7-bit)."""
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
        f"Message-ID: <{number}.bench@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
    )
    return headers.encode("ascii") + body


def message_stream(count: int, *, first: int = 1) -> Iterator[tuple[int, bytes, bool]]:
    """(number, bytes, seen) for messages ``first`` .. ``first + count - 1``."""
    for number in range(first, first + count):
        yield number, make_message(number), is_seen(number)


def expected_hits(count: int, *, first: int = 1) -> dict[str, int]:
    """How many of messages ``first..first+count-1`` match each search the workloads run."""
    numbers = range(first, first + count)
    return {
        "unseen": sum(1 for n in numbers if not is_seen(n)),
        "subject": sum(1 for n in numbers if n % SUBJECT_NEEDLE_EVERY == 7 % SUBJECT_NEEDLE_EVERY),
        "body": sum(1 for n in numbers if n % BODY_NEEDLE_EVERY == 13 % BODY_NEEDLE_EVERY),
    }
