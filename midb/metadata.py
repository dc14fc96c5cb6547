"""Mailbox and server annotations (RFC 5464 METADATA) in the midb store.

Database ``metadata``: key = (account id, folder id, entry name), value = the annotation's octets.
Folder id 0 (:data:`SERVER`) holds the account's server annotations (``GETMETADATA ""``); folder
ids start at 1. Keys start with the folder's key prefix, so deleting a folder or an account drops
its annotations with one prefix delete, and a renamed folder keeps them (its id does not change).

Entry names are case-insensitive (RFC 5464 section 3.2) and stored lower-cased, so key order is
entry order: the entries below ``/private/a`` are the keys after ``/private/a/`` that share it.

:class:`MetadataMixin` adds the public methods to :class:`midb.store.Store`; the module functions
are the transaction-level pieces the store's folder operations call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from midb import events, quotas
from midb.env import Databases, WriteEffects, lmdb_errors
from midb.errors import InvalidArgument, MetadataTooBig, MetadataTooMany, NoSuchFolder
from midb.keys import MAX_U32, folder_key, prefix_items

SERVER = 0  # the folder id of server annotations
DEPTHS = ("0", "1", "infinity")
# Entry names are protocol identifiers, not data: 255 octets is far beyond any registered name
# and keeps keys well under LMDB's 511-octet limit.
MAX_ENTRY_LENGTH = 255
# RFC 5464 section 3.2: components separated by "/", none empty; no "*", "%", control characters
# or non-ASCII. The first component is the scope. A bare scope ("/private") names no annotation,
# but may be looked up with a depth to list everything below it.
_ENTRY = re.compile(r"/(?:private|shared)(?:/[\x20-\x24\x26-\x29\x2b-\x2e\x30-\x7e]+)*\Z")
_SCOPES = ("/private", "/shared")


def normalize_entry(entry: object, *, settable: bool = False) -> str:
    """The canonical (lower-case) form of an entry name; InvalidArgument when it is not one.
    ``settable``: the name must denote an annotation, not a bare scope."""
    # Non-ASCII is refused before lower(), which maps some of it onto ASCII (U+212A KELVIN
    # SIGN is "k"): such a name would alias an ASCII one.
    if not isinstance(entry, str) or not entry.isascii():
        raise InvalidArgument(f"invalid metadata entry {entry!r}")
    lowered = entry.lower()
    if len(lowered) > MAX_ENTRY_LENGTH or not _ENTRY.match(lowered):
        raise InvalidArgument(f"invalid metadata entry {entry!r}")
    if settable and lowered in _SCOPES:
        raise InvalidArgument(f"{entry!r} is a scope, not an annotation")
    return lowered


def is_scope(entry: str) -> bool:
    """``/private`` or ``/shared``: a name that can never hold a value."""
    return entry in _SCOPES


def is_below(entry: str, ancestor: str, depth: str) -> bool:
    """Does a lookup of ``ancestor`` down to ``depth`` include ``entry`` (a strict descendant)?"""
    if depth == "0" or not entry.startswith(ancestor + "/"):
        return False
    return depth == "infinity" or "/" not in entry[len(ancestor) + 1:]


def entry_key(account_id: int, folder_id: int, entry: str) -> bytes:
    return folder_key(account_id, folder_id) + entry.encode("ascii")


def copy_folder_entries(txn: Any, dbs: Databases, account_id: int, source_id: int, target_id: int) -> None:
    """Give ``target_id`` a copy of ``source_id``'s annotations (RENAME INBOX keeps INBOX's and
    the new mailbox gets them too, RFC 5464 section 4.1)."""
    source = folder_key(account_id, source_id)
    target = folder_key(account_id, target_id)
    for key, value in prefix_items(txn, dbs.metadata, source):
        txn.put(target + bytes(key[len(source):]), bytes(value), db=dbs.metadata)


def _check_folder_id(folder_id: object) -> int:
    if not isinstance(folder_id, int) or isinstance(folder_id, bool) or not 0 <= folder_id <= MAX_U32:
        raise NoSuchFolder(f"no folder with id {folder_id!r}")
    return folder_id


def _check_limit(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative int")
    return value


class MetadataMixin:
    """The annotation methods of :class:`midb.store.Store` (which provides the helpers used here:
    ``_home``, ``_write``, ``_refuse_growth``, ``_account``, ``_account_id`` and ``_folder``)."""

    _home: Any
    _write: Any
    _refuse_growth: Any
    _account: Any
    _account_id: Any
    _folder: Any

    def _annotation_limit(self, txn: Any, dbs: Databases, account_id: int, quota_default: int | None) -> int:
        """The account's ANNOTATION-STORAGE limit in octets (0: none, or no check asked)."""
        if quota_default is None:
            return 0
        return quotas.effective_limit(self._account(txn, dbs, account_id).quota_annotation_bytes, quota_default)

    def get_metadata(self, account: str, folder_id: int, entries: Iterable[str], *,
                     depth: str = "0") -> dict[str, bytes]:
        """The annotations of folder ``folder_id`` (or of the account as a whole, :data:`SERVER`)
        named in ``entries``, plus those below each down to ``depth`` ("0", "1" or "infinity").

        Only existing annotations are returned: {lower-case entry name: value}, in entry order.
        NoSuchFolder / NoSuchAccount when the target is gone; InvalidArgument for a bad name."""
        folder_id = _check_folder_id(folder_id)
        if depth not in DEPTHS:
            raise InvalidArgument(f"invalid depth {depth!r}")
        if isinstance(entries, (str, bytes)):
            raise InvalidArgument("entries must be an iterable of entry names")
        try:
            names = list(entries)
        except TypeError:
            raise InvalidArgument("entries must be an iterable of entry names") from None
        wanted = sorted({normalize_entry(entry) for entry in names})
        found: dict[str, bytes] = {}
        shared = self._home(account)
        with lmdb_errors(), shared.read() as txn:
            dbs = shared.dbs
            account_id = self._account_id(txn, dbs, account)
            if folder_id != SERVER:
                self._folder(txn, dbs, account_id, folder_id)
            prefix = folder_key(account_id, folder_id)
            for entry in wanted:
                value = txn.get(prefix + entry.encode("ascii"), db=dbs.metadata)
                if value is not None:
                    found[entry] = bytes(value)
                if depth == "0":
                    continue
                below = prefix + entry.encode("ascii") + b"/"
                for key, value in prefix_items(txn, dbs.metadata, below):
                    name = bytes(key[len(prefix):]).decode("ascii")
                    if is_below(name, entry, depth):
                        found[name] = bytes(value)
        return dict(sorted(found.items()))

    def set_metadata(self, account: str, folder_id: int, changes: Iterable[tuple[str, bytes | None]], *,
                     max_entries: int = 0, max_value_size: int = 0,
                     annotation_quota_default: int | None = None) -> None:
        """Set (value bytes) or remove (None) annotations of a folder or of the account
        (:data:`SERVER`), all or nothing; for the same entry twice, the last change wins.

        ``max_value_size`` (0: none) bounds each new value: MetadataTooBig. ``max_entries``
        (0: none) bounds the annotations of the target: a change that would leave more than that
        many, and more than there were before, raises MetadataTooMany (so an owner can always
        remove or replace annotations after the limit was lowered). With
        ``annotation_quota_default`` the account's ANNOTATION-STORAGE quota is enforced too
        (OverQuota, midb.quotas), on the same terms."""
        folder_id = _check_folder_id(folder_id)
        max_entries = _check_limit("max_entries", max_entries)
        max_value_size = _check_limit("max_value_size", max_value_size)
        if isinstance(changes, (str, bytes)):
            raise InvalidArgument("changes must be an iterable of (entry, value) pairs")
        wanted: dict[str, bytes | None] = {}
        try:
            pairs = [(entry, value) for entry, value in changes]
        except (TypeError, ValueError):  # not iterable, or an item that is not a pair
            raise InvalidArgument("changes must be an iterable of (entry, value) pairs") from None
        for entry, value in pairs:
            name = normalize_entry(entry, settable=True)
            if value is not None:
                if not isinstance(value, (bytes, bytearray, memoryview)):
                    raise InvalidArgument(f"the value of {entry!r} must be bytes or None")
                value = bytes(value)
                if max_value_size and len(value) > max_value_size:
                    raise MetadataTooBig(max_value_size)
            wanted[name] = value

        def job(txn: Any, dbs: Databases, effects: WriteEffects) -> None:
            account_id = self._account_id(txn, dbs, account)
            if folder_id != SERVER:
                self._folder(txn, dbs, account_id, folder_id)
            prefix = folder_key(account_id, folder_id)
            before = quotas.count_prefix(txn, dbs.metadata, prefix) if max_entries else 0
            octet_limit = self._annotation_limit(txn, dbs, account_id, annotation_quota_default)
            octets_before = quotas.annotation_octets(txn, dbs, account_id) if octet_limit else 0
            count = before
            octets = octets_before
            for name, value in wanted.items():
                key = prefix + name.encode("ascii")
                if value is None:
                    old = txn.pop(key, db=dbs.metadata)
                    if old is not None:
                        count -= 1
                        octets -= quotas.annotation_cost(name, old)
                else:
                    old = txn.replace(key, value, db=dbs.metadata)
                    if old is None:
                        count += 1
                        octets += quotas.annotation_cost(name, value)
                    else:
                        octets += len(value) - len(old)
            # Raising rolls the job's transaction back: nothing of this call stays.
            if max_entries and count > max_entries and count > before:
                raise MetadataTooMany(f"more than {max_entries} annotations")
            quotas.check_growth(quotas.ANNOTATION_STORAGE, octets_before, octets, octet_limit)
            effects.changed(account_id, folder_id, events.NOTICE_METADATA)

        home = self._home(account)
        if any(value is not None for value in wanted.values()):   # removing annotations always goes
            self._refuse_growth(home)
        self._write(job, home)
