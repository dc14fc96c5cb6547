"""IMAP command handlers, one module per command family. Importing a module registers its
handlers in gximap.session.base.REGISTRY."""

from __future__ import annotations

import importlib

MODULES = (
    "any",  # CAPABILITY NOOP LOGOUT ID ENABLE
    "auth",  # STARTTLS LOGIN AUTHENTICATE UNAUTHENTICATE
    "mailbox",  # CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB XLIST NAMESPACE STATUS
    "select",  # SELECT EXAMINE CHECK CLOSE UNSELECT IDLE
    "fetch",  # FETCH, UID FETCH
    "search",  # SEARCH, UID SEARCH
    "store",  # STORE, UID STORE
    "copy_move",  # COPY MOVE and UID forms
    "append",  # APPEND (MULTIAPPEND)
    "replace",  # REPLACE, UID REPLACE (RFC 8508)
    "expunge",  # EXPUNGE, UID EXPUNGE
    "sort",  # SORT, UID SORT (RFC 5256, RFC 5957, ESORT RFC 5267)
    "thread",  # THREAD, UID THREAD (RFC 5256)
    "compress",  # COMPRESS (RFC 4978)
    "quota",  # GETQUOTA GETQUOTAROOT SETQUOTA (RFC 9208)
    "metadata",  # GETMETADATA SETMETADATA (RFC 5464)
)

_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
    _loaded = True
