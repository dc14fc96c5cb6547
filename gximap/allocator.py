"""glibc malloc settings for a long-running, threaded daemon, made once at start-up, before any
thread starts or serving process forks (forked processes inherit them).

Measured under hours of session churn (/work/notes/probe51-rss.md), two glibc defaults made a
serving process's memory grow although its Python heap stayed flat:

- **One arena per thread.** Each of the daemon's 17-19 threads (pool workers, poller, LMTP,
  password hashing, ...) gets a malloc arena of its own. A session moves between workers, so
  memory one thread allocated is freed into its arena by another, and every arena fragments on
  its own: about 0.5 KB more resident memory per session served, slowing but not levelling off
  for 25,000 sessions. With two arenas the process levelled off at 34 MB instead of 57 MB and
  more, at the same throughput.
- **The dynamic mmap threshold.** scrypt's 16 MiB working memory (midb.passwords) is mmapped
  and unmapped at first, but the first unmap raises glibc's threshold above 16 MiB, after
  which each hashing thread keeps one in its arena for good (+33 MB; malloc_trim does not take
  it back). A fixed 1 MiB threshold maps and unmaps every block of 1 MiB or more (about 9 ms
  more per uncached hash).

A setting the administrator gives glibc (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, or
GLIBC_TUNABLES naming it) is left as it is. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from typing import Any

# mallopt(3) parameters.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 1 << 20

# (parameter, value, its environment variable, its GLIBC_TUNABLES name)
_SETTINGS = (
    (M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX", "glibc.malloc.arena_max"),
    (M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
)


def _glibc() -> Any | None:
    """The process's C library when it is glibc (it has mallopt), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def tune(environ: Mapping[str, str], libc: Any | None = None) -> list[str]:
    """Make the settings above that ``environ`` does not give glibc already; what was set, as
    ``NAME=value`` (for the log). Nothing on another C library."""
    if libc is None:
        libc = _glibc()
        if libc is None:
            return []
    tunables = {part.partition("=")[0] for part in environ.get("GLIBC_TUNABLES", "").split(":") if part}
    done = []
    for parameter, value, variable, tunable in _SETTINGS:
        if variable in environ or tunable in tunables:
            continue
        if libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1:
            done.append(f"{variable}={value}")
    return done
