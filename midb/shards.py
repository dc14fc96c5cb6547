"""Where an account's data and a body's records live when the index is split into shards.

LMDB lets one writer at a time into an environment, and a commit holds that lock while it flushes
(fsync) the pages it wrote. With every account in one environment, every flag change, APPEND and
EXPUNGE of every user waits for the previous one's flush: on the disk this project is measured on
the store then commits at most about 2,000 times a second, whatever the CPUs could do. Gromox keeps
one database per user for the same reason. midb splits its index into a fixed number of shards,
each a complete LMDB environment with the same tables, and places every account wholly in one:
commits of accounts in different shards take different locks and flush different files, in
parallel (python -m bench.lmdb_trees --trees 4 --shards 1,10, two processes of five threads:
2,920 commits/s with one environment, 8,012 with ten).

Placement is computed, never looked up, so routing needs no directory and no cache that could go
stale:
  * an account lives in shard crc32(its normalised name) mod N; its id is k * N + shard, k from
    that shard's own counter, so an id names its shard too (id mod N);
  * a body's records (refcount, digest, summary, inline body) live in the shard of the account
    that stored it, and its random 128-bit id is drawn so that id mod N is that shard.
A body is never shared between shards: a copy into an account of another shard gets a body of its
own (midb.store), so a body's reference count is always one shard's business.

N is chosen when the store is created (Store(shards=...), the midb_shard_num directive) and
recorded in shard 0; a store created before shards existed has one. Shard 0 is <store>/index,
shard k > 0 is <store>/index.<k>.
"""

from __future__ import annotations

import os
import secrets
import zlib

from midb.keys import BLOB_ID_BYTES, MAX_U32

# Shard count of a store that records none (created before shards existed).
LEGACY_COUNT = 1
MAX_COUNT = 256
_BLOB_SPACE = 1 << (8 * BLOB_ID_BYTES)


def check_count(count: object) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise ValueError(f"shard count must be an integer from 1 to {MAX_COUNT}, not {count!r}")
    return count


def shard_dir(index_dir: str, shard: int) -> str:
    """The LMDB directory of a shard: shard 0 is the store's index directory itself."""
    return index_dir if shard == 0 else f"{index_dir}.{shard}"


def of_name(normalized_name: str, count: int) -> int:
    """The shard of an account, by its normalised name."""
    if count == 1:
        return 0
    return zlib.crc32(normalized_name.encode("utf-8")) % count


def of_account_id(account_id: int, count: int) -> int:
    return account_id % count


def account_id(sequence: int, shard: int, count: int) -> int:
    """The id of a shard's `sequence`-th account (sequence from 1); ValueError past the u32 space."""
    value = sequence * count + shard
    if value > MAX_U32:
        raise ValueError("account id space exhausted")
    return value


def of_blob(blob_raw: bytes, count: int) -> int:
    """The shard of a body, by its raw 16-byte id."""
    if count == 1:
        return 0
    return int.from_bytes(blob_raw, "big") % count


def of_blobs(blob_raws: list[bytes], count: int) -> list[int]:
    """of_blob of each body id, with the call per body left out (SORT of a folder whose messages
    lack sort entries places 100,000s)."""
    if count == 1:
        return [0] * len(blob_raws)
    return [int.from_bytes(blob_raw, "big") % count for blob_raw in blob_raws]


def new_blob_id(shard: int, count: int) -> str:
    """A random body id (32 hex digits) that of_blob places in `shard`."""
    value = int.from_bytes(secrets.token_bytes(BLOB_ID_BYTES), "big")
    if count > 1:
        value += shard - value % count
        if value >= _BLOB_SPACE:
            value -= count
    return value.to_bytes(BLOB_ID_BYTES, "big").hex()


def missing_dirs(index_dir: str, count: int) -> list[str]:
    """The shard directories of a store of `count` shards that are missing on disk."""
    return [shard_dir(index_dir, shard) for shard in range(count)
            if not os.path.isfile(os.path.join(shard_dir(index_dir, shard), "data.mdb"))]
