"""midb secondary structures: flag index, keyword counts, summaries, flag rows, batched appends,
group commit, and the upgrade of a schema-1 store."""

from __future__ import annotations

import marshal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import lmdb
import pytest
from store_helpers import body_files, downgrade_to_schema_3

from midb import bodyrecords, mime, searchtext
from midb import env as midb_env
from midb.errors import InvalidArgument, MidbError, NoSuchBody, NoSuchFolder, OverQuota, TooBig
from midb.keys import blob_key, folder_key
from midb.store import Store
from midb.summary import (
    SortRecord,
    Summary,
    decode_summary,
    encode_summary,
    sort_record,
    sort_record_of,
    summarize,
)

MSG = b"From: a@example.org\r\nSubject: hello\r\n\r\nbody text\r\n"
MULTIPART = (b"From: a@example.org\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
             b"--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Type: text/html\r\n\r\n<b>two</b>\r\n"
             b"--b--\r\n")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", fsync=False) as opened:
        opened.create_account("alice")
        yield opened


def inbox(store: Store, account: str = "alice") -> int:
    info = store.get_folder(account, "INBOX")
    assert info is not None
    return info.id


def derived(store: Store, account: str, folder_id: int) -> tuple[list[int], list[int], list[str]]:
    """(unseen UIDs, deleted UIDs, keywords) computed from the message records."""
    metas = store.messages(account, folder_id)
    keywords = sorted({flag for meta in metas for flag in meta.flags if not flag.startswith("\\")})
    return ([m.uid for m in metas if "\\Seen" not in m.flags], [m.uid for m in metas if "\\Deleted" in m.flags],
            keywords)


def assert_indexes(store: Store, account: str = "alice") -> None:
    for info in store.list_folders(account):
        unseen, deleted, keywords = derived(store, account, info.id)
        assert store.unseen_uids(account, info.id) == unseen, info.name
        assert store.deleted_uids(account, info.id) == deleted, info.name
        assert store.keywords(account, info.id) == keywords, info.name
        assert store.first_unseen(account, info.id) == (unseen[0] if unseen else None)
        assert store.unseen_uids(account, info.id, limit=2) == unseen[:2]
    assert store.verify() == []


# -- flag index and keyword counts ---------------------------------------------------------------------


def test_flag_index_follows_every_kind_of_change(store: Store) -> None:
    folder = inbox(store)
    store.append_many("alice", folder, [(MSG, flags, None, 0) for flags in
                                         [(), ("\\Seen",), ("\\Deleted", "$Work"), ("\\Seen", "$Work", "Later"),
                                          ("later",), ("\\Seen", "\\Deleted")]])
    assert_indexes(store)
    assert store.keywords("alice", folder) == ["$Work", "Later"]  # "later" stored in the folder's spelling
    store.store_flags("alice", folder, [1, 2], "add", ["\\Seen", "$Work"])
    assert_indexes(store)
    store.store_flags("alice", folder, [3, 4], "remove", ["$Work", "\\Deleted"])
    assert_indexes(store)
    store.store_flags("alice", folder, [5], "set", ["\\Deleted"])
    assert_indexes(store)
    archive = store.get_folder("alice", "Archive")
    assert archive is not None
    store.copy("alice", folder, [1, 4, 5], archive.id)
    store.move("alice", folder, [2, 3], archive.id)
    assert_indexes(store)
    assert store.expunge("alice", folder) == [5, 6]
    assert store.expunge("alice", archive.id, [1, 2, 3, 4]) == [3]
    assert_indexes(store)
    store.rename_folder("alice", "INBOX", "Old")
    assert_indexes(store)
    assert store.unseen_uids("alice", folder) == [] and store.keywords("alice", folder) == []
    store.delete_folder("alice", "Archive")
    assert_indexes(store)


def test_delete_account_removes_index_entries(store: Store) -> None:
    store.create_account("bob")
    store.append("bob", inbox(store, "bob"), MSG, flags=["$Tag"])
    store.append("alice", inbox(store), MSG, flags=["$Tag"])
    store.delete_account("bob")
    assert_indexes(store)
    with store._env.read() as txn:
        dbs = store._shared.dbs
        keys = [bytes(key) for db in (dbs.flag_lists, dbs.keyword_counts)
                for key in txn.cursor(db).iternext(values=False)]
    alice_id = store.get_account("alice").id  # type: ignore[union-attr]
    assert keys and all(key[:4] == alice_id.to_bytes(4, "big") for key in keys)


def test_expunge_without_deleted_messages_writes_nothing(store: Store) -> None:
    folder = inbox(store)
    store.append("alice", folder, MSG)
    modseq = store.folder_by_id("alice", folder).highestmodseq  # type: ignore[union-attr]
    assert store.expunge("alice", folder) == []
    assert store.folder_by_id("alice", folder).highestmodseq == modseq  # type: ignore[union-attr]


def test_verify_reports_and_repairs_broken_indexes(store: Store) -> None:
    folder = inbox(store)
    store.append_many("alice", folder, [(MSG, (), None, 0), (MSG, ("\\Seen", "$X"), None, 0)])
    account_id = store.get_account("alice").id  # type: ignore[union-attr]

    def damage(txn: Any, dbs: Any, effects: Any) -> None:
        txn.drop(dbs.flag_lists, delete=False)
        txn.put(folder_key(account_id, folder) + b"$Ghost", (1).to_bytes(4, "big"), db=dbs.keyword_counts)

    store._write(damage, store._env)
    problems = store.verify()
    assert any("flag index" in problem for problem in problems)
    assert any("keyword counts" in problem for problem in problems)
    assert store.unseen_uids("alice", folder) == []   # the damage is visible...
    store.verify(repair=True)
    assert_indexes(store)                               # ...and repaired


# -- schema upgrade ------------------------------------------------------------------------------------


def downgrade_to_schema_1(path: Path) -> None:
    """Make the store look as written before flag indexes and summaries existed."""
    downgrade_to_schema_3(path)
    environment = lmdb.open(str(path / "index"), max_dbs=32)
    try:
        with environment.begin(write=True) as txn:
            for name in (b"flag_lists", b"keyword_counts", b"summaries", b"bodies"):
                txn.drop(environment.open_db(name, txn=txn), delete=True)
            txn.put(b"schema", (1).to_bytes(4, "big"), db=environment.open_db(b"meta", txn=txn))
    finally:
        environment.close()


def filled_store(path: Path, items: list[tuple[bytes, tuple[str, ...], None, int]]) -> list[str]:
    """A store at ``path`` with alice's INBOX holding ``items``; returns the blobs in UID order."""
    with Store(path, fsync=False) as store:
        store.create_account("alice")
        store.append_many("alice", inbox(store), items)
        return [meta.blob for meta in store.messages("alice", inbox(store))]


def test_schema_1_store_is_upgraded_on_open_and_readable_read_only(tmp_path: Path) -> None:
    path = tmp_path / "store"
    blobs = filled_store(path, [(MSG, (), None, 0), (MULTIPART, ("\\Seen", "$A"), None, 0),
                                (MSG, ("\\Deleted", "$B"), None, 0)])
    with Store(path, fsync=False) as store:
        expected = store.summaries(blobs)
    downgrade_to_schema_1(path)
    with Store(path, readonly=True) as old:
        assert not old._shared.indexed
        folder = inbox(old)
        assert old.unseen_uids("alice", folder) == [1, 3]
        assert old.deleted_uids("alice", folder) == [3]
        assert old.first_unseen("alice", folder) == 1
        assert old.keywords("alice", folder) == ["$A", "$B"]
        assert old.summaries(blobs) == expected   # derived from the digests
        assert old.verify() == []
    with Store(path, fsync=False) as store:
        assert store._shared.indexed
        assert_indexes(store)
        with store._env.read() as txn:
            assert txn.get(b"schema", db=store._shared.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")
            assert all(bodyrecords.get(txn, store._shared.dbs, bodyrecords.SUMMARY, blob_key(blob))
                       for blob in blobs)
        assert store.summaries(blobs) == expected


def test_an_old_store_is_not_upgraded_while_another_process_has_it_open(tmp_path: Path) -> None:
    """An older gximap still running would write by the old schema into the upgraded index: the
    upgrade waits until every other process has closed the store (upgrade57)."""
    path = tmp_path / "store"
    filled_store(path, [(MSG, ("\\Seen", "$A"), None, 0)])
    downgrade_to_schema_3(path)
    holder = subprocess.Popen(  # another process with the environment open, as an old daemon has
        [sys.executable, "-c", "import lmdb, sys, time; env = lmdb.open(sys.argv[1], max_dbs=32); "
         "print('open', flush=True); time.sleep(30)", str(path / "index")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(MidbError, match=rf"schema 3 and needs upgrading .*pid {holder.pid}\)"):
            Store(path, fsync=False)
        with Store(path, readonly=True) as old:  # a read-only open upgrades nothing and is allowed
            assert old.keywords("alice", inbox(old)) == ["$A"]
    finally:
        holder.kill()
        holder.wait(10)
    with Store(path, fsync=False) as store:  # alone now: upgraded
        with store._env.read() as txn:
            assert txn.get(b"schema", db=store._shared.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")


def downgrade_to_schema_2(path: Path) -> None:
    """Make the store look as written by schema 2: the flag index as one key per message."""
    downgrade_to_schema_3(path)
    environment = lmdb.open(str(path / "index"), max_dbs=32)
    try:
        with environment.begin(write=True) as txn:
            lists = environment.open_db(b"flag_lists", txn=txn)
            entries = [bytes(key) + bytes(value) for key, value in txn.cursor(lists).iternext()]
            txn.drop(lists, delete=True)
            old = environment.open_db(b"flag_uids", txn=txn)
            for entry in entries:
                txn.put(entry, b"", db=old)
            txn.put(b"schema", (2).to_bytes(4, "big"), db=environment.open_db(b"meta", txn=txn))
    finally:
        environment.close()


def test_schema_2_store_gets_flag_lists_on_open(tmp_path: Path) -> None:
    path = tmp_path / "store"
    filled_store(path, [(MSG, (), None, 0), (MSG, ("\\Seen", "$A"), None, 0), (MSG, ("\\Deleted",), None, 0)] * 400)
    downgrade_to_schema_2(path)
    with Store(path, readonly=True) as old:    # read-only: no flag lists, the records are scanned
        assert not old._shared.indexed
        assert old.unseen_uids("alice", inbox(old))[:4] == [1, 3, 4, 6]
        assert old.verify() == []
    with Store(path, fsync=False) as store:
        assert store._shared.indexed
        assert_indexes(store)
        assert len(store.unseen_uids("alice", inbox(store))) == 800
        assert store.deleted_uids("alice", inbox(store))[-2:] == [1197, 1200]
        with store._env.read() as txn:
            assert txn.get(b"schema", db=store._shared.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")
        environment = store._shared.env
        with environment.begin() as txn, pytest.raises(lmdb.NotFoundError):
            environment.open_db(b"flag_uids", txn=txn, create=False)   # the old index is gone


def test_schema_3_store_gets_one_body_table_on_open(tmp_path: Path) -> None:
    """Schema 3 kept a body's records in four tables: read as they are by a read-only open, moved
    side by side into one by an open for writing, with nothing lost."""
    path = tmp_path / "store"
    with Store(path, fsync=False, inline_limit=1000) as store:
        store.create_account("alice")
        folder = inbox(store)
        store.append_many("alice", folder, [(MSG, (), None, 0), (MULTIPART, ("\\Seen",), None, 0),
                                            (MSG + b"x" * 2000, (), None, 0)])
        metas = store.messages("alice", folder)
        blobs = [meta.blob for meta in metas]
        expected = (store.summaries(blobs), [store.digest(blob) for blob in blobs],
                    [store.read_body(blob) for blob in blobs], store.stats()["bodies"])
    downgrade_to_schema_3(path)
    for readonly in (True, False):
        with Store(path, readonly=readonly, inline_limit=1000) as store:
            assert (store._shared.dbs.legacy_bodies is not None) is readonly
            assert (store.summaries(blobs), [store.digest(blob) for blob in blobs],
                    store.read_bodies(blobs), store.stats()["bodies"]) == expected
            assert store.verify() == []
    with Store(path, fsync=False) as store:
        with store._env.read() as txn:
            assert txn.get(b"schema", db=store._shared.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")
        environment = store._shared.env
        for name in bodyrecords.LEGACY_NAMES:
            with environment.begin() as txn, pytest.raises(lmdb.NotFoundError):
                environment.open_db(name.encode(), txn=txn, create=False)   # the old tables are gone
        store.store_flags("alice", folder, [1, 2, 3], "add", ["\\Deleted"])
        store.expunge("alice", folder)   # every record of each body goes with it
        with store._env.read() as txn:
            assert list(txn.cursor(store._shared.dbs.body_records).iternext(values=False)) == []
        assert store.verify() == []


def test_flag_lists_longer_than_a_page(store: Store) -> None:
    """Lists of thousands of UIDs span several LMDB pages (getmulti reads a page per call);
    removing entries from the middle and reading with and without a limit stay exact."""
    folder = inbox(store)
    store.append_many("alice", folder, [(MSG, (), None, 0)] * 5000)
    store.store_flags("alice", folder, range(2, 5001, 2), "add", ["\\Seen"])
    store.store_flags("alice", folder, range(1000, 4001), "add", ["\\Deleted"])
    store.store_flags("alice", folder, range(1500, 1600), "remove", ["\\Deleted"])
    assert store.unseen_uids("alice", folder) == list(range(1, 5001, 2))
    assert store.unseen_uids("alice", folder, limit=3) == [1, 3, 5]
    assert store.deleted_uids("alice", folder) == [*range(1000, 1500), *range(1600, 4001)]
    store.expunge("alice", folder)
    assert_indexes(store)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    Store(path, fsync=False).close()
    environment = lmdb.open(str(path / "index"), max_dbs=32)
    with environment.begin(write=True) as txn:
        txn.put(b"schema", (midb_env.SCHEMA_VERSION + 1).to_bytes(4, "big"), db=environment.open_db(b"meta", txn=txn))
    environment.close()
    with pytest.raises(Exception, match="unsupported schema version"):
        Store(path, fsync=False)


# -- records -------------------------------------------------------------------------------------------


def test_flag_rows_and_get_messages_for_dense_and_sparse_sets(store: Store) -> None:
    folder = inbox(store)
    store.append_many("alice", folder, [(MSG, ("\\Seen",) if n % 3 else ("$K",), None, 0) for n in range(40)])
    store.store_flags("alice", folder, [7], "add", ["\\Deleted"])
    store.expunge("alice", folder)
    everything = {meta.uid: meta for meta in store.messages("alice", folder)}
    for wanted in ([], list(range(1, 41)), list(range(5, 12)), [1, 20, 40], [3, 7, 8, 39, 41, 99],
                   list(range(1, 200)), [40, 1, 7, 7, 2], range(30, 35), [0, 5, 2**32]):
        present = sorted(uid for uid in set(wanted) if uid in everything)
        metas = store.get_messages("alice", folder, wanted)
        assert [meta.uid for meta in metas] == present
        assert metas == [everything[uid] for uid in present]
        assert store.flag_rows("alice", folder, wanted) == [
            (uid, everything[uid].flags, everything[uid].modseq) for uid in present]
    with pytest.raises(InvalidArgument):
        store.get_messages("alice", folder, [1, 2.5])  # type: ignore[list-item]  # a non-integer uid on purpose
    with pytest.raises(InvalidArgument):
        store.flag_rows("alice", folder, "12")  # type: ignore[arg-type]  # a string for the uids on purpose


def test_uids_of_a_large_folder(store: Store) -> None:
    folder = inbox(store)
    store.append_many("alice", folder, [(MSG, (), None, 0)] * 300)
    store.store_flags("alice", folder, range(10, 300, 7), "add", ["\\Deleted"])
    store.expunge("alice", folder)
    assert store.uids("alice", folder) == [meta.uid for meta in store.messages("alice", folder)]


# -- summaries -----------------------------------------------------------------------------------------


def test_summaries_hold_the_digest_header_values(store: Store) -> None:
    folder = inbox(store)
    store.append_many("alice", folder, [(MSG, (), None, 0), (MULTIPART, (), None, 0)])
    plain, multipart = store.messages("alice", folder)
    for meta in (plain, multipart):
        digest = store.digest(meta.blob)
        found = store.summary(meta.blob)
        assert found == summarize(digest)
        assert found.header_size == digest.root.body_start and found.sent_date == digest.envelope.date
        assert (found.subject, found.from_, found.references) == (digest.subject, digest.from_, digest.references)
        assert decode_summary(encode_summary(found)) == found
    assert store.summary(plain.blob).leaf == store.digest(plain.blob).root
    assert store.summary(multipart.blob).leaf is None
    store.store_flags("alice", folder, [1], "add", ["\\Deleted"])
    store.expunge("alice", folder)
    assert store.wait_for_removals()
    assert store.summaries([plain.blob, multipart.blob]) == [None, store.summary(multipart.blob)]
    with pytest.raises(NoSuchBody):
        store.summary(plain.blob)
    with pytest.raises(InvalidArgument):
        store.summaries(["not-a-body-id"])


def test_missing_or_corrupt_summary_is_derived_from_the_digest(store: Store) -> None:
    folder = inbox(store)
    store.append_many("alice", folder, [(MSG, (), None, 0), (MULTIPART, (), None, 0)])
    first, second = (meta.blob for meta in store.messages("alice", folder))
    expected = store.summaries([first, second])

    def damage(txn: Any, dbs: Any, effects: Any) -> None:
        bodyrecords.delete(txn, dbs, bodyrecords.SUMMARY, blob_key(first))
        bodyrecords.put(txn, dbs, bodyrecords.SUMMARY, blob_key(second), b"\x01garbage")

    store._write(damage, store._env)
    assert store.summaries([first, second]) == expected
    assert store.verify() == []


def test_summary_decoding_rejects_foreign_bytes() -> None:
    good = encode_summary(summarize(mime.digest(MSG)))
    for bad in (b"", b"\x09" + good[1:], good[:10], b"\x01" + b"\xff" * 8, good[:40], good[:-3],
                good[:19] + b"\x00" * 8 + b"\xff\xff\xff\xff" + good[31:]):
        with pytest.raises(mime.DigestFormatError):
            decode_summary(bad)
    for bad in (b"", good[:10], good[:40], good[:19] + b"\x00" * 8 + b"\xff\xff\xff\xff" + good[31:],
                b"\x02" + good[1:]):
        with pytest.raises(mime.DigestFormatError):
            sort_record(bad)


def older_summary(summary: Any, version: int) -> bytes:
    """A summary as gximap wrote it before format 3: format 2 (the body plan, then the fields in
    one marshalled tuple) or format 1 (the fields alone)."""
    leaf = summary.leaf
    fields = marshal.dumps((*summary[:-1], None if leaf is None else tuple(leaf)))
    if version == 1:
        return b"\x01" + fields
    plan = (searchtext.PLAN_DECODE, 0, 0) if leaf is None else (searchtext.leaf_plan(leaf), leaf.body_start,
                                                                 leaf.body_end)
    return b"\x02" + bytes((searchtext.PLAN_VERSION,)) + b"".join(n.to_bytes(size, "big") for n, size in
                                                                    zip(plan, (1, 8, 8), strict=True)) + fields


SORT_SAMPLES = [
    MSG,
    MULTIPART,
    b"Subject: Re: [list] Fwd: plans\r\nDate: Tue, 14 Nov 2023 22:14:20 -0000\r\nFrom: \"Ann\" <ann@example.org>\r\n"
    b"To: bob@example.org\r\nCc: c@example.org\r\nMessage-ID: <m1@x>\r\nIn-Reply-To: <m0@x>\r\n"
    b"References: <r1@x> <m0@x>\r\n\r\nbody\r\n",
    b"Subject: plans (fwd)\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000\r\nIn-Reply-To: <p@x>\r\n\r\n\r\n",
    b"Date: nonsense\r\n\r\nno subject\r\n",
]


def test_sort_records_are_read_from_the_front_of_the_summary() -> None:
    """A format 3 summary gives its sort record without the rest; it is what the
    whole summary says (the reply flag is is_reply_or_forward of the subject); older formats,
    decoded whole, give the same."""
    for data in SORT_SAMPLES:
        summary = summarize(mime.digest(data))
        encoded = encode_summary(summary)
        record = sort_record(encoded)
        assert record == sort_record_of(summary)
        assert record._fields == SortRecord._fields
        assert (record.date, record.base_subject, record.references) == (summary.date, summary.base_subject,
                                                                         summary.references)
        assert record.reply is mime.is_reply_or_forward(summary.subject)
        assert decode_summary(encoded) == summary
        for version in (1, 2):
            old = older_summary(summary, version)
            assert decode_summary(old) == summary
            assert sort_record(old) == record
    epoch = sort_record(encode_summary(summarize(mime.digest(SORT_SAMPLES[3]))))
    assert (epoch.date, epoch.reply, epoch.in_reply_to) == (0, True, "p@x")
    undated = encode_summary(summarize(mime.digest(SORT_SAMPLES[4])))
    assert sort_record(undated).date is None and sort_record(undated).reply is False


def test_sort_records_of_older_damaged_or_missing_summaries(store: Store) -> None:
    folder = inbox(store)
    store.append_many("alice", folder, [(data, (), None, 0) for data in SORT_SAMPLES])
    blobs = [meta.blob for meta in store.messages("alice", folder)]
    keys = [blob_key(blob) for blob in blobs]
    expected = [sort_record_of(cast(Summary, summary)) for summary in store.summaries(blobs)]
    gone = object()
    assert store.summary_fields_by_key(keys, sort_record, gone) == expected

    def age(txn: Any, dbs: Any, effects: Any) -> None:
        summaries = store.summaries(blobs)
        bodyrecords.put(txn, dbs, bodyrecords.SUMMARY, keys[0], older_summary(summaries[0], 1))
        bodyrecords.put(txn, dbs, bodyrecords.SUMMARY, keys[1], older_summary(summaries[1], 2))
        bodyrecords.put(txn, dbs, bodyrecords.SUMMARY, keys[2], b"\x03garbage")
        bodyrecords.delete(txn, dbs, bodyrecords.SUMMARY, keys[3])

    store._write(age, store._env)
    assert store.summary_fields_by_key(keys, sort_record, gone) == expected
    store.store_flags("alice", folder, [5], "add", ["\\Deleted"])
    store.expunge("alice", folder)
    assert store.wait_for_removals()
    assert store.summary_fields_by_key(keys, sort_record, gone) == [*expected[:4], gone]
    assert store.summary_fields_by_key(keys, sort_record) == [*expected[:4], None]


# -- batched appends and group commit ------------------------------------------------------------------


def test_append_batch_stores_each_copy_in_one_commit(tmp_path: Path, commits: list[int]) -> None:
    with Store(tmp_path / "store", fsync=False, max_message_size=1000) as store:
        for name in ("alice", "bob", "carol"):
            store.create_account(name)
        store.update_account("carol", quota_messages=1)
        store.append("carol", inbox(store, "carol"), MSG)
        archive = store.get_folder("bob", "Archive")
        assert archive is not None
        commits.clear()
        outcomes = store.append_batch([
            ("alice", inbox(store), MSG, ["\\Seen"]),
            ("bob", archive.id, MSG + b"for bob\r\n", ["$Label"]),
            ("carol", inbox(store, "carol"), MSG, []),          # over quota
            ("bob", 999, MSG, []),                              # no such folder
            ("alice", inbox(store), b"x" * 2000, []),           # too big
            ("bob", inbox(store, "bob"), MSG, []),
        ])
        assert commits == [3]   # the three storable copies, one commit
        assert outcomes[0] == (store.get_folder("alice", "INBOX").uidvalidity, 1)  # type: ignore[union-attr]
        assert outcomes[1] == (archive.uidvalidity, 1) and outcomes[5][1] == 1  # type: ignore[index]
        assert isinstance(outcomes[2], OverQuota) and isinstance(outcomes[3], NoSuchFolder)
        assert isinstance(outcomes[4], TooBig)
        (bob_copy,) = store.messages("bob", archive.id)
        assert store.read_body(bob_copy.blob) == MSG + b"for bob\r\n" and bob_copy.flags == ("$Label",)
        assert store.keywords("bob", archive.id) == ["$Label"]
        assert store.usage("carol") == (len(MSG), 1)
        assert store.verify() == []   # no body left behind by the refused copies
        assert store.append_batch([]) == []
        with pytest.raises(InvalidArgument):
            store.append_batch([("alice", inbox(store))])  # type: ignore[list-item]


def test_append_batch_copy_refused_inside_the_transaction_leaves_no_body(store: Store) -> None:
    folder = inbox(store)
    store.update_account("alice", quota_messages=2)
    # Both pass the early check one by one; the second is over quota once the first is in.
    outcomes = store.append_batch([("alice", folder, MSG, []), ("alice", folder, MSG, [])] + [
        ("alice", folder, MSG, [])])
    assert [isinstance(outcome, OverQuota) for outcome in outcomes] == [False, False, True]
    assert store.verify() == []


def test_write_all_rolls_back_a_failing_job_alone(store: Store) -> None:
    shared = store._env

    def put(key: bytes) -> Any:
        def job(txn: Any, dbs: Any, effects: Any) -> bytes:
            txn.put(key, b"v", db=dbs.meta)
            return key
        return job

    def failing(txn: Any, dbs: Any, effects: Any) -> None:
        txn.put(b"test-bad", b"v", db=dbs.meta)
        raise NoSuchFolder("nope")

    results = shared.write_all([put(b"test-a"), failing, put(b"test-b")], durable=False)
    assert [result for result, _error, _effects in results] == [b"test-a", None, b"test-b"]
    assert isinstance(results[1][1], NoSuchFolder) and results[0][1] is None
    with shared.read() as txn:
        assert [txn.get(key, db=shared.dbs.meta) for key in (b"test-a", b"test-bad", b"test-b")] == [b"v", None, b"v"]


def test_a_durable_commit_waits_for_announced_appends(tmp_path: Path, commits: list[int],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(midb_env, "GATHER_WAIT", 2.0)
    with Store(tmp_path / "store", fsync=True) as store:
        store.create_account("alice")
        folder = inbox(store)
        shared = store._env
        commits.clear()
        results: list[Any] = []
        announced = threading.Event()

        def job(txn: Any, dbs: Any, effects: Any) -> str:
            txn.put(b"test-late", b"v", db=dbs.meta)
            return "late"

        def late_append() -> None:
            with shared.arrival():
                announced.set()
                time.sleep(0.1)   # its body is being written and synced
                results.append(shared.write(job, durable=True))

        thread = threading.Thread(target=late_append)
        thread.start()
        assert announced.wait(10)
        started = time.monotonic()
        store.append("alice", folder, MSG)
        waited = time.monotonic() - started
        thread.join(10)
        assert not thread.is_alive() and commits == [2] and waited < 1.5
        assert results[0][0] == "late" and shared._arriving == 0


def test_an_announced_append_that_never_comes_delays_a_commit_only_briefly(
        tmp_path: Path, commits: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(midb_env, "GATHER_WAIT", 0.05)
    with Store(tmp_path / "store", fsync=True) as store:
        store.create_account("alice")
        with store._env.arrival():
            started = time.monotonic()
            store.append("alice", inbox(store), MSG)
            assert 0.04 < time.monotonic() - started < 2.0
        commits.clear()
        started = time.monotonic()
        store.append("alice", inbox(store), MSG)   # the announcement was withdrawn: no wait
        assert commits == [1] and store._env._arriving == 0


def test_concurrent_appends_share_commits(tmp_path: Path, commits: list[int]) -> None:
    with Store(tmp_path / "store", fsync=True) as store:
        names = [f"user{n}" for n in range(8)]
        for name in names:
            store.create_account(name)
        folders = {name: inbox(store, name) for name in names}
        commits.clear()
        barrier = threading.Barrier(len(names))
        errors: list[BaseException] = []

        def deliver(name: str) -> None:
            try:
                barrier.wait(10)
                store.append(name, folders[name], MSG)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=deliver, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors and sum(commits) == len(names)
        assert len(commits) < len(names)   # several appends per commit
        assert store.verify() == []


# -- bodies kept in the index ----------------------------------------------------------------------------


def test_small_bodies_live_in_the_index_large_ones_in_files(tmp_path: Path) -> None:
    small, large = MSG, MSG + b"x" * 5000
    with Store(tmp_path / "store", fsync=True, inline_limit=1000) as store:
        store.create_account("alice")
        folder = inbox(store)
        store.append("alice", folder, small, flags=["\\Seen"])
        store.append_many("alice", folder, [(large, (), None, 0), (small, ("$K",), None, 0)])
        outcomes = store.append_batch([("alice", folder, small, []), ("alice", folder, large, [])])
        assert [outcome[1] for outcome in outcomes] == [4, 5]  # type: ignore[index]
        metas = store.messages("alice", folder)
        files = body_files(store)
        assert sorted(meta.blob for meta in metas if meta.size > 1000) == files   # only the large ones
        for meta, data in zip(metas, [small, large, small, small, large], strict=True):
            assert store.read_body(meta.blob) == data
            assert store.read_body(meta.blob, 5, 20) == data[5:25]
            assert store.read_body(meta.blob, len(data) + 3) == b""
            assert store.digest(meta.blob) == mime.digest(data)
            assert store.summary(meta.blob) == summarize(mime.digest(data))
        assert store.read_bodies([meta.blob for meta in metas]) == [small, large, small, small, large]
        assert store.verify() == []
        # A copy shares the body; the last reference gone, the body goes with its index entry.
        archive = store.get_folder("alice", "Archive")
        assert archive is not None
        store.copy("alice", folder, [1, 2], archive.id)
        store.store_flags("alice", folder, [1, 2, 3], "add", ["\\Deleted"])
        store.expunge("alice", folder)
        assert store.read_body(metas[0].blob) == small and store.read_bodies([metas[2].blob]) == [None]
        with pytest.raises(NoSuchBody):
            store.read_body(metas[2].blob)
        store.delete_folder("alice", "Archive")
        assert store.wait_for_removals()
        assert store.read_bodies([metas[0].blob, metas[1].blob]) == [None, None]
        with store._env.read() as txn:
            kept = [blob for blob, _ in bodyrecords.items(txn, store._shared.dbs, bodyrecords.BODY, values=False)]
        assert sorted(kept) == sorted(blob_key(meta.blob) for meta in metas[3:4])
        assert store.verify() == [] and len(body_files(store)) == 1


def test_inline_bodies_stop_when_the_map_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "store", fsync=False, inline_limit=1000) as store:
        store.create_account("alice")
        monkeypatch.setattr("midb.store.INLINE_MAP_SHARE", 0.0)
        store.append("alice", inbox(store), MSG)
        assert len(body_files(store)) == 1


def test_verify_and_backup_with_inline_bodies(tmp_path: Path) -> None:
    with Store(tmp_path / "store", fsync=False, inline_limit=1000) as store:
        store.create_account("alice")
        folder = inbox(store)
        store.append_many("alice", folder, [(MSG, (), None, 0), (MSG + b"y" * 2000, (), None, 0)])
        store.backup(str(tmp_path / "copy"))
        (small, large) = store.messages("alice", folder)

        def damage(txn: Any, dbs: Any, effects: Any) -> None:
            bodyrecords.put(txn, dbs, bodyrecords.BODY, b"\x01" * 16, b"stray")
            bodyrecords.put(txn, dbs, bodyrecords.BODY, blob_key(small.blob), MSG + b"!")
            txn.put(b"\x02" * 16 + b"\x09", b"unknown kind", db=dbs.body_records)

        store._write(damage, store._env)
        problems = store.verify()
        assert any("kept in the index has no record" in problem for problem in problems)
        assert any("kept in the index has" in problem and "bytes" in problem for problem in problems)
        assert any("body record of unknown kind" in problem for problem in problems)
        store.verify(repair=True)
        assert not any("no record" in problem for problem in store.verify())
    with Store(tmp_path / "copy", fsync=False) as copy:
        assert copy.verify() == []
        assert [copy.read_body(meta.blob) for meta in copy.messages("alice", inbox(copy))] == [
            MSG, MSG + b"y" * 2000]


def test_inline_limit_is_capped(tmp_path: Path) -> None:
    with Store(tmp_path / "store", fsync=False, inline_limit=1 << 30) as store:
        from midb.store import INLINE_MAX
        assert store.inline_limit == INLINE_MAX
