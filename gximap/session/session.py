"""One IMAP session: the state machine between the connection pool and the command handlers.

The pool calls the :class:`~gximap.net.handler.ProtocolHandler` methods; this class frames the
input (gximap.imap.framing), parses commands (gximap.imap.parser), dispatches them to the
registered handlers (gximap.session.commands.*) one at a time, and queues their output.

Commands run strictly one after another: a command's response stream (a generator, so FETCH
1:* on 100,000 messages is produced message by message as the socket accepts it) is drained
before the next pipelined command starts. Handler code therefore runs inside
:meth:`next_output` as well as :meth:`process`, always on the one worker that owns the
connection.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future
from typing import Any

from gximap import log as gxlog
from gximap.expiring import expire_in_background
from gximap.imap import commands as cmds
from gximap.imap import parser
from gximap.imap.codes import Code, completion
from gximap.imap.commands import Command
from gximap.imap.framing import (
    MESSAGE_COMMANDS,
    CommandFrame,
    FrameError,
    FrameErrorKind,
    Framer,
    NeedContinuation,
)
from gximap.net.handler import (
    INPUT_HIGH_WATER,
    ConnectionInfo,
    FileRegion,
    OutputItem,
    TransportAction,
    Waker,
)
from gximap.session import capabilities, condstore, progress, searchcontext, uidonly
from gximap.session import notify as notify_commands
from gximap.session.base import (
    NOTHING_ENABLED,
    REGISTRY,
    SELECTED,
    Await,
    CommandFailed,
    Done,
    LazyLines,
    NeedLine,
    Pause,
    ResponseMark,
    State,
    TimeSlice,
)

# Importing the command modules registers their handlers.
from gximap.session.commands import load_all as _load_commands
from gximap.session.commands import replace as replace_commands
from gximap.session.context import ServerContext
from gximap.session.errors import done_for_store_error, log_store_trouble
from gximap.session.literalspool import SPOOL_THRESHOLD, file_spool_factory
from gximap.session.selected import SelectedMailbox, uid_ranges_without
from midb import errors as midb_errors
from midb import events as midb_events

_load_commands()

# Literal octets one command may carry before authentication. A client needs literals then only
# for LOGIN's user name and password; without a cap a stranger could make the server buffer a
# whole message (imap_max_literal_size) per connection before saying who it is.
PREAUTH_MAX_LITERAL = 8192

# Literal octets a command other than APPEND and SETMETADATA may carry: search strings, names
# and passwords are small, and the command holds them whole while it runs (with COMPRESS, 64 MB
# of SEARCH literal were 58 KB on the wire).
COMMAND_LITERAL_MAX = 1 << 20

# After imap_login_timeout, the time a session still waiting for its output to drain (or for its
# password check) has to say goodbye before the pool closes it (ImapSession.hard_deadline); at
# most the login timeout itself.
LOGIN_GRACE = 10.0

# In IDLE (and with NOTIFY between commands), a catch-up, push or live-search re-check that met a
# store error (the reader table full, the map resized by another process: StoreBusy) is tried
# again this long after, then after twice as long at each failure soon after the last retry, up
# to IDLE_RETRY_MAX (_owe_updates): a change that came meanwhile is not left waiting for another
# one, or for DONE, and a store that stays unavailable is asked about once a minute per session.
IDLE_RETRY_FIRST = 1.0
IDLE_RETRY_MAX = 60.0

# The parse errors that are refusals of a valid command (NO), by their response code, with the
# text each is answered with (whose usual code is that one).
REFUSED_PARSES = {"BADCHARSET": Code.NO_BAD_CHARSET, "CANNOT": Code.NO_INVALID_MAILBOX_NAME,
                  "LIMIT": Code.NO_APPEND_TOO_MANY}


class _Running:
    """The command currently producing output."""

    __slots__ = ("command", "tag", "gen", "waiting", "line", "expunge_ok", "name", "future", "frame", "silent",
                 "resume", "then", "answers", "progress_timer", "pause_due")

    def __init__(self, command: Command | None, tag: bytes, gen: Generator[Any, Any, Done | None], expunge_ok: bool,
                 frame: CommandFrame | None = None, *, progress_timer: progress.Timer | None = None) -> None:
        self.command = command
        self.tag = tag
        self.frame = frame  # for the imap_cmd_debug line; its preview is made only when logged
        self.name = command.name if command is not None else "?"
        self.gen = gen
        self.waiting: NeedLine | None = None  # the handler waits for a client line
        self.line: bytes | None = None  # the line to send into the generator next
        self.expunge_ok = expunge_ok
        self.future: Future[Any] | None = None  # the handler awaits work done off the workers
        # Work of the session's own (NOTIFY's FETCH of new messages, MessageNew's fetch-att; live
        # searches looking at messages again): untagged output only, then ``then`` (if any), the
        # tagged answer of the command whose end it came at (``answers``: the command, its Done
        # and the UID its updates were announced above; _finish) and the command it interrupted
        # (an IDLE, or none) runs on. See _run_before_resuming.
        self.silent = False
        self.resume: _Running | None = None
        self.then: Callable[[], None] | None = None
        self.answers: tuple[_Running, Done, int | None] | None = None
        # When its next INPROGRESS line is due (None: it sends none), and a PAUSE put off until
        # the line that came with it is out (next_output).
        self.progress_timer = progress_timer
        self.pause_due = False

    @property
    def parked(self) -> bool:
        """Nothing to do until the client sends a line or awaited work completes."""
        if self.future is not None:
            return not self.future.done()
        return self.waiting is not None and self.line is None


class _Flow:
    """The state of a session's input and output between commands."""

    __slots__ = ("input_blocked", "closing", "inside_response", "goodbye_due", "bad_streak", "append_tally",
                 "metadata_tally")

    def __init__(self) -> None:
        self.input_blocked = False  # between STARTTLS/COMPRESS/its end and the transport change
        self.closing = False
        # Between RESPONSE_OPENS and RESPONSE_CLOSES (a FETCH streaming a body), and the goodbye
        # that waits for the response to be complete.
        self.inside_response = False
        self.goodbye_due: Code | None = None
        self.bad_streak = 0
        self.append_tally: parser.AppendTally | None = None  # the APPEND or REPLACE being framed (_tally)
        self.metadata_tally: parser.MetadataTally | None = None  # the SETMETADATA being framed


class _Owed:
    """What a session owes its client of the mailbox updates."""

    __slots__ = ("lines_unmade", "selected_gone", "updates_missed", "notify_owed", "selected_changed")

    def __init__(self) -> None:
        # The LazyLines (a catch-up's flag changes) in _out whose lines are not all made yet: a
        # HIGHESTMODSEQ is worked out once they are (_send_updates, _announce_when_made).
        self.lines_unmade = 0
        self.selected_gone = False  # another session deleted the selected mailbox
        self.updates_missed = False  # a catch-up, push or live-search re-check failed since the last catch-up (_owe_updates)
        # A NOTIFY push that could not be made when the change was heard (the output backlog, or
        # the FETCH of new messages running): next_output() makes it once it can.
        self.notify_owed = False
        # NOTIFY heard of a change of the selected mailbox since its last catch-up (_send_updates):
        # a push is due for it, whether or not a report took it from the pending changes since.
        self.selected_changed = False


class _IdleClock:
    """IDLE's (or NOTIFY's) keepalives and retries of failed catch-ups."""

    __slots__ = ("retry_due", "retry_at", "retry_delay", "last_keepalive")

    def __init__(self) -> None:
        # IDLE (or NOTIFY) is to try again at retry_at (_owe_updates; the wait before: retry_delay).
        self.retry_due = False
        self.retry_at = -math.inf
        self.retry_delay = IDLE_RETRY_FIRST
        # When IDLE's last "* OK Still here" went out, or its last retry (timed_out): the pool's
        # idle timer started again then.
        self.last_keepalive = 0.0

    def retry_wait(self, last_activity: float) -> float:
        """The pool's wait until retry_at, counted as it counts (from the later of the last
        input and the last keepalive or retry, as in idle_timeout); never 0, which fires at once."""
        return max(self.retry_at - max(last_activity, self.last_keepalive), 0.001)


class _UserSlot:
    """The key a session is counted under in ctx.user_sessions while logged in
    (imap_max_conn_per_user_ip). The lock: a login is counted on the thread that checked its
    password, which may be while the connection is lost (``gone``) on a worker."""

    __slots__ = ("key", "lock", "gone")

    def __init__(self) -> None:
        self.key: str | None = None
        self.lock = threading.Lock()
        self.gone = False


class ImapSession:
    """Implements :class:`gximap.net.handler.ProtocolHandler` for IMAP."""

    def __init__(self, ctx: ServerContext, conn: ConnectionInfo, waker: Waker) -> None:
        self.ctx = ctx
        self.conn = conn
        self.waker = waker
        self.id = ctx.next_session_id()
        settings = ctx.settings
        self.state = State.NOT_AUTHENTICATED
        self.tls = conn.tls
        self.compressed = False  # RFC 4978 DEFLATE is active on the connection
        self.user: str | None = None  # the storage account the session works on
        self.actor: str | None = None  # who authenticated, when impersonating (actor!mailbox)
        # The names, casefolded, that an IMAP URL's user may give for this login (CATENATE:
        # gximap.session.commands.append): the storage account and the names the client logged in as.
        self.url_users: frozenset[str] = frozenset()
        self.selected: SelectedMailbox | None = None
        # ENABLEd extensions: IMAP4REV2, UTF8=ACCEPT, ... Replaced, not changed, by ENABLE: most
        # sessions enable nothing and share one empty frozenset (an empty set() is 216 bytes).
        self.enabled: frozenset[str] = NOTHING_ENABLED
        self.client_id: dict[str, str | None] | None = None
        self.auth_failures = 0  # refused logins on this connection: imap_auth_times closes it
        self.password_failures = 0  # those of them whose password was checked: they block the user
        self.saved_search: list[int] | None = None  # SEARCHRES "$": UIDs
        spool_dir = settings.literal_spool_dir
        self.framer = Framer(settings.max_line, settings.max_literal, literal_minus=False,
                             max_command_literal=COMMAND_LITERAL_MAX,
                             spool=file_spool_factory(spool_dir) if spool_dir else None,
                             spool_threshold=SPOOL_THRESHOLD)
        self._out: deque[OutputItem | LazyLines] = deque()
        self._running: _Running | None = None
        # Grouped in slotted objects: CPython (3.11) keeps an instance's attributes in a compact
        # table shared by the class while there are at most 29 names; past that every session
        # carries a dict of its own, 1.6 KiB for each of 10,000 idle sessions (test_idle_memory).
        self._flow = _Flow()
        self._owed = _Owed()
        self._idle = _IdleClock()
        self._slot = _UserSlot()
        self._watch: Any = None
        self.notify: notify_commands.NotifyState | None = None  # RFC 5465: None until NOTIFY
        self.last_activity = self.connected_at = time.monotonic()
        # How far the running command has got (RFC 9585 INPROGRESS): cleared for each command.
        self.progress = progress.Progress()

    # -- properties handlers use --------------------------------------------------------------

    @property
    def settings(self):  # noqa: ANN201 - Settings, replaced as a whole on reload
        return self.ctx.settings

    @property
    def store(self) -> Any:
        return self.ctx.store

    @property
    def codes(self):  # noqa: ANN201
        # Human-readable text is US-ASCII until the client enables IMAP4rev2 (RFC 3501 section 9,
        # RFC 9051 section 9): a translated imap_code.txt goes folded (ResponseCodes.ascii).
        codes = self.ctx.codes
        return codes if "IMAP4REV2" in self.enabled else codes.ascii

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def qresync_enabled(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def uidonly(self) -> bool:
        """RFC 9586: messages are named by UID only, in requests and responses."""
        return uidonly.UIDONLY in self.enabled

    @property
    def utf8(self) -> bool:
        """Mailbox names and quoted strings may carry UTF-8 (IMAP4rev2 or UTF8=ACCEPT)."""
        return "IMAP4REV2" in self.enabled or "UTF8=ACCEPT" in self.enabled

    @property
    def rhost(self) -> str:
        return self.conn.rhost

    def text(self, code: Code, *args: str) -> bytes:
        if not args:
            return self.codes.plain_bytes(code)
        return self.codes.text(code, *args).encode("utf-8")

    def untagged(self, data: bytes) -> bytes:
        return b"* " + data + b"\r\n"

    def status_line(self, status: bytes, text: Code, *args: str, code: bytes | None = None) -> bytes:
        """``STATUS [code] text`` (no tag, no CRLF); a NO or BAD given no code gets its text's
        usual one (codes.DEFAULT_RESPONSE_CODES)."""
        return completion(status, code, self.text(text, *args), text)

    @property
    def file_output(self) -> bool:
        """Large body ranges go out as FileRegions (sendfile(2)): the pool takes them and the
        connection is plain (under TLS or DEFLATE every byte is encoded)."""
        return self.conn.file_regions and not self.tls and not self.compressed

    def capability_list(self) -> list[str]:
        return capabilities.capabilities(self)

    # -- ProtocolHandler ------------------------------------------------------------------------

    def start(self) -> None:
        caps = " ".join(self.capability_list()).encode()
        greeting = self.text(Code.GREETING, self.settings.host_id)
        self._out.append(b"* OK [CAPABILITY " + caps + b"] " + greeting + b"\r\n")

    def data_received(self, data: bytes) -> None:
        if self._flow.input_blocked or self._flow.closing:
            return
        self.last_activity = time.monotonic()
        gxlog.io_trace(self.id, "C", data, sensitive=self._sensitive_input())
        self.framer.feed(data)

    def input_paused(self) -> bool:
        """Stop reading: INPUT_HIGH_WATER bytes wait behind a command parked on a future (whose
        completion fires the waker, so reading resumes)."""
        running = self._running
        return (running is not None and running.future is not None and not running.future.done()
                and self.framer.buffered >= INPUT_HIGH_WATER)

    def awaiting(self) -> bool:
        """A command waits for work off the workers (a password check, a search slot) and is still
        to be answered: the pool keeps a client that half-closed meanwhile until it is."""
        running = self._running
        return running is not None and running.future is not None

    def process(self, budget: int) -> bool:
        """Start commands while none is running; feed lines to a waiting handler."""
        while budget > 0 and not self._flow.closing:
            running = self._running
            if running is not None:
                if running.future is not None:
                    return not running.parked  # the waker fires when the awaited work is done
                if running.waiting is None or running.line is not None:
                    return True  # output pending: next_output() drives it
                line = self.framer.next_raw_line()
                if line is None:
                    return False
                if isinstance(line, FrameError):
                    self._abort_running(self.status_line(b"BAD", Code.BAD_LINE_TOO_LONG))
                    continue
                running.line = line
                return True
            if self._flow.input_blocked or not self.framer.buffered:
                # Nothing buffered, no event: the pool asks again after every command answered.
                return False
            self.framer.max_literal = self._literal_limit()
            event = self.framer.next_event()
            if event is None:
                return False
            budget -= 1
            if isinstance(event, NeedContinuation):
                self._continuation(event)
            elif isinstance(event, FrameError):
                self._frame_error(event)
            else:
                self._execute(event)
        return not self._flow.closing and (self._running is not None or self.framer.buffered > 0)

    def next_output(self) -> OutputItem | None:
        while True:
            if self._out:
                item = self._out.popleft()
                if isinstance(item, LazyLines):
                    try:
                        chunk = item.next_chunk()
                    except midb_errors.MidbError as exc:
                        # The lines kept back are the view's to send at its next catch-up (a
                        # LazyFlagUpdates hands them back): as a catch-up that fails, a warning.
                        self._owed.lines_unmade -= 1
                        item = self._updates_delayed(exc)
                    else:
                        if chunk is None:
                            self._owed.lines_unmade -= 1
                            continue
                        self._out.appendleft(item)  # more may follow: it stays first in line
                        item = chunk
                if isinstance(item, FileRegion):
                    gxlog.io_trace_file(self.id, len(item))
                elif not isinstance(item, TransportAction):
                    gxlog.io_trace(self.id, "S", item)
                return item
            running = self._running
            if running is None or running.parked:
                if self._owed.notify_owed and (running is None or self._idling()):
                    self._owed.notify_owed = False
                    self._push_notifications()
                    continue
                return None
            if running.pause_due:  # its INPROGRESS line is out: now the pause
                running.pause_due = False
                return None
            if not self._step(running):
                # The handler paused (PAUSE): process() still reports more, so the pool serves
                # the connections queued meanwhile and then this one again.
                return None

    def idle_timeout(self) -> float:
        if self.state is State.NOT_AUTHENTICATED:
            # The pool counts from the last input (or answer: idle_since); a client trickling a
            # byte at a time would never be idle that long, so the time left before the login
            # deadline caps it, reckoned from that same last input (not from now: a slice run
            # later, e.g. when a password check completes, would bring the goodbye forward).
            # inf - x stays inf: no deadline.
            left = self._login_deadline() - self.last_activity
            return min(self.settings.conn_timeout, max(left, 0.001))
        interval = self.settings.idle_notify_interval
        if (interval > 0 or self._idle.retry_due or self._idle.last_keepalive > self.last_activity) and self._in_idle():
            # The pool counts from the latest of the last input, the end of a push the client was
            # slow to take, and the last keepalive or retry: the next keepalive is one interval
            # after that, whichever it is (computed from this session's own clock, it drifted by
            # how late a blocked push ended, at every keepalive). The autologout counts from the
            # last input (or answer): after a keepalive or retry, what was left of it then.
            since_input = max(0.0, self._idle.last_keepalive - self.last_activity)
            left = self.settings.autologout - since_input
            if interval > 0:
                left = min(left, interval)
            if self._idle.retry_due and self._idling():   # the retry, sooner (_owe_updates); not while
                # the session's own work runs before IDLE goes on (it may wait for a search slot,
                # and no catch-up may move the view under it): the timer would fire again at once.
                left = min(left, self._idle.retry_wait(self.last_activity))
            return left
        notify = self.notify
        if notify is not None and self._running is None and (
                self._idle.retry_due or self._idle.last_keepalive > self.last_activity) and notify.active:
            # NOTIFY between commands: RFC 5465 section 3 lets the server send at any time, so a
            # push that met a store error is retried as in IDLE (timed_out), with no keepalive
            # line; the autologout still counts from the last input (or answer).
            left = self.settings.autologout - max(0.0, self._idle.last_keepalive - self.last_activity)
            if self._idle.retry_due:
                left = min(left, self._idle.retry_wait(self.last_activity))
            return left
        return self.settings.autologout

    def idle_since(self) -> float:
        """The pool's idle timer counts from this at the earliest: the last input, or the last
        command's answer (_answer), whichever is later."""
        return self.last_activity

    def _idling(self) -> bool:
        """IDLE runs now: it waits for the client's DONE (no work of the session's own before it)."""
        running = self._running
        return running is not None and running.waiting is not None and running.waiting.idle

    def _in_idle(self) -> bool:
        """The client is in IDLE: it runs, or the session's own work (_run_before_resuming: the
        live searches looking at a delivery, NOTIFY's FETCH of new messages) runs before IDLE
        goes on. For the timers: that work may wait (for a search slot), and the client, which
        only waits for its DONE to be read, is to get its keepalives meanwhile."""
        running = self._running
        while running is not None and running.silent:
            running = running.resume
        return running is not None and running.waiting is not None and running.waiting.idle

    def hard_deadline(self) -> float:
        """Before login: LOGIN_GRACE after the login deadline, the pool closes the connection
        whatever it is doing. The goodbye (idle_timeout) comes at the deadline when the session
        waits for input; this catches one that never does: a client pipelining commands and
        reading their answers slowly, or a password check that hangs."""
        if self.state is not State.NOT_AUTHENTICATED:
            return math.inf
        return self._login_deadline() + min(LOGIN_GRACE, self.settings.login_timeout)

    def _login_deadline(self) -> float:
        """When a session not logged in yet gets its goodbye (imap_login_timeout; inf: never)."""
        login_timeout = self.settings.login_timeout
        return self.connected_at + login_timeout if login_timeout > 0 else math.inf

    def timed_out(self) -> bool:
        now = time.monotonic()
        if self.state is State.NOT_AUTHENTICATED:
            # The pool's timer may fire a little before the deadline it was given (its clock is
            # read between slices): a margin keeps the goodbye's reason right.
            late = now >= self._login_deadline() - 0.5
            self._goodbye(Code.BYE_LOGIN_TIMEOUT if late else Code.BYE_INACTIVITY)
            return True
        interval = self.settings.idle_notify_interval
        retrying = self._idle.retry_due and self._idling()
        if ((interval > 0 or retrying) and self._in_idle()
                and now - self.last_activity < self.settings.autologout - 0.5):
            # The keepalive (with a retry too: the next one is then an interval after it).
            self._idle.last_keepalive = now
            if interval > 0 and not self._flow.inside_response:  # own work parked inside a response: nothing goes between its parts
                self._out.append(b"* OK " + self.text(Code.INFO_STILL_HERE) + b"\r\n")
            if (retrying or self._owed.updates_missed) and self._idling():
                # A push or a live search's re-check failed (the store was busy): try again, rather
                # than leave the changes waiting for the next one or for DONE (_owe_updates; a
                # failure again asks for the next retry). Not while the session's own work runs:
                # no catch-up may move the view under it.
                self._idle.retry_due = False
                self._idle_push()
            return False
        if (self._idle.retry_due and self.notify is not None and self._running is None and self.notify.active
                and now - self.last_activity < self.settings.autologout - 0.5):
            # NOTIFY between commands: the retry idle_timeout set the timer for, without a line
            # of its own (none is owed: the client is not waiting for anything).
            self._idle.last_keepalive = now
            self._idle.retry_due = False
            self._push_notifications()
            return False
        self._goodbye(Code.BYE_AUTOLOGOUT)
        return True

    def wakeup(self) -> None:
        if self.notify is None:
            if self._idling() and self.selected:
                self._push_idle_updates(self.selected)
            return
        # RFC 5465 section 3: with NOTIFY the server reports changes at any time. Output goes out
        # between responses only: between commands or in IDLE now, else before the running
        # command's tagged answer (_finish; after it when its live searches looked again first),
        # or after the session's own work, NOTIFY's FETCH of new messages (next_output).
        if self._running is None or self._idling():
            self._push_notifications()
        else:
            self._owed.notify_owed = True

    def _idle_push(self) -> None:
        """IDLE started, or the idle timer retries a failed push: with NOTIFY what it asks for (RFC
        5465 section 4: NOTIFY decides what IDLE reports), else the selected mailbox's updates."""
        if self.notify is not None:
            self._push_notifications()
        elif self.selected is not None:
            self._push_idle_updates(self.selected)

    def _push_idle_updates(self, selected: SelectedMailbox) -> None:
        """IDLE: what changed, now; the goodbye if the mailbox is gone."""
        self._send_updates(selected)
        if self._owed.selected_gone:
            self._goodbye(Code.BYE_MAILBOX_DELETED)

    def shutdown(self) -> None:
        self._goodbye(Code.BYE_SHUTDOWN)

    def displaceable(self) -> bool:
        """Not logged in yet: with every context taken, the pool may close this session to make
        room for a new connection (see gximap.net.pool)."""
        return self.state is State.NOT_AUTHENTICATED

    def displaced(self) -> None:
        self._goodbye(Code.BYE_CONNECTION_QUEUE_FULL)

    def input_undecodable(self) -> None:
        """The client's COMPRESS=DEFLATE stream is broken (the pool logged how): tell it why in
        a goodbye, which still goes out through our intact DEFLATE stream."""
        self._goodbye(Code.BYE_INVALID_COMPRESSED_DATA)

    def transport_changed(self, action: TransportAction, tls: bool) -> None:
        self.tls = tls
        if action is TransportAction.COMPRESS:
            self.compressed = True
        elif action is TransportAction.END_COMPRESS:
            self.compressed = False
        self._flow.input_blocked = False

    def connection_lost(self) -> None:
        self._flow.closing = True
        with self._slot.lock:
            self._slot.gone = True
        self.release_user_slot()
        for item in self._out:  # never to be sent: their files are closed now, not by the GC
            if isinstance(item, FileRegion):
                item.close()
        self._out.clear()
        self._owed.lines_unmade = 0
        self.framer.discard_buffer()  # up to a literal's worth of input, freed now
        gxlog.io_trace_end(self.id)
        self._close_selected()
        self.set_notify(None)
        running, self._running = self._running, None
        while running is not None:   # the session's own work first, then what it interrupted
            running.gen.close()
            running = running.resume

    # -- helpers for handlers -------------------------------------------------------------------

    def hold_user_slot(self, account: str) -> bool:
        """Count this session against imap_max_conn_per_user_ip as ``account``'s, from its client
        address; False when the account holds that many already (AuthService.submit's ``hold``,
        on whichever thread decides the login)."""
        limit = self.settings.max_conn_per_user_ip
        if limit <= 0:
            return True
        with self._slot.lock:
            if self._slot.gone:
                return True  # its answer is never sent, so nothing to hold
            key = self.ctx.user_sessions.hold(account, self.conn.peer_host, limit)
            if key is None:
                return False
            self._slot.key = key
        return True

    def release_user_slot(self) -> None:
        """The session ends or leaves the account (UNAUTHENTICATE): its place is free."""
        with self._slot.lock:
            key, self._slot.key = self._slot.key, None
        if key is not None:
            self.ctx.user_sessions.release(key)

    def login_completed(self, user: str, actor: str | None = None, names: Iterable[str] = ()) -> None:
        """Logged in as the storage account ``user`` (``actor``: who authenticated, when
        impersonating); ``names``: those the client logged in as, which its URLs may give."""
        self.user = user
        self.actor = actor
        self.url_users = frozenset(name.casefold() for name in (user, *names))
        self.state = State.AUTHENTICATED
        # The account's Trash and Junk lose what has been there longer than their periods, in the
        # background; a session with such a folder selected is told as of any other's expunges.
        expire_in_background(self.store, self.ctx.expiry, user, self.settings.autoexpunge, self.ctx.log)

    def select(self, mailbox: SelectedMailbox | None) -> None:
        self._close_selected()
        self.selected = mailbox
        self.saved_search = None  # RFC 5182 section 2.1: "$" is emptied by SELECT/EXAMINE
        self.state = State.SELECTED if mailbox is not None else State.AUTHENTICATED
        if mailbox is not None:
            self._watch = self.store.watch(self.user, self._store_changed)

    def close_announced(self) -> bytes:
        """Close the selected mailbox; return the untagged ``* OK [CLOSED]`` that tells the client
        (RFC 7162 section 3.2.11, RFC 9051 section 7.1). One builder for every command that closes
        it as a side effect: SELECT/EXAMINE (even one that fails), DELETE of the selected mailbox."""
        self.select(None)
        return b"* OK [CLOSED] " + self.text(Code.INFO_CLOSED) + b"\r\n"

    def _store_changed(self, account: str, folder_id: int, modseq: int) -> None:
        # Only IDLE reports changes between commands (wakeup()); otherwise the next command's
        # sync does. Waking a session that is not in IDLE would cost a whole empty slice (a
        # worker hand-off and a recv) after every write it makes itself. No race: IDLE sets
        # ``waiting`` before its first sync, and this callback runs after the commit, so a change
        # this check misses is one that sync sees.
        if not self._idling() or self.notify is not None or midb_events.is_notice(modseq):
            return   # (with NOTIFY, its own watch wakes the session: _notify_heard)
        selected = self.selected
        if selected is not None and folder_id == selected.folder_id:
            self.waker()

    def set_notify(self, state: notify_commands.NotifyState | None) -> None:
        """Replace the NOTIFY settings (None: back to no NOTIFY, as at UNAUTHENTICATE). The new
        settings' watch comes before their snapshot: a change in between is then both in it and
        noted as pending, and a report compares it with itself (nothing), never misses it. A
        snapshot that meets a store error leaves the settings as they were, and the error to the
        NOTIFY command."""
        if state is not None and state.active and self.user is not None:
            state.watch = self.store.watch(self.user, functools.partial(self._notify_heard, state))
            try:
                state.take_snapshot(self)
            except BaseException:
                state.cancel()
                raise
        old, self.notify = self.notify, state
        if old is not None:
            old.cancel()

    def _notify_heard(self, state: notify_commands.NotifyState, account: str, folder_id: int, modseq: int) -> None:
        # Any thread: note the change in the settings watching for it, and if they are the
        # session's, have the pool run wakeup() on our worker. (Heard before they became the
        # session's, the NOTIFY command's own end reports it: _finish.) A change this session's
        # command made (committed on its worker, or a thread working for it: AUTHOR) is taken in
        # at that command's end: no wakeup.
        own = notify_commands.AUTHOR.get() is self
        if state.heard(folder_id, modseq, own) and state is self.notify:
            selected = self.selected
            if selected is not None and folder_id == selected.folder_id and not midb_events.is_notice(modseq):
                self._owed.selected_changed = True   # (before the waker: the push it brings looks)
            self.waker()

    def _push_notifications(self, *, at_command_end: bool = False) -> None:
        """What NOTIFY asks to report now. The selected mailbox's updates come as its filter says
        (a command's end sends them anyway: _finish): SELECTED with expunges, SELECTED-DELAYED
        without (RFC 5465 section 6: they wait for a command that allows them), and only when
        messages came or went unless FlagChange was asked for. Then the other mailboxes'. A
        client that does not read its output gets nothing more until it does (OUTPUT_BACKLOG):
        the changes wait, bounded (notify.MAX_PENDING, then NOTIFICATIONOVERFLOW), and are
        pushed once it has read what was queued (next_output)."""
        state = self.notify
        if state is None or not state.active or self._flow.closing:
            return
        if at_command_end:
            # This push makes the one owed, but the selected mailbox's updates: those the command's
            # catch-up sent, and a change heard since (while live searches looked) or during a
            # command that makes none (BAD) is pushed after the answer.
            self._owed.notify_owed = (self._owed.selected_changed and self.selected is not None
                                 and state.selected_group is not None)
        elif len(self._out) > notify_commands.OUTPUT_BACKLOG:
            self._owed.notify_owed = True
            return
        pending = state.take_pending()
        selected = self.selected
        group = state.selected_group
        # The selected mailbox's updates when it changed (or a push that met a store error owes
        # them; after an overflow nobody knows): a change elsewhere reads nothing of it.
        if (selected is not None and group is not None and not at_command_end
                and (pending is None or self._owed.selected_changed or self._owed.updates_missed)):
            self._owed.selected_changed = False   # (before the reads: a change from now on is heard again)
            if "FlagChange" in group.events or self._messages_moved(selected):
                # MessageNew's FETCH once the live searches have looked (then): a message that
                # arrived into one that fetches on entry has had its attributes (_fetch_entering).
                self._send_updates(selected, allow_expunge=group.kind == "selected",
                                   then=functools.partial(self._fetch_new_messages, selected.uid_max))
                if self._owed.selected_gone:
                    self._goodbye(Code.BYE_MAILBOX_DELETED)
                    return
        if pending is None:
            # RFC 5465 section 5.8: say so, and behave as after NOTIFY NONE.
            self._out.append(b"* OK [NOTIFICATIONOVERFLOW] " + self.text(Code.INFO_NOTIFICATION_OVERFLOW) + b"\r\n")
            self.set_notify(notify_commands.NotifyState(()))
            return
        try:
            lines = state.report(self, pending)
        except midb_errors.MidbError as exc:
            self._out.append(self._updates_delayed(exc, "reporting changes to NOTIFY"))
            return
        self._out.extend(lines)

    def _messages_moved(self, selected: SelectedMailbox) -> bool:
        """Whether messages came to or left the selected mailbox since its view was last brought
        up to date (its record's counters; flag changes alone do not count). Read only when that
        mailbox changed, and the SELECTED filter has no FlagChange (which pushes any change)."""
        try:
            folder = self.store.folder_counters(self.user, selected.name)
        except midb_errors.MidbError:
            return True   # the push meets the error and warns
        return folder is None or folder.uidnext - 1 > selected.uid_max or folder.messages != selected.exists

    def _fetch_new_messages(self, before: int) -> None:
        """RFC 5465 section 5.2: MessageNew's fetch attributes, as FETCH responses for the messages
        above UID ``before`` that the last update announced; they run as a UID FETCH of their own
        that sends no tagged answer, and then the interrupted command (IDLE, or none) goes on."""
        state = self.notify
        selected = self.selected
        items = state.message_new_items if state is not None else ()
        if not items or selected is None or selected.uid_max <= before:
            # (Nothing new: what the takes below hand over is noted only while there are items,
            # of messages not announced yet, and waits for the update that announces them.)
            return
        # Section 5.2: "A FETCH response SHOULD NOT be generated for a new message created by the
        # client on this particular connection" (its APPEND, COPY, MOVE or REPLACE into this mailbox).
        own = selected.take_own_arrivals()
        # Those whose attributes went out with a live search's FETCH (section 5.2: combined).
        fetched = selected.take_fetched_on_entry()
        ranges = uid_ranges_without(before + 1, selected.uid_max, own + fetched)
        if not ranges:
            return
        fetch = self._unsolicited_fetch(cmds.SequenceSet(tuple(ranges)), items)
        if fetch is None:
            return
        cmd, steps = fetch
        work = _Running(cmd, b"*", steps, False)
        work.then = self._announce_after_fetching_new
        self._run_before_resuming(work)

    def _unsolicited_fetch(self, uids: cmds.SequenceSet, atts: tuple[cmds.FetchAtt, ...]
                           ) -> tuple[cmds.Fetch, Generator[Any, Any, Done]] | None:
        """A UID FETCH of ``atts`` the client did not ask for (NOTIFY's MessageNew, a live search's
        UPDATE (...)) and its steps. RFC 7162 section 3.1: a CONDSTORE-aware client gets UID and
        MODSEQ in every unsolicited FETCH; this one answers no FETCH of its own."""
        if condstore.enabled(self) and not condstore.names_modseq(atts):
            atts = (*atts, cmds.FetchAtt("MODSEQ"))
        cmd = cmds.Fetch(b"*", True, uids, atts)
        registration = REGISTRY.lookup(cmd)
        if registration is None:
            return None
        return cmd, self._drive(registration.handler, cmd)

    def _announce_after_fetching_new(self) -> None:
        """After MessageNew's FETCH: no catch-up follows it, so a MODSEQ it gave above the
        catch-up's, while a change below that is still unreported, needs a QRESYNC client told
        the HIGHESTMODSEQ it may trust (SelectedMailbox.highestmodseq_report)."""
        if self.selected is not None and not self._flow.closing:
            self._out.extend(condstore.announce_highestmodseq(self, None))

    def _run_before_resuming(self, work: _Running) -> None:
        """Run ``work`` (the session's own: no tagged answer) before the running command goes on
        or the next one starts, after any such work queued before it: its output comes in that
        order."""
        work.silent = True
        before: _Running | None = None
        after = self._running
        while after is not None and after.silent:
            before, after = after, after.resume
        work.resume = after
        if before is None:
            self._running = work
        else:
            before.resume = work

    def _close_selected(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self.selected = None
        self._owed.updates_missed = False

    def block_input(self) -> None:
        """STARTTLS: forget what the client pipelined and read nothing until the transport changed."""
        self.framer.discard_buffer()
        self._flow.input_blocked = True

    # -- internals ------------------------------------------------------------------------------

    def _sensitive_input(self) -> bool:
        running = self._running
        return running is not None and running.waiting is not None and running.waiting.sensitive

    def _goodbye(self, code: Code) -> None:
        if self._flow.closing:
            return
        self._flow.closing = True
        if self._flow.inside_response:
            # Part of a response is out (a literal's header, say): a BYE now would be read as
            # the rest of it. next_output() goes on running the command up to its end.
            self._flow.goodbye_due = code
            return
        self._say_goodbye(code)

    def _say_goodbye(self, code: Code) -> None:
        self._out.append(b"* BYE " + self.text(code) + b"\r\n")
        self._out.append(TransportAction.CLOSE)

    def _continuation(self, event: NeedContinuation) -> None:
        if event.tag is None:
            self.framer.reject_literal(discard_sent=False)
            self._out.append(b"* " + self.status_line(b"BAD", Code.BAD_TAG) + b"\r\n")
            self._count_bad()  # as any other untagged garbage: imap_max_bad_commands ends it
            return
        if event.command is None or not parser.is_command_name(event.command):
            # The command will fail whatever follows: no reason to take up to
            # imap_max_literal_size octets first. Nor are octets sent ahead discarded: the
            # line is garbage, and so is what follows as far as we know.
            self.framer.reject_literal(discard_sent=False)
            self._out.append(event.tag + b" " + self.status_line(b"BAD", Code.BAD_UNKNOWN_COMMAND) + b"\r\n")
            self._count_bad()
            return
        # Refused before the upload, as the command would be refused after it: the
        # continuation request exists so that a server can reject a command before its
        # literal (RFC 3501 7.5). Dovecot does the same for APPEND.
        refusal: tuple[bytes, str, str] | None = None
        if event.command == b"APPEND" and self.state is not State.NOT_AUTHENTICATED:
            # The mailbox comes first, as in the command: a client told TRYCREATE creates it
            # and sends the message again.
            if self._append_to_missing_mailbox(event):
                refusal = (self.status_line(b"NO", Code.NO_MAILBOX_NOT_FOUND, code=b"TRYCREATE"),
                           "no such mailbox", "NO")
            elif (resource := self._append_over_quota(event)) is not None:
                refusal = self.status_line(b"NO", Code.NO_OVER_QUOTA), f"over quota: {resource}", "NO"
            elif (tally := self._flow.append_tally) is not None and tally.arguments > self.settings.max_args:
                # An APPEND the parser will refuse once it is whole (each message, flag and
                # CATENATE part is one of its imap_max_args arguments): refused now, before any
                # more is uploaded (RFC 3501 section 7.5: the refusal instead of "+").
                refusal = (self.status_line(b"NO", Code.NO_APPEND_TOO_MANY, str(self.settings.max_args)),
                           "too many messages", "NO")
        elif event.command in (b"REPLACE", b"UID REPLACE"):
            refusal = self._replace_refusal(event)
        elif event.command == b"LOGIN":
            refusal = self._login_refusal()
        elif event.command == b"SETMETADATA" and self.state is not State.NOT_AUTHENTICATED:
            refusal = self._setmetadata_refusal(event)
        if refusal is not None:
            line, reason, status = refusal
            unwaited = self.framer.reject_literal()
            announced = None
            if status == "NO" and self.selected is not None and self.notify is not None:
                announced = self.selected.uid_max
            tag = event.tag

            def answer() -> None:
                self._answer(tag, line, status,
                             lambda: _refused_preview(event.tag, event.command, event.size, True, reason,
                                                      unwaited=unwaited),
                             announced=announced)

            if status == "NO" and self.selected is not None:
                # As before any tagged NO: the updates first, an EXPUNGEISSUED's expunge among
                # them (the client learns why, rather than retrying the same refusal).
                self._send_updates(self.selected, then=answer)
            else:
                answer()
            return
        self._out.append(b"+ " + self.text(Code.CONT_READY) + b"\r\n")

    def _setmetadata_refusal(self, event: NeedContinuation) -> tuple[bytes, str, str] | None:
        """(line, reason for the log, status) refusing a SETMETADATA value longer than
        imap_metadata_max_size before it is sent, or None: the command would be refused NO
        [METADATA MAXSIZE] once whole (RFC 5464 section 4.3, commands.metadata), and its
        literals may be imap_max_literal_size octets, as APPEND's. Every literal of the command
        passes here, in order, for parser.MetadataTally to tell a value from a name."""
        tally = self._flow.metadata_tally
        if event.fresh or tally is None:
            tally = self._flow.metadata_tally = parser.MetadataTally()
        for piece in event.pieces:
            tally.feed(piece)
        limit = self.settings.metadata_max_size
        too_long = limit and tally.value_next and event.size > limit
        tally.feed(event.size)
        if not too_long:
            return None
        return (self.status_line(b"NO", Code.NO_METADATA_MAXSIZE, code=b"METADATA MAXSIZE %d" % limit),
                "metadata value too long", "NO")

    def _login_refusal(self) -> tuple[bytes, str, str] | None:
        """(line, reason for the log, status) refusing a LOGIN before its literal, as
        commands.auth.login would refuse it after, whatever the user and password: logged in
        already, or with no TLS where passwords need it, so that a password is not sent in the
        clear for nothing (RFC 9051 section 6.2.3: the client MUST NOT send it then)."""
        if self.state is not State.NOT_AUTHENTICATED:
            return self.status_line(b"BAD", Code.BAD_ALREADY_AUTHENTICATED), "already authenticated", "BAD"
        if not capabilities.plaintext_auth_allowed(self):
            return (self.status_line(b"NO", Code.NO_PLAINTEXT_DISALLOWED), "plaintext authentication disallowed",
                    "NO")
        return None

    def _replace_refusal(self, event: NeedContinuation) -> tuple[bytes, str, str] | None:
        """(line, reason for the log, status) refusing a REPLACE before its message literal is
        sent, or None: with no mailbox selected (certain to be refused: not worth an upload of up
        to imap_max_literal_size), or when what it named before the literal already decides (see
        gximap.session.commands.replace), judged at the command's first literal only; or at
        any literal, when its flags and CATENATE parts so far are more than imap_max_args."""
        uid = event.command == b"UID REPLACE"
        # The tag, [UID,] REPLACE, the number and the mailbox come before the message.
        tally = self._tally(event, heading=5 if uid else 4)
        done: Done | None = None
        if self.state is not State.SELECTED:
            done = Done(_wrong_state(self.state, SELECTED), status="BAD")
        elif not uid and self.uidonly:
            done = Done(Code.BAD_UIDREQUIRED, status="BAD")   # RFC 9586 section 3, as _execute
        elif (event.literals == 1
              and (found := parser.replace_target(event.head, uid=uid, utf8=self.utf8)) is not None):
            number, mailbox = found
            with contextlib.suppress(midb_errors.MidbError):   # the command meets the error itself
                done = replace_commands.refusal(self, uid, number, mailbox.name)
        if done is None and tally.arguments > self.settings.max_args:
            # As an APPEND's: the parser will refuse it once it is whole (its flags and
            # CATENATE parts are imap_max_args arguments), so refused before the upload.
            done = Done(Code.NO_REPLACE_TOO_MANY, (str(self.settings.max_args),), status="NO")
        if done is None:
            return None
        text = self.text(done.text, *done.args)
        return completion(done.status.encode(), done.code, text, done.text), text.decode("utf-8", "replace"), done.status

    def _append_to_missing_mailbox(self, event: NeedContinuation) -> bool:
        """Whether the APPEND's first literal is asked for with a mailbox name, before it, that
        does not exist. A name sent as that literal, or one that cannot be read yet, is left to
        the command itself, as is a store that cannot be read."""
        if event.literals != 1:
            return False  # a MULTIAPPEND's later message: its mailbox was looked at already
        destination = parser.append_destination(event.head, utf8=self.utf8)
        if destination is None:
            return False
        try:
            return self.store.get_folder(self.user, destination.name) is None
        except midb_errors.MidbError:
            return False

    def _append_over_quota(self, event: NeedContinuation) -> str | None:
        """The quota resource an APPEND must exceed with the messages it has announced so far
        (the one asked for included, a MULTIAPPEND's earlier ones too), or None. Their octets
        are a lower bound of what it stores (bare LFs only grow into CRLFs), so a "yes" is the
        store's answer to come. A mailbox named before the literal was found first
        (_append_to_missing_mailbox); one named by a literal may be missing too, and then gets
        OVERQUOTA rather than TRYCREATE. That literal (the command's first, right after
        "APPEND") is not message octets, and is not checked; nor is a CATENATE URL sent as a
        literal, and a CATENATE message's TEXT parts are one message (parser.AppendTally). A
        store that cannot be read says nothing: the command then meets the error itself."""
        tally = self._tally(event)
        octets, messages = tally.octets, tally.messages
        if not messages:
            return None
        try:
            return self.store.quota_exceeded(self.user, octets, messages)
        except midb_errors.MidbError:
            return None

    def _tally(self, event: NeedContinuation, heading: int = 3) -> parser.AppendTally:
        """The APPEND's or REPLACE's tally (parser.AppendTally), fed what ``event`` adds: each
        of the command's NeedContinuations must pass here once, in order."""
        tally = self._flow.append_tally
        if event.fresh or tally is None:
            tally = self._flow.append_tally = parser.AppendTally(heading)
        for piece in event.pieces:
            tally.feed(piece)
        tally.feed(event.size)
        return tally

    def _literal_limit(self) -> int:
        limit = self.settings.max_literal
        if self.state is State.NOT_AUTHENTICATED:
            return min(limit, PREAUTH_MAX_LITERAL)
        return limit

    def _frame_error(self, event: FrameError) -> None:
        tag = event.tag
        status = "BAD"
        args: tuple[str, ...] = ()
        if (event.kind is FrameErrorKind.LITERAL_TOO_BIG and event.command in MESSAGE_COMMANDS
                and self.state is not State.NOT_AUTHENTICATED):
            status, code = "NO", Code.NO_MESSAGE_TOO_BIG
            if event.too_big_together:
                # Each message within the limit APPENDLIMIT advertises, the command's literals
                # together past it: [TOOBIG] would tell the client a message is too big.
                code, args = Code.NO_MESSAGES_TOO_BIG_TOGETHER, (str(event.limit),)
        elif event.kind is FrameErrorKind.LINE_TOO_LONG:
            code = Code.BAD_LINE_TOO_LONG
        elif event.kind is FrameErrorKind.LITERAL_MINUS:
            code = Code.BAD_LITERAL_MINUS
        elif event.kind is FrameErrorKind.LITERAL_UNSPOOLED:
            # The server's trouble (its disk), not the client's: NO, and not counted as bad.
            self.ctx.log.error("session %s: user=%s %s refused: %s (%s octets, spooled in %s)", self.id,
                               gxlog.escape_text(self.user or "-"),
                               (event.command or b"?").decode("ascii", "replace"), event.text, event.size,
                               self.settings.literal_spool_dir)
            status, code, args = "NO", Code.NO_TRY_AGAIN, (event.text,)
        else:
            code = Code.BAD_LITERAL_TOO_BIG
        line = self.status_line(status.encode(), code, *args)
        self._out.append((tag if tag else b"*") + b" " + line + b"\r\n")
        self._log_refused_literal(tag, event.command, event.size, event.synchronizing, event.text, status,
                                  unwaited=event.unwaited)
        if event.kind is not FrameErrorKind.LITERAL_UNSPOOLED:
            self._count_bad()

    def _log_refused_literal(self, tag: bytes | None, command: bytes | None, size: int | None,
                             synchronizing: bool, reason: str, status: str, *, unwaited: bool = False) -> None:
        """imap_cmd_debug: a command refused while framing (see _refused_preview)."""
        if gxlog.logs_command(status):
            gxlog.log_command(self.id, self.rhost, self.user,
                              _refused_preview(tag, command, size, synchronizing, reason, unwaited=unwaited), status)

    def _count_bad(self) -> None:
        self._flow.bad_streak += 1
        if self._flow.bad_streak >= self.settings.max_bad_commands:
            self._goodbye(Code.BYE_TOO_MANY_BAD)

    def _execute(self, frame: CommandFrame) -> None:
        tag = frame.tag
        if tag is None:
            self._out.append(b"* " + self.status_line(b"BAD", Code.BAD_TAG) + b"\r\n")
            self._count_bad()
            return
        settings = self.settings
        try:
            cmd = parser.parse_command(frame, utf8=self.utf8, max_nesting=settings.max_nesting,
                                       max_args=settings.max_args, max_ranges=settings.max_ranges)
        except parser.ParseError as exc:
            # An unsupported charset, an impossible mailbox name and a MULTIAPPEND beyond
            # imap_max_args are well-formed requests the server refuses: NO, which does not count
            # towards imap_max_bad_commands.
            text = REFUSED_PARSES.get(exc.code) if exc.code is not None else None
            refused = text is not None
            if text is not None:  # the operator's text for what is no parse error
                status = b"NO"
                if self.selected is not None and frame.command_name in (b"SELECT", b"EXAMINE"):
                    # A SELECT that fails leaves no mailbox selected (RFC 3501 6.3.1), as the
                    # handler's own refusals do (gximap.session.commands.select).
                    self._out.append(self.close_announced())
                limit: tuple[str, ...] = ()
                if text is Code.NO_APPEND_TOO_MANY:
                    limit = (str(settings.max_args),)
                    if frame.command_name in (b"REPLACE", b"UID REPLACE"):
                        text = Code.NO_REPLACE_TOO_MANY   # its flags or parts, as before the upload
                line = self.status_line(status, text, *limit)   # its usual code: exc.response_code
            else:
                status = b"BAD"
                line = self.status_line(status, Code.BAD_PARSE, str(exc.text), code=exc.response_code)
            self._out.append(tag + b" " + line + b"\r\n")
            if exc.empties_saved_result and self.selected is not None:
                self.saved_search = []
            gxlog.log_command(self.id, self.rhost, self.user, frame.preview(), status.decode())
            if not refused:
                self._count_bad()
            return
        registration = REGISTRY.lookup(cmd)
        if registration is None:
            self._out.append(tag + b" " + self.status_line(b"BAD", Code.BAD_UNKNOWN_COMMAND) + b"\r\n")
            self._count_bad()
            return
        if self.state not in registration.states:
            self._out.append(tag + b" " + self.status_line(b"BAD", _wrong_state(self.state, registration.states))
                             + b"\r\n")
            gxlog.log_command(self.id, self.rhost, self.user, frame.preview(), "BAD")
            self._count_bad()
            return
        if uidonly.UIDONLY in self.enabled and uidonly.uses_message_numbers(cmd):   # (self.uidonly, less a call)
            # RFC 9586 section 3: refused as BAD [UIDREQUIRED] before the command does anything.
            self._out.append(tag + b" " + self.status_line(b"BAD", Code.BAD_UIDREQUIRED) + b"\r\n")
            gxlog.log_command(self.id, self.rhost, self.user, frame.preview(), "BAD")
            self._count_bad()
            return
        self._flow.bad_streak = 0
        # UID FETCH/STORE/SEARCH/SORT/THREAD name messages by UID, so they may be followed by
        # EXPUNGE (RFC 3501 section 7.4.1), as Dovecot does: a client polling with UID FETCH
        # learns of other sessions' expunges without a NOOP. Not a UID SEARCH (SORT, THREAD) whose
        # criteria hold message numbers: RFC 7162 section 3.2.10 forbids VANISHED there, and
        # Dovecot holds EXPUNGE back too (the client maps the numbers it searched by).
        expunge_ok = registration.expunge_ok or (bool(getattr(cmd, "uid", False))
                                                 and not uidonly.uses_message_numbers(cmd))
        counted = self.progress   # cleared for this command (as Progress.forget(), less a call)
        counted.count = counted.total = None
        # No INPROGRESS before login: INPROGRESS is advertised to authenticated sessions only.
        timer = None if self.state is State.NOT_AUTHENTICATED else progress.Timer()
        self._running = _Running(cmd, tag, self._drive(registration.handler, cmd), expunge_ok, frame,
                                 progress_timer=timer)

    def _drive(self, handler: Any, cmd: Command) -> Generator[Any, Any, Done]:
        result = handler(self, cmd)
        if isinstance(result, Done):
            return result
        return (yield from result)

    def _step(self, running: _Running, as_author: bool = False) -> bool:
        """Advance the running command by one item of output; False when the handler paused."""
        if self.notify is not None and not as_author:
            # RFC 5465 section 5: what the command commits meanwhile is this client's own. (The
            # step itself again, not a helper: a session without NOTIFY makes no call more.)
            author = notify_commands.AUTHOR.set(self)
            try:
                return self._step(running, True)
            finally:
                notify_commands.AUTHOR.reset(author)
        try:
            if running.future is not None:
                future, running.future = running.future, None
                error = future.exception()
                item = running.gen.throw(error) if error is not None else running.gen.send(future.result())
            elif running.line is not None:
                line, running.line, running.waiting = running.line, None, None
                item = running.gen.send(line)
            else:
                item = next(running.gen)
        except StopIteration as stop:
            self._finish(running, stop.value)
            return True
        except CommandFailed as failed:
            self._finish(running, failed.done)
            return True
        except Exception as exc:  # noqa: BLE001 - a failing command must not kill the session
            done = done_for_store_error(exc)
            if done is None:
                self.ctx.log.exception("session %s: %s failed", self.id, running.name)
                done = Done(Code.NO_SERVER_ERROR, status="NO")
            else:
                log_store_trouble(self, running.name, exc)
            self._finish(running, done)
            return True
        if isinstance(item, ResponseMark):
            self._flow.inside_response = item.opens
            if not item.opens:
                if self._flow.goodbye_due is not None:
                    due, self._flow.goodbye_due = self._flow.goodbye_due, None
                    self._say_goodbye(due)
                else:  # a FETCH of bodies sends nothing but such responses
                    self._progress_queued(running)
            return True
        if isinstance(item, Pause):
            if self._progress_queued(running):
                # The line goes out now (the pool writes what next_output() returns and flushes
                # it before the next slice), the pause right after it.
                running.pause_due = True
                return True
            return False
        if isinstance(item, Await):
            running.future = item.future
            # Before the wait: queued, the line goes out while the command is parked.
            self._progress_queued(running)
            if not item.future.done():
                # From the executor thread when the work is done (at once if it just finished):
                # the pool runs this connection again and next_output() resumes the handler.
                item.future.add_done_callback(lambda _future: self.waker())
        elif isinstance(item, NeedLine):
            running.progress_timer = None  # waits for the client: its time is not the command's
            running.waiting = item
            self._out.append(item.prompt)
            if item.idle:
                self._idle.retry_due = False   # (this push is the retry)
                self._idle_push()
        else:
            self._out.append(item)
            self._progress_queued(running)
        return True

    def _progress_queued(self, running: _Running) -> bool:
        """Queue the running command's INPROGRESS line (RFC 9585) if one is due: only between
        whole responses, never inside one sent in several items (a FETCH body's literal)."""
        timer = running.progress_timer
        if timer is None or self._flow.inside_response or not timer.due():
            return False
        self._out.append(progress.line(running.tag, self.progress, self.text(Code.INFO_IN_PROGRESS)))
        return True

    def _sync_selected(self, selected: SelectedMailbox, *, allow_expunge: bool) -> list[bytes | LazyLines]:
        """The pending updates of ``selected`` (self.selected, which the caller checked is set). If
        another session deleted the mailbox, it is closed here and the connection ends after the
        current response (BYE_MAILBOX_DELETED): IMAP has no way to tell a client that its selected
        mailbox vanished.

        Any other store error skips this catch-up: sync leaves the view as it was, so the next
        one reports what this one missed. The client is warned with an untagged NO
        [UNAVAILABLE], as Dovecot warns of a failed sync, and the command keeps its own answer:
        its work is done (a tagged NO would have a STORE retried). This runs outside the
        command's handler, where no error may escape: the pool would drop the connection."""
        try:
            out = selected.sync(allow_expunge=allow_expunge)
        except (midb_errors.NoSuchFolder, midb_errors.NoSuchAccount):
            self._close_selected()
            self.state = State.AUTHENTICATED
            self._owed.selected_gone = True
            return []
        except midb_errors.MidbError as exc:
            return [self._updates_delayed(exc)]
        self._owed.updates_missed = False
        return out

    def _updates_delayed(self, exc: midb_errors.MidbError, doing: str = "catching up with the selected mailbox") -> bytes:
        """A catch-up with the selected mailbox, the making of the lines it left to be made as
        they are sent, or a NOTIFY report (``doing``, for the log) met a store error: log it,
        owe the updates (_owe_updates: in IDLE, or with NOTIFY, the idle timer tries again), and
        return the untagged NO [UNAVAILABLE] that warns the client."""
        done = done_for_store_error(exc)
        if done is not None and done.code == b"UNAVAILABLE":
            log_store_trouble(self, doing, exc)
        else:  # no refusal of the client's: a bug, or the store opened read-only
            self.ctx.log.exception("session %s: %s failed", self.id, doing)
        self._owe_updates()
        return b"* " + self.status_line(b"NO", Code.INFO_UPDATES_DELAYED, str(exc), code=b"UNAVAILABLE") + b"\r\n"

    def _owe_updates(self) -> None:
        """A catch-up with the selected mailbox, a push or a live search's re-check met a store
        error: the next catch-up makes up for it (the view, or what the live searches noted, is
        as it was), and in IDLE, where nothing else may come for long, the pool's timer has it
        made at _idle.retry_at (idle_timeout, timed_out), sooner than the next keepalive (likewise
        between commands with NOTIFY, which may send at any time, without a keepalive): 1 s after
        a first failure, twice as long after each failure within IDLE_RETRY_MAX of the last
        retry (IDLE_RETRY_MAX at most), 1 s again after a re-check that made up for one."""
        now = time.monotonic()
        follows_retry = now - self._idle.retry_at < IDLE_RETRY_MAX
        self._idle.retry_delay = min(2 * self._idle.retry_delay, IDLE_RETRY_MAX) if follows_retry else IDLE_RETRY_FIRST
        self._idle.retry_at = now + self._idle.retry_delay
        self._owed.updates_missed = self._idle.retry_due = True

    def _abort_running(self, line: bytes) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.gen.close()
            self._out.append(running.tag + b" " + line + b"\r\n")

    def _finish(self, running: _Running, done: Done | None) -> None:
        self._running = running.resume if running.silent else None
        if self._flow.inside_response:
            # The command failed with part of a response out (a body file unreadable half-way):
            # no answer can follow it that the client would read as one, so the connection ends.
            self.ctx.log.warning("session %s: %s failed with part of a response sent; closing the connection",
                                 self.id, running.name)
            self._flow.inside_response = False
            self._flow.goodbye_due = None
            self._flow.closing = True
            self._out.append(TransportAction.CLOSE)
            return
        if running.silent:
            # The session's own work (_run_before_resuming): no tagged answer of its own, but
            # that of the command whose end it came at, if any (below).
            if running.then is not None:
                running.then()
            if running.answers is None:
                return
            running, done, announced = running.answers
        else:
            if done is None:
                done = Done(Code.NO_SERVER_ERROR, status="NO")
            # NOTIFY: the messages the updates below announce get MessageNew's FETCH after the answer.
            announced = self.selected.uid_max if self.selected is not None and self.notify is not None else None
            if done.sync and self.selected is not None and done.status != "BAD":
                # QRESYNC: may put [HIGHESTMODSEQ] into the tagged OK (or send it untagged)
                after_updates = self._send_updates(self.selected, allow_expunge=running.expunge_ok and done.expunge_ok,
                                                   done=done, command=running)
                if after_updates is not None:
                    # What the live searches have to say (or the HIGHESTMODSEQ once the flag
                    # changes' lines are made) comes first: the answer once that is done (a
                    # closure made here for every command cost a call more).
                    after_updates.answers = (running, done, announced)
                    return
        if self.notify is not None:
            # (A change of the selected mailbox heard after its catch-up, while live searches
            # looked, say, is pushed after the answer: _owed.selected_changed.)
            self._push_notifications(at_command_end=True)
        line = self.status_line(done.status.encode(), done.text, *done.args, code=done.code)
        frame = running.frame
        self._answer(running.tag, line, done.status, frame.preview if frame else lambda: b"",
                     after=done.after, goodbye=done.goodbye, announced=announced)

    def _answer(self, tag: bytes, line: bytes, status: str, preview: Callable[[], bytes], *,
                after: TransportAction | None = None, goodbye: Code | None = None,
                announced: int | None = None) -> None:
        """Send a command's tagged ``line`` and do what follows any answer: imap_cmd_debug's line
        (``preview`` is only made when it is logged), imap_max_bad_commands, then the transport
        action or goodbye the command asked for, or the one a deleted selected mailbox calls for;
        or else, with NOTIFY, MessageNew's FETCH of the messages above UID ``announced`` that the
        updates before the answer announced. One place for both ends of a command: its
        handler's (_finish) and a refusal before its literal (_continuation)."""
        self._out.append(tag + b" " + line + b"\r\n")
        # The client's idle time starts again here (idle_since): a command that ran long was not it.
        now = time.monotonic()
        if now > self.last_activity:
            self.last_activity = now
        if gxlog.logs_command(status):
            gxlog.log_command(self.id, self.rhost, self.user, preview(), status)
        if status == "BAD":
            self._count_bad()
        if after is not None:
            self._out.append(after)
            if after is TransportAction.CLOSE:
                self._flow.closing = True
                return
        # After COMPRESS the goodbye goes out through the DEFLATE stream, as any later output.
        if goodbye is not None:
            self._goodbye(goodbye)
        elif self._owed.selected_gone:
            self._goodbye(Code.BYE_MAILBOX_DELETED)
        elif announced is not None and not self._flow.closing:
            self._fetch_new_messages(announced)

    def _send_updates(self, selected: SelectedMailbox, *, allow_expunge: bool = True, done: Done | None = None,
                      then: Callable[[], None] | None = None, command: _Running | None = None) -> _Running | None:
        """Queue ``selected``'s pending updates, then the HIGHESTMODSEQ a QRESYNC client needs
        (condstore.announce_highestmodseq: ``done`` is the answer they precede, None for a push),
        then what its live searches have to say; ``then`` once all that is out (what follows
        the updates: a tagged answer). ``command``: the one the updates end, whose INPROGRESS
        lines go on while the live searches work. While lines of flag changes wait to be made
        (LazyFlagUpdates, here or queued before), the HIGHESTMODSEQ waits for them
        (_announce_when_made). Returns the last work so queued, which ``then`` follows (the live
        searches', _recheck_live_searches, or that HIGHESTMODSEQ's), else None (``then`` has run)."""
        self._owed.selected_changed = False   # (before the catch-up: a change it misses is heard again)
        announced_above = selected.uid_max   # (the messages above it are those this catch-up announces)
        lines = self._sync_selected(selected, allow_expunge=allow_expunge)
        self._out.extend(lines)
        if lines and isinstance(lines[-1], LazyLines):   # (a catch-up's LazyFlagUpdates comes last)
            self._owed.lines_unmade += 1
        # After a catch-up that failed, nothing new is in the view: the next one has them look.
        contexts = selected.contexts   # (contexts.recheck_due(), less a call on every command's path)
        recheck = (contexts.live and (contexts.arrived or contexts.changed) and self.selected is selected
                   and not self._owed.updates_missed)
        if self._owed.lines_unmade and self.qresync_enabled:
            announcing = self._announce_when_made(selected, done, None if recheck else then)
            if not recheck:
                return announcing
        else:
            self._out.extend(condstore.announce_highestmodseq(self, done))
        if recheck:
            return self._recheck_live_searches(selected, then, command, announced_above)
        if then is not None:
            then()
        return None

    def _announce_when_made(self, selected: SelectedMailbox, done: Done | None,
                            then: Callable[[], None] | None) -> _Running:
        """The HIGHESTMODSEQ of _send_updates (into ``done``'s tagged OK, or untagged), as the
        session's own work (_run_before_resuming), which runs once the output queued before it
        is out: the lines of flag changes a LazyFlagUpdates makes as they are sent among it. A
        store error there keeps some back, lowering the value the client may trust below them
        (SelectedMailbox.flags_unsent); worked out before, it was past them, and a QRESYNC from
        it never reported them (RFC 7162 section 3.2.10: the client is told a HIGHESTMODSEQ only
        once it has every change up to it). What follows the updates (the tagged answer, live
        searches' work) follows this work; ``then`` once it is done."""

        def steps() -> Generator[Any, Any, None]:
            if self.selected is selected and not self._flow.closing:
                yield from condstore.announce_highestmodseq(self, done)

        def after() -> None:
            if then is not None:
                then()
            if not self._owed.updates_missed:   # (not after a store error making the lines)
                self._catch_up_if_idling(selected)

        work = _Running(None, b"*", steps(), False)
        work.name = "HIGHESTMODSEQ"
        work.then = after
        self._run_before_resuming(work)
        return work

    def _catch_up_if_idling(self, selected: SelectedMailbox) -> None:
        """After work run before IDLE (or the answer) went on (_announce_when_made,
        _recheck_live_searches): in IDLE without NOTIFY, where a change is only heard while the
        session idles (_store_changed), one that came while the work waited is looked for now.
        Not after that work failed, which the same catch-up would only meet again (and again):
        the retry comes a little later (_owe_updates)."""
        if self.notify is None and self.selected is selected and not self._flow.closing and self._idling():
            self._push_idle_updates(selected)

    def _recheck_live_searches(self, selected: SelectedMailbox, then: Callable[[], None] | None,
                               command: _Running | None, announced_above: int) -> _Running:
        """Have the live searches of ``selected`` look at the messages the catch-up noted, as the
        session's own work (_run_before_resuming), in slices that give the worker back as a
        SEARCH does (gximap.session.searchcontext), fetch what their UPDATE (...) asks of those
        that arrived into them (_fetch_entering; ``announced_above``: the catch-up announced the
        messages above this UID), then ``then``. Nothing else runs meanwhile: no command starts,
        an IDLE reads no DONE, a NOTIFY push waits (wakeup); so no catch-up moves the view under
        it. Within a command its INPROGRESS lines go on, under its tag."""
        timer = command.progress_timer if command is not None else None
        slicer = TimeSlice(progress=self.progress if timer is not None else None)
        if timer is not None:
            self.progress.forget()   # the command's own count is done with

        looked = False

        def steps() -> Generator[Any, Any, None]:
            nonlocal looked
            contexts = selected.contexts
            try:
                updates = yield from contexts.update_lines_sliced(self, selected, slicer)
            except midb_errors.MidbError as exc:
                # The messages are still noted: the next catch-up has them looked at (in IDLE, a
                # retry: _owe_updates). The client is not warned (its view is up to date); the
                # log hears of the first failure, not of each retry that fails again.
                if not contexts.failing:
                    contexts.failing = True
                    log_store_trouble(self, "live search update", exc)
                if self.selected is selected:
                    self._owe_updates()
                return
            if contexts.failing:   # made up for: a failure from now on is a first one again
                contexts.failing = False
                if self.notify is None and not self._owed.updates_missed:
                    # Nor is anything else owed: the catch-up before this re-check succeeded,
                    # and without NOTIFY there is no report to make. (Else the retry keeps its
                    # time: moved to the past, it came at once.)
                    self._idle.retry_due = False
                if not self._idle.retry_due:
                    self._idle.retry_at = -math.inf
            looked = True
            if updates.fetches:
                yield from self._fetch_entering(selected, updates.fetches, announced_above)
            yield from updates.lines
            if updates.fetches and self.selected is selected and not self._flow.closing:
                # Those FETCHes' MODSEQ may be above a change still unreported (an expunge held
                # back during a FETCH, STORE or SEARCH: RFC 3501 section 7.4.1) and come after
                # the catch-up's HIGHESTMODSEQ: a QRESYNC client is told the one it may trust
                # (RFC 7162 section 3.2.10 with erratum 1810), as after MessageNew's FETCH.
                yield from condstore.announce_highestmodseq(self, None)

        def after() -> None:
            if then is not None:
                then()
            if looked:   # (not after a failure)
                self._catch_up_if_idling(selected)

        work = _Running(None, command.tag if command is not None else b"*", steps(), False, progress_timer=timer)
        work.name = "live search update"
        work.then = after
        self._run_before_resuming(work)
        return work

    def _fetch_entering(self, selected: SelectedMailbox, fetches: list[tuple[tuple[cmds.FetchAtt, ...], list[int]]],
                        announced_above: int) -> Generator[Any, Any, None]:
        """RFC 5465 section 7: the FETCH responses of the messages that arrived into live searches
        whose UPDATE asked for fetch attributes (searchcontext.Updates.fetches; .PEEK forms), each
        group run as a UID FETCH (as MessageNew's: the UID comes first; UIDFETCH under UIDONLY)
        whose answer is dropped, so that its bodies go out as any FETCH's, a response at a time
        as the client takes them. The caller sends them after the catch-up's EXISTS and before
        the ESEARCH ADDTO: "the EXISTS response MUST precede any FETCH responses, and together
        they MUST precede the ESEARCH response".

        A message NOTIFY's MessageNew is also to fetch (announced by this catch-up, above
        ``announced_above``, and not the client's own) gets both lists in this one FETCH (section
        5.2: "These attributes SHOULD be combined into a single FETCH response. The server SHOULD
        avoid sending duplicate data"), and MessageNew's own FETCH leaves it out
        (SelectedMailbox.note_fetched_on_entry). Section 5.2 wants MessageNew's FETCH after the
        ADDTO, section 7 this one before it; one response cannot do both. The combined one keeps
        section 7's place: it is the rule written for these attributes (its example fetches them
        so that the client has the message when the ADDTO places it), and the EXISTS that
        MessageNew's FETCH must follow is out already. Other new messages' MessageNew FETCH
        stays after the ADDTO."""
        state = self.notify
        message_new = state.message_new_items if state is not None else ()
        parts: list[tuple[tuple[cmds.FetchAtt, ...], list[int]]] = []
        for atts, uids in fetches:
            alone: list[int] = []
            combined: list[int] = []
            for uid in uids:
                both = message_new and uid > announced_above and not selected.is_own_arrival(uid)
                (combined if both else alone).append(uid)
            if alone:
                parts.append((atts, alone))
            if combined:
                parts.append((cmds.peek_forms((*atts, *message_new)), combined))
                selected.note_fetched_on_entry(searchcontext.uid_runs(combined))
        parts.sort(key=lambda part: part[1][0])
        for atts, uids in parts:
            fetch = self._unsolicited_fetch(searchcontext.uid_set(uids), atts)
            if fetch is None or self.selected is not selected:
                return
            try:
                yield from fetch[1]
            except (CommandFailed, midb_errors.MidbError) as exc:
                if self._flow.inside_response:
                    raise   # part of a response is out: the connection ends (_finish)
                # (NO [UNKNOWN-CTE] of one message, a store error: what went out before stays
                # out, and the ESEARCH follows all the same, as the results hold the messages.)
                if isinstance(exc, midb_errors.MidbError):
                    log_store_trouble(self, "live search FETCH", exc)


def _refused_preview(tag: bytes | None, command: bytes | None, size: int | None, synchronizing: bool,
                     reason: str, *, unwaited: bool = False) -> bytes:
    """imap_cmd_debug's line for a command refused while framing, as far as it was read (the
    rest is never kept), with why; ``unwaited``: the client sent the literal without waiting for "+"."""
    preview = b" ".join(part for part in (tag, command) if part)
    if size is not None:
        preview += b" {%d%s}" % (size, b"" if synchronizing else b"+")
    if unwaited:
        reason += "; its octets came without waiting for the continuation and are discarded"
    return preview + b" (" + reason.encode() + b")"


def _wrong_state(state: State, allowed: frozenset[State]) -> Code:
    """The BAD text for a command given in a state it is not valid in: the two common cases
    (not logged in yet, no mailbox selected) get their own texts, so that an operator can word
    them (Gromox's imap_code.txt has both) and a person reading a transcript sees the cause."""
    if state is State.NOT_AUTHENTICATED and State.NOT_AUTHENTICATED not in allowed:
        return Code.BAD_NOT_AUTHENTICATED
    if state is State.AUTHENTICATED and allowed == {State.SELECTED}:
        return Code.BAD_NOT_SELECTED
    return Code.BAD_WRONG_STATE
