"""Per-language names of the special-use folders (data/folder_lang.txt; format in that file's header)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from midb.errors import InvalidName
from midb.folders import INBOX, SEPARATOR, normalize_name

log = logging.getLogger(__name__)

FILE_NAME = "folder_lang.txt"
REPO_DATA_DIR = str(Path(__file__).resolve().parent.parent / "data")
# An installed wheel ships the data files as gximap package data (same distribution as midb).
PACKAGE_DATA_DIR = str(Path(__file__).resolve().parent.parent / "gximap" / "_data")
# Special folders created with every account, in creation order.
SPECIAL_FOLDERS = ("\\Drafts", "\\Sent", "\\Trash", "\\Junk", "\\Archive")
_KEYS = {name[1:].lower(): name for name in SPECIAL_FOLDERS}
FALLBACK_LANG = "en"
BUILTIN_EN = {name: name[1:] for name in SPECIAL_FOLDERS}


class FolderLanguages:
    """Parsed folder_lang.txt: answers names(lang) with per-entry fallback to English."""

    def __init__(self, table: dict[str, dict[str, str]], source: str | None) -> None:
        self.table = table
        self.source = source

    @classmethod
    def load(cls, data_path: Iterable[str] | None = None) -> FolderLanguages:
        """Read the first folder_lang.txt found in data_path, else the one shipped with the package."""
        candidates = [*(data_path or ()), REPO_DATA_DIR, PACKAGE_DATA_DIR]
        for directory in candidates:
            path = os.path.join(directory, FILE_NAME)
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as error:
                log.warning("cannot read %s: %s", path, error)
                continue
            return cls(parse(text, path), path)
        log.warning("%s not found in %s; using English folder names", FILE_NAME, candidates)
        return cls({}, None)

    def languages(self) -> list[str]:
        return sorted(self.table)

    def names(self, lang: str | None) -> dict[str, str]:
        """special-use attribute ("\\Sent", ...) -> folder name for `lang`, English where missing."""
        result = dict(BUILTIN_EN)
        result.update(self.table.get(FALLBACK_LANG, {}))
        for tag in reversed(candidate_tags(lang)):
            result.update(self.table.get(tag, {}))
        return result

    def all_names(self) -> dict[str, set[str]]:
        """special-use attribute -> every name any language (English built in) gives it."""
        known = {special: {name} for special, name in BUILTIN_EN.items()}
        for section in self.table.values():
            for special, name in section.items():
                known[special].add(name)
        return known


def candidate_tags(lang: str | None) -> list[str]:
    """Lookup order for a language value: "de_AT.UTF-8@euro" -> ["de-at", "de"]."""
    if not lang or not isinstance(lang, str):
        return []
    tag = lang.strip().lower().split(".", 1)[0].split("@", 1)[0].replace("_", "-")
    if not tag:
        return []
    tags = [tag]
    primary = tag.split("-", 1)[0]
    if primary and primary != tag:
        tags.append(primary)
    return tags


def parse(text: str, source: str = FILE_NAME) -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    current: list[dict[str, str]] = []
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            tags = line[1:-1].lower().split()
            if not tags:
                log.warning("%s:%d: empty language section", source, number)
            current = [table.setdefault(tag, {}) for tag in tags]
            continue
        key, sep, value = line.partition("=")
        special = _KEYS.get(key.strip().lower())
        name = value.strip()
        if not sep or special is None or not current:
            log.warning("%s:%d: ignored line %r", source, number, raw_line)
            continue
        if not _acceptable(name):
            log.warning("%s:%d: unusable folder name %r", source, number, name)
            continue
        for section in current:
            section[special] = name
    return table


def _acceptable(name: str) -> bool:
    if not name or SEPARATOR in name:
        return False
    try:
        return normalize_name(name) == name and name.upper() != INBOX
    except InvalidName:
        return False
