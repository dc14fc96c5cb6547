"""OBJECTID (RFC 8474) conversations: MAILBOXID on CREATE, SELECT and STATUS; FETCH EMAILID and
THREADID; SEARCH EMAILID and THREADID (midb.objectids)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conversation import Conversation

from gximap.session import searching
from gximap.session.commands import fetch as fetch_command
from midb import objectids
from midb.keys import blob_key
from midb.lru import BoundedCache

FIRST = b"From: bob@example.org\r\nSubject: plans\r\nMessage-ID: <start@example.org>\r\n\r\nShall we?\r\n"
REPLY = (b"From: alice@example.org\r\nSubject: Re: plans\r\nMessage-ID: <reply@example.org>\r\n"
         b"In-Reply-To: <start@example.org>\r\nReferences: <start@example.org>\r\n\r\nYes.\r\n")
REPLY_TO_REPLY = (b"From: bob@example.org\r\nSubject: Re: plans\r\nMessage-ID: <again@example.org>\r\n"
                  b"In-Reply-To: <reply@example.org>\r\n"
                  b"References: <start@example.org>\r\n <reply@example.org>\r\n\r\nGood.\r\n")
OTHER = b"From: carol@example.org\r\nSubject: other\r\nMessage-ID: <other@example.org>\r\n\r\nHello.\r\n"
NO_IDS = b"From: dave@example.org\r\nSubject: bare\r\n\r\nNo ids at all.\r\n"
_ID = rb"\(([A-Za-z0-9_-]{1,255})\)"


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        for data in (FIRST, REPLY, REPLY_TO_REPLY, OTHER, NO_IDS):
            conversation.add_message(data=data)
        conversation.select()
        yield conversation


def _ids(lines: list[bytes], item: bytes) -> list[str]:
    """The ids of ``item`` in each untagged response, in order."""
    found = [re.search(item + rb" " + _ID, line) for line in lines if line.startswith(b"* ")]
    return [match.group(1).decode() for match in found if match is not None]


def _code(line: bytes) -> str:
    match = re.search(rb"\[MAILBOXID " + _ID + rb"\]", line)
    assert match is not None, line
    return match.group(1).decode()


def test_objectid_is_advertised(conv: Conversation) -> None:
    assert "OBJECTID" in conv.capabilities()


def test_create_select_and_status_give_the_same_mailboxid_and_rename_keeps_it(conv: Conversation) -> None:
    created = _code(conv.command("CREATE Projects")[-1])
    assert objectids.is_objectid(created) and created.startswith("F")
    selected = [line for line in conv.command("SELECT Projects") if b"MAILBOXID" in line]
    assert len(selected) == 1 and selected[0].startswith(b"* OK [MAILBOXID") and _code(selected[0]) == created
    (status, _ok) = conv.command("STATUS Projects (MESSAGES MAILBOXID UIDNEXT)")
    assert re.fullmatch(rb"\* STATUS Projects \(MESSAGES 0 MAILBOXID \(" + created.encode() + rb"\) UIDNEXT 1\)",
                        status), status
    conv.command("UNSELECT")
    conv.command("RENAME Projects Closed")
    (status, _ok) = conv.command("STATUS Closed (MAILBOXID)")
    assert status == b"* STATUS Closed (MAILBOXID (" + created.encode() + b"))"
    # A folder deleted and created again under its name is another mailbox.
    conv.command("DELETE Closed")
    again = _code(conv.command("CREATE Closed")[-1])
    assert again != created
    inbox = _ids(conv.command("STATUS INBOX (MAILBOXID)"), b"MAILBOXID")
    assert len(inbox) == 1 and inbox[0] not in (created, again)


def test_list_status_reports_mailboxid(conv: Conversation) -> None:
    created = _code(conv.command("CREATE Lists")[-1])
    lines = conv.command('LIST "" "Lists" RETURN (STATUS (MAILBOXID))')
    assert any(line == b"* STATUS Lists (MAILBOXID (" + created.encode() + b"))" for line in lines), lines


def test_the_inbox_rename_moves_the_mail_to_a_new_mailbox(conv: Conversation) -> None:
    (inbox_status, _ok) = conv.command("STATUS INBOX (MAILBOXID)")
    emails = _ids(conv.command("FETCH 1:* EMAILID"), b"EMAILID")
    conv.command("UNSELECT")
    conv.command("RENAME INBOX Old")
    assert conv.command("STATUS INBOX (MAILBOXID)")[0] == inbox_status
    old = _ids(conv.command("STATUS Old (MAILBOXID)"), b"MAILBOXID")
    assert old and old[0] not in inbox_status.decode()
    conv.select("Old")
    assert _ids(conv.command("FETCH 1:* EMAILID"), b"EMAILID") == emails  # section 5.1: the messages keep theirs


def test_emailid_is_the_same_after_copy_and_move_and_differs_between_messages(conv: Conversation) -> None:
    emails = _ids(conv.command("FETCH 1:* EMAILID"), b"EMAILID")
    assert len(emails) == 5 and len(set(emails)) == 5
    assert all(objectids.is_objectid(email) and email.startswith("M") for email in emails)
    conv.command("CREATE Saved")
    conv.command("COPY 1 Saved")
    conv.command("MOVE 2 Saved")
    conv.select("Saved")
    assert _ids(conv.command("FETCH 1:* EMAILID"), b"EMAILID") == emails[:2]
    # The listing path (record items only and items kept per body) and the general path agree.
    listed = conv.command("UID FETCH 1:* (UID FLAGS EMAILID THREADID)")
    general = conv.command("UID FETCH 1:* (EMAILID THREADID BODY.PEEK[HEADER]<0.1>)")
    assert _ids(listed, b"EMAILID") == _ids(general, b"EMAILID") == emails[:2]
    assert _ids(listed, b"THREADID") == _ids(general, b"THREADID")


def test_threadid_groups_a_conversation(conv: Conversation) -> None:
    lines = conv.command("FETCH 1:* THREADID")
    threads = _ids(lines, b"THREADID")
    assert len(threads) == 5 and all(thread.startswith("T") for thread in threads)
    assert threads[0] == threads[1] == threads[2]   # the first message and both replies
    assert len({threads[0], threads[3], threads[4]}) == 3
    # Asked again: from what was kept, the same.
    assert _ids(conv.command("FETCH 1:* (UID THREADID)"), b"THREADID") == threads


def test_search_by_emailid_and_threadid(conv: Conversation) -> None:
    emails = _ids(conv.command("FETCH 1:* EMAILID"), b"EMAILID")
    threads = _ids(conv.command("FETCH 1:* THREADID"), b"THREADID")
    conv.script(f"""
        C: a1 SEARCH EMAILID {emails[3]}
        S: * SEARCH 4
        S: a1 OK SEARCH completed
        C: a2 UID SEARCH THREADID {threads[0]}
        S: * SEARCH 1 2 3
        S: a2 OK SEARCH completed
        C: a3 SEARCH THREADID {threads[0]} NOT EMAILID {emails[1]}
        S: * SEARCH 1 3
        S: a3 OK SEARCH completed
        C: a4 SEARCH EMAILID "{emails[4]}"
        S: * SEARCH 5
        S: a4 OK SEARCH completed
        C: a5 SEARCH OR EMAILID M0 THREADID Tnothing
        S: * SEARCH
        S: a5 OK SEARCH completed
        C: a6 SEARCH EMAILID M$x
        S: a6 BAD {{*}}
        C: a7 SEARCH THREADID
        S: a7 BAD {{*}}
    """)


def test_a_deep_thread_has_one_threadid(conv: Conversation) -> None:
    """A reply deep in a thread carries more References than the digest keeps: the first (the
    thread's start) is kept, so the reply's THREADID is its thread's (review60)."""
    references = b"<start@example.org> " + b" ".join(b"<r%d@example.org>" % number for number in range(1200))
    conv.add_message(data=b"Subject: Re: plans\r\nMessage-ID: <deep@example.org>\r\nReferences: "
                     + references + b"\r\n\r\nDeep.\r\n")
    conv.command("NOOP")
    threads = _ids(conv.command("FETCH 1:* THREADID"), b"THREADID")
    assert threads[5] == threads[0]


def test_an_import_into_an_empty_folder_gives_it_a_new_mailboxid(conv: Conversation) -> None:
    """midb import sets an empty folder's UIDVALIDITY to the exported one: the folder is not
    the mailbox a client saw, and its MAILBOXID says so (review60)."""
    before = _code(conv.command("CREATE Restored")[-1])
    folder = conv.folder("Restored")
    conv.store.set_uidvalidity("alice", folder.id, 1234)
    (status, _ok) = conv.command("STATUS Restored (MAILBOXID UIDVALIDITY)")
    after = re.search(rb"MAILBOXID " + _ID, status)
    assert after is not None and after.group(1).decode() not in (before, "") and b"UIDVALIDITY 1234" in status


def test_fetch_of_object_ids_does_not_set_seen(conv: Conversation) -> None:
    conv.script("""
        C: a1 FETCH 1 (EMAILID THREADID)
        S: * 1 FETCH (EMAILID ({*}) THREADID ({*}))
        S: a1 OK FETCH completed
        C: a2 FETCH 1 FLAGS
        S: * 1 FETCH (FLAGS (\\Recent))
        S: a2 OK FETCH completed
    """)


# -- how much the OBJECTID reads cost ---------------------------------------------------------


def _threaded_messages(count: int) -> list[bytes]:
    """``count`` messages in threads of three (a start, a reply, a reply to the reply), and one
    without any id every fifth."""
    messages = []
    for number in range(count):
        start = number - number % 3
        head = f"From: bob@example.org\r\nSubject: n{number}\r\n"
        if number % 5 != 4:
            head += f"Message-ID: <m{number}@example.org>\r\n"
            if number != start:
                head += f"In-Reply-To: <m{number - 1}@example.org>\r\nReferences: <m{start}@example.org>\r\n"
        messages.append((head + "\r\nbody\r\n").encode())
    return messages


def _fill(conv: Conversation, count: int) -> list[str]:
    """Add ``count`` _threaded_messages to the selected INBOX; the THREADID of each of its
    messages, made from its summary as midb.objectids defines it."""
    folder = conv.folder("INBOX").id
    conv.store.append_many("alice", folder, [(data, (), None, 0) for data in _threaded_messages(count)])
    conv.command("NOOP")
    return [objectids.thread_id_of(meta.blob, conv.store.summary(meta.blob))
            for meta in conv.store.messages("alice", folder)]


def _counting(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> list[int]:
    """Replace ``target.name`` with a wrapper recording, per call, its first argument's length
    (or 1 when that has none)."""
    real = getattr(target, name)
    calls: list[int] = []

    def counted(*args: object, **kwargs: object) -> object:
        first = args[0] if args else None
        calls.append(len(first) if isinstance(first, list) else 1)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, counted)
    return calls


@pytest.mark.parametrize("items", ["(UID THREADID)", "(THREADID BODY.PEEK[HEADER])"], ids=["listing", "general"])
def test_a_cold_fetch_of_threadids_reads_the_summaries_of_a_batch_at_once(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, items: str) -> None:
    """FETCH THREADID with nothing cached reads the summaries' fronts of a batch of messages in
    one store call, on the listing path (record fields and items kept per body) and on the
    general one (here, for the whole header), not one call per message; the items are the
    same bytes."""
    expected = _fill(conv, 40)
    monkeypatch.setattr(fetch_command, "_THREAD_IDS", BoundedCache(4096))   # cold
    monkeypatch.setattr(fetch_command, "LISTING_BATCH", 16)
    monkeypatch.setattr(fetch_command, "_BATCH", 16)
    calls = _counting(monkeypatch, conv.store, "summary_fields_by_key")
    lines = conv.command(f"FETCH 1:* {items}")
    assert _ids(lines, b"THREADID") == expected and lines[-1].endswith(b"OK FETCH completed")
    assert calls == [16, 16, 13]   # 45 messages
    calls.clear()
    assert _ids(conv.command(f"FETCH 1:* {items}"), b"THREADID") == expected   # warm: nothing read
    assert calls == []


def test_a_batch_filler_caches_what_it_makes_and_leaves_a_gone_body_out() -> None:
    """_CachedItem.batch: what is cached is not made again; the rest is made by one call of the
    filler, cached, and None for a body the filler did not find (not cached either)."""
    cache: BoundedCache[tuple[str, str, None], bytes] = BoundedCache(16)
    cache.put(("b1", "X", None), b"X cached")
    asked: list[list[str]] = []

    def make(_store: object, blobs: list[str]) -> list[bytes | None]:
        asked.append(blobs)
        return [None if blob == "gone" else b"X " + blob.encode() for blob in blobs]

    item = fetch_command._CachedItem(cache, "X", None, make)
    assert item.batch(None, ["b1", "b2", "gone", "b3"]) == [b"X cached", b"X b2", None, b"X b3"]
    assert asked == [["b2", "gone", "b3"]]
    assert item.batch(None, ["b3", "b2", "b1"]) == [b"X b3", b"X b2", b"X cached"] and len(asked) == 1
    assert item.batch(None, ["gone"]) == [None] and asked[-1] == ["gone"]


@pytest.mark.parametrize("general", [False, True], ids=["listing", "general"])
def test_a_fetch_of_threadids_leaves_out_a_message_whose_body_went(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch, general: bool) -> None:
    """A message expunged by another session before its summary is read, in a batch read at
    once: it gets no response and FETCH ends NO [EXPUNGEISSUED]; the others are answered."""
    monkeypatch.setattr(fetch_command, "_THREAD_IDS", BoundedCache(4096))
    folder = conv.folder("INBOX").id
    gone = blob_key(conv.store.get_messages("alice", folder, [4])[0].blob)
    real = conv.store.summary_fields_by_key

    def read(keys: list[bytes], read: Callable[[bytes], object]) -> list[object]:
        if gone in keys and conv.store.get_messages("alice", folder, [4]):
            conv.store.remove_messages("alice", folder, [4])   # another session's expunge
        return [None if key == gone else record for key, record in zip(keys, real(keys, read), strict=True)]

    monkeypatch.setattr(conv.store, "summary_fields_by_key", read)
    items = "(THREADID BODY.PEEK[HEADER])" if general else "(UID THREADID)"
    lines = conv.send(f"{conv.next_tag()} FETCH 1:* {items}\r\n".encode())
    assert [line.split(b" FETCH")[0] for line in lines[:-1]] == [b"* 1", b"* 2", b"* 3", b"* 5"]
    assert b"NO [EXPUNGEISSUED]" in lines[-1]


def test_search_threadid_decodes_the_front_of_each_summary_only(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """SEARCH THREADID reads each message's thread from the front of its summary
    (midb.summary.sort_record), never decoding a whole summary; with another key that decodes
    the summary, from that."""
    expected = _fill(conv, 25)
    decoded = _counting(monkeypatch, searching, "decode_summary")
    wanted = expected[6]
    matching = " ".join(str(number) for number, thread in enumerate(expected, 1) if thread == wanted)
    assert matching.count(" ") >= 1
    assert conv.command(f"SEARCH THREADID {wanted}")[0] == f"* SEARCH {matching}".encode()
    assert decoded == []
    # SUBJECT decodes each summary (n1 matches n1 and n10..n19): THREADID then reads that.
    subject = " ".join(str(number) for number, thread in enumerate(expected, 1)
                       if thread == expected[15] and number >= 6)
    assert conv.command(f"SEARCH SUBJECT n1 THREADID {expected[15]}")[0] == f"* SEARCH {subject}".encode()
    assert decoded


def test_search_threadid_of_a_damaged_summary_falls_back_on_the_digest(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """A summary whose front cannot be read: the message's THREADID comes from its summary
    rebuilt from the digest, as before."""
    threads = _ids(conv.command("FETCH 1:* THREADID"), b"THREADID")
    real = conv.store.search_summaries

    def damaged(keys: list[bytes]) -> list[bytes | None]:
        return [None if encoded is None else encoded[:30] for encoded in real(keys)]

    monkeypatch.setattr(conv.store, "search_summaries", damaged)
    assert conv.command(f"UID SEARCH THREADID {threads[0]}")[0] == b"* SEARCH 1 2 3"


def test_list_status_looks_the_account_id_up_once(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """LIST-STATUS with MAILBOXID over many folders reads the account id once, not once per
    folder; without MAILBOXID not at all. Each MAILBOXID is the one STATUS gives."""
    conv.command("UNSELECT")
    names = [f"Box{number}" for number in range(8)]
    for name in names:
        conv.command(f"CREATE {name}")
    listed = [line.rsplit(b" ", 1)[1].decode() for line in conv.command('LIST "" "*"')[:-1]]
    assert set(names) < set(listed)
    single = {name: conv.command(f"STATUS {name} (MESSAGES MAILBOXID)")[0] for name in listed}
    calls = _counting(monkeypatch, conv.store, "account_id")
    lines = conv.command('LIST "" "*" RETURN (STATUS (MESSAGES MAILBOXID))')
    assert calls == [1]
    assert [line for line in lines if line.startswith(b"* STATUS")] == [single[name] for name in listed]
    calls.clear()
    conv.command('LIST "" "*" RETURN (STATUS (MESSAGES))')
    conv.command('LIST "" "Nothing*" RETURN (STATUS (MAILBOXID))')
    assert calls == []
    conv.command("STATUS Box3 (MAILBOXID UIDNEXT)")
    assert calls == [1]
