"""Folder expiry: an account's Trash and Junk emptied of what was saved there too long ago.

Dovecot's ``autoexpunge``: messages deleted by moving them to Trash, or filed as spam in Junk,
go for good once they have been there a set time, whatever their flags. The time counts from
the save date (midb.savedates): a message received two years ago and deleted today stays its
full period. gximap runs it for an account when it logs in or receives mail over LMTP
(imap_autoexpunge_trash, imap_autoexpunge_junk; at most once an hour per account and process:
gximap.expiring), ``midb expire`` for every account (from cron).

An account may have periods of its own (``midb user expire``, the account record's
``autoexpunge``), as Dovecot takes them from its userdb: each replaces the server's for its
special use, 0 keeping that folder's mail for good.

Folders may also be given periods by name (imap_autoexpunge_folders, ``midb expire --folder``),
as Dovecot's per-mailbox ``autoexpunge`` does: ``Spam=30d, Lists/*=90d``. In a mapping of
periods, a key starting with a backslash is a special use, any other a name pattern; a folder
matched by a pattern (the first, in order) takes its period, 0 included, before its special use's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from midb.errors import NoSuchAccount
from midb.patterns import compile_pattern
from midb.spans import parse_timespan

__all__ = ["PERIOD_DIRECTIVES", "SPECIAL_USES", "Expired", "ExpiryThrottle", "account_periods", "expire_account", "folder_matcher",
           "parse_folder_periods"]

# The special uses an expiry period may be set for, by the name of their directive's suffix.
SPECIAL_USES = {"trash": "\\Trash", "junk": "\\Junk"}
# The directive of gximap's configuration setting each one's period (imap_autoexpunge_trash, read
# by gximap and by midb's tool alike), by special use.
PERIOD_DIRECTIVES = {use: f"imap_autoexpunge_{suffix}" for suffix, use in SPECIAL_USES.items()}


@dataclass(frozen=True, slots=True)
class Expired:
    """What one folder's expiry removed."""

    folder: str
    uids: list[int]


def parse_folder_periods(text: str) -> tuple[tuple[str, float], ...]:
    """``NAME=SPAN`` entries separated by commas (imap_autoexpunge_folders, ``Spam=30d,
    Lists/*=90d``) as (name pattern, seconds) pairs in their order, a name given again left out
    (the first matching entry wins, here and in every dict made of them); ValueError naming the
    entry that does not read. A name may hold spaces (trimmed at its ends), not a comma or "=";
    "*" matches any characters, "%" any but the hierarchy separator "/", as in LIST."""
    pairs: list[tuple[str, float]] = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        name, equals, span = entry.partition("=")
        name = name.strip()
        if not equals or not name or name.startswith("\\") or "=" in span:
            raise ValueError(f"{entry.strip()!r} is not NAME=SPAN (e.g. Spam=30d)")
        try:
            seconds = parse_timespan(span.strip())
        except ValueError as exc:
            raise ValueError(f"{entry.strip()!r}: {exc}") from None
        if 0 < seconds < 1:
            raise ValueError(f"{entry.strip()!r}: a period under a second (0 keeps the folder's mail)")
        if all(name != named for named, _seconds in pairs):  # the first entry of a name is the one that matches
            pairs.append((name, seconds))
    return tuple(pairs)


# Whether a folder's name matches a name pattern of parse_folder_periods: as LIST matches
# (INBOX in any case), without a regular expression's backtracking.
folder_matcher = compile_pattern


def account_periods(store: Any, account: str, periods: Mapping[str, float]) -> dict[str, float]:
    """The periods that apply to ``account``: the server's ``periods`` (special use or name
    pattern -> seconds), with the account's own special-use periods in their place. Special
    uses keep a period above 0 only; a name pattern keeps its 0, which exempts its folders."""
    own = store.get_account(account)
    if own is None:
        raise NoSuchAccount(f"no such account {account!r}")
    merged = dict(periods)
    merged.update(own.autoexpunge)
    return {key: seconds for key, seconds in merged.items() if seconds > 0 or not key.startswith("\\")}


def expire_account(store: Any, account: str, periods: Mapping[str, float], *, now: float | None = None,
                   stop: Callable[[], bool] = lambda: False, dry_run: bool = False) -> list[Expired]:
    """Expunge from each folder of ``account`` whose name or special use has a period
    (``periods``, the server's: special use or name pattern -> seconds, 0 or absent: kept; with
    the account's own in their place, account_periods) the messages saved into it more than
    that long ago, a batch per transaction. ``stop`` is asked between batches (a server
    shutting down). With ``dry_run``, what would go, and nothing written."""
    from midb.store import EXPIRE_BATCH  # not at import: the midb tool reads SPECIAL_USES first

    periods = account_periods(store, account, periods)
    if not any(seconds > 0 for seconds in periods.values()):
        return []
    by_name = [(folder_matcher(key), seconds) for key, seconds in periods.items() if not key.startswith("\\")]
    moment = time.time() if now is None else now
    done: list[Expired] = []
    for folder in store.list_folders(account):
        period = next((seconds for matches, seconds in by_name if matches(folder.name)), None)
        if period is None:
            period = periods.get(folder.special_use or "", 0)
        if period <= 0 or not folder.messages:
            continue
        cutoff = int(moment - period)
        if dry_run:
            expired = store.expired_uids(account, folder.id, cutoff)
            if expired:
                done.append(Expired(folder.name, expired))
            continue
        removed: list[int] = []
        while not stop():
            batch = store.expire(account, folder.id, cutoff, limit=EXPIRE_BATCH)
            removed.extend(batch)
            if len(batch) < EXPIRE_BATCH:
                break
        if removed:
            done.append(Expired(folder.name, removed))
    return done


class ExpiryThrottle:
    """Which accounts this process expired lately: a client logging in every minute (or many of
    them at once, one per folder) costs one expiry an ``interval``, not one per login."""

    def __init__(self, interval: float = 3600.0, limit: int = 100_000) -> None:
        self.interval = interval
        self.limit = limit
        # Set when the server stops: an expiry under way ends after its batch (expire_account's
        # ``stop``), one queued does nothing; the store is about to close.
        self.stopping = threading.Event()
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def forget(self, account: str) -> None:
        """``account`` is due again at its next login (its expiry failed)."""
        with self._lock:
            self._last.pop(account.lower(), None)

    def due(self, account: str, *, now: float | None = None) -> bool:
        """True (and noted as run now) when ``account`` was not expired within the interval."""
        moment = time.monotonic() if now is None else now
        key = account.lower()
        with self._lock:
            last = self._last.get(key)
            if last is not None and moment - last < self.interval:
                return False
            self._last.pop(key, None)
            self._last[key] = moment  # at the end: the dict stays in the order of the runs
            # Bounded: the oldest runs are forgotten first (at worst an account is expired again
            # within the interval, which finds little to do).
            while len(self._last) > self.limit:
                del self._last[next(iter(self._last))]
            return True
