"""LMTP delivery of one recipient's copies to several accounts: one store commit, failures apart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import DATA_DIR

from gximap.auth.maps import NameMap
from gximap.lmtp.delivery import DeliveryAgent, DeliverySettings
from gximap.lmtp.protocol import Envelope, Recipient
from midb.store import Store

BODY = b"From: carol@example.org\r\nSubject: team news\r\n\r\nhello team\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "midb", fsync=False, data_path=[str(DATA_DIR)]) as opened:
        for name in ("alice", "bob", "carol"):
            opened.create_account(name)
        yield opened


def deliver(store: Store, accounts: tuple[str, ...], **settings: Any) -> str:
    agent = DeliveryAgent(store, NameMap.from_directives("email_localpart", "auto"), DeliverySettings(**settings))
    envelope = Envelope(sender="carol@example.org")
    recipient = Recipient("team@test.example", None, accounts)
    envelope.recipients.append(recipient)
    reply = agent.deliver(agent.prepare(envelope, BODY), recipient, delivery_id="T.1")
    return f"{reply.code} {reply.text}"


def inbox_bodies(store: Store, account: str, folder: str = "INBOX") -> list[bytes]:
    info = store.get_folder(account, folder)
    assert info is not None
    return [store.read_body(meta.blob) for meta in store.messages(account, info.id)]


def test_copies_for_several_accounts_share_one_commit(store: Store, commits: list[int]) -> None:
    reply = deliver(store, ("alice", "bob", "carol"))
    assert reply.startswith("250") and "alice/INBOX, bob/INBOX, carol/INBOX" in reply
    assert commits == [3]
    copy = b"Return-Path: <carol@example.org>\r\nDelivered-To: team@test.example\r\n" + BODY
    assert inbox_bodies(store, "alice") == inbox_bodies(store, "bob") == [copy]
    assert store.verify() == []


def test_one_full_account_does_not_stop_the_others(store: Store) -> None:
    store.update_account("bob", quota_messages=1)
    store.append("bob", store.get_folder("bob", "INBOX").id, b"x\r\n")  # type: ignore[union-attr]
    reply = deliver(store, ("alice", "bob", "carol"))
    assert reply.startswith("250") and "bob" not in reply
    assert len(inbox_bodies(store, "alice")) == 1 and len(inbox_bodies(store, "bob")) == 1
    store.update_account("alice", quota_messages=1)
    store.update_account("carol", quota_messages=1)
    assert deliver(store, ("alice", "bob", "carol")).startswith("552")   # all full: permanent
    assert store.verify() == []


def test_spam_goes_to_junk_for_every_account(store: Store) -> None:
    store.delete_folder("bob", "Junk")
    reply = deliver(store, ("alice", "bob"), spam_header=("subject", "team news"))
    assert reply.startswith("250") and "alice/Junk, bob/Junk" in reply
    assert len(inbox_bodies(store, "bob", "Junk")) == 1
