"""The signal-safe wake-up pipe (gximap.net.wakeup) and the SignalLatch built on it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

from gximap.net.wakeup import WakePipe


def test_a_poke_wakes_a_wait_and_is_consumed_by_it() -> None:
    pipe = WakePipe()
    try:
        started = time.monotonic()
        assert pipe.wait(0.0) is False
        pipe.poke()
        pipe.poke()
        assert pipe.wait(5.0) is True
        assert time.monotonic() - started < 4.0
        assert pipe.wait(0.0) is False  # both pokes were drained by the one wait
    finally:
        pipe.close()


def test_a_poke_from_another_thread_ends_a_long_wait() -> None:
    pipe = WakePipe()
    try:
        timer = threading.Timer(0.05, pipe.poke)
        timer.start()
        assert pipe.wait(30.0) is True
        timer.join()
    finally:
        pipe.close()


def test_a_full_pipe_drops_pokes_without_blocking() -> None:
    pipe = WakePipe()
    try:
        for _ in range(200_000):  # far beyond a pipe's buffer: a blocking write would hang here
            pipe.poke()
        assert pipe.wait(0.0) is True
        assert pipe.wait(0.0) is False
    finally:
        pipe.close()


def test_after_close_a_poke_writes_nothing_to_a_reused_descriptor(tmp_path) -> None:  # noqa: ANN001
    pipe = WakePipe()
    pipe.close()
    # The freed numbers go to the next files opened; a late poke (a signal after the
    # supervisor stopped) must not write a byte into one of them.
    path = tmp_path / "reused"
    fds = [os.open(path, os.O_WRONLY | os.O_CREAT) for _ in range(2)]
    try:
        pipe.poke()
        assert pipe.wait(0.0) is False
        assert path.read_bytes() == b""
    finally:
        for fd in fds:
            os.close(fd)


_FLOOD = textwrap.dedent("""
    import os, signal, sys, time
    from gximap.cli import SignalLatch

    latch = SignalLatch()
    latch.install()
    me = os.getpid()
    sender = os.fork()
    if sender == 0:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            os.kill(me, signal.SIGHUP)
            time.sleep(0.0002)
        os.kill(me, signal.SIGTERM)
        os._exit(0)
    reloads = 0
    while not latch.stop:
        latch.wait(0.0005)   # the daemon's loop, made tight so that signals land inside it
        if latch.reload:
            latch.reload = False
            reloads += 1
    os.waitpid(sender, 0)
    print(reloads)
""")


def test_signals_landing_inside_the_latch_wait_never_hang_it() -> None:
    # A handler that set a threading.Event deadlocked when it interrupted Event.wait()/clear()
    # holding the event's lock; a flood of SIGHUP while the main thread waits in a tight loop
    # hit that within a second or two. The latch must come through and still see SIGTERM.
    result = subprocess.run([sys.executable, "-c", _FLOOD], capture_output=True, text=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 0
