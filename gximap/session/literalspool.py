"""Large APPEND and REPLACE literals in unnamed temporary files while they arrive.

The framer (gximap.imap.framing, sans-IO) passes the octets of a literal of
``SPOOL_THRESHOLD`` octets or more to a :class:`FileSpool` as they come and reads it back once it
is complete, right before the command runs. So a client uploading a message slowly holds disk,
not memory: without it, each of ``context_num`` sessions could hold ``imap_max_literal_size``
octets for as long as its client took to send them. Dovecot likewise keeps an incoming message
in a temporary file (mail_temp_dir) beyond a few hundred KiB.

The files are made in the store's directory (``midb_path``) rather than in /tmp, which is often a
tmpfs, that is memory again. They are opened with O_TMPFILE where the file system has it: they
have no name, so nothing is left behind by a crash, and they are gone when closed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from gximap.imap.framing import LiteralSpool

# Literals from this size on are spooled; smaller ones (nearly every message) stay in memory,
# where a file would only cost system calls.
SPOOL_THRESHOLD = 1 << 20


class FileSpool:
    """An unnamed temporary file holding one literal's octets (a :class:`LiteralSpool`)."""

    def __init__(self, directory: str) -> None:
        self._file = tempfile.TemporaryFile(dir=directory, prefix=".spool-")
        self._size = 0

    def write(self, data: memoryview) -> None:
        fd = self._file.fileno()
        while data:
            written = os.write(fd, data)
            data = data[written:]
            self._size += written

    def read_all(self) -> bytes:
        fd = self._file.fileno()
        # Nearly always one pread; more if the file system reads in pieces. Joining one part
        # returns it as it is, without a copy.
        parts: list[bytes] = []
        done = 0
        while done < self._size:
            part = os.pread(fd, self._size - done, done)
            if not part:
                raise OSError(f"the spool file ended after {done} of {self._size} octets")
            parts.append(part)
            done += len(part)
        return b"".join(parts)

    def close(self) -> None:
        self._file.close()


def file_spool_factory(directory: str) -> Callable[[int], LiteralSpool]:
    """The framer's ``spool`` argument: a new :class:`FileSpool` in ``directory`` per literal."""

    def make(_size: int) -> LiteralSpool:
        return FileSpool(directory)

    return make
