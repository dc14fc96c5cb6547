"""The sort index (midb.sortindex, schema 7): entries written and removed with their messages,
read in one pass, derived (and written back) where missing, checked by verify."""

from __future__ import annotations

import marshal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import lmdb
import pytest
from store_helpers import folder_id, store_with_alice

from midb import deferred, mime, sortindex
from midb import env as midb_env
from midb.deferred import DeferredParser
from midb.keys import folder_key, message_key, prefix_end
from midb.store import Store
from midb.summary import SortRecord, encode_summary, sort_record_of, summarize

DATED = (b"From: Ann Example <Ann@Example.org>\r\nTo: bob@example.org\r\nCc: Carl <carl@example.org>\r\n"
         b"Subject: Re: [list] Quarterly figures\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
         b"Message-ID: <q2@example.org>\r\nIn-Reply-To: <q1@example.org>\r\n\r\nall fine\r\n")
UNDATED = b"From: zed@example.org\r\nSubject: \xc3\xa9t\xc3\xa9 notes\r\nReferences: <a@x> <b@x>\r\n\r\nbody\r\n"
PLAIN = b"From: a@example.org\r\nSubject: hello\r\n\r\nbody text\r\n"
INTERNALDATE = 1_700_000_000


def message(number: int) -> bytes:
    return (b"From: u%d@example.org\r\nSubject: topic %d\r\nDate: Mon, 2 Nov 2026 10:%02d:00 +0000\r\n"
            b"Message-ID: <m%d@example.org>\r\n\r\nbody %d\r\n" % (number, number % 7, number % 60, number, number))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with store_with_alice(tmp_path / "store") as opened:
        yield opened


def stored_entries(store: Store, account: str = "alice") -> dict[tuple[int, int], bytes]:
    """(folder id, UID) -> entry: the sort index of the account's shard, as stored."""
    shared = store._home(account)
    with shared.read() as txn:
        account_id = store._account_id(txn, shared.dbs, account)
        out = {}
        for key, value in txn.cursor(shared.dbs.sort_records).iternext():
            owner, folder, uid = (int.from_bytes(key[start:start + 4], "big") for start in (0, 4, 8))
            if owner == account_id:
                out[(folder, uid)] = bytes(value)
        return out


def expected_entry(data: bytes, internaldate: int = INTERNALDATE) -> bytes:
    return sortindex.entry_of_summary(encode_summary(summarize(mime.digest(data))), internaldate)


def fill(store: Store, count: int, name: str = "INBOX") -> int:
    folder = folder_id(store, name)
    store.append_many("alice", folder, [(message(number), (), INTERNALDATE + number, 0) for number in range(count)])
    return folder


def all_values(store: Store, folder: int, read: Any = sortindex.thread_values) -> dict[int, Any]:
    return store.sort_values("alice", folder, store.uids("alice", folder), read)


# -- the entry --------------------------------------------------------------------------------------


def test_an_entry_holds_the_values_ready_to_compare() -> None:
    entry = expected_entry(DATED)
    date = 1793613600   # Mon, 2 Nov 2026 10:00:00 +0000
    assert sortindex.thread_values(entry) == (date, "QUARTERLY FIGURES", True, "q2@example.org", ("q1@example.org",))
    # addr-mailbox of the first address (RFC 5256); a display name, else the address (RFC 5957)
    assert sortindex.sort_texts(entry) == ("ANN", "BOB", "CARL", "ANN EXAMPLE", "BOB@EXAMPLE.ORG")
    assert sortindex.entry_date(entry) == date
    undated = expected_entry(UNDATED, 12345)
    # No Date: the internal date (RFC 5256 section 2.2); texts by i;unicode-casemap (RFC 5051).
    assert sortindex.thread_values(undated) == (12345, "E\u0301TE\u0301 NOTES", False, None, ("a@x", "b@x"))
    assert sortindex.entry_date(undated) == 12345


@pytest.mark.parametrize(("text", "form"), [
    ("abc [x] 1", "ABC [X] 1"),                   # ASCII: upper-cased
    ("Été", "E\u0301TE\u0301"),                   # titlecased, then decomposed
    ("e\u0301te\u0301", "E\u0301TE\u0301"),         # already decomposed: the same
    ("Straße", "STRA\u00dfE"),                     # ß has no simple titlecase: it stays
    ("\ufb01ne", "fiNE"),                          # nor has ﬁ; its decomposition is not titlecased
    ("\u01c6ungla", "Dz\u030cUNGLA"),              # ǆ titlecases to ǅ, not to Ǆ
    ("\u24d0\u2170", "AI"),                          # ⓐ and ⅰ: titlecased, then their compatibility decompositions
    ("σς", "ΣΣ"),
    ("日本", "日本"),
])
def test_texts_take_their_i_unicode_casemap_form(text: str, form: str) -> None:
    assert sortindex.casemap(text) == form


def test_an_entry_follows_the_sort_record() -> None:
    summary = summarize(mime.digest(DATED))
    record = sort_record_of(summary)
    assert sortindex.entry_of_record(record, 1) == sortindex.entry_of_summary(encode_summary(summary), 1)
    # References win over In-Reply-To; without either, no parents.
    with_both = record._replace(references=("r1@x", "r2@x"))
    assert sortindex.thread_values(sortindex.entry_of_record(with_both, 1))[4] == ("r1@x", "r2@x")
    # Ids compare with their quoting undone (RFC 5256): summaries keep them as written.
    quoted = record._replace(message_id='"q2"@example.org', references=(), in_reply_to='"q\\1"@example.org')
    assert sortindex.thread_values(sortindex.entry_of_record(quoted, 1))[3:] == ("q2@example.org", ("q1@example.org",))
    alone = SortRecord(None, False, "", "", "", "", "", "", None, None, ())
    assert sortindex.thread_values(sortindex.entry_of_record(alone, 7)) == (7, "", False, None, ())
    assert sortindex.sort_texts(sortindex.entry_of_record(alone, 7)) == ("", "", "", "", "")


HEAD = 13   # version, date, thread part length


@pytest.mark.parametrize(("damage", "refused_by"), [
    (lambda entry: b"", "all"),
    (lambda entry: entry[:5], "all"),
    (lambda entry: bytes([9]) + entry[1:], "all"),                     # a later version
    (lambda entry: entry[:HEAD] + b"N" + entry[HEAD + 1:], "thread"),   # not a tuple
    (lambda entry: entry[:HEAD] + entry[HEAD + 3:HEAD + 9], "thread"),   # truncated
    (lambda entry: entry[:-3], "sort"),                                 # the sort part truncated
], ids=["empty", "short", "version", "not-a-tuple", "truncated", "sort-part"])
def test_a_damaged_entry_is_refused(damage: Any, refused_by: str) -> None:
    """Each reader refuses what it cannot read: the fixed head by all, a part by its reader."""
    entry = damage(expected_entry(DATED))
    readers = {"all": (sortindex.thread_values, sortindex.sort_texts, sortindex.entry_date),
               "thread": (sortindex.thread_values,), "sort": (sortindex.sort_texts,)}[refused_by]
    for read in readers:
        with pytest.raises(sortindex.EntryError):
            read(entry)


DAMAGES = [lambda entry: entry[:5], lambda entry: bytes([9]) + entry[1:],
           lambda entry: entry[:HEAD] + b"N" + entry[HEAD + 1:], lambda entry: entry[:HEAD] + entry[HEAD + 3:HEAD + 9]]


@pytest.mark.parametrize("read", [sortindex.thread_values, sortindex.entry_date, sortindex.sort_texts],
                         ids=["thread", "date", "texts"])
def test_reading_entries_at_once_gives_what_reading_each_gives(read: Any) -> None:
    entries = [expected_entry(message(number), INTERNALDATE + number) for number in range(5)]
    entries.append(expected_entry(UNDATED, 12345))
    assert sortindex.read_all(read, entries) == [read(entry) for entry in entries]
    assert sortindex.read_all(read, []) == []
    for damage in DAMAGES:
        damaged = [*entries[:2], damage(entries[2]), *entries[3:]]
        try:
            read(damaged[2])
        except sortindex.EntryError:
            with pytest.raises(sortindex.EntryError):   # the caller then reads them one by one
                sortindex.read_all(read, damaged)


def test_a_folder_read_in_chunks_gives_each_wanted_message_its_values(store: Store,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The range is read in chunks (made small here): a chunk ending in the next folder's entries,
    one holding a damaged entry, one holding messages not asked for, messages without an entry
    (the range runs on into the next folder); each wanted message gets exactly its values."""
    monkeypatch.setattr(sortindex, "_ROWS_PER_CHUNK", 4)
    folder = fill(store, 23)
    store.create_folder("alice", "Next")
    after = fill(store, 6, "Next")
    uids = store.uids("alice", folder)
    entries = stored_entries(store)
    expected = {uid: sortindex.thread_values(entries[(folder, uid)]) for uid in uids}
    assert all_values(store, folder) == expected
    assert all_values(store, after) == {uid: sortindex.thread_values(entries[(after, uid)])
                                        for uid in store.uids("alice", after)}
    assert all_values(store, folder, sortindex.entry_date) == {uid: values[0] for uid, values in expected.items()}
    wanted = [uid for uid in uids if uid % 3]   # more than an eighth: one pass, not lookups
    assert store.sort_values("alice", folder, wanted, sortindex.thread_values) == {
        uid: expected[uid] for uid in wanted}
    put_entry(store, folder, 6, b"\x01garbage")
    drop_entries(store, folder, [21, 22, 23])
    shared = store._home("alice")
    with shared.read() as txn:
        prefix = folder_key(store._account_id(txn, shared.dbs, "alice"), folder)
        read = sortindex.folder_values(txn, shared.dbs.sort_records, prefix, prefix_end(prefix), uids,
                                       sortindex.thread_values)
    # the damaged entry's chunk read one by one: its other messages are kept
    assert read == {uid: values for uid, values in expected.items() if uid not in (6, 21, 22, 23)}
    assert all_values(store, folder) == expected   # the damaged and missing ones derived from summaries


def test_a_stretch_of_uids_is_read_by_one_pass_over_its_own_range(store: Store,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A sliced SORT reads a large folder a stretch of UIDs at a time: each stretch is one pass
    over its own part of the folder's range, not lookups, and reads no entry beyond its last UID
    (in the middle of the folder, or at its end with another folder's entries after it)."""
    monkeypatch.setattr(sortindex, "_ROWS_PER_CHUNK", 4)
    folder = fill(store, 40)
    store.create_folder("alice", "Next")
    fill(store, 6, "Next")
    whole = all_values(store, folder)
    chunks: list[list[int]] = []
    read_chunk = sortindex._read_chunk

    def recorded(uids: list[int], *rest: Any) -> None:
        chunks.append(list(uids))
        read_chunk(uids, *rest)

    monkeypatch.setattr(sortindex, "_read_chunk", recorded)
    for stretch in (list(range(11, 21)), [21, 22, 23, 24, 26, 27, 28, 29], list(range(37, 41))):
        chunks.clear()
        assert store.sort_values("alice", folder, stretch, sortindex.thread_values) == {
            uid: whole[uid] for uid in stretch}
        assert [uid for chunk in chunks for uid in chunk] == list(range(stretch[0], stretch[-1] + 1))
    # UIDs out of order (callers keep them ascending) still get their values: the range is
    # their lowest to their highest
    for jumbled in ([30, 2, 3, 4, 5, 6, 7], [9, 8, 7, 6, 5, 4, 3, 2, 1]):
        assert store.sort_values("alice", folder, jumbled, sortindex.thread_values) == {
            uid: whole[uid] for uid in jumbled}


# -- kept with the messages ---------------------------------------------------------------------------


def test_append_copy_move_expunge_keep_the_entries(store: Store) -> None:
    inbox = folder_id(store)
    store.append_many("alice", inbox, [(DATED, (), INTERNALDATE, 0), (UNDATED, (), INTERNALDATE + 1, 0),
                                       (PLAIN, (), INTERNALDATE + 2, 0)])
    first = {(inbox, 1): expected_entry(DATED), (inbox, 2): expected_entry(UNDATED, INTERNALDATE + 1),
             (inbox, 3): expected_entry(PLAIN, INTERNALDATE + 2)}
    assert stored_entries(store) == first
    other = store.create_folder("alice", "Other").id
    store.copy("alice", inbox, [1, 2], other)
    store.move("alice", inbox, [3], other)
    assert stored_entries(store) == {(inbox, 1): first[(inbox, 1)], (inbox, 2): first[(inbox, 2)],
                                     (other, 1): first[(inbox, 1)], (other, 2): first[(inbox, 2)],
                                     (other, 3): first[(inbox, 3)]}
    store.store_flags("alice", other, [2], "add", ["\\Deleted"])
    store.expunge("alice", other)
    store.move("alice", other, [1], other)   # within the folder: a new UID
    assert stored_entries(store) == {(inbox, 1): first[(inbox, 1)], (inbox, 2): first[(inbox, 2)],
                                     (other, 3): first[(inbox, 3)], (other, 4): first[(inbox, 1)]}
    assert store.verify() == []


def test_renaming_inbox_moves_its_entries_and_deletion_drops_them(store: Store) -> None:
    fill(store, 3)
    before = stored_entries(store)
    renamed = store.rename_folder("alice", "INBOX", "Saved").id
    assert stored_entries(store) == {(renamed, uid): entry for (_folder, uid), entry in before.items()}
    store.delete_folder("alice", "Saved")
    assert stored_entries(store) == {}
    fill(store, 2)
    store.create_account("bob")
    bob_inbox = folder_id(store, account="bob")
    store.append("bob", bob_inbox, PLAIN)
    store.delete_account("alice")
    assert stored_entries(store, "bob") == {(bob_inbox, 1): expected_entry(PLAIN, stored_internaldate(store))}
    assert store.verify() == []


def stored_internaldate(store: Store) -> int:
    return store.get_messages("bob", folder_id(store, account="bob"), [1])[0].internaldate


# -- reading ----------------------------------------------------------------------------------------


def test_one_pass_lookups_and_derivation_give_the_same_values(store: Store) -> None:
    folder = fill(store, 40)
    uids = store.uids("alice", folder)
    whole = all_values(store, folder)
    assert list(whole) == uids
    assert whole[uids[0]] == sortindex.thread_values(expected_entry(message(0), INTERNALDATE))
    few = store.sort_values("alice", folder, [2, 17, 99], sortindex.thread_values)   # 99: no such message
    assert few == {2: whole[2], 17: whole[17]}
    drop_entries(store, folder, uids)
    assert all_values(store, folder) == whole   # derived from the summaries
    assert store.sort_values("alice", folder, uids, sortindex.entry_date) == {
        uid: values[0] for uid, values in whole.items()}
    assert stored_entries(store) == {}   # no deferred parser: nothing written back


def drop_entries(store: Store, folder: int, uids: list[int]) -> None:
    def job(txn: Any, dbs: Any, _effects: Any) -> None:
        account_id = store._account_id(txn, dbs, "alice")
        for uid in uids:
            txn.delete(message_key(account_id, folder, uid), db=dbs.sort_records)

    store._write(job, store._home("alice"))


def put_entry(store: Store, folder: int, uid: int, entry: bytes) -> None:
    def job(txn: Any, dbs: Any, _effects: Any) -> None:
        txn.put(message_key(store._account_id(txn, dbs, "alice"), folder, uid), entry, db=dbs.sort_records)

    store._write(job, store._home("alice"))


def test_a_damaged_entry_is_read_as_missing(store: Store) -> None:
    folder = fill(store, 3)
    whole = all_values(store, folder)
    put_entry(store, folder, 2, b"\x01garbage")
    assert all_values(store, folder) == whole
    assert store.sort_values("alice", folder, [2], sortindex.thread_values) == {2: whole[2]}


def test_a_message_appended_before_its_parse_gets_its_entry_from_the_first_reader(tmp_path: Path) -> None:
    with store_with_alice(tmp_path / "store", parse_delay=30.0) as store:   # the parse is not reached
        folder = fill(store, 5)
        assert stored_entries(store) == {}
        values = all_values(store, folder)
        assert values[3] == sortindex.thread_values(expected_entry(message(2), INTERNALDATE + 2))
        wait_for(lambda: len(stored_entries(store)) == 5)
        assert stored_entries(store) == {(folder, uid): expected_entry(message(uid - 1), INTERNALDATE + uid - 1)
                                         for uid in range(1, 6)}
        assert all_values(store, folder) == values
        # A damaged entry is replaced the same way.
        put_entry(store, folder, 4, b"\x01garbage")
        assert all_values(store, folder) == values
        wait_for(lambda: stored_entries(store)[(folder, 4)] != b"\x01garbage")
        assert stored_entries(store)[(folder, 4)] == expected_entry(message(3), INTERNALDATE + 3)
        assert store.verify() == []


def wait_for(condition: Any) -> None:
    deadline = time.monotonic() + 10.0
    while not condition():
        assert time.monotonic() < deadline, "not written"
        time.sleep(0.02)


def test_a_derived_entry_is_not_written_for_a_message_gone_meanwhile(store: Store) -> None:
    folder = fill(store, 3)
    entries = [(uid, blob, expected_entry(message(uid - 1), INTERNALDATE + uid - 1))
               for uid, blob in ((meta.uid, bytes.fromhex(meta.blob)) for meta in store.messages("alice", folder))]
    drop_entries(store, folder, [1, 2, 3])
    store.store_flags("alice", folder, [2], "add", ["\\Deleted"])
    store.expunge("alice", folder)
    stale = [(uid, blob, entry) for uid, blob, entry in entries]
    stale[2] = (3, bytes(16), stale[2][2])   # not the body message 3 has
    assert store.store_sort_entries("alice", folder, stale) == 1
    assert stored_entries(store) == {(folder, 1): entries[0][2]}
    assert store.verify() == []


# -- older stores, verify ---------------------------------------------------------------------------


def downgrade_to_schema_6(path: Path) -> None:
    environment = lmdb.open(str(path / "index"), max_dbs=32)
    try:
        with environment.begin(write=True) as txn:
            txn.drop(environment.open_db(b"sort_records", txn=txn), delete=True)
            txn.put(b"schema", (6).to_bytes(4, "big"), db=environment.open_db(b"meta", txn=txn))
    finally:
        environment.close()


def test_a_schema_6_store_is_read_without_the_index_and_upgraded_with_it(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        folder = fill(store, 6)
        whole = all_values(store, folder)
        entries = stored_entries(store)
    downgrade_to_schema_6(path)
    with Store(path, readonly=True) as old:
        assert old._shared.dbs.sort_records is None
        assert all_values(old, folder) == whole
        assert old.verify() == []
    with Store(path, fsync=False) as store:
        with store._env.read() as txn:
            assert txn.get(b"schema", db=store._shared.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")
        assert stored_entries(store) == entries
        assert all_values(store, folder) == whole


ASCII_UPPER = {code: code - 32 for code in range(ord("a"), ord("z") + 1)}


def downgrade_to_schema_9(path: Path) -> None:
    """Make the sort index look as written by schema 9: version 1 entries, texts i;ascii-casemapped."""
    environment = lmdb.open(str(path / "index"), max_dbs=32)
    try:
        with environment.begin(write=True) as txn:
            db = environment.open_db(b"sort_records", txn=txn)
            for key, entry in list(txn.cursor(db).iternext()):
                date, subject, *ids = sortindex.thread_values(entry)
                thread = marshal.dumps((date, subject.translate(ASCII_UPPER), *ids))
                texts = marshal.dumps(tuple(text.translate(ASCII_UPPER) for text in sortindex.sort_texts(entry)))
                txn.put(key, b"\x01" + entry[1:9] + len(thread).to_bytes(4, "big") + thread + texts, db=db)
            txn.put(b"schema", (9).to_bytes(4, "big"), db=environment.open_db(b"meta", txn=txn))
    finally:
        environment.close()


def test_a_schema_9_store_has_its_sort_index_rewritten_by_unicode_casemap(tmp_path: Path) -> None:
    """Schema 9's entries held texts in their i;ascii-casemap form: a read-only open derives the
    values from the summaries (the old entries read as missing), the upgrade rewrites them."""
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        folder = folder_id(store)
        for subject in ("Ärger", "Zebra", "ärger", "apple"):
            store.append("alice", folder, b"From: \xc3\x96la <o@x>\r\nSubject: " + subject.encode() + b"\r\n\r\nbody\r\n")
        whole = all_values(store, folder)
        texts = all_values(store, folder, sortindex.sort_texts)
        entries = stored_entries(store)
    assert [values[1] for values in whole.values()] == ["A\u0308RGER", "ZEBRA", "A\u0308RGER", "APPLE"]
    downgrade_to_schema_9(path)
    with Store(path, readonly=True) as old:
        assert {uid: values[1] for uid, values in all_values(old, folder).items()} == {
            uid: values[1] for uid, values in whole.items()}
        assert stored_entries(old) != entries
        assert all_values(old, folder, sortindex.sort_texts) == texts
    with Store(path, fsync=False) as store:
        with store._env.read() as txn:
            assert txn.get(b"schema", db=store._shared.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")
        assert stored_entries(store) == entries
        assert all_values(store, folder) == whole


def test_verify_reports_an_entry_without_its_message_and_repair_removes_it(store: Store) -> None:
    folder = fill(store, 2)
    put_entry(store, folder, 9, expected_entry(PLAIN))
    problems = store.verify()
    assert problems == ["error: sort index: 1 entries without a message"]
    store.verify(repair=True)
    assert store.verify() == []
    assert sorted(stored_entries(store)) == [(folder, 1), (folder, 2)]


# -- the deferred parser's other writes ------------------------------------------------------------


def test_later_writes_run_in_the_parsers_thread_and_a_failure_is_logged(caplog: pytest.LogCaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deferred.time, "sleep", lambda seconds: None)
    ran: list[str] = []
    done = threading.Event()

    def failing() -> None:
        raise OSError("disk trouble")

    parser = DeferredParser(lambda batch: None, 5.0)
    try:
        parser.later(failing)
        parser.later(lambda: ran.append(threading.current_thread().name))
        parser.later(done.set)
        assert done.wait(10.0)
    finally:
        parser.close()
    assert ran == ["midb-parse"]
    assert "deferred cache write failed" in caplog.text
    parser.later(lambda: ran.append("after close"))
    assert parser.pending() == 0


def test_later_writes_are_bounded_by_what_they_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deferred, "LATER_LIMIT", 5)
    parser = DeferredParser(lambda batch: None, 5.0)
    parser._thread = threading.current_thread()   # keep the real thread out: nothing runs
    parser.later(lambda: None, 3)
    parser.later(lambda: None, 3)   # beyond the limit: dropped (the next reader derives it again)
    parser.later(lambda: None, 2)
    assert parser.pending() == 2


def test_the_deferred_parse_writes_the_entry_of_the_message_it_was_appended_as(tmp_path: Path) -> None:
    with store_with_alice(tmp_path / "store", parse_delay=0.05) as store:
        store.create_account("bob")
        inbox, bob_inbox = folder_id(store), folder_id(store, account="bob")
        store.append("alice", inbox, DATED)
        outcomes = store.append_batch([("alice", inbox, UNDATED, ()), ("bob", bob_inbox, PLAIN, ())])   # LMTP
        assert [cast(tuple[int, int], outcome)[1] for outcome in outcomes] == [2, 1]
        doomed = store.append("alice", inbox, PLAIN, flags=["\\Deleted"])[1]
        store.expunge("alice", inbox, [doomed])   # gone before its parse: no entry
        wait_for(lambda: len(stored_entries(store)) == 2 and len(stored_entries(store, "bob")) == 1)
        dates = {meta.uid: meta.internaldate for meta in store.messages("alice", inbox)}
        assert stored_entries(store) == {(inbox, 1): expected_entry(DATED, dates[1]),
                                         (inbox, 2): expected_entry(UNDATED, dates[2])}
        assert store._parser is not None and store._parser.take_places(["anything"]) == {}
        assert store.verify() == []
