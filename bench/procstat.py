"""Process-tree figures from /proc: resident memory, proportional memory, CPU time, system memory.

A server is measured as its root process plus every live descendant (Dovecot forks one process per
IMAP session; gximap and pymap are single processes). CPU time of descendants that already exited
is included through the parent's ``cutime``/``cstime`` once they have been reaped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    closing = raw.rfind(b")")
    return raw[closing + 2:].decode("ascii", "replace").split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (empty when ``root`` is gone)."""
    if not os.path.exists(f"/proc/{root}"):
        return []
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    result = [root]
    index = 0
    while index < len(result):
        result.extend(children.get(result[index], ()))
        index += 1
    return result


def _status_kib(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS (shared pages are counted once per process)."""
    return sum(_status_kib(pid, b"VmRSS:") for pid in pids)


def pss_kib(pids: list[int]) -> int:
    """Sum of proportional set sizes (shared pages divided among their users)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
                for line in handle:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_seconds(root: int, pids: list[int] | None = None) -> float:
    """User+system CPU of the tree, including reaped children of its members."""
    total = 0
    for pid in pids if pids is not None else process_tree(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # Fields after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
        total += sum(int(value) for value in fields[11:15])
    return total / _CLOCK_TICKS


def storage_reads(pids: list[int]) -> dict[int, int]:
    """Bytes each process caused to be read from the storage layer (``read_bytes`` of
    /proc/PID/io): reads through read() and through page faults on a mapped file (LMDB) alike,
    so a step that found its files gone from the page cache shows it, whatever the server."""
    reads: dict[int, int] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io", "rb") as handle:
                for line in handle:
                    if line.startswith(b"read_bytes:"):
                        reads[pid] = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return reads


def reads_since(before: dict[int, int], after: dict[int, int]) -> int:
    """Bytes read between two :func:`storage_reads` samples; a process that appeared meanwhile
    (Dovecot starts one per session) counts from zero."""
    return sum(count - before.get(pid, 0) for pid, count in after.items())


def thread_count(pids: list[int]) -> int:
    return sum(_status_kib(pid, b"Threads:") for pid in pids)


@dataclass(frozen=True, slots=True)
class TreeSample:
    processes: int
    threads: int
    rss_kib: int
    pss_kib: int
    cpu_seconds: float


def sample_tree(root: int, *, with_pss: bool = True) -> TreeSample:
    pids = process_tree(root)
    return TreeSample(
        processes=len(pids),
        threads=thread_count(pids),
        rss_kib=rss_kib(pids),
        pss_kib=pss_kib(pids) if with_pss else 0,
        cpu_seconds=cpu_seconds(root, pids),
    )


def mem_available_kib() -> int:
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def mem_total_kib() -> int:
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle:
                if line.startswith(b"MemTotal:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
