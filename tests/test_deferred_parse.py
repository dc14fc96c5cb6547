"""Parsing stored bodies after their commit (midb.deferred, Store(parse_delay=...), midb_parse_delay)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from midb import bodyrecords, deferred, mime
from midb.deferred import DeferredParser
from midb.keys import blob_key
from midb.store import Store
from midb.summary import decode_summary, summarize

MSG = (b"From: Ann <ann@example.org>\r\nTo: bob@example.org\r\nSubject: quarterly figures\r\n"
       b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <q1@example.org>\r\n\r\nall fine\r\n")
BIG = MSG + b"x" * 70_000 + b"\r\n"   # beyond any inline limit: stored as a file


# -- the queue, on a fake clock -------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bodies_become_due_after_the_delay_in_the_order_stored() -> None:
    clock = FakeClock()
    parser = DeferredParser(lambda batch: None, 2.0, clock=clock)
    parser._thread = threading.current_thread()   # keep the real thread out of a clock test
    parser.stored(["a", "b"])
    clock.now += 1.0
    parser.stored(["c"])
    assert parser.take_due(clock.now) == []
    assert parser.take_due(102.0) == [("a", None), ("b", None)]
    assert parser.take_due(102.5) == []
    assert parser.take_due(103.0) == [("c", None)]
    assert parser.pending() == 0


def test_a_digest_a_reader_computed_goes_first_and_replaces_the_parse() -> None:
    clock = FakeClock()
    parser = DeferredParser(lambda batch: None, 2.0, clock=clock)
    parser._thread = threading.current_thread()
    parser.stored(["a", "b"])
    parser.parsed("b", "digest of b")
    # Not yet due, but a reader's result is written at once: it costs no parse.
    assert parser.take_due(clock.now) == [("b", "digest of b")]
    assert parser.take_due(clock.now + 2.0) == [("a", None), ("b", None)]


def test_the_queue_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deferred, "QUEUE_LIMIT", 3)
    parser = DeferredParser(lambda batch: None, 0.0, clock=FakeClock())
    parser._thread = threading.current_thread()
    parser.stored(["a", "b", "c", "d"])
    parser.parsed("e", "digest")
    assert parser.pending() == 3 and parser.dropped == 1


def test_batches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deferred, "BATCH", 2)
    clock = FakeClock()
    parser = DeferredParser(lambda batch: None, 0.0, clock=clock)
    parser._thread = threading.current_thread()
    parser.stored(["a", "b", "c"])
    assert [len(parser.take_due(clock.now)) for _ in range(3)] == [2, 1, 0]


def test_the_thread_persists_due_bodies_and_stops_on_close() -> None:
    batches: list[list] = []
    arrived = threading.Event()

    def persist(batch: list) -> None:
        batches.append(batch)
        arrived.set()

    parser = DeferredParser(persist, 0.05)
    parser.stored(["a"])
    assert arrived.wait(10.0)
    assert batches == [[("a", None)]]
    parser.close()
    assert parser._thread is not None and not parser._thread.is_alive()
    parser.stored(["b"])   # after close: ignored
    assert parser.pending() == 0


def test_a_failing_persist_is_logged_and_the_thread_goes_on(caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deferred.time, "sleep", lambda seconds: None)
    calls: list[list] = []
    failed, done = threading.Event(), threading.Event()

    def persist(batch: list) -> None:
        calls.append(batch)
        if len(calls) == 1:
            failed.set()
            raise OSError("disk trouble")
        done.set()

    parser = DeferredParser(persist, 0.0)
    try:
        parser.stored(["a"])
        assert failed.wait(10.0)
        parser.stored(["b"])
        assert done.wait(10.0)
    finally:
        parser.close()
    assert calls == [[("a", None)], [("b", None)]]   # the failed batch is dropped, not retried
    assert "deferred parse of 1 bodies failed" in caplog.text


# -- a store with a parse delay ---------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", fsync=False, inline_limit=4096, parse_delay=0.2) as opened:
        opened.create_account("alice")
        yield opened


def _inbox(store: Store) -> int:
    info = store.get_folder("alice", "INBOX")
    assert info is not None
    return info.id


def _append(store: Store, message: bytes) -> str:
    """Append ``message`` to alice's INBOX; its body id."""
    folder = _inbox(store)
    _validity, uid = store.append("alice", folder, message)
    return store.get_messages("alice", folder, [uid])[0].blob


def _records(store: Store, blob: str, kind: int) -> bytes | None:
    return store._body_records(kind, [blob_key(blob)])[0]


def _stored(store: Store, blob: str, kind: int) -> bytes:
    """The record of this kind, which must be there."""
    record = _records(store, blob, kind)
    assert record is not None
    return record


def _wait_parsed(store: Store, blob: str) -> None:
    deadline = time.monotonic() + 10.0
    while _records(store, blob, bodyrecords.DIGEST) is None:
        assert time.monotonic() < deadline, "the body was not parsed"
        time.sleep(0.02)


class CountingDigest:
    """mime.digest as the store calls it, counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = mime.digest

        def counted(data: bytes) -> mime.Digest:
            self.calls += 1
            return real(data)

        monkeypatch.setattr(mime, "digest", counted)


@pytest.mark.parametrize("message", [MSG, BIG], ids=["inline", "file"])
def test_a_stored_body_is_parsed_after_the_delay(store: Store, message: bytes) -> None:
    blob = _append(store, message)
    assert _records(store, blob, bodyrecords.DIGEST) is None   # the APPEND did not parse it
    _wait_parsed(store, blob)
    expected = mime.digest(message)
    assert mime.decode_digest(_stored(store, blob, bodyrecords.DIGEST)) == expected
    assert decode_summary(_stored(store, blob, bodyrecords.SUMMARY)) == summarize(expected)


def test_a_body_expunged_before_its_turn_is_never_parsed(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingDigest(monkeypatch)
    folder = _inbox(store)
    _validity, uid = store.append("alice", folder, MSG, flags=["\\Deleted"])
    blob = store.get_messages("alice", folder, [uid])[0].blob
    store.expunge("alice", folder, [uid])
    deadline = time.monotonic() + 10.0
    while store._parser is not None and store._parser.pending():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.05)   # the batch taken from the queue has been handled
    assert counting.calls == 0
    assert _records(store, blob, bodyrecords.DIGEST) is None
    assert _records(store, blob, bodyrecords.REFS) is None


def test_a_reader_first_parses_it_once_and_its_result_is_stored(store: Store,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingDigest(monkeypatch)
    blob = _append(store, MSG)
    digest = store.digest(blob)   # FETCH ENVELOPE before the delay has passed
    assert digest.envelope.subject == b"quarterly figures"
    _wait_parsed(store, blob)
    assert counting.calls == 1
    assert mime.decode_digest(_stored(store, blob, bodyrecords.DIGEST)) == digest


def test_known_digest_answers_none_before_the_parse_without_parsing(store: Store,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingDigest(monkeypatch)
    blob = _append(store, BIG)
    assert store.known_digest(blob) is None   # FETCH BODY[] asks this: it must not parse 70 KB
    assert counting.calls == 0
    _wait_parsed(store, blob)
    known = store.known_digest(blob)
    assert known is not None and known == mime.digest(BIG) and known.contains_nul is False
    assert counting.calls == 2  # the deferred parser's, and the comparison's above


def test_search_summaries_of_unparsed_bodies_are_computed_and_then_stored(store: Store) -> None:
    blob = _append(store, MSG)
    found = store.search_summaries([blob_key(blob)])
    assert found[0] is not None
    assert decode_summary(found[0]) == summarize(mime.digest(MSG))
    _wait_parsed(store, blob)


def test_delivery_to_several_recipients_parses_each_copy(store: Store) -> None:
    store.create_account("bob")
    inbox_bob = store.get_folder("bob", "INBOX")
    assert inbox_bob is not None
    outcomes = store.append_batch([("alice", _inbox(store), MSG, ()), ("bob", inbox_bob.id, MSG, ())])
    for account, outcome in zip(("alice", "bob"), outcomes, strict=True):
        assert isinstance(outcome, tuple)
        folder = store.get_folder(account, "INBOX")
        assert folder is not None
        blob = store.get_messages(account, folder.id, [outcome[1]])[0].blob
        _wait_parsed(store, blob)


def test_bodies_still_queued_at_close_are_parsed_by_their_first_reader(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Store(path, fsync=False, parse_delay=3600) as first:
        first.create_account("alice")
        blob = _append(first, MSG)
    with Store(path, fsync=False) as second:   # parses at append; reads as ever
        assert _records(second, blob, bodyrecords.DIGEST) is None
        assert second.digest(blob) == mime.digest(MSG)
        assert second.summaries([blob])[0] == summarize(mime.digest(MSG))


def test_without_a_delay_the_append_parses() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory, Store(Path(directory), fsync=False) as store:
        store.create_account("alice")
        blob = _append(store, MSG)
        assert store._parser is None
        assert mime.decode_digest(_stored(store, blob, bodyrecords.DIGEST)) == mime.digest(MSG)


def test_the_thread_wakes_once_per_batch_window_not_per_body() -> None:
    clock = FakeClock()
    parser = DeferredParser(lambda batch: None, 2.0, clock=clock)
    parser._thread = threading.current_thread()
    notified: list[int] = []
    parser._wake.notify = lambda n=1: notified.append(n)   # type: ignore[method-assign]
    assert parser._wait_locked(clock.now) is None          # nothing queued: wait for a notify
    parser.stored(["a"])
    parser.stored(["b"])
    clock.now += 1.0
    parser.stored(["c"])
    assert len(notified) == 1                              # only the first body woke the thread
    assert parser._wait_locked(clock.now) == pytest.approx(2.0 - 1.0 + deferred.DUE_WINDOW)
    parser.parsed("d", "digest")
    assert len(notified) == 2                              # a reader's digest is written soon
    assert parser._wait_locked(clock.now) == pytest.approx(deferred.PARSED_WINDOW)
    parser.parsed("e", "digest")
    assert len(notified) == 2
