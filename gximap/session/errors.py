"""Map midb's errors onto IMAP completions (RFC 5530 response codes); the TRYCREATE lookup."""

from __future__ import annotations

import logging
from typing import Any

from gximap.imap.codes import Code
from gximap.log import escape_text
from gximap.session.base import CommandFailed, Done
from midb import errors as midb_errors
from midb import quotas
from midb.folders import FolderInfo

# The resources a user can do something about besides deleting mail get their own text.
_OVER_QUOTA_CODES = {quotas.MAILBOX: Code.NO_MAILBOX_QUOTA, quotas.ANNOTATION_STORAGE: Code.NO_ANNOTATION_QUOTA}


def done_for_store_error(exc: BaseException) -> Done | None:
    """The tagged NO for a store error, or None when ``exc`` is not one (a server bug)."""
    if isinstance(exc, midb_errors.NoSuchFolder):
        return Done(Code.NO_MAILBOX_NOT_FOUND, status="NO")
    if isinstance(exc, midb_errors.FolderExists):
        return Done(Code.NO_MAILBOX_EXISTS, status="NO")
    if isinstance(exc, midb_errors.HasChildren):
        return Done(Code.NO_HAS_CHILDREN, status="NO")   # RFC 9051 section 7.1
    if isinstance(exc, midb_errors.InvalidName):
        return Done(Code.NO_INVALID_MAILBOX_NAME, status="NO")
    if isinstance(exc, midb_errors.KeywordSetsExhausted):
        return Done(Code.NO_LIMIT, (str(exc),), status="NO")
    if isinstance(exc, midb_errors.InvalidArgument):
        return Done(Code.BAD_PARSE, (str(exc),), status="BAD")
    if isinstance(exc, midb_errors.OverQuota):
        code = _OVER_QUOTA_CODES.get(exc.resource, Code.NO_OVER_QUOTA)
        return Done(code, status="NO")
    if isinstance(exc, midb_errors.TooBig):
        return Done(Code.NO_MESSAGE_TOO_BIG, status="NO")
    if isinstance(exc, midb_errors.MessageGone):
        return Done(Code.NO_EXPUNGE_ISSUED, status="NO")
    if isinstance(exc, midb_errors.ReadOnlyStore):
        return Done(Code.NO_READ_ONLY, status="NO", code=b"NOPERM")
    if isinstance(exc, midb_errors.StoreBusy | midb_errors.NoSuchBody):
        return Done(Code.NO_TRY_AGAIN, (str(exc),), status="NO", code=b"UNAVAILABLE")
    if isinstance(exc, midb_errors.NoSuchAccount):
        return Done(Code.NO_MAILBOX_NOT_FOUND, status="NO")
    if isinstance(exc, midb_errors.MidbError):
        return Done(Code.NO_TRY_AGAIN, (str(exc),), status="NO", code=b"UNAVAILABLE")
    return None


def trycreate_folder(session: Any, mailbox: str) -> FolderInfo:
    """The folder named ``mailbox``, the target of an APPEND, COPY, MOVE or REPLACE; when there
    is none, CommandFailed with NO [TRYCREATE], which tells the client to create it and try
    again (RFC 3501 section 6.3.11)."""
    folder = session.store.get_folder(session.user, mailbox)
    if folder is None:
        # from None: after the store's NoSuchFolder (raise_trycreate_if_gone) this is the whole answer
        raise CommandFailed(Code.NO_MAILBOX_NOT_FOUND, code=b"TRYCREATE") from None
    return folder


def log_store_trouble(session: Any, command: str, exc: BaseException) -> None:
    """Log a store error the administrator must hear of (the disk or the index full, I/O and
    LMDB errors: error level; a passing condition such as a full reader table: warning). The
    client's NO [UNAVAILABLE] says "try again later": exactly these errors get it, so the answer
    decides; without this line nothing would tell the administrator that mail is refused."""
    done = done_for_store_error(exc)
    if done is None or done.code != b"UNAVAILABLE":  # the client's doing, or a bug (logged apart)
        return
    if isinstance(exc, midb_errors.FileUnavailable):
        # Its reader logged the error (errno and all) when the file became so, and AuthService
        # logs each login it fails ("unavailable"): an error line per login would flood the log.
        return
    level = logging.WARNING if type(exc) is midb_errors.StoreBusy else logging.ERROR
    session.ctx.log.log(level, "session %s: user=%s %s failed: %s", session.id,
                        escape_text(session.user or "-"), command, escape_text(str(exc)))
