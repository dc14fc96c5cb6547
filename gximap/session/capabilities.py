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
    "XLIST",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "STATUS=SIZE",
    "ESEARCH",
    "SEARCHRES",
    "MULTIAPPEND",
    "BINARY",
    "UNAUTHENTICATE",
)


def plaintext_auth_allowed(session: Any) -> bool:
    """May the client send a password on this connection now?"""
    if session.tls:
        return True
    settings = session.settings
    return not settings.force_tls and settings.insecure_auth


def capabilities(session: Any) -> list[str]:
    settings = session.settings
    caps = ["IMAP4rev1"]
    if settings.rfc9051:
        caps.append("IMAP4rev2")
    if session.state is State.NOT_AUTHENTICATED:
        caps += ["SASL-IR", "LITERAL+", "ENABLE"]
        if settings.enable_id:
            caps.append("ID")
        if session.conn.starttls_available and not session.tls:
            caps.append("STARTTLS")
        if plaintext_auth_allowed(session):
            caps.append("AUTH=PLAIN")
            if settings.sasl_login:
                caps.append("AUTH=LOGIN")
        else:
            caps.append("LOGINDISABLED")
        return caps
    caps += AUTHENTICATED_EXTENSIONS
    if settings.enable_id:
        caps.append("ID")
    caps.append(f"APPENDLIMIT={settings.max_literal}")
    return caps
