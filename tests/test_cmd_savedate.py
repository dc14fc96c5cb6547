"""SAVEDATE (RFC 8514) conversations: FETCH SAVEDATE and SEARCH SAVEDBEFORE/SAVEDON/SAVEDSINCE/
SAVEDATESUPPORTED, from midb's save dates (midb.savedates)."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation

from gximap.imap import encode
from midb import savedates
from midb.keys import change_key

JAN_2001 = calendar.timegm((2001, 1, 10, 12, 0, 0))
MAR_2024 = calendar.timegm((2024, 3, 5, 12, 0, 0))
DAY = 86400


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = MAR_2024
        monkeypatch.setattr(savedates, "now", lambda: self.now)


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture()
def conv(tmp_path: Path, clock: Clock) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def _forget_save_date(conv: Conversation, uid: int, mailbox: str = "INBOX") -> None:
    """As for a message saved before the store kept save dates (an upgraded store): its modseqs
    entry without a value."""
    shared = conv.store._shared
    account_id, folder = conv.store.account_id("alice"), conv.folder(mailbox).id
    (meta,) = conv.store.get_messages("alice", folder, [uid])
    with shared.env.begin(write=True) as txn:
        txn.put(change_key(account_id, folder, meta.modseq, uid), b"", db=shared.dbs.modseqs)


def _shown(when: int) -> str:
    return encode.internaldate(when, encode.local_offset(when)).decode()


def test_savedate_is_advertised(conv: Conversation) -> None:
    assert "SAVEDATE" in conv.capabilities()


def test_fetch_savedate_is_when_the_message_came_into_the_folder(conv: Conversation, clock: Clock) -> None:
    first = conv.add_message(internaldate=JAN_2001)
    clock.now += 3 * DAY
    conv.add_message(internaldate=JAN_2001)
    old = conv.add_message()
    _forget_save_date(conv, old)
    conv.select()
    conv.script(f"""
        C: a1 FETCH 1:3 (SAVEDATE INTERNALDATE)
        S: * 1 FETCH (SAVEDATE {_shown(MAR_2024)} INTERNALDATE "10-Jan-2001 12:00:00 +0000")
        S: * 2 FETCH (SAVEDATE {_shown(MAR_2024 + 3 * DAY)} INTERNALDATE "10-Jan-2001 12:00:00 +0000")
        S: * 3 FETCH (SAVEDATE NIL INTERNALDATE {{*}})
        S: a1 OK FETCH completed
        C: a2 UID FETCH {first} SAVEDATE
        S: * 1 FETCH (UID {first} SAVEDATE {_shown(MAR_2024)})
        S: a2 OK FETCH completed
    """)


def test_a_copy_gets_its_own_save_date_and_the_original_keeps_its(conv: Conversation, clock: Clock) -> None:
    conv.add_message()
    conv.select()
    clock.now += 10 * DAY
    conv.command("COPY 1 Trash")
    clock.now += 10 * DAY
    conv.command("MOVE 1 Archive")
    conv.script("""
        C: a1 STATUS Trash (MESSAGES)
        S: * STATUS Trash (MESSAGES 1)
        S: a1 OK STATUS completed
    """)
    conv.select("Trash")
    assert conv.command("FETCH 1 SAVEDATE")[0] == f"* 1 FETCH (SAVEDATE {_shown(MAR_2024 + 10 * DAY)})".encode()
    conv.select("Archive")
    assert conv.command("FETCH 1 SAVEDATE")[0] == f"* 1 FETCH (SAVEDATE {_shown(MAR_2024 + 20 * DAY)})".encode()


def test_fetch_savedate_of_many_messages_in_batches(conv: Conversation, clock: Clock) -> None:
    folder = conv.folder("INBOX")
    for _day in range(3):  # 600 messages: more than one batch of records (fetch._BATCH)
        conv.store.append_many("alice", folder.id, [(b"Subject: x\r\n\r\nx\r\n", (), JAN_2001, 0)] * 200)
        clock.now += DAY
    conv.select()
    lines = conv.command("FETCH 1:* (FLAGS SAVEDATE)")
    dates = [re.search(rb"SAVEDATE (\"[^\"]*\")", line) for line in lines[:-1]]
    assert len(dates) == 600
    assert [match.group(1).decode() if match else None for match in dates] == [
        _shown(MAR_2024 + (number // 200) * DAY) for number in range(600)]


def test_search_by_save_date_whatever_the_internal_date(conv: Conversation, clock: Clock) -> None:
    conv.add_message(internaldate=JAN_2001)          # 1: saved 5-Mar-2024
    clock.now += DAY
    conv.add_message(internaldate=JAN_2001)          # 2: saved 6-Mar-2024
    clock.now += DAY
    conv.add_message(internaldate=MAR_2024 + 9 * DAY)  # 3: saved 7-Mar-2024
    unknown = conv.add_message(internaldate=MAR_2024 + 20 * DAY)  # 4: no save date: its internal date
    _forget_save_date(conv, unknown)
    conv.select()
    on_day = time_zone_shifted_day(MAR_2024 + DAY)
    conv.script(f"""
        C: a1 SEARCH SAVEDON {on_day}
        S: * SEARCH 2
        S: a1 OK SEARCH completed
        C: a2 SEARCH SAVEDSINCE {on_day}
        S: * SEARCH 2 3 4
        S: a2 OK SEARCH completed
        C: a3 SEARCH SAVEDBEFORE {on_day}
        S: * SEARCH 1
        S: a3 OK SEARCH completed
        C: a4 SEARCH BEFORE 1-Jan-2020
        S: * SEARCH 1 2
        S: a4 OK SEARCH completed
        C: a5 SEARCH SAVEDATESUPPORTED
        S: * SEARCH 1 2 3 4
        S: a5 OK SEARCH completed
        C: a6 SEARCH SAVEDSINCE 20-Mar-2024
        S: * SEARCH 4
        S: a6 OK SEARCH completed
        C: a7 UID SEARCH RETURN (COUNT) NOT SAVEDBEFORE 1-Jan-2000
        S: * ESEARCH (TAG "a7") UID COUNT 4
        S: a7 OK SEARCH completed
    """)


def time_zone_shifted_day(when: int) -> str:
    """The day of ``when`` as FETCH SAVEDATE shows it (the server's zone), in SEARCH's form."""
    return _shown(when)[1:].split(" ")[0]
