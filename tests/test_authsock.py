"""gximap.authsock: the Dovecot auth protocol (sans-IO) and the session answering an MTA's AUTH
requests with IMAP's AuthService (accounts, impersonation, throttling); then over the pool."""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from conversation import DATA_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gximap.auth.cache import CredentialCache
from gximap.auth.maps import NameMap
from gximap.auth.service import AuthService
from gximap.authsock.protocol import (
    AuthProtocolError,
    AuthRequest,
    AuthServerProtocol,
    CancelRequest,
    ClientCpid,
    ClientVersion,
    ContinueRequest,
    escape,
    unescape,
)
from gximap.authsock.session import (
    MAX_PENDING,
    PENDING_TIMEOUT,
    AuthSocketContext,
    AuthSocketSession,
    AuthSocketSettings,
)
from gximap.net.handler import ConnectionInfo, TransportAction
from gximap.net.listener import ListenerSpec, bind_listeners
from gximap.net.pool import Server
from midb.errors import StoreBusy
from midb.store import Store

PASSWORD = "secret"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plain(authzid: str, user: str, password: str) -> str:
    """A SASL PLAIN message (RFC 4616), base64."""
    return b64(f"{authzid}\0{user}\0{password}".encode())


USERNAME_PROMPT, PASSWORD_PROMPT = b64(b"Username:"), b64(b"Password:")  # SASL LOGIN's challenges


# -- protocol ---------------------------------------------------------------------------------------


def parse(data: bytes) -> list[object]:
    proto = AuthServerProtocol()
    proto.receive(data)
    events: list[object] = []
    while (event := proto.next_event()) is not None:
        events.append(event)
    return events


def test_handshake_lines() -> None:
    data = AuthServerProtocol.handshake([("PLAIN", ["plaintext"]), ("LOGIN", ["plaintext"])], spid=12, cuid=3,
                                        cookie="ab" * 16)
    assert data == (b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t12\nCUID\t3\n"
                    b"COOKIE\t" + b"ab" * 16 + b"\nDONE\n")


def test_client_commands() -> None:
    events = parse(b"VERSION\t1\t1\nCPID\t4711\n"
                   b"AUTH\t7\tplain\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.1\tsecured\t"
                   b"resp=AGEAYg==\tx=a\x01tb\n"
                   b"CONT\t7\tYWJj\r\nCONT\t8\nCANCEL\t7\nFROBNICATE\tx\n\n")
    assert events[:2] == [ClientVersion(1, 1), ClientCpid("4711")]
    auth = events[2]
    assert isinstance(auth, AuthRequest)
    assert (auth.id, auth.mechanism, auth.service, auth.response) == (7, "PLAIN", "smtp", "AGEAYg==")
    assert auth.flag("secured") and auth.flag("nologin") and not auth.flag("valid-client-cert")
    assert auth.params["rip"] == "192.0.2.1" and auth.params["x"] == "a\tb"
    assert events[3:] == [ContinueRequest(7, "YWJj"), ContinueRequest(8, ""), CancelRequest(7)]


@pytest.mark.parametrize("data", [
    b"AUTH\t1\tPLAIN\tservice=smtp\n",  # before VERSION
    b"VERSION\t1\n",
    b"VERSION\tx\t1\n",
    "VERSION\t\u00b9\t2\n".encode(),  # digits other than ASCII ones: int() would fail or misread
    "VERSION\t1\t0\nAUTH\t\u00b2\tPLAIN\n".encode(),
    "VERSION\t1\t0\nAUTH\t\u0663\tPLAIN\n".encode(),
    b"VERSION\t1\t0\nAUTH\t1\n",
    b"VERSION\t1\t0\nAUTH\tx\tPLAIN\n",
    b"VERSION\t1\t0\nAUTH\t99999999999\tPLAIN\n",
    b"VERSION\t1\t0\nCONT\n",
    b"VERSION\t1\t0\nCANCEL\n",
    b"VERSION\t1\t0\nCPID\n",
    b"VERSION\t1\t0\n\xff\n",
    b"VERSION\t1\t0\n" + b"A" * 20000 + b"\n",
    b"VERSION\t1\t0\n" + b"A" * 20000,
])
def test_protocol_errors(data: bytes) -> None:
    with pytest.raises(AuthProtocolError):
        parse(data)


def test_escaping_round_trip() -> None:
    text = "a\tb\nc\rd\0e\x01f"
    assert unescape(escape(text)) == text
    assert "\t" not in escape(text) and "\n" not in escape(text)
    assert unescape("x\x01ly\x01") == "x\ny"  # \001l is LF too; a trailing \001 is dropped
    assert AuthServerProtocol.fail(3, "temp", reason="a\tb") == b"FAIL\t3\ttemp\treason=a\x01tb\n"
    assert AuthServerProtocol.ok(4, user="alice") == b"OK\t4\tuser=alice\n"


# -- sessions ---------------------------------------------------------------------------------------


class Backend:
    """Accepts PASSWORD for existing names; can be told to fail like a busy store."""

    def __init__(self) -> None:
        self.busy = False
        self.calls = 0

    def authenticate(self, user: str, password: str) -> str | None:
        self.calls += 1
        if self.busy:
            raise StoreBusy("lock timeout")
        return user if password == PASSWORD and user in ("alice", "bob", "shared") else None

    def exists(self, user: str) -> bool:
        return user in ("alice", "bob", "shared")

    def failure_reason(self, user: str) -> str:
        return "bad password" if self.exists(user) else "unknown user"


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "midb", fsync=False, data_path=[str(DATA_DIR)])
    for name in ("alice", "bob", "shared"):
        store.create_account(name)
    store.grant_owner("shared", "alice")
    yield store
    store.close()


def make_ctx(store: Store, *, insecure: bool = True, **auth_kwargs: object) -> AuthSocketContext:
    auth_kwargs.setdefault("auth_times", 3)
    auth_kwargs.setdefault("ip_times", 0)
    auth = AuthService(store, Backend(), **auth_kwargs)  # type: ignore[arg-type]
    return AuthSocketContext(auth, AuthSocketSettings(insecure_auth=insecure))


class Client:
    def __init__(self, ctx: AuthSocketContext, peer: str = "local") -> None:
        conn = ConnectionInfo(peer_host=peer, peer_port=0, local_host="/run/auth", local_port=0, tls=False,
                              starttls_available=False, listener="auth")
        self.session = AuthSocketSession(ctx, conn, lambda: None)
        self.closed = False
        self.session.start()
        self.handshake = self._run()

    def _run(self) -> list[str]:
        out = b""
        for _ in range(1000):
            more = self.session.process(8)
            while (item := self.session.next_output()) is not None:
                if item is TransportAction.CLOSE:
                    self.closed = True
                else:
                    out += bytes(item)  # type: ignore[arg-type]
            if not more:
                break
        return out.decode().split("\n")[:-1]

    def send(self, text: str) -> list[str]:
        self.session.data_received(text.encode())
        return self._run()

    def hello(self) -> Client:
        assert self.send("VERSION\t1\t1\nCPID\t99\n") == []
        return self


def test_handshake_comes_first_and_idle_rules(store: Store) -> None:
    client = Client(make_ctx(store))
    assert client.handshake[0] == "VERSION\t1\t2"
    assert client.handshake[1:3] == ["MECH\tPLAIN\tplaintext", "MECH\tLOGIN\tplaintext"]
    assert [line.split("\t")[0] for line in client.handshake[3:]] == ["SPID", "CUID", "COOKIE", "DONE"]
    cookie = client.handshake[5].split("\t")[1]
    assert len(cookie) == 32 and int(cookie, 16) >= 0
    assert client.session.idle_timeout() == 30.0
    client.hello()
    assert client.session.idle_timeout() == 0.0


def test_plain_with_and_without_initial_response(store: Store) -> None:
    client = Client(make_ctx(store)).hello()
    assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={plain('', 'alice', 'secret')}\n") == \
        ["OK\t1\tuser=alice"]
    assert client.send(f"AUTH\t2\tPLAIN\tservice=smtp\tresp={plain('', 'Alice', 'wrong')}\n") == ["FAIL\t2"]
    assert client.send("AUTH\t3\tPLAIN\tservice=smtp\n") == ["CONT\t3\t"]
    assert client.send(f"CONT\t3\t{plain('alice', 'ALICE', 'secret')}\n") == ["OK\t3\tuser=alice"]
    # "resp=" is no initial response (Exim sends it so); "resp==" is an empty one, no PLAIN message.
    assert client.send("AUTH\t4\tPLAIN\tservice=smtp\tresp=\n") == ["CONT\t4\t"]
    assert client.send("AUTH\t6\tPLAIN\tservice=smtp\tresp==\n") == ["FAIL\t6"]
    assert client.send("AUTH\t5\tPLAIN\tservice=smtp\tresp=!!!!\n") == \
        ["FAIL\t5\treason=Invalid base64 data in initial response"]


def test_login_mechanism_both_ways(store: Store) -> None:
    client = Client(make_ctx(store)).hello()
    assert client.send("AUTH\t1\tLOGIN\tservice=smtp\n") == ["CONT\t1\tVXNlcm5hbWU6"]
    assert client.send(f"CONT\t1\t{b64(b'bob')}\n") == ["CONT\t1\tUGFzc3dvcmQ6"]
    assert client.send(f"CONT\t1\t{b64(b'secret')}\n") == ["OK\t1\tuser=bob"]
    assert client.send(f"AUTH\t2\tLOGIN\tservice=smtp\tresp={b64(b'bob')}\n") == ["CONT\t2\tUGFzc3dvcmQ6"]
    assert client.send("CONT\t2\t%%%\n") == ["FAIL\t2\treason=Invalid base64 data in continued response"]


def test_abandoned_exchanges_give_way_to_new_ones(store: Store) -> None:
    """Postfix never sends CANCEL: an SMTP client that aborts AUTH LOGIN leaves its request
    pending on the smtpd's long-lived auth connection. Beyond MAX_PENDING the oldest gives way."""
    client = Client(make_ctx(store, auth_times=1000)).hello()
    for request_id in range(1, MAX_PENDING + 1):
        assert client.send(f"AUTH\t{request_id}\tLOGIN\tservice=smtp\tnologin\trip=198.51.100.{request_id}\n") == \
            [f"CONT\t{request_id}\t{USERNAME_PROMPT}"]
    later = MAX_PENDING + 1
    assert client.send(f"AUTH\t{later}\tLOGIN\tservice=smtp\tnologin\trip=203.0.113.5\n") == \
        [f"CONT\t{later}\t{USERNAME_PROMPT}"]
    assert client.send(f"CONT\t{later}\t{b64(b'alice')}\n") == [f"CONT\t{later}\t{PASSWORD_PROMPT}"]
    assert client.send(f"CONT\t{later}\t{b64(b'secret')}\n") == [f"OK\t{later}\tuser=alice"]
    assert client.send(f"CONT\t1\t{b64(b'bob')}\n") == ["FAIL\t1\treason=Authentication request timed out"]
    assert client.send(f"CONT\t2\t{b64(b'bob')}\n") == [f"CONT\t2\t{PASSWORD_PROMPT}"]  # only the oldest went
    assert not client.closed


def test_unfinished_requests_expire(store: Store) -> None:
    """PENDING_TIMEOUT after its AUTH (not after its last step) a request is gone."""
    ctx = make_ctx(store)
    now = [1000.0]
    ctx.clock = lambda: now[0]
    client = Client(ctx).hello()
    assert client.send("AUTH\t1\tLOGIN\tservice=smtp\n") == [f"CONT\t1\t{USERNAME_PROMPT}"]
    assert client.send("AUTH\t2\tPLAIN\tservice=smtp\n") == ["CONT\t2\t"]
    now[0] += PENDING_TIMEOUT - 1
    assert client.send(f"CONT\t1\t{b64(b'bob')}\n") == [f"CONT\t1\t{PASSWORD_PROMPT}"]
    now[0] += 1
    assert client.send(f"CONT\t1\t{b64(b'secret')}\n") == ["FAIL\t1\treason=Authentication request timed out"]
    assert client.send(f"CONT\t2\t{plain('', 'bob', 'secret')}\n") == \
        ["FAIL\t2\treason=Authentication request timed out"]
    assert client.send("AUTH\t3\tPLAIN\tservice=smtp\n") == ["CONT\t3\t"]
    assert client.send(f"CONT\t3\t{plain('', 'bob', 'secret')}\n") == ["OK\t3\tuser=bob"]
    # The id of an expired request is free again (no duplicate id that closes the connection).
    assert client.send("AUTH\t4\tPLAIN\tservice=smtp\n") == ["CONT\t4\t"]
    now[0] += PENDING_TIMEOUT
    assert client.send("AUTH\t4\tPLAIN\tservice=smtp\n") == ["CONT\t4\t"]
    assert client.send(f"CONT\t4\t{plain('', 'bob', 'secret')}\n") == ["OK\t4\tuser=bob"]
    assert not client.closed


def test_exim_empty_resp_means_no_initial_response(store: Store) -> None:
    """Exim's dovecot authenticator sends "resp=%s" always, empty when the SMTP client gave no
    initial response; Dovecot then prompts as if resp= were absent."""
    client = Client(make_ctx(store)).hello()
    assert client.send("AUTH\t1\tLOGIN\tservice=smtp\trip=192.0.2.7\tnologin\tresp=\n") == ["CONT\t1\tVXNlcm5hbWU6"]
    assert client.send(f"CONT\t1\t{b64(b'alice')}\n") == ["CONT\t1\tUGFzc3dvcmQ6"]
    assert client.send(f"CONT\t1\t{b64(b'secret')}\n") == ["OK\t1\tuser=alice"]
    assert client.send("AUTH\t2\tPLAIN\tservice=smtp\trip=192.0.2.7\tnologin\tresp=\n") == ["CONT\t2\t"]
    assert client.send(f"CONT\t2\t{plain('', 'alice', 'secret')}\n") == ["OK\t2\tuser=alice"]


def test_impersonation_needs_store_ownership(store: Store) -> None:
    client = Client(make_ctx(store)).hello()
    assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={plain('shared', 'alice', 'secret')}\n") == \
        ["OK\t1\tuser=shared"]
    # bob's password is right, but he may not act as shared: said as Dovecot's auth service does.
    assert client.send(f"AUTH\t2\tPLAIN\tservice=smtp\tresp={plain('shared', 'bob', 'secret')}\n") == [
        "FAIL\t2\treason=Not authorized to act as that user\tcode=authz_fail"]
    assert client.send(f"AUTH\t3\tPLAIN\tservice=smtp\tresp={plain('', 'alice!shared', 'secret')}\n") == \
        ["OK\t3\tuser=shared"]


def test_a_right_password_without_a_mailbox_says_so_and_counts_nothing(store: Store) -> None:
    ctx = make_ctx(store, auth_times=2, ip_times=2, storage_map=NameMap.from_directives("static bob:bob", "auto"))
    client = Client(ctx).hello()
    for request_id in (1, 2, 3):
        assert client.send(f"AUTH\t{request_id}\tPLAIN\tservice=smtp\trip=192.0.2.7\t"
                           f"resp={plain('', 'alice', 'secret')}\n") == \
            [f"FAIL\t{request_id}\treason=No mailbox for this account"]
    assert client.send(f"AUTH\t4\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={plain('', 'bob', 'secret')}\n") == \
        ["OK\t4\tuser=bob"]  # neither the address nor the name was blocked
    assert ctx.auth.user_block_remaining("alice") == 0


def test_the_log_names_the_user_of_undecodable_and_impersonating_requests(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Bytes that are not UTF-8 fail the request; the log still names the user (those bytes
    escaped), and an authorization identity is logged as authcid!authzid, like actor!mailbox."""
    client = Client(make_ctx(store, auth_times=100)).hello()
    latin1_password, latin1_authzid = b64(b"\0alice\0p\xe4ss"), b64(b"sh\xe4red\0alice\0secret")
    latin1_user = b64(b"b\xf6b")
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={latin1_password}\n") == ["FAIL\t1"]
        assert client.send(f"AUTH\t2\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={latin1_authzid}\n") == ["FAIL\t2"]
        assert client.send(f"AUTH\t3\tLOGIN\tservice=smtp\trip=192.0.2.7\tresp={latin1_user}\n") == \
            [f"CONT\t3\t{PASSWORD_PROMPT}"]
        assert client.send(f"CONT\t3\t{b64(b'secret')}\n") == ["FAIL\t3"]
        assert client.send(f"AUTH\t4\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={plain('alice', 'bob', 'nope')}\n") == \
            ["FAIL\t4"]
    assert [record.getMessage() for record in caplog.records if record.name == "gximap.auth"] == [
        "rhost=[192.0.2.7]:0 user=alice SMTP/PLAIN rejected: invalid UTF-8",
        "rhost=[192.0.2.7]:0 user=alice!sh\\xe4red SMTP/PLAIN rejected: invalid UTF-8",
        "rhost=[192.0.2.7]:0 user=b\\xf6b SMTP/LOGIN rejected: invalid UTF-8",
        "rhost=[192.0.2.7]:0 user=bob!alice SMTP/PLAIN rejected: bad password",
    ]


def test_refusals_that_keep_the_connection(store: Store) -> None:
    client = Client(make_ctx(store)).hello()
    assert client.send("AUTH\t1\tCRAM-MD5\tservice=smtp\n") == ["FAIL\t1\treason=Unsupported authentication mechanism"]
    assert client.send(f"AUTH\t2\tPLAIN\tresp={plain('', 'alice', 'secret')}\n") == ["FAIL\t2\treason=Missing service parameter"]
    assert client.send("AUTH\t3\tPLAIN\tservice=smtp\nCANCEL\t3\n") == ["CONT\t3\t"]
    assert not client.closed


def test_cont_for_a_request_not_pending_fails_and_keeps_the_connection(store: Store) -> None:
    """As Dovecot does: a CONT may arrive after its request finished, was cancelled or expired."""
    client = Client(make_ctx(store)).hello()
    assert client.send("CONT\t9\tYQ==\n") == ["FAIL\t9\treason=Authentication request timed out"]
    assert client.send("AUTH\t1\tPLAIN\tservice=smtp\nCANCEL\t1\nCONT\t1\tYQ==\n") == \
        ["CONT\t1\t", "FAIL\t1\treason=Authentication request timed out"]
    assert client.send(f"AUTH\t2\tPLAIN\tservice=smtp\tresp={plain('', 'alice', 'secret')}\n") == \
        ["OK\t2\tuser=alice"]
    assert not client.closed


@pytest.mark.parametrize("text", [
    "AUTH\t1\tPLAIN\tservice=smtp\nAUTH\t1\tPLAIN\tservice=smtp\n",  # duplicate id
    "VERSION\t2\t0\n",
    "X\n" * 40,
])
def test_protocol_misuse_drops_the_connection(store: Store, text: str, caplog: pytest.LogCaptureFixture) -> None:
    client = Client(make_ctx(store)).hello()
    with caplog.at_level(logging.WARNING, logger="gximap.auth"):
        client.send(text)
    assert client.closed and "closed:" in caplog.text
    assert client.send("AUTH\t5\tPLAIN\tservice=smtp\n") == []  # nothing more is read


def test_plaintext_policy_without_insecure_auth(store: Store) -> None:
    client = Client(make_ctx(store, insecure=False)).hello()
    resp = b64(b"\0alice\0secret")
    assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.7\tlip=192.0.2.1\tresp={resp}\n") == \
        ["FAIL\t1\treason=Plaintext authentication disallowed on non-secure (SSL/TLS) connections."]
    assert client.send(f"AUTH\t2\tPLAIN\tservice=smtp\trip=192.0.2.7\tsecured\tresp={resp}\n") == ["OK\t2\tuser=alice"]
    assert client.send(f"AUTH\t3\tPLAIN\tservice=smtp\trip=::1\tresp={resp}\n") == ["OK\t3\tuser=alice"]
    assert client.send(f"AUTH\t4\tPLAIN\tservice=smtp\trip=192.0.2.1\tlip=192.0.2.1\tresp={resp}\n") == \
        ["OK\t4\tuser=alice"]
    assert client.send(f"AUTH\t5\tPLAIN\tservice=smtp\tresp={resp}\n")[0].startswith("FAIL\t5\treason=Plaintext")


def test_failures_per_address_block_the_user(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_ctx(store, auth_times=3)
    bad, good = b64(b"\0alice\0nope"), b64(b"\0alice\0secret")
    client = Client(ctx).hello()
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        for request_id in (1, 2):
            assert client.send(f"AUTH\t{request_id}\tPLAIN\tservice=smtp\trip=198.51.100.4\tresp={bad}\n") == \
                [f"FAIL\t{request_id}"]
        # Other addresses have their own count ...
        other = Client(ctx).hello()
        assert other.send(f"AUTH\t1\tPLAIN\tservice=smtp\trip=203.0.113.9\tresp={bad}\n") == ["FAIL\t1"]
        # ... the third failure from the same address, on any connection, blocks the user.
        assert other.send(f"AUTH\t2\tPLAIN\tservice=smtp\trip=198.51.100.4\tresp={bad}\n") == ["FAIL\t2"]
        assert client.send(f"AUTH\t3\tPLAIN\tservice=smtp\trip=203.0.113.50\tresp={good}\n") == ["FAIL\t3"]
    assert "rhost=[198.51.100.4]:0 user=alice SMTP/PLAIN rejected: bad password" in caplog.text
    assert "rhost=[198.51.100.4]:0 user=alice blocked for 60s: too many failed logins" in caplog.text
    assert "rhost=[203.0.113.50]:0 user=alice SMTP/PLAIN refused: user blocked" in caplog.text


class StampedBackend(Backend):
    """Backend with credential stamps, so that AuthService gives it the credential cache."""

    def credential_stamp(self, user: str) -> str | None:
        return "v1" if self.exists(user) else None


def test_a_stranger_cannot_lock_out_a_user_whose_password_the_cache_holds(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """SMTP AUTH as IMAP: a stranger's failures block alice, whose MTA logins with the password the
    credential cache holds go on succeeding, unhashed; the stranger's guesses are refused as blocked
    and count for nothing; bob, blocked with no password cached, is refused with the right one."""
    backend = StampedBackend()
    auth = AuthService(store, backend, auth_times=3, ip_times=0, cache=CredentialCache(3600, 100))
    ctx = AuthSocketContext(auth, AuthSocketSettings(insecure_auth=True))
    client = Client(ctx).hello()
    alice = f"AUTH\t{{}}\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={plain('', 'alice', 'secret')}\n"
    assert client.send(alice.format(1)) == ["OK\t1\tuser=alice"]
    for user in ("alice", "bob"):
        for request_id in (1, 2, 3):
            assert client.send(f"AUTH\t{request_id}\tPLAIN\tservice=smtp\trip=198.51.100.4\t"
                               f"resp={plain('', user, 'nope')}\n") == [f"FAIL\t{request_id}"]
    assert backend.calls == 7 and auth.user_block_remaining("alice") > 0
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert client.send(alice.format(2)) == ["OK\t2\tuser=alice"]
        assert client.send(f"AUTH\t3\tPLAIN\tservice=smtp\trip=198.51.100.4\t"
                           f"resp={plain('', 'alice', 'guess')}\n") == ["FAIL\t3"]
        assert client.send(f"AUTH\t4\tPLAIN\tservice=smtp\trip=192.0.2.7\t"
                           f"resp={plain('', 'bob', 'secret')}\n") == ["FAIL\t4"]
    assert backend.calls == 7  # none of them was hashed
    assert [record.getMessage() for record in caplog.records if record.name == "gximap.auth"] == [
        "rhost=[192.0.2.7]:0 user=alice SMTP/PLAIN ok (user blocked; password matched the cache)",
        "rhost=[198.51.100.4]:0 user=alice SMTP/PLAIN refused: user blocked",
        "rhost=[192.0.2.7]:0 user=bob SMTP/PLAIN refused: user blocked"]
    assert not ctx._failures  # the refused guess began no new count toward a block


def test_success_resets_the_count(store: Store) -> None:
    ctx = make_ctx(store, auth_times=2)
    client = Client(ctx).hello()
    bad, good = b64(b"\0bob\0nope"), b64(b"\0bob\0secret")
    for request_id in range(1, 6):
        assert client.send(f"AUTH\t{request_id}0\tPLAIN\tservice=smtp\trip=192.0.2.8\tresp={bad}\n") == \
            [f"FAIL\t{request_id}0"]
        assert client.send(f"AUTH\t{request_id}1\tPLAIN\tservice=smtp\trip=192.0.2.8\tresp={good}\n") == \
            [f"OK\t{request_id}1\tuser=bob"]


def test_per_address_limit_uses_rip(store: Store) -> None:
    ctx = make_ctx(store, auth_times=100, ip_times=2)
    client = Client(ctx).hello()
    bad, good = b64(b"\0alice\0nope"), b64(b"\0alice\0secret")
    for request_id in (1, 2):
        client.send(f"AUTH\t{request_id}\tPLAIN\tservice=smtp\trip=192.0.2.99\tresp={bad}\n")
    assert client.send(f"AUTH\t3\tPLAIN\tservice=smtp\trip=192.0.2.99\tresp={good}\n") == ["FAIL\t3"]
    assert client.send(f"AUTH\t4\tPLAIN\tservice=smtp\trip=192.0.2.100\tresp={good}\n") == ["OK\t4\tuser=alice"]


def test_store_trouble_is_a_temporary_failure(store: Store) -> None:
    ctx = make_ctx(store)
    ctx.auth.backend.busy = True
    client = Client(ctx).hello()
    assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={plain('', 'alice', 'secret')}\n") == \
        ["FAIL\t1\ttemp\treason=Temporary authentication failure\tcode=temp_fail"]


# -- over the pool ------------------------------------------------------------------------------


def _read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    deadline = time.monotonic() + 5
    while marker not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_postfix_style_client_over_unix_and_tcp(store: Store, tmp_path: Path) -> None:
    path = str(tmp_path / "auth-client")
    listeners = bind_listeners([ListenerSpec("", 0, False, "auth", path=path, mode=0o600),
                                ListenerSpec("127.0.0.1", 0, False, "auth")])
    ctx = make_ctx(store)
    server = Server(listeners, lambda conn, waker: AuthSocketSession(ctx, conn, waker), context_num=4,
                    thread_init_num=1, thread_charge_num=2, conn_timeout=5.0, ssl_context=None, busy_response=b"")
    server.start()
    try:
        targets = [(socket.AF_UNIX, path), (socket.AF_INET, ("127.0.0.1", listeners[1].port))]
        threads = []
        errors: list[BaseException] = []

        def talk(family: socket.AddressFamily, address: str | tuple[str, int], request_id: int) -> None:
            try:
                with socket.socket(family, socket.SOCK_STREAM) as sock:
                    sock.settimeout(5)
                    sock.connect(address)
                    # Postfix sends its half of the handshake before reading the server's.
                    sock.sendall(b"VERSION\t1\t0\nCPID\t4242\n")
                    assert b"\nDONE\n" in _read_until(sock, b"\nDONE\n")
                    sock.sendall(f"AUTH\t{request_id}\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\t"
                                 f"rip=127.0.0.1\tresp={plain('', 'alice', 'secret')}\n".encode())
                    assert _read_until(sock, b"\n") == f"OK\t{request_id}\tuser=alice\n".encode()
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        for index, (family, address) in enumerate(targets * 2):
            thread = threading.Thread(target=talk, args=(family, address, index + 1))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(10)
        assert not errors, errors
    finally:
        server.stop(grace=1.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"VERSION\t1\t1\n", b"CPID\t1\n", b"AUTH\t1\tPLAIN\tservice=smtp\n", b"CONT\t1\tAA==\n",
                     b"AUTH\t2\tLOGIN\tservice=imap\tresp=YQ==\n", b"CANCEL\t2\n", b"\t\t\n", b"\x01\n"])),
    max_size=20))
def test_any_input_gets_replies_or_a_disconnect_never_an_exception(store: Store, chunks: list[bytes]) -> None:
    client = Client(make_ctx(store))
    for chunk in chunks:
        client.session.data_received(chunk)
        client._run()
        if client.closed:
            break


def _first_bytes(family: socket.AddressFamily, address: str | tuple[str, int], until: bytes = b"\nDONE\n") -> bytes:
    """What the server sends a new connection until ``until`` (the auth handshake's DONE), or
    until it closes it."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(address)
        try:
            return _read_until(sock, until)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize(("service", "until", "hello"), [
    ("auth", b"\nDONE\n", b"VERSION\t1\t"),
    ("lmtp", b"\r\n", b"220 "),
])
def test_tcp_peers_outside_the_allow_list_are_closed_unheard(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture, service: str, until: bytes,
        hello: bytes) -> None:
    """A TCP auth_listen (lmtp_listen) serves only the peers auth_listen_allow
    (lmtp_listen_allow) lists: an allowed auth peer's rip= is believed, so a stranger could
    otherwise guess passwords and throttle others' addresses, and an LMTP peer delivers to any
    account past the MTA's checks. A UNIX socket is left to its file mode. Refusals are logged
    once per burst, and a reload changes the list."""
    from gximap.config import defaults
    from gximap.mta import MtaServices

    listen, allow = f"{service}_listen", f"{service}_listen_allow"
    path = str(tmp_path / service)
    cfg = defaults().replace(**{listen: f"127.0.0.1:0 unix:{path}", allow: "192.0.2.0/24 ::1"},
                             running_identity="", imap_listen="127.0.0.1:0")
    mta = MtaServices(cfg)
    mta.bind()
    listeners = mta.auth_listeners if service == "auth" else mta.lmtp_listeners
    port = next(listener.port for listener in listeners if not listener.unix)
    mta.start(store, make_ctx(store).auth)
    try:
        with caplog.at_level(logging.DEBUG, logger="gximap.net"):
            assert _first_bytes(socket.AF_INET, ("127.0.0.1", port), until) == b""
            assert _first_bytes(socket.AF_INET, ("127.0.0.1", port), until) == b""
            assert _first_bytes(socket.AF_UNIX, path, until).startswith(hello)
        refusals = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
        assert len(refusals) == 1, refusals
        assert refusals[0].startswith("connection from [127.0.0.1]:")
        assert refusals[0].endswith(f"refused: address not in {allow}")

        mta.reload(cfg.replace(**{allow: "127.0.0.0/8"}))
        assert _first_bytes(socket.AF_INET, ("127.0.0.1", port), until).startswith(hello)
    finally:
        mta.stop(grace=1.0)
