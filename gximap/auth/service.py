"""Authentication for IMAP (and later LMTP's and the auth socket's) logins.

Gromox semantics: failures are counted per connection by the session; when a connection reaches
``imap_auth_times`` the *username* is blocked for ``block_interval_auths``, and a blocked user is
refused before any password check, on every connection. Beyond Gromox, failures are also counted
per client address in a sliding window (``imap_auth_ip_times`` / ``imap_auth_ip_window``), so a
password spray over many usernames from one address is refused too.

Password hashing is CPU work: it runs on the calling worker thread (never the poller) and at
most ``hash_concurrency`` at a time, so a burst of logins cannot occupy every worker.

Impersonation: ``actor!mailbox`` (or SASL PLAIN with authzid = mailbox) authenticates the actor
with its own password; access is granted when mailbox == actor or the actor holds store
ownership of the mailbox (``midb owner grant``). Otherwise the login fails and counts.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from gximap import log as gxlog


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    user: str | None = None  # the storage account the session runs as
    actor: str | None = None  # who authenticated, when different from ``user``
    reason: str = ""
    blocked: bool = False  # refused because the user or the address is blocked


def split_identity(login: str, authzid: str | None = None) -> tuple[str, str]:
    """(actor, mailbox) from ``actor!mailbox`` or a SASL authorization identity."""
    if authzid:
        return login, authzid
    actor, sep, mailbox = login.partition("!")
    if sep and actor and mailbox:
        return actor, mailbox
    return login, login


class AuthService:
    def __init__(self, store: Any, backend: Any, *, auth_times: int = 10, block_interval: float = 60.0,
                 ip_times: int = 30, ip_window: float = 300.0, hash_concurrency: int = 2,
                 auto_create: bool = False) -> None:
        self.store = store
        self.backend = backend
        self.auth_times = auth_times
        self.block_interval = block_interval
        self.ip_times = ip_times
        self.ip_window = ip_window
        self.auto_create = auto_create  # the backend vouches for users midb may not know yet
        self._hash_slots = threading.BoundedSemaphore(max(1, hash_concurrency))
        self._lock = threading.Lock()
        self._blocked_users: dict[str, float] = {}  # username -> unblock time (monotonic)
        self._ip_failures: dict[str, deque[float]] = {}

    # -- blocks ---------------------------------------------------------------------------------

    def user_block_remaining(self, username: str) -> float:
        key = username.lower()
        with self._lock:
            until = self._blocked_users.get(key)
            if until is None:
                return 0.0
            remaining = until - time.monotonic()
            if remaining <= 0:
                del self._blocked_users[key]
                return 0.0
            return remaining

    def block_user(self, username: str, rhost: str) -> None:
        with self._lock:
            self._blocked_users[username.lower()] = time.monotonic() + self.block_interval
        gxlog.auth_block(rhost, username, self.block_interval)

    def _address_blocked(self, address: str) -> bool:
        if self.ip_times <= 0:
            return False
        now = time.monotonic()
        with self._lock:
            failures = self._ip_failures.get(address)
            if not failures:
                return False
            while failures and failures[0] <= now - self.ip_window:
                failures.popleft()
            if not failures:
                del self._ip_failures[address]
                return False
            return len(failures) >= self.ip_times

    def _note_address_failure(self, address: str) -> None:
        if self.ip_times <= 0:
            return
        with self._lock:
            failures = self._ip_failures.setdefault(address, deque())
            failures.append(time.monotonic())
            while len(failures) > self.ip_times:
                failures.popleft()

    # -- authentication -------------------------------------------------------------------------

    def authenticate(self, login: str, password: str, *, rhost: str, address: str, mech: str,
                     authzid: str | None = None) -> AuthResult:
        actor, mailbox = split_identity(login, authzid)
        if not actor or not mailbox:
            return self._fail(rhost, address, login, mech, "empty user name")
        if self.user_block_remaining(actor) > 0 or (mailbox != actor and self.user_block_remaining(mailbox) > 0):
            gxlog.auth_failure(rhost, login, mech, "user blocked")
            return AuthResult(False, reason="user blocked", blocked=True)
        if self._address_blocked(address):
            gxlog.auth_failure(rhost, login, mech, "address blocked")
            return AuthResult(False, reason="address blocked", blocked=True)
        with self._hash_slots:
            account = self.backend.authenticate(actor, password)
        if account is None:
            return self._fail(rhost, address, login, mech, "bad password")
        target = mailbox.lower() if mailbox != actor else account
        if self.store.get_account(account) is None and self.auto_create:
            from midb.authdb import ensure_account

            ensure_account(self.store, account)
        if target != account:
            if self.store.get_account(target) is None or not self.store.is_owner(target, account):
                return self._fail(rhost, address, login, mech, "no store ownership")
        elif self.store.get_account(account) is None:
            return self._fail(rhost, address, login, mech, "no such mailbox")
        gxlog.auth_success(rhost, target, mech, account if target != account else None)
        return AuthResult(True, user=target, actor=account if target != account else None)

    def _fail(self, rhost: str, address: str, login: str, mech: str, reason: str) -> AuthResult:
        self._note_address_failure(address)
        gxlog.auth_failure(rhost, login, mech, reason)
        return AuthResult(False, reason=reason)
