"""Commands valid in any state (CAPABILITY, NOOP, LOGOUT, ID) and ENABLE (RFC 5161).

COMPRESS (RFC 4978) lives in compress.py.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from gximap import __version__
from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.net.handler import TransportAction
from gximap.session.base import ANY_STATE, AUTHENTICATED, CommandFailed, Done, State, command

# What ENABLE accepts (upper-cased as the parser delivers them) -> the spelling we answer with.
_ENABLE_SPELLING = {"IMAP4REV2": "IMAP4rev2", "UTF8=ACCEPT": "UTF8=ACCEPT", "CONDSTORE": "CONDSTORE",
                    "QRESYNC": "QRESYNC", "UIDONLY": "UIDONLY"}

SERVER_NAME = "gximap"


@command(cmds.Capability, states=ANY_STATE)
def capability(session: Any, cmd: cmds.Capability) -> Generator[bytes, Any, Done]:
    yield b"* CAPABILITY " + " ".join(session.capability_list()).encode("ascii") + b"\r\n"
    return Done(Code.OK_CAPABILITY)


@command(cmds.Noop, states=ANY_STATE)
def noop(session: Any, cmd: cmds.Noop) -> Done:
    # The pending mailbox updates are what NOOP is for; the session appends them to every Done.
    return Done(Code.OK_NOOP)


@command(cmds.Logout, states=ANY_STATE)
def logout(session: Any, cmd: cmds.Logout) -> Generator[bytes, Any, Done]:
    session.state = State.LOGOUT
    yield b"* BYE " + session.text(Code.BYE_LOGOUT, session.settings.host_id) + b"\r\n"
    # No mailbox updates after BYE: the client is leaving.
    return Done(Code.OK_LOGOUT, sync=False, after=TransportAction.CLOSE)


@command(cmds.Id, states=ANY_STATE)
def id_command(session: Any, cmd: cmds.Id) -> Generator[bytes, Any, Done]:
    """RFC 2971. Offered only with enable_rfc2971_commands (Gromox): otherwise unknown."""
    if not session.settings.enable_id:
        raise CommandFailed(Code.BAD_UNKNOWN_COMMAND, status="BAD")
    session.client_id = dict(cmd.params) if cmd.params is not None else None
    if session.client_id:
        session.ctx.log.info("session %s: client id %s", session.id,
                             " ".join(f"{key}={value!r}" for key, value in session.client_id.items()))
    version = session.settings.version or __version__
    fields = [encode.string(b"name"), encode.string(SERVER_NAME.encode()),
              encode.string(b"version"), encode.string(version.encode("utf-8"))]
    yield b"* ID " + encode.paren_list(fields) + b"\r\n"
    return Done(Code.OK_ID)


@command(cmds.Enable, states=AUTHENTICATED)
def enable(session: Any, cmd: cmds.Enable) -> Generator[bytes, Any, Done]:
    """RFC 5161: valid in the authenticated state only, before a mailbox is selected. The
    ENABLED response lists what this command newly enabled; unknown names are ignored."""
    if session.state is not State.AUTHENTICATED:
        raise CommandFailed(Code.BAD_WRONG_STATE, status="BAD")
    before = session.enabled
    newly: list[str] = []
    added: list[str] = []  # the keys newly enabled
    for name in cmd.capabilities:
        key = name.upper()
        spelling = _ENABLE_SPELLING.get(key)
        if spelling is None or key in before or spelling in newly:
            continue
        if key == "IMAP4REV2" and not session.settings.rfc9051:
            continue
        newly.append(spelling)
        if key == "QRESYNC":
            # RFC 7162 section 3.2.3: QRESYNC implies CONDSTORE, which ``ENABLE QRESYNC
            # CONDSTORE`` then lists too: this command enabled it.
            added.append("CONDSTORE")
        added.append(key)
    session.enabled = before.union(added)
    yield b"* ENABLED" + b"".join(b" " + name.encode("ascii") for name in newly) + b"\r\n"
    return Done(Code.OK_ENABLE)
