"""The flag column: every message's UID, flags and MODSEQ, a folder to one LMDB key.

``flag_columns`` (MDB_DUPSORT | MDB_DUPFIXED) maps the 8-byte folder key (account, folder) to one
16-byte duplicate per message, sorted by UID::

    >I   UID
    >I   flag word: system flag bits (midb.messages.SYSTEM_FLAGS) << 24 | keyword set id
    >Q   MODSEQ

It answers ``FETCH 1:* (UID FLAGS)`` and ``(FLAGS MODSEQ)``, what a client resynchronising a
folder asks most, without visiting the message records: LMDB hands the duplicates over a page
(about 250 messages) per call into one buffer (Cursor.getmulti), and each field is taken out of it
by one strided copy and converted by ``array``, in C. 100,000 messages take about 3 ms, where a
cursor pass over their records took 13 (one Python bytes object per record).

Keyword sets. A message's keywords (the record tail after its system flag byte: keywords
separated by a space, sorted) are interned per account in ``keyword_sets``, under the account's
4-byte key: + ``i`` + id -> the keywords; + ``k`` + keywords (or + ``h`` + their BLAKE2b digest,
when too long for an LMDB key) -> id; + ``n`` -> the account's next id; + ``o`` -> the octets of
all its sets' keywords (>Q; missing for an account whose sets were interned before it was kept:
counted from its ``i`` entries at its next new set). Folders hold few distinct
keyword sets, so the column stays fixed-size and a flag word resolves to its record tail once per
process and account (:class:`WordTails`). Ids are never reused or removed while the account
exists (a rebuild keeps them; account ids are never reused either), which is what makes that
cache safe: an id a reader finds in a column was committed with its keywords, which no later
write changes. An account can hold 2**24 - 1 distinct keyword sets; a write needing one more
fails with :class:`midb.errors.KeywordSetsExhausted` (NO [LIMIT] to an IMAP client). Schema 7
interned them store-wide (per shard), which let one account that kept storing new keyword
combinations use up the ids of every account in its shard; per account, the limit is that
account's own, like the per-mailbox keyword limits of other servers. The log warns from 90 % of
an account's ids on, and ``midb stats`` shows the fullest account's count.

The ids alone do not bound the space: a set may hold 128 keywords of 255 octets, so 16 million
of them could take terabytes, and one client storing a new combination per STORE would fill an
8 GiB index, every account's, in about 225,000 commands (38 KB of index each). The index an
account's sets take is therefore bounded too, by :data:`MAX_KEYWORD_SET_OCTETS` (128 MiB): their
keywords' octets, plus :data:`KEYWORD_SET_INDEX_COST` per set for its two entries and their
B-tree share (about 90 octets measured), so that short keywords cannot take 1.6 GB by using up
the ids. The count kept is of keyword octets; the per-set part comes from the ids used, which
number the sets. Both bounds are thousands of times what real clients use (tags and a few flags:
tens of octets per set, a few hundred sets), and enough for a distinct keyword on each of a
million messages. Past them, a write needing a new combination fails as above.

Sets hold at most midb.messages.MAX_KEYWORDS_PER_MESSAGE keywords, which the store's writes
enforce (:class:`midb.errors.TooManyKeywords`, NO [LIMIT] as well): sets are kept for good, and
without that bound a client adding thousands of keywords to one message at a time stored each
growing set anew (80 STOREs of 4,000 keywords took the index to 247 MB, quadratically).

The column is kept in the write transaction of the message records it mirrors, by
midb.indexes.IndexDelta; :func:`rebuild_columns` recomputes it (schema upgrade, ``midb verify
--repair``).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import struct
import sys
import threading
from array import array
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

from midb.accounts import decode_account
from midb.errors import KeywordSetsExhausted
from midb.keys import FOLDER, U32, U64, account_key, unpack_message_key
from midb.messages import FIXED_SIZE, MODSEQ_FIELD

ENTRY = struct.Struct(">IIQ")                 # uid, flag word, modseq
_UID_PREFIX = U32                             # what a duplicate starts with: its UID
_PACKED = FOLDER.size + ENTRY.size            # getmulti(keyfixed=True): key + value per message
_WORDS_PER_PACKED = _PACKED // 4              # ... as u32 words: key (2), uid, flag word, modseq (2)
_KEYWORD_BITS = 24
MAX_KEYWORD_SET = (1 << _KEYWORD_BITS) - 1
_KEYWORDS_MASK = MAX_KEYWORD_SET
_LONGEST_PLAIN_KEY = 480                      # LMDB keys stop at 511 bytes
# The kinds of keyword_sets key, after the account's 4 bytes.
_NEXT_ID = b"n"
_OCTETS = b"o"
_ID = b"i"
_PLAIN = b"k"
_HASHED = b"h"
# Ids are never freed (above), so an account nearing the limit is the operator's to know of in
# time: a warning every 65,536 ids from 90 % of them on (about 25 from there to the end).
_WARN_FROM = MAX_KEYWORD_SET * 9 // 10
_WARN_EVERY = 1 << 16
MAX_KEYWORD_SET_OCTETS = 128 << 20
KEYWORD_SET_INDEX_COST = 96   # octets of index per set besides its keywords (about 90 measured)
log = logging.getLogger(__name__)
assert array("I").itemsize == 4 and _PACKED % 8 == 0


def _set_key(account: bytes, keywords: bytes) -> bytes:
    if len(keywords) <= _LONGEST_PLAIN_KEY:
        return account + _PLAIN + keywords
    return account + _HASHED + hashlib.blake2b(keywords, digest_size=32).digest()


def _id_key(account: bytes, set_id: int) -> bytes:
    return account + _ID + U32.pack(set_id)


def keyword_set_id(txn: Any, dbs: Any, account_id: int, keywords: bytes) -> int:
    """The id of a keyword set (space-separated, sorted) of the account, interned in this write
    transaction if new."""
    db = dbs.keyword_sets
    account = account_key(account_id)
    key = _set_key(account, keywords)
    raw = txn.get(key, db=db)
    if raw is not None:
        return U32.unpack(raw)[0]
    new_id = _next_keyword_set_id(txn, db, account)
    if new_id > MAX_KEYWORD_SET:
        raise KeywordSetsExhausted(f"too many distinct keyword combinations in this account "
                                   f"(at most {MAX_KEYWORD_SET})")
    octets = keyword_set_octets(txn, dbs, account_id) + len(keywords)
    charged = keyword_set_charge(new_id, octets)
    if charged > MAX_KEYWORD_SET_OCTETS:
        raise KeywordSetsExhausted(f"the distinct keyword combinations of this account would take {charged} "
                                   f"octets of index (at most {MAX_KEYWORD_SET_OCTETS})")
    txn.put(key, U32.pack(new_id), db=db)
    txn.put(_id_key(account, new_id), keywords, db=db)
    _put_next_id(txn, db, account, new_id + 1)
    txn.put(account + _OCTETS, U64.pack(octets), db=db)
    if new_id >= _WARN_FROM and new_id % _WARN_EVERY == 0:
        record = txn.get(account, db=dbs.accounts)
        log.warning("keyword combinations: account %s (id %d) has used %d of its %d ids; ids are never "
                    "freed, and its writes needing a new combination fail once all are used",
                    decode_account(account_id, record).name if record is not None else "?", account_id,
                    new_id, MAX_KEYWORD_SET)
    return new_id


def keyword_sets_used(txn: Any, dbs: Any, account_id: int) -> int:
    """How many keyword set ids the account has used (of MAX_KEYWORD_SET); 0 for a store of a
    schema before the column (opened read-only, not upgraded)."""
    if dbs.keyword_sets is None:
        return 0
    return _next_keyword_set_id(txn, dbs.keyword_sets, account_key(account_id)) - 1


def keyword_set_charge(sets: int, octets: int) -> int:
    """The index ``sets`` keyword sets of ``octets`` keyword octets in all count as, against
    MAX_KEYWORD_SET_OCTETS."""
    return octets + sets * KEYWORD_SET_INDEX_COST


def keyword_set_octets(txn: Any, dbs: Any, account_id: int) -> int:
    """The octets of the keywords of the account's sets (of MAX_KEYWORD_SET_OCTETS): kept with
    them, or counted for an account whose sets predate the count."""
    db = dbs.keyword_sets
    if db is None:
        return 0
    account = account_key(account_id)
    raw = txn.get(account + _OCTETS, db=db)
    if raw is not None:
        return U64.unpack(raw)[0]
    return _count_set_octets(txn, db, account)


def _count_set_octets(txn: Any, db: Any, account: bytes) -> int:
    prefix = account + _ID
    cursor = txn.cursor(db)
    total = 0
    if cursor.set_range(prefix):
        for key, value in cursor.iternext():
            if key[:5] != prefix:
                break
            total += len(value)
    return total


def set_keyword_set_octets(txn: Any, dbs: Any, account_id: int, octets: int) -> None:
    """Repair (midb verify): the account's count of keyword set octets."""
    txn.put(account_key(account_id) + _OCTETS, U64.pack(octets), db=dbs.keyword_sets)


def fullest_keyword_sets(txn: Any, dbs: Any) -> int:
    """The most keyword set ids any account of this shard has used."""
    db = dbs.keyword_sets
    if db is None:
        return 0
    return max((_next_keyword_set_id(txn, db, bytes(account)) - 1
                for account in txn.cursor(dbs.accounts).iternext(values=False)), default=0)


def set_next_keyword_set_id(txn: Any, dbs: Any, account_id: int, next_id: int) -> None:
    """Repair (midb verify): the account's next id, when it is not above every id it has."""
    _put_next_id(txn, dbs.keyword_sets, account_key(account_id), next_id)


def _next_keyword_set_id(txn: Any, db: Any, account: bytes) -> int:
    raw = txn.get(account + _NEXT_ID, db=db)
    return U32.unpack(raw)[0] if raw is not None else 1


def _put_next_id(txn: Any, db: Any, account: bytes, next_id: int) -> None:
    txn.put(account + _NEXT_ID, U32.pack(next_id), db=db)


def flag_word(txn: Any, dbs: Any, account_id: int, tail: bytes) -> int:
    """The column's flag word of a record tail (system flag byte + keywords) of the account."""
    word = tail[0] << _KEYWORD_BITS
    if len(tail) > 1:
        word |= keyword_set_id(txn, dbs, account_id, bytes(tail[1:]))
    return word


class ColumnWriter:
    """Column upkeep for one write job (IndexDelta's): one cursor for the deletions."""

    __slots__ = ("txn", "dbs", "_cursor")

    def __init__(self, txn: Any, dbs: Any) -> None:
        self.txn = txn
        self.dbs = dbs
        self._cursor: Any = None

    def put(self, account_id: int, folder_id: int, uid: int, tail: bytes, modseq: int) -> None:
        value = ENTRY.pack(uid, flag_word(self.txn, self.dbs, account_id, tail), modseq)
        self.txn.put(FOLDER.pack(account_id, folder_id), value, db=self.dbs.flag_columns)

    def drop(self, account_id: int, folder_id: int, uid: int) -> None:
        """Remove the message's entry, whatever its flags and MODSEQ were."""
        if self._cursor is None:
            self._cursor = self.txn.cursor(self.dbs.flag_columns)
        cursor = self._cursor
        prefix = _UID_PREFIX.pack(uid)
        if cursor.set_range_dup(FOLDER.pack(account_id, folder_id), prefix) and cursor.value()[:4] == prefix:
            cursor.delete()


class WordTails:
    """flag word -> record tail (system flag byte + keywords), per environment, process and
    account: :meth:`of` gives an account's mapping (what FlagColumns.tail_of wants).

    A miss reads the keyword set in a read transaction of its own (see the module docstring for
    why a cached entry never goes stale). At most _LIMIT words (and _BYTES_LIMIT bytes of tails)
    are kept over all accounts: past that, every account's mapping starts afresh (one a reader
    still holds keeps working)."""

    _LIMIT = 1 << 16
    _BYTES_LIMIT = 32 << 20   # and at most this much of their tails: a set may hold 128 long keywords

    def __init__(self, env: Any, dbs: Any) -> None:
        self._env = env
        self._dbs = dbs
        self._lock = threading.Lock()
        self._accounts: dict[int, AccountWordTails] = {}
        self._count = 0
        self._bytes = 0

    def of(self, account_id: int) -> AccountWordTails:
        tails = self._accounts.get(account_id)
        if tails is None:
            with self._lock:
                tails = self._accounts.setdefault(account_id, AccountWordTails(self, account_id))
        return tails

    def _resolve(self, tails: AccountWordTails, word: int) -> bytes:
        bits = bytes((word >> _KEYWORD_BITS,))
        set_id = word & _KEYWORDS_MASK
        if not set_id:
            tail = bits
        else:
            with self._env.begin() as txn:
                keywords = txn.get(_id_key(account_key(tails.account_id), set_id), db=self._dbs.keyword_sets)
            if keywords is None:
                raise LookupError(f"keyword set {set_id} of account id {tails.account_id} is not in the index")
            tail = bits + bytes(keywords)
        with self._lock:
            if self._count >= self._LIMIT or self._bytes >= self._BYTES_LIMIT:
                self._accounts = {}   # readers holding a mapping keep it; the next of() starts afresh
                self._count = 0
                self._bytes = 0
            if word not in tails:
                tails[word] = tail
                self._count += 1
                self._bytes += len(tail)
        return tail


class AccountWordTails(dict[int, bytes]):
    """One account's flag word -> record tail (see WordTails); a hit is a plain dict lookup."""

    __slots__ = ("_owner", "account_id")

    def __init__(self, owner: WordTails, account_id: int) -> None:
        super().__init__()
        self._owner = owner
        self.account_id = account_id

    def __missing__(self, word: int) -> bytes:
        return self._owner._resolve(self, word)


class Column(NamedTuple):
    """A folder's column, or the part of it in a UID range: parallel arrays, UID order."""

    uids: array          # 'I'
    words: array         # 'I': flag words (WordTails resolves them)
    modseqs: array | None  # 'Q', when asked for

    def among(self, wanted: list[int]) -> Column:
        """The entries whose UID is in ``wanted``: one C-level pass (map, compress)."""
        keep = list(map(set(wanted).__contains__, self.uids))
        return Column(array("I", itertools.compress(self.uids, keep)), array("I", itertools.compress(self.words, keep)),
                      array("Q", itertools.compress(self.modseqs, keep)) if self.modseqs is not None else None)

    def batches(self, size: int) -> Iterator[tuple[list[int], list[int], list[int] | None]]:
        """(UIDs, flag words, MODSEQs or None) lists, ``size`` messages at a time."""
        for start in range(0, len(self.uids), size):
            stop = start + size
            yield (self.uids[start:stop].tolist(), self.words[start:stop].tolist(),
                   self.modseqs[start:stop].tolist() if self.modseqs is not None else None)


def _field(view: memoryview, code: Literal["I", "Q"], index: int, stride: int) -> array[int]:
    numbers = array(code)
    numbers.frombytes(view.cast(code)[index::stride].tobytes())
    if sys.byteorder == "little":
        numbers.byteswap()
    return numbers


def _packed(txn: Any, dbs: Any, account_id: int, folder_id: int, prefetch: bool) -> memoryview:
    """Every entry of the folder's column as (folder key + entry) records in one buffer.
    ``prefetch``: the column is long; its pages are all asked of the kernel first (midb.prefetch),
    so that a cold read waits for the disk once, not once per page fault."""
    key = FOLDER.pack(account_id, folder_id)
    if prefetch:
        dbs.pages.duplicates(txn, b"flag_columns", key)
    cursor = txn.cursor(dbs.flag_columns)
    packed = cursor.getmulti([key], dupdata=True, dupfixed_bytes=ENTRY.size, keyfixed=True)
    return memoryview(packed).cast("B")


def column_uids(txn: Any, dbs: Any, account_id: int, folder_id: int, *, prefetch: bool = False) -> array:
    """The folder's UIDs, ascending, as an array of u32 (SELECT's list)."""
    view = _packed(txn, dbs, account_id, folder_id, prefetch)
    return _field(view, "I", 2, _WORDS_PER_PACKED) if len(view) else array("I")


def read_column(txn: Any, dbs: Any, account_id: int, folder_id: int, first: int, last: int, *,
                with_modseq: bool, prefetch: bool = False) -> Column:
    """The column entries of the folder's messages with UIDs in [first, last]."""
    view = _packed(txn, dbs, account_id, folder_id, prefetch)
    if not len(view):
        return Column(array("I"), array("I"), array("Q") if with_modseq else None)
    uids = _field(view, "I", 2, _WORDS_PER_PACKED)
    words = _field(view, "I", 3, _WORDS_PER_PACKED)
    modseqs = _field(view, "Q", 2, _WORDS_PER_PACKED // 2) if with_modseq else None
    low = bisect.bisect_left(uids, first)
    high = bisect.bisect_right(uids, last, low)
    if low or high < len(uids):
        uids, words = uids[low:high], words[low:high]
        modseqs = modseqs[low:high] if modseqs is not None else None
    return Column(uids, words, modseqs)


def expected_column_entries(txn: Any, dbs: Any, message_items: Iterator[tuple[bytes, bytes]]) -> set[bytes]:
    """(folder key + entry) the given (message key, record) pairs call for, against the keyword
    sets as interned (a set not interned yet counts as id 0, so it shows as a difference)."""
    entries: set[bytes] = set()
    ids: dict[tuple[int, bytes], int] = {}
    for key, raw in message_items:
        account_id, folder_id, uid = unpack_message_key(key)
        tail = bytes(raw[FIXED_SIZE:])
        word = tail[0] << _KEYWORD_BITS
        if len(tail) > 1:
            keywords = tail[1:]
            known = ids.get((account_id, keywords))
            if known is None:
                found = txn.get(_set_key(account_key(account_id), keywords), db=dbs.keyword_sets)
                known = ids[account_id, keywords] = U32.unpack(found)[0] if found is not None else 0
            word |= known
        entries.add(FOLDER.pack(account_id, folder_id) + ENTRY.pack(uid, word, MODSEQ_FIELD.unpack_from(raw)[0]))
    return entries


class KeywordSetCheck(NamedTuple):
    """What :func:`check_keyword_sets` found: problem texts, the keys of accounts that no longer
    exist, the accounts whose next id is not above every id they have (account id -> the next id
    it should have), and those whose octet count is wrong (account id -> the right one)."""

    problems: list[str]
    orphaned: list[bytes]
    next_ids: dict[int, int]
    octets: dict[int, int]


def check_keyword_sets(txn: Any, dbs: Any) -> KeywordSetCheck:
    """``keyword_sets`` against itself and the accounts: every id's keywords map back to it, no
    id is at or past its account's next one (the next new set would overwrite it), and no set
    belongs to an account that no longer exists."""
    check = KeywordSetCheck([], [], {}, {})
    ids: dict[bytes, dict[int, bytes]] = {}     # account key -> id -> keywords
    lookups: dict[bytes, dict[bytes, int]] = {}  # account key -> k/h key -> id
    next_ids: dict[bytes, int] = {}
    octets: dict[bytes, int] = {}
    exists: dict[bytes, bool] = {}               # account key -> the account is there (one read each)
    unknown = 0
    for key, value in txn.cursor(dbs.keyword_sets):
        key, value = bytes(key), bytes(value)
        account, kind = key[:4], key[4:5]
        if account not in exists:
            exists[account] = txn.get(account, db=dbs.accounts) is not None
        if not exists[account]:
            check.orphaned.append(key)
        elif kind == _ID and len(key) == 9:
            ids.setdefault(account, {})[U32.unpack(key[5:])[0]] = value
        elif kind == _NEXT_ID and len(key) == 5 and len(value) == 4:
            next_ids[account] = U32.unpack(value)[0]
        elif kind == _OCTETS and len(key) == 5 and len(value) == 8:
            octets[account] = U64.unpack(value)[0]
        elif kind in (_PLAIN, _HASHED) and len(value) == 4:
            lookups.setdefault(account, {})[key] = U32.unpack(value)[0]
        else:
            unknown += 1
    if unknown:
        check.problems.append(f"keyword sets: {unknown} entries of no known form")
    if check.orphaned:
        check.problems.append(f"keyword sets: {len(check.orphaned)} entries of accounts that no longer exist")
    for account, sets in ids.items():
        account_id = U32.unpack(account)[0]
        mapped = lookups.get(account, {})
        wrong = sum(mapped.get(_set_key(account, keywords)) != set_id for set_id, keywords in sets.items())
        wrong += sum(set_id not in sets or _set_key(account, sets[set_id]) != key for key, set_id in mapped.items())
        if wrong:
            check.problems.append(f"keyword sets: account {account_id} has {wrong} entries whose id and keywords "
                                  f"do not match (--repair leaves them: running processes may have cached them)")
        counted = sum(len(keywords) for keywords in sets.values())
        if account in octets and octets[account] != counted:
            check.problems.append(f"keyword sets: account {account_id}'s count of {octets[account]} octets "
                                  f"is not the {counted} its sets hold")
            check.octets[account_id] = counted
        highest = max(sets)
        if next_ids.get(account, 1) <= highest:
            check.problems.append(f"keyword sets: account {account_id}'s next id {next_ids.get(account, 1)} "
                                  f"is not above its highest, {highest}")
            check.next_ids[account_id] = highest + 1
    return check


def stored_column_entries(txn: Any, dbs: Any) -> set[bytes]:
    return {bytes(key) + bytes(value) for key, value in txn.cursor(dbs.flag_columns).iternext()}


def rebuild_columns(txn: Any, dbs: Any) -> None:
    """Recompute the column from the messages table (in a write transaction); interned keyword
    sets are kept, so ids cached by running processes stay right (the upgrade from schema 7
    empties keyword_sets first, see midb.env)."""
    txn.drop(dbs.flag_columns, delete=False)
    writer = ColumnWriter(txn, dbs)
    for key, raw in txn.cursor(dbs.messages).iternext():
        account_id, folder_id, uid = unpack_message_key(key)
        writer.put(account_id, folder_id, uid, bytes(raw[FIXED_SIZE:]), MODSEQ_FIELD.unpack_from(raw)[0])
