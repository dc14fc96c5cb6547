"""METADATA (RFC 5464): GETMETADATA and SETMETADATA on mailboxes and on the server.

Annotations live in midb (``Store.get_metadata`` / ``set_metadata``), keyed by account, folder id
and entry, so a renamed mailbox keeps them and a deleted one loses them. The mailbox name ""
addresses the server annotations; each account has its own, since a midb account is the unit of
access:

* ``/private/...`` server entries are the user's own and writable;
* ``/shared/...`` server entries are the operator's: ``/shared/comment`` and ``/shared/admin``
  come from imap_metadata_comment / imap_metadata_admin, and users cannot set any (RFC 5464
  section 3.3 lets a server restrict server annotations; ``/shared/admin`` is read-only anyway).

Mailbox annotations of both scopes are writable by whoever may open the mailbox (its owner, or an
impersonating actor with store ownership).

GETMETADATA answers with one METADATA response: every requested entry, then the entries below
it down to DEPTH. A missing entry is NIL without DEPTH and left out with DEPTH (where a bare scope
such as ``/private`` is a useful starting point). MAXSIZE leaves out longer values and reports the longest omitted one in
``[METADATA LONGENTRIES n]``. Limits: imap_metadata_max_size per value (``[METADATA MAXSIZE n]``)
and imap_metadata_max_entries per mailbox, and per user on the server (``[METADATA TOOMANY]``);
the octets of all of an account's annotations are its ANNOTATION-STORAGE quota (RFC 9208;
``[OVERQUOTA]``, see gximap.session.commands.quota).
No unsolicited METADATA responses are sent, so ENABLE METADATA is not offered.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.session.base import AUTHENTICATED, CommandFailed, Done, command
from gximap.session.commands.mailbox import existing_folder, store_name, wire_name
from midb import errors as midb_errors
from midb import metadata as midb_metadata

CRLF = b"\r\n"
SHARED_PREFIX = "/shared/"


def _target(session: Any, mailbox: cmds.MailboxName) -> tuple[int, bytes]:
    """(folder id, or SERVER for "", and the name as the response shows it)."""
    if mailbox.name == "":
        return midb_metadata.SERVER, b'""'
    folder = existing_folder(session, store_name(mailbox))
    return folder.id, wire_name(session, folder.name)


def _check_entry(entry: str, *, settable: bool = False) -> str:
    """RFC 5464 section 3.2: an invalid entry name is a BAD in any command (the parser lets
    non-ASCII through; midb checks the rest)."""
    try:
        return midb_metadata.normalize_entry(entry, settable=settable)
    except midb_errors.InvalidArgument:
        raise CommandFailed(Code.BAD_METADATA_ENTRY, status="BAD") from None


def server_entries(session: Any) -> dict[str, bytes]:
    """The operator's /shared server annotations (imap_metadata_comment, imap_metadata_admin)."""
    settings = session.settings
    entries = {}
    if settings.metadata_admin:
        entries["/shared/admin"] = settings.metadata_admin.encode("utf-8")
    if settings.metadata_comment:
        entries["/shared/comment"] = settings.metadata_comment.encode("utf-8")
    return entries


def _value(data: bytes, utf8: bool) -> bytes:
    """``value = nstring / literal8``: binary data (NUL) only fits a literal8."""
    if b"\x00" in data:
        return encode.literal(data, binary=True)
    return encode.string(data, utf8)


def _ordered(requested: tuple[str, ...], depth: str, values: dict[str, bytes]) -> list[tuple[str, bytes | None]]:
    """Each requested entry, then the entries below it, once each. Without DEPTH a missing entry
    is reported as NIL, so a lookup always has its answer; with DEPTH the request is for a
    subtree and only what exists is listed (RFC 5464 section 4.2.2: "the value of the specified
    entry name (if it exists), plus all entries below")."""
    out: list[tuple[str, bytes | None]] = []
    seen: set[str] = set()
    for entry in requested:
        if entry not in seen and (entry in values or (depth == "0" and not midb_metadata.is_scope(entry))):
            seen.add(entry)
            out.append((entry, values.get(entry)))
        if depth == "0":
            continue
        for name, value in values.items():  # entry order: values is sorted
            if name not in seen and midb_metadata.is_below(name, entry, depth):
                seen.add(name)
                out.append((name, value))
    return out


@command(cmds.GetMetadata, states=AUTHENTICATED)
def getmetadata(session: Any, cmd: cmds.GetMetadata) -> Generator[bytes, Any, Done]:
    requested = tuple(dict.fromkeys(_check_entry(entry) for entry in cmd.entries))
    folder_id, wire = _target(session, cmd.mailbox)
    values = session.store.get_metadata(session.user, folder_id, requested, depth=cmd.depth)
    if folder_id == midb_metadata.SERVER:
        # The /shared server entries are the operator's (SETMETADATA refuses them), never stored.
        values = {name: value for name, value in values.items() if not name.startswith(SHARED_PREFIX)}
        for name, server_value in server_entries(session).items():
            if name in requested or any(midb_metadata.is_below(name, entry, cmd.depth) for entry in requested):
                values[name] = server_value
        values = dict(sorted(values.items()))
    longest = 0
    items: list[bytes] = []
    for name, value in _ordered(requested, cmd.depth, values):
        if value is not None and cmd.maxsize is not None and len(value) > cmd.maxsize:
            longest = max(longest, len(value))
            continue
        items.append(encode.astring(name) + b" " + (encode.NIL if value is None else _value(value, session.utf8)))
    if items:
        yield b"* METADATA " + wire + b" (" + b" ".join(items) + b")" + CRLF
    code = b"METADATA LONGENTRIES %d" % longest if longest else None
    return Done(Code.OK_GETMETADATA, code=code)


@command(cmds.SetMetadata, states=AUTHENTICATED)
def setmetadata(session: Any, cmd: cmds.SetMetadata) -> Done:
    settings = session.settings
    changes = [(_check_entry(entry, settable=True), value) for entry, value in cmd.entries]
    folder_id, _wire = _target(session, cmd.mailbox)
    if folder_id == midb_metadata.SERVER:
        for entry, _ in changes:
            if entry.startswith(SHARED_PREFIX):
                raise CommandFailed(Code.NO_METADATA_READ_ONLY, entry)
    try:
        session.store.set_metadata(session.user, folder_id, changes, max_entries=settings.metadata_max_entries,
                                   max_value_size=settings.metadata_max_size,
                                   annotation_quota_default=settings.default_annotation_quota)
    except midb_errors.MetadataTooBig as exc:
        raise CommandFailed(Code.NO_METADATA_MAXSIZE, code=b"METADATA MAXSIZE %d" % exc.limit) from None
    except midb_errors.MetadataTooMany:
        raise CommandFailed(Code.NO_METADATA_TOOMANY) from None
    if session.notify is not None:
        session.notify.own_metadata(folder_id, changes)   # RFC 5465 section 5: not reported back
    return Done(Code.OK_SETMETADATA)
