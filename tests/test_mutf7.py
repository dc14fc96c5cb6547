"""Modified UTF-7 (RFC 3501 section 5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gximap.imap import mutf7

# RFC 3501 section 5.1.3 example, plus the usual suspects.
KNOWN = [
    ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("INBOX", b"INBOX"),
    ("", b""),
    ("&", b"&-"),
    ("a&b", b"a&-b"),
    ("&&", b"&-&-"),
    ("Entwürfe", b"Entw&APw-rfe"),
    ("Gelöschte Elemente", b"Gel&APY-schte Elemente"),
    ("Корзина", b"&BBoEPgRABDcEOAQ9BDA-"),
    ("😀", b"&2D3eAA-"),  # a surrogate pair
    ("é&ü", b"&AOk-&-&APw-"),
    ("tab\there", b"tab&AAk-here"),  # control characters are encoded, never raw
    ("~!\"#$%'()*+,-./:;<=>?@[\\]^_`{|}", b"~!\"#$%'()*+,-./:;<=>?@[\\]^_`{|}"),
]


@pytest.mark.parametrize(("text", "wire"), KNOWN)
def test_encode_known(text: str, wire: bytes) -> None:
    assert mutf7.encode(text) == wire


@pytest.mark.parametrize(("text", "wire"), KNOWN)
def test_decode_known(text: str, wire: bytes) -> None:
    assert mutf7.decode(wire) == text
    assert mutf7.is_valid(wire)


@pytest.mark.parametrize(
    "wire",
    [
        b"&",  # unterminated
        b"a&U,BTFw",  # unterminated shift
        b"&U,BTFw-&ZeVnLIqe-",  # adjacent shifts must be merged
        b"&AGE-",  # "a" encoded: printable ASCII must stand for itself
        b"&ACY-",  # "&" encoded instead of "&-"
        b"&AOl-",  # non-zero padding bits
        b"&AO-",  # dangling partial character
        b"&AOkA-",  # odd number of octets
        b"&2D0-",  # lone high surrogate
        b"&3gA-",  # lone low surrogate
        b"&U/BTFw-",  # "/" is not modified base64
        b"&U=BTFw-",
        "Entwürfe".encode(),  # raw 8-bit
        b"tab\there",  # raw control character
        b"nul\x00",
        b"del\x7f",
    ],
)
def test_decode_rejects(wire: bytes) -> None:
    with pytest.raises(ValueError):
        mutf7.decode(wire)
    assert not mutf7.is_valid(wire)


def test_encode_rejects_lone_surrogate() -> None:
    with pytest.raises(ValueError):
        mutf7.encode("bad\ud800")


_names = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)   # a list: mypy infers the tuple as tuple[str]


@settings(max_examples=300, deadline=None)
@given(_names)
def test_round_trip(name: str) -> None:
    wire = mutf7.encode(name)
    assert all(0x20 <= byte <= 0x7E for byte in wire)
    assert mutf7.decode(wire) == name


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=30) | st.text("&-AZaz09+,/=é", max_size=20).map(str.encode))
def test_decoder_accepts_only_canonical(wire: bytes) -> None:
    """Whatever the decoder accepts, the encoder would have produced byte for byte: no two
    spellings of one name."""
    try:
        name = mutf7.decode(wire)
    except ValueError:
        return
    assert mutf7.encode(name) == wire


@pytest.mark.parametrize(
    ("wire", "pattern"),
    [
        (b"Caf&AOk-*", "Café*"),  # valid sequences decode as in a name
        (b"a&-b%", "a&b%"),
        (b"a&*", "a&*"),  # an "&" that starts no sequence stands for itself
        (b"Caf&AO*", "Caf&AO*"),  # a typed prefix cut inside a sequence
        (b"*&*", "*&*"),
        (b"&AGE-x", "&AGE-x"),  # not canonical: taken literally (matches a name "&AGE-x")
        (b"&AOk-&AOk-", "\u00e9\u00e9"),  # adjacent sequences, refused in a name, decode here
        (b"&U,BTFw-&", "\u53f0\u5317&"),
    ],
)
def test_decode_pattern_keeps_what_is_no_sequence(wire: bytes, pattern: str) -> None:
    assert mutf7.decode_pattern(wire) == pattern


@pytest.mark.parametrize("wire", ["Entwürfe*".encode(), b"tab\t*", b"a&\x00"])
def test_decode_pattern_still_rejects_raw_bytes(wire: bytes) -> None:
    with pytest.raises(ValueError):
        mutf7.decode_pattern(wire)
