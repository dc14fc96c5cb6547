"""midb.exporter: Maildir++ and mbox exports, and their round trip through midb.importer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from store_helpers import folder_state as state

from midb.cli import main as midb_main
from midb.errors import NoSuchFolder
from midb.exporter import ExportFailed, export_maildir_tree, export_mbox, maildir_component
from midb.importer import (
    ImportFailed,
    find_maildir_folders,
    import_maildir,
    import_maildir_tree,
    import_mbox,
    parse_uidlist,
    read_dovecot_keywords,
    read_dovecot_subscriptions,
    split_maildir_name,
)
from midb.mailfiles import EXPORT_INFO_FILE, decode_mutf7, encode_mutf7
from midb.messages import MessageMeta
from midb.store import Store


def message(subject: str, body: str = "hello\r\n") -> bytes:
    return f"From: a@example.org\r\nSubject: {subject}\r\n\r\n{body}".encode()


def fill(store: Store, account: str, name: str, count: int, *, special_use: str | None = None,
         flags: tuple[str, ...] = ()) -> int:
    folder = store.get_folder(account, name) or store.create_folder(account, name, special_use=special_use)
    for n in range(count):
        store.append(account, folder.id, message(f"{name} {n}"), flags=flags, internaldate=1_700_000_000 + n)
    return folder.id


def test_mutf7_and_listescape_names_come_back() -> None:
    for name in ("Entwürfe", "日本語", "a&b", "plain", "&", "x~y"):
        assert decode_mutf7(encode_mutf7(name)) == name
    assert encode_mutf7("Entwürfe") == "Entw&APw-rfe"  # RFC 3501 section 5.1.3's form
    assert maildir_component("a.b") == "a\\2eb"
    assert maildir_component("~home") == "\\7ehome" and maildir_component("x~") == "x~"
    assert maildir_component("back\\slash") == "back\\5cslash"
    assert maildir_component("..") == "\\2e\\2e"  # never a path of its own


def test_maildir_round_trip_keeps_uids_flags_keywords_dates_and_modseqs(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    inbox = store.get_folder("alice", "INBOX")
    assert inbox is not None
    uids = [store.append("alice", inbox.id, message(f"m{n}"), internaldate=1_690_000_000 + n)[1] for n in range(6)]
    store.store_flags("alice", inbox.id, uids[:2], "add", ["\\Seen", "$Forwarded"])
    store.store_flags("alice", inbox.id, uids[2:3], "add", ["\\Answered", "\\Flagged", "\\Draft", "Work", "$Label1"])
    store.store_flags("alice", inbox.id, uids[3:4], "add", ["\\Deleted"])
    for _ in range(30):  # a HIGHESTMODSEQ well above what a fresh import would reach
        store.store_flags("alice", inbox.id, uids[4:5], "add", ["\\Seen"])
        store.store_flags("alice", inbox.id, uids[4:5], "remove", ["\\Seen"])
    store.store_flags("alice", inbox.id, [uids[1], uids[5]], "add", ["\\Deleted"])
    store.expunge("alice", inbox.id, [uids[1], uids[5]])  # one inside, one at the end: UIDNEXT stays past it
    sent = store.list_folders("alice")
    sent_name = next(folder.name for folder in sent if folder.special_use == "\\Sent")
    fill(store, "alice", sent_name, 2, flags=("\\Seen",))
    for name in ("Archive", "Archive/2023", "a.b/Entwürfe", "~home", "back\\slash"):
        fill(store, "alice", name, 1)
    store.set_subscribed("alice", "a.b/Entwürfe", True)
    store.set_subscribed("alice", "Gone/Old", True)  # a subscription outlives its folder
    before = {folder.name: folder for folder in store.list_folders("alice")}

    root = tmp_path / "export"
    report = export_maildir_tree(store, "alice", root)
    assert report.problems == []
    assert report.folders == len(before) and report.messages == 4 + 2 + 5

    # What Dovecot reads: the uidlist, keyword letters, flag letters in order, S= and W=, mtimes.
    uidlist = parse_uidlist((root / "dovecot-uidlist").read_text())
    assert uidlist is not None and uidlist.uidvalidity == before["INBOX"].uidvalidity
    assert uidlist.nextuid == before["INBOX"].uidnext and sorted(uidlist.uids.values()) == [uids[0], uids[2], uids[3], uids[4]]
    letters = {uidlist.uids[split_maildir_name(name)[0]]: split_maildir_name(name)[1]
               for name in os.listdir(root / "cur")}
    keywords = read_dovecot_keywords(str(root / "dovecot-keywords"))
    assert sorted(keywords.values()) == ["$Forwarded", "$Label1", "Work"]  # Dovecot reads no P
    forwarded = chr(97 + next(i for i, k in keywords.items() if k == "$Forwarded"))
    assert letters[uids[0]] == "PS" + forwarded and letters[uids[3]] == "T" and letters[uids[4]] == ""
    assert letters[uids[2]] == "".join(sorted("DFR" + "".join(chr(97 + i) for i, k in keywords.items() if k != "$Forwarded")))
    subscriptions = (root / "subscriptions").read_text().split("\n")
    assert subscriptions[:2] == ["V\t2", ""] and "a\\2eb\tEntwürfe" in subscriptions
    for name in os.listdir(root / "cur"):
        data = (root / "cur" / name).read_bytes()
        assert f",S={len(data)},W={len(data)}:2," in name  # stored with CRLF: the two sizes agree
        assert os.stat(root / "cur" / name).st_mtime == state(store, "alice", "INBOX")[
            uidlist.uids[split_maildir_name(name)[0]]][1]
    assert (root / ".a\\2eb.Entw&APw-rfe" / "maildirfolder").exists()
    assert oct(os.stat(root / "cur").st_mode & 0o777) == "0o700"
    assert ["a.b", "Entwürfe"] in read_dovecot_subscriptions(str(root))

    # Imported into an account whose special folders have other names (German), with UIDs kept.
    store.create_account("bernd", lang="de")
    imported = import_maildir_tree(store, "bernd", root)
    assert imported.problems == [] and imported.failed == 0
    after = {folder.name: folder for folder in store.list_folders("bernd")}
    special = {folder.special_use: folder.name for folder in after.values() if folder.special_use}

    def target_of(name: str) -> str:  # a special folder goes to the account's own, its subfolders with it
        top, *rest = name.split("/")
        use = before[top].special_use
        return "/".join([special[use] if use else top, *rest])

    targets = {name: target_of(name) for name in before}
    assert targets[sent_name] == "Gesendet" and targets["Archive/2023"] == "Archiv/2023"
    assert {folder.folder for folder in imported.folders} == set(targets.values())
    for name, target in targets.items():
        assert state(store, "bernd", target) == state(store, "alice", name), name
        assert after[target].uidvalidity == before[name].uidvalidity, name
        assert after[target].uidnext == before[name].uidnext, name
        assert after[target].highestmodseq >= before[name].highestmodseq, name
    assert after["Gesendet"].special_use == "\\Sent"
    assert {"a.b/Entwürfe", "Gone/Old"} <= set(store.subscriptions("bernd"))


def test_export_info_maps_special_use_by_what_the_folder_was(tmp_path: Path, store: Store) -> None:
    # alice's \Sent is "Gesendet" (German); bernd's is "Sent": no name guess could tell.
    store.create_account("alice", lang="de")
    fill(store, "alice", "Gesendet", 2)
    fill(store, "alice", "Gesendet/2023", 1)
    export_maildir_tree(store, "alice", tmp_path / "export")
    info = json.loads((tmp_path / "export" / EXPORT_INFO_FILE).read_text())
    assert info["folders"]["Gesendet"]["special_use"] == "\\Sent"
    store.create_account("bernd")
    import_maildir_tree(store, "bernd", tmp_path / "export")
    sent = next(folder for folder in store.list_folders("bernd") if folder.special_use == "\\Sent")
    assert sent.name == "Sent" and sent.messages == 2
    assert state(store, "bernd", "Sent/2023") == state(store, "alice", "Gesendet/2023")
    assert store.get_folder("bernd", "Gesendet") is None


def test_keywords_beyond_26_letters_are_reported(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    inbox = store.get_folder("alice", "INBOX")
    assert inbox is not None
    for n in range(28):
        uid = store.append("alice", inbox.id, message(f"k{n}"))[1]
        # keyword k00 on every message, k01 on all but one, ...: k26 and k27 are the least used
        store.store_flags("alice", inbox.id, [uid], "add", [f"k{i:02d}" for i in range(28 - n)])
    report = export_maildir_tree(store, "alice", tmp_path / "export")
    assert report.problems == ["INBOX: keywords beyond Maildir's 26 letters per folder not exported: k26 k27"]
    assert len(read_dovecot_keywords(str(tmp_path / "export" / "dovecot-keywords"))) == 26


def test_a_folder_whose_directory_name_is_too_long_is_reported(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    long_name = "/".join(["ä" * 60] * 3)  # 360 bytes of UTF-8; as modified UTF-7, over 255 in one name
    fill(store, "alice", long_name, 1)
    fill(store, "alice", "Short", 1)
    report = export_maildir_tree(store, "alice", tmp_path / "export")
    parent = long_name.rsplit("/", 1)[0]  # two components make 325 bytes already: too long as well
    assert [problem.split(":")[0] for problem in report.problems] == [parent, long_name]
    found = {"/".join(components) for _, components in find_maildir_folders(tmp_path / "export")[0]}
    assert "Short" in found and long_name not in found


def test_folder_selection_and_destination_checks(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    fill(store, "alice", "Projects", 1)
    fill(store, "alice", "Projects/x", 1)
    fill(store, "alice", "Other", 1)
    report = export_maildir_tree(store, "alice", tmp_path / "part", folders=["Projects"])
    assert report.folders == 2
    found = {"/".join(components) for _, components in find_maildir_folders(tmp_path / "part")[0]}
    assert found == {"Projects", "Projects/x"}
    with pytest.raises(ExportFailed, match="not an empty directory"):
        export_maildir_tree(store, "alice", tmp_path / "part")
    with pytest.raises(NoSuchFolder):
        export_maildir_tree(store, "alice", tmp_path / "none", folders=["Missing"])
    assert not (tmp_path / "none").exists()
    (tmp_path / "file.mbox").write_bytes(b"")
    with pytest.raises(ExportFailed, match="exists"):
        export_mbox(store, "alice", "Projects", tmp_path / "file.mbox")


def test_mbox_round_trip_with_from_lines_and_a_message_claiming_state(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    folder_id = fill(store, "alice", "Lists", 0)
    bodies = [
        message("one", "From the start of a line\r\n>From quoted already\r\n\r\nFrom after a blank line\r\n"),
        b"Status: RO\r\nX-UID: 99\r\nX-Keywords: Spoofed\r\nSubject: claims state\r\n\r\nbody\r\n",
        message("three", "no final line break"),
    ]
    uids = [store.append("alice", folder_id, body, internaldate=1_700_000_000 + n, tzoffset=60)[1]
            for n, body in enumerate(bodies)]
    store.store_flags("alice", folder_id, uids[:1], "add", ["\\Seen", "\\Answered", "Work"])
    store.store_flags("alice", folder_id, uids[2:], "add", ["\\Deleted", "\\Draft", "\\Flagged"])
    path = tmp_path / "lists.mbox"
    report = export_mbox(store, "alice", "Lists", path)
    assert report.messages == 3 and report.problems == []
    text = path.read_bytes()
    assert b"\r\n" not in text and b"\n>From the start" in text and b"\n>>From quoted" in text
    assert b"Spoofed" not in text and text.count(b"\nX-UID: ") == 3

    store.create_account("bernd")
    imported = import_mbox(store, "bernd", "Lists", path)
    assert imported.uids_kept and imported.failed == 0
    source, copy = state(store, "alice", "Lists"), state(store, "bernd", "Lists")
    assert copy[uids[0]] == source[uids[0]]
    assert copy[uids[2]][:2] == source[uids[2]][:2] and copy[uids[2]][2] == bodies[2] + b"\r\n"
    assert copy[uids[1]][0] == set() and copy[uids[1]][2] == b"Subject: claims state\r\n\r\nbody\r\n"
    folder = store.get_folder("bernd", "Lists")
    assert folder is not None and [m.tzoffset for m in store.messages("bernd", folder.id)] == [60, 60, 60]


def test_cli_export_then_import(tmp_path: Path, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    store.create_account("alice")
    fill(store, "alice", "Work", 3, flags=("\\Seen",))
    store.close()
    where = ["--store", str(tmp_path / "store")]
    assert midb_main([*where, "export", "maildir", "alice", str(tmp_path / "out")]) == 0
    assert "3 messages" in capsys.readouterr().out
    assert midb_main([*where, "export", "mbox", "alice", "Work", str(tmp_path / "work.mbox")]) == 0
    assert midb_main([*where, "export", "mbox", "alice", "Nope", str(tmp_path / "x.mbox")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert midb_main([*where, "user", "add", "bernd", "--no-password"]) == 0
    assert midb_main([*where, "import", "maildir", "bernd", str(tmp_path / "out")]) == 0
    reopened = Store(tmp_path / "store", fsync=False, map_size=256 << 20)
    try:
        assert state(reopened, "bernd", "Work") == state(reopened, "alice", "Work")
    finally:
        reopened.close()


def test_a_client_synced_before_the_export_learns_of_every_imported_message(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    folder_id = fill(store, "alice", "Work", 3)
    for _ in range(20):
        store.store_flags("alice", folder_id, [1], "add", ["\\Seen"])
        store.store_flags("alice", folder_id, [1], "remove", ["\\Seen"])
    store.store_flags("alice", folder_id, [2], "add", ["\\Seen"])  # the last change a client may have missed
    exported = store.get_folder("alice", "Work")
    assert exported is not None
    export_maildir_tree(store, "alice", tmp_path / "export")
    store.create_account("bernd")
    import_maildir_tree(store, "bernd", tmp_path / "export")
    copy = store.get_folder("bernd", "Work")
    assert copy is not None and copy.highestmodseq > exported.highestmodseq
    # A client whose last sync was just before the last change asks what changed since then:
    # every message, as their mod-sequences now all lie above what it holds (RFC 7162 3.1.6).
    changed, _ = store.changes_since("bernd", copy.id, exported.highestmodseq - 1)
    assert sorted(meta.uid for meta in changed) == [1, 2, 3]


def test_changes_during_an_export_are_notes_not_problems(tmp_path: Path, store: Store,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_account("alice")
    inbox_id = fill(store, "alice", "INBOX", 2)
    fill(store, "alice", "Doomed", 1)
    fill(store, "alice", "Renamed", 1, special_use="\\Archive")
    messages = store.messages

    def meanwhile(account: str, folder_id: int) -> list[MessageMeta]:
        folder = store.folder_by_id(account, folder_id)
        assert folder is not None
        if folder.name == "Doomed":
            store.delete_folder(account, "Doomed")
        elif folder.name == "INBOX":
            found = messages(account, folder_id)
            store.store_flags(account, inbox_id, [2], "add", ["\\Deleted"])
            store.expunge(account, inbox_id, [2])
            gone = found[1].blob  # its body removed too (it may linger a while: midb.removal)
            monkeypatch.setattr(store, "read_body", lambda blob, *args: (
                raise_(NoSuchFolder("body gone")) if blob == gone else read_body(blob, *args)))
            return found  # as read just before the expunge
        elif folder.name == "Renamed":
            store.rename_folder(account, "Renamed", "Moved")
        return messages(account, folder_id)

    def raise_(error: Exception) -> bytes:
        raise error

    read_body = store.read_body
    monkeypatch.setattr(store, "messages", meanwhile)
    report = export_maildir_tree(store, "alice", tmp_path / "export")
    assert report.problems == []
    assert report.notes == ["Doomed: deleted during the export", "INBOX: UID 2 was expunged during the export"]
    uidlist = parse_uidlist((tmp_path / "export" / "dovecot-uidlist").read_text())
    assert uidlist is not None and sorted(uidlist.uids.values()) == [1]
    info = json.loads((tmp_path / "export" / EXPORT_INFO_FILE).read_text())
    assert info["complete"] is True and info["folders"]["Renamed"]["special_use"] == "\\Archive"


def test_an_export_cut_short_is_refused_by_the_import(tmp_path: Path, store: Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_account("alice")
    fill(store, "alice", "INBOX", 3)
    fill(store, "alice", "Later", 2)
    read_body = store.read_body
    calls = 0

    def interrupted(blob: str, *args: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return read_body(blob, *args)

    monkeypatch.setattr(store, "read_body", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_maildir_tree(store, "alice", tmp_path / "export")
    calls = 0
    with pytest.raises(KeyboardInterrupt):
        export_mbox(store, "alice", "INBOX", tmp_path / "inbox.mbox")
    assert sorted(os.listdir(tmp_path)) == ["export", "store"]  # no mbox, whole or partial
    monkeypatch.undo()
    store.create_account("bernd")
    with pytest.raises(ImportFailed, match="did not finish"):
        import_maildir_tree(store, "bernd", tmp_path / "export")
    assert state(store, "bernd", "INBOX") == {}


def test_folder_names_are_case_sensitive_but_for_inbox(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    for name in ("Proj", "proj", "Proj/a", "proj/b", "INBOX/x"):
        fill(store, "alice", name, 1)
    report = export_maildir_tree(store, "alice", tmp_path / "proj", folders=["Proj", "inbox"])
    found = {"/".join(components) for _, components in find_maildir_folders(tmp_path / "proj")[0]}
    assert report.problems == [] and found == {"Proj", "Proj/a", "INBOX", "INBOX/x"}
    export_maildir_tree(store, "alice", tmp_path / "all")
    store.create_account("bernd")
    imported = import_maildir_tree(store, "bernd", tmp_path / "all")
    assert imported.problems == []
    for name in ("Proj", "proj", "Proj/a", "proj/b", "INBOX/x"):
        assert state(store, "bernd", name) == state(store, "alice", name), name


def test_a_special_folder_keeps_its_target_over_a_plain_folder_of_that_name(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    sent = next(folder for folder in store.list_folders("alice") if folder.special_use == "\\Sent")
    store.rename_folder("alice", sent.name, "Sent Items")
    fill(store, "alice", "Sent Items", 2)
    fill(store, "alice", "Sent", 1)  # a plain folder of the name bernd's \Sent has
    export_maildir_tree(store, "alice", tmp_path / "export")
    store.create_account("bernd")
    imported = import_maildir_tree(store, "bernd", tmp_path / "export")
    bernd_sent = next(folder for folder in store.list_folders("bernd") if folder.special_use == "\\Sent")
    assert bernd_sent.name == "Sent"
    assert state(store, "bernd", "Sent") == state(store, "alice", "Sent Items")
    assert state(store, "bernd", "Sent (imported)") == state(store, "alice", "Sent")
    assert imported.problems == [f"{tmp_path / 'export' / '.Sent'}: Sent is already the target of another folder; "
                                 "importing into Sent (imported)"]


def test_bodies_come_back_byte_for_byte(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    inbox = store.get_folder("alice", "INBOX")
    assert inbox is not None
    for data in (b"Subject: bare\n\nline feeds only\n", b"Subject: mixed\r\n\nodd\rends\n", b"no header at all"):
        store.append("alice", inbox.id, data)
    export_maildir_tree(store, "alice", tmp_path / "export")
    store.create_account("bernd")
    import_maildir_tree(store, "bernd", tmp_path / "export")
    assert state(store, "bernd", "INBOX") == state(store, "alice", "INBOX")


def test_one_folder_of_an_export_imported_on_its_own_is_taken_as_the_tree_takes_it(tmp_path: Path,
                                                                                     store: Store) -> None:
    """``midb import maildir --into`` of one folder of an export (review57b H1): its modseqs and
    bytes kept, an unfinished or damaged export refused."""
    store.create_account("alice")
    folder_id = fill(store, "alice", "Projects", 0)
    store.append("alice", folder_id, b"Subject: bare\n\nline feeds\n")
    for _ in range(10):
        store.store_flags("alice", folder_id, [1], "add", ["\\Seen"])
        store.store_flags("alice", folder_id, [1], "remove", ["\\Seen"])
    source = store.get_folder("alice", "Projects")
    assert source is not None
    export_maildir_tree(store, "alice", tmp_path / "export")
    store.create_account("bernd")
    report = import_maildir(store, "bernd", "Restored", tmp_path / "export" / ".Projects")
    restored = store.get_folder("bernd", "Restored")
    assert report.uids_kept and restored is not None
    assert restored.uidvalidity == source.uidvalidity and restored.highestmodseq > source.highestmodseq
    assert state(store, "bernd", "Restored") == state(store, "alice", "Projects")  # bare LF kept
    info = tmp_path / "export" / EXPORT_INFO_FILE
    for damaged, why in ((info.read_text().replace('"complete": true', '"complete": false'), "did not finish"),
                         ("", "damaged"), ('{"folders": {"x": {"special_use": 3}}, "complete": true', "damaged")):
        info.write_text(damaged)
        with pytest.raises(ImportFailed, match=why):
            import_maildir(store, "bernd", "Again", tmp_path / "export" / ".Projects")
        with pytest.raises(ImportFailed, match=why):
            import_maildir_tree(store, "bernd", tmp_path / "export")


def test_an_export_whose_special_uses_are_not_names_imports_without_them(tmp_path: Path, store: Store) -> None:
    store.create_account("alice")
    fill(store, "alice", "Work", 1)
    export_maildir_tree(store, "alice", tmp_path / "export")
    info_path = tmp_path / "export" / EXPORT_INFO_FILE
    info = json.loads(info_path.read_text())
    info["folders"]["Work"]["special_use"] = ["\\Sent"]  # not a string: ignored, no traceback
    info_path.write_text(json.dumps(info))
    store.create_account("bernd")
    report = import_maildir_tree(store, "bernd", tmp_path / "export")
    assert report.problems == [] and state(store, "bernd", "Work") == state(store, "alice", "Work")


def test_a_folder_restored_from_an_older_export_gives_no_uid_again(tmp_path: Path, store: Store) -> None:
    """The export is made, mail comes after it (UIDs 4-5), the folder is deleted, and the export
    imported again: the folder's UIDVALIDITY comes back, so the UIDs a client saw on the later
    mail must not be given to new mail, nor its mod-sequences (closing57: the store remembers
    a deleted folder's UIDNEXT and HIGHESTMODSEQ). Also for a whole account deleted and restored."""
    store.create_account("alice")
    folder_id = fill(store, "alice", "Project", 3)
    export_maildir_tree(store, "alice", tmp_path / "backup")
    fill(store, "alice", "Project", 2)
    store.store_flags("alice", folder_id, [4], "add", ["\\Seen"])
    before = store.get_folder("alice", "Project")
    assert before is not None and before.uidnext == 6
    store.delete_folder("alice", "Project")
    (report,) = [item for item in import_maildir_tree(store, "alice", tmp_path / "backup").folders
                 if item.folder == "Project"]
    restored = store.get_folder("alice", "Project")
    assert restored is not None and restored.uidvalidity == before.uidvalidity
    assert store.uids("alice", restored.id) == [1, 2, 3]
    assert restored.uidnext == 6 and restored.highestmodseq > before.highestmodseq
    assert any("had UIDs up to 5 before it was deleted" in note for note in report.notes)
    assert store.append("alice", restored.id, message("new"))[1] == 6
    # A QRESYNC client that last synchronised before the deletion is told that what it held
    # after the backup (UIDs 4 and 5) is gone; 1-3 and the new 6 are not.
    _changed, vanished = store.changes_since("alice", restored.id, before.highestmodseq)
    assert list(vanished.among([1, 2, 3, 4, 5, 6])) == [4, 5]
    # A whole account deleted and restored under its name.
    later = store.get_folder("alice", "Project")
    assert later is not None
    store.delete_account("alice")
    store.create_account("alice")
    import_maildir_tree(store, "alice", tmp_path / "backup")
    again = store.get_folder("alice", "Project")
    assert again is not None and again.uidvalidity == before.uidvalidity and again.uidnext == 7
    assert store.verify() == []


def test_only_a_folder_that_gave_out_uids_is_remembered_when_deleted(store: Store) -> None:
    """A folder that never held a message leaves no retired entry (a client creating and
    deleting folders without end grew the table by an entry each time); one that held mail
    leaves one, also when its whole account is deleted."""
    store.create_account("alice")
    for round_number in range(3):
        empty = store.create_folder("alice", f"Scratch{round_number}")
        store.delete_folder("alice", f"Scratch{round_number}")
        assert store.retired_folder("alice", empty.uidvalidity) is None
    fill(store, "alice", "Used", 2)
    used = store.get_folder("alice", "Used")
    assert used is not None
    store.delete_folder("alice", "Used")
    assert store.retired_folder("alice", used.uidvalidity) == (3, used.highestmodseq)
    fill(store, "alice", "Kept", 1)
    kept = store.get_folder("alice", "Kept")
    inbox = store.get_folder("alice", "INBOX")
    assert kept is not None and inbox is not None
    store.delete_account("alice")
    assert store.retired_folder("alice", kept.uidvalidity) == (2, kept.highestmodseq)
    assert store.retired_folder("alice", inbox.uidvalidity) is None


def test_save_dates_come_back_with_the_export(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Trash restored from a backup expires on its old schedule: each message's save date is
    exported (midb-savedates in its folder's directory) and given back by the import, never a
    later one than the import's; a line that does not read is noted, its message saved now."""
    from midb import savedates

    store.create_account("alice")
    with monkeypatch.context() as patched:
        patched.setattr(savedates, "now", lambda: 1_600_000_000)
        trash = store.get_folder("alice", "Trash")
        assert trash is not None
        uids = [store.append("alice", trash.id, message(f"old {n}"))[1] for n in range(3)]
    export_maildir_tree(store, "alice", tmp_path / "backup")
    lines = (tmp_path / "backup" / ".Trash" / "midb-savedates").read_text().splitlines()
    assert lines == [f"{uid} 1600000000" for uid in uids]
    (tmp_path / "backup" / ".Trash" / "midb-savedates").write_text("\n".join([*lines[:2], "3 soon", ""]))
    store.create_account("bernd")
    report = import_maildir_tree(store, "bernd", tmp_path / "backup")
    copy = store.get_folder("bernd", "Trash")
    assert copy is not None
    dates = store.save_dates("bernd", copy.id, uids)
    assert dates[uids[0]] == dates[uids[1]] == 1_600_000_000 and dates[uids[2]] > 1_700_000_000
    assert any("1 lines not understood" in note for item in report.folders for note in item.notes)
    assert store.expire("bernd", copy.id, 1_650_000_000) == uids[:2]
    assert store.restore_save_dates("bernd", copy.id, {uids[2]: 2_000_000_000}) == 0  # never later
