"""Operator documentation stays true to the code: man pages, sample configs, README, CHANGELOG.

gximap(8gx) has its own detailed checks in test_manpage.py; this file covers what all man pages
share (title line, mandoc lint, every directive) and the pages gximap.cfg(5) and gximap(7).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gximap import log as gxlog
from gximap.config import (
    DIRECTIVES,
    SECTIONS,
    ValueSyntaxError,
    lookup,
    parse_size,
    parse_timespan,
    parse_value,
    reloadable_directives,
    render_man_directives,
    splice_man_directives,
)
from gximap.imap.codes import SHIPPED_CODE_FILE, parse_code_file
from midb.cli import build_parser
from midb.folderlang import SPECIAL_FOLDERS

REPO = Path(__file__).resolve().parent.parent
MAN_DIR = REPO / "man"
MAN_PAGES = sorted(path for path in MAN_DIR.iterdir() if re.fullmatch(r"[a-z.]+\.(5|7|8gx)", path.name))
CFG_PAGE = MAN_DIR / "gximap.cfg.5"
OVERVIEW_PAGE = MAN_DIR / "gximap.7"
README = REPO / "README.md"


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def plain(roff: str) -> str:
    """The roff escapes used in these pages, undone (enough to compare literal examples)."""
    for escape, char in (("\\-", "-"), ("\\e", "\\"), ("\\&", ""), ("\\(aq", "'"), ("\\~", " ")):
        roff = roff.replace(escape, char)
    return re.sub(r"\\f[BIPR]", "", roff)


def sections(page: str) -> list[str]:
    return re.findall(r"^\.SH (.+)$", page, re.M)


def test_man_pages_found() -> None:
    names = {path.name for path in MAN_PAGES}
    assert {"gximap.8gx", "midb.8gx", "gximap.cfg.5", "gximap.7"} <= names


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda path: path.name)
def test_title_line_follows_gromox_convention(page: Path) -> None:
    name, section = page.name.rsplit(".", 1)
    title = re.search(r"^\.TH (.*)$", text(page), re.M)
    assert title is not None
    assert re.fullmatch(rf'{re.escape(name)} {section} "" "gximap" "[^"]+"', title.group(1)), title.group(1)


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda path: path.name)
def test_mandoc_lint_clean(page: Path) -> None:
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        pytest.skip("mandoc is not installed (make sysdeps installs it)")
    result = subprocess.run([mandoc, "-Tlint", str(page)], capture_output=True, text=True, timeout=30)
    th_line = next(number for number, line in enumerate(text(page).splitlines(), 1) if line.startswith(".TH "))
    # Gromox's .TH convention (lower-case title, no date) draws exactly these two remarks.
    accepted = (re.compile(rf":{th_line}:\d+: STYLE: lower case character in document title: TH \S+$"),
                re.compile(rf":{th_line}:\d+: WARNING: missing date, using \"\": TH$"))
    messages = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    unexpected = [line for line in messages if not any(pattern.search(line) for pattern in accepted)]
    assert unexpected == []
    assert result.returncode < 3  # 3 and above: errors


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda path: path.name)
def test_no_request_run_into_text(page: Path) -> None:
    """A request such as .PP glued to the end of a text line is printed, not obeyed (mandoc -Tlint
    does not see it)."""
    assert [line for line in text(page).splitlines()
            if re.search(r"\S\.(?:PP|TP|IP|SH|SS|EX|EE|br)\s*$", line)] == []


@pytest.mark.parametrize("page", [CFG_PAGE, OVERVIEW_PAGE], ids=lambda path: path.name)
def test_source_lines_short(page: Path) -> None:
    assert [line for line in text(page).splitlines()
            if len(line.encode()) > 80 and not line.startswith('.\\"')] == []


@pytest.mark.parametrize("page", [CFG_PAGE, OVERVIEW_PAGE], ids=lambda path: path.name)
def test_sections_follow_gromox_order(page: Path) -> None:
    found = sections(text(page))
    order = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION DIRECTIVES", "SIGNALS",
             "FILES", "EXAMPLES", "SEE ALSO"]
    positions = [next(index for index, heading in enumerate(found) if heading.startswith(wanted))
                 for wanted in order]
    assert positions == sorted(positions), found


# ----------------------------------------------------------------------------------------------------
# every directive, everywhere
# ----------------------------------------------------------------------------------------------------


def all_names() -> Iterator[tuple[str, str]]:
    for directive in DIRECTIVES:
        for name in (directive.name, *directive.aliases):
            yield name, directive.section


@pytest.mark.parametrize("name,section", list(all_names()))
def test_directive_documented_everywhere(name: str, section: str) -> None:
    for page in (MAN_DIR / "gximap.8gx", CFG_PAGE):
        assert f"\n.B {name}\n" in text(page), f"{name} missing from {page.name}"
    sample = text(REPO / "etc" / "gromox" / f"{section}.cfg")
    assert re.search(rf"^# {re.escape(name)}\b", sample, re.M), f"{name} missing from {section}.cfg"


@pytest.mark.parametrize("section", SECTIONS)
def test_cfg_page_directive_sections_are_generated(section: str) -> None:
    page = text(CFG_PAGE)
    begin, end = f'.\\" BEGIN DIRECTIVES {section}\n', f'.\\" END DIRECTIVES {section}\n'
    embedded = page.split(begin, 1)[1].split(end, 1)[0]
    assert embedded == render_man_directives(section)
    heading = page.split(begin, 1)[0].rsplit(".SH ", 1)[1].splitlines()[0]
    assert heading == f"CONFIGURATION DIRECTIVES ({section}.cfg)"


def test_cfg_page_splice_is_a_no_op() -> None:
    assert splice_man_directives(text(CFG_PAGE)) == text(CFG_PAGE)


DIRECTIVE_WORD = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
# snake_case words in the docs that are not directives.
NOT_DIRECTIVES = frozenset({"folder_lang", "imap_code", "extra_fields"})


@pytest.mark.parametrize("page", [CFG_PAGE, OVERVIEW_PAGE], ids=lambda path: path.name)
def test_bold_directive_names_exist(page: Path) -> None:
    for word in re.findall(r"\\fB([^\\]+)\\fP", text(page)):
        for name in DIRECTIVE_WORD.findall(word):
            assert name in NOT_DIRECTIVES or lookup(name) is not None, f"{page.name}: {name}"


# ----------------------------------------------------------------------------------------------------
# gximap(7): the statements that the code decides
# ----------------------------------------------------------------------------------------------------


def test_overview_duration_units_parse_as_documented() -> None:
    page = text(OVERVIEW_PAGE)
    table = page.split(".TS\n", 1)[1].split(".TE\n", 1)[0].splitlines()
    assert table[:2] == ["l l.", "Unit\tNames"]
    seconds = {"millisecond": 0.001, "second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
    rows = [row.split("\t") for row in table[2:]]
    assert [unit for unit, _ in rows] == list(seconds)
    for unit, names in rows:
        for name in names.split(", "):
            assert parse_timespan(f"2{name}") == pytest.approx(2 * seconds[unit]), name
            assert parse_timespan(f"2 {name.upper()}") == pytest.approx(2 * seconds[unit]), name
    assert parse_timespan("1d1h1min1s") == 90061 and "(90061 seconds)" in page
    for example in ("90", "30min", "1h30min", "3h 30min", "3.5 hours"):
        assert f"\\fB{example}\\fP" in page
        parse_timespan(example)


def test_overview_size_examples_parse_as_documented() -> None:
    page = plain(text(OVERVIEW_PAGE))
    for example, value in re.findall(r"(\d[\d.]*[A-Z]+) is (\d+)", page):
        assert parse_size(example) == int(value), example
    assert "64K is 65536" in page and "8GB is 8589934592" in page


@pytest.fixture
def auth_log() -> Iterator[list[str]]:
    """Messages of the gximap.auth logger while the test runs."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("gximap.auth")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_overview_shows_the_real_authentication_lines(auth_log: list[str]) -> None:
    gxlog.auth_failure("[203.0.113.5]:51234", "alice", "login", "bad password")
    gxlog.auth_block("[203.0.113.5]:51234", "alice", 60)
    gxlog.auth_success("[2001:db8::5]:40022", "alice", "login")
    gxlog.auth_success("[203.0.113.5]:51234", "info@example.org", "plain", "bob@example.org")
    page = plain(text(OVERVIEW_PAGE))
    for message in auth_log:
        assert f"\n{message}\n" in page, message
    assert len(auth_log) == 4
    readme = text(README)
    assert auth_log[0] in readme


def test_overview_code_example_is_a_shipped_entry() -> None:
    page = text(OVERVIEW_PAGE)
    example = page.split("For example:\n.IP\n.EX\n", 1)[1].split("\n.EE", 1)[0]
    code, entry_text = plain(example).split("\t", 1)
    shipped, problems = parse_code_file(SHIPPED_CODE_FILE.read_text(encoding="utf-8"), "shipped")
    assert problems == []
    assert shipped[int(code)] == entry_text


def test_overview_names_every_special_folder() -> None:
    page = text(OVERVIEW_PAGE)
    for special in SPECIAL_FOLDERS:
        assert f"\\fB{special.lstrip(chr(92))}\\fP" in page, special
    assert "\\fB[nb no]\\fP" in page and "[nb no]" in text(REPO / "data" / "folder_lang.txt")


def test_overview_essentials() -> None:
    page = plain(text(OVERVIEW_PAGE))
    for needle in ("actor!mailbox", "midb owner grant", "no store ownership", "data_file_path",
                   "imap_cmd_debug", "io_debug", "LISTEN_FDS", "READY=1", "imaps", "gromox-imap.conf",
                   "journalmatch = _SYSTEMD_UNIT=gximap.service"):
        assert needle in page, needle


# ----------------------------------------------------------------------------------------------------
# README and CHANGELOG
# ----------------------------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    body = text(README).split(f"\n## {title}\n", 1)
    assert len(body) == 2, f"README lacks the section {title!r}"
    return body[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("title", ["Production install", "Migrating from Dovecot", "Troubleshooting"])
def test_readme_operator_sections(title: str) -> None:
    assert len(readme_section(title).strip()) > 500


def test_readme_operator_topics() -> None:
    install = readme_section("Production install")
    for needle in ("make install PREFIX=/usr", "gromox", "/var/lib/gromox/midb", "running_identity",
                   "imap_certificate_path", "send-proxy-v2", "imap_haproxy_trust", "imap_accept_haproxy",
                   "etc/fail2ban/filter.d/gromox-imap.conf", "gximap.socket", "Type=notify"):
        assert needle in install, needle
    assert "midb import maildir" in readme_section("Migrating from Dovecot")
    troubleshooting = readme_section("Troubleshooting")
    for needle in ("imap_cmd_debug", "io_debug", "midb verify"):
        assert needle in troubleshooting, needle


def test_readme_names_every_directive_sighup_reloads() -> None:
    configuration = readme_section("Configuration")
    reloaded = configuration.split("SIGHUP re-reads", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"`([a-z0-9_]+)`", reloaded))
    assert named == set(reloadable_directives())


def test_readme_config_examples_read_as_configuration() -> None:
    """Each ``key = value`` block of the README parses as written (no comment after a value)."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text(README).splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    checked = 0
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not lines or not all(re.fullmatch(r"[a-z0-9_]+ = .*", line) for line in lines):
            continue
        names = [line.split(" = ", 1)[0] for line in lines]
        if not all(lookup(name) is not None for name in names):
            continue
        for line in lines:
            name, value = line.split(" = ", 1)
            directive = lookup(name)
            assert directive is not None
            try:
                parse_value(directive, value)
            except ValueSyntaxError as exc:
                pytest.fail(f"README: {line!r}: {exc}")
            checked += 1
    assert checked >= 2


def midb_command_lines() -> list[tuple[str, bool]]:
    """Every ``midb ...`` in the README: (arguments, whether it is a complete command line).

    Lines of code blocks are complete command lines; inline code spans may also just name a
    command (`midb import maildir` reads ...).
    """
    commands: list[tuple[str, bool]] = []
    in_block = False
    for line in text(README).splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        sources = [line] if in_block else re.findall(r"`([^`]+)`", line)
        for source in sources:
            match = re.search(r"(?:^|[|;&]\s*|--\s+)midb\s+(.+)$", source.strip())
            if match:
                commands.append((match.group(1), in_block))
    return commands


def test_readme_midb_commands_parse() -> None:
    commands = midb_command_lines()
    assert ("midb import maildir" in text(README)
            and any(command.startswith("import maildir ") for command, complete in commands if complete))
    parser = build_parser()
    for command, complete in commands:
        # A command substitution such as $(date +%F) is one word to the shell.
        arguments = shlex.split(re.sub(r"\$\([^)]*\)", "X", command.split(" #", 1)[0]))
        if arguments[-1] == "...":
            continue  # prose such as "runuser -u gromox -- midb ..."
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parser.parse_args(arguments)
        except SystemExit:
            missing_only = "the following arguments are required" in errors.getvalue()
            if complete or not missing_only:
                pytest.fail(f"README: 'midb {command}' is not a valid midb command line:\n{errors.getvalue()}")


def test_readme_directive_names_exist() -> None:
    for title in ("Production install", "Migrating from Dovecot", "Troubleshooting"):
        for span in re.findall(r"`([^`]+)`", readme_section(title)):
            for name in DIRECTIVE_WORD.findall(span):
                if "." in span or "/" in span:
                    continue  # file names and paths
                assert name in NOT_DIRECTIVES or lookup(name) is not None, f"README ({title}): {name}"


def test_changelog_keeps_a_changelog() -> None:
    changelog = text(REPO / "CHANGELOG.md")
    assert changelog.startswith("# Changelog\n")
    assert "keepachangelog.com" in changelog
    unreleased = changelog.split("\n## [Unreleased]\n", 1)[1].split("\n## ", 1)[0]
    assert "\n### Added\n" in unreleased
    headings = re.findall(r"^### (.+)$", unreleased, re.M)
    assert set(headings) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    for page in MAN_PAGES:
        name, section = page.name.rsplit(".", 1)
        assert f"{name}({section})" in unreleased, page.name
    for unit in (REPO / "systemd").iterdir():
        assert unit.name in unreleased, unit.name
