"""midb.shards: a store whose index is split into several LMDB environments."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import lmdb
import pytest
from store_helpers import FailingSync

from midb import bodyrecords, shards
from midb import env as midb_env
from midb import store as store_module
from midb.accounts import encode_usage
from midb.env import SHARD_COUNT_KEY
from midb.errors import InvalidArgument, MidbError, NoSuchAccount, NotDurable, OverQuota, StoreFull
from midb.keys import account_key, blob_key
from midb.store import Store
from midb.summary import Summary, sort_record, sort_record_of

SHARDS = 4
MSG = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\n\r\nbody text\r\n"


def names_in_shards(count: int = SHARDS) -> dict[int, list[str]]:
    """Account names by the shard they live in (a few per shard)."""
    found: dict[int, list[str]] = {}
    for number in range(200):
        name = f"user{number}"
        found.setdefault(shards.of_name(name, count), []).append(name)
    assert len(found) == count
    return found


PLACED = names_in_shards()
# Two accounts of different shards, and a third sharing the first one's shard.
ALICE, BOB, CAROL = PLACED[1][0], PLACED[2][0], PLACED[1][1]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", fsync=False, shards=SHARDS, inline_limit=4096) as opened:
        for name in (ALICE, BOB, CAROL):
            opened.create_account(name)
        yield opened


def inbox(store: Store, account: str) -> int:
    info = store.get_folder(account, "INBOX")
    assert info is not None
    return info.id


def accounts_in(store: Store, shard: int) -> set[str]:
    """Names in the accounts table of one shard, read straight from its environment."""
    shared = store._shards[shard]
    with shared.read() as txn:
        return {bytes(key).decode() for key in txn.cursor(shared.dbs.account_names).iternext(values=False)}


def test_placement_helpers() -> None:
    assert shards.of_name("anyone", 1) == 0 and shards.of_blob(b"\xff" * 16, 1) == 0
    for shard in range(7):
        blob = shards.new_blob_id(shard, 7)
        assert len(blob) == 32 and shards.of_blob(blob_key(blob), 7) == shard
    assert shards.account_id(3, 2, 4) == 14 and shards.of_account_id(14, 4) == 2
    with pytest.raises(ValueError):
        shards.account_id(1 << 31, 3, 4)
    assert shards.shard_dir("/s/index", 0) == "/s/index" and shards.shard_dir("/s/index", 3) == "/s/index.3"
    for bad in (0, 257, True, "4"):
        with pytest.raises(ValueError):
            shards.check_count(bad)


def test_accounts_live_in_the_shard_their_name_names(store: Store, tmp_path: Path) -> None:
    assert store.shard_count == SHARDS
    assert all(os.path.isfile(os.path.join(shards.shard_dir(store.index_dir, shard), "data.mdb"))
               for shard in range(SHARDS))
    assert accounts_in(store, 1) == {ALICE, CAROL} and accounts_in(store, 2) == {BOB}
    assert accounts_in(store, 0) == set() and accounts_in(store, 3) == set()
    for name in (ALICE, BOB, CAROL):
        account = store.get_account(name)
        assert account is not None and account.id % SHARDS == shards.of_name(name, SHARDS)
        assert store.account_by_id(account.id) == account
        assert store.account_id(name) == account.id
    assert len({store.account_id(name) for name in (ALICE, BOB, CAROL)}) == 3
    assert [account.name for account in store.list_accounts()] == sorted((ALICE, BOB, CAROL))
    assert store.get_account("nobody") is None and store.account_by_id(2**32 + 5) is None
    with pytest.raises(NoSuchAccount):
        store.list_folders("bad name")
    assert store.stats()["accounts"] == 3 and store.stats()["shards"] == SHARDS


def test_the_count_is_fixed_when_the_store_is_created(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Store(path, fsync=False, shards=3) as store:
        store.create_account(ALICE)
    with Store(path, fsync=False, shards=8) as store:   # recorded: 3 stays
        assert store.shard_count == 3 and store.get_account(ALICE) is not None
    with Store(path, readonly=True) as store:
        assert store.shard_count == 3 and store.get_account(ALICE) is not None
    os.rename(shards.shard_dir(str(path / "index"), 2), str(path / "moved"))
    with pytest.raises(MidbError, match="shard missing"):
        Store(path, readonly=True)
    with pytest.raises(InvalidArgument):
        Store(tmp_path / "other", shards=0)


def test_a_store_without_a_recorded_count_has_one_shard(tmp_path: Path) -> None:
    """A store of schema 4 (before shards): upgraded to record one shard, whatever is asked."""
    path = tmp_path / "store"
    with Store(path, fsync=False) as store:
        store.create_account(ALICE)
    environment = lmdb.open(str(path / "index"), max_dbs=64)
    with environment.begin(write=True) as txn:
        meta = environment.open_db(b"meta", txn=txn)
        txn.delete(SHARD_COUNT_KEY, db=meta)
        txn.put(b"schema", (4).to_bytes(4, "big"), db=meta)
    environment.close()
    with Store(path, fsync=False, shards=SHARDS) as store:
        assert store.shard_count == 1 and store.get_account(ALICE) is not None
        assert not os.path.exists(shards.shard_dir(store.index_dir, 1))
        with store._env.read() as txn:
            assert txn.get(b"schema", db=store._env.dbs.meta) == midb_env.SCHEMA_VERSION.to_bytes(4, "big")


def test_messages_and_bodies_stay_in_their_account_shard(store: Store) -> None:
    small, large = MSG, MSG + b"x" * 10_000          # one kept in the index, one in a file
    for name in (ALICE, BOB):
        store.append(name, inbox(store, name), small, flags=["\\Seen"])
        store.append(name, inbox(store, name), large)
    for name in (ALICE, BOB):
        home = shards.of_name(name, SHARDS)
        metas = store.messages(name, inbox(store, name))
        assert [meta.size for meta in metas] == [len(small), len(large)]
        assert all(shards.of_blob(blob_key(meta.blob), SHARDS) == home for meta in metas)
        assert store.read_bodies([meta.blob for meta in metas]) == [small, large]
        assert store.read_body(metas[1].blob, 0, 4) == b"From"
        assert store.digest(metas[0].blob).size == len(small)
        assert all(summary is not None for summary in store.summaries([meta.blob for meta in metas]))
        rows = store.search_rows(name, inbox(store, name))
        keys = [key for _uid, key, _size, _internaldate in rows]
        assert store.search_bodies(keys, [size for _uid, _key, size, _internaldate in rows]) == [small, large]
        assert [internaldate for *_row, internaldate in rows] == [meta.internaldate for meta in metas]
        assert all(found is not None for found in store.search_summaries(keys))
        assert store.summaries_by_key(keys) == store.summaries([meta.blob for meta in metas])
        assert store.summary_fields_by_key(keys, sort_record) == [sort_record_of(cast(Summary, summary))
                                                                   for summary in store.summaries_by_key(keys)]
        header_end = len(MSG) - len(MSG.split(b"\r\n\r\n", 1)[1])
        assert store.search_headers([*keys, b"\x00" * 16], [header_end, header_end, 10]) == [
            small[:header_end], large[:header_end], None]  # the index's, a file's, one that is gone
        shared = store._shards[home]
        with shared.read() as txn:
            kept = {bytes(blob) for blob, _ in bodyrecords.items(txn, shared.dbs, bodyrecords.BODY, values=False)}
        assert kept == {blob_key(metas[0].blob)}
    # Bodies of both shards in one call.
    blobs = [store.messages(name, inbox(store, name))[0].blob for name in (ALICE, BOB)]
    assert store.read_bodies(blobs) == [small, small]
    assert store.stats()["messages"] == 4 and store.verify() == []


def test_flag_changes_expunge_and_changes_since(store: Store) -> None:
    box = inbox(store, BOB)
    _, uid = store.append(BOB, box, MSG)
    before = store.folder_by_id(BOB, box)
    assert before is not None
    changed, _failed = store.store_flags(BOB, box, [uid], "add", ["\\Deleted"])
    assert changed[0].flags == ("\\Deleted",)
    account_id = store.account_id(BOB)
    assert store.highestmodseq(account_id, box) == changed[0].modseq
    assert store.deleted_uids(BOB, box) == [uid]
    assert store.expunge(BOB, box) == [uid]
    assert store.vanished_since(BOB, box, before.highestmodseq) == [uid]
    assert store.usage(BOB) == (0, 0) and store.verify() == []


def test_copy_and_move_into_an_account_of_another_shard(store: Store) -> None:
    source, target = inbox(store, ALICE), inbox(store, BOB)
    _, first = store.append(ALICE, source, MSG, flags=["\\Flagged", "$Work"], internaldate=1_000_000, tzoffset=60)
    _, second = store.append(ALICE, source, MSG + b"y" * 10_000)
    uidvalidity, pairs = store.copy(ALICE, source, [first, second, 99], target, dst_account=BOB)
    assert uidvalidity == store.get_folder(BOB, "INBOX").uidvalidity   # type: ignore[union-attr]
    assert [old for old, _new in pairs] == [first, second]
    copies = store.messages(BOB, target)
    originals = store.messages(ALICE, source)
    assert [(m.flags, m.internaldate, m.tzoffset, m.size) for m in copies] == \
        [(m.flags, m.internaldate, m.tzoffset, m.size) for m in originals]
    assert not {m.blob for m in copies} & {m.blob for m in originals}   # a body per shard
    assert store.read_bodies([m.blob for m in copies]) == store.read_bodies([m.blob for m in originals])
    assert store.usage(BOB) == store.usage(ALICE)
    _, moved = store.move(ALICE, source, [first], target, dst_account=BOB)
    assert len(moved) == 1 and [m.uid for m in store.messages(ALICE, source)] == [second]
    assert len(store.messages(BOB, target)) == 3
    assert store.usage(ALICE) == (len(MSG) + 10_000, 1)
    # Nothing to copy: the destination's UIDVALIDITY, no pairs.
    assert store.copy(ALICE, source, [first], target, dst_account=BOB)[1] == []
    # Within one shard the bodies are shared, as in a store of one shard.
    store.copy(ALICE, source, [second], inbox(store, CAROL), dst_account=CAROL)
    assert store.messages(CAROL, inbox(store, CAROL))[0].blob == store.messages(ALICE, source)[0].blob
    assert store.verify() == []


def flushes_fail(monkeypatch: pytest.MonkeyPatch, store: Store, account: str) -> None:
    """From now on writes are durable (flushed after their commit), and the flushes of the shard
    ``account`` lives in fail, as fdatasync() on an I/O error."""
    monkeypatch.setattr(store, "fsync", True)
    shard = store._shards[shards.of_name(account, SHARDS)]
    monkeypatch.setattr(shard, "env", FailingSync(shard.env))


def alices_messages(store: Store, count: int) -> tuple[int, int, list[int]]:
    """``count`` messages appended to ALICE's INBOX, to be moved or copied to BOB's, of another
    shard: (ALICE's INBOX, BOB's INBOX, the messages' UIDs)."""
    source = inbox(store, ALICE)
    return source, inbox(store, BOB), [store.append(ALICE, source, MSG + b"%d" % number)[1] for number in range(count)]


def pairs_into_bobs_inbox(store: Store, error: NotDurable, originals: list[int]) -> list[tuple[int, int]]:
    """The (source UID, copy's UID) pairs a transfer into BOB's INBOX whose flush failed carries,
    under that folder's UIDVALIDITY, as copy() and move() return them: ``originals``, each with
    its copy there."""
    assert error.result is not None
    uidvalidity, pairs = error.result
    assert uidvalidity == store.get_folder(BOB, "INBOX").uidvalidity   # type: ignore[union-attr]
    assert pairs == list(zip(originals, store.uids(BOB, inbox(store, BOB)), strict=True))
    return pairs


def test_a_transfer_across_shards_whose_flush_fails_says_what_stands(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies' commit stands when its flush fails: a COPY's NotDurable carries what copy()
    returns, for its caller to remove them (an IMAP COPY that fails copies nothing); a MOVE
    keeps its originals (a power failure could undo the copies alone), removes its copies
    again and reports nothing moved."""
    source, target, uids = alices_messages(store, 3)
    flushes_fail(monkeypatch, store, BOB)
    with pytest.raises(NotDurable) as copied:
        store.copy(ALICE, source, uids, target, dst_account=BOB)
    pairs = pairs_into_bobs_inbox(store, copied.value, uids)
    with pytest.raises(NotDurable) as moved:
        store.move(ALICE, source, uids[:1], target, dst_account=BOB)
    assert moved.value.result is None
    # The move's copy is removed again: the message is in the source alone (RFC 6851 section 3.3).
    assert store.uids(ALICE, source) == uids and store.uids(BOB, target) == [pair[1] for pair in pairs]


def fail_removal(monkeypatch: pytest.MonkeyPatch, store: Store, *, expunged_first: Iterable[int] = (),
                 copies_too: bool = False) -> None:
    """The removal of the originals of a move from ALICE fails, as a commit of her shard that
    meets an I/O error, after another session expunged ``expunged_first`` of them; with
    ``copies_too``, the removal of the copies from BOB's shard fails as well."""
    remove = store.remove_messages

    def failing(account: str, folder_id: int, uids: Iterable[int]) -> list[int]:
        if account == ALICE:
            remove(account, folder_id, expunged_first)
            raise MidbError("mdb_txn_commit: Input/output error")
        if copies_too:
            raise MidbError("mdb_txn_commit: No space left on device")
        return remove(account, folder_id, uids)

    monkeypatch.setattr(store, "remove_messages", failing)


def test_a_move_across_shards_whose_originals_stay_removes_its_copies(
        store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The copies are made in the destination's shard, then the originals removed in the
    source's: when that removal fails, the copies are removed again and the error raised, so the
    caller's NO leaves no message in both mailboxes (RFC 6851 section 3.3). An original expunged
    meanwhile keeps its copy, the message's only one."""
    source, target, uids = alices_messages(store, 3)
    usage = store.usage(BOB)
    fail_removal(monkeypatch, store)
    with pytest.raises(MidbError, match="Input/output error"):
        store.move(ALICE, source, uids[:2], target, dst_account=BOB)
    assert store.uids(ALICE, source) == uids and store.uids(BOB, target) == []
    assert store.usage(BOB) == usage
    monkeypatch.undo()
    fail_removal(monkeypatch, store, expunged_first=[uids[0]])
    with pytest.raises(MidbError, match="Input/output error"):
        store.move(ALICE, source, uids, target, dst_account=BOB)
    assert store.uids(ALICE, source) == uids[1:]
    (kept,) = store.messages(BOB, target)
    assert store.read_body(kept.blob) == MSG + b"0"
    # A copy that cannot be removed stays (in both mailboxes, never in neither), logged; the
    # error raised is the move's own.
    monkeypatch.undo()
    fail_removal(monkeypatch, store, copies_too=True)
    with pytest.raises(MidbError, match="Input/output error"):
        store.move(ALICE, source, uids[1:2], target, dst_account=BOB)
    assert store.uids(ALICE, source) == uids[1:] and len(store.uids(BOB, target)) == 2
    assert "a failed move from" in caplog.text and "No space left on device" in caplog.text
    monkeypatch.undo()
    assert store.verify() == []


def test_a_move_across_shards_whose_removal_is_not_flushed_has_moved(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The originals' removal stands when its flush fails: the NotDurable carries what move()
    returns, as a move within a shard whose flush failed, and the copies stay."""
    source, target, uids = alices_messages(store, 2)
    flushes_fail(monkeypatch, store, ALICE)
    with pytest.raises(NotDurable) as moved:
        store.move(ALICE, source, uids, target, dst_account=BOB)
    assert len(pairs_into_bobs_inbox(store, moved.value, uids)) == 2
    assert store.uids(ALICE, source) == []


@pytest.mark.parametrize("refusal", ["full map", "quota"])
def test_a_transfer_across_shards_the_destination_refuses_reads_no_body(
        store: Store, monkeypatch: pytest.MonkeyPatch, refusal: str) -> None:
    """A destination shard whose map is nearly full, or an account without room, refuses the
    copies from the messages' records alone: their bodies (megabytes each) are not read first."""
    source, target = inbox(store, ALICE), inbox(store, BOB)
    uids = [store.append(ALICE, source, MSG + b"y" * 10_000)[1] for _number in range(3)]
    if refusal == "full map":
        bob_shard = store._shards[shards.of_name(BOB, SHARDS)]
        monkeypatch.setattr(bob_shard, "room_to_grow", lambda: False)
    else:
        store.update_account(BOB, quota_bytes=20_000)
    reads = counted(monkeypatch, store, "read_bodies")
    for transfer in (store.copy, store.move):
        with pytest.raises(StoreFull if refusal == "full map" else OverQuota):
            transfer(ALICE, source, uids, target, dst_account=BOB)
    assert reads == []
    assert store.uids(BOB, target) == [] and store.uids(ALICE, source) == uids


def test_a_copy_across_shards_parses_and_respells_each_distinct_flag_set_once(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages copied or moved to another shard share a few flag sets: each distinct one is
    parsed and put in the destination's keyword spelling once, as within a shard, not once per
    message; the copies carry the same flags as copies made within a shard."""
    source = inbox(store, ALICE)
    flag_sets = [("\\Seen",), ("\\Flagged", "$Work"), ("$Work", "Later")]
    uids = [store.append(ALICE, source, MSG + b"%d" % number, flags=flag_sets[number % 3])[1]
            for number in range(12)]
    for account in (BOB, CAROL):   # the destinations already spell the keyword their way
        store.append(account, inbox(store, account), MSG, flags=["$work"])
    store.copy(ALICE, source, uids, inbox(store, CAROL), dst_account=CAROL)   # within ALICE's shard
    parsed = counted(monkeypatch, store_module, "parse_flags")
    respelt = counted(monkeypatch, store_module._KeywordSpellings, "respell")
    _, pairs = store.copy(ALICE, source, uids[:6], inbox(store, BOB), dst_account=BOB)
    assert len(pairs) == 6 and (len(parsed), len(respelt)) == (3, 2)
    parsed.clear()
    respelt.clear()
    _, pairs = store.move(ALICE, source, uids[6:], inbox(store, BOB), dst_account=BOB)
    assert len(pairs) == 6 and (len(parsed), len(respelt)) == (3, 2)
    across = [meta.flags for meta in store.messages(BOB, inbox(store, BOB))]
    within = [meta.flags for meta in store.messages(CAROL, inbox(store, CAROL))]
    stored = [("\\Seen",), ("\\Flagged", "$work"), ("$work", "Later")]
    assert across == within == [("$work",)] + [stored[number % 3] for number in range(12)]
    assert store.verify() == []


def counted(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> list[None]:
    """Replace ``target.name`` with a wrapper that notes each call."""
    real = getattr(target, name)
    calls: list[None] = []

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(None)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, counting)
    return calls


def test_delivery_to_accounts_of_several_shards(store: Store) -> None:
    outcomes = store.append_batch([(name, inbox(store, name), MSG, ()) for name in (ALICE, BOB, CAROL)]
                                  + [("nobody", 1, MSG, ())])
    assert all(isinstance(outcome, tuple) for outcome in outcomes[:3])
    assert isinstance(outcomes[3], NoSuchAccount)
    for name in (ALICE, BOB, CAROL):
        assert len(store.messages(name, inbox(store, name))) == 1
    assert store.verify() == []


def test_delete_account_drops_ownership_held_in_other_shards(store: Store) -> None:
    store.grant_owner(BOB, ALICE)
    store.grant_owner(CAROL, ALICE)
    assert store.owners(BOB) == [ALICE] and store.is_owner(BOB, ALICE)
    assert not store.is_owner(BOB, "nobody") and not store.is_owner(BOB, "bad name")
    store.delete_account(ALICE)
    assert store.owners(BOB) == [] and store.owners(CAROL) == []
    for shared in store._shards:
        with shared.read() as txn:
            assert list(txn.cursor(shared.dbs.owners).iternext(values=False)) == []
    assert store.get_account(ALICE) is None and store.verify() == []


def test_watchers_hear_of_changes_in_every_shard(store: Store) -> None:
    heard: list[tuple[str, int]] = []
    done = threading.Event()

    def callback(account: str, folder_id: int, _modseq: int) -> None:
        heard.append((account, folder_id))
        if len(heard) >= 2:
            done.set()

    handles = [store.watch(name, callback) for name in (ALICE, BOB)]
    store.append(ALICE, inbox(store, ALICE), MSG)
    store.append(BOB, inbox(store, BOB), MSG)
    assert done.wait(5)
    assert sorted(heard) == sorted([(ALICE, inbox(store, ALICE)), (BOB, inbox(store, BOB))])
    for handle in handles:
        handle.cancel()


def test_verify_repair_and_backup_of_a_sharded_store(store: Store, tmp_path: Path) -> None:
    store.append(ALICE, inbox(store, ALICE), MSG + b"z" * 10_000)
    store.append(BOB, inbox(store, BOB), MSG)
    # An orphan body file placed in shard 3, old enough to be removed.
    orphan_blob = shards.new_blob_id(3, SHARDS)
    orphan = store._blobs.path(orphan_blob)
    os.makedirs(os.path.dirname(orphan), exist_ok=True)
    with open(orphan, "wb") as handle:
        handle.write(b"lost")
    os.utime(orphan, (1, 1))
    problems = store.verify()
    assert problems == [f"orphan: body file {orphan} not referenced by the index"]
    # A wrong counter in shard 2 (BOB's): reported with its shard, then recomputed.
    shared = store._shards[2]
    account_id = store.account_id(BOB)
    with shared.env.begin(write=True) as txn:
        txn.put(account_key(account_id), encode_usage(1, 1), db=shared.dbs.usage)
    assert any(problem.startswith("error: shard 2: ") for problem in store.verify())
    store.verify(repair=True)
    assert store.verify() == [] and not os.path.exists(orphan)
    assert store.usage(BOB) == (len(MSG), 1)
    # A backup holds every shard and the bodies; opened, it has the same mail.
    destination = tmp_path / "backup"
    store.backup(str(destination))
    with Store(destination, readonly=True) as copy:
        assert copy.shard_count == SHARDS
        for name in (ALICE, BOB):
            metas = copy.messages(name, inbox(copy, name))
            assert copy.read_bodies([m.blob for m in metas]) == store.read_bodies(
                [m.blob for m in store.messages(name, inbox(store, name))])
        assert copy.verify() == []


def test_an_account_in_the_wrong_shard_is_reported(store: Store) -> None:
    account = store.get_account(ALICE)
    assert account is not None
    source, target = store._shards[1], store._shards[3]
    with source.read() as txn:
        found = txn.get(account.id.to_bytes(4, "big"), db=source.dbs.accounts)
        assert found is not None
        record = bytes(found)
    with target.env.begin(write=True) as txn:
        txn.put(account.id.to_bytes(4, "big"), record, db=target.dbs.accounts)
        txn.put(ALICE.encode(), account.id.to_bytes(4, "big"), db=target.dbs.account_names)
    assert any(f"account {ALICE}: stored in shard 3, belongs in [1]" in problem for problem in store.verify())
