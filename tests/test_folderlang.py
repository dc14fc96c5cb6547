"""folder_lang.txt: format, shipped translations, lookup and fallbacks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from midb.folderlang import REPO_DATA_DIR, SPECIAL_FOLDERS, FolderLanguages, candidate_tags, parse
from midb.folders import normalize_name

REQUIRED = ["en", "de", "fr", "es", "it", "pt", "nl", "sv", "da", "nb", "fi", "pl", "cs", "sk", "hu", "ro",
            "ru", "uk", "el", "tr", "ja", "zh", "ko", "ca", "hr", "sl"]


@pytest.fixture(scope="module")
def shipped() -> FolderLanguages:
    return FolderLanguages.load([])


def test_shipped_file_is_found_and_complete(shipped: FolderLanguages) -> None:
    assert shipped.source == str(Path(REPO_DATA_DIR) / "folder_lang.txt")
    assert len(shipped.languages()) >= 24
    for lang in REQUIRED:
        entries = shipped.table[lang]
        assert set(entries) == set(SPECIAL_FOLDERS), lang
        names = list(entries.values())
        assert len(set(names)) == 5, f"{lang}: two special folders share a name"
        for name in names:
            assert normalize_name(name) == name and "/" not in name and name.upper() != "INBOX"


def test_shipped_file_parses_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    text = (Path(REPO_DATA_DIR) / "folder_lang.txt").read_text(encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="midb.folderlang"):
        parse(text)
    assert caplog.records == []


def test_names_lookup(shipped: FolderLanguages) -> None:
    assert shipped.names("de")["\\Trash"] == "Papierkorb"
    assert shipped.names("de_AT.UTF-8@euro")["\\Sent"] == "Gesendet"     # region falls back to language
    assert shipped.names("pt-BR")["\\Trash"] == "Lixeira"                 # region-specific entry wins
    assert shipped.names("pt_PT")["\\Trash"] == "Lixo"
    assert shipped.names("no") == shipped.names("nb")                     # alias tags share a section
    assert shipped.names("JA")["\\Junk"] == "迷惑メール"
    english = {"\\Drafts": "Drafts", "\\Sent": "Sent", "\\Trash": "Trash", "\\Junk": "Junk",
               "\\Archive": "Archive"}
    assert shipped.names(None) == english
    assert shipped.names("") == english
    assert shipped.names("tlh") == english


def test_candidate_tags() -> None:
    assert candidate_tags("de_DE.UTF-8") == ["de-de", "de"]
    assert candidate_tags(" FR ") == ["fr"]
    assert candidate_tags("zh-Hant-TW") == ["zh-hant-tw", "zh"]
    assert candidate_tags(None) == [] and candidate_tags("") == [] and candidate_tags(".utf8") == []


def test_format_details_and_fallback(caplog: pytest.LogCaptureFixture) -> None:
    text = """
# comment
[en]
Drafts = Entwurf-EN
[xx yy]
  sent   =   Gesendet XX
Trash = bad/name
Junk = INBOX
Bogus = Whatever
no equals sign
[]
Archive = orphan line after empty section
"""
    with caplog.at_level(logging.WARNING, logger="midb.folderlang"):
        table = parse(text, "test.txt")
    assert table["xx"] == table["yy"] == {"\\Sent": "Gesendet XX"}
    assert len(caplog.records) == 6
    assert all("test.txt:" in record.getMessage() for record in caplog.records)
    names = FolderLanguages(table, None).names("yy")
    # per entry: the section, then the file's [en], then built-in English
    assert names == {"\\Drafts": "Entwurf-EN", "\\Sent": "Gesendet XX", "\\Trash": "Trash", "\\Junk": "Junk",
                     "\\Archive": "Archive"}


def test_data_path_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "folder_lang.txt").write_text("[en]\nSent = Outbox Sent\n", encoding="utf-8")
    loaded = FolderLanguages.load([str(tmp_path / "missing"), str(first), str(second)])
    assert loaded.source == str(second / "folder_lang.txt")
    assert loaded.names("de")["\\Sent"] == "Outbox Sent"
    (first / "folder_lang.txt").write_bytes(b"\xff\xfe not utf-8")
    with caplog.at_level(logging.WARNING, logger="midb.folderlang"):
        fallback = FolderLanguages.load([str(first), str(second)])
    assert fallback.source == str(second / "folder_lang.txt") and caplog.records


def test_all_names_gathers_every_language(shipped: FolderLanguages) -> None:
    known = shipped.all_names()
    assert set(known) == set(SPECIAL_FOLDERS)
    assert {"Trash", "Papierkorb", "Corbeille", "Lixeira", "Lixo"} <= known["\\Trash"]
    assert "Papierkorb" not in known["\\Sent"]
    assert FolderLanguages({}, None).all_names() == {special: {special[1:]} for special in SPECIAL_FOLDERS}
