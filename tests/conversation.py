"""Conversation tests: drive an :class:`ImapSession` directly (no sockets) over a real midb store.

    conv = Conversation(tmp_path, tls=True, enable_id=True)    # keyword arguments: Settings fields
    conv.greeting()                                            # -> [b"* OK [CAPABILITY ...] ..."]
    conv.send(b"a1 LOGIN alice secret\\r\\n")                  # -> the server's responses
    conv.login("alice")                                        # LOGIN, asserting the tagged OK
    conv.script('''
        C: a2 SELECT INBOX
        S: * FLAGS ({*})
        S: * OK [UIDVALIDITY {n:uv}] {*}
        S: a2 OK [READ-WRITE] {*}
    ''')

``send`` feeds bytes, then plays the pool: ``process()`` and ``next_output()`` until nothing more
happens. It returns the responses as *logical* lines: CRLF stripped, a literal's data kept inside
its response (work a command awaits, a password check or a bulk write's piece, runs inline).
``TransportAction`` items are recorded in ``conv.actions``; STARTTLS and COMPRESS
are "applied" at once (``transport_changed``), CLOSE marks the conversation ``closed``.

Transcripts (``script``) work on *physical* lines, the wire as a person reads it:
  ``C: text``  the client sends ``text`` + CRLF (``C:`` alone sends an empty line).
  ``S: text``  the next server line must equal ``text``; in it
               ``{n}`` is any decimal number, ``{*}`` any text (possibly empty), ``{sp}`` a space
               (for trailing spaces editors would strip), ``{n:NAME}`` / ``{*:NAME}`` capture
               into ``conv.captured[NAME]``, and ``{=NAME}`` repeats a captured value. Anything
               else in braces, e.g. a literal's ``{12}``, is plain text.
  ``W:``       the pool calls ``wakeup()`` (the session's waker must have fired).
  ``T:``       the idle timer expires (``timed_out()``).
  ``# ...``    comment; blank lines are ignored.
Every server line must be matched: leftovers fail at the next ``C:``/``W:``/``T:`` and at the end.
The greeting may be matched by a script's leading ``S:`` lines; a script starting with ``C:`` (and
every ``send``) skips it. Failures name the test file and line of the failing step.

Helpers: ``command("NOOP")`` (fresh tag, asserts OK), ``login()``, ``select()``, ``add_message()``
(straight into the store, returns the UID), ``second_session()`` (same server), ``wake()``
(the pool's ``wakeup()`` after the waker fired), ``timeout()``, ``shutdown()``, ``close()``.

Constructor keywords besides the Settings fields: ``tls``, ``starttls`` (STARTTLS available),
``users`` (names whose password is ``secret``, or a {name: password} dict), ``auth_times``,
``block_interval``, ``ip_times`` (AuthService throttling), ``auth_cache`` (its credential cache;
none by default), ``failure_delay`` (imap_auth_failure_delay; 0 by default, so failed logins are
answered at once: with a delay, ``advance(seconds)`` moves the fake clock of ``delays``, and
returns what the delays that ended answer), ``peer`` (client address).
Accounts are created directly in the store; password hashes are cached for the whole test run
because scrypt is slow on purpose.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import linecache
import re
import textwrap
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from gximap.auth.cache import CredentialCache
from gximap.auth.service import AuthService
from gximap.imap.codes import RESPONSE_CODE_EXEMPT, ResponseCodes
from gximap.net.handler import ConnectionInfo, FileRegion, TransportAction
from gximap.session import pieces
from gximap.session.context import ServerContext, Settings
from gximap.session.session import ImapSession
from midb.authdb import MidbAuth
from midb.blobs import ProcessPool
from midb.store import Store


class InlineExecutor(Executor):
    """Runs submitted work at once, in the caller's thread: the sans-IO session then resumes an
    awaiting handler (password checks) in the same pass, as if the pool's waker had fired."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting handler
            future.set_exception(exc)
        return future

class ManualDelays:
    """Stands in for gximap.auth.delay.DELAYS: its clock moves only when a test says
    (advance()), so a failed login's delay (imap_auth_failure_delay) passes in no real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, Future[None]]] = []

    def after(self, seconds: float) -> Future[None]:
        future: Future[None] = Future()
        self._timers.append((self.now + seconds, future))
        return future

    def pending(self) -> int:
        """Delays not over and not cancelled."""
        return sum(1 for _due, future in self._timers if not future.cancelled())

    def advance(self, seconds: float) -> None:
        """Move the clock on; complete the delays that are over (their callbacks fire wakers)."""
        self.now += seconds
        due = sorted((item for item in self._timers if item[0] <= self.now), key=lambda item: item[0])
        self._timers = [item for item in self._timers if item[0] > self.now]
        for _due, future in due:
            if future.set_running_or_notify_cancel():
                future.set_result(None)


class _InlineWriters:
    """Stands in for pieces.BULK_WRITERS: a bulk write runs in the session's own pass, as an
    awaited password check does (InlineExecutor), so a command over more than FIRST_PIECE
    messages is answered in full, not left parked on a thread's future."""

    def get(self) -> Executor:
        return InlineExecutor()


@contextlib.contextmanager
def _inline_bulk_writers() -> Iterator[None]:
    """_InlineWriters while the session runs, unless a test put its own stand-in there."""
    real, real_expiry = pieces.BULK_WRITERS, pieces.EXPIRY_WRITERS
    if not isinstance(real, ProcessPool):
        yield
        return
    pieces.BULK_WRITERS = pieces.EXPIRY_WRITERS = _InlineWriters()  # type: ignore[assignment]
    try:
        yield
    finally:
        pieces.BULK_WRITERS, pieces.EXPIRY_WRITERS = real, real_expiry


REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "data"
PASSWORD = "secret"
MAX_ROUNDS = 100_000  # bound on process()/next_output() rounds per step: a runaway loop fails

_HASH_CACHE: dict[str, str] = {}
_SCRAM_CACHE: dict[str, str] = {}
_PORTS = itertools.count(40000)
_CODES: ResponseCodes | None = None
_LITERAL_AT_END = re.compile(rb"~?\{(\d+)\+?\}\Z")
# A NO or BAD without a response code (the brief: bad input gets a clear answer, with a code).
_UNCODED_REFUSAL = re.compile(rb"\S+ (?:NO|BAD) (?!\[)")
_PLACEHOLDER = re.compile(r"\{(n|\*|sp)(?::([A-Za-z_][A-Za-z0-9_]*))?\}|\{=([A-Za-z_][A-Za-z0-9_]*)\}")


def password_hash(password: str) -> str:
    if password not in _HASH_CACHE:
        from midb.passwords import hash_password

        _HASH_CACHE[password] = hash_password(password)
    return _HASH_CACHE[password]


def scram_keys(password: str) -> str:
    """SCRAM-SHA-256 keys of ``password`` at the lowest iteration count (tests log in often)."""
    if password not in _SCRAM_CACHE:
        from midb.scram import MIN_ITERATIONS, derive

        _SCRAM_CACHE[password] = derive(password, iterations=MIN_ITERATIONS).text()
    return _SCRAM_CACHE[password]


def response_codes() -> ResponseCodes:
    global _CODES
    if _CODES is None:
        _CODES = ResponseCodes.load(str(DATA_DIR))
    return _CODES


def split_responses(data: bytes) -> list[bytes]:
    """Logical responses of a complete server output: CRLF removed, literals kept inline."""
    out: list[bytes] = []
    start = pos = 0
    while pos < len(data):
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise AssertionError(f"server output does not end with CRLF: {data[start:]!r}")
        match = _LITERAL_AT_END.search(data, pos, end)
        if match is not None:
            pos = end + 2 + int(match.group(1))  # the literal's octets, then the line goes on
            continue
        out.append(data[start:end])
        start = pos = end + 2
    return out


def check_refusals_coded(output: bytes) -> None:
    """Every NO and BAD in a complete server output carries a response code, but the one
    codes.RESPONSE_CODE_EXEMPT allows (AUTHENTICATE cancelled by the client)."""
    codes = response_codes()
    exempt = {codes.plain_bytes(code) for code in RESPONSE_CODE_EXEMPT}
    for line in split_responses(output) if output.endswith(b"\r\n") else ():
        if _UNCODED_REFUSAL.match(line) and line.split(b" ", 2)[2] not in exempt:
            raise AssertionError(f"a refusal without a response code: {line!r}")


class _Step:
    __slots__ = ("kind", "text", "where")

    def __init__(self, kind: str, text: str, where: str) -> None:
        self.kind = kind
        self.text = text
        self.where = where


class Conversation:
    """One client connection to a fresh (or shared) server context."""

    def __init__(self, tmp_path: Path | str | None = None, *, tls: bool = True, starttls: bool = False,
                 users: Iterable[str] | dict[str, str] = ("alice",), auth_times: int = 10,
                 block_interval: float = 60.0, ip_times: int = 0, auth_cache: CredentialCache | None = None,
                 failure_delay: float = 0.0, peer: str = "192.0.2.1",
                 context: ServerContext | None = None, file_regions: bool = False, client_tls: bool = False,
                 **settings: Any) -> None:
        if context is None:
            if tmp_path is None:
                raise TypeError("Conversation needs tmp_path (or the context of another one)")
            store = Store(Path(tmp_path) / "midb", fsync=False, data_path=[str(DATA_DIR)])
            auth = AuthService(store, MidbAuth(store), auth_times=auth_times, block_interval=block_interval,
                               ip_times=ip_times, executor=InlineExecutor(), cache=auth_cache,
                               failure_delay=failure_delay, delays=ManualDelays())
            context = ServerContext(Settings(**settings), store, auth, response_codes())
            self._owns_store = True
        else:
            if settings:
                context.reload(Settings(**settings))
            self._owns_store = False
        self.ctx = context
        self.store: Store = context.store
        self.actions: list[TransportAction] = []
        self.closed = False
        self.wakes = 0  # waker calls not yet answered by wake()
        self.captured: dict[str, str] = {}
        self.transcript: list[tuple[str, bytes]] = []
        self._raw_pending = b""  # server output not yet claimed by a script step
        self._tags = 0
        self._peers: list[Conversation] = []
        self.regions: list[tuple[int, int]] = []  # (offset, length) of each FileRegion sent
        passwords = users if isinstance(users, dict) else {name: PASSWORD for name in users}
        for name, password in passwords.items():
            self.add_user(name, password)
        conn = ConnectionInfo(peer_host=peer, peer_port=next(_PORTS), local_host="192.0.2.254",
                              local_port=993 if tls else 143, tls=tls, starttls_available=starttls,
                              file_regions=file_regions, client_tls=client_tls)
        self.session = ImapSession(context, conn, self._waker)
        self.session.start()
        self._greeting = split_responses(self._run())  # stays claimable by a script's first S: lines

    # -- setup helpers ----------------------------------------------------------------------------

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        if self.store.get_account(name) is None:
            # With its SCRAM keys, as a password set now gets them (a first login would derive them).
            self.store.create_account(name, password_hash=password_hash(password), scram_sha256=scram_keys(password))

    def folder(self, name: str, user: str = "alice") -> Any:
        info = self.store.get_folder(user, name)
        assert info is not None, f"no folder {name!r} for {user}"
        return info

    def delete_folder_before(self, monkeypatch: Any, method: str, mailbox: str, user: str = "alice") -> None:
        """Make the store's ``method`` delete ``mailbox`` first: another session's DELETE between
        a command's lookup of a mailbox and its write."""
        store = self.store
        original = getattr(store, method)

        def delete_first(*args: Any, **kwargs: Any) -> Any:
            store.delete_folder(user, mailbox)
            return original(*args, **kwargs)

        monkeypatch.setattr(store, method, delete_first)

    def add_message(self, mailbox: str = "INBOX", data: bytes | None = None, *, flags: Iterable[str] = (),
                    user: str = "alice", internaldate: int | None = None) -> int:
        """Store a message directly (as another client or LMTP would); returns its UID."""
        if data is None:
            data = b"From: bob@example.org\r\nSubject: test\r\n\r\nhello\r\n"
        _uidvalidity, uid = self.store.append(user, self.folder(mailbox, user).id, data, flags=tuple(flags),
                                              internaldate=internaldate)
        return uid

    def second_session(self, *, tls: bool = True, starttls: bool = False, peer: str = "192.0.2.1") -> Conversation:
        """Another connection to the same server (same store, settings and authentication)."""
        other = Conversation(tls=tls, starttls=starttls, users=(), peer=peer, context=self.ctx)
        self._peers.append(other)
        return other

    def twin(self) -> Conversation:
        """A second session showing what this one shows, for tests comparing two code paths on
        identical views: the same user, extensions ENABLEd and mailbox selected, and the same
        messages \\Recent (RFC 3501 gives \\Recent to one session; the twin is given a copy).
        Make it while this session has no update pending; then send both the same commands."""
        assert self.session.user is not None and self.session.selected is not None
        other = self.second_session()
        other.login(self.session.user)
        if self.session.enabled:
            other.command("ENABLE " + " ".join(sorted(self.session.enabled)))
        view = self.session.selected
        other.select(view.name, examine=view.readonly)
        assert other.session.selected is not None
        other.session.selected.recent = set(view.recent)
        return other

    def close(self) -> None:
        for peer in self._peers:
            peer.close()
        if not self.closed:
            self.session.connection_lost()
            self.closed = True
        if self._owns_store:
            self.store.close()
            self._owns_store = False

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- driving the session ----------------------------------------------------------------------

    def _waker(self) -> None:
        self.wakes += 1

    def next_tag(self) -> str:
        self._tags += 1
        return f"x{self._tags}"

    def greeting(self) -> list[bytes]:
        """The greeting responses (sent when the connection started)."""
        self._raw_pending = b""
        return list(self._greeting)

    def send(self, data: bytes) -> list[bytes]:
        """Feed client bytes; return the complete server responses this caused."""
        self._raw_pending = b""
        return self._collect(self._feed(data))

    def wake(self, *, require: bool = True) -> list[bytes]:
        """The pool runs ``wakeup()`` because the waker fired (``require``: assert it did)."""
        if require:
            assert self.wakes > 0, "the session's waker was not called"
        self.wakes = 0
        self._raw_pending = b""
        self.session.wakeup()
        return self._collect(self._run())

    def advance(self, seconds: float) -> list[bytes]:
        """Time passes (``delays``' clock): what the delays that end answer, if their wakers fired."""
        self.delays.advance(seconds)
        if not self.wakes:
            return []
        return self.wake()

    @property
    def delays(self) -> ManualDelays:
        """The fake clock of the server's delays (shared by its sessions)."""
        delays = self.ctx.auth.delays
        assert isinstance(delays, ManualDelays)
        return delays

    def timeout(self) -> list[bytes]:
        self._raw_pending = b""
        self.session.timed_out()
        return self._collect(self._run())

    def shutdown(self) -> list[bytes]:
        self._raw_pending = b""
        self.session.shutdown()
        return self._collect(self._run())

    def displaced(self) -> list[bytes]:
        """The pool closes the session to make room for a new connection (displaced())."""
        self._raw_pending = b""
        self.session.displaced()
        return self._collect(self._run())

    def undecodable_input(self) -> list[bytes]:
        """The pool found the client's DEFLATE stream broken (input_undecodable())."""
        self._raw_pending = b""
        self.session.input_undecodable()
        return self._collect(self._run())

    def command(self, text: str) -> list[bytes]:
        """Send ``TAG text`` with a fresh tag; assert a tagged OK; return all responses."""
        tag = self.next_tag()
        lines = self.send(f"{tag} {text}\r\n".encode())
        assert lines and lines[-1].startswith(f"{tag} OK".encode()), f"{text!r} failed: {lines!r}"
        return lines

    def capabilities(self) -> list[str]:
        """What CAPABILITY lists now."""
        lines = self.command("CAPABILITY")
        assert len(lines) == 2 and lines[0].startswith(b"* CAPABILITY "), lines
        return lines[0].decode().split()[2:]

    def login(self, user: str = "alice", password: str = PASSWORD) -> list[bytes]:
        return self.command(f"LOGIN {user} {password}")

    def select(self, mailbox: str = "INBOX", *, examine: bool = False) -> list[bytes]:
        return self.command(f"{'EXAMINE' if examine else 'SELECT'} \"{mailbox}\"")

    def _feed(self, data: bytes) -> bytes:
        assert not self.closed, "the connection was closed"
        self.transcript.append(("C", data))
        self.session.data_received(data)
        return self._run()

    def _run(self) -> bytes:
        """Play the pool until the session is quiescent; return the output produced."""
        with _inline_bulk_writers():
            return self._run_inline()

    def _run_inline(self) -> bytes:
        session = self.session
        chunks: list[bytes] = []
        for _ in range(MAX_ROUNDS):
            more = False if self.closed else session.process(16)
            produced = False
            while not self.closed:
                item = session.next_output()
                if item is None:
                    break
                produced = True
                if isinstance(item, TransportAction):
                    self._apply(item)
                elif isinstance(item, FileRegion):  # as the pool's transport would send it
                    assert self.session.conn.file_regions, "a FileRegion for a pool that does not take them"
                    self.regions.append((item.offset, item.length))
                    try:
                        chunks.extend(item.chunks(1 << 20))
                    finally:
                        item.close()
                else:
                    chunks.append(bytes(item))
            if not more and not produced:
                break
        else:
            raise AssertionError(f"session did not settle within {MAX_ROUNDS} rounds")
        out = b"".join(chunks)
        if out:
            self.transcript.append(("S", out))
            if not self.session.compressed:
                check_refusals_coded(out)
        self._raw_pending += out
        return out

    def _apply(self, action: TransportAction) -> None:
        self.actions.append(action)
        if action is TransportAction.CLOSE:
            self.session.connection_lost()
            self.closed = True
        elif action is TransportAction.STARTTLS:
            self.session.transport_changed(action, True)
        else:
            self.session.transport_changed(action, self.session.tls)

    def _collect(self, output: bytes) -> list[bytes]:
        # send()/wake() hand their output to the caller: a later script must not see it again.
        self._raw_pending = b""
        return split_responses(output)

    # -- transcripts -------------------------------------------------------------------------------

    def script(self, text: str) -> None:
        """Run a transcript (syntax in the module docstring); AssertionError at the failing step."""
        caller = inspect.currentframe()
        caller = caller.f_back if caller is not None else None
        origin = (caller.f_code.co_filename, caller.f_lineno) if caller is not None else ("<script>", 0)
        steps = self._parse_script(text, origin)
        if steps and steps[0].kind != "S":
            self._raw_pending = b""  # an unclaimed greeting: the script starts with the client
        self._run()
        pending = self._take_physical_lines()
        for step in steps:
            if step.kind == "S":
                if not pending:
                    self._fail(step, f"expected {step.text!r}, but the server sent nothing more")
                line = pending.pop(0)
                if not self._match(step.text, line):
                    self._fail(step, f"expected {step.text!r}\n     got {line!r}")
                continue
            if pending:
                self._fail(step, f"unmatched server output before this step: {pending!r}")
            if step.kind == "C":
                if self.closed:
                    self._fail(step, "the connection was closed")
                self._feed(step.text.encode("utf-8") + b"\r\n")
            elif step.kind == "W":
                if self.wakes == 0:
                    self._fail(step, "the session's waker was not called")
                self.wakes = 0
                self.session.wakeup()
                self._run()
            else:
                self.session.timed_out()
                self._run()
            pending = self._take_physical_lines()
        if pending:
            self._fail(steps[-1] if steps else None, f"unmatched server output at the end: {pending!r}")

    def _take_physical_lines(self) -> list[bytes]:
        data, self._raw_pending = self._raw_pending, b""
        if not data:
            return []
        if not data.endswith(b"\r\n"):
            raise AssertionError(f"server output does not end with CRLF: {data[-200:]!r}")
        return data[:-2].split(b"\r\n")

    def _match(self, expected: str, line: bytes) -> bool:
        pattern: list[str] = []
        names: list[str | None] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(expected):
            pattern.append(re.escape(expected[pos:match.start()]))
            kind, name, backref = match.group(1), match.group(2), match.group(3)
            if backref is not None:
                if backref not in self.captured:
                    raise AssertionError(f"{{={backref}}} used before it was captured")
                pattern.append(re.escape(self.captured[backref]))
            elif kind == "sp":
                pattern.append(" ")
            else:
                pattern.append("([0-9]+)" if kind == "n" else "(.*?)")
                names.append(name)
            pos = match.end()
        pattern.append(re.escape(expected[pos:]))
        found = re.fullmatch("".join(pattern), line.decode("utf-8", "surrogateescape"), re.DOTALL)
        if found is None:
            return False
        for index, name in enumerate(names, start=1):
            if name is not None:
                self.captured[name] = found.group(index)
        return True

    @staticmethod
    def _parse_script(text: str, origin: tuple[str, int]) -> list[_Step]:
        lines = textwrap.dedent(text).split("\n")
        filename = origin[0]
        base = _script_origin(origin, lines)
        steps: list[_Step] = []
        for index, raw in enumerate(lines):
            line = raw.strip(" \t") if raw.strip().startswith("#") or not raw.strip() else raw.lstrip(" \t")
            if not line or line.startswith("#"):
                continue
            where = f"{filename}:{base + index}" if base is not None else f"script line {index + 1}"
            kind, sep, rest = line.partition(":")
            if not sep or kind not in ("C", "S", "W", "T"):
                raise AssertionError(f"{where}: cannot parse script line {line!r}")
            if rest.startswith(" "):
                rest = rest[1:]
            if kind in ("W", "T") and rest.strip():
                raise AssertionError(f"{where}: {kind}: takes no text")
            steps.append(_Step(kind, rest, where))
        return steps

    def _fail(self, step: _Step | None, message: str) -> None:
        where = step.where if step is not None else "script"
        recent = self.transcript[-6:]
        shown = "\n".join(f"  {who}: {data!r}" for who, data in recent)
        raise AssertionError(f"{where}: {message}\n  recent traffic:\n{shown}")


def _script_origin(origin: tuple[str, int], lines: list[str]) -> int | None:
    """The source line number of the script's first line (the string sits below the call)."""
    first = next((index for index, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return None
    wanted = lines[first].strip()
    filename, call_line = origin
    for number in range(call_line, call_line + 50):
        source = linecache.getline(filename, number)
        if not source:
            break
        if wanted in source:
            return number - first
    return None


def drive(session: object, limit: int = 10_000) -> tuple[bytes, int]:
    """Play the pool until the session has nothing more to do: (output, times it paused, i.e.
    process() had more while next_output() had nothing)."""
    out: list[bytes] = []
    pauses = 0
    for _ in range(limit):
        more = session.process(16)  # type: ignore[attr-defined]
        produced = False
        while (item := session.next_output()) is not None:  # type: ignore[attr-defined]
            out.append(bytes(item))
            produced = True
        if not more:
            return b"".join(out), pauses
        if not produced:
            pauses += 1
    raise AssertionError("the session did not settle")
