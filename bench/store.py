"""Benchmark of the midb store with one large folder.

    python bench/store.py [--messages 100000] [--dir DIR] [--batch 1000] [--no-fsync]

Fills one folder with generated messages (a few KB each) and prints figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TypeVar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from midb.store import Store  # noqa: E402

T = TypeVar("T")

WORDS = ("the quick brown fox jumps over lazy dog mail server index folder message body store "
         "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
         "meeting report invoice schedule project update review please attached thanks regards").split()


def make_message(rng: random.Random, number: int) -> bytes:
    paragraphs = []
    for _ in range(rng.randint(3, 12)):
        paragraphs.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))))
    body = "\r\n\r\n".join(paragraphs)
    headers = (
        f"Return-Path: <sender{number % 97}@example.org>\r\n"
        f"Received: from mx.example.org by mail.example.net; {formatdate(1_700_000_000 + number)}\r\n"
        f"From: Sender {number % 97} <sender{number % 97}@example.org>\r\n"
        f"To: Recipient <rcpt@example.net>\r\n"
        f"Subject: {' '.join(rng.choice(WORDS) for _ in range(5))} #{number}\r\n"
        f"Date: {formatdate(1_700_000_000 + number)}\r\n"
        f"Message-ID: <{number}.{rng.getrandbits(48):x}@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
    )
    return (headers + "\r\n" + body + "\r\n").encode("utf-8")


def timed(label: str, function: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = function()
    elapsed = time.perf_counter() - started
    print(f"  {label}: {elapsed * 1000:.1f} ms", flush=True)
    return result, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="messages in the big folder")
    parser.add_argument("--dir", help="store directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--batch", type=int, default=1000, help="messages per append_many call")
    parser.add_argument("--single", type=int, default=500, help="sample size of single appends")
    parser.add_argument("--threads", type=int, default=8, help="threads for the concurrent-append figure")
    parser.add_argument("--no-fsync", action="store_true", help="open the store with fsync=False")
    args = parser.parse_args()
    count = max(args.messages, 1)
    fsync = not args.no_fsync
    base = args.dir or tempfile.mkdtemp(prefix="midb-bench-")
    rng = random.Random(42)
    templates = [make_message(rng, n) for n in range(min(count, 2000))]
    print(f"midb store benchmark: {count} messages, fsync={fsync}, dir={base}")
    store = Store(base, fsync=fsync)
    try:
        if store.get_account("bench") is None:
            store.create_account("bench")
        big = store.create_folder("bench", f"Big-{int(time.time())}")
        side = store.create_folder("bench", f"Side-{int(time.time())}")

        print("insert")
        started = time.perf_counter()
        total_bytes = 0
        for start in range(0, count, args.batch):
            batch = []
            for number in range(start, min(start + args.batch, count)):
                data = templates[number % len(templates)]
                total_bytes += len(data)
                batch.append((data, ("\\Seen",) if number % 3 else (), 1_700_000_000 + number, 60))
            store.append_many("bench", big.id, batch)
        elapsed = time.perf_counter() - started
        print(f"  append_many (batches of {args.batch}): {count / elapsed:.0f} messages/s "
              f"({total_bytes / elapsed / 1e6:.1f} MB/s, {elapsed:.1f} s)")

        sample = min(args.single, count)
        started = time.perf_counter()
        for number in range(sample):
            store.append("bench", side.id, templates[number % len(templates)], flags=("$Bench",))
        elapsed = time.perf_counter() - started
        print(f"  single append: {sample / elapsed:.0f} messages/s ({elapsed / sample * 1000:.2f} ms each)")

        per_thread = max(sample // args.threads, 1)

        def worker() -> None:
            for number in range(per_thread):
                store.append("bench", side.id, templates[number % len(templates)])

        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        print(f"  single append from {args.threads} threads (group commit): "
              f"{per_thread * args.threads / elapsed:.0f} messages/s")

        print(f"read ({count} messages)")
        uids, _ = timed("uids()", lambda: store.uids("bench", big.id))
        timed("messages() (UIDs + flags + metadata)", lambda: store.messages("bench", big.id))
        timed("get_messages() of 1,000", lambda: store.get_messages("bench", big.id, uids[::max(len(uids) // 1000, 1)]))

        print("write")
        chosen = uids[1::max(len(uids) // 10_000, 1)][:10_000]
        timed(f"store_flags +\\Flagged on {len(chosen)}",
              lambda: store.store_flags("bench", big.id, chosen, "add", ["\\Flagged"]))
        victims = uids[::max(len(uids) // 10_000, 1)][:10_000]
        store.store_flags("bench", big.id, victims, "add", ["\\Deleted"])
        expunged, _ = timed(f"expunge {len(victims)} (whole-folder scan for \\Deleted)",
                            lambda: store.expunge("bench", big.id))

        folder = store.folder_by_id("bench", big.id)
        assert folder is not None
        mark = folder.highestmodseq
        remaining = store.uids("bench", big.id)
        changed = remaining[2::max(len(remaining) // 1000, 1)][:1000]
        store.store_flags("bench", big.id, changed, "add", ["$Changed"])
        (metas, vanished), _ = timed(f"changes_since after {len(changed)} changes",
                                     lambda: store.changes_since("bench", big.id, mark))
        print(f"    -> {len(metas)} changed, {len(vanished.uids)} vanished")
        (metas, vanished), _ = timed("changes_since(0) (full resync)",
                                     lambda: store.changes_since("bench", big.id, 0))
        print(f"    -> {len(metas)} changed, {len(vanished.uids)} vanished")

        print("maintenance")
        problems, _ = timed("verify()", store.verify)
        print(f"    -> {len(problems)} problems")
        print(f"  stats: {store.stats()}")
    finally:
        store.close()
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
