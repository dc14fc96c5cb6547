"""What every IMAP command handler shares: session states, completions, errors, the registry.

A command handler is a function ``handler(session, command)`` registered for a command class
with :func:`command`. It returns a :class:`Done` (simple commands) or is a generator that
yields untagged response lines (``bytes`` ending in CRLF; a response sent in several items is
bracketed by :data:`RESPONSE_OPENS` and :data:`RESPONSE_CLOSES`), :class:`NeedLine` requests
(AUTHENTICATE, IDLE), :class:`Await` (work off the worker threads) or :data:`PAUSE` (a long
computation letting other sessions have the worker, see :class:`TimeSlice`) and finally
``return``s a :class:`Done`. Generators let a FETCH of 100,000
messages stream message by message. The session adds the pending mailbox updates, then the
tagged completion built from the Done. A handler signals failure by raising
:class:`CommandFailed` (or by letting a midb error escape, which the session maps to
``NO [code]``).
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gximap.imap.codes import Code
from gximap.net.handler import TransportAction
from gximap.session.collector import collector_paused
from gximap.session.progress import Progress

if TYPE_CHECKING:
    from gximap.imap.commands import Command
    from gximap.session.session import ImapSession


# Untagged lines are gathered up to this size and yielded as one item: each item costs a trip
# through the command's generators, the session and the transport (about a tenth of a
# 2,000-envelope FETCH's CPU, and a third of a 200-folder LIST's, when yielded line by line).
COALESCE_BYTES = 32 * 1024


# A set of UIDs a view keeps (\\Recent, pending expunges, ...) that is usually empty: every view
# starts with the one shared NO_UIDS and gets a set of its own at its first UID (copy on write),
# as an empty set() costs 216 bytes, several per session (10,000 idle sessions).
UidSet = set[int] | frozenset[int]
NO_UIDS: frozenset[int] = frozenset()
# A session's ``enabled`` before ENABLE (RFC 5161), shared likewise.
NOTHING_ENABLED: frozenset[str] = frozenset()


def with_uids(held: UidSet, more: Iterable[int]) -> UidSet:
    """``held`` with ``more`` added: in place once it is a set of its own; else a new set
    (NO_UIDS again when there is nothing to hold)."""
    if isinstance(held, set):
        held.update(more)
        return held
    fresh = set(held)
    fresh.update(more)
    return fresh or NO_UIDS


def without_uids(held: UidSet, gone: Iterable[int]) -> UidSet:
    """``held`` less ``gone``, in place when it is a set; NO_UIDS when nothing is left."""
    if isinstance(held, set):
        held.difference_update(gone)
    elif held:
        held = held.difference(gone)
    return held or NO_UIDS


def coalesced(lines: Iterable[bytes], limit: int = COALESCE_BYTES) -> Iterator[bytes]:
    """``lines`` joined into items of about ``limit`` bytes (the last one shorter)."""
    gathered: list[bytes] = []
    size = 0
    for line in lines:
        gathered.append(line)
        size += len(line)
        if size >= limit:
            yield b"".join(gathered)
            gathered = []
            size = 0
    if gathered:
        yield b"".join(gathered)


class State(enum.Enum):
    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY_STATE = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


@dataclass(slots=True)
class Done:
    """How a command completes: the tagged line ``tag STATUS [code] text``."""

    text: Code
    args: tuple[str, ...] = ()
    status: str = "OK"
    code: bytes | None = None  # response code, e.g. b"READ-WRITE", b"APPENDUID 38505 3955"
    # Pending EXPUNGE/EXISTS/FETCH updates may be sent before the tagged line. FETCH, STORE and
    # SEARCH forbid EXPUNGE (RFC 3501 section 7.4.1; their UID forms allow it); ``expunge_ok``
    # says which case applies.
    sync: bool = True
    expunge_ok: bool = True
    after: TransportAction | None = None  # applied once the tagged line has been sent
    goodbye: Code | None = None  # then ``* BYE <text>`` and close (e.g. too many failed logins)


@dataclass(frozen=True, slots=True)
class NeedLine:
    """Yielded by a handler that needs one raw client line (AUTHENTICATE responses, IDLE's DONE).

    ``prompt`` is sent first (e.g. ``+ idling``). The line, without CRLF, is sent back into the
    generator. While an ``idle`` wait is in progress, mailbox changes are pushed to the client."""

    prompt: bytes
    idle: bool = False
    sensitive: bool = False  # the answer carries credentials: never traced


@dataclass(frozen=True, slots=True)
class Await:
    """Yielded by a handler that waits for work done off the worker threads (password hashing).

    The session parks the command without holding a worker; the future's completion wakes the
    connection through the pool's waker, and its result is sent back into the generator (an
    exception is thrown into it)."""

    future: Future[Any]


class Pause:
    """The type of :data:`PAUSE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PAUSE"


# Yielded by a handler in the middle of a long computation (a SEARCH testing every message): the
# pool serves the connections queued behind this one, then resumes the handler. A command keeps
# its worker until it yields, and the pool has a handful of workers: five slow SEARCHes that
# never yielded left every other session of the process without an answer for minutes.
PAUSE = Pause()

class ResponseMark:
    """The type of :data:`RESPONSE_OPENS` and :data:`RESPONSE_CLOSES`."""

    __slots__ = ("opens",)

    def __init__(self, opens: bool) -> None:
        self.opens = opens

    def __repr__(self) -> str:
        return "RESPONSE_OPENS" if self.opens else "RESPONSE_CLOSES"


# Yielded around the items of one response sent in several (a FETCH streaming a body: the
# literal's header, the body's chunks or FileRegion, the closing parenthesis; a long SORT or
# THREAD line). Nothing else may go out between them: a goodbye waits for the close, and a
# command failing in between cannot be answered in the stream, so the connection is closed. A
# handler yields neither PAUSE nor Await between them (the pool would close a connection that
# is saying goodbye once it has nothing more to send).
RESPONSE_OPENS = ResponseMark(True)
RESPONSE_CLOSES = ResponseMark(False)

# How long a handler computes before it pauses: a few of Python's thread switch intervals (5 ms),
# long enough that the round trip through the pool's queue (tens of microseconds) costs nothing
# measurable, short enough that a session queued behind five such handlers waits a tenth of a
# second.
SLICE_SECONDS = 0.02


class TimeSlice:
    """A long computation's clock: ``over()`` says when it has run for SLICE_SECONDS since it
    started or last paused; ``yield from pause()`` then yields PAUSE and starts the next slice.
    Code that may run outside a command (tests, tools) takes ``None`` for "never pause"."""

    __slots__ = ("seconds", "_end", "_collector", "holds_slot", "progress")

    def __init__(self, seconds: float | None = None, progress: Progress | None = None) -> None:
        self.seconds = SLICE_SECONDS if seconds is None else seconds
        # Where the computation notes how far it has got (the command's session.progress, for
        # RFC 9585's INPROGRESS), if anywhere.
        self.progress = progress
        self._end = time.monotonic() + self.seconds
        # The computation holds a search slot (gximap.session.searching.command_slot): the
        # search within it claims none of its own.
        self.holds_slot = False
        # An entered collector_paused(), left while other sessions run between the slices (the
        # collector would otherwise stay off for as long as the whole computation).
        self._collector: contextlib.AbstractContextManager[None] | None = None

    def over(self) -> bool:
        return time.monotonic() >= self._end

    def note_progress(self, count: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress.note(count, total)

    def forget_progress(self) -> None:
        if self.progress is not None:
            self.progress.forget()

    def pause(self) -> Generator[Pause, Any, None]:
        yield from self._step_aside(PAUSE)

    def wait(self, future: Future[Any]) -> Generator[Await, Any, Any]:
        """Yield Await(future) (no worker is held meanwhile) and start a new slice once it is
        done: its result."""
        return (yield from self._step_aside(Await(future)))

    def _step_aside(self, item: Any) -> Generator[Any, Any, Any]:
        collector, self._collector = self._collector, None
        if collector is not None:
            collector.__exit__(None, None, None)
        result = yield item  # a generator closed here (the client left) has no pause to leave
        self._end = time.monotonic() + self.seconds  # before a collection the resumed pause may start
        if collector is not None:
            self._collector = collector_paused()
            self._collector.__enter__()
        return result

    @contextlib.contextmanager
    def collector_paused(self) -> Iterator[None]:
        """collector_paused() during this computation's slices."""
        self._collector = collector_paused()
        self._collector.__enter__()
        try:
            yield
        finally:
            collector, self._collector = self._collector, None
            if collector is not None:
                collector.__exit__(None, None, None)


def pause_if_over(slicer: TimeSlice | None) -> Generator[Pause, Any, None]:
    """``slicer.pause()`` once its slice is over; nothing without a slicer (run unsliced)."""
    if slicer is not None and slicer.over():
        yield from slicer.pause()


def collector_paused_in(slicer: TimeSlice | None) -> contextlib.AbstractContextManager[None]:
    """collector_paused() while a computation runs: with a slicer, not between its slices (other
    sessions run then); without one, for its whole run."""
    return collector_paused() if slicer is None else slicer.collector_paused()


def run_unsliced(steps: Generator[Any, Any, Any]) -> Any:
    """The return value of a computation that yields only PAUSE, run to its end at once."""
    while True:
        try:
            item = next(steps)
        except StopIteration as stop:
            return stop.value
        if not isinstance(item, Pause):
            raise TypeError(f"unexpected {item!r} from a computation that only pauses")


class LazyLines:
    """Output made as it is sent (a session's next_output() asks for one chunk at a time), for
    responses too many to build in one piece within a worker's slice."""

    __slots__ = ()

    def next_chunk(self) -> bytes | None:
        """The next lines, or None once there are no more."""
        raise NotImplementedError


class CommandFailed(Exception):
    """Complete the current command with ``NO`` or ``BAD``."""

    def __init__(self, text: Code, *args: str, status: str = "NO", code: bytes | None = None) -> None:
        super().__init__(text, args)
        self.done = Done(text, tuple(args), status, code)


HandlerResult = Done | Generator[Any, Any, Done]
Handler = Callable[["ImapSession", Any], HandlerResult]


@dataclass(frozen=True, slots=True)
class Registration:
    handler: Handler
    states: frozenset[State]
    expunge_ok: bool = True


@dataclass
class Registry:
    handlers: dict[type, Registration] = field(default_factory=dict)

    def lookup(self, command: Command) -> Registration | None:
        return self.handlers.get(type(command))


REGISTRY = Registry()


def command(*classes: type, states: frozenset[State], expunge_ok: bool = True) -> Callable[[Handler], Handler]:
    """Register ``handler`` for the given command classes, valid in ``states``."""

    def decorate(handler: Handler) -> Handler:
        for cls in classes:
            REGISTRY.handlers[cls] = Registration(handler, states, expunge_ok)
        return handler

    return decorate
