"""Fixtures shared by several test modules."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gximap.session import progress
from midb.env import SharedEnv
from midb.store import Store


@pytest.fixture(autouse=True)
def progress_lines_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """No INPROGRESS lines (gximap.session.progress) in sessions run in the test process: they
    come after FIRST_AFTER seconds of wall-clock time, so a command slowed down by a loaded
    machine would add one to a transcript. tests/test_inprogress.py overrides this fixture."""
    monkeypatch.setattr(progress, "FIRST_AFTER", math.inf)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An empty store (fsync off) for the modules that do not define a ``store`` of their own."""
    opened = Store(tmp_path / "store", fsync=False, map_size=256 << 20)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the write batches committed (one LMDB commit each), in order."""
    sizes: list[int] = []
    original = SharedEnv._commit_batch

    def counting(self: Any, txn: Any, batch: list[Any]) -> bool:
        sizes.append(len(batch))
        return original(self, txn, batch)

    monkeypatch.setattr(SharedEnv, "_commit_batch", counting)
    return sizes
