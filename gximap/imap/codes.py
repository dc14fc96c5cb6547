"""Response texts from ``imap_code.txt`` (the Gromox idea: every human-readable text an operator
can reword or translate lives in one data file, keyed by a number).

The session never hard-codes text: it asks ``codes.text(Code.NO_MAILBOX_NOT_FOUND)``.  The file
format and the numbering scheme are described in the header of ``data/imap_code.txt``.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import unicodedata
from pathlib import Path

from gximap.imap.commands import BADCHARSET_CODE

log = logging.getLogger(__name__)

CODE_FILE_NAME = "imap_code.txt"
# The shipped table: the source tree's data/ directory, or in an installed wheel the package data
# gximap/_data (in a source checkout, a symlink to data/).
_SOURCE_CODE_FILE = Path(__file__).resolve().parents[2] / "data" / CODE_FILE_NAME
_PACKAGE_CODE_FILE = Path(__file__).resolve().parents[1] / "_data" / CODE_FILE_NAME
SHIPPED_CODE_FILE = _SOURCE_CODE_FILE if _SOURCE_CODE_FILE.is_file() else _PACKAGE_CODE_FILE

_ENTRY = re.compile(r"\s*([0-9]+)(?:[ \t]+(.*?))?\s*\Z")
_PLACEHOLDER = re.compile(r"<[A-Za-z0-9_]*>")
_UNSAFE = re.compile(r"[\x00\r\n]")


class Code(enum.IntEnum):
    # 100xx untagged greeting and BYE
    GREETING = 10001
    BYE_SERVER_BUSY = 10004
    BYE_AUTOLOGOUT = 10005
    BYE_SHUTDOWN = 10006
    BYE_TOO_MANY_BAD = 10007
    BYE_LOGOUT = 10008
    BYE_INACTIVITY = 10009
    BYE_TOO_MANY_FAILURES = 10010
    BYE_MAILBOX_DELETED = 10012
    BYE_LOGIN_TIMEOUT = 10015
    BYE_INVALID_COMPRESSED_DATA = 10016  # the client's COMPRESS=DEFLATE stream does not inflate
    BYE_CONNECTION_QUEUE_FULL = 10017  # closed, not logged in, to make room for a new connection
    # 101xx continuation requests
    CONT_READY = 10101
    CONT_IDLING = 10102
    # 102xx untagged information
    INFO_UIDVALIDITY = 10201
    INFO_UIDNEXT = 10202
    INFO_PERMANENTFLAGS = 10203
    INFO_UNSEEN = 10204
    INFO_HIGHESTMODSEQ = 10205
    INFO_CLOSED = 10207
    INFO_STILL_HERE = 10208
    INFO_MOVED = 10212
    INFO_NO_PERMANENTFLAGS = 10213
    INFO_MAILBOXID = 10214  # RFC 8474: the selected mailbox's MAILBOXID
    INFO_REPLACEMENT_STORED = 10215  # RFC 8508: the untagged OK carrying REPLACE's APPENDUID
    INFO_UPDATES_DELAYED = 10216  # untagged NO [UNAVAILABLE]: a catch-up with the mailbox failed
    INFO_NOTIFICATION_OVERFLOW = 10217  # RFC 5465 section 5.8: * OK [NOTIFICATIONOVERFLOW]
    INFO_IN_PROGRESS = 10218  # RFC 9585: the untagged OK [INPROGRESS ...] of a long command
    INFO_NOUPDATE = 10219  # RFC 5267 section 4.3.1: * NO [NOUPDATE "tag"], too many live searches
    # 2xxxx tagged OK
    OK_CAPABILITY = 20100
    OK_NOOP = 20200
    OK_LOGOUT = 20300
    OK_STARTTLS = 20400
    OK_LOGGED_IN = 20500
    OK_ENABLE = 20700
    OK_ID = 20800
    OK_SELECT = 20900
    OK_EXAMINE = 20901
    OK_CREATE = 21100
    OK_DELETE = 21200
    OK_RENAME = 21300
    OK_SUBSCRIBE = 21400
    OK_UNSUBSCRIBE = 21500
    OK_LIST = 21600
    OK_LSUB = 21700
    OK_XLIST = 21800
    OK_NAMESPACE = 21900
    OK_STATUS = 22000
    OK_APPEND = 22100
    OK_IDLE = 22200
    OK_CHECK = 22300
    OK_CLOSE = 22400
    OK_UNSELECT = 22500
    OK_EXPUNGE = 22600
    OK_SEARCH = 22700
    OK_FETCH = 22800
    OK_STORE = 22900
    OK_STORE_MODIFIED = 22901
    OK_COPY = 23000
    OK_COPY_NOTHING = 23001
    OK_MOVE = 23100
    OK_MOVE_NOTHING = 23101
    OK_SORT = 23200
    OK_THREAD = 23300
    OK_COMPRESS = 23400
    OK_GETQUOTA = 23500
    OK_GETQUOTAROOT = 23600
    OK_SETQUOTA = 23700
    OK_GETMETADATA = 23800
    OK_SETMETADATA = 23900
    OK_UNAUTHENTICATE = 24000
    OK_REPLACE = 24100
    OK_NOTIFY = 24200
    OK_CANCELUPDATE = 24300
    # 3xxxx tagged NO
    NO_MAILBOX_NOT_FOUND = 30001
    NO_MAILBOX_EXISTS = 30002
    NO_OVER_QUOTA = 30004
    NO_MESSAGE_TOO_BIG = 30005
    NO_TRY_AGAIN = 30006
    NO_SERVER_ERROR = 30007
    NO_INVALID_MAILBOX_NAME = 30008
    NO_READ_ONLY = 30009
    NO_EXPUNGE_ISSUED = 30010
    NO_LIMIT = 30012
    NO_NOT_SUPPORTED = 30013
    NO_BAD_CHARSET = 30014
    NO_MESSAGE_UNREADABLE = 30016
    NO_UNKNOWN_CTE = 30017
    NO_MAILBOX_QUOTA = 30019
    NO_ANNOTATION_QUOTA = 30020
    NO_SUBSCRIPTION_LIMIT = 30021
    NO_MESSAGES_TOO_BIG_TOGETHER = 30022  # a MULTIAPPEND's messages, each within APPENDLIMIT
    NO_NAME_NOT_NFC = 30023  # CREATE / RENAME to a name not in NFC (RFC 6855 section 3, RFC 5198)
    NO_TLS_UNAVAILABLE = 30401
    NO_AUTH_FAILED = 30501
    NO_AUTH_MECHANISM = 30502
    NO_AUTH_BLOCKED = 30503
    NO_PLAINTEXT_DISALLOWED = 30504
    NO_ACCOUNT_DISABLED = 30505
    NO_AUTHZ_FAILED = 30506
    NO_AUTH_UNAVAILABLE = 30507
    NO_ACCOUNT_MAILBOX_MISSING = 30508  # a right password, but no midb account to run the session as
    NO_TOO_MANY_SESSIONS = 30509  # a right password, but imap_max_conn_per_user_ip sessions held
    NO_USEATTR = 31101
    NO_CREATE_INBOX = 31102
    NO_DELETE_INBOX = 31201
    NO_HAS_CHILDREN = 31202
    NO_RENAME_INTO_SELF = 31301
    NO_RENAME_TO_INBOX = 31302
    NO_APPEND_INVALID = 32102
    NO_BAD_URL = 32103  # a CATENATE URL that cannot be resolved (RFC 4469: [BADURL url])
    NO_APPEND_TOO_MANY = 32104  # a MULTIAPPEND over imap_max_args (parser budget: RFC 5530 LIMIT)
    NO_STORE_READ_ONLY = 32901
    NO_MOVE_NOT_DURABLE = 33101  # moved as reported, but the index flush failed
    NO_COMPRESSION_ACTIVE = 33401
    NO_QUOTA_ROOT_UNKNOWN = 33501
    NO_SETQUOTA_DENIED = 33701
    NO_QUOTA_RESOURCE = 33702
    NO_QUOTA_LIMIT = 33703
    NO_METADATA_MAXSIZE = 33901
    NO_METADATA_TOOMANY = 33902
    NO_METADATA_READ_ONLY = 33904
    NO_REPLACE_NO_SUCH_UID = 34101
    NO_REPLACE_TOO_MANY = 34102  # a REPLACE's flags and CATENATE parts over imap_max_args (RFC 5530 LIMIT)
    NO_NOTIFY_BAD_EVENT = 34201  # RFC 5465 section 5: NO [BADEVENT (supported events)]
    # 4xxxx tagged BAD
    BAD_PARSE = 40001
    BAD_UNKNOWN_COMMAND = 40002
    BAD_WRONG_STATE = 40003
    BAD_LINE_TOO_LONG = 40004
    BAD_LITERAL_TOO_BIG = 40005
    BAD_LITERAL_MINUS = 40006
    BAD_TAG = 40007
    BAD_NOT_SELECTED = 40008
    BAD_SEQUENCE_NUMBER = 40009
    BAD_NOT_ENABLED = 40010
    BAD_ALREADY_AUTHENTICATED = 40011
    BAD_CHARSET_WITH_UTF8 = 40013  # RFC 6855 section 3: SEARCH CHARSET after ENABLE UTF8=ACCEPT
    BAD_CHARSET_NOT_UTF8 = 40014  # RFC 6855 erratum 4029: SORT/THREAD charset after it
    BAD_NOT_AUTHENTICATED = 40015
    BAD_UIDREQUIRED = 40016  # RFC 9586 section 3: a message number after ENABLE UIDONLY
    BAD_UPDATE_TAG_IN_USE = 40017  # RFC 5267 section 4.3: UPDATE with the tag of a live search
    BAD_TLS_ACTIVE = 40401
    BAD_TLS_UNDER_COMPRESS = 40402  # STARTTLS with COMPRESS active (not reached: UNAUTHENTICATE ends it)
    BAD_AUTH_CANCELLED = 40501
    BAD_AUTH_BASE64 = 40502
    BAD_QRESYNC_SEQ_MATCH = 40901  # RFC 7162 section 3.2.5.2
    BAD_EXPECTED_DONE = 42201
    BAD_COMPRESS_ALGORITHM = 43401
    BAD_METADATA_ENTRY = 43801
    BAD_UNKNOWN_UPDATE = 44301  # CANCELUPDATE of a tag no live search has (as Dovecot: BAD)


# The response code a tagged NO or BAD carries when the command names none: with it a client
# can act on a refusal without reading its text, which operators may reword or translate. The
# codes are RFC 5530's and those of the extensions (BADCHARSET, TOOBIG, USEATTR, METADATA ...).
# A command that knows better passes its own (TRYCREATE, APPENDUID, a METADATA argument ...).
# Every NO and BAD text has an entry but those in RESPONSE_CODE_EXEMPT (a test checks it).
DEFAULT_RESPONSE_CODES: dict[Code, bytes] = {
    Code.NO_MAILBOX_NOT_FOUND: b"NONEXISTENT",
    Code.NO_MAILBOX_EXISTS: b"ALREADYEXISTS",
    Code.NO_OVER_QUOTA: b"OVERQUOTA",
    Code.NO_MESSAGE_TOO_BIG: b"TOOBIG",
    Code.NO_TRY_AGAIN: b"UNAVAILABLE",
    Code.NO_SERVER_ERROR: b"SERVERBUG",
    Code.NO_INVALID_MAILBOX_NAME: b"CANNOT",
    # Refused because the mailbox was opened with EXAMINE: the state READ-ONLY describes.
    Code.NO_READ_ONLY: b"READ-ONLY",
    Code.NO_EXPUNGE_ISSUED: b"EXPUNGEISSUED",
    Code.NO_LIMIT: b"LIMIT",
    Code.NO_NOT_SUPPORTED: b"CANNOT",
    Code.NO_BAD_CHARSET: BADCHARSET_CODE,
    Code.NO_MESSAGE_UNREADABLE: b"SERVERBUG",
    Code.NO_UNKNOWN_CTE: b"UNKNOWN-CTE",
    Code.NO_MAILBOX_QUOTA: b"OVERQUOTA",
    Code.NO_ANNOTATION_QUOTA: b"OVERQUOTA",
    Code.NO_SUBSCRIPTION_LIMIT: b"LIMIT",
    # Not TOOBIG: no message is too big; sent one APPEND at a time, they are taken.
    Code.NO_MESSAGES_TOO_BIG_TOGETHER: b"LIMIT",
    Code.NO_NAME_NOT_NFC: b"CANNOT",
    Code.NO_TLS_UNAVAILABLE: b"CANNOT",
    Code.NO_AUTH_FAILED: b"AUTHENTICATIONFAILED",
    Code.NO_AUTH_MECHANISM: b"CANNOT",
    # The same code as a wrong password: a refusal must not tell a guesser it is blocked.
    Code.NO_AUTH_BLOCKED: b"AUTHENTICATIONFAILED",
    Code.NO_PLAINTEXT_DISALLOWED: b"PRIVACYREQUIRED",
    Code.NO_ACCOUNT_DISABLED: b"CONTACTADMIN",
    Code.NO_AUTHZ_FAILED: b"AUTHORIZATIONFAILED",
    Code.NO_ACCOUNT_MAILBOX_MISSING: b"CONTACTADMIN",  # RFC 5530: only the administrator can help
    Code.NO_AUTH_UNAVAILABLE: b"UNAVAILABLE",
    # RFC 5530: an implementation limit (Dovecot says [UNAVAILABLE], which RFC 5530 gives to a
    # subsystem that is down); not AUTHENTICATIONFAILED, so that clients ask for no password.
    Code.NO_TOO_MANY_SESSIONS: b"LIMIT",
    Code.NO_USEATTR: b"USEATTR",
    Code.NO_CREATE_INBOX: b"ALREADYEXISTS",
    Code.NO_DELETE_INBOX: b"CANNOT",
    Code.NO_HAS_CHILDREN: b"HASCHILDREN",
    Code.NO_RENAME_INTO_SELF: b"CANNOT",
    Code.NO_RENAME_TO_INBOX: b"ALREADYEXISTS",
    Code.NO_APPEND_INVALID: b"CANNOT",
    Code.NO_BAD_URL: b"BADURL",  # always sent with its URL (RFC 4469 section 5)
    # RFC 5530's example of LIMIT is the flags of one message; RFC 3502 section 6.3.11 answers a
    # MULTIAPPEND the server does not take with NO (BAD is for invalid arguments): it is valid.
    Code.NO_APPEND_TOO_MANY: b"LIMIT",
    Code.NO_REPLACE_TOO_MANY: b"LIMIT",  # as APPEND's: RFC 8508 sets no bound on the flags
    Code.NO_STORE_READ_ONLY: b"READ-ONLY",
    # The disk failed a flush: the subsystem RFC 5530's UNAVAILABLE names, though the move stands.
    Code.NO_MOVE_NOT_DURABLE: b"UNAVAILABLE",
    Code.NO_COMPRESSION_ACTIVE: b"COMPRESSIONACTIVE",
    Code.NO_QUOTA_ROOT_UNKNOWN: b"NONEXISTENT",
    Code.NO_SETQUOTA_DENIED: b"NOPERM",
    Code.NO_QUOTA_RESOURCE: b"CANNOT",
    Code.NO_QUOTA_LIMIT: b"LIMIT",
    Code.NO_METADATA_MAXSIZE: b"METADATA MAXSIZE",
    Code.NO_METADATA_TOOMANY: b"METADATA TOOMANY",
    Code.NO_METADATA_READ_ONLY: b"NOPERM",
    Code.NO_REPLACE_NO_SUCH_UID: b"NONEXISTENT",
    Code.NO_NOTIFY_BAD_EVENT: b"BADEVENT",
    # A BAD is a command the client should not have sent as it did (RFC 5530 CLIENTBUG), or one
    # larger than the server takes (TOOBIG, as RFC 7888 section 4 has for LITERAL-).
    Code.BAD_PARSE: b"CLIENTBUG",
    Code.BAD_UNKNOWN_COMMAND: b"CLIENTBUG",
    Code.BAD_WRONG_STATE: b"CLIENTBUG",
    Code.BAD_LINE_TOO_LONG: b"TOOBIG",
    Code.BAD_LITERAL_TOO_BIG: b"TOOBIG",
    Code.BAD_LITERAL_MINUS: b"TOOBIG",
    Code.BAD_TAG: b"CLIENTBUG",
    Code.BAD_NOT_SELECTED: b"CLIENTBUG",
    Code.BAD_SEQUENCE_NUMBER: b"CLIENTBUG",
    Code.BAD_NOT_ENABLED: b"CLIENTBUG",
    Code.BAD_ALREADY_AUTHENTICATED: b"CLIENTBUG",
    Code.BAD_CHARSET_WITH_UTF8: b"CLIENTBUG",
    Code.BAD_CHARSET_NOT_UTF8: b"BADCHARSET (UTF-8)",
    Code.BAD_NOT_AUTHENTICATED: b"CLIENTBUG",
    Code.BAD_UIDREQUIRED: b"UIDREQUIRED",
    Code.BAD_TLS_ACTIVE: b"CLIENTBUG",
    Code.BAD_TLS_UNDER_COMPRESS: b"CLIENTBUG",
    Code.BAD_AUTH_BASE64: b"CLIENTBUG",
    Code.BAD_QRESYNC_SEQ_MATCH: b"CLIENTBUG",
    Code.BAD_EXPECTED_DONE: b"CLIENTBUG",
    Code.BAD_COMPRESS_ALGORITHM: b"CLIENTBUG",
    Code.BAD_METADATA_ENTRY: b"CLIENTBUG",
    Code.BAD_UPDATE_TAG_IN_USE: b"CLIENTBUG",
    Code.BAD_UNKNOWN_UPDATE: b"CLIENTBUG",
}
# A client's "*" ending its AUTHENTICATE exchange is answered BAD (RFC 9051 section 6.2.2) but
# is neither a fault nor a refusal: no code describes it.
RESPONSE_CODE_EXEMPT = frozenset({Code.BAD_AUTH_CANCELLED})


def completion(status: bytes, code: bytes | None, text: bytes, default_for: Code) -> bytes:
    """``STATUS [code] text`` of a tagged or untagged completion; a NO or BAD without a code of
    its own takes the usual one of its text (DEFAULT_RESPONSE_CODES)."""
    if code is None and status != b"OK":
        code = DEFAULT_RESPONSE_CODES.get(default_for)
    return status + b" [" + code + b"] " + text if code else status + b" " + text


# Gromox's own imap_code.txt (seven-digit codes, each text led by its status word) mapped onto
# these codes, so that a Gromox host's reworded or translated file keeps working: the entries
# with a counterpart are used, the others are named in one warning. Gromox's UID variants
# (2170023 "UID SEARCH completed" ...) have none: gximap answers UID SEARCH with SEARCH's text.
GROMOX_CODES: dict[int, Code] = {
    2160001: Code.BYE_LOGOUT, 2160002: Code.CONT_IDLING, 2160003: Code.CONT_READY,
    2160004: Code.BYE_AUTOLOGOUT,
    2170000: Code.GREETING, 2170001: Code.OK_CAPABILITY, 2170002: Code.OK_NOOP,
    2170003: Code.OK_LOGOUT, 2170004: Code.OK_STARTTLS, 2170005: Code.OK_LOGGED_IN,
    2170006: Code.OK_CREATE, 2170007: Code.OK_DELETE, 2170008: Code.OK_RENAME,
    2170009: Code.OK_SUBSCRIBE, 2170010: Code.OK_UNSUBSCRIBE, 2170011: Code.OK_LIST,
    2170012: Code.OK_XLIST, 2170013: Code.OK_LSUB, 2170014: Code.OK_STATUS, 2170015: Code.OK_APPEND,
    2170016: Code.OK_CHECK, 2170017: Code.OK_CLOSE, 2170018: Code.OK_UNSELECT, 2170019: Code.OK_SEARCH,
    2170020: Code.OK_FETCH, 2170021: Code.OK_STORE, 2170022: Code.OK_COPY, 2170026: Code.OK_EXPUNGE,
    2170027: Code.OK_IDLE, 2170029: Code.OK_ID,
    2180000: Code.BAD_UNKNOWN_COMMAND, 2180002: Code.NO_PLAINTEXT_DISALLOWED,
    2180003: Code.BAD_ALREADY_AUTHENTICATED, 2180004: Code.BAD_NOT_AUTHENTICATED,
    2180005: Code.BAD_NOT_SELECTED, 2180006: Code.NO_STORE_READ_ONLY, 2180011: Code.BYE_INACTIVITY,
    2180012: Code.NO_MESSAGE_UNREADABLE,
    2180017: Code.BAD_LITERAL_TOO_BIG, 2180018: Code.BAD_EXPECTED_DONE,
    2190003: Code.NO_AUTH_BLOCKED, 2190004: Code.NO_AUTH_FAILED, 2190007: Code.NO_SERVER_ERROR,
    2190008: Code.NO_APPEND_INVALID, 2190010: Code.NO_INVALID_MAILBOX_NAME,
    2190012: Code.NO_HAS_CHILDREN, 2190013: Code.NO_DELETE_INBOX,
    2200003: Code.NO_MAILBOX_NOT_FOUND, 2200007: Code.NO_MAILBOX_EXISTS, 2200009: Code.NO_OVER_QUOTA,
}
_GROMOX_CODE = re.compile(r"2[12][0-9]{5}\Z")
# The status word that leads a Gromox text, by the code's first three digits (Gromox's 220xxxx
# are midb's errors, texts without one). Case-sensitive: in a translation, "No existe la
# carpeta" starts with an ordinary word.
_GROMOX_STATUS_WORDS = {216: ("BYE", "+"), 217: ("OK",), 218: ("BAD",), 219: ("NO",), 220: ()}
# Gromox's placeholders: <domain>/<host> (the greeting's host name, gximap's <host_id>), and
# <APPENDUID>/<COPYUID>/<reason>/<remote_ip>, which gximap's texts do not take (its response codes
# carry APPENDUID and COPYUID). Those go, with the separator before them.
_GROMOX_DROPPED_PLACEHOLDER = re.compile(r"[\s,;:]*<[A-Za-z0-9_]*>")


def _from_gromox(code: int, text: str) -> str:
    """A Gromox entry's text as gximap's: no status word, placeholders gximap fills kept."""
    word, _, rest = text.partition(" ")
    if word in _GROMOX_STATUS_WORDS.get(code // 10000, ()):
        text = rest
    if GROMOX_CODES[code] == Code.GREETING:
        return _PLACEHOLDER.sub("<host_id>", text).strip()
    return _GROMOX_DROPPED_PLACEHOLDER.sub("", text).strip(" \t,;:")


def parse_code_file(text: str, source: str = "<string>",
                    notes: list[str] | None = None) -> tuple[dict[int, str], list[str]]:
    """Parse the contents of an imap_code.txt: (table, warnings).  Bad lines are skipped with a
    warning naming ``source:line``; a later duplicate wins.  Entries in Gromox's format are
    mapped (GROMOX_CODES); an entry of gximap's own numbering wins over a mapped one.  Gromox
    entries without a counterpart are no fault of the file (Gromox's own has a few dozen): they
    are named in ``notes``, for the log's info level."""
    table: dict[int, str] = {}
    from_gromox: dict[int, str] = {}
    unmapped: list[int] = []
    warnings: list[str] = []
    known = {int(code) for code in Code}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENTRY.match(line)
        if match is None or not match.group(2):
            warnings.append(f"{source}:{number}: expected '<code> <text>'")
            continue
        code = int(match.group(1))
        if _GROMOX_CODE.match(match.group(1)):
            if code not in GROMOX_CODES:
                unmapped.append(code)
                continue
            converted = _from_gromox(code, match.group(2))
            if converted:
                from_gromox[int(GROMOX_CODES[code])] = converted
            else:
                warnings.append(f"{source}:{number}: Gromox code {code} has no text besides its status word "
                                f"and placeholders; ignored")
            continue
        if code not in known:
            warnings.append(f"{source}:{number}: code {code} is not one gximap uses; ignored")
            continue
        if code in table:
            warnings.append(f"{source}:{number}: duplicate code {code}; the later entry wins")
        table[code] = match.group(2)
    if unmapped and notes is not None:
        shown = ", ".join(str(code) for code in unmapped[:12]) + (", ..." if len(unmapped) > 12 else "")
        notes.append(f"{source}: {len(unmapped)} entries in Gromox's numbering have no gximap "
                     f"counterpart and are ignored: {shown}")
    return {**from_gromox, **table}, warnings


def _sanitize(text: str) -> str:
    return _UNSAFE.sub(" ", text)


def ascii_fold(text: str) -> str:
    """``text`` in US-ASCII: a letter with diacritics as its base letter, any other non-ASCII
    character as "?" (a translated text's words stay readable to an IMAP4rev1 client)."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char if char.isascii() else "?" for char in decomposed if not unicodedata.combining(char))


class ResponseCodes:
    """The loaded table.  ``text()`` never raises: an unknown code gives a generic text.

    ``ascii`` is the same table for a session that may only be sent US-ASCII text: RFC 3501's
    ``text`` is 7-bit (section 9, TEXT-CHAR), and RFC 9051 allows UTF-8 in it only after ENABLE
    IMAP4rev2. A translated imap_code.txt, or a placeholder's value, is folded (ascii_fold)."""

    def __init__(self, table: dict[int, str] | None = None, *, source: str | None = None,
                 warnings: list[str] | None = None, ascii_only: bool = False) -> None:
        self._table = {code: _sanitize(text) for code, text in (table or {}).items()}
        self._ascii_only = ascii_only
        if ascii_only:
            self._table = {code: ascii_fold(text) for code, text in self._table.items()}
        # Texts without arguments, encoded: every tagged response carries one (the table is
        # fixed once loaded; a reload builds a new ResponseCodes).
        self._plain: dict[int, bytes] = {}
        self.source = source
        self.warnings = list(warnings or [])
        self.ascii: ResponseCodes = self if ascii_only else ResponseCodes(
            self._table, source=source, warnings=self.warnings, ascii_only=True)

    @classmethod
    def load(cls, data_file_path: str | None = None) -> ResponseCodes:
        """Load ``imap_code.txt`` from the first directory of the colon-separated
        ``data_file_path`` that has one (an entry may also name the file itself), on top of the
        table shipped in the source tree's ``data/`` (which fills in missing codes)."""
        warnings: list[str] = []
        table: dict[int, str] = {}
        shipped = SHIPPED_CODE_FILE
        chosen: Path | None = None
        for entry in (data_file_path or "").split(":"):
            if not entry:
                continue
            candidate = Path(entry)
            if candidate.is_dir():
                candidate = candidate / CODE_FILE_NAME
            if candidate.is_file():
                chosen = candidate
                break
        sources = []
        for path in (shipped, chosen):
            if path is None or not path.is_file():
                continue
            if path is chosen and chosen is not None and _same_file(chosen, shipped):
                continue
            try:
                content = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                warnings.append(f"{path}: {exc.strerror or exc}")
                continue
            notes: list[str] = []
            parsed, problems = parse_code_file(content, str(path), notes)
            table.update(parsed)
            warnings.extend(problems)
            for note in notes:
                log.info("imap_code: %s", note)
            sources.append(str(path))
        if not sources:
            warnings.append(f"no {CODE_FILE_NAME} found; using generic response texts")
        for warning in warnings:
            log.warning("imap_code: %s", warning)
        return cls(table, source=sources[-1] if sources else None, warnings=warnings)

    def __contains__(self, code: object) -> bool:
        return code in self._table

    def codes(self) -> frozenset[int]:
        return frozenset(self._table)

    def plain_bytes(self, code: int) -> bytes:
        """``text(code)`` encoded as UTF-8, computed once per code."""
        cached = self._plain.get(code)
        if cached is None:
            cached = self._plain[code] = self.text(code).encode("utf-8")
        return cached

    def text(self, code: int, *args: object) -> str:
        """The text for ``code`` with ``args`` filled into its placeholders, in order.

        Missing arguments leave the placeholder empty, extra ones are dropped.  The result is
        safe to put on a response line: no CR/LF/NUL, not empty, not starting with "["."""
        template = self._table.get(int(code))
        if template is None:
            template = f"Response {int(code)}" + (" <>" * len(args))
        values = iter(args)

        def fill(_match: re.Match[str]) -> str:
            return _sanitize(str(next(values, "")))

        result = _PLACEHOLDER.sub(fill, template).strip()
        if self._ascii_only and not result.isascii():
            result = ascii_fold(result).strip()
        if not result:
            return f"Response {int(code)}"
        if result.startswith("["):
            result = "(" + result[1:]
        return result


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False
