"""gximap.auth.cache: verified credentials remembered for a while, and forgotten as soon as what
they were verified against changes (password, disabled flag, passwd-file line)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from conversation import PASSWORD, password_hash
from net_helpers import sibling_processes, wait_until

from gximap.auth.cache import CredentialCache
from gximap.auth.service import AuthService
from gximap.net.siblings import SiblingChannel
from midb.authdb import MidbAuth, PasswdFileAuth
from midb.store import Store

REPO = Path(__file__).resolve().parent.parent
LOGIN: dict[str, Any] = {"rhost": "[192.0.2.7]:40000", "address": "192.0.2.7", "mech": "LOGIN"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class CountingBackend:
    """Wraps a real backend and counts the full password checks that reach it."""

    def __init__(self, inner: MidbAuth | PasswdFileAuth) -> None:
        self.inner = inner
        self.checks = 0
        self._lock = threading.Lock()

    def authenticate(self, user: str, password: str) -> str | None:
        with self._lock:
            self.checks += 1
        return self.inner.authenticate(user, password)

    def exists(self, user: str) -> bool:
        return self.inner.exists(user)

    def credential_stamp(self, user: str) -> str | None:
        return self.inner.credential_stamp(user)

    def failure_reason(self, user: str) -> str:
        return self.inner.failure_reason(user)


# -- the cache alone ---------------------------------------------------------------------------


def test_hit_only_for_the_same_identity_password_and_stamp() -> None:
    cache = CredentialCache(3600, 10)
    cache.remember("alice", "secret", "stamp-1", "alice")
    assert cache.lookup("alice", "secret", "stamp-1") == "alice"
    assert cache.lookup("alice", "Secret", "stamp-1") is None
    assert cache.lookup("alice", "secret", "stamp-2") is None
    assert cache.lookup("bob", "secret", "stamp-1") is None
    assert (cache.hits, cache.misses) == (1, 3)


def test_fields_cannot_be_shifted_into_each_other() -> None:
    cache = CredentialCache(3600, 10)
    cache.remember("alice", "bc", "a", "alice")
    assert cache.lookup("alice", "c", "ab") is None
    assert cache.lookup("alice", "bc", "a") == "alice"


def test_the_password_is_not_kept() -> None:
    cache = CredentialCache(3600, 10)
    cache.remember("alice", "correct horse battery staple", "stamp", "alice")
    kept = repr(vars(cache)) + repr(list(cache._entries.values()))
    assert "correct horse" not in kept
    assert b"correct horse" not in b"".join(entry.digest for entry in cache._entries.values())


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = CredentialCache(60, 10, clock=clock)
    cache.remember("alice", "secret", "s", "alice")
    clock.now += 59
    assert cache.lookup("alice", "secret", "s") == "alice"
    clock.now += 1  # a hit does not extend the life of an entry
    assert cache.lookup("alice", "secret", "s") is None
    assert len(cache) == 0


def test_least_recently_used_users_are_dropped_beyond_capacity() -> None:
    cache = CredentialCache(3600, 2)
    cache.remember("alice", "a", "s", "alice")
    cache.remember("bob", "b", "s", "bob")
    assert cache.lookup("alice", "a", "s") == "alice"  # alice is now the most recent
    cache.remember("carol", "c", "s", "carol")
    assert len(cache) == 2
    assert cache.lookup("bob", "b", "s") is None
    assert cache.lookup("alice", "a", "s") == "alice"
    assert cache.lookup("carol", "c", "s") == "carol"


@pytest.mark.parametrize(("ttl", "capacity"), [(0, 10), (3600, 0)])
def test_zero_ttl_or_capacity_disables(ttl: float, capacity: int) -> None:
    cache = CredentialCache(ttl, capacity)
    cache.remember("alice", "secret", "s", "alice")
    assert not cache.enabled
    assert len(cache) == 0
    assert cache.lookup("alice", "secret", "s") is None


def test_flush_and_forget() -> None:
    cache = CredentialCache(3600, 10)
    cache.remember("alice", "a", "s", "alice")
    cache.remember("bob", "b", "s", "bob")
    cache.forget("alice")
    assert cache.lookup("alice", "a", "s") is None
    assert cache.flush() == 1
    assert cache.lookup("bob", "b", "s") is None


def test_separate_caches_use_separate_keys() -> None:
    first, second = CredentialCache(3600, 10), CredentialCache(3600, 10)
    first.remember("alice", "a", "s", "alice")
    second.remember("alice", "a", "s", "alice")
    assert first._entries["alice"].digest != second._entries["alice"].digest


# -- shared between serving processes (imap_process_num > 1) ----------------------------------------


def test_an_entry_verified_in_one_process_answers_in_the_other() -> None:
    parent, first, second = sibling_processes()
    try:
        one, two = CredentialCache(3600, 10), CredentialCache(3600, 10)
        one.share_with(first)
        two.share_with(second)
        one.remember("alice", "secret", "stamp-1", "alice")
        assert wait_until(lambda: len(two) == 1)
        assert two.lookup("alice", "secret", "stamp-1") == "alice"
        assert two.lookup("alice", "wrong", "stamp-1") is None
        assert two.lookup("alice", "secret", "stamp-2") is None  # changed since: a miss there too
        assert one._entries["alice"] == two._entries["alice"]
    finally:
        first.close()
        second.close()
        parent.close_sockets()


def test_a_sibling_entry_never_replaces_a_later_one_and_is_ignored_once_expired() -> None:
    clock = FakeClock()
    cache = CredentialCache(3600, 10, clock=clock)
    cache.share_with(SiblingChannel([], b"k" * 32))
    cache.remember("alice", "new", "stamp-2", "alice")
    cache._on_sibling_entry(1, {"identity": "alice", "account": "alice", "digest": "00" * 32,
                                "expires": clock.now + 10})  # checked before ours: older
    assert cache.lookup("alice", "new", "stamp-2") == "alice"
    cache._on_sibling_entry(1, {"identity": "bob", "account": "bob", "digest": "00" * 32,
                                "expires": clock.now - 1})
    assert len(cache) == 1


def test_sharing_derives_the_key_from_the_channel_secret_and_drops_older_entries() -> None:
    one, two = CredentialCache(3600, 10), CredentialCache(3600, 10)
    one.remember("carol", "c", "s", "carol")
    one.share_with(SiblingChannel([], b"s" * 32))
    two.share_with(SiblingChannel([], b"s" * 32))
    assert len(one) == 0
    one.remember("alice", "a", "s", "alice")
    two.remember("alice", "a", "s", "alice")
    assert one._entries["alice"].digest == two._entries["alice"].digest
    other = CredentialCache(3600, 10)
    other.share_with(SiblingChannel([], b"t" * 32))  # another daemon
    other.remember("alice", "a", "s", "alice")
    assert other._entries["alice"].digest != one._entries["alice"].digest


def test_a_login_verified_by_one_process_skips_the_hash_in_the_other(tmp_path: Path) -> None:
    store = Store(tmp_path / "midb", fsync=False, data_path=[str(REPO / "data")])
    store.create_account("alice", password_hash=password_hash(PASSWORD))
    parent, first, second = sibling_processes()
    services: list[AuthService] = []
    try:
        backend = CountingBackend(MidbAuth(store))
        for channel in (first, second):
            service = _service(store, backend)
            service.share_with(channel)
            services.append(service)
        assert services[0].authenticate("alice", PASSWORD, **LOGIN).ok
        assert wait_until(lambda: services[1].cache is not None and len(services[1].cache) == 1)
        assert services[1].authenticate("alice", PASSWORD, **LOGIN).user == "alice"
        assert backend.checks == 1
        assert not services[1].authenticate("alice", "wrong", **LOGIN).ok
        assert backend.checks == 2
    finally:
        for service in services:
            service.close()
        first.close()
        second.close()
        parent.close_sockets()
        store.close()


# -- through AuthService and the real backends -----------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "midb", fsync=False, data_path=[str(REPO / "data")])
    for name in ("alice", "bob"):
        store.create_account(name, password_hash=password_hash(PASSWORD))
    yield store
    store.close()


def _service(store: Store, backend: CountingBackend, cache: CredentialCache | None = None,
             **kwargs: object) -> AuthService:
    return AuthService(store, backend, cache=cache if cache is not None else CredentialCache(3600, 100), **kwargs)  # type: ignore[arg-type]


def test_second_login_skips_the_hash(store: Store) -> None:
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert auth.authenticate("Alice", PASSWORD, **LOGIN).user == "alice"
    assert backend.checks == 1
    assert auth.cache is not None and auth.cache.hits == 1


def test_a_cache_hit_does_not_wait_for_the_hashing_threads(store: Store) -> None:
    """The cache is looked up by submit() itself: a login it answers is done while every hashing
    thread is busy and other checks wait in the queue (a flood of LOGINs once delayed such a login
    by 11 s). A miss waits its turn, and is looked up again then."""
    entered, release = threading.Event(), threading.Event()

    class HeldBackend(CountingBackend):
        def authenticate(self, user: str, password: str) -> str | None:
            if password == "held":
                entered.set()
                release.wait(10)
            return super().authenticate(user, password)

    backend = HeldBackend(MidbAuth(store))
    auth = _service(store, backend, hash_concurrency=1, ip_times=0)
    try:
        assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
        busy = auth.submit("bob", "held", **LOGIN)
        assert entered.wait(10)
        queued = auth.submit("bob", PASSWORD, **LOGIN)
        cached = auth.submit("alice", PASSWORD, **LOGIN)
        assert cached.done() and cached.result().user == "alice"
        assert not queued.done()
        release.set()
        assert not busy.result(10).ok and queued.result(10).ok
        assert backend.checks == 3  # alice once, bob twice: the hit cost no check
    finally:
        release.set()
        auth.close()


def test_wrong_password_is_always_checked_in_full_and_never_cached(store: Store) -> None:
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend, auth_times=100, ip_times=0)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    for _ in range(3):
        assert not auth.authenticate("alice", "wrong", **LOGIN).ok
    assert backend.checks == 4
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok  # the good entry survives bad guesses
    assert backend.checks == 4


def test_password_change_takes_effect_at_once(store: Store) -> None:
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend, ip_times=0)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    store.update_account("alice", password_hash=password_hash("new password"))
    assert not auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert auth.authenticate("alice", "new password", **LOGIN).ok
    assert backend.checks == 3


def test_disabling_an_account_takes_effect_at_once(store: Store) -> None:
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend, ip_times=0)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    store.update_account("alice", disabled=True)
    assert not auth.authenticate("alice", PASSWORD, **LOGIN).ok
    store.update_account("alice", disabled=False)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok


def test_a_blocked_user_gets_in_with_the_password_the_cache_holds(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """A stranger's failures block alice's name; her clients, which log in with the password
    verified before the block, get in without a hash (lead's decision: the cache's entry passes a
    user block), logged so that a sysadmin tells it from a plain login. A guess during the block
    is refused as before: unhashed, no guess counted."""
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend, auth_times=1, block_interval=60.0, ip_times=2)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    auth.block_user("alice", "[198.51.100.66]:50000")
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        result = auth.authenticate("alice", PASSWORD, **LOGIN)
        assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert result.ok and result.user == "alice"
    assert [record.getMessage() for record in caplog.records if record.name == "gximap.auth"] == \
        [f"rhost={LOGIN['rhost']} user=alice LOGIN ok (user blocked; password matched the cache)"] * 2
    guess = auth.authenticate("alice", "guess", **LOGIN)
    assert (guess.ok, guess.blocked, guess.guess, guess.reason) == (False, True, False, "user blocked")
    assert not auth.authenticate("Alice", "guess", **LOGIN).ok
    assert backend.checks == 1  # the first login only: neither the hit nor the guesses were hashed
    assert not auth._ip_failures  # the refused guesses counted toward no address block either
    assert auth.user_block_remaining("alice") > 0  # the block stays for everyone else


def test_the_cache_passes_a_blocked_mailbox_for_its_actor(store: Store) -> None:
    """actor!mailbox is refused while either name is blocked; the actor's cached password passes
    both, as it proves what the login checks (the actor's password); store ownership still holds."""
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend, ip_times=0)
    store.grant_owner("bob", "alice")
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    auth.block_user("bob", LOGIN["rhost"])
    auth.block_user("alice", LOGIN["rhost"])
    result = auth.authenticate("alice!bob", PASSWORD, **LOGIN)
    assert result.ok and (result.user, result.actor) == ("bob", "alice")
    assert auth.authenticate("bob", PASSWORD, **LOGIN).blocked  # bob's own password is not cached
    assert backend.checks == 1


def test_an_address_block_refuses_a_cache_hit(store: Store) -> None:
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend, ip_times=2, ip_window=300.0)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    for _ in range(2):
        assert not auth.authenticate("bob", "guess", **LOGIN).ok
    refused = auth.authenticate("alice", PASSWORD, **LOGIN)
    assert (refused.ok, refused.blocked, refused.reason) == (False, True, "address blocked")
    auth.block_user("alice", LOGIN["rhost"])  # blocked both ways: the address block still refuses
    assert auth.authenticate("alice", PASSWORD, **LOGIN).reason == "address blocked"
    other = dict(LOGIN, rhost="[192.0.2.8]:40000", address="192.0.2.8")
    assert auth.authenticate("alice", PASSWORD, **other).ok  # from elsewhere the hit passes
    assert backend.checks == 3


def test_a_blocked_user_without_a_usable_entry_is_refused_until_the_block_ends(store: Store) -> None:
    """No entry passes a block when it has expired (imap_auth_cache_ttl after the check that made
    it), nor after a password change (the stored credentials no longer match it): a full check
    would be a guess, so the login is refused unhashed, as every login was during a block before."""
    clock = FakeClock()
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend, CredentialCache(100, 10, clock=clock), ip_times=0, clock=clock,
                    block_interval=300.0)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert auth.authenticate("bob", PASSWORD, **LOGIN).ok
    auth.block_user("alice", LOGIN["rhost"])
    auth.block_user("bob", LOGIN["rhost"])
    store.update_account("bob", password_hash=password_hash("new password"))
    assert auth.authenticate("bob", "new password", **LOGIN).blocked
    assert auth.authenticate("bob", PASSWORD, **LOGIN).blocked
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    clock.now += 100
    assert auth.authenticate("alice", PASSWORD, **LOGIN).blocked  # the entry expired
    assert backend.checks == 2
    clock.now += 200  # the blocks end: full checks again, which renew the entries
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert auth.authenticate("bob", "new password", **LOGIN).ok
    assert backend.checks == 4


def test_without_a_cache_a_block_refuses_the_right_password(store: Store) -> None:
    """imap_auth_cache_ttl = 0: Gromox's block, which refuses everyone."""
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend, CredentialCache(0, 100), ip_times=0)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    auth.block_user("alice", LOGIN["rhost"])
    assert auth.authenticate("alice", PASSWORD, **LOGIN).blocked
    assert backend.checks == 1


def test_impersonation_checks_ownership_on_a_cache_hit(store: Store) -> None:
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend, ip_times=0)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert not auth.authenticate("alice!bob", PASSWORD, **LOGIN).ok  # no ownership, though cached
    store.grant_owner("bob", "alice")
    result = auth.authenticate("alice!bob", PASSWORD, **LOGIN)
    assert result.ok and result.user == "bob" and result.actor == "alice"
    assert backend.checks == 1


def test_flush_cache_makes_the_next_login_check_in_full(store: Store) -> None:
    backend = CountingBackend(MidbAuth(store))
    auth = _service(store, backend)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert auth.flush_cache() == 1
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert backend.checks == 2


def test_backend_without_stamps_is_never_cached(store: Store) -> None:
    class NoStamps:
        checks = 0

        def authenticate(self, user: str, password: str) -> str | None:
            NoStamps.checks += 1
            return user if password == PASSWORD else None

        def exists(self, user: str) -> bool:
            return True

        def failure_reason(self, user: str) -> str:
            return "bad password"

    auth = AuthService(store, NoStamps(), cache=CredentialCache(3600, 10))
    assert auth.cache is None
    for _ in range(2):
        assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert NoStamps.checks == 2


def test_passwd_file_edits_take_effect_at_once(store: Store, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{password_hash(PASSWORD)}\n")
    backend = CountingBackend(PasswdFileAuth(passwd, store=store))
    auth = _service(store, backend, ip_times=0)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert backend.checks == 1
    # nologin added, same password hash: refused without a stale hit
    passwd.write_text(f"alice:{password_hash(PASSWORD)}::::::nologin\n")
    os.utime(passwd, ns=(1, 1))
    assert not auth.authenticate("alice", PASSWORD, **LOGIN).ok
    passwd.write_text(f"alice:{password_hash('another')}\n")
    os.utime(passwd, ns=(2, 2))
    assert not auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert auth.authenticate("alice", "another", **LOGIN).ok


def test_a_change_racing_with_the_check_leaves_no_usable_entry(store: Store) -> None:
    """The stamp is read before the hash is checked: a password changed meanwhile leaves an entry
    under the old stamp, which the next login (reading the new stamp) does not match."""
    inner = MidbAuth(store)

    class ChangesDuringCheck(CountingBackend):
        def authenticate(self, user: str, password: str) -> str | None:
            result = super().authenticate(user, password)
            if self.checks == 1:
                store.update_account("alice", password_hash=password_hash("changed"))
            return result

    backend = ChangesDuringCheck(inner)
    auth = _service(store, backend, ip_times=0)
    assert auth.authenticate("alice", PASSWORD, **LOGIN).ok  # verified against the old hash
    assert not auth.authenticate("alice", PASSWORD, **LOGIN).ok
    assert backend.checks == 2


# -- the real daemon: two serving processes, the midb tool changing credentials meanwhile ---------


def test_daemon_notices_password_change_and_disable_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    from e2e import GximapProcess, LineClient

    proc = GximapProcess(tmp_path, tls=False, extra={"imap_process_num": "2"}).start()

    def login(password: str) -> bool:
        client = LineClient(proc.port)
        try:
            client.readline()
            reply = client.command("a", f'LOGIN alice "{password}"')[-1]
            return reply.startswith(b"a OK")
        finally:
            client.close()

    def midb(*args: str, stdin: str = "") -> None:
        subprocess.run([sys.executable, "-m", "midb", "-c", str(proc.config_path), *args], input=stdin,
                       text=True, check=True, capture_output=True, timeout=60)

    try:
        # Several connections, so that both processes have "secret" cached.
        assert all(login("secret") for _ in range(6))
        midb("user", "passwd", "alice", "--password-stdin", stdin="changed\n")
        assert not any(login("secret") for _ in range(4))
        assert login("changed")
        midb("user", "disable", "alice")
        assert not login("changed")
        midb("user", "enable", "alice")
        assert login("changed")
    finally:
        proc.stop()
