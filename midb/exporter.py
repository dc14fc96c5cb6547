"""Export an account's mail to a (Dovecot) Maildir++ tree, or one folder to an mbox file.

The inverse of midb.importer: what it reads, this writes, so an export imported again (into
another account, another store, or the same account after a loss) gives back the same folders,
UIDVALIDITY and UIDs, flags, keywords, internal dates and bodies, and clients keep their caches.
Uses: a per-account backup, restoring one folder from a store backup (``midb --store BACKUP
export``), moving an account to another server.

The Maildir++ tree is what Dovecot reads: the root is INBOX, ``Sub/Folder`` is ``.Sub.Folder``
(modified UTF-7, and listescape codes for a '.' in a name: midb.mailfiles), ``dovecot-uidlist``
keeps UIDVALIDITY, UIDNEXT and each file's UID, ``dovecot-keywords`` names the keyword letters,
``subscriptions`` lists the subscribed folders, and a file's modification time is its internal
date. What Maildir cannot hold goes into EXPORT_INFO_FILE (JSON) at the root, which Dovecot
ignores and midb.importer reads: each folder's special use and HIGHESTMODSEQ (so that an import
keeps CONDSTORE clients' mod-sequences valid), and whether the export finished: it is written
first saying it did not, and replaced at the very end, so an export cut short (interrupted, a
full disk) is refused by the importer rather than taken for the account. Maildir has 26 keyword
letters per folder: the most used keywords get them, and any others are reported, not exported.

The mbox is mboxrd, as mutt and Thunderbird read it, with UW-IMAP's ``X-IMAPbase``/``X-UID``
and ``Status``/``X-Status``/``X-Keywords`` headers (those a message carried itself are
dropped, as an import drops them). Lines end in LF there; an import turns them back to CRLF.
It is written beside its name and renamed into place once complete.

Each folder is read as it stands when its turn comes, so exporting while gximap runs is safe:
a message expunged or a folder deleted meanwhile is left out, with a note (not a problem). The
written files are synced to disk before the export returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from midb.errors import InvalidName, MidbError, NoSuchFolder
from midb.folders import SEPARATOR, normalize_name
from midb.importer import require_account
from midb.mailfiles import (
    EXPORT_INFO_FILE,
    MAILDIR_LETTERS,
    MBOX_HIDDEN_HEADERS,
    MBOX_X_STATUS_LETTERS,
    SAVE_DATES_FILE,
    SYSTEM_FLAGS,
    encode_mutf7,
    header_block_end,
    header_fields,
    listescape,
    strip_fields,
    tab_escape,
)

if TYPE_CHECKING:
    from midb.folders import FolderInfo
    from midb.messages import MessageMeta
    from midb.store import Store

__all__ = ["ExportFailed", "ExportReport", "export_maildir_tree", "export_mbox", "maildir_component"]

_EXPORT_INFO_FORMAT = 1
_MAILDIR_KEYWORD_LETTERS = 26
_LETTER_OF_FLAG = {flag: letter for letter, flag in MAILDIR_LETTERS.items()}


class ExportFailed(MidbError):
    """The export cannot be written (destination not empty, unknown folder, I/O error)."""


@dataclass(slots=True)
class ExportReport:
    folders: int = 0
    messages: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)  # what the export lacks: the command fails
    notes: list[str] = field(default_factory=list)     # changes while it ran, which it rightly lacks

    def summary(self) -> str:
        return (f"{self.messages} messages ({self.bytes} bytes) in {self.folders} folders exported"
                f"{f', {len(self.problems)} problems' if self.problems else ''}")


# ---------------------------------------------------------------------------------------------
# reading the store


def _folder_named(folders: Sequence[FolderInfo], name: str) -> FolderInfo | None:
    """The folder called ``name``: names are case-sensitive but for INBOX (normalize_name)."""
    try:
        wanted = normalize_name(name.rstrip(SEPARATOR))
    except InvalidName:
        return None
    return next((folder for folder in folders if folder.name == wanted), None)


def _selected_folders(store: Store, account: str, wanted: Sequence[str] | None) -> list[FolderInfo]:
    """The account's folders, or those named in ``wanted`` and the folders below them."""
    folders = sorted(store.list_folders(account), key=lambda folder: folder.name)
    if not wanted:
        return folders
    chosen: dict[int, FolderInfo] = {}
    for name in wanted:
        top = _folder_named(folders, name)
        if top is None:
            raise NoSuchFolder(f"no such folder: {name}")
        for folder in folders:
            if folder.id == top.id or folder.name.startswith(top.name + SEPARATOR):
                chosen[folder.id] = folder
    return sorted(chosen.values(), key=lambda folder: folder.name)


def _messages(store: Store, account: str, folder: FolderInfo, report: ExportReport
              ) -> tuple[FolderInfo, list[MessageMeta], Iterator[tuple[MessageMeta, bytes]]]:
    """The folder as it is now (UIDNEXT and HIGHESTMODSEQ read after its messages: they only
    grow, so they are at least what the messages carry), its messages, and those with their
    bodies, read one at a time. NoSuchFolder when it is gone."""
    metas = store.messages(account, folder.id)
    current = store.folder_by_id(account, folder.id)
    if current is None:
        raise NoSuchFolder(folder.name)

    def bodies() -> Iterator[tuple[MessageMeta, bytes]]:
        for meta in metas:
            try:
                data = store.read_body(meta.blob)
            except (MidbError, OSError) as exc:
                try:
                    gone = not store.get_messages(account, folder.id, [meta.uid])
                except NoSuchFolder:
                    gone = True  # the folder was deleted meanwhile
                except MidbError:
                    gone = False
                if gone:
                    report.notes.append(f"{folder.name}: UID {meta.uid} was expunged during the export")
                else:
                    report.problems.append(f"{folder.name}: UID {meta.uid} not exported, its body is unreadable: {exc}")
                continue
            yield meta, data

    return current, metas, bodies()


def _sync(path: str) -> None:
    """Flush the file system holding ``path`` (syncfs(2)), not every one as sync(2) does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed", path)
    except AttributeError:  # no syncfs in this C library
        os.sync()
    finally:
        os.close(fd)


def _create(path: str) -> IO[bytes]:
    return open(path, "xb", opener=lambda name, flags: os.open(name, flags, 0o600))  # noqa: SIM115


def _write_file(path: str, data: bytes, mtime: int | None = None) -> None:
    with _create(path) as fh:
        fh.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


# ---------------------------------------------------------------------------------------------
# Maildir++


def maildir_component(component: str) -> str:
    """One folder name component as a Maildir++ directory name part (midb.importer undoes it)."""
    return listescape(encode_mutf7(component))


def _maildir_directory(root: str, name: str) -> str:
    if name == "INBOX":
        return root
    return os.path.join(root, "." + ".".join(maildir_component(part) for part in name.split(SEPARATOR)))


# '/' and ':' as the Maildir specification asks; ',' would start a field (S=, W=) in Dovecot's eyes.
_HOST_UNSAFE = str.maketrans({"/": "\\057", ":": "\\072", ",": "\\054"})


def _host_part() -> str:
    return (socket.gethostname() or "localhost").translate(_HOST_UNSAFE)


def _prepare_destination(path: str) -> None:
    if os.path.lexists(path):
        if not os.path.isdir(path) or os.listdir(path):
            raise ExportFailed(f"{path} exists and is not an empty directory")
    else:
        try:
            os.mkdir(path, 0o700)
        except OSError as exc:
            raise ExportFailed(f"cannot create {path}: {exc.strerror or exc}") from exc


def _keyword_letters(metas: Sequence[MessageMeta]) -> tuple[dict[str, str], list[str]]:
    """({keyword: letter}, keywords left without one): the most used keywords get the letters."""
    used = Counter(flag for meta in metas for flag in meta.flags if not flag.startswith("\\"))
    ranked = sorted(used, key=lambda keyword: (-used[keyword], keyword))
    kept = ranked[:_MAILDIR_KEYWORD_LETTERS]
    return {keyword: chr(ord("a") + index) for index, keyword in enumerate(kept)}, ranked[len(kept):]


def _letters(flags: tuple[str, ...], keyword_letters: dict[str, str]) -> str:
    """The info letters of a file name, in ASCII order. $Forwarded gets both Maildir's P (what
    MUAs reading the Maildir show) and a keyword letter (Dovecot reads only that)."""
    letters = [letter for flag in flags for letter in (_LETTER_OF_FLAG.get(flag), keyword_letters.get(flag)) if letter]
    return "".join(sorted(letters))


def _virtual_size(data: bytes) -> int:
    """The size with every line ending as CRLF: Dovecot's ``W=`` (what IMAP serves)."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def _export_folder(store: Store, account: str, folder: FolderInfo, directory: str, host: str,
                   report: ExportReport) -> FolderInfo:
    """Write one folder; returns its state as exported."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(directory, sub), 0o700, exist_ok=True)
    if folder.name != "INBOX":
        _write_file(os.path.join(directory, "maildirfolder"), b"")
    current, metas, messages = _messages(store, account, folder, report)
    keyword_letters, left_out = _keyword_letters(metas)
    if left_out:
        report.problems.append(f"{folder.name}: keywords beyond Maildir's {_MAILDIR_KEYWORD_LETTERS} letters "
                               f"per folder not exported: {' '.join(left_out)}")
    uidlist = [f"3 V{current.uidvalidity} N{current.uidnext} G{uuid.uuid4().hex}"]
    for meta, data in messages:
        # Maildir's unique name: time.MusecPpid.host, with the UID where the microseconds go and
        # the UIDVALIDITY where the process id goes (unique within the folder; readers take the
        # base as opaque), then Dovecot's sizes.
        base = f"{meta.internaldate}.M{meta.uid}P{current.uidvalidity}.{host},S={len(data)},W={_virtual_size(data)}"
        _write_file(os.path.join(directory, "cur", f"{base}:2,{_letters(meta.flags, keyword_letters)}"),
                    data, meta.internaldate)
        uidlist.append(f"{meta.uid} :{base}")
        report.messages += 1
        report.bytes += len(data)
    _write_file(os.path.join(directory, "dovecot-uidlist"), "\n".join(uidlist).encode() + b"\n")
    saved = store.save_dates(account, folder.id, [meta.uid for meta in metas])
    if saved:
        _write_file(os.path.join(directory, SAVE_DATES_FILE),
                    "".join(f"{uid} {when}\n" for uid, when in sorted(saved.items())).encode())
    if keyword_letters:
        lines = "".join(f"{ord(letter) - ord('a')} {keyword}\n" for keyword, letter in keyword_letters.items())
        _write_file(os.path.join(directory, "dovecot-keywords"), lines.encode())
    report.folders += 1
    return current


def _subscriptions_file(names: list[str]) -> bytes:
    """Dovecot's ``subscriptions``, version 2: a header line and an empty one, then a name a
    line, its components in UTF-8 and listescaped as in directory names, separated by TAB (and
    TAB, CR, LF and \\x01 in them \\x01-escaped)."""
    lines = ["\t".join(tab_escape(listescape(part)) for part in name.split(SEPARATOR))
             for name in names]
    return "".join(f"{line}\n" for line in ["V\t2", "", *lines]).encode()


def _export_info(account: str, folders: dict[str, dict[str, object]] | None) -> bytes:
    description = {"format": _EXPORT_INFO_FORMAT, "account": account, "exported": int(time.time()),
                   "complete": folders is not None, "folders": folders or {}}
    return json.dumps(description, indent=1, ensure_ascii=False).encode() + b"\n"


def export_maildir_tree(store: Store, account: str, root: str | os.PathLike[str], *,
                        folders: Sequence[str] | None = None) -> ExportReport:
    """Write ``account``'s folders (or those in ``folders`` and the folders below them) as a
    Maildir++ tree at ``root``, which must not exist or be an empty directory."""
    account = require_account(store, account)
    root = os.fspath(root)
    chosen = _selected_folders(store, account, folders)
    _prepare_destination(root)
    report = ExportReport()
    host = _host_part()
    info: dict[str, dict[str, object]] = {}
    info_path = os.path.join(root, EXPORT_INFO_FILE)
    try:
        _write_file(info_path, _export_info(account, None))  # "not finished", until replaced below
        _sync(root)  # on disk before any message is: a power failure cannot leave the tree without it
        for folder in chosen:
            try:
                exported = _export_folder(store, account, folder, _maildir_directory(root, folder.name), host, report)
            except NoSuchFolder:
                report.notes.append(f"{folder.name}: deleted during the export")
                continue
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:
                    raise
                # A name of up to 480 bytes (midb.folders) can make a directory name longer than
                # the file system's 255; Dovecot could not hold that folder either.
                report.problems.append(f"{folder.name}: not exported, its Maildir++ directory name "
                                       f"would be too long for the file system")
                continue
            # By the name its directory has: a rename meanwhile does not move it.
            info[folder.name] = {"uidvalidity": exported.uidvalidity, "highestmodseq": exported.highestmodseq,
                                 "special_use": exported.special_use}
        subscribed = [name for name in store.subscriptions(account) if not folders or name in info]
        _write_file(os.path.join(root, "subscriptions"), _subscriptions_file(subscribed))
        _sync(root)
        _write_file(info_path + ".new", _export_info(account, info))
        os.replace(info_path + ".new", info_path)
        _sync(root)
    except OSError as exc:
        raise ExportFailed(f"cannot write the export under {root} (left there unfinished, and marked so): "
                           f"{exc.strerror or exc}") from exc
    return report


# ---------------------------------------------------------------------------------------------
# mbox


_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


def _from_line(meta: MessageMeta) -> bytes:
    local = time.gmtime(meta.internaldate + meta.tzoffset * 60)
    sign = "-" if meta.tzoffset < 0 else "+"
    zone = f"{sign}{abs(meta.tzoffset) // 60:02d}{abs(meta.tzoffset) % 60:02d}"
    return f"From MAILER-DAEMON {time.strftime('%a %b %e %H:%M:%S %Y', local)} {zone}\n".encode()


def _mbox_entry(meta: MessageMeta, data: bytes, folder: FolderInfo | None) -> bytes:
    data = data.replace(b"\r\n", b"\n")
    end = header_block_end(data)  # past the last header line; the empty line and body follow
    # The message's own bookkeeping headers would be read as folder state (midb.importer drops them).
    header = strip_fields(data[:end], header_fields(data, end), MBOX_HIDDEN_HEADERS)
    if header and not header.endswith(b"\n"):
        header += b"\n"
    rest = data[end:] if end < len(data) else b"\n"  # a message without a body gets its empty line
    state = []
    if folder is not None:  # the first message carries the folder's UID state
        state.append(f"X-IMAPbase: {folder.uidvalidity} {folder.uidnext - 1}")
    state.append(f"X-UID: {meta.uid}")
    state.append("Status: RO" if "\\Seen" in meta.flags else "Status: O")
    x_status = "".join(letter for letter, flag in MBOX_X_STATUS_LETTERS.items() if flag in meta.flags)
    if x_status:
        state.append(f"X-Status: {x_status}")
    keywords = [flag for flag in meta.flags if flag not in SYSTEM_FLAGS]
    if keywords:
        state.append(f"X-Keywords: {' '.join(keywords)}")
    text = "\n".join(state).encode() + b"\n" + header + rest
    if not text.endswith(b"\n"):
        text += b"\n"
    return _from_line(meta) + _FROM_LINE.sub(rb">\1", text) + b"\n"


def _put_in_place(partial: str, path: str) -> None:
    """Rename ``partial`` to ``path``, failing rather than replacing a file made there meanwhile
    (a hard link; where the file system has none, as vfat, a rename after a last look)."""
    try:
        os.link(partial, path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", path) from None
        os.rename(partial, path)


def export_mbox(store: Store, account: str, folder_name: str, path: str | os.PathLike[str]) -> ExportReport:
    """Write one folder of ``account`` to the mbox file ``path`` (mboxrd), which must not exist."""
    account = require_account(store, account)
    folder = _folder_named(store.list_folders(account), folder_name)
    if folder is None:
        raise NoSuchFolder(f"no such folder: {folder_name}")
    path = os.fspath(path)
    if os.path.lexists(path):
        raise ExportFailed(f"{path} exists")
    report = ExportReport(folders=1)
    partial = f"{path}.midb-partial-{os.getpid()}"  # one per export: two to one name do not mix
    try:
        with _create(partial) as fh:
            current, _, messages = _messages(store, account, folder, report)
            first = True
            for meta, data in messages:
                fh.write(_mbox_entry(meta, data, current if first else None))
                first = False
                report.messages += 1
                report.bytes += len(data)
            fh.flush()
            os.fsync(fh.fileno())
        _put_in_place(partial, path)
        _sync(os.path.dirname(os.path.abspath(path)))
    except FileExistsError:
        raise ExportFailed(f"{path} exists") from None
    except OSError as exc:
        raise ExportFailed(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(partial)
    return report
