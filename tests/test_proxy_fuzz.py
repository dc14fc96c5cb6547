"""Property tests of the PROXY header decoder (gximap.net.proxy) against a reference written
from haproxy's doc/proxy-protocol.txt: whatever a peer sends, the decoder answers with a result,
"need more" or ProxyError, within bounded buffering, and the same however the bytes are split;
headers built by a reference encoder (v1 text; v2 binary with TLVs, the SSL TLV and CRC32C, of
every address family, and LOCAL) come back with their addresses and TLS facts.

GXIMAP_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_proxy_fuzz.py   (longer runs)
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gximap.net.proxy import (
    V1_MAX_LENGTH,
    V2_FIXED_LENGTH,
    V2_MAX_PAYLOAD,
    V2_SIGNATURE,
    ProxyDecoder,
    ProxyError,
    ProxyResult,
    crc32c,
)

EXAMPLES = int(os.environ.get("GXIMAP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The most a decoder may hold while it still says "need more": a v1 line (section 2.1: "If the
# CRLF sequence is not found in the first 107 characters, the receiver should declare the line
# invalid") or a v2 header of the largest payload gximap takes.
MOST_BUFFERED = V2_FIXED_LENGTH + V2_MAX_PAYLOAD

# TLV types of section 2.2.
PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_NOOP, PP2_TYPE_UNIQUE_ID = 1, 2, 3, 4, 5
PP2_TYPE_SSL, PP2_TYPE_NETNS = 0x20, 0x30
PP2_SUBTYPE_SSL_VERSION, PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_CIPHER = 0x21, 0x22, 0x23
PP2_CLIENT_SSL, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS = 0x01, 0x02, 0x04
AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX = 0, 1, 2, 3
UNSPEC, STREAM, DGRAM = 0, 1, 2
ADDRESS_BLOCK = {AF_UNSPEC: 0, AF_INET: 12, AF_INET6: 36, AF_UNIX: 216}


@dataclass(frozen=True)
class Expected:
    """What a header says, as the reference reads it."""

    version: int
    command: str
    addresses: tuple[bytes, int, bytes, int] | None  # packed source, port, packed destination, port
    client_tls: bool = False
    client_tls_version: str = ""


class Incomplete(Exception):
    """The reference needs more bytes to decide."""


# --- the reference decoder, straight from the spec ---------------------------------------------

def _tlv_list(data: bytes) -> list[tuple[int, bytes]] | None:
    """Section 2.2's TLVs filling ``data`` exactly, or None when they do not."""
    found, offset = [], 0
    while offset < len(data):
        if offset + 3 > len(data):
            return None
        kind, size = data[offset], int.from_bytes(data[offset + 1:offset + 3], "big")
        if offset + 3 + size > len(data):
            return None
        found.append((kind, data[offset + 3:offset + 3 + size]))
        offset += 3 + size
    return found


def _sub_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """The SSL TLV's sub-TLVs up to the first that does not fit (a client's TLS is never
    assumed from a damaged one)."""
    found, offset = [], 0
    while offset + 3 <= len(data):
        kind, size = data[offset], int.from_bytes(data[offset + 1:offset + 3], "big")
        if offset + 3 + size > len(data):
            break
        found.append((kind, data[offset + 3:offset + 3 + size]))
        offset += 3 + size
    return found


def _tls_facts(tlvs: list[tuple[int, bytes]]) -> tuple[bool, str]:
    """Section 2.2.6: PP2_CLIENT_SSL of the SSL TLV, and its version sub-TLV (as gximap logs it:
    printable ASCII of its first 32 bytes). An SSL TLV too short for client and verify is no
    SSL TLV."""
    for kind, value in tlvs:
        if kind != PP2_TYPE_SSL or len(value) < 5:
            continue
        if not value[0] & PP2_CLIENT_SSL:
            return False, ""
        for subtype, text in _sub_tlvs(value[5:]):
            if subtype == PP2_SUBTYPE_SSL_VERSION:
                return True, "".join(chr(byte) for byte in text[:32] if 0x20 <= byte < 0x7F)
        return True, ""
    return False, ""


def _v1_number(text: str, limit: int) -> int:
    # "Heading zeroes are not permitted in front of numbers" (section 2.1).
    if not text or len(text) > len(str(limit)) or not all("0" <= c <= "9" for c in text):
        raise ValueError(text)
    if len(text) > 1 and text[0] == "0" or int(text) > limit:
        raise ValueError(text)
    return int(text)


def _v1_reference(data: bytes) -> tuple[Expected, bytes]:
    end = data.find(b"\r\n")
    if end < 0 or end + 2 > V1_MAX_LENGTH:
        if len(data) >= V1_MAX_LENGTH or b"\n" in data[:V1_MAX_LENGTH]:
            raise ValueError("no CRLF within 107 bytes")
        raise Incomplete
    line = data[:end]
    if b"\n" in line:
        raise ValueError("a lone LF")  # "must not tolerate a single CR or LF character to end the line"
    if not line.isascii():
        raise ValueError("not US-ASCII")  # "one line of US-ASCII text", UNKNOWN's too
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        return Expected(1, "UNKNOWN", None), data[end + 2:]
    fields = line.split(b" ")
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ValueError("not the TCP4/TCP6 form")
    family = socket.AF_INET if fields[1] == b"TCP4" else socket.AF_INET6
    # inet_pton is what haproxy's own receiver reads the addresses with: no IPv6 scope, and
    # for IPv4 four decimal numbers without heading zeroes (glibc refuses "01").
    try:
        source = socket.inet_pton(family, fields[2].decode("latin-1"))
        destination = socket.inet_pton(family, fields[3].decode("latin-1"))
    except OSError:
        raise ValueError("not an address") from None
    ports = _v1_number(fields[4].decode("latin-1"), 65535), _v1_number(fields[5].decode("latin-1"), 65535)
    return Expected(1, "PROXY", (source, ports[0], destination, ports[1])), data[end + 2:]


def _v2_reference(data: bytes) -> tuple[Expected, bytes]:
    if len(data) < 16:
        raise Incomplete
    version, command = data[12] >> 4, data[12] & 0x0F
    family, protocol = data[13] >> 4, data[13] & 0x0F
    length = int.from_bytes(data[14:16], "big")
    if version != 2 or command not in (0, 1):
        raise ValueError("version or command")
    if length > V2_MAX_PAYLOAD:
        raise ValueError("gximap's cap on the payload")
    if len(data) < 16 + length:
        raise Incomplete
    header, rest = data[:16 + length], data[16 + length:]
    if command == 0:  # LOCAL: "discard the protocol block including the family"
        return Expected(2, "LOCAL", None), rest
    if family not in ADDRESS_BLOCK or protocol not in (UNSPEC, STREAM, DGRAM):
        raise ValueError("unassigned family or transport")
    block = ADDRESS_BLOCK[family]
    if length < block:
        raise ValueError("partial address block")
    tlvs = _tlv_list(header[16 + block:])
    if tlvs is None:
        raise ValueError("TLVs overrun")
    checksum_at = _first_crc_offset(header, 16 + block)  # the first one is checked (section 2.2.3)
    if checksum_at is not None:
        if int.from_bytes(header[checksum_at - 2:checksum_at], "big") != 4:
            raise ValueError("CRC32C size")
        zeroed = header[:checksum_at] + bytes(4) + header[checksum_at + 4:]
        if _reference_crc32c(zeroed) != int.from_bytes(header[checksum_at:checksum_at + 4], "big"):
            raise ValueError("CRC32C mismatch")
    tls = _tls_facts(tlvs)
    if family in (AF_UNSPEC, AF_UNIX):
        return Expected(2, "PROXY", None, *tls), rest
    if protocol != STREAM:
        raise ValueError("gximap serves TCP only")
    size = 4 if family == AF_INET else 16
    payload = header[16:]
    source, destination = payload[:size], payload[size:2 * size]
    source_port, destination_port = struct.unpack("!HH", payload[2 * size:2 * size + 4])
    return Expected(2, "PROXY", (source, source_port, destination, destination_port), *tls), rest


def _first_crc_offset(header: bytes, offset: int) -> int | None:
    while offset + 3 <= len(header):
        kind, size = header[offset], int.from_bytes(header[offset + 1:offset + 3], "big")
        if kind == PP2_TYPE_CRC32C:
            return offset + 3
        offset += 3 + size
    return None


def _reference_crc32c(data: bytes) -> int:
    """RFC 4960 appendix B, bit by bit (gximap's is table-driven)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def reference(data: bytes, mode: int) -> tuple[Expected, bytes]:
    """The reference's reading of everything a peer sent; ValueError: invalid; Incomplete."""
    if data.startswith(V2_SIGNATURE):
        return _v2_reference(data)
    if V2_SIGNATURE.startswith(data[:12]):
        raise Incomplete
    if mode == 1:
        if data.startswith(b"PROXY "):
            return _v1_reference(data)
        if b"PROXY ".startswith(data):
            raise Incomplete
    raise ValueError("no PROXY header")


# --- the reference encoder ---------------------------------------------------------------------

def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def encode_v2(command: int, family: int, protocol: int, addresses: bytes, tlvs: list[bytes], *,
              checksum: bool) -> bytes:
    """Section 2.2: signature, version 2 and command, family and transport, length, the
    address block and the TLVs; with ``checksum``, a PP2_TYPE_CRC32C TLV last, computed over the
    header with its value zeroed (section 2.2.3)."""
    body = addresses + b"".join(tlvs) + (tlv(PP2_TYPE_CRC32C, bytes(4)) if checksum else b"")
    header = V2_SIGNATURE + bytes([0x20 | command, family << 4 | protocol]) + len(body).to_bytes(2, "big") + body
    if checksum:
        header = header[:-4] + _reference_crc32c(header).to_bytes(4, "big")
    return header


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ipv4: st.SearchStrategy[IPAddress] = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
ipv6: st.SearchStrategy[IPAddress] = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
ports = st.integers(0, 65535)
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.encode)


@st.composite
def v1_headers(draw: st.DrawFn) -> tuple[bytes, Expected]:
    kind = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN"]))
    if kind == "UNKNOWN":
        tail = draw(st.sampled_from([b"", b" ffff::1 ::2 65535 65535", b" anything the proxy had"]))
        return b"PROXY UNKNOWN" + tail + b"\r\n", Expected(1, "UNKNOWN", None)
    address = ipv4 if kind == "TCP4" else ipv6
    source, destination = draw(address), draw(address)
    source_port, destination_port = draw(ports), draw(ports)
    # Section 2.1's forms: dotted decimal; IPv6 hex groups, "::" at most once (the
    # compressed, exploded and IPv4-mapped spellings are all that).
    exploded = draw(st.booleans())

    def spell(address: IPAddress) -> str:
        return address.exploded if exploded else str(address)

    line = f"PROXY {kind} {spell(source)} {spell(destination)} {source_port} {destination_port}\r\n"
    return line.encode(), Expected(1, "PROXY", (source.packed, source_port, destination.packed, destination_port))


ssl_sub_tlvs = st.lists(st.tuples(st.sampled_from([PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_CIPHER, 0x24, 0x25]),
                                  st.binary(max_size=30)), max_size=3)


@st.composite
def v2_headers(draw: st.DrawFn) -> tuple[bytes, Expected]:
    command = draw(st.sampled_from([0, 1]))
    family = draw(st.sampled_from([AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX]))
    protocol = STREAM if family in (AF_INET, AF_INET6) else draw(st.sampled_from([UNSPEC, STREAM, DGRAM]))
    addresses: tuple[bytes, int, bytes, int] | None = None
    if family in (AF_INET, AF_INET6):
        address = ipv4 if family == AF_INET else ipv6
        source, destination, source_port, destination_port = draw(address), draw(address), draw(ports), draw(ports)
        block = source.packed + destination.packed + struct.pack("!HH", source_port, destination_port)
        addresses = (source.packed, source_port, destination.packed, destination_port)
    elif family == AF_UNIX:
        block = b"".join(draw(st.binary(min_size=1, max_size=107)).ljust(108, b"\0") for _ in range(2))
    else:
        block = b""
    tlvs = [tlv(kind, value) for kind, value in draw(st.lists(st.tuples(
        st.sampled_from([PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_NOOP, PP2_TYPE_UNIQUE_ID, PP2_TYPE_NETNS, 0xE0]),
        st.binary(max_size=60)), max_size=3))]
    tls, version = False, ""
    if draw(st.booleans()):
        flags = draw(st.sampled_from([0, PP2_CLIENT_SSL, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS]))
        subs = [tlv(kind, value) for kind, value in draw(ssl_sub_tlvs)]
        tls = bool(flags & PP2_CLIENT_SSL)
        if tls:  # "the US-ASCII string representation of the TLS version is appended"
            spoken = draw(st.sampled_from([b"TLSv1.2", b"TLSv1.3", b""]) | ascii_text)
            subs.insert(draw(st.integers(0, len(subs))), tlv(PP2_SUBTYPE_SSL_VERSION, spoken))
            version = spoken[:32].decode()
        ssl = tlv(PP2_TYPE_SSL, bytes([flags]) + draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big") + b"".join(subs))
        tlvs.insert(draw(st.integers(0, len(tlvs))), ssl)
    header = encode_v2(command, family, protocol, block, tlvs, checksum=draw(st.booleans()))
    if command == 0:
        return header, Expected(2, "LOCAL", None)
    return header, Expected(2, "PROXY", addresses, tls, version)


def as_expected(result: ProxyResult) -> Expected:
    addresses = None
    if result.addresses is not None:
        found = result.addresses
        addresses = (ipaddress.ip_address(found.source_host).packed, found.source_port,
                     ipaddress.ip_address(found.dest_host).packed, found.dest_port)
    return Expected(result.version, result.command, addresses, result.client_tls, result.client_tls_version)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in zip(points, points[1:], strict=False)]


def decode(pieces: list[bytes], mode: int) -> tuple[ProxyResult, bytes] | None:
    """Feed ``pieces`` one at a time until a result: it, and the stream after the header (its
    remainder and the pieces not fed). ProxyError propagates. Checks that no more than
    MOST_BUFFERED bytes are ever held while the decoder still wants more."""
    decoder, fed = ProxyDecoder(mode), 0
    for index, piece in enumerate(pieces):
        fed += len(piece)
        result = decoder.feed(piece)
        if result is not None:
            return result, result.remainder + b"".join(pieces[index + 1:])
        assert fed <= MOST_BUFFERED, f"{fed} bytes buffered without a decision"
    return None


def outcome(pieces: list[bytes], mode: int) -> tuple[str, Expected | None, bytes]:
    try:
        decoded = decode(pieces, mode)
    except ProxyError as error:
        assert str(error)
        return "invalid", None, b""
    if decoded is None:
        return "incomplete", None, b""
    return "decoded", as_expected(decoded[0]), decoded[1]


# --- the properties -------------------------------------------------------------------------

@FUZZ
@given(v1_or_v2=st.one_of(v1_headers(), v2_headers()), after=st.binary(max_size=30),
       cuts=st.lists(st.integers(0, 400), max_size=6))
def test_encoded_headers_decode_to_what_they_carry(v1_or_v2: tuple[bytes, Expected], after: bytes,
                                                   cuts: list[int]) -> None:
    """A header of the reference encoder, followed by the stream and fed in any pieces, gives
    back its addresses, command and TLS facts, and the stream's bytes as the remainder."""
    header, expected = v1_or_v2
    for mode in ((1, 2) if expected.version == 2 else (1,)):
        assert outcome(split(header + after, cuts), mode) == ("decoded", expected, after)


def mutations() -> st.SearchStrategy[bytes]:
    """Valid headers with a few bytes overwritten, inserted or cut; and raw bytes after the
    signatures."""
    valid = st.one_of(v1_headers(), v2_headers()).map(lambda pair: pair[0])

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid) + draw(st.binary(max_size=8)))
        for _ in range(draw(st.integers(1, 3))):
            where = draw(st.integers(0, len(data)))
            action = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
            if action == "set" and where < len(data):
                data[where] = draw(st.sampled_from([0, 0x0A, 0x0D, 0x20, 0x25, 0x30, 0x3A, 0xFF]) | st.integers(0, 255))
            elif action == "insert":
                data[where:where] = draw(st.binary(min_size=1, max_size=3))
            elif action == "delete":
                del data[where:where + draw(st.integers(1, 3))]
            else:
                del data[where:]
        return bytes(data)

    raw = st.tuples(st.sampled_from([b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", V2_SIGNATURE,
                                     V2_SIGNATURE + b"\x21"]),
                    st.binary(max_size=300)).map(b"".join)
    return st.one_of(mutated(), raw)


@FUZZ
@given(data=mutations(), mode=st.sampled_from([1, 2]), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_any_bytes_are_read_as_the_spec_reads_them(data: bytes, mode: int, cuts: list[int]) -> None:
    """Whatever bytes come, in whatever pieces: a result, "need more" or ProxyError (nothing
    else raised), with bounded buffering; a result only where the reference finds a valid
    header, and the same one; an error wherever it finds an invalid one."""
    pieces = split(data, cuts)
    got = outcome(pieces, mode)
    assert got == outcome([data], mode), "the answer depends on how the bytes were split"
    try:
        expected, rest = reference(data, mode)
    except Incomplete:
        # Still undecided by the spec: gximap may wait, or refuse early what cannot become valid.
        assert got[0] in ("incomplete", "invalid")
        return
    except ValueError:
        assert got[0] == "invalid", f"accepted what the spec refuses: {got}"
        return
    assert got == ("decoded", expected, rest)


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.0.2.1 192.0.2.2 080 143\r\n",  # a port with a heading zero
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 0143\r\n",
    b"PROXY TCP6 fe80::1%\x1b[31m ::1 1 2\r\n",  # an IPv6 scope: escape sequences into the log
    b"PROXY UNKNOWN x\ny\r\n",  # a lone LF before the CRLF (refused when it came in its own piece)
    V2_SIGNATURE + b"\x21\x3f\x00\x00",  # AF_UNIX with an unassigned transport
    V2_SIGNATURE + b"\x21\x0f\x00\x00",  # AF_UNSPEC with an unassigned transport
    V2_SIGNATURE + b"\x21\x31\x00\x05abcde",  # a partial AF_UNIX address block
])
def test_headers_the_spec_refuses_are_refused(header: bytes) -> None:
    """The cases the properties above found accepted (doc/proxy-protocol.txt sections 2.1, 2.2)."""
    with pytest.raises(ProxyError):
        ProxyDecoder(1).feed(header)


def test_gximap_crc32c_matches_the_bitwise_reference() -> None:
    """RFC 4960 appendix B's check value, and agreement on other inputs."""
    assert crc32c(b"123456789") == _reference_crc32c(b"123456789") == 0xE3069283
    for data in (b"", b"\0" * 32, bytes(range(256))):
        assert crc32c(data) == _reference_crc32c(data)


@pytest.mark.parametrize("cut", [None, 16])
def test_a_lone_lf_is_named_in_the_error_however_the_bytes_came(cut: int | None) -> None:
    """The log says what was wrong with the line (a lone LF), whether or not the
    LF came in a read before the CRLF; not that no CRLF came within 107 bytes, when one did."""
    data = b"PROXY UNKNOWN x\ny\r\n"
    decoder = ProxyDecoder(1)
    with pytest.raises(ProxyError, match="lone LF"):
        if cut is not None:
            decoder.feed(data[:cut])
        decoder.feed(data[cut or 0:])


def test_a_line_too_long_is_named_so_though_its_crlf_came() -> None:
    data = b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n"
    with pytest.raises(ProxyError, match="within 107 bytes"):
        ProxyDecoder(1).feed(data)
