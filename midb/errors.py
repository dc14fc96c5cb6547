"""Exceptions raised by the midb store (see specs/midb_api.md).

Every error a caller can provoke with bad input or a transient condition is a MidbError subclass, so
front ends can map them to IMAP/LMTP replies without catching bare exceptions.
"""

from __future__ import annotations

from typing import Any


class MidbError(Exception):
    """Base class of every error midb raises on purpose."""


class NoSuchAccount(MidbError):
    pass


class AccountExists(MidbError):
    pass


class NoSuchFolder(MidbError):
    pass


class FolderExists(MidbError):
    pass


class HasChildren(MidbError):
    """delete_folder refused: the folder has inferior folders (Dovecot-like rule)."""


# The contract names this refusal both ways; one class serves both names.
FolderNotEmpty = HasChildren


class InvalidName(MidbError):
    """Bad folder or account name (NUL, "..", empty component, too long, leading "/", ...)."""


class InvalidArgument(MidbError):
    """A malformed argument other than a name: a flag, a STORE mode, a UID, a body id, ..."""


class InvalidFlag(InvalidArgument):
    """A flag that is neither a known system flag nor a valid keyword atom."""


class KeywordSetsExhausted(MidbError):
    """The account has used every keyword set id (midb.columns): a write needing a keyword
    combination it has never had fails; the combinations it has keep working."""


class TooManyKeywords(KeywordSetsExhausted):
    """A message would carry more than MAX_KEYWORDS_PER_MESSAGE keywords (midb.columns). A
    subclass of KeywordSetsExhausted: front ends answer both alike (NO [LIMIT]; LMTP stores the
    message without its filter's keywords)."""


class MessageGone(MidbError):
    """The message an operation names is no longer in its folder (expunged meanwhile): REPLACE's
    message to replace. Nothing was written."""


class NoSuchBody(MidbError):
    """The body file or body id does not exist."""


class OverQuota(MidbError):
    """The operation would exceed the account quota; .resource is the RFC 9208 resource name
    ("STORAGE", "MESSAGE", "MAILBOX" or "ANNOTATION-STORAGE")."""

    def __init__(self, resource: str, message: str | None = None) -> None:
        super().__init__(message or f"quota exceeded ({resource})")
        self.resource = resource


class TooBig(MidbError):
    """The message exceeds the store's maximum message size."""


class MetadataTooMany(MidbError):
    """set_metadata would exceed the number of annotations allowed on one mailbox (or the server)."""


class MetadataTooBig(MidbError):
    """An annotation value exceeds the size allowed; .limit is that size in octets."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"annotation value larger than {limit} octets")
        self.limit = limit


class StoreBusy(MidbError):
    """Transient condition (map full, reader table full, lock trouble): retry later, answer 4xx."""


class StoreFull(StoreBusy):
    """No room for what was to be written: the filesystem is full (or its quota reached) or the
    index has reached its map size. Temporary for the client (4xx); the administrator must act."""


class NotDurable(MidbError):
    """A write committed, but the sync that makes it durable failed (an I/O error flushing the
    index): a power failure may undo it, so it is not acknowledged (NO [UNAVAILABLE], LMTP 451),
    although it stands meanwhile. After a failed fsync the kernel may have dropped the pages it
    could not write, so a later sync that succeeds would vouch for nothing. ``changes`` are the
    folders the write changed, {(account id, folder id): highest MODSEQ written}, to announce;
    ``result`` what the write returned, for a caller that undoes it (a failed COPY's copies)."""

    def __init__(self, message: str, changes: dict[tuple[int, int], int] | None = None,
                 result: Any = None) -> None:
        super().__init__(message)
        self.changes = changes or {}
        self.result = result


class ReadOnlyStore(MidbError):
    """A write was attempted on a Store opened with readonly=True."""


class FileUnavailable(MidbError):
    """A file a lookup depends on (the passwd-file, a name-map ``file`` table) cannot be read now,
    or not as a whole (EACCES, EIO, a directory in its place, over its size bound): no answer can
    be given from it, so the caller answers with a temporary failure (IMAP NO [UNAVAILABLE], auth
    socket FAIL temp, LMTP 451), never with "unknown user". Its reader (midb.filewatch) logged the
    cause, errno and all, when the file became so; the message names only the file, for the
    per-login lines."""

    def __init__(self, what: str, path: str, reason: str) -> None:
        super().__init__(f"{what} {path} cannot be read")
        self.what = what
        self.path = path
        self.reason = reason  # "Permission denied (EACCES)", "larger than 67108864 bytes", ...
