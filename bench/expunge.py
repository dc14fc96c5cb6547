"""What an EXPUNGE of many messages whose bodies are files costs: over IMAP side by side with
Dovecot, and in midb alone with the files removed after the answer (midb.removal) or inside it.

    .venv/bin/python -m bench.expunge [--servers gximap,dovecot] [--messages 20000] [--size 24576]
                                      [--piece 0] [--dir var/bench/expunge]

Both parts use --messages messages of --size bytes, by default above gximap's 16 KiB inline
limit so that each body is a file (as in a Maildir), fsync on as the servers run. The figures are
this machine's disk: removing a file costs a journal update. With --size 0 the messages are the
bench's own (1-5 KB, kept inside gximap's index, files in Dovecot's Maildir) and only the first
part runs.

1. Over IMAP, for each server of --servers: the bench's messages (bench.messages, padded to
   --size) are filled into a fresh account's INBOX with the server stopped, the server is started
   on 127.0.0.1, and one session selects INBOX, sends ``STORE 1:* +FLAGS.SILENT (\\Deleted)`` and
   then ``EXPUNGE``. It prints the time of each command and the time from the EXPUNGE until the
   folder's message files were gone (gximap removes them after the answer, Dovecot inside it),
   then the ratios gximap/Dovecot. A Maildir keeps flags in file names, so Dovecot's STORE renames
   every file.
2. In midb alone (no server): the store is filled, flagged and expunged in one transaction, or
   with --piece N in transactions of N messages as the server's bulk path does
   (gximap.session.pieces), once with the removals left to midb's threads and once with them
   made one at a time inside the timed command (midb's behaviour before midb.removal).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from bench import probes, servers
from bench.client import ImapError, quote
from gximap.daemon import INLINE_BODY_LIMIT
from midb import removal
from midb.store import Store

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "var" / "bench" / "expunge"
FILL_BATCH = 1000
REMOVAL_LIMIT = 600.0     # seconds a run waits for the files to go
FILES_POLL = 0.02


def _wait_until_gone(count_files: Callable[[], int], began: float) -> float:
    """Seconds from ``began`` until ``count_files()`` is 0 (polled)."""
    deadline = began + REMOVAL_LIMIT
    while count_files():
        if time.perf_counter() > deadline:
            raise ImapError(f"message files still there {REMOVAL_LIMIT:.0f} s after the EXPUNGE")
        time.sleep(FILES_POLL)
    return time.perf_counter() - began


def measure_server(name: str, directory: Path, messages: int, size: int) -> probes.Figures:
    """Seconds of the STORE and the EXPUNGE, and until the files were gone, for one server."""
    account = servers.make_accounts(1, prefix="expunge")[0]

    def fill(server: servers.BenchServer) -> None:
        server.fill(account.name, "INBOX", messages, size=size)

    with probes.started_server(name, directory, [account], max_sessions=16, fill=fill) as server:
        server.after_fill()
        # The fill writes without fsync. Removing a file whose blocks the filesystem has not yet
        # allocated (ext4's delayed allocation) frees nothing and costs a fraction of removing
        # a stored one, which is what mail long delivered is: write everything out first.
        os.sync()
        files = server.message_files(account.name, "INBOX")
        if size > INLINE_BODY_LIMIT and files < messages:
            raise ImapError(f"{name}: {files} message files for {messages} messages (not all bodies are files)")
        client = probes.LineClient(server.imap_port)
        try:
            client.command(b"LOGIN %s %s" % (quote(account.name), quote(account.password)))
            client.command(b"SELECT INBOX")
            began = time.perf_counter()
            client.command(b"STORE 1:* +FLAGS.SILENT (\\Deleted)")
            flagged = time.perf_counter() - began
            untagged: list[bytes] = []
            began = time.perf_counter()
            client.command(b"EXPUNGE", untagged)
            answered = time.perf_counter() - began
            gone = _wait_until_gone(lambda: server.message_files(account.name, "INBOX"), began)
            expunged = sum(1 for line in untagged if line.endswith(b" EXPUNGE"))
            if expunged != messages:
                raise ImapError(f"{name}: {expunged} EXPUNGE responses for {messages} messages")
            client.command(b"LOGOUT")
        finally:
            client.close()
    return {"store_s": flagged, "expunge_s": answered, "gone_s": gone}


def _store_round(path: Path, messages: int, size: int, piece: int, *, wait_inside: bool) -> tuple[float, float]:
    """In midb alone: (seconds until the expunge returned, seconds until its files were gone).
    ``wait_inside``: midb before midb.removal, the files removed one at a time inside the command."""
    unlinkers = removal.UNLINKERS
    removal.UNLINKERS = 1 if wait_inside else unlinkers
    try:
        return _timed_store_round(path, messages, size, piece, wait_inside=wait_inside)
    finally:
        removal.UNLINKERS = unlinkers


def _timed_store_round(path: Path, messages: int, size: int, piece: int, *,
                       wait_inside: bool) -> tuple[float, float]:
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
                store.wait_for_removals(REMOVAL_LIMIT)
        answered = time.perf_counter() - began
        if not store.wait_for_removals(REMOVAL_LIMIT):
            raise SystemExit(f"the removals did not finish within {REMOVAL_LIMIT:.0f} s")
        removed = time.perf_counter() - began
    shutil.rmtree(path, ignore_errors=True)
    return answered, removed


def _print_servers(names: list[str], args: argparse.Namespace) -> None:
    print("over IMAP, one session: STORE 1:* +FLAGS.SILENT (\\Deleted), then EXPUNGE")
    print(f"{'':10}{'STORE':>10}{'EXPUNGE':>10}{'files gone':>12}")
    results = probes.measure_each(
        names, lambda name: measure_server(name, args.dir / name, args.messages, args.size),
        lambda name, figures: (f"{name:10}{figures['store_s']:>9.2f}s{figures['expunge_s']:>9.2f}s"
                               f"{figures['gone_s']:>11.2f}s"))
    probes.print_ratios(results, [("STORE", "store_s"), ("EXPUNGE", "expunge_s"), ("files gone", "gone_s")])


def _print_store(args: argparse.Namespace) -> None:
    print(f"in midb alone, {'one transaction' if not args.piece else f'pieces of {args.piece:,}'}")
    print(f"{'':34}{'answered':>10}{'files gone':>12}")
    deferred = _store_round(args.dir / "midb", args.messages, args.size, args.piece, wait_inside=False)
    inside = _store_round(args.dir / "midb", args.messages, args.size, args.piece, wait_inside=True)
    for label, (answered, removed) in (("files removed after the answer", deferred),
                                       ("files removed inside (before)", inside)):
        print(f"{label:34}{answered:>9.2f}s{removed:>11.2f}s")
    print(f"answered in {deferred[0] / inside[0]:.2f} of the time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.expunge", description=__doc__.split("\n\n")[0])
    probes.add_server_options(parser, DEFAULT_DIR)
    parser.add_argument("--messages", type=int, default=20_000, help="messages expunged (default 20000)")
    parser.add_argument("--size", type=int, default=24 * 1024,
                        help="bytes per message (default 24576; 0: the bench's messages as they are)")
    parser.add_argument("--piece", type=int, default=0,
                        help="messages per transaction in midb alone (default: all in one)")
    args = parser.parse_args(argv)
    names = probes.server_names(parser, args)
    as_files = args.size > INLINE_BODY_LIMIT
    if args.messages < 1 or args.piece < 0 or not (as_files or args.size == 0):
        parser.error(f"--messages must be positive, --size 0 or above {INLINE_BODY_LIMIT}, --piece not negative")
    if not (names or as_files):
        parser.error("--size 0 measures the servers only: name at least one")
    print(f"EXPUNGE of {args.messages:,} messages of {args.size:,} bytes (bodies as files), fsync on" if as_files
          else f"EXPUNGE of {args.messages:,} of the bench's messages (1-5 KB), fsync on")
    try:
        if names:
            _print_servers(names, args)
        if as_files:
            _print_store(args)
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
