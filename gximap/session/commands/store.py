"""STORE and UID STORE (RFC 3501 / RFC 9051 section 6.4.6): FLAGS, +FLAGS, -FLAGS [.SILENT],
with CONDSTORE's UNCHANGEDSINCE modifier (RFC 7162 section 3.1.3).

The new flags of every message named are reported in untagged FETCH responses (with the UID for
UID STORE, and for IMAP4rev2 clients always, as the sync does) unless .SILENT was given. Either
way the view records the changes as its own, so the update sent after the command does not repeat
them; so a .SILENT STORE does report the FLAGS of a message another session had changed since the
client last heard (store_flags' ``prior`` MODSEQs tell), or that change would never reach it. Messages expunged by another session and not yet announced are left out; STORE without .SILENT then
completes with ``NO [EXPUNGEISSUED]`` as FETCH does (RFC 2180 section 4.2), UID STORE with OK (a
UID that no longer exists is no error).

Once the connection is CONDSTORE-aware every such FETCH response carries UID and MODSEQ, and a
.SILENT STORE still reports the new MODSEQ of the messages it changed (``* n FETCH (UID u MODSEQ
(m))``), so the client's next UNCHANGEDSINCE is not refused for its own change.

UNCHANGEDSINCE n: a message whose MODSEQ is above n is left alone and listed in the tagged
``OK [MODIFIED set]`` (message numbers, or UIDs for UID STORE), with a FETCH of its current FLAGS
and MODSEQ so the client can decide again; ``UNCHANGEDSINCE 0`` thus always fails. Every other
message gets a FETCH with its MODSEQ even with .SILENT. A message the client still sees but
another session expunged counts as modified (its expunge changed it).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap import encode
from gximap.imap.codes import Code
from gximap.session import condstore
from gximap.session.base import SELECTED, Await, CommandFailed, Done, command
from gximap.session.pieces import in_pieces
from gximap.session.searching import resolve_uids
from gximap.session.selected import fetch_line, flag_atoms

_MODES = {"": "set", "+": "add", "-": "remove"}


@command(cmds.Store, states=SELECTED, expunge_ok=False)
def store(session: Any, cmd: cmds.Store) -> Generator[bytes | Await, Any, Done]:
    view = session.selected
    uids = resolve_uids(session, cmd.seqset, cmd.uid)
    if view.readonly:
        raise CommandFailed(Code.NO_STORE_READ_ONLY, status="NO")
    since = cmd.unchangedsince
    if since is not None:
        yield from condstore.enable(session)
    if not uids:
        return Done(Code.OK_STORE)
    backend = session.store
    aware = condstore.enabled(session)
    quiet = cmd.silent and since is None and not aware   # nothing to report at all
    uidonly = session.uidonly
    with_uid = (cmd.uid or session.rev2 or aware) and not uidonly   # UIDFETCH leads with the UID
    show_recent = not session.rev2
    recent = view.recent
    modified: list[int] = []   # UIDs refused by UNCHANGEDSINCE or gone, in the order named
    gone: list[int] = []       # named messages no longer there

    def write(piece: Sequence[int]) -> tuple[list[Any], list[int], dict[int, int]]:
        prior: dict[int, int] = {}
        changed, failed = backend.store_flags(view.account, view.folder_id, piece, _MODES[cmd.mode], cmd.flags,
                                              unchanged_since=since, prior=prior if cmd.silent else None)
        return changed, failed, prior

    # Keywords the client was not told of: a new FLAGS goes before the first piece's responses
    # (also for .SILENT: the client learns of the keyword either way).
    unannounced = cmd.mode != "-" and not view.announced_keywords.issuperset(
        flag for flag in cmd.flags if not flag.startswith("\\"))

    def report(piece: Sequence[int], outcome: tuple[list[Any], list[int], dict[int, int]]) -> Iterator[bytes]:
        nonlocal unannounced
        changed, failed, prior = outcome
        # .SILENT: a message whose flags another session changed since the client last heard
        # gets its FLAGS all the same (RFC 3501 6.4.6); once noted as this session's own
        # change, the other one would never be reported.
        untold = {uid for uid, modseq in prior.items() if not view.knows_change(uid, modseq)}
        view.note_own_changes(changed)
        if unannounced and changed:
            unannounced = False
            yield from view.keywords_update()
        if quiet and not untold:
            return
        current = {meta.uid: meta for meta in changed}
        changed_uids = set(current)
        failed_uids = set(failed)
        if not cmd.silent or since is not None:
            # Messages whose state is reported although this STORE did not change them.
            unchanged = [uid for uid in piece if uid not in current]
            if unchanged:
                shown = backend.get_messages(view.account, view.folder_id, unchanged)
                if cmd.silent:
                    untold.update(meta.uid for meta in shown if not view.knows_change(meta.uid, meta.modseq))
                view.note_own_changes(meta for meta in shown if meta.modseq > view.modseq)
                for meta in shown:
                    current[meta.uid] = meta
        top_modseq = 0
        for uid in piece:
            meta = current.get(uid)
            if meta is None:
                gone.append(uid)
                if since is not None:
                    modified.append(uid)
                continue
            if uid in failed_uids:
                modified.append(uid)
            msn = view.msn_of(uid)
            if msn is None or quiet and uid not in untold:
                continue
            items: list[bytes] = []
            if with_uid:
                items.append(b"UID %d" % uid)
            if not cmd.silent or uid in failed_uids or uid in untold:
                items.append(b"FLAGS " + flag_atoms(meta.flags, show_recent and uid in recent))
            elif since is None and uid not in changed_uids:
                continue  # .SILENT, nothing changed: nothing to tell
            if aware:
                items.append(b"MODSEQ (%d)" % meta.modseq)
                top_modseq = max(top_modseq, meta.modseq)
            yield fetch_line(msn, uid, b" ".join(items), uidonly)
        view.note_fetch_modseq(top_modseq)

    # A STORE of many messages is written in pieces (gximap.session.pieces), each piece's FETCH
    # responses sent after its commit; a failure leaves the pieces before it done, as a STORE
    # interrupted by a disconnect would.
    yield from in_pieces(uids, write, report, progress=session.progress)
    if quiet:
        return Done(Code.OK_STORE)
    if since is not None:
        if modified:
            listed = modified if cmd.uid else [number for uid in modified if (number := view.msn_of(uid))]
            return Done(Code.OK_STORE_MODIFIED, code=b"MODIFIED " + encode.sequence_set(listed))
        return Done(Code.OK_STORE)
    if cmd.silent:
        return Done(Code.OK_STORE)
    if gone and not cmd.uid:
        return Done(Code.NO_EXPUNGE_ISSUED, status="NO")
    return Done(Code.OK_STORE)
