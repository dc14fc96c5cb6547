"""Fixtures shared by several test modules."""

from __future__ import annotations

from typing import Any

import pytest

from midb.env import SharedEnv


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
