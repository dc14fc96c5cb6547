"""IMAP URLs (RFC 5092) naming a message or a part of one, as CATENATE takes them (RFC 4469).

Sans-IO: :func:`parse` turns the URL a client sent into an :class:`ImapUrl`, or raises
:class:`UrlError` with the reason; the session checks the user and server and looks the message
up. Accepted forms:

* ``imap://[user[;AUTH=mech]@]host[:port]/mailbox...`` (RFC 5092 section 6: imapurl); without a
  port (or with an empty one, RFC 3986 section 3.2.3) the port is 143 (RFC 5092 section 1);
* ``/mailbox...`` (iabsolute-path, relative to the server and user of the session: RFC 4469's
  examples use this form).

Both must name a message (imessagepart) once their dot-segments are resolved (RFC 5092 section
7, RFC 3986 section 5.2.4): ``mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]``.
A URL naming a mailbox or a search (imessagelist), a relative path of another kind, and URLAUTH
(``;EXPIRE=``, ``;URLAUTH=``, RFC 4467) are refused: there is no base URL for the first (and
RFC 5092 section 7.2 forbids accepting a relative-path one), and gximap does not do the second.

Decoding (RFC 5092 section 3.1 and section 9): every component is %-decoded as octets; the
mailbox name is then UTF-8. One that is also valid modified UTF-7 with shift sequences (what
RFC 2192 clients sent) is offered read that way too (:attr:`ImapUrl.mutf7_name`), for the
session to try when the UTF-8 reading names no mailbox. ``;SECTION=`` is a section-spec,
read as BODY[...] reads it (gximap.imap.parser.parse_section_spec); ``;PARTIAL=`` an offset and
an optional length.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from gximap.imap import mutf7
from gximap.imap.commands import Section, normalize_inbox
from gximap.imap.parser import MAX_NUMBER, ParseError, parse_section_spec

__all__ = ["DEFAULT_PORT", "ImapUrl", "UrlError", "parse", "MAX_URL_LENGTH"]

# RFC 5092 section 1: "If :<port> is omitted, the port defaults to 143".
DEFAULT_PORT = 143
MAX_URL_LENGTH = 8192  # longer than any URL naming a part needs; bounds the work on one
_SCHEME = "imap://"
# A %-escape must be complete (RFC 3986 pct-encoded); unquote_to_bytes would keep a broken one.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# iserver = [iuserinfo "@"] host [":" port]; iuserinfo = enc-user [iauth] / [enc-user] iauth
_SERVER = re.compile(r"(?:(?P<user>[^;@/]*)(?P<auth>;AUTH=[^@/]*)?@)?(?P<host>\[[^\]/]*\]|[^:/@\[]*)(?::(?P<port>[0-9]*))?\Z",
                     re.IGNORECASE)
_PARAMETER = re.compile(r"([A-Za-z]+)=(.*)\Z", re.DOTALL)
_NZ_NUMBER = re.compile(r"[1-9][0-9]*\Z")
_PARTIAL = re.compile(r"([0-9]+)(?:\.([1-9][0-9]*))?\Z")


class UrlError(ValueError):
    """A URL that cannot name a message part here; the text says why (for NO [BADURL])."""


@dataclass(frozen=True, slots=True)
class ImapUrl:
    user: str | None  # imap://user@...: the user it names; None for an absolute path
    host: str | None  # imap://...host: the server it names; None for an absolute path
    mailbox: str  # decoded as UTF-8 (INBOX in any case as "INBOX")
    mutf7_name: str | None  # the same octets read as modified UTF-7, when that reads otherwise
    uidvalidity: int | None
    uid: int
    section: Section | None  # None: the whole message
    partial: tuple[int, int | None] | None  # (offset, length or None for the rest)
    port: int | None = None  # imap://host:port: the port it names (DEFAULT_PORT when omitted); None for a path


def parse(url: bytes) -> ImapUrl:
    """The message part ``url`` names; UrlError when it is not a URL of the accepted forms."""
    if not url:
        raise UrlError("empty URL")
    if len(url) > MAX_URL_LENGTH:
        raise UrlError("URL too long")
    try:
        text = url.decode("ascii")
    except UnicodeDecodeError:
        raise UrlError("8-bit octets in URL (they must be %-escaped)") from None
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in text):
        raise UrlError("space or control character in URL")
    if _BAD_ESCAPE.search(text):
        raise UrlError("incomplete %-escape")
    if "#" in text or "?" in text:
        raise UrlError("URL names a search or fragment, not a message part")
    user = host = port = None
    if text[: len(_SCHEME)].lower() == _SCHEME:
        rest = text[len(_SCHEME):]
        slash = rest.find("/")
        if slash < 0:
            raise UrlError("URL names a server, not a message")
        user, host, port = _server(rest[:slash])
        path = rest[slash + 1:]
    elif text.startswith("//"):
        raise UrlError("network-path URL without the imap scheme")
    elif text.startswith("/"):
        path = text[1:]
    else:
        raise UrlError("relative URL (give an absolute path: /mailbox;UIDVALIDITY=n/;UID=n)")
    return _message_part(_without_dot_segments(path), user, host, port)


def _without_dot_segments(path: str) -> str:
    """``path`` (after its leading "/") with the dot-segments resolved as RFC 3986 section 5.2.4
    does, which RFC 5092 section 7 applies to IMAP URLs: ``/Trash/../INBOX/;UID=1`` names
    INBOX. A segment is a dot-segment only when it is "." or ".." exactly: ``..;UIDVALIDITY=1``
    is not (RFC 5092 section 9.1), nor ``%2E%2E``, which a mailbox so named is written as."""
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    kept: list[str] = []
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and kept:
                kept.pop()
            if index == len(segments) - 1:
                kept.append("")  # "a/b/.." is "a/": the path still ends in a slash
        else:
            kept.append(segment)
    return "/".join(kept)


def _server(server: str) -> tuple[str | None, str, int]:
    """(user or None, host in lower case, port) of ``iserver``."""
    found = _SERVER.match(server)
    if found is None or not found.group("host"):
        raise UrlError("invalid server in URL")
    digits = found.group("port")
    if not digits:
        port = DEFAULT_PORT
    elif len(digits.lstrip("0")) > 5 or int(digits) > 65535:   # (bounded: a URL may be 8 KB)
        raise UrlError("invalid port in URL")
    else:
        port = int(digits)
    raw_user = found.group("user")
    user = None
    if raw_user:
        try:
            user = unquote_to_bytes(raw_user).decode("utf-8")
        except UnicodeDecodeError:
            raise UrlError("user name in URL is not UTF-8") from None
    return user, found.group("host").lower(), port


def _message_part(path: str, user: str | None, host: str | None, port: int | None) -> ImapUrl:
    """``imailbox-ref iuid [isection] [ipartial]`` (RFC 5092 section 11), without the leading "/"."""
    semicolon = path.find(";")
    if semicolon < 0:
        raise UrlError("URL names no message (;UID= missing)")
    raw_mailbox, rest = path[:semicolon], path[semicolon:]
    if raw_mailbox.endswith("/"):  # no ;UIDVALIDITY=: "mailbox/;UID=n"
        raw_mailbox, rest = raw_mailbox[:-1], "/" + rest
    if not raw_mailbox:
        raise UrlError("URL names no mailbox")
    mailbox, mutf7_name = _mailbox(raw_mailbox)
    # Each parameter follows ";" (;UIDVALIDITY= and the URLAUTH ones) or "/;" (the others).
    pieces = re.split(r"(/?;)", rest)
    if pieces[0]:
        raise UrlError("invalid URL path")
    values: dict[str, str] = {}
    order: list[str] = []
    for separator, parameter in zip(pieces[1::2], pieces[2::2], strict=True):
        found = _PARAMETER.match(parameter)
        if found is None:
            raise UrlError("invalid URL parameter")
        name, value = found.group(1).upper(), found.group(2)
        if name in ("URLAUTH", "EXPIRE"):
            raise UrlError("URLAUTH is not supported")
        expected = ";" if name == "UIDVALIDITY" else "/;"
        if name not in ("UIDVALIDITY", "UID", "SECTION", "PARTIAL") or separator != expected:
            raise UrlError(f"unexpected ;{name}= in URL")
        if name in values:
            raise UrlError(f";{name}= given twice")
        values[name] = value
        order.append(name)
    if order != sorted(order, key=("UIDVALIDITY", "UID", "SECTION", "PARTIAL").index):
        raise UrlError("URL parameters out of order")
    if "UID" not in values:
        raise UrlError("URL names no message (;UID= missing)")
    uidvalidity = _nz_number(values["UIDVALIDITY"], "UIDVALIDITY") if "UIDVALIDITY" in values else None
    uid = _nz_number(values["UID"], "UID")
    section = _section(values["SECTION"]) if "SECTION" in values else None
    partial = _partial(values["PARTIAL"]) if "PARTIAL" in values else None
    return ImapUrl(user, host, mailbox, mutf7_name, uidvalidity, uid, section, partial, port)


def _mailbox(raw: str) -> tuple[str, str | None]:
    """(the name as UTF-8, its modified UTF-7 reading when that is another). RFC 5092 section
    3.1 (via RFC 3501's mailbox naming): the octets of the name are UTF-8 in a URL; RFC 2192,
    which it replaces, had modified UTF-7 there."""
    octets = unquote_to_bytes(raw)
    if b"\x00" in octets:
        raise UrlError("NUL in mailbox name")
    try:
        name = normalize_inbox(octets.decode("utf-8"))
    except UnicodeDecodeError:
        # Modified UTF-7 is ASCII, which is UTF-8: octets that are no UTF-8 are neither.
        raise UrlError("mailbox name in URL is neither UTF-8 nor modified UTF-7") from None
    mutf7_name: str | None = None
    if b"&" in octets:
        with contextlib.suppress(ValueError):
            mutf7_name = normalize_inbox(mutf7.decode(octets))
    return name, (mutf7_name if mutf7_name != name else None)


def _nz_number(value: str, what: str) -> int:
    if not _NZ_NUMBER.match(value) or len(value) > 10 or int(value) > MAX_NUMBER:
        raise UrlError(f"invalid ;{what}= in URL")
    return int(value)


def _section(value: str) -> Section:
    try:
        return parse_section_spec(unquote_to_bytes(value))
    except ParseError as exc:
        raise UrlError(f"invalid ;SECTION= in URL: {exc.text}") from None


def _partial(value: str) -> tuple[int, int | None]:
    """RFC 5092: ``partial-range = number ["." nz-number]``, an offset and a length."""
    found = _PARTIAL.match(value)
    if found is None or len(found.group(1)) > 10 or int(found.group(1)) > MAX_NUMBER:
        raise UrlError("invalid ;PARTIAL= in URL")
    length = found.group(2)
    if length is not None and (len(length) > 10 or int(length) > MAX_NUMBER):
        raise UrlError("invalid ;PARTIAL= in URL")
    return int(found.group(1)), None if length is None else int(length)
