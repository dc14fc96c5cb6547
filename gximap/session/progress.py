"""INPROGRESS (RFC 9585): while a command runs long, untagged ``* OK [INPROGRESS ("tag" count
total)] text`` lines tell the client that the server is still at it, and how far it has got.

A command's handler (or the search, FETCH or bulk write it runs) notes its progress in the
session's :class:`Progress` (``session.progress``, cleared for each command): ``count`` of ``total``
units, messages searched of those to search (records looked at of the folder's, first, for the
keys a record answers), fetched or written of the set. The live searches a command's catch-up
brings up to date (gximap.session.searchcontext) count under its tag, before its answer. The
session sends a line between whole responses only (gximap.session.session ``_step``: after an
item of output, a PAUSE or before an Await, never between RESPONSE_OPENS and RESPONSE_CLOSES),
once the command has run FIRST_AFTER seconds and then at most every INTERVAL seconds. What a
command does not count goes as ``NIL NIL``: the line still says the server is alive (RFC 9585
section 4: "or simply to prevent the client from timing out").

A command that waits for the client (AUTHENTICATE, IDLE) sends none: the time is the client's.
Neither does one parked on work off the workers (a search waiting for its slot, a piece of a bulk
write) until it resumes: the line is sent when the session runs the command, and a parked command
is not run. Pieces of a bulk write take about a quarter of a second (gximap.session.pieces), so
only a wait for a search slot can go without one for long.
"""

from __future__ import annotations

import time

from gximap.imap.encode import quoted

# RFC 9585 section 4: a server that sends notifications should send them "every 10-15
# seconds"; the low end, so that a client with a 15 s timer hears from the server in time.
INTERVAL = 10.0
# A command sends its first line once it has run this long. Nearly every command ends well
# before (a SEARCH BODY of 100,000 messages takes about a second), so a client sees no line it
# has no use for; one that runs longer gets the first count early enough to show progress.
FIRST_AFTER = 2.0

# The clock the lines are timed by (tests replace it, as the RFC's intervals are long).
clock = time.monotonic


class Progress:
    """How far the running command has got: ``count`` of ``total`` units, each None while not
    known. Only what the client can trust goes out (see :func:`line`)."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count: int | None = None
        self.total: int | None = None

    def note(self, count: int, total: int | None) -> None:
        self.count = count
        self.total = total

    def forget(self) -> None:
        """The count no longer applies (the command moved on to work it does not count)."""
        self.count = self.total = None


class Timer:
    """When a running command's next line is due: FIRST_AFTER after it started, then INTERVAL
    after the one before."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due = clock() + FIRST_AFTER

    def due(self) -> bool:
        """True (and the next one timed) when a line is due now."""
        now = clock()
        if now < self._due:
            return False
        self._due = now + INTERVAL
        return True


def line(tag: bytes, progress: Progress, text: bytes) -> bytes:
    """``* OK [INPROGRESS ("tag" count total)] text`` CRLF, the tag quoted as RFC 9585's syntax
    has it, or NIL when it holds a "]" (section 4: "If the tag is not available or if it contains
    the "]" character, it MUST be set to NIL", as a "]" could end the response code for a client).
    The count goes only when it is known and below a known total, or with no total known; the
    total only with a count below it and above zero: anything else is ``NIL`` (a count that
    reached its total while the command still works would read as done; section 4: GOAL "MUST
    be greater than PROGRESS")."""
    tag_field = b"NIL" if b"]" in tag else quoted(tag)
    count, total = progress.count, progress.total
    if count is None or count < 0 or total is not None and not 0 <= count < total:
        count = total = None
    state = b"NIL" if count is None else b"%d" % count
    goal = b"NIL" if total is None else b"%d" % total
    return b"* OK [INPROGRESS (%b %b %b)] %b\r\n" % (tag_field, state, goal, text)
