"""Which mailboxes LIST, LSUB and XLIST return, and with which attributes (RFC 3501 6.3.8/6.3.9,
RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE, RFC 3348/5258 CHILDREN).

Pure functions over the store's folder list and subscription list, so the rules can be tested
without a session. midb creates missing parents with every folder, so an existing folder's
ancestors always exist; only subscriptions can name mailboxes that do not exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

SEPARATOR = "/"
INBOX = "INBOX"

# RFC 6154 attributes that name a real folder. \All and \Flagged describe virtual mailboxes that
# collect messages from elsewhere: a plain folder must not claim them.
CREATABLE_SPECIAL_USE = frozenset({"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"})

# XLIST (the pre-RFC 6154 Gmail extension) spells some attributes differently.
_XLIST_NAMES = {"\\Junk": "\\Spam", "\\All": "\\AllMail", "\\Flagged": "\\Starred"}


@dataclass(frozen=True, slots=True)
class ListEntry:
    name: str
    attributes: tuple[str, ...]
    folder: Any | None  # midb FolderInfo; None for a name that does not exist
    childinfo: bool = False  # RECURSIVEMATCH: some descendant meets the selection criteria


def canonical_pattern(reference: str, pattern: str) -> str:
    """RFC 3501 6.3.8: the reference is prefixed unless the pattern is absolute."""
    if pattern.startswith(SEPARATOR):
        return pattern
    return reference + pattern


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``*`` matches anything, ``%`` anything but the hierarchy separator. Matching is
    case-sensitive except for the INBOX component (RFC 3501 5.1), which the parser and the
    store normalise to upper case; a pattern whose first component is a spelling of INBOX is
    normalised the same way."""
    head, sep, rest = pattern.partition(SEPARATOR)
    if head.upper() == INBOX:
        pattern = INBOX + sep + rest
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


class _Matcher:
    def __init__(self, patterns: Iterable[str]) -> None:
        self._regexes = [compile_pattern(pattern) for pattern in patterns]

    def __call__(self, name: str) -> bool:
        return any(regex.fullmatch(name) for regex in self._regexes)


def ancestors(name: str) -> list[str]:
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:depth]) for depth in range(1, len(parts))]


def _sort_key(name: str) -> tuple[int, str]:
    return (0 if name == INBOX else 1, name)


def _parents_with_children(names: Iterable[str]) -> set[str]:
    parents: set[str] = set()
    for name in names:
        parents.update(ancestors(name))
    return parents


def children_attribute(name: str, has_children: set[str]) -> str:
    return "\\HasChildren" if name in has_children else "\\HasNoChildren"


def list_mailboxes(folders: Sequence[Any], subscriptions: Iterable[str], patterns: Iterable[str], *,
                   select_subscribed: bool = False, select_special_use: bool = False,
                   recursive_match: bool = False, return_subscribed: bool = False) -> list[ListEntry]:
    """The LIST answer (basic or extended) for canonical patterns (reference already applied).

    Attributes, in this order: ``\\Subscribed`` (when selected or asked for), ``\\NonExistent``,
    the special-use attribute, and ``\\HasChildren``/``\\HasNoChildren`` for existing mailboxes
    (always sent: RFC 5258 allows it and clients rely on it)."""
    matches = _Matcher(patterns)
    by_name = {folder.name: folder for folder in folders}
    subscribed = set(subscriptions)
    has_children = _parents_with_children(by_name)
    show_subscribed = return_subscribed or select_subscribed

    def meets_criteria(name: str) -> bool:
        folder = by_name.get(name)
        if select_subscribed and name not in subscribed:
            return False
        if select_special_use and (folder is None or folder.special_use is None):
            return False
        return select_subscribed or folder is not None

    candidates = subscribed if select_subscribed else by_name.keys()
    selected = {name for name in candidates if meets_criteria(name)}
    with_childinfo: set[str] = set()
    if recursive_match:
        with_childinfo = {parent for name in selected for parent in ancestors(name) if matches(parent)}
    listed = {name for name in selected if matches(name)} | with_childinfo
    entries = []
    for name in sorted(listed, key=_sort_key):
        folder = by_name.get(name)
        attributes: list[str] = []
        if show_subscribed and name in subscribed:
            attributes.append("\\Subscribed")
        if folder is None:
            attributes.append("\\NonExistent")
        if folder is not None:
            if folder.special_use is not None:
                attributes.append(folder.special_use)
            attributes.append(children_attribute(name, has_children))
        entries.append(ListEntry(name, tuple(attributes), folder, name in with_childinfo))
    return entries


def lsub_mailboxes(folders: Sequence[Any], subscriptions: Iterable[str], pattern: str) -> list[ListEntry]:
    """RFC 3501 6.3.9. A subscribed name that does not exist is not selectable: ``\\Noselect``.
    When a pattern (typically ending in ``%``) matches the unsubscribed parent of a subscribed
    name that it does not match itself, the parent is returned with ``\\Noselect``."""
    matches = _Matcher([pattern])
    existing = {folder.name for folder in folders}
    subscribed = set(subscriptions)
    out: dict[str, tuple[str, ...]] = {}
    for name in subscribed:
        if matches(name):
            out[name] = () if name in existing else ("\\Noselect",)
            continue
        for parent in ancestors(name):
            if parent not in subscribed and parent not in out and matches(parent):
                out[parent] = ("\\Noselect",)
    return [ListEntry(name, out[name], None) for name in sorted(out, key=_sort_key)]


def xlist_mailboxes(folders: Sequence[Any], pattern: str) -> list[ListEntry]:
    """XLIST: LIST with the Gmail spellings of the special-use attributes and ``\\Inbox``."""
    matches = _Matcher([pattern])
    by_name = {folder.name: folder for folder in folders}
    has_children = _parents_with_children(by_name)
    entries = []
    for name in sorted(by_name, key=_sort_key):
        if not matches(name):
            continue
        folder = by_name[name]
        attributes = [children_attribute(name, has_children)]
        if name == INBOX:
            attributes.append("\\Inbox")
        elif folder.special_use is not None:
            attributes.append(_XLIST_NAMES.get(folder.special_use, folder.special_use))
        entries.append(ListEntry(name, tuple(attributes), folder))
    return entries


def folder_attributes(folder: Any, folders: Sequence[Any]) -> tuple[str, ...]:
    """The LIST attributes of one existing folder (the ``* LIST`` that IMAP4rev2's SELECT sends)."""
    prefix = folder.name + SEPARATOR
    attributes = [folder.special_use] if folder.special_use is not None else []
    has_children = any(other.name.startswith(prefix) for other in folders)
    attributes.append("\\HasChildren" if has_children else "\\HasNoChildren")
    return tuple(attributes)
