"""Message bodies as files: <root>/eml/<first two hex digits>/<blob id>.

Ordering rule (crash safety): a body file is written to a temporary name in its final directory,
fsynced, renamed into place and the directory fsynced BEFORE the index transaction that references
it commits. So a crash leaves at worst an orphan file (no index reference), never an index entry
without its file. Files whose refcount drops to 0 are unlinked only AFTER the index commit.

Body ids are random (128 bits) so concurrent processes never pick the same name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import struct
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from midb.env import blocking
from midb.errors import MidbError, NoSuchBody, StoreFull
from midb.keys import blob_key

T = TypeVar("T")

TEMP_PREFIX = ".tmp-"
BLOB_RECORD = struct.Struct(">IQ")   # refcount, size
PARALLEL_THRESHOLD = 8
WRITER_THREADS = 8

READ_SLICE = 32      # bodies one reader thread reads per task
READER_THREADS = 4


class PoolClosed(RuntimeError):
    """Work handed to a ProcessPool after its final shutdown (the daemon stopping)."""


class ProcessPool:
    """A thread pool for this process, created on first use and again in a forked child (threads
    do not survive fork(), and a lock held by one of them at the fork would never be released)."""

    _instances: weakref.WeakSet[ProcessPool] = weakref.WeakSet()

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._lock = threading.Lock()
        ProcessPool._instances.add(self)

    def get(self) -> ThreadPoolExecutor:
        """The pool's executor, started if need be; raises PoolClosed after ``shutdown(final=True)``."""
        with self._lock:
            if self._closed:
                raise PoolClosed(f"the {self.name} threads are stopped")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.name)
            return self._pool

    def shutdown(self, *, final: bool = False) -> None:
        """Wait for the work submitted so far, queued work included, and stop the threads. A
        later get() starts new ones, or with ``final`` raises PoolClosed: the daemon's stop, after
        which the store closes, so work handed over by a worker that outlived the stop's grace
        period would race the close. Called before the store closes: the work uses it."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._closed = self._closed or final
        if pool is not None:
            pool.shutdown(wait=True)

    @classmethod
    def _forget_after_fork(cls) -> None:
        for instance in list(cls._instances):
            instance._pool = None
            instance._closed = False
            instance._lock = threading.Lock()


os.register_at_fork(after_in_child=ProcessPool._forget_after_fork)

_writers = ProcessPool(WRITER_THREADS, "midb-body")   # batch body writes
_readers = ProcessPool(READER_THREADS, "midb-read")   # batch body reads


def new_blob_id() -> str:
    return secrets.token_hex(16)


class BlobFiles:
    """The body file tree of one store."""

    def __init__(self, root: str, *, fsync: bool, create: bool) -> None:
        self.root = root
        self.fsync = fsync
        if create and not os.path.isdir(root):
            # Fan-out directories are created on first use (see _write_file).
            os.makedirs(root, mode=0o750, exist_ok=True)
            if fsync:
                fsync_dir(root)
                fsync_dir(os.path.dirname(root))

    def path(self, blob: str) -> str:
        blob_key(blob)   # validates: a body id never escapes the tree
        return os.path.join(self.root, blob[:2], blob)

    def write(self, data: bytes | bytearray | memoryview) -> str:
        """Store one body durably under a new id (no index reference yet)."""
        return self.write_many([data])[0][0]

    def write_many(self, bodies: Sequence[bytes | bytearray | memoryview],
                   compute: Callable[[bytes], T] | None = None, *,
                   new_id: Callable[[], str] = new_blob_id) -> tuple[list[str], list[T | None]]:
        """Store several bodies durably under ids from new_id(); -> (body ids, compute(body) for
        each body).

        Large batches are written by a few threads at once: fsyncs of different files overlap, which
        roughly doubles throughput on a journaling filesystem. `compute` (the MIME digest) runs in
        the calling thread meanwhile, so its CPU time overlaps the I/O waits.
        """
        blobs = [new_id() for _ in bodies]
        try:
            if len(bodies) >= PARALLEL_THRESHOLD:
                pool = _writers.get()
                futures = [pool.submit(self._write_one, blob, data) for blob, data in zip(blobs, bodies, strict=True)]
                values = [compute(bytes(data)) if compute else None for data in bodies]
                with blocking():
                    errors = [future.result() for future in futures]
            else:
                values = [compute(bytes(data)) if compute else None for data in bodies]
                with blocking():
                    errors = [self._write_one(blob, data) for blob, data in zip(blobs, bodies, strict=True)]
            for error in errors:
                if error is not None:
                    raise error
            if self.fsync:
                with blocking():
                    for directory in {os.path.join(self.root, blob[:2]) for blob in blobs}:
                        fsync_dir(directory)
        except OSError as error:
            for blob in blobs:
                self.unlink(blob)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(f"cannot store message body: {error.strerror}") from error
            raise MidbError(f"cannot store message body: {error}") from error
        return blobs, values

    def _write_one(self, blob: str, data: bytes | bytearray | memoryview) -> OSError | None:
        directory = os.path.join(self.root, blob[:2])
        temp = os.path.join(directory, TEMP_PREFIX + blob)
        try:
            self._write_file(temp, data, directory)
            os.rename(temp, os.path.join(directory, blob))
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            return error
        return None

    def _write_file(self, temp: str, data: bytes | bytearray | memoryview, directory: str) -> None:
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except FileNotFoundError:
            # First body in this fan-out directory: create it, durably, before the body.
            os.makedirs(directory, mode=0o750, exist_ok=True)
            if self.fsync:
                fsync_dir(self.root)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data).cast("B")
            while view:
                done = os.write(fd, view)
                view = view[done:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.close(fd)

    def unlink(self, blob: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(blob))

    def size(self, blob: str) -> int | None:
        try:
            return os.stat(self.path(blob)).st_size
        except FileNotFoundError:
            return None

    def read(self, blob: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self.path(blob)
        if offset < 0 or (length is not None and length < 0):
            raise MidbError("negative offset or length")
        try:
            return _read_file(path, offset, length)
        except FileNotFoundError:
            raise NoSuchBody(f"body {blob} not found") from None
        except OSError as error:
            raise MidbError(f"cannot read body {blob}: {error}") from error

    def read_many(self, blobs: Sequence[str]) -> list[bytes | None]:
        """Whole bodies, in order; None for one whose file is gone. Long lists are read by a few
        threads at once (file reads release the GIL), so waits for the disk overlap."""
        paths = [self.path(blob) for blob in blobs]
        if len(paths) < 2 * READ_SLICE:
            return _read_files(paths)
        slices = [paths[start : start + READ_SLICE] for start in range(0, len(paths), READ_SLICE)]
        out: list[bytes | None] = []
        for part in _readers.get().map(_read_files, slices):
            out.extend(part)
        return out

    def scan(self) -> Iterator[tuple[str, str, str]]:
        """Every file in the tree as (directory name, name, path): bodies and leftover
        temporaries. Names only, no stat: at 100,000 bodies a stat each is most of the walk, and
        only the few files the index does not reference need their age (mtime())."""
        try:
            subdirs = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for sub in subdirs:
            directory = os.path.join(self.root, sub)
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        yield sub, entry.name, entry.path
            except (FileNotFoundError, NotADirectoryError):
                continue

    @staticmethod
    def mtime(path: str) -> float | None:
        """A file's modification time; None once it is gone."""
        try:
            return os.lstat(path).st_mtime
        except FileNotFoundError:
            return None


def _read_file(path: str, offset: int = 0, length: int | None = None) -> bytes:
    """``length`` bytes (to the end when None) from ``offset``: open, pread, close, and an fstat
    only when the length is not known (bodies never change once stored)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if length is None:
            length = max(0, os.fstat(fd).st_size - offset)
        data = os.pread(fd, length, offset)
        if len(data) == length or not data:
            return data
        chunks = [data]
        got = len(data)
        while got < length:
            chunk = os.pread(fd, length - got, offset + got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_files(paths: Sequence[str]) -> list[bytes | None]:
    out: list[bytes | None] = []
    for path in paths:
        try:
            out.append(_read_file(path))
        except FileNotFoundError:
            out.append(None)
    return out


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pack_blob_record(refcount: int, size: int) -> bytes:
    return BLOB_RECORD.pack(refcount, size)


def unpack_blob_record(raw: bytes) -> tuple[int, int]:
    return BLOB_RECORD.unpack(raw)
