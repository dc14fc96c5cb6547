"""The flag column (midb.columns): kept by every write, read a page at a time, the same answers
as the message records, rebuilt by a schema upgrade and by ``verify --repair``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from store_helpers import folder_id, store_with_alice

from midb import columns, messages
from midb import env as midb_env
from midb import store as store_module
from midb.errors import KeywordSetsExhausted, TooManyKeywords
from midb.keys import FOLDER, U32, account_key, unpack_message_key
from midb.messages import FIXED_SIZE, MODSEQ_FIELD, flags_of
from midb.store import Store

MSG = b"From: a@example.org\r\nSubject: hello\r\n\r\nbody text\r\n"
FLAG_SETS: list[tuple[str, ...]] = [(), ("\\Seen",), ("\\Seen", "$Label1"), ("\\Flagged", "$A", "$B"),
                                    ("\\Deleted", "\\Seen"), ("NonJunk",)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with store_with_alice(tmp_path / "store") as opened:
        yield opened


def from_column(store: Store, folder: int, uids: list[int], *, every_existing: bool = False,
                batch: int = 7) -> list[tuple[int, tuple[str, ...], int]]:
    rows: list[tuple[int, tuple[str, ...], int]] = []
    for found in store.flag_column_batches("alice", folder, uids, batch, with_modseq=True,
                                           every_existing=every_existing):
        assert found.modseqs is not None
        rows += zip(found.uids, map(flags_of, found.tail_list()), found.modseqs, strict=True)
    return rows


def from_records(store: Store, folder: int, uids: list[int]) -> list[tuple[int, tuple[str, ...], int]]:
    return [(meta.uid, meta.flags, meta.modseq) for meta in store.get_messages("alice", folder, uids)]


def column_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts midb.columns.read_column calls (one per answer read from the column)."""
    calls: list[int] = []
    original = columns.read_column

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(columns, "read_column", counted)
    return calls


def test_the_column_follows_every_kind_of_change(store: Store) -> None:
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, FLAG_SETS[n % len(FLAG_SETS)], None, 0) for n in range(60)])
    store.store_flags("alice", inbox, range(1, 61, 3), "add", ["$New", "\\Answered"])
    store.store_flags("alice", inbox, range(2, 61, 5), "remove", ["$A", "\\Seen"])
    store.store_flags("alice", inbox, [10, 11], "set", [])
    store.store_flags("alice", inbox, range(1, 61, 7), "add", ["\\Deleted"])
    store.expunge("alice", inbox)
    store.create_folder("alice", "Other")
    other = folder_id(store, "Other")
    store.copy("alice", inbox, [2, 3, 4], other)
    store.move("alice", inbox, [5, 6], other)
    assert store.verify() == []
    for folder in (inbox, other):
        everything = [meta.uid for meta in store.messages("alice", folder)]
        expected = from_records(store, folder, everything)
        assert from_column(store, folder, everything, every_existing=True) == expected
        assert len(expected) > 1
    store.delete_folder("alice", "Other")
    store.rename_folder("alice", "INBOX", "Old")   # INBOX's messages move to a new folder
    assert store.verify() == []
    old = folder_id(store, "Old")
    assert from_column(store, old, list(range(1, 61))) == from_records(store, old, list(range(1, 61)))
    store.delete_account("alice")
    with store._shared.read() as txn:
        assert not list(txn.cursor(store._shared.dbs.flag_columns).iternext())
    assert store.verify() == []


def test_any_uid_set_reads_the_same_as_the_records(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, FLAG_SETS[n % len(FLAG_SETS)], None, 0) for n in range(80)])
    store.store_flags("alice", inbox, [20, 21, 22, 50], "add", ["\\Deleted"])
    store.expunge("alice", inbox)
    reads = column_reads(monkeypatch)
    present = [meta.uid for meta in store.messages("alice", inbox)]
    cases = [
        (list(range(1, 81)), False),          # one range, with expunged UIDs in it
        (present, True),                       # a view's 1:*, gaps and all
        (present[10:70], False),               # not a range: checked against the set
        (list(range(1, 81, 2)), False),        # half of them
        (list(range(30, 36)), False),          # a small part: its records instead
        ([999], False),
    ]
    for wanted, every in cases:
        assert from_column(store, inbox, wanted, every_existing=every) == from_records(store, inbox, wanted)
    # Sets of 8 or more of the 63 messages left (1/8) come from the column, smaller ones from records.
    assert len(reads) == 4
    assert from_column(store, inbox, []) == []


def test_a_session_view_ahead_of_nothing_misses_no_message(store: Store) -> None:
    """every_existing: newer messages than the asked range are left out by the range."""
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, (), None, 0)] * 20)
    view = list(range(1, 21))
    store.append_many("alice", inbox, [(MSG, ("\\Seen",), None, 0)] * 5)   # arrives after the view
    assert [uid for uid, _f, _m in from_column(store, inbox, view, every_existing=True)] == view


def test_keyword_sets_are_interned_once_and_survive_a_rebuild(store: Store) -> None:
    inbox = folder_id(store)
    long_keywords = tuple(f"$K{n:03d}{'x' * 40}" for n in range(12))   # over 480 bytes: hashed key
    store.append_many("alice", inbox, [(MSG, ("$A", "$B"), None, 0), (MSG, ("$B", "$A"), None, 0),
                                       (MSG, long_keywords, None, 0), (MSG, long_keywords, None, 0)])
    shared = store._shared
    alice = account_key(store.get_account("alice").id)   # type: ignore[union-attr]

    def interned() -> dict[bytes, bytes]:
        with shared.read() as txn:
            return {bytes(key): bytes(value) for key, value in txn.cursor(shared.dbs.keyword_sets)}

    before = interned()
    assert all(key.startswith(alice) for key in before)   # the account's own
    assert sorted(key[4:5] for key in before) == [b"h", b"i", b"i", b"k", b"n", b"o"]
    with shared.env.begin(write=True) as txn:
        columns.rebuild_columns(txn, shared.dbs)
    assert interned() == before
    assert store.verify() == []
    rows = from_column(store, inbox, [1, 2, 3, 4])
    assert [flags for _uid, flags, _modseq in rows] == [("$A", "$B"), ("$A", "$B"), long_keywords, long_keywords]


def test_each_account_numbers_its_own_keyword_sets(store: Store) -> None:
    """The same id means different keywords in two accounts, and each reads its own (the
    process's cache of flag words is per account too)."""
    store.create_account("bob")
    store.append_many("alice", folder_id(store), [(MSG, ("$A",), None, 0)])
    store.append_many("bob", folder_id(store, account="bob"), [(MSG, ("$B",), None, 0), (MSG, ("$A",), None, 0)])
    for account, expected in (("alice", [("$A",)]), ("bob", [("$B",), ("$A",)])):
        inbox = folder_id(store, account=account)
        rows = store.flag_column_batches(account, inbox, [1, 2], 10, every_existing=True)
        found = next(rows)
        assert found.tail_of is not None
        assert [flags_of(tail) for tail in found.tail_list()] == expected
    words = {account: next(store.flag_column_batches(account, folder_id(store, account=account), [1], 10,
                                                     every_existing=True)).tails[0]
             for account in ("alice", "bob")}
    assert words["alice"] == words["bob"] == 1   # both accounts' first set: id 1, no system flags
    assert store.verify() == []


def test_the_keyword_set_ids_run_out_for_one_account_only(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_account("bob")
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, ("$A",), None, 0)])
    monkeypatch.setattr(columns, "MAX_KEYWORD_SET", 1)
    store.store_flags("alice", inbox, [1], "add", ["\\Seen"])   # a known set: fine
    with pytest.raises(KeywordSetsExhausted, match="too many distinct keyword combinations in this account"):
        store.store_flags("alice", inbox, [1], "add", ["$Other"])
    with pytest.raises(KeywordSetsExhausted):
        store.append_many("alice", inbox, [(MSG, ("$Other",), None, 0)])
    assert store.verify() == []   # the failed writes left nothing behind
    # Another account of the same shard is not affected.
    bob_inbox = folder_id(store, account="bob")
    store.append_many("bob", bob_inbox, [(MSG, ("$Other",), None, 0)])
    assert [meta.flags for meta in store.get_messages("bob", bob_inbox, [1])] == [("$Other",)]
    assert [meta.flags for meta in store.get_messages("alice", inbox, [1])] == [("\\Seen", "$A")]


def test_the_octets_of_an_accounts_keyword_sets_are_bounded(store: Store,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Before the bound, 128 keywords of 255 octets per STORE, a new combination each time, filled
    # the index every account shares.
    store.create_account("bob")
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, ("$Aaaa",), None, 0)])          # 5 octets
    monkeypatch.setattr(columns, "KEYWORD_SET_INDEX_COST", 10)
    monkeypatch.setattr(columns, "MAX_KEYWORD_SET_OCTETS", 5 + len("$Aaaa $B") + 2 * 10)
    store.store_flags("alice", inbox, [1], "add", ["$B"])                   # exactly the bound
    with pytest.raises(KeywordSetsExhausted, match="would take 47 octets of index"):
        store.store_flags("alice", inbox, [1], "set", ["$Ccc"])            # 5 + 8 + 4: past it
    store.store_flags("alice", inbox, [1], "set", ["$Aaaa"])                 # known sets keep working
    assert store.keyword_sets_used("alice") == (2, 13)
    assert store.verify() == []
    bob_inbox = folder_id(store, account="bob")                               # bob has his own bound
    store.append_many("bob", bob_inbox, [(MSG, ("$Ccc",), None, 0)])


def test_short_keywords_are_charged_their_sets_index(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each set costs about 90 octets of index whatever its keywords: counted with them, so that
    # one-letter keywords cannot take 1.6 GB by using up an account's ids (probe49 finding 3).
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, (), None, 0)])
    cost = columns.KEYWORD_SET_INDEX_COST
    monkeypatch.setattr(columns, "MAX_KEYWORD_SET_OCTETS", 3 * (cost + 1))
    for keyword in ("a", "b", "c"):
        store.store_flags("alice", inbox, [1], "set", [keyword])
    with pytest.raises(KeywordSetsExhausted, match=f"would take {4 + 4 * cost} octets of index"):
        store.store_flags("alice", inbox, [1], "set", ["d"])
    assert store.keyword_sets_used("alice") == (3, 3)


def test_keyword_set_octets_of_sets_interned_before_the_count(store: Store) -> None:
    """Sets interned before the count was kept (no ``o`` entry) are counted at the next new set,
    and a wrong count is reported and repaired by verify."""
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, ("$A",), None, 0), (MSG, ("$A", "$B"), None, 0)])
    alice = columns.account_key(store.get_account("alice").id)   # type: ignore[union-attr]
    shared = store._home("alice")
    with shared.env.begin(write=True) as txn:
        assert txn.delete(alice + columns._OCTETS, db=shared.dbs.keyword_sets)
    assert store.keyword_sets_used("alice") == (2, 7)   # counted from the sets
    assert store.verify() == []
    store.store_flags("alice", inbox, [1], "add", ["$C"])   # "$A $C": a new set, the count kept again
    with shared.env.begin() as txn:
        assert txn.get(alice + columns._OCTETS, db=shared.dbs.keyword_sets) == columns.U64.pack(12)
    with shared.env.begin(write=True) as txn:
        txn.put(alice + columns._OCTETS, columns.U64.pack(1), db=shared.dbs.keyword_sets)
    [problem] = store.verify()
    assert "count of 1 octets is not the 12 its sets hold" in problem
    store.verify(repair=True)
    assert store.verify() == [] and store.keyword_sets_used("alice") == (3, 12)


def test_a_message_carries_at_most_the_keyword_bound(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = folder_id(store)
    limit = messages.MAX_KEYWORDS_PER_MESSAGE
    many = [f"$K{n}" for n in range(limit)]
    store.append_many("alice", inbox, [(MSG, tuple(many), None, 0)])   # exactly the bound: fine
    with pytest.raises(TooManyKeywords, match=f"{limit + 1} keywords on one message"):
        store.store_flags("alice", inbox, [1], "add", ["$One", "\\Seen"])
    with pytest.raises(KeywordSetsExhausted):   # the same answer as running out of ids
        store.append_many("alice", inbox, [(MSG, (*many, "$One"), None, 0)])
    with pytest.raises(TooManyKeywords):
        store.store_flags("alice", inbox, [1], "set", [*many, "$One"])
    assert store.verify() == []   # nothing of the failed writes is left
    assert len(store.get_messages("alice", inbox, [1])[0].flags) == limit
    # A message that carries more (stored before a lower bound) keeps them, can shed some, and
    # may not gain any; a rebuild of the column (a schema upgrade) re-interns its set as it is.
    monkeypatch.setattr(store_module, "MAX_KEYWORDS_PER_MESSAGE", 2)
    store.store_flags("alice", inbox, [1], "add", ["\\Seen"])
    store.store_flags("alice", inbox, [1], "remove", ["$K0"])
    with pytest.raises(TooManyKeywords):
        store.store_flags("alice", inbox, [1], "add", ["$One"])
    store.store_flags("alice", inbox, [1], "set", ["$A", "$B"])
    shared = store._shared
    with shared.env.begin(write=True) as txn:
        txn.drop(shared.dbs.keyword_sets, delete=False)
        columns.rebuild_columns(txn, shared.dbs)
    assert store.verify() == []
    assert store.get_messages("alice", inbox, [1])[0].flags == ("$A", "$B")


def test_deleting_an_account_removes_its_keyword_sets(store: Store) -> None:
    store.create_account("bob")
    store.append_many("alice", folder_id(store), [(MSG, ("$A",), None, 0)])
    store.append_many("bob", folder_id(store, account="bob"), [(MSG, ("$B", "$C"), None, 0)])
    bob = account_key(store.get_account("bob").id)   # type: ignore[union-attr]
    shared = store._shared

    def owners() -> set[bytes]:
        with shared.read() as txn:
            return {bytes(key[:4]) for key in txn.cursor(shared.dbs.keyword_sets).iternext(values=False)}

    assert bob in owners()
    store.delete_account("bob")
    assert owners() == {account_key(store.get_account("alice").id)}   # type: ignore[union-attr]
    assert store.verify() == []


def test_verify_finds_a_wrong_column_and_repair_rebuilds_it(store: Store) -> None:
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, FLAG_SETS[n % len(FLAG_SETS)], None, 0) for n in range(10)])
    shared = store._shared
    account_id = store.get_account("alice").id   # type: ignore[union-attr]
    key = FOLDER.pack(account_id, inbox)
    with shared.env.begin(write=True) as txn:
        cursor = txn.cursor(shared.dbs.flag_columns)
        assert cursor.set_key(key)
        cursor.delete()                                                        # one message lost
        txn.put(key, columns.ENTRY.pack(99, 0, 1), db=shared.dbs.flag_columns)  # one that never was
    problems = store.verify()
    assert any("flag column: 1 entries without a matching message, 1 messages missing" in p for p in problems)
    # The same number of entries as messages, so SELECT's list would pass its count check: make
    # it one short, and the list comes from the message keys instead.
    with shared.env.begin(write=True) as txn:
        txn.delete(key, columns.ENTRY.pack(99, 0, 1), db=shared.dbs.flag_columns)
    assert list(store.folder_uids("alice", inbox)[1]) == list(range(1, 11))
    store.verify(repair=True)
    assert store.verify() == []
    assert from_column(store, inbox, list(range(1, 11))) == from_records(store, inbox, list(range(1, 11)))


def test_verify_checks_the_keyword_sets_and_repairs_what_is_safe(store: Store) -> None:
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, ("$A",), None, 0), (MSG, ("$A", "$B"), None, 0)])
    shared = store._shared
    alice = account_key(store.get_account("alice").id)   # type: ignore[union-attr]
    gone = account_key(999)   # an account id never handed out
    with shared.env.begin(write=True) as txn:
        db = shared.dbs.keyword_sets
        txn.put(alice + b"n", U32.pack(2), db=db)            # at id 2: the next new set would overwrite it
        txn.put(gone + b"i" + U32.pack(1), b"$X", db=db)     # sets of an account that no longer exists
        txn.put(gone + b"k$X", U32.pack(1), db=db)
    problems = store.verify()
    assert any("account 1's next id 2 is not above its highest, 2" in p for p in problems), problems
    assert any("2 entries of accounts that no longer exist" in p for p in problems), problems
    store.verify(repair=True)
    assert store.verify() == []
    store.store_flags("alice", inbox, [1], "add", ["$C"])   # a new set takes id 3, not 2
    assert [meta.flags for meta in store.get_messages("alice", inbox, [1, 2])] == [("$A", "$C"), ("$A", "$B")]
    assert [flags for _uid, flags, _m in from_column(store, inbox, [1, 2])] == [("$A", "$C"), ("$A", "$B")]


def test_verify_reports_keyword_sets_that_do_not_map_back(store: Store) -> None:
    store.append_many("alice", folder_id(store), [(MSG, ("$A",), None, 0)])
    shared = store._shared
    alice = account_key(store.get_account("alice").id)   # type: ignore[union-attr]
    with shared.env.begin(write=True) as txn:
        txn.put(alice + b"i" + U32.pack(1), b"$Z", db=shared.dbs.keyword_sets)   # id 1's keywords changed
        txn.put(alice + b"x", b"?", db=shared.dbs.keyword_sets)
    problems = store.verify()
    assert any("has 2 entries whose id and keywords do not match" in p for p in problems), problems
    assert any("1 entries of no known form" in p for p in problems), problems


def downgrade_to_schema_5(path: Path) -> None:
    environment = lmdb.open(str(path / "index"), max_dbs=64)
    try:
        with environment.begin(write=True) as txn:
            for name in (b"flag_columns", b"keyword_sets"):
                txn.drop(environment.open_db(name, txn=txn), delete=True)
            txn.put(b"schema", (5).to_bytes(4, "big"), db=environment.open_db(b"meta", txn=txn))
    finally:
        environment.close()


def test_a_schema_5_store_is_read_from_its_records_then_upgraded(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store"
    with Store(path, fsync=False) as store:
        store.create_account("alice")
        inbox = folder_id(store)
        store.append_many("alice", inbox, [(MSG, FLAG_SETS[n % len(FLAG_SETS)], None, 0) for n in range(30)])
        expected = from_records(store, inbox, list(range(1, 31)))
    downgrade_to_schema_5(path)
    reads = column_reads(monkeypatch)
    with Store(path, readonly=True) as old:
        assert not old._shared.columned
        assert from_column(old, inbox, list(range(1, 31))) == expected
        assert old.verify() == []
    assert reads == []
    with Store(path, fsync=False) as store:
        assert store._shared.columned
        with store._shared.read() as txn:
            assert txn.get(b"schema", db=store._shared.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")
        assert from_column(store, inbox, list(range(1, 31))) == expected
        assert store.verify() == []
    assert reads == [1]


def downgrade_to_schema_7(path: Path) -> None:
    """Rewrite the keyword sets and the column as schema 7 had them: one numbering per shard."""
    environment = lmdb.open(str(path / "index"), max_dbs=64)
    try:
        with environment.begin(write=True) as txn:
            sets, column = environment.open_db(b"keyword_sets", txn=txn), environment.open_db(b"flag_columns", txn=txn)
            txn.drop(sets, delete=False)
            txn.drop(column, delete=False)
            ids: dict[bytes, int] = {}
            for key, raw in txn.cursor(environment.open_db(b"messages", txn=txn)):
                tail = bytes(raw[FIXED_SIZE:])
                word = tail[0] << 24
                if len(tail) > 1:
                    keywords = tail[1:]
                    if keywords not in ids:
                        ids[keywords] = len(ids) + 1
                        txn.put(b"k" + keywords, U32.pack(ids[keywords]), db=sets)
                        txn.put(b"i" + U32.pack(ids[keywords]), keywords, db=sets)
                    word |= ids[keywords]
                uid = unpack_message_key(bytes(key))[2]
                txn.put(bytes(key[:8]), columns.ENTRY.pack(uid, word, MODSEQ_FIELD.unpack_from(raw)[0]), db=column)
            txn.put(b"n", U32.pack(len(ids) + 1), db=sets)
            txn.put(b"schema", (7).to_bytes(4, "big"), db=environment.open_db(b"meta", txn=txn))
    finally:
        environment.close()


def test_a_schema_7_store_has_its_keyword_sets_numbered_per_account(tmp_path: Path) -> None:
    path = tmp_path / "store"
    messages: dict[str, list[tuple[str, ...]]] = {   # as flags_of spells them
        "alice": [("$A",), ("$A", "$B"), ("\\Seen", "$A")], "bob": [("$B",), ("$A",), ("$B",)]}
    with Store(path, fsync=False) as store:
        for account, flag_sets in messages.items():
            store.create_account(account)
            store.append_many(account, folder_id(store, account=account), [(MSG, flags, None, 0) for flags in flag_sets])
    downgrade_to_schema_7(path)
    with Store(path, readonly=True) as old:   # schema 7's words mean nothing to schema 8: records are read
        assert not old._shared.columned
        assert [meta.flags for meta in old.get_messages("bob", folder_id(old, account="bob"), [1, 2, 3])] == [
            ("$B",), ("$A",), ("$B",)]
    with Store(path, fsync=False) as store:
        with store._shared.read() as txn:
            assert txn.get(b"schema", db=store._shared.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")
        for account, flag_sets in messages.items():
            inbox = folder_id(store, account=account)
            [found] = store.flag_column_batches(account, inbox, [1, 2, 3], 10, every_existing=True)
            assert [flags_of(tail) for tail in found.tail_list()] == flag_sets
            assert found.tails[:2] == [1, 2]   # each account's sets numbered from 1
        assert store.verify() == []
        assert store.stats()["keyword_sets"] == 2
        store.store_flags("bob", folder_id(store, account="bob"), [1], "add", ["$C"])   # a new set: bob's 3rd
        assert store.stats()["keyword_sets"] == 3


def test_stats_show_the_keyword_set_ids_of_the_fullest_account(store: Store) -> None:
    inbox = folder_id(store)
    assert store.stats()["keyword_sets"] == 0
    store.append_many("alice", inbox, [(MSG, ("$A",), None, 0), (MSG, ("$A", "$B"), None, 0),
                                       (MSG, ("$B", "$A"), None, 0), (MSG, ("\\Seen",), None, 0)])
    store.create_account("bob")
    store.append_many("bob", folder_id(store, account="bob"), [(MSG, ("$C",), None, 0)])
    stats = store.stats()
    assert stats["keyword_sets"] == 2   # alice's {$A}, {$A $B}; system flags take none; bob has 1
    assert store.keyword_sets_used("alice") == (2, len("$A") + len("$A $B"))
    assert store.keyword_sets_used("bob") == (1, len("$C"))
    assert stats["keyword_sets_limit"] == columns.MAX_KEYWORD_SET


def test_an_account_nearing_the_keyword_set_limit_is_logged(store: Store, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(MSG, ("$A",), None, 0)])   # id 1
    monkeypatch.setattr(columns, "_WARN_FROM", 3)
    monkeypatch.setattr(columns, "_WARN_EVERY", 2)
    with caplog.at_level("WARNING", logger="midb.columns"):
        store.store_flags("alice", inbox, [1], "add", ["$B"])        # id 2: below the threshold
        assert not caplog.records
        store.store_flags("alice", inbox, [1], "add", ["$C"])        # id 3: from it, not on a step
        assert not caplog.records
        store.store_flags("alice", inbox, [1], "add", ["$D"])        # id 4: a step
    [record] = caplog.records
    alice_id = store.get_account("alice").id   # type: ignore[union-attr]
    assert f"account alice (id {alice_id}) has used 4 of its 16777215 ids" in record.getMessage()
    assert "never freed" in record.getMessage()
