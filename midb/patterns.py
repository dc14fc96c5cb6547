"""LIST-style name patterns (RFC 3501 6.3.8): ``*`` matches anything, ``%`` anything but the
hierarchy separator, and the INBOX component in any case. Used by gximap's LIST family and by
midb's folder-name expiry periods (imap_autoexpunge_folders, midb expire --folder)."""

from __future__ import annotations

import re
from collections.abc import Callable

from midb.folders import INBOX, SEPARATOR


def inbox_normalized(pattern: str) -> str:
    """Matching is case-sensitive except for the INBOX component (RFC 3501 5.1), which the
    parser and the store normalise to upper case; a pattern whose first component is a spelling
    of INBOX is normalised the same way."""
    head, sep, rest = pattern.partition(SEPARATOR)
    if head.isascii() and head.upper() == INBOX:  # ASCII case: the dotless "\u0131nbox" is not INBOX
        return INBOX + sep + rest
    return pattern


_WILDCARD_RUN = re.compile(r"[*%]{2,}")


def collapse_wildcards(pattern: str) -> str:
    """A run of wildcards matches what its widest member does: ``*`` if it holds one, else ``%``."""
    return _WILDCARD_RUN.sub(lambda run: "*" if "*" in run.group() else "%", pattern)


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """Whether a name matches the LIST pattern: ``*`` matches anything, ``%`` anything but the
    hierarchy separator (see inbox_normalized for case).

    Why not a regular expression: ``re`` backtracks, so a pattern of many wildcards takes time
    exponential in their number (``"*" * 40 + "x"`` took seconds, 5,000 of them forever), inside
    one C call that holds the interpreter lock: every session of the process stopped, and
    SIGTERM with them. The general case here is a bit-parallel NFA (nfa_matcher), linear in the name's
    length and in Python bytecode, which yields the lock as usual; the patterns clients send
    ("*", "%", "Archive/%", an exact name) take the short paths."""
    pattern = collapse_wildcards(inbox_normalized(pattern))
    cut = min((index for index in (pattern.find("*"), pattern.find("%")) if index >= 0), default=-1)
    if cut < 0:
        return pattern.__eq__
    head, rest = pattern[:cut], pattern[cut:]
    if rest == "*":
        return lambda name: name.startswith(head)
    if rest == "%":
        return lambda name: name.startswith(head) and SEPARATOR not in name[cut:]
    return nfa_matcher([pattern])


def nfa_matcher(patterns: list[str]) -> Callable[[str], bool]:
    """Whether a name matches any of ``patterns`` (collapsed, see collapse_wildcards), as one
    bit-parallel NFA: bit base+i is set when the first i characters of the pattern placed at
    ``base`` match the name read so far. Each pattern has its positions and one more for its
    accepting state, so a shift never carries one pattern's state into the next's: the
    accepting bit is neither a literal nor a wildcard, so it never moves on."""
    literals: dict[str, int] = {}
    star = percent = start = accept = 0
    base = 0
    for pattern in patterns:
        for position, char in enumerate(pattern, start=base):
            bit = 1 << position
            if char == "*":
                star |= bit
            elif char == "%":
                percent |= bit
            else:
                literals[char] = literals.get(char, 0) | bit
        start |= 1 << base
        accept |= 1 << (base + len(pattern))
        base += len(pattern) + 1
    wild = star | percent
    # A wildcard may match nothing: a state on one also stands on the next position. One shift
    # covers it, as no two wildcards are adjacent after collapse_wildcards.
    start |= (start & wild) << 1

    def matches(name: str) -> bool:
        states = start
        for char in name:
            states = ((states & literals.get(char, 0)) << 1) | (states & (star if char == SEPARATOR else wild))
            states |= (states & wild) << 1
            if not states:
                return False
        return bool(states & accept)

    return matches
