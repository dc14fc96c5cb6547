"""FETCH and UID FETCH (RFC 3501 / RFC 9051 section 6.4.5; BINARY, RFC 3516).

The handler is a generator: it reads the index records of the requested messages a batch at a
time and yields one ``* n FETCH (...)`` per message, so FETCH 1:* over 100,000 messages streams
with bounded memory. A FETCH of UID / FLAGS / MODSEQ only (how clients resynchronise) takes the
column path (:class:`_RecordColumnsFetch`): a batch of records becomes columns and then one chunk
of responses without Python work per message. Only the items that need them read the MIME digest (stored at append time:
a message is never parsed again) or byte ranges of the body file; large body sections are copied
from the file in chunks rather than loaded whole.

Messages another session expunged that this session has not been told about yet (RFC 2180 section
4.1): the records are gone, so they get no FETCH response. FETCH still answers the others and then
completes with ``NO [EXPUNGEISSUED]``, as Dovecot does (RFC 2180 section 4.1.2), so the client knows
to NOOP and learn of the EXPUNGE. UID FETCH completes with OK: a UID that no longer exists is
ignored without an error (RFC 9051 section 6.4.9), and the EXPUNGE follows its answer. A message still in the folder whose body file
is gone (lost: a disk fault, a file deleted by hand) is left out too, logged as an error, and the
FETCH completes with ``NO [SERVERBUG]``: no NOOP would explain it to the client.

Flags another session changed are shown by the FETCH as they are when it reads them; the update
that ends the command (SelectedMailbox.sync) then leaves out what the FETCH showed, so a client
resynchronising after a bulk change gets each message once. A keyword new to the mailbox is
announced with ``* FLAGS`` before the FETCH shows it.

CONDSTORE / QRESYNC (RFC 7162): the MODSEQ item and the CHANGEDSINCE modifier make the
connection CONDSTORE-aware. CHANGEDSINCE restricts the FETCH to the messages whose MODSEQ is
higher, found through midb's modseq index (cost proportional to the changes, not the folder: the
requested set is a membership test, never a list of the folder's UIDs) and
adds MODSEQ to each response; UID FETCH's VANISHED modifier (QRESYNC only) first reports the UIDs of
the set expunged since then as ``* VANISHED (EARLIER)``. Once CONDSTORE-aware, a response that
reports flags changed by an implicit \\Seen also carries the UID and the new MODSEQ.

The PARTIAL modifier (RFC 9394 section 3.3) answers only the messages at its positions among
those the set names, in UID order (negative positions count from the last). With CHANGEDSINCE
the two filter the set each on its own, in either order (section 3.4): of the messages at those
positions, the changed ones, so ``UID FETCH 1:* (FLAGS) (PARTIAL -1:-300 CHANGEDSINCE m)`` is the
flag changes of the newest 300. The other messages are never read. VANISHED (EARLIER) still
reports the whole set's expunged UIDs: they are no FETCH results, and RFC 9394 does not page them.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import mmap
import os
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from gximap.imap import commands as cmds
from gximap.imap import encode, fetchmime
from gximap.imap.codes import Code
from gximap.imap.commands import FetchAtt, ResolvedSet
from gximap.log import escape_text
from gximap.net.handler import FileRegion
from gximap.session import condstore
from gximap.session.base import (
    COALESCE_BYTES,
    RESPONSE_CLOSES,
    RESPONSE_OPENS,
    SELECTED,
    CommandFailed,
    Done,
    ResponseMark,
    command,
)
from gximap.session.searching import (
    in_ascending,
    refuse_numbers_beyond_count,
    resolve_page,
    resolve_uids,
    saved_uids,
)
from gximap.session.selected import FlagsShown, flag_atoms
from midb import objectids, preview
from midb.errors import MidbError, NoSuchBody
from midb.keys import blob_key
from midb.lru import BoundedCache
from midb.messages import (
    FlagColumns,
    flag_columns_of_records,
    flags_of,
    meta_from_record,
    record_blobs,
    record_internaldates,
    record_sizes,
)
from midb.mime import Digest
from midb.store import INLINE_MAX
from midb.summary import sort_record
from midb.tombstones import Vanished

SEEN = "\\Seen"
_MODSEQ = FetchAtt("MODSEQ")
_BATCH = 256  # index records read per store call
# FETCH of only these items takes the column path (rendered from flag columns, no message reads).
RECORD_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})
COLUMN_BATCH = 4096  # records per batch (and output chunk) for UID/FLAGS/MODSEQ-only FETCH
# FETCH of only these items takes the listing path (_ListingColumnsFetch): the record's own
# fields (EMAILID is the body id), and items kept per body (ENVELOPE, BODYSTRUCTURE, BODY,
# PREVIEW, THREADID and BODY[...HEADER.FIELDS ...] sections, see _cached_item).
LISTING_ITEMS = RECORD_ITEMS | {"RFC822.SIZE", "INTERNALDATE", "EMAILID", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                                "PREVIEW", "THREADID"}
# Records per batch (and output chunk) on the listing path: its responses carry header fields or
# structures, a few hundred bytes each.
LISTING_BATCH = 256
# Body ranges up to this size are read at once; larger ones are streamed, or handed to the pool
# as FileRegions (sendfile(2)). A larger range is of a body larger than any the index keeps, so
# it is always in a file. 256 KiB and up, the kernel's path costs a 512 KiB fetch about 15 % less
# CPU than reading it whole (python -m bench.bodies --size-mib 0.5).
_INLINE_LIMIT = INLINE_MAX
_CHUNK = 256 * 1024  # streaming read size


def without_nul(data: bytes) -> bytes:
    """A NUL may not travel in a literal (only in BINARY's literal8): stored messages that hold
    one have it replaced by 0x80 in BODY[] answers, as Dovecot does; the length is unchanged."""
    return data.replace(b"\x00", b"\x80") if b"\x00" in data else data


class _BodyStream:
    """A large byte range of a body file, sent as chunks, or handed to the pool whole as a
    FileRegion (see region()). The file is opened while the message is rendered, so a concurrent
    expunge that unlinks it cannot cut the literal short."""

    __slots__ = ("message", "range")

    def __init__(self, message: _Message, path: str, offset: int, length: int) -> None:
        self.message = message
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by chunks()/close(), or the region's taker
        except FileNotFoundError:
            raise NoSuchBody(path) from None
        self.range: FileRegion | None = FileRegion(handle, offset, length)  # None once handed over

    def region(self) -> FileRegion | None:
        """The range as a FileRegion for the kernel to send (sendfile(2)), the file handed over
        with it; None when it must be read here: it holds a NUL (sent as 0x80, see without_nul)
        or the file is shorter than its record says. The message's digest says whether it holds
        a NUL. Without one at hand (not parsed yet, see midb.deferred; or stored before digests
        said so) the range is looked at through a read-only mapping: no copy, but about as long
        as reading it, and still far less than digesting the message now."""
        body_range = self.range
        assert body_range is not None
        fd = body_range.fileno()
        end = body_range.offset + body_range.length
        if os.fstat(fd).st_size < end:
            return None
        message = self.message
        try:
            digest = message.store.known_digest(message.meta.blob)
        except (MidbError, OSError):
            digest = None
        contains_nul = None if digest is None else digest.contains_nul
        if contains_nul:
            return None
        if contains_nul is None:
            try:
                with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                    if mapped.find(b"\x00", body_range.offset, end) >= 0:
                        return None
            except (OSError, ValueError):  # cannot be mapped (out of address space): read it
                return None
        self.range = None  # the taker owns the file now
        return body_range

    def chunks(self) -> Iterator[bytes]:
        """The range read here. A file shorter than its record says is padded with spaces, which
        keeps the literal's promised length so the client stays in sync (the index is repaired
        by `midb verify`)."""
        body_range = self.range
        assert body_range is not None  # not handed over (region())
        try:
            for data in body_range.chunks(_CHUNK):
                yield without_nul(data)
        finally:
            body_range.close()

    def close(self) -> None:
        if self.range is not None:
            self.range.close()


Piece = bytes | _BodyStream


class _Message:
    """One message being rendered: its record, its digest loaded on first use."""

    __slots__ = ("store", "meta", "_digest", "_decoded")

    def __init__(self, store: Any, meta: Any) -> None:
        self.store = store
        self.meta = meta
        self._digest: Digest | None = None
        self._decoded: tuple[tuple[int, ...], bytes] | None = None

    @property
    def digest(self) -> Digest:
        if self._digest is None:
            self._digest = self.store.digest(self.meta.blob)
        return self._digest

    def read(self, offset: int, length: int) -> bytes:
        return self.store.read_body(self.meta.blob, offset, length)

    def decoded(self, part: tuple[int, ...]) -> bytes:
        """BINARY's content of ``part``, the last one kept: the BINARY items of one FETCH often
        name the same part (partials, BINARY.SIZE with BINARY), and each decoded the whole part
        again (1,500 partials of a 60 MB part took 536 s)."""
        kept = self._decoded
        if kept is not None and kept[0] == part:
            return kept[1]
        content = fetchmime.decoded_part(self.read, self.digest, part)
        self._decoded = (part, content)
        return content


def _literal_pieces(label: bytes, msg: _Message, offset: int, length: int, out: list[Piece]) -> None:
    """``label {n}CRLF`` + the bytes ``[offset, offset+length)`` of the stored message."""
    if length <= 0:
        out.append(label + b' ""')
        return
    if length <= _INLINE_LIMIT:
        out.append(label + b" {%d}\r\n" % length + without_nul(msg.read(offset, length)))
        return
    out.append(label + b" {%d}\r\n" % length)
    out.append(_BodyStream(msg, msg.store.body_path(msg.meta.blob), offset, length))


def _content_pieces(label: bytes, content: bytes, out: list[Piece], *, binary: bool = False) -> None:
    if not content:
        out.append(label + b' ""')
    elif binary and b"\x00" in content:
        out.append(label + b" ~{%d}\r\n" % len(content) + content)  # literal8 (RFC 3516)
    else:
        out.append(label + b" {%d}\r\n" % len(content) + without_nul(content))


def _section_pieces(att: FetchAtt, label: bytes, msg: _Message, out: list[Piece]) -> None:
    """BODY[section]<partial> and the RFC822 / RFC822.HEADER / RFC822.TEXT equivalents
    (``label``: att.response_label())."""
    name = att.name
    if name == "RFC822":
        part: tuple[int, ...] = ()
        spec: str | None = None
        fields: tuple[str, ...] = ()
    elif name == "RFC822.HEADER":
        part, spec, fields = (), "HEADER", ()
    elif name == "RFC822.TEXT":
        part, spec, fields = (), "TEXT", ()
    else:
        section = att.section
        assert section is not None
        part, spec, fields = section.part, section.text, section.fields
    if not part and spec is None:
        # The whole message: its size is in the record, no digest needed.
        size = msg.meta.size
        offset, length = 0, size
        if att.partial is not None:
            start, count = att.partial
            offset = min(start, size)
            length = max(0, min(count, size - offset))
        _literal_pieces(label, msg, offset, length, out)
        return
    span = fetchmime.section_range(msg.digest, part, spec, att.partial)
    if span is not None:
        _literal_pieces(label, msg, span[0], span[1], out)
        return
    content = fetchmime.header_fields_section(msg.read, msg.digest, part, spec, fields, att.partial)
    _content_pieces(label, content, out)


def _binary_pieces(att: FetchAtt, label: bytes, msg: _Message, out: list[Piece]) -> None:
    section = att.section
    assert section is not None
    part = tuple(section.part)
    if att.name == "BINARY.SIZE":
        out.append(label + b" %d" % fetchmime.binary_size(msg.read, msg.digest, part, msg.decoded))
        return
    content = fetchmime.binary_section(msg.read, msg.digest, part, att.partial, msg.decoded)
    _content_pieces(label, content, out, binary=True)


def _close_streams(pieces: list[Piece]) -> None:
    for piece in pieces:
        if isinstance(piece, _BodyStream):
            piece.close()


class _Renderer:
    """Turns one message record into the pieces of its FETCH response."""

    def __init__(self, session: Any, cmd: cmds.Fetch) -> None:
        view = session.selected
        self.session = session
        self.store = session.store
        self.recent = view.recent
        self.show_recent = not session.rev2
        # What ENVELOPE and BODY(STRUCTURE) depend on besides the body: UTF8=ACCEPT (strings
        # sent as UTF-8) and IMAP4rev2 (message/global described as a message).
        self.style: tuple[bool, bool] = (session.utf8, session.rev2)
        # UID FETCH always reports the UID, first (RFC 3501 section 6.4.8); with UIDONLY the
        # UIDFETCH response leads with it instead (RFC 9586 section 3.3), and a UID item is
        # there only when asked for.
        self.uid = cmd.uid and not session.uidonly
        self.items = [att for att in cmd.items if not (self.uid and att.name == "UID")]
        names = {att.name for att in cmd.items}
        if cmd.changedsince is not None and "MODSEQ" not in names:
            # CHANGEDSINCE implies MODSEQ (RFC 7162 section 3.1.4.1): placed after the UID.
            after_uid = next((index + 1 for index, att in enumerate(self.items) if att.name == "UID"), 0)
            self.items.insert(after_uid, _MODSEQ)
            names.add("MODSEQ")
        self.wants_flags = "FLAGS" in names
        self.wants_uid = cmd.uid or "UID" in names
        self.wants_modseq = "MODSEQ" in names
        self.wants_savedate = "SAVEDATE" in names
        self.save_dates: dict[int, int] = {}  # of the batch being rendered (note_batch)
        # Items made for a batch by their filler (_CachedItem.make): body id -> item, of that batch too.
        self.batch_filled: dict[_CachedItem, dict[str, bytes]] = {}
        self.condstore = condstore.enabled(session)
        self.top_modseq = 0  # the highest MODSEQ sent
        self._flag_items: dict[tuple[tuple[str, ...], bool], bytes] = {}
        # One step per item, chosen once per command rather than per message.
        self.steps = [self._step(att) for att in self.items]

    def note_batch(self, metas: list[Any]) -> None:
        """Read what the batch's messages need besides their records: their save dates and the
        items a batch filler makes (THREADID), in one store read each rather than one per message."""
        if not metas:
            return
        if self.wants_savedate:
            view = self.session.selected
            self.save_dates = self.store.save_dates(view.account, view.folder_id, [meta.uid for meta in metas])
        if self.batch_filled:
            blobs = [meta.blob for meta in metas]
            for cached, filled in self.batch_filled.items():
                filled.clear()
                filled.update((blob, item) for blob, item in zip(blobs, cached.batch(self.store, blobs), strict=True)
                              if item is not None)

    def savedate(self, meta: Any) -> bytes:
        """RFC 8514: NIL for a message saved before its store kept save dates (midb.savedates)."""
        saved = self.save_dates.get(meta.uid)
        if saved is None:
            return b"SAVEDATE NIL"
        return b"SAVEDATE " + encode.internaldate(saved, encode.local_offset(saved))

    def flags(self, meta: Any) -> bytes:
        key = (meta.flags, self.show_recent and meta.uid in self.recent)
        rendered = self._flag_items.get(key)
        if rendered is None:  # a folder holds few distinct flag sets: each is rendered once
            rendered = self._flag_items[key] = b"FLAGS " + flag_atoms(*key)
        return rendered

    def modseq(self, meta: Any) -> bytes:
        if meta.modseq > self.top_modseq:
            self.top_modseq = meta.modseq
        return b"MODSEQ (%d)" % meta.modseq

    def render(self, meta: Any, seen_changed: bool) -> list[Piece]:
        msg = _Message(self.store, meta)
        out: list[Piece] = []
        if self.uid:
            out.append(b"UID %d" % meta.uid)
        try:
            for step in self.steps:
                step(msg, out)
            if seen_changed:
                # RFC 3501 section 6.4.5: flags changed by an implicit \Seen are reported; RFC 7162
                # section 3.1: with UID and MODSEQ once the connection is CONDSTORE-aware.
                if self.condstore and not self.wants_uid:
                    out.append(b"UID %d" % meta.uid)
                if not self.wants_flags:
                    out.append(self.flags(meta))
                if self.condstore and not self.wants_modseq:
                    out.append(self.modseq(meta))
        except BaseException:
            _close_streams(out)
            raise
        return out

    def _step(self, att: FetchAtt) -> Callable[[_Message, list[Piece]], None]:
        """What renders ``att`` for one message into its response's pieces."""
        name = att.name
        if name == "FLAGS":
            return lambda msg, out: out.append(self.flags(msg.meta))
        if name == "UID":
            return lambda msg, out: out.append(b"UID %d" % msg.meta.uid)
        if name == "INTERNALDATE":
            return lambda msg, out: out.append(
                b"INTERNALDATE " + encode.internaldate(msg.meta.internaldate, msg.meta.tzoffset))
        if name == "RFC822.SIZE":
            return lambda msg, out: out.append(b"RFC822.SIZE %d" % msg.meta.size)
        if name == "MODSEQ":
            return lambda msg, out: out.append(self.modseq(msg.meta))
        if name == "SAVEDATE":
            return lambda msg, out: out.append(self.savedate(msg.meta))
        if name == "EMAILID":
            return lambda msg, out: out.append(_email_id_item(msg.meta.blob))
        cached = _cached_item(att, self.style)
        if cached is not None and cached.make is not None:
            # Made for the batch by note_batch; a body gone since then is looked for again.
            filled = self.batch_filled.setdefault(cached, {})
            return lambda msg, out: out.append(filled.get(msg.meta.blob) or cached.one(msg))
        if cached is not None and cached.cache is _STRUCTURES:
            style = self.style
            return lambda msg, out: out.append(_structure(name, msg, style))
        if cached is not None and cached.cache is _PREVIEWS:
            utf8 = self.style[0]
            return lambda msg, out: out.append(_preview_item(msg, utf8))
        if cached is not None:
            return functools.partial(_header_fields_piece, att, att.response_label())
        if name in ("BINARY", "BINARY.SIZE"):
            return functools.partial(_binary_pieces, att, att.response_label())
        # BODY[...], RFC822, RFC822.HEADER, RFC822.TEXT
        return functools.partial(_section_pieces, att, att.response_label())


# Rendered BODY[HEADER.FIELDS (...)] items (label, literal and all) of recently fetched bodies,
# by (body id, label, partial): what a client fetches for every message it lists, again each
# time it lists them (Dovecot keeps these fields in its cache file for the same reason). Only
# answers of at most HEADER_FIELDS_CACHED bytes are kept: at most 8 MiB, about 2 MiB for usual
# mail.
HEADER_FIELDS_CACHE_ENTRIES = 4096
HEADER_FIELDS_CACHED = 2048
_HEADER_FIELDS: BoundedCache[tuple[str, bytes, tuple[int, int] | None], bytes] = BoundedCache(
    HEADER_FIELDS_CACHE_ENTRIES)


class _CachedItem(NamedTuple):
    """An item that is the same for a body whoever asks: the cache that keeps it rendered, and
    what its key holds after the body id (``_structure`` and ``_header_fields_piece`` make these
    keys; the listing path looks a batch of them up at once).

    ``make``, the batch filler, is for an item made from a store read rather than from the
    message's digest: it makes the items of several bodies with one store call (None for a body
    that is gone), so that a batch of messages costs one read, not one per message. Without it
    the general path's step makes the item, one message at a time."""

    cache: BoundedCache[Any, bytes]
    first: Any
    second: Any
    make: Callable[[Any, list[str]], list[bytes | None]] | None = None

    def keys(self, blobs: list[str]) -> list[tuple[str, Any, Any]]:
        """The cache keys of the item for ``blobs``."""
        return list(zip(blobs, itertools.repeat(self.first), itertools.repeat(self.second)))

    def batch(self, store: Any, blobs: list[str]) -> list[bytes | None]:
        """The items of ``blobs`` (the bodies of a batch), None for one that is gone: from the
        cache, those not cached made by ``make`` in one store call, and cached."""
        assert self.make is not None
        keys = self.keys(blobs)
        values = self.cache.get_many(keys)
        missing = [index for index, value in enumerate(values) if value is None]
        if missing:
            made = self.make(store, [blobs[index] for index in missing])
            for index, item in zip(missing, made, strict=True):
                if item is not None:
                    self.cache.put(keys[index], item)
                    values[index] = item
        return values

    def one(self, msg: _Message) -> bytes:
        """The item of one message, as ``batch`` makes it; NoSuchBody if its body is gone."""
        (item,) = self.batch(msg.store, [msg.meta.blob])
        if item is None:
            raise NoSuchBody(msg.meta.blob)
        return item


def _cached_item(att: FetchAtt, style: tuple[bool, bool]) -> _CachedItem | None:
    """The _CachedItem of an item that is the same for a body whoever asks; None for other items."""
    name = att.name
    if name in ("ENVELOPE", "BODYSTRUCTURE") or (name == "BODY" and att.section is None):
        return _CachedItem(_STRUCTURES, name, style)
    if name == "PREVIEW":
        return _CachedItem(_PREVIEWS, name, style[0])
    if name == "THREADID":
        return _CachedItem(_THREAD_IDS, name, None, _thread_id_items)
    if name == "BODY" and att.section is not None and (att.section.text or "").upper().startswith("HEADER.FIELDS"):
        return _CachedItem(_HEADER_FIELDS, att.response_label(), att.partial)
    return None


def _header_fields_piece(att: FetchAtt, label: bytes, msg: _Message, out: list[Piece]) -> None:
    """BODY[...HEADER.FIELDS (...)]: small, the same for a body whoever asks (see _HEADER_FIELDS)."""
    key = (msg.meta.blob, label, att.partial)
    piece = _HEADER_FIELDS.get(key)
    if piece is None:
        pieces: list[Piece] = []
        _section_pieces(att, label, msg, pieces)
        (rendered,) = pieces  # built content, never streamed
        assert isinstance(rendered, bytes)
        if len(rendered) <= HEADER_FIELDS_CACHED:
            _HEADER_FIELDS.put(key, rendered)
        piece = rendered
    out.append(piece)


# Rendered ENVELOPE / BODYSTRUCTURE / BODY items of recently fetched bodies, by (body id, item,
# UTF8=ACCEPT): a body never changes under its id, and every device and session of a user fetches
# the same new messages' structure. A few hundred bytes each.
STRUCTURE_CACHE_ENTRIES = 4096
_STRUCTURES: BoundedCache[tuple[str, str, tuple[bool, bool]], bytes] = BoundedCache(STRUCTURE_CACHE_ENTRIES)


# Rendered PREVIEW items (RFC 8970) of recently fetched bodies, by (body id, "PREVIEW", UTF8=ACCEPT):
# a client asks for the previews of the messages it lists, every time it lists them, and every
# device of a user asks for those of the same new messages. At most about 250 bytes each.
PREVIEW_CACHE_ENTRIES = 4096
_PREVIEWS: BoundedCache[tuple[str, str, bool], bytes] = BoundedCache(PREVIEW_CACHE_ENTRIES)


def _preview_item(msg: _Message, utf8: bool) -> bytes:
    """``PREVIEW text`` for a body: a quoted string, or a literal for text a quoted string may
    not carry (8-bit before UTF8=ACCEPT). Never NIL: a message without text has "" (RFC 8970
    section 3.2), and LAZY is answered as if absent (see gximap.imap.parser)."""
    key = (msg.meta.blob, "PREVIEW", utf8)
    rendered = _PREVIEWS.get(key)
    if rendered is None:
        rendered = b"PREVIEW " + encode.string(preview.preview(msg.read, msg.digest), utf8)
        _PREVIEWS.put(key, rendered)
    return rendered


def _email_id_item(blob: str) -> bytes:
    """``EMAILID (M...)`` (RFC 8474 section 5.1; midb.objectids)."""
    return b"EMAILID (%s)" % objectids.email_id(blob).encode("ascii")


# Rendered THREADID items (RFC 8474) of recently fetched bodies, by (body id, "THREADID", None):
# made from the front of the body's summary (its message ids), which a client listing a folder
# with its threads would otherwise have read again each time. About 30 bytes each.
THREAD_ID_CACHE_ENTRIES = 4096
_THREAD_IDS: BoundedCache[tuple[str, str, None], bytes] = BoundedCache(THREAD_ID_CACHE_ENTRIES)


def _thread_id_items(store: Any, blobs: list[str]) -> list[bytes | None]:
    """THREADID's batch filler (_CachedItem.make): ``THREADID (T...)`` of each body, None for
    one that is gone, from one read of their summaries' fronts. Never NIL: every message belongs
    to a thread (midb.objectids)."""
    records = store.summary_fields_by_key([blob_key(blob) for blob in blobs], sort_record)
    return [None if record is None else b"THREADID (%s)" % objectids.thread_id_of(blob, record).encode("ascii")
            for blob, record in zip(blobs, records, strict=True)]


def _structure(name: str, msg: _Message, style: tuple[bool, bool]) -> bytes:
    """ENVELOPE, BODY or BODYSTRUCTURE of a body in a session's ``style`` (_Renderer.style)."""
    key = (msg.meta.blob, name, style)
    rendered = _STRUCTURES.get(key)
    if rendered is None:
        if name == "ENVELOPE":
            rendered = b"ENVELOPE " + fetchmime.envelope(msg.digest, style[0])
        else:
            rendered = name.encode() + b" " + fetchmime.bodystructure(
                msg.digest, name == "BODYSTRUCTURE", style[0], message_global=style[1])
        _STRUCTURES.put(key, rendered)
    return rendered


def _emit(number: int, pieces: list[Piece], file_output: bool, label: bytes = b"FETCH",
          ) -> Iterator[bytes | FileRegion | ResponseMark]:
    """The response for one message: small pieces joined, large bodies streamed (``file_output``:
    handed to the pool as FileRegions where they can be), bracketed as one response. ``number``
    is the message number, or the UID with ``label`` UIDFETCH (_response_label)."""
    yield RESPONSE_OPENS
    buffer = [b"* %d %b (" % (number, label)]
    first = True
    for piece in pieces:
        if isinstance(piece, _BodyStream):
            # The literal's header went out with the previous piece: no separator before the data.
            if buffer:
                yield b"".join(buffer)
                buffer = []
            region = piece.region() if file_output else None
            if region is not None:
                yield region
            else:
                yield from piece.chunks()
            continue
        if not first:
            buffer.append(b" ")
        buffer.append(piece)
        first = False
    buffer.append(b")\r\n")
    yield b"".join(buffer)
    yield RESPONSE_CLOSES


class _FlagListBytes(dict[bytes | int, bytes]):
    """Raw record flag tail, or flag word of midb's flag column -> rendered ``(\\Seen ...)``:
    each distinct flag set of the folder is rendered once per command (by flag_atoms, like the
    general path) and the bytes reused."""

    def __init__(self, recent: bool) -> None:
        super().__init__()
        self.recent = recent
        self.tail_of: Mapping[int, bytes] | None = None   # resolves flag words

    def __missing__(self, key: bytes | int) -> bytes:
        tail = self.tail_of[key] if isinstance(key, int) and self.tail_of is not None else key
        assert isinstance(tail, bytes)
        rendered = self[key] = flag_atoms(flags_of(tail), self.recent)
        return rendered


# Per-message format of each column item; items kept per body are rendered with their label.
_COLUMN_TEMPLATES = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "MODSEQ": b"MODSEQ (%d)", "RFC822.SIZE": b"RFC822.SIZE %d",
                     "INTERNALDATE": b"INTERNALDATE %b"}


@functools.lru_cache(maxsize=16)
def _batch_format(single: bytes, count: int) -> bytes:
    """A column format repeated for a full batch of `count` (about 120 KB): made once per item
    combination, not by every FETCH of a few messages' flags."""
    return single * count


class _RecordColumnsFetch:
    """FETCH of items the index record alone answers (UID, FLAGS, MODSEQ), column-wise.

    midb hands over a batch as columns (``Store.flag_columns``: UIDs, raw flag tails, MODSEQs);
    message numbers come from the view's runs (a range for a contiguous stretch); the flag lists
    are looked up per distinct tail; a batch's responses are one ``bytes %`` of the per-message
    format repeated once per message, over the columns interleaved by slice assignment into one
    tuple (11 ms per 100,000 messages, against 17 for a ``%`` per message, most of which was each
    call's own overhead). No Python bytecode runs per message, which is what makes
    ``UID FETCH 1:* (UID FLAGS)`` on 100,000 messages cheap. The output is byte for byte the
    general path's (tests/test_perf_view_fetch.py compares them)."""

    def __init__(self, names: list[str], *, recent: Collection[int], show_recent: bool, uidonly: bool = False) -> None:
        self.names = names
        self.uidonly = uidonly  # responses are UIDFETCH, numbered by UID (_response_label)
        self.format = (b"* %d " + _response_label(uidonly) + b" ("
                       + b" ".join(_COLUMN_TEMPLATES.get(name, b"%b") for name in names) + b")\r\n")
        # Ascending, so that a batch finds its own \Recent UIDs by bisection: usually a few
        # newest messages, but every message of a folder on its first SELECT after an import.
        self.recent = sorted(recent) if show_recent else []
        self.plain = _FlagListBytes(False)
        self.marked = _FlagListBytes(True)  # with \Recent (IMAP4rev1 sessions)
        self.top_modseq = 0

    def responses(self, session: Any, uids: list[int]) -> Generator[bytes, Any, bool]:
        """Yield the responses for ``uids`` (ascending, in the view) a chunk per batch; return
        whether some of them are gone from the store (expunged by another session)."""
        view = session.selected
        # All of the view (1:*): every message in the store up to the view's last UID is wanted,
        # the view lacking only newer ones; midb then needs no membership test.
        batches = session.store.flag_column_batches(view.account, view.folder_id, uids, COLUMN_BATCH,
                                                    with_modseq="MODSEQ" in self.names,
                                                    every_existing=len(uids) == view.exists)
        found_count = 0
        for found in batches:
            session.progress.note(found_count, len(uids))  # INPROGRESS: the messages answered so far
            found_count += len(found.uids)
            if found.uids:
                yield self.render(view, found)
        return found_count != len(uids)

    def changed_responses(self, session: Any, requested: _Requested, since: int) -> Generator[bytes, Any, bool]:
        """CHANGEDSINCE: the same for the requested messages whose MODSEQ is above ``since``,
        found by walking midb's modseq index (O(changes), not O(folder))."""
        view = session.selected
        found, vanished = session.store.changed_columns(view.account, view.folder_id, since)
        keep = [index for index, uid in enumerate(found.uids) if uid in requested]
        if len(keep) != len(found.uids):
            found = FlagColumns([found.uids[i] for i in keep], [found.tails[i] for i in keep],
                                [found.modseqs[i] for i in keep])
        for start in range(0, len(found.uids), COLUMN_BATCH):
            stop = start + COLUMN_BATCH
            yield self.render(view, FlagColumns(found.uids[start:stop], found.tails[start:stop],
                                                found.modseqs[start:stop]))
        return requested.any_gone(vanished)

    def render(self, view: Any, found: FlagColumns) -> bytes:
        """The responses for one batch of columns (every UID in the view), as one chunk."""
        return self.format_batch([self.numbers(view, found.uids),
                                  *(self.record_column(name, found) for name in self.names)])

    def numbers(self, view: Any, uids: list[int]) -> Sequence[int]:
        """What leads each response of a batch: the message numbers, or with UIDONLY the UIDs."""
        return uids if self.uidonly else view.runs.positions_of(uids, base=1)

    def record_column(self, name: str, found: FlagColumns) -> list[Any]:
        """The values of a record item (UID, FLAGS or MODSEQ) for a batch."""
        if name == "UID":
            return found.uids
        if name == "FLAGS":
            self.plain.tail_of = self.marked.tail_of = found.tail_of
            return self._flag_lists(found.uids, found.tails)
        assert found.modseqs is not None
        if found.modseqs:
            self.top_modseq = max(self.top_modseq, max(found.modseqs))
        return found.modseqs

    def format_batch(self, columns: list[Sequence[Any]]) -> bytes:
        """The responses of a batch: the message numbers, then a column per item."""
        count = len(columns[0])
        width = len(columns)
        values: list[Any] = [None] * (count * width)
        for index, column in enumerate(columns):
            values[index::width] = column   # ValueError if a column's length differs
        repeated = _batch_format(self.format, count) if count == COLUMN_BATCH else self.format * count
        return repeated % tuple(values)

    def _flag_lists(self, uids: list[int], tails: list[bytes] | list[int]) -> list[bytes]:
        recent = self.recent
        if not recent or not uids:
            return list(map(self.plain.__getitem__, tails))
        # Only the \Recent UIDs within this batch's range are looked at, each found by bisection
        # from where the previous one was: O(k log n) for k of them in the batch. A batch that is
        # all \Recent (the first SELECT after an import) is one comparison of lists.
        low = bisect.bisect_left(recent, uids[0])
        high = bisect.bisect_right(recent, uids[-1], low)
        if high - low == len(uids) and recent[low:high] == uids:
            return list(map(self.marked.__getitem__, tails))
        lists = list(map(self.plain.__getitem__, tails))
        index = 0
        for uid in recent[low:high]:
            index = bisect.bisect_left(uids, uid, index)
            if index < len(uids) and uids[index] == uid:
                lists[index] = self.marked[tails[index]]
        return lists


class _ListingColumnsFetch(_RecordColumnsFetch):
    """FETCH of what a client lists a folder with (e.g. ``UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS
    (From To Subject Date ...)]``), column-wise like :class:`_RecordColumnsFetch`.

    A batch of index records becomes columns: UID, flags and MODSEQ as there, RFC822.SIZE and
    INTERNALDATE from the records' fixed fields (midb.messages.record_sizes and the like), and
    each item kept per body (ENVELOPE, BODYSTRUCTURE, BODY, a HEADER.FIELDS section) looked up in
    its cache for the whole batch at once. A message whose item is not cached (yet) has it made
    by the general path's step, which caches it; one whose body is gone meanwhile (expunged by
    another session) is left out, as on the general path. The newest 1,000 messages of the bench
    folder with their header fields: 1.9 ms in process, against 4.9 with a MessageMeta, a
    _Message and a step per item made for each message. Not for FETCHes that set \\Seen (the
    flags change) or have CHANGEDSINCE (their set is a membership test)."""

    def __init__(self, renderer: _Renderer, names: list[str]) -> None:
        super().__init__(names, recent=renderer.recent, show_recent=renderer.show_recent,
                         uidonly=renderer.session.uidonly)
        self.store = renderer.store
        self.session = renderer.session
        self.lost_bodies = False  # a message still stored whose body file is gone (_bodies_lost)
        self.with_modseq = "MODSEQ" in names
        atts: list[FetchAtt | None] = [None] * (len(names) - len(renderer.items)) + list(renderer.items)
        steps: list[Any] = [None] * (len(names) - len(renderer.steps)) + list(renderer.steps)
        # Position in names -> (the item's _CachedItem, the general path's step).
        self.cached: dict[int, tuple[_CachedItem, Callable[[_Message, list[Piece]], None]]] = {}
        for index, att in enumerate(atts):
            item = None if att is None else _cached_item(att, renderer.style)
            if item is not None:
                self.cached[index] = (item, steps[index])

    @staticmethod
    def handles(renderer: _Renderer) -> bool:
        """Whether every item of the FETCH is one the listing path renders."""
        return all(att.name in LISTING_ITEMS and (att.section is None or _cached_item(att, renderer.style) is not None)
                   for att in renderer.items)

    def responses(self, session: Any, uids: list[int]) -> Generator[bytes, Any, bool]:
        """As :meth:`_RecordColumnsFetch.responses`, from batches of index records."""
        view = session.selected
        found_count = 0
        for found, records in session.store.record_batches(view.account, view.folder_id, uids, LISTING_BATCH):
            session.progress.note(found_count, len(uids))  # INPROGRESS: the messages answered so far
            chunk, count = self.render_records(view, found, records)
            found_count += count
            if count:
                yield chunk
        return found_count != len(uids)

    def render_records(self, view: Any, uids: list[int], records: list[bytes]) -> tuple[bytes, int]:
        """(The responses for one batch of records, how many messages they answer)."""
        cached: dict[int, list[Any]] = {}
        if self.cached:
            blobs = record_blobs(records)
            lost: set[int] = set()
            made: dict[int, _Message] = {}  # messages with an item not cached: its digest read once
            for index, (item, step) in self.cached.items():
                cached[index] = self._cached_column(item, step, uids, records, blobs, made, lost)
            if lost:
                gone = sorted(lost)
                self.lost_bodies |= _bodies_lost(self.session, [uids[index] for index in gone],
                                                 [blobs[index] for index in gone])
                keep = [index for index in range(len(uids)) if index not in lost]
                uids = [uids[index] for index in keep]
                records = [records[index] for index in keep]
                cached = {position: [column[index] for index in keep] for position, column in cached.items()}
        if not uids:
            return b"", 0
        found = flag_columns_of_records(uids, records, with_modseq=self.with_modseq)
        columns: list[Sequence[Any]] = [self.numbers(view, uids)]
        for index, name in enumerate(self.names):
            if index in cached:
                columns.append(cached[index])
            elif name == "RFC822.SIZE":
                columns.append(record_sizes(records))
            elif name == "INTERNALDATE":
                columns.append(list(map(encode.internaldate, *record_internaldates(records))))
            elif name == "EMAILID":
                columns.append(list(map(_email_id_item, record_blobs(records))))
            else:
                columns.append(self.record_column(name, found))
        return self.format_batch(columns), len(uids)

    def _cached_column(self, item: _CachedItem, step: Callable[[_Message, list[Piece]], None],
                       uids: list[int], records: list[bytes], blobs: list[str], made: dict[int, _Message],
                       lost: set[int]) -> list[Any]:
        """One item kept per body, for a batch: from its cache, else made by its batch filler for
        the batch at once, or by the general path's step (which caches it) with the batch's
        ``made`` message. Messages whose body is gone are added to ``lost``."""
        values: list[Any]
        if item.make is not None:
            values = item.batch(self.store, blobs)
            lost.update(index for index, value in enumerate(values) if value is None)
            return values
        values = item.cache.get_many(item.keys(blobs))
        if None in values:
            for index, value in enumerate(values):
                if value is not None or index in lost:
                    continue
                message = made.get(index)
                if message is None:
                    message = made[index] = _Message(self.store, meta_from_record(uids[index], records[index]))
                pieces: list[Piece] = []
                try:
                    step(message, pieces)
                except NoSuchBody:
                    lost.add(index)  # expunged, body removed, since the records were read
                    continue
                (values[index],) = pieces  # type: ignore[assignment]  # built content, never streamed
        return values


class _Requested:
    """The view's messages a FETCH names, as a membership test. CHANGEDSINCE only looks at the
    changed messages, so ``1:*`` over 100,000 messages is checked against, never listed."""

    def __init__(self, session: Any, cmd: cmds.Fetch) -> None:
        view = session.selected
        self.view = view
        self.saved: frozenset[int] | None = None
        self.by_uid = cmd.uid
        # With PARTIAL, the messages at its positions among those the set names: CHANGEDSINCE
        # then answers the changed ones of them (RFC 9394 sections 3.3 and 3.4: two filters of
        # the set, in either order), so this holds the page's UIDs (only they are listed).
        self.page: frozenset[int] | None = None
        if cmd.partial is not None:
            self.page = frozenset(resolve_page(session, cmd.seqset, cmd.uid, cmd.partial))
        seqset = cmd.seqset
        if seqset.saved:
            self.saved = frozenset(saved_uids(session))
            self.ranges = ResolvedSet([])
        elif cmd.uid:
            # Like SelectedMailbox.resolve: "*" is the highest UID, and "n:*" names it even when
            # n is above it (RFC 3501 section 6.4.8).
            self.ranges = ResolvedSet(seqset.resolve(view.runs[-1], clip=False) if view.runs else [])
        else:
            self.ranges = ResolvedSet(seqset.resolve(len(view.runs)))

    def __contains__(self, uid: int) -> bool:
        position = self.view.runs.position(uid)
        if position is None:
            return False
        if self.page is not None:
            return uid in self.page
        if self.saved is not None:
            return uid in self.saved
        return (uid if self.by_uid else position + 1) in self.ranges

    def any_gone(self, vanished: Vanished) -> bool:
        """Is a requested message expunged (by another session, not yet reported)? When the
        tombstones were pruned past the modseq asked about, the view's messages are looked for
        one by one instead (midb.tombstones)."""
        return any(uid in self for uid in vanished.held_gone(self.view.runs)) or any(uid in self for uid in self.view.pending_expunge)


def _changed_since(session: Any, requested: _Requested, since: int) -> tuple[list[Any], bool]:
    """(records of the requested messages whose MODSEQ is above ``since``, in UID order; whether
    a requested message is gone from the store), from midb's modseq index."""
    view = session.selected
    changed, vanished = session.store.changes_since(view.account, view.folder_id, since)
    return [meta for meta in changed if meta.uid in requested], requested.any_gone(vanished)


def _record_batches(session: Any, uids: list[int] | _Requested, since: int | None
                    ) -> Iterator[tuple[list[Any], bool]]:
    """The index records to answer, a batch at a time, each with "some requested message is gone"."""
    view = session.selected
    if since is not None:
        assert isinstance(uids, _Requested)
        metas, missing = _changed_since(session, uids, since)
        yield [], missing
        for start in range(0, len(metas), _BATCH):
            yield metas[start : start + _BATCH], False
        return
    assert isinstance(uids, list)
    store = session.store
    for start in range(0, len(uids), _BATCH):
        wanted = uids[start : start + _BATCH]
        metas = store.get_messages(view.account, view.folder_id, wanted)
        yield metas, len(metas) != len(wanted)


def _flags_shown(session: Any, cmd: cmds.Fetch, uids: list[int] | _Requested,
                 snapshot: int) -> FlagsShown | None:
    """What the sync after this FETCH of FLAGS may leave out as shown
    (SelectedMailbox.note_flags_shown), or None. The FETCH must show MODSEQ too to a
    CONDSTORE-aware client (its updates carry it), and name its messages by UID: message
    numbers shift when the sync reports expunges."""
    view = session.selected
    if view.condstore and cmd.changedsince is None and not condstore.names_modseq(cmd.items):
        return None
    contains: Callable[[int], bool]
    if isinstance(uids, _Requested):
        if not uids.by_uid and uids.saved is None:
            return None
        contains = uids.__contains__
    else:
        contains = functools.partial(in_ascending, uids)
    return FlagsShown(contains, snapshot, cmd.changedsince)


def _message_numbers(view: Any, metas: list[Any]) -> Sequence[int | None]:
    """The message numbers of a batch's records (ascending UIDs): a range when they are a
    contiguous stretch of the view, as in FETCH 1:*, rather than a lookup per message. None for
    a message not in the view. With UIDONLY, what leads the responses: the UIDs."""
    uids = [meta.uid for meta in metas]
    try:
        numbers: Sequence[int | None] = view.runs.positions_of(uids, base=1)
    except ValueError:  # not all in the view: each looked up (None for one that is not)
        numbers = [view.msn_of(uid) for uid in uids]
    if view.session.uidonly:
        return [None if number is None else uid for uid, number in zip(uids, numbers, strict=True)]
    return numbers


def _response_label(uidonly: bool) -> bytes:
    """RFC 9586 section 3.3: after ENABLE UIDONLY every FETCH response is a UIDFETCH response."""
    return b"UIDFETCH" if uidonly else b"FETCH"


@command(cmds.Fetch, states=SELECTED, expunge_ok=False)
def fetch(session: Any, cmd: cmds.Fetch) -> Generator[bytes | FileRegion | ResponseMark, Any, Done]:
    if cmd.vanished and not session.qresync_enabled:
        # RFC 7162 section 3.2.6: the VANISHED modifier needs ENABLE QRESYNC first.
        raise CommandFailed(Code.BAD_NOT_ENABLED, "QRESYNC", status="BAD")
    view = session.selected
    uids: list[int] | _Requested
    if cmd.changedsince is None:
        if cmd.partial is None:
            uids = resolve_uids(session, cmd.seqset, cmd.uid)
        else:  # RFC 9394 section 3.3: positions in the set named, found without listing it
            uids = resolve_page(session, cmd.seqset, cmd.uid, cmd.partial)
    else:
        refuse_numbers_beyond_count(session, cmd.seqset, cmd.uid)  # as resolve_uids
        uids = _Requested(session, cmd)
    if cmd.changedsince is not None or condstore.names_modseq(cmd.items):
        yield from condstore.enable(session)
    if cmd.vanished and cmd.changedsince is not None:  # the parser allows VANISHED only so
        vanished = condstore.vanished_earlier(session, cmd.seqset, cmd.changedsince)
        if vanished is not None:
            yield vanished
    shown: FlagsShown | None = None
    if any(att.name == "FLAGS" for att in cmd.items):
        # Read before the records: see FlagsShown. Nothing changed since this session's last
        # update (the usual case) costs this one read.
        snapshot = session.store.highestmodseq(view.account_id, view.folder_id)
        if snapshot is not None and snapshot > view.modseq:
            # A keyword another session set is announced before the first FETCH that shows it,
            # as the sync and STORE do: a client that learns keywords from FLAGS (Thunderbird)
            # would otherwise meet one it was not told of.
            yield from view.keywords_update()
            shown = _flags_shown(session, cmd, uids, snapshot)
    store = session.store
    renderer = _Renderer(session, cmd)
    mark_seen = not view.readonly and any(att.sets_seen for att in cmd.items)
    missing = False
    lost_bodies = False
    names = ["UID"] * renderer.uid + [att.name for att in renderer.items]
    rows: _RecordColumnsFetch | None = None
    if not mark_seen and RECORD_ITEMS.issuperset(names):
        # UID / FLAGS / MODSEQ only (a client resynchronising): rendered column-wise.
        rows = _RecordColumnsFetch(names, recent=view.recent, show_recent=renderer.show_recent,
                                   uidonly=session.uidonly)
    elif not mark_seen and isinstance(uids, list) and _ListingColumnsFetch.handles(renderer):
        rows = _ListingColumnsFetch(renderer, names)  # what a client lists a folder with
    if rows is not None:
        try:
            if isinstance(uids, _Requested):
                assert cmd.changedsince is not None
                missing = yield from rows.changed_responses(session, uids, cmd.changedsince)
            else:
                missing = yield from rows.responses(session, uids)
        finally:
            view.note_fetch_modseq(rows.top_modseq)
        if isinstance(rows, _ListingColumnsFetch) and rows.lost_bodies:
            return _LOST_BODIES
        if shown is not None:
            view.note_flags_shown(shown)
        if missing and not cmd.uid:
            return Done(Code.NO_EXPUNGE_ISSUED, status="NO")
        return Done(Code.OK_FETCH)
    # Whole responses of messages without a streamed body, waiting to go out together
    # (COALESCE_BYTES); a list and a count kept in locals, as this loop runs once per message.
    gathered: list[bytes] = []
    gathered_size = 0
    render = renderer.render
    label = _response_label(session.uidonly)
    response_format = b"* %d " + label + b" (%b)\r\n"
    # INPROGRESS: the messages answered so far of those named (not counted for CHANGEDSINCE,
    # whose set is not listed).
    answered = 0
    named = len(uids) if isinstance(uids, list) else None
    try:
        for metas, gone in _record_batches(session, uids, cmd.changedsince):
            session.progress.note(answered, named)
            answered += len(metas)
            missing = missing or gone
            renderer.note_batch(metas)
            seen_changed: set[int] = set()
            if mark_seen:
                unseen = [meta.uid for meta in metas if SEEN not in meta.flags]
                if unseen:
                    changed, _failed = store.store_flags(view.account, view.folder_id, unseen, "add", (SEEN,))
                    view.note_own_changes(changed)
                    updated = {meta.uid: meta for meta in changed}
                    seen_changed = set(updated)
                    metas = [updated.get(meta.uid, meta) for meta in metas]
            for position, (msn, meta) in enumerate(zip(_message_numbers(view, metas), metas, strict=True)):
                if msn is None:
                    continue
                try:
                    pieces = render(meta, meta.uid in seen_changed)
                except NoSuchBody:
                    # Expunged, body removed, since the records were read; or lost.
                    lost_bodies |= _bodies_lost(session, [meta.uid], [meta.blob])
                    missing = True
                    continue
                except fetchmime.UnknownCTE:
                    if gathered:  # what was rendered before still goes out, as it would unbatched
                        yield b"".join(gathered)
                    _unmark_unanswered(session, [later.uid for later in metas[position:] if later.uid in seen_changed])
                    raise CommandFailed(Code.NO_UNKNOWN_CTE) from None
                if _BodyStream not in map(type, pieces):  # all bytes (a map in C, not a generator)
                    response = response_format % (msn, b" ".join(pieces))  # type: ignore[arg-type]
                    gathered.append(response)
                    gathered_size += len(response)
                    if gathered_size >= COALESCE_BYTES:
                        yield b"".join(gathered)
                        gathered = []
                        gathered_size = 0
                    continue
                if gathered:  # responses before a streamed body go out before it
                    yield b"".join(gathered)
                    gathered = []
                    gathered_size = 0
                try:
                    yield from _emit(msn, pieces, session.file_output, label)
                finally:
                    _close_streams(pieces)
            if gathered:  # before the next batch's store calls
                yield b"".join(gathered)
                gathered = []
                gathered_size = 0
    finally:
        view.note_fetch_modseq(renderer.top_modseq)
    if lost_bodies:
        return _LOST_BODIES
    if shown is not None:
        view.note_flags_shown(shown)
    if missing and not cmd.uid:
        return Done(Code.NO_EXPUNGE_ISSUED, status="NO")
    return Done(Code.OK_FETCH)


def _unmark_unanswered(session: Any, uids: list[int]) -> None:
    """A FETCH that fails part-way (NO [UNKNOWN-CTE]) set \\Seen for its whole batch before
    rendering it: the messages it never answered are not read, and the client was never told
    they were, so their \\Seen goes again (noted as this session's own: the client's flags are
    right as they are)."""
    if uids:
        view = session.selected
        reverted, _failed = session.store.store_flags(view.account, view.folder_id, uids, "remove", (SEEN,))
        view.note_own_changes(reverted)


# A message still in the folder whose body file is gone: not an expunge the client could learn
# of with a NOOP (EXPUNGEISSUED), but the store failing one of its own invariants (RFC 5530).
_LOST_BODIES = Done(Code.NO_MESSAGE_UNREADABLE, status="NO")


def _bodies_lost(session: Any, uids: list[int], blobs: list[str]) -> bool:
    """Of messages whose body file was not found, whether any is still in the folder with that
    body: lost, not expunged meanwhile (an expunge removes the record first, the file after its
    commit). Each lost one is logged as an error naming it and its file."""
    view = session.selected
    stored = {meta.uid: meta.blob for meta in session.store.get_messages(view.account, view.folder_id, uids)}
    lost = False
    for uid, blob in zip(uids, blobs, strict=True):
        if stored.get(uid) == blob:
            lost = True
            session.ctx.log.error("session %s: user=%s folder=%s uid=%d: message body %s is missing from the store "
                                  "(restore it from a backup, or expunge the message; see midb verify)",
                                  session.id, view.account, escape_text(view.name), uid, blob)
    return lost
