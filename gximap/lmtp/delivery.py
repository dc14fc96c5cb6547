"""Delivering a message received over LMTP to midb accounts: recipients, quarantine, filters, headers.

    agent = DeliveryAgent(store, delivery_map, DeliverySettings(spam_header=("x-spam", "yes")))
    accounts, refusal = agent.check_recipient("alice@example.org")        # at RCPT
    prepared = agent.prepare(envelope, body)                               # once per message
    reply = agent.deliver(prepared, recipient, delivery_id="...")           # once per recipient

Recipients: the address (a quoted local part unquoted) goes through ``delivery_map_normalize`` and
``delivery_map`` (gximap.auth.maps) to one or more midb accounts. Delivery never creates an
account: an address that maps to no existing account is refused at RCPT with ``550 5.1.1``, a
disabled account with ``550 5.2.1``, an account already at its quota with ``552 5.2.2``.

A recipient's copy is the message as received with ``Return-Path: <sender>``,
``Delivered-To: <recipient>`` and (DeliverySettings.received_by) a ``Received`` trace field
prepended, bare LF line ends made CRLF (``midb.mime.normalize_crlf``;
an MTA passing LF-only mail on would otherwise store what IMAP clients misread). Recipients of
one message with the same target (``DeliveryAgent.target``: the same address, ORCPT and
accounts, as Dovecot tells duplicates) share the first one's copy and reply. A message
whose header matches ``lmtp_spam_header``
(name and value compared case-insensitively, the value after unfolding and trimming) is
quarantined: it goes to the account's \\Junk folder (created as "Junk" if the account has none)
and no filter runs. Otherwise the IMAP filter (gximap.filters), if configured, may pick the folder
(a name, or a special-use attribute such as ``\\Archive``) and add flags; a folder that does not
exist means INBOX, a failing filter means INBOX without flags (both logged).

The reply for a recipient is ``250 2.0.0`` only once the copy is durable in the store (midb's
append returns after fsync when midb_fsync is on). A recipient's copies for several accounts are
stored in one commit (``Store.append_batch``); concurrent recipients' copies share commits too
(midb's group commit waits briefly for appends already writing their bodies). Store trouble that may pass (midb StoreBusy,
I/O errors) gives ``451 4.3.0`` so the MTA retries; over quota ``552 5.2.2``; too big ``552
5.3.4``. When a recipient maps to several accounts, the reply is 250 if at least one copy was
stored and none failed temporarily (a permanent failure for one account is logged), else the
most urgent failure: a temporary one first, so the MTA retries rather than loses mail.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gximap.expiring import expire_in_background
from gximap.filters import FilterCommand
from gximap.lmtp.protocol import Envelope, Recipient, Reply
from midb import errors as midb_errors
from midb.expiry import ExpiryThrottle
from midb.mime import normalize_crlf

__all__ = [
    "DeliveryAgent",
    "DeliverySettings",
    "PreparedMessage",
    "RecipientMap",
    "header_fields",
    "parse_spam_header",
    "unquote_address",
]

log = logging.getLogger("gximap.lmtp")

_FIELD_NAME = re.compile(rb"[\x21-\x7e]+").fullmatch  # printable ASCII, no space (RFC 5322 ftext)
_TRACE_SAFE = re.compile(r"[^\x00-\x20\x7f-\x9f()\u2028\u2029]*").fullmatch
MAX_HEADER_SCAN = 256 * 1024  # header fields beyond this are not looked at (spam flag, Subject)
_JUNK = "\\Junk"
_SPECIAL_USES = {use.lower(): use for use in ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")}

USER_UNKNOWN = "5.1.1"
TEMPFAIL = Reply(451, "4.3.0", "Temporary failure, try again later")


class RecipientMap(Protocol):
    """gximap.auth.maps.NameMap: the delivery_map / delivery_map_normalize pair."""

    def map_all(self, name: str) -> list[str]:
        """Every account the name maps to; raises UnmappedName (a LookupError) when none, and
        midb.errors.FileUnavailable when a ``file`` table cannot be read (no verdict: 451)."""


def parse_spam_header(text: str) -> tuple[str, str] | None:
    """``X-Spam: Yes`` → ("x-spam", "yes"); "" → None (no quarantine). ValueError when malformed."""
    text = text.strip()
    if not text:
        return None
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not name or not value:
        raise ValueError(f"{text!r} is not 'Header-Name: value'")
    if any(ord(char) <= 32 or ord(char) >= 127 for char in name):
        raise ValueError(f"{name!r} is not a header field name")
    return name.lower(), " ".join(value.split()).lower()


def unquote_address(address: str) -> str:
    """``"john doe"@example.org`` → ``john doe@example.org`` (RFC 5321 quoted local part)."""
    if not address.startswith('"'):
        return address
    local, at, domain = address.rpartition("@")
    if not at or len(local) < 2 or not local.endswith('"'):
        return address
    out: list[str] = []
    escaped = False
    for char in local[1:-1]:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out) + "@" + domain


def header_fields(message: bytes, limit: int = MAX_HEADER_SCAN) -> list[tuple[str, bytes]]:
    """(lower-cased name, unfolded raw value) of the header section, in order."""
    end = message.find(b"\r\n\r\n", 0, limit)
    if end < 0:
        end = message.find(b"\n\n", 0, limit)
    block = message[:end if end >= 0 else min(len(message), limit)]
    if block.startswith((b"\r\n", b"\n")):
        return []  # an empty header section
    fields: list[tuple[str, bytes]] = []
    for line in block.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line.strip())
            continue
        raw_name, colon, value = line.partition(b":")
        if colon and _FIELD_NAME(raw_name):
            fields.append((raw_name.decode("ascii").lower(), value.strip()))
    return fields


def _decode_subject(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    try:
        decoded = str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError, email.errors.MessageError):
        # MessageError covers HeaderParseError and CharsetError (=?ü?q?a?=): a Subject the
        # email package cannot decode is logged and filtered as written, never a lost delivery.
        decoded = text
    return " ".join(decoded.split())


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    spam_header: tuple[str, str] | None = None  # (name, value), both lower case
    filter: FilterCommand | None = None
    # (special use, seconds): imap_autoexpunge_*, run after a delivery too (gximap.expiring).
    autoexpunge: tuple[tuple[str, float], ...] = ()
    # This host's name for the Received field each copy gets (lmtp_add_received_header); None:
    # no Received field.
    received_by: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """What every recipient's copy shares, worked out once per message."""

    envelope: Envelope
    body: bytes
    spam: bool
    subject: str
    message_id: str
    settings: DeliverySettings
    peer: str = ""  # the LMTP client's address, for the Received field; "" over a unix socket


@dataclass(slots=True)
class _Copy:
    """One account's copy of a recipient's message: where it goes, then how storing it went."""

    account: str
    folder_id: int = 0
    folder: str = ""
    flags: tuple[str, ...] = ()
    note: str = ""
    result: _AccountResult | None = None
    redirected: bool = False         # the planned folder was gone: INBOX instead
    keywords_dropped: bool = False   # stored with its system flags only


@dataclass(slots=True)
class _AccountResult:
    reply: Reply
    folder: str = ""
    uid: int = 0
    note: str = ""


class DeliveryAgent:
    def __init__(self, store: Any, delivery_map: RecipientMap, settings: DeliverySettings | None = None,
                 expiry: ExpiryThrottle | None = None) -> None:
        self.store = store
        self.delivery_map = delivery_map
        self.settings = settings or DeliverySettings()  # replaced as a whole on reload
        # Shared with the IMAP sessions of the process: an account is expired once an hour at most.
        self.expiry = expiry if expiry is not None else ExpiryThrottle()

    # -- RCPT -------------------------------------------------------------------------------------

    def check_recipient(self, address: str) -> tuple[tuple[str, ...], Reply | None]:
        """(accounts, None) when the address may receive mail, else ((), the refusal)."""
        try:
            names = self.delivery_map.map_all(unquote_address(address))
        except LookupError:
            return (), Reply(550, USER_UNKNOWN, f"<{address}>: Recipient address rejected: User unknown")
        except midb_errors.FileUnavailable as exc:
            # delivery_map's file cannot be read (its reader logged why, once): no verdict on the
            # address, so the MTA keeps the mail and tries again; a 550 would bounce it.
            log.info("recipient <%s>: deferred: %s", _printable(address), exc)
            return (), TEMPFAIL
        accounts: list[str] = []
        disabled = full = 0
        try:
            for name in dict.fromkeys(name.lower() for name in names):
                account = self.store.get_account(name)
                if account is None:
                    log.debug("delivery_map maps <%s> to %r, which is no midb account", address, name)
                    continue
                if account.disabled:
                    disabled += 1
                    log.info("recipient <%s>: account %s is disabled; no copy for it", _printable(address),
                             account.name)
                    continue
                if _is_full(self.store, account):
                    full += 1
                    log.info("recipient <%s>: account %s is at its quota; no copy for it",
                             _printable(address), account.name)
                    continue
                accounts.append(account.name)
        except (midb_errors.MidbError, OSError) as exc:
            log.warning("recipient <%s>: store error: %s", address, exc)
            return (), TEMPFAIL
        if accounts:
            return tuple(accounts), None
        if full:
            return (), Reply(552, "5.2.2", f"<{address}>: Mailbox full")
        if disabled:
            return (), Reply(550, "5.2.1", f"<{address}>: Mailbox disabled")
        return (), Reply(550, USER_UNKNOWN, f"<{address}>: Recipient address rejected: User unknown")

    # -- after DATA -------------------------------------------------------------------------------

    def prepare(self, envelope: Envelope, body: bytes, *, peer: str = "") -> PreparedMessage:
        settings = self.settings
        body = normalize_crlf(body)
        fields = header_fields(body)
        spam = False
        if settings.spam_header is not None:
            name, value = settings.spam_header
            spam = any(field_name == name and " ".join(raw.decode("utf-8", "replace").split()).lower() == value
                       for field_name, raw in fields)
        subject = next((_decode_subject(raw) for name, raw in fields if name == "subject"), "")
        message_id = next((raw.decode("utf-8", "replace").strip() for name, raw in fields
                           if name == "message-id"), "")
        return PreparedMessage(envelope, body, spam, subject, message_id, settings, peer)

    @staticmethod
    def target(prepared: PreparedMessage, recipient: Recipient) -> tuple[object, ...]:
        """What makes ``recipient``'s copies: recipients of a message with equal targets get one
        copy (the first one's), so a repeated RCPT does not multiply the mail. The address
        counts, not only the accounts it reaches: the copy names it (Delivered-To), and a filter
        may pick a folder by it. Addresses are compared as Dovecot compares recipients: the
        domain case-insensitively, the local part exactly (``Alice`` may not be ``alice``); so
        are ORCPTs. Another address of the same account (an alias, a +detail) gets its own copy,
        as in Dovecot; an MTA such as Postfix has merged those before it passes them on."""
        return (frozenset(recipient.accounts), _address_key(recipient.address),
                _address_key(recipient.orcpt or recipient.address))

    def deliver(self, prepared: PreparedMessage, recipient: Recipient, *, delivery_id: str) -> Reply:
        """Store ``recipient``'s copy in each of its accounts; the LMTP reply for it."""
        envelope = prepared.envelope
        copy = (b"Return-Path: <" + envelope.sender.encode("utf-8") + b">\r\nDelivered-To: "
                + recipient.address.encode("utf-8") + b"\r\n" + _received_field(prepared, recipient, delivery_id)
                + prepared.body)
        started = time.monotonic()
        copies = [self._plan(prepared, recipient, account, copy, delivery_id) for account in recipient.accounts]
        self._store_copies(copies, copy, recipient, delivery_id)
        elapsed = time.monotonic() - started
        results = []
        for planned in copies:
            result = planned.result
            assert result is not None
            log.info("lmtp: id=%s from=<%s> to=<%s> account=%s %s size=%d elapsed=%.3fs%s",
                     delivery_id, _printable(envelope.sender), _printable(recipient.address), planned.account,
                     f"folder={_printable(result.folder)} uid={result.uid}" if result.reply.positive
                     else f"status={result.reply.code}", len(copy), elapsed,
                     f" ({_printable(result.note)})" if result.note else "")
            results.append(result)
        successes = [result for result in results if result.reply.positive]
        for planned in copies:  # an account that only ever receives mail still has its Junk expired
            if planned.result is not None and planned.result.reply.positive:
                expire_in_background(self.store, self.expiry, planned.account, prepared.settings.autoexpunge, log)
        temporary = [result for result in results if result.reply.temporary]
        if temporary:
            return temporary[0].reply
        if successes:
            where = ", ".join(f"{account}/{result.folder}" for account, result in
                              zip(recipient.accounts, results, strict=True) if result.reply.positive)
            return Reply(250, "2.0.0", f"<{recipient.address}> {delivery_id} Saved ({where})")
        return results[0].reply if results else Reply(550, USER_UNKNOWN, f"<{recipient.address}>: User unknown")

    def _plan(self, prepared: PreparedMessage, recipient: Recipient, account: str, copy: bytes,
              delivery_id: str) -> _Copy:
        """Where an account's copy goes (the filter runs here), or why it cannot be stored."""
        planned = _Copy(account)
        try:
            planned.folder_id, planned.folder, planned.flags, planned.note = self._destination(
                prepared, recipient, account, copy, delivery_id)
        except (midb_errors.MidbError, OSError) as exc:
            planned.result = self._failure(exc, recipient, account, delivery_id)
        return planned

    def _store_copies(self, copies: list[_Copy], copy: bytes, recipient: Recipient, delivery_id: str) -> None:
        """Store the planned copies, all in one store commit (Store.append_batch), and set each
        one's result. A folder deleted by a client meanwhile means INBOX; keywords the account has
        no id left for are dropped. Each remedy is taken at most once per copy and a round without
        one settles the copy, so every copy has its result after the third round."""
        store = self.store
        for _round in range(3):
            todo = [planned for planned in copies if planned.result is None]
            if not todo:
                return
            try:
                if len(todo) == 1:
                    planned = todo[0]
                    try:
                        outcomes: list[Any] = [store.append(planned.account, planned.folder_id, copy,
                                                            flags=planned.flags)]
                    except midb_errors.MidbError as exc:
                        outcomes = [exc]
                else:
                    outcomes = store.append_batch([(planned.account, planned.folder_id, copy, planned.flags)
                                                   for planned in todo])
            except (midb_errors.MidbError, OSError) as exc:  # the bodies could not be written
                outcomes = [exc] * len(todo)
            for planned, outcome in zip(todo, outcomes, strict=True):
                if isinstance(outcome, midb_errors.KeywordSetsExhausted) and not planned.keywords_dropped:
                    # The filter's keywords make a combination the account has no id left for
                    # (midb.columns): the mail matters more than its keywords, so it is stored
                    # with its system flags alone (in the next round).
                    kept = tuple(flag for flag in planned.flags if flag.startswith("\\"))
                    log.warning("lmtp: id=%s account=%s: %s; storing without the keywords %s", delivery_id,
                                planned.account, outcome,
                                _printable(" ".join(flag for flag in planned.flags if flag not in kept)))
                    planned.flags = kept
                    planned.keywords_dropped = True
                    planned.note = f"{planned.note}, keywords dropped" if planned.note else "keywords dropped"
                elif isinstance(outcome, midb_errors.NoSuchFolder) and not planned.redirected:
                    planned.redirected = True
                    try:  # deleted by a client just now: INBOX it is (stored in the next round)
                        planned.folder_id, planned.folder = self._inbox(planned.account)
                    except (midb_errors.MidbError, OSError) as exc:
                        planned.result = self._failure(exc, recipient, planned.account, delivery_id)
                elif isinstance(outcome, BaseException):
                    planned.result = self._failure(outcome, recipient, planned.account, delivery_id)
                else:
                    planned.result = _AccountResult(Reply(250, "2.0.0", "Saved"), planned.folder, outcome[1],
                                                    planned.note)

    @staticmethod
    def _failure(exc: BaseException, recipient: Recipient, account: str, delivery_id: str) -> _AccountResult:
        if isinstance(exc, midb_errors.OverQuota):
            return _AccountResult(Reply(552, "5.2.2", f"<{recipient.address}>: Mailbox full"), note="over quota")
        if isinstance(exc, midb_errors.TooBig):
            return _AccountResult(Reply(552, "5.3.4", "Message too big for the mailbox"), note="too big")
        if isinstance(exc, midb_errors.NoSuchAccount):
            return _AccountResult(Reply(550, USER_UNKNOWN, f"<{recipient.address}>: User unknown"),
                                  note="account vanished")
        # The MTA retries a 451 and says nothing; the administrator must hear of it here.
        if isinstance(exc, midb_errors.StoreFull):
            log.error("lmtp: id=%s account=%s: store full, mail deferred: %s", delivery_id, account, exc)
            return _AccountResult(TEMPFAIL, note=f"store full: {exc}")
        if isinstance(exc, midb_errors.StoreBusy):
            log.warning("lmtp: id=%s account=%s: store busy, mail deferred: %s", delivery_id, account, exc)
            return _AccountResult(TEMPFAIL, note=f"store busy: {exc}")
        log.error("lmtp: id=%s account=%s: store error, mail deferred: %s", delivery_id, account, exc)
        return _AccountResult(TEMPFAIL, note=f"store error: {exc}")

    def _destination(self, prepared: PreparedMessage, recipient: Recipient, account: str, copy: bytes,
                     delivery_id: str) -> tuple[int, str, tuple[str, ...], str]:
        """(folder id, folder name, flags, note for the log)."""
        if prepared.spam:
            folder_id, folder_name = self._junk(account)
            return folder_id, folder_name, (), "quarantined"
        command = prepared.settings.filter
        if command is None:
            return (*self._inbox(account), (), "")
        outcome = command.run(copy, self._placeholders(prepared, recipient, account, delivery_id))
        if outcome.error is not None:
            log.warning("lmtp: id=%s account=%s: filter %s failed (%s); delivering to INBOX",
                        delivery_id, account, command.program, _printable(outcome.error))
            return (*self._inbox(account), (), "filter failed")
        if outcome.skipped_flags:
            log.warning("lmtp: id=%s account=%s: filter output has invalid flags, skipped: %s", delivery_id,
                        account, _printable(" ".join(outcome.skipped_flags)))
        if outcome.folder is None:
            return (*self._inbox(account), outcome.flags, "filtered")
        folder = self._find_folder(account, outcome.folder)
        if folder is None:
            log.warning("lmtp: id=%s account=%s: filter chose folder %r, which does not exist; "
                        "delivering to INBOX", delivery_id, account, outcome.folder)
            return (*self._inbox(account), outcome.flags, "filtered, folder missing")
        return folder.id, folder.name, outcome.flags, "filtered"

    def _placeholders(self, prepared: PreparedMessage, recipient: Recipient, account: str,
                      delivery_id: str) -> Mapping[str, str]:
        envelope = prepared.envelope
        forwarded = envelope.xforward
        return {
            "account_name": account,
            "sender": envelope.sender,
            "rcpt_to": recipient.address,
            "original_rcpt_to": recipient.orcpt or recipient.address,
            "address": recipient.address,
            "subject": prepared.subject,
            "msg_id": delivery_id,
            "source_ip": forwarded.get("ADDR", ""),
            "source_host": forwarded.get("HELO", ""),
            "source_rdns": forwarded.get("NAME", ""),
            "auth_user": envelope.auth_user or "",
        }

    def _find_folder(self, account: str, name: str) -> Any:
        store = self.store
        wanted = _SPECIAL_USES.get(name.lower())
        if wanted is not None:
            return next((folder for folder in store.folder_entries(account) if folder.special_use == wanted), None)
        try:
            return store.get_folder(account, name)
        except midb_errors.InvalidName:
            return None

    def _inbox(self, account: str) -> tuple[int, str]:
        folder = self.store.get_folder(account, "INBOX")
        if folder is None:
            raise midb_errors.NoSuchAccount(account)
        return folder.id, folder.name

    def _junk(self, account: str) -> tuple[int, str]:
        store = self.store
        folders = store.folder_entries(account)
        junk = next((folder for folder in folders if folder.special_use == _JUNK), None)
        if junk is None:
            junk = next((folder for folder in folders if folder.name.lower() == "junk"), None)
        if junk is None:
            try:
                junk = store.create_folder(account, "Junk", special_use=_JUNK)
            except midb_errors.FolderExists:
                junk = store.get_folder(account, "Junk")
        if junk is None:
            return self._inbox(account)
        return junk.id, junk.name


def _received_field(prepared: PreparedMessage, recipient: Recipient, delivery_id: str) -> bytes:
    """The trace field RFC 5321 section 4.4 asks of the server that delivers a message, as
    Dovecot's LMTP writes it: ``Received: from <LHLO name> ([<client address>])`` ``by <host>
    with LMTP id <delivery id>`` ``for <recipient>; <date>``, folded before ``by`` and ``for``;
    b"" when lmtp_add_received_header is off."""
    received_by = prepared.settings.received_by
    if received_by is None:
        return b""
    source = _trace_text(prepared.envelope.lhlo) or "unknown"
    if prepared.peer:
        source += f" ([{_trace_text(prepared.peer)}])"
    date = email.utils.formatdate(localtime=True)
    return (f"Received: from {source}\r\n\tby {_trace_text(received_by)} with LMTP id {delivery_id}\r\n"
            f"\tfor <{_trace_text(recipient.address)}>; {date}\r\n").encode()


def _trace_text(text: str) -> str:
    """``text`` fit for a Received field: no control characters (a line break would end the
    field and start one the client wrote), no blanks or parentheses (a comment's syntax)."""
    return text if _TRACE_SAFE(text) else "".join(char if _TRACE_SAFE(char) else "?" for char in text)


def _is_full(store: Any, account: Any) -> bool:
    if not account.quota_bytes and not account.quota_messages:
        return False
    used_bytes, used_messages = store.usage(account.name)
    return bool((account.quota_bytes and used_bytes >= account.quota_bytes)
                or (account.quota_messages and used_messages >= account.quota_messages))


def _address_key(address: str) -> str:
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{domain.lower()}" if at else address


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)


def recipients_summary(recipients: Iterable[Recipient]) -> str:
    return ",".join(f"<{_printable(rcpt.address)}>" for rcpt in recipients)
