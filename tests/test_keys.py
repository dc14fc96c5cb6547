"""Key encodings: fixed width, big-endian, so LMDB byte order equals numeric order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midb import keys
from midb.errors import InvalidArgument

u32 = st.integers(min_value=0, max_value=keys.MAX_U32)
u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(u32, u32, u32)
def test_message_key_round_trip(account: int, folder: int, uid: int) -> None:
    packed = keys.message_key(account, folder, uid)
    assert len(packed) == 12
    assert keys.unpack_message_key(packed) == (account, folder, uid)
    assert keys.UID_IN_MESSAGE_KEY.unpack_from(packed)[0] == uid
    assert packed.startswith(keys.folder_key(account, folder))


@given(u32, u32, u64, u32)
def test_change_key_round_trip(account: int, folder: int, modseq: int, uid: int) -> None:
    packed = keys.change_key(account, folder, modseq, uid)
    assert len(packed) == 20
    assert keys.unpack_change_key(packed) == (account, folder, modseq, uid)
    assert keys.UID_IN_CHANGE_KEY.unpack_from(packed)[0] == uid
    assert keys.MODSEQ_IN_CHANGE_KEY.unpack_from(packed)[0] == modseq


@given(st.lists(st.tuples(u32, u32, u32), min_size=2, max_size=30))
def test_byte_order_is_numeric_order(triples: list[tuple[int, int, int]]) -> None:
    by_bytes = sorted(triples, key=lambda triple: keys.message_key(*triple))
    assert by_bytes == sorted(triples)


@given(st.lists(u64, min_size=2, max_size=30))
def test_modseq_order(modseqs: list[int]) -> None:
    by_bytes = sorted(modseqs, key=lambda modseq: keys.change_key(1, 2, modseq, 3))
    assert by_bytes == sorted(modseqs)


def test_u32_u64_helpers() -> None:
    assert keys.unpack_u32(keys.pack_u32(0xDEADBEEF)) == 0xDEADBEEF
    assert keys.pack_u32(1) == b"\x00\x00\x00\x01"
    assert keys.unpack_u64(keys.pack_u64(1 << 40)) == 1 << 40
    assert keys.unpack_owner_key(keys.owner_key(7, 9)) == (7, 9)
    assert keys.unpack_folder_key(keys.folder_key(3, 4)) == (3, 4)


def test_name_key_sorts_by_code_point() -> None:
    names = ["b", "a/b", "a", "ä", "A", "a-b", "INBOX", "日本"]
    by_bytes = sorted(names, key=lambda name: keys.name_key(1, name))
    assert by_bytes == sorted(names)
    assert keys.unpack_name_key(keys.name_key(5, "Entwürfe")) == (5, "Entwürfe")


def test_prefix_end() -> None:
    assert keys.prefix_end(b"\x00\x01") == b"\x00\x02"
    assert keys.prefix_end(b"\x00\xff") == b"\x01"
    assert keys.prefix_end(b"\xff\xff") is None
    prefix = keys.folder_key(1, 2)
    end = keys.prefix_end(prefix)
    assert end is not None
    assert keys.message_key(1, 2, keys.MAX_U32) < end <= keys.message_key(1, 3, 0)


def test_blob_key_round_trip_and_validation() -> None:
    blob = "0123456789abcdef" * 2
    raw = keys.blob_key(blob)
    assert len(raw) == 16 and keys.blob_id(raw) == blob
    for bad in ["", "../../etc/passwd", "0123", "0123456789ABCDEF" * 2, "g" * 32, None, 5, "a" * 33]:
        with pytest.raises(InvalidArgument):
            keys.blob_key(bad)  # type: ignore[arg-type]
