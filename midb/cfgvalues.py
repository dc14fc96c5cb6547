"""The value syntax of Gromox-style configuration directives (booleans, integers, sizes, time
spans, paths, enumerations), shared by gximap's configuration (gximap.config) and the ``midb``
tool, which reads the midb directives of the same file and never imports gximap.

Errors are ValueError with a message saying what is wrong with the value; the caller adds the
file, line and directive (``FILE:LINE: directive: why``). The file syntax itself (``key = value``
lines, comments, UTF-8) is read here too (read_config_lines, directive_lines), so that the tool
refuses a malformed line where gximap would, with the same ConfigError.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from midb.expiry import PERIOD_DIRECTIVES
from midb.shards import MAX_COUNT
from midb.spans import parse_timespan

__all__ = ["DEFAULT_CONFIG_FILES", "FILE_DIRECTIVE", "MIDB_SYNTAX", "ConfigError", "Kind", "Scalar", "Syntax",
           "directive_lines", "format_bound", "parse_bool", "parse_int", "parse_size", "parse_timespan",
           "parse_value", "read_config_lines"]

# The kinds parsed here; gximap's "str" and "list" directives take their text as it is.
Kind = Literal["bool", "int", "size", "timespan", "enum", "path"]
Scalar = bool | int | float | str | None

_TRUE = frozenset({"yes", "on", "true", "1"})
_FALSE = frozenset({"no", "off", "false", "0"})


def parse_bool(text: str) -> bool:
    """yes/no, on/off, true/false, 1/0, in any case."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (yes/no, on/off, true/false, 1/0)")


_INT_RE = re.compile(r"[+-]?[0-9]+")


def parse_int(text: str) -> int:
    """A decimal integer with an optional sign (ASCII digits only: no ``1_000``, no ``0x10``)."""
    word = text.strip()
    if not _INT_RE.fullmatch(word):
        raise ValueError(f"{text!r} is not an integer")
    return int(word)


_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kmgt]?)b?", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``64K`` → 65536, ``1.5M`` → 1572864, ``8GB`` → 8589934592 (powers of 1024, fractions of a
    byte truncated); not ``8GiB``, which Gromox does not take either."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (a number with optional k/M/G/T suffix)")
    number = Decimal(match.group(1))  # exact, so 1.1M is not off by a float rounding
    return int(number * _SIZE_FACTORS[match.group(2).lower()])


def _format_number(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(number)


def format_bound(kind: str, bound: float) -> str:
    """A minimum or maximum as the directive's kind writes it: ``1M``, ``3600s``, ``256``."""
    if kind == "timespan":
        return f"{_format_number(bound)}s"
    if kind == "size" and bound >= 1024 and float(bound).is_integer():
        for suffix, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
            if bound % factor == 0:
                return f"{int(bound) // factor}{suffix}"
    return _format_number(bound)


def _check_range(kind: str, number: float, shown: str, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and number < minimum:
        raise ValueError(f"{shown} is below the minimum {format_bound(kind, minimum)}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{shown} is above the maximum {format_bound(kind, maximum)}")


def parse_value(kind: Kind, text: str, *, minimum: float | None = None, maximum: float | None = None,
                choices: tuple[str, ...] = (), optional: bool = False) -> Scalar:
    """The typed value of a directive's text. An empty value is an error, unless ``optional``
    (a directive without a default): then it leaves the directive unset (None)."""
    text = text.strip()
    if text == "":
        if optional:
            return None
        raise ValueError("empty value")
    if kind == "path":
        if "\0" in text:
            raise ValueError("a path cannot contain NUL")
        return text
    if kind == "bool":
        return parse_bool(text)
    if kind == "enum":
        word = text.lower()
        if word not in choices and {"yes", "no"} <= set(choices):
            # A boolean with an extra value (insecure_auth = auto): every boolean spelling works.
            with contextlib.suppress(ValueError):
                word = "yes" if parse_bool(text) else "no"
        if word not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        # Enums of numbers (imap_accept_haproxy) read naturally as numbers.
        return int(word) if all(c.isdigit() for c in choices) else word
    if kind == "int":
        number = parse_int(text)
        _check_range(kind, number, text, minimum, maximum)
        return number
    if kind == "size":
        size = parse_size(text)
        _check_range(kind, size, text, minimum, maximum)
        return size
    if kind == "timespan":
        seconds = parse_timespan(text)
        if not math.isfinite(seconds):
            raise ValueError(f"{text!r} is out of range")
        _check_range(kind, seconds, text, minimum, maximum)
        return seconds
    raise AssertionError(f"unhandled kind {kind}")


@dataclass(frozen=True, slots=True)
class Syntax:
    """A directive's kind, default and bounds, for readers that do not have gximap's directive
    table. ``default`` is the text as a configuration file would write it (``8G``), or None for a
    directive that is unset unless given: an optional one, whose empty value leaves it unset."""

    kind: Kind
    default: str | None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def optional(self) -> bool:
        return self.default is None

    def parse(self, text: str) -> Scalar:
        return parse_value(self.kind, text, minimum=self.minimum, maximum=self.maximum,
                           choices=self.choices, optional=self.optional)

    def default_value(self) -> Scalar:
        """The value of the directive when no configuration file sets it (None: unset)."""
        return None if self.default is None else self.parse(self.default)


# The typed directives the midb tool reads from gximap's configuration (midb.cli), with their
# kind, default and bounds: gximap.config's DIRECTIVES takes them from here, so that both take the
# same values and default to the same ones.
MIDB_SYNTAX: dict[str, Syntax] = {
    "midb_path": Syntax("path", "/var/lib/gromox/midb"),
    "midb_run_dir": Syntax("path", None),   # unset: midb_path/run
    "midb_fsync": Syntax("bool", "yes"),
    "midb_map_size": Syntax("size", "8G", minimum=1 << 20),
    "midb_shard_num": Syntax("int", "16", minimum=1, maximum=MAX_COUNT),
    "auth_backend": Syntax("enum", "midb", choices=("midb", "passwd-file")),
    "auth_passwd_file": Syntax("path", None),
    **{directive: Syntax("timespan", "0", minimum=0) for directive in PERIOD_DIRECTIVES.values()},
}


# ---------------------------------------------------------------------------------------------
# The file syntax

FILE_DIRECTIVE = "(file)"  # the directive slot of a ConfigError that concerns a whole file
# The files read without -c, those that exist, in this order: a directive in imap.cfg overrides
# the same one in gromox.cfg (shared by every Gromox daemon).
DEFAULT_CONFIG_FILES = ("/etc/gromox/gromox.cfg", "/etc/gromox/imap.cfg")
_DIRECTIVE_NAME_RE = re.compile(r"[a-z0-9_.-]+")


class ConfigError(Exception):
    """A configuration problem, located as ``FILE:LINE: directive: why`` (line 0: the whole file)."""

    def __init__(self, file: str, line: int, directive: str, why: str) -> None:
        super().__init__(f"{file}:{line}: {directive}: {why}")
        self.file = file
        self.line = line
        self.directive = directive
        self.why = why


def read_config_lines(path: str) -> list[str]:
    """The lines of a configuration file (split at LF only, as line numbers count them; a UTF-8
    byte order mark dropped). Raises ConfigError for a file that cannot be read or is not UTF-8."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(path, 0, FILE_DIRECTIVE, f"cannot read: {exc.strerror or exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(path, number, FILE_DIRECTIVE, "not valid UTF-8") from None
    return lines


def directive_lines(lines: Iterable[str], filename: str) -> Iterator[tuple[int, str, str]]:
    """(line number, lower-cased key, value text) of each ``key = value`` line; blank lines and
    ``#`` comments skipped. Raises ConfigError for a line without ``=`` or with an impossible
    directive name."""
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, text = line.partition("=")
        key = key.strip().lower()
        if not equals:
            raise ConfigError(filename, number, line.split()[0][:64], "expected 'key = value'")
        if not key or not _DIRECTIVE_NAME_RE.fullmatch(key):
            raise ConfigError(filename, number, key[:64] or "(empty)", "invalid directive name")
        yield number, key, text
