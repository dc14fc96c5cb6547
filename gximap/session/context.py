"""State shared by all IMAP sessions of one server process.

Settings that SIGHUP may change live in an immutable :class:`Settings` that is replaced as a
whole, so a session always sees one consistent set without locking.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gximap.imap.codes import ResponseCodes
from gximap.session.sorting import SortColumns
from gximap.session.userlimit import UserSessions
from midb.expiry import ExpiryThrottle

if TYPE_CHECKING:
    from gximap.auth.service import AuthService


@dataclass(frozen=True, slots=True)
class Settings:
    host_id: str = "localhost"
    rfc9051: bool = True
    enable_id: bool = False
    force_tls: bool = False
    insecure_auth: bool = False  # plaintext authentication allowed without TLS
    sasl_login: bool = False
    sasl_scram: bool = False  # AUTHENTICATE SCRAM-SHA-256 (imap_sasl_scram)
    max_line: int = 64 * 1024
    max_literal: int = 64 * 1024 * 1024
    # Where literals of SPOOL_THRESHOLD octets or more wait while they arrive (gximap.session.
    # literalspool; the daemon gives midb_path); "": in memory.
    literal_spool_dir: str = ""
    max_nesting: int = 16
    max_args: int = 4096
    max_ranges: int = 65536  # elements of one sequence set (imap_max_ranges)
    max_bad_commands: int = 20
    # Logged-in sessions of one account from one address (imap_max_conn_per_user_ip); 0: no limit.
    max_conn_per_user_ip: int = 10
    conn_timeout: float = 180.0
    login_timeout: float = 180.0  # from connecting to logging in, whatever the client sends; 0: none
    autologout: float = 1800.0
    idle_notify_interval: float = 120.0  # "* OK Still here" in IDLE after that much silence; 0: never
    default_lang: str = "en"
    version: str = ""
    quota_admins: tuple[str, ...] = ()  # accounts that may use SETQUOTA (RFC 9208)
    metadata_max_entries: int = 100  # RFC 5464 annotations per mailbox (and per user on the server)
    metadata_max_size: int = 64 * 1024  # octets per annotation value
    sort_cache_size: int = 64 << 20  # bytes of SORT/THREAD values kept (imap_sort_cache_size)
    metadata_comment: str = ""  # the /shared/comment server annotation
    metadata_admin: str = ""  # the /shared/admin server annotation
    default_mailbox_quota: int = 10000  # RFC 9208 MAILBOX limit of accounts without their own; 0: none
    default_annotation_quota: int = 1 << 20  # ANNOTATION-STORAGE octets, likewise
    # (special use, seconds): a folder's messages go once saved there that long ago, checked when
    # its account logs in or receives mail (imap_autoexpunge_trash, imap_autoexpunge_junk;
    # gximap.expiring).
    autoexpunge: tuple[tuple[str, float], ...] = ()
    # imap_filter_command or lmtp_spam_header is set: deliveries may be filed into any folder, or
    # quarantined into \\Junk, so NOTIFY's INBOXES filter is PERSONAL (RFC 5465 section 6.3).
    delivery_filters: bool = False


@dataclass
class ServerContext:
    """Everything a session needs from the process: settings, the store, authentication."""

    settings: Settings
    store: Any  # midb.store.Store
    auth: AuthService
    codes: ResponseCodes
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("gximap.imap"))
    sort_columns: SortColumns = field(default_factory=SortColumns)  # SORT / THREAD values by folder
    expiry: ExpiryThrottle = field(default_factory=ExpiryThrottle)  # accounts expired lately (autoexpunge)
    # Logged-in sessions per account and address (imap_max_conn_per_user_ip), with the siblings'.
    user_sessions: UserSessions = field(default_factory=UserSessions)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_session_id(self) -> str:
        with self._lock:
            return str(next(self._ids))  # decimal: "conn=10" is the tenth, as the man page shows

    def __post_init__(self) -> None:
        self.sort_columns.resize(self.settings.sort_cache_size)

    def reload(self, settings: Settings) -> None:
        self.settings = settings
        self.sort_columns.resize(settings.sort_cache_size)
