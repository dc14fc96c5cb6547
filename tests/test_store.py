"""midb Store: the contract of specs/midb_api.md (accounts, folders, messages, quota, maintenance)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from store_helpers import body_files

from midb import bodyrecords, env, maintenance, mime
from midb import store as midb_store
from midb.accounts import normalize_account_name
from midb.blobs import pack_blob_record
from midb.errors import (
    AccountExists,
    FolderExists,
    HasChildren,
    InvalidArgument,
    InvalidFlag,
    InvalidName,
    MessageGone,
    MidbError,
    NoSuchAccount,
    NoSuchBody,
    NoSuchFolder,
    OverQuota,
    ReadOnlyStore,
    StoreBusy,
    StoreFull,
    TooBig,
)
from midb.folders import FolderRecord, normalize_name
from midb.keys import change_key, folder_key, message_key, name_key
from midb.store import Account, FolderInfo, MessageMeta, Store

MSG = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\n\r\nbody text\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", fsync=False) as opened:
        yield opened


@pytest.fixture
def alice(store: Store) -> Account:
    return store.create_account("alice")


def inbox_id(store: Store, account: str = "alice") -> int:
    folder = store.get_folder(account, "INBOX")
    assert folder is not None
    return folder.id


def folder(store: Store, name: str, account: str = "alice") -> FolderInfo:
    info = store.get_folder(account, name)
    assert info is not None, name
    return info


def assert_consistent(store: Store, account: str = "alice") -> None:
    """Counters, usage and the whole index agree with the messages (checked after every operation)."""
    total_bytes = total_messages = 0
    for info in store.list_folders(account):
        metas = store.messages(account, info.id)
        assert info.messages == len(metas)
        assert info.unseen == sum(1 for m in metas if "\\Seen" not in m.flags)
        assert info.deleted == sum(1 for m in metas if "\\Deleted" in m.flags)
        assert info.size == sum(m.size for m in metas)
        assert all(m.uid < info.uidnext for m in metas)
        assert all(m.modseq <= info.highestmodseq for m in metas)
        assert store.uids(account, info.id) == [m.uid for m in metas]
        total_bytes += info.size
        total_messages += info.messages
    assert store.usage(account) == (total_bytes, total_messages)
    assert store.verify() == []


# ---- accounts ---------------------------------------------------------------------------------------

def test_create_account_creates_inbox_and_special_folders(store: Store) -> None:
    account = store.create_account("Alice@Example.ORG", password_hash="{X}hash")
    assert account.name == "alice@example.org"
    assert account.password_hash == "{X}hash"
    assert (account.quota_bytes, account.quota_messages, account.disabled) == (0, 0, False)
    assert abs(account.created - time.time()) < 60
    folders = {info.name: info for info in store.list_folders("alice@example.org")}
    assert set(folders) == {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"}
    assert folders["INBOX"].special_use is None
    assert {name: info.special_use for name, info in folders.items() if name != "INBOX"} == {
        "Drafts": "\\Drafts", "Sent": "\\Sent", "Trash": "\\Trash", "Junk": "\\Junk", "Archive": "\\Archive"}
    assert all(info.subscribed for info in folders.values())
    assert len({info.uidvalidity for info in folders.values()}) == 6
    assert all(info.highestmodseq >= 1 and info.uidnext == 1 and info.uidvalidity > 0
               for info in folders.values())
    assert [info.name for info in store.list_folders("alice@example.org")] == sorted(folders)


def test_account_language_names_folders(tmp_path: Path) -> None:
    with Store(tmp_path / "s", fsync=False, default_lang="fr") as store:
        store.create_account("hans", lang="de_DE.UTF-8")
        store.create_account("jean")
        store.create_account("nobody", lang="xx")
        hans = {info.special_use: info.name for info in store.list_folders("hans")}
        assert hans["\\Trash"] == "Papierkorb" and hans["\\Sent"] == "Gesendet"
        jean = {info.special_use: info.name for info in store.list_folders("jean")}
        assert jean["\\Drafts"] == "Brouillons"
        nobody = {info.special_use: info.name for info in store.list_folders("nobody")}
        assert nobody["\\Junk"] == "Junk"
        # A later language change renames nothing: identity (id, uidvalidity) is kept.
        before = store.list_folders("hans")
        store.update_account("hans", lang="en")
        assert store.list_folders("hans") == before


def test_localize_folders_renames_special_folders_in_one_go(tmp_path: Path) -> None:
    with Store(tmp_path / "s", fsync=False) as store:
        store.create_account("hans", lang="de")
        before = {info.special_use: info for info in store.list_folders("hans")}
        trash = before["\\Trash"]
        store.append("hans", trash.id, b"Subject: old\r\n\r\nbin\r\n")
        store.create_folder("hans", "Papierkorb/2025")
        store.set_subscribed("hans", "Papierkorb/2025", True)
        store.rename_folder("hans", "Entwürfe", "Meine Entwürfe")   # the user's own name: kept
        store.create_folder("hans", "Indésirables")                   # the French name is taken
        outcome = {rename.special_use: rename for rename in store.localize_folders("hans", "fr")}
        assert outcome["\\Trash"].renamed and (outcome["\\Trash"].old, outcome["\\Trash"].new) == (
            "Papierkorb", "Corbeille")
        assert outcome["\\Sent"].renamed and outcome["\\Sent"].new == "Envoyés"
        assert not outcome["\\Drafts"].renamed and outcome["\\Drafts"].reason == "a name of the user's own"
        assert not outcome["\\Junk"].renamed and outcome["\\Junk"].reason == "Indésirables exists"
        after = {info.name: info for info in store.list_folders("hans")}
        corbeille = after["Corbeille"]
        # The same folder under its new name: id, UIDVALIDITY and messages kept; children and
        # subscriptions follow.
        assert (corbeille.id, corbeille.uidvalidity, corbeille.messages) == (trash.id, trash.uidvalidity, 1)
        assert after["Corbeille/2025"].subscribed and "Papierkorb/2025" not in after
        assert "Meine Entwürfe" in after and "Spam" in after
        # Back to the default language (English here): every known name moves again.
        again = {rename.special_use: rename for rename in store.localize_folders("hans", None)}
        assert again["\\Trash"].new == "Trash" and again["\\Trash"].renamed
        assert again["\\Junk"].renamed and (again["\\Junk"].old, again["\\Junk"].new) == ("Spam", "Junk")
        assert {rename.renamed for rename in store.localize_folders("hans", None)} == {False}
        with pytest.raises(NoSuchAccount):
            store.localize_folders("nobody", "de")
        with pytest.raises(InvalidArgument):
            store.localize_folders("hans", "not a tag\x00")


def test_account_errors(store: Store, alice: Account) -> None:
    with pytest.raises(AccountExists):
        store.create_account("ALICE")
    for bad in ["", "a b", "a\x00b", "x!y", "a\tb", "a\x7fb", "a\u00a0b", "a\u3000b", "é" * 200, None, 5]:
        with pytest.raises(InvalidName):
            store.create_account(bad)  # type: ignore[arg-type]
    assert store.get_account("nobody") is None
    assert store.get_account("bad name") is None
    with pytest.raises(NoSuchAccount):
        store.usage("nobody")
    with pytest.raises(NoSuchAccount):
        store.list_folders("nobody")
    with pytest.raises(InvalidArgument):
        store.create_account("bob", password_hash=b"bytes")  # type: ignore[arg-type]


def test_get_list_update_account(store: Store, alice: Account) -> None:
    store.create_account("bob", lang="de")
    assert store.get_account("ALICE") == alice
    assert [account.name for account in store.list_accounts()] == ["alice", "bob"]
    updated = store.update_account("alice", quota_bytes=1000, disabled=True)
    assert (updated.quota_bytes, updated.disabled, updated.password_hash, updated.lang) == (1000, True, None, None)
    updated = store.update_account("alice", password_hash="h2", lang="fr", quota_messages=5)
    assert (updated.quota_bytes, updated.quota_messages, updated.password_hash, updated.lang) == (1000, 5, "h2", "fr")
    assert store.update_account("alice", password_hash=None).password_hash is None
    assert store.get_account("alice") == store.update_account("alice")
    with pytest.raises(InvalidArgument):
        store.update_account("alice", quota_bytes=-1)
    with pytest.raises(InvalidArgument):
        store.update_account("alice", disabled="yes")
    with pytest.raises(NoSuchAccount):
        store.update_account("nobody", disabled=True)


def test_owners(store: Store, alice: Account) -> None:
    store.create_account("bob")
    store.create_account("carol")
    assert store.is_owner("alice", "ALICE")
    assert not store.is_owner("alice", "bob")
    store.grant_owner("alice", "bob")
    store.grant_owner("alice", "carol")
    store.grant_owner("alice", "bob")
    assert store.owners("alice") == ["bob", "carol"]
    assert store.is_owner("alice", "bob") and not store.is_owner("bob", "alice")
    store.revoke_owner("alice", "carol")
    assert store.owners("alice") == ["bob"]
    with pytest.raises(NoSuchAccount):
        store.grant_owner("alice", "nobody")
    assert not store.is_owner("alice", "nobody")
    assert not store.is_owner("alice", "bad name")
    store.delete_account("bob")
    assert store.owners("alice") == []


def test_delete_account_removes_everything(store: Store, alice: Account) -> None:
    store.create_account("bob")
    store.grant_owner("bob", "alice")
    inbox = inbox_id(store)
    store.append("alice", inbox, MSG)
    _, uid = store.append("alice", inbox, MSG + b"2")
    store.copy("alice", inbox, [uid], inbox_id(store, "bob"), dst_account="bob")
    assert len(body_files(store)) == 2
    store.delete_account("alice")
    assert store.get_account("alice") is None
    assert len(body_files(store)) == 1          # the body shared with bob survives
    assert store.owners("bob") == []
    assert store.messages("bob", inbox_id(store, "bob"))[0].size == len(MSG) + 1
    with pytest.raises(NoSuchAccount):
        store.delete_account("alice")
    again = store.create_account("alice")
    assert again.id != alice.id
    assert store.messages("alice", inbox_id(store)) == []
    assert store.verify() == []


# ---- folders ----------------------------------------------------------------------------------------

def test_create_folder_with_parents(store: Store, alice: Account) -> None:
    info = store.create_folder("alice", "Projects/2024/Q1", special_use="\\flagged")
    assert info.name == "Projects/2024/Q1" and info.special_use == "\\Flagged"
    parent = folder(store, "Projects/2024")
    grandparent = folder(store, "Projects")
    assert info.parent_id == parent.id and parent.parent_id == grandparent.id
    assert grandparent.parent_id is None and grandparent.special_use is None
    assert not info.subscribed
    assert store.folder_by_id("alice", info.id) == info
    assert store.folder_by_id("alice", 9999) is None
    with pytest.raises(FolderExists):
        store.create_folder("alice", "Projects/2024")
    with pytest.raises(FolderExists):
        store.create_folder("alice", "inbox")
    sub = store.create_folder("alice", "inbox/Sub")
    assert sub.name == "INBOX/Sub" and sub.parent_id == inbox_id(store)
    assert store.get_folder("alice", "InBoX/sub") is None
    assert store.get_folder("alice", "InBoX/Sub") == sub
    # STATUS's read: the stored record, the same counters and identifiers as get_folder's.
    record = store.folder_counters("alice", "InBoX/Sub")
    assert record is not None
    assert (record.id, record.name, record.uidvalidity, record.uidnext, record.highestmodseq,
            record.messages, record.unseen, record.deleted, record.size) == (
        sub.id, sub.name, sub.uidvalidity, sub.uidnext, sub.highestmodseq,
        sub.messages, sub.unseen, sub.deleted, sub.size)
    assert store.folder_counters("alice", "InBoX/sub") is None
    assert store.folder_counters("alice", "bad\x01name") is None
    with pytest.raises(NoSuchAccount):
        store.folder_counters("nobody", "INBOX")
    with pytest.raises(InvalidArgument):
        store.create_folder("alice", "X", special_use="\\Bogus")
    with pytest.raises(NoSuchAccount):
        store.create_folder("nobody", "X")


@pytest.mark.parametrize("name", ["", "/abs", "trailing/", "a//b", "a/../b", "..", ".", "a/./b", "nul\x00",
                                  "ctl\x01x", "del\x7f", "x" * 481, "/".join(["d"] * 65), "\udc80"])
def test_invalid_folder_names(store: Store, alice: Account, name: str) -> None:
    with pytest.raises(InvalidName):
        store.create_folder("alice", name)
    with pytest.raises(InvalidName):
        store.set_subscribed("alice", name, True)
    assert store.get_folder("alice", name) is None


def test_folder_names_edge_cases(store: Store, alice: Account) -> None:
    with pytest.raises(InvalidName):
        store.create_folder("alice", None)  # type: ignore[arg-type]
    for name in ["Entwürfe/Alt", "a.b", "...x", "日本語", "with space", "x" * 480]:
        assert store.create_folder("alice", name).name == name


def test_rename_folder_with_children(store: Store, alice: Account) -> None:
    top = store.create_folder("alice", "Work")
    child = store.create_folder("alice", "Work/Reports")
    store.set_subscribed("alice", "Work/Reports", True)
    _, uid = store.append("alice", child.id, MSG)
    renamed = store.rename_folder("alice", "Work", "Old/Job")
    assert renamed.id == top.id and renamed.uidvalidity == top.uidvalidity
    assert renamed.name == "Old/Job" and renamed.parent_id == folder(store, "Old").id
    moved_child = folder(store, "Old/Job/Reports")
    assert moved_child.id == child.id and moved_child.uidvalidity == child.uidvalidity
    assert moved_child.subscribed and moved_child.parent_id == top.id
    assert store.get_folder("alice", "Work") is None and store.get_folder("alice", "Work/Reports") is None
    assert "Work/Reports" not in store.subscriptions("alice")
    assert [m.uid for m in store.messages("alice", child.id)] == [uid]
    with pytest.raises(FolderExists):
        store.rename_folder("alice", "Old", "Sent")
    with pytest.raises(FolderExists):
        store.rename_folder("alice", "Old", "INBOX")
    with pytest.raises(NoSuchFolder):
        store.rename_folder("alice", "Missing", "Other")
    with pytest.raises(InvalidName):
        store.rename_folder("alice", "Old", "Old/Inside")
    with pytest.raises(InvalidName):
        store.rename_folder("alice", "Old", "bad//name")
    assert_consistent(store)


def test_rename_inbox_moves_messages(store: Store, alice: Account) -> None:
    inbox = folder(store, "INBOX")
    _, uid1 = store.append("alice", inbox.id, MSG, flags=["\\Seen"])
    _, uid2 = store.append("alice", inbox.id, MSG + b"x")
    store.create_folder("alice", "INBOX/Child")
    before = folder(store, "INBOX")
    renamed = store.rename_folder("alice", "INBOX", "Saved/Inbox")
    assert renamed.id != inbox.id and renamed.uidvalidity != inbox.uidvalidity
    assert [m.uid for m in store.messages("alice", renamed.id)] == [uid1, uid2]
    assert renamed.messages == 2 and renamed.unseen == 1 and renamed.uidnext == before.uidnext
    after = folder(store, "INBOX")
    assert after.id == inbox.id and after.uidvalidity == inbox.uidvalidity
    assert after.messages == 0 and after.uidnext == before.uidnext
    assert after.highestmodseq > before.highestmodseq
    assert store.changes_since("alice", inbox.id, before.highestmodseq) == ([], [uid1, uid2])
    assert store.get_folder("alice", "INBOX/Child") is not None     # inferiors stay
    _, uid3 = store.append("alice", inbox.id, MSG)
    assert uid3 == before.uidnext
    assert_consistent(store)


def test_delete_folder_rules(store: Store, alice: Account) -> None:
    with pytest.raises(InvalidName):
        store.delete_folder("alice", "inbox")
    store.create_folder("alice", "A/B")
    with pytest.raises(HasChildren):
        store.delete_folder("alice", "A")
    with pytest.raises(NoSuchFolder):
        store.delete_folder("alice", "Nope")
    store.set_subscribed("alice", "A/B", True)
    target = folder(store, "A/B")
    store.append("alice", target.id, MSG)
    assert len(body_files(store)) == 1
    store.delete_folder("alice", "A/B")
    assert body_files(store) == []
    assert store.usage("alice") == (0, 0)
    assert "A/B" in store.subscriptions("alice")      # subscriptions are independent of folders
    store.delete_folder("alice", "A")
    again = store.create_folder("alice", "A/B")
    assert again.id != target.id and again.uidvalidity != target.uidvalidity
    assert store.messages("alice", again.id) == []
    with pytest.raises(NoSuchFolder):
        store.messages("alice", target.id)
    store.delete_folder("alice", "Trash")            # special-use folders may be deleted
    assert_consistent(store)


def test_subscriptions(store: Store, alice: Account) -> None:
    assert sorted(store.subscriptions("alice")) == sorted(["INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"])
    store.set_subscribed("alice", "Does/Not/Exist", True)
    store.set_subscribed("alice", "inbox", False)
    store.set_subscribed("alice", "Junk", False)
    store.set_subscribed("alice", "Junk", False)
    assert sorted(store.subscriptions("alice")) == sorted(["Drafts", "Sent", "Trash", "Archive", "Does/Not/Exist"])
    assert not folder(store, "INBOX").subscribed
    with pytest.raises(NoSuchAccount):
        store.set_subscribed("nobody", "x", True)


def test_folder_entries_read_one_branch_or_all_folders(store: Store, alice: Account) -> None:
    for name in ("a", "a b", "a/x/y", "ab", "Ünï/z"):
        store.create_folder("alice", name)
    store.create_folder("alice", "Old mail", special_use="\\Archive")
    inbox = inbox_id(store)
    store.append("alice", inbox, MSG)
    infos = store.list_folders("alice")
    entries = store.folder_entries("alice")
    assert [(entry.name, entry.id, entry.special_use) for entry in entries] == [
        (info.name, info.id, info.special_use) for info in infos]
    assert [entry.name for entry in entries] == sorted(info.name for info in infos)
    assert all(entry.record is None for entry in entries)
    assert [entry.name for entry in store.folder_entries("alice", "a")] == ["a", "a b", "a/x", "a/x/y", "ab"]
    assert [entry.name for entry in store.folder_entries("alice", "a/")] == ["a/x", "a/x/y"]
    assert [entry.name for entry in store.folder_entries("alice", "Ün")] == ["Ünï", "Ünï/z"]
    assert store.folder_entries("alice", "zzz") == []
    (old,) = store.folder_entries("alice", "Old mail")
    assert old.special_use == "\\Archive"
    # With the records: the counters LIST-STATUS reports, from the same read.
    with_records = {entry.name: entry.record for entry in store.folder_entries("alice", records=True)}
    assert with_records["INBOX"] is not None and with_records["INBOX"].messages == 1
    assert with_records["INBOX"].uidnext == folder(store, "INBOX").uidnext
    with pytest.raises(NoSuchAccount):
        store.folder_entries("nobody")


def test_has_children_folder_names_and_subscriptions_of_a_branch(store: Store, alice: Account) -> None:
    for name in ("a/x/y", "ab", "Ünï/z"):
        store.create_folder("alice", name)
    assert store.has_children("alice", "a") and store.has_children("alice", "a/x")
    assert not store.has_children("alice", "a/x/y") and not store.has_children("alice", "ab")
    assert store.has_children("alice", "Ünï") and not store.has_children("alice", "Nowhere")
    assert store.folder_names("alice", "a") == ["a", "a/x", "a/x/y", "ab"]
    assert store.folder_names("alice") == [entry.name for entry in store.folder_entries("alice")]
    store.set_subscribed("alice", "a/x", True)
    store.set_subscribed("alice", "a/gone", True)   # a subscription may name no folder
    store.set_subscribed("alice", "ab", True)
    assert store.subscriptions("alice", "a/") == ["a/gone", "a/x"]
    assert store.subscriptions("alice", "a") == ["a/gone", "a/x", "ab"]
    assert sorted(store.subscriptions("alice", "")) == sorted(store.subscriptions("alice"))


def test_name_facts_say_what_list_says_of_the_names_asked(store: Store, alice: Account) -> None:
    for name in ("a/x/y", "ab", "Ünï/z"):
        store.create_folder("alice", name)
    store.create_folder("alice", "Old mail", special_use="\\Archive")
    store.set_subscribed("alice", "a/x", True)
    store.set_subscribed("alice", "gone", True)
    facts = store.name_facts("alice", ["a", "a/x", "a/x/y", "ab", "Old mail", "gone", "Ünï", "nowhere"],
                             subscriptions=True)
    assert facts.existing == {"a": None, "a/x": None, "a/x/y": None, "ab": None, "Old mail": "\\Archive",
                              "Ünï": None}
    assert facts.with_children == {"a", "a/x", "Ünï"}
    assert facts.subscribed == {"a/x", "gone"}
    # The same as LIST's reading of every folder.
    entries = {entry.name: entry.special_use for entry in store.folder_entries("alice")}
    assert {name: entries[name] for name in facts.existing} == facts.existing
    assert store.name_facts("alice", ["a/x"]).subscribed == set()   # (not asked)
    with pytest.raises(NoSuchAccount):
        store.name_facts("nobody", ["a"])


def test_subscriptions_since_gives_what_changed(store: Store, alice: Account) -> None:
    first = store.subscriptions_since("alice", -1)
    assert first.changed is None and sorted(first.names or ()) == sorted(store.subscriptions("alice"))
    assert store.subscriptions_since("alice", first.generation) == (first.generation, None, None)
    before, after = store.set_subscribed("alice", "a", True)
    assert (before, after) == (first.generation, first.generation + 1)
    assert store.set_subscribed("alice", "a", True) == (after, after)   # no change, no new generation
    store.set_subscribed("alice", "Junk", False)
    store.create_folder("alice", "p/q")
    store.set_subscribed("alice", "p/q", True)
    store.rename_folder("alice", "p", "r")   # moves p/q's subscription to r/q
    store.rename_folder("alice", "Sent", "Sent2")   # moves Sent's
    read = store.subscriptions_since("alice", first.generation)
    assert read.names is None
    assert read.changed == {"a": True, "Junk": False, "p/q": False, "r/q": True, "Sent": False, "Sent2": True}
    assert store.subscriptions_since("alice", read.generation - 1).changed == {"Sent": False, "Sent2": True}
    store.create_folder("alice", "unsubscribed")
    generation = store.subscriptions_since("alice", -1).generation
    store.rename_folder("alice", "unsubscribed", "still")   # moves no subscription
    assert store.subscriptions_since("alice", generation) == (generation, None, None)


def test_subscriptions_since_reads_all_once_the_log_is_past(store: Store, alice: Account,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(midb_store, "SUBSCRIPTION_LOG_KEPT", 3)
    start = store.subscriptions_since("alice", -1).generation
    for index in range(3):
        store.set_subscribed("alice", f"n{index}", True)
    assert store.subscriptions_since("alice", start).changed == {"n0": True, "n1": True, "n2": True}
    store.set_subscribed("alice", "n3", True)   # the change after ``start`` is no longer logged
    read = store.subscriptions_since("alice", start)
    assert read.changed is None and read.names == store.subscriptions("alice")
    assert store.subscriptions_since("alice", start + 1).changed == {"n1": True, "n2": True, "n3": True}
    # The log keeps SUBSCRIPTION_LOG_KEPT changes, however many: its entries are bounded.
    shared = store._home("alice")
    with shared.read() as txn:
        logged = [bytes(key) for key, _value in txn.cursor(shared.dbs.counters)
                  if bytes(key).startswith(b"subscription-log:")]
    assert len(logged) == 3
    store.delete_account("alice")
    with shared.read() as txn:
        assert not [key for key, _value in txn.cursor(shared.dbs.counters)
                    if bytes(key).startswith((b"subscription-log:", b"subscriptions-changed:"))]


def test_claim_recent_range(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    assert store.claim_recent_range("alice", inbox)[0] == 0
    store.append("alice", inbox, MSG)
    store.append("alice", inbox, MSG)
    assert store.claim_recent_range("alice", inbox)[0] == 0
    assert store.claim_recent_range("alice", inbox)[0] == 2
    store.append("alice", inbox, MSG)
    assert store.claim_recent_range("alice", inbox)[0] == 2
    assert folder(store, "INBOX").recent_floor == 3
    with pytest.raises(NoSuchFolder):
        store.claim_recent_range("alice", 999)


# ---- messages ---------------------------------------------------------------------------------------

def test_append_and_read_back(store: Store, alice: Account) -> None:
    info = folder(store, "INBOX")
    data = b"Subject: bin\r\n\r\n\x00\xff\r\n.\r\nno final newline"
    uidvalidity, uid = store.append("alice", info.id, data, flags=["\\seen", "\\RECENT", "$Label1", "Work"],
                                    internaldate=1_600_000_000, tzoffset=-300)
    assert uidvalidity == info.uidvalidity and uid == 1
    (meta,) = store.messages("alice", info.id)
    assert meta == MessageMeta(uid=1, flags=("\\Seen", "$Label1", "Work"), internaldate=1_600_000_000,
                               tzoffset=-300, size=len(data), modseq=meta.modseq, blob=meta.blob)
    assert meta.modseq == info.highestmodseq + 1
    assert store.read_body(meta.blob) == data
    assert store.read_body(meta.blob, 9, 3) == b"bin"
    assert store.read_body(meta.blob, len(data) - 5) == b"wline"
    assert store.read_body(meta.blob, 2, 0) == b""
    with open(store.body_path(meta.blob), "rb") as handle:
        assert handle.read() == data
    assert store.digest(meta.blob) == mime.digest(data)
    _, uid2 = store.append("alice", info.id, MSG)
    assert uid2 == 2
    now_meta = store.get_messages("alice", info.id, [uid2])[0]
    assert abs(now_meta.internaldate - time.time()) < 60 and now_meta.tzoffset == 0 and now_meta.flags == ()
    after = folder(store, "INBOX")
    assert after.uidnext == 3 and after.messages == 2 and after.unseen == 1
    assert_consistent(store)


def test_flag_normalisation_and_order(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    _, uid = store.append("alice", inbox, MSG,
                          flags=["zeta", "\\SEEN", "$alpha", "\\draft", "\\Answered", "ZETA", "\\flagged", "\\deleted"])
    (meta,) = store.get_messages("alice", inbox, [uid])
    assert meta.flags == ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen", "$alpha", "zeta")
    for bad in [["\\Unknown"], [""], ["a b"], ["x(y"], ["k\x00"], ["ü"], ["a]"], ["%"], ["*"], [5], "\\Seen"]:
        with pytest.raises(InvalidFlag):
            store.append("alice", inbox, MSG, flags=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidFlag):
            store.store_flags("alice", inbox, [uid], "add", bad)  # type: ignore[arg-type]
    assert len(store.uids("alice", inbox)) == 1
    assert_consistent(store)


def test_store_flags_modes_and_modseq(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    uids = [store.append("alice", inbox, MSG, flags=["$Label1"])[1] for _ in range(3)]
    base = folder(store, "INBOX").highestmodseq
    changed, failed = store.store_flags("alice", inbox, uids + [99], "add", ["\\Seen", "$label1", "Todo"])
    assert failed == [] and [m.uid for m in changed] == uids
    assert [m.modseq for m in changed] == [base + 1, base + 2, base + 3]   # one bump per changed message
    assert all(m.flags == ("\\Seen", "$Label1", "Todo") for m in changed)  # existing spelling wins
    assert folder(store, "INBOX").highestmodseq == base + 3
    changed, _ = store.store_flags("alice", inbox, uids, "add", ["\\Seen"])
    assert changed == []                                                   # nothing changed, no bump
    assert folder(store, "INBOX").highestmodseq == base + 3
    changed, _ = store.store_flags("alice", inbox, uids[:1], "remove", ["$LABEL1", "\\seen", "Absent"])
    assert changed[0].flags == ("Todo",)
    changed, _ = store.store_flags("alice", inbox, uids[1:2], "set", ["\\Flagged", "$label1"])
    assert changed[0].flags == ("\\Flagged", "$Label1")                     # set too: the folder's spelling
    changed, _ = store.store_flags("alice", inbox, uids[2:], "set", [])
    assert changed[0].flags == ()
    with pytest.raises(InvalidArgument):
        store.store_flags("alice", inbox, uids, "toggle", ["\\Seen"])
    with pytest.raises(InvalidArgument):
        store.store_flags("alice", inbox, ["1"], "add", ["\\Seen"])  # type: ignore[list-item]
    with pytest.raises(NoSuchFolder):
        store.store_flags("alice", 999, uids, "add", ["\\Seen"])
    assert_consistent(store)


def test_store_flags_tells_the_modseq_each_change_replaced(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    uids = [store.append("alice", inbox, MSG)[1] for _ in range(2)]
    first, _ = store.store_flags("alice", inbox, uids[:1], "add", ["\\Flagged"])
    before = {meta.uid: meta.modseq for meta in store.get_messages("alice", inbox, uids)}
    prior = {99: 1}   # filled afresh
    changed, _ = store.store_flags("alice", inbox, uids, "add", ["\\Flagged"], prior=prior)
    assert [meta.uid for meta in changed] == uids[1:]
    assert prior == {uids[1]: before[uids[1]]}   # only what changed
    store.store_flags("alice", inbox, uids, "add", ["\\Seen"], prior=prior)
    assert prior == {uids[0]: first[0].modseq, uids[1]: changed[0].modseq}


def test_a_keyword_is_stored_in_the_folders_spelling(store: Store, alice: Account) -> None:
    """Keywords are case-insensitive: whatever spelling a client sends, a folder keeps the one
    it was first given, by APPEND, STORE, COPY and MOVE alike (one keyword in FLAGS, not one
    per spelling); a folder of its own starts with the spelling it is given."""
    inbox = inbox_id(store)
    other = store.create_folder("alice", "Other").id
    first = store.append("alice", inbox, MSG, flags=["$Forwarded"])[1]
    second, third = store.append_many("alice", inbox, [(MSG, ["$forwarded", "NEW"], None, 0),
                                                       (MSG, ["$FORWARDED", "new"], None, 0)])[1]
    fourth = store.append("alice", inbox, MSG)[1]
    store.store_flags("alice", inbox, [fourth], "add", ["$fOrWaRdEd"])
    metas = store.get_messages("alice", inbox, [first, second, third, fourth])
    assert [meta.flags for meta in metas] == [("$Forwarded",), ("$Forwarded", "NEW"), ("$Forwarded", "NEW"),
                                              ("$Forwarded",)]
    assert store.keywords("alice", inbox) == ["$Forwarded", "NEW"]
    store.append("alice", other, MSG, flags=["$FORWARDED"])
    _, pairs = store.copy("alice", inbox, [second], other)
    moved = store.move("alice", inbox, [third], other)[1]
    copied = store.get_messages("alice", other, [pairs[0][1], moved[0][1]])
    assert [meta.flags for meta in copied] == [("$FORWARDED", "NEW"), ("$FORWARDED", "NEW")]
    assert store.keywords("alice", other) == ["$FORWARDED", "NEW"]
    assert_consistent(store)


def test_copy_and_move_respell_each_distinct_flag_set_once(store: Store, alice: Account,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A COPY or MOVE piece respells the keywords of each distinct flag set it carries once,
    not once per message; the copies still take the destination's spelling."""
    inbox = inbox_id(store)
    other = store.create_folder("alice", "Other").id
    store.append("alice", other, MSG, flags=["$LABEL"])
    flag_sets = [["\\Seen", "$label"], ["$label", "todo"], ["\\Seen"], []] * 3
    uids = [store.append("alice", inbox, MSG, flags=flags)[1] for flags in flag_sets]
    calls: list[tuple[str, ...]] = []
    respell = midb_store._KeywordSpellings.respell

    def counted(self: Any, flags: Any) -> None:
        calls.append(tuple(flags.keywords.values()))
        respell(self, flags)

    monkeypatch.setattr("midb.store._KeywordSpellings.respell", counted)
    _, pairs = store.copy("alice", inbox, uids, other)
    assert sorted(calls) == [("$label",), ("$label", "todo")]
    copies = store.get_messages("alice", other, [new for _old, new in pairs])
    assert [meta.flags for meta in copies] == [("\\Seen", "$LABEL"), ("$LABEL", "todo"), ("\\Seen",), ()] * 3
    calls.clear()
    _, pairs = store.move("alice", inbox, uids, other)
    assert sorted(calls) == [("$label",), ("$label", "todo")]
    moved = store.get_messages("alice", other, [new for _old, new in pairs])
    assert [meta.flags for meta in moved] == [meta.flags for meta in copies]
    assert_consistent(store)


def test_count_above(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    other = store.create_folder("alice", "Other").id
    store.append("alice", other, MSG)   # the next folder's keys do not count
    uids = [store.append("alice", inbox, MSG)[1] for _ in range(5)]
    store.store_flags("alice", inbox, [uids[3]], "add", ["\\Deleted"])
    store.expunge("alice", inbox, [uids[3]])
    assert [store.count_above("alice", inbox, uid) for uid in (0, 1, 3, 4, 5, 99)] == [4, 3, 1, 1, 0, 0]


def test_keywords_lists_a_keyword_once_whatever_its_spellings(store: Store, alice: Account,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages stored before the folder's spelling rule may carry several: FLAGS lists one,
    and a new message takes the one listed."""
    inbox = inbox_id(store)
    with monkeypatch.context() as old_store:   # each message kept as it was sent
        old_store.setattr("midb.store._KeywordSpellings.respell", lambda self, flags: None)
        for spelling in ("$label", "$Label", "Other"):
            store.append("alice", inbox, MSG, flags=[spelling])
    assert store.keywords("alice", inbox) == ["$Label", "Other"]
    uid = store.append("alice", inbox, MSG, flags=["$LABEL"])[1]
    assert store.get_messages("alice", inbox, [uid])[0].flags == ("$Label",)


def test_unchanged_since(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    uid1 = store.append("alice", inbox, MSG)[1]
    uid2 = store.append("alice", inbox, MSG)[1]
    mark = folder(store, "INBOX").highestmodseq
    store.store_flags("alice", inbox, [uid2], "add", ["\\Flagged"])
    changed, failed = store.store_flags("alice", inbox, [uid1, uid2], "add", ["\\Seen"], unchanged_since=mark)
    assert [m.uid for m in changed] == [uid1] and failed == [uid2]
    assert "\\Seen" not in store.get_messages("alice", inbox, [uid2])[0].flags
    with pytest.raises(InvalidArgument):
        store.store_flags("alice", inbox, [uid1], "add", ["\\Seen"], unchanged_since=-1)


def test_copy_shares_body(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    archive = folder(store, "Archive")
    uid1 = store.append("alice", inbox, MSG, flags=["\\Seen", "kw"])[1]
    uid2 = store.append("alice", inbox, MSG + b"2")[1]
    store.append("alice", archive.id, MSG + b"pre")
    uidvalidity, pairs = store.copy("alice", inbox, [uid2, uid1, 77], archive.id)
    assert uidvalidity == archive.uidvalidity and pairs == [(uid1, 2), (uid2, 3)]
    source = {m.uid: m for m in store.messages("alice", inbox)}
    copies = {m.uid: m for m in store.messages("alice", archive.id)}
    assert copies[2].blob == source[uid1].blob and copies[2].flags == ("\\Seen", "kw")
    assert copies[2].internaldate == source[uid1].internaldate
    assert len(body_files(store)) == 3
    store.store_flags("alice", inbox, [uid1, uid2], "add", ["\\Deleted"])
    store.expunge("alice", inbox)
    assert len(body_files(store)) == 3                  # still referenced by the copies
    assert store.read_body(copies[2].blob) == MSG
    store.store_flags("alice", archive.id, [2, 3], "add", ["\\Deleted"])
    store.expunge("alice", archive.id)
    assert len(body_files(store)) == 1
    assert store.copy("alice", inbox, [12345], archive.id) == (archive.uidvalidity, [])
    with pytest.raises(NoSuchFolder):
        store.copy("alice", inbox, [1], 999)
    assert_consistent(store)


def test_copy_to_other_account(store: Store, alice: Account) -> None:
    store.create_account("bob")
    uid = store.append("alice", inbox_id(store), MSG)[1]
    bob_inbox = inbox_id(store, "bob")
    _, pairs = store.copy("alice", inbox_id(store), [uid], bob_inbox, dst_account="BOB")
    assert pairs == [(uid, 1)]
    assert store.usage("bob") == (len(MSG), 1) and store.usage("alice") == (len(MSG), 1)
    _, pairs = store.move("bob", bob_inbox, [1], inbox_id(store), dst_account="alice")
    assert pairs == [(1, 2)]
    assert store.usage("bob") == (0, 0) and store.usage("alice") == (2 * len(MSG), 2)
    with pytest.raises(NoSuchAccount):
        store.copy("alice", inbox_id(store), [uid], bob_inbox, dst_account="nobody")
    assert_consistent(store)
    assert_consistent(store, "bob")


def test_move(store: Store, alice: Account) -> None:
    inbox = folder(store, "INBOX")
    trash = folder(store, "Trash")
    uids = [store.append("alice", inbox.id, MSG + bytes([n]), flags=["\\Seen"] if n else [])[1] for n in range(3)]
    blobs = [m.blob for m in store.messages("alice", inbox.id)]
    uidvalidity, pairs = store.move("alice", inbox.id, uids[:2], trash.id)
    assert uidvalidity == trash.uidvalidity and pairs == [(uids[0], 1), (uids[1], 2)]
    assert [m.uid for m in store.messages("alice", inbox.id)] == [uids[2]]
    assert [m.blob for m in store.messages("alice", trash.id)] == blobs[:2]
    metas, vanished = store.changes_since("alice", inbox.id, inbox.highestmodseq + 3)
    assert metas == [] and vanished == uids[:2]
    assert folder(store, "Trash").unseen == 1 and folder(store, "INBOX").unseen == 0
    assert len(body_files(store)) == 3
    # Moving within the same folder renumbers.
    _, pairs = store.move("alice", trash.id, [1], trash.id)
    assert pairs == [(1, 3)]
    assert store.uids("alice", trash.id) == [2, 3]
    assert_consistent(store)


def test_replace_stores_the_new_message_and_expunges_the_old_in_one_change(store: Store, alice: Account) -> None:
    drafts = folder(store, "Drafts")
    inbox = folder(store, "INBOX")
    uids = [store.append("alice", drafts.id, MSG + bytes([65 + n]))[1] for n in range(2)]
    mark = folder(store, "Drafts").highestmodseq
    uidvalidity, new_uid, floor, tombstone = store.replace(
        "alice", drafts.id, MSG + b"v2", replacing=(drafts.id, uids[0]), flags=["\\Seen"], internaldate=1000)
    assert (uidvalidity, new_uid, floor) == (drafts.uidvalidity, 3, None)
    assert tombstone == mark + 1   # the expunge comes first in the transaction
    assert store.uids("alice", drafts.id) == [uids[1], 3]
    metas, vanished = store.changes_since("alice", drafts.id, mark)
    assert [(meta.uid, meta.modseq, meta.flags, meta.internaldate) for meta in metas] == [(3, mark + 2, ("\\Seen",), 1000)]
    assert vanished == [uids[0]]
    assert store.read_bodies([metas[0].blob]) == [MSG + b"v2"]
    # Into another folder, claiming \Recent there as append_claiming does.
    uidvalidity, new_uid, floor, _tombstone = store.replace(
        "alice", inbox.id, MSG + b"v3", replacing=(drafts.id, 3), claim=True)
    assert (uidvalidity, new_uid, floor) == (inbox.uidvalidity, 1, 0)
    assert store.uids("alice", drafts.id) == [uids[1]] and store.uids("alice", inbox.id) == [1]
    assert store.recent_floor("alice", inbox.id) == 1
    store.wait_for_removals()
    assert len(body_files(store)) == 2   # the replaced messages' bodies are gone
    assert_consistent(store)


def test_replace_of_a_message_no_longer_there_stores_nothing(store: Store, alice: Account) -> None:
    drafts = folder(store, "Drafts")
    uid = store.append("alice", drafts.id, MSG)[1]
    store.remove_messages("alice", drafts.id, [uid])
    before = folder(store, "Drafts")
    with pytest.raises(MessageGone):
        store.replace("alice", drafts.id, MSG + b"v2", replacing=(drafts.id, uid))
    with pytest.raises(MessageGone):
        store.replace("alice", drafts.id, MSG + b"v2", replacing=(drafts.id, 99))
    after = folder(store, "Drafts")
    assert (after.uidnext, after.highestmodseq, after.messages) == (before.uidnext, before.highestmodseq, 0)
    store.wait_for_removals()
    assert body_files(store) == []
    assert_consistent(store)


def test_replace_that_fails_after_the_expunge_keeps_the_old_message(store: Store, alice: Account,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of a failed transaction is kept: the old message stays and the new body is removed."""
    drafts = folder(store, "Drafts")
    uid = store.append("alice", drafts.id, MSG)[1]
    blobs = body_files(store)

    def fail() -> int:
        raise MidbError("simulated failure inside the write")

    monkeypatch.setattr("midb.store.savedates.now", fail)   # first called after the expunge
    with pytest.raises(MidbError, match="simulated"):
        store.replace("alice", drafts.id, MSG + b"v2", replacing=(drafts.id, uid))
    monkeypatch.undo()
    assert store.uids("alice", drafts.id) == [uid]
    store.wait_for_removals()
    assert body_files(store) == blobs
    assert_consistent(store)


def test_replace_is_refused_by_the_quota_only_for_what_it_adds(store: Store, alice: Account) -> None:
    drafts = folder(store, "Drafts")
    uid = store.append("alice", drafts.id, MSG + b"12345")[1]
    used_bytes, used_messages = store.usage("alice")
    store.update_account("alice", quota_bytes=used_bytes, quota_messages=used_messages)
    with pytest.raises(OverQuota):
        store.append("alice", drafts.id, MSG)
    _v, uid, _f, _t = store.replace("alice", drafts.id, MSG + b"54321", replacing=(drafts.id, uid))
    _v, uid, _f, _t = store.replace("alice", drafts.id, MSG, replacing=(drafts.id, uid))
    store.update_account("alice", quota_bytes=len(MSG) - 1)   # now over the limit: still no growth allowed,
    _v, uid, _f, _t = store.replace("alice", drafts.id, MSG[:-1], replacing=(drafts.id, uid))  # shrinking is
    with pytest.raises(OverQuota) as refused:
        store.replace("alice", drafts.id, MSG + b"more", replacing=(drafts.id, uid))
    assert refused.value.resource == "STORAGE"
    assert store.uids("alice", drafts.id) == [uid]
    assert store.usage("alice") == (len(MSG) - 1, 1)
    # Over the message limit (lowered below the count): a replacement adds no message, so it may grow.
    store.update_account("alice", quota_bytes=0, quota_messages=0)
    store.append("alice", drafts.id, MSG)
    store.update_account("alice", quota_messages=1)
    _v, uid, _f, _t = store.replace("alice", drafts.id, MSG + b"grown", replacing=(drafts.id, uid))
    with pytest.raises(OverQuota):
        store.append("alice", drafts.id, MSG)
    assert_consistent(store)


def test_expunge_and_tombstones(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    uids = [store.append("alice", inbox, MSG)[1] for _ in range(5)]
    assert store.expunge("alice", inbox) == []
    store.store_flags("alice", inbox, [uids[0], uids[2], uids[4]], "add", ["\\Deleted"])
    mark = folder(store, "INBOX").highestmodseq
    assert store.expunge("alice", inbox, [uids[2], uids[1], 99]) == [uids[2]]
    assert store.expunge("alice", inbox) == [uids[0], uids[4]]
    info = folder(store, "INBOX")
    assert info.highestmodseq == mark + 3 and info.deleted == 0 and info.uidnext == 6
    assert store.changes_since("alice", inbox, mark) == ([], [uids[0], uids[2], uids[4]])
    assert store.vanished_since("alice", inbox, mark + 1) == [uids[0], uids[4]]
    assert store.uids("alice", inbox) == [uids[1], uids[3]]
    assert len(body_files(store)) == 2
    # uidnext never decreases, even when the highest UIDs are expunged.
    store.store_flags("alice", inbox, [uids[3]], "add", ["\\Deleted"])
    store.expunge("alice", inbox)
    assert store.append("alice", inbox, MSG)[1] == 6
    assert_consistent(store)


def test_changes_since(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    start = folder(store, "INBOX").highestmodseq
    uids = [store.append("alice", inbox, MSG)[1] for _ in range(4)]
    metas, vanished = store.changes_since("alice", inbox, start)
    assert [m.uid for m in metas] == uids and vanished == []
    mark = folder(store, "INBOX").highestmodseq
    assert store.changes_since("alice", inbox, mark) == ([], [])
    assert store.changes_since("alice", inbox, mark + 100) == ([], [])
    store.store_flags("alice", inbox, [uids[3]], "add", ["\\Seen"])
    store.store_flags("alice", inbox, [uids[1]], "add", ["\\Seen"])
    store.store_flags("alice", inbox, [uids[2]], "add", ["\\Deleted"])
    store.expunge("alice", inbox)
    metas, vanished = store.changes_since("alice", inbox, mark)
    assert [m.uid for m in metas] == [uids[1], uids[3]]      # UID order, not modseq order
    assert all(m.modseq > mark for m in metas) and vanished == [uids[2]]
    metas, _ = store.changes_since("alice", inbox, 0)
    assert [m.uid for m in metas] == [uids[0], uids[1], uids[3]]
    with pytest.raises(InvalidArgument):
        store.changes_since("alice", inbox, -1)


def test_view_changes_since_reads_records_of_known_messages_only(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    start = folder(store, "INBOX").highestmodseq
    uids = [store.append("alice", inbox, MSG)[1] for _ in range(6)]
    mark = folder(store, "INBOX").highestmodseq
    store.store_flags("alice", inbox, [uids[3], uids[0]], "add", ["\\Seen"])
    store.store_flags("alice", inbox, [uids[1], uids[4]], "add", ["\\Deleted"])
    store.expunge("alice", inbox)
    changes = store.view_changes_since("alice", inbox, start, uids[2])  # the view holds uids[0:3]
    assert [meta.uid for meta in changes.changed] == [uids[0], uids[2]]
    assert changes.new == [uids[3], uids[5]] and changes.vanished == [uids[1], uids[4]]
    # of the messages still there (an expunge's modseq is a tombstone's)
    assert changes.top_modseq == max(meta.modseq for meta in store.changes_since("alice", inbox, start)[0])
    # the same messages and tombstones as changes_since, split at the view's last UID
    metas, vanished = store.changes_since("alice", inbox, mark)
    changes = store.view_changes_since("alice", inbox, mark, uids[2])
    assert [meta for meta in metas if meta.uid <= uids[2]] == changes.changed
    assert [meta.uid for meta in metas if meta.uid > uids[2]] == changes.new == [uids[3]]
    assert vanished == changes.vanished
    top = folder(store, "INBOX").highestmodseq
    assert store.view_changes_since("alice", inbox, top, uids[2]) == ([], [], [], 0, ())
    with pytest.raises(InvalidArgument):
        store.view_changes_since("alice", inbox, -1, 0)


def test_view_changes_since_skips_a_change_entry_without_its_message(store: Store, alice: Account) -> None:
    """Damage (an index entry whose message record is gone) announces no new message."""
    inbox = inbox_id(store)
    start = folder(store, "INBOX").highestmodseq
    uids = [store.append("alice", inbox, MSG)[1] for _ in range(3)]

    def drop_record(txn: Any, dbs: Any, _effects: Any) -> None:
        account_id = store._account_id(txn, dbs, "alice")
        assert txn.delete(message_key(account_id, inbox, uids[1]), db=dbs.messages)

    store._home("alice").write(drop_record, durable=False)
    assert store.view_changes_since("alice", inbox, start, 0).new == [uids[0], uids[2]]


def test_uidvalidity_rules_and_explicit_uids(store: Store, alice: Account) -> None:
    imported = store.create_folder("alice", "Imported", uidvalidity=1234)
    assert imported.uidvalidity == 1234
    store.set_uidvalidity("alice", imported.id, 4321)
    assert folder(store, "Imported").uidvalidity == 4321
    assert store.append("alice", imported.id, MSG, uid=100) == (4321, 100)
    assert folder(store, "Imported").uidnext == 101
    with pytest.raises(MidbError):
        store.append("alice", imported.id, MSG, uid=100)
    with pytest.raises(MidbError):
        store.set_uidvalidity("alice", imported.id, 999)
    assert store.append("alice", imported.id, MSG) == (4321, 101)
    assert store.append("alice", imported.id, MSG, uid=500)[1] == 500
    with pytest.raises(InvalidArgument):
        store.append("alice", imported.id, MSG, uid=0)
    with pytest.raises(InvalidArgument):
        store.create_folder("alice", "Bad", uidvalidity=0)
    with pytest.raises(InvalidArgument):
        store.create_folder("alice", "Bad", uidvalidity=1 << 32)
    # Even after expunging everything, set_uidvalidity stays refused.
    store.store_flags("alice", imported.id, [100, 101, 500], "add", ["\\Deleted"])
    store.expunge("alice", imported.id)
    with pytest.raises(MidbError):
        store.set_uidvalidity("alice", imported.id, 999)
    # A re-created name gets a new, larger UIDVALIDITY.
    first = store.create_folder("alice", "Again")
    store.delete_folder("alice", "Again")
    second = store.create_folder("alice", "Again")
    assert second.uidvalidity > first.uidvalidity
    assert_consistent(store)


def test_the_last_uid_leaves_room_for_uidnext(store: Store, alice: Account) -> None:
    """UIDNEXT is a 32-bit nz-number: the highest UID a folder can hold is 2^32 - 2. A message
    given UID 2^32 - 1 raised struct.error, past the UID check, instead of a clean MidbError."""
    imported = store.create_folder("alice", "Imported", uidvalidity=77)
    with pytest.raises(MidbError, match="UID space exhausted"):
        store.append("alice", imported.id, MSG, uid=0xFFFFFFFF)
    assert store.append("alice", imported.id, MSG, uid=0xFFFFFFFE)[1] == 0xFFFFFFFE
    assert folder(store, "Imported").uidnext == 0xFFFFFFFF
    with pytest.raises(MidbError, match="UID space exhausted"):
        store.append("alice", imported.id, MSG)
    inbox = folder(store, "INBOX")
    uid = store.append("alice", inbox.id, MSG)[1]
    with pytest.raises(MidbError, match="UID space exhausted"):
        store.copy("alice", inbox.id, [uid], imported.id)
    assert len(list(store.messages("alice", imported.id))) == 1
    assert_consistent(store)


def test_raise_uidnext_in_one_transaction_with_a_tombstone(store: Store, alice: Account) -> None:
    """For importers: UIDNEXT rises to the source's, the source's last UID is recorded as
    expunged at a new mod-sequence, and no message is stored meanwhile; a UIDNEXT already there
    stays. A QRESYNC client that synchronised before is told of every UID below it that is not
    here (the source's gaps left no tombstones); one that synchronised after, of none."""
    imported = store.create_folder("alice", "Imported", uidvalidity=77)
    assert store.append("alice", imported.id, MSG, uid=7) == (77, 7)
    before = folder(store, "Imported")
    assert store.raise_uidnext("alice", imported.id, 13) is True
    after = folder(store, "Imported")
    assert (after.uidnext, after.messages, after.highestmodseq) == (13, 1, before.highestmodseq + 1)
    vanished = store.vanished_since("alice", imported.id, before.highestmodseq)
    assert list(vanished.among(range(1, 14))) == [*range(1, 7), *range(8, 13)]
    assert store.vanished_since("alice", imported.id, after.highestmodseq) == []
    # The source's last UID already here: UIDNEXT stays, its gaps are still told.
    other = store.create_folder("alice", "Other", uidvalidity=78)
    for uid in (2, 5):
        store.append("alice", other.id, MSG, uid=uid)
    assert store.raise_uidnext("alice", other.id, 6) is False
    assert list(store.vanished_since("alice", other.id, 1).among(range(1, 7))) == [1, 3, 4]
    assert store.append("alice", imported.id, MSG) == (77, 13)
    assert store.raise_uidnext("alice", imported.id, 10) is False   # never down
    assert folder(store, "Imported").uidnext == 14
    assert store.raise_uidnext("alice", imported.id, (1 << 32) - 1) is True   # UIDNEXT is a u32
    assert folder(store, "Imported").uidnext == (1 << 32) - 1
    for bad in (1, 1 << 32, True):
        with pytest.raises(InvalidArgument):
            store.raise_uidnext("alice", imported.id, bad)
    assert_consistent(store)


def test_append_validation(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    with pytest.raises(InvalidArgument):
        store.append("alice", inbox, "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        store.append("alice", inbox, MSG, tzoffset=24 * 60)
    with pytest.raises(InvalidArgument):
        store.append("alice", inbox, MSG, internaldate="now")  # type: ignore[arg-type]
    with pytest.raises(NoSuchFolder):
        store.append("alice", 999, MSG)
    with pytest.raises(NoSuchAccount):
        store.append("nobody", inbox, MSG)
    assert store.append("alice", inbox, bytearray(b"x"))[1] == 1
    assert store.append("alice", inbox, b"")[1] == 2
    assert len(body_files(store)) == 2
    assert_consistent(store)


def test_too_big(tmp_path: Path) -> None:
    with Store(tmp_path / "s", fsync=False, max_message_size=100) as store:
        store.create_account("alice")
        with pytest.raises(TooBig):
            store.append("alice", inbox_id(store), b"x" * 101)
        assert store.append("alice", inbox_id(store), b"x" * 100)[1] == 1
        assert len(body_files(store)) == 1


def test_quota(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    store.update_account("alice", quota_messages=2)
    store.append("alice", inbox, MSG)
    store.append("alice", inbox, MSG)
    with pytest.raises(OverQuota) as excinfo:
        store.append("alice", inbox, MSG)
    assert excinfo.value.resource == "MESSAGE"
    with pytest.raises(OverQuota):
        store.copy("alice", inbox, [1], folder(store, "Archive").id)
    # A move inside the account adds nothing, so it is allowed at the limit.
    store.move("alice", inbox, [1], folder(store, "Archive").id)
    store.update_account("alice", quota_messages=0, quota_bytes=3 * len(MSG))
    store.append("alice", inbox, MSG)
    with pytest.raises(OverQuota) as excinfo:
        store.append("alice", inbox, b"x")
    assert excinfo.value.resource == "STORAGE"
    with pytest.raises(OverQuota):
        store.append_many("alice", inbox, [(b"", (), None, 0), (b"y", (), None, 0)])
    assert len(body_files(store)) == 3 and store.usage("alice") == (3 * len(MSG), 3)
    store.store_flags("alice", inbox, store.uids("alice", inbox), "add", ["\\Deleted"])
    store.expunge("alice", inbox)
    assert store.usage("alice") == (len(MSG), 1)
    store.append("alice", inbox, b"fits now")
    assert_consistent(store)


def test_append_many_all_or_nothing(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    uidvalidity, uids = store.append_many("alice", inbox, [
        (MSG, ["\\Seen"], 1_700_000_000, 60), (MSG + b"b", (), None, 0), (b"c", ["kw"], 5, -60)])
    assert uidvalidity == folder(store, "INBOX").uidvalidity and uids == [1, 2, 3]
    metas = store.messages("alice", inbox)
    assert [(m.flags, m.tzoffset) for m in metas] == [(("\\Seen",), 60), ((), 0), (("kw",), -60)]
    assert store.read_body(metas[2].blob) == b"c"
    with pytest.raises(InvalidFlag):
        store.append_many("alice", inbox, [(MSG, (), None, 0), (MSG, ["bad flag"], None, 0)])
    with pytest.raises(InvalidArgument):
        store.append_many("alice", inbox, [(MSG, (), None)])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument):
        store.append_many("alice", inbox, [])
    assert store.uids("alice", inbox) == [1, 2, 3] and len(body_files(store)) == 3
    # Many at once goes through the parallel body writer.
    _, uids = store.append_many("alice", inbox, [(bytes([n]) * 10, (), None, 0) for n in range(40)])
    assert uids == list(range(4, 44))
    assert [store.read_body(m.blob) for m in store.messages("alice", inbox)[3:]] == [
        bytes([n]) * 10 for n in range(40)]
    assert_consistent(store)


def test_failed_commit_removes_body(store: Store, alice: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the index transaction fails after the body was written, the body file is removed."""
    inbox = inbox_id(store)
    original = Store._check_quota
    calls = []

    def quota_changes_in_between(self: Store, txn: object, dbs: object, account_id: int, size: int,
                                 messages: int) -> None:
        calls.append(size)
        if len(calls) == 2:   # the re-check inside the write transaction
            raise OverQuota("STORAGE")
        original(self, txn, dbs, account_id, size, messages)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "_check_quota", quota_changes_in_between)
    with pytest.raises(OverQuota):
        store.append("alice", inbox, MSG)
    assert len(calls) == 2 and body_files(store) == []
    assert store.uids("alice", inbox) == []


def test_get_messages_and_neighbouring_folders(store: Store, alice: Account) -> None:
    drafts, sent = folder(store, "Drafts"), folder(store, "Sent")
    assert sent.id == drafts.id + 1
    for n in range(5):
        store.append("alice", drafts.id, MSG + bytes([n]))
        store.append("alice", sent.id, MSG)
    assert store.uids("alice", drafts.id) == [1, 2, 3, 4, 5]
    assert len(store.messages("alice", sent.id)) == 5
    assert [m.uid for m in store.get_messages("alice", drafts.id, [5, 1, 3, 3, 9, 0, -1, 1 << 40])] == [1, 3, 5]
    assert store.get_messages("alice", drafts.id, []) == []
    assert store.messages("alice", folder(store, "Trash").id) == []
    assert store.uids("alice", folder(store, "Trash").id) == []
    with pytest.raises(InvalidArgument):
        store.get_messages("alice", drafts.id, "123")  # type: ignore[arg-type]


def test_body_errors(store: Store, alice: Account) -> None:
    with pytest.raises(InvalidArgument):
        store.read_body("../../etc/passwd")
    with pytest.raises(NoSuchBody):
        store.read_body("0" * 32)
    with pytest.raises(InvalidArgument):
        store.body_path("x")
    uid = store.append("alice", inbox_id(store), MSG)[1]
    blob = store.get_messages("alice", inbox_id(store), [uid])[0].blob
    with pytest.raises(MidbError):
        store.read_body(blob, -1)


def test_concurrent_appends(tmp_path: Path) -> None:
    with Store(tmp_path / "s", fsync=False) as store:
        store.create_account("alice")
        inbox = inbox_id(store)
        results: list[int] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker(number: int) -> None:
            try:
                for n in range(25):
                    uid = store.append("alice", inbox, b"thread %d message %d" % (number, n),
                                       flags=["\\Seen"] if n % 2 else [])[1]
                    with lock:
                        results.append(uid)
            except BaseException as error:   # reported below
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(number,)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors
        assert sorted(results) == list(range(1, 201))
        assert store.uids("alice", inbox) == list(range(1, 201))
        bodies = {store.read_body(m.blob) for m in store.messages("alice", inbox)}
        assert len(bodies) == 200
        assert_consistent(store)


def test_two_stores_share_one_environment(tmp_path: Path) -> None:
    first = Store(tmp_path / "s", fsync=False)
    second = Store(tmp_path / "s", fsync=True)
    try:
        first.create_account("alice")
        assert second.get_account("alice") is not None
        second.append("alice", inbox_id(second), MSG)
        assert len(first.uids("alice", inbox_id(first))) == 1
        first.close()
        first.close()
        with pytest.raises(MidbError):
            first.uids("alice", 1)
        assert len(second.uids("alice", inbox_id(second))) == 1
    finally:
        second.close()
    with Store(tmp_path / "s", fsync=False) as third:
        assert third.get_account("alice") is not None


def test_readonly_store(tmp_path: Path) -> None:
    with pytest.raises(MidbError):
        Store(tmp_path / "missing", readonly=True)
    with Store(tmp_path / "s", fsync=False) as store:
        store.create_account("alice")
        store.append("alice", inbox_id(store), MSG)
    with Store(tmp_path / "s", readonly=True) as readonly:
        assert len(readonly.messages("alice", inbox_id(readonly))) == 1
        with pytest.raises(ReadOnlyStore):
            readonly.create_account("bob")
        with pytest.raises(ReadOnlyStore):
            readonly.append("alice", inbox_id(readonly), MSG)
        assert readonly.verify() == []


# ---- maintenance ------------------------------------------------------------------------------------

def test_verify_reports_and_repairs(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    store.append("alice", inbox, MSG)
    store.append("alice", inbox, MSG + b"2")
    assert store.verify() == []
    # An orphan body (crash between body write and commit) and a leftover temporary file.
    orphan = os.path.join(store.path, "eml", "ab", "ab" + "0" * 30)
    temp = os.path.join(store.path, "eml", "cd", ".tmp-cd" + "1" * 30)
    for path in (orphan, temp):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"x")
    problems = store.verify()
    assert len(problems) == 2 and all(problem.startswith("orphan:") for problem in problems)
    store.verify(repair=True)
    assert os.path.exists(orphan)                       # too young: could be a write in flight
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    os.utime(temp, (old, old))
    store.verify(repair=True)
    assert not os.path.exists(orphan) and not os.path.exists(temp)
    assert store.verify() == []
    # Corrupt the counters and a refcount behind the store's back; repair recomputes them.
    shared = store._shared
    account_id = alice.id
    blob = store.messages("alice", inbox)[0].blob
    with shared.env.begin(write=True) as txn:
        key = folder_key(account_id, inbox)
        value = txn.get(key, db=shared.dbs.folders)
        assert value is not None
        record = FolderRecord.decode(inbox, value)
        record.unseen = 40
        txn.put(key, record.encode(), db=shared.dbs.folders)
        bodyrecords.put(txn, shared.dbs, bodyrecords.REFS, bytes.fromhex(blob), pack_blob_record(5, len(MSG)))
    problems = store.verify()
    assert len(problems) == 2 and all(problem.startswith("error:") for problem in problems)
    store.verify(repair=True)
    assert store.verify() == []
    assert folder(store, "INBOX").unseen == 2
    # A referenced body that vanished cannot be repaired; it stays an error.
    # The report names the messages that hold it and the file to restore.
    os.unlink(store.body_path(blob))
    problems = store.verify(repair=True)
    assert any("file missing" in problem for problem in problems)
    (missing,) = [problem for problem in store.verify() if "file missing" in problem]
    assert f"body {blob}: file missing (referenced by the index: alice/INBOX UID 1); restore " \
           f"{store.body_path(blob)} from a backup, or expunge the message" in missing


def test_backup(store: Store, alice: Account, tmp_path: Path) -> None:
    inbox = inbox_id(store)
    for n in range(20):
        store.append("alice", inbox, MSG + bytes([n]), flags=["\\Seen"] if n % 2 else [])
    store.copy("alice", inbox, [1, 2], folder(store, "Archive").id)
    store.store_flags("alice", inbox, [3], "add", ["\\Deleted"])
    store.expunge("alice", inbox)
    dest = tmp_path / "backup"
    store.backup(str(dest))
    store.append("alice", inbox, b"after the backup")
    with Store(dest, fsync=False) as copy:
        assert copy.verify() == []
        original = store.messages("alice", inbox)[:-1]
        assert copy.messages("alice", inbox) == original
        assert all(copy.read_body(m.blob) == store.read_body(m.blob) for m in original)
        assert copy.stats()["messages"] == store.stats()["messages"] - 1
    with pytest.raises(MidbError):
        store.backup(str(dest))                          # not empty


def test_backup_retries_when_a_body_vanishes_after_the_snapshot(
        store: Store, alice: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body expunged (and unlinked) between the index copy and the linking: the copy references
    a file that is gone, so the backup takes a newer copy, which no longer references it. Large
    flag lists (LMDB duplicates spanning pages) travel with the copy."""
    inbox = inbox_id(store)
    store.append_many("alice", inbox, [(b"Subject: %d\r\n\r\n" % n + b"x" * 3000, (), None, 0) for n in range(3)])
    store.append_many("alice", inbox, [(MSG, (), None, 0)] * 3000)
    real = maintenance._files_referenced
    calls: list[int] = []

    def referenced_then_expunge(index_dir: str) -> set[str]:
        found = real(index_dir)
        if not calls:
            store.store_flags("alice", inbox, [2], "add", ["\\Deleted"])
            store.expunge("alice", inbox, [2])
        calls.append(len(found))
        return found

    monkeypatch.setattr(maintenance, "_files_referenced", referenced_then_expunge)
    dest = tmp_path / "backup"
    store.backup(str(dest))
    assert calls == [3003, 3002]      # every body is a file with this store's settings
    with Store(dest, fsync=False) as copy:
        assert copy.verify() == []
        assert copy.messages("alice", inbox) == store.messages("alice", inbox)
        assert len(copy.unseen_uids("alice", inbox)) == 3002
    assert sum(1 for path in (dest / "eml").rglob("*") if path.is_file()) == 3002


def test_stats(store: Store, alice: Account) -> None:
    store.create_account("bob")
    store.append("alice", inbox_id(store), MSG)
    store.append("bob", inbox_id(store, "bob"), MSG + b"xy")
    stats = store.stats()
    assert stats["accounts"] == 2 and stats["folders"] == 12 and stats["messages"] == 2
    assert stats["bytes"] == 2 * len(MSG) + 2 and stats["bodies"] == 2
    assert stats["index_bytes"] > 0


# ---- group commit and transient failures ------------------------------------------------------------

def test_group_commit_isolates_failing_jobs(store: Store, alice: Account) -> None:
    """Jobs queued while a leader commits run as one batch; a job that raises is rolled back alone."""
    shared = store._shared
    dbs = shared.dbs
    leader_inside = threading.Event()
    release_leader = threading.Event()
    outcomes: dict[str, object] = {}

    def put_job(key: bytes, fail: bool = False, block: bool = False):  # type: ignore[no-untyped-def]
        def job(txn, dbs_, effects):  # type: ignore[no-untyped-def]
            txn.put(key, b"v", db=dbs.meta)
            if block:
                leader_inside.set()
                release_leader.wait(10)
            if fail:
                raise FolderExists("job failed on purpose")
            return key
        return job

    def run(name: str, job: object) -> None:
        try:
            outcomes[name] = shared.write(job, durable=False)[0]  # type: ignore[arg-type]
        except FolderExists as error:
            outcomes[name] = error

    leader = threading.Thread(target=run, args=("leader", put_job(b"t-leader", block=True)))
    leader.start()
    assert leader_inside.wait(10)
    followers = [threading.Thread(target=run, args=(name, put_job(b"t-" + name.encode(), fail=name == "f2")))
                 for name in ("f1", "f2", "f3")]
    for thread in followers:
        thread.start()
    deadline = time.monotonic() + 10
    while len(shared._queue) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(shared._queue) == 3                 # all three wait for the same batch
    release_leader.set()
    for thread in [leader, *followers]:
        thread.join(10)
    assert outcomes["leader"] == b"t-leader" and outcomes["f1"] == b"t-f1" and outcomes["f3"] == b"t-f3"
    assert isinstance(outcomes["f2"], FolderExists)
    with shared.env.begin() as txn:
        assert txn.get(b"t-f1", db=dbs.meta) == b"v" and txn.get(b"t-f3", db=dbs.meta) == b"v"
        assert txn.get(b"t-f2", db=dbs.meta) is None


def test_concurrent_folder_creation(store: Store, alice: Account) -> None:
    results: list[object] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait(10)
        try:
            results.append(store.create_folder("alice", "Race/Target").id)
        except FolderExists as error:
            results.append(error)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    created = [result for result in results if isinstance(result, int)]
    assert len(created) == 1 and len(results) == 6
    assert_consistent(store)


def test_map_full_is_transient_and_clean(tmp_path: Path) -> None:
    with Store(tmp_path / "s", fsync=False, map_size=1 << 20) as store:
        store.create_account("alice")
        inbox = inbox_id(store)
        with pytest.raises(StoreBusy):
            for _ in range(200):
                store.append_many("alice", inbox, [(MSG + bytes([n]) * 400, [f"kw{n}"], None, 0)
                                                   for n in range(50)])
        stored = store.uids("alice", inbox)
        assert len(body_files(store)) == len(stored)      # the failed batch left no bodies behind
        assert store.verify() == []


def test_a_full_map_keeps_room_for_removing_mail(tmp_path: Path) -> None:
    """Appends stop at the map's reserve (midb.env.growth_limit), so that flagging, expunging and
    deleting a folder, which copy the pages they change, still have room; then mail fits again."""
    with Store(tmp_path / "s", fsync=False, map_size=1 << 20, inline_limit=0, shards=1) as store:
        store.create_account("alice")
        inbox = inbox_id(store)
        old = store.create_folder("alice", "Old").id
        with pytest.raises(StoreFull, match="kept for deleting mail"):
            for n in range(5000):   # the map holds about 500
                store.append("alice", old if n % 2 else inbox, MSG + b"x" * 200)
        files = len(body_files(store))
        assert files == len(store.uids("alice", inbox)) + len(store.uids("alice", old))  # none left by the refusal
        shard = store._shards[0]
        assert shard._pages_in_use() < env.growth_limit(shard.env.info()["map_size"], 4096) + 8
        uids = store.uids("alice", inbox)
        store.store_flags("alice", inbox, uids, "add", ["\\Deleted"])
        assert store.expunge("alice", inbox) == uids
        store.delete_folder("alice", "Old")   # with the pages the expunge freed (SharedEnv._make_room)
        store.append("alice", inbox, MSG)
        assert len(body_files(store)) == 1
        assert store.verify() == []


def test_a_write_that_finds_the_map_full_is_tried_again_after_a_commit(store: Store, alice: Account) -> None:
    """LMDB reuses the pages a commit frees only after one more commit: a big removal right
    after another one may find the map full though half of it is free. The leader then commits a
    change of one key, and runs the write once more."""
    shared = store._shards[0]
    calls: list[int] = []

    def job(txn: Any, dbs: Any, effects: Any) -> str:
        calls.append(txn.id())
        if len(calls) == 1:
            raise lmdb.MapFullError("mdb_page_alloc: MDB_MAP_FULL")
        return "written"

    assert shared.write(job, durable=False)[0] == "written"
    assert len(calls) == 2 and calls[1] == calls[0] + 1   # a commit between: the pages freed before go

    def never_fits(txn: Any, dbs: Any, effects: Any) -> None:
        calls.append(txn.id())
        raise lmdb.MapFullError("mdb_page_alloc: MDB_MAP_FULL")

    with pytest.raises(StoreFull):
        shared.write(never_fits, durable=False)
    assert len(calls) == 4   # once more, not for ever


def test_only_writes_adding_data_are_refused_at_the_reserve(store: Store, alice: Account,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = inbox_id(store)
    trash = folder(store, "Trash").id
    _, first = store.append("alice", inbox, MSG)
    _, second = store.append("alice", inbox, MSG)
    store.set_metadata("alice", inbox, [("/private/comment", b"note")])
    monkeypatch.setattr(env.SharedEnv, "room_to_grow", lambda _self: False)
    refused: list[Any] = [
        lambda: store.append("alice", inbox, MSG),
        lambda: store.append_many("alice", inbox, [(MSG, (), None, 0)]),
        lambda: store.replace("alice", inbox, MSG, replacing=(inbox, first)),
        lambda: store.copy("alice", inbox, [first], trash),
        lambda: store.create_folder("alice", "New"),
        lambda: store.create_account("bob"),
        lambda: store.set_metadata("alice", inbox, [("/private/comment", b"other")]),
    ]
    for write in refused:
        with pytest.raises(StoreFull):
            write()
    (outcome,) = store.append_batch([("alice", inbox, MSG, ())])
    assert isinstance(outcome, StoreFull)
    assert store.uids("alice", inbox) == [first, second] and store.uids("alice", trash) == []
    assert len(body_files(store)) == 2
    # What removes or only changes mail goes on: flags, a MOVE (into Trash: how clients delete),
    # an expunge, an annotation's removal, a folder's deletion.
    store.set_metadata("alice", inbox, [("/private/comment", None)])
    store.store_flags("alice", inbox, [first], "add", ["\\Seen"])
    store.move("alice", inbox, [first], trash)
    store.store_flags("alice", inbox, [second], "add", ["\\Deleted"])
    assert store.expunge("alice", inbox) == [second]
    store.delete_folder("alice", "Trash")
    assert store.uids("alice", inbox) == []


def test_store_survives_fork(store: Store, alice: Account) -> None:
    """A forked child must not reuse the parent's LMDB handles; it re-opens transparently."""
    inbox = inbox_id(store)
    store.append("alice", inbox, MSG)
    pid = os.fork()
    if pid == 0:   # child: exit code tells the parent what happened
        code = 1
        try:
            store.append("alice", inbox, b"from the child")
            code = 0 if len(store.uids("alice", inbox)) == 2 else 2
            store.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [store.read_body(m.blob) for m in store.messages("alice", inbox)] == [MSG, b"from the child"]
    assert_consistent(store)


def test_repair_rebuilds_index_entries_and_lost_folders(store: Store, alice: Account) -> None:
    work = store.create_folder("alice", "Work")
    store.append("alice", work.id, MSG)
    store.append("alice", inbox_id(store), MSG)
    shared = store._shared
    dbs = shared.dbs
    meta = store.messages("alice", inbox_id(store))[0]
    with shared.env.begin(write=True) as txn:
        txn.delete(change_key(alice.id, inbox_id(store), meta.modseq, meta.uid), db=dbs.modseqs)
        txn.put(change_key(alice.id, inbox_id(store), 999, 77), b"", db=dbs.modseqs)
        txn.delete(folder_key(alice.id, work.id), db=dbs.folders)
        txn.delete(name_key(alice.id, "Work"), db=dbs.folder_names)
        txn.put(b"ghost", b"\x00\x00\x00\x63", db=dbs.account_names)
    problems = store.verify()
    assert len(problems) >= 4 and all(problem.startswith("error:") for problem in problems)
    store.verify(repair=True)
    assert store.verify() == []
    lost = store.get_folder("alice", f"lost+found-{work.id}")
    assert lost is not None and lost.id == work.id and lost.messages == 1
    assert store.changes_since("alice", inbox_id(store), 0)[0] == [meta]
    assert_consistent(store)


def test_highestmodseq_reads_one_folder_by_ids_and_is_none_once_it_is_gone(store: Store, alice: Account) -> None:
    account_id = store.account_id("alice")
    assert account_id == alice.id
    child = store.create_folder("alice", "Projects")
    assert store.highestmodseq(account_id, child.id) == child.highestmodseq
    store.append("alice", child.id, MSG)
    after = store.get_folder("alice", "Projects")
    assert after is not None and store.highestmodseq(account_id, child.id) == after.highestmodseq > child.highestmodseq
    store.delete_folder("alice", "Projects")
    assert store.highestmodseq(account_id, child.id) is None
    inbox = inbox_id(store)
    store.delete_account("alice")
    assert store.highestmodseq(account_id, inbox) is None
    with pytest.raises(NoSuchAccount):
        store.account_id("alice")


def test_digests_of_fetched_bodies_are_kept_but_a_gone_body_has_no_summary(store: Store, alice: Account) -> None:
    inbox = inbox_id(store)
    store.append("alice", inbox, MSG)
    blob = store.messages("alice", inbox)[0].blob
    first = store.digest(blob)
    assert store.digest(blob) is first            # decoded once, then served from memory
    assert first == mime.digest(MSG)
    store.store_flags("alice", inbox, [1], "add", ["\\Deleted"])
    store.expunge("alice", inbox)
    assert store.wait_for_removals()              # the file goes a moment after (midb.removal)
    assert store.summaries([blob]) == [None]      # the index answers, not the cache
    with pytest.raises(NoSuchBody):
        store.summary(blob)


def test_uid_lists_are_normalised_with_or_without_the_contiguous_fast_path() -> None:
    from midb.store import MAX_U32, _uid_list  # noqa: PLC0415 - the helper under test

    batch = list(range(50_001, 54_097))   # a batch of FETCH 1:*: the fast path
    assert _uid_list(batch) == batch and all(type(uid) is int for uid in _uid_list(batch))
    assert _uid_list([1, 2.0, 3]) == [1, 2, 3] and type(_uid_list([1, 2.0, 3])[1]) is int  # type: ignore[list-item]  # a float on purpose
    assert _uid_list([1, 3, 2]) == [1, 2, 3]   # same ends and length, not in order
    assert _uid_list([1, 1, 3]) == [1, 3]
    assert _uid_list([0, 1, 2]) == [1, 2]
    assert _uid_list([MAX_U32 - 1, MAX_U32]) == [MAX_U32 - 1, MAX_U32]
    assert _uid_list([MAX_U32, MAX_U32 + 1]) == [MAX_U32]
    assert _uid_list([1, 5, 9]) == [1, 5, 9]
    assert _uid_list([]) == []
    with pytest.raises(InvalidArgument):
        _uid_list([1, "2", 3])  # type: ignore[list-item]  # a string on purpose


def test_account_names_refuse_exactly_whitespace_controls_del_and_bang() -> None:
    """The one-regex check refuses what the rule says, over the whole of Unicode: every character
    str.isspace() calls whitespace, C0 controls, DEL and "!"; nothing else."""
    refused = [char for char in map(chr, range(0x110000))
               if char.isspace() or ord(char) < 0x20 or char in "\x7f!"]
    for char in refused:
        with pytest.raises(InvalidName):
            normalize_account_name("a" + char)
    accepted = [char for char in map(chr, range(0x20, 0x3000)) if char not in refused]
    assert all(normalize_account_name("a" + char) == ("a" + char).lower() for char in accepted)


def test_name_checks_answer_the_same_on_every_call() -> None:
    """Account and folder names are normalised through a cache: a refused name is refused every
    time (errors are not kept), and a value that is not a str is refused as a name, not as an
    unhashable key."""
    for _ in range(2):
        assert normalize_account_name("Alice@Example.ORG") == "alice@example.org"
        assert normalize_name("inbox/Sub") == "INBOX/Sub"
        with pytest.raises(InvalidName):
            normalize_account_name("a b")
        with pytest.raises(InvalidName):
            normalize_name("a//b")
        with pytest.raises(InvalidName):
            normalize_account_name(["alice"])
        with pytest.raises(InvalidName):
            normalize_name(["INBOX"])
