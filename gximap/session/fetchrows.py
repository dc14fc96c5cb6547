"""FETCH of the items an index record alone answers (UID, FLAGS, MODSEQ), many messages at a time.

``UID FETCH 1:* (UID FLAGS)`` is how clients resynchronise a big folder; the general FETCH path
builds a MessageMeta, a list of pieces and a joined response per message. Here midb hands over
compact (uid, flags, modseq) rows (``Store.flag_rows``), each response is one ``%`` format of a
template compiled once per command, the rendered flag lists are cached per distinct flag tuple (a
folder holds few), and the responses of a batch go out as one chunk.

Only commands whose every item is one of :data:`RECORD_ITEMS` come here, and never ones that set
\\Seen. The output is byte for byte what gximap.session.commands.fetch renders for them.
"""

from __future__ import annotations

import bisect
from collections.abc import Generator, Iterable
from operator import itemgetter
from typing import Any

from gximap.session.selected import flag_atoms

__all__ = ["BATCH", "RECORD_ITEMS", "FlagFetch"]

RECORD_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})
BATCH = 4096  # rows read per store call; their responses are sent as one chunk

# Positions in the per-message value tuple (msn, uid, flags, modseq).
_MSN, _UID, _FLAGS, _MODSEQ = range(4)
_TEMPLATES = {"UID": (b"UID %d", _UID), "FLAGS": (b"FLAGS %s", _FLAGS), "MODSEQ": (b"MODSEQ (%d)", _MODSEQ)}


class FlagFetch:
    """Renders ``* n FETCH (...)`` for commands made of RECORD_ITEMS only.

    ``names`` are the item names in response order (a UID FETCH's leading UID included);
    ``recent`` the view's \\Recent UIDs, reported when ``show_recent`` (IMAP4rev1)."""

    def __init__(self, names: Iterable[str], *, recent: set[int], show_recent: bool) -> None:
        names = list(names)
        if not names or not RECORD_ITEMS.issuperset(names):
            raise ValueError(f"not a record-only FETCH: {names!r}")
        parts = [_TEMPLATES[name] for name in names]
        self._format = b"* %d FETCH (" + b" ".join(template for template, _ in parts) + b")\r\n"
        self._values = itemgetter(_MSN, *(position for _, position in parts))
        self._wants_flags = "FLAGS" in names
        self._wants_modseq = "MODSEQ" in names
        self._recent = recent if show_recent else set()
        # Rendered flag lists per flag tuple: without and with \\Recent.
        self._atoms: tuple[dict[tuple[str, ...], bytes], dict[tuple[str, ...], bytes]] = ({}, {})
        self.top_modseq = 0  # the highest MODSEQ sent

    def responses(self, session: Any, uids: list[int]) -> Generator[bytes, Any, bool]:
        """Yield the responses for ``uids`` (ascending, from the view) in chunks; return whether
        some of them are gone from the store (expunged by another session)."""
        view = session.selected
        store = session.store
        missing = False
        for start in range(0, len(uids), BATCH):
            wanted = uids[start : start + BATCH]
            rows = store.flag_rows(view.account, view.folder_id, wanted)
            if len(rows) != len(wanted):
                missing = True
            if rows:
                yield self._render(view.uids, rows)
        return missing

    def _render(self, view_uids: Any, rows: list[tuple[int, tuple[str, ...], int]]) -> bytes:
        fmt = self._format
        values = self._values
        plain, marked = self._atoms
        recent = self._recent
        wants_flags = self._wants_flags
        find = bisect.bisect_left
        count = len(view_uids)
        position = 0  # where the next row's UID is expected in the view
        top_modseq = self.top_modseq
        out = []
        append = out.append
        for uid, flags, modseq in rows:
            if position >= count or view_uids[position] != uid:
                position = find(view_uids, uid, position)
                if position >= count or view_uids[position] != uid:
                    continue  # not (or no longer) in the client's view
            rendered: bytes | None = None
            if wants_flags:
                if recent and uid in recent:
                    rendered = marked.get(flags)
                    if rendered is None:
                        rendered = marked[flags] = flag_atoms(flags, True)
                else:
                    rendered = plain.get(flags)
                    if rendered is None:
                        rendered = plain[flags] = flag_atoms(flags, False)
            if modseq > top_modseq:
                top_modseq = modseq
            position += 1
            append(fmt % values((position, uid, rendered, modseq)))
        if self._wants_modseq:
            self.top_modseq = top_modseq
        return b"".join(out)
