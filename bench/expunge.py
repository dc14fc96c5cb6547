"""What an EXPUNGE of many messages whose bodies are files costs midb, with their files removed
after the answer (midb.removal) and, for comparison in the same run, inside it as before.

    .venv/bin/python -m bench.expunge [--messages 20000] [--size 24576] [--piece 0]
                                      [--dir var/bench/expunge]

Each round fills a folder of the store with --messages messages of --size bytes (above the
server's 16 KiB inline limit, so each body is a file), fsync on as the server runs, flags them
\\Deleted and expunges them all: in one transaction, or with --piece N in transactions of N
messages as the server's bulk path does (gximap.session.pieces). It prints the time until the
expunge returned and the time until the last file was gone, once with the removals left to
midb's thread and once waiting for them inside the timed command (the behaviour before
midb.removal). The figures are this machine's disk: removing a file costs a journal update.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from gximap.daemon import INLINE_BODY_LIMIT
from midb.store import Store

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "var" / "bench" / "expunge"
FILL_BATCH = 1000


def _round(path: Path, messages: int, size: int, piece: int, *, wait_inside: bool) -> tuple[float, float]:
    """(seconds until the expunge returned, seconds until its files were gone)."""
    shutil.rmtree(path, ignore_errors=True)
    filler = b"x" * max(0, size - 80) + b"\r\n"
    with Store(path, fsync=True, inline_limit=INLINE_BODY_LIMIT) as store:
        store.create_account("bench")
        inbox = store.get_folder("bench", "INBOX")
        assert inbox is not None
        uids: list[int] = []
        for start in range(0, messages, FILL_BATCH):
            items = [(b"Subject: %d\r\n\r\n" % number + filler, (), None, 0)
                     for number in range(start, min(messages, start + FILL_BATCH))]
            uids += store.append_many("bench", inbox.id, items)[1]
        store.store_flags("bench", inbox.id, uids, "add", ["\\Deleted"])
        step = piece or len(uids)
        began = time.perf_counter()
        for start in range(0, len(uids), step):
            store.expunge("bench", inbox.id, uids[start : start + step])
            if wait_inside:
                store.wait_for_removals(600)
        answered = time.perf_counter() - began
        if not store.wait_for_removals(600):
            raise SystemExit("the removals did not finish within 600 s")
        removed = time.perf_counter() - began
    shutil.rmtree(path, ignore_errors=True)
    return answered, removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.expunge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages expunged (default 20000)")
    parser.add_argument("--size", type=int, default=24 * 1024, help="bytes per message (default 24576)")
    parser.add_argument("--piece", type=int, default=0, help="messages per transaction (default: all in one)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="scratch directory (removed afterwards)")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.size <= INLINE_BODY_LIMIT or args.piece < 0:
        parser.error(f"--messages must be positive, --size above {INLINE_BODY_LIMIT}, --piece not negative")
    print(f"EXPUNGE of {args.messages:,} messages of {args.size:,} bytes (bodies as files), "
          f"{'one transaction' if not args.piece else f'pieces of {args.piece:,}'}, fsync on")
    print(f"{'':34}{'answered':>10}{'files gone':>12}")
    deferred = _round(args.dir, args.messages, args.size, args.piece, wait_inside=False)
    inside = _round(args.dir, args.messages, args.size, args.piece, wait_inside=True)
    for label, (answered, removed) in (("files removed after the answer", deferred),
                                       ("files removed inside (before)", inside)):
        print(f"{label:34}{answered:>9.2f}s{removed:>11.2f}s")
    print(f"answered in {deferred[0] / inside[0]:.2f} of the time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
