"""Pausing the cyclic garbage collector (gximap.session.collector)."""

from __future__ import annotations

import gc

import pytest

from gximap.session import collector
from gximap.session.collector import collector_paused


def test_collector_paused_nests_and_restores() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("fails inside")
    assert gc.isenabled()


def test_pauses_that_overlap_for_long_let_a_full_collection_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent sessions' pauses may overlap without end: once the collector has been off for
    longer than _LONGEST_PAUSE, the next pause to start collects first (and the clock restarts)."""
    clock = [1000.0]
    collections: list[tuple[int, ...]] = []
    monkeypatch.setattr(collector.time, "monotonic", lambda: clock[0])

    def collect(*generation: int) -> int:
        collections.append(generation)
        return 0

    monkeypatch.setattr(collector.gc, "collect", collect)
    with collector_paused():
        clock[0] += collector._LONGEST_PAUSE / 2
        with collector_paused():
            pass
        assert collections == []
        clock[0] += collector._LONGEST_PAUSE
        with collector_paused():
            assert not gc.isenabled()
        assert collections == [()]   # a full collection
        with collector_paused():
            pass
        assert collections == [()]   # not again before another _LONGEST_PAUSE
    assert gc.isenabled()
