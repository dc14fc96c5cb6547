"""Unit tests of the SEARCH engine (gximap.session.searching) over a real midb store."""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gximap.imap import parser
from gximap.imap.commands import SearchKey, SequenceSet
from gximap.imap.framing import Framer
from gximap.session import searching
from gximap.session.base import PAUSE, CommandFailed, TimeSlice
from gximap.session.selected import SelectedMailbox
from midb import searchtext
from midb.searchtext import fields_by_name
from midb.store import Store

DATA = Path(__file__).resolve().parent / "data" / "mime"
REPO_DATA = Path(__file__).resolve().parent.parent / "data"


class CountingStore:
    """The real store, counting the calls that read message records, digests and bodies."""

    COUNTED = ("messages", "get_messages", "digest", "read_body")

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: dict[str, int] = dict.fromkeys(self.COUNTED, 0)
        self.summarized = 0  # message summaries read (Store.summaries reads a batch per call)
        self.header_batches = 0  # calls of search_headers

    def summaries(self, blobs: list[str]) -> list[Any]:
        self.summarized += len(blobs)
        return self._store.summaries(blobs)

    def search_summaries(self, keys: list[bytes]) -> list[Any]:
        self.summarized += len(keys)
        return self._store.search_summaries(keys)

    def read_bodies(self, blobs: list[str]) -> list[Any]:
        self.calls["read_body"] += len(blobs)  # several bodies read in one call: counted one by one
        return self._store.read_bodies(blobs)

    def search_bodies(self, keys: list[bytes], sizes: list[int]) -> list[Any]:
        self.calls["read_body"] += len(keys)
        return self._store.search_bodies(keys, sizes)

    def search_headers(self, keys: list[bytes], sizes: list[int]) -> list[Any]:
        self.calls["read_body"] += len(keys)  # the headers of a batch in one call: counted one by one
        self.header_batches += 1
        return self._store.search_headers(keys, sizes)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name in self.COUNTED:
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] += 1
                return attribute(*args, **kwargs)

            return counted
        return attribute


class StubSession:
    """What the engine uses of an ImapSession."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.selected: SelectedMailbox | None = None
        self.saved_search: list[int] | None = None
        self.rev2 = False
        self.qresync_enabled = False
        self.uidonly = False


def criteria(text: str) -> SearchKey:
    framer = Framer(1 << 16, 1 << 20, literal_minus=False)
    framer.feed(b"t SEARCH " + text.encode("utf-8") + b"\r\n")
    frame = framer.next_event()
    command = parser.parse_command(frame, utf8=True)  # type: ignore[arg-type]
    return command.criteria  # type: ignore[attr-defined]


def utc(year: int, month: int, day: int, hour: int = 12) -> int:
    return calendar.timegm((year, month, day, hour, 0, 0))


MESSAGES: list[tuple[bytes, tuple[str, ...], int, int]] = [
    # 1: plain, seen, small
    (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Lunch plans\r\n"
     b"Date: Mon, 3 Jan 2022 09:00:00 +0000\r\nMessage-ID: <one@example.org>\r\n\r\n"
     b"Shall we meet at noon?\r\n", ("\\Seen",), utc(2022, 1, 3), 0),
    # 2: flagged, keyword in odd case, quoted-printable body
    (b"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nCc: carol@example.org\r\n"
     b"Subject: Re: Lunch plans\r\nDate: Sat, 1 Jan 2000 23:30:00 -0500\r\n"
     b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
     b"Caf=C3=A9 at twelve works.\r\n", ("\\Flagged", "$Important"), utc(2022, 1, 4), 0),
    # 3: deleted, base64 body, internal date late in the evening west of UTC
    (b"From: Carol <carol@example.org>\r\nTo: team@example.org\r\nBcc: boss@example.org\r\n"
     b"Subject: Quarterly numbers\r\nDate: Tue, 4 Jan 2022 10:00:00 +0100\r\n"
     b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
     b"U2VjcmV0IGZpZ3VyZXMgaW5zaWRl\r\n", ("\\Deleted", "\\Seen"), utc(2022, 1, 5, 3), -300),
    # 4: no Date header, big body
    (b"From: Dave <dave@example.org>\r\nSubject: Logs\r\nX-Ticket: ABC-123\r\n\r\n"
     + b"log line\r\n" * 500, (), utc(2022, 2, 1), 0),
]


@pytest.fixture()
def mailbox(tmp_path: Path) -> Iterator[tuple[StubSession, CountingStore, list[int]]]:
    store = Store(tmp_path / "midb", fsync=False, data_path=[str(REPO_DATA)])
    store.create_account("alice")
    folder = store.get_folder("alice", "INBOX")
    assert folder is not None
    uids = []
    for data, flags, date, tz in MESSAGES:
        uids.append(store.append("alice", folder.id, data, flags=flags, internaldate=date, tzoffset=tz)[1])
    counting = CountingStore(store)
    session = StubSession(counting)
    view = SelectedMailbox(counting, "alice", folder, readonly=False, session=session)
    view.open()
    session.selected = view
    yield session, counting, uids
    store.close()


def run(session: StubSession, text: str, now: float | None = None) -> list[int]:
    return searching.search(session, criteria(text), now=now)


@pytest.mark.parametrize(("text", "expected"), [
    ("ALL", [1, 2, 3, 4]),
    ("SEEN", [1, 3]),
    ("UNSEEN", [2, 4]),
    ("DELETED", [3]),
    ("UNDELETED", [1, 2, 4]),
    ("FLAGGED", [2]),
    ("UNFLAGGED", [1, 3, 4]),
    ("ANSWERED", []),
    ("KEYWORD $important", [2]),
    ("UNKEYWORD $IMPORTANT", [1, 3, 4]),
    ("LARGER 1000", [4]),
    ("SMALLER 200", [1]),
    ("2:3", [2, 3]),
    ("*", [4]),
    ("2,4:*", [2, 4]),
    ("UID 1,3", [1, 3]),
    ("UID 10:*", [4]),  # n:* beyond the highest UID names the highest (RFC 3501 6.4.8)
    ("UID 10:20", []),
    ("NOT SEEN", [2, 4]),
    ("OR SEEN FLAGGED", [1, 2, 3]),
    ("OR OR DELETED FLAGGED 1", [1, 2, 3]),
    ("(SEEN UNDELETED)", [1]),
    ("SEEN NOT (DELETED OR 1 2)", [1, 3]),
    ("SEEN NOT (DELETED OR 3 4)", [1]),
    ("NOT NOT SEEN", [1, 3]),
    ("ON 3-Jan-2022", [1]),
    ("BEFORE 4-Jan-2022", [1]),
    ("SINCE 4-Jan-2022", [2, 3, 4]),
    # 3's internal date is 5-Jan 03:00 UTC, but 4-Jan 22:00 in its own zone (-0500)
    ("ON 4-Jan-2022", [2, 3]),
    ("MODSEQ 1", [1, 2, 3, 4]),
])
def test_record_keys(mailbox: Any, text: str, expected: list[int]) -> None:
    session, counting, uids = mailbox
    assert run(session, text) == [uids[n - 1] for n in expected]
    assert counting.calls["digest"] == 0
    assert counting.calls["read_body"] == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("FROM alice", [1]),
    ("FROM ALICE@EXAMPLE", [1]),
    ("TO alice", [2]),
    ("CC carol", [2]),
    ("BCC boss", [3]),
    ("SUBJECT lunch", [1, 2]),
    ("SUBJECT \"re: lunch\"", [2]),
    ("HEADER Message-ID one@", [1]),
    ("HEADER x-ticket abc-123", [4]),
    ("HEADER X-Ticket \"\"", [4]),  # empty string: every message having the field
    ("HEADER Cc \"\"", [2]),
    ("HEADER X-Missing \"\"", []),
    ("BODY noon", [1]),
    ("BODY \"CAFÉ\"", [2]),  # quoted-printable UTF-8 decoded
    ("BODY \"secret figures\"", [3]),  # base64 decoded
    ("BODY lunch", []),  # BODY does not look at the header
    ("TEXT lunch", [1, 2]),
    ("TEXT \"x-ticket: abc\"", [4]),
    ("TEXT noon", [1]),
    ("NOT BODY noon", [2, 3, 4]),
    ("OR BODY noon SUBJECT logs", [1, 4]),
])
def test_message_keys(mailbox: Any, text: str, expected: list[int]) -> None:
    session, _counting, uids = mailbox
    assert run(session, text) == [uids[n - 1] for n in expected]


@pytest.mark.parametrize(("text", "expected"), [
    ("SENTON 3-Jan-2022", [1]),
    # Date: Sat, 1 Jan 2000 23:30 -0500 is 2 Jan in UTC; the date as written counts
    ("SENTON 1-Jan-2000", [2]),
    ("SENTBEFORE 2-Jan-2000", [2]),
    ("SENTSINCE 4-Jan-2022", [3, 4]),  # 4 has no Date: its internal date (1 Feb 2022) stands in
    ("SENTBEFORE 1-Jan-2000", []),
])
def test_sent_dates(mailbox: Any, text: str, expected: list[int]) -> None:
    session, _counting, uids = mailbox
    assert run(session, text) == [uids[n - 1] for n in expected]


def test_older_younger(mailbox: Any) -> None:
    session, _counting, uids = mailbox
    now = utc(2022, 1, 5, 12)
    # 2 is dated exactly a day back: RFC 5032 section 2 has both keys match the target time.
    assert run(session, "YOUNGER 86400", now=now) == [uids[1], uids[2], uids[3]]  # 4 is dated later
    assert run(session, "OLDER 86400", now=now) == [uids[0], uids[1]]
    assert run(session, "OLDER 1 YOUNGER 172800", now=now) == [uids[0], uids[1], uids[2]]  # 1: two days back
    assert run(session, "OLDER 1 YOUNGER 172799", now=now) == [uids[1], uids[2]]


def test_recent_new_old(mailbox: Any) -> None:
    session, _counting, uids = mailbox
    view = session.selected
    view.recent = {uids[1], uids[3]}
    assert run(session, "RECENT") == [uids[1], uids[3]]
    assert run(session, "NEW") == [uids[1], uids[3]]  # recent and unseen
    view.recent = {uids[0], uids[1]}
    assert run(session, "NEW") == [uids[1]]
    assert run(session, "OLD") == [uids[2], uids[3]]
    assert run(session, "KEYWORD \\Recent") == [uids[0], uids[1]]


def test_saved_result(mailbox: Any) -> None:
    session, _counting, uids = mailbox
    session.saved_search = [uids[1], uids[3], 999]
    assert run(session, "$") == [uids[1], uids[3]]
    assert run(session, "UID $ SEEN") == []
    assert run(session, "OR $ 1") == [uids[0], uids[1], uids[3]]
    session.saved_search = None
    assert run(session, "$") == []


def test_save_dates_are_read_once_per_search(mailbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message of the view has its save date read in one store call, whatever the keys
    that ask; a message saved today matches SAVEDSINCE today, and not SAVEDBEFORE it."""
    session, _counting, uids = mailbox
    calls: list[int] = []
    original = session.store.save_dates

    def counted(account: str, folder_id: int, wanted: Any) -> dict[int, int]:
        calls.append(len(list(wanted)))
        return original(account, folder_id, uids)

    monkeypatch.setattr(session.store, "save_dates", counted)
    today = time.strftime("%d-%b-%Y", time.localtime())  # the messages were saved today, or yesterday
    assert run(session, f"SAVEDBEFORE 1-Jan-2100 NOT SAVEDSINCE 1-Jan-2100 OR SAVEDON {today} SAVEDSINCE 1-Jan-2000"
                        ) == uids
    assert calls == [len(uids)]


def test_cheap_keys_filter_before_bodies_are_read(mailbox: Any) -> None:
    session, counting, uids = mailbox
    assert run(session, "BODY noon SEEN") == [uids[0]]
    # only the two \Seen messages were read, once each
    assert counting.calls["read_body"] == 2
    counting.calls.update(dict.fromkeys(counting.calls, 0))
    counting.summarized = 0
    assert run(session, "SUBJECT lunch UNSEEN") == [uids[1]]
    # only the two unseen messages' header values were read (their summaries: no digest, no body)
    assert counting.summarized == 2
    assert counting.calls["digest"] == 0 and counting.calls["read_body"] == 0
    counting.calls.update(dict.fromkeys(counting.calls, 0))
    # several text keys on one message: the body is read once
    assert run(session, "1 BODY shall BODY noon TEXT lunch") == [uids[0]]
    assert counting.calls["read_body"] == 1
    counting.calls.update(dict.fromkeys(counting.calls, 0))
    # a header key reads the headers of the messages the summary keys let through, in one call
    assert run(session, "HEADER X-Ticket abc OR FROM dave FROM carol") == [uids[3]]
    assert counting.calls["read_body"] == 2 and counting.header_batches == 1


def test_unannounced_and_expunged_messages_do_not_match(mailbox: Any) -> None:
    session, counting, uids = mailbox
    store = counting._store
    view = session.selected
    folder_id = view.folder_id
    store.append("alice", folder_id, b"Subject: late\r\n\r\nnew\r\n")  # not yet announced
    store.expunge("alice", folder_id, [uids[2]])  # expunged by another session, not yet announced
    assert run(session, "ALL") == [uids[0], uids[1], uids[3]]
    assert run(session, "DELETED") == []
    assert run(session, "4") == [uids[3]]  # message numbers are still those the client knows


def test_narrow_uid_search_reads_only_those_records(tmp_path: Path) -> None:
    store = Store(tmp_path / "midb", fsync=False, data_path=[str(REPO_DATA)])
    try:
        store.create_account("alice")
        folder = store.get_folder("alice", "INBOX")
        assert folder is not None
        items = [(b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i), ("\\Seen",) if i % 2 else (), None, 0)
                 for i in range(400)]
        store.append_many("alice", folder.id, items)
        counting = CountingStore(store)
        session = StubSession(counting)
        session.selected = SelectedMailbox(counting, "alice", folder, readonly=False, session=session)
        session.selected.open()
        found = searching.search(session, criteria("UID 10:19 SEEN"))
        assert found == [10, 12, 14, 16, 18]
        assert counting.calls["messages"] == 0 and counting.calls["get_messages"] == 1
        found = searching.search(session, criteria("UNSEEN"))
        assert len(found) == 200
        # answered from midb's flag index: no further record read at all
        assert counting.calls["messages"] == 0 and counting.calls["get_messages"] == 1
        assert counting.calls["digest"] == 0 and counting.calls["read_body"] == 0
    finally:
        store.close()


def test_resolve_uids(mailbox: Any) -> None:
    session, _counting, uids = mailbox
    assert searching.resolve_uids(session, SequenceSet(((2, None),)), False) == uids[1:]
    assert searching.resolve_uids(session, SequenceSet(((3, 100),)), True) == uids[2:]
    with pytest.raises(CommandFailed) as failed:
        searching.resolve_uids(session, SequenceSet(((5, 5),)), False)
    assert failed.value.done.status == "BAD"
    session.saved_search = [uids[3], uids[0]]
    assert sorted(searching.resolve_uids(session, SequenceSet((), saved=True), False)) == [uids[0], uids[3]]


HEADER_MESSAGES = [
    b"X-A: apple\r\nX-B: berry\r\nSubject: one\r\n\r\nbody\r\n",
    b"X-B: first\r\nX-B: second berry\r\nX-C: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\n",
    b"X-A: folded\r\n apple pie\r\nX-C: plain\r\n\r\nbody\r\n",
    b"Subject: none of them\r\n\r\nX-A: apple (in the body, not a field)\r\n",
]


@pytest.mark.parametrize("text", [
    "OR HEADER X-A apple HEADER X-B berry",
    "OR OR HEADER X-Z apple HEADER X-C \"café\" HEADER X-B second",
    "HEADER X-B first HEADER X-B berry",
    "OR HEADER X-A \"\" HEADER X-C \"\"",
    "NOT OR HEADER X-A pie HEADER X-B berry",
])
def test_many_header_keys_agree_with_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   text: str) -> None:
    """A message tested for a second field name has its header split once (_Message.header_values):
    the answers must be those of the pattern each single key uses on its own."""
    store = Store(tmp_path / "midb", fsync=False, data_path=[str(REPO_DATA)])
    try:
        store.create_account("alice")
        folder = store.get_folder("alice", "INBOX")
        assert folder is not None
        for data in HEADER_MESSAGES:
            store.append("alice", folder.id, data)
        session = StubSession(store)
        session.selected = SelectedMailbox(store, "alice", folder, readonly=False, session=session)
        session.selected.open()
        single = {key: set(searching.search(session, criteria(key))) for key in (
            "HEADER X-A apple", "HEADER X-B berry", "HEADER X-Z apple", "HEADER X-C \"café\"", "HEADER X-B second",
            "HEADER X-B first", "HEADER X-A \"\"", "HEADER X-C \"\"", "HEADER X-A pie")}
        expected = {
            "OR HEADER X-A apple HEADER X-B berry": single["HEADER X-A apple"] | single["HEADER X-B berry"],
            "OR OR HEADER X-Z apple HEADER X-C \"café\" HEADER X-B second":
                single["HEADER X-Z apple"] | single["HEADER X-C \"café\""] | single["HEADER X-B second"],
            "HEADER X-B first HEADER X-B berry": single["HEADER X-B first"] & single["HEADER X-B berry"],
            "OR HEADER X-A \"\" HEADER X-C \"\"": single["HEADER X-A \"\""] | single["HEADER X-C \"\""],
            "NOT OR HEADER X-A pie HEADER X-B berry":
                {1, 2, 3, 4} - single["HEADER X-A pie"] - single["HEADER X-B berry"],
        }[text]
        assert single["HEADER X-A apple"] == {1, 3} and single["HEADER X-B second"] == {2}
        assert single["HEADER X-C \"café\""] == {2}
        splits = []

        def counted_split(data: bytes, end: int) -> dict[bytes, list[bytes]]:
            splits.append(end)
            return fields_by_name(data, end)

        monkeypatch.setattr(searchtext, "fields_by_name", counted_split)
        monkeypatch.setattr(searching, "_SPLIT_AFTER_LOOKUPS", 1)  # split at the second name
        assert searching.search(session, criteria(text)) == sorted(expected)
        assert splits  # the headers were split, not scanned once per key
    finally:
        store.close()


def test_a_sliced_search_pauses_and_gives_the_same_answer(mailbox: Any) -> None:
    session, _counting, _uids = mailbox
    key = criteria("OR HEADER X-Ticket abc BODY noon")
    expected = searching.search(session, key)
    steps = searching.search_sliced(session, key, TimeSlice(0.0))  # every message's slice is over
    pauses = 0
    while True:
        try:
            item = next(steps)
        except StopIteration as stop:
            found = stop.value
            break
        assert item is PAUSE
        pauses += 1
    assert found == expected == [1, 4]
    assert pauses >= len(MESSAGES)


def test_search_slots_bound_the_process_and_each_account() -> None:
    slots = searching._SearchSlots(total=3, per_account=2)
    first, second = slots.claim("alice"), slots.claim("alice")
    third = slots.claim("alice")  # alice holds her two
    bob = slots.claim("bob")
    carol = slots.claim("carol")  # the process holds its three
    assert first.done() and second.done() and bob.done()
    assert not third.done() and not carol.done()
    assert carol.cancel()  # carol's client left while waiting: never granted
    slots.release("bob")
    assert not third.done()  # alice is still at her bound; carol's claim is gone
    slots.release("alice")
    assert third.done()  # alice: two again, the process: two of three
    dave, erin = slots.claim("dave"), slots.claim("erin")
    assert dave.done() and not erin.done()
    slots.release("alice")
    assert erin.done()
    for account in ("alice", "dave", "erin"):
        slots.release(account)
    assert all(slots.claim(account).done() for account in ("x", "y", "z"))
