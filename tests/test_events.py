"""Change notifications: inline in-process callbacks and unix datagrams across processes."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from midb import env, events
from midb.env import WriteEffects
from midb.errors import NoSuchAccount
from midb.events import JOINED, MAGIC, STOP, Notifier
from midb.store import Store

REPO = str(Path(__file__).resolve().parent.parent)
MSG = b"Subject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store", fsync=False) as opened:
        opened.create_account("alice")
        opened.create_account("bob")
        yield opened


def inbox(store: Store, account: str = "alice") -> int:
    info = store.get_folder(account, "INBOX")
    assert info is not None
    return info.id


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_local_callback_runs_inline_after_commit(store: Store) -> None:
    seen: list[tuple[str, int, int]] = []
    handle = store.watch("ALICE", lambda *event: seen.append(event))
    folder = inbox(store)
    store.append("alice", folder, MSG)
    info = store.folder_by_id("alice", folder)
    assert info is not None
    assert seen == [("alice", folder, info.highestmodseq)]     # delivered before append() returned
    store.append("bob", inbox(store, "bob"), MSG)
    assert len(seen) == 1                                    # other accounts do not wake us
    store.store_flags("alice", folder, [1], "add", ["\\Seen"])
    store.store_flags("alice", folder, [1], "add", ["\\Deleted"])
    store.expunge("alice", folder)
    assert [event[2] for event in seen] == sorted({event[2] for event in seen}) and len(seen) == 4
    handle.cancel()
    handle.cancel()
    store.append("alice", folder, MSG)
    assert len(seen) == 4 and not handle.active


def test_move_notifies_both_folders(store: Store) -> None:
    seen: list[tuple[str, int, int]] = []
    store.watch("alice", lambda *event: seen.append(event))
    trash = store.get_folder("alice", "Trash")
    assert trash is not None
    store.append("alice", inbox(store), MSG)
    seen.clear()
    store.move("alice", inbox(store), [1], trash.id)
    assert {event[1] for event in seen} == {inbox(store), trash.id}


def test_callback_errors_are_logged_not_raised(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def broken(account: str, folder_id: int, modseq: int) -> None:
        raise RuntimeError("boom")

    store.watch("alice", broken)
    store.watch("alice", lambda account, folder_id, modseq: seen.append(modseq))
    with caplog.at_level(logging.ERROR, logger="midb.events"):
        store.append("alice", inbox(store), MSG)
    assert len(seen) == 1
    assert any("boom" in record.getMessage() or record.exc_info for record in caplog.records)


def test_callback_may_use_the_store(store: Store) -> None:
    """Callbacks run with no midb lock held: they can read and even write."""
    results: list[object] = []

    def callback(account: str, folder_id: int, modseq: int) -> None:
        if not results:
            results.append(store.changes_since(account, folder_id, modseq - 1))
            results.append(store.claim_recent_range(account, folder_id)[0])

    store.watch("alice", callback)
    store.append("alice", inbox(store), MSG)
    changes, recent = results
    assert [m.uid for m in changes[0]] == [1] and recent == 0   # type: ignore[index]


def test_watch_unknown_account(store: Store) -> None:
    with pytest.raises(NoSuchAccount):
        store.watch("nobody", lambda *event: None)
    with pytest.raises(TypeError):
        store.watch("alice", "not callable")  # type: ignore[arg-type]


def test_change_in_subprocess_reaches_watcher(store: Store, tmp_path: Path) -> None:
    received: list[float] = []
    events: list[tuple[str, int, int]] = []
    arrived = threading.Event()

    def callback(account: str, folder_id: int, modseq: int) -> None:
        received.append(time.time())
        events.append((account, folder_id, modseq))
        arrived.set()

    store.watch("alice", callback)
    folder = inbox(store)
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from midb.store import Store
        with Store({store.path!r}, fsync=False) as other:
            started = time.time()
            other.append("alice", {folder}, b"from another process")
            print(started, flush=True)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    started = float(result.stdout.strip())
    assert arrived.wait(5.0)
    latency = received[0] - started
    print(f"cross-process notification latency (append + datagram): {latency * 1000:.1f} ms")
    assert latency < 1.0
    info = store.folder_by_id("alice", folder)
    assert info is not None
    assert events == [("alice", folder, info.highestmodseq)]


def test_stale_socket_is_removed(store: Store) -> None:
    notify_dir = os.path.join(store.run_dir, "notify")
    stale = os.path.join(notify_dir, "999999-dead.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(stale)
    sock.close()                    # the file stays, nobody listens: a crashed process
    assert os.path.exists(stale)
    store.append("alice", inbox(store), MSG)
    assert not os.path.exists(stale)


def test_socket_lifecycle(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", fsync=False)
    store.create_account("alice")
    notify_dir = os.path.join(store.run_dir, "notify")
    assert os.listdir(notify_dir) == []          # nothing bound until something watches
    handle = store.watch("alice", lambda *event: None)
    name, interest = sorted(name for name in os.listdir(notify_dir) if name != JOINED)
    assert name.startswith(f"{os.getpid()}-") and name.endswith(".sock")
    assert interest == name.removesuffix(".sock") + ".want"   # which accounts this process watches
    thread = store._notifier._thread
    assert thread is not None and thread.is_alive()
    handle.cancel()
    store.close()
    assert os.listdir(notify_dir) == [JOINED]   # the directory's join mark, no process's
    assert not thread.is_alive()


def test_close_with_a_full_queue_and_no_receiver_left_returns(tmp_path: Path) -> None:
    """The receiver thread leaves as soon as it sees the notifier closing, possibly with its
    queue still full of a busy peer's datagrams: close() must not then wait for room for its
    STOP forever (a process's shutdown hung so)."""
    receiver = Notifier(str(tmp_path))
    sender = Notifier(str(tmp_path))     # stands for a busy peer process
    try:
        receiver.watch(7, "alice", lambda *event: None)
        (name,) = [name for name in os.listdir(receiver.notify_dir) if name.endswith(".sock")]
        thread = receiver._thread
        assert thread is not None
        stop = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stop.sendto(STOP, receiver._address(name))    # the receiver thread leaves ...
        stop.close()
        thread.join(timeout=10)
        assert not thread.is_alive()
        for modseq in range(1, 200):                      # ... and its queue fills
            sender.publish([(7, 1, modseq)])
        closer = threading.Thread(target=receiver.close, daemon=True)
        closer.start()
        closer.join(timeout=10)
        assert not closer.is_alive()
        assert [name for name in os.listdir(receiver.notify_dir) if name.endswith(".sock")] == []
    finally:
        sender.close()


def test_long_run_dir_and_garbage(tmp_path: Path) -> None:
    """Socket paths beyond sun_path's 108 bytes go through /proc/self/fd; junk datagrams are ignored."""
    run_dir = tmp_path / ("d" * 60) / ("e" * 60)
    receiver = Notifier(str(run_dir))
    sender = Notifier(str(run_dir))     # stands for another process
    try:
        got: list[tuple[str, int, int]] = []
        receiver.watch(7, "alice", lambda *event: got.append(event))
        (name,) = [name for name in os.listdir(receiver.notify_dir) if name.endswith(".sock")]
        assert len(os.path.join(receiver.notify_dir, name)) > 108
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        raw.sendto(b"garbage", sender._address(name))
        raw.sendto(MAGIC + b"short", sender._address(name))
        raw.close()
        sender.publish([(8, 1, 5), (7, 3, 42)])
        assert wait_for(lambda: got == [("alice", 3, 42)])
    finally:
        sender.close()
        receiver.close()


def test_many_events_split_into_datagrams(tmp_path: Path) -> None:
    receiver = Notifier(str(tmp_path))
    sender = Notifier(str(tmp_path))
    try:
        got: list[int] = []
        receiver.watch(1, "alice", lambda account, folder_id, modseq: got.append(folder_id))
        sender.publish([(1, folder, 1) for folder in range(1, 601)])
        assert wait_for(lambda: len(got) == 600)
        assert got == list(range(1, 601))
    finally:
        sender.close()
        receiver.close()


def test_a_message_change_outranks_a_notice_of_the_same_folder() -> None:
    """One value per folder is announced: a job that both changed a folder's messages and
    noted a NOTIFY notice for it announces the modseq, which the selected-mailbox watchers need
    (they skip notices); two notices keep the higher, two modseqs the higher."""
    effects = WriteEffects()
    effects.changed(1, 5, events.NOTICE_METADATA)
    effects.changed(1, 5, 42)
    effects.changed(1, 5, events.NOTICE_METADATA)
    effects.changed(1, 0, events.NOTICE_SUBSCRIPTIONS)
    effects.changed(1, 0, events.NOTICE_METADATA)
    effects.changed(2, 7, 9)
    effects.changed(2, 7, 8)
    assert effects.changes == {(1, 5): 42, (1, 0): events.NOTICE_METADATA, (2, 7): 9}
    assert env._NOTICE_BIT == events.NOTICE  # midb.env repeats the bit: it cannot import events


def test_create_and_rename_announce_every_folder_they_make(store: Store) -> None:
    """A CREATE or RENAME that makes missing parents on the way announces each of them, not only
    the folder named: NOTIFY's MailboxName learns of every new mailbox from the events alone, in
    this process and in the others (where the child may be renamed or gone by the time it looks)."""
    seen: list[tuple[str, int, int]] = []
    store.watch("alice", lambda *event: seen.append(event))

    def ids(*names: str) -> list[int]:
        folders = [store.get_folder("alice", name) for name in names]
        assert None not in folders, names
        return sorted(folder.id for folder in folders if folder is not None)

    store.create_folder("alice", "a/b/c")
    assert sorted(event[1] for event in seen) == ids("a", "a/b", "a/b/c")
    seen.clear()
    store.rename_folder("alice", "a/b/c", "x/y/c")
    assert sorted(event[1] for event in seen) == ids("x", "x/y", "x/y/c")
    seen.clear()
    store.rename_folder("alice", "INBOX", "p/q")   # INBOX's messages move to a new folder
    assert sorted(event[1] for event in seen if not events.is_notice(event[2])) == ids("INBOX", "p", "p/q")


def test_rename_inbox_names_the_folder_inboxs_messages_moved_into(store: Store) -> None:
    """RENAME INBOX makes a new folder (RFC 3501 section 6.3.5); a notice names it, before the
    folders' events, so that NOTIFY can tell it as INBOX renamed (RFC 5465 section 5.4). Other
    events name no such folder."""
    seen: list[tuple[str, int, int]] = []
    store.watch("alice", lambda *event: seen.append(event))
    store.rename_folder("alice", "INBOX", "Old")
    moved = store.get_folder("alice", "Old")
    assert moved is not None
    notices = [(folder_id, modseq) for _account, folder_id, modseq in seen if events.is_notice(modseq)]
    assert notices == [(0, events.inbox_renamed_notice(moved.id))]
    assert events.inbox_renamed_to(notices[0][1]) == moved.id
    assert seen.index(("alice", 0, notices[0][1])) < min(index for index, event in enumerate(seen) if event[1])
    for other in (events.NOTICE_SUBSCRIPTIONS, events.NOTICE_METADATA, 7, (1 << 32) | 7):
        assert events.inbox_renamed_to(other) is None
