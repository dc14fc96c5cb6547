"""gximap.auth.maps: the table kinds, their directive syntax, file reloading and NameMap."""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import pytest

from gximap import config
from gximap.auth import maps
from gximap.auth.maps import (
    EmailLocalpartTable,
    EmailWithDomainTable,
    FileTable,
    IdentityTable,
    MapSyntaxError,
    NameMap,
    RegexpTable,
    StaticTable,
    TableSpec,
    UnmappedName,
    build_table,
    expand_replacement,
    name_map_from_config,
    parse_table_spec,
    quote_local_part,
)
from gximap.auth.normalize import get_normalizer
from midb.errors import FileUnavailable

# -- table kinds -------------------------------------------------------------------------------------


def test_identity() -> None:
    table = IdentityTable()
    assert table.lookup("alice@example.org") == "alice@example.org"
    assert table.lookup_multi("x") == ["x"]


@pytest.mark.parametrize(("key", "strict", "optional"), [
    ("user@example.org", "user", "user"),
    ('"a@b"@example.org', '"a@b"', '"a@b"'),
    ("postmaster", "postmaster", "postmaster"),
    ("user", None, "user"),
    ("@example.org", None, "@example.org"),
    ("user@", None, "user@"),
])
def test_email_localpart(key: str, strict: str | None, optional: str | None) -> None:
    assert EmailLocalpartTable().lookup(key) == strict
    assert EmailLocalpartTable(optional=True).lookup(key) == optional
    assert EmailLocalpartTable().lookup_multi(key) == ([strict] if strict else [])


@pytest.mark.parametrize(("local", "quoted"), [
    ("user", "user"),
    ("first.last", "first.last"),
    ("o'brien+tag", "o'brien+tag"),
    ("jörg", "jörg"),
    ("a b", '"a b"'),
    ("a..b", '"a..b"'),
    (".a", '".a"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("", '""'),
])
def test_quote_local_part(local: str, quoted: str) -> None:
    assert quote_local_part(local) == quoted


def test_email_with_domain() -> None:
    table = EmailWithDomainTable(["a.example", "b.example"])
    assert table.lookup("user") == "user@a.example"
    assert table.lookup("a b") == '"a b"@a.example'
    assert table.lookup_multi("user") == ["user@a.example", "user@b.example"]
    for bad in ([], ["a..example"], ["a@b"], [".a"]):
        with pytest.raises(MapSyntaxError):
            EmailWithDomainTable(bad)


def test_static() -> None:
    table = StaticTable({"alice@a.org": ["alice"], "list@a.org": ["bob", "carol"], "empty": []})
    assert table.lookup("alice@a.org") == "alice"
    assert table.lookup("list@a.org") == "bob"
    assert table.lookup_multi("list@a.org") == ["bob", "carol"]
    assert table.lookup("empty") is None and table.lookup("nobody") is None
    assert table.lookup_multi("nobody") == [] and len(table) == 2


@pytest.mark.parametrize(("template", "expected"), [
    ("$1", "bob"),
    ("${1}x", "bobx"),
    ("$1x", ""),  # $1x names the group "1x", as in Go
    ("$user-$2", "bob-example"),
    ("${user}", "bob"),
    ("$$1", "$1"),
    ("$", "$"),
    ("a$", "a$"),
    ("${user", "${user"),
    ("$9", ""),
    ("$nosuch", ""),
    ("$-", "$-"),
    ("plain", "plain"),
])
def test_expand_replacement(template: str, expected: str) -> None:
    match = re.fullmatch(r"(?P<user>.*)@(example)\.org", "bob@example.org")
    assert match is not None
    assert expand_replacement(template, match) == expected


def test_regexp_matches_whole_names_only() -> None:
    table = RegexpTable(r"(.*)@example\.org", "$1")
    assert table.lookup("bob@example.org") == "bob"
    assert table.lookup("bob@example.org.evil") is None
    assert table.lookup("x-bob@example.org") == "x-bob"
    assert table.lookup("bob@other.org") is None
    assert RegexpTable(r"(.*)@(.*)", "$2/$1").lookup_multi("u@d") == ["d/u"]
    # An empty expansion is no mapping, never the empty account name.
    assert RegexpTable(r"(x?)@example\.org", "$1").lookup("@example.org") is None
    with pytest.raises(MapSyntaxError, match="regexp"):
        RegexpTable("(", "$1")


# -- the file table ----------------------------------------------------------------------------------


def _bump_mtime(path: Path) -> None:
    """Make sure a rewrite is seen even on a file system with coarse time stamps."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_file_table_parses_and_reloads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "auth_map.txt"
    path.write_text("# comment\n\nAlice@Example.ORG: alice\nbob@b.org : bob, bobby\nnocolon\n"
                    "empty:\n: novalue\nbob@b.org: again\nbad key@b.org: x\n")
    with caplog.at_level(logging.WARNING, logger="gximap.auth"):
        table = FileTable(path, key_normalizer=get_normalizer("auto"))
    assert table.lookup("alice@example.org") == "alice"  # the key was normalized
    assert table.lookup_multi("bob@b.org") == ["bob", "bobby"]  # the first line for a key wins
    assert table.lookup("nocolon") is None and table.lookup("empty") is None
    warnings = [record.getMessage() for record in caplog.records]
    for line in (5, 6, 7, 8, 9):
        assert any(message.startswith(f"{path}:{line}:") for message in warnings), (line, warnings)

    path.write_text("carol@c.org: carol\n")
    _bump_mtime(path)
    assert table.lookup("alice@example.org") is None
    assert table.lookup("carol@c.org") == "carol"


def test_file_table_missing_unreadable_and_undecodable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "map.txt"
    with caplog.at_level(logging.ERROR, logger="gximap.auth"):
        table = FileTable(path)
        assert table.lookup("a") is None
        assert [record.getMessage() for record in caplog.records] == [f"map file {path} is missing; it maps no names"]
        path.write_bytes(b"a: x\n\xff\xfe: y\nb: z\n")
        assert table.lookup("a") == "x" and table.lookup("b") == "z"
        # Unreadable (here: a directory in its place, which even root cannot read as a file):
        # every lookup fails as a temporary error, the previous contents unused (they may be what
        # the edit meant to remove), and the error is logged once, not at every lookup.
        caplog.clear()
        path.unlink()
        path.mkdir()
        for _ in range(5):
            with pytest.raises(FileUnavailable):
                table.lookup("a")
            with pytest.raises(FileUnavailable):
                NameMap(table).map("a")  # not UnmappedName: the caller answers "try again later"
        assert [record.getMessage() for record in caplog.records] == [
            f"map file {path} cannot be read: Is a directory (EISDIR); "
            "lookups in it fail as a temporary error until it can"]
        path.rmdir()
        assert table.lookup("a") is None  # missing now: maps no names, as documented
        path.write_text("c: w\n")
        assert table.lookup("c") == "w"


def test_file_table_over_its_size_bound_is_unavailable(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that cannot be used as a whole is no empty table either."""
    monkeypatch.setattr(maps, "_MAX_FILE_BYTES", 16)
    path = tmp_path / "map.txt"
    path.write_text("a: x\nb: y\nc: z\nd: w\n")
    with caplog.at_level(logging.ERROR, logger="gximap.auth"):
        table = FileTable(path)
        with pytest.raises(FileUnavailable) as caught:
            table.lookup_multi("a")
    assert caught.value.reason == "larger than 16 bytes"
    assert [record.getMessage() for record in caplog.records] == [
        f"map file {path} cannot be read: larger than 16 bytes; lookups in it fail as a temporary error until it can"]
    path.write_text("a: x\n")
    assert table.lookup("a") == "x"


def test_file_table_is_safe_under_concurrent_reloads(tmp_path: Path) -> None:
    path = tmp_path / "map.txt"
    path.write_text("a: 0\n")
    table = FileTable(path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                value = table.lookup("a")
                assert value is None or value.isdigit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for generation in range(1, 60):
            tmp = tmp_path / "map.new"
            tmp.write_text(f"a: {generation}\n")
            os.replace(tmp, path)  # an atomic rewrite, as editors and config management do
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not errors
    assert table.lookup("a") == "59"


# -- directive syntax --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "spec"), [
    ("", TableSpec("identity")),
    ("identity", TableSpec("identity")),
    ("  Email_LocalPart  ", TableSpec("email_localpart")),
    ("email_localpart_optional", TableSpec("email_localpart_optional")),
    ("email_with_domain a.example b.example", TableSpec("email_with_domain", ("a.example", "b.example"))),
    ("static alice@a.org:alice bob@b.org:bob", TableSpec("static", ("alice@a.org:alice", "bob@b.org:bob"))),
    ("file /etc/gromox/auth_map.txt", TableSpec("file", ("/etc/gromox/auth_map.txt",))),
    (r"regexp ^(.*)@example\.org$ $1", TableSpec("regexp", (r"^(.*)@example\.org$", "$1"))),
])
def test_parse_table_spec(text: str, spec: TableSpec) -> None:
    assert parse_table_spec(text) == spec


@pytest.mark.parametrize(("text", "why"), [
    ("bogus", "unknown table"),
    ("identity x", "no arguments"),
    ("email_localpart x", "no arguments"),
    ("email_with_domain", "at least one domain"),
    ("email_with_domain a@b", "not a domain"),
    ("static", "KEY:VALUE"),
    ("static alice", "not KEY:VALUE"),
    ("static alice:", "not KEY:VALUE"),
    ("static :alice", "not KEY:VALUE"),
    ("static a:x a:y", "listed twice"),
    ("file", "exactly one path"),
    ("file a b", "exactly one path"),
    ("regexp (.*)", "pattern and a replacement"),
    ("regexp ( $1", "regexp"),
])
def test_parse_table_spec_errors(text: str, why: str) -> None:
    with pytest.raises(MapSyntaxError, match=re.escape(why)):
        parse_table_spec(text)


def test_build_table_normalizes_static_keys() -> None:
    table = build_table("static Alice@Example.ORG:alice", key_normalizer=get_normalizer("auto"))
    assert table.lookup("alice@example.org") == "alice"
    with pytest.raises(MapSyntaxError, match="twice"):
        build_table("static Alice:x alice:y", key_normalizer=get_normalizer("auto"))
    with pytest.raises(MapSyntaxError, match="key"):
        build_table("static \u0007:x", key_normalizer=get_normalizer("auto"))
    assert isinstance(build_table(TableSpec("email_localpart")), EmailLocalpartTable)


# -- NameMap -----------------------------------------------------------------------------------------


def test_name_map_normalizes_then_looks_up() -> None:
    default = NameMap()
    assert default.map("ＡＬＩＣＥ@Example.ORG") == "alice@example.org"
    localpart = NameMap.from_directives("email_localpart", "auto")
    assert localpart.map("User@Example.ORG") == "user"
    with pytest.raises(UnmappedName, match="no mapping"):
        localpart.map("user")
    with pytest.raises(UnmappedName) as info:
        default.map("a b")
    assert info.value.name == "a b"
    noop = NameMap.from_directives("static Alice:a", "noop")
    assert noop.map("Alice") == "a"
    with pytest.raises(UnmappedName):
        noop.map("alice")
    multi = NameMap.from_directives("email_with_domain a.example b.example", None)
    assert multi.map_all("User") == ["user@a.example", "user@b.example"]
    with pytest.raises(UnmappedName):
        NameMap.from_directives("static x:y", None).map_all("z")


def test_name_map_from_config_for_every_map_directive(tmp_path: Path) -> None:
    mapfile = tmp_path / "delivery.txt"
    mapfile.write_text("Sales@Example.org: alice, bob\n")
    cfg = config.config_from_text(
        "auth_map = email_localpart_optional\n"
        "auth_map_normalize = casefold\n"
        "storage_map = regexp ^(.*)@example\\.org$ $1\n"
        f"delivery_map = file {mapfile}\n"
        "delivery_map_normalize = precis_casefold_email\n")
    assert name_map_from_config(cfg, "auth_map").map("Alice@Example.ORG") == "alice"
    assert name_map_from_config(cfg, "storage_map").map("Bob@example.org") == "bob"
    assert name_map_from_config(cfg, "delivery_map").map_all("sales@EXAMPLE.org") == ["alice", "bob"]
    defaults = config.defaults()
    for directive in ("auth_map", "storage_map", "delivery_map"):
        assert name_map_from_config(defaults, directive).map("Carol") == "carol"
    with pytest.raises(ValueError, match="unknown map directive"):
        name_map_from_config(cfg, "imap_listen")


def test_config_rejects_bad_tables_at_the_line() -> None:
    with pytest.raises(config.ConfigError) as info:
        config.config_from_text("# x\nstorage_map = regexp ( $1\n")
    assert (info.value.line, info.value.directive) == (2, "storage_map")
    with pytest.raises(config.ConfigError) as info:
        config.config_from_text("delivery_map_normalize = nfkc\n")
    assert info.value.directive == "delivery_map_normalize"
    assert config.defaults().auth_map == "identity" and config.defaults().auth_map_normalize == "auto"
