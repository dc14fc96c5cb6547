"""STARTTLS, LOGIN, AUTHENTICATE (PLAIN, LOGIN; SASL-IR), throttling and UNAUTHENTICATE."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation
from net_helpers import sibling_channels, wait_until

from gximap import config as gxconfig
from gximap import log as gxlog
from gximap.auth.cache import CredentialCache
from gximap.daemon import settings_from_config
from gximap.net.handler import TransportAction
from gximap.session.base import State
from gximap.session.context import ServerContext
from gximap.session.userlimit import UserSessions


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PLAIN_ALICE = b64(b"\0alice\0secret")
PLAIN_ALICE_AS_ALICE = b64(b"alice\0alice\0secret")
PLAIN_ALICE_WRONG = b64(b"\0alice\0nope")


def _auth_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The authentication log lines, the client's port shown as {port}."""
    return [re.sub(r"\]:\d+ ", "]:{port} ", record.getMessage())
            for record in caplog.records if record.name == "gximap.auth"]


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path, users=("alice", "bob")) as conversation:
        yield conversation


# -- LOGIN -------------------------------------------------------------------------------------


def test_login_success_reports_post_login_capabilities(conv):
    conv.script("""
        C: a1 LOGIN alice secret
        S: a1 OK [CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ ENABLE IDLE {*}] Logged in
    """)
    assert conv.session.state is State.AUTHENTICATED
    assert conv.session.user == "alice" and conv.session.actor is None


def test_login_is_case_insensitive_for_the_user_name(conv):
    conv.command("LOGIN ALICE secret")
    assert conv.session.user == "alice"


def test_login_failure(conv):
    conv.script("""
        C: a1 LOGIN alice wrong
        S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
        C: a2 LOGIN nobody secret
        S: a2 NO [AUTHENTICATIONFAILED] Authentication failed
        C: a3 LOGIN "" ""
        S: a3 NO [AUTHENTICATIONFAILED] Authentication failed
    """)
    assert conv.session.state is State.NOT_AUTHENTICATED
    assert conv.session.auth_failures == 3


def test_login_twice_is_refused(conv):
    conv.login()
    conv.script("""
        C: a1 LOGIN bob secret
        S: a1 BAD [CLIENTBUG] Already authenticated
        C: a2 AUTHENTICATE PLAIN
        S: a2 BAD [CLIENTBUG] Already authenticated
    """)
    assert conv.session.user == "alice"


def test_login_without_tls_is_refused_with_privacyrequired(tmp_path):
    with Conversation(tmp_path, tls=False, starttls=True) as conv:
        conv.script("""
            C: a1 LOGIN alice secret
            S: a1 NO [PRIVACYREQUIRED] Plaintext authentication disallowed
            C: a2 AUTHENTICATE PLAIN
            S: a2 NO [PRIVACYREQUIRED] Plaintext authentication disallowed
        """)
        # Refusing before the password is looked at does not count as a failed login.
        assert conv.session.auth_failures == 0


def test_login_refused_before_its_literals_are_sent(tmp_path):
    """A LOGIN that will be refused whatever its arguments is refused at its first synchronising
    literal instead of "+": without TLS, so that the password (or the user name) is not sent in
    the clear for nothing; logged in already, as BAD. The connection stays usable."""
    with Conversation(tmp_path, tls=False, starttls=True) as conv:
        assert conv.send(b'a1 LOGIN "alice" {6}\r\n') == [
            b"a1 NO [PRIVACYREQUIRED] Plaintext authentication disallowed"]
        assert conv.send(b"a2 LOGIN {5}\r\n") == [b"a2 NO [PRIVACYREQUIRED] Plaintext authentication disallowed"]
        assert conv.session.auth_failures == 0
        assert conv.send(b"a3 NOOP\r\n") == [b"a3 OK NOOP completed"]
    with Conversation(tmp_path / "tls", tls=True) as conv:
        conv.login()
        assert conv.send(b"a1 LOGIN bob {6}\r\n") == [b"a1 BAD [CLIENTBUG] Already authenticated"]
        assert conv.session.user == "alice"
        # Under TLS, before a login, the literals are taken as ever.
    with Conversation(tmp_path / "tls2", tls=True) as conv:
        assert conv.send(b"a1 LOGIN {5}\r\n") == [b"+ Ready for literal data"]
        assert conv.send(b"alice {6}\r\n") == [b"+ Ready for literal data"]
        assert conv.send(b"secret\r\n")[-1].startswith(b"a1 OK")


def test_login_without_tls_when_insecure_auth_is_allowed(tmp_path):
    with Conversation(tmp_path, tls=False, insecure_auth=True) as conv:
        conv.login()
        assert not conv.session.tls


def test_force_tls_overrides_insecure_auth(tmp_path):
    with Conversation(tmp_path, tls=False, insecure_auth=True, force_tls=True) as conv:
        assert conv.send(b"a1 LOGIN alice secret\r\n")[0].startswith(b"a1 NO [PRIVACYREQUIRED]")


def test_tls_a_trusted_proxy_terminated_counts_as_tls(tmp_path):
    """A PROXY header with PP2_CLIENT_SSL (haproxy's send-proxy-v2-ssl): the client's link is
    encrypted, so passwords are welcome even under imap_force_tls; our own connection is not
    TLS, and the session does not claim it is."""
    with Conversation(tmp_path, tls=False, client_tls=True, force_tls=True) as conv:
        caps = conv.send(b"c1 CAPABILITY\r\n")[0].decode().split()
        assert "AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps
        conv.login()
        assert not conv.session.tls


def test_login_with_non_utf8_password_fails_cleanly(conv, caplog):
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        lines = conv.send(b"a1 LOGIN alice {2+}\r\n\xff\xfe\r\n")
        assert lines == [b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"]
        latin1 = "pässwort".encode("latin-1")
        conv.send(b"a2 LOGIN {6+}\r\nb\xf6b x\\ {%d+}\r\n%s\r\n" % (len(latin1), latin1))
    # The log names the user (the bytes that are not UTF-8 escaped, as control characters are),
    # and the line is one fail2ban counts: a password that cannot be right.
    assert _auth_lines(caplog) == [
        "rhost=[192.0.2.1]:{port} user=alice LOGIN rejected: invalid UTF-8",
        "rhost=[192.0.2.1]:{port} user=b\\xf6b\\x20x\\\\ LOGIN rejected: invalid UTF-8",
    ]
    assert conv.session.password_failures == 2


# -- AUTHENTICATE PLAIN ------------------------------------------------------------------------------


def test_authenticate_plain_with_initial_response(conv):
    conv.script(f"""
        C: a1 AUTHENTICATE PLAIN {PLAIN_ALICE}
        S: a1 OK [CAPABILITY {{*}}] Logged in
    """)
    assert conv.session.user == "alice"


def test_authenticate_plain_with_continuation(conv):
    conv.script(f"""
        C: a1 AUTHENTICATE PLAIN
        S: +{{sp}}
        C: {PLAIN_ALICE_AS_ALICE}
        S: a1 OK [CAPABILITY {{*}}] Logged in
    """)
    assert conv.session.user == "alice"


def test_authenticate_plain_wrong_password(conv):
    conv.script(f"""
        C: a1 AUTHENTICATE PLAIN {PLAIN_ALICE_WRONG}
        S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
    """)
    assert conv.session.auth_failures == 1


def test_authenticate_cancelled(conv):
    conv.script("""
        C: a1 AUTHENTICATE PLAIN
        S: +{sp}
        C: *
        S: a1 BAD Authentication cancelled
        C: a2 NOOP
        S: a2 OK NOOP completed
    """)
    assert conv.session.state is State.NOT_AUTHENTICATED


def test_authenticate_bad_base64(conv):
    conv.script("""
        C: a1 AUTHENTICATE PLAIN
        S: +{sp}
        C: not*base64!
        S: a1 BAD [CLIENTBUG] Invalid base64 data
    """)
    assert conv.send(b"a2 AUTHENTICATE PLAIN =x=\r\n")[0].startswith(b"a2 BAD ")


def test_authenticate_plain_malformed_message_fails(conv):
    conv.script(f"""
        C: a1 AUTHENTICATE PLAIN {b64(b"alice-secret")}
        S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
        C: a2 AUTHENTICATE PLAIN =
        S: a2 NO [AUTHENTICATIONFAILED] Authentication failed
    """)


def test_authenticate_plain_non_utf8_authzid_is_logged_with_the_user(conv, caplog):
    message = b64(b"sh\xe4red\0alice\0secret")
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        conv.script(f"""
            C: a1 AUTHENTICATE PLAIN {message}
            S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
        """)
    assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=alice!sh\\xe4red PLAIN rejected: invalid UTF-8"]


def test_authenticate_plain_impersonation_needs_ownership(conv, caplog):
    message, wrong = b64(b"bob\0alice\0secret"), b64(b"bob\0alice\0wrong")
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        conv.script(f"""
            C: a1 AUTHENTICATE PLAIN {message}
            S: a1 NO [AUTHORIZATIONFAILED] Not authorized to access that mailbox
            C: a0 AUTHENTICATE PLAIN {wrong}
            S: a0 NO [AUTHENTICATIONFAILED] Authentication failed
        """)
    # Logged as actor!mailbox, the form LOGIN uses for the same request (gximap(7)).
    assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=alice!bob PLAIN refused: no store ownership",
                                   "rhost=[192.0.2.1]:{port} user=alice!bob PLAIN rejected: bad password"]
    conv.store.grant_owner("bob", "alice")
    conv.script(f"""
        C: a2 AUTHENTICATE PLAIN {message}
        S: a2 OK [CAPABILITY {{*}}] Logged in
    """)
    assert conv.session.user == "bob" and conv.session.actor == "alice"


def test_login_impersonation_with_bang(conv):
    conv.store.grant_owner("bob", "alice")
    conv.command("LOGIN alice!bob secret")
    assert conv.session.user == "bob" and conv.session.actor == "alice"


def test_authzid_equal_to_authcid_is_plain_login(conv):
    conv.command(f"AUTHENTICATE PLAIN {PLAIN_ALICE_AS_ALICE}")
    assert conv.session.user == "alice" and conv.session.actor is None


# -- AUTHENTICATE LOGIN and others --------------------------------------------------------------------


def test_authenticate_login_is_off_by_default(conv):
    conv.script("""
        C: a1 AUTHENTICATE LOGIN
        S: a1 NO [CANNOT] Unsupported authentication mechanism
    """)


def test_authenticate_login_when_enabled(tmp_path):
    with Conversation(tmp_path, sasl_login=True) as conv:
        conv.script(f"""
            S: * OK [CAPABILITY {{*}} AUTH=PLAIN AUTH=LOGIN] {{*}}
            C: a1 AUTHENTICATE LOGIN
            S: + VXNlcm5hbWU6
            C: {b64(b"alice")}
            S: + UGFzc3dvcmQ6
            C: {b64(b"secret")}
            S: a1 OK [CAPABILITY {{*}}] Logged in
        """)


def test_authenticate_login_with_initial_response(tmp_path):
    with Conversation(tmp_path, sasl_login=True) as conv:
        conv.script(f"""
            C: a1 AUTHENTICATE LOGIN {b64(b"alice")}
            S: + UGFzc3dvcmQ6
            C: {b64(b"wrong")}
            S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
        """)


def test_unknown_mechanism_is_refused_with_no(conv):
    conv.script("""
        C: a1 AUTHENTICATE CRAM-MD5
        S: a1 NO [CANNOT] Unsupported authentication mechanism
    """)
    assert conv.session.auth_failures == 0


def test_sasl_responses_are_never_traced(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bool]] = []
    from gximap import log as gxlog

    monkeypatch.setattr(gxlog, "io_trace", lambda _id, direction, data, sensitive=False:
                        seen.append((bytes(data), sensitive)) if direction == "C" else None)
    conv.send(b"a1 AUTHENTICATE PLAIN\r\n")
    conv.send(PLAIN_ALICE.encode() + b"\r\n")
    assert seen[0] == (b"a1 AUTHENTICATE PLAIN\r\n", False)
    assert seen[1][1] is True


# -- throttling -----------------------------------------------------------------------------------------


def test_too_many_failures_block_the_user_and_close(tmp_path):
    with Conversation(tmp_path, users=("alice", "bob"), auth_times=3) as conv:
        conv.script("""
            C: a1 LOGIN alice wrong1
            S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
            C: a2 LOGIN alice wrong2
            S: a2 NO [AUTHENTICATIONFAILED] Authentication failed
            C: a3 LOGIN alice wrong3
            S: a3 NO [AUTHENTICATIONFAILED] Authentication failed
            S: * BYE Too many failed logins, closing connection
        """)
        assert conv.closed and conv.actions == [TransportAction.CLOSE]
        assert conv.ctx.auth.user_block_remaining("alice") > 0
        # Even the right password is refused now, on another connection.
        other = conv.second_session()
        other.script("""
            C: b1 LOGIN alice secret
            S: b1 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later
            C: b2 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==
            S: b2 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later
        """)
        assert other.session.state is State.NOT_AUTHENTICATED
        # Other users are not affected.
        other.login("bob")


def test_attempts_refused_without_a_password_check_never_block_the_user(tmp_path):
    # probe54 H1: from an address already blocked, ten LOGINs naming a user, each refused at
    # once, blocked that user for everyone: a stranger's lock-out tool with no guess made.
    with Conversation(tmp_path, users=("alice", "bob"), auth_times=3, ip_times=2) as conv:
        conv.script("""
            C: a1 LOGIN bob wrong1
            S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
            C: a2 LOGIN bob wrong2
            S: a2 NO [AUTHENTICATIONFAILED] Authentication failed
            C: a3 LOGIN alice whatever
            S: a3 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later
            S: * BYE Too many failed logins, closing connection
        """)
        assert conv.closed   # the connection's attempts still end it
        assert conv.ctx.auth.user_block_remaining("alice") == 0
        assert conv.ctx.auth.user_block_remaining("bob") == 0   # two guesses of three
        assert conv.session.password_failures == 2


def test_a_stranger_cannot_lock_out_a_user_whose_password_the_cache_holds(tmp_path, caplog):
    """A stranger's wrong passwords block alice's name. Her clients, logging in with the password
    the credential cache holds (verified before the block), still get in, by LOGIN and by
    AUTHENTICATE; the stranger's next guess is refused as blocked and counts as no guess; bob,
    blocked too but with no password in the cache, is refused even with the right one."""
    with Conversation(tmp_path, users=("alice", "bob"), auth_times=3,
                      auth_cache=CredentialCache(3600, 100)) as conv:
        conv.login("alice")  # alice's phone, before the attack
        stranger = conv.second_session(peer="198.51.100.66")
        for user in ("alice", "bob"):
            stranger.script(f"""
                C: a1 LOGIN {user} wrong1
                S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
                C: a2 LOGIN {user} wrong2
                S: a2 NO [AUTHENTICATIONFAILED] Authentication failed
                C: a3 LOGIN {user} wrong3
                S: a3 NO [AUTHENTICATIONFAILED] Authentication failed
                S: * BYE Too many failed logins, closing connection
            """)
            assert stranger.closed
            stranger = conv.second_session(peer="198.51.100.66")
        assert conv.ctx.auth.user_block_remaining("alice") > 0
        conv.second_session().login("alice")
        conv.second_session().command(f"AUTHENTICATE PLAIN {PLAIN_ALICE}")
        with caplog.at_level(gxlog.NOTICE, logger="gximap.auth"):
            stranger.script("""
                C: b1 LOGIN alice guess
                S: b1 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later
                C: b2 LOGIN bob secret
                S: b2 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later
            """)
        assert stranger.session.password_failures == 0
        assert [record.getMessage().split(" ", 1)[1] for record in caplog.records] == [
            "user=alice LOGIN refused: user blocked", "user=bob LOGIN refused: user blocked"]
        assert conv.ctx.auth.user_block_remaining("alice") > 0


def test_blocking_expires(tmp_path):
    with Conversation(tmp_path, auth_times=1, block_interval=0.0) as conv:
        conv.send(b"a1 LOGIN alice wrong\r\n")
        assert conv.closed
        conv.second_session().login("alice")


# -- STARTTLS ----------------------------------------------------------------------------------------


def test_starttls_then_login(tmp_path):
    with Conversation(tmp_path, tls=False, starttls=True) as conv:
        conv.script("""
            C: a1 STARTTLS
            S: a1 OK Begin TLS negotiation now
            C: a2 LOGIN alice secret
            S: a2 OK [CAPABILITY {*}] Logged in
        """)
        assert conv.actions == [TransportAction.STARTTLS]


def test_starttls_refusals(tmp_path):
    with Conversation(tmp_path, tls=False, starttls=False, insecure_auth=True) as conv:
        conv.script("""
            C: a1 STARTTLS
            S: a1 NO [CANNOT] TLS not available
        """)
    with Conversation(tmp_path / "tls", tls=True, starttls=True) as conv:
        conv.script("""
            C: a1 STARTTLS
            S: a1 BAD [CLIENTBUG] TLS already active
        """)
    with Conversation(tmp_path / "auth", tls=False, starttls=True, insecure_auth=True) as conv:
        conv.login()
        conv.script("""
            C: a1 STARTTLS
            S: a1 BAD [CLIENTBUG] Already authenticated
        """)
        assert conv.actions == []


# -- sessions per account and address (imap_max_conn_per_user_ip) ---------------------------------------

LIMIT_REFUSAL = "NO [LIMIT] Too many sessions of this account from your address (at most {limit})"


def test_an_account_holds_ten_sessions_from_one_address(conv: Conversation, caplog: pytest.LogCaptureFixture) -> None:
    """Dovecot's mail_max_userip_connections: one account cannot take every context. The 11th
    login of alice from one address is refused despite the right password; the client is told so
    with [LIMIT], and the log says "refused" (fail2ban counts no right password)."""
    tenth = [conv.second_session() for _ in range(9)]
    for session in [conv, *tenth]:
        session.login()
    eleventh = conv.second_session()
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        eleventh.script(f"""
            C: a1 LOGIN alice secret
            S: a1 {LIMIT_REFUSAL.format(limit=10)}
            C: a2 AUTHENTICATE PLAIN {PLAIN_ALICE}
            S: a2 {LIMIT_REFUSAL.format(limit=10)}
        """)
    assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=alice LOGIN refused: too many sessions "
                                   "from this address"] + ["rhost=[192.0.2.1]:{port} user=alice PLAIN refused: "
                                                           "too many sessions from this address"]
    assert eleventh.session.state is State.NOT_AUTHENTICATED and eleventh.session.user is None
    assert eleventh.session.password_failures == 0  # no guess: never blocks alice
    eleventh.login("bob")  # another account from the same address has its own count
    conv.second_session(peer="192.0.2.2").login()  # alice from another address too
    tenth[0].close()  # a session that ends frees its place
    again = conv.second_session()
    again.login()
    assert not conv.second_session().send(b"a1 LOGIN alice secret\r\n")[-1].startswith(b"a1 OK")
    tenth[1].command("UNAUTHENTICATE")  # so does one that logs out of the account
    conv.second_session().login()


def test_impersonation_counts_against_the_mailbox_account(tmp_path: Path) -> None:
    with Conversation(tmp_path, users=("alice", "bob"), max_conn_per_user_ip=2) as conv:
        conv.store.grant_owner("bob", "alice")
        conv.login("bob")
        conv.second_session().login("alice!bob")  # alice acting as bob: bob's second session
        refused = conv.second_session()
        as_bob = b64(b"bob\0alice\0secret")
        assert refused.send(f"a1 AUTHENTICATE PLAIN {as_bob}\r\n".encode()) == [
            f"a1 {LIMIT_REFUSAL.format(limit=2)}".encode()]
        refused.login("alice")  # alice's own account is not full


def test_no_limit_on_sessions_per_account_with_zero(tmp_path: Path) -> None:
    with Conversation(tmp_path, max_conn_per_user_ip=0) as conv:
        for _ in range(12):
            conv.second_session().login()


def test_sessions_per_account_are_counted_across_processes(tmp_path: Path) -> None:
    """With imap_process_num > 1 each process tells the others what it holds (the sibling
    address ledger), so the limit holds for the whole service."""
    parent, (first, second) = sibling_channels(2)
    conversations: list[Conversation] = []
    try:
        with Conversation(tmp_path, users=("alice", "bob")) as conv:
            settings = dataclasses.replace(conv.ctx.settings, max_conn_per_user_ip=3)
            one, two = (ServerContext(settings, conv.store, conv.ctx.auth, conv.ctx.codes,
                                      user_sessions=UserSessions(channel)) for channel in (first, second))

            def session(context: ServerContext) -> Conversation:
                conversations.append(Conversation(users=(), context=context))
                return conversations[-1]

            session(one).login()
            session(one).login()
            held = session(two)
            held.login()
            assert wait_until(lambda: one.user_sessions.count("alice", "192.0.2.1") == 3)
            assert session(one).send(b"a1 LOGIN alice secret\r\n") == [f"a1 {LIMIT_REFUSAL.format(limit=3)}".encode()]
            held.close()  # the slot it freed in process 2 is free in process 1 too
            assert wait_until(lambda: one.user_sessions.count("alice", "192.0.2.1") == 2)
            session(one).login()
    finally:
        for conversation in conversations:
            conversation.close()
        first.close()
        second.close()
        parent.close_sockets()


def test_sessions_per_account_limit_is_not_reloaded(tmp_path: Path) -> None:
    """As the pool's other limits (context_num, imap_max_conn_per_ip): a SIGHUP names it as taking
    effect after a restart, and the running value stays."""
    running = gxconfig.load_config([], required=False)
    changed = tmp_path / "imap.cfg"
    changed.write_text("imap_max_conn_per_user_ip = 50\n")
    cfg, needs_restart = running.reloaded(gxconfig.load_config([changed], required=True))
    assert cfg.imap_max_conn_per_user_ip == 10 and "imap_max_conn_per_user_ip" in needs_restart
    assert settings_from_config(cfg).max_conn_per_user_ip == 10


# -- UNAUTHENTICATE ---------------------------------------------------------------------------------------


def test_unauthenticate_returns_to_the_initial_state(conv):
    conv.login()
    conv.command("ENABLE IMAP4rev2")
    conv.select()
    conv.script("""
        C: a1 UNAUTHENTICATE
        S: a1 OK UNAUTHENTICATE completed
        C: a2 SELECT INBOX
        S: a2 BAD [CLIENTBUG] Log in first
        C: a3 CAPABILITY
        S: * CAPABILITY IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ENABLE AUTH=PLAIN
        S: a3 OK CAPABILITY completed
        C: a4 LOGIN bob secret
        S: a4 OK [CAPABILITY {*}] Logged in
    """)
    session = conv.session
    assert session.user == "bob" and session.selected is None and session.enabled == set()


def test_unauthenticate_does_not_expunge(conv):
    conv.login()
    conv.add_message(flags=["\\Deleted"])
    conv.select()
    conv.command("UNAUTHENTICATE")
    assert conv.folder("INBOX").messages == 1


def test_unauthenticate_needs_authentication(conv):
    assert conv.send(b"a1 UNAUTHENTICATE\r\n") == [b"a1 BAD [CLIENTBUG] Log in first"]


# -- a passwd-file or map file that cannot be read ------------------------------------------------

UNAVAILABLE = "NO [UNAVAILABLE] Authentication service temporarily unavailable"


@contextlib.contextmanager
def _passwd_file_server(tmp_path: Path, **auth_options: Any) -> Iterator[tuple[Conversation, Path]]:
    """A server checking logins against a passwd-file (alice: {SCRAM-SHA-256} of "secret", which
    PLAIN is checked against too) and blocking early: at 2 failures a user, at 3 an address."""
    from conversation import DATA_DIR, InlineExecutor, response_codes

    from gximap.auth.service import AuthService
    from gximap.session.context import Settings
    from midb.authdb import PasswdFileAuth
    from midb.scram import derive
    from midb.store import Store

    path = tmp_path / "users"
    path.write_text("alice:{SCRAM-SHA-256}" + derive("secret", iterations=4096).text() + "\n")
    store = Store(tmp_path / "midb", fsync=False, data_path=[str(DATA_DIR)])
    try:
        auth = AuthService(store, PasswdFileAuth(path, store=store), auth_times=2, ip_times=3, auto_create=True,
                           executor=InlineExecutor(), **auth_options)
        context = ServerContext(Settings(sasl_scram=True), store, auth, response_codes())
        with Conversation(users=(), context=context) as conv:
            yield conv, path
    finally:
        store.close()


def _make_unreadable(path: Path) -> None:
    """A directory in the file's place: open() and read() fail (EISDIR) even for root, whom a
    chmod 000 would not stop."""
    path.unlink()
    path.mkdir()


def _scram_first(conv: Conversation, tag: str) -> list[bytes]:
    from scram_client import ScramClient

    return conv.send(f"{tag} AUTHENTICATE SCRAM-SHA-256 {b64(ScramClient('alice', 'secret').first())}\r\n".encode())


def test_unreadable_passwd_file_answers_unavailable_and_counts_no_failure(tmp_path, caplog):
    """LOGIN, PLAIN and SCRAM get NO [UNAVAILABLE] (RFC 5530: the subsystem is down, try again
    later), not [AUTHENTICATIONFAILED]; no failure is counted (no BYE, no user or address
    block), and the log has an "unavailable" line per login, none that fail2ban counts."""
    with _passwd_file_server(tmp_path) as (conv, path):
        conv.login()  # read once: the entries are not served once the file cannot be read
        conv.command("UNAUTHENTICATE")
        _make_unreadable(path)
        with caplog.at_level(logging.INFO, logger="gximap.auth"):
            for number in (1, 2):  # twice each: past imap_auth_times and imap_auth_ip_times
                assert conv.send(f"a{number} LOGIN alice secret\r\n".encode()) == [f"a{number} {UNAVAILABLE}".encode()]
                assert conv.send(f"b{number} AUTHENTICATE PLAIN {PLAIN_ALICE}\r\n".encode()) == \
                    [f"b{number} {UNAVAILABLE}".encode()]
                assert _scram_first(conv, f"c{number}") == [f"c{number} {UNAVAILABLE}".encode()]
            assert conv.send(b"d1 LOGIN nobody secret\r\n") == [f"d1 {UNAVAILABLE}".encode()]  # no "unknown user"
        assert not conv.closed and conv.session.state is State.NOT_AUTHENTICATED
        assert conv.session.auth_failures == conv.session.password_failures == 0
        assert conv.ctx.auth.user_block_remaining("alice") == 0
        unavailable = f"unavailable: passwd-file {path} cannot be read"
        assert _auth_lines(caplog) == [
            f"rhost=[192.0.2.1]:{{port}} user=alice {mech} {unavailable}"
            for mech in ("LOGIN", "PLAIN", "SCRAM-SHA-256") * 2] + [
            f"rhost=[192.0.2.1]:{{port}} user=nobody LOGIN {unavailable}"]
        # The file's error was logged once (midb.filewatch), with its errno; no line per login.
        errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
        assert errors == [f"passwd-file {path} cannot be read: Is a directory (EISDIR); "
                          "lookups in it fail as a temporary error until it can"]
        path.rmdir()
        path.write_text("alice:{PLAIN}secret\n")
        conv.script("""
            C: e1 LOGIN alice secret
            S: e1 OK [CAPABILITY {*}] Logged in
        """)


@pytest.mark.parametrize("cached", [False, True])
def test_a_blocked_user_while_the_passwd_file_cannot_be_read(tmp_path, cached):
    """Without a credential cache a block is told as ever (its refusal reads no file). With one,
    the password the cache holds is not let in on its word, blocked or not: the stamp that says
    it is still current comes from the file, so the login is unavailable."""
    options = {"cache": CredentialCache(300, 100)} if cached else {}
    with _passwd_file_server(tmp_path, **options) as (conv, path):
        conv.login()
        conv.command("UNAUTHENTICATE")
        _make_unreadable(path)
        assert conv.send(b"a1 LOGIN alice secret\r\n") == [f"a1 {UNAVAILABLE}".encode()]
        conv.ctx.auth.block_user("alice", "test")
        assert conv.send(b"a2 LOGIN alice secret\r\n") == (
            [f"a2 {UNAVAILABLE}".encode()] if cached
            else [b"a2 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"])


def test_unreadable_auth_map_file_answers_unavailable(tmp_path, caplog):
    """The same for a name-map ``file`` table: not "unknown user name" for every login."""
    from gximap.auth.maps import FileTable, NameMap

    map_path = tmp_path / "auth_map"
    map_path.write_text("alice@example.org: alice\n")
    with Conversation(tmp_path, users=("alice",), auth_times=1) as conv:
        conv.ctx.auth.auth_map = conv.ctx.auth.storage_map = NameMap(FileTable(map_path))
        conv.script("""
            C: a1 LOGIN alice@example.org secret
            S: a1 OK [CAPABILITY {*}] Logged in
        """)
        conv.command("UNAUTHENTICATE")
        _make_unreadable(map_path)
        with caplog.at_level(logging.INFO, logger="gximap.auth"):
            assert conv.send(b"a2 LOGIN alice@example.org secret\r\n") == [f"a2 {UNAVAILABLE}".encode()]
            assert conv.send(b"a3 LOGIN alice@example.org wrong\r\n") == [f"a3 {UNAVAILABLE}".encode()]
        assert not conv.closed and conv.session.auth_failures == 0
        assert [line for line in _auth_lines(caplog) if " rejected: " in line] == []
        assert f"rhost=[192.0.2.1]:{{port}} user=alice@example.org LOGIN unavailable: map file {map_path} " \
               "cannot be read" in _auth_lines(caplog)
