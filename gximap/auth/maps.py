"""Name mapping: login names to authentication identities and storage accounts (maddy's tables).

Three maps, each a normalization function (gximap.auth.normalize) followed by a table:

* ``auth_map`` / ``auth_map_normalize``: the login name → the identity whose password the
  authentication backend checks;
* ``storage_map`` / ``storage_map_normalize``: the login name → the midb account the session runs as;
* ``delivery_map`` / ``delivery_map_normalize``: a recipient address → the midb account mail is
  delivered to (LMTP).

A table is given in one directive value, a kind followed by its arguments::

    identity                          the name itself (the default)
    email_localpart                   user@example.org → user; a name without @ has no mapping
    email_localpart_optional          user@example.org → user; a name without @ maps to itself
    email_with_domain DOMAIN...       user → user@DOMAIN (the first domain; all of them for delivery)
    static KEY:VALUE...               the listed pairs; other names have no mapping
    file PATH                         'key: value' lines of PATH, re-read when the file changes
    regexp PATTERN REPLACEMENT        names matching PATTERN as a whole; $1, ${name} in REPLACEMENT

As in maddy, normalization comes first and a name the table has no mapping for cannot log in (or
receive mail). Keys of ``static`` and ``file`` tables are normalized like the names looked up, so
``Alice@Example.org: alice`` matches whatever case a client types. Values may list several
targets separated by commas (``lookup_multi``; a login uses the first).

Public API:
    parse_table_spec(text) -> TableSpec            syntax check (config time, no file access)
    build_table(spec, key_normalizer=None) -> Table
    NameMap(table, normalizer).map(name) -> str    UnmappedName when the name has no mapping
    NameMap.from_directives(table_text, normalize_name)
    name_map_from_config(cfg, "auth_map" | "storage_map" | "delivery_map") -> NameMap
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gximap.auth.normalize import NormalizeError, Normalizer, get_normalizer, split_address
from midb.filewatch import ReloadingFile

__all__ = [
    "MAP_DIRECTIVES",
    "TABLE_KINDS",
    "EmailLocalpartTable",
    "EmailWithDomainTable",
    "FileTable",
    "IdentityTable",
    "MapSyntaxError",
    "NameMap",
    "RegexpTable",
    "StaticTable",
    "Table",
    "TableSpec",
    "UnmappedName",
    "build_table",
    "expand_replacement",
    "name_map_from_config",
    "parse_table_spec",
    "quote_local_part",
]

log = logging.getLogger("gximap.auth")

MAP_DIRECTIVES = ("auth_map", "storage_map", "delivery_map")
TABLE_KINDS = ("identity", "email_localpart", "email_localpart_optional", "email_with_domain", "static",
               "file", "regexp")
_MAX_FILE_BYTES = 64 * 1024 * 1024  # a map file is configuration, not a database


class MapSyntaxError(ValueError):
    """A table specification or a static entry is malformed."""


class UnmappedName(LookupError):
    """The name cannot be normalized, or the table has no mapping for it."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name!r}: {why}")
        self.name = name
        self.why = why


class Table(Protocol):
    def lookup(self, key: str) -> str | None:
        """The (first) value for ``key``, or None when the table has no mapping for it."""

    def lookup_multi(self, key: str) -> list[str]:
        """Every value for ``key`` (empty when there is no mapping)."""


# ----------------------------------------------------------------------------------------------------
# Table kinds
# ----------------------------------------------------------------------------------------------------


class IdentityTable:
    """Every name maps to itself."""

    def lookup(self, key: str) -> str | None:
        return key

    def lookup_multi(self, key: str) -> list[str]:
        return [key]

    def __repr__(self) -> str:
        return "identity"


class EmailLocalpartTable:
    """``user@example.org`` → ``user``. A name that is not an address has no mapping, or maps to
    itself when ``optional`` (email_localpart_optional). ``postmaster`` alone is an address."""

    def __init__(self, optional: bool = False) -> None:
        self.optional = optional

    def lookup(self, key: str) -> str | None:
        try:
            local, _domain = split_address(key)
        except NormalizeError:
            return key if self.optional else None
        return local

    def lookup_multi(self, key: str) -> list[str]:
        value = self.lookup(key)
        return [] if value is None else [value]

    def __repr__(self) -> str:
        return "email_localpart_optional" if self.optional else "email_localpart"


_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+")


def quote_local_part(local: str) -> str:
    """``local`` as an RFC 5321 local part: unchanged when it is a dot-atom, else quoted."""
    atoms = local.split(".")
    if local and all(_ATEXT.fullmatch(atom) for atom in atoms):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmailWithDomainTable:
    """``user`` → ``user@DOMAIN`` with the first domain (all domains for ``lookup_multi``)."""

    def __init__(self, domains: Sequence[str]) -> None:
        if not domains:
            raise MapSyntaxError("email_with_domain needs at least one domain")
        for domain in domains:
            if not re.fullmatch(r"[^\s@\"\\]+", domain) or ".." in domain or domain.startswith("."):
                raise MapSyntaxError(f"email_with_domain: {domain!r} is not a domain")
        self.domains = tuple(domains)

    def lookup(self, key: str) -> str | None:
        return f"{quote_local_part(key)}@{self.domains[0]}"

    def lookup_multi(self, key: str) -> list[str]:
        local = quote_local_part(key)
        return [f"{local}@{domain}" for domain in self.domains]

    def __repr__(self) -> str:
        return "email_with_domain " + " ".join(self.domains)


def _split_values(text: str) -> list[str]:
    return [value for value in (part.strip() for part in text.split(",")) if value]


class StaticTable:
    """A fixed mapping (keys as given: normalize them before, see :func:`build_table`)."""

    def __init__(self, entries: Mapping[str, Sequence[str]]) -> None:
        self._entries = {key: list(values) for key, values in entries.items() if values}

    def lookup(self, key: str) -> str | None:
        values = self._entries.get(key)
        return values[0] if values else None

    def lookup_multi(self, key: str) -> list[str]:
        return list(self._entries.get(key, ()))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"static ({len(self._entries)} entries)"


def parse_map_lines(lines: Iterable[str], source: str,
                    key_normalizer: Normalizer | None = None) -> dict[str, list[str]]:
    """Parse ``key: value[, value...]`` lines; ``#`` comments and blank lines are skipped.

    Malformed lines (no colon, empty key or value, a key the normalizer refuses) are logged with
    their line number and skipped. For a key listed twice the first line wins.
    """
    entries: dict[str, list[str]] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, colon, rest = line.partition(":")
        key = key.strip()
        values = _split_values(rest)
        if not colon or not key or not values:
            log.warning("%s:%d: expected 'key: value', line skipped", source, number)
            continue
        if key_normalizer is not None:
            try:
                key = key_normalizer(key)
            except NormalizeError as exc:
                log.warning("%s:%d: key skipped: %s", source, number, exc)
                continue
        if key in entries:
            log.warning("%s:%d: %s listed again; the first entry is kept", source, number, key)
            continue
        entries[key] = values
    return entries


class FileTable:
    """``key: value`` lines of a file, re-read whenever the file changes (its mtime, ctime, size
    or inode: a rewrite, a rename over it, or a chmod that makes it readable).

    A missing file maps nothing (as documented). A file that exists but cannot be read, or is
    larger than _MAX_FILE_BYTES, makes every lookup raise midb.errors.FileUnavailable, which
    callers answer as a temporary failure (a login NO [UNAVAILABLE], a recipient LMTP 451), not
    as a name without a mapping; the previous contents are not used meanwhile (midb.filewatch
    says why). Either is logged once per change, not once per login. Lookups from many threads
    are safe: a reload swaps the whole dictionary.
    """

    def __init__(self, path: str | os.PathLike[str], key_normalizer: Normalizer | None = None) -> None:
        self.path = os.fspath(path)
        self._key_normalizer = key_normalizer
        self._file: ReloadingFile[dict[str, list[str]]] = ReloadingFile(
            self.path, self._parse, {}, what="map file", log=log, max_bytes=_MAX_FILE_BYTES,
            missing_message="map file %s is missing; it maps no names",
            on_loaded=lambda loaded: log.info("map file %s loaded: %d entries", self.path, len(loaded)))
        self._file.read_at_start()

    def _current(self) -> dict[str, list[str]]:
        return self._file.current()

    def _parse(self, data: bytes) -> dict[str, list[str]]:
        lines: list[str] = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                log.warning("%s:%d: not valid UTF-8, line skipped", self.path, number)
                lines.append("")
        return parse_map_lines(lines, self.path, self._key_normalizer)

    def lookup(self, key: str) -> str | None:
        values = self._current().get(key)
        return values[0] if values else None

    def lookup_multi(self, key: str) -> list[str]:
        return list(self._current().get(key, ()))

    def __repr__(self) -> str:
        return f"file {self.path}"


_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_]+")


def expand_replacement(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``; ``$$`` is a dollar sign.

    ``$name`` takes the longest run of letters, digits and underscores (``$1x`` is ``${1x}``).
    A group that does not exist or did not take part in the match expands to nothing; a ``$``
    not followed by a valid reference stays as it is.
    """
    out: list[str] = []
    pos = 0
    while True:
        dollar = template.find("$", pos)
        if dollar < 0:
            out.append(template[pos:])
            return "".join(out)
        out.append(template[pos:dollar])
        rest = dollar + 1
        if template.startswith("$", rest):
            out.append("$")
            pos = rest + 1
            continue
        braced = template.startswith("{", rest)
        name_match = _TEMPLATE_NAME.match(template, rest + 1 if braced else rest)
        if name_match is None or (braced and not template.startswith("}", name_match.end())):
            out.append("$")
            pos = rest
            continue
        name = name_match.group()
        pos = name_match.end() + (1 if braced else 0)
        try:
            group = match.group(int(name) if name.isascii() and name.isdigit() else name)
        except IndexError:  # no such group, by number or by name
            group = None
        out.append(group or "")


class RegexpTable:
    """Names matching ``pattern`` as a whole map to ``replacement`` with groups expanded.

    The pattern is a Python regular expression; it must match the entire (normalized) name, so a
    pattern meant for ``@example.org`` never accepts ``@example.org.evil``.
    """

    def __init__(self, pattern: str, replacement: str) -> None:
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise MapSyntaxError(f"regexp {pattern!r}: {exc}") from None
        self.replacement = replacement

    def lookup(self, key: str) -> str | None:
        match = self.regex.fullmatch(key)
        if match is None:
            return None
        value = expand_replacement(self.replacement, match)
        return value or None

    def lookup_multi(self, key: str) -> list[str]:
        value = self.lookup(key)
        return [] if value is None else [value]

    def __repr__(self) -> str:
        return f"regexp {self.regex.pattern} {self.replacement}"


# ----------------------------------------------------------------------------------------------------
# Specifications (directive values)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableSpec:
    kind: str
    args: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " ".join((self.kind, *self.args))


def _parse_static_entries(args: Sequence[str]) -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for item in args:
        key, colon, rest = item.partition(":")
        values = _split_values(rest)
        if not colon or not key or not values:
            raise MapSyntaxError(f"static: {item!r} is not KEY:VALUE")
        if key in entries:
            raise MapSyntaxError(f"static: {key!r} is listed twice")
        entries[key] = values
    return entries


def parse_table_spec(text: str) -> TableSpec:
    """Check the syntax of a table directive value; MapSyntaxError says what is wrong.

    Regular expressions are compiled here, so a bad one is reported at configuration time.
    Files are not opened (the daemon may read them only after switching identity).
    """
    words = text.split()
    if not words:
        return TableSpec("identity")
    kind, args = words[0].lower(), tuple(words[1:])
    if kind not in TABLE_KINDS:
        raise MapSyntaxError(f"unknown table {words[0]!r} (expected one of {', '.join(TABLE_KINDS)})")
    if kind in ("identity", "email_localpart", "email_localpart_optional") and args:
        raise MapSyntaxError(f"{kind} takes no arguments")
    if kind == "email_with_domain":
        EmailWithDomainTable(args)
    elif kind == "static":
        if not args:
            raise MapSyntaxError("static needs KEY:VALUE entries")
        _parse_static_entries(args)
    elif kind == "file":
        if len(args) != 1:
            raise MapSyntaxError("file takes exactly one path (without spaces)")
        if "\0" in args[0]:
            raise MapSyntaxError("a path cannot contain NUL")
    elif kind == "regexp":
        if len(args) != 2:
            raise MapSyntaxError("regexp takes a pattern and a replacement (neither with spaces; use \\s)")
        RegexpTable(*args)
    return TableSpec(kind, args)


def build_table(spec: TableSpec | str, key_normalizer: Normalizer | None = None) -> Table:
    """The table for ``spec``; ``key_normalizer`` brings static and file keys to lookup form."""
    if isinstance(spec, str):
        spec = parse_table_spec(spec)
    kind, args = spec.kind, spec.args
    if kind == "identity":
        return IdentityTable()
    if kind in ("email_localpart", "email_localpart_optional"):
        return EmailLocalpartTable(optional=kind == "email_localpart_optional")
    if kind == "email_with_domain":
        return EmailWithDomainTable(args)
    if kind == "static":
        entries: dict[str, list[str]] = {}
        for key, values in _parse_static_entries(args).items():
            if key_normalizer is not None:
                try:
                    key = key_normalizer(key)
                except NormalizeError as exc:
                    raise MapSyntaxError(f"static: key {key!r}: {exc}") from None
            if key in entries:
                raise MapSyntaxError(f"static: {key!r} is listed twice (after normalization)")
            entries[key] = values
        return StaticTable(entries)
    if kind == "file":
        return FileTable(args[0], key_normalizer)
    if kind == "regexp":
        return RegexpTable(*args)
    raise MapSyntaxError(f"unknown table {kind!r}")


class NameMap:
    """Normalize, then look up: the whole of one ``*_map`` / ``*_map_normalize`` pair."""

    def __init__(self, table: Table | None = None, normalizer: Normalizer | str = "auto") -> None:
        self.normalizer: Normalizer = get_normalizer(normalizer) if isinstance(normalizer, str) else normalizer
        self.table: Table = table if table is not None else IdentityTable()

    @classmethod
    def from_directives(cls, table_text: str | None, normalize_name: str | None) -> NameMap:
        """Build from the directive values (None means the default: identity, auto)."""
        normalizer = get_normalizer(normalize_name or "auto")
        return cls(build_table(table_text or "identity", key_normalizer=normalizer), normalizer)

    def normalize(self, name: str) -> str:
        try:
            return self.normalizer(name)
        except NormalizeError as exc:
            raise UnmappedName(name, str(exc)) from None

    def map(self, name: str) -> str:
        """The mapped name; UnmappedName when it cannot be normalized or has no mapping;
        midb.errors.FileUnavailable when a ``file`` table cannot be read (no verdict)."""
        key = self.normalize(name)
        value = self.table.lookup(key)
        if not value:
            raise UnmappedName(name, f"no mapping for {key!r} in {self.table!r}")
        return value

    def map_all(self, name: str) -> list[str]:
        """Every mapped name (delivery to several mailboxes); UnmappedName when there is none;
        midb.errors.FileUnavailable when a ``file`` table cannot be read (no verdict), as :meth:`map`."""
        key = self.normalize(name)
        values = self.table.lookup_multi(key)
        if not values:
            raise UnmappedName(name, f"no mapping for {key!r} in {self.table!r}")
        return values

    def __repr__(self) -> str:
        return f"NameMap({self.table!r}, {getattr(self.normalizer, '__name__', self.normalizer)!r})"


def name_map_from_config(cfg: Any, directive: str) -> NameMap:
    """The map of ``directive`` ("auth_map", "storage_map" or "delivery_map") and its
    ``<directive>_normalize`` companion, from a gximap.config.Config (or any mapping by name)."""
    if directive not in MAP_DIRECTIVES:
        raise ValueError(f"unknown map directive {directive!r} (expected one of {', '.join(MAP_DIRECTIVES)})")
    getter: Callable[[str], Any] = cfg.__getitem__
    return NameMap.from_directives(getter(directive), getter(f"{directive}_normalize"))
