"""UIDONLY (RFC 9586): after ``ENABLE UIDONLY`` a session names messages by UID only.

Requests: a command that takes message sequence numbers is refused with ``BAD [UIDREQUIRED]``
(section 3) before it runs (``uses_message_numbers``, asked by the session for every command):
the non-UID FETCH, STORE, COPY, MOVE, SEARCH, SORT, THREAD and REPLACE, a search program with a
message-number set in a UID SEARCH/SORT/THREAD, and QRESYNC's message sequence match data in
SELECT/EXAMINE. The saved result ``$`` (SEARCHRES) holds UIDs, so it stays usable.

Responses: the places that write FETCH and EXPUNGE responses ask ``session.uidonly`` themselves
(there are few): flag updates and every FETCH response become ``* uid UIDFETCH (...)``
(``gximap.session.selected.fetch_line``, section 3.3), expunges are reported with ``* VANISHED``
as with QRESYNC (``SelectedMailbox.expunge_responses``), and SELECT leaves out ``[UNSEEN n]``,
a message number. ``* n EXISTS`` still counts the messages.
"""

from __future__ import annotations

from gximap.imap import commands as cmds

UIDONLY = "UIDONLY"

# Commands whose non-UID form names messages by sequence number.
_NUMBERED = (cmds.Fetch, cmds.Store, cmds.Copy, cmds.Move, cmds.Search, cmds.Sort, cmds.Thread, cmds.Replace)


def uses_message_numbers(cmd: cmds.Command) -> bool:
    """Does ``cmd`` use message sequence numbers anywhere (RFC 9586 section 3)?"""
    if isinstance(cmd, _NUMBERED) and not cmd.uid:
        return True
    if isinstance(cmd, cmds.Search):
        return search_uses_numbers(cmd.criteria)
    if isinstance(cmd, cmds.Sort | cmds.Thread):
        return search_uses_numbers(cmd.search)
    if isinstance(cmd, cmds.Select):
        return cmd.qresync is not None and cmd.qresync.seq_match is not None
    return False


def search_uses_numbers(key: cmds.SearchKey) -> bool:
    """Does a search program contain a message-number set (not ``UID set``, not ``$``)?"""
    return any(isinstance(node, cmds.SearchSequence) and not node.uid and not node.seqset.saved
               for node in cmds.search_nodes(key))
