"""Every human-readable IMAP response text comes from data/imap_code.txt.

Scans the IMAP-serving code for byte-string constants that carry prose (two words in a row):
those would be texts an operator cannot reword or translate. Protocol tokens (``* BYE``,
``[TRYCREATE]``, ``FETCH``) are single words and pass; docstrings are ignored.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IMAP_CODE = [
    *sorted((REPO / "gximap" / "session").rglob("*.py")),
    *sorted((REPO / "gximap" / "imap").glob("*.py")),
    REPO / "gximap" / "daemon.py",
]
PROSE = re.compile(r"[A-Za-z]{2,} [a-z]{2,}")


def _docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def prose_constants(source: str) -> list[tuple[int, bytes]]:
    tree = ast.parse(source)
    docstrings = _docstring_nodes(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes) and id(node) not in docstrings:
            if PROSE.search(node.value.decode("latin-1")):
                hits.append((node.lineno, node.value))
    return hits


def test_the_scan_finds_a_hard_coded_text() -> None:
    assert prose_constants('line = b"a1 OK LOGIN completed\\r\\n"') == [(1, b"a1 OK LOGIN completed\r\n")]
    assert prose_constants('line = b"* BYE " + text') == []


@pytest.mark.parametrize("path", IMAP_CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_no_literal_response_text(path: Path) -> None:
    hits = prose_constants(path.read_text())
    assert not hits, f"{path}: response texts must come from data/imap_code.txt (gximap.imap.codes): {hits}"
