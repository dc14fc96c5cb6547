"""Authentication backends: the midb account table, or a Dovecot-compatible passwd-file.

A backend answers one question, "is this the password of that user?", and names the canonical
account on success. Account creation is the caller's business (``ensure_account``): accounts are
created when a backend vouches for a login, never by mail delivery.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from midb.errors import AccountExists, InvalidName
from midb.filewatch import ReloadingFile
from midb.passwords import hash_password, needs_rehash, scram_credential_of, verify_password
from midb.scram import ScramCredential, derive, parse_credential

if TYPE_CHECKING:
    from midb.store import Account, Store

log = logging.getLogger(__name__)

_UNDECODABLE = re.compile("[\udc80-\udcff]")
# A passwd-file line is about 150 bytes: 64 MiB is over 400,000 users, beyond what anyone keeps
# in one. A larger file (a log or a dump named by mistake, a runaway writer) would be read whole
# into memory, at every change; it is unavailable instead, as an unreadable one is.
MAX_PASSWD_FILE_BYTES = 64 * 1024 * 1024



@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user is unknown, so that "no such user" and "wrong password" cost
    the same time and a client cannot probe for account names by timing (made on first use)."""
    return hash_password("timing-equaliser")


def verify_dummy_password(password: str) -> None:
    """Spend on ``password`` what checking it against a stored hash costs, for a login that has
    no account to check it against: its answer must take as long as a wrong password's."""
    verify_password(password, _dummy_hash())


class AccountDisabled(Exception):
    """The password is right, but the account may not log in (``midb user disable``, a
    passwd-file ``nologin``). Only then is the client told why (IMAP ``[CONTACTADMIN]``): a
    wrong password gets the same answer whether the account is disabled or not."""

    def __init__(self, account: str) -> None:
        super().__init__(f"account {account} is disabled")
        self.account = account


@runtime_checkable
class AuthBackend(Protocol):
    def authenticate(self, user: str, password: str) -> str | None:
        """Canonical account name when ``password`` is right for ``user``, else None;
        AccountDisabled when it is right but the account may not log in."""

    def exists(self, user: str) -> bool:
        """Whether the backend knows ``user`` (for lookups such as impersonation targets)."""

    def failure_reason(self, user: str) -> str:
        """Why ``authenticate`` returned None for ``user``, for the administrator's log (never
        the client, which is told the same for each of these): "unknown user", "no password
        set" or "bad password", the latter two with " (account disabled)" where it is."""


@runtime_checkable
class StampedAuthBackend(AuthBackend, Protocol):
    """A backend that can say when a user's credentials change: only those get the credential
    cache (every backend here is one)."""

    def credential_stamp(self, user: str) -> str | None:
        """Text that changes whenever anything ``authenticate`` depends on changes (the stored
        hash, a disabled flag), for gximap.auth.cache; None when ``user`` cannot log in now."""


@dataclass(frozen=True, slots=True)
class ScramKeys:
    """A user's SCRAM-SHA-256 credential as a backend keeps it, read before the exchange."""

    account: str  # the canonical account name, as ``authenticate`` returns it
    credential: ScramCredential = field(repr=False)
    may_log_in: bool  # False: a right proof is told "account disabled" (AccountDisabled's case)
    # Read with the keys, as credential_stamp is for a password: text that changes whenever the
    # password or these keys do (the credential cache's stamp for the SCRAM entry).
    stamp: str = field(repr=False)


@runtime_checkable
class ScramAuthBackend(AuthBackend, Protocol):
    """A backend that can serve SASL SCRAM-SHA-256 (both here are)."""

    def scram_keys(self, user: str) -> ScramKeys | None:
        """The user's SCRAM keys; None when the user is unknown, has no password or no keys."""

    def scram_failure_reason(self, user: str) -> str:
        """Why ``scram_keys`` gave None, for the administrator's log ("unknown user", ...)."""


@runtime_checkable
class ScramCensusBackend(ScramAuthBackend, Protocol):
    """A SCRAM backend that can count its users' keys by iteration count (both here can), so
    that unknown users are answered with counts spread like the real ones
    (gximap.auth.scram.DecoySalts)."""

    def scram_iteration_counts(self) -> dict[int, int]:
        """Iteration count -> how many users have SCRAM keys with it (those scram_keys serves)."""


def account_scram_credential(account: Account) -> ScramCredential | None:
    """A midb account's SCRAM keys: its own, else its password hash when that is a Dovecot
    ``{SCRAM-SHA-256}`` entry (imported as it was); None without a password."""
    if not account.password_hash:
        return None
    if account.scram_sha256:
        return parse_credential(account.scram_sha256)
    return scram_credential_of(account.password_hash)


def _iteration_census(credentials: Iterable[ScramCredential | None]) -> dict[int, int]:
    """Iteration count -> how many of ``credentials`` have it (None: no keys, not counted);
    ScramCensusBackend.scram_iteration_counts of both backends."""
    return dict(Counter(credential.iterations for credential in credentials if credential is not None))


class MidbAuth:
    """Passwords from the midb account table; disabled accounts never authenticate.

    On a successful login with a hash that is weaker than the current default (an imported
    Dovecot hash, or an older scrypt cost), the password is re-hashed and stored, with its
    SCRAM keys; an account without SCRAM keys (set before they existed) gets them likewise.
    Store errors other than an invalid name (e.g. StoreBusy) propagate to the caller.
    """

    def __init__(self, store: Store, *, upgrade_hashes: bool = True) -> None:
        self._store = store
        self._upgrade_hashes = upgrade_hashes

    def _account(self, user: str) -> Account | None:
        try:
            return self._store.get_account(user)
        except InvalidName:
            return None

    def authenticate(self, user: str, password: str) -> str | None:
        account = self._account(user)
        if account is None or not account.password_hash:
            verify_dummy_password(password)
            return None
        if not verify_password(password, account.password_hash):
            return None
        if account.disabled:
            raise AccountDisabled(account.name)
        if self._upgrade_hashes:
            if needs_rehash(account.password_hash):
                self._upgrade(account, password, rehash=True)
            elif account_scram_credential(account) is None:
                self._upgrade(account, password, rehash=False)
        return account.name

    def _upgrade(self, account: Account, password: str, *, rehash: bool) -> None:
        """Store what ``password``, just verified against ``account``'s hash, derives; unless
        the password was set anew meanwhile (if_password_hash): its keys must stay."""
        from midb.errors import MidbError

        name, verified = account.name, account.password_hash
        try:
            scram = derive(password).text()
            if rehash:
                self._store.update_account(name, password_hash=hash_password(password), scram_sha256=scram,
                                           if_password_hash=verified)
            else:
                self._store.update_account(name, scram_sha256=scram, if_password_hash=verified)
        except (MidbError, ValueError) as exc:  # a failed upgrade must not fail the login
            log.warning("could not upgrade password hash of %s: %s", name, exc)

    def scram_keys(self, user: str) -> ScramKeys | None:
        account = self._account(user)
        if account is None or not account.password_hash:
            return None
        credential = account_scram_credential(account)
        if credential is None:
            return None
        return ScramKeys(account.name, credential, not account.disabled,
                         f"{account.password_hash}\n{credential.text()}")

    def scram_iteration_counts(self) -> dict[int, int]:
        """A census of every account's keys (reads the whole account table: taken rarely)."""
        return _iteration_census(account_scram_credential(account) for account in self._store.list_accounts())

    def scram_failure_reason(self, user: str) -> str:
        account = self._account(user)
        if account is None:
            return "unknown user"
        if not account.password_hash:
            return _failure(False, account.disabled)
        return "no SCRAM keys (log in once with LOGIN or PLAIN, or set the password again)"

    def exists(self, user: str) -> bool:
        return self._account(user) is not None

    def credential_stamp(self, user: str) -> str | None:
        account = self._account(user)
        if account is None or account.disabled or not account.password_hash:
            return None
        return account.password_hash

    def failure_reason(self, user: str) -> str:
        account = self._account(user)
        if account is None:
            return "unknown user"
        return _failure(bool(account.password_hash), account.disabled)


def _failure(has_password: bool, disabled: bool) -> str:
    reason = "bad password" if has_password else "no password set"
    return f"{reason} (account disabled)" if disabled else reason


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    """One line of a passwd-file: ``user:password:uid:gid:gecos:home:shell:extra_fields``."""

    user: str
    password: str
    uid: str = ""
    gid: str = ""
    gecos: str = ""
    home: str = ""
    shell: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def parse_passwd_file(text: str, source: str = "passwd-file") -> dict[str, PasswdEntry]:
    """Parse passwd-file text into entries keyed by lower-cased user name.

    Comments (``#``) and blank lines are skipped; malformed lines are logged with their line
    number and skipped; for a user listed twice the first line wins (as in Dovecot).
    """
    entries: dict[str, PasswdEntry] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = line.split(":", 7)
        user = fields[0].strip()
        if len(fields) < 2 or not user or any(ch.isspace() for ch in user):
            log.warning("%s:%d: malformed line skipped", source, lineno)
            continue
        if _UNDECODABLE.search(line):  # bytes that were not UTF-8 (surrogateescape)
            log.warning("%s:%d: line is not valid UTF-8, skipped", source, lineno)
            continue
        key = user.lower()
        if key in entries:
            log.warning("%s:%d: user %s listed again; first entry kept", source, lineno, user)
            continue
        fields += [""] * (8 - len(fields))
        extra: dict[str, str] = {}
        for token in fields[7].split():
            name, _, value = token.partition("=")
            extra[name.lower()] = value
        uid, gid, gecos, home, shell = fields[2:7]
        entries[key] = PasswdEntry(key, fields[1], uid, gid, gecos, home, shell, extra=extra)
    return entries


class PasswdFileAuth:
    """Dovecot-compatible passwd-file, re-read whenever the file changes (mtime, size or inode).

    Entries without a ``{SCHEME}`` prefix use ``default_scheme`` (Dovecot's passwd-file default
    is CRYPT). Entries with an empty password, ``nologin`` or ``nopassword`` never authenticate:
    passwordless logins are not offered. When a store is given, a midb account that is disabled
    refuses the login too, so ``midb user disable`` works whatever the backend.

    While the file is missing, cannot be read or is larger than MAX_PASSWD_FILE_BYTES, every
    method that looks a user up raises midb.errors.FileUnavailable (midb.filewatch), which
    callers answer as a temporary failure: no user is then "unknown", and no login a wrong
    password.
    """

    def __init__(self, path: str | os.PathLike[str], *, store: Store | None = None,
                 default_scheme: str = "CRYPT") -> None:
        self.path = os.fspath(path)
        self._store = store
        self._default_scheme = default_scheme
        # A missing file is no "no users" either. Dovecot answers "unknown user" for one (made
        # for paths with %d, one file per domain, where no file means no such domain); gximap's
        # path is fixed, so a missing file is a broken deployment: a wrong path, an unmounted
        # file system, a file removed before its replacement was written. Every user "unknown"
        # would count each login as a guess and have fail2ban ban the users' addresses. So every
        # lookup fails as a temporary error then (FileUnavailable), as for an unreadable file.
        self._file: ReloadingFile[dict[str, PasswdEntry]] = ReloadingFile(
            self.path, self._parse, {}, what="passwd-file", log=log, max_bytes=MAX_PASSWD_FILE_BYTES)
        self._file.read_at_start()

    def _reload_if_changed(self) -> dict[str, PasswdEntry]:
        """The entries; FileUnavailable while the file is missing or cannot be read."""
        return self._file.current()

    def _parse(self, data: bytes) -> dict[str, PasswdEntry]:
        entries = parse_passwd_file(data.decode("utf-8", "surrogateescape"), self.path)
        for entry in entries.values():
            if "nopassword" in entry.extra:
                log.warning("%s: user %s has nopassword; passwordless logins are refused",
                            self.path, entry.user)
        return entries

    def lookup(self, user: str) -> PasswdEntry | None:
        return self._reload_if_changed().get(user.lower())

    def authenticate(self, user: str, password: str) -> str | None:
        entry = self.lookup(user)
        if entry is None or not entry.password:
            verify_dummy_password(password)
            return None
        if not verify_password(password, entry.password, default_scheme=self._default_scheme):
            return None
        if "nopassword" in entry.extra:  # passwordless logins are not offered: no account state to tell
            return None
        if not self._may_log_in(entry):
            raise AccountDisabled(entry.user)
        return entry.user

    def _may_log_in(self, entry: PasswdEntry) -> bool:
        if "nologin" in entry.extra or "nopassword" in entry.extra:
            return False
        if self._store is not None:
            try:
                account = self._store.get_account(entry.user)
            except InvalidName:
                return False
            if account is not None and account.disabled:
                return False
        return True

    def credential_stamp(self, user: str) -> str | None:
        entry = self.lookup(user)
        if entry is None or not entry.password or not self._may_log_in(entry):
            return None
        return entry.password

    @staticmethod
    def _scram_credential(entry: PasswdEntry | None) -> ScramCredential | None:
        """The keys ``entry`` serves SCRAM with (its {SCRAM-SHA-256} hash), for scram_keys and
        its census alike. nopassword: none, refused as a wrong password is, as ``authenticate`` does."""
        if entry is None or not entry.password or "nopassword" in entry.extra:
            return None
        return scram_credential_of(entry.password)

    def scram_keys(self, user: str) -> ScramKeys | None:
        entry = self.lookup(user)
        credential = self._scram_credential(entry)
        if entry is None or credential is None:
            return None
        return ScramKeys(entry.user, credential, self._may_log_in(entry), entry.password)

    def scram_iteration_counts(self) -> dict[int, int]:
        return _iteration_census(self._scram_credential(entry) for entry in self._reload_if_changed().values())

    def scram_failure_reason(self, user: str) -> str:
        entry = self.lookup(user)
        if entry is None:
            return "unknown user"
        if not entry.password or "nopassword" in entry.extra:
            return _failure(False, not self._may_log_in(entry))
        return "passwd-file entry is not a {SCRAM-SHA-256} hash"

    def failure_reason(self, user: str) -> str:
        entry = self.lookup(user)
        if entry is None:
            return "unknown user"
        return _failure(bool(entry.password), not self._may_log_in(entry))

    def exists(self, user: str) -> bool:
        return self.lookup(user) is not None


def make_backend(kind: str, store: Store | None, passwd_file: str | None = None) -> AuthBackend:
    """Build the backend named by the ``auth_backend`` directive ("midb" or "passwd-file")."""
    normalized = kind.strip().lower()
    if normalized == "midb":
        if store is None:
            raise ValueError("auth_backend midb needs a store")
        return MidbAuth(store)
    if normalized in ("passwd-file", "passwd_file", "passwdfile"):
        if not passwd_file:
            raise ValueError("auth_backend passwd-file needs auth_passwd_file")
        return PasswdFileAuth(passwd_file, store=store)
    raise ValueError(f"unknown auth_backend {kind!r} (expected midb or passwd-file)")


def ensure_account(store: Store, name: str) -> Account:
    """Return the account ``name``, creating it (with no password of its own) if missing.

    Call only after a backend vouched for the login; mail delivery never creates accounts.
    """
    account = store.get_account(name)
    if account is not None:
        return account
    try:
        return store.create_account(name)
    except AccountExists:  # another session created it meanwhile
        account = store.get_account(name)
        if account is None:
            raise
        return account
