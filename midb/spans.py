"""Gromox's time-span syntax (``1min``, ``3h30min``, ``1d``), shared by gximap's configuration
and the ``midb`` tool (which reads some of the same directives, and never imports gximap)."""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["parse_timespan"]

_TIME_UNITS: dict[str, Decimal] = {}
for _names, _seconds in (
    (("ms", "msec"), Decimal("0.001")),
    (("", "s", "sec", "second", "seconds"), Decimal(1)),
    (("min", "minute", "minutes"), Decimal(60)),
    (("h", "hour", "hours"), Decimal(3600)),
    (("d", "day", "days"), Decimal(86400)),
    (("week", "weeks"), Decimal(7 * 86400)),
):
    for _unit in _names:
        _TIME_UNITS[_unit] = _seconds
_QUANTUM_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)", re.IGNORECASE)


def parse_timespan(text: str) -> float:
    """``1d1h1min1s`` → 90061.0, ``3.5 hours`` → 12600.0, ``3h 30min`` → 12600.0, ``90`` → 90.0.
    Raises ValueError saying what is wrong."""
    pos, end = 0, len(text.rstrip())
    total = Decimal(0)
    if not text.strip():
        raise ValueError("empty duration")
    while pos < end:
        match = _QUANTUM_RE.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"{text!r} is not a duration (e.g. 90, 30min, 1h30min, 3.5 hours)")
        unit = match.group(2).lower()
        if unit not in _TIME_UNITS:
            raise ValueError(f"{text!r}: unknown time unit {match.group(2)!r} (ms, s, min, h, d, week)")
        total += Decimal(match.group(1)) * _TIME_UNITS[unit]
        pos = match.end()
    return float(total)
