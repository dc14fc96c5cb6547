"""gximap.auth.service: throttling (per connection, per user, per address), bounded hashing,
impersonation and name mapping, alone and through live IMAP sessions."""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from pathlib import Path

import pytest
from conversation import PASSWORD, Conversation, password_hash

from gximap.auth import service as service_module
from gximap.auth.cache import CredentialCache
from gximap.auth.maps import NameMap
from gximap.auth.service import AuthService, address_key, split_identity
from midb import authdb
from midb.authdb import MidbAuth, PasswdFileAuth
from midb.errors import FileUnavailable
from midb.scram import derive
from midb.store import Store

REPO = Path(__file__).resolve().parent.parent
FAIL2BAN_FILTER = REPO / "etc" / "fail2ban" / "filter.d" / "gromox-imap.conf"
RHOST = "[203.0.113.5]:51234"
ADDRESS = "203.0.113.5"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingBackend:
    """Accepts ``PASSWORD`` for the names in ``users``; records every check."""

    def __init__(self, users: tuple[str, ...] = ("alice", "bob", "carol"), delay: float = 0.0) -> None:
        self.users = set(users)
        self.delay = delay
        self.calls: list[str] = []
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def authenticate(self, user: str, password: str) -> str | None:
        with self._lock:
            self.calls.append(user)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if self.delay:
                time.sleep(self.delay)
            return user if user in self.users and password == PASSWORD else None
        finally:
            with self._lock:
                self.active -= 1

    def failure_reason(self, user: str) -> str:
        return "bad password" if user in self.users else "unknown user"

    def exists(self, user: str) -> bool:
        return user in self.users


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "midb", fsync=False, data_path=[str(REPO / "data")])
    for name in ("alice", "bob", "carol", "shared"):
        store.create_account(name, password_hash=password_hash(PASSWORD if name != "shared" else "other"))
    yield store
    store.close()


def make_service(store: Store, backend: object | None = None, **kwargs: object) -> AuthService:
    kwargs.setdefault("auth_times", 3)
    kwargs.setdefault("block_interval", 60.0)
    kwargs.setdefault("ip_times", 0)
    return AuthService(store, backend if backend is not None else RecordingBackend(), **kwargs)  # type: ignore[arg-type]


def login(auth: AuthService, user: str, password: str = PASSWORD, address: str = ADDRESS, **kwargs: str):
    return auth.authenticate(user, password, rhost=f"[{address}]:40000", address=address, mech="LOGIN",
                             **kwargs)


# -- helpers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("login_name", "authzid", "expected"), [
    ("alice", None, ("alice", "alice")),
    ("bob!shared", None, ("bob", "shared")),
    ("bob!", None, ("bob!", "bob!")),
    ("!shared", None, ("!shared", "!shared")),
    ("bob", "shared", ("bob", "shared")),
    ("bob", "", ("bob", "bob")),
])
def test_split_identity(login_name: str, authzid: str | None, expected: tuple[str, str]) -> None:
    assert split_identity(login_name, authzid) == expected


@pytest.mark.parametrize(("address", "key"), [
    ("203.0.113.5", "203.0.113.5"),
    ("::ffff:203.0.113.5", "203.0.113.5"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("unix-socket", "unix-socket"),
])
def test_address_key(address: str, key: str) -> None:
    assert address_key(address) == key


# -- Gromox throttling: per connection, then per user ------------------------------------------------


def test_failures_block_the_user_and_close_the_connection(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Conversation(tmp_path, auth_times=3, users=("alice",)) as conv:
        with caplog.at_level(logging.INFO, logger="gximap.auth"):
            conv.script("""
                C: a1 LOGIN alice wrong1
                S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
                C: a2 LOGIN alice wrong2
                S: a2 NO [AUTHENTICATIONFAILED] Authentication failed
                C: a3 LOGIN alice wrong3
                S: a3 NO [AUTHENTICATIONFAILED] Authentication failed
                S: * BYE Too many failed logins, closing connection
            """)
        assert conv.closed
        rhost = conv.session.rhost
        messages = [record.getMessage() for record in caplog.records if record.name == "gximap.auth"]
        assert messages == [f"rhost={rhost} user=alice LOGIN rejected: bad password"] * 3 + [
            f"rhost={rhost} user=alice blocked for 60s: too many failed logins"]
        # The block holds on every other connection, even with the right password.
        other = conv.second_session()
        other.script(f"""
            C: b1 LOGIN alice {PASSWORD}
            S: b1 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later
        """)


def test_blocked_user_is_refused_before_the_password_check(store: Store) -> None:
    backend = RecordingBackend()
    clock = FakeClock()
    auth = make_service(store, backend, block_interval=30.0, clock=clock)
    auth.block_user("Alice", RHOST)  # any spelling of the name blocks the identity
    result = login(auth, "alice")
    assert (result.ok, result.blocked, result.reason) == (False, True, "user blocked")
    assert login(auth, "ALICE").blocked and login(auth, "bob!alice").blocked
    assert login(auth, "alice!bob").blocked  # an actor that is blocked cannot impersonate either
    assert backend.calls == []
    assert 29.0 < auth.user_block_remaining("alice") <= 30.0
    clock.advance(30.0)
    assert auth.user_block_remaining("alice") == 0.0
    assert login(auth, "alice").ok and backend.calls == ["alice"]


def test_blocks_are_shared_by_threads_and_connections(store: Store) -> None:
    auth = make_service(store, RecordingBackend())
    barrier = threading.Barrier(8)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        barrier.wait(5)
        if index == 0:
            auth.block_user("carol", RHOST)
        deadline = time.monotonic() + 5
        while auth.user_block_remaining("carol") == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        result = login(auth, "carol", address=f"198.51.100.{index}")
        with lock:
            outcomes.append(result.blocked)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes == [True] * 8


def test_failure_counting_is_consistent_under_concurrency(store: Store) -> None:
    """Many threads failing at once from one address: the window keeps an exact count."""
    clock = FakeClock()
    auth = make_service(store, RecordingBackend(), ip_times=1000, ip_window=60.0, clock=clock)
    threads = [threading.Thread(target=lambda: [login(auth, "alice", "bad") for _ in range(25)])
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(auth._ip_failures[ADDRESS]) == 200


# -- beyond Gromox: per client address ---------------------------------------------------------------


def test_password_spray_from_one_address_is_refused(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    backend = RecordingBackend(users=tuple(f"user{index}" for index in range(20)) + ("alice",))
    clock = FakeClock()
    auth = make_service(store, backend, auth_times=100, ip_times=5, ip_window=300.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        for index in range(5):  # one attempt per user name: no per-user block ever triggers
            assert not login(auth, f"user{index}", "Winter2024!").ok
        refused = login(auth, "alice")  # even the right password of another user
    assert (refused.ok, refused.blocked, refused.reason) == (False, True, "address blocked")
    assert backend.calls == [f"user{index}" for index in range(5)]  # no hashing once refused
    messages = [record.getMessage() for record in caplog.records]
    assert f"rhost=[{ADDRESS}]:40000 address blocked for 300s: too many failed logins" in messages
    assert messages[-1] == f"rhost=[{ADDRESS}]:40000 user=alice LOGIN refused: address blocked"
    # Other addresses are not affected; the same /64 is, and an IPv4-mapped spelling too.
    assert login(auth, "alice", address="198.51.100.7").ok
    assert login(auth, "alice", address=f"::ffff:{ADDRESS}").blocked
    # The window slides: once the oldest failures are older than the window, logins work again.
    clock.advance(301.0)
    assert login(auth, "alice").ok


def test_ipv6_clients_are_counted_per_64(store: Store) -> None:
    auth = make_service(store, RecordingBackend(), auth_times=100, ip_times=3, clock=FakeClock())
    for index in range(3):
        login(auth, "alice", "bad", address=f"2001:db8:0:1::{index + 1}")
    assert login(auth, "alice", address="2001:db8:0:1:ffff::9").blocked
    assert login(auth, "alice", address="2001:db8:0:2::1").ok


def test_address_limit_through_sessions_uses_the_connection_address(tmp_path: Path) -> None:
    """The session hands AuthService the connection's peer_host (the PROXY source when proxied)."""
    with Conversation(tmp_path, auth_times=100, ip_times=2, peer="198.51.100.1",
                      users=("alice", "bob")) as conv:
        conv.send(b"a1 LOGIN alice bad\r\n")
        conv.send(b"a2 LOGIN bob bad\r\n")
        conv.script(f"""
            C: a3 LOGIN alice {PASSWORD}
            S: a3 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later
        """)
        # A connection from another address is served normally by the same server.
        other = Conversation(users=(), context=conv.ctx, peer="198.51.100.2")
        other.login("alice")
        other.close()


def test_bookkeeping_stays_bounded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "MAX_TRACKED_ADDRESSES", 50)
    monkeypatch.setattr(service_module, "MAX_BLOCKED_USERS", 40)
    auth = make_service(store, RecordingBackend(), ip_times=10, clock=FakeClock())
    for index in range(500):
        auth._note_address_failure(f"10.0.{index // 256}.{index % 256}", RHOST)
        auth.block_user(f"user{index}", RHOST)
    assert len(auth._ip_failures) <= 50
    assert len(auth._blocked_users) <= 40
    assert auth.user_block_remaining("user499") > 0  # the newest entries are the ones kept


def test_at_the_bound_a_failure_does_not_sweep_the_tables_each_time(store: Store,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A sweep of full tables takes milliseconds: at the bound, each failure from a new address
    # paid for one. The oldest entries make room instead, with a sweep now and then.
    monkeypatch.setattr(service_module, "MAX_TRACKED_ADDRESSES", 50)
    auth = make_service(store, RecordingBackend(), ip_times=10, clock=FakeClock())
    sweeps: list[int] = []
    sweep = auth._sweep_locked

    def counted_sweep() -> None:
        sweeps.append(1)
        sweep()

    monkeypatch.setattr(auth, "_sweep_locked", counted_sweep)
    for index in range(1050):
        auth._note_address_failure(f"10.1.{index // 256}.{index % 256}", RHOST)
    assert len(auth._ip_failures) == 50
    assert 1 <= len(sweeps) <= 1000 // service_module._SWEEP_AT_BOUND_EVERY + 1
    assert "10.1.4.25" in auth._ip_failures and "10.1.0.0" not in auth._ip_failures   # the newest kept


# -- bounded hashing -----------------------------------------------------------------------------------


def test_password_checks_run_one_at_a_time_with_concurrency_1(store: Store) -> None:
    backend = RecordingBackend(delay=0.15)
    auth = make_service(store, backend, hash_concurrency=1)
    start = time.monotonic()
    threads = [threading.Thread(target=login, args=(auth, name)) for name in ("alice", "bob", "carol")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(backend.calls) == ["alice", "bob", "carol"]
    assert backend.peak == 1
    assert time.monotonic() - start >= 0.45  # the three checks ran one after another


def test_password_checks_run_side_by_side_up_to_the_bound(store: Store) -> None:
    rendezvous = threading.Barrier(3, timeout=5)  # broken unless all three are inside at once

    class MeetingBackend(RecordingBackend):
        def authenticate(self, user: str, password: str) -> str | None:
            rendezvous.wait()
            return super().authenticate(user, password)

    backend = MeetingBackend()
    auth = make_service(store, backend, hash_concurrency=3)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda name=name: results.append(login(auth, name).ok))
               for name in ("alice", "bob", "carol")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [True, True, True] and not rendezvous.broken


class GatedBackend(RecordingBackend):
    """Holds the check of ``held`` until ``release`` is set: every hashing thread busy."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held
        self.entered = threading.Event()
        self.release = threading.Event()

    def authenticate(self, user: str, password: str) -> str | None:
        if user == self.held:
            self.entered.set()
            self.release.wait(10)
        return super().authenticate(user, password)


def _submit(auth: AuthService, user: str, password: str = PASSWORD, address: str = ADDRESS):
    return auth.submit(user, password, rhost=f"[{address}]:40000", address=address, mech="LOGIN")


def test_refusals_that_need_no_hash_do_not_wait_for_the_hashing_threads(store: Store) -> None:
    """A blocked user or address, or a name that is not UTF-8, is answered by submit() itself:
    such an answer never waits in the queue behind other clients' password checks."""
    backend = GatedBackend(held="bob")
    auth = make_service(store, backend, hash_concurrency=1, ip_times=1, clock=FakeClock())
    try:
        busy = _submit(auth, "bob")
        assert backend.entered.wait(10)
        queued = _submit(auth, "carol", address="198.51.100.3")  # behind bob's check
        auth.block_user("alice", RHOST)
        auth._note_address_failure(address_key("198.51.100.9"), RHOST)
        answers = [_submit(auth, "alice"), _submit(auth, "carol", address="198.51.100.9"),
                   _submit(auth, "carol\udcff")]
        assert all(answer.done() for answer in answers) and not queued.done()
        assert [answer.result().reason for answer in answers] == ["user blocked", "address blocked", "invalid UTF-8"]
        backend.release.set()
        assert busy.result(10).ok and queued.result(10).ok
        assert backend.calls == ["bob", "carol"]
    finally:
        backend.release.set()
        auth.close()


def test_a_check_queued_when_its_user_is_blocked_is_refused_unhashed(store: Store) -> None:
    """A block that begins while a check waits its turn holds for that check (as it did when the
    whole check ran on the hashing thread): a burst of queued guesses cannot outrun the block."""
    backend = GatedBackend(held="bob")
    auth = make_service(store, backend, hash_concurrency=1)
    try:
        busy = _submit(auth, "bob")
        assert backend.entered.wait(10)
        queued = _submit(auth, "alice", "guess")
        auth.block_user("alice", RHOST)
        backend.release.set()
        assert busy.result(10).ok
        assert queued.result(10).blocked
        assert backend.calls == ["bob"]
    finally:
        backend.release.set()
        auth.close()


def test_a_cancelled_check_is_never_hashed(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The session cancels the check of a client that left; one not begun is then dropped: it is
    neither hashed, logged nor counted against the address."""
    backend = GatedBackend(held="bob")
    auth = make_service(store, backend, hash_concurrency=1, ip_times=5, clock=FakeClock())
    try:
        busy = _submit(auth, "bob")
        assert backend.entered.wait(10)
        abandoned = _submit(auth, "alice", "guess", address="198.51.100.4")
        assert abandoned.cancel()
        later = _submit(auth, "carol")  # behind the abandoned one: the single thread reached it first
        with caplog.at_level(logging.INFO, logger="gximap.auth"):
            backend.release.set()
            assert busy.result(10).ok and later.result(10).ok
        assert backend.calls == ["bob", "carol"]
        assert not any("198.51.100.4" in record.getMessage() for record in caplog.records)
        assert address_key("198.51.100.4") not in auth._ip_failures
    finally:
        backend.release.set()
        auth.close()


# -- impersonation -------------------------------------------------------------------------------------


def test_impersonation_needs_store_ownership(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    auth = make_service(store, MidbAuth(store))
    store.grant_owner("shared", "bob")
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        granted = login(auth, "bob!shared")
        denied = login(auth, "bob!alice")
        wrong_password = login(auth, "bob!shared", "other")  # the mailbox's password is not the actor's
        missing = login(auth, "bob!nosuch")
        self_target = login(auth, "Alice!ALICE")
    assert (granted.ok, granted.user, granted.actor) == (True, "shared", "bob")
    assert (denied.ok, denied.reason) == (False, "no store ownership")
    assert (wrong_password.ok, wrong_password.reason) == (False, "bad password")
    assert (missing.ok, missing.reason) == (False, "no store ownership")
    assert (self_target.ok, self_target.user, self_target.actor) == (True, "alice", None)
    messages = [record.getMessage() for record in caplog.records if record.name == "gximap.auth"]
    assert messages == [
        f"rhost=[{ADDRESS}]:40000 user=shared LOGIN ok actor=bob",
        f"rhost=[{ADDRESS}]:40000 user=bob!alice LOGIN refused: no store ownership",
        f"rhost=[{ADDRESS}]:40000 user=bob!shared LOGIN rejected: bad password",
        f"rhost=[{ADDRESS}]:40000 user=bob!nosuch LOGIN refused: no store ownership",
        f"rhost=[{ADDRESS}]:40000 user=alice LOGIN ok",
    ]
    store.revoke_owner("shared", "bob")
    assert login(auth, "bob!shared").reason == "no store ownership"
    # Ownership is not symmetric and not transitive.
    store.grant_owner("bob", "carol")
    assert login(auth, "carol!bob").ok and not login(auth, "bob!carol").ok


def test_impersonation_refusals_say_why_close_the_connection_and_block_nobody(tmp_path: Path) -> None:
    """The password was right: the client is told it may not act as that mailbox (RFC 5530
    AUTHORIZATIONFAILED), and no one is blocked for it (no guess); the connection still ends
    after imap_auth_times refusals. A wrong password gets the usual answer and counts."""
    with Conversation(tmp_path, auth_times=3, ip_times=0, users=("alice", "bob")) as conv:
        conv.script(f"""
            C: a1 LOGIN bob!alice {PASSWORD}
            S: a1 NO [AUTHORIZATIONFAILED] Not authorized to access that mailbox
            C: a2 LOGIN bob!alice wrong
            S: a2 NO [AUTHENTICATIONFAILED] Authentication failed
            C: a3 LOGIN bob!alice {PASSWORD}
            S: a3 NO [AUTHORIZATIONFAILED] Not authorized to access that mailbox
            S: * BYE Too many failed logins, closing connection
        """)
        assert conv.ctx.auth.user_block_remaining("bob") == 0
        assert conv.ctx.auth.user_block_remaining("alice") == 0
    with Conversation(tmp_path / "guesses", auth_times=2, ip_times=0, users=("alice", "bob")) as conv:
        conv.script("""
            C: a1 LOGIN bob!alice wrong
            S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
            C: a2 LOGIN bob!alice wrong
            S: a2 NO [AUTHENTICATIONFAILED] Authentication failed
            S: * BYE Too many failed logins, closing connection
        """)
        assert conv.ctx.auth.user_block_remaining("bob") > 0  # the actor is blocked


def test_a_disabled_account_is_told_only_with_the_right_password(tmp_path: Path) -> None:
    with Conversation(tmp_path, auth_times=5, ip_times=0, users=("alice",)) as conv:
        conv.store.update_account("alice", disabled=True)
        conv.script(f"""
            C: a1 LOGIN alice wrong
            S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
            C: a2 LOGIN alice {PASSWORD}
            S: a2 NO [CONTACTADMIN] Account disabled; contact your administrator
        """)
        assert conv.session.password_failures == 1  # the right password was no guess
        conv.store.update_account("alice", disabled=False)
        conv.script(f"""
            C: a3 LOGIN alice {PASSWORD}
            S: a3 OK [CAPABILITY {{*}}] Logged in
        """)


def test_a_right_password_without_a_mailbox_is_no_guess(store: Store, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A passwd-file user without a midb account (auto_create off), or a name storage_map has no
    mapping for, gave the right password: refused without counting toward a block or the
    address limit, and logged "refused" (fail2ban does not count it)."""
    passwd = tmp_path / "passwd"
    passwd.write_text(f"dave:{password_hash(PASSWORD)}\n")
    auth = make_service(store, PasswdFileAuth(passwd, store=store), auth_times=2, ip_times=2, auto_create=False)
    unmapped = make_service(store, MidbAuth(store), auth_times=2, ip_times=2,
                            storage_map=NameMap.from_directives("static bob:bob", "auto"))
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        results = [login(auth, "dave") for _ in range(3)] + [login(unmapped, "alice") for _ in range(3)]
    assert [(result.ok, result.refusal, result.guess) for result in results] == [(False, "no mailbox", False)] * 6
    assert [result.reason for result in results] == ["no such mailbox"] * 3 + ["no storage account"] * 3
    for service in (auth, unmapped):
        assert service._ip_failures == {} and service._blocked_users == {}
    assert login(unmapped, "bob").ok  # the address was never blocked
    messages = [record.getMessage() for record in caplog.records if record.name == "gximap.auth"]
    assert messages[0] == f"rhost=[{ADDRESS}]:40000 user=dave LOGIN refused: no such mailbox"
    assert messages[3] == f"rhost=[{ADDRESS}]:40000 user=alice LOGIN refused: no storage account"


def test_a_right_password_without_a_mailbox_is_told_to_contact_the_administrator(tmp_path: Path) -> None:
    """RFC 5530 [CONTACTADMIN]: the credentials are fine, only the administrator can help."""
    with Conversation(tmp_path, auth_times=2, ip_times=0, users=("alice", "bob")) as conv:
        conv.ctx.auth.storage_map = NameMap.from_directives("static bob:bob", "auto")
        conv.script(f"""
            C: a1 LOGIN alice wrong
            S: a1 NO [AUTHENTICATIONFAILED] Authentication failed
            C: a2 LOGIN alice {PASSWORD}
            S: a2 NO [CONTACTADMIN] No mailbox for this account; contact your administrator
            S: * BYE Too many failed logins, closing connection
        """)
        assert conv.session.password_failures == 1  # the right password was no guess: nobody blocked
        assert conv.ctx.auth.user_block_remaining("alice") == 0


def _plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def test_impersonation_through_sessions_login_and_sasl_plain(tmp_path: Path) -> None:
    with Conversation(tmp_path, users=("alice", "bob", "shared")) as conv:
        conv.store.grant_owner("shared", "bob")
        conv.login("bob!shared")
        assert (conv.session.user, conv.session.actor) == ("shared", "bob")
        plain = conv.second_session()
        plain.script(f"""
            C: p1 AUTHENTICATE PLAIN {_plain("shared", "bob", PASSWORD)}
            S: p1 OK [CAPABILITY {{*}}] {{*}}
        """)
        assert (plain.session.user, plain.session.actor) == ("shared", "bob")
        same = conv.second_session()
        same.script(f"""
            C: p2 AUTHENTICATE PLAIN {_plain("bob", "bob", PASSWORD)}
            S: p2 OK [CAPABILITY {{*}}] {{*}}
        """)
        assert (same.session.user, same.session.actor) == ("bob", None)
        denied = conv.second_session()
        denied.script(f"""
            C: p3 AUTHENTICATE PLAIN {_plain("alice", "bob", PASSWORD)}
            S: p3 NO [AUTHORIZATIONFAILED] Not authorized to access that mailbox
        """)
        assert denied.session.user is None


# -- name mapping --------------------------------------------------------------------------------------


def test_auth_map_shares_credentials_storage_map_picks_the_mailbox(store: Store) -> None:
    store.create_account("user", password_hash=password_hash(PASSWORD))
    store.create_account("user@a.example")  # no password of its own: reached only through the map
    auth = make_service(store, MidbAuth(store),
                        auth_map=NameMap.from_directives("email_localpart", "auto"))
    ok = login(auth, "User@A.Example")
    assert (ok.ok, ok.user, ok.actor) == (True, "user@a.example", None)
    assert login(auth, "user").reason == "unknown user name"  # email_localpart: no mapping without @
    assert login(auth, "user@b.example").reason == "no such mailbox"  # credentials fine, no account

    shared = make_service(store, MidbAuth(store),
                          auth_map=NameMap.from_directives("email_localpart_optional", "auto"),
                          storage_map=NameMap.from_directives("email_localpart_optional", "auto"))
    for name in ("user", "user@a.example", "USER@b.example"):
        result = login(shared, name)
        assert (result.ok, result.user) == (True, "user"), name


def test_maps_apply_to_both_sides_of_an_impersonation(store: Store) -> None:
    store.grant_owner("shared", "bob")
    auth = make_service(store, MidbAuth(store),
                        auth_map=NameMap.from_directives(r"regexp ^(.*)@example\.org$ $1", "auto"),
                        storage_map=NameMap.from_directives("email_localpart", "auto"))
    result = login(auth, "Bob@Example.org!Shared@Example.org")
    assert (result.ok, result.user, result.actor) == (True, "shared", "bob")
    assert login(auth, "bob@example.org!shared").reason == "no storage account"


def test_static_map_and_blocks_follow_the_mapped_identity(store: Store) -> None:
    backend = RecordingBackend(users=("alice",))
    auth = make_service(store, backend,
                        auth_map=NameMap.from_directives("static alias@example.org:alice alice:alice", "auto"))
    auth.block_user("Alias@Example.org", RHOST)
    assert auth.user_block_remaining("alice") > 0  # one identity, one block
    assert login(auth, "alice").blocked and backend.calls == []


def test_passwd_file_backend_creates_the_mapped_storage_account(store: Store, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(f"dave:{password_hash(PASSWORD)}\n")
    auth = make_service(store, PasswdFileAuth(passwd, store=store), auto_create=True,
                        auth_map=NameMap.from_directives("email_localpart", "auto"))
    assert store.get_account("dave@d.example") is None
    result = login(auth, "dave@d.example")
    assert (result.ok, result.user) == (True, "dave@d.example")
    assert store.get_account("dave@d.example") is not None


def test_a_name_the_map_lacks_costs_a_password_check_too(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A static or file auth_map lists the real users: a name it lacks must cost the check an
    unknown user's password gets (against the dummy hash), or the answer time tells which names
    exist."""
    checked: list[str] = []
    real_verify = authdb.verify_password

    def recording_verify(password: str, stored: str | None, **kwargs: str | None) -> bool:
        checked.append(stored or "")
        return real_verify(password, stored, **kwargs)

    monkeypatch.setattr(authdb, "verify_password", recording_verify)
    auth = make_service(store, MidbAuth(store), auth_times=100, auth_map=NameMap.from_directives(
        "static alice@example.org:alice nosuch@example.org:nosuch", "auto"))
    dummy = authdb._dummy_hash()
    for name, reason in (("mallory@example.org", "unknown user name"), ("nosuch@example.org", "unknown user")):
        checked.clear()
        assert login(auth, name, "wrong").reason == reason
        assert checked == [dummy], name  # the same single check for a name unlisted and unknown
    checked.clear()
    assert login(auth, "alice@example.org", "wrong").reason == "bad password"
    assert len(checked) == 1 and checked[0] != dummy


def test_names_that_cannot_be_normalized_fail_like_passwords(store: Store) -> None:
    backend = RecordingBackend()
    auth = make_service(store, backend, ip_times=10, clock=FakeClock())
    for name in ("a b", "\u0007", "x" * 5000, ""):
        result = login(auth, name)
        assert not result.ok and not result.blocked
    assert backend.calls == []
    assert len(auth._ip_failures[ADDRESS]) == 4  # they count against the address all the same


def test_the_log_says_why_a_login_failed(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The client hears the same for every failure; the administrator reads the cause (as
    Dovecot logs "unknown user" apart from a wrong password)."""
    store.update_account("bob", disabled=True)
    store.create_account("dora")
    auth = make_service(store, MidbAuth(store), auth_times=100)
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        results = [login(auth, "nosuch"), login(auth, "bob"), login(auth, "dora", ""), login(auth, "alice", "wrong")]
    assert [result.ok for result in results] == [False] * 4
    reasons = [record.getMessage().split(" LOGIN ")[1] for record in caplog.records if record.name == "gximap.auth"]
    # What may be a password guess is "rejected" (fail2ban counts it); the disabled account,
    # named only after the right password, is "refused".
    assert reasons == ["rejected: unknown user", "refused: account disabled", "rejected: no password set",
                       "rejected: bad password"]


def test_every_step_that_meets_an_unreadable_passwd_file_logs_one_unavailable_line(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each step of a check that may read the passwd-file (submit's screening with the
    credential cache, the check itself as the auth socket runs it, a SCRAM lookup and a SCRAM
    verdict) logs the attempt it could not check in one shape: the "unavailable" line, which
    the shipped fail2ban filter does not match. The failure propagates (no verdict)."""
    passwd = tmp_path / "passwd"
    passwd.write_text(f"dave:{{SCRAM-SHA-256}}{derive('pw', iterations=4096).text()}\n")
    auth = make_service(store, PasswdFileAuth(passwd, store=store), auto_create=True,
                        cache=CredentialCache(3600.0, 100))
    lookup = auth.scram_lookup("dave", rhost=RHOST, mech="SCRAM-SHA-256")
    assert lookup.keys is not None
    passwd.unlink()
    passwd.mkdir()  # EISDIR, which even root gets
    steps = [
        lambda: auth.submit("dave", "pw", rhost=RHOST, address=ADDRESS, mech="LOGIN").result(),
        lambda: auth.authenticate("dave", "pw", rhost=RHOST, address=ADDRESS, mech="PLAIN", authzid="shared"),
        lambda: auth.scram_lookup("dave", rhost=RHOST, mech="SCRAM-SHA-256"),
        lambda: auth.scram_result("dave", lookup, None, rhost=RHOST, address=ADDRESS,
                                  mech="SCRAM-SHA-256").result(),
    ]
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        for step in steps:
            with pytest.raises(FileUnavailable):
                step()
    lines = [record.getMessage() for record in caplog.records if record.name == "gximap.auth"]
    assert lines == [f"rhost={RHOST} user={user} {mech} unavailable: passwd-file {passwd} cannot be read"
                     for user, mech in (("dave", "LOGIN"), ("dave!shared", "PLAIN"), ("dave", "SCRAM-SHA-256"),
                                        ("dave", "SCRAM-SHA-256"))]
    failregex = re.search(r"^failregex = (.+)$", FAIL2BAN_FILTER.read_text(), re.M)
    assert failregex is not None
    fail2ban = re.compile(failregex.group(1).replace("<F-USER>", "").replace("</F-USER>", ""))
    assert not any(fail2ban.search(line.split(" ", 1)[1]) for line in lines)  # what follows rhost=[...]:port
    assert auth.user_block_remaining("dave") == 0 and not auth._ip_failures
