"""FETCH of UID / FLAGS / MODSEQ rendered column-wise (gximap.session.commands.fetch) gives byte for
byte what the general per-message path gives: random folders, flag sets, holes, \\Recent, pending
expunges, CHANGEDSINCE and SEARCHRES, in IMAP4rev1 and IMAP4rev2. So does the listing path (record
fields and items kept per body: RFC822.SIZE, INTERNALDATE, ENVELOPE, BODYSTRUCTURE, header fields)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conversation import Conversation

from gximap.session.commands import fetch as fetch_command
from midb.errors import NoSuchBody
from midb.lru import BoundedCache
from midb.messages import (
    flag_columns_from_pairs,
    flag_columns_of_records,
    flags_of,
    record_blobs,
    record_internaldates,
    record_sizes,
)
from midb.mime import Digest

MSG = b"From: bob@example.org\r\nSubject: test\r\n\r\nhello\r\n"
FLAG_SETS = [(), ("\\Seen",), ("\\Seen", "$Work"), ("\\Flagged", "\\Answered"), ("later",), ("\\Draft",),
             ("\\Deleted", "\\Seen", "Zeta", "alpha")]
ITEM_LISTS = ["FLAGS", "(FLAGS UID)", "(UID FLAGS)", "UID", "(MODSEQ FLAGS)", "(FLAGS MODSEQ UID)", "MODSEQ"]


def _sets(rng: random.Random, top: int) -> list[str]:
    sets = ["1:*", "*", f"{max(1, top - 3)}:*", f"{top + 5}:*"]
    for _ in range(4):
        low = rng.randint(1, top + 2)
        high = rng.randint(low, top + 4)
        sets.append(f"{low}:{high},{rng.randint(1, top + 1)}")
    return sets


def _both(fast_session: Conversation, slow_session: Conversation, monkeypatch: pytest.MonkeyPatch,
          command: str) -> tuple[list[bytes], list[bytes]]:
    """(column path, general path) responses to the same command, sent to two twin sessions
    (tagged line without the tag). Twins, because a UID FETCH announces pending expunges after its
    answer: a second run in the same session would see another view."""
    tag = fast_session.next_tag()
    fast = fast_session.send(f"{tag} {command}\r\n".encode())
    with monkeypatch.context() as patch:
        patch.setattr(fetch_command, "RECORD_ITEMS", frozenset())  # every FETCH takes the general path
        tag2 = slow_session.next_tag()
        slow = slow_session.send(f"{tag2} {command}\r\n".encode())
    assert fast[-1].startswith(tag.encode()) and slow[-1].startswith(tag2.encode())
    return fast[:-1] + [fast[-1][len(tag):]], slow[:-1] + [slow[-1][len(tag2):]]


@pytest.mark.parametrize("seed", range(6))
def test_column_path_equals_general_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = random.Random(seed)
    rev2 = seed % 2 == 1
    with Conversation(tmp_path) as conv:
        conv.login()
        if rev2:
            conv.command("ENABLE IMAP4rev2")
        conv.command("ENABLE QRESYNC")  # CONDSTORE-aware from the start: MODSEQ announces nothing
        folder = conv.folder("INBOX").id
        count = rng.randint(20, 60)
        conv.store.append_many("alice", folder, [(MSG, rng.choice(FLAG_SETS), None, 0) for _ in range(count)])
        # Holes: expunged messages break the view into runs.
        doomed = sorted(rng.sample(range(1, count + 1), count // 5))
        conv.store.store_flags("alice", folder, doomed, "add", ["\\Deleted"])
        conv.store.expunge("alice", folder, doomed)
        conv.select()
        info = conv.store.folder_by_id("alice", folder)
        assert info is not None
        base_modseq = info.highestmodseq
        # \Recent messages for this session, then flag changes and an expunge by another one that
        # this session's FETCH may not announce.
        for _ in range(3):
            conv.add_message(data=MSG, flags=rng.choice(FLAG_SETS))
        conv.command("NOOP")
        twin = conv.twin()
        uids = conv.store.uids("alice", folder)
        conv.store.store_flags("alice", folder, rng.sample(uids, 8), "add", ["$Changed"])
        for session in (conv, twin):
            session.command("SEARCH RETURN (SAVE) FLAGGED")
        ghosts = iter(rng.sample(uids, len(ITEM_LISTS)))
        top = uids[-1]
        for items in ITEM_LISTS:
            # an expunge by another session, pending in both views until the first UID FETCH
            ghost = next(ghosts)
            conv.store.store_flags("alice", folder, [ghost], "add", ["\\Deleted"])
            conv.store.expunge("alice", folder, [ghost])
            for prefix in ("FETCH", "UID FETCH"):
                limit = len(uids) if prefix == "FETCH" else top
                for seqset in [*_sets(rng, limit), "$"]:
                    if prefix == "FETCH" and seqset.split(":")[0].isdigit() and int(seqset.split(":")[0]) > limit:
                        continue  # message numbers beyond EXISTS are BAD, on both paths alike
                    for modifier in ("", f" (CHANGEDSINCE {base_modseq})", f" (CHANGEDSINCE {base_modseq + 9})"):
                        command = f"{prefix} {seqset} {items}{modifier}"
                        fast, slow = _both(conv, twin, monkeypatch, command)
                        assert fast == slow, command


@pytest.mark.parametrize("batch", [4, 7, 4096])
def test_column_path_marks_recent_in_every_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 batch: int) -> None:
    """\\Recent on the column path, when many messages are \\Recent (the first SELECT after an
    import claims them all) and batches are all, part or none \\Recent: the same bytes as the
    general path."""
    monkeypatch.setattr(fetch_command, "COLUMN_BATCH", batch)
    with Conversation(tmp_path) as conv:
        conv.login()
        folder = conv.folder("INBOX").id
        conv.store.append_many("alice", folder, [(MSG, FLAG_SETS[n % 3], None, 0) for n in range(30)])
        observer = conv.second_session()
        observer.login()
        observer.select()   # claims \\Recent for 1..30: the session under test gets none of them
        observer.close()
        conv.store.append_many("alice", folder, [(MSG, FLAG_SETS[n % 4], None, 0) for n in range(25)])
        conv.store.store_flags("alice", folder, [33, 40], "add", ["\\Deleted"])
        conv.store.expunge("alice", folder, [33, 40])
        conv.select()       # 31..55 but 33 and 40 are \\Recent here
        for command in ("UID FETCH 1:* (UID FLAGS)", "FETCH 1:* FLAGS", "UID FETCH 28:45 FLAGS", "FETCH 31:* (FLAGS UID)"):
            fast, slow = _both(conv, conv, monkeypatch, command)  # nothing pending: one session
            assert fast == slow, command
        lines = conv.command("UID FETCH 1:* (UID FLAGS)")
        recent = [int(line.split(b"UID ")[1].split(b" ")[0]) for line in lines if b"\\Recent" in line]
        assert recent == [uid for uid in range(31, 56) if uid not in (33, 40)]


def test_changedsince_walks_only_the_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CHANGEDSINCE never lists the requested UIDs: the store's modseq index is the only source."""
    with Conversation(tmp_path) as conv:
        conv.login()
        folder = conv.folder("INBOX").id
        conv.store.append_many("alice", folder, [(MSG, (), None, 0)] * 500)
        conv.command("SELECT INBOX (CONDSTORE)")
        info = conv.store.folder_by_id("alice", folder)
        assert info is not None
        since = info.highestmodseq
        conv.store.store_flags("alice", folder, [7, 300], "add", ["\\Flagged"])

        def refuse(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("CHANGEDSINCE read records by UID")

        monkeypatch.setattr(conv.store, "flag_columns", refuse)
        monkeypatch.setattr(conv.store, "get_messages", refuse)
        lines = conv.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since})")
        # (the command's two responses; the update after it reports the changes once more)
        assert [line.split(b" (")[0] for line in lines[:2]] == [b"* 7 FETCH", b"* 300 FETCH"]
        assert lines[0] == b"* 7 FETCH (UID 7 MODSEQ (%d) FLAGS (\\Flagged \\Recent))" % (since + 1)


def test_store_columns_match_records(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        folder = conv.folder("INBOX").id
        conv.store.append_many("alice", folder, [(MSG, FLAG_SETS[n % len(FLAG_SETS)], None, 0) for n in range(40)])
        conv.store.store_flags("alice", folder, [3, 4], "add", ["\\Deleted"])
        conv.store.expunge("alice", folder, [3, 4])
        metas = {meta.uid: meta for meta in conv.store.messages("alice", folder)}
        for wanted in (list(range(1, 41)), list(range(5, 20)), [1, 2, 3, 4, 5], [2, 39, 40, 41], []):
            columns = conv.store.flag_columns("alice", folder, wanted, with_modseq=True)
            present = [uid for uid in wanted if uid in metas]
            assert columns.uids == present
            assert columns.modseqs == [metas[uid].modseq for uid in present]
            assert [flags_of(tail) for tail in columns.tails] == [metas[uid].flags for uid in present]
            assert conv.store.flag_rows("alice", folder, wanted) == [
                (uid, metas[uid].flags, metas[uid].modseq) for uid in present]
        assert flag_columns_from_pairs([], with_modseq=True).uids == []
        assert flag_columns_of_records([], [], with_modseq=False).modseqs is None
        changed, vanished = conv.store.changed_columns("alice", folder, 0)  # all: one folder pass
        assert changed.uids == sorted(metas) and vanished == [3, 4]
        assert changed.modseqs == [metas[uid].modseq for uid in sorted(metas)]
        info = conv.store.folder_by_id("alice", folder)
        assert info is not None
        since = info.highestmodseq
        conv.store.store_flags("alice", folder, [7, 30], "add", ["\\Flagged"])
        changed, vanished = conv.store.changed_columns("alice", folder, since)  # few: key lookups
        assert changed.uids == [7, 30] and changed.modseqs == [since + 1, since + 2] and vanished == []
        assert [flags_of(tail) for tail in changed.tails] == [
            meta.flags for meta in conv.store.get_messages("alice", folder, [7, 30])]


LISTING_ITEM_LISTS = [
    "(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID References)])",
    "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)",
    "(BODYSTRUCTURE UID MODSEQ)",
    "(BODY BODY.PEEK[HEADER.FIELDS.NOT (Received Subject)]<5.40>)",
    "(BODY.PEEK[1.HEADER.FIELDS (Subject)] BODY.PEEK[HEADER.FIELDS (X-Nothing)] INTERNALDATE)",
    "(THREADID RFC822.SIZE EMAILID)",
    "(UID PREVIEW FLAGS)",
    "ALL", "FULL", "FAST",
]


def _listing_message(rng: random.Random, number: int) -> bytes:
    """A message of one of several shapes: plain, with folded and encoded headers, multipart with a
    message/rfc822 part (BODY[1.HEADER.FIELDS] then names a header of that part)."""
    subject = rng.choice(["hello", "=?utf-8?q?caf=C3=A9?= menu", "a long subject\r\n folded over two lines"])
    head = (f"From: Bob <bob{number}@example.org>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
            f"Date: Mon, {number % 28 + 1} Jun 2026 10:00:00 +0200\r\nMessage-ID: <{number}@example.org>\r\n")
    if rng.random() < 0.3:
        head += f"References: <{number - 1}@example.org>\r\n"
    if rng.random() < 0.4:
        return (head + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: c@example.org\r\n\r\ninner body\r\n"
                "--b\r\nContent-Type: text/plain\r\n\r\ntext\r\n--b--\r\n").encode()
    return (head + "\r\n" + "body line\r\n" * rng.randint(0, 20)).encode()


@pytest.fixture
def empty_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-body caches of the test's own, so that its first listing finds nothing cached."""
    monkeypatch.setattr(fetch_command, "_HEADER_FIELDS", BoundedCache(4096))
    monkeypatch.setattr(fetch_command, "_STRUCTURES", BoundedCache(4096))
    monkeypatch.setattr(fetch_command, "_THREAD_IDS", BoundedCache(4096))
    monkeypatch.setattr(fetch_command, "_PREVIEWS", BoundedCache(4096))


def _selected_listing_folder(conv: Conversation, seed: int, count: int) -> int:
    """Log in, fill INBOX with ``count`` messages of _listing_message's shapes, select it."""
    conv.login()
    folder = conv.folder("INBOX").id
    rng = random.Random(seed)
    conv.store.append_many("alice", folder, [(_listing_message(rng, n), (), None, 0) for n in range(count)])
    conv.select()
    return folder


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.usefixtures("empty_caches")
def test_listing_path_equals_general_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """FETCH of record fields and items kept per body (the listing path, _ListingColumnsFetch)
    gives byte for byte what the general per-message path gives, cold (every item made by the
    general path's step) and warm (from the caches), over holes, pending expunges, \\Recent and
    several batches."""
    rng = random.Random(seed)
    monkeypatch.setattr(fetch_command, "LISTING_BATCH", rng.choice([3, 16, 256]))
    with Conversation(tmp_path) as conv:
        conv.login()
        if seed % 2:
            conv.command("ENABLE IMAP4rev2")
        conv.command("ENABLE CONDSTORE")  # so that MODSEQ announces nothing on either path
        folder = conv.folder("INBOX").id
        count = rng.randint(30, 50)
        conv.store.append_many("alice", folder, [(_listing_message(rng, n), rng.choice(FLAG_SETS),
                                                  1_780_000_000 + n * 3_600, rng.choice([0, 120, -330]))
                                                 for n in range(count)])
        doomed = sorted(rng.sample(range(1, count + 1), count // 5))
        conv.store.store_flags("alice", folder, doomed, "add", ["\\Deleted"])
        conv.store.expunge("alice", folder, doomed)
        conv.command("EXAMINE INBOX" if seed == 3 else "SELECT INBOX")
        conv.add_message(data=_listing_message(rng, 99), flags=())
        conv.command("NOOP")
        # Three twin sessions (listing path, general path, listing path warm): a UID FETCH
        # announces pending expunges after its answer, so each run needs a session of its own.
        general, warm = conv.twin(), conv.twin()
        uids = conv.store.uids("alice", folder)
        ghosts = iter(rng.sample(uids, len(LISTING_ITEM_LISTS)))
        for items in LISTING_ITEM_LISTS:
            # expunged by another session, not yet announced here: pending until the UID FETCH
            pending = [next(ghosts)]
            conv.store.store_flags("alice", folder, pending, "add", ["\\Deleted"])
            conv.store.expunge("alice", folder, pending)
            view = conv.session.selected
            assert view is not None
            exists = len(view.runs) - 1   # after the UID FETCH
            for command in (f"FETCH 1:* {items}", f"UID FETCH {uids[3]}:{uids[-5]},{uids[-1]} {items}",
                            f"FETCH {exists - 2}:* {items}"):
                listing = conv.send(f"{conv.next_tag()} {command}\r\n".encode())
                with monkeypatch.context() as patch:
                    patch.setattr(fetch_command, "LISTING_ITEMS", frozenset())   # the general path
                    general_lines = general.send(f"{general.next_tag()} {command}\r\n".encode())
                warm_lines = warm.send(f"{warm.next_tag()} {command}\r\n".encode())
                assert listing[:-1] == general_lines[:-1] == warm_lines[:-1], command
                assert (listing[-1].split(b" ", 1)[1] == general_lines[-1].split(b" ", 1)[1]
                        == warm_lines[-1].split(b" ", 1)[1])
                assert listing[-1].split(b" ")[1] != b"BAD", command


@pytest.mark.usefixtures("empty_caches")
def test_listing_path_serves_a_warm_listing_from_the_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second listing of the same messages reads no body and makes no MessageMeta; a FETCH
    that sets \\Seen still takes the general path."""
    listing = "FETCH 1:* (UID RFC822.SIZE FLAGS ENVELOPE BODY.PEEK[HEADER.FIELDS (Subject From)])"
    with Conversation(tmp_path) as conv:
        _selected_listing_folder(conv, 1, 20)
        digests: list[str] = []
        real_digest = conv.store.digest

        def counting_digest(blob: str) -> Digest:
            digests.append(blob)
            return real_digest(blob)

        monkeypatch.setattr(conv.store, "digest", counting_digest)
        first = conv.command(listing)
        assert len(digests) == 20 and len(first) == 21
        digests.clear()

        def refuse(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("the listing path read message records one by one")

        with monkeypatch.context() as patch:
            patch.setattr(conv.store, "get_messages", refuse)
            patch.setattr(fetch_command, "meta_from_record", refuse)
            assert conv.command(listing)[:-1] == first[:-1]
        assert digests == []
        assert b"\\Seen" not in b"".join(first)
        conv.command("FETCH 1 (BODY[HEADER.FIELDS (Subject)])")   # not PEEK: sets \Seen, general path
        assert b"\\Seen" in conv.command("FETCH 1 FLAGS")[0]


@pytest.mark.usefixtures("empty_caches")
@pytest.mark.parametrize("general", [False, True], ids=["listing", "general"])
def test_listing_path_leaves_out_a_message_whose_body_went(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           general: bool) -> None:
    """A message expunged by another session between reading the records and making an item
    (its record removed, then its body): the message gets no response and FETCH ends NO
    [EXPUNGEISSUED], as on the general path; the others are answered. (A body gone while its
    record stays is lost, not expunged: test_cmd_fetch.)"""
    with Conversation(tmp_path) as conv:
        folder = _selected_listing_folder(conv, 2, 6)
        gone = conv.store.get_messages("alice", folder, [4])[0].blob
        real_digest = conv.store.digest

        def digest(blob: str) -> object:
            if blob == gone:
                conv.store.remove_messages("alice", folder, [4])  # another session's expunge
                raise NoSuchBody(blob)
            return real_digest(blob)

        monkeypatch.setattr(conv.store, "digest", digest)
        if general:
            monkeypatch.setattr(fetch_command, "LISTING_ITEMS", frozenset())
        lines = conv.send(f"{conv.next_tag()} FETCH 1:* (FLAGS ENVELOPE BODY.PEEK[HEADER.FIELDS (Subject)])\r\n".encode())
        assert [line.split(b" FETCH")[0] for line in lines[:-1]] == [b"* 1", b"* 2", b"* 3", b"* 5", b"* 6"]
        assert b"NO [EXPUNGEISSUED]" in lines[-1]


def test_store_record_batches_match_messages(tmp_path: Path) -> None:
    """Store.record_batches and the record column readers give what MessageMeta holds."""
    with Conversation(tmp_path) as conv:
        folder = conv.folder("INBOX").id
        conv.store.append_many("alice", folder, [(MSG + b"x" * n, (), 1_700_000_000 + n * 977, (n * 37) % 1_400 - 700)
                                                 for n in range(30)])
        conv.store.store_flags("alice", folder, [3, 4], "add", ["\\Deleted"])
        conv.store.expunge("alice", folder, [3, 4])
        metas = {meta.uid: meta for meta in conv.store.messages("alice", folder)}
        for wanted, batch in ((list(range(1, 31)), 7), (list(range(5, 20)), 100), ([1, 3, 4, 29, 31], 2), ([], 5)):
            batches = list(conv.store.record_batches("alice", folder, wanted, batch))
            assert len(batches) == -(-len(wanted) // batch)
            uids = [uid for found, _ in batches for uid in found]
            records = [record for _, batch_records in batches for record in batch_records]
            present = [uid for uid in wanted if uid in metas]
            assert uids == present
            assert record_sizes(records) == [metas[uid].size for uid in present]
            assert record_internaldates(records) == ([metas[uid].internaldate for uid in present],
                                                     [metas[uid].tzoffset for uid in present])
            assert record_blobs(records) == [metas[uid].blob for uid in present]
