"""How much an LMDB commit costs by the number of B-trees it touches, on this machine's disk.

    .venv/bin/python -m bench.lmdb_trees [--duration 8] [--trees 8,4,2,1] [--shards 1]
                                         [--dir var/bench/lmdb-trees]

Two processes of five threads each (the shape of gximap's mixed load when it ran one serving process per CPU,
several sessions writing) commit transactions as fast as they can, with fsync on and the meta page
unsynced, as midb opens its environment. Every transaction writes the same eight small records
(60-byte values under adjacent keys); only the number of tables they are spread over changes. The
figure is commits per second. It is the measurement behind midb's schema 4 (midb.bodyrecords:
the records of a body side by side in one table): on the virtual disk this project is measured on,
eight tables gave about 1,270 commits/s and two about 3,100 — LMDB holds its single write lock
while the commit flushes, and the flush costs by the separately placed page.

With --shards N the writers spread over N environments instead of one (thread i of the ten
commits to environment i mod N), as midb's index shards do (midb.shards): each environment has
its own write lock and its own file to flush, so commits to different ones run in parallel.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import lmdb

RECORDS = 8          # records per transaction, whatever the number of tables
PRELOAD = 30_000     # records per table before the run, so the trees have a realistic depth
PROCESSES = 2
THREADS = 5
MAX_TABLES = 8
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "var" / "bench" / "lmdb-trees"


def _open(path: Path) -> tuple[lmdb.Environment, list[Any]]:
    env = lmdb.open(str(path), map_size=1 << 30, max_dbs=MAX_TABLES + 1, metasync=False)
    return env, [env.open_db(b"t%d" % index) for index in range(MAX_TABLES)]


def _prepare(path: Path, shards: int) -> None:
    """``shards`` environments under ``path``, holding PRELOAD records per table between them."""
    shutil.rmtree(path, ignore_errors=True)
    for shard in range(shards):
        (path / str(shard)).mkdir(parents=True)
        env, tables = _open(path / str(shard))
        try:
            with env.begin(write=True) as txn:
                for table in tables:
                    for _ in range(PRELOAD // shards):
                        txn.put(os.urandom(12), os.urandom(60), db=table)
        finally:
            env.close()


def _writer(path: Path, trees: int, duration: float, report: int, shards: int, process: int) -> None:
    """Child process: commit until the time is up, then write the count to ``report``."""
    opened = [_open(path / str(shard)) for shard in range(shards)]
    commits = [0] * THREADS
    stop = time.monotonic() + duration

    def run(slot: int) -> None:
        env, tables = opened[(process * THREADS + slot) % shards]
        rng = random.Random()
        value = b"v" * 60
        while time.monotonic() < stop:
            with env.begin(write=True) as txn:
                base = rng.randbytes(11)
                for index in range(RECORDS):
                    txn.put(base + bytes([index]), value, db=tables[index % trees])
            commits[slot] += 1

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for env, _tables in opened:
        env.close()
    os.write(report, b"%d\n" % sum(commits))


def commits_per_second(path: Path, trees: int, duration: float, shards: int = 1) -> float:
    """Fresh tables in ``shards`` environments, then PROCESSES writer processes for ``duration``
    seconds."""
    if not 1 <= trees <= MAX_TABLES:
        raise ValueError(f"trees must be 1-{MAX_TABLES}")
    if not 1 <= shards <= PROCESSES * THREADS:
        raise ValueError(f"shards must be 1-{PROCESSES * THREADS}")
    _prepare(path, shards)
    read_end, write_end = os.pipe()
    children = []
    try:
        for process in range(PROCESSES):
            pid = os.fork()
            if pid == 0:   # pragma: no cover - the child's work is measured, not traced
                status = 1
                try:
                    os.close(read_end)
                    _writer(path, trees, duration, write_end, shards, process)
                    status = 0
                finally:
                    os._exit(status)
            children.append(pid)
        os.close(write_end)
        write_end = -1
        failed = [pid for pid in children if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0]
        children = []
        if failed:
            raise RuntimeError(f"{len(failed)} writer process(es) failed")
        with os.fdopen(read_end, "rb") as reader:
            read_end = -1
            total = sum(int(line) for line in reader.read().split())
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
        for pid in children:   # only after an error: do not leave writers behind
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        shutil.rmtree(path, ignore_errors=True)
    return total / duration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lmdb_trees", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per figure (default 8)")
    parser.add_argument("--trees", default="8,4,2,1", help="tables per transaction to measure (default 8,4,2,1)")
    parser.add_argument("--shards", default="1",
                        help="environments the writers spread over, e.g. 1,10 (default 1)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="scratch directory (on the disk to measure)")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600]")
    try:
        counts = [int(part) for part in args.trees.split(",") if part.strip()]
        shard_counts = [int(part) for part in args.shards.split(",") if part.strip()]
    except ValueError:
        parser.error("--trees and --shards take comma-separated integers")
    print(f"{RECORDS} records per commit, {PROCESSES} processes x {THREADS} threads, fsync on, "
          f"{args.duration:g} s each, in {args.dir}")
    for shards in shard_counts:
        for trees in counts:
            rate = commits_per_second(args.dir, trees, args.duration, shards)
            where = "" if shards == 1 else f", {shards} environments"
            print(f"  {trees} table(s) per commit{where}: {rate:,.0f} commits/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
