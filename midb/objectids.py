"""Object identifiers (RFC 8474 OBJECTID): MAILBOXID, EMAILID and THREADID.

A client caches what it fetched under these ids, so that a folder renamed or a message moved is
not fetched again. Each is derived from what midb already keeps, so none costs a write:

* MAILBOXID ``F<account id>-<folder id>-<UIDVALIDITY>`` (hexadecimal): the ids are drawn from
  counters and never reused, so a folder deleted and created again under its name, or an
  account deleted and created again, gets a new MAILBOXID; a RENAME keeps the folder's id and
  UIDVALIDITY, hence its MAILBOXID. The UIDVALIDITY covers what reuses an id: `midb import`
  giving an empty folder its exported UIDVALIDITY, `midb verify --repair` bringing back a lost
  folder under its id, a store restored from a backup drawing ids its successor had drawn
  already (UIDVALIDITYs go by the clock). The INBOX rename leaves INBOX (and its id) in place
  and moves the mail into a new folder, which gets a new one (RFC 8474 section 4).
* EMAILID ``M<body id>``: a message's body id (128 random bits) names bytes that never change.
  COPY and MOVE within an account share the source's body, so the copy has the source's EMAILID
  (section 5.1). The same content stored twice (two APPENDs) gets two bodies and two EMAILIDs,
  which the RFC allows.
* THREADID ``T<16 hex digits>``: a hash of the message id the conversation started with, taken
  from the message itself: the first id of References (RFC 5322 section 3.6.4: a reply's
  References begins with its thread's first message), else In-Reply-To, else the message's own
  Message-ID. A reply and the message it answers so get the same THREADID, computed from each
  message alone: no index to keep, and a message's THREADID never changes, as section 5.2
  requires. A message without any of the three fields is a thread of its own, named after its
  body. A reply whose References were dropped by its sender and which answers a reply (not the
  first message) starts a thread of its own; that is the price of needing no thread index.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from midb.mime import normalize_msg_id

MAILBOX_PREFIX = "F"
EMAIL_PREFIX = "M"
THREAD_PREFIX = "T"
# RFC 8474 section 7: objectid = 1*255(ALPHA / DIGIT / "_" / "-").
OBJECTID = re.compile(r"[A-Za-z0-9_-]{1,255}\Z")
_BLOB_ID = re.compile(r"[0-9a-f]{32}\Z")   # midb.shards.new_blob_id
_THREAD_ID = re.compile(THREAD_PREFIX + r"[0-9a-f]{16}\Z")


def is_objectid(text: str) -> bool:
    return OBJECTID.match(text) is not None


def mailbox_id(account_id: int, folder_id: int, uidvalidity: int) -> str:
    return f"{MAILBOX_PREFIX}{account_id:x}-{folder_id:x}-{uidvalidity:x}"


def email_id(blob: str) -> str:
    return EMAIL_PREFIX + blob


def blob_of_email_id(objectid: str) -> str | None:
    """The body id an EMAILID names, None when ``objectid`` is no EMAILID of this store."""
    blob = objectid[len(EMAIL_PREFIX):]
    if not objectid.startswith(EMAIL_PREFIX) or _BLOB_ID.match(blob) is None:
        return None
    return blob


def is_thread_id(objectid: str) -> bool:
    """Whether ``objectid`` has the form of a THREADID of thread_id (others match no message)."""
    return _THREAD_ID.match(objectid) is not None


def thread_root(message_id: str | None, in_reply_to: str | None, references: tuple[str, ...]) -> str | None:
    """The id of the message the conversation started with, as far as this message tells
    (normalised: a quoted id-left unquoted, as THREAD compares ids); None when it names no
    message at all."""
    root = references[0] if references else in_reply_to or message_id
    return normalize_msg_id(root) if root else None


class MessageIds(Protocol):
    """What a THREADID is made of: midb.summary's Summary and SortRecord both carry it."""

    @property
    def message_id(self) -> str | None: ...
    @property
    def in_reply_to(self) -> str | None: ...
    @property
    def references(self) -> tuple[str, ...]: ...


def thread_id_of(blob: str, ids: MessageIds) -> str:
    """thread_id of a body from its summary (or the summary's sort record)."""
    return thread_id(blob, ids.message_id, ids.in_reply_to, ids.references)


def thread_id(blob: str, message_id: str | None, in_reply_to: str | None, references: tuple[str, ...]) -> str:
    """THREADID of a message from its body id and its Message-ID, In-Reply-To (first id) and
    References (ids in order), all without angle brackets (midb.mime.Digest's fields)."""
    root = thread_root(message_id, in_reply_to, references)
    named = ("<" + root + ">") if root is not None else blob
    return THREAD_PREFIX + hashlib.blake2b(named.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
