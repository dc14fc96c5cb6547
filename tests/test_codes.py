"""The response-text table: data/imap_code.txt and gximap.imap.codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gximap.imap.codes import CODE_FILE_NAME, SHIPPED_CODE_FILE, Code, ResponseCodes, parse_code_file


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


def test_texts(shipped: ResponseCodes) -> None:
    assert shipped.text(Code.OK_LOGGED_IN) == "Logged in"
    assert shipped.text(Code.GREETING, "mail.example.org") == "mail.example.org IMAP4rev1 service ready"
    assert shipped.text(Code.GREETING_PREAUTH, "h", "alice") == (
        "h IMAP4rev1 service ready, logged in as alice"
    )
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
    assert shipped.text(Code.INFO_QUOTA_WARNING, 95) == "Mailbox is 95% full"


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
        "# comment\n\n20001\tDone\n  30001   No such <> here  \nbogus line\n30001 Again\n40001\n",
        "test.txt",
    )
    assert table == {20001: "Done", 30001: "Again"}
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
