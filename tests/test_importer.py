"""midb.importer: mbox/Maildir parsing and imports into a real store (UIDs, flags, keywords, dates)."""

from __future__ import annotations

import calendar
import os
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation
from store_helpers import folder_state

from midb.errors import NoSuchAccount
from midb.exporter import export_maildir_tree
from midb.importer import (
    UNKNOWN_SOURCE_MODSEQ_FLOOR,
    ImportFailed,
    find_maildir_folders,
    import_maildir,
    import_maildir_tree,
    import_mbox,
    open_mbox,
    parse_from_line_date,
    parse_uidlist,
    read_dovecot_subscriptions,
    scan_maildir,
    split_maildir_name,
    valid_keyword,
)
from midb.mailfiles import decode_mutf7
from midb.store import Store

# ---- fixtures ------------------------------------------------------------------------------

MBOX = (
    b"From alice@example.org Thu Jan  4 10:20:30 2024\n"
    b"From: alice@example.org\n"
    b"Subject: first\n"
    b"Status: RO\n"
    b"X-Status: AF\n"
    b"X-Keywords: $Label1 Work\n"
    b"\n"
    b">From the body, quoted once\n"
    b">>From quoted twice\n"
    b"From: not a separator (no blank line before it? it has a colon anyway)\n"
    b"\n"
    b"From bob@example.org Fri Feb  2 01:02:03 +0100 2024\n"
    b"From: bob@example.org\n"
    b"Subject: second\n"
    b"Status: O\n"
    b"X-Status: DT\n"
    b"\n"
    b"line one\n"
    b"From inside without blank line before is body\n"
    b"\n"
    b"From carol@example.org Sat Mar  2 12:00:00 2024\n"
    b"Subject: third\n"
    b"Date: Sat, 02 Mar 2024 13:00:00 +0100\n"
    b"\n"
    b"last body\n"
    b"\n"
)

DOVECOT_MBOX = (
    b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 +0000\n"
    b"From: Mail System Internal Data <MAILER-DAEMON@host>\n"
    b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
    b"X-IMAP: 1700000000 0000000012 Junk\n"
    b"Status: RO\n"
    b"\n"
    b"This text is part of the internal format of your mail folder.\n"
    b"\n"
    b"From a@example.org Tue Jan  2 00:00:00 2024\n"
    b"Subject: kept uid 7\n"
    b"X-UID: 7\n"
    b"Status: R\n"
    b"X-Keywords: Junk\n"
    b"Content-Length: 5\n"
    b"\n"
    b"body\n"
    b"\n"
    b"From a@example.org Wed Jan  3 00:00:00 2024\n"
    b"Subject: kept uid 9\n"
    b"X-UID: 9\n"
    b"\n"
    b"body2\n"
)


def write(path: Path, data: bytes, mtime: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def message(subject: str, body: str = "hello", crlf: bool = True) -> bytes:
    text = f"From: someone@example.org\nSubject: {subject}\n\n{body}\n"
    return text.replace("\n", "\r\n").encode() if crlf else text.encode()


def make_dovecot_maildir(root: Path) -> dict[str, object]:
    """A Dovecot Maildir++ tree: INBOX with uidlist/keywords, .Sent, .Archive.2023, .Entw&APw-rfe."""
    make_maildir(root)
    (root / "dovecot-keywords").write_text("0 $Forwarded\n1 Work\n2 bad keyword\n")
    files = {
        3: ("cur", "1700000003.M1P1.host,S=60,W=62:2,Sa", 1700000003),
        5: ("cur", "1700000005.M2P1.host,S=60,W=62:2,RSFb", 1700000005),
        6: ("cur", "1700000006.M3P1.host,S=60,W=62:2,T", 1700000006),
        7: ("new", "1700000007.M4P1.host,S=60,W=62", 1700000007),
    }
    bodies: dict[int, bytes] = {}
    for uid, (sub, name, mtime) in files.items():
        bodies[uid] = message(f"inbox {uid}")
        write(root / sub / name, bodies[uid], mtime)
    # one file Dovecot has not yet seen (no uidlist entry): it gets UIDs from N on
    bodies[20] = message("unlisted")
    write(root / "cur" / "1700000100.M9P1.host:2,", bodies[20], 1700000100)
    (root / "dovecot-uidlist").write_text(
        "3 V1234567 N20 G0123456789abcdef0123456789abcdef\n"
        "3 :1700000003.M1P1.host,S=60,W=62\n"
        "5 W62 :1700000005.M2P1.host,S=60,W=62\n"
        "6 G0011 W62 :1700000006.M3P1.host,S=60,W=62\n"
        "7 :1700000007.M4P1.host,S=60,W=62\n"
        "12 :1700000012.expunged.host\n"
    )
    sent = make_maildir(root / ".Sent")
    bodies[101] = message("sent one", crlf=False)  # bare LF on disk, stored as CRLF
    write(sent / "cur" / "1700000201.M1P2.host:2,S", bodies[101], 1700000201)
    (sent / "dovecot-uidlist").write_text("3 V1111 N2\n1 :1700000201.M1P2.host\n")
    archive = make_maildir(root / ".Archive.2023")
    write(archive / "cur" / "1600000000.M1P3.host:2,S", message("archived"), 1600000000)
    (archive / "dovecot-uidlist").write_text("3 V2222 N5\n4 :1600000000.M1P3.host\n")
    umlaut = make_maildir(root / ".Entw&APw-rfe")
    write(umlaut / "new" / "1700000300.M1P4.host", message("draft-ish"), 1700000300)
    (root / "subscriptions").write_text("V\t2\n\nINBOX\nSent\nEntwürfe\n")
    (root / "dovecot-uidvalidity").write_text("")
    (root / ".not-a-maildir").mkdir()
    return {"bodies": bodies}


# ---- pure parsing --------------------------------------------------------------------------


def test_decode_mutf7() -> None:
    assert decode_mutf7("Entw&APw-rfe") == "Entwürfe"
    assert decode_mutf7("&ZeVnLIqe-") == "日本語"
    assert decode_mutf7("Tom &- Jerry") == "Tom & Jerry"
    assert decode_mutf7("&2D3eAA-") == "\U0001f600"
    for bad in ("&ZeVnLIqe", "&!!-", "é", "&AGE"):
        with pytest.raises(ValueError):
            decode_mutf7(bad)


def test_valid_keyword() -> None:
    assert valid_keyword("$Forwarded") and valid_keyword("Work")
    for bad in ("", "two words", "\\Seen", "paren(", "ü", "a]"):
        assert not valid_keyword(bad), bad


def test_from_line_dates() -> None:
    assert parse_from_line_date(b"From a@b Thu Jan  4 10:20:30 2024") == (
        calendar.timegm((2024, 1, 4, 10, 20, 30, 0, 0, 0)), 0)
    assert parse_from_line_date(b"From a@b Fri Feb  2 01:02:03 +0100 2024") == (
        calendar.timegm((2024, 2, 2, 0, 2, 3, 0, 0, 0)), 60)
    assert parse_from_line_date(b"From a@b Fri Feb  2 01:02 2024 -0500")[1] == -300  # type: ignore[index]
    assert parse_from_line_date(b"From a@b Thu Jan  4 10:20:30 PST 2024") is not None
    assert parse_from_line_date(b"From a@b") is None
    assert parse_from_line_date(b"From a@b Thu Jan 40 10:20:30 2024") is None


def test_mbox_parsing_flags_dates_quoting(tmp_path: Path) -> None:
    path = write(tmp_path / "box", MBOX)
    with open_mbox(path) as folder:
        assert folder.uidvalidity is None
        messages = folder.messages
        bodies = [m.load() for m in messages]
    assert len(messages) == 3
    first, second, third = messages
    assert set(first.flags) == {"\\Seen", "\\Answered", "\\Flagged", "$Label1", "Work"}
    assert set(second.flags) == {"\\Deleted", "\\Draft"}
    assert third.flags == ()
    assert first.internaldate == calendar.timegm((2024, 1, 4, 10, 20, 30, 0, 0, 0))
    assert second.internaldate == calendar.timegm((2024, 2, 2, 0, 2, 3, 0, 0, 0))
    assert second.tzoffset == 60
    assert bodies[0] == (b"From: alice@example.org\r\nSubject: first\r\n\r\n"
                         b"From the body, quoted once\r\n>From quoted twice\r\n"
                         b"From: not a separator (no blank line before it? it has a colon anyway)\r\n")
    assert bodies[1] == (b"From: bob@example.org\r\nSubject: second\r\n\r\nline one\r\n"
                         b"From inside without blank line before is body\r\n")
    assert bodies[2].endswith(b"\r\n\r\nlast body\r\n")
    assert all(b"Status:" not in body for body in bodies)


def test_mbox_header_block_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each message's header block is parsed when the mbox is read (flags, UID and date plan the
    import); loading a message only cuts it out, so a header block quoted like a From_ line and
    bookkeeping fields folded over lines come out as before, without a second parse."""
    import midb.importer as importer

    parsed: list[bytes] = []
    real_header_fields = importer.header_fields

    def counted(data: bytes, end: int) -> list[tuple[str, bytes, int, int]]:
        parsed.append(data[:end])
        return real_header_fields(data, end)

    monkeypatch.setattr(importer, "header_fields", counted)
    data = MBOX.replace(b"X-Keywords: $Label1 Work\n", b"X-Keywords: $Label1\n\tWork\n>From a quoted line\n")
    with open_mbox(write(tmp_path / "box", data)) as folder:
        assert len(parsed) == 3
        bodies = [m.load() for m in folder.messages]
    assert len(parsed) == 3
    assert set(folder.messages[0].flags) == {"\\Seen", "\\Answered", "\\Flagged", "$Label1", "Work"}
    assert bodies[0].startswith(b"From: alice@example.org\r\nSubject: first\r\nFrom a quoted line\r\n\r\n")


def test_mbox_body_line_from_is_not_a_separator(tmp_path: Path) -> None:
    """A message ends only at a From_ line with a sender and a date (as in Dovecot's
    mbox_from_parse), and where a Content-Length says if it lands exactly on one or on the end
    of the file: an mboxcl2 file quotes no From_ line in a body. A body line "From the desk of
    Bob" after an empty line was taken as a separator and eaten, splitting the message."""
    assert parse_from_line_date(b"From the desk of Bob, Tue Jan  2 10:00:00 2024") is not None  # a date in it
    assert parse_from_line_date(b"From the desk of Bob, Tue Jan  2 10:00:00 2024", strict=True) is None
    assert parse_from_line_date(b"From  Tue Jan  2 10:00:00 2024", strict=True) is not None   # empty sender
    assert parse_from_line_date(b'From "a b"@example.org Tue Jan  2 10:00:00 2024\r', strict=True) is not None

    def mbox_of(*messages: tuple[bytes, bytes, int | None]) -> bytes:   # (header, body, Content-Length)
        parts = []
        for number, (header, body, length) in enumerate(messages):
            stated = b"" if length is None else b"Content-Length: %d\n" % length
            parts.append(b"From m%d@example.org Tue Jan  2 00:00:%02d 2024\n" % (number, number)
                         + header + stated + b"\n" + body + b"\n")
        return b"".join(parts)

    def bodies(data: bytes) -> list[bytes]:
        with open_mbox(write(tmp_path / "box", data), crlf=False) as folder:
            return [m.load() for m in folder.messages]

    prose = b"Hi,\n\nFrom the desk of Bob: see below.\nbye\n"
    assert bodies(mbox_of((b"Subject: one\n", prose, None), (b"Subject: two\n", b"second\n", None))) == [
        b"Subject: one\n\n" + prose, b"Subject: two\n\nsecond\n"]
    # A From_ line in an unquoted body: its Content-Length keeps it whole, at the end of the file too.
    quoted = b"Forwarded:\n\nFrom bob@example.org Mon Jan  1 09:00:00 2024\nold text\n"
    for stated in ((b"Subject: one\n", quoted, len(quoted)), (b"Subject: two\n", b"second\n", 7)):
        assert bodies(mbox_of(stated, (b"Subject: three\n", quoted, len(quoted)))) == [
            stated[0] + b"\n" + stated[1], b"Subject: three\n\n" + quoted]
    crlf = mbox_of((b"Subject: one\n", quoted, len(quoted) + quoted.count(b"\n")),
                   (b"Subject: two\n", b"x\n", 3)).replace(b"\n", b"\r\n")
    assert bodies(crlf) == [b"Subject: one\r\n\r\n" + quoted.replace(b"\n", b"\r\n"), b"Subject: two\r\n\r\nx\r\n"]
    # A Content-Length that lands elsewhere is not used: the messages end at their From_ lines.
    for wrong in (len(quoted) - 1, len(quoted) + 1, 10**9):
        assert len(bodies(mbox_of((b"Subject: one\n", quoted, wrong), (b"Subject: two\n", b"x\n", None)))) == 3


def test_mbox_mboxo_and_raw_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path / "box", MBOX)
    with open_mbox(path, variant="mboxo", crlf=False) as folder:
        body = folder.messages[0].load()
    assert b"\nFrom the body, quoted once\n>>From quoted twice\n" in body
    assert b"\r\n" not in body


def test_mbox_crlf_file(tmp_path: Path) -> None:
    path = write(tmp_path / "box", MBOX.replace(b"\n", b"\r\n"))
    with open_mbox(path) as folder:
        bodies = [m.load() for m in folder.messages]
    assert len(bodies) == 3
    assert bodies[1] == (b"From: bob@example.org\r\nSubject: second\r\n\r\nline one\r\n"
                         b"From inside without blank line before is body\r\n")


def test_mbox_dovecot_uid_headers(tmp_path: Path) -> None:
    path = write(tmp_path / "box", DOVECOT_MBOX)
    with open_mbox(path) as folder:
        assert folder.uidvalidity == 1700000000
        assert folder.nextuid == 13
        assert [m.uid for m in folder.messages] == [7, 9]  # the pseudo message is skipped
        assert set(folder.messages[0].flags) == {"\\Seen", "Junk"}
        body = folder.messages[0].load()
    assert body == b"Subject: kept uid 7\r\n\r\nbody\r\n"


def test_mbox_date_header_fallback(tmp_path: Path) -> None:
    path = write(tmp_path / "box", b"From someone\nDate: Sat, 02 Mar 2024 13:00:00 +0100\n\nx\n")
    with open_mbox(path) as folder:
        only = folder.messages[0]
    assert only.internaldate == calendar.timegm((2024, 3, 2, 12, 0, 0, 0, 0, 0))
    assert only.tzoffset == 60


def test_mbox_empty_and_invalid(tmp_path: Path) -> None:
    with open_mbox(write(tmp_path / "empty", b"")) as folder:
        assert folder.messages == []
    with pytest.raises(ImportFailed, match="not an mbox"):
        with open_mbox(write(tmp_path / "bad", b"Subject: no From_ line\n\nx\n")):
            pass
    with pytest.raises(ImportFailed, match="cannot open"):
        with open_mbox(tmp_path / "missing"):
            pass


def test_split_maildir_name() -> None:
    assert split_maildir_name("123.M1P1.host,S=5:2,FRS") == ("123.M1P1.host,S=5", "FRS")
    assert split_maildir_name("123.M1P1.host") == ("123.M1P1.host", "")
    assert split_maildir_name("123.host;2,S") == ("123.host", "S")


def test_parse_uidlist_versions() -> None:
    v3 = parse_uidlist("3 V42 N10 Gabc\n1 :a\n4 W10 G99 :b:2,S\nbroken line\n")
    assert v3 is not None
    assert (v3.uidvalidity, v3.nextuid, v3.uids) == (42, 10, {"a": 1, "b": 4})
    v1 = parse_uidlist("1 77 5\n1 x.host\n3 y.host:2,S\n")
    assert v1 is not None and (v1.uidvalidity, v1.nextuid, v1.uids) == (77, 5, {"x.host": 1, "y.host": 3})
    assert parse_uidlist("") is None
    assert parse_uidlist("9 whatever\n") is None
    assert parse_uidlist("3 V0 N1\n") is None
    # a nextuid below the highest listed UID is corrected
    low = parse_uidlist("3 V5 N2\n8 :z\n")
    assert low is not None and low.nextuid == 9


def test_scan_dovecot_maildir(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    make_dovecot_maildir(root)
    folder = scan_maildir(root)
    assert folder.uidvalidity == 1234567
    assert [m.uid for m in folder.messages] == [3, 5, 6, 7, 20]
    flags = {m.uid: set(m.flags) for m in folder.messages}
    assert flags == {3: {"\\Seen", "$Forwarded"}, 5: {"\\Answered", "\\Seen", "\\Flagged", "Work"},
                     6: {"\\Deleted"}, 7: set(), 20: set()}
    assert {m.uid: m.internaldate for m in folder.messages} == {
        3: 1700000003, 5: 1700000005, 6: 1700000006, 7: 1700000007, 20: 1700000100}
    assert folder.nextuid == 21


def test_scan_plain_maildir_orders_by_delivery(tmp_path: Path) -> None:
    box = make_maildir(tmp_path / "md")
    write(box / "cur" / "200.b.host:2,PD", message("two"), 200)
    write(box / "new" / "100.a.host", message("one"), 100)
    write(box / "cur" / "1000.c.host:2,Sx", message("three"), 50)  # unknown keyword letter
    write(box / "tmp" / "150.tmp.host", message("unfinished"))
    folder = scan_maildir(box)
    assert folder.uidvalidity is None
    assert [m.uid for m in folder.messages] == [None, None, None]
    assert [m.internaldate for m in folder.messages] == [100, 200, 50]
    assert set(folder.messages[1].flags) == {"$Forwarded", "\\Draft"}
    assert any("'x' not understood" in note for note in folder.notes)


def test_scan_maildir_rejects_non_maildir(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="not a Maildir"):
        scan_maildir(tmp_path)


def test_find_maildir_folders(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    make_dovecot_maildir(root)
    folders, problems = find_maildir_folders(root)
    assert [components for _, components in folders] == [
        ["INBOX"], ["Archive", "2023"], ["Entwürfe"], ["Sent"]]
    assert problems == []
    with pytest.raises(ImportFailed):
        find_maildir_folders(tmp_path / "nothing")


def test_read_subscriptions(tmp_path: Path) -> None:
    (tmp_path / "subscriptions").write_text("V\t2\n\nINBOX\nA\tB\n")
    assert read_dovecot_subscriptions(str(tmp_path)) == [["INBOX"], ["A", "B"]]
    (tmp_path / "subscriptions").write_text("Sent\nEntw&APw-rfe.Sub\n")
    names = read_dovecot_subscriptions(str(tmp_path))
    assert ["Sent"] in names and ["Entwürfe", "Sub"] in names
    assert read_dovecot_subscriptions(str(tmp_path / "none")) == []


# ---- imports into a store ------------------------------------------------------------------


def test_import_dovecot_tree_keeps_everything(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "Maildir"
    bodies = make_dovecot_maildir(root)["bodies"]
    assert isinstance(bodies, dict)
    store.create_account("alice")
    report = import_maildir_tree(store, "alice", root)
    assert report.problems == []
    assert report.imported == 8 and report.skipped == 0 and report.failed == 0

    inbox = store.get_folder("alice", "INBOX")
    assert inbox is not None and inbox.uidvalidity == 1234567
    state = folder_state(store, "alice", "INBOX")
    assert sorted(state) == [3, 5, 6, 7, 20]
    assert state[3] == ({"\\Seen", "$Forwarded"}, 1700000003, bodies[3])
    assert state[5] == ({"\\Answered", "\\Seen", "\\Flagged", "Work"}, 1700000005, bodies[5])
    assert state[6] == ({"\\Deleted"}, 1700000006, bodies[6])
    assert state[7] == (set(), 1700000007, bodies[7])
    assert state[20] == (set(), 1700000100, bodies[20])
    assert inbox.uidnext == 21 and inbox.deleted == 1

    sent = store.get_folder("alice", "Sent")
    assert sent is not None and sent.special_use == "\\Sent" and sent.uidvalidity == 1111
    sent_state = folder_state(store, "alice", "Sent")
    assert sent_state == {1: ({"\\Seen"}, 1700000201, bodies[101].replace(b"\n", b"\r\n"))}

    archived = store.get_folder("alice", "Archive/2023")
    assert archived is not None and archived.uidvalidity == 2222
    assert list(folder_state(store, "alice", "Archive/2023")) == [4]

    drafts_like = store.get_folder("alice", "Entwürfe")
    assert drafts_like is not None and drafts_like.messages == 1 and drafts_like.special_use is None
    assert "Entwürfe" in store.subscriptions("alice")
    assert "Archive/2023" not in store.subscriptions("alice")

    again = import_maildir_tree(store, "alice", root)
    assert again.imported == 0 and again.skipped == 8 and again.problems == []
    assert folder_state(store, "alice", "INBOX") == state


def test_import_tree_maps_special_folders_by_language(tmp_path: Path, store: Store) -> None:
    root = make_maildir(tmp_path / "Maildir")
    for name, uidvalidity in ((".Sent", 11), (".Spam", 12), (".Drafts", 13), (".Sent Items", 14)):
        box = make_maildir(root / name)
        write(box / "cur" / f"1.{uidvalidity}.host:2,S", message(name), 1000)
        (box / "dovecot-uidlist").write_text(f"3 V{uidvalidity} N2\n1 :1.{uidvalidity}.host\n")
    store.create_account("bernd", lang="de")
    report = import_maildir_tree(store, "bernd", root)
    by_folder = {f.folder: f for f in report.folders}
    assert set(by_folder) == {"INBOX", "Gesendet", "Spam", "Entwürfe", "Sent Items"}
    assert by_folder["Gesendet"].uidvalidity == 11 and by_folder["Gesendet"].uids_kept
    gesendet = store.get_folder("bernd", "Gesendet")
    assert gesendet is not None and gesendet.special_use == "\\Sent" and gesendet.messages == 1
    spam = store.get_folder("bernd", "Spam")
    assert spam is not None and spam.special_use == "\\Junk" and spam.uidvalidity == 12
    drafts = store.get_folder("bernd", "Entwürfe")
    assert drafts is not None and drafts.special_use == "\\Drafts" and drafts.uidvalidity == 13
    # the second Sent-like folder cannot also become \\Sent: it keeps its own name
    other = store.get_folder("bernd", "Sent Items")
    assert other is not None and other.special_use is None and other.uidvalidity == 14


def test_import_into_folder_with_mail_assigns_new_uids(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "Maildir"
    make_dovecot_maildir(root)
    store.create_account("carl")
    inbox = store.get_folder("carl", "INBOX")
    assert inbox is not None
    store.append("carl", inbox.id, message("already here"), internaldate=1)
    report = import_maildir(store, "carl", "INBOX", root)
    assert not report.uids_kept and report.imported == 5
    assert any("new UIDs" in note for note in report.notes)
    assert store.uids("carl", inbox.id) == [1, 2, 3, 4, 5, 6]
    again = import_maildir(store, "carl", "INBOX", root)
    assert again.imported == 0 and again.skipped == 5


def test_import_mbox_into_store(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "box", MBOX)
    store.create_account("dora")
    report = import_mbox(store, "DORA", "Imported/2024", path)
    assert report.created and not report.uids_kept and report.imported == 3
    state = folder_state(store, "dora", "Imported/2024")
    assert [state[uid][0] for uid in (1, 2, 3)] == [
        {"\\Seen", "\\Answered", "\\Flagged", "$Label1", "Work"}, {"\\Deleted", "\\Draft"}, set()]
    assert state[1][1] == calendar.timegm((2024, 1, 4, 10, 20, 30, 0, 0, 0))
    assert b">From quoted twice\r\n" in state[1][2]
    again = import_mbox(store, "dora", "Imported/2024", path)
    assert again.imported == 0 and again.skipped == 3


def test_import_dovecot_mbox_keeps_uids(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "box", DOVECOT_MBOX)
    store.create_account("emil")
    report = import_mbox(store, "emil", "Old", path)
    assert report.uids_kept and report.uidvalidity == 1700000000
    assert sorted(folder_state(store, "emil", "Old")) == [7, 9]
    folder = store.get_folder("emil", "Old")
    assert folder is not None and folder.uidnext == 13 and folder.messages == 2  # placeholder expunged
    assert list(store.vanished_since("emil", folder.id, 0).among(range(1, 14))) == [*range(1, 7), 8, *range(10, 13)]
    assert import_mbox(store, "emil", "Old", path).skipped == 2


def test_import_raises_uidnext_without_a_placeholder(tmp_path: Path, store: Store,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """UIDNEXT goes up to the source's in one transaction (Store.raise_uidnext): no placeholder
    message is stored and expunged in a second one, which an import killed in between left in the
    user's folder for good (a re-run found UIDNEXT reached). Stands for that kill: any expunge."""
    store.create_account("emil")

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise _Killed

    monkeypatch.setattr(store, "expunge", killed)
    monkeypatch.setattr(store, "remove_messages", killed)
    report = import_mbox(store, "emil", "Old", write(tmp_path / "box", DOVECOT_MBOX))
    assert report.imported == 2 and not report.notes
    folder = store.get_folder("emil", "Old")
    assert folder is not None and (folder.uidnext, folder.messages) == (13, 2)
    assert list(store.vanished_since("emil", folder.id, 0).among(range(1, 14))) == [*range(1, 7), 8, *range(10, 13)]


def test_import_removes_the_placeholder_an_older_interrupted_import_left(tmp_path: Path, store: Store) -> None:
    """A folder as an import by an earlier release left it when killed between the placeholder's
    append and its expunge: the re-run removes the placeholder (known by the source's last UID
    and its exact bytes), and leaves a message that only looks like it."""
    from midb.importer import _OLD_PLACEHOLDER

    box = write(tmp_path / "box", DOVECOT_MBOX)
    with open_mbox(box) as source:
        kept = [(m.uid, m.load()) for m in source.messages]
    store.create_account("emil")
    folder = store.create_folder("emil", "Old", uidvalidity=1700000000)
    for uid, body in kept:
        store.append("emil", folder.id, body, uid=uid)
    store.append("emil", folder.id, _OLD_PLACEHOLDER, flags=("\\Deleted",), uid=12)
    again = import_mbox(store, "emil", "Old", box)
    assert again.skipped == 2 and store.uids("emil", folder.id) == [7, 9]
    assert any("placeholder an interrupted import left is removed" in note for note in again.notes)
    assert list(store.vanished_since("emil", folder.id, 0).among(range(1, 14))) == [*range(1, 7), 8, *range(10, 13)]

    lookalike = store.create_folder("emil", "Other", uidvalidity=1700000000)
    store.append("emil", lookalike.id, _OLD_PLACEHOLDER + b"mine\r\n", uid=12)
    import_mbox(store, "emil", "Other", box)
    assert store.uids("emil", lookalike.id) == [12]   # below its UIDNEXT: 7 and 9 count as expunged there


def test_import_out_of_order_x_uid_drops_uids(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path / "box", DOVECOT_MBOX.replace(b"X-UID: 9", b"X-UID: 3"))
    store.create_account("fay")
    report = import_mbox(store, "fay", "Old", path)
    assert not report.uids_kept and report.imported == 2
    assert any("out of order" in note for note in report.notes)


def test_import_many_messages_in_batches(tmp_path: Path, store: Store) -> None:
    box = make_maildir(tmp_path / "big")
    lines = ["3 V777 N2000"]
    uids = [*range(1, 701), *range(900, 1500)]  # two runs: one explicit-UID placement each
    for uid in uids:
        name = f"{1000 + uid}.M{uid}.host"
        write(box / "cur" / f"{name}:2,S", message(f"m{uid}"), 1000 + uid)
        lines.append(f"{uid} :{name}")
    (box / "dovecot-uidlist").write_text("\n".join(lines) + "\n")
    store.create_account("gus")
    report = import_maildir(store, "gus", "Big", box)
    assert report.uids_kept and report.imported == len(uids)
    folder = store.get_folder("gus", "Big")
    assert folder is not None
    assert store.uids("gus", folder.id) == uids
    metas = store.messages("gus", folder.id)
    assert all(m.internaldate == 1000 + m.uid and m.flags == ("\\Seen",) for m in metas)


class _Killed(Exception):
    """Stands for the import process being killed between two batches."""


def test_resumed_import_gives_a_uid_taken_meanwhile_a_new_one(tmp_path: Path, store: Store,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An import keeping UIDs is killed after its first batch; a delivery takes the UIDNEXT, the
    UID of the first source message not stored yet. The re-run must store that message under a
    new UID (and say so), not skip it as present; a third run stores nothing again. The delivery
    has the size of the source message it collides with: only the content tells them apart."""
    box = make_maildir(tmp_path / "box")
    lines = ["3 V4242 N9"]
    for uid in range(1, 9):
        name = f"{1000 + uid}.M{uid}.host"
        write(box / "cur" / f"{name}:2,S", message(f"source {uid}"), 1000 + uid)
        lines.append(f"{uid} :{name}")
    (box / "dovecot-uidlist").write_text("\n".join(lines) + "\n")
    store.create_account("ida")
    monkeypatch.setattr("midb.importer._BATCH_MESSAGES", 3)
    real_append_many = store.append_many
    calls = 0

    def killed_after_one_batch(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise _Killed
        return real_append_many(*args, **kwargs)

    monkeypatch.setattr(store, "append_many", killed_after_one_batch)
    with pytest.raises(_Killed):
        import_maildir(store, "ida", "INBOX", box)
    monkeypatch.setattr(store, "append_many", real_append_many)
    inbox = store.get_folder("ida", "INBOX")
    assert inbox is not None and store.uids("ida", inbox.id) == [1, 2, 3]
    delivered = message("source X")   # the size of "source 4", other bytes
    assert len(delivered) == len(message("source 4"))
    assert store.append("ida", inbox.id, delivered)[1] == 4

    report = import_maildir(store, "ida", "INBOX", box)
    stored = {meta.uid: store.read_body(meta.blob) for meta in store.messages("ida", inbox.id)}
    assert stored[4] == delivered
    assert [uid for uid, body in stored.items() if body == message("source 4")] == [9]  # above N9
    assert all(stored[uid] == message(f"source {uid}") for uid in (1, 2, 3, 5, 6, 7, 8))
    assert "5 imported (1 under new UIDs: other mail held theirs), 3 skipped" in report.summary()
    assert any("UID 4 holds another message here" in note for note in report.notes)

    again = import_maildir(store, "ida", "INBOX", box)
    assert (again.imported, again.relocated, again.skipped) == (0, 0, 8)
    assert len(store.uids("ida", inbox.id)) == 9


def test_import_stops_over_quota(tmp_path: Path, store: Store) -> None:
    root = tmp_path / "Maildir"
    make_dovecot_maildir(root)
    store.create_account("hana")
    store.update_account("hana", quota_messages=3)
    report = import_maildir_tree(store, "hana", root)
    assert report.folders[0].complete is False
    assert any("over quota" in problem for problem in report.problems)
    assert store.usage("hana")[1] <= 3


def test_import_requires_account(tmp_path: Path, store: Store) -> None:
    with pytest.raises(NoSuchAccount):
        import_mbox(store, "nobody", "INBOX", write(tmp_path / "box", MBOX))


def test_uidlist_with_digits_other_than_ascii_is_not_a_crash() -> None:
    """str.isdigit() accepts "²" and "٣"; int() refuses the first and reads the second: neither
    may stop an import or set a UID (a damaged or hostile dovecot-uidlist)."""
    assert parse_uidlist("3 V\u00b2 N2\n1 :a\n") is None  # no usable UIDVALIDITY
    assert parse_uidlist("1 \u0663 5\n") is None
    parsed = parse_uidlist("3 V7 N9\n\u00b2 :a\n\u0663 :b\n4 :c\n")
    assert parsed is not None and parsed.uids == {"c": 4}


def test_keywords_beyond_the_bound_are_trimmed_not_the_import(tmp_path: Path, store: Store) -> None:
    """A message with more keywords than one may carry is imported with the first 128 and a
    note; the messages after it are imported too (the store refused the whole batch)."""
    store.create_account("fred")
    keywords = " ".join(f"K{n}" for n in range(200))
    mbox = (b"From a@example.org Thu Jan  4 10:20:30 2024\nX-Keywords: " + keywords.encode() + b" k0 K1\n"
            b"Subject: many\n\nbody\n\nFrom b@example.org Thu Jan  4 10:20:31 2024\nSubject: next\n\nbody\n")
    report = import_mbox(store, "fred", "Box", write(tmp_path / "box", mbox))
    assert report.imported == 2 and report.failed == 0
    assert any("200 keywords, more than the 128" in note for note in report.notes)
    box = store.get_folder("fred", "Box")
    assert box is not None
    first, second = store.get_messages("fred", box.id, [1, 2])
    assert set(first.flags) == {f"K{n}" for n in range(128)} and second.flags == ()


def _uid_fetch_vanished(conv: Conversation, since: int) -> list[bytes]:
    lines = conv.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)")
    return [line for line in lines if line.startswith(b"* VANISHED")]


def test_qresync_client_of_the_source_is_told_of_the_uids_expunged_there(tmp_path: Path) -> None:
    """A client synchronised with the old server holds UIDs 1 to 6; then 2, 3 (a gap) and 6 (the
    last) are expunged there, and the mailbox is moved here keeping its UIDs. Its resync must name
    every UID it holds that is gone (RFC 7162 section 3.2.5.1 / 3.2.6), not only the last one."""
    old = Store(tmp_path / "old", fsync=False, map_size=256 << 20)
    try:
        old.create_account("alice")
        inbox = old.get_folder("alice", "INBOX")
        assert inbox is not None
        for number in range(1, 7):
            old.append("alice", inbox.id, message(f"m{number}"))
        synced = old.get_folder("alice", "INBOX")   # what the client cached: UIDs 1:6 at this modseq
        assert synced is not None
        old.remove_messages("alice", inbox.id, [2, 3, 6])
        export_maildir_tree(old, "alice", tmp_path / "export")
    finally:
        old.close()
    with Conversation(tmp_path / "new") as conv:
        report = import_maildir_tree(conv.store, "alice", tmp_path / "export")
        assert report.folders[0].uids_kept and report.folders[0].imported == 3
        assert report.folders[0].modseq_floor == 0   # the export's own HIGHESTMODSEQ, no floor
        conv.login()
        conv.command("ENABLE QRESYNC")
        conv.script(f"""
            C: a1 SELECT INBOX (QRESYNC ({synced.uidvalidity} {synced.highestmodseq} 1:6))
            S: * FLAGS ({{*}})
            S: * OK [PERMANENTFLAGS ({{*}})] {{*}}
            S: * 3 EXISTS
            S: * 3 RECENT
            S: * OK [UNSEEN 1] {{*}}
            S: * OK [UIDVALIDITY {synced.uidvalidity}] {{*}}
            S: * OK [UIDNEXT 7] {{*}}
            S: * OK [HIGHESTMODSEQ {{n:top}}] {{*}}
            S: * OK [MAILBOXID ({{*}})] {{*}}
            S: * VANISHED (EARLIER) 2:3,6
            S: * 1 FETCH (UID 1 {{*}}
            S: * 2 FETCH (UID 4 {{*}}
            S: * 3 FETCH (UID 5 {{*}}
            S: a1 OK [READ-WRITE] {{*}}
        """)
        assert _uid_fetch_vanished(conv, synced.highestmodseq) == [b"* VANISHED (EARLIER) 2:3,6"]
        # Synchronised here since: told of nothing more.
        assert _uid_fetch_vanished(conv, int(conv.captured["top"])) == []


def test_condstore_client_of_dovecot_is_told_of_every_message_and_gap(tmp_path: Path) -> None:
    """dovecot-uidlist holds UIDs but not Dovecot's HIGHESTMODSEQ: a client that synchronised
    there holds a mod-sequence of that server's, here 5000. The import starts the folder above any
    such mod-sequence (UNKNOWN_SOURCE_MODSEQ_FLOOR), so the client's resync names every message's
    flags and every UID expunged there, instead of nothing because 5000 is past HIGHESTMODSEQ."""
    make_dovecot_maildir(tmp_path / "Maildir")
    with Conversation(tmp_path / "new") as conv:
        report = import_maildir_tree(conv.store, "alice", tmp_path / "Maildir")
        inbox = report.folders[0]
        assert inbox.folder == "INBOX" and inbox.uids_kept and inbox.imported == 5
        assert inbox.modseq_floor == UNKNOWN_SOURCE_MODSEQ_FLOOR == 1 << 32
        assert "HIGHESTMODSEQ raised to 4294967296 (the source's is not known)" in inbox.summary()
        conv.login()
        conv.command("ENABLE QRESYNC")
        conv.script("""
            C: a1 SELECT INBOX (QRESYNC (1234567 5000 1:20))
            S: * FLAGS ({*})
            S: * OK [PERMANENTFLAGS ({*})] {*}
            S: * 5 EXISTS
            S: * 5 RECENT
            S: * OK [UNSEEN 3] {*}
            S: * OK [UIDVALIDITY 1234567] {*}
            S: * OK [UIDNEXT 21] {*}
            S: * OK [HIGHESTMODSEQ {n:top}] {*}
            S: * OK [MAILBOXID ({*})] {*}
            S: * VANISHED (EARLIER) 1:2,4,8:19
            S: * 1 FETCH (UID 3 FLAGS (\\Seen $Forwarded \\Recent) MODSEQ ({n}))
            S: * 2 FETCH (UID 5 FLAGS (\\Answered \\Flagged \\Seen Work \\Recent) MODSEQ ({n}))
            S: * 3 FETCH (UID 6 FLAGS (\\Deleted \\Recent) MODSEQ ({n}))
            S: * 4 FETCH (UID 7 FLAGS (\\Recent) MODSEQ ({n}))
            S: * 5 FETCH (UID 20 FLAGS (\\Recent) MODSEQ ({n}))
            S: a1 OK [READ-WRITE] {*}
        """)
        assert int(conv.captured["top"]) > UNKNOWN_SOURCE_MODSEQ_FLOOR
        changed = [line for line in conv.command("FETCH 1:* (FLAGS) (CHANGEDSINCE 5000)") if line.startswith(b"* ") and b" FETCH (" in line]
        assert len(changed) == 5
        assert _uid_fetch_vanished(conv, 5000) == [b"* VANISHED (EARLIER) 1:2,4,8:19"]
        assert _uid_fetch_vanished(conv, int(conv.captured["top"])) == []

        again = import_maildir_tree(conv.store, "alice", tmp_path / "Maildir")
        assert again.folders[0].skipped == 5 and again.folders[0].modseq_floor == 0   # raised already


def test_highestmodseq_given_for_a_source_that_does_not_record_it(tmp_path: Path, store: Store) -> None:
    """The HIGHESTMODSEQ an admin read from Dovecot (doveadm mailbox status) replaces the floor:
    the folder starts there, not at 2**32."""
    store.create_account("emil")
    report = import_mbox(store, "emil", "Old", write(tmp_path / "box", DOVECOT_MBOX), highestmodseq=5000)
    assert report.uids_kept and report.modseq_floor == 5000
    assert "HIGHESTMODSEQ raised to 5000 (as given)" in report.summary()
    folder = store.get_folder("emil", "Old")
    assert folder is not None and 5000 < folder.highestmodseq < 5010
    assert [meta.modseq > 5000 for meta in store.messages("emil", folder.id)] == [True, True]
    assert list(store.vanished_since("emil", folder.id, 4999).among(range(1, 14))) == [*range(1, 7), 8, *range(10, 13)]

    # New UIDs (the folder holds other mail): clients download the messages anew, no floor.
    other = store.create_folder("emil", "Busy")
    store.append("emil", other.id, message("already here"))
    busy = import_mbox(store, "emil", "Busy", write(tmp_path / "box", DOVECOT_MBOX), highestmodseq=5000)
    assert not busy.uids_kept and busy.modseq_floor == 0 and "HIGHESTMODSEQ" not in busy.summary()
    again = store.get_folder("emil", "Busy")
    assert again is not None and again.highestmodseq < 5000
    for wrong in (0, (1 << 62) + 1):
        with pytest.raises(ValueError, match="highestmodseq must be from 1 to"):
            import_maildir_tree(store, "emil", tmp_path, highestmodseq=wrong)
