"""man/gximap.8gx: complete, in step with the directive table, and clean under mandoc -Tlint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gximap.config import DIRECTIVES, render_man_directives, render_sample, splice_man_directives
from gximap.config import main as config_main

REPO = Path(__file__).resolve().parent.parent
MANPAGE = REPO / "man" / "gximap.8gx"


def page() -> str:
    return MANPAGE.read_text(encoding="utf-8")


def embedded(section: str) -> str:
    match = re.search(rf"^\.\\\" BEGIN DIRECTIVES {section}\n(.*?)^\.\\\" END DIRECTIVES {section}\n",
                      page(), re.S | re.M)
    assert match is not None, f"markers for {section} missing"
    return match.group(1)


def test_title_line() -> None:
    assert '\n.TH gximap 8gx "" "gximap" "Gromox-style IMAP server"\n' in "\n" + page()


def test_sections_in_order() -> None:
    headings = re.findall(r"^\.SH (.+)$", page(), re.M)
    required = ["NAME", "SYNOPSIS", "DESCRIPTION", "AUTHENTICATION", "OPTIONS",
                "CONFIGURATION DIRECTIVES (gromox.cfg)", "CONFIGURATION DIRECTIVES (imap.cfg)",
                "DURATION AND SIZE SYNTAX", "SIGNALS", "LOGGING", "FILES", "SEE ALSO"]
    positions = [headings.index(name) for name in required]
    assert positions == sorted(positions)


@pytest.mark.parametrize("section", ["gromox", "imap"])
def test_embedded_directives_match_table(section: str) -> None:
    assert embedded(section) == render_man_directives(section)


def test_every_directive_and_alias_documented() -> None:
    text = page()
    samples = render_sample("imap") + render_sample("gromox")
    committed = "".join((REPO / "etc" / "gromox" / name).read_text(encoding="utf-8")
                        for name in ("imap.cfg", "gromox.cfg"))
    for directive in DIRECTIVES:
        for name in (directive.name, *directive.aliases):
            assert f"\n.B {name}\n" in text, name
            assert re.search(rf"\b{name}\b", samples), name
            assert re.search(rf"\b{name}\b", committed), name
        assert embedded(directive.section).count(f"\n.B {directive.name}\n") == 1


def test_content_essentials() -> None:
    text = page()
    for needle in ("context_num", "imap_thread_charge_num", "imap_thread_init_num", "midb",
                   "myaccount@domain.example!sharedmbox@domain.example", "store ownership",
                   "SIGHUP", "SIGTERM", "SIGINT", "* BYE",
                   "rhost=[203.0.113.5]:51234 user=alice LOGIN rejected: bad password",
                   "rhost=[203.0.113.5]:51234 user=alice blocked for 60s: too many failed logins",
                   "folder_lang.txt", "imap_code.txt", "/etc/gromox/imap.cfg", "/etc/gromox/gromox.cfg",
                   "\\fBmidb\\fP(8gx)", "1d1h1min1s", "3.5 hours"):
        assert needle in text, needle
    synopsis = text.split(".SH SYNOPSIS\n", 1)[1].split(".SH", 1)[0]
    for option in ("\\-c", "\\-\\-version", "\\-?", "\\-\\-help"):
        assert option in synopsis


def test_logging_leaves_the_fail2ban_regex_to_the_shipped_filter() -> None:
    """The page once printed an unanchored failregex that text a client sends (logged under
    imap_cmd_debug or io_debug) could match, banning any address it named. It prints none now:
    it says why a filter must be anchored and names the shipped one, which
    test_e2e_fail2ban.py runs against such forgeries."""
    logging = page().split(".SH LOGGING\n", 1)[1].split("\n.SH ", 1)[0]
    assert "failregex" not in logging and "<HOST>" not in logging
    assert "must match \\fBrhost=\\fP only where the\nmessage starts" in logging
    assert "\\fIetc/fail2ban/filter.d/gromox\\-imap.conf\\fP" in logging


def test_source_lines_short() -> None:
    long_lines = [line for line in page().splitlines() if len(line.encode()) > 80
                  and not line.startswith('.\\"')]
    assert long_lines == []


def test_mandoc_lint() -> None:
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        pytest.skip("mandoc is not installed")
    result = subprocess.run([mandoc, "-Tlint", str(MANPAGE)], capture_output=True, text=True, timeout=30)
    messages = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    # Gromox's convention (a lower-case title and no date in .TH, as the brief prescribes) draws two
    # remarks about the .TH line; anything else is a defect.
    th_line = page().splitlines().index('.TH gximap 8gx "" "gximap" "Gromox-style IMAP server"') + 1
    allowed = re.compile(rf":{th_line}:\d+: (STYLE|WARNING): .*: TH( gximap)?$")
    unexpected = [m for m in messages if not allowed.search(m)]
    assert unexpected == []
    assert result.returncode < 3  # 3 and above: errors, unsupported features, failures


def test_renders_with_man() -> None:
    man = shutil.which("man")
    if man is None:
        pytest.skip("man is not installed")
    env = dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0", LC_ALL="C.UTF-8")
    result = subprocess.run([man, "-l", str(MANPAGE)], capture_output=True, text=True, timeout=60,
                            env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    plain = re.sub(r".\x08", "", result.stdout)
    assert "CONFIGURATION DIRECTIVES (imap.cfg)" in plain
    assert "imap_thread_charge_num" in plain
    assert "gximap [-c config] [-t|--check] [--version] [-?|--help]" in plain


def test_update_man_splices(tmp_path: Path) -> None:
    assert splice_man_directives(page()) == page()
    stale = page().replace("\n.B context_num\n", "\n.B context_number\n")
    target = tmp_path / "gximap.8gx"
    target.write_text(stale, encoding="utf-8")
    assert config_main(["update-man", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == page()
    with pytest.raises(ValueError):
        splice_man_directives(".TH x 1\n")
