"""COMPRESS (RFC 4978): DEFLATE both ways, from right after the tagged OK.

The handler only decides; the pool does the work (TransportAction.COMPRESS, applied once the
tagged OK has been written uncompressed). Compression sits above TLS, and the transport ends
every output batch with a DEFLATE sync flush, so an interactive response (or an IDLE push) is
never held back in the compressor.

The client may send nothing after COMPRESS until it has seen the tagged response (RFC 4978
section 3: it does not know yet whether its next bytes must be compressed). Whatever it sent
anyway is discarded: it cannot be told apart from compressed data.
"""

from __future__ import annotations

from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.net.handler import TransportAction
from gximap.session.base import AUTHENTICATED, CommandFailed, Done, command

ALGORITHMS = ("DEFLATE",)


@command(cmds.Compress, states=AUTHENTICATED)
def compress(session: Any, cmd: cmds.Compress) -> Done:
    if cmd.algorithm not in ALGORITHMS:
        raise CommandFailed(Code.BAD_COMPRESS_ALGORITHM, status="BAD")
    if session.compressed:
        raise CommandFailed(Code.NO_COMPRESSION_ACTIVE)
    session.block_input()
    return Done(Code.OK_COMPRESS, after=TransportAction.COMPRESS)
