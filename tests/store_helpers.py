"""Helpers shared by the midb store tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from midb.store import Store


@contextlib.contextmanager
def store_with_alice(path: Path, **options: Any) -> Iterator[Store]:
    """A store at ``path`` (fsync off unless ``options`` say otherwise) with the account alice."""
    with Store(path, **{"fsync": False, **options}) as opened:
        opened.create_account("alice")
        yield opened


def folder_id(store: Store, name: str = "INBOX", account: str = "alice") -> int:
    info = store.get_folder(account, name)
    assert info is not None
    return info.id
