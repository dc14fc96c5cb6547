"""APPEND (RFC 3501 / RFC 9051 section 6.3.12), MULTIAPPEND (RFC 3502), APPENDUID (RFC 4315).

Several messages in one APPEND are stored all or nothing, in one store transaction. A message
is stored with its bare LF line ends made CRLF (``midb.mime.normalize_crlf``, as Dovecot serves
such a message); anything else is kept as received. Of data sent as literal8 (RFC 3516, also
inside UTF8 of RFC 6855) the binary parts are first stored base64-encoded
(``midb.mime.binary_parts_as_base64``), as Dovecot stores them: a BODY[] literal could not carry
their NUL octets, BINARY[] gives the octets back, and being base64 they keep every octet through
the line end change, which only meets line-oriented data. A message too big for the configured limit never gets here: the session refuses its literal
with NO [TOOBIG] while framing (the limit applies to the literal as sent). A synchronising literal
that the account's quota cannot take is refused the same way, with NO [OVERQUOTA] instead of "+",
and so is one for a mailbox, named before it, that does not exist: NO [TRYCREATE].
An APPEND to the selected mailbox is announced (EXISTS) by the update the session sends before the
tagged OK.

CATENATE (RFC 4469): a message given as parts (TEXT literals, UTF8 literal8s under UTF8=ACCEPT,
and URLs naming a message or a section of one in the user's own mailboxes, gximap.imap.imapurl)
is put together before anything is stored, every message of the command first, so the APPEND
stays all or nothing. A URL's octets are BODY[section] as FETCH would send them (with
``;PARTIAL=`` cut from that), read only after their size is known to fit (HEADER.FIELDS is
built from the header it reads first): a message put together beyond the APPEND limit is
refused NO [TOOBIG], and the messages of one command together (plain ones included, wherever
they stand) beyond the literal limit (what plain messages are held to while framing) NO
[LIMIT], so the octets put together never exceed what one APPEND's literals may. A URL that
cannot be resolved (another user or server, URLAUTH, no such mailbox or message, a UIDVALIDITY
that does not match, a section the message does not have) is NO [BADURL url] (RFC 4469 section
5).

An ``imap://user@host/...`` URL is the session's own when its user is the storage account or a
name the client logged in as (the login as given: with auth_map/storage_map that drop the
domain, ``alice@example.org`` as well as ``alice``; impersonating, ``bob!shared`` and ``shared``
but not ``bob``, whose URLs name bob's own mailboxes: commands.auth._url_users), and its host
names this server: host_id, the machine's host name, the address the client connected to, or
``localhost`` when that address is a loopback one (_names_this_server); and its port is one the
client reached this server by, 143 when it gives none (_is_this_port). Anything else may name
another server's message, which this one must not serve in its place.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode, fetchmime, imapurl
from gximap.imap.codes import Code
from gximap.net.proxy import normalize_host
from gximap.session.base import AUTHENTICATED, CommandFailed, Done, command
from gximap.session.capabilities import append_limit
from gximap.session.errors import trycreate_folder
from midb.errors import NoSuchBody, NoSuchFolder
from midb.mime import binary_parts_as_base64, normalize_crlf

# RFC 4469 section 5 (erratum 2002): url-resp-text is any TEXT-CHAR but "]"; a URL is echoed in
# [BADURL ...] with other octets %-escaped, and cut to a length a response line can carry.
_NOT_URL_RESP_TEXT = re.compile(rb"[^\x01-\x09\x0b\x0c\x0e-\x5c\x5e-\xfe]")
_BADURL_ECHO_MAX = 1024


def _local_offset_minutes(moment: float) -> int:
    """The server's UTC offset at ``moment``, for messages appended without a date."""
    return (time.localtime(moment).tm_gmtoff or 0) // 60


def refuse_utf8_unless_enabled(session: Any, messages: Iterable[cmds.AppendMessage]) -> None:
    """RFC 6855 section 4: the UTF8 data item is a BAD command until ENABLE UTF8=ACCEPT."""
    if "UTF8=ACCEPT" not in session.enabled and any(message.utf8 for message in messages):
        raise CommandFailed(Code.BAD_NOT_ENABLED, "UTF8=ACCEPT", status="BAD")


def store_item(message: cmds.AppendMessage, now: float) -> tuple[bytes, tuple[str, ...], int, int]:
    """(data, flags, internaldate, tzoffset) of an append-message, as the store takes it."""
    if not message.data:
        raise CommandFailed(Code.NO_APPEND_INVALID, status="NO")  # nothing to store
    if message.date is None:
        internaldate, tzoffset = int(now), _local_offset_minutes(now)
    else:
        internaldate, tzoffset = message.date
    # Binary parts first: base64 has CRLF line ends only, so normalize_crlf leaves their octets be.
    # Outside them an LF octet is a line end (RFC 2045 section 2: 7bit, 8bit and the encodings
    # hold CR and LF only as CRLF); a part beyond the MIME limits (midb.mime.MAX_PARTS) is no
    # part to IMAP, only text of the part that holds it.
    data = normalize_crlf(binary_parts_as_base64(message.data) if message.binary else message.data)
    return data, message.flags, internaldate, tzoffset


def catenated(session: Any, messages: Sequence[cmds.AppendMessage]) -> list[cmds.AppendMessage]:
    """``messages`` with those sent as CATENATE parts put together (see the module docstring);
    CommandFailed with NO [BADURL], [TOOBIG] or [LIMIT] when one cannot be."""
    message_limit = append_limit(session)
    command_limit = session.settings.max_literal
    # What the plain messages leave, wherever they stand in the command (the framer held them
    # to the limit together already).
    command_room = command_limit - sum(len(message.data) for message in messages if message.catenate is None)
    out: list[cmds.AppendMessage] = []
    for message in messages:
        if message.catenate is not None:
            room = min(message_limit, command_room)
            try:
                data = _put_together(session, message.catenate, room)
            except _TooBig:
                if room == message_limit:
                    raise CommandFailed(Code.NO_MESSAGE_TOO_BIG) from None
                # Within what is left of the command's bound, not necessarily beyond the message
                # limit: as the framer answers a MULTIAPPEND's literals too big together.
                raise CommandFailed(Code.NO_MESSAGES_TOO_BIG_TOGETHER, str(command_limit)) from None
            message = dataclasses.replace(message, data=data, catenate=None)
            command_room -= len(data)
        out.append(message)
    return out


class _TooBig(Exception):
    """A CATENATE message would exceed the room it has (raised before its octets are read)."""


def _put_together(session: Any, parts: tuple[cmds.CatenatePart, ...], room: int) -> bytes:
    """The octets of one CATENATE message; _TooBig when they would be more than ``room``."""
    chunks: list[bytes] = []
    size = 0
    for part in parts:
        if isinstance(part, cmds.CatenateText):
            data = part.data
            if len(data) > room - size:
                raise _TooBig()
        else:
            data = _url_octets(session, part.url, room - size)
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def _bad_url(url: bytes, reason: str) -> CommandFailed:
    """NO [BADURL url]: the URL as sent, escaped and cut (_NOT_URL_RESP_TEXT); an empty one as
    "%20", since url-resp-text has one octet at least."""
    echo = _NOT_URL_RESP_TEXT.sub(lambda found: b"%%%02X" % found.group()[0], url)[:_BADURL_ECHO_MAX] or b"%20"
    return CommandFailed(Code.NO_BAD_URL, reason, code=b"BADURL " + echo)


def _url_octets(session: Any, raw: bytes, room: int) -> bytes:
    """BODY[section] (cut by ;PARTIAL=) of the message ``raw`` names; _TooBig beyond ``room``."""
    try:
        url = imapurl.parse(raw)
    except imapurl.UrlError as exc:
        raise _bad_url(raw, str(exc)) from None
    user = session.user
    if url.host is not None:
        # imap://user@host/...: this server, and the session's user (RFC 5092 section 3.2: a URL
        # without a user names anonymous access, which is someone else too).
        if url.user is None or url.user.casefold() not in session.url_users:
            raise _bad_url(raw, "URL names another user")
        if not _names_this_server(session, url.host) or not _is_this_port(session, url.port):
            raise _bad_url(raw, "URL names another server")
    store = session.store
    folder = store.get_folder(user, url.mailbox)
    if folder is None and url.mutf7_name is not None:
        folder = store.get_folder(user, url.mutf7_name)
    if folder is None:
        raise _bad_url(raw, "no such mailbox")
    if url.uidvalidity is not None and url.uidvalidity != folder.uidvalidity:
        raise _bad_url(raw, "UIDVALIDITY does not match")
    try:
        found = store.get_messages(user, folder.id, [url.uid])
    except NoSuchFolder:  # deleted since it was looked up: NO [NONEXISTENT] would name the target
        raise _bad_url(raw, "no such mailbox") from None
    if not found:
        raise _bad_url(raw, "no message with that UID")
    try:
        return _section_octets(store, found[0], url, room)
    except imapurl.UrlError as exc:
        raise _bad_url(raw, str(exc)) from None
    except NoSuchBody:  # expunged since it was looked up
        raise _bad_url(raw, "no message with that UID") from None


def _names_this_server(session: Any, host: str) -> bool:
    """Whether a URL's host (lower case; an IPv6 address in brackets) is a name this server is
    known by without asking anyone: host_id, the machine's host name, the address the client
    connected to (the PROXY header's destination behind a proxy: what the client reached this
    server by), or ``localhost`` for a client on this machine. No DNS lookup: a name that only
    resolves here is refused, which costs a client nothing it could not say with one of these
    or a relative URL."""
    if host == session.settings.host_id.lower():
        return True
    local = session.conn.local_host
    if host == "localhost":
        # The client's own machine, as the loopback address is: this one only for a client that
        # reached us over loopback or a UNIX socket (whose local "address" is the socket's path).
        # Before the host name: a machine (a container) may be called "localhost" too.
        try:
            return ipaddress.ip_address(local).is_loopback
        except ValueError:
            return True
    if host == socket.gethostname().lower():
        return True
    # RFC 3986 section 3.2.2: an IPv6 address in brackets, an IPv4 one without.
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return False  # a name, and none of the above (the local address is an address, or a socket path)
    if bracketed != (address.version == 6):
        return False
    return normalize_host(str(address)) == local


# The IMAP service's two standard ports (RFC 9051 section 2.1): 143, and 993 for implicit TLS
# (RFC 8314). A URL cannot tell them apart (RFC 5092 has no imaps scheme).
_STANDARD_PORTS = frozenset({imapurl.DEFAULT_PORT, 993})


def _is_this_port(session: Any, port: int | None) -> bool:
    """Whether an imap:// URL's port (imapurl.DEFAULT_PORT, 143, when it gives none: RFC 5092
    section 1) names this server: the port the client connected to (behind a proxy the PROXY
    header's destination, the port the client reached) or the listener's own. A connection to
    143 or 993 takes both, and so the portless URL a client on 993 often writes: the two are
    one IMAP service. A connection to another port takes only its own: 143 may then be another
    IMAP server on the same host, whose messages this one must not serve in their place. A
    UNIX socket has no port, and takes the standard pair."""
    conn = session.conn
    ports = {conn.local_port, conn.listener_port} - {0}
    if not ports or ports & _STANDARD_PORTS:
        ports |= _STANDARD_PORTS
    return port in ports


def _section_octets(store: Any, meta: Any, url: imapurl.ImapUrl, room: int) -> bytes:
    """BODY[section]<partial> of ``meta`` (UrlError for a section it does not have), its size
    checked against ``room`` before a byte of it is read (HEADER.FIELDS: once it is built from
    the header, which is read for it)."""
    section = url.section

    def read(offset: int, length: int) -> bytes:
        return store.read_body(meta.blob, offset, length)

    built: bytes | None = None
    if section is None:
        offset, length = 0, meta.size
    else:
        digest = store.digest(meta.blob)
        if not fetchmime.section_exists(digest, section.part, section.text):
            raise imapurl.UrlError("no such section in the message")
        span = fetchmime.section_range(digest, section.part, section.text)
        if span is None:  # HEADER.FIELDS (.NOT): built from the header, at most its size
            built = fetchmime.header_fields_section(read, digest, section.part, section.text,
                                                    section.fields, None)
            offset, length = 0, len(built)
        else:
            offset, length = span
    if url.partial is not None:
        start, count = url.partial
        start = min(start, length)
        offset, length = offset + start, length - start if count is None else min(count, length - start)
    if length > room:
        raise _TooBig()
    if built is not None:
        return built[offset : offset + length]
    return read(offset, length) if length > 0 else b""


def raise_trycreate_if_gone(session: Any, mailbox: str) -> None:
    """After the store's NoSuchFolder: NO [TRYCREATE] when the target mailbox is the one gone
    (deleted by another session since it was looked up), so that the client may create it and
    try again, as when it was missing from the start."""
    trycreate_folder(session, mailbox)


@command(cmds.Append, states=AUTHENTICATED)
def append(session: Any, cmd: cmds.Append) -> Done:
    refuse_utf8_unless_enabled(session, cmd.messages)
    store = session.store
    folder = trycreate_folder(session, cmd.mailbox.name)
    messages = catenated(session, cmd.messages)
    now = time.time()
    items = [store_item(message, now) for message in messages]
    view = session.selected
    try:
        if view is not None and view.folder_id == folder.id and not view.readonly:
            # Into the selected folder: claim \Recent in the same transaction (one durable commit).
            uidvalidity, uids, floor = store.append_claiming(session.user, folder.id, items)
            view.note_claim(floor, uids[-1])
        elif len(items) == 1:
            data, flags, internaldate, tzoffset = items[0]
            uidvalidity, uid = store.append(session.user, folder.id, data, flags=flags,
                                            internaldate=internaldate, tzoffset=tzoffset)
            uids = [uid]
        else:
            uidvalidity, uids = store.append_many(session.user, folder.id, items)
    except NoSuchFolder:
        raise_trycreate_if_gone(session, cmd.mailbox.name)
        raise
    if view is not None and view.folder_id == folder.id:
        view.note_own_arrivals(uids)
    return Done(Code.OK_APPEND, code=b"APPENDUID %d %s" % (uidvalidity, encode.sequence_set(uids)))
