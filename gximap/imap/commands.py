"""Typed IMAP commands: what :func:`gximap.imap.parser.parse_command` produces.

One frozen dataclass per command family.  Values are already decoded and validated: mailbox
names are ``str`` (modified UTF-7 or UTF-8 undone, INBOX normalised) with the wire bytes kept,
flags are canonical, sequence sets are unexpanded ranges, search criteria are a tree.  Every
command carries its ``tag`` (bytes, as received) so the session can answer it.
"""

from __future__ import annotations

import bisect
import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import ClassVar, Literal, TypeVar

from gximap.imap import encode

_T = TypeVar("_T")

HIERARCHY_SEPARATOR = "/"
INBOX = "INBOX"

# RFC 3501 section 2.3.2 system flags, canonical spelling (\Recent is server-managed).
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")

# The charsets SEARCH, SORT and THREAD take (their ``charset``), and the response code that
# answers any other (RFC 3501 section 7.1). Here rather than in the parser, which refuses the
# others, so that gximap.imap.codes (NO_BAD_CHARSET's usual code) need not import it.
SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")
BADCHARSET_CODE = b"BADCHARSET (" + " ".join(SUPPORTED_CHARSETS).encode("ascii") + b")"


# -- mailbox names ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailboxName:
    """A mailbox name (or LIST pattern): ``name`` decoded, ``raw`` the string's bytes as sent."""

    name: str
    raw: bytes

    @property
    def is_inbox(self) -> bool:
        return self.name == INBOX


def normalize_inbox(name: str) -> str:
    """RFC 3501 section 5.1: INBOX is case-insensitive.  Like the store, also normalise INBOX as
    the first hierarchy component ("inbox/Sub" is "INBOX/Sub")."""
    head, sep, rest = name.partition(HIERARCHY_SEPARATOR)
    # ASCII case only: "\u0131nbox".upper() is "INBOX" too (the dotless i), and is not INBOX.
    if len(head) == 5 and head.isascii() and head.upper() == INBOX and head != INBOX:
        return INBOX + sep + rest
    return name


# -- sequence sets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """An unexpanded sequence set: ranges of (start, end) as written, ``None`` standing for ``*``
    (the largest number in use).  ``saved`` is the SEARCHRES ``$`` (RFC 5182), which the session
    replaces with the saved search result before resolving."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def resolve(self, max_value: int, *, clip: bool = True) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ranges with ``*`` replaced by ``max_value``.

        With ``clip`` (the default) the result is limited to 1..max_value, so ``UID 559:*`` on a
        mailbox whose highest UID is 500 yields [(500, 500)] as RFC 3501 section 6.4.8 wants."""
        if self.saved:
            raise ValueError("the saved search result ($) must be substituted by the session")
        spans: list[tuple[int, int]] = []
        for start, end in self.ranges:
            low = max_value if start is None else start
            high = max_value if end is None else end
            if low > high:
                low, high = high, low
            if clip:
                if low < 1:
                    low = 1
                if high > max_value:
                    high = max_value
                if low > high:
                    continue
            spans.append((low, high))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        return merged

    def contains(self, number: int, max_value: int) -> bool:
        if self.saved:
            raise ValueError("the saved search result ($) must be substituted by the session")
        for start, end in self.ranges:
            low = max_value if start is None else start
            high = max_value if end is None else end
            if low > high:
                low, high = high, low
            if low <= number <= high:
                return True
        return False

    def highest(self, max_value: int) -> int:
        """The largest number the set names, ``*`` counting as ``max_value``.  A message sequence
        set whose highest number exceeds the message count is invalid (RFC 9051 section 9)."""
        best = 0
        for start, end in self.ranges:
            for value in (start, end):
                number = max_value if value is None else value
                if number > best:
                    best = number
        return best

    def uses_star(self) -> bool:
        return any(start is None or end is None for start, end in self.ranges)

    def to_bytes(self) -> bytes:
        if self.saved:
            return b"$"
        out = []
        for start, end in self.ranges:
            first = b"*" if start is None else str(start).encode()
            if start == end:
                out.append(first)
            else:
                out.append(first + b":" + (b"*" if end is None else str(end).encode()))
        return b",".join(out)


@dataclass(frozen=True, slots=True)
class PartialRange:
    """RFC 9394 partial-range: positions ``start:end`` in a result (SEARCH, SORT) or in the
    messages a FETCH names, counted from 1 in order; negative positions count from the end (-1
    is the last). Kept as sent, which the ESEARCH PARTIAL answer repeats; both ends have the same
    sign and neither is 0 (the parser sees to it), and 500:400 is the same as 400:500."""

    start: int
    end: int

    def __bytes__(self) -> bytes:
        return b"%d:%d" % (self.start, self.end)

    def bounds(self, count: int) -> tuple[int, int]:
        """The 0-based slice [start, stop) of the range's positions among ``count`` items
        (clipped to them: empty, start == stop, when the range is past either end)."""
        low, high = sorted((abs(self.start), abs(self.end)))
        if self.start > 0:
            return min(low - 1, count), min(high, count)
        return max(count - high, 0), max(count - low + 1, 0)

    def select(self, items: list[_T]) -> list[_T]:
        """The items at the range's positions, in their order (none past either end)."""
        start, stop = self.bounds(len(items))
        return items[start:stop]


class ResolvedSet:
    """Membership tests against a resolved set in O(log k): for per-message loops."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self._starts = [low for low, _ in ranges]
        self._ends = [high for _, high in ranges]

    def __contains__(self, number: int) -> bool:
        index = bisect.bisect_right(self._starts, number) - 1
        return index >= 0 and number <= self._ends[index]


# -- FETCH --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """``section`` of BODY[...] / BINARY[...] (RFC 3501 section 6.4.5, RFC 3516)."""

    part: tuple[int, ...] = ()
    text: str | None = None  # HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME or None
    fields: tuple[str, ...] = ()  # HEADER.FIELDS[.NOT] field names, spelled as the client did

    def to_bytes(self) -> bytes:
        """The text between the brackets, as it is echoed in the FETCH response."""
        out = ".".join(str(number) for number in self.part).encode("ascii")
        if self.text is not None:
            if out:
                out += b"."
            out += self.text.encode("ascii")
            if self.text.startswith("HEADER.FIELDS"):
                out += b" " + encode.paren_list([encode.astring(name) for name in self.fields])
        return out


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """One fetch item.  ``name`` is the item without its section: FLAGS, INTERNALDATE,
    RFC822.SIZE, RFC822, RFC822.HEADER, RFC822.TEXT, ENVELOPE, BODY, BODYSTRUCTURE, UID, MODSEQ,
    BINARY or BINARY.SIZE.  ``BODY`` with a ``section`` is BODY[...] / BODY.PEEK[...]; without one
    it is the non-extensible body structure."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None  # (offset, count) of <offset.count>
    peek: bool = False

    @property
    def is_section(self) -> bool:
        return self.section is not None

    @property
    def sets_seen(self) -> bool:
        """Fetching this item sets \\Seen (RFC 3501 section 6.4.5; RFC 3516 for BINARY). ``peek``
        spares RFC822 and RFC822.TEXT too: the client cannot ask for that (they have no .PEEK
        form), peek_forms does (NOTIFY's MessageNew, a live search's UPDATE (...))."""
        if self.peek:
            return False
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.name in ("BODY", "BINARY") and self.section is not None

    def response_label(self) -> bytes:
        """The item name as it must appear in the FETCH response, e.g. ``BODY[1.HEADER]<0>``
        for ``BODY.PEEK[1.HEADER]<0.100>`` (the response carries only the origin octet)."""
        if self.section is None:
            return self.name.encode("ascii")
        label = self.name.encode("ascii") + b"[" + self.section.to_bytes() + b"]"
        if self.partial is not None:
            label += b"<%d>" % self.partial[0]
        return label


def peek_forms(atts: Iterable[FetchAtt]) -> tuple[FetchAtt, ...]:
    """Fetch attributes as fetched for a response the client gets unasked (NOTIFY's MessageNew,
    RFC 5465 section 5.2; a live search's ``UPDATE (...)``, section 7): those that set \\Seen as
    their .PEEK forms, and one item per response label, the first (BODY[] with BODY.PEEK[] is
    one, as in FETCH). Section 5.2 asks the client not to use attributes that set \\Seen and
    leaves the server's part open; here a response the client did not ask for at that moment
    never changes the mailbox (nor what other sessions see as unread)."""
    by_label: dict[bytes, FetchAtt] = {}
    for att in atts:
        if att.sets_seen:
            att = replace(att, peek=True)
        by_label.setdefault(att.response_label(), att)
    return tuple(by_label.values())


# -- SEARCH -------------------------------------------------------------------------------------


class SearchKey:
    """Base of the search-criteria tree (RFC 3501 / RFC 9051 section 6.4.4 and extensions)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SearchAll(SearchKey):
    pass


@dataclass(frozen=True, slots=True)
class SearchAnd(SearchKey):
    """All keys match (a parenthesised group, or the keys of a search program)."""

    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class SearchOr(SearchKey):
    """Any key matches.  Chains of OR are flattened: ``OR OR a b c`` is SearchOr((a, b, c))."""

    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class SearchNot(SearchKey):
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchFlag(SearchKey):
    """ANSWERED/DELETED/DRAFT/FLAGGED/SEEN (and their UN- forms), KEYWORD/UNKEYWORD."""

    flag: str  # canonical system flag or keyword as given
    present: bool


@dataclass(frozen=True, slots=True)
class SearchRecent(SearchKey):
    """RECENT.  NEW is And(Recent, Flag(\\Seen, False)); OLD is Not(Recent)."""


@dataclass(frozen=True, slots=True)
class SearchHeader(SearchKey):
    """Substring search in a header field: FROM/TO/CC/BCC/SUBJECT give the canonical field name,
    HEADER the name as the client spelled it.  An empty value matches messages having the field.
    ``every_occurrence`` (HEADER): any field of that name counts, where the envelope keys look
    at the envelope's field, the first one (RFC 3501 6.4.4)."""

    field: str
    value: str
    every_occurrence: bool = False


@dataclass(frozen=True, slots=True)
class SearchText(SearchKey):
    """BODY (body only) or TEXT (header and body) substring search."""

    where: str  # "BODY" or "TEXT"
    value: str


@dataclass(frozen=True, slots=True)
class SearchDate(SearchKey):
    """BEFORE/ON/SINCE (internal date), SENTBEFORE/SENTON/SENTSINCE (Date: header),
    SAVEDBEFORE/SAVEDON/SAVEDSINCE (RFC 8514 save date).  Dates ignore time and time zone."""

    kind: str  # "INTERNAL", "SENT" or "SAVED"
    relation: str  # "BEFORE", "ON" or "SINCE"
    date: datetime.date


@dataclass(frozen=True, slots=True)
class SearchSize(SearchKey):
    larger: bool  # LARGER n when True, SMALLER n when False
    size: int


@dataclass(frozen=True, slots=True)
class SearchSequence(SearchKey):
    """A sequence-set key (message numbers), or UID sequence-set when ``uid``."""

    seqset: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchModSeq(SearchKey):
    """MODSEQ [entry-name entry-type] mod-sequence-valzer (RFC 7162 section 3.1.5)."""

    modseq: int
    entry_name: str | None = None  # e.g. "/flags/\\draft"
    entry_type: str | None = None  # "priv", "shared" or "all"


@dataclass(frozen=True, slots=True)
class SearchObjectId(SearchKey):
    """EMAILID objectid / THREADID objectid (RFC 8474 section 6): the messages with that id."""

    kind: Literal["EMAILID", "THREADID"]
    objectid: str


@dataclass(frozen=True, slots=True)
class SearchAge(SearchKey):
    """OLDER n / YOUNGER n seconds, against the internal date (RFC 5032)."""

    older: bool
    seconds: int


def search_nodes(key: SearchKey) -> Iterator[SearchKey]:
    """``key`` and every key within it (under AND, OR and NOT), for a question about the whole
    search program: does it read MODSEQ, flags, message numbers?"""
    stack = [key]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, SearchAnd | SearchOr):
            stack.extend(node.keys)
        elif isinstance(node, SearchNot):
            stack.append(node.key)


# -- other parameters -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QResyncParams:
    """SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids [(seq-match-data)]]))."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None  # (message numbers, their UIDs)


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: str  # ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO, DISPLAYFROM, DISPLAYTO
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class CatenateText:
    """A CATENATE part sent by the client (RFC 4469 section 5: ``TEXT literal``), or, with
    ``utf8``, RFC 6855 section 4's ``UTF8 (literal8)`` cat-part."""

    data: bytes
    utf8: bool = False
    binary: bool = False  # a literal8 (only inside UTF8): may hold NUL octets


@dataclass(frozen=True, slots=True)
class CatenateUrl:
    """A CATENATE part naming data on the server (RFC 4469 section 5: ``URL astring``): an IMAP
    URL (RFC 5092), as sent; resolved by the session."""

    url: bytes


CatenatePart = CatenateText | CatenateUrl


@dataclass(frozen=True, slots=True)
class AppendMessage:
    flags: tuple[str, ...]
    date: tuple[int, int] | None  # (unix seconds, zone offset in minutes east of UTC)
    data: bytes
    binary: bool = False  # sent as literal8 (RFC 3516): may hold NUL octets
    utf8: bool = False  # sent as UTF8 (literal8) (RFC 6855): headers may hold raw UTF-8
    # RFC 4469 CATENATE: the parts the message is made of (``data`` is empty until the session
    # has put them together); None for a message sent as one literal.
    catenate: tuple[CatenatePart, ...] | None = None


# -- commands -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    tag: bytes
    NAME: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return self.NAME


@dataclass(frozen=True, slots=True)
class Capability(Command):
    NAME: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    NAME: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class Logout(Command):
    NAME: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True)
class Starttls(Command):
    NAME: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True, slots=True)
class Login(Command):
    user: bytes
    password: bytes
    NAME: ClassVar[str] = "LOGIN"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    mechanism: str  # upper-cased
    initial: bytes | None = None  # SASL-IR initial response, decoded; b"" for "="
    NAME: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True, slots=True)
class Unauthenticate(Command):
    NAME: ClassVar[str] = "UNAUTHENTICATE"


@dataclass(frozen=True, slots=True)
class Id(Command):
    params: dict[str, str | None] | None = None  # None for "ID NIL"; field names as sent
    NAME: ClassVar[str] = "ID"


@dataclass(frozen=True, slots=True)
class Enable(Command):
    capabilities: tuple[str, ...] = ()  # upper-cased
    NAME: ClassVar[str] = "ENABLE"

    @property
    def caps(self) -> tuple[str, ...]:
        return self.capabilities


@dataclass(frozen=True, slots=True)
class Select(Command):
    mailbox: MailboxName
    examine: bool = False
    condstore: bool = False
    qresync: QResyncParams | None = None
    NAME: ClassVar[str] = "SELECT"

    @property
    def name(self) -> str:
        return "EXAMINE" if self.examine else "SELECT"


@dataclass(frozen=True, slots=True)
class Create(Command):
    mailbox: MailboxName
    use: tuple[str, ...] | None = None  # RFC 6154 special-use attributes, canonical case
    NAME: ClassVar[str] = "CREATE"


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: MailboxName
    NAME: ClassVar[str] = "DELETE"


@dataclass(frozen=True, slots=True)
class Rename(Command):
    old: MailboxName
    new: MailboxName
    NAME: ClassVar[str] = "RENAME"


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: MailboxName
    NAME: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: MailboxName
    NAME: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST, basic or extended (RFC 5258 / 5819 / 6154)."""

    reference: MailboxName
    patterns: tuple[MailboxName, ...]
    selection_opts: tuple[str, ...] = ()  # SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE
    return_opts: tuple[str, ...] = ()  # SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS
    status_items: tuple[str, ...] | None = None  # RETURN (STATUS (...)) items
    extended: bool = False  # selection options, several patterns or RETURN were used
    NAME: ClassVar[str] = "LIST"


@dataclass(frozen=True, slots=True)
class Xlist(Command):
    reference: MailboxName
    pattern: MailboxName
    NAME: ClassVar[str] = "XLIST"


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    reference: MailboxName
    pattern: MailboxName
    NAME: ClassVar[str] = "LSUB"


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    NAME: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: MailboxName
    # Upper-cased, de-duplicated: MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE
    # HIGHESTMODSEQ APPENDLIMIT MAILBOXID
    items: tuple[str, ...]
    NAME: ClassVar[str] = "STATUS"


@dataclass(frozen=True, slots=True)
class Append(Command):
    mailbox: MailboxName
    messages: tuple[AppendMessage, ...]  # more than one with MULTIAPPEND (RFC 3502)
    NAME: ClassVar[str] = "APPEND"


@dataclass(frozen=True, slots=True)
class Replace(Command):
    """RFC 8508: APPEND ``message`` to ``mailbox`` and expunge the selected mailbox's message
    ``number`` (a UID with ``uid``; None for ``*``, the last one), as one change."""
    uid: bool
    number: int | None
    mailbox: MailboxName
    message: AppendMessage
    NAME: ClassVar[str] = "REPLACE"


@dataclass(frozen=True, slots=True)
class Idle(Command):
    NAME: ClassVar[str] = "IDLE"


@dataclass(frozen=True, slots=True)
class Check(Command):
    NAME: ClassVar[str] = "CHECK"


@dataclass(frozen=True, slots=True)
class Close(Command):
    NAME: ClassVar[str] = "CLOSE"


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    NAME: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True, slots=True)
class CancelUpdate(Command):
    """RFC 5267 section 4.3.5: stop the updates of the searches these tags started."""

    tags: tuple[bytes, ...]
    NAME: ClassVar[str] = "CANCELUPDATE"


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    uid: bool = False
    seqset: SequenceSet | None = None  # UID EXPUNGE (RFC 4315) only
    NAME: ClassVar[str] = "EXPUNGE"


@dataclass(frozen=True, slots=True)
class Copy(Command):
    uid: bool
    seqset: SequenceSet
    mailbox: MailboxName
    NAME: ClassVar[str] = "COPY"


@dataclass(frozen=True, slots=True)
class Move(Command):
    uid: bool
    seqset: SequenceSet
    mailbox: MailboxName
    NAME: ClassVar[str] = "MOVE"


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    uid: bool
    seqset: SequenceSet
    items: tuple[FetchAtt, ...]  # macros expanded; UID FETCH does not add UID here
    changedsince: int | None = None
    vanished: bool = False
    partial: PartialRange | None = None  # RFC 9394 section 3.3: only these of the messages named
    NAME: ClassVar[str] = "FETCH"


@dataclass(frozen=True, slots=True)
class Store(Command):
    uid: bool
    seqset: SequenceSet
    mode: str  # "+" add, "-" remove, "" replace
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None
    NAME: ClassVar[str] = "STORE"


@dataclass(frozen=True, slots=True)
class Search(Command):
    uid: bool
    charset: str | None  # "UTF-8" or "US-ASCII" as given (upper-cased), None when absent
    criteria: SearchKey
    return_opts: tuple[str, ...] | None = None  # ESEARCH (RFC 4731): MIN MAX ALL COUNT SAVE PARTIAL UPDATE
    partial: PartialRange | None = None  # RETURN (PARTIAL range), RFC 9394; "PARTIAL" in return_opts
    # RETURN (UPDATE (fetch-att ...)), RFC 5465 section 7: fetched for messages that arrive into
    # the live result; as sent (the context fetches their .PEEK forms: peek_forms).
    update_atts: tuple[FetchAtt, ...] = ()
    NAME: ClassVar[str] = "SEARCH"


@dataclass(frozen=True, slots=True)
class Sort(Command):
    uid: bool
    criteria: tuple[SortCriterion, ...]
    charset: str
    search: SearchKey
    return_opts: tuple[str, ...] | None = None  # ESORT (RFC 5267)
    partial: PartialRange | None = None  # RETURN (PARTIAL range), positions in sort order (RFC 9394)
    update_atts: tuple[FetchAtt, ...] = ()  # RETURN (UPDATE (fetch-att ...)), as Search's
    NAME: ClassVar[str] = "SORT"


@dataclass(frozen=True, slots=True)
class Thread(Command):
    uid: bool
    algorithm: str  # ORDEREDSUBJECT or REFERENCES
    charset: str
    search: SearchKey
    NAME: ClassVar[str] = "THREAD"


@dataclass(frozen=True, slots=True)
class Compress(Command):
    algorithm: str  # upper-cased, e.g. DEFLATE
    NAME: ClassVar[str] = "COMPRESS"


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    root: str
    NAME: ClassVar[str] = "GETQUOTA"


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(Command):
    mailbox: MailboxName
    NAME: ClassVar[str] = "GETQUOTAROOT"


@dataclass(frozen=True, slots=True)
class SetQuota(Command):
    root: str
    limits: tuple[tuple[str, int], ...]  # (resource upper-cased, limit)
    NAME: ClassVar[str] = "SETQUOTA"


@dataclass(frozen=True, slots=True)
class GetMetadata(Command):
    mailbox: MailboxName  # name "" for server annotations
    entries: tuple[str, ...]  # lower-cased entry names, e.g. "/private/comment"
    maxsize: int | None = None
    depth: str = "0"  # "0", "1" or "infinity"
    NAME: ClassVar[str] = "GETMETADATA"


@dataclass(frozen=True, slots=True)
class SetMetadata(Command):
    mailbox: MailboxName
    entries: tuple[tuple[str, bytes | None], ...]  # (entry, value); None removes the entry
    NAME: ClassVar[str] = "SETMETADATA"


# RFC 5465 section 5: the events NOTIFY knows, in their canonical spelling (matched case-insensitively).
NOTIFY_MESSAGE_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange")
NOTIFY_EVENTS = NOTIFY_MESSAGE_EVENTS + ("MailboxName", "SubscriptionChange", "MailboxMetadataChange",
                                         "ServerMetadataChange")


@dataclass(frozen=True, slots=True)
class NotifyGroup:
    """One event group of NOTIFY SET (RFC 5465 section 8): which mailboxes, which events.

    ``kind`` is the filter, lower-cased: selected, selected-delayed, inboxes, personal,
    subscribed, subtree or mailboxes (these two with ``mailboxes``). ``events`` are canonical
    names (NOTIFY_EVENTS) or, for an event this server does not know, the atom as sent; empty for
    NONE. ``fetch_atts``: MessageNew's fetch attributes, only given for the selected mailbox."""

    kind: str
    mailboxes: tuple[MailboxName, ...] = ()
    events: tuple[str, ...] = ()
    fetch_atts: tuple[FetchAtt, ...] = ()


@dataclass(frozen=True, slots=True)
class Notify(Command):
    groups: tuple[NotifyGroup, ...] | None  # None: NOTIFY NONE
    status: bool = False  # NOTIFY SET STATUS
    NAME: ClassVar[str] = "NOTIFY"


UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "STORE", "SEARCH", "EXPUNGE", "SORT", "THREAD"})
