"""One connection to the authentication socket: the ProtocolHandler that answers an MTA's AUTH requests.

Mechanisms: PLAIN (RFC 4616, with an optional authorization identity for impersonation, as in
IMAP), LOGIN (the obsolete two-prompt mechanism every SMTP client still speaks) and, with
``imap_sasl_scram``, SCRAM-SHA-256 (RFC 5802, RFC 7677; gximap.auth.scram, as IMAP's AUTHENTICATE
has it). A request without an initial response gets a ``CONT`` with an empty challenge (PLAIN,
SCRAM) or the "Username:" / "Password:" prompts (LOGIN). Such an unfinished request expires
PENDING_TIMEOUT after its AUTH, as in Dovecot, and at most MAX_PENDING are kept per connection (the
oldest gives way): Postfix never cancels the exchange an SMTP client abandoned.

The check is IMAP's: the same AuthService, so the same accounts, auth_map / storage_map and
throttling. The client address for the per-address limits and the log is the request's ``rip=``
(the SMTP client; fail2ban then bans the right address), else the socket peer. Gromox counts
failures per IMAP connection; here, where one MTA connection carries many SMTP clients, they are
counted per (client address, user) instead, shared by all auth connections: at ``imap_auth_times``
failures the user is blocked for ``block_interval_auths``, exactly as an IMAP connection would;
as over IMAP, a password the credential cache holds still gets through that block.

SCRAM, as in Dovecot's mech-scram.c: the client-first message (initial response or answer to an
empty CONT) gets the server-first message in a CONT; the client-final message, its proof checked,
gets the server-final message (v=, the server's proof). That last data cannot travel in the OK, as
Dovecot's protocol allows only when the request says ``final-resp-ok`` (Postfix and Exim do not,
and Postfix reads nothing but user= from an OK): it goes in one more CONT, which the MTA passes to
the SMTP client as a 334 challenge, and the client's empty answer gets the OK, as Dovecot does
(auth_request_success_continue), and only then is the login done (logged, its failures' count
cleared). The verdict is AuthService's (scram_refusal, scram_lookup, scram_result): the same
blocks, counts and log lines as a password's, made-up keys for an unknown user, a wrong proof a
wrong password. The MECH line says ``mutual-auth``, Dovecot's flag for SCRAM.

Password mechanisms follow ``insecure_auth`` like IMAP logins do: when it forbids passwords
without TLS, a request counts as secure only if the MTA marks it ``secured`` (TLS with its
client), or the client is on the loopback interface or on the MTA's own address. SCRAM follows it
too, as IMAP offers it only where PLAIN is: the password is safe, but the SMTP session that follows
is not, and the user name is in the clear. ``valid-client-cert`` and ``nologin`` change nothing
(no certificate logins; no login is ever made here but the check).

A failed login's FAIL goes out imap_auth_failure_delay after the failure was decided (logged and
counted at once), as Dovecot's auth_failure_delay holds it back: queued behind a timer's future
(gximap.auth.delay), no thread waiting, the connection's other requests answered meanwhile. A
temporary failure and the protocol's own refusals (no service, a mechanism not offered, bad base64)
are answered at once: no password was found wrong.

The connection is dropped on a protocol error (malformed line, over-long line, a duplicate request
id: one awaiting a CONT or whose FAIL waits out its delay, too many unknown commands); an AUTH that cannot succeed gets FAIL, and so does a CONT for a
request that is not pending (finished, cancelled or timed out), as in Dovecot: an MTA's CONT may
cross the request's expiry, which is no protocol error. Until the client has
sent VERSION and CPID, the connection is subject to a time-out; after that an MTA may keep it open
as long as it likes (Postfix does, between SMTP sessions).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from gximap.auth import scram
from gximap.auth.maps import UnmappedName
from gximap.auth.service import (
    DISABLED,
    NO_MAILBOX,
    UNAUTHORIZED,
    AuthResult,
    ScramLookup,
    address_key,
    split_identity,
)
from gximap.authsock.protocol import (
    MAJOR_VERSION,
    AuthProtocolError,
    AuthRequest,
    AuthServerProtocol,
    CancelRequest,
    ClientCpid,
    ClientVersion,
    ContinueRequest,
)
from gximap.net.handler import ConnectionInfo, OutputItem, TransportAction, Waker
from midb.errors import FileUnavailable, MidbError

__all__ = ["AuthSocketContext", "AuthSocketSession", "AuthSocketSettings", "MECHANISMS", "SCRAM_MECHANISM",
           "mechanisms"]

log = logging.getLogger("gximap.auth")

MECHANISMS: tuple[tuple[str, tuple[str, ...]], ...] = (("PLAIN", ("plaintext",)), ("LOGIN", ("plaintext",)))
# Dovecot's flags for SCRAM (mech-scram.c: MECH_SEC_MUTUAL_AUTH): Postfix offers it unless
# smtpd_sasl_security_options asks for what it lacks; "plaintext" would hide it under noplaintext.
SCRAM_MECHANISM: tuple[str, tuple[str, ...]] = (scram.MECHANISM, ("mutual-auth",))
# Unfinished multi-step requests (a CONT awaited) per connection; when full, a new one takes the
# place of the oldest. Postfix keeps one connection per smtpd process and never sends CANCEL: an
# SMTP client that gives up mid-exchange leaves its request pending for good.
MAX_PENDING = 64
# ... and each expires this long after its AUTH, as in Dovecot (MASTER_AUTH_SERVER_TIMEOUT_SECS):
# an SMTP client answers a challenge within seconds, and its MTA gives up well before this.
PENDING_TIMEOUT = 150.0
MAX_IGNORED = 32  # unknown commands tolerated per connection
MAX_TRACKED_FAILURES = 65536
_USERNAME_PROMPT = "VXNlcm5hbWU6"  # base64 "Username:"
_PASSWORD_PROMPT = "UGFzc3dvcmQ6"  # base64 "Password:"
# What a refusal after a right password says (AuthResult.refusal), as Dovecot's auth service does.
_REFUSAL_PARAMS = {
    DISABLED: {"reason": "Account disabled", "code": "user_disabled"},
    UNAUTHORIZED: {"reason": "Not authorized to act as that user", "code": "authz_fail"},
    NO_MAILBOX: {"reason": "No mailbox for this account"},  # Dovecot has no code for it
}
# Dovecot's answer to a CONT for a request it does not hold (auth_request_handler_auth_continue).
REQUEST_TIMED_OUT = "Authentication request timed out"
PLAINTEXT_DISALLOWED = "Plaintext authentication disallowed on non-secure (SSL/TLS) connections."


@dataclass(frozen=True, slots=True)
class AuthSocketSettings:
    insecure_auth: bool = False  # plaintext mechanisms allowed for requests not marked secured
    handshake_timeout: float = 30.0  # seconds until the client has sent VERSION and CPID
    sasl_scram: bool = False  # SCRAM-SHA-256 offered (imap_sasl_scram)


def mechanisms(settings: AuthSocketSettings) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The MECH lines of the handshake: name and Dovecot's security flags."""
    return MECHANISMS + ((SCRAM_MECHANISM,) if settings.sasl_scram else ())


@dataclass
class AuthSocketContext:
    """Shared by every auth socket connection: the AuthService, settings, failure counts."""

    auth: Any  # gximap.auth.service.AuthService
    settings: AuthSocketSettings = field(default_factory=AuthSocketSettings)
    clock: Any = time.monotonic
    _cuids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _failures: OrderedDict[tuple[str, str], tuple[int, float]] = field(default_factory=OrderedDict)

    def next_cuid(self) -> int:
        with self._lock:
            return next(self._cuids)

    def note_failure(self, address: str, login: str, rhost: str) -> None:
        """Count a failed AUTH of ``login`` from ``address``; block the user at imap_auth_times."""
        auth = self.auth
        actor = login.partition("!")[0]
        key = (address_key(address), auth.block_key(actor))
        now = self.clock()
        with self._lock:
            count, since = self._failures.pop(key, (0, now))
            if now - since > auth.block_interval:
                count, since = 0, now  # an old streak: start again
            count += 1
            reached = auth.auth_times > 0 and count >= auth.auth_times
            if not reached:
                self._failures[key] = (count, since)
                while len(self._failures) > MAX_TRACKED_FAILURES:
                    self._failures.popitem(last=False)
        if reached and actor:
            auth.block_user(actor, rhost)

    def note_success(self, address: str, login: str) -> None:
        key = (address_key(address), self.auth.block_key(login.partition("!")[0]))
        with self._lock:
            self._failures.pop(key, None)


@dataclass(slots=True)
class _Pending:
    request: AuthRequest
    # "plain", "login-user", "login-password", "scram-first", "scram-final", "scram-done"
    step: str
    started: float  # the context's clock at the AUTH: the request expires PENDING_TIMEOUT later
    username: str = ""  # the LOGIN mechanism's, once given; SCRAM's reported user, once admitted
    exchange: scram.ScramServer | None = None  # SCRAM's, from the client-first message on
    lookup: ScramLookup | None = None  # the keys SCRAM's proof is checked against
    admitted: AuthResult | None = None  # SCRAM's success, done at the answer to the server-final
    login: str = ""  # ... and the name it was counted under (note_success)


class AuthSocketSession:
    """Implements :class:`gximap.net.handler.ProtocolHandler` for the Dovecot auth protocol."""

    def __init__(self, ctx: AuthSocketContext, conn: ConnectionInfo, waker: Waker) -> None:
        self.ctx = ctx
        self.conn = conn
        self.waker = waker
        self.cuid = ctx.next_cuid()
        self.proto = AuthServerProtocol()
        self._out: deque[OutputItem] = deque()
        # FAILs of failed logins waiting out imap_auth_failure_delay by request id, oldest first
        # (_fail_delayed): an id here is still owed its answer, so not free for a new request.
        self._delayed: dict[int, tuple[Future[None], bytes]] = {}
        self._pending: dict[int, _Pending] = {}
        self._closing = False

    # -- ProtocolHandler ------------------------------------------------------------------------

    def start(self) -> None:
        log.debug("auth socket connection %d from %s", self.cuid, self.conn.rhost)
        self._out.append(AuthServerProtocol.handshake(mechanisms(self.ctx.settings), spid=os.getpid(),
                                                      cuid=self.cuid, cookie=secrets.token_hex(16)))

    def data_received(self, data: bytes) -> None:
        if not self._closing:
            self.proto.receive(data)

    def process(self, budget: int) -> bool:
        while budget > 0 and not self._closing:
            try:
                event = self.proto.next_event()
            except AuthProtocolError as exc:
                self._drop(str(exc))
                return False
            if event is None:
                if self.proto.ignored > MAX_IGNORED:
                    self._drop("too many unknown commands")
                return False
            budget -= 1
            if isinstance(event, ClientVersion):
                if event.major != MAJOR_VERSION:
                    self._drop(f"client speaks protocol version {event.major}, not {MAJOR_VERSION}")
            elif isinstance(event, ClientCpid):
                pass
            elif isinstance(event, AuthRequest):
                self._auth(event)
            elif isinstance(event, ContinueRequest):
                self._continue(event)
            elif isinstance(event, CancelRequest):
                self._pending.pop(event.id, None)
        return not self._closing

    def next_output(self) -> OutputItem | None:
        return self._out.popleft() if self._out else None

    def idle_timeout(self) -> float:
        if self.proto.cpid is None:
            return self.ctx.settings.handshake_timeout
        return 0.0  # a finished handshake: the MTA keeps the connection for later requests

    def timed_out(self) -> bool:
        self._drop("no handshake in time")
        return True

    def wakeup(self) -> None:
        """A failure's delay ended (nothing in the store concerns this protocol): its FAIL goes out."""
        # Every one whose delay is over, not only the oldest: a SIGHUP may have changed the delay.
        for request_id, (pause, line) in list(self._delayed.items()):
            if pause.done():
                self._out.append(line)
                del self._delayed[request_id]

    def awaiting(self) -> bool:
        """A FAIL waits out its delay: an MTA that half-closes meanwhile still gets it."""
        return bool(self._delayed)

    def shutdown(self) -> None:
        self._drop("server shutdown", level=logging.DEBUG)

    def transport_changed(self, action: TransportAction, tls: bool) -> None:
        """No STARTTLS here: the transport never changes."""

    def connection_lost(self) -> None:
        self._closing = True
        self._pending.clear()
        self._forget_delayed()

    def _forget_delayed(self) -> None:
        for pause, _line in self._delayed.values():
            pause.cancel()  # its timer entry fires nothing
        self._delayed.clear()

    # -- requests -------------------------------------------------------------------------------

    def _auth(self, request: AuthRequest) -> None:
        held = self._pending.pop(request.id, None)
        # An expired one is gone, as in Dovecot; one whose FAIL waits out its delay is not.
        if (held is not None and not self._expired(held)) or request.id in self._delayed:
            self._drop(f"duplicate request id {request.id}")
            return
        if not request.service:
            self._fail(request.id, reason="Missing service parameter")
            return
        mechanism = request.mechanism
        if mechanism not in (name for name, _flags in mechanisms(self.ctx.settings)):  # those the handshake offers
            self._fail(request.id, reason="Unsupported authentication mechanism")
            return
        if not self._plaintext_allowed(request):
            log.info("auth socket: %s %s refused: password mechanism on a connection not marked secured",
                     self._rhost(request), mechanism)
            self._fail(request.id, reason=PLAINTEXT_DISALLOWED)
            return
        initial: bytes | None = None
        # An empty resp= is no initial response: Exim always sends "resp=%s", empty when the SMTP
        # client gave none, and Dovecot allows it so. "resp==" is the empty response (RFC 4954).
        if request.response:
            initial = _decode_base64(request.response)
            if initial is None:
                self._fail(request.id, reason="Invalid base64 data in initial response")
                return
        now = self.ctx.clock()
        if mechanism == scram.MECHANISM:
            pending = _Pending(request, "scram-first", now)
            if initial is None:
                self._challenge(pending, "")
            else:
                self._scram_first(pending, initial)
            return
        if mechanism == "PLAIN":
            if initial is None:
                self._challenge(_Pending(request, "plain", now), "")
                return
            self._plain(request, initial)
            return
        if initial is None:
            self._challenge(_Pending(request, "login-user", now), _USERNAME_PROMPT)
            return
        self._challenge(_Pending(request, "login-password", now, _text(initial)), _PASSWORD_PROMPT)

    def _continue(self, event: ContinueRequest) -> None:
        pending = self._pending.pop(event.id, None)
        if pending is None or self._expired(pending):
            self._out.append(AuthServerProtocol.fail(event.id, reason=REQUEST_TIMED_OUT))
            return
        data = _decode_base64(event.data)
        if data is None:
            self._fail(event.id, reason="Invalid base64 data in continued response")
            return
        if pending.step == "plain":
            self._plain(pending.request, data)
        elif pending.step == "scram-first":
            self._scram_first(pending, data)
        elif pending.step == "scram-final":
            self._scram_final(pending, data)
        elif pending.step == "scram-done":
            # RFC 4422 section 5: the answer to additional data with success is empty; Dovecot
            # does not look at it either (auth_request_continue of a successful request).
            assert pending.admitted is not None  # the scram-done step holds the success
            self._succeed(pending.request, pending.login, pending.username, pending.admitted)
        elif pending.step == "login-user":
            self._challenge(_Pending(pending.request, "login-password", pending.started, _text(data)),
                            _PASSWORD_PROMPT)
        else:
            self._attempt(pending.request, pending.username, _text(data), None)

    def _challenge(self, pending: _Pending, data: str) -> None:
        """Send a challenge and keep the request until its answer. Expired requests are
        forgotten first; if the table is full still, the oldest request gives way (silently, as
        Dovecot drops an expired one: a CONT for it is then answered REQUEST_TIMED_OUT)."""
        for expired in [key for key, held in self._pending.items() if self._expired(held)]:
            del self._pending[expired]
        if len(self._pending) >= MAX_PENDING:
            oldest = min(self._pending.values(), key=lambda held: held.started)
            del self._pending[oldest.request.id]
            log.debug("auth socket connection %d: unfinished request %d dropped for request %d",
                      self.cuid, oldest.request.id, pending.request.id)
        self._pending[pending.request.id] = pending
        self._out.append(AuthServerProtocol.cont(pending.request.id, data))

    def _expired(self, pending: _Pending) -> bool:
        return self.ctx.clock() - pending.started >= PENDING_TIMEOUT

    def _plain(self, request: AuthRequest, message: bytes) -> None:
        """RFC 4616: [authzid] NUL authcid NUL passwd."""
        parts = message.split(b"\0")
        if len(parts) != 3:  # no PLAIN message: no user name
            self._attempt(request, "", "", None)
            return
        authzid, authcid, password = (_text(part) for part in parts)
        self._attempt(request, authcid, password, authzid if authzid and authzid != authcid else None)

    def _attempt(self, request: AuthRequest, login: str, password: str, authzid: str | None) -> None:
        try:
            result = self.ctx.auth.authenticate(login, password, rhost=self._rhost(request),
                                                address=self._address(request), mech=self._mech(request),
                                                authzid=authzid)
        except (MidbError, OSError) as exc:
            self._temporary_failure(request, exc)
            return
        self._conclude(request, login, authzid, result)

    def _conclude(self, request: AuthRequest, login: str, authzid: str | None, result: AuthResult,
                  server_final: bytes | None = None, started: float = 0.0) -> None:
        """Answer a request AuthService has decided; count its failure or clear its count.
        ``server_final``: SCRAM's data for the client with a success (see the module's doc), in a
        CONT whose answer is awaited until PENDING_TIMEOUT after ``started``, the AUTH's time."""
        if not result.ok:
            if result.guess:
                self.ctx.note_failure(self._address(request), login, self._rhost(request))
            self._fail_delayed(request.id, **_REFUSAL_PARAMS.get(result.refusal, {}))  # said only after a right password
            return
        user = self._reported_user(login, authzid)
        if server_final is None:
            self._succeed(request, login, user, result)
        elif request.flag("final-resp-ok"):
            self._succeed(request, login, user, result, resp=_encode_base64(server_final))
        else:
            # Done only at the client's answer: a CANCEL (or the request's expiry) there ends it as
            # at any other step, nothing logged or counted, and the "ok" line never written.
            self._challenge(_Pending(request, "scram-done", started, user, admitted=result, login=login),
                            _encode_base64(server_final))

    def _succeed(self, request: AuthRequest, login: str, user: str, result: AuthResult, **params: str) -> None:
        """The OK of a login that is done: its success logged (SCRAM's waited for this), the
        count of its failures cleared."""
        result.log_success()
        self.ctx.note_success(self._address(request), login)
        self._out.append(AuthServerProtocol.ok(request.id, user=user, **params))

    def _scram_first(self, pending: _Pending, message: bytes) -> None:
        """The client-first message: answered with the server-first, keys looked up for the user
        (made-up ones for a name without any: the exchange goes on, and its proof fails)."""
        request, auth = pending.request, self.ctx.auth
        try:
            exchange = scram.ScramServer(message)
        except scram.ScramError as exc:  # no name to count against: a failure as PLAIN without NULs
            self._settle(request, "", None, auth.malformed(rhost=self._rhost(request), address=self._address(request),
                                                           mech=self._mech(request),
                                                           reason=f"SCRAM client-first: {exc}"))
            return
        # A blocked address (or user, where no proof could pass the block) is refused here, its
        # keys never read, as PLAIN is at its one message (AuthService.scram_refusal).
        refusal = auth.scram_refusal(exchange.username, rhost=self._rhost(request), address=self._address(request),
                                     mech=self._mech(request), authzid=exchange.authzid)
        if refusal is not None:
            self._conclude(request, exchange.username, exchange.authzid, refusal)
            return
        try:
            lookup = auth.scram_lookup(exchange.username, exchange.authzid, rhost=self._rhost(request),
                                       mech=self._mech(request))
        except (MidbError, OSError) as exc:
            self._temporary_failure(request, exc)
            return
        challenge = _encode_base64(exchange.server_first(lookup.credential))
        self._challenge(_Pending(request, "scram-final", pending.started, exchange=exchange, lookup=lookup),
                        challenge)

    def _scram_final(self, pending: _Pending, message: bytes) -> None:
        """The client-final message: its proof checked, the verdict AuthService's."""
        request, exchange, lookup = pending.request, pending.exchange, pending.lookup
        assert exchange is not None and lookup is not None  # the scram-final step holds both
        outcome = exchange.finish(message)
        verdict = self.ctx.auth.scram_result(exchange.username, lookup, outcome.client_key,
                                             rhost=self._rhost(request), address=self._address(request),
                                             mech=self._mech(request), authzid=exchange.authzid,
                                             reason=outcome.reason)
        self._settle(request, exchange.username, exchange.authzid, verdict, outcome.server_final, pending.started)

    def _settle(self, request: AuthRequest, login: str, authzid: str | None, verdict: Future[AuthResult],
                server_final: bytes | None = None, started: float = 0.0) -> None:
        """Conclude with a verdict AuthService gave as a future already done (SCRAM's)."""
        try:
            result = verdict.result()
        except (MidbError, OSError) as exc:
            self._temporary_failure(request, exc)
            return
        self._conclude(request, login, authzid, result, server_final, started)

    def _temporary_failure(self, request: AuthRequest, exc: Exception) -> None:
        """FAIL with ``temp``, Dovecot's answer to an internal error (a passdb lookup that failed):
        the MTA tells its client to try again later (Postfix: 454 4.7.0) and counts no failure."""
        if not isinstance(exc, FileUnavailable):  # that one: logged once by its reader, per login by AuthService
            log.warning("auth socket: %s: cannot check the password now: %s", self._rhost(request), exc)
        self._fail(request.id, "temp", reason="Temporary authentication failure", code="temp_fail")

    def _reported_user(self, login: str, authzid: str | None) -> str:
        """The name the MTA logs and checks sender addresses against (smtpd_sender_login_maps): the
        mailbox logged into, normalized like a login name (auth_map_normalize)."""
        _actor, mailbox = split_identity(login, authzid)
        try:
            return self.ctx.auth.auth_map.normalize(mailbox)
        except UnmappedName:
            return mailbox

    # -- helpers --------------------------------------------------------------------------------

    def _fail(self, request_id: int, *flags: str, **params: str) -> None:
        self._pending.pop(request_id, None)
        self._out.append(AuthServerProtocol.fail(request_id, *flags, **params))

    def _fail_delayed(self, request_id: int, **params: str) -> None:
        """FAIL a failed login once imap_auth_failure_delay has passed, as Dovecot's auth service
        delays it (auth_failure_delay): the failure is logged and counted already. The other
        requests of the connection (an MTA's other SMTP clients) are answered meanwhile; the
        timer's future fires the waker, and wakeup() sends the line. No thread waits."""
        self._pending.pop(request_id, None)
        line = AuthServerProtocol.fail(request_id, **params)
        pause = self.ctx.auth.failure_pause()
        if pause is None:
            self._out.append(line)
            return
        self._delayed[request_id] = (pause, line)
        pause.add_done_callback(lambda _pause: self.waker())

    def _plaintext_allowed(self, request: AuthRequest) -> bool:
        if self.ctx.settings.insecure_auth or request.flag("secured"):
            return True
        rip, lip = request.params.get("rip") or "", request.params.get("lip") or ""
        if not rip:
            return False
        if rip == lip:
            return True
        try:
            return ipaddress.ip_address(rip.partition("%")[0]).is_loopback
        except ValueError:
            return False

    @staticmethod
    def _mech(request: AuthRequest) -> str:
        return f"{request.service}/{request.mechanism}"

    def _address(self, request: AuthRequest) -> str:
        return request.params.get("rip") or self.conn.peer_host

    def _rhost(self, request: AuthRequest) -> str:
        rip = request.params.get("rip")
        if not rip:
            return self.conn.rhost
        port = request.params.get("rport") or "0"
        return f"[{rip}]:{port if (port.isascii() and port.isdigit()) else 0}"

    def _drop(self, why: str, *, level: int = logging.WARNING) -> None:
        if self._closing:
            return
        log.log(level, "auth socket connection %d from %s closed: %s", self.cuid, self.conn.rhost, why)
        self._closing = True
        self._pending.clear()
        self._forget_delayed()
        self._out.append(TransportAction.CLOSE)


def _decode_base64(data: str) -> bytes | None:
    if data in ("", "="):  # "=" is SASL's spelling of an empty initial response (RFC 4954)
        return b""
    try:
        return binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def _encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text(data: bytes) -> str:
    """A client's SASL field as text; bytes that are not UTF-8 become surrogate escapes, which
    AuthService refuses ("invalid UTF-8") and the log shows as the bytes they were."""
    return data.decode("utf-8", "surrogateescape")
