"""gximap.authsock: the Dovecot auth protocol (sans-IO) and the session answering an MTA's AUTH
requests with IMAP's AuthService (accounts, impersonation, throttling); then over the pool."""

from __future__ import annotations

import base64
import logging
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from conversation import DATA_DIR, ManualDelays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scram_client import ScramClient

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
from midb import scram as scram_keys
from midb.authdb import PasswdFileAuth, ScramKeys
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


def make_ctx(store: Store, *, insecure: bool = True, backend: Backend | None = None, scram: bool = False,
             **auth_kwargs: object) -> AuthSocketContext:
    auth_kwargs.setdefault("auth_times", 3)
    auth_kwargs.setdefault("ip_times", 0)
    auth = AuthService(store, backend if backend is not None else Backend(), **auth_kwargs)  # type: ignore[arg-type]
    return AuthSocketContext(auth, AuthSocketSettings(insecure_auth=insecure, sasl_scram=scram))


def fake_clock(ctx: AuthSocketContext) -> list[float]:
    """Give ``ctx`` a clock the test moves on: the list's only item, in seconds."""
    now = [1000.0]
    ctx.clock = lambda: now[0]
    return now


def cont_data(reply: list[str]) -> bytes:
    """The decoded data of the one reply, a CONT."""
    (line,) = reply
    assert line.startswith("CONT\t"), reply
    return base64.b64decode(line.split("\t")[2])


class Client:
    def __init__(self, ctx: AuthSocketContext, peer: str = "local") -> None:
        conn = ConnectionInfo(peer_host=peer, peer_port=0, local_host="/run/auth", local_port=0, tls=False,
                              starttls_available=False, listener="auth")
        self.session = AuthSocketSession(ctx, conn, self._waker)
        self.closed = False
        self.wakes = 0  # waker calls not yet answered by wake()
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

    def _waker(self) -> None:
        self.wakes += 1

    def wake(self) -> list[str]:
        """The pool runs wakeup() because the waker fired."""
        assert self.wakes, "the session's waker was not called"
        self.wakes = 0
        self.session.wakeup()
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
    now = fake_clock(ctx)
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


def test_unreadable_passwd_file_is_a_temporary_failure_not_a_guess(store: Store, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """As Dovecot answers a passdb's internal error: FAIL with ``temp`` (Postfix then says 454
    4.7.0 and the SMTP client tries later), for PLAIN, LOGIN and SCRAM alike, for a known and an
    unknown name; no failure is counted (no block at imap_auth_times) and no "rejected" line
    written for fail2ban; the file's error is logged once, not per request."""
    path = tmp_path / "users"
    path.write_text("alice:{SCRAM-SHA-256}" + scram_keys.derive(PASSWORD, iterations=SCRAM_ITERATIONS).text() + "\n")
    ctx = make_ctx(store, backend=PasswdFileAuth(path, store=store), scram=True,  # type: ignore[arg-type]
                   auth_times=2, ip_times=2)
    client = Client(ctx).hello()
    assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={plain('', 'alice', PASSWORD)}\n") == \
        ["OK\t1\tuser=alice"]
    path.unlink()
    path.mkdir()  # EISDIR: unreadable even for root, whom a chmod 000 does not stop
    temp_fail = "FAIL\t{}\ttemp\treason=Temporary authentication failure\tcode=temp_fail"
    with caplog.at_level(logging.INFO):
        for request_id, user in ((2, "alice"), (3, "alice"), (4, "nobody")):
            assert client.send(f"AUTH\t{request_id}\tPLAIN\tservice=smtp\trip=192.0.2.7\t"
                               f"resp={plain('', user, PASSWORD)}\n") == [temp_fail.format(request_id)]
        assert client.send(f"AUTH\t5\tLOGIN\tservice=smtp\trip=192.0.2.7\tresp={b64(b'alice')}\n") == \
            [f"CONT\t5\t{PASSWORD_PROMPT}"]
        assert client.send(f"CONT\t5\t{b64(PASSWORD.encode())}\n") == [temp_fail.format(5)]
        reply = client.send(f"AUTH\t6\tSCRAM-SHA-256\tservice=smtp\trip=192.0.2.7\t"
                            f"resp={b64(ScramClient('alice', PASSWORD).first())}\n")
        assert reply == [temp_fail.format(6)]
    assert not client.closed and ctx._failures == {}
    assert ctx.auth.user_block_remaining("alice") == 0
    lines = [record.getMessage() for record in caplog.records if record.name == "gximap.auth"]
    assert [re.sub(r"user=\S+ ", "user=U ", line) for line in lines] == \
        [f"rhost=[192.0.2.7]:0 user=U SMTP/{mech} unavailable: passwd-file {path} cannot be read"
         for mech in ("PLAIN", "PLAIN", "PLAIN", "LOGIN", "SCRAM-SHA-256")]
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == \
        [f"passwd-file {path} cannot be read: Is a directory (EISDIR); lookups in it fail as a temporary error until it can"]
    path.rmdir()
    path.write_text(f"alice:{{PLAIN}}{PASSWORD}\n")
    assert client.send(f"AUTH\t7\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={plain('', 'alice', PASSWORD)}\n") == \
        ["OK\t7\tuser=alice"]


# -- SCRAM-SHA-256 ------------------------------------------------------------------------------

SCRAM_ITERATIONS = 4096  # RFC 7677's minimum: the tests' clients derive keys fast


class ScramBackend(Backend):
    """Backend with SCRAM keys for alice, bob and shared (PASSWORD), as midb keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.keys = {name: scram_keys.derive(PASSWORD, iterations=SCRAM_ITERATIONS) for name in ("alice", "bob", "shared")}
        self.disabled: set[str] = set()
        self.key_reads: list[str] = []

    def scram_keys(self, user: str) -> ScramKeys | None:
        self.key_reads.append(user)
        if self.busy:
            raise StoreBusy("lock timeout")
        credential = self.keys.get(user)
        if credential is None:
            return None
        return ScramKeys(user, credential, user not in self.disabled, "v1")

    def scram_failure_reason(self, user: str) -> str:
        return "unknown user" if user not in self.keys else "no SCRAM keys"


def scram_ctx(store: Store, *, scram: bool = True, insecure: bool = True,
              **auth_kwargs: object) -> AuthSocketContext:
    return make_ctx(store, insecure=insecure, backend=ScramBackend(), scram=scram, **auth_kwargs)


def scram_exchange(client: Client, request_id: int, scram: ScramClient, params: str = "rip=192.0.2.7",
                   *, initial: bool = True) -> list[str]:
    """AUTH and the client-final message, as Postfix passes an SMTP client's: the last reply."""
    if initial:
        reply = client.send(f"AUTH\t{request_id}\tSCRAM-SHA-256\tservice=smtp\t{params}\tresp={b64(scram.first())}\n")
    else:
        assert client.send(f"AUTH\t{request_id}\tSCRAM-SHA-256\tservice=smtp\t{params}\n") == \
            [f"CONT\t{request_id}\t"]
        reply = client.send(f"CONT\t{request_id}\t{b64(scram.first())}\n")
    assert reply[0].startswith(f"CONT\t{request_id}\t"), reply
    return client.send(f"CONT\t{request_id}\t{b64(scram.final(cont_data(reply)))}\n")


def test_scram_is_offered_with_mutual_auth_only_when_enabled(store: Store) -> None:
    assert "MECH\tSCRAM-SHA-256\tmutual-auth" not in Client(scram_ctx(store, scram=False)).handshake
    client = Client(scram_ctx(store))
    assert client.handshake[1:4] == ["MECH\tPLAIN\tplaintext", "MECH\tLOGIN\tplaintext",
                                     "MECH\tSCRAM-SHA-256\tmutual-auth"]
    off = Client(scram_ctx(store, scram=False)).hello()
    assert off.send(f"AUTH\t1\tSCRAM-SHA-256\tservice=smtp\tresp={b64(ScramClient('alice', 'secret').first())}\n") == \
        ["FAIL\t1\treason=Unsupported authentication mechanism"]


def test_scram_exchange_ends_with_the_server_final_in_a_cont(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """As Dovecot without final-resp-ok (Postfix, Exim): the server's proof in a CONT, which the
    SMTP client answers empty, then the OK. With and without an initial response."""
    client = Client(scram_ctx(store)).hello()
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        for request_id, initial in ((1, True), (2, False)):
            scram = ScramClient("alice", PASSWORD)
            reply = scram_exchange(client, request_id, scram, initial=initial)
            assert reply[0].startswith(f"CONT\t{request_id}\t")
            assert scram.check_server_final(cont_data(reply))
            # Logged in only at the client's answer (the earlier request's line alone so far).
            assert [record.name for record in caplog.records].count("gximap.auth") == request_id - 1
            assert client.send(f"CONT\t{request_id}\t\n") == [f"OK\t{request_id}\tuser=alice"]
    assert [record.getMessage() for record in caplog.records if record.name == "gximap.auth"] == \
        ["rhost=[192.0.2.7]:0 user=alice SMTP/SCRAM-SHA-256 ok"] * 2
    assert not client.closed


def test_scram_final_response_in_the_ok_with_final_resp_ok(store: Store) -> None:
    client = Client(scram_ctx(store)).hello()
    scram = ScramClient("alice", PASSWORD)
    reply = scram_exchange(client, 1, scram, "rip=192.0.2.7\tfinal-resp-ok")
    fields = reply[0].split("\t")
    assert fields[:3] == ["OK", "1", "user=alice"] and len(reply) == 1
    assert fields[3].startswith("resp=") and scram.check_server_final(base64.b64decode(fields[3][5:]))


def test_scram_impersonation_and_refusals_after_a_right_proof(store: Store) -> None:
    ctx = scram_ctx(store)
    client = Client(ctx).hello()
    reply = scram_exchange(client, 1, ScramClient("alice", PASSWORD, authzid="shared"))
    assert client.send("CONT\t1\t\n") == ["OK\t1\tuser=shared"] and reply[0].startswith("CONT\t1\t")
    assert scram_exchange(client, 2, ScramClient("bob", PASSWORD, authzid="shared")) == [
        "FAIL\t2\treason=Not authorized to act as that user\tcode=authz_fail"]
    ctx.auth.backend.disabled.add("bob")
    assert scram_exchange(client, 3, ScramClient("bob", PASSWORD)) == [
        "FAIL\t3\treason=Account disabled\tcode=user_disabled"]


def test_scram_wrong_proof_and_unknown_user_fail_alike_and_count(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong proof is a wrong password: counted per (rip, user) as PLAIN's, blocking the user at
    imap_auth_times. An unknown user gets made-up keys: a server-first like a real user's, the
    same salt each time, and the proof fails."""
    ctx = scram_ctx(store, auth_times=2)
    client = Client(ctx).hello()
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert scram_exchange(client, 1, ScramClient("alice", "guess"), "rip=198.51.100.4") == ["FAIL\t1"]
        salts = []
        for request_id in (2, 3):
            reply = client.send(f"AUTH\t{request_id}\tSCRAM-SHA-256\tservice=smtp\trip=198.51.100.4\t"
                                f"resp={b64(ScramClient('nobody', PASSWORD).first())}\n")
            server_first = cont_data(reply).decode()
            assert re.fullmatch(r"r=fyko\+d2lbbFgONRv9qkxdawL[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/]{22}==,i=\d+", server_first)
            salts.append(server_first.split(",")[1])
            client.send(f"CANCEL\t{request_id}\n")
        assert salts[0] == salts[1]
        assert scram_exchange(client, 4, ScramClient("nobody", PASSWORD), "rip=198.51.100.4") == ["FAIL\t4"]
        assert scram_exchange(client, 5, ScramClient("alice", "guess"), "rip=198.51.100.4") == ["FAIL\t5"]
        # alice is blocked now: refused at the client-first, as PLAIN at its message, her keys unread
        # (no credential cache here: no proof could pass the block).
        ctx.auth.backend.key_reads.clear()
        assert client.send(f"AUTH\t6\tSCRAM-SHA-256\tservice=smtp\trip=192.0.2.7\t"
                           f"resp={b64(ScramClient('alice', PASSWORD).first())}\n") == ["FAIL\t6"]
        assert ctx.auth.backend.key_reads == []
    assert [record.getMessage() for record in caplog.records if record.name == "gximap.auth"] == [
        "rhost=[198.51.100.4]:0 user=alice SMTP/SCRAM-SHA-256 rejected: bad password",
        "rhost=[198.51.100.4]:0 user=nobody SMTP/SCRAM-SHA-256 rejected: unknown user",
        "rhost=[198.51.100.4]:0 user=alice SMTP/SCRAM-SHA-256 rejected: bad password",
        "rhost=[198.51.100.4]:0 user=alice blocked for 60s: too many failed logins",
        "rhost=[192.0.2.7]:0 user=alice SMTP/SCRAM-SHA-256 refused: user blocked",
    ]
    assert not client.closed


def test_scram_cancel_and_expiry_mid_exchange(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    ctx = scram_ctx(store)
    now = fake_clock(ctx)
    client = Client(ctx).hello()
    scram = ScramClient("alice", PASSWORD)
    reply = client.send(f"AUTH\t1\tSCRAM-SHA-256\tservice=smtp\tresp={b64(scram.first())}\n")
    final = scram.final(cont_data(reply))
    assert client.send("CANCEL\t1\n") == []
    assert client.send(f"CONT\t1\t{b64(final)}\n") == ["FAIL\t1\treason=Authentication request timed out"]
    # Cancelled after the right proof, before the empty answer to the server's: no OK ever, and
    # none logged; counted as a cancel is anywhere else, for nothing (alice's failure stays).
    assert scram_exchange(client, 4, ScramClient("alice", "guess"))[0] == "FAIL\t4"
    scram = ScramClient("alice", PASSWORD)
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert scram_exchange(client, 2, scram)[0].startswith("CONT\t2\t")
        assert client.send("CANCEL\t2\nCONT\t2\t\n") == ["FAIL\t2\treason=Authentication request timed out"]
        # ... and one left to expire there likewise.
        assert scram_exchange(client, 5, ScramClient("alice", PASSWORD))[0].startswith("CONT\t5\t")
        now[0] += PENDING_TIMEOUT
        assert client.send("CONT\t5\t\n") == ["FAIL\t5\treason=Authentication request timed out"]
    assert [record.getMessage() for record in caplog.records if record.name == "gximap.auth"] == []
    assert [(key, count) for key, (count, _since) in ctx._failures.items()] == [(("192.0.2.7", "alice"), 1)]
    # The exchange expires PENDING_TIMEOUT after its AUTH, whatever step it is at.
    scram = ScramClient("alice", PASSWORD)
    reply = client.send(f"AUTH\t3\tSCRAM-SHA-256\tservice=smtp\tresp={b64(scram.first())}\n")
    now[0] += PENDING_TIMEOUT
    assert client.send(f"CONT\t3\t{b64(scram.final(cont_data(reply)))}\n") == \
        ["FAIL\t3\treason=Authentication request timed out"]
    assert not client.closed


@pytest.mark.parametrize(("first", "final", "reason"), [
    (b"", None, "SCRAM client-first: no gs2 header"),  # resp== : an empty initial response
    (b"p=tls-unique,,n=alice,r=abc", None, "SCRAM client-first: channel binding asked for (no -PLUS mechanism is offered)"),
    (b"n,,n=alice", None, "SCRAM client-first: client-first-message lacks n= or r="),
    (b"n,,n=al=ice,r=abc", None, "SCRAM client-first: '=' not followed by 2C or 3D in a name"),
    (None, b"c=biws,r=x,p=AAAA", "SCRAM client-final: proof of the wrong length"),
    (None, b"garbage", "SCRAM client-final: client-final-message lacks p="),
])
def test_scram_malformed_messages_fail_and_count(store: Store, caplog: pytest.LogCaptureFixture,
                                                 first: bytes | None, final: bytes | None, reason: str) -> None:
    ctx = scram_ctx(store)
    client = Client(ctx).hello()
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        if first is not None:
            assert client.send(f"AUTH\t1\tSCRAM-SHA-256\tservice=smtp\trip=192.0.2.7\t"
                               f"resp={b64(first) or '='}\n") == ["FAIL\t1"]
        else:
            reply = client.send(f"AUTH\t1\tSCRAM-SHA-256\tservice=smtp\trip=192.0.2.7\t"
                                f"resp={b64(ScramClient('alice', PASSWORD).first())}\n")
            assert reply[0].startswith("CONT\t1\t")
            assert client.send(f"CONT\t1\t{b64(final or b'')}\n") == ["FAIL\t1"]
    user = "" if first is not None else "alice"
    assert [record.getMessage() for record in caplog.records if record.name == "gximap.auth"] == [
        f"rhost=[192.0.2.7]:0 user={user} SMTP/SCRAM-SHA-256 rejected: {reason}"]
    # Counted toward imap_auth_times as a wrong password is (a nameless one under the name "").
    assert [(key, count) for key, (count, _since) in ctx._failures.items()] == [(("192.0.2.7", user), 1)]
    # Bad base64 mid-exchange fails the request as for PLAIN; the connection stays.
    reply = client.send(f"AUTH\t2\tSCRAM-SHA-256\tservice=smtp\tresp={b64(ScramClient('alice', PASSWORD).first())}\n")
    assert client.send("CONT\t2\t%%%\n") == ["FAIL\t2\treason=Invalid base64 data in continued response"]
    assert not client.closed and reply[0].startswith("CONT\t2\t")


def test_scram_follows_the_plaintext_policy_as_imap(store: Store) -> None:
    """As IMAP offers SCRAM only where PLAIN is: without insecure_auth, only a request marked
    secured (or a local client's) may use it."""
    client = Client(scram_ctx(store, insecure=False)).hello()
    first = b64(ScramClient("alice", PASSWORD).first())
    assert client.send(f"AUTH\t1\tSCRAM-SHA-256\tservice=smtp\trip=192.0.2.7\tlip=192.0.2.1\tresp={first}\n") == \
        ["FAIL\t1\treason=Plaintext authentication disallowed on non-secure (SSL/TLS) connections."]
    reply = scram_exchange(client, 2, ScramClient("alice", PASSWORD), "rip=192.0.2.7\tsecured\tvalid-client-cert\tnologin")
    assert reply[0].startswith("CONT\t2\t") and client.send("CONT\t2\t\n") == ["OK\t2\tuser=alice"]


def test_scram_store_trouble_is_a_temporary_failure(store: Store) -> None:
    ctx = scram_ctx(store)
    client = Client(ctx).hello()
    ctx.auth.backend.busy = True
    assert client.send(f"AUTH\t1\tSCRAM-SHA-256\tservice=smtp\tresp={b64(ScramClient('alice', PASSWORD).first())}\n") \
        == ["FAIL\t1\ttemp\treason=Temporary authentication failure\tcode=temp_fail"]


def test_scram_passes_a_user_block_only_with_a_proof_the_cache_holds(store: Store) -> None:
    """As IMAP: a stranger's failures block alice; her client's proof, verified before the
    block and so in the credential cache, still gets in; bob's right proof, never cached, not."""
    class StampedScramBackend(ScramBackend):
        def credential_stamp(self, user: str) -> str | None:
            return "v1" if self.exists(user) else None

    auth = AuthService(store, StampedScramBackend(), auth_times=2, ip_times=0, cache=CredentialCache(3600, 100))
    client = Client(AuthSocketContext(auth, AuthSocketSettings(insecure_auth=True, sasl_scram=True))).hello()
    assert scram_exchange(client, 1, ScramClient("alice", PASSWORD))[0].startswith("CONT\t1\t")
    assert client.send("CONT\t1\t\n") == ["OK\t1\tuser=alice"]
    for user in ("alice", "bob"):
        for request_id in (2, 3):
            assert scram_exchange(client, request_id, ScramClient(user, "guess"), "rip=198.51.100.4") == \
                [f"FAIL\t{request_id}"]
    assert auth.user_block_remaining("alice") > 0 and auth.user_block_remaining("bob") > 0
    assert scram_exchange(client, 4, ScramClient("alice", PASSWORD))[0].startswith("CONT\t4\t")
    assert client.send("CONT\t4\t\n") == ["OK\t4\tuser=alice"]
    assert scram_exchange(client, 5, ScramClient("bob", PASSWORD)) == ["FAIL\t5"]


def test_scram_from_a_blocked_address_is_refused_at_the_client_first(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """As PLAIN from a blocked address: refused at the first message that names the user, its keys
    never read, logged "refused"; a client at another address goes on."""
    ctx = scram_ctx(store, auth_times=10, ip_times=2)
    client = Client(ctx).hello()
    for request_id in (1, 2):
        assert scram_exchange(client, request_id, ScramClient("bob", "guess"), "rip=198.51.100.4") == \
            [f"FAIL\t{request_id}"]
    ctx.auth.backend.key_reads.clear()
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert client.send(f"AUTH\t3\tSCRAM-SHA-256\tservice=smtp\trip=198.51.100.4\t"
                           f"resp={b64(ScramClient('alice', PASSWORD).first())}\n") == ["FAIL\t3"]
    assert ctx.auth.backend.key_reads == []
    assert [record.getMessage() for record in caplog.records if record.name == "gximap.auth"] == [
        "rhost=[198.51.100.4]:0 user=alice SMTP/SCRAM-SHA-256 refused: address blocked"]
    assert scram_exchange(client, 4, ScramClient("alice", PASSWORD))[0].startswith("CONT\t4\t")
    assert client.send("CONT\t4\t\n") == ["OK\t4\tuser=alice"]


def test_reload_turns_scram_on_for_the_next_handshakes(store: Store, tmp_path: Path) -> None:
    from gximap.config import defaults
    from gximap.mta import MtaServices

    path = str(tmp_path / "auth")
    cfg = defaults().replace(auth_listen=f"unix:{path}", running_identity="", imap_listen="127.0.0.1:0")
    mta = MtaServices(cfg)
    mta.bind()
    mta.start(store, scram_ctx(store).auth)
    try:
        assert b"SCRAM-SHA-256" not in _first_bytes(socket.AF_UNIX, path)
        mta.reload(cfg.replace(imap_sasl_scram=True))
        assert b"\nMECH\tSCRAM-SHA-256\tmutual-auth\n" in _first_bytes(socket.AF_UNIX, path)
    finally:
        mta.stop(grace=1.0)


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
                     b"AUTH\t2\tLOGIN\tservice=imap\tresp=YQ==\n", b"CANCEL\t2\n", b"\t\t\n", b"\x01\n",
                     b"AUTH\t3\tSCRAM-SHA-256\tservice=smtp\n", b"CONT\t3\tbiwsbj1hbGljZSxyPWFiYw==\n",
                     b"AUTH\t4\tSCRAM-SHA-256\tservice=smtp\tresp=biwsbj1hbGljZSxyPWFiYw==\n",
                     b"CONT\t4\tYz1iaXdzLHI9YWJjLHA9QUFBQQ==\n", b"CONT\t4\t\n"])),
    max_size=20))
def test_any_input_gets_replies_or_a_disconnect_never_an_exception(store: Store, chunks: list[bytes]) -> None:
    client = Client(scram_ctx(store))
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


# -- imap_auth_failure_delay ------------------------------------------------------------------------


def test_a_failure_is_answered_after_the_delay_and_other_requests_meanwhile(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    delays = ManualDelays()
    ctx = make_ctx(store, failure_delay=2.0, delays=delays)
    client = Client(ctx).hello()
    bad, unknown, good = plain("", "alice", "nope"), plain("", "mallory", "secret"), plain("", "alice", "secret")
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={bad}\n") == []
        # Logged at once, for fail2ban; the MTA's other SMTP clients are served meanwhile.
        assert "rhost=[192.0.2.7]:0 user=alice SMTP/PLAIN rejected: bad password" in caplog.text
        assert client.send(f"AUTH\t2\tPLAIN\tservice=smtp\trip=192.0.2.8\tresp={good}\n") == ["OK\t2\tuser=alice"]
        assert client.send(f"AUTH\t3\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={unknown}\n") == []
    assert client.session.awaiting()  # an MTA that half-closes still gets the answers
    delays.advance(1.9)
    assert client.wakes == 0
    delays.advance(0.1)
    assert client.wake() == ["FAIL\t1", "FAIL\t3"]
    assert not client.session.awaiting()


def test_a_blocked_user_and_a_wrong_scram_proof_wait_too(store: Store) -> None:
    delays = ManualDelays()
    ctx = scram_ctx(store, auth_times=1, failure_delay=2.0, delays=delays)
    client = Client(ctx).hello()
    assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.7\tresp={plain('', 'bob', 'nope')}\n") == []
    assert ctx.auth.user_block_remaining("bob") > 0  # the block begins with the failure, not the answer
    assert client.send(f"AUTH\t2\tPLAIN\tservice=smtp\trip=192.0.2.8\tresp={plain('', 'bob', 'secret')}\n") == []
    scram = ScramClient("alice", "nope")
    first = client.send(f"AUTH\t3\tSCRAM-SHA-256\tservice=smtp\trip=192.0.2.9\tresp={b64(scram.first())}\n")
    assert client.send(f"CONT\t3\t{b64(scram.final(cont_data(first)))}\n") == []
    delays.advance(2.0)
    assert client.wake() == ["FAIL\t1", "FAIL\t2", "FAIL\t3"]


def test_temporary_failures_and_refusals_of_the_protocol_are_answered_at_once(store: Store) -> None:
    delays = ManualDelays()
    ctx = make_ctx(store, failure_delay=2.0, delays=delays)
    client = Client(ctx).hello()
    assert client.send(f"AUTH\t1\tNTLM\tservice=smtp\tresp={plain('', 'alice', 'nope')}\n") == \
        ["FAIL\t1\treason=Unsupported authentication mechanism"]
    assert client.send("AUTH\t2\tPLAIN\tservice=smtp\tresp=!!\n") == \
        ["FAIL\t2\treason=Invalid base64 data in initial response"]
    ctx.auth.backend.busy = True
    assert client.send(f"AUTH\t3\tPLAIN\tservice=smtp\tresp={plain('', 'alice', 'nope')}\n") == \
        ["FAIL\t3\ttemp\treason=Temporary authentication failure\tcode=temp_fail"]
    assert delays.pending() == 0


def test_the_id_of_a_failure_waiting_out_its_delay_is_no_free_id(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Its FAIL is still owed: an AUTH with that id is a duplicate id, as one of a request that
    awaits a CONT is, and drops the connection. Taken as a new request, its OK went out first and
    the old FAIL after it under the same id, which an MTA that reuses ids reads as the answer to
    its next request."""
    delays = ManualDelays()
    client = Client(make_ctx(store, failure_delay=2.0, delays=delays)).hello()
    assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={plain('', 'alice', 'nope')}\n") == []
    with caplog.at_level(logging.WARNING, logger="gximap.auth"):
        assert client.send(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={plain('', 'alice', 'secret')}\n") == []
    assert client.closed and "closed: duplicate request id 1" in caplog.text
    assert delays.pending() == 0


def test_a_connection_lost_during_the_delay_cancels_its_timers(store: Store) -> None:
    delays = ManualDelays()
    client = Client(make_ctx(store, failure_delay=2.0, delays=delays)).hello()
    for request_id in (1, 2):
        client.send(f"AUTH\t{request_id}\tPLAIN\tservice=smtp\tresp={plain('', 'alice', 'nope')}\n")
    assert delays.pending() == 2
    client.session.connection_lost()
    assert delays.pending() == 0


def test_the_delay_over_the_pool_holds_no_worker(store: Store, tmp_path: Path) -> None:
    """One worker thread, the real timer: while request 1's FAIL waits out its delay, request 2
    on the same connection and a request on another connection are answered."""
    path = str(tmp_path / "auth-client")
    listeners = bind_listeners([ListenerSpec("", 0, False, "auth", path=path, mode=0o600)])
    ctx = make_ctx(store, failure_delay=0.5)
    server = Server(listeners, lambda conn, waker: AuthSocketSession(ctx, conn, waker), context_num=4,
                    thread_init_num=1, thread_charge_num=4, conn_timeout=5.0, ssl_context=None, busy_response=b"")
    server.start()
    try:
        with socket.socket(socket.AF_UNIX) as first, socket.socket(socket.AF_UNIX) as second:
            for sock in (first, second):
                sock.settimeout(5)
                sock.connect(path)
                sock.sendall(b"VERSION\t1\t0\nCPID\t4242\n")
                assert b"\nDONE\n" in _read_until(sock, b"\nDONE\n")
            started = time.monotonic()
            first.sendall(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={plain('', 'alice', 'nope')}\n"
                          f"AUTH\t2\tPLAIN\tservice=smtp\tresp={plain('', 'alice', 'secret')}\n".encode())
            assert _read_until(first, b"\n") == b"OK\t2\tuser=alice\n"
            second.sendall(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={plain('', 'bob', 'secret')}\n".encode())
            assert _read_until(second, b"\n") == b"OK\t1\tuser=bob\n"
            assert _read_until(first, b"\n") == b"FAIL\t1\n"
            assert time.monotonic() - started >= 0.5
    finally:
        server.stop(grace=1.0)
