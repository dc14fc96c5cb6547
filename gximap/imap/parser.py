"""IMAP client grammar: a framed command (:class:`~gximap.imap.framing.CommandFrame`) to a typed
:class:`~gximap.imap.commands.Command`.

Covers IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051) plus LITERAL+/- (7888), UIDPLUS (4315),
MOVE (6851), ID (2971), ENABLE (5161), IDLE (2177), NAMESPACE (2342), UNSELECT (3691),
MULTIAPPEND (3502), BINARY (3516), ESEARCH (4731), SEARCHRES (5182), SORT/THREAD (5256),
ESORT (5267), DISPLAYFROM/TO (5957), CONDSTORE/QRESYNC (7162), PARTIAL (9394), LIST-EXTENDED (5258),
LIST-STATUS (5819), SPECIAL-USE/CREATE-SPECIAL-USE (6154), COMPRESS (4978), QUOTA (9208),
METADATA (5464), UTF8=ACCEPT (6855), WITHIN (5032), SAVEDATE (8514), PREVIEW (8970), SASL-IR (4959),
UNAUTHENTICATE (8437), OBJECTID (8474), REPLACE (8508), CATENATE (4469) and XLIST.

Every malformed input raises :class:`ParseError` and nothing else: the session answers
``tag BAD text`` (or ``NO [BADCHARSET ...]`` / ``NO [CANNOT]`` / ``NO [LIMIT]`` for those three
codes; LIMIT: an APPEND or REPLACE over ``max_args``).  Recursion is
bounded by ``max_nesting`` (search criteria are parsed with an explicit stack, so even a hostile
chain of a thousand ORs cannot exhaust the interpreter stack), and list lengths by ``max_args``.

Decisions where the RFCs leave room:

* ``\\Recent`` in STORE or APPEND flag lists is rejected (RFC 3501 section 2.3.2: it cannot be
  altered by the client), as are unknown system flags (``\\Foo``) and ``\\*`` (only ever legal in
  a server's PERMANENTFLAGS).  Keywords are passed on as sent; the store keeps each in its
  folder's first spelling (they are case-insensitive).
* Quoted strings may hold UTF-8 (RFC 9051 allows it; RFC 3501 clients send it anyway).  Mailbox
  names are decoded as modified UTF-7 unless ``utf8`` (IMAP4rev2 or UTF8=ACCEPT enabled), in
  which case they are UTF-8 and ``&`` is an ordinary character (RFC 6855 section 3).
* A NUL octet is refused in every string except literal8 (RFC 3516 section 4.3).
* Unknown options of SELECT, LIST, STATUS, FETCH, STORE, SEARCH RETURN... are refused (BAD).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Callable

from gximap.imap import mutf7
from gximap.imap.commands import (
    BADCHARSET_CODE,
    NOTIFY_EVENTS,
    NOTIFY_MESSAGE_EVENTS,
    SUPPORTED_CHARSETS,
    SYSTEM_FLAGS,
    Append,
    AppendMessage,
    Authenticate,
    CancelUpdate,
    Capability,
    CatenatePart,
    CatenateText,
    CatenateUrl,
    Check,
    Close,
    Command,
    Compress,
    Copy,
    Create,
    Delete,
    Enable,
    Expunge,
    Fetch,
    FetchAtt,
    GetMetadata,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    MailboxName,
    Move,
    Namespace,
    Noop,
    Notify,
    NotifyGroup,
    PartialRange,
    QResyncParams,
    Rename,
    Replace,
    Search,
    SearchAge,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchObjectId,
    SearchOr,
    SearchRecent,
    SearchSequence,
    SearchSize,
    SearchText,
    Section,
    Select,
    SequenceSet,
    SetMetadata,
    SetQuota,
    Sort,
    SortCriterion,
    Starttls,
    Status,
    Store,
    Subscribe,
    Thread,
    Unauthenticate,
    Unselect,
    Unsubscribe,
    Xlist,
    normalize_inbox,
)
from gximap.imap.framing import CommandFrame, Literal, extract_tag
from midb.objectids import is_objectid

MAX_NUMBER = 0xFFFFFFFF  # number / nz-number: unsigned 32 bits
MAX_NUMBER64 = 0x7FFFFFFFFFFFFFFF  # number64 / mod-sequence-value: 63 bits
DEFAULT_MAX_RANGES = 65536  # sequence-set elements per set (the imap_max_ranges default)

STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE",
     "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID", "DELETED-STORAGE"}
)
SPECIAL_USE_ATTRS = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
LIST_SELECT_OPTS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
# UPDATE and CONTEXT: RFC 5267 section 4 (CONTEXT=SEARCH, CONTEXT=SORT).
SEARCH_RETURN_OPTS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT"})
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
                       "DISPLAYTO"})
THREAD_ALGORITHMS = frozenset({"ORDEREDSUBJECT", "REFERENCES"})

_MONTHS = {name: index for index, name in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"),
    start=1)}
_SYSTEM_FLAG_BY_UPPER = {flag.upper(): flag for flag in SYSTEM_FLAGS}
_SPECIAL_USE_BY_UPPER = {flag.upper(): flag for flag in SPECIAL_USE_ATTRS}

# ATOM-CHAR: any CHAR except atom-specials ( ) { SP CTL % * " \ ]
_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+")
_ASTRING_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\]+")  # ATOM-CHAR / "]"
_LIST_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){\"\\]+")  # ATOM-CHAR / "%" / "*" / "]"
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(rb'\\(["\\])')
_DIGITS = re.compile(rb"[0-9]+")
_SEQSET = re.compile(rb"[0-9*:,$]+")
_PARTIAL_RANGE = re.compile(rb"(-?)([0-9]+):(-?)([0-9]+)")
_WORD = re.compile(rb"[A-Za-z][A-Za-z0-9.\-]*")
# A well-formed non-empty list of words, e.g. STATUS's items, in one match (_Reader.word_list).
_WORD_LIST = re.compile(rb"\(([A-Za-z][A-Za-z0-9.\-]*(?: [A-Za-z][A-Za-z0-9.\-]*)*)\)")
_SEARCH_WORD = re.compile(rb"[A-Za-z]+")
_FETCH_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9.]*")
_SECTION_WORD = re.compile(rb"[A-Za-z][A-Za-z.]*")
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9]?[0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_HEADER_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+\Z")  # RFC 5322 ftext
_METADATA_ENTRY = re.compile(r"/(private|shared)(/[^/*%\x00-\x1f\x7f]+)*\Z")


class ParseError(Exception):
    """A malformed command.  ``tag`` is None when the line had no valid tag (answer ``* BAD``);
    ``code`` is a response code the answer should carry, e.g. ``BADCHARSET``."""

    def __init__(self, tag: bytes | None, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.tag = tag
        self.text = text
        self.code = code
        self.internal = False  # set when an unexpected exception was converted (a parser bug)
        # A SEARCH or SORT with RETURN (SAVE) refused with NO (its charset): RFC 5182 section 2.1
        # has "$" emptied then, as if the search had run and failed.
        self.empties_saved_result = False

    @property
    def response_code(self) -> bytes | None:
        """The code for the answer, with its argument where the RFC defines one:
        ``BADCHARSET (UTF-8 US-ASCII)`` (RFC 3501 section 7.1; the answer is then NO)."""
        if self.code is None:
            return None
        if self.code == "BADCHARSET":
            return BADCHARSET_CODE
        return self.code.encode("ascii")


# -- the reader ---------------------------------------------------------------------------------


class _Reader:
    """A cursor over a frame's parts: line pieces with literals between them."""

    __slots__ = ("parts", "index", "buf", "pos", "tag", "utf8", "max_nesting", "budget",
                 "max_ranges", "budget_code")

    def __init__(self, frame: CommandFrame, tag: bytes, utf8: bool, max_nesting: int, max_args: int,
                 max_ranges: int) -> None:
        self.parts = frame.parts
        self.index = 0
        first = frame.parts[0] if frame.parts else b""
        self.buf: bytes = first if isinstance(first, bytes) else b""
        self.pos = 0
        self.tag = tag  # frame.tag, checked by parse_command: commands always carry one
        self.utf8 = utf8
        self.max_nesting = max_nesting
        self.budget = max_args
        self.max_ranges = max_ranges
        # The response code of running out of budget: none (a BAD, CLIENTBUG), or LIMIT where
        # the command is valid and the server just takes no more (_append).
        self.budget_code: str | None = None

    def error(self, text: str, code: str | None = None) -> ParseError:
        return ParseError(self.tag, text, code)

    def count(self, items: int = 1) -> None:
        self.budget -= items
        if self.budget < 0:
            raise self.error("Too many arguments", self.budget_code)

    # position tests

    def peek(self) -> int | None:
        """The next byte of the current line piece (None at its end)."""
        if self.pos < len(self.buf):
            return self.buf[self.pos]
        return None

    def at_literal(self) -> bool:
        return self.pos >= len(self.buf) and self.index + 1 < len(self.parts)

    def at_end(self) -> bool:
        return self.pos >= len(self.buf) and self.index + 1 >= len(self.parts)

    def end(self) -> None:
        if not self.at_end():
            if self.at_literal():
                raise self.error("Unexpected literal")
            raise self.error("Unexpected extra arguments")

    def accept(self, token: bytes) -> bool:
        if self.buf.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.accept(token):
            raise self.error(f"Expected {what or repr(token.decode())}")

    def sp(self) -> None:
        if not self.accept(b" "):
            raise self.error("Missing argument" if self.at_end() else "Expected space")

    def match(self, pattern: re.Pattern[bytes]) -> bytes | None:
        found = pattern.match(self.buf, self.pos)
        if found is None or found.end() == self.pos:
            return None
        self.pos = found.end()
        return found.group()

    def peek_word(self) -> str | None:
        """The next word (letters first) upper-cased, without consuming it."""
        found = _WORD.match(self.buf, self.pos)
        return found.group().upper().decode("ascii") if found else None

    # tokens

    def word(self, what: str = "keyword") -> str:
        value = self.match(_WORD)
        if value is None:
            raise self.error(f"Expected {what}")
        return value.decode("ascii").upper()

    def atom(self, what: str = "atom") -> bytes:
        value = self.match(_ATOM)
        if value is None:
            raise self.error(f"Expected {what}")
        return value

    def literal(self, allow_binary: bool = False) -> Literal:
        if not self.at_literal():
            raise self.error("Expected literal")
        item = self.parts[self.index + 1]
        assert isinstance(item, Literal)
        self.index += 2
        following = self.parts[self.index]
        self.buf = following if isinstance(following, bytes) else b""
        self.pos = 0
        if item.binary and not allow_binary:
            raise self.error("literal8 not allowed here")
        if not item.binary and b"\x00" in item.data:
            raise self.error("NUL octet in literal (use literal8)")
        return item

    def quoted(self) -> bytes:
        found = _QUOTED.match(self.buf, self.pos)
        if found is None:
            raise self.error("Invalid quoted string")
        self.pos = found.end()
        value = found.group(1)
        if b"\\" in value:
            value = _QUOTED_ESCAPE.sub(rb"\1", value)
        return value

    def string(self) -> bytes:
        if self.at_literal():
            return self.literal().data
        if self.peek() == 0x22:
            return self.quoted()
        raise self.error("Expected string")

    def astring(self, what: str = "string") -> bytes:
        if self.at_literal():
            return self.literal().data
        if self.peek() == 0x22:
            return self.quoted()
        value = self.match(_ASTRING_ATOM)
        if value is None:
            raise self.error(f"Expected {what}")
        return value

    def nstring(self) -> bytes | None:
        if self.accept_nil():
            return None
        return self.string()

    def accept_nil(self) -> bool:
        if self.buf[self.pos : self.pos + 3].upper() == b"NIL":
            after = self.buf[self.pos + 3 : self.pos + 4]
            if after in (b"", b" ", b")"):
                self.pos += 3
                return True
        return False

    def number(self, limit: int = MAX_NUMBER, what: str = "number") -> int:
        digits = self.match(_DIGITS)
        if digits is None:
            raise self.error(f"Expected {what}")
        significant = digits.lstrip(b"0")
        if len(significant) > 19 or int(significant or b"0") > limit:
            raise self.error(f"{what.capitalize()} too large")
        return int(significant or b"0")

    def nz_number(self, limit: int = MAX_NUMBER, what: str = "number") -> int:
        value = self.number(limit, what)
        if value == 0:
            raise self.error(f"{what.capitalize()} must not be zero")
        return value

    def text_value(self, data: bytes, what: str = "string") -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"Invalid UTF-8 in {what}") from None

    # compound values

    def mailbox(self) -> MailboxName:
        return self.decode_mailbox(self.astring("mailbox name"))

    def list_mailbox(self) -> MailboxName:
        if self.at_literal() or self.peek() == 0x22:
            raw = self.string()
        else:
            raw_atom = self.match(_LIST_ATOM)
            if raw_atom is None:
                raise self.error("Expected mailbox pattern")
            raw = raw_atom
        return self.decode_mailbox(raw, pattern=True)

    def decode_mailbox(self, raw: bytes, *, pattern: bool = False) -> MailboxName:
        if self.utf8:
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.error("Mailbox name is not valid UTF-8") from None
        else:
            try:
                name = mutf7.decode_pattern(raw) if pattern else mutf7.decode(raw)
            except ValueError:
                # Valid syntax, an impossible name: NO [CANNOT] (RFC 5530), as Dovecot answers.
                raise self.error("Mailbox name is not valid modified UTF-7", "CANNOT") from None
        return MailboxName(normalize_inbox(name), raw)

    def sequence_set(self, allow_star: bool = True) -> SequenceSet:
        token = self.match(_SEQSET)
        if token is None:
            raise self.error("Expected sequence set")
        try:
            return parse_sequence_set(token, max_ranges=self.max_ranges, allow_star=allow_star)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def paren_list(self, item: Callable[[], object], *, allow_empty: bool = True) -> list:
        """"(" [item *(SP item)] ")" """
        self.expect(b"(")
        items: list = []
        if self.accept(b")"):
            if not allow_empty:
                raise self.error("Empty list")
            return items
        while True:
            self.count()
            items.append(item())
            if self.accept(b")"):
                return items
            self.sp()

    def word_list(self, what: str, *, allow_empty: bool = True) -> list[str]:
        """``"(" [word *(SP word)] ")"``, upper-cased. The well-formed case takes one regex
        match; anything else goes through paren_list, which names what is wrong."""
        found = _WORD_LIST.match(self.buf, self.pos)
        if found is None:
            return self.paren_list(lambda: self.word(what), allow_empty=allow_empty)
        words = found.group(1).decode("ascii").upper().split(" ")
        self.count(len(words))
        self.pos = found.end()
        return words

    def flag(self, *, allow_recent: bool = False) -> str:
        if self.accept(b"\\"):
            if self.accept(b"*"):
                raise self.error("\\* is not a flag")
            name = self.atom("flag")
            upper = b"\\" + name.upper()
            canonical = _SYSTEM_FLAG_BY_UPPER.get(upper.decode("ascii"))
            if canonical is not None:
                return canonical
            if upper == b"\\RECENT":
                if allow_recent:
                    return "\\Recent"
                raise self.error("\\Recent cannot be set by the client")
            raise self.error(f"Unknown system flag \\{name.decode('ascii')}")
        return self.atom("flag").decode("ascii")

    def flag_list(self) -> tuple[str, ...]:
        return _dedupe_flags(self.paren_list(self.flag))

    def date(self) -> datetime.date:
        quoted = self.accept(b'"')
        found = _DATE.match(self.buf, self.pos)
        if found is None:
            raise self.error("Invalid date")
        self.pos = found.end()
        if quoted:
            self.expect(b'"', "closing quote")
        day, month_name, year = found.groups()
        month = _MONTHS.get(month_name.upper())
        if month is None:
            raise self.error("Invalid month in date")
        try:
            return datetime.date(int(year), month, int(day))
        except ValueError:
            raise self.error("Invalid date") from None

    def date_time(self) -> tuple[int, int]:
        found = _DATE_TIME.match(self.buf, self.pos)
        if found is None:
            raise self.error("Invalid date-time")
        self.pos = found.end()
        day, month_name, year, hour, minute, second, sign, zone_h, zone_m = found.groups()
        month = _MONTHS.get(month_name.upper())
        if month is None:
            raise self.error("Invalid month in date-time")
        zone = int(zone_h) * 60 + int(zone_m)
        if int(zone_m) >= 60 or zone >= 24 * 60:
            raise self.error("Invalid time zone in date-time")
        if sign == b"-":
            zone = -zone
        # A leap second (:60, which RFC 5322 dates may carry and migration tools copy) counts
        # as :59: datetime has no second 60, and refusing the message would lose it. It is one
        # at 23:59 UTC, whatever the local time the zone makes of it.
        leap = (int(hour) * 60 + int(minute) - zone) % (24 * 60) == 24 * 60 - 1
        seconds = min(int(second), 59) if leap else int(second)
        try:
            moment = datetime.datetime(
                int(year), month, int(day.strip() or b"0"), int(hour), int(minute), seconds,
                tzinfo=datetime.timezone(datetime.timedelta(minutes=zone)),
            )
            return int(moment.timestamp()), zone
        except (ValueError, OverflowError):
            raise self.error("Invalid date-time") from None


def _dedupe_flags(flags: list[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out: list[str] = []
    for flag in flags:
        key = flag.lower()
        if key not in seen:
            seen.add(key)
            out.append(flag)
    return tuple(out)


# -- sequence sets ------------------------------------------------------------------------------


def parse_sequence_set(
    data: bytes, *, max_ranges: int = DEFAULT_MAX_RANGES, allow_star: bool = True
) -> SequenceSet:
    """Parse ``sequence-set`` (or ``$``) without expanding ranges; ValueError when malformed."""
    if data == b"$":
        return SequenceSet((), saved=True)
    elements = data.split(b",")
    if len(elements) > max_ranges:
        raise ValueError("Too many sequence set elements")
    ranges: list[tuple[int | None, int | None]] = []
    for element in elements:
        bounds = element.split(b":")
        if len(bounds) > 2:
            raise ValueError("Invalid sequence set range")
        values: list[int | None] = []
        for bound in bounds:
            if bound == b"*":
                if not allow_star:
                    raise ValueError("'*' not allowed in this sequence set")
                values.append(None)
                continue
            if not bound.isdigit() or bound[0] == 0x30 or len(bound) > 10:
                raise ValueError("Invalid sequence number")
            number = int(bound)
            if number > MAX_NUMBER:
                raise ValueError("Sequence number too large")
            values.append(number)
        ranges.append((values[0], values[-1]))
    return SequenceSet(tuple(ranges))


# -- search ------------------------------------------------------------------------------------


_SIMPLE_SEARCH_KEYS: dict[str, SearchKey] = {
    "ALL": SearchAll(),
    # RFC 8514: every message of a mailbox whose storage keeps save dates, as every midb folder does.
    "SAVEDATESUPPORTED": SearchAll(),
    "ANSWERED": SearchFlag("\\Answered", True),
    "DELETED": SearchFlag("\\Deleted", True),
    "DRAFT": SearchFlag("\\Draft", True),
    "FLAGGED": SearchFlag("\\Flagged", True),
    "SEEN": SearchFlag("\\Seen", True),
    "UNANSWERED": SearchFlag("\\Answered", False),
    "UNDELETED": SearchFlag("\\Deleted", False),
    "UNDRAFT": SearchFlag("\\Draft", False),
    "UNFLAGGED": SearchFlag("\\Flagged", False),
    "UNSEEN": SearchFlag("\\Seen", False),
    "RECENT": SearchRecent(),
    "NEW": SearchAnd((SearchRecent(), SearchFlag("\\Seen", False))),
    "OLD": SearchNot(SearchRecent()),
}
_HEADER_SEARCH_KEYS = {"BCC": "Bcc", "CC": "Cc", "FROM": "From", "SUBJECT": "Subject", "TO": "To"}
_DATE_SEARCH_KEYS = {
    "BEFORE": ("INTERNAL", "BEFORE"), "ON": ("INTERNAL", "ON"), "SINCE": ("INTERNAL", "SINCE"),
    "SENTBEFORE": ("SENT", "BEFORE"), "SENTON": ("SENT", "ON"), "SENTSINCE": ("SENT", "SINCE"),
    "SAVEDBEFORE": ("SAVED", "BEFORE"), "SAVEDON": ("SAVED", "ON"), "SAVEDSINCE": ("SAVED", "SINCE"),
}
_MODSEQ_ENTRY_TYPES = frozenset({"PRIV", "SHARED", "ALL"})


class _Pending:
    """An unfinished node on the search parser's explicit stack."""

    __slots__ = ("kind", "keys", "depths", "need")

    def __init__(self, kind: str, need: int = 0) -> None:
        self.kind = kind  # "TOP", "GROUP", "OR" or "NOT"
        self.keys: list[SearchKey] = []
        self.depths: list[int] = []  # the depth of each of ``keys`` (a key alone: 1)
        self.need = need  # OR: operands still to collect before it is complete


# The parser's own stack may hold this many times imap_max_nesting entries: the limit bounds
# the depth of the criteria once groups of one key and ORs inside ORs are folded, and
# Thunderbird writes "any of N" as (OR (OR (OR a b) c) d): two entries per term while it is
# read, one level once folded. Memory stays bounded (and the line length bounds it anyway).
_SEARCH_STACK_FACTOR = 64


def _search_string(r: _Reader, charset: str | None) -> str:
    data = r.astring()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise r.error(f"Search string is not valid {charset or 'UTF-8'}") from None


def _search_atom_key(r: _Reader, name: str, charset: str | None) -> SearchKey:
    """A search key that is neither a group, NOT, OR nor a sequence set; ``name`` consumed."""
    simple = _SIMPLE_SEARCH_KEYS.get(name)
    if simple is not None:
        return simple
    header = _HEADER_SEARCH_KEYS.get(name)
    if header is not None:
        r.sp()
        return SearchHeader(header, _search_string(r, charset))
    if name in ("BODY", "TEXT"):
        r.sp()
        return SearchText(name, _search_string(r, charset))
    dated = _DATE_SEARCH_KEYS.get(name)
    if dated is not None:
        r.sp()
        return SearchDate(dated[0], dated[1], r.date())
    if name == "HEADER":
        r.sp()
        field_raw = r.astring("header field name")
        if field_raw and not _HEADER_FIELD_NAME.match(field_raw):  # "" is an astring: it matches nothing
            raise r.error("Invalid header field name")
        r.sp()
        return SearchHeader(field_raw.decode("ascii"), _search_string(r, charset), every_occurrence=True)
    if name in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        flag = r.flag(allow_recent=True)
        if flag == "\\Recent":
            return SearchRecent() if name == "KEYWORD" else SearchNot(SearchRecent())
        return SearchFlag(flag, name == "KEYWORD")
    if name in ("LARGER", "SMALLER"):
        r.sp()
        return SearchSize(name == "LARGER", r.number(MAX_NUMBER64, "size"))
    if name in ("OLDER", "YOUNGER"):
        r.sp()
        return SearchAge(name == "OLDER", r.nz_number(what="interval"))
    if name == "UID":
        r.sp()
        return SearchSequence(r.sequence_set(), uid=True)
    if name in ("EMAILID", "THREADID"):
        # RFC 8474 section 6 sends the id as an atom; a quoted one is taken too.
        r.sp()
        objectid = r.astring("object id").decode("ascii", "replace")
        if not is_objectid(objectid):  # RFC 8474 section 7: ASCII letters, digits, "-" and "_"
            raise r.error("Invalid object id")
        return SearchObjectId("EMAILID" if name == "EMAILID" else "THREADID", objectid)
    if name == "MODSEQ":
        r.sp()
        entry_name = entry_type = None
        if r.peek() == 0x22:
            entry_raw = r.quoted()
            if not entry_raw.lower().startswith(b"/flags/"):
                raise r.error("Invalid MODSEQ entry name")
            entry_name = entry_raw.decode("ascii", "replace")
            r.sp()
            entry_type = r.word("entry type")
            if entry_type not in _MODSEQ_ENTRY_TYPES:
                raise r.error("Invalid MODSEQ entry type")
            entry_type = entry_type.lower()
            r.sp()
        return SearchModSeq(r.number(MAX_NUMBER64, "mod-sequence"), entry_name, entry_type)
    raise r.error(f"Unknown search key {name}")


def _deliver(r: _Reader, stack: list[_Pending], node: SearchKey, depth: int = 1) -> None:
    """Hand a finished node (``depth`` levels deep) to the pending node above it, completing
    NOT/OR nodes upwards. An OR among an OR's operands is folded into it (OR is associative),
    so the tree evaluated is no deeper than the criteria's real nesting, which max_nesting
    bounds (the evaluation recurses)."""
    while True:
        if depth > r.max_nesting:
            raise r.error("Search criteria nested too deeply")
        top = stack[-1]
        if top.kind == "NOT":
            stack.pop()
            node = SearchNot(node)
            depth += 1
            continue
        top.keys.append(node)
        top.depths.append(depth)
        if top.kind == "OR" and len(top.keys) == top.need:
            stack.pop()
            node, depth = _folded_or(top)
            continue
        return


def _folded_or(pending: _Pending) -> tuple[SearchOr, int]:
    operands: list[SearchKey] = []
    deepest = 0
    for key, depth in zip(pending.keys, pending.depths, strict=True):
        if isinstance(key, SearchOr):
            operands.extend(key.keys)
            deepest = max(deepest, depth - 1)
        else:
            operands.append(key)
            deepest = max(deepest, depth)
    return SearchOr(tuple(operands)), deepest + 1


def _push(r: _Reader, stack: list[_Pending], pending: _Pending) -> None:
    if len(stack) >= r.max_nesting * _SEARCH_STACK_FACTOR:
        raise r.error("Search criteria nested too deeply")
    stack.append(pending)


def parse_search_program(r: _Reader, charset: str | None) -> SearchKey:
    """``search-key *(SP search-key)`` up to the end of the command, iteratively.

    OR chains are flattened into one n-ary SearchOr (OR is associative), also through
    parentheses (Thunderbird's ``(OR (OR a b) c)``), double negations cancel, and a group of
    one key is that key; the nesting limit (max_nesting) counts the levels of what remains."""
    stack = [_Pending("TOP")]
    while True:
        if r.accept(b"("):
            _push(r, stack, _Pending("GROUP"))
            continue
        r.count()
        byte = r.peek()
        if byte is not None and (0x30 <= byte <= 0x39 or byte in (0x2A, 0x24)):  # digit * $
            _deliver(r, stack, SearchSequence(r.sequence_set()))
        else:
            word = r.match(_SEARCH_WORD)
            if word is None:
                raise r.error("Expected search key")
            name = word.decode("ascii").upper()
            if name == "NOT":
                r.sp()
                if stack[-1].kind == "NOT":
                    stack.pop()  # NOT NOT x is x
                else:
                    _push(r, stack, _Pending("NOT"))
                continue
            if name == "OR":
                r.sp()
                top = stack[-1]
                if top.kind == "OR":
                    top.need += 1  # OR (OR a b) c == OR(a, b, c)
                else:
                    _push(r, stack, _Pending("OR", need=2))
                continue
            _deliver(r, stack, _search_atom_key(r, name, charset))
        # After a complete key: closing parentheses, then a space or the end.
        while r.accept(b")"):
            group = stack[-1]
            if group.kind != "GROUP":
                raise r.error("Unbalanced parenthesis in search")
            stack.pop()
            if len(group.keys) == 1:  # a group of one key is that key
                _deliver(r, stack, group.keys[0], group.depths[0])
            else:
                _deliver(r, stack, SearchAnd(tuple(group.keys)), max(group.depths) + 1)
        if r.at_end():
            if len(stack) != 1:
                raise r.error("Incomplete search criteria")
            keys = stack[0].keys
            return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
        r.sp()


def _search_charset(r: _Reader, return_opts: tuple[str, ...] | None = None) -> str:
    charset = r.astring("charset").decode("ascii", "replace").upper()
    if charset not in SUPPORTED_CHARSETS:
        error = r.error("Unsupported charset", code="BADCHARSET")
        error.empties_saved_result = return_opts is not None and "SAVE" in return_opts
        raise error
    return charset


def _return_options(r: _Reader, allowed: frozenset[str]
                    ) -> tuple[tuple[str, ...], PartialRange | None, tuple[FetchAtt, ...]]:
    """``RETURN (opt ...)`` after the keyword; an empty list means ALL (RFC 4731 section 3.1).
    PARTIAL takes a range (RFC 9394 section 3.1), and a command has one PARTIAL or one ALL at
    most: both, or PARTIAL twice, is BAD. CONTEXT is a hint (RFC 5267 section 4.2) that is
    dropped here: ``RETURN (CONTEXT)`` is ALL; UPDATE is kept and, as at Dovecot, is not ALL
    (``RETURN (UPDATE)`` answers an ESEARCH without result items); given twice it is BAD.
    UPDATE may carry fetch attributes, RFC 5465 section 8's ``modifier-update = "UPDATE" [ "("
    fetch-att *(SP fetch-att) ")" ]`` (NOTIFY is always advertised), with or without a space
    before them (_fetch_att_list): returned third, as sent (no macros, not empty; each counts
    towards the command's arguments, as in FETCH)."""
    r.sp()
    partial: PartialRange | None = None
    update_atts: tuple[FetchAtt, ...] = ()

    def option() -> str:
        nonlocal partial, update_atts
        name = r.word("return option")
        if name not in allowed:
            raise r.error(f"Unknown return option {name}")
        if name == "PARTIAL":
            if partial is not None:
                raise r.error("PARTIAL given twice")
            partial = _partial_range(r)
        elif name == "UPDATE":
            update_atts = _fetch_att_list(r) or ()
        return name

    listed = r.paren_list(option)
    if listed.count("ALL") > 1:  # RFC 9394 section 3.1: one PARTIAL, one ALL, or neither
        raise r.error("ALL given twice")
    if listed.count("UPDATE") > 1:
        raise r.error("UPDATE given twice")
    options = tuple(name for name in dict.fromkeys(listed) if name != "CONTEXT") or ("ALL",)
    if partial is not None and "ALL" in options:
        raise r.error("PARTIAL and ALL cannot be combined")
    return options, partial, update_atts


def _fetch_att_list(r: _Reader) -> tuple[FetchAtt, ...] | None:
    """The ``"(" fetch-att *(SP fetch-att) ")"`` that may follow UPDATE or MessageNew (RFC 5465
    section 8), None when none does. Its ABNF puts a space before the list of MessageNew and none
    before UPDATE's, while the RFC's own examples (sections 3.1 and 7) write both with one, as
    RFC 4466's ``search-return-opt`` has it: either spelling is taken, for both (one space at
    most: ``UPDATE  (UID)`` stays BAD)."""
    if r.buf.startswith(b" (", r.pos):
        r.pos += 1
    elif r.peek() != 0x28:
        return None
    return tuple(r.paren_list(lambda: _fetch_att(r), allow_empty=False))


def _partial_range(r: _Reader) -> PartialRange:
    """RFC 9394 section 4: partial-range-first (``nz-number ":" nz-number``) or
    partial-range-last (``"-" nz-number ":" "-" nz-number``), after the space that follows
    PARTIAL; no ``*``, no 0, no mixed signs."""
    found = _PARTIAL_RANGE.match(r.buf, r.pos) if r.accept(b" ") else None
    if found is None:
        raise r.error("Expected PARTIAL range m:n or -m:-n")
    r.pos = found.end()
    first_sign, first, second_sign, second = found.groups()
    for digits in (first, second):
        if not digits.strip(b"0"):
            raise r.error("PARTIAL range position must not be zero")
        if digits.startswith(b"0"):  # nz-number = digit-nz *DIGIT, as in a sequence set
            raise r.error("PARTIAL range position must not start with 0")
        if len(digits) > 10 or int(digits) > MAX_NUMBER:
            raise r.error("PARTIAL range position too large")
    if first_sign != second_sign:
        raise r.error("PARTIAL range mixes positive and negative positions")
    values = [-int(digits) if first_sign else int(digits) for digits in (first, second)]
    return PartialRange(values[0], values[1])


# -- FETCH --------------------------------------------------------------------------------------


_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_FETCH_SIMPLE = frozenset({"FLAGS", "INTERNALDATE", "RFC822.SIZE", "RFC822", "RFC822.HEADER",
                           "RFC822.TEXT", "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ",
                           "SAVEDATE", "PREVIEW", "EMAILID", "THREADID"})
# RFC 8970: PREVIEW's modifiers, "PREVIEW (LAZY)". LAZY lets the server answer NIL for a preview
# it does not have at hand; gximap makes each one at once (midb.preview, bounded), so the
# modifier changes nothing. Only a list of known modifiers is taken as PREVIEW's: after a single
# item, "FETCH 1 PREVIEW (CHANGEDSINCE 5)" is the command's own modifier list.
_PREVIEW_MODIFIERS = re.compile(rb" \((?:LAZY)(?: LAZY)*\)", re.IGNORECASE)
_FETCH_SECTIONED = {"BODY": ("BODY", False), "BODY.PEEK": ("BODY", True),
                    "BINARY": ("BINARY", False), "BINARY.PEEK": ("BINARY", True),
                    "BINARY.SIZE": ("BINARY.SIZE", False)}
_SECTION_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


def _section(r: _Reader, binary: bool) -> Section:
    """After "[": section-spec / section-binary, through the closing "]"."""
    part: list[int] = []
    text: str | None = None
    fields: tuple[str, ...] = ()
    if not r.accept(b"]"):
        while True:
            byte = r.peek()
            if byte is not None and 0x30 <= byte <= 0x39:
                part.append(r.nz_number(what="section part"))
                if len(part) > r.max_nesting * 4:
                    raise r.error("Section part too deep")
                if r.accept(b"."):
                    continue
                break
            if binary:
                raise r.error("BINARY sections are part numbers only")
            word = r.match(_SECTION_WORD)
            if word is None:
                raise r.error("Invalid section")
            text = word.decode("ascii").upper()
            if text not in _SECTION_TEXTS:
                raise r.error("Invalid section text")
            if text == "MIME" and not part:
                raise r.error("MIME requires a part number")
            if text.startswith("HEADER.FIELDS"):
                r.sp()
                names = r.paren_list(lambda: r.astring("header field name"), allow_empty=False)
                for name in names:
                    if not _HEADER_FIELD_NAME.match(name):
                        raise r.error("Invalid header field name")
                fields = tuple(name.decode("ascii") for name in names)
            break
        r.expect(b"]", "']'")
    return Section(tuple(part), text, fields)


def _fetch_att(r: _Reader) -> FetchAtt:
    raw = r.match(_FETCH_NAME)
    if raw is None:
        raise r.error("Expected fetch item")
    name = raw.decode("ascii").upper()
    if r.peek() == 0x5B:  # "["
        sectioned = _FETCH_SECTIONED.get(name)
        if sectioned is None:
            raise r.error(f"Unexpected section after {name}")
        r.pos += 1
        base, peek = sectioned
        section = _section(r, binary=base != "BODY")
        partial = None
        if base == "BINARY.SIZE":
            # RFC 3516 section 6: fetch-att =/ "BINARY.SIZE" section-binary, without a partial.
            if r.peek() == 0x3C:  # "<"
                raise r.error("BINARY.SIZE takes no partial")
        elif r.accept(b"<"):
            # number64 (RFC 9051); taken under IMAP4rev1 too, where a 32-bit client never sends more.
            offset = r.number(MAX_NUMBER64, "partial offset")
            r.expect(b".", "'.' in partial")
            count = r.nz_number(MAX_NUMBER64, "partial length")
            r.expect(b">", "'>'")
            partial = (offset, count)
        return FetchAtt(base, section, partial, peek)
    if name in _FETCH_SIMPLE:
        if name == "PREVIEW":
            r.match(_PREVIEW_MODIFIERS)
        return FetchAtt(name)
    if name in _FETCH_SECTIONED:
        raise r.error(f"{name} requires a section")
    raise r.error(f"Unknown fetch item {name}")


def _fetch_items(r: _Reader) -> tuple[FetchAtt, ...]:
    if r.peek() == 0x28:
        items = r.paren_list(lambda: _fetch_att(r), allow_empty=False)
    else:
        macro = r.peek_word()
        if macro in _FETCH_MACROS:
            r.word()
            return tuple(FetchAtt(name) for name in _FETCH_MACROS[macro])
        items = [_fetch_att(r)]
    # One response item per label: BODY[] and BODY.PEEK[] together are one item that sets \Seen.
    by_label: dict[bytes, FetchAtt] = {}
    for item in items:
        label = item.response_label()
        known = by_label.get(label)
        if known is None:
            by_label[label] = item
        elif known.peek and not item.peek:
            by_label[label] = item
    return tuple(by_label.values())


# -- command parsers ----------------------------------------------------------------------------


def _no_args(cls: type[Command]) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        return cls(r.tag)

    return parse


def _login(r: _Reader) -> Command:
    r.sp()
    user = r.astring("user name")
    r.sp()
    password = r.astring("password")
    return Login(r.tag, user, password)


def _authenticate(r: _Reader) -> Command:
    r.sp()
    mechanism = r.atom("mechanism").decode("ascii").upper()
    initial = None
    if r.accept(b" "):
        if r.accept(b"="):
            initial = b""
        else:
            token = r.match(_BASE64)
            if token is None:
                raise r.error("Invalid base64 initial response")
            try:
                initial = base64.b64decode(token, validate=True)
            except (binascii.Error, ValueError):
                raise r.error("Invalid base64 initial response") from None
    return Authenticate(r.tag, mechanism, initial)


def _enable(r: _Reader) -> Command:
    capabilities: list[str] = []
    while True:
        r.sp()
        r.count()
        capabilities.append(r.atom("capability").decode("ascii").upper())
        if r.at_end():
            return Enable(r.tag, tuple(dict.fromkeys(capabilities)))


def _id(r: _Reader) -> Command:
    r.sp()
    if r.accept_nil():
        return Id(r.tag, None)
    r.expect(b"(")
    params: dict[str, str | None] = {}
    if not r.accept(b")"):
        while True:
            # RFC 2971 section 3.3: at most 30 pairs, names up to 30 octets, values up to 1024.
            if len(params) >= 30:
                raise r.error("Too many ID parameters")
            key = r.string()
            r.sp()
            value = r.nstring()
            if len(key) > 30 or (value is not None and len(value) > 1024):
                raise r.error("ID parameter too long")
            params[key.decode("utf-8", "replace")] = (
                None if value is None else value.decode("utf-8", "replace")
            )
            if r.accept(b")"):
                break
            r.sp()
    return Id(r.tag, params)


def _mod_sequence_value(r: _Reader) -> int:
    # RFC 7162's mod-sequence-value is positive, but a client that starts its resync from
    # nothing (CHANGEDSINCE 0, QRESYNC (uidvalidity 0)) means "every change", which is what it
    # gets: every message's mod-sequence is above 0. Dovecot and Cyrus take it too.
    return r.number(MAX_NUMBER64, "mod-sequence")


def _select(examine: bool) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        r.sp()
        mailbox = r.mailbox()
        condstore = False
        qresync = None
        if r.accept(b" "):
            r.expect(b"(")
            seen: set[str] = set()
            while True:
                r.count()
                param = r.word("select parameter")
                if param in seen:
                    raise r.error(f"Duplicate {param} parameter")
                seen.add(param)
                if param == "CONDSTORE":
                    condstore = True
                elif param == "QRESYNC":
                    r.sp()
                    qresync = _qresync(r)
                else:
                    raise r.error(f"Unknown select parameter {param}")
                if r.accept(b")"):
                    break
                r.sp()
        return Select(r.tag, mailbox, examine, condstore, qresync)

    return parse


def _qresync(r: _Reader) -> QResyncParams:
    r.expect(b"(")
    uidvalidity = r.nz_number(what="UIDVALIDITY")
    r.sp()
    modseq = _mod_sequence_value(r)
    known_uids = None
    seq_match = None
    if r.accept(b" "):
        if r.peek() != 0x28:
            known_uids = r.sequence_set(allow_star=False)
            if r.accept(b" "):
                seq_match = _seq_match(r)
        else:
            seq_match = _seq_match(r)
    r.expect(b")", "')'")
    return QResyncParams(uidvalidity, modseq, known_uids, seq_match)


def _seq_match(r: _Reader) -> tuple[SequenceSet, SequenceSet]:
    r.expect(b"(")
    numbers = r.sequence_set(allow_star=False)
    r.sp()
    uids = r.sequence_set(allow_star=False)
    r.expect(b")", "')'")
    return numbers, uids


def _create(r: _Reader) -> Command:
    r.sp()
    mailbox = r.mailbox()
    use = None
    if r.accept(b" "):
        r.expect(b"(")
        while True:
            param = r.word("create parameter")
            if param != "USE" or use is not None:
                raise r.error(f"Unknown or repeated create parameter {param}")
            r.sp()
            use = tuple(dict.fromkeys(r.paren_list(lambda: _use_attr(r))))
            if r.accept(b")"):
                break
            r.sp()
    return Create(r.tag, mailbox, use)


def _use_attr(r: _Reader) -> str:
    r.expect(b"\\", "special-use attribute")
    name = "\\" + r.atom("special-use attribute").decode("ascii")
    return _SPECIAL_USE_BY_UPPER.get(name.upper(), name)


def _one_mailbox(cls: type[Command]) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        r.sp()
        return cls(r.tag, r.mailbox())  # type: ignore[call-arg]

    return parse


def _rename(r: _Reader) -> Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    new = r.mailbox()
    return Rename(r.tag, old, new)


def _status_items(r: _Reader) -> tuple[str, ...]:
    """STATUS's item list (also LIST's RETURN (STATUS (...))), without repeats."""
    items = r.word_list("status item", allow_empty=False)
    for item in items:
        if item not in STATUS_ITEMS:
            raise r.error(f"Unknown status item {item}")
    return tuple(dict.fromkeys(items))


def _list(r: _Reader) -> Command:
    r.sp()
    extended = False
    selection: list[str] = []
    if r.peek() == 0x28:
        extended = True
        selection = r.word_list("selection option")
        for option in selection:
            if option not in LIST_SELECT_OPTS:
                raise r.error(f"Unknown LIST selection option {option}")
        # RFC 5258 section 3: RECURSIVEMATCH needs a selection option it can modify.
        if "RECURSIVEMATCH" in selection and not set(selection) - {"RECURSIVEMATCH", "REMOTE"}:
            raise r.error("RECURSIVEMATCH requires another selection option")
        r.sp()
    reference = r.mailbox()
    r.sp()
    if r.peek() == 0x28:
        extended = True
        patterns = r.paren_list(r.list_mailbox, allow_empty=False)
    else:
        patterns = [r.list_mailbox()]
    return_opts: list[str] = []
    status_items: tuple[str, ...] | None = None
    if r.accept(b" "):
        if r.word("RETURN") != "RETURN":
            raise r.error("Expected RETURN")
        extended = True
        r.sp()

        def return_option() -> str:
            nonlocal status_items
            option = r.word("return option")
            if option not in LIST_RETURN_OPTS:
                raise r.error(f"Unknown LIST return option {option}")
            if option == "STATUS":
                if status_items is not None:
                    raise r.error("Repeated STATUS return option")
                r.sp()
                status_items = _status_items(r)
            return option

        return_opts = r.paren_list(return_option)
    return List(
        r.tag, reference, tuple(patterns), tuple(dict.fromkeys(selection)),
        tuple(dict.fromkeys(return_opts)), status_items, extended,
    )


def _list_like(cls: type[Command]) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        r.sp()
        reference = r.mailbox()
        r.sp()
        return cls(r.tag, reference, r.list_mailbox())  # type: ignore[call-arg]

    return parse


def _status(r: _Reader) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    items = _status_items(r)
    return Status(r.tag, mailbox, items)


def _append(r: _Reader) -> Command:
    # A MULTIAPPEND of more messages (or flags) than imap_max_args is valid (RFC 3502 sets no
    # bound): refused as an implementation limit, NO [LIMIT] (RFC 5530), not as a client's error.
    r.budget_code = "LIMIT"
    r.sp()
    mailbox = r.mailbox()
    messages: list[AppendMessage] = []
    while True:
        r.sp()
        r.count()
        messages.append(_append_message(r))
        if r.at_end():
            return Append(r.tag, mailbox, tuple(messages))


def _append_message(r: _Reader) -> AppendMessage:
    """RFC 4466 append-message: ``[flag-list SP] [date-time SP] append-data``."""
    flags: tuple[str, ...] = ()
    date = None
    if r.peek() == 0x28:
        flags = r.flag_list()
        r.sp()
    if r.peek() == 0x22:
        date = r.date_time()
        r.sp()
    utf8 = False
    word = r.peek_word()
    if word == "UTF8":
        # RFC 6855 section 4: append-data =/ "UTF8" SP "(" literal8 ")"
        item = _utf8_literal(r)
        utf8 = True
    elif word == "CATENATE":
        # RFC 4469 section 5: append-data =/ "CATENATE" SP "(" cat-part *(SP cat-part) ")"
        r.word()
        r.sp()
        parts: list[CatenatePart] = r.paren_list(lambda: _cat_part(r), allow_empty=False)
        return AppendMessage(flags, date, b"", any(isinstance(part, CatenateText) and part.binary for part in parts),
                             any(isinstance(part, CatenateText) and part.utf8 for part in parts), tuple(parts))
    elif r.at_literal():
        item = r.literal(allow_binary=True)
    else:
        raise r.error("Expected message literal")
    return AppendMessage(flags, date, item.data, item.binary, utf8)


def _utf8_literal(r: _Reader) -> Literal:
    """``"UTF8" SP "(" literal8 ")"`` (RFC 6855 section 4), its literal."""
    r.word()
    r.sp()
    r.expect(b"(")
    item = r.literal(allow_binary=True)
    r.expect(b")", "')'")
    return item


def _cat_part(r: _Reader) -> CatenatePart:
    """RFC 4469 section 5: ``cat-part = text-literal / url``, ``text-literal = "TEXT" SP
    literal``, ``url = "URL" SP astring``; and RFC 6855 section 4's ``cat-part =/ "UTF8" SP "("
    literal8 ")"``. TEXT takes a literal, not a literal8: the grammar allows none (RFC 3516
    extends APPEND's message only), so binary data comes in UTF8 (literal8) or not at all."""
    word = r.peek_word()
    if word == "TEXT":
        r.word()
        r.sp()
        return CatenateText(r.literal().data)
    if word == "URL":
        r.word()
        r.sp()
        return CatenateUrl(r.astring("URL"))
    if word == "UTF8":
        item = _utf8_literal(r)
        return CatenateText(item.data, utf8=True, binary=item.binary)
    raise r.error("Expected CATENATE part (TEXT, URL or UTF8)")


def _replace(uid: bool) -> Callable[[_Reader], Command]:
    """RFC 8508: ``REPLACE seq-number SP mailbox SP append-message`` (one message only). Its
    arguments are counted as APPEND's (the message, its flags, its CATENATE parts), and past
    ``max_args`` they are an implementation limit as there, NO [LIMIT]: RFC 8508 bounds the
    flags no more than RFC 3501 does (AppendTally counts them alike before the upload)."""
    def parse(r: _Reader) -> Command:
        r.budget_code = "LIMIT"
        r.sp()
        number = None if r.accept(b"*") else r.nz_number(what="UID" if uid else "message number")
        r.sp()
        mailbox = r.mailbox()
        r.sp()
        r.count()
        return Replace(r.tag, uid, number, mailbox, _append_message(r))

    return parse


def _expunge(uid: bool) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        if not uid:
            return Expunge(r.tag, False, None)
        r.sp()
        return Expunge(r.tag, True, r.sequence_set())

    return parse


def _copy_move(cls: type[Command], uid: bool) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        r.sp()
        seqset = r.sequence_set()
        r.sp()
        return cls(r.tag, uid, seqset, r.mailbox())  # type: ignore[call-arg]

    return parse


def _fetch(uid: bool) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        r.sp()
        seqset = r.sequence_set()
        r.sp()
        items = _fetch_items(r)
        changedsince = None
        vanished = False
        partial = None
        if r.accept(b" "):
            r.expect(b"(")
            seen: set[str] = set()
            while True:
                modifier = r.word("fetch modifier")
                if modifier in seen:
                    raise r.error(f"Duplicate {modifier} modifier")
                seen.add(modifier)
                if modifier == "CHANGEDSINCE":
                    r.sp()
                    changedsince = _mod_sequence_value(r)
                elif modifier == "VANISHED":
                    vanished = True
                elif modifier == "PARTIAL":  # RFC 9394 section 3.3
                    partial = _partial_range(r)
                else:
                    raise r.error(f"Unknown fetch modifier {modifier}")
                if r.accept(b")"):
                    break
                r.sp()
            # RFC 7162 section 3.2.6: VANISHED only in UID FETCH, and only with CHANGEDSINCE.
            if vanished and not uid:
                raise r.error("VANISHED requires UID FETCH")
            if vanished and changedsince is None:
                raise r.error("VANISHED requires CHANGEDSINCE")
        return Fetch(r.tag, uid, seqset, items, changedsince, vanished, partial)

    return parse


def _store(uid: bool) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        r.sp()
        seqset = r.sequence_set()
        r.sp()
        unchangedsince = None
        if r.accept(b"("):
            modifier = r.word("store modifier")
            if modifier != "UNCHANGEDSINCE":
                raise r.error(f"Unknown store modifier {modifier}")
            r.sp()
            unchangedsince = r.number(MAX_NUMBER64, "mod-sequence")
            r.expect(b")", "')'")
            r.sp()
        mode = ""
        if r.accept(b"+"):
            mode = "+"
        elif r.accept(b"-"):
            mode = "-"
        item = r.word("FLAGS")
        if item not in ("FLAGS", "FLAGS.SILENT"):
            raise r.error(f"Unknown store item {item}")
        r.sp()
        if r.peek() == 0x28:
            flags = r.flag_list()
        else:
            collected = [r.flag()]
            while r.accept(b" "):
                r.count()
                collected.append(r.flag())
            flags = _dedupe_flags(collected)
        return Store(
            r.tag, uid, seqset, mode, item == "FLAGS.SILENT", flags, unchangedsince
        )

    return parse


def _search(uid: bool) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        r.sp()
        return_opts = partial = None
        update_atts: tuple[FetchAtt, ...] = ()
        if r.peek_word() == "RETURN":
            r.word()
            return_opts, partial, update_atts = _return_options(r, SEARCH_RETURN_OPTS)
            r.sp()
        charset = None
        if r.peek_word() == "CHARSET":
            r.word()
            r.sp()
            charset = _search_charset(r, return_opts)
            r.sp()
        criteria = parse_search_program(r, charset)
        return Search(r.tag, uid, charset, criteria, return_opts, partial, update_atts)

    return parse


def _sort_criterion(r: _Reader) -> SortCriterion:
    key = r.word("sort key")
    reverse = False
    if key == "REVERSE":
        r.sp()
        reverse = True
        key = r.word("sort key")
    if key not in SORT_KEYS:
        raise r.error(f"Unknown sort key {key}")
    return SortCriterion(key, reverse)


def _sort(uid: bool) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        r.sp()
        return_opts = partial = None
        update_atts: tuple[FetchAtt, ...] = ()
        if r.peek_word() == "RETURN":
            r.word()
            return_opts, partial, update_atts = _return_options(r, SEARCH_RETURN_OPTS)
            r.sp()
        criteria = r.paren_list(lambda: _sort_criterion(r), allow_empty=False)
        r.sp()
        charset = _search_charset(r, return_opts)
        r.sp()
        search = parse_search_program(r, charset)
        return Sort(r.tag, uid, tuple(criteria), charset, search, return_opts, partial, update_atts)

    return parse


def _thread(uid: bool) -> Callable[[_Reader], Command]:
    def parse(r: _Reader) -> Command:
        r.sp()
        algorithm = r.word("thread algorithm")
        if algorithm not in THREAD_ALGORITHMS:
            raise r.error(f"Unknown thread algorithm {algorithm}")
        r.sp()
        charset = _search_charset(r)
        r.sp()
        search = parse_search_program(r, charset)
        return Thread(r.tag, uid, algorithm, charset, search)

    return parse


def _cancelupdate(r: _Reader) -> Command:
    """RFC 5267 section 4.3.5: ``CANCELUPDATE 1*(SP quoted)``, the tags of updating searches."""
    tags: list[bytes] = []
    while True:
        r.sp()
        r.count()
        tags.append(r.quoted())
        if r.at_end():
            return CancelUpdate(r.tag, tuple(dict.fromkeys(tags)))


def _compress(r: _Reader) -> Command:
    r.sp()
    return Compress(r.tag, r.atom("algorithm").decode("ascii").upper())


def _quota_root(r: _Reader) -> str:
    return r.astring("quota root").decode("utf-8", "replace")


def _getquota(r: _Reader) -> Command:
    r.sp()
    return GetQuota(r.tag, _quota_root(r))


def _setquota(r: _Reader) -> Command:
    r.sp()
    root = _quota_root(r)
    r.sp()

    def resource() -> tuple[str, int]:
        name = r.atom("resource name").decode("ascii").upper()
        r.sp()
        return name, r.number(MAX_NUMBER64, "limit")

    limits = r.paren_list(resource)
    return SetQuota(r.tag, root, tuple(limits))


def _metadata_entry(r: _Reader) -> str:
    raw = r.astring("entry name")
    # Non-ASCII is refused before lower(), which would map some of it onto ASCII (U+212A
    # KELVIN SIGN is "k"): RFC 5464 section 3.2 allows no non-ASCII in an entry name.
    if not raw.isascii():
        raise r.error("Invalid metadata entry name")
    entry = raw.decode("ascii").lower()
    if not _METADATA_ENTRY.match(entry):
        raise r.error("Invalid metadata entry name")
    return entry


def _getmetadata(r: _Reader) -> Command:
    r.sp()
    maxsize = None
    depth = "0"
    seen: set[str] = set()

    def option() -> str:
        nonlocal maxsize, depth
        name = r.word("option")
        if name in seen:
            raise r.error(f"Duplicate {name} option")
        seen.add(name)
        r.sp()
        if name == "MAXSIZE":
            maxsize = r.number(what="MAXSIZE")
        elif name == "DEPTH":
            value = r.astring("depth").decode("ascii", "replace").lower()
            if value not in ("0", "1", "infinity"):
                raise r.error("Invalid DEPTH")
            depth = value
        else:
            raise r.error(f"Unknown GETMETADATA option {name}")
        return name

    options_given = r.peek() == 0x28
    if options_given:
        r.paren_list(option, allow_empty=False)
        r.sp()
    mailbox = r.mailbox()
    r.sp()
    # RFC 5464's own examples (sections 4.2.1, 4.2.2) put the options after the mailbox, against
    # its grammar; clients copied them. An entry list starts with "/", an option list with a letter.
    if not options_given and r.peek() == 0x28 and r.buf[r.pos + 1:r.pos + 2].isalpha():
        r.paren_list(option, allow_empty=False)
        r.sp()
    if r.peek() == 0x28:
        entries = r.paren_list(lambda: _metadata_entry(r), allow_empty=False)
    else:
        entries = [_metadata_entry(r)]
        # Likewise RFC 5464 section 4.4.1 lists several entries without parentheses.
        while r.peek() == 0x20:
            r.sp()
            r.count()
            entries.append(_metadata_entry(r))
    return GetMetadata(r.tag, mailbox, tuple(dict.fromkeys(entries)), maxsize, depth)


# RFC 5465 section 8: the mailbox filters, lower-cased; the first two name the selected mailbox.
NOTIFY_SELECTED_FILTERS = ("selected", "selected-delayed")
NOTIFY_FILTERS = NOTIFY_SELECTED_FILTERS + ("inboxes", "personal", "subscribed", "subtree", "mailboxes")
_NOTIFY_EVENT_NAMES = {name.upper(): name for name in NOTIFY_EVENTS}


def _notify(r: _Reader) -> Command:
    """RFC 5465 section 8: ``NOTIFY NONE`` / ``NOTIFY SET [STATUS] event-group *(SP event-group)``.
    What the RFC makes a BAD besides the grammar is refused here too: MessageNew without
    MessageExpunge or the reverse, FlagChange or AnnotationChange without them (section 5),
    more than one selected filter and an event for it that is known not to be a message event
    (section 6), fetch attributes for other mailboxes than the selected (section 5.2). Events the
    grammar allows as ``event-ext`` are kept as sent: the command answers them with NO [BADEVENT]."""
    r.sp()
    verb = r.word("SET or NONE")
    if verb == "NONE":
        return Notify(r.tag, None)
    if verb != "SET":
        raise r.error("Expected SET or NONE")
    r.sp()
    status = False
    if r.peek_word() == "STATUS":
        r.word()
        status = True
        r.sp()
    groups = [_notify_group(r)]
    while r.accept(b" "):
        r.count()
        groups.append(_notify_group(r))
    selected = [group for group in groups if group.kind in NOTIFY_SELECTED_FILTERS]
    if len(selected) > 1:
        raise r.error("Only one SELECTED or SELECTED-DELAYED filter is allowed")
    return Notify(r.tag, tuple(groups), status)


def _notify_group(r: _Reader) -> NotifyGroup:
    r.expect(b"(")
    kind = r.atom("mailbox filter").decode("ascii").lower()
    if kind not in NOTIFY_FILTERS:
        raise r.error(f"Unknown mailbox filter {kind}")
    mailboxes: list[MailboxName] = []
    if kind in ("subtree", "mailboxes"):
        r.sp()
        if r.peek() == 0x28:
            mailboxes = r.paren_list(r.mailbox, allow_empty=False)
        else:
            mailboxes = [r.mailbox()]
    r.sp()
    events: list[str] = []
    fetch_atts: tuple[FetchAtt, ...] = ()
    if r.peek() == 0x28:
        r.expect(b"(")
        while True:
            r.count()
            raw = r.atom("event").decode("ascii")
            event = _NOTIFY_EVENT_NAMES.get(raw.upper(), raw)
            listed = _fetch_att_list(r) if event == "MessageNew" else None
            if listed is not None:
                fetch_atts = listed
                if kind not in NOTIFY_SELECTED_FILTERS:
                    raise r.error("MessageNew fetch attributes are for the selected mailbox only")
            events.append(event)
            if r.accept(b")"):
                break
            r.sp()
    elif r.word("events") != "NONE":
        raise r.error("Expected an event list or NONE")
    r.expect(b")", "')'")
    present = set(events)
    if ("MessageNew" in present) != ("MessageExpunge" in present):
        raise r.error("MessageNew and MessageExpunge go together")
    if present & {"FlagChange", "AnnotationChange"} and "MessageNew" not in present:
        raise r.error("FlagChange and AnnotationChange need MessageNew and MessageExpunge")
    # (An event this server does not know may be a message event: the command answers it with
    # NO [BADEVENT], RFC 5465 section 3.1's answer to an unsupported one, whatever the filter.)
    if kind in NOTIFY_SELECTED_FILTERS and present & (set(NOTIFY_EVENTS) - set(NOTIFY_MESSAGE_EVENTS)):
        raise r.error("Only message events apply to the selected mailbox")
    return NotifyGroup(kind, tuple(mailboxes), tuple(dict.fromkeys(events)), fetch_atts)


def _setmetadata(r: _Reader) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()

    def entry_value() -> tuple[str, bytes | None]:
        entry = _metadata_entry(r)
        r.sp()
        if r.at_literal():
            return entry, r.literal(allow_binary=True).data
        return entry, r.nstring()

    entries = r.paren_list(entry_value, allow_empty=False)
    return SetMetadata(r.tag, mailbox, tuple(entries))


_COMMANDS: dict[str, Callable[[_Reader], Command]] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "STARTTLS": _no_args(Starttls),
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "UNAUTHENTICATE": _no_args(Unauthenticate),
    "ID": _id,
    "ENABLE": _enable,
    "SELECT": _select(False),
    "EXAMINE": _select(True),
    "CREATE": _create,
    "DELETE": _one_mailbox(Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "LIST": _list,
    "XLIST": _list_like(Xlist),
    "LSUB": _list_like(Lsub),
    "NAMESPACE": _no_args(Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "REPLACE": _replace(False),
    "IDLE": _no_args(Idle),
    "CHECK": _no_args(Check),
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "EXPUNGE": _expunge(False),
    "COPY": _copy_move(Copy, False),
    "MOVE": _copy_move(Move, False),
    "FETCH": _fetch(False),
    "STORE": _store(False),
    "SEARCH": _search(False),
    "SORT": _sort(False),
    "THREAD": _thread(False),
    "COMPRESS": _compress,
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _one_mailbox(GetQuotaRoot),
    "SETQUOTA": _setquota,
    "GETMETADATA": _getmetadata,
    "SETMETADATA": _setmetadata,
    "NOTIFY": _notify,
    "CANCELUPDATE": _cancelupdate,
}

_UID_COMMANDS: dict[str, Callable[[_Reader], Command]] = {
    "COPY": _copy_move(Copy, True),
    "MOVE": _copy_move(Move, True),
    "FETCH": _fetch(True),
    "STORE": _store(True),
    "SEARCH": _search(True),
    "EXPUNGE": _expunge(True),
    "REPLACE": _replace(True),
    "SORT": _sort(True),
    "THREAD": _thread(True),
}


def is_command_name(name: bytes) -> bool:
    """Whether ``name`` (as the framer reports a command's name: "UID FETCH" for a UID command)
    names a command this parser knows: a synchronising literal of any other is refused before
    the client sends it."""
    upper = name.decode("ascii", "replace").upper()
    if upper.startswith("UID "):
        return upper[4:] in _UID_COMMANDS
    return upper in _COMMANDS or upper == "UID"


def parse_command(
    frame: CommandFrame,
    *,
    utf8: bool = False,
    max_nesting: int = 16,
    max_args: int = 4096,
    max_ranges: int = DEFAULT_MAX_RANGES,
) -> Command:
    """Parse one framed command.  Raises :class:`ParseError` (only) for malformed input.

    ``utf8``: mailbox names are UTF-8 (IMAP4rev2 / UTF8=ACCEPT enabled) instead of modified
    UTF-7.  ``max_nesting`` bounds search-criteria nesting, ``max_args`` the number of list
    elements and search keys, ``max_ranges`` the elements of one sequence set."""
    tag = frame.tag
    if tag is None:
        raise ParseError(None, "Missing or invalid tag")
    try:
        r = _Reader(frame, tag, utf8, max_nesting, max_args, max_ranges)
        r.expect(tag)
        r.sp()
        name = r.match(_WORD)
        if name is None:
            raise r.error("Missing command" if r.at_end() else "Invalid command name")
        upper = name.decode("ascii").upper()
        if upper == "UID":
            r.sp()
            sub = r.match(_WORD)
            handler = _UID_COMMANDS.get(sub.decode("ascii").upper()) if sub is not None else None
            if handler is None:
                raise r.error("Unknown UID command")
        else:
            handler = _COMMANDS.get(upper)
            if handler is None:
                raise r.error("Unknown command")
        command = handler(r)
        r.end()
        return command
    except ParseError:
        raise
    except Exception as exc:  # a parser bug must still answer BAD, not crash
        error = ParseError(tag, "Invalid arguments")
        error.internal = True
        raise error from exc


def parse_section_spec(text: bytes, *, max_nesting: int = 16) -> Section:
    """A section-spec as in BODY[...] (``1.MIME``, ``HEADER.FIELDS (TO)``, ``2.TEXT``), given
    without its brackets: the decoded ``;SECTION=`` of an IMAP URL (RFC 5092 section 5:
    enc-section is a %-encoded section-spec). Raises ParseError when it is none."""
    tag = b"*"
    r = _Reader(CommandFrame(tag, (text + b"]",)), tag, False, max_nesting, 64, 1)
    if not text:
        raise r.error("Empty section")
    section = _section(r, False)
    r.end()
    return section


# A token of APPEND's line text for AppendTally: a quoted string (a date-time, a URL), a
# parenthesis, or a run of anything else.
_TALLY_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[()]|[^ ()"]+')
_CATENATE_PARTS = frozenset({b"TEXT", b"URL", b"UTF8"})  # RFC 4469 section 5, RFC 6855 section 4


class AppendTally:
    """What an APPEND's (or REPLACE's) literals announced so far amount to, as the session must know before it
    asks for the next one (RFC 3501 section 7.5: a refusal before the upload): the octets of
    message text and the number of messages. Fed the pieces of
    :class:`~gximap.imap.framing.NeedContinuation` in order (line text; an int for a literal's
    size). Both are lower bounds of what the command stores, so a quota the tally exceeds is one
    the command would exceed: a literal naming the mailbox or a CATENATE URL is no message text,
    a CATENATE message counts once however many TEXT parts it has (RFC 4469), and text the
    tally cannot place counts for nothing. ``arguments`` is what the command has spent of
    imap_max_args so far, as _append (and _replace) counts it: a message, each of its flags and
    each CATENATE part one argument. ``heading`` is the number of tokens before the first
    message: the tag, APPEND and the mailbox (3); a REPLACE's message number or UID, and UID,
    come before its mailbox. Parsing proper is parse_command's, once the command is whole."""

    __slots__ = ("octets", "messages", "arguments", "_skip", "_catenate_next", "_depth", "_last",
                 "_in_flags")

    def __init__(self, heading: int = 3) -> None:
        self.octets = 0
        self.messages = 0
        self.arguments = 0
        self._in_flags = False  # inside a message's flag list
        self._skip = heading  # the tag, the command and the mailbox name come first
        self._catenate_next = False  # the last token was CATENATE: "(" opens its parts
        self._depth = 0  # inside a CATENATE list: parentheses open
        self._last = b""  # the last token, upper-cased

    def feed(self, piece: bytes | int) -> None:
        if isinstance(piece, int):
            self._literal(piece)
            return
        for token in _TALLY_TOKEN.findall(piece):
            if self._skip:
                self._skip -= 1
                continue
            word = token.upper()
            if self._in_flags:
                if token == b")":
                    self._in_flags = False
                else:
                    self.arguments += 1
            elif self._depth:
                if self._depth == 1 and word in _CATENATE_PARTS and self._last != b"URL":
                    self.arguments += 1   # a part (not a URL's value that reads like one)
                self._depth += 1 if token == b"(" else -1 if token == b")" else 0
            elif token == b"(" and self._catenate_next:
                self._depth = 1
                self.messages += 1
                self.arguments += 1
            elif token == b"(" and self._last != b"UTF8":
                self._in_flags = True   # a message's flag list (RFC 4466 append-message)
            self._catenate_next = not self._depth and word == b"CATENATE"
            self._last = word

    def _literal(self, size: int) -> None:
        if self._skip:
            # The mailbox name as a literal ("a APPEND {5}"): no message text.
            self._skip = 0 if self._skip == 1 else self._skip
            self._last = b""
            return
        if self._depth:
            if self._last != b"URL":   # a TEXT or UTF8 part of the message counted at its "("
                self.octets += size
        else:
            self.octets += size
            self.messages += 1
            self.arguments += 1
        self._last = b""
        self._catenate_next = False


class MetadataTally:
    """Which of a SETMETADATA's literals is a value (RFC 5464 section 4.3: ``"(" entry-value *(SP
    entry-value) ")"``, ``entry-value = entry SP value``), as the session must know before it asks
    for one, to refuse a value longer than imap_metadata_max_size before the upload. Fed as
    AppendTally is. ``value_next``: a literal announced now is an entry's value; False wherever
    the text is not what the grammar wants (parse_command answers that once the command is whole)."""

    __slots__ = ("_skip", "_listed")

    def __init__(self) -> None:
        self._skip = 3  # the tag, SETMETADATA and the mailbox name come first
        self._listed = -1  # entries and values in the list so far; -1 before its "(", -2 lost

    @property
    def value_next(self) -> bool:
        return self._listed >= 0 and self._listed % 2 == 1

    def feed(self, piece: bytes | int) -> None:
        if isinstance(piece, int):
            if self._skip == 1:
                self._skip = 0   # the mailbox name as a literal
            elif self._listed >= 0:
                self._listed += 1
            return
        for token in _TALLY_TOKEN.findall(piece):
            if self._skip:
                self._skip -= 1
            elif token == b"(" and self._listed == -1:
                self._listed = 0
            elif self._listed >= 0 and token != b"~":   # (a literal8's "~" goes with its literal)
                self._listed = -2 if token in (b"(", b")") else self._listed + 1


def append_destination(head: bytes, *, utf8: bool = False) -> MailboxName | None:
    """The mailbox an APPEND names in ``head``, its text before the first literal
    (``NeedContinuation.head``: ``a APPEND Sent (\\Seen) ``), so that the session can answer
    before the upload. None when the name is itself that literal, or when the head is not
    well-formed as far as it goes: parse_command gives the answer once the command is whole."""
    found = _message_head(head, utf8, uid=False, name=b"APPEND")
    return None if found is None else found[1]


def replace_target(head: bytes, *, uid: bool, utf8: bool = False) -> tuple[int | None, MailboxName] | None:
    """(message number or UID, None for "*"; mailbox) of a REPLACE (``uid``: UID REPLACE) in
    ``head``, as append_destination for APPEND."""
    return _message_head(head, utf8, uid=uid, name=b"REPLACE")


def _message_head(head: bytes, utf8: bool, *, uid: bool, name: bytes) -> tuple[int | None, MailboxName] | None:
    tag = extract_tag(head)
    if tag is None:
        return None
    r = _Reader(CommandFrame(tag, (head,)), tag, utf8, 1, 1, 1)
    try:
        r.expect(tag)
        r.sp()
        if uid:
            word = r.match(_WORD)
            if word is None or word.upper() != b"UID":
                return None
            r.sp()
        word = r.match(_WORD)
        if word is None or word.upper() != name:
            return None
        number = None
        if name == b"REPLACE":
            r.sp()
            number = None if r.accept(b"*") else r.nz_number()
        r.sp()
        if r.at_end():
            return None
        mailbox = r.mailbox()
        return (number, mailbox) if r.peek() == 0x20 else None
    except ParseError:
        return None
