"""PROXY protocol v1/v2 decoding, the trust policy, and the pool's handling of headers."""

from __future__ import annotations

import socket
import ssl
import struct
import time
from typing import Any

import pytest
from net_helpers import Client, Recorder, client_tls_context, make_certificate, running_server, wait_until

from gximap.net.proxy import (
    V2_SIGNATURE,
    HeaderExpectation,
    ProxyAddresses,
    ProxyDecoder,
    ProxyError,
    ProxyPolicy,
    crc32c,
    looks_like_proxy_header,
    normalize_host,
    parse_trust_list,
    peer_is_trusted,
)
from gximap.net.tls import make_server_context

GREETING = b"* OK test server ready\r\n"


def v2_header(command: int, family: int, payload: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(payload)) + payload


def v2_proxy(source: str, dest: str, source_port: int, dest_port: int, tlvs: bytes = b"") -> bytes:
    if ":" in source:
        addresses = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, dest)
        family = 0x21
    else:
        addresses = socket.inet_pton(socket.AF_INET, source) + socket.inet_pton(socket.AF_INET, dest)
        family = 0x11
    return v2_header(1, family, addresses + struct.pack("!HH", source_port, dest_port) + tlvs)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


V2_LOCAL = v2_header(0, 0x00, b"")
TLVS = tlv(0x01, b"imap") + tlv(0x02, b"mail.example.org") + tlv(0x20, b"\x01" + b"\0" * 4)


# -- decoder ------------------------------------------------------------------------------


def test_v1_tcp4() -> None:
    result = ProxyDecoder(1).feed(b"PROXY TCP4 203.0.113.5 192.0.2.1 51234 143\r\na1 NOOP\r\n")
    assert result is not None
    assert (result.version, result.command) == (1, "PROXY")
    assert result.addresses == ProxyAddresses("203.0.113.5", 51234, "192.0.2.1", 143)
    assert result.remainder == b"a1 NOOP\r\n"


def test_v1_tcp6() -> None:
    result = ProxyDecoder(1).feed(b"PROXY TCP6 2001:db8::5 2001:db8:0:0::1 65535 993\r\n")
    assert result is not None
    assert result.addresses == ProxyAddresses("2001:db8::5", 65535, "2001:db8::1", 993)
    assert result.remainder == b""


def test_v1_unknown_keeps_socket_addresses() -> None:
    result = ProxyDecoder(1).feed(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\nrest")
    assert result is not None
    assert result.command == "UNKNOWN" and result.addresses is None
    assert result.remainder == b"rest"
    assert ProxyDecoder(1).feed(b"PROXY UNKNOWN\r\n") is not None


def test_v2_proxy_ipv4_with_tlvs() -> None:
    header = v2_proxy("203.0.113.5", "192.0.2.1", 51234, 143, TLVS)
    result = ProxyDecoder(2).feed(header + b"after")
    assert result is not None
    assert (result.version, result.command) == (2, "PROXY")
    assert result.addresses == ProxyAddresses("203.0.113.5", 51234, "192.0.2.1", 143)
    assert result.remainder == b"after"


def test_v2_proxy_ipv6_with_tlvs() -> None:
    result = ProxyDecoder(1).feed(v2_proxy("2001:db8::5", "2001:db8::1", 40000, 993, TLVS))
    assert result is not None
    assert result.addresses == ProxyAddresses("2001:db8::5", 40000, "2001:db8::1", 993)


def ssl_tlv(client: int, *subtlvs: bytes) -> bytes:
    """PP2_TYPE_SSL: client flags, a verify result of 0, then sub-TLVs."""
    return tlv(0x20, bytes([client]) + b"\0" * 4 + b"".join(subtlvs))


@pytest.mark.parametrize(("tlvs", "expected"), [
    (b"", (False, "")),
    (TLVS, (True, "")),  # PP2_CLIENT_SSL set, no version sub-TLV
    (tlv(0x01, b"imap") + ssl_tlv(0x07, tlv(0x23, b"ECDHE"), tlv(0x21, b"TLSv1.3")), (True, "TLSv1.3")),
    (ssl_tlv(0x00, tlv(0x21, b"TLSv1.3")), (False, "")),  # the proxy says: no TLS from the client
    (ssl_tlv(0x01, tlv(0x21, b"TLS\nv1.3\x80")), (True, "TLSv1.3")),  # log-safe text only
    (tlv(0x20, b"\x01\0"), (False, "")),  # too short to hold the flags and the verify result
    (tlv(0x04, b"") + tlv(0xEE, b"\x01" * 40), (False, "")),  # NOOP and unknown types are skipped
])
def test_v2_client_tls_from_the_ssl_tlv(tlvs: bytes, expected: tuple[bool, str]) -> None:
    for source, dest in (("203.0.113.5", "192.0.2.1"), ("2001:db8::5", "2001:db8::1")):
        result = ProxyDecoder(2).feed(v2_proxy(source, dest, 1, 2, tlvs) + b"rest")
        assert result is not None and result.remainder == b"rest"
        assert (result.client_tls, result.client_tls_version) == expected
    unspec = ProxyDecoder(2).feed(v2_header(1, 0x00, tlvs))
    assert unspec is not None and unspec.addresses is None
    assert (unspec.client_tls, unspec.client_tls_version) == expected
    unix = ProxyDecoder(2).feed(v2_header(1, 0x31, b"/x".ljust(216, b"\0") + tlvs))
    assert unix is not None and (unix.client_tls, unix.client_tls_version) == expected
    local = ProxyDecoder(2).feed(v2_header(0, 0x11, b"\0" * 12 + tlvs))
    assert local is not None and local.client_tls is False  # a health check, no client


def test_v2_truncated_tlvs_are_refused() -> None:
    """TLVs that overrun the header's length, or bytes too few for a TLV, make a malformed header
    (haproxy refuses them too): a damaged length must not hide a checksum, nor be taken for TLS.
    A LOCAL header's block is discarded unread, as the spec says."""
    for tail in (ssl_tlv(0x01)[:-2], TLVS + b"\x01\x00"):
        for header in (v2_proxy("203.0.113.5", "192.0.2.1", 1, 2, tail), v2_header(1, 0x00, tail),
                       v2_header(1, 0x31, b"/x".ljust(216, b"\0") + tail)):
            with pytest.raises(ProxyError, match="TLVs do not add up"):
                ProxyDecoder(2).feed(header)
        local = ProxyDecoder(2).feed(v2_header(0, 0x11, bytes(12) + tail))
        assert local is not None and local.command == "LOCAL"


def with_crc32c(header: bytes) -> bytes:
    """``header`` (ending in its TLVs, its length field covering them) with a PP2_TYPE_CRC32C
    TLV appended and filled in, as haproxy's ``proxy-v2-options crc32c`` sends it."""
    grown = bytearray(header + tlv(0x03, bytes(4)))
    struct.pack_into("!H", grown, 14, len(grown) - 16)
    grown[-4:] = crc32c(bytes(grown)).to_bytes(4, "big")
    return bytes(grown)


def test_crc32c_known_answers() -> None:
    # RFC 3720 appendix B.4 and the common check value of CRC-32C.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(b"") == 0


@pytest.mark.parametrize("header", [
    v2_proxy("203.0.113.5", "192.0.2.1", 51234, 143, TLVS),
    v2_proxy("2001:db8::5", "2001:db8::1", 1, 2),
    v2_header(1, 0x00, b""),
    v2_header(1, 0x31, b"/x".ljust(216, b"\0")),
])
def test_v2_crc32c_is_verified(header: bytes) -> None:
    """A header with a correct checksum is accepted; one with a flipped bit (address, TLV,
    checksum) is refused, as the spec requires of a receiver that checks it."""
    good = with_crc32c(header)
    result = ProxyDecoder(2).feed(good + b"rest")
    assert result is not None and result.remainder == b"rest"
    # The checksum itself, the first address byte and the last byte before the checksum's TLV.
    positions = [len(good) - 1] + ([16, len(header) - 1] if len(header) > 16 else [])
    for position in positions:
        bad = bytearray(good)
        bad[position] ^= 0x10
        with pytest.raises(ProxyError, match="CRC32C"):
            ProxyDecoder(2).feed(bytes(bad))
    # A damaged length of the checksum's own TLV cannot hide it.
    hidden = bytearray(good)
    hidden[-5] ^= 0x01
    with pytest.raises(ProxyError, match="TLVs do not add up"):
        ProxyDecoder(2).feed(bytes(hidden))
    short = bytearray(header + tlv(0x03, bytes(3)))
    struct.pack_into("!H", short, 14, len(short) - 16)
    with pytest.raises(ProxyError, match="CRC32C TLV has 3 bytes"):
        ProxyDecoder(2).feed(bytes(short))


def test_v2_local_and_unspec_keep_socket_addresses() -> None:
    local = ProxyDecoder(2).feed(V2_LOCAL + b"x")
    assert local is not None and local.command == "LOCAL" and local.addresses is None
    assert local.remainder == b"x"
    # LOCAL ignores whatever address block follows.
    local_with_block = ProxyDecoder(2).feed(v2_header(0, 0x11, b"\0" * 12))
    assert local_with_block is not None and local_with_block.addresses is None
    unspec = ProxyDecoder(2).feed(v2_header(1, 0x00, b""))
    assert unspec is not None and unspec.command == "PROXY" and unspec.addresses is None


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 203.0.113.5 192.0.2.1 51234 143\r\n",
        v2_proxy("203.0.113.5", "192.0.2.1", 51234, 143, TLVS),
        v2_proxy("2001:db8::5", "2001:db8::1", 1, 2),
    ],
)
def test_fragmented_feeding_byte_by_byte(header: bytes) -> None:
    decoder = ProxyDecoder(1)
    stream = header + b"tail"
    for index in range(len(header) - 1):
        assert decoder.feed(stream[index : index + 1]) is None
    result = decoder.feed(stream[len(header) - 1 :])
    assert result is not None and result.addresses is not None
    assert result.addresses.source_port in (51234, 1)
    assert result.remainder == b"tail"
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")


@pytest.mark.parametrize(
    ("mode", "data", "message"),
    [
        (1, b"a1 LOGIN user pass\r\n", "expected a PROXY v1 or v2 header"),
        (2, b"PROXY TCP4 203.0.113.5 192.0.2.1 51234 143\r\n", "expected a PROXY v2 signature"),
        (1, b"\x16\x03\x01\x02\x00", "expected"),
        (1, b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
        (1, b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "needs 6 fields"),
        (1, b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "invalid address"),
        (1, b"PROXY TCP4 ::1 ::1 1 2\r\n", "invalid address"),
        (1, b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "invalid address"),
        (1, b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "invalid port"),
        (1, b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "invalid port"),
        (1, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "CRLF"),
        (1, b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n", "non-ASCII"),
        (2, V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\0" * 12, "version 1"),
        (2, V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\0" * 12, "unknown command"),
        (2, v2_header(1, 0x12, b"\0" * 12), "only STREAM"),
        (2, v2_header(1, 0x41, b"\0" * 12), "unknown address family"),
        (2, v2_header(1, 0x11, b"\0" * 8), "shorter than its addresses"),
        (2, v2_header(1, 0x21, b"\0" * 20), "shorter than its addresses"),
    ],
)
def test_malformed_headers_raise(mode: int, data: bytes, message: str) -> None:
    with pytest.raises(ProxyError, match=message):
        ProxyDecoder(mode).feed(data)


def test_oversize_headers_raise() -> None:
    with pytest.raises(ProxyError, match="107 bytes"):
        ProxyDecoder(1).feed(b"PROXY UNKNOWN " + b"x" * 120)
    decoder = ProxyDecoder(1)  # the limit holds however the bytes arrive
    assert decoder.feed(b"PROXY UNKNOWN ") is None
    for _ in range(9):
        assert decoder.feed(b"x" * 10) is None  # 104 bytes so far
    with pytest.raises(ProxyError, match="107 bytes"):
        decoder.feed(b"x" * 10)
    with pytest.raises(ProxyError, match="more than 4096"):
        ProxyDecoder(2).feed(V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 65535))


def test_decoder_mode_and_empty_feed() -> None:
    with pytest.raises(ValueError):
        ProxyDecoder(0)
    assert ProxyDecoder(2).feed(b"") is None
    assert ProxyDecoder(2).feed(V2_SIGNATURE[:5]) is None


def test_looks_like_proxy_header() -> None:
    assert looks_like_proxy_header(b"PROXY TCP4 1.2.3.4") is True
    assert looks_like_proxy_header(b"PROXY UNKNOWN\r\n") is True
    assert looks_like_proxy_header(V2_SIGNATURE + b"\x21") is True
    assert looks_like_proxy_header(b"PRO") is None
    assert looks_like_proxy_header(b"\r\n\r\n") is None
    assert looks_like_proxy_header(b"a1 LOGIN") is False
    assert looks_like_proxy_header(b"PROXY LOGIN x y\r\n") is False  # an IMAP tag named PROXY
    assert looks_like_proxy_header(b"\x16\x03\x01") is False


# -- trust policy -------------------------------------------------------------------------


def test_trust_list_and_mapped_addresses() -> None:
    networks = parse_trust_list(["127.0.0.1", "192.168.0.1/24", "[fd00::]/8", " ", "::1"])
    assert peer_is_trusted("127.0.0.1", networks)
    assert peer_is_trusted("192.168.0.77", networks)
    assert peer_is_trusted("::ffff:192.168.0.9", networks)  # IPv4-mapped matched as IPv4
    assert peer_is_trusted("fd12::1", networks)
    assert peer_is_trusted("::1", networks)
    assert not peer_is_trusted("192.168.1.1", networks)
    assert not peer_is_trusted("2001:db8::1", networks)
    assert not peer_is_trusted("not-an-address", networks)
    assert peer_is_trusted("198.51.100.1", ())  # an empty list trusts everyone
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        parse_trust_list(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="'proxy.example'"):
        parse_trust_list(["proxy.example"])
    assert normalize_host("::ffff:10.1.2.3") == "10.1.2.3"
    assert normalize_host("2001:DB8:0::1") == "2001:db8::1"


def test_mapped_trust_entries_match_the_peers_the_pool_passes() -> None:
    """The pool hands the policy normalized peers (IPv4-mapped -> IPv4), so entries written as
    IPv4-mapped (ss shows a proxy on a dual-stack socket so) must be taken as IPv4 to match."""
    networks = parse_trust_list(["::ffff:127.0.0.1", "[::ffff:10.0.0.0]/104", "::ffff:0:0/96"])
    assert [str(network) for network in networks] == ["127.0.0.1/32", "10.0.0.0/8", "0.0.0.0/0"]
    policy = ProxyPolicy.create(1, ["::ffff:127.0.0.1"])
    assert policy.expectation(normalize_host("::ffff:127.0.0.1")) is HeaderExpectation.REQUIRED
    assert policy.expectation("127.0.0.2") is HeaderExpectation.REFUSED
    assert parse_trust_list(["::ffff:0:0/95"])[0].version == 6  # beyond the mapped range: IPv6 as written


def test_policy_expectations() -> None:
    assert ProxyPolicy.create(0, ["127.0.0.1"]).expectation("127.0.0.1") is HeaderExpectation.NONE
    policy = ProxyPolicy.create(1, ["10.0.0.0/8"])
    assert policy.expectation("10.1.1.1") is HeaderExpectation.REQUIRED
    assert policy.expectation("127.0.0.1") is HeaderExpectation.REFUSED
    assert ProxyPolicy.create(2).expectation("203.0.113.9") is HeaderExpectation.REQUIRED
    with pytest.raises(ValueError, match="0, 1 or 2"):
        ProxyPolicy.create(5)


# -- pool integration ---------------------------------------------------------------------


def peer_fields(client: Client) -> list[str]:
    return client.command("PEER").decode().split()


def test_pool_takes_the_address_from_a_v2_header() -> None:
    recorder = Recorder()
    with running_server(recorder, proxy_mode=2) as (_server, ports):
        client = Client("127.0.0.1", ports["plain"])
        client.send(v2_proxy("203.0.113.5", "192.0.2.1", 51234, 143, TLVS) + b"ECHO pipelined\r\n")
        assert client.readline() == GREETING
        assert client.readline() == b"OK pipelined\r\n"  # bytes after the header reach the handler
        fields = peer_fields(client)
        assert fields[1:5] == ["203.0.113.5", "51234", "192.0.2.1", "143"]
        assert "proxied=True" in fields
        assert recorder.handlers[0].info.extra["proxy_peer"].startswith("[127.0.0.1]:")
        # The listener's own port stays known (a CATENATE URL may name it: commands.append).
        assert recorder.handlers[0].info.listener_port == ports["plain"]


def test_pool_passes_on_the_clients_tls_at_the_proxy() -> None:
    says_tls = ssl_tlv(0x01, tlv(0x21, b"TLSv1.2"))
    for trust, believed in ((["127.0.0.1"], True), ([], False)):
        recorder = Recorder()
        options: dict[str, Any] = {"proxy_mode": 2, "proxy_trust": trust,
                                   "ssl_context": ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)}
        with running_server(recorder, **options) as (_server, ports):
            secure = Client("127.0.0.1", ports["plain"])
            secure.send(v2_proxy("203.0.113.5", "192.0.2.1", 51234, 143, says_tls))
            assert secure.readline() == GREETING
            clear = Client("127.0.0.1", ports["plain"])
            clear.send(v2_proxy("203.0.113.6", "192.0.2.1", 51235, 143))
            assert clear.readline() == GREETING
            # No TLS inside the client's TLS
            assert f"starttls={not believed}" in peer_fields(secure)
            assert "starttls=True" in peer_fields(clear)
            by_host = {handler.info.peer_host: handler.info for handler in recorder.handlers}
            # With an empty trust list every peer may send a header, so none may vouch for the
            # client's TLS: any client could switch imap_force_tls off for itself.
            assert by_host["203.0.113.5"].client_tls is believed
            assert by_host["203.0.113.6"].client_tls is False
            assert by_host["203.0.113.5"].extra.get("client_tls_version") == ("TLSv1.2" if believed else None)
            assert by_host["203.0.113.5"].tls is False


def test_pool_accepts_v1_in_mode_1_fragmented_and_local() -> None:
    recorder = Recorder()
    with running_server(recorder, proxy_mode=1) as (_server, ports):
        client = Client("127.0.0.1", ports["plain"])
        header = b"PROXY TCP6 2001:db8::5 2001:db8::1 40000 143\r\n"
        client.send(header[:9])
        time.sleep(0.05)
        client.send(header[9:])
        assert client.readline() == GREETING
        assert peer_fields(client)[1:3] == ["2001:db8::5", "40000"]
        local = Client("127.0.0.1", ports["plain"])
        local.send(V2_LOCAL)
        assert local.readline() == GREETING
        fields = peer_fields(local)
        assert fields[1] == "127.0.0.1" and "proxied=False" in fields


def test_pool_drops_bad_headers() -> None:
    recorder = Recorder()
    with running_server(recorder, proxy_mode=2) as (server, ports):
        plain = Client("127.0.0.1", ports["plain"])
        plain.send(b"a1 NOOP\r\n")
        assert plain.read_until_eof() == b""
        version1 = Client("127.0.0.1", ports["plain"])
        version1.send(b"PROXY TCP4 203.0.113.5 192.0.2.1 51234 143\r\n")
        assert version1.read_until_eof() == b""
        assert wait_until(lambda: server.stats().sessions == 0)
        assert recorder.count("start") == 0


def test_pool_header_timeout() -> None:
    recorder = Recorder()
    with running_server(recorder, proxy_mode=1, conn_timeout=0.3) as (server, ports):
        silent = Client("127.0.0.1", ports["plain"])
        started = time.monotonic()
        assert silent.read_until_eof() == b""
        assert time.monotonic() - started < 2.0
        assert recorder.count("start") == 0
        assert wait_until(lambda: server.stats().sessions == 0)


def test_pool_untrusted_peer_served_as_itself_and_refused_with_header() -> None:
    recorder = Recorder()
    with running_server(recorder, proxy_mode=1, proxy_trust=["192.0.2.0/24"]) as (server, ports):
        direct = Client("127.0.0.1", ports["plain"])
        assert direct.readline() == GREETING  # no header expected from an untrusted peer
        fields = peer_fields(direct)
        assert fields[1] == "127.0.0.1" and "proxied=False" in fields
        spoofer = Client("127.0.0.1", ports["plain"])
        assert spoofer.readline() == GREETING
        spoofer.send(b"PROXY TCP4 203.0.113.5 192.0.2.1 51234 143\r\nPEER\r\n")
        assert spoofer.read_until_eof() == b""
        assert not any(line.startswith("PROXY") for line in recorder.details("line"))
        assert recorder.details("line").count("PEER") == 1
        assert wait_until(lambda: server.stats().sessions == 1)


def test_pool_reads_header_before_implicit_tls(tmp_path_factory: pytest.TempPathFactory) -> None:
    cert_path, key_path = make_certificate(str(tmp_path_factory.mktemp("proxy-tls")))
    client_ssl = client_tls_context(cert_path)
    recorder = Recorder()
    options = {"proxy_mode": 1, "ssl_context": make_server_context(cert_path, key_path)}
    with running_server(recorder, tls_ports=True, plain_port=False, **options) as (server, ports):  # type: ignore[arg-type]
        client = Client("127.0.0.1", ports["tls"])
        client.send(v2_proxy("198.51.100.7", "192.0.2.1", 50000, 993))
        client.starttls(client_ssl)
        assert client.readline() == GREETING
        fields = peer_fields(client)
        assert fields[1:3] == ["198.51.100.7", "50000"]
        assert "tls=True" in fields and "proxied=True" in fields
        # An untrusted peer's TLS connection is sniffed too: a header gets it dropped.
        server.reconfigure(proxy_trust=["192.0.2.0/24"])
        direct = Client("127.0.0.1", ports["tls"])
        direct.starttls(client_ssl)
        assert direct.readline() == GREETING
        spoofer = Client("127.0.0.1", ports["tls"])
        spoofer.send(v2_proxy("198.51.100.8", "192.0.2.1", 50001, 993))
        with pytest.raises((ssl.SSLError, OSError)):
            spoofer.starttls(client_ssl)
            spoofer.readline()


def test_pool_reconfigure_and_per_address_limit_on_proxied_address() -> None:
    recorder = Recorder()
    with running_server(recorder, max_conn_per_ip=1) as (server, ports):
        before = Client("127.0.0.1", ports["plain"])
        assert before.readline() == GREETING
        with pytest.raises(ValueError):
            server.reconfigure(proxy_mode=1, proxy_trust=["bogus"])
        server.reconfigure(proxy_mode=1)
        first = Client("127.0.0.1", ports["plain"])
        first.send(b"PROXY TCP4 203.0.113.5 192.0.2.1 1000 143\r\n")
        assert first.readline() == GREETING
        same = Client("127.0.0.1", ports["plain"])
        same.send(b"PROXY TCP4 203.0.113.5 192.0.2.1 1001 143\r\n")
        assert same.read_until_eof() == b"* BYE Service not available\r\n"
        other = Client("127.0.0.1", ports["plain"])
        other.send(b"PROXY TCP4 203.0.113.6 192.0.2.1 1002 143\r\n")
        assert other.readline() == GREETING
        assert peer_fields(other)[1] == "203.0.113.6"
        server.reconfigure(proxy_mode=0)
        plain = Client("127.0.0.1", ports["plain"])
        assert plain.read_until_eof() == b"* BYE Service not available\r\n"  # 127.0.0.1 already has one
        before.close()
        assert wait_until(lambda: server.stats().sessions == 2)
        again = Client("127.0.0.1", ports["plain"])
        assert again.readline() == GREETING
