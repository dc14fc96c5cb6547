"""The response-text table: data/imap_code.txt and gximap.imap.codes."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gximap.imap.codes import (
    CODE_FILE_NAME,
    DEFAULT_RESPONSE_CODES,
    RESPONSE_CODE_EXEMPT,
    SHIPPED_CODE_FILE,
    Code,
    ResponseCodes,
    completion,
    parse_code_file,
)
from gximap.imap.parser import ParseError
from gximap.session.session import REFUSED_PARSES


@pytest.fixture(scope="module")
def shipped() -> ResponseCodes:
    return ResponseCodes.load(None)


def test_shipped_table_loads_cleanly(shipped: ResponseCodes) -> None:
    assert SHIPPED_CODE_FILE.is_file()
    assert shipped.warnings == []
    assert shipped.source == str(SHIPPED_CODE_FILE)


def test_every_code_constant_has_an_entry_and_vice_versa(shipped: ResponseCodes) -> None:
    constants = {int(code) for code in Code}
    assert constants - shipped.codes() == set(), "constants without a text"
    assert shipped.codes() - constants == set(), "texts without a constant"


def test_every_code_is_sent_by_something() -> None:
    """imap_code.txt is what operators translate: an entry that nothing sends is work for them
    and a promise the server does not keep. (A code may be named by attribute or, in tables, by
    Code.NAME; either spelling counts.)"""
    root = Path(__file__).resolve().parent.parent / "gximap"
    sources = "\n".join(path.read_text() for path in root.rglob("*.py") if path.name != "codes.py")
    unused = [code.name for code in Code if not re.search(rf"\b{code.name}\b", sources)]
    assert unused == []


def test_numbering_scheme(shipped: ResponseCodes) -> None:
    for code in Code:
        kind = int(code) // 10000
        assert 10000 <= code <= 49999
        if code.name.startswith("OK_"):
            assert kind == 2, code
        elif code.name.startswith("NO_"):
            assert kind == 3, code
        elif code.name.startswith("BAD_"):
            assert kind == 4, code
        else:
            assert kind == 1, code


# resp-text-code's atom, then an optional argument (RFC 9051 section 9); no "]" inside.
_RESPONSE_CODE = re.compile(rb"[A-Z][A-Z0-9-]*(?: [^\]\r\n]+)?\Z")


def test_every_refusal_text_has_a_response_code() -> None:
    """A NO or BAD always carries a code (the brief: bad input gets a clear answer): each of
    their texts has a default, but the client's own AUTHENTICATE cancellation."""
    refusals = {code for code in Code if code.name.startswith(("NO_", "BAD_"))}
    assert refusals - set(DEFAULT_RESPONSE_CODES) == set(RESPONSE_CODE_EXEMPT)
    assert set(DEFAULT_RESPONSE_CODES) <= refusals, "defaults for texts that are no refusal"
    for code, response_code in DEFAULT_RESPONSE_CODES.items():
        assert _RESPONSE_CODE.match(response_code), code


def test_completion_takes_the_default_only_for_a_refusal_without_a_code() -> None:
    assert completion(b"NO", None, b"Mailbox does not exist", Code.NO_MAILBOX_NOT_FOUND) == (
        b"NO [NONEXISTENT] Mailbox does not exist")
    assert completion(b"NO", b"TRYCREATE", b"Mailbox does not exist", Code.NO_MAILBOX_NOT_FOUND) == (
        b"NO [TRYCREATE] Mailbox does not exist")
    assert completion(b"BAD", None, b"Parse error: x", Code.BAD_PARSE) == b"BAD [CLIENTBUG] Parse error: x"
    assert completion(b"BAD", None, b"Authentication cancelled", Code.BAD_AUTH_CANCELLED) == (
        b"BAD Authentication cancelled")
    assert completion(b"OK", None, b"NOOP completed", Code.OK_NOOP) == b"OK NOOP completed"


def test_the_parsers_refusals_name_their_texts_usual_codes() -> None:
    """The session answers the parse errors that are refusals (NO) with their texts' usual
    codes, passing none of its own: those must be the codes the parser names."""
    assert ParseError(b"a", "x", "BADCHARSET").response_code == DEFAULT_RESPONSE_CODES[Code.NO_BAD_CHARSET]
    assert ParseError(b"a", "x", "CANNOT").response_code == DEFAULT_RESPONSE_CODES[Code.NO_INVALID_MAILBOX_NAME]
    assert ParseError(b"a", "x", "LIMIT").response_code == DEFAULT_RESPONSE_CODES[Code.NO_APPEND_TOO_MANY]
    for code, text in REFUSED_PARSES.items():
        assert ParseError(b"a", "x", code).response_code == DEFAULT_RESPONSE_CODES[text]


def test_the_table_does_not_import_the_parser() -> None:
    """The table takes the BADCHARSET code from gximap.imap.commands, where the parser takes it
    too: it does not depend on the parser."""
    probe = "import sys, gximap.imap.codes; print('gximap.imap.parser' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_texts(shipped: ResponseCodes) -> None:
    assert shipped.text(Code.OK_LOGGED_IN) == "Logged in"
    assert shipped.text(Code.GREETING, "mail.example.org") == "mail.example.org IMAP4rev1 service ready"
    assert shipped.text(Code.BAD_PARSE, "Missing argument") == "Parse error: Missing argument"
    assert shipped.text(Code.NO_MAILBOX_NOT_FOUND) == "Mailbox does not exist"
    assert shipped.text(Code.OK_STARTTLS) == "Begin TLS negotiation now"
    assert shipped.text(Code.NO_DELETE_INBOX) == "Cannot delete INBOX"


def test_plain_bytes_are_the_encoded_text_made_once(shipped: ResponseCodes) -> None:
    first = shipped.plain_bytes(Code.OK_STATUS)
    assert first == shipped.text(Code.OK_STATUS).encode("utf-8")
    assert shipped.plain_bytes(Code.OK_STATUS) is first
    assert ResponseCodes({int(Code.OK_STATUS): "Fertig ✓"}).plain_bytes(Code.OK_STATUS) == "Fertig ✓".encode()


def test_placeholder_filling_is_safe(shipped: ResponseCodes) -> None:
    # Missing arguments leave the slot empty; extra ones are dropped; CR/LF cannot inject lines.
    assert shipped.text(Code.NO_TRY_AGAIN) == "Try again later:"
    assert shipped.text(Code.NO_TRY_AGAIN, "store busy", "extra") == "Try again later: store busy"
    injected = shipped.text(Code.BAD_PARSE, "x\r\n* OK fake\x00")
    assert "\r" not in injected and "\n" not in injected and "\x00" not in injected
    assert shipped.text(Code.NO_LIMIT, 95) == "Limit exceeded: 95"


def test_ascii_table_folds_translations_and_arguments(shipped: ResponseCodes) -> None:
    # RFC 3501 section 9: response text is 7-bit (IMAP4rev1 sessions get ``ascii``).
    table = ResponseCodes({int(Code.OK_STATUS): "Fertig ✓ für Müller", int(Code.BAD_PARSE): "Fehler: <>",
                           1: "\u0301"})
    assert table.text(Code.OK_STATUS) == "Fertig ✓ für Müller"
    assert table.ascii.text(Code.OK_STATUS) == "Fertig ? fur Muller"
    assert table.ascii.plain_bytes(Code.OK_STATUS) == b"Fertig ? fur Muller"
    assert table.ascii.text(Code.BAD_PARSE, "Größe") == "Fehler: Gro?e"
    assert table.ascii.text(1) == "Response 1"   # nothing left once folded: never empty
    assert table.ascii.ascii is table.ascii
    assert shipped.ascii.text(Code.BAD_PARSE, "café") == "Parse error: cafe"
    assert shipped.text(Code.BAD_PARSE, "café") == "Parse error: café"


def test_unknown_code_never_raises(shipped: ResponseCodes) -> None:
    assert shipped.text(99999) == "Response 99999"
    assert shipped.text(12345, "detail") == "Response 12345 detail"
    assert ResponseCodes().text(Code.OK_NOOP) == f"Response {int(Code.OK_NOOP)}"


def test_text_never_starts_with_bracket_or_is_empty() -> None:
    table = ResponseCodes({1: "<>", 2: "[ALERT] fake code"})
    assert table.text(1, "[TRYCREATE] x") == "(TRYCREATE] x"
    assert table.text(2) == "(ALERT] fake code"
    assert table.text(1) == "Response 1"


def test_parse_code_file_format() -> None:
    table, warnings = parse_code_file(
        "# comment\n\n20200\tDone\n  30001   No such <> here  \nbogus line\n30001 Again\n40001\n",
        "test.txt",
    )
    assert table == {20200: "Done", 30001: "Again"}
    assert warnings == [
        "test.txt:5: expected '<code> <text>'",
        "test.txt:6: duplicate code 30001; the later entry wins",
        "test.txt:7: expected '<code> <text>'",
    ]


def test_data_file_path_first_existing_wins_and_shipped_fills_gaps(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / CODE_FILE_NAME).write_text("20500 Willkommen\n10001 <> IMAP-Dienst bereit\n", encoding="utf-8")
    (second / CODE_FILE_NAME).write_text("20500 Second\n", encoding="utf-8")
    codes = ResponseCodes.load(f"{missing}::{first}:{second}")
    assert codes.text(Code.OK_LOGGED_IN) == "Willkommen"
    assert codes.text(Code.GREETING, "h") == "h IMAP-Dienst bereit"
    assert codes.text(Code.NO_MAILBOX_NOT_FOUND) == "Mailbox does not exist"  # from the shipped table
    assert codes.source == str(first / CODE_FILE_NAME)


def test_data_file_path_entry_may_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "custom.txt"
    path.write_text("20200 Nothing to do\nnot a line\n", encoding="utf-8")
    codes = ResponseCodes.load(str(path))
    assert codes.text(Code.OK_NOOP) == "Nothing to do"
    assert any("custom.txt:2" in warning for warning in codes.warnings)


def test_shipped_file_header_documents_every_area() -> None:
    text = SHIPPED_CODE_FILE.read_text(encoding="utf-8")
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for code in Code:
        area = (int(code) // 100) % 100
        if int(code) // 10000 == 1 or area == 0:
            continue
        assert re.search(rf"\b{area:02d} [A-Z]", header), f"area {area:02d} of {code.name} undocumented"


GROMOX_FILE = """\
2160001 BYE abgemeldet
2160002 + warte
2170000 OK <domain> Dienst bereit
2170005 OK angemeldet
2170015 OK <APPENDUID> APPEND abgeschlossen
2170023 OK UID SEARCH abgeschlossen
2180004 BAD zuerst anmelden
2190004 NO <reason>: Anmeldung fehlgeschlagen
2200003 Ordner existiert nicht
2200004 midb interner Fehler
"""


def test_gromox_format_is_mapped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Gromox host's imap_code.txt (seven-digit codes, status words in the text) keeps working:
    its texts replace gximap's where the meaning has a counterpart; the rest is named once, at
    info level (Gromox's own file has a few dozen such entries)."""
    notes: list[str] = []
    table, warnings = parse_code_file(GROMOX_FILE + "20500 Willkommen\n", "gromox.txt", notes)
    assert table[Code.BYE_LOGOUT] == "abgemeldet"
    assert table[Code.CONT_IDLING] == "warte"
    assert table[Code.GREETING] == "<host_id> Dienst bereit"
    assert table[Code.OK_APPEND] == "APPEND abgeschlossen"
    assert table[Code.BAD_NOT_AUTHENTICATED] == "zuerst anmelden"
    assert table[Code.NO_AUTH_FAILED] == "Anmeldung fehlgeschlagen"  # placeholder and separator gone
    assert table[Code.NO_MAILBOX_NOT_FOUND] == "Ordner existiert nicht"
    assert table[Code.OK_LOGGED_IN] == "Willkommen"  # gximap's own numbering wins
    assert warnings == []
    assert notes == ["gromox.txt: 2 entries in Gromox's numbering have no gximap counterpart "
                     "and are ignored: 2170023, 2200004"]

    (tmp_path / CODE_FILE_NAME).write_text(GROMOX_FILE, encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="gximap.imap.codes"):
        codes = ResponseCodes.load(str(tmp_path))
    assert codes.text(Code.GREETING, "mx.example.org") == "mx.example.org Dienst bereit"
    assert codes.text(Code.OK_LOGGED_IN) == "angemeldet"
    assert codes.text(Code.OK_SELECT) == "SELECT completed"  # not in the file: the shipped text
    assert codes.warnings == []
    assert [r.levelno for r in caplog.records if "Gromox's numbering" in r.getMessage()] == [logging.INFO]


def test_gromox_status_word_is_the_ranges_own() -> None:
    """Only the status word Gromox puts in that range is taken off, and only in capitals: in a
    translation "No" or "Ok" may be an ordinary first word, and midb's 220xxxx have none."""
    table, warnings = parse_code_file("2200003 No existe la carpeta\n2200009 NO space\n"
                                      "2170014 Ok STATUS fertig\n2190010 NO No es un nombre válido\n"
                                      "2170015 OK <APPENDUID>\n")
    assert table[Code.NO_MAILBOX_NOT_FOUND] == "No existe la carpeta"
    assert table[Code.NO_OVER_QUOTA] == "NO space"
    assert table[Code.OK_STATUS] == "Ok STATUS fertig"
    assert table[Code.NO_INVALID_MAILBOX_NAME] == "No es un nombre válido"
    assert Code.OK_APPEND not in table
    assert warnings == ["<string>:5: Gromox code 2170015 has no text besides its status word and "
                        "placeholders; ignored"]


def test_gromox_mapping_targets_are_distinct_and_real() -> None:
    from gximap.imap.codes import GROMOX_CODES

    targets = list(GROMOX_CODES.values())
    assert len(targets) == len(set(targets))
    assert all(len(str(code)) == 7 for code in GROMOX_CODES)


def test_unknown_code_is_named() -> None:
    table, warnings = parse_code_file("20500 Hi\n20599 Typo\n", "x.txt")
    assert table == {20500: "Hi"}
    assert warnings == ["x.txt:2: code 20599 is not one gximap uses; ignored"]
