"""Which capabilities a session advertises, given TLS, state and configuration.

Only what works is advertised: an extension is added here in the same change that implements it.
"""

from __future__ import annotations

from typing import Any

from gximap.session.base import State

# Extensions every authenticated session offers (implemented in gximap/session/commands).
AUTHENTICATED_EXTENSIONS = (
    "LITERAL+",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",  # RFC 6154 section 3: CREATE ... (USE (...)), gximap/session/commands/mailbox.py
    "XLIST",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "STATUS=SIZE",
    "ESEARCH",
    "SEARCHRES",
    "PARTIAL",  # RFC 9394: SEARCH/SORT RETURN (PARTIAL m:n), FETCH (PARTIAL m:n), gximap/session/commands/search.py
    "WITHIN",  # RFC 5032: SEARCH OLDER / YOUNGER
    "SAVEDATE",  # RFC 8514: FETCH SAVEDATE, SEARCH SAVEDBEFORE/SAVEDON/SAVEDSINCE (midb.savedates)
    "PREVIEW",  # RFC 8970: FETCH PREVIEW (midb.preview)
    "OBJECTID",  # RFC 8474: MAILBOXID, EMAILID, THREADID (midb.objectids)
    "MULTIAPPEND",
    "REPLACE",  # RFC 8508: REPLACE, UID REPLACE (gximap/session/commands/replace.py)
    "CATENATE",  # RFC 4469: APPEND/REPLACE ... CATENATE (TEXT/URL), gximap/session/commands/append.py
    "BINARY",
    "UNAUTHENTICATE",
    "CONDSTORE",  # RFC 7162, gximap/session/condstore.py
    "QRESYNC",
    "UIDONLY",  # RFC 9586: gximap/session/uidonly.py
    "SORT",
    "SORT=DISPLAY",
    "ESORT",
    "CONTEXT=SEARCH",  # RFC 5267 section 4: RETURN (UPDATE), CANCELUPDATE (gximap/session/searchcontext.py)
    "CONTEXT=SORT",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "UTF8=ACCEPT",  # RFC 6855; never UTF8=ONLY: mailboxes and strings still work without UTF-8
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "QUOTA=RES-MESSAGE",
    "QUOTA=RES-MAILBOX",
    "QUOTA=RES-ANNOTATION-STORAGE",
    "METADATA",
    "METADATA-SERVER",
    "NOTIFY",  # RFC 5465: gximap/session/notify.py
    "INPROGRESS",  # RFC 9585: untagged OK [INPROGRESS ...] during long commands (gximap/session/progress.py)
)


def plaintext_auth_allowed(session: Any) -> bool:
    """May the client send a password on this connection now? Yes under TLS, ours or the one a
    trusted proxy terminated for it (ConnectionInfo.client_tls, as Dovecot takes
    send-proxy-v2-ssl)."""
    if session.tls or session.conn.client_tls:
        return True
    settings = session.settings
    return not settings.force_tls and settings.insecure_auth


def append_limit(session: Any) -> int:
    """RFC 7889: the largest message APPEND accepts. It is the same for every mailbox (the
    literal limit, which the framer enforces before the client sends a byte), so STATUS
    APPENDLIMIT reports this too; midb's own per-message limit, when set, can only lower it."""
    limit = session.settings.max_literal
    store_limit = getattr(session.store, "max_message_size", 0)
    return min(limit, store_limit) if store_limit else limit


def may_set_quota(session: Any) -> bool:
    """RFC 9208 SETQUOTA: only for the accounts named by imap_quota_admins (the actor, when an
    admin works on another account as admin!user)."""
    admins = session.settings.quota_admins
    identity = session.actor or session.user
    if not admins or identity is None:
        return False
    lowered = identity.lower()
    return any(admin.lower() == lowered for admin in admins)


def capabilities(session: Any) -> list[str]:
    settings = session.settings
    caps = ["IMAP4rev1"]
    if settings.rfc9051:
        caps.append("IMAP4rev2")
    if session.state is State.NOT_AUTHENTICATED:
        caps += ["SASL-IR", "LITERAL+", "ENABLE"]
        if settings.enable_id:
            caps.append("ID")
        # Never beneath DEFLATE (commands.auth), which UNAUTHENTICATE ends (RFC 8437 section 4.1).
        if session.conn.starttls_available and not session.tls and not session.compressed:
            caps.append("STARTTLS")
        if plaintext_auth_allowed(session):
            # SCRAM under the same rule as PLAIN: without TLS the session after it can be read
            # and taken over (gximap.session.commands.auth). No -PLUS: no channel binding.
            if settings.sasl_scram:
                caps.append("AUTH=SCRAM-SHA-256")
            caps.append("AUTH=PLAIN")
            if settings.sasl_login:
                caps.append("AUTH=LOGIN")
        else:
            caps.append("LOGINDISABLED")
        return caps
    caps += AUTHENTICATED_EXTENSIONS
    if not session.compressed:
        caps.append("COMPRESS=DEFLATE")  # RFC 4978: once only, so not offered again once active
    if may_set_quota(session):
        caps.append("QUOTASET")
    if settings.enable_id:
        caps.append("ID")
    caps.append(f"APPENDLIMIT={append_limit(session)}")
    return caps
