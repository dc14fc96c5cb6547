"""A cache of recently verified credentials, so that a client logging in again does not pay for
the password hash again (the analogue of Dovecot's ``auth_cache``).

Why: gximap hashes new passwords with scrypt at a cost of about 45 ms of CPU per check, which is
what protects the stored hashes if the account table leaks. Clients such as K-9, Delta Chat and
mbsync open a new connection, and log in again, every few minutes; paying 45 ms each time would
make password hashing most of the server's work. After one successful check, the cache answers
the same user with the same password from memory until ``imap_auth_cache_ttl`` has passed.

What is kept: per authentication identity, an HMAC-SHA-256 of (identity, password, credential
stamp) under a key drawn at random when the process starts (with several processes, when the
daemon starts), the account name the backend vouched for, and an expiry time. The password
itself is never kept. Someone who can read the process's memory could test guesses against
that HMAC quickly, but could equally read the passwords of the logins arriving; nothing on
disk changes.

Invalidation: the *credential stamp* is what the backend's check depends on (the stored hash, and
whether the account is disabled; see ``credential_stamp`` in midb.authdb), read before every
lookup. Changing a password, disabling an account or editing its passwd-file line changes the
stamp, so the next login misses and is checked against the backend. Only successes are cached:
a wrong password always costs the full hash, and a right one is never refused by a stale entry
longer than the backend would refuse it. SIGHUP flushes the cache.

An entry also lets its user in through a user block (block_interval_auths): a stranger's guesses
can block the name, but not the clients that know the password (gximap.auth.service). While
blocked, a password the cache does not hold is refused unhashed, so an entry that expired or no
longer matches is only renewed after the block.

Several serving processes (imap_process_num > 1) share what they verify: each entry is sent to
the siblings (gximap.net.siblings), and the HMAC key is derived from the channel's secret, which
the parent drew before forking, so an entry means the same in every process. Why: the processes
share the listeners and a client's next connection reaches any of them; with a cache per process
each account paid the full hash once per process, a burst of them after every start. A
restarted process starts empty and learns from the logins that follow.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    account: str
    expires: float  # monotonic seconds


def _field(text: str) -> bytes:
    """Length-prefixed, so that no two (identity, stamp, password) triples share an encoding."""
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(4, "big") + raw


class CredentialCache:
    """Successful password checks, keyed by identity; bounded in age (``ttl`` seconds) and in
    number (``capacity`` identities, the least recently used dropped first). Thread-safe."""

    def __init__(self, ttl: float, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = max(0.0, float(ttl))
        self.capacity = max(0, int(capacity))
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._siblings: Any = None  # gximap.net.siblings.SiblingChannel, when sharing
        self.hits = 0
        self.misses = 0

    def share_with(self, channel: Any) -> None:
        """Share verified credentials with sibling processes: the HMAC key becomes the one they
        all derive from ``channel.secret``; entries remembered here are sent to them, and theirs
        are taken in (see the module docstring)."""
        key = hmac.new(channel.secret, b"gximap credential cache", hashlib.sha256).digest()
        with self._lock:
            self._key = key
            self._entries.clear()  # made under the old key: they would never match again
            self._siblings = channel
        channel.on("auth-cached", self._on_sibling_entry)

    def _on_sibling_entry(self, sender: int, message: dict[str, Any]) -> None:
        identity, account = str(message["identity"]), str(message["account"])
        entry = _Entry(bytes.fromhex(str(message["digest"])), account, float(message["expires"]))
        if entry.expires <= self._clock():
            return
        with self._lock:
            current = self._entries.get(identity)
            if current is None or current.expires < entry.expires:  # the later check wins
                self._store_locked(identity, entry)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.capacity > 0

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, identity: str, password: str, stamp: str) -> bytes:
        message = _field(identity) + _field(stamp) + _field(password)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def lookup(self, identity: str, password: str, stamp: str) -> str | None:
        """The account name vouched for when ``password`` was verified for ``identity`` with the
        credentials ``stamp`` describes, within the TTL; else None (a miss: check the backend)."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(identity)
            if entry is not None and entry.expires <= self._clock():
                del self._entries[identity]
                entry = None
            if entry is None:
                self.misses += 1
                return None
        # The HMAC is computed outside the lock; the comparison is constant-time.
        if not hmac.compare_digest(entry.digest, self._digest(identity, password, stamp)):
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            if self._entries.get(identity) is entry:
                self._entries.move_to_end(identity)
            self.hits += 1
        return entry.account

    def remember(self, identity: str, password: str, stamp: str, account: str) -> None:
        """Record a successful check. ``stamp`` must have been read before the check ran, so that a
        change racing with the check leaves an entry that no longer matches."""
        if not self.enabled:
            return
        entry = _Entry(self._digest(identity, password, stamp), account, self._clock() + self.ttl)
        with self._lock:
            self._store_locked(identity, entry)
            siblings = self._siblings
        if siblings is not None:
            # Expiry in monotonic seconds, which are the same clock in every process (as for
            # the blocks AuthService shares).
            siblings.send("auth-cached", identity=identity, account=account,
                          digest=entry.digest.hex(), expires=entry.expires)

    def _store_locked(self, identity: str, entry: _Entry) -> None:
        self._entries.pop(identity, None)
        self._entries[identity] = entry
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, identity: str) -> None:
        with self._lock:
            self._entries.pop(identity, None)

    def flush(self) -> int:
        """Drop every entry (SIGHUP); returns how many there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            return count
