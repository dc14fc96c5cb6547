"""gximap.allocator: glibc malloc settings made at start-up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

from gximap import allocator


class _FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, parameter: Any, value: Any) -> int:
        self.calls.append((parameter.value, value.value))
        return self.answer


def test_both_settings_are_made_when_the_environment_gives_none() -> None:
    libc = _FakeLibc()
    assert allocator.tune({}, libc) == ["MALLOC_ARENA_MAX=2", "MALLOC_MMAP_THRESHOLD_=1048576"]
    assert libc.calls == [(allocator.M_ARENA_MAX, 2), (allocator.M_MMAP_THRESHOLD, 1 << 20)]


@pytest.mark.parametrize("environ", [
    {"MALLOC_ARENA_MAX": "8"},
    {"GLIBC_TUNABLES": "glibc.malloc.check=0:glibc.malloc.arena_max=8"},
])
def test_a_setting_the_administrator_gives_glibc_is_left_alone(environ: dict[str, str]) -> None:
    libc = _FakeLibc()
    assert allocator.tune(environ, libc) == ["MALLOC_MMAP_THRESHOLD_=1048576"]
    assert libc.calls == [(allocator.M_MMAP_THRESHOLD, 1 << 20)]
    libc = _FakeLibc()
    assert allocator.tune({"MALLOC_MMAP_THRESHOLD_": "65536", "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},
                          libc) == []
    assert libc.calls == []


def test_a_setting_glibc_refuses_is_not_reported() -> None:
    assert allocator.tune({}, _FakeLibc(answer=0)) == []


_SCRYPT_IN_TWO_THREADS = textwrap.dedent("""
    import hashlib, sys, threading
    from gximap import allocator
    if sys.argv[1] == "tuned":
        assert allocator.tune({}) == ["MALLOC_ARENA_MAX=2", "MALLOC_MMAP_THRESHOLD_=1048576"]
    def anonymous_kib():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    def hashes():   # midb.passwords' parameters: 16 MiB of working memory each
        for number in range(3):
            hashlib.scrypt(b"secret%d" % number, salt=b"salt", n=2**14, r=8, p=1, maxmem=64 << 20)
    before = anonymous_kib()
    threads = [threading.Thread(target=hashes) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(anonymous_kib() - before)
""")


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_hashing_threads_keep_no_scrypt_memory_once_tuned() -> None:
    """Two threads that each ran scrypt kept its 16 MiB in their arenas (the first free of a
    mapped block raises glibc's mmap threshold above it); with the settings they keep none."""
    def grown_kib(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", _SCRYPT_IN_TWO_THREADS, mode], capture_output=True,
                              text=True, timeout=120, check=True)
        return int(done.stdout)

    assert grown_kib("default") >= 16 * 1024
    assert grown_kib("tuned") < 4 * 1024
