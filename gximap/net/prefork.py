"""Several serving processes under one parent (imap_process_num > 1).

Why processes: one CPython process runs Python code on one core at a time (the GIL), so on a
machine with more cores a single gximap leaves them idle while sessions wait. Each serving
process is a whole gximap (its own worker pool, its own LMDB handles, the same listeners); LMDB
serialises writers across processes, and midb's cross-process notifications tell IDLE sessions
in one process about mail stored by another.

The parent binds the listeners, drops privileges, then forks the serving processes before it
starts any thread (forking a threaded process is unsafe). It serves nothing itself: it waits
for them to report ready (then tells systemd), forwards SIGHUP and SIGTERM to them, and restarts
a process that dies, with a delay that doubles while restarts keep failing quickly. If a process
fails before it is ready the first time, the configuration is at fault: the parent stops the
others and exits non-zero.

A forked process shares the parent's memory copy-on-write, and CPython writes to every object it
uses (reference counts, and the specialized bytecode inside code objects): the first command of
each kind a new process runs would copy the pages of its code one page fault at a time (50-57
faults in the first STATUS, whose median went from about 600 to 310-390 µs without them;
bench/HISTORY.md, fortieth pass). own_code_pages copies gximap's and midb's functions and code
objects at the start instead: 7.5 MiB more private memory per process at start, 3.8 MiB more
after 60 sessions of assorted commands, which had copied most of those pages anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gximap.net.wakeup import WakePipe

log = logging.getLogger("gximap")

RESTART_DELAY = 1.0          # seconds before a process that died is started again
MAX_RESTART_DELAY = 30.0     # the doubling delay stops here
STABLE_AFTER = 10.0          # a process that ran this long resets the delay
READY_TIMEOUT = 120.0        # how long the first start of every process may take


@dataclass
class _Child:
    index: int
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    delay: float = RESTART_DELAY
    restart_at: float | None = None

    def restart_later(self, now: float) -> float:
        """Start it again ``delay`` seconds after ``now``, and wait twice as long the next time
        (up to MAX_RESTART_DELAY), should it die quickly again; -> the seconds until then."""
        wait = self.delay
        self.restart_at = now + wait
        self.delay = min(wait * 2, MAX_RESTART_DELAY)
        return wait


# The packages whose code own_code_pages copies into a new serving process.
OWN_PACKAGES = ("gximap", "midb")


def own_code_pages(packages: tuple[str, ...] = OWN_PACKAGES) -> int:
    """Touch every function (and its code object) defined at module or class level in
    ``packages``, so that this freshly forked process copies their pages now (see the module
    docstring). Returns how many functions were touched."""
    touched = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".", 1)[0] not in packages:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == name:
                touched += _touch_functions(vars(value).values())
            else:
                touched += _touch_functions((value,))
    return touched


def _touch_functions(values: Iterable[object]) -> int:
    touched = 0
    for value in list(values):
        for function in (value, getattr(value, "__func__", None), getattr(value, "fget", None)):
            if type(function) is types.FunctionType:
                _touch_code(function.__code__)  # a reference taken and dropped: both objects written
                touched += 1
    return touched


def _touch_code(code: types.CodeType) -> None:
    """The code objects of the functions, lambdas and comprehensions inside ``code`` too."""
    for constant in code.co_consts:
        if type(constant) is types.CodeType:
            _touch_code(constant)


class StartFailed(Exception):
    """A serving process exited before it was ready the first time."""


class Supervisor:
    """Forks ``count`` processes that each run ``serve(index, ready)`` and supervises them.

    ``serve`` returns an exit status; it must call ``ready()`` once it accepts connections.
    ``on_exit(index)`` is called when process ``index`` died while serving (before its restart).
    ``on_fork()`` runs first in every new process, with SIGHUP blocked (and its action reset to
    the default): it may install the process's own SIGHUP handler, which then receives a SIGHUP
    sent meanwhile. Without it a SIGHUP has its default action until ``serve`` sets one.
    """

    def __init__(self, count: int, serve: Callable[[int, Callable[[], None]], int], *,
                 stop_grace: float = 10.0, on_change: Callable[[Supervisor], None] | None = None,
                 on_exit: Callable[[int], None] | None = None,
                 on_fork: Callable[[], None] | None = None) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        self._serve = serve
        self._stop_grace = stop_grace
        self._on_change = on_change
        self._on_exit = on_exit
        self._on_fork = on_fork
        self.children = [_Child(index) for index in range(count)]
        self._ready_read, self._ready_write = os.pipe()
        os.set_blocking(self._ready_read, False)
        self._sigchld = WakePipe()  # poked by the SIGCHLD handler, which must take no lock

    # -- processes ------------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children if child.pid]

    def _fork(self, child: _Child) -> None:
        if threading.active_count() > 1:
            # A forked child would inherit locks held by threads that do not exist in it.
            log.warning("forking with %d threads running", threading.active_count())
        parent = os.getpid()
        # SIGHUP is blocked across the fork until the new process has its own handler (on_fork):
        # one sent meanwhile (a reload forwarded to a process being restarted) then reaches that
        # handler, instead of the parent's copied one or the default action, which ends it.
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            pid = os.fork()
        finally:
            if os.getpid() == parent:
                signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        if pid == 0:
            status = 70  # EX_SOFTWARE unless serve() returns normally
            try:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(signum, signal.SIG_DFL)
                if self._on_fork is not None:
                    self._on_fork()
                signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
                os.environ.pop("NOTIFY_SOCKET", None)  # only the parent talks to systemd
                _die_with_parent(parent)
                own_code_pages()
                os.close(self._ready_read)
                self._sigchld.close()
                status = self._serve(child.index, lambda: self._report_ready(child.index))
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.critical("process %d failed", child.index + 1, exc_info=True)
            finally:
                with contextlib.suppress(Exception):
                    logging.shutdown()
                os._exit(status)
        child.pid = pid
        child.started = time.monotonic()
        child.ready = False
        child.restart_at = None
        log.info("process %d/%d started (pid %d)", child.index + 1, self.count, pid)

    def _report_ready(self, index: int) -> None:
        os.write(self._ready_write, bytes([index]))

    def _collect_ready(self) -> None:
        while True:
            try:
                data = os.read(self._ready_read, 256)
            except BlockingIOError:
                return
            if not data:
                return
            for index in data:
                if 0 <= index < self.count:
                    self.children[index].ready = True

    def _reap(self) -> list[tuple[_Child, int, int]]:
        """Children that exited: (child, its pid, wait status)."""
        ended = []
        for child in self.children:   # by pid: never reap a child that is not ours
            if not child.pid:
                continue
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:   # reaped elsewhere: gone, status unknown
                pid, status = child.pid, 0
            if pid:
                child.pid = 0
                ended.append((child, pid, status))
        return ended

    # -- the parent's life ----------------------------------------------------------------------

    def start(self) -> None:
        """Fork every process and wait until all are ready; StartFailed if one exits first."""
        signal.signal(signal.SIGCHLD, lambda signum, frame: self._sigchld.poke())
        for child in self.children:
            try:
                self._fork(child)
            except OSError as exc:
                self.stop()   # the processes started so far
                raise StartFailed(f"cannot start process {child.index + 1}: {exc}") from None
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(child.ready for child in self.children):
            self._wait(0.2)
            self._collect_ready()
            for child, _pid, status in self._reap():
                self._collect_ready()
                self.stop()
                raise StartFailed(f"process {child.index + 1} exited during start-up "
                                  f"({describe_status(status)}); see the log")
            if time.monotonic() > deadline:
                self.stop()
                raise StartFailed(f"the serving processes were not ready within {READY_TIMEOUT:.0f} s")
        self._changed()

    def _wait(self, timeout: float) -> None:
        self._sigchld.wait(timeout, also=(self._ready_read,))

    def supervise(self, should_stop: Callable[[], bool], take_reload: Callable[[], bool],
                  wait: Callable[[float], None]) -> None:
        """Run until ``should_stop()``: restart processes that die, forward reloads."""
        while not should_stop():
            wait(0.5)
            self._collect_ready()
            if take_reload():
                self.signal_all(signal.SIGHUP)
            now = time.monotonic()
            for child, pid, status in self._reap():
                lived = now - child.started
                if lived >= STABLE_AFTER:
                    child.delay = RESTART_DELAY
                wait_for = child.restart_later(now)
                log.error("process %d/%d (pid %d) ended: %s; restarting in %.0f s",
                          child.index + 1, self.count, pid, describe_status(status), wait_for)
                if self._on_exit is not None:
                    self._on_exit(child.index)
                self._changed()
            for child in self.children:
                if not child.pid and child.restart_at is not None and now >= child.restart_at and not should_stop():
                    try:
                        self._fork(child)
                    except OSError as exc:
                        # EAGAIN or ENOMEM (the process or memory limit reached): tried again
                        # later, as a process that dies at once is; raised, it would end the
                        # parent and every healthy process with it.
                        log.error("process %d/%d cannot be started: %s; trying again in %.0f s",
                                  child.index + 1, self.count, exc, child.restart_later(now))
                        continue
                    self._changed()

    def signal_all(self, signum: int) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self) -> None:
        """SIGTERM every process, wait ``stop_grace`` seconds, then SIGKILL those left."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_grace
        while self.pids and time.monotonic() < deadline:
            self._reap()
            if self.pids:
                self._sigchld.wait(0.1)
        if self.pids:
            log.warning("processes %s did not stop in time; killing them", self.pids)
            self.signal_all(signal.SIGKILL)
            # Each of ours by its pid: waitpid(-1) could block on a child that is not ours (a
            # process embedding the supervisor, such as a test runner, may have others).
            for child in self.children:
                if child.pid:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(child.pid, 0)
                    child.pid = 0
        for child in self.children:
            child.restart_at = None
        with contextlib.suppress(OSError):
            os.close(self._ready_read)
        with contextlib.suppress(OSError):
            os.close(self._ready_write)
        self._sigchld.close()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)


def _die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this process when the parent dies (even by SIGKILL), so
    that no serving process outlives its supervisor and keeps a port."""
    try:
        import prctl

        prctl.set_pdeathsig(signal.SIGTERM)
    except (ImportError, OSError) as exc:
        log.warning("cannot ask to be stopped with the parent process: %s", exc)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return f"killed by {name}"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


__all__ = ["StartFailed", "Supervisor", "describe_status"]
