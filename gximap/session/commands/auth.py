"""Getting in and out: STARTTLS, LOGIN, AUTHENTICATE (PLAIN, LOGIN, SCRAM-SHA-256) and
UNAUTHENTICATE (RFC 8437).

Failed logins are counted per connection (Gromox): when a connection reaches ``imap_auth_times``
failures, the user name is blocked for ``block_interval_auths`` (AuthService.block_user), the
command fails and the connection is closed with ``* BYE``. A blocked user name is refused before
any password check, on every connection, with the same ``[AUTHENTICATIONFAILED]`` code as a wrong
password (RFC 5530): the code does not tell an attacker which of the two happened, only the text
does (for the human behind a legitimate client that keeps failing). Only a password the
credential cache holds gets through a user block (not an address block): the user's own clients,
which a stranger's guesses would otherwise lock out (AuthService._screen). After a right password the
answer says what stands in the way: ``[CONTACTADMIN]`` for a disabled account or one without a
midb mailbox, ``[AUTHORIZATIONFAILED]`` for a mailbox the user may not act as
(gximap.auth.service), ``[LIMIT]`` for an account that holds imap_max_conn_per_user_ip sessions
from the client's address already (gximap.session.userlimit; counted from the login to the
session's end or UNAUTHENTICATE).

SCRAM-SHA-256 (imap_sasl_scram; gximap.auth.scram) is offered under the same rule as PLAIN
(plaintext_auth_allowed): the password never crosses the wire, but without TLS the session that
follows can be read and taken over, and the first message shows the user name to anyone
listening. Its outcome is AuthService's, as a password's: a wrong proof is a wrong password. A
blocked address (or a blocked user, where no proof could pass the block) is refused at the
client-first, as PLAIN at its message (AuthService.scram_refusal); a success is logged once the
client has answered the server-final message.

A failed login is answered imap_auth_failure_delay after its failure was decided (Dovecot's
auth_failure_delay), whatever the failure: one connection cannot try passwords as fast as they
hash, and the answer's time does not tell a wrong password from an unknown or blocked user. The
log line fail2ban reads, the count and any block come at once; the command waits parked on a
timer's future (gximap.auth.delay), holding no worker. A temporary failure ([UNAVAILABLE]) and a
client's cancel are answered at once: neither is a failed login.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Generator
from concurrent.futures import Future
from typing import Any

from gximap.auth import scram
from gximap.auth.service import (
    BLOCKED,
    DISABLED,
    LIMITED,
    NO_MAILBOX,
    UNAUTHORIZED,
    AuthResult,
    split_identity,
)
from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.net.handler import TransportAction
from gximap.session import capabilities
from gximap.session.base import (
    ANY_STATE,
    AUTHENTICATED,
    NOTHING_ENABLED,
    Await,
    CommandFailed,
    Done,
    NeedLine,
    State,
    command,
)
from gximap.session.errors import log_store_trouble
from midb.errors import MidbError

# SASL LOGIN's challenges, "Username:" and "Password:" in base64 (draft-murchison-sasl-login).
_LOGIN_USERNAME_PROMPT = b"+ VXNlcm5hbWU6\r\n"
_LOGIN_PASSWORD_PROMPT = b"+ UGFzc3dvcmQ6\r\n"
_EMPTY_CHALLENGE = b"+ \r\n"


@command(cmds.Starttls, states=ANY_STATE)
def starttls(session: Any, cmd: cmds.Starttls) -> Done:
    if session.tls:
        raise CommandFailed(Code.BAD_TLS_ACTIVE, status="BAD")
    if session.state is not State.NOT_AUTHENTICATED:
        raise CommandFailed(Code.BAD_ALREADY_AUTHENTICATED, status="BAD")
    if not session.conn.starttls_available:
        raise CommandFailed(Code.NO_TLS_UNAVAILABLE)
    if session.compressed:
        # TLS cannot start beneath DEFLATE (RFC 4978 section 3 puts TLS below COMPRESS). Not
        # reached as things are: COMPRESS needs a login, and UNAUTHENTICATE ends it (input is
        # read again only once it has ended); kept so that the transport is never asked to.
        raise CommandFailed(Code.BAD_TLS_UNDER_COMPRESS, status="BAD")
    # CVE-2011-0411: whatever the client pipelined behind STARTTLS arrived in plaintext and must
    # not be executed after the handshake. The pool reads nothing until the handshake is done.
    session.block_input()
    return Done(Code.OK_STARTTLS, sync=False, after=TransportAction.STARTTLS)


def _require_not_authenticated(session: Any) -> None:
    if session.state is not State.NOT_AUTHENTICATED:
        raise CommandFailed(Code.BAD_ALREADY_AUTHENTICATED, status="BAD")


def _require_privacy(session: Any) -> None:
    if not capabilities.plaintext_auth_allowed(session):
        raise CommandFailed(Code.NO_PLAINTEXT_DISALLOWED)


def _decode_text(data: bytes) -> str:
    """A client's user name or password as text; bytes that are not UTF-8 become surrogate
    escapes, which AuthService refuses ("invalid UTF-8") and the log shows as the bytes they were."""
    return data.decode("utf-8", "surrogateescape")


def _attempt(session: Any, login: str, password: str, mech: str,
             authzid: str | None = None) -> Generator[Await | NeedLine, Any, Done]:
    """Check the credentials; log in or count the failure (and maybe block and disconnect).
    The check runs on the auth service's hashing threads while the command is parked."""
    auth = session.ctx.auth
    check = auth.submit(login, password, rhost=session.rhost, address=session.conn.peer_host, mech=mech,
                        authzid=authzid, hold=session.hold_user_slot)
    return (yield from _settle(session, check, login, authzid))


def _settle(session: Any, check: Future[AuthResult], login: str, authzid: str | None = None,
            server_final: bytes | None = None) -> Generator[Await | NeedLine, Any, Done]:
    """Await a login's verdict (``check``, AuthService's); log in or count the failure.
    ``login`` and ``authzid``: the names the client gave (for the block, and the names its
    IMAP URLs may give: _url_users). ``server_final``: SASL data the client is sent with a
    success (SCRAM's v=), as a last challenge it answers with an empty response (RFC 4422
    section 5: IMAP's tagged OK carries no data). Such a success is logged only then
    (AuthResult.log_success): a client that cancels there instead, or leaves, has not logged in."""
    auth = session.ctx.auth
    try:
        result = yield Await(check)
    except MidbError as exc:
        # The store, or the passwd-file or a map file (FileUnavailable), cannot be read now
        # (e.g. StoreBusy, EACCES): no verdict on the password, no failed login counted.
        log_store_trouble(session, "login", exc)
        return Done(Code.NO_AUTH_UNAVAILABLE, status="NO", sync=False)  # [UNAVAILABLE] by default
    finally:
        # The generator closed here (GeneratorExit) means the client left: a check not begun is
        # dropped, or abandoned LOGINs would each be hashed later, ahead of live clients' logins.
        # Once the check is done this does nothing.
        check.cancel()
    if result.ok:
        if server_final is not None:
            try:
                _sasl_response((yield NeedLine(b"+ " + base64.b64encode(server_final) + b"\r\n", sensitive=True)))
            except CommandFailed:  # "*": the client gave up after all; the place it held is free
                # A cancel as at any other step (the BAD, imap_cmd_debug's line, counted as a BAD
                # command, no failed login); its "ok" line is never written.
                session.release_user_slot()
                raise
        result.log_success()
        session.login_completed(result.user, result.actor, _url_users(login, authzid))
        caps = " ".join(session.capability_list()).encode("ascii")
        return Done(Code.OK_LOGGED_IN, code=b"CAPABILITY " + caps, sync=False)
    session.auth_failures += 1
    if result.guess:
        session.password_failures += 1
    text = _REFUSAL_TEXTS.get(result.refusal, Code.NO_AUTH_FAILED)
    args = (str(session.settings.max_conn_per_user_ip),) if result.refusal == LIMITED else ()
    goodbye = None
    if auth.auth_times > 0 and session.auth_failures >= auth.auth_times:
        # Only attempts whose password was checked block the user (as on the auth socket): one
        # refused because its address or its user is blocked already is no guess, and counting it
        # let a blocked address lock anyone out, or keep a user's block re-armed, for free.
        if login and session.password_failures >= auth.auth_times:
            auth.block_user(login.partition("!")[0], session.rhost)
        goodbye = Code.BYE_TOO_MANY_FAILURES
    # Decided, logged, counted (and any block begun) already; only the answer waits.
    yield from _failure_delay(auth)
    return Done(text, args, status="NO", sync=False, goodbye=goodbye)


def _failure_delay(auth: Any) -> Generator[Await, Any, None]:
    """Wait imap_auth_failure_delay before a failed login's answer (AuthService.failure_pause),
    parked without a worker: what the client pipelined behind the command waits too, as the
    session runs no command while one is parked."""
    pause = auth.failure_pause()
    if pause is None:
        return
    try:
        yield Await(pause)
    finally:
        pause.cancel()  # the client left during the delay: its timer entry fires nothing


def _url_users(login: str, authzid: str | None) -> tuple[str, ...]:
    """The names the client logged in as, which the user of its IMAP URLs may give besides the
    storage account (CATENATE, RFC 5092 section 3.3: the user a URL is resolved by logging in
    as): the login as given and, impersonating, the mailbox it acts as (``shared`` of
    ``bob!shared``, PLAIN's authorization identity: RFC 5092 section 6.1.2 matches "user+"
    against that identity). Never the actor alone: a URL of bob's names bob's own mailboxes,
    which a session working on shared's does not show (a URL of its INBOX would name another
    message there)."""
    if authzid:
        return (authzid,)
    _actor, mailbox = split_identity(login)
    return (login, mailbox) if mailbox != login else (login,)


# A refused login's text by AuthResult.refusal (each with its response code by default:
# [AUTHENTICATIONFAILED], [CONTACTADMIN], [AUTHORIZATIONFAILED], [CONTACTADMIN], [LIMIT]); any
# other refusal is a wrong password or an unknown user, which are told apart to nobody.
_REFUSAL_TEXTS = {BLOCKED: Code.NO_AUTH_BLOCKED, DISABLED: Code.NO_ACCOUNT_DISABLED,
                  UNAUTHORIZED: Code.NO_AUTHZ_FAILED, NO_MAILBOX: Code.NO_ACCOUNT_MAILBOX_MISSING,
                  LIMITED: Code.NO_TOO_MANY_SESSIONS}


@command(cmds.Login, states=ANY_STATE)
def login(session: Any, cmd: cmds.Login) -> Generator[Await | NeedLine, Any, Done]:
    _require_not_authenticated(session)
    _require_privacy(session)
    return (yield from _attempt(session, _decode_text(cmd.user), _decode_text(cmd.password), "LOGIN"))


def _sasl_response(line: bytes) -> bytes:
    """Decode one client response of an AUTHENTICATE exchange; ``*`` cancels (RFC 3501 6.2.2)."""
    line = line.strip(b" \t")
    if line == b"*":
        raise CommandFailed(Code.BAD_AUTH_CANCELLED, status="BAD")
    try:
        return binascii.a2b_base64(line, strict_mode=True) if line else b""
    except binascii.Error:
        raise CommandFailed(Code.BAD_AUTH_BASE64, status="BAD") from None


@command(cmds.Authenticate, states=ANY_STATE)
def authenticate(session: Any, cmd: cmds.Authenticate) -> Generator[NeedLine | Await, Any, Done]:
    _require_not_authenticated(session)
    mechanism = cmd.mechanism.upper()
    if mechanism == "PLAIN":
        _require_privacy(session)
        data = cmd.initial
        if data is None:
            data = _sasl_response((yield NeedLine(_EMPTY_CHALLENGE, sensitive=True)))
        return (yield from _plain(session, data))
    if mechanism == "LOGIN" and session.settings.sasl_login:
        _require_privacy(session)
        user = cmd.initial
        if user is None:
            user = _sasl_response((yield NeedLine(_LOGIN_USERNAME_PROMPT, sensitive=True)))
        password = _sasl_response((yield NeedLine(_LOGIN_PASSWORD_PROMPT, sensitive=True)))
        return (yield from _attempt(session, _decode_text(user), _decode_text(password), "LOGIN"))
    if mechanism == scram.MECHANISM and session.settings.sasl_scram:
        _require_privacy(session)
        return (yield from _scram(session, cmd.initial))
    # RFC 3501 6.2.2: an unsupported mechanism is rejected with a tagged NO.
    raise CommandFailed(Code.NO_AUTH_MECHANISM)


def _plain(session: Any, message: bytes) -> Generator[Await | NeedLine, Any, Done]:
    """RFC 4616: [authzid] NUL authcid NUL passwd. A non-empty authzid different from the
    authcid asks to act as that mailbox (impersonation, checked by AuthService)."""
    parts = message.split(b"\x00")
    if len(parts) != 3:  # no PLAIN message: no user name
        return (yield from _attempt(session, "", "", "PLAIN"))
    authzid, authcid, password = (_decode_text(part) for part in parts)
    return (yield from _attempt(session, authcid, password, "PLAIN",
                                authzid=authzid if authzid and authzid != authcid else None))


def _scram(session: Any, initial: bytes | None) -> Generator[NeedLine | Await, Any, Done]:
    """RFC 5802 section 3: client-first, server-first (nonce, salt, iterations), client-final
    with the proof, server-final v= (the steps are gximap.auth.scram.ScramServer's). A message
    that breaks the grammar fails the login as a PLAIN message without its NULs does
    (NO [AUTHENTICATIONFAILED], counted); ``*`` cancels."""
    data = initial
    if data is None:
        data = _sasl_response((yield NeedLine(_EMPTY_CHALLENGE, sensitive=True)))
    auth = session.ctx.auth
    try:
        exchange = scram.ScramServer(data)
    except scram.ScramError as exc:  # no name to count against
        check = auth.malformed(rhost=session.rhost, address=session.conn.peer_host, mech=scram.MECHANISM,
                               reason=f"SCRAM client-first: {exc}")
        return (yield from _settle(session, check, ""))
    # A blocked address (or user, where no proof could pass the block) is refused here, its keys
    # never read, as PLAIN is at its one message (AuthService.scram_refusal).
    refusal = auth.scram_refusal(exchange.username, rhost=session.rhost, address=session.conn.peer_host,
                                 mech=scram.MECHANISM, authzid=exchange.authzid)
    if refusal is not None:
        refused: Future[AuthResult] = Future()
        refused.set_result(refusal)
        return (yield from _settle(session, refused, exchange.username, exchange.authzid))
    lookup_future = auth.submit_scram_lookup(exchange.username, exchange.authzid, rhost=session.rhost,
                                             mech=scram.MECHANISM)
    try:
        lookup = yield Await(lookup_future)
    except MidbError as exc:
        log_store_trouble(session, "login", exc)
        return Done(Code.NO_AUTH_UNAVAILABLE, status="NO", sync=False)
    finally:
        lookup_future.cancel()  # the client left before the lookup ran: it never runs
    challenge = b"+ " + base64.b64encode(exchange.server_first(lookup.credential)) + b"\r\n"
    outcome = exchange.finish(_sasl_response((yield NeedLine(challenge, sensitive=True))))
    # A wrong proof (client_key None) is a wrong password: failed and counted as one.
    check = auth.scram_result(exchange.username, lookup, outcome.client_key, rhost=session.rhost,
                              address=session.conn.peer_host, mech=scram.MECHANISM, authzid=exchange.authzid,
                              hold=session.hold_user_slot, reason=outcome.reason)
    return (yield from _settle(session, check, exchange.username, exchange.authzid,
                               server_final=outcome.server_final))


@command(cmds.Unauthenticate, states=AUTHENTICATED)
def unauthenticate(session: Any, cmd: cmds.Unauthenticate) -> Done:
    """RFC 8437: back to the not-authenticated state as if the connection were new, except that
    TLS stays. The selected mailbox is closed without expunging, ENABLEd extensions end. COMPRESS
    ends too (section 4.1): the server's DEFLATE stream after the CRLF of the OK, the client's
    after the command's, so what was decoded behind the command is discarded, as behind COMPRESS."""
    session.select(None)
    session.set_notify(None)  # RFC 5465: NOTIFY belongs to the login it was given in
    session.release_user_slot()
    session.state = State.NOT_AUTHENTICATED
    session.user = None
    session.actor = None
    session.url_users = frozenset()
    session.enabled = NOTHING_ENABLED
    session.client_id = None
    session.saved_search = None
    session.auth_failures = session.password_failures = 0
    session.connected_at = time.monotonic()  # imap_login_timeout counts afresh, as on a new connection
    if session.compressed:
        session.block_input()
        return Done(Code.OK_UNAUTHENTICATE, sync=False, after=TransportAction.END_COMPRESS)
    return Done(Code.OK_UNAUTHENTICATE, sync=False)
