"""haproxy PROXY protocol v1 and v2 decoding, sans-IO, plus the trust policy around it.

A reverse proxy in front of gximap prepends a header carrying the real client address, so log lines
(and fail2ban) see the client rather than the proxy. Spec: haproxy's doc/proxy-protocol.txt.

Public API:
    ProxyDecoder(mode).feed(data) -> ProxyResult | None     None: the header is not complete yet
    ProxyError                                               malformed / unexpected header
    looks_like_proxy_header(data) -> bool | None             sniffing for untrusted peers
    ProxyPolicy.create(mode, trust) / policy.expectation(peer_host) -> HeaderExpectation
    parse_trust_entry(entry) / parse_trust_list(entries) / peer_is_trusted(host, networks)
    address_in(host, networks) -> bool                       an empty list holds none (peer allow lists)

Modes (``imap_accept_haproxy``): 0 = no header; 1 = v1 or v2, autodetected; 2 = v2 only (Gromox).
The trust list holds addresses and CIDR subnets; an empty list trusts every peer (Gromox behaviour:
every connection carries a header). With PROXY enabled, a trusted peer must send a header; an
untrusted peer is served under its own address, and is refused if it sends a header anyway.
Of a v2 header's TLVs, PP2_TYPE_SSL is read: whether the client's own connection to the proxy
was TLS (ProxyResult.client_tls; haproxy's send-proxy-v2-ssl). A PP2_TYPE_CRC32C checksum
(haproxy's ``proxy-v2-options crc32c``) is verified, and a header that fails it is refused, as
the spec requires of a receiver that supports it; so is one whose TLVs overrun its length.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "HeaderExpectation",
    "Network",
    "ProxyAddresses",
    "ProxyDecoder",
    "ProxyError",
    "ProxyPolicy",
    "ProxyResult",
    "address_in",
    "address_key",
    "looks_like_proxy_header",
    "normalize_host",
    "parse_trust_entry",
    "parse_trust_list",
    "peer_is_trusted",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the spec's worst case, CRLF included
V2_FIXED_LENGTH = 16
# The spec allows up to 64 KiB of addresses and TLVs; real proxies send a few hundred bytes
# (addresses, ALPN, authority, SSL info). The cap keeps an unauthenticated peer from making us buffer.
V2_MAX_PAYLOAD = 4096

_V2_CMD_LOCAL = 0x0
_V2_CMD_PROXY = 0x1
_V2_AF_UNSPEC = 0x0
_V2_AF_INET = 0x1
_V2_AF_INET6 = 0x2
_V2_AF_UNIX = 0x3
_V2_PROTO_UNSPEC = 0x0
_V2_PROTO_STREAM = 0x1
_V2_PROTO_DGRAM = 0x2
_V2_PROTOCOLS = (_V2_PROTO_UNSPEC, _V2_PROTO_STREAM, _V2_PROTO_DGRAM)
# Spec section 2.1: the receiver "must not tolerate a single CR or LF character to end the line".
_V1_LONE_LF = "PROXY v1 header has a lone LF (its line must end with CRLF)"
_V2_UNIX_ADDRESSES = 216  # two 108-byte socket paths
# Where the TLVs start after the fixed part, by address family.
_V2_ADDRESS_LENGTHS = {_V2_AF_UNSPEC: 0, _V2_AF_INET: 12, _V2_AF_INET6: 36, _V2_AF_UNIX: _V2_UNIX_ADDRESSES}
# TLVs (type, 16-bit length, value) after the addresses: what the proxy knows of the client's TLS,
# and a checksum of the whole header.
_PP2_TYPE_CRC32C = 0x03  # value: CRC32C (RFC 4960 appendix B) of the header with this value zeroed
_PP2_TYPE_SSL = 0x20  # value: client flags (1 byte), verify result (4 bytes), sub-TLVs
_PP2_CLIENT_SSL = 0x01  # the client reached the proxy over TLS
_PP2_SUBTYPE_SSL_VERSION = 0x21  # US-ASCII, e.g. "TLSv1.3"

# What untrusted peers are checked against: a proxy's header starts with one of these.
_SNIFF_PREFIXES = (V2_SIGNATURE, b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyError(ValueError):
    """The PROXY header is malformed, oversized, of the wrong version, or missing."""


@dataclass(frozen=True, slots=True)
class ProxyAddresses:
    source_host: str
    source_port: int
    dest_host: str
    dest_port: int


@dataclass(frozen=True, slots=True)
class ProxyResult:
    version: int  # 1 or 2
    command: str  # "PROXY", "LOCAL" (v2) or "UNKNOWN" (v1)
    # None: keep the socket's own endpoints (v2 LOCAL, v1 UNKNOWN, v2 AF_UNSPEC / AF_UNIX).
    addresses: ProxyAddresses | None
    remainder: bytes  # bytes that followed the header: the start of the real stream
    # v2 PROXY with a PP2_TYPE_SSL TLV whose PP2_CLIENT_SSL flag is set (haproxy's
    # send-proxy-v2-ssl): the client's own connection, which the proxy terminated, was TLS.
    client_tls: bool = False
    client_tls_version: str = ""  # from PP2_SUBTYPE_SSL_VERSION, when the proxy sent it


class ProxyDecoder:
    """Incremental decoder: feed bytes until a ProxyResult comes back."""

    def __init__(self, mode: int) -> None:
        if mode not in (1, 2):
            raise ValueError(f"PROXY decoder mode must be 1 or 2, not {mode!r}")
        self._mode = mode
        self._buffer = bytearray()
        self._done = False

    def feed(self, data: bytes) -> ProxyResult | None:
        if self._done:
            raise RuntimeError("ProxyDecoder.feed called after the header was decoded")
        self._buffer += data
        if not self._buffer:
            return None
        version = self._detect_version()
        if version is None:
            return None
        result = self._decode_v1() if version == 1 else self._decode_v2()
        if result is not None:
            self._done = True
            self._buffer = bytearray()
        return result

    def _detect_version(self) -> int | None:
        buf = bytes(self._buffer[: len(V2_SIGNATURE)])
        candidates = [(2, V2_SIGNATURE)] if self._mode == 2 else [(1, V1_PREFIX), (2, V2_SIGNATURE)]
        for version, signature in candidates:
            if buf.startswith(signature):
                return version
            if signature.startswith(buf):
                return None  # a prefix of this signature so far: need more bytes
        expected = "a PROXY v2 signature" if self._mode == 2 else "a PROXY v1 or v2 header"
        raise ProxyError(f"expected {expected}, got {bytes(self._buffer[:16])!r}")

    def _decode_v1(self) -> ProxyResult | None:
        end = self._buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if self._buffer.find(b"\n", 0, V1_MAX_LENGTH) >= 0:   # (a CRLF's LF would have been found)
                raise ProxyError(_V1_LONE_LF)
            if len(self._buffer) >= V1_MAX_LENGTH:
                raise ProxyError("PROXY v1 header is not terminated by CRLF within 107 bytes")
            return None
        line = bytes(self._buffer[:end])
        remainder = bytes(self._buffer[end + 2 :])
        if b"\n" in line:
            # A lone LF ends no line (spec section 2.1); refused here as when it came in a
            # piece before the CRLF, so that the answer does not depend on how the bytes came.
            raise ProxyError(_V1_LONE_LF)
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise ProxyError("PROXY v1 header contains non-ASCII bytes") from None
        fields = text.split(" ")
        if len(fields) < 2:
            raise ProxyError("PROXY v1 header lacks the protocol field")
        protocol = fields[1]
        if protocol == "UNKNOWN":
            # The rest of the line is to be ignored: the proxy could not tell the addresses.
            return ProxyResult(1, "UNKNOWN", None, remainder)
        if protocol not in ("TCP4", "TCP6"):
            raise ProxyError(f"PROXY v1 header has an unknown protocol {protocol!r}")
        if len(fields) != 6:
            raise ProxyError(f"PROXY v1 {protocol} header needs 6 fields, got {len(fields)}")
        address_type = ipaddress.IPv4Address if protocol == "TCP4" else ipaddress.IPv6Address
        source = _v1_address(fields[2], address_type)
        dest = _v1_address(fields[3], address_type)
        addresses = ProxyAddresses(source, _v1_port(fields[4]), dest, _v1_port(fields[5]))
        return ProxyResult(1, "PROXY", addresses, remainder)

    def _decode_v2(self) -> ProxyResult | None:
        if len(self._buffer) < V2_FIXED_LENGTH:
            return None
        version_command, family_protocol, length = struct.unpack_from("!BBH", self._buffer, 12)
        if version_command >> 4 != 2:
            raise ProxyError(f"PROXY v2 header has version {version_command >> 4}, not 2")
        command = version_command & 0x0F
        if command not in (_V2_CMD_LOCAL, _V2_CMD_PROXY):
            raise ProxyError(f"PROXY v2 header has unknown command {command}")
        if length > V2_MAX_PAYLOAD:
            raise ProxyError(f"PROXY v2 header announces {length} bytes, more than {V2_MAX_PAYLOAD}")
        total = V2_FIXED_LENGTH + length
        if len(self._buffer) < total:
            return None
        header = bytes(self._buffer[:total])
        payload = header[V2_FIXED_LENGTH:]
        remainder = bytes(self._buffer[total:])
        if command == _V2_CMD_LOCAL:
            # Health checks and the proxy's own connections: the socket endpoints are the truth,
            # and the spec has the whole block discarded, TLVs and any checksum with it.
            return ProxyResult(2, "LOCAL", None, remainder)
        family = family_protocol >> 4
        if family not in _V2_ADDRESS_LENGTHS:
            raise ProxyError(f"PROXY v2 header has unknown address family {family}")
        protocol = family_protocol & 0x0F
        if protocol not in _V2_PROTOCOLS:
            # Spec section 2.2: unassigned transport values "must be rejected as invalid by
            # receivers", whatever the family.
            raise ProxyError(f"PROXY v2 header has unknown transport {protocol}")
        addresses_length = _V2_ADDRESS_LENGTHS[family]
        if length < addresses_length:
            # Spec section 2.2: "The receiver must also reject incoming connections containing
            # partial protocol headers" (an AF_UNIX block of less than 216 bytes went through).
            raise ProxyError(f"PROXY v2 header of family {family} is shorter than its addresses")
        _check_tlvs(header, V2_FIXED_LENGTH + addresses_length)
        tlvs = payload[addresses_length:]
        if family in (_V2_AF_UNSPEC, _V2_AF_UNIX):
            # The spec lets the receiver fall back to the real connection endpoints here.
            return ProxyResult(2, "PROXY", None, remainder, *_client_tls(tlvs))
        if protocol != _V2_PROTO_STREAM:
            raise ProxyError(f"PROXY v2 header has transport {protocol}, only STREAM is served")
        if family == _V2_AF_INET:
            src, dst, sport, dport = struct.unpack_from("!4s4sHH", payload)
            addresses = ProxyAddresses(
                str(ipaddress.IPv4Address(src)), sport, str(ipaddress.IPv4Address(dst)), dport
            )
        else:
            src, dst, sport, dport = struct.unpack_from("!16s16sHH", payload)
            addresses = ProxyAddresses(
                str(ipaddress.IPv6Address(src)), sport, str(ipaddress.IPv6Address(dst)), dport
            )
        return ProxyResult(2, "PROXY", addresses, remainder, *_client_tls(tlvs))


def _tlvs(data: bytes, offset: int = 0) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each TLV value in ``data`` from ``offset``, up to the first that
    does not fit: at the top level _check_tlvs refuses such a header; inside PP2_TYPE_SSL the
    rest is ignored (a client's TLS is never assumed)."""
    while offset + 3 <= len(data):
        kind, size = struct.unpack_from("!BH", data, offset)
        offset += 3
        if offset + size > len(data):
            return
        yield kind, offset, offset + size
        offset += size


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli; RFC 4960 appendix B). The standard library has only zlib's CRC-32.
    Real headers are a few hundred bytes (about 20 µs here); V2_MAX_PAYLOAD caps the worst case
    at about half a millisecond, less than the TLS handshake a peer can make us do anyway."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _check_tlvs(header: bytes, tlv_offset: int) -> None:
    """Refuse a header whose TLVs do not fill it exactly (a length field damaged on the way
    would otherwise hide a checksum), or whose PP2_TYPE_CRC32C does not match: the checksum of
    the whole header, computed with the checksum's own four bytes zeroed."""
    checksum: tuple[int, int] | None = None
    end = tlv_offset
    for kind, start, end in _tlvs(header, tlv_offset):
        if kind == _PP2_TYPE_CRC32C and checksum is None:
            checksum = start, end
    if end != len(header) and tlv_offset < len(header):
        raise ProxyError("PROXY v2 header's TLVs do not add up to its length")
    if checksum is None:
        return
    start, end = checksum
    if end - start != 4:
        raise ProxyError(f"PROXY v2 CRC32C TLV has {end - start} bytes, not 4")
    if crc32c(header[:start] + bytes(4) + header[end:]) != int.from_bytes(header[start:end], "big"):
        raise ProxyError("PROXY v2 header fails its CRC32C checksum")


def _client_tls(tlvs: bytes) -> tuple[bool, str]:
    """(client_tls, client_tls_version) from the header's TLVs (ALPN, authority and the rest are
    not needed)."""
    for kind, start, end in _tlvs(tlvs):
        value = tlvs[start:end]
        if kind != _PP2_TYPE_SSL or len(value) < 5:
            continue
        if not value[0] & _PP2_CLIENT_SSL:
            return False, ""
        for subtype, sub_start, sub_end in _tlvs(value, 5):
            text = value[sub_start:sub_end]
            if subtype == _PP2_SUBTYPE_SSL_VERSION:
                # It goes into log lines: printable ASCII only, and short.
                return True, "".join(c for c in text[:32].decode("ascii", "replace") if c.isprintable() and c.isascii())
        return True, ""
    return False, ""


def _v1_address(text: str, address_type: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]) -> str:
    # ipaddress takes an IPv6 scope ("fe80::1%eth0", any octets but "%"), which the spec's
    # address format (section 2.1) has not: it would carry control characters into log lines.
    try:
        if "%" in text:
            raise ValueError(text)
        return str(address_type(text))
    except ValueError:
        raise ProxyError(f"PROXY v1 header has an invalid address {text!r}") from None


def _v1_port(text: str) -> int:
    # Spec section 2.1: "Heading zeroes are not permitted in front of numbers".
    if (not text.isascii() or not text.isdigit() or len(text) > 5 or int(text) > 65535
            or (len(text) > 1 and text.startswith("0"))):
        raise ProxyError(f"PROXY v1 header has an invalid port {text!r}")
    return int(text)


def looks_like_proxy_header(data: bytes) -> bool | None:
    """Whether ``data`` (the first bytes a peer sent) is the start of a PROXY header.

    True: it is; False: it is not; None: too short to tell yet.
    """
    undecided = False
    for prefix in _SNIFF_PREFIXES:
        if data.startswith(prefix):
            return True
        if prefix.startswith(data):
            undecided = True
    return None if undecided else False


def address_key(address: str) -> str:
    """What per-address limits count, and what a flood's share of the connections not logged in
    is counted by (gximap.net.pool): the IPv4 address (also when IPv4-mapped), the /64 network
    of an IPv6 address (the prefix one subscriber is given), or the text itself when it is not
    an IP address (e.g. a UNIX socket)."""
    if ":" not in address:
        return address  # IPv4 text is its own key (ip_address takes only the canonical form)
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def normalize_host(host: str) -> str:
    """Canonical text of an address: IPv4-mapped IPv6 becomes IPv4, IPv6 is compressed."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if "%" in host:
            return host  # keep the scope of link-local addresses
    return str(address)


def parse_trust_entry(entry: str) -> Network:
    """One address or CIDR subnet of a trust list (``192.0.2.7``, ``10.0.0.0/8``, ``::1``,
    ``[fd00::]/8``), an IPv4-mapped one (``::ffff:192.0.2.7``) as IPv4; ValueError names the entry. The configuration check uses this too, so that
    an entry it lets through is one the pool can apply (a start or a reload never fails on it)."""
    candidate = entry.strip()
    if candidate.startswith("["):  # an IPv6 address in brackets, the prefix length after them
        close = candidate.find("]")
        if close > 0:
            candidate = candidate[1:close] + candidate[close + 1 :]
    try:
        network = ipaddress.ip_network(candidate, strict=False)
    except ValueError:
        raise ValueError(f"{entry!r} is not an IP address or CIDR subnet") from None
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is not None and network.prefixlen >= 96:
        # Peers are compared as plain IPv4 (normalize_host): an IPv4-mapped entry, as ss shows
        # a proxy on a dual-stack socket, would otherwise never match.
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def parse_trust_list(entries: Iterable[str], label: str = "PROXY trust list") -> tuple[Network, ...]:
    """The entries (see parse_trust_entry) as networks; blank entries are skipped. ``label``
    names the list in an error (also used for the MTA sockets' peer allow lists)."""
    networks: list[Network] = []
    for entry in entries:
        if not entry.strip():
            continue
        try:
            networks.append(parse_trust_entry(entry))
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
    return tuple(networks)


def address_in(host: str, networks: tuple[Network, ...]) -> bool:
    """Whether the address ``host`` (IPv4-mapped counts as IPv4) is in one of ``networks``; a
    host that is no IP address is in none."""
    try:
        address = ipaddress.ip_address(normalize_host(host))
    except ValueError:
        return False
    return any(address.version == network.version and address in network for network in networks)


def peer_is_trusted(host: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``host`` may send PROXY headers. An empty trust list trusts every peer."""
    return not networks or address_in(host, networks)


class HeaderExpectation(enum.Enum):
    NONE = "none"  # PROXY disabled: the stream starts at once
    REQUIRED = "required"  # trusted peer: a header must come first
    REFUSED = "refused"  # untrusted peer: served as itself, dropped if it sends a header


@dataclass(frozen=True, slots=True)
class ProxyPolicy:
    """The immutable PROXY settings; the pool swaps in a new one on reconfiguration."""

    mode: int = 0
    trust: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in (0, 1, 2):
            raise ValueError(f"PROXY mode must be 0, 1 or 2, not {self.mode!r}")

    @classmethod
    def create(cls, mode: int, trust: Iterable[str] = ()) -> ProxyPolicy:
        """From configuration values; ValueError names a bad mode or trust entry."""
        return cls(mode, parse_trust_list(trust))

    def expectation(self, peer_host: str) -> HeaderExpectation:
        if self.mode == 0:
            return HeaderExpectation.NONE
        if peer_is_trusted(peer_host, self.trust):
            return HeaderExpectation.REQUIRED
        return HeaderExpectation.REFUSED
