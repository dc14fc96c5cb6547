"""FETCH of UID / FLAGS / MODSEQ rendered column-wise (gximap.session.commands.fetch) gives byte for
byte what the general per-message path gives: random folders, flag sets, holes, \\Recent, pending
expunges, CHANGEDSINCE and SEARCHRES, in IMAP4rev1 and IMAP4rev2."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conversation import Conversation

from gximap.session.commands import fetch as fetch_command
from midb.messages import flag_columns_from_pairs, flag_columns_of_records, flags_of

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


def _both(conv: Conversation, monkeypatch: pytest.MonkeyPatch, command: str) -> tuple[list[bytes], list[bytes]]:
    """(column path, general path) responses to the same command (tagged line without the tag)."""
    tag = conv.next_tag()
    fast = conv.send(f"{tag} {command}\r\n".encode())
    with monkeypatch.context() as patch:
        patch.setattr(fetch_command, "RECORD_ITEMS", frozenset())  # every FETCH takes the general path
        tag2 = conv.next_tag()
        slow = conv.send(f"{tag2} {command}\r\n".encode())
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
        base_modseq = conv.store.folder_by_id("alice", folder).highestmodseq
        # \Recent messages for this session, then flag changes and an expunge by another one that
        # this session's FETCH may not announce.
        for _ in range(3):
            conv.add_message(data=MSG, flags=rng.choice(FLAG_SETS))
        conv.command("NOOP")
        uids = conv.store.uids("alice", folder)
        conv.store.store_flags("alice", folder, rng.sample(uids, 8), "add", ["$Changed"])
        pending = rng.sample(uids, 2)
        conv.store.store_flags("alice", folder, pending, "add", ["\\Deleted"])
        conv.store.expunge("alice", folder, pending)
        conv.command("SEARCH RETURN (SAVE) FLAGGED")
        top = uids[-1]
        for items in ITEM_LISTS:
            for prefix in ("FETCH", "UID FETCH"):
                limit = len(uids) if prefix == "FETCH" else top
                for seqset in [*_sets(rng, limit), "$"]:
                    if prefix == "FETCH" and seqset.split(":")[0].isdigit() and int(seqset.split(":")[0]) > limit:
                        continue  # message numbers beyond EXISTS are BAD, on both paths alike
                    for modifier in ("", f" (CHANGEDSINCE {base_modseq})", f" (CHANGEDSINCE {base_modseq + 9})"):
                        command = f"{prefix} {seqset} {items}{modifier}"
                        fast, slow = _both(conv, monkeypatch, command)
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
            fast, slow = _both(conv, monkeypatch, command)
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
        since = conv.store.folder_by_id("alice", folder).highestmodseq
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
        since = conv.store.folder_by_id("alice", folder).highestmodseq
        conv.store.store_flags("alice", folder, [7, 30], "add", ["\\Flagged"])
        changed, vanished = conv.store.changed_columns("alice", folder, since)  # few: key lookups
        assert changed.uids == [7, 30] and changed.modseqs == [since + 1, since + 2] and vanished == []
        assert [flags_of(tail) for tail in changed.tails] == [
            meta.flags for meta in conv.store.get_messages("alice", folder, [7, 30])]
