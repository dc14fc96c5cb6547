"""Authentication for IMAP logins and the auth socket's (gximap.authsock).

Gromox semantics: failures are counted per connection by the session; when a connection reaches
``imap_auth_times`` the *username* is blocked for ``block_interval_auths``, and a blocked user is
refused before any password check, on every connection (such a refusal, or one for a blocked
address, does not count toward a block: it is no guess; it is logged "refused", not "rejected",
so fail2ban does not count it either). One exception: a login whose password the credential cache
holds (gximap.auth.cache: verified within ``imap_auth_cache_ttl``) passes a user block. Anyone
can start a block by guessing, so without it a stranger could lock a user out; a guesser cannot
hit the cache without the password, so guessing stays blocked, while the user's clients, which
log in again with the right password, keep working. A miss (a wrong password, an entry expired
or made before a password change, no cache) is refused unhashed as before. The cache is the
process's: with several processes each has the entries it verified or its siblings sent it (a
restarted process starts empty), and the pass holds where the entry is. An *address* block
refuses everything, a cache hit included. Beyond Gromox, failures are also counted
per client address in a sliding window (``imap_auth_ip_times`` / ``imap_auth_ip_window``), so a
password spray over many usernames from one address is refused too. IPv6 clients are counted per
/64 network, the block an ISP hands one customer, so address rotation within it does not help.

Password hashing is CPU work: IMAP sessions hand it to :meth:`AuthService.submit`, a small
executor of ``hash_concurrency`` threads, and park the command until it is done, so a burst of
logins never occupies the pool's workers (other sessions keep being served) nor the poller.
hashlib's KDFs release the GIL, so the hashing threads really run beside the workers. Direct
:meth:`authenticate` calls (the auth socket) share the same bound through a semaphore.

What needs no hash is decided in :meth:`submit` itself, on the calling worker: a name that is not
UTF-8 or empty, a blocked user or address, a credential-cache hit. Only the rest waits in the
executor's queue, so none of these answers waits behind other clients' hashing (a flood of
LOGINs delayed a login the cache would answer by 11 s). A check still queued is re-screened when
its turn comes (a block may have begun meanwhile), and the caller cancels its future when its
client leaves (IMAP's LOGIN does: gximap.session.commands.auth), so a check nobody waits for is
never hashed. The queue is not bounded beyond that: each IMAP session has at most one check
pending, so it holds at most one per context (``context_num``), and a check still queued at the
session's login deadline is cancelled with the session. A fixed bound would answer NO to the
burst of legitimate logins after a restart (the cache is empty then) that now merely wait, and
under a flood it would give legitimate clients no service either, only a faster NO.

A successful check is remembered for ``imap_auth_cache_ttl`` (gximap.auth.cache), so a client
that logs in again with the same password is answered without hashing it again; the cache is
looked up after the address check; for a blocked user, a hit lets the login through (above) and
a miss is refused unhashed, so a guess during a block costs nothing and counts for nothing.

Name mapping (gximap.auth.maps): the login name goes through ``auth_map`` to the identity whose
password the backend checks, and through ``storage_map`` to the midb account the session runs as.
Both default to "identity" after the "auto" normalization (PRECIS, RFC 8265). A name auth_map has
no mapping for costs a password check all the same (against a dummy hash, as an unknown user's
does), so the answer time does not tell which names a static or file map lists.

With several serving processes (imap_process_num), blocks and address failures are shared
through the sibling channel (gximap.net.siblings): each process tells the others what it
records, so a user blocked in one process is blocked in all, and an address's failures add up
across them. Times are CLOCK_MONOTONIC readings, the same clock in every process of the host.
Both are merged, never added: a block keeps the later end, and an address's failures are a set
of times. So the whole state can be sent again to a sibling that lost messages (it restarted,
or its queue was full: SiblingChannel.on_resync) without a failure counting twice.

A failure's answer waits ``failure_delay`` (imap_auth_failure_delay) once it is decided, logged
and counted: :meth:`failure_pause` gives the callers (the IMAP session, the auth socket) a future
that one timer thread per process completes (gximap.auth.delay), which they await holding no thread.

Impersonation: ``actor!mailbox`` (or SASL PLAIN with authzid = mailbox) authenticates the actor
with its own password; access is granted when mailbox == actor (after mapping) or the actor's
storage account holds store ownership of the mailbox's (``midb owner grant``). Otherwise the login
fails, and the client is told it may not act as that mailbox (IMAP ``[AUTHORIZATIONFAILED]``).

A passwd-file or map file that cannot be read (midb.errors.FileUnavailable, midb.filewatch) is
no verdict: the check raises it, as store trouble, after logging the attempt as "unavailable"
(gximap.log.auth_unavailable), which counts toward no block and which fail2ban's filter skips;
the caller answers with a temporary failure (IMAP NO [UNAVAILABLE], auth socket FAIL temp).

Refusals after a right password (the account disabled, impersonation not granted, no midb
account for the user: storage_map has no mapping, or the account is missing and not
auto_created; the caller's ``hold`` declining, an IMAP session over imap_max_conn_per_user_ip)
say why, as Dovecot's do; they are no guess and count toward no block
(AuthResult.guess), nor for fail2ban. A wrong password gets the same answer whatever the
account's state, so nothing is told without the password.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from gximap import log as gxlog
from gximap.auth.cache import CredentialCache
from gximap.auth.delay import DELAYS
from gximap.auth.maps import NameMap, UnmappedName
from gximap.auth.scram import DecoySalts
from gximap.net.proxy import address_key
from gximap.net.siblings import chunks
from midb.authdb import (
    AccountDisabled,
    AuthBackend,
    ScramAuthBackend,
    ScramCensusBackend,
    ScramKeys,
    StampedAuthBackend,
    verify_dummy_password,
)
from midb.errors import FileUnavailable
from midb.scram import ScramCredential

# Bounds on the bookkeeping, so that an attack from very many addresses or against very many
# user names cannot grow memory without limit. Beyond them, expired entries are swept and then
# the oldest ones dropped.
MAX_TRACKED_ADDRESSES = 65536
MAX_BLOCKED_USERS = 65536
_SWEEP_EVERY = 4096  # bookkeeping updates between sweeps of expired entries
_SWEEP_AT_BOUND_EVERY = 256  # ... and at most, while a table is at its bound
# The surrogate escapes of bytes that were not UTF-8 (bytes.decode(..., "surrogateescape")).
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    user: str | None = None  # the storage account the session runs as
    actor: str | None = None  # who authenticated, when different from ``user``
    reason: str = ""
    # Why a refusal was no guess, if it was none: BLOCKED (the user or the address is blocked
    # already); DISABLED, UNAUTHORIZED, NO_MAILBOX or LIMITED (the password was right, but the
    # account may not log in, may not act as the mailbox it named, has no midb account to run
    # as, or holds as many sessions from the address as it may: the client is told so).
    refusal: str = ""
    # A success whose log line waits for the login's end (log_success): a SCRAM login's, which
    # the client may still cancel after the verdict (AuthService.scram_result).
    success_log: SuccessLog | None = field(default=None, repr=False, compare=False)

    def log_success(self) -> None:
        """The login is done: log the success that waited for it (none for any other result)."""
        if self.success_log is not None:
            self.success_log.write()

    @property
    def blocked(self) -> bool:
        return self.refusal == BLOCKED

    @property
    def guess(self) -> bool:
        """A failure that may be someone guessing passwords: counted toward blocking the user."""
        return not (self.ok or self.refusal)


@dataclass(frozen=True, slots=True)
class SuccessLog:
    """The ``ok`` line of a login (gximap.log.auth_success), to be written when it is done."""

    rhost: str
    user: str
    mech: str
    actor: str | None
    note: str

    def write(self) -> None:
        gxlog.auth_success(self.rhost, self.user, self.mech, self.actor, self.note)


BLOCKED, DISABLED, UNAUTHORIZED, NO_MAILBOX = "blocked", "disabled", "unauthorized", "no mailbox"  # AuthResult.refusal
# The note of a login that a user block let in (_screen): a sysadmin tells it from a plain "ok",
# as the block says someone else was failing as this user.
THROUGH_BLOCK = "user blocked; password matched the cache"
LIMITED = "limited"  # AuthResult.refusal: the caller's ``hold`` said no (imap_max_conn_per_user_ip)

# A login's last say after a right password (submit's ``hold``): given the storage account the
# session would run as, False refuses the login (LIMITED). Called on whichever thread decides.
Hold = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class ScramLookup:
    """The keys a SCRAM exchange checks the client's proof against (AuthService.submit_scram_lookup)."""

    identity: str  # whose keys: auth_map's identity, or the name as given when it maps to none
    credential: ScramCredential = field(repr=False)  # the real keys, or a decoy's (gximap.auth.scram)
    keys: ScramKeys | None = field(default=None, repr=False)  # None: a decoy, no proof can match
    reason: str = ""  # why there are no keys, for the log line of the failure


class Delays(Protocol):
    """What answers wait on (gximap.auth.delay.DelayTimer; tests pass one run by a fake clock)."""

    def after(self, seconds: float) -> Future[None]: ...


# The credential cache's name for a user's SCRAM entries, apart from its password entry (one per
# name): a NUL is in no login name (PLAIN splits on it, LOGIN strings cannot hold it).
_SCRAM_CACHE_PREFIX = "\x00scram\x00"


def split_identity(login: str, authzid: str | None = None) -> tuple[str, str]:
    """(actor, mailbox) from ``actor!mailbox`` or a SASL authorization identity."""
    if authzid:
        return login, authzid
    actor, sep, mailbox = login.partition("!")
    if sep and actor and mailbox:
        return actor, mailbox
    return login, login


class AuthService:
    def __init__(self, store: Any, backend: AuthBackend, *, auth_times: int = 10, block_interval: float = 60.0,
                 ip_times: int = 30, ip_window: float = 300.0, hash_concurrency: int = 2,
                 auto_create: bool = False, auth_map: NameMap | None = None,
                 storage_map: NameMap | None = None, clock: Callable[[], float] = time.monotonic,
                 executor: Executor | None = None, cache: CredentialCache | None = None,
                 failure_delay: float = 0.0, delays: Delays | None = None) -> None:
        self.store = store
        self.backend = backend
        self.auth_times = auth_times
        self.block_interval = block_interval
        self.ip_times = ip_times
        self.ip_window = ip_window
        self.auto_create = auto_create  # the backend vouches for users midb may not know yet
        # Seconds a failed login's answer waits (imap_auth_failure_delay; 0: none); SIGHUP sets it.
        self.failure_delay = failure_delay
        self.delays: Delays = delays if delays is not None else DELAYS  # tests pass a fake clock's
        self.auth_map = auth_map if auth_map is not None else NameMap()
        self.storage_map = storage_map if storage_map is not None else NameMap()
        self._clock = clock  # monotonic seconds; tests pass a fake one
        self._hash_slots = threading.BoundedSemaphore(max(1, hash_concurrency))
        # Tests of the sans-IO session pass an executor that runs the check inline.
        self._executor = executor or ThreadPoolExecutor(max_workers=max(1, hash_concurrency),
                                                        thread_name_prefix="gximap-auth")
        self._lock = threading.Lock()
        self._blocked_users: dict[str, float] = {}  # block key -> unblock time (monotonic)
        self._ip_failures: dict[str, deque[float]] = {}  # address key -> failure times (monotonic)
        self._updates = 0
        self._swept_at = 0  # the update of the last sweep
        self._siblings: Any = None  # gximap.net.siblings.SiblingChannel, when sharing
        # Verified credentials (gximap.auth.cache), for backends that can say when theirs change.
        # A disabled cache is dropped here, so that logins do not read the stamp for nothing.
        # (A protocol isinstance costs microseconds: decided once, not at every login.)
        self._stamped_backend = backend if isinstance(backend, StampedAuthBackend) else None
        self.cache = (cache if cache is not None and cache.enabled and self._stamped_backend is not None
                      else None)
        self._scram_backend = backend if isinstance(backend, ScramAuthBackend) else None
        site_secret = getattr(store, "site_secret", None)
        self.decoys = DecoySalts(source=None if site_secret is None else
                                 lambda: site_secret(b"gximap scram decoy salts"),
                                 population=(backend.scram_iteration_counts
                                             if isinstance(backend, ScramCensusBackend) else None))

    def share_with(self, channel: Any) -> None:
        """Share blocks, address failures and verified credentials with sibling processes
        (gximap.net.siblings)."""
        self._siblings = channel
        channel.on("auth-block", self._on_sibling_block)
        channel.on("auth-fail", self._on_sibling_failures)
        channel.on("auth-state", self._on_sibling_state)
        # Not periodic: under attack the tables hold up to 2 x 65,536 entries, and what is
        # lost expires by itself (block_interval_auths, imap_auth_ip_window).
        channel.on_resync(self._send_state)
        self.decoys.share_secret(channel.secret)
        if self.cache is not None:
            self.cache.share_with(channel)

    def _on_sibling_block(self, sender: int, message: dict[str, Any]) -> None:
        with self._lock:
            self._merge_block_locked(str(message["key"]), float(message["until"]))

    def _on_sibling_failures(self, sender: int, message: dict[str, Any]) -> None:
        with self._lock:
            self._merge_failures_locked(str(message["key"]), message["times"])

    def _on_sibling_state(self, sender: int, message: dict[str, Any]) -> None:
        with self._lock:
            for key, until in message.get("blocks", []):
                self._merge_block_locked(str(key), float(until))
            for key, times in message.get("failures", []):
                self._merge_failures_locked(str(key), times)

    def _merge_block_locked(self, key: str, until: float) -> None:
        if self._blocked_users.get(key, 0.0) < until:
            self._blocked_users.pop(key, None)
            self._blocked_users[key] = until
            self._housekeeping_locked()

    def _merge_failures_locked(self, key: str, times: list[Any]) -> None:
        """A set union: times already known (a failure told again) do not count twice."""
        failures = self._ip_failures.get(key)
        if failures is None:
            failures = self._ip_failures[key] = deque()
        merged = sorted(set(failures).union(float(when) for when in times))[-max(self.ip_times, 1):]
        failures.clear()
        failures.extend(merged)
        self._housekeeping_locked()

    def _send_state(self, index: int) -> None:
        """Send sibling ``index`` the blocks and failures it may have missed (it restarted, or
        messages to it were dropped): SiblingChannel.on_resync. Sent in parts; every part can
        be applied alone."""
        with self._lock:
            blocks = list(self._blocked_users.items())
            addresses = list(self._ip_failures)
        for kind, items in (("blocks", blocks), ("failures", self._failure_times(addresses))):
            for part in chunks(items):
                if not self._siblings.send_state_to(index, "auth-state", **{kind: part}):
                    return  # its queue is full: the drop has all of it sent again later

    def _failure_times(self, addresses: list[str]) -> Iterator[tuple[str, list[float]]]:
        """The failure times of each of ``addresses``, copied as its part is about to be sent,
        under the lock one address at a time: copying all 65,536 at once held the lock that
        every login takes for a tenth of a second or more, each _RESYNC_GAP while a sibling
        did not read (and its state stopped at the first part)."""
        for key in addresses:
            with self._lock:
                times = self._ip_failures.get(key)
                copied = list(times) if times else None
            if copied:
                yield key, copied

    def submit(self, login: str, password: str, *, rhost: str, address: str, mech: str,
               authzid: str | None = None, hold: Hold | None = None) -> Future[AuthResult]:
        """:meth:`authenticate`, with any password hashing on the hashing executor; the caller
        awaits the future, and cancels it if it stops waiting (its client left): a check not
        begun then never runs. What needs no hash (a blocked user or address, a cache hit, a
        malformed name) is decided here, on the calling thread: the future is done at once.
        ``hold``: the caller's last say once the password is right and the account known (an
        IMAP session counts itself against imap_max_conn_per_user_ip), on the thread deciding;
        a refusal is logged like the others after a right password."""
        attempt = _Attempt.of(login, password, rhost=rhost, address=address, mech=mech, authzid=authzid,
                              hold=hold)
        try:
            with _unavailable_logged(attempt):
                decided = self._screen(attempt) or self._answer_from_cache(attempt)
        except Exception as exc:  # noqa: BLE001 - store trouble (StoreBusy): raised by the future, as the executor's
            failed: Future[AuthResult] = Future()
            failed.set_exception(exc)
            return failed
        if decided is None:
            return self._executor.submit(self._check, attempt)
        future: Future[AuthResult] = Future()
        future.set_result(decided)
        return future

    # -- SCRAM (gximap.auth.scram) ------------------------------------------------------------------

    def scram_refusal(self, login: str, *, rhost: str, address: str, mech: str,
                      authzid: str | None = None) -> AuthResult | None:
        """The refusal of a SCRAM exchange at its client-first message, before the user's keys
        are read: a blocked address, or a blocked user when no proof could pass the block (there
        is no credential cache); None when the exchange goes on. Its answer and log line are
        those PLAIN gets for a blocked login at its one message, the first that names the user:
        a block that PLAIN tells for any password, SCRAM tells at the client-first; an unknown
        name is refused alike. (RFC 5802 section 5.1 lets the server end a failed exchange
        without the server-final message; a malformed client-first is failed here as well.)

        A user block with a credential cache goes on to the keys, as PLAIN goes on to the
        credential stamp: a proof the cache holds passes the block (_screen), as a password the
        cache holds does, so that a stranger's guesses do not lock a user's SCRAM clients out.
        That proof must be checked against the real keys, so they are read; made-up keys for a
        blocked user would not do either: the salt they say changes from the real one when the
        user is blocked, which tells a real name from an unknown one. Whether the cache holds
        an entry for the name must not decide it either (a stranger would learn the user logged
        in lately). So the keys are read for every blocked user while there is a cache."""
        attempt = _Attempt.of(login, "", rhost=rhost, address=address, mech=mech, authzid=authzid)
        if _NOT_UTF8.search(attempt.logged) or not attempt.actor or not attempt.mailbox:
            return None  # failed when the exchange ends, in _screen's order (its line names the bytes)
        if self._address_blocked(attempt.client):
            return _refuse(attempt, "address blocked", BLOCKED)
        if self.cache is None and self._user_blocked(attempt):
            return _refuse(attempt, "user blocked", BLOCKED)
        return None

    def submit_scram_lookup(self, login: str, authzid: str | None = None, *, rhost: str,
                            mech: str) -> Future[ScramLookup]:
        """The keys a SCRAM-SHA-256 proof is to be checked against, read on the hashing executor
        (a store read, kept off the workers as password checks are); the caller cancels the
        future if its client leaves. A name with no keys (unknown, not mapped, keys not derived
        yet, a passwd-file entry of another scheme) gets a decoy's, whose proof fails in
        :meth:`scram_result` as a wrong password does."""
        return self._executor.submit(self.scram_lookup, login, authzid, rhost=rhost, mech=mech)

    def scram_lookup(self, login: str, authzid: str | None = None, *, rhost: str, mech: str) -> ScramLookup:
        """:meth:`submit_scram_lookup` on the calling thread, for the auth socket, whose checks run
        on its pool's workers (as its :meth:`authenticate` calls do). Store trouble propagates;
        a file that cannot be read (FileUnavailable) is logged with ``rhost`` and ``mech`` first,
        as :meth:`authenticate` logs it."""
        with _unavailable_logged(_Attempt.of(login, "", rhost=rhost, address="", mech=mech, authzid=authzid)):
            return self._scram_lookup(login, authzid)

    def _scram_lookup(self, login: str, authzid: str | None) -> ScramLookup:
        actor, _ = split_identity(login, authzid)
        self.decoys.keep_census_current()  # for every name alike: no lookup may wait for it alone
        try:
            identity = self.auth_map.map(actor)
        except UnmappedName:
            name = actor.lower()
            return ScramLookup(name, self.decoys.credential(name), reason="unknown user name")
        backend = self._scram_backend
        keys = backend.scram_keys(identity) if backend is not None else None
        if keys is None:
            reason = (backend.scram_failure_reason(identity) if backend is not None
                      else "the auth backend has no SCRAM keys")
            return ScramLookup(identity, self.decoys.credential(identity), reason=reason)
        return ScramLookup(identity, keys.credential, keys)

    def scram_result(self, login: str, lookup: ScramLookup, client_key: bytes | None, *, rhost: str,
                     address: str, mech: str, authzid: str | None = None, hold: Hold | None = None,
                     reason: str = "") -> Future[AuthResult]:
        """The verdict on a SCRAM exchange whose proof gave ``client_key`` (None: wrong, or the
        client-final message was refused for ``reason``), as :meth:`submit` gives a password's:
        the same screening, blocks, counting and log lines (``mech`` SCRAM-SHA-256), and a
        right proof passes a user block only when the credential cache holds it. No hashing:
        decided on the calling thread, the future is done. A success is not logged yet: the
        client answers the server-final message first, and may cancel there (RFC 5802 section
        3: it checks the server's signature); the caller logs it once the login is done
        (AuthResult.log_success)."""
        attempt = _Attempt.of(login, "", rhost=rhost, address=address, mech=mech, authzid=authzid, hold=hold)
        future: Future[AuthResult] = Future()
        try:
            with _unavailable_logged(attempt):
                verdict = self._scram_verdict(attempt, lookup, client_key, reason)
        except Exception as exc:  # noqa: BLE001 - store trouble (StoreBusy): raised by the future, as submit's
            future.set_exception(exc)
            return future
        future.set_result(verdict)
        return future

    def malformed(self, *, rhost: str, address: str, mech: str, reason: str) -> Future[AuthResult]:
        """A failed login whose SASL message named nobody (a malformed one, ``reason``): logged
        and counted as a failure, as a PLAIN message without its NULs is."""
        future: Future[AuthResult] = Future()
        future.set_result(self._fail(_Attempt.of("", "", rhost=rhost, address=address, mech=mech, authzid=None),
                                     reason))
        return future

    def _scram_verdict(self, attempt: _Attempt, lookup: ScramLookup, client_key: bytes | None,
                       reason: str) -> AuthResult:
        screened = self._screen(attempt, scram=(lookup, client_key))
        if screened is not None:
            return screened
        keys = lookup.keys
        if keys is None:
            return self._fail(attempt, lookup.reason)
        if client_key is None:
            return self._fail(attempt, reason or self.backend.failure_reason(lookup.identity))
        if not keys.may_log_in:
            return _refuse(attempt, "account disabled", DISABLED)
        if self.cache is not None:
            self.cache.remember(_SCRAM_CACHE_PREFIX + lookup.identity, client_key.hex(), keys.stamp, keys.account)
        return self._admit(attempt, log_now=False)

    def _scram_from_cache(self, attempt: _Attempt, lookup: ScramLookup, client_key: bytes | None,
                          note: str) -> AuthResult | None:
        """As :meth:`_answer_from_cache`, for a SCRAM proof: its ClientKey verified lately
        against the same keys (the proof is right then; a wrong one recovers another key)."""
        keys, cache = lookup.keys, self.cache
        if cache is None or keys is None or client_key is None or not keys.may_log_in:
            return None
        if cache.lookup(_SCRAM_CACHE_PREFIX + lookup.identity, client_key.hex(), keys.stamp) is None:
            return None
        return self._admit(attempt, note, log_now=False)

    def close(self) -> None:
        """Stop the hashing threads (logins in flight are abandoned)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- blocks ---------------------------------------------------------------------------------

    def block_key(self, username: str) -> str:
        """The name blocks are kept under: the authentication identity, so that every spelling
        of a login that reaches the same password check shares one block."""
        try:
            return self.auth_map.map(username)
        except UnmappedName:
            return username.lower()
        except FileUnavailable:
            # auth_map's file cannot be read: the login this is for fails as a temporary error at
            # its own lookup (no block counts for it). Meanwhile a block kept under the name as
            # given still holds; one kept under the identity the file maps it to is not seen.
            return username.lower()

    def user_block_remaining(self, username: str) -> float:
        key = self.block_key(username)
        with self._lock:
            until = self._blocked_users.get(key)
            if until is None:
                return 0.0
            remaining = until - self._clock()
            if remaining <= 0:
                del self._blocked_users[key]
                return 0.0
            return remaining

    def block_user(self, username: str, rhost: str) -> None:
        key = self.block_key(username)
        with self._lock:
            self._blocked_users.pop(key, None)  # re-insert: dict order is then expiry order
            until = self._blocked_users[key] = self._clock() + self.block_interval
            self._housekeeping_locked()
        if self._siblings is not None:
            self._siblings.send("auth-block", key=key, until=until)
        gxlog.auth_block(rhost, username, self.block_interval)

    def _address_blocked(self, key: str) -> bool:
        if self.ip_times <= 0:
            return False
        now = self._clock()
        with self._lock:
            failures = self._ip_failures.get(key)
            if not failures:
                return False
            while failures and failures[0] <= now - self.ip_window:
                failures.popleft()
            if not failures:
                del self._ip_failures[key]
                return False
            return len(failures) >= self.ip_times

    def _note_address_failure(self, key: str, rhost: str) -> None:
        if self.ip_times <= 0:
            return
        now = self._clock()
        with self._lock:
            failures = self._ip_failures.get(key)
            if failures is None:
                failures = self._ip_failures[key] = deque()
            while failures and failures[0] <= now - self.ip_window:
                failures.popleft()
            failures.append(now)
            while len(failures) > self.ip_times:
                failures.popleft()
            reached = len(failures) == self.ip_times
            remaining = failures[0] + self.ip_window - now
            self._housekeeping_locked()
        if self._siblings is not None:
            self._siblings.send("auth-fail", key=key, times=[now])
        if reached:
            gxlog.get_logger("auth").log(
                gxlog.NOTICE, "rhost=%s address blocked for %ss: too many failed logins",
                gxlog.escape_token(rhost), _seconds(remaining))

    def _housekeeping_locked(self) -> None:
        """Sweep expired entries now and then; enforce the size bounds (lock held). At a bound,
        the sweep that might make room runs once per _SWEEP_AT_BOUND_EVERY updates, not at each:
        a sweep of the full tables takes milliseconds, and at a bound each failure from a new
        address would pay for one. Between sweeps the oldest entries make room."""
        self._updates += 1
        over = len(self._ip_failures) > MAX_TRACKED_ADDRESSES or len(self._blocked_users) > MAX_BLOCKED_USERS
        if self._updates % _SWEEP_EVERY == 0 or (over and self._updates - self._swept_at >= _SWEEP_AT_BOUND_EVERY):
            self._swept_at = self._updates
            self._sweep_locked()
        while len(self._blocked_users) > MAX_BLOCKED_USERS:
            del self._blocked_users[next(iter(self._blocked_users))]  # the block that ends first
        while len(self._ip_failures) > MAX_TRACKED_ADDRESSES:
            del self._ip_failures[next(iter(self._ip_failures))]  # the address tracked longest

    def _sweep_locked(self) -> None:
        now = self._clock()
        for key in [key for key, until in self._blocked_users.items() if until <= now]:
            del self._blocked_users[key]
        horizon = now - self.ip_window
        for key in [key for key, failures in self._ip_failures.items() if not failures or failures[-1] <= horizon]:
            del self._ip_failures[key]

    # -- authentication -------------------------------------------------------------------------

    def authenticate(self, login: str, password: str, *, rhost: str, address: str, mech: str,
                     authzid: str | None = None) -> AuthResult:
        """Check a login. ``rhost`` is for the log, ``address`` the client address limits count
        (the PROXY-protocol source when one is in use). Never raises for bad input; store and
        backend failures (e.g. midb StoreBusy, a passwd-file or map file that cannot be read:
        FileUnavailable, logged here as the attempt's "unavailable" line) propagate. Callers decode the client's bytes with
        "surrogateescape": what is not UTF-8 is refused here, and logged as the bytes it was."""
        return self._check(_Attempt.of(login, password, rhost=rhost, address=address, mech=mech, authzid=authzid))

    def _check(self, attempt: _Attempt) -> AuthResult:
        """The whole check: screened, then verified from the cache or by hashing the password.
        A file it needs that cannot be read (FileUnavailable) is logged for the attempt and
        propagates: the caller answers with a temporary failure."""
        with _unavailable_logged(attempt):
            return self._verdict(attempt)

    def _verdict(self, attempt: _Attempt) -> AuthResult:
        screened = self._screen(attempt)
        if screened is not None:
            return screened
        try:
            identity = self.auth_map.map(attempt.actor)
        except UnmappedName:
            # Hashed all the same, as the backends hash the password of a user they do not know:
            # an answer without that cost would tell which names auth_map (static, file, ...) lists.
            with self._hash_slots:
                verify_dummy_password(attempt.password)
            return self._fail(attempt, "unknown user name")
        try:
            verified = self._verify(identity, attempt.password)
        except AccountDisabled:
            return _refuse(attempt, "account disabled", DISABLED)
        if verified is None:
            return self._fail(attempt, self.backend.failure_reason(identity))
        return self._admit(attempt)

    def _screen(self, attempt: _Attempt,
                scram: tuple[ScramLookup, bytes | None] | None = None) -> AuthResult | None:
        """The answers that need no password hash: the refusals (logged and counted as such), and
        a blocked user's login that the credential cache vouches for; None when the password is
        to be checked. Cheap: no hashing; the store is read (the credential stamp) only for a
        blocked user. ``scram``: the exchange's keys and the ClientKey its proof gave, for a
        SCRAM login, which the cache vouches for by those (_scram_from_cache)."""
        if _NOT_UTF8.search(attempt.logged) or _NOT_UTF8.search(attempt.password):
            return self._fail(attempt, "invalid UTF-8")
        if not attempt.actor or not attempt.mailbox:
            return self._fail(attempt, "empty user name")
        # The address first: its block refuses everything, a password the cache holds included.
        if self._address_blocked(attempt.client):
            return _refuse(attempt, "address blocked", BLOCKED)
        if self._user_blocked(attempt):
            # A user block stops guessing, which anyone can start; a password verified before it
            # (the cache's entry) is no guess, so it passes: a stranger cannot lock the user's
            # clients out. Anything else is refused unhashed, as Gromox refuses every login.
            passed = (self._answer_from_cache(attempt, THROUGH_BLOCK) if scram is None
                      else self._scram_from_cache(attempt, *scram, THROUGH_BLOCK))
            return passed or _refuse(attempt, "user blocked", BLOCKED)
        return None

    def _user_blocked(self, attempt: _Attempt) -> bool:
        actor, mailbox = attempt.actor, attempt.mailbox
        return self.user_block_remaining(actor) > 0 or (mailbox != actor and self.user_block_remaining(mailbox) > 0)

    def _answer_from_cache(self, attempt: _Attempt, note: str = "") -> AuthResult | None:
        """The verdict on an attempt whose password the credential cache vouches for (one that
        passed the screening, or a blocked user's: _screen); None when only a full check can tell
        (a miss, no cache, a name auth_map lacks). ``note``: for the log line of a success."""
        cache, stamped = self.cache, self._stamped_backend
        if cache is None or stamped is None:
            return None
        try:
            identity = self.auth_map.map(attempt.actor)
        except UnmappedName:
            return None  # the dummy hash of _check, so that the answer takes as long as a check
        stamp = stamped.credential_stamp(identity)
        if stamp is None or cache.lookup(identity, attempt.password, stamp) is None:
            return None
        return self._admit(attempt, note)

    def _admit(self, attempt: _Attempt, note: str = "", *, log_now: bool = True) -> AuthResult:
        """After a right password: the storage account the session runs as, or why it may not.
        ``note``: how it got in, for the log line of a success; written now, or with
        ``log_now`` False by the caller once the login is done (AuthResult.log_success)."""
        actor, mailbox = attempt.actor, attempt.mailbox
        try:
            own_account = self.storage_map.map(actor)
            target = self.storage_map.map(mailbox) if mailbox != actor else own_account
        except UnmappedName:
            return _refuse(attempt, "no storage account", NO_MAILBOX)
        own_account, target = own_account.lower(), target.lower()  # midb account names are lower case
        if self.auto_create and self.store.get_account(own_account) is None:
            from midb.authdb import ensure_account
            from midb.errors import InvalidName

            try:
                ensure_account(self.store, own_account)
            except InvalidName:
                return _refuse(attempt, "invalid account name", NO_MAILBOX)
        if target != own_account:
            if self.store.get_account(target) is None or not self.store.is_owner(target, own_account):
                return _refuse(attempt, "no store ownership", UNAUTHORIZED)
        elif self.store.get_account(own_account) is None:
            return _refuse(attempt, "no such mailbox", NO_MAILBOX)
        # Last: nothing may refuse the login once the caller counted it.
        if attempt.hold is not None and not attempt.hold(target):
            return _refuse(attempt, "too many sessions from this address", LIMITED)
        actor_account = own_account if target != own_account else None
        success_log = SuccessLog(attempt.rhost, target, attempt.mech, actor_account, note)
        if log_now:
            success_log.write()
            return AuthResult(True, user=target, actor=actor_account)
        return AuthResult(True, user=target, actor=actor_account, success_log=success_log)

    def _verify(self, identity: str, password: str) -> str | None:
        """The backend's account name when ``password`` is right, from the credential cache when
        this password was verified lately against the same stored credentials."""
        cache = self.cache
        stamped = self._stamped_backend
        stamp = stamped.credential_stamp(identity) if cache is not None and stamped is not None else None
        if cache is not None and stamp is not None:
            account = cache.lookup(identity, password, stamp)
            if account is not None:
                return account
        with self._hash_slots:
            verified = self.backend.authenticate(identity, password)
        if verified is not None and cache is not None and stamp is not None:
            cache.remember(identity, password, stamp, verified)
        return verified

    def failure_pause(self) -> Future[None] | None:
        """The wait before a failed login is answered (imap_auth_failure_delay, Dovecot's
        auth_failure_delay): a future the caller awaits without holding a thread, and cancels if
        its client leaves; None when there is none. Every failure waits alike, a wrong password,
        an unknown or blocked user, a refusal after a right password, so that the answer's time
        tells nothing, and one connection cannot try passwords as fast as they hash. Asked once
        the failure is decided, logged and counted: fail2ban and the blocks see it at once."""
        delay = self.failure_delay
        return self.delays.after(delay) if delay > 0 else None

    def flush_cache(self) -> int:
        """Forget every verified credential (SIGHUP); returns how many were cached."""
        return self.cache.flush() if self.cache is not None else 0

    def _fail(self, attempt: _Attempt, reason: str) -> AuthResult:
        gxlog.auth_failure(attempt.rhost, attempt.logged, attempt.mech, reason)
        self._note_address_failure(attempt.client, attempt.rhost)
        return AuthResult(False, reason=reason)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One login to check, as :meth:`AuthService.authenticate` was given it."""

    password: str = field(repr=False)
    rhost: str  # for the log
    client: str  # address_key of the address the limits count
    mech: str
    actor: str
    mailbox: str
    logged: str  # the name the log shows: actor!mailbox either way
    hold: Hold | None = field(default=None, repr=False)  # submit's

    @classmethod
    def of(cls, login: str, password: str, *, rhost: str, address: str, mech: str,
           authzid: str | None, hold: Hold | None = None) -> _Attempt:
        actor, mailbox = split_identity(login, authzid)
        return cls(password, rhost, address_key(address), mech, actor, mailbox,
                   f"{login}!{authzid}" if authzid else login, hold)


def _refuse(attempt: _Attempt, reason: str, refusal: str) -> AuthResult:
    """A refusal that is no guess (AuthResult.refusal): logged as "refused", which fail2ban's
    filter does not count either. Counting a blocked user's refusals there would let an attacker
    who blocked a user have fail2ban ban the user's own address, as its clients keep trying."""
    gxlog.auth_refusal(attempt.rhost, attempt.logged, attempt.mech, reason)
    return AuthResult(False, reason=reason, refusal=refusal)


@contextlib.contextmanager
def _unavailable_logged(attempt: _Attempt) -> Iterator[None]:
    """Around every step of a check that may need a file that cannot be read (the password
    check on the executor or the auth socket's worker, submit's screening, a SCRAM lookup or
    verdict): such a FileUnavailable is logged for ``attempt`` as "unavailable", one line of one
    shape whichever step met it, and propagates (the caller answers "try again later"). No
    guess: fail2ban's filter does not count the line, nor does any block. The file's errno was
    logged once, by its reader, when it began."""
    try:
        yield
    except FileUnavailable as exc:
        gxlog.auth_unavailable(attempt.rhost, attempt.logged, attempt.mech, str(exc))
        raise


def _seconds(value: float) -> str:
    return str(max(1, round(value)))
