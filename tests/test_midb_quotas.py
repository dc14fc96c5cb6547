"""midb's counted quotas (midb/quotas.py): MAILBOX and ANNOTATION-STORAGE in the store; the IMAP
side is in test_quota.py."""

from __future__ import annotations

import dataclasses
import marshal

import pytest
from conversation import DATA_DIR
from store_helpers import store_with_alice

from midb import errors, maintenance, quotas
from midb.accounts import decode_account, encode_account
from midb.metadata import SERVER
from midb.store import Store


@pytest.fixture
def store(tmp_path):
    with store_with_alice(tmp_path / "midb", data_path=[str(DATA_DIR)]) as midb:
        midb.create_account("bob")
        yield midb


def folder_count(store: Store, account: str = "alice") -> int:
    return len(store.list_folders(account))


def test_account_records_without_the_new_limits_read_as_none_of_their_own(store):
    # Schema of the records written before MAILBOX and ANNOTATION-STORAGE existed: seven fields.
    legacy = marshal.dumps(("carol", None, "de", 2048, 10, False, 1_700_000_000))
    account = decode_account(42, legacy)
    assert (account.name, account.quota_bytes, account.quota_messages) == ("carol", 2048, 10)
    assert (account.quota_mailboxes, account.quota_annotation_bytes) == (0, 0)
    assert decode_account(42, encode_account(account)) == account
    # Written back with seven fields while the newer limits are unset: the release before them
    # unpacks seven.
    assert len(marshal.loads(encode_account(account))) == 7
    limited = dataclasses.replace(account, quota_annotation_bytes=4096)
    assert len(marshal.loads(encode_account(limited))) == 9
    assert decode_account(42, encode_account(limited)) == limited
    assert decode_account(42, encode_account(limited)).autoexpunge == ()
    # The account's own expiry periods (midb user expire) make a tenth field.
    expiring = dataclasses.replace(account, autoexpunge=(("\\Junk", 0), ("\\Trash", 86400)))
    assert len(marshal.loads(encode_account(expiring))) == 10
    assert decode_account(42, encode_account(expiring)) == expiring


def test_quota_usage_counts_mailboxes_and_annotation_octets(store):
    store.create_folder("alice", "a/b")
    inbox = store.get_folder("alice", "INBOX").id
    store.set_metadata("alice", inbox, [("/private/comment", b"12345")])
    store.set_metadata("alice", SERVER, [("/shared/vendor/x", b"")])
    store.set_metadata("bob", SERVER, [("/private/comment", b"not alice's")])
    used = store.quota_usage("alice")
    assert used.mailboxes == 8 == folder_count(store)   # 6 of a new account, a and a/b
    assert used.annotation_bytes == 2 * quotas.ANNOTATION_ENTRY_OVERHEAD + len("/private/comment") + 5 + len("/shared/vendor/x")
    assert (used.bytes, used.messages) == store.usage("alice")
    store.delete_folder("alice", "a/b")
    assert store.quota_usage("alice").mailboxes == 7


def test_the_store_checks_the_mailbox_quota_only_when_asked(store):
    store.update_account("alice", quota_mailboxes=6)
    store.create_folder("alice", "by-the-operator")   # no default given: the operator's tools
    with pytest.raises(errors.OverQuota) as raised:
        store.create_folder("alice", "by-the-user", mailbox_quota_default=0)
    assert raised.value.resource == quotas.MAILBOX
    # The account's own limit wins over the server's default, upwards too.
    store.update_account("alice", quota_mailboxes=9)
    store.create_folder("alice", "x/y", mailbox_quota_default=2)
    with pytest.raises(errors.OverQuota):
        store.create_folder("alice", "z", mailbox_quota_default=2)
    # Without an own limit the default applies; 0 there is unlimited.
    store.update_account("alice", quota_mailboxes=0)
    with pytest.raises(errors.OverQuota):
        store.create_folder("alice", "z", mailbox_quota_default=9)
    store.create_folder("alice", "z", mailbox_quota_default=0)
    assert folder_count(store) == 10


def test_errors_about_the_names_come_before_the_quota(store):
    store.update_account("alice", quota_mailboxes=1)
    with pytest.raises(errors.FolderExists):
        store.create_folder("alice", "Sent", mailbox_quota_default=0)
    with pytest.raises(errors.NoSuchFolder):
        store.rename_folder("alice", "Nowhere", "a/b", mailbox_quota_default=0)
    with pytest.raises(errors.FolderExists):
        store.rename_folder("alice", "Junk", "Sent", mailbox_quota_default=0)


def test_a_refused_annotation_change_leaves_nothing(store):
    inbox = store.get_folder("alice", "INBOX").id
    # Each entry costs 64 octets besides its name (10) and value.
    store.set_metadata("alice", inbox, [("/private/a", b"x" * 50)], annotation_quota_default=228)
    with pytest.raises(errors.OverQuota) as raised:
        store.set_metadata("alice", inbox, [("/private/a", None), ("/private/b", b"y" * 40),
                                            ("/private/c", b"z" * 41)], annotation_quota_default=228)
    assert raised.value.resource == quotas.ANNOTATION_STORAGE
    assert store.get_metadata("alice", inbox, ["/private"], depth="infinity") == {"/private/a": b"x" * 50}
    # Removing one and adding less in the same call is within it.
    store.set_metadata("alice", inbox, [("/private/a", None), ("/private/b", b"y" * 40)],
                       annotation_quota_default=228)
    assert store.quota_usage("alice").annotation_bytes == 64 + len("/private/b") + 40


def test_update_account_checks_the_new_limits(store):
    for field in ("quota_mailboxes", "quota_annotation_bytes"):
        for bad in (-1, 1 << 63, 1.5, True, "10"):
            with pytest.raises(errors.InvalidArgument):
                store.update_account("alice", **{field: bad})
    account = store.update_account("alice", quota_mailboxes=12, quota_annotation_bytes=4096)
    assert (account.quota_mailboxes, account.quota_annotation_bytes) == (12, 4096)
    assert store.get_account("alice") == account


def test_subscriptions_are_bounded_like_mailboxes(store):
    """A deleted mailbox keeps its subscription (RFC 3501 6.3.6), so create, subscribe, delete
    would add names without end: an account has at most as many as its mailbox limit."""
    store.update_account("alice", quota_mailboxes=8)
    store.set_subscribed("alice", "by-the-operator", True)   # no default given: no check
    subscribed = len(store.subscriptions("alice"))            # 6 of a new account and that one
    assert subscribed == 7
    store.create_folder("alice", "a", mailbox_quota_default=0)
    store.set_subscribed("alice", "a", True, mailbox_quota_default=0)
    store.delete_folder("alice", "a")
    store.create_folder("alice", "b", mailbox_quota_default=0)
    with pytest.raises(errors.OverQuota):
        store.set_subscribed("alice", "b", True, mailbox_quota_default=0)
    store.set_subscribed("alice", "a", True, mailbox_quota_default=0)   # already subscribed: fine
    store.set_subscribed("alice", "a", False, mailbox_quota_default=0)
    store.set_subscribed("alice", "b", True, mailbox_quota_default=0)
    assert "b" in store.subscriptions("alice") and "a" not in store.subscriptions("alice")


def _kept(store: Store, kind: bytes, account: str = "alice") -> int | None:
    """The count midb keeps of the account's folders or subscriptions (None: none kept yet)."""
    shared = store._home(account)
    with shared.read() as txn:
        raw = txn.get(kind + quotas.account_key(store.account_id(account)), db=shared.dbs.counters)
    return None if raw is None else int.from_bytes(raw, "big")


def test_the_mailbox_counts_are_kept_once_counted_and_follow_every_change(store):
    """The first checked CREATE (or SUBSCRIBE) counts the account's folders (subscriptions)
    and keeps the count; every write that adds or removes one adjusts it, checked or not."""
    assert _kept(store, quotas.FOLDER_COUNT) is None   # (a new account: counted when needed)
    store.create_folder("alice", "a", mailbox_quota_default=100)
    assert _kept(store, quotas.FOLDER_COUNT) == 7 == folder_count(store)
    store.create_folder("alice", "b/c/d")                      # its parents too, unchecked
    store.rename_folder("alice", "a", "x/y/a", mailbox_quota_default=100)   # x and x/y made
    store.rename_folder("alice", "INBOX", "Old")               # a new mailbox for INBOX's messages
    store.delete_folder("alice", "b/c/d")
    assert _kept(store, quotas.FOLDER_COUNT) == folder_count(store) == 12
    assert store.quota_usage("alice").mailboxes == 12

    assert _kept(store, quotas.SUBSCRIPTION_COUNT) is None
    store.set_subscribed("alice", "x/y/a", True, mailbox_quota_default=100)
    assert _kept(store, quotas.SUBSCRIPTION_COUNT) == 7
    store.set_subscribed("alice", "p", True)                   # no folder of that name
    store.set_subscribed("alice", "x/q", True)
    store.set_subscribed("alice", "Junk", False)
    store.set_subscribed("alice", "Junk", False)               # (no change)
    store.rename_folder("alice", "x/y/a", "p")                 # onto a subscribed name: one fewer
    assert _kept(store, quotas.SUBSCRIPTION_COUNT) == len(store.subscriptions("alice")) == 7
    assert store.verify() == []
    store.delete_account("alice")
    store.create_account("alice")
    assert _kept(store, quotas.FOLDER_COUNT) is None and _kept(store, quotas.SUBSCRIPTION_COUNT) is None


def test_a_checked_create_reads_no_more_of_the_store_in_a_bigger_account(store, monkeypatch):
    """A checked CREATE or SUBSCRIBE no longer counts the account's folders (subscriptions)
    each time: what n of them read grows with n, not with n squared."""
    passes = []
    real = quotas.count_prefix

    def counting(*args, **kwargs):
        found = real(*args, **kwargs)
        passes.append(found)
        return found

    monkeypatch.setattr(quotas, "count_prefix", counting)
    for index in range(200):
        store.create_folder("alice", f"f{index}", mailbox_quota_default=10_000)
        store.set_subscribed("alice", f"f{index}", True, mailbox_quota_default=10_000)
    assert passes == [6, 6]   # the first of each, which keeps the count


def test_verify_finds_a_wrong_kept_count_and_repair_drops_it(store):
    store.create_folder("alice", "a", mailbox_quota_default=100)
    shared = store._home("alice")
    key = quotas.FOLDER_COUNT + quotas.account_key(store.account_id("alice"))
    with shared.env.begin(write=True) as txn:
        txn.put(key, (3).to_bytes(8, "big"), db=shared.dbs.counters)
    assert any("kept count of folders is 3, there are 7" in error for error in store.verify())
    store.verify(repair=True)
    assert _kept(store, quotas.FOLDER_COUNT) is None and store.verify() == []
    assert store.quota_usage("alice").mailboxes == 7


def test_repair_drops_the_kept_counts_of_an_account_once_when_both_are_wrong(store):
    store.create_folder("alice", "a", mailbox_quota_default=100)
    store.set_subscribed("alice", "a", True, mailbox_quota_default=100)
    shared = store._home("alice")
    with shared.env.begin(write=True) as txn:
        for kind in (quotas.FOLDER_COUNT, quotas.SUBSCRIPTION_COUNT):
            txn.put(kind + quotas.account_key(store.account_id("alice")), (3).to_bytes(8, "big"),
                    db=shared.dbs.counters)
    report = maintenance.verify(store, repair=True)
    assert len(report.errors) == 2   # (each count named)
    assert [line for line in report.repaired if "kept" in line] == [
        f"dropped the kept folder and subscription counts of account {store.account_id('alice')}"]
    assert store.verify() == []
