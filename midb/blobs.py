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
from collections.abc import Iterator, Sequence

from midb.errors import MidbError, NoSuchBody, StoreBusy
from midb.keys import blob_key

TEMP_PREFIX = ".tmp-"
BLOB_RECORD = struct.Struct(">IQ")   # refcount, size
FANOUT = [f"{i:02x}" for i in range(256)]


def new_blob_id() -> str:
    return secrets.token_hex(16)


class BlobFiles:
    """The body file tree of one store."""

    def __init__(self, root: str, *, fsync: bool, create: bool) -> None:
        self.root = root
        self.fsync = fsync
        if create:
            fresh = not os.path.isdir(root)
            os.makedirs(root, mode=0o750, exist_ok=True)
            for sub in FANOUT:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(os.path.join(root, sub), 0o750)
            if fresh and fsync:
                _fsync_dir(root)
                _fsync_dir(os.path.dirname(root))

    def path(self, blob: str) -> str:
        blob_key(blob)   # validates: a body id never escapes the tree
        return os.path.join(self.root, blob[:2], blob)

    def write(self, data: bytes | bytearray | memoryview) -> str:
        """Store one body durably under a new id (no index reference yet)."""
        return self.write_many([data])[0]

    def write_many(self, bodies: Sequence[bytes | bytearray | memoryview]) -> list[str]:
        """Store several bodies; directory fsyncs are shared between bodies of the same fan-out dir."""
        written: list[str] = []
        dirs: set[str] = set()
        try:
            for data in bodies:
                blob = new_blob_id()
                directory = os.path.join(self.root, blob[:2])
                final = os.path.join(directory, blob)
                temp = os.path.join(directory, TEMP_PREFIX + blob)
                self._write_file(temp, data, directory)
                os.rename(temp, final)
                written.append(blob)
                dirs.add(directory)
            if self.fsync:
                for directory in dirs:
                    _fsync_dir(directory)
        except OSError as error:
            for blob in written:
                self.unlink(blob)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreBusy(f"cannot store message body: {error.strerror}") from error
            raise MidbError(f"cannot store message body: {error}") from error
        return written

    def _write_file(self, temp: str, data: bytes | bytearray | memoryview, directory: str) -> None:
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except FileNotFoundError:
            # Fan-out directory removed behind our back (or an old store): recreate it durably.
            os.makedirs(directory, mode=0o750, exist_ok=True)
            if self.fsync:
                _fsync_dir(self.root)
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
            with open(path, "rb", buffering=0) as handle:
                if offset:
                    handle.seek(offset)
                if length is None:
                    return handle.read()
                chunks = []
                remaining = length
                while remaining > 0:
                    chunk = handle.read(remaining)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    remaining -= len(chunk)
                return b"".join(chunks)
        except FileNotFoundError:
            raise NoSuchBody(f"body {blob} not found") from None
        except OSError as error:
            raise MidbError(f"cannot read body {blob}: {error}") from error

    def scan(self) -> Iterator[tuple[str, str, float]]:
        """Every file in the tree as (name, path, mtime): bodies and leftover temporaries."""
        try:
            subdirs = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for sub in subdirs:
            directory = os.path.join(self.root, sub)
            if not os.path.isdir(directory):
                continue
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        mtime = entry.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue
                    yield entry.name, entry.path, mtime


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pack_blob_record(refcount: int, size: int) -> bytes:
    return BLOB_RECORD.pack(refcount, size)


def unpack_blob_record(raw: bytes) -> tuple[int, int]:
    return BLOB_RECORD.unpack(raw)
