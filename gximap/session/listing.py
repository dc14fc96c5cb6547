"""Which mailboxes LIST, LSUB and XLIST return, and with which attributes (RFC 3501 6.3.8/6.3.9,
RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE, RFC 3348/5258 CHILDREN).

Pure functions over the store's folder list and subscription list, so the rules can be tested
without a session. midb creates missing parents with every folder, so an existing folder's
ancestors always exist; only subscriptions can name mailboxes that do not exist.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from midb.folders import INBOX, SEPARATOR
from midb.patterns import collapse_wildcards, compile_pattern, inbox_normalized, nfa_matcher

# compile_pattern, INBOX and SEPARATOR are used through this module too (midb.patterns has the
# matching: midb's expiry periods name folders the same way).
__all__ = ["INBOX", "SEPARATOR", "canonical_pattern", "compile_pattern", "literal_prefix"]

# RFC 6154 attributes that name a real folder. \All and \Flagged describe virtual mailboxes that
# collect messages from elsewhere: a plain folder must not claim them.
CREATABLE_SPECIAL_USE = frozenset({"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"})

# XLIST (the pre-RFC 6154 Gmail extension) spells some attributes differently.
_XLIST_NAMES = {"\\Junk": "\\Spam", "\\All": "\\AllMail", "\\Flagged": "\\Starred"}


class ListEntry(NamedTuple):
    """One line of a LIST answer (a tuple: a listing makes one per folder)."""

    name: str
    attributes: tuple[str, ...]
    folder: Any | None  # midb FolderEntry; None for a name that does not exist
    childinfo: bool = False  # RECURSIVEMATCH: some descendant meets the selection criteria
    # Whether the name meets the selection criteria itself: False for a parent listed only for
    # its CHILDINFO, which gets no STATUS (RFC 5819 section 2 and its example A02).
    meets_criteria: bool = True


def canonical_pattern(reference: str, pattern: str) -> str:
    """RFC 3501 6.3.8: the reference is prefixed unless the pattern is absolute."""
    if pattern.startswith(SEPARATOR):
        return pattern
    return reference + pattern


def literal_prefix(patterns: Iterable[str]) -> str:
    """What every name the patterns can match starts with: the text before the first wildcard,
    common to all of them. The store reads only the folders and subscriptions in that range
    (Store.folder_entries): ``LIST "" Archive/%`` or one name need not read a whole tree.

    The rules below only ever look at names within it: a listed name's children, and the
    matching parents that LSUB and RECURSIVEMATCH add for a name, start with the same text."""
    prefixes = []
    for pattern in patterns:
        pattern = inbox_normalized(pattern)
        cut = min((index for index in (pattern.find("*"), pattern.find("%")) if index >= 0), default=len(pattern))
        prefixes.append(pattern[:cut])
    return os.path.commonprefix(prefixes) if prefixes else ""


def _matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Whether a name matches any of the patterns. It runs once per folder: several patterns
    (LIST-EXTENDED) become one set of exact names and one NFA, not a matcher each."""
    unique = list(dict.fromkeys(collapse_wildcards(inbox_normalized(pattern)) for pattern in patterns))
    if not unique:
        return lambda name: False
    if len(unique) == 1:
        return compile_pattern(unique[0])
    exact = frozenset(pattern for pattern in unique if "*" not in pattern and "%" not in pattern)
    wildcards = [pattern for pattern in unique if pattern not in exact]
    if not wildcards:
        return exact.__contains__
    if "*" in wildcards:
        return lambda name: True
    nfa = nfa_matcher(wildcards)
    return lambda name: name in exact or nfa(name)


def ancestors(name: str) -> list[str]:
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:depth]) for depth in range(1, len(parts))]


def _listing_order(names: Iterable[str]) -> list[str]:
    """INBOX first, then code point order."""
    ordered = sorted(names)
    if INBOX in ordered:
        ordered.remove(INBOX)
        ordered.insert(0, INBOX)
    return ordered


def _parents_with_children(names: Iterable[str]) -> set[str]:
    """The names with a folder below them. midb creates a folder's missing parents with it and
    refuses to delete a folder with children, so every existing folder's parent exists: the
    immediate parents of the names are all of them ("" stands for the root)."""
    return {name.rpartition(SEPARATOR)[0] for name in names}


HAS_CHILDREN = "\\HasChildren"
HAS_NO_CHILDREN = "\\HasNoChildren"
SUBSCRIBED = "\\Subscribed"
NONEXISTENT = "\\NonExistent"
_NONEXISTENT = (NONEXISTENT,)
_NONEXISTENT_SUBSCRIBED = (SUBSCRIBED, NONEXISTENT)


def children_attribute(name: str, has_children: set[str]) -> str:
    return HAS_CHILDREN if name in has_children else HAS_NO_CHILDREN


def list_mailboxes(folders: Sequence[Any], subscriptions: Iterable[str], patterns: Iterable[str], *,
                   select_subscribed: bool = False, select_special_use: bool = False,
                   recursive_match: bool = False, return_subscribed: bool = False) -> list[ListEntry]:
    """The LIST answer (basic or extended) for canonical patterns (reference already applied).

    Attributes, in this order: ``\\Subscribed`` (when selected or asked for), ``\\NonExistent``,
    the special-use attribute, and ``\\HasChildren``/``\\HasNoChildren`` for existing mailboxes
    (always sent: RFC 5258 allows it and clients rely on it)."""
    matches = _matcher(patterns)
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

    if select_subscribed or select_special_use:
        candidates = subscribed if select_subscribed else by_name.keys()
        selected = {name for name in candidates if meets_criteria(name)}
    else:  # a plain LIST: every existing folder (the common case, spared a call per folder)
        selected = set(by_name)
    returned = set(filter(matches, selected))
    with_childinfo: set[str] = set()
    if recursive_match:
        # RFC 5258 3.5: CHILDINFO only for a child that meets the criteria and is not returned
        # itself (with "*" every one is: no CHILDINFO, and no parent listed for it).
        with_childinfo = {parent for name in selected - returned for parent in ancestors(name) if matches(parent)}
    listed = returned | with_childinfo
    entries: list[ListEntry] = []
    append = entries.append
    make = tuple.__new__  # ListEntry's own __new__ is a Python function; this loop runs per folder
    for name in _listing_order(listed):
        folder = by_name.get(name)
        attributes: tuple[str, ...]
        if folder is None:
            attributes = _NONEXISTENT_SUBSCRIBED if show_subscribed and name in subscribed else _NONEXISTENT
        else:
            children = HAS_CHILDREN if name in has_children else HAS_NO_CHILDREN
            special = folder.special_use
            if show_subscribed and name in subscribed:
                attributes = (SUBSCRIBED, special, children) if special is not None else (SUBSCRIBED, children)
            else:
                attributes = (special, children) if special is not None else (children,)
        append(make(ListEntry, (name, attributes, folder, name in with_childinfo, name in returned)))
    return entries


def lsub_mailboxes(folder_names: Iterable[str], subscriptions: Iterable[str], pattern: str) -> list[ListEntry]:
    """RFC 3501 6.3.9. A subscribed name that does not exist is not selectable: ``\\Noselect``.
    When a pattern ending in ``%`` matches the unsubscribed parent of a subscribed name that it
    does not match itself (the ``%`` stopped at the delimiter), the parent is returned with
    ``\\Noselect``. Without that ``%`` it is not: ``LSUB "" foo`` with only foo/bar subscribed
    answers nothing, as Dovecot does."""
    matches = _matcher([pattern])
    existing = set(folder_names)
    subscribed = set(subscriptions)
    truncating = pattern.endswith("%")
    out: dict[str, tuple[str, ...]] = {}
    for name in subscribed:
        if matches(name):
            out[name] = () if name in existing else ("\\Noselect",)
            continue
        if not truncating:
            continue
        for parent in ancestors(name):
            if parent not in subscribed and parent not in out and matches(parent):
                out[parent] = ("\\Noselect",)
    make = tuple.__new__  # as in list_mailboxes
    return [make(ListEntry, (name, out[name], None, False, True)) for name in _listing_order(out)]


def xlist_mailboxes(folders: Sequence[Any], pattern: str) -> list[ListEntry]:
    """XLIST: LIST with the Gmail spellings of the special-use attributes and ``\\Inbox``."""
    matches = _matcher([pattern])
    by_name = {folder.name: folder for folder in folders}
    has_children = _parents_with_children(by_name)
    entries = []
    for name in _listing_order(by_name):
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


def folder_attributes(folder: Any, has_children: bool) -> tuple[str, ...]:
    """The LIST attributes of one existing folder (the ``* LIST`` that IMAP4rev2's SELECT sends)."""
    attributes = [folder.special_use] if folder.special_use is not None else []
    attributes.append("\\HasChildren" if has_children else "\\HasNoChildren")
    return tuple(attributes)
