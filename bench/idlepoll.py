"""How the machine's idle CPUs wait, and the guest halt polling that changes it for a run.

    idle_policy() -> {"cpuidle_driver": "haltpoll", "cpuidle_governor": "haltpoll", "guest_halt_poll_ns": 0}
    describe(policy) -> "cpuidle haltpoll (haltpoll governor), guest halt polling off"
    setting_refused(200_000) -> None, or why guest_halt_polling(200_000) cannot work here
    with guest_halt_polling(200_000): ...    # as root; the previous value is restored afterwards

Between two commands of one client a server's CPU goes idle. On a virtual machine whose idle
loop halts the vCPU at once (Linux's haltpoll cpuidle driver with guest_halt_poll_ns = 0, as on
the Firecracker VMs the bench has run on), the vCPU leaves, the host may run other work on the
core, and the next command meets a vCPU that has to be woken, with cold caches. A server with a
larger working set per command (an interpreter's) pays more for that than a small C one, so the
latency of one client's commands, one after another, depends on this setting as much as on the
server (bench/HISTORY.md, thirty-sixth pass). The bench records it with every run; ``--guest-halt-poll``
lets the guest poll for up to that many nanoseconds before it halts, for the run only, the way an
administrator tunes a VM for latency (Documentation/virt/guest-halt-polling.rst). Both servers
run under the same setting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["HaltPollUnavailable", "describe", "guest_halt_polling", "idle_policy", "setting_refused"]

SYSFS = Path("/sys")
_CPUIDLE = Path("devices/system/cpu/cpuidle")
_HALT_POLL_NS = Path("module/haltpoll/parameters/guest_halt_poll_ns")


class HaltPollUnavailable(Exception):
    """The guest's halt polling cannot be set here (no haltpoll driver, or not root)."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def idle_policy(root: Path = SYSFS) -> dict[str, str | int | None]:
    """The cpuidle driver and governor, and the guest halt-poll limit in ns (None: no haltpoll)."""
    poll = _read(root / _HALT_POLL_NS)
    return {
        "cpuidle_driver": _read(root / _CPUIDLE / "current_driver"),
        "cpuidle_governor": _read(root / _CPUIDLE / "current_governor_ro") or _read(root / _CPUIDLE / "current_governor"),
        "guest_halt_poll_ns": int(poll) if poll is not None and poll.isdigit() else None,
    }


def describe(policy: dict[str, str | int | None]) -> str:
    driver = policy.get("cpuidle_driver") or "none"
    governor = policy.get("cpuidle_governor")
    text = f"cpuidle {driver}" + (f" ({governor} governor)" if governor else "")
    poll = policy.get("guest_halt_poll_ns")
    if poll is None:
        return text
    return text + (f", guest halt polling up to {poll:,} ns" if poll else ", guest halt polling off")


def setting_refused(nanoseconds: int, root: Path = SYSFS) -> str | None:
    """Why guest_halt_polling(nanoseconds) would fail here, or None when it can set the limit."""
    if nanoseconds < 0:
        return "cannot be negative"
    path = root / _HALT_POLL_NS
    if _read(path) is None:
        return (f"{path} is missing: this machine has no guest halt polling "
                "(the haltpoll cpuidle driver is not loaded)")
    if not os.access(path, os.W_OK):
        return f"cannot write {path}: run as root"
    return None


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP, where they would kill the process outright, unwind it instead (so
    the ``finally`` that restores the machine's setting runs)."""
    replaced: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) == signal.SIG_DFL:
                replaced[signum] = signal.signal(signum, _exit_on_signal)
    try:
        yield
    finally:
        for restored, handler in replaced.items():
            signal.signal(restored, handler)


@contextlib.contextmanager
def guest_halt_polling(nanoseconds: int, root: Path = SYSFS) -> Iterator[None]:
    """Let idle vCPUs poll up to ``nanoseconds`` before halting, for the ``with`` block (also
    when SIGTERM or SIGHUP ends it)."""
    if nanoseconds < 0:
        raise ValueError("the halt-poll time cannot be negative")
    path = root / _HALT_POLL_NS
    previous = _read(path)
    if previous is None:
        raise HaltPollUnavailable(setting_refused(nanoseconds, root) or f"{path} cannot be read")
    try:
        path.write_text(f"{nanoseconds}\n", encoding="ascii")
    except OSError as exc:
        raise HaltPollUnavailable(f"cannot set {path} ({exc.strerror or exc}): run as root") from None
    try:
        with _signals_unwind():
            yield
    finally:
        path.write_text(f"{previous}\n", encoding="ascii")
