"""The TLS link with the proxies (maddy's ``proxy_protocol { tls }``): the proxy makes a TLS
handshake first and sends its PROXY header, and everything after it, inside that TLS.

Pool-level tests with the line handler of net_helpers; the daemon's directives are tested in
test_config.py, and the real gximap behind such a link at the end of this file.
"""

from __future__ import annotations

import datetime
import imaplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from net_helpers import (
    Client,
    Recorder,
    TlsInside,
    client_tls_context,
    make_certificate,
    running_server,
    wait_until,
)
from test_proxy import v2_proxy

from gximap.net.tls import TlsConfigError, make_server_context

GREETING = b"* OK test server ready\r\n"
HEADER = v2_proxy("203.0.113.9", "192.0.2.1", 41000, 143)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two different certificates, so a test shows which layer used which: one for the proxy
    link, one for the listeners' own TLS."""
    link_cert, link_key = make_certificate(str(tmp_path_factory.mktemp("link")))
    own_cert, own_key = make_certificate(str(tmp_path_factory.mktemp("own")))
    return {"link_cert": link_cert, "link_key": link_key, "own_cert": own_cert, "own_key": own_key}


@pytest.fixture(scope="module")
def link_context(certificates: dict[str, str]) -> ssl.SSLContext:
    return make_server_context(certificates["link_cert"], certificates["link_key"])


def linked_client(port: int, certificates: dict[str, str]) -> Client:
    """A proxy's connection: TCP, then TLS with the link certificate."""
    client = Client("127.0.0.1", port)
    client.starttls(client_tls_context(certificates["link_cert"]))
    return client


def peer_fields(client: Client) -> list[str]:
    return client.command("PEER").decode().split()


def test_header_and_session_travel_inside_the_link(certificates: dict[str, str],
                                                    link_context: ssl.SSLContext) -> None:
    recorder = Recorder()
    with running_server(recorder, proxy_mode=2, proxy_ssl_context=link_context) as (_server, ports):
        client = linked_client(ports["plain"], certificates)
        client.send(HEADER + b"ECHO pipelined\r\n")
        assert client.readline() == GREETING
        assert client.readline() == b"OK pipelined\r\n"
        fields = peer_fields(client)
        assert fields[1:5] == ["203.0.113.9", "41000", "192.0.2.1", "143"]
        assert "proxied=True" in fields and "tls=False" in fields  # the client's own link is unknown
        info = recorder.handlers[0].info
        assert info.extra["proxy_tls_version"].startswith("TLSv1.")
        assert info.file_regions is False  # sendfile(2) would bypass the link's TLS
        # Output larger than a TLS record and the transport's coalescing limit arrives whole.
        client.send(b"BIG 300000\r\n")
        assert client.read_exactly(300000) == b"x" * 300000
        assert client.readline() == b"\r\n" and client.readline() == b"OK big\r\n"
        client.send(b"QUIT\r\n")
        assert client.read_until_eof() == b"* BYE bye\r\n"


class _Trickle:
    """A socket whose sendall sends one byte at a time, pausing between them, so the server
    gets TLS records (the handshake's and the data's) in pieces."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def sendall(self, data: bytes) -> None:
        for index in range(len(data)):
            self.sock.sendall(data[index:index + 1])
            time.sleep(0.0005)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def close(self) -> None:
        self.sock.close()


def test_a_link_arriving_byte_by_byte(certificates: dict[str, str], link_context: ssl.SSLContext) -> None:
    recorder = Recorder()
    with running_server(recorder, proxy_mode=1, proxy_ssl_context=link_context) as (_server, ports):
        client = Client("127.0.0.1", ports["plain"])
        client.sock = TlsInside(_Trickle(client.sock), client_tls_context(certificates["link_cert"]))  # type: ignore[assignment]
        client.send(b"PROXY TCP4 198.51.100.5 192.0.2.1 42001 143\r\nECHO slowly\r\n")
        assert client.readline() == GREETING
        assert client.readline() == b"OK slowly\r\n"
        assert peer_fields(client)[1:3] == ["198.51.100.5", "42001"]


def test_implicit_tls_and_starttls_run_inside_the_link(certificates: dict[str, str],
                                                       link_context: ssl.SSLContext) -> None:
    own_context = make_server_context(certificates["own_cert"], certificates["own_key"])
    own_client = client_tls_context(certificates["own_cert"])
    recorder = Recorder()
    options: dict[str, Any] = {"proxy_mode": 1, "proxy_ssl_context": link_context, "ssl_context": own_context}
    with running_server(recorder, tls_ports=True, **options) as (_server, ports):
        implicit = linked_client(ports["tls"], certificates)
        implicit.send(HEADER)
        implicit.starttls(own_client)  # the listener's TLS, nested in the link's
        assert implicit.readline() == GREETING
        fields = peer_fields(implicit)
        assert fields[1] == "203.0.113.9" and "tls=True" in fields
        upgraded = linked_client(ports["plain"], certificates)
        upgraded.send(b"PROXY TCP4 198.51.100.4 192.0.2.1 42000 143\r\n")
        assert upgraded.readline() == GREETING
        assert upgraded.command("STARTTLS") == b"OK begin TLS\r\n"
        upgraded.starttls(own_client)
        fields = peer_fields(upgraded)
        assert fields[1] == "198.51.100.4" and "tls=True" in fields
        upgraded.send(b"COMPRESS\r\n")
        assert upgraded.readline() == b"OK DEFLATE active\r\n"
        upgraded.start_compress()  # DEFLATE inside the client's TLS inside the link's
        assert upgraded.command("ECHO three layers") == b"OK three layers\r\n"


def test_a_header_in_clear_or_a_silent_peer_gets_no_session(certificates: dict[str, str],
                                                            link_context: ssl.SSLContext) -> None:
    recorder = Recorder()
    options: dict[str, Any] = {"proxy_mode": 1, "proxy_ssl_context": link_context, "conn_timeout": 0.5}
    with running_server(recorder, **options) as (server, ports):
        clear = Client("127.0.0.1", ports["plain"])
        clear.send(HEADER + b"PEER\r\n")
        assert b"OK" not in clear.read_until_eof()  # at most a TLS alert: a handshake was expected
        silent = Client("127.0.0.1", ports["plain"])
        assert silent.read_until_eof() == b""  # the handshake's deadline
        no_header = linked_client(ports["plain"], certificates)
        assert no_header.read_until_eof() == b""  # the header's deadline, inside the link
        assert wait_until(lambda: server.stats().sessions == 0)
        assert recorder.count("start") == 0


def test_untrusted_peers_are_served_in_clear_without_a_link(certificates: dict[str, str],
                                                            link_context: ssl.SSLContext) -> None:
    recorder = Recorder()
    options: dict[str, Any] = {"proxy_mode": 1, "proxy_trust": ["192.0.2.0/24"], "proxy_ssl_context": link_context}
    with running_server(recorder, **options) as (_server, ports):
        direct = Client("127.0.0.1", ports["plain"])
        assert direct.readline() == GREETING
        fields = peer_fields(direct)
        assert fields[1] == "127.0.0.1" and "proxied=False" in fields
        assert "proxy_tls_version" not in recorder.handlers[0].info.extra


def _client_ca(directory: Path) -> tuple[str, str, str]:
    """A CA certificate, and a proxy's client certificate and key signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test proxy CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "proxy.pem", directory / "proxy.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(paths[0]), str(paths[1]), str(paths[2])


def test_a_client_ca_admits_only_proxies_with_its_certificate(certificates: dict[str, str],
                                                              tmp_path: Path) -> None:
    ca_path, proxy_cert, proxy_key = _client_ca(tmp_path)
    context = make_server_context(certificates["link_cert"], certificates["link_key"], client_ca=ca_path)
    recorder = Recorder()
    with running_server(recorder, proxy_mode=2, proxy_ssl_context=context) as (server, ports):
        anonymous = Client("127.0.0.1", ports["plain"])
        with pytest.raises((ssl.SSLError, OSError, EOFError)):
            # TLS 1.3: the refusal comes as an alert after the client's handshake returns.
            anonymous.starttls(client_tls_context(certificates["link_cert"]))
            anonymous.send(HEADER)
            anonymous.readline()
        proxy_side = client_tls_context(certificates["link_cert"])
        proxy_side.load_cert_chain(proxy_cert, proxy_key)
        proxy = Client("127.0.0.1", ports["plain"])
        proxy.starttls(proxy_side)
        proxy.send(HEADER)
        assert proxy.readline() == GREETING
        assert wait_until(lambda: server.stats().sessions == 1)


def test_a_client_ca_file_without_certificates_is_refused(certificates: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "ca.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match="does not contain a PEM certificate"):
        make_server_context(certificates["link_cert"], certificates["link_key"], client_ca=str(empty))


# -- the real daemon -----------------------------------------------------------------------


class LinkedImap(imaplib.IMAP4):
    """imaplib as a proxy at 127.0.0.2 would connect over the link: TLS to gximap, a PROXY
    header inside it, then IMAP in the same TLS."""

    def __init__(self, port: int, link_client: ssl.SSLContext, header: bytes) -> None:
        self._link_client = link_client
        self._header = header
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout, source_address=(PROXY_HOST, 0))
        link = self._link_client.wrap_socket(raw, server_hostname="localhost")
        link.sendall(self._header)
        return link


PROXY_HOST = "127.0.0.2"


@pytest.mark.e2e
def test_gximap_behind_a_proxy_link(tmp_path: Path, certificates: dict[str, str]) -> None:
    from e2e import GximapProcess

    gximap = GximapProcess(tmp_path, tls=False, extra={
        "imap_accept_haproxy": "2",
        "imap_haproxy_trust": PROXY_HOST,  # 127.0.0.1, the readiness probe's address, is served as itself
        "imap_haproxy_certificate_path": certificates["link_cert"],
        "imap_haproxy_private_key_path": certificates["link_key"],
    })
    gximap.start()
    try:
        client = LinkedImap(gximap.port, client_tls_context(certificates["link_cert"]),
                            v2_proxy("203.0.113.77", "192.0.2.1", 43000, 143))
        try:
            assert client.login("alice", "secret")[0] == "OK"
            assert client.select("INBOX")[0] == "OK"
            client.append("INBOX", None, None, b"Subject: through the link\r\n\r\nbody\r\n")
            assert client.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")[0] == "OK"
        finally:
            client.logout()
        # The client's address from the header is the one logged (and throttled).
        assert wait_until(lambda: "203.0.113.77" in gximap.log())
    finally:
        gximap.stop()


@pytest.mark.e2e
def test_gximap_refuses_to_start_with_an_unusable_link_certificate(tmp_path: Path,
                                                                   certificates: dict[str, str]) -> None:
    from e2e import GximapProcess

    missing = tmp_path / "missing.pem"
    gximap = GximapProcess(tmp_path, tls=False, extra={
        "imap_accept_haproxy": "2",
        "imap_haproxy_certificate_path": str(missing),
        "imap_haproxy_private_key_path": certificates["link_key"],
    })
    out = subprocess.run([sys.executable, "-m", "gximap", "-c", str(gximap.config_path)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert (f"{gximap.config_path}:{_line_of(gximap, 'imap_haproxy_certificate_path')}: imap_haproxy_certificate_path: "
            f"TLS certificate file {missing} does not exist") in out.stdout + out.stderr
    # A CA file without certificates is named as the CA directive's fault, at its line.
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("no certificate here\n")
    gximap.write_config(imap_haproxy_certificate_path=certificates["link_cert"], imap_haproxy_ca_path=str(bad_ca))
    out = subprocess.run([sys.executable, "-m", "gximap", "-c", str(gximap.config_path)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert (f"{gximap.config_path}:{_line_of(gximap, 'imap_haproxy_ca_path')}: imap_haproxy_ca_path: "
            f"TLS certificate file {bad_ca} does not contain a PEM certificate") in out.stdout + out.stderr


def _line_of(gximap: Any, name: str) -> int:
    lines = gximap.config_path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if line.startswith(f"{name} ="))


def test_the_link_and_its_header_share_the_header_deadline(certificates: dict[str, str], link_context: ssl.SSLContext,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Until its header, a peer holds a context without being counted against
    imap_max_conn_per_ip: the handshake may not stretch that to imap_conn_timeout."""
    import gximap.net.pool as pool_module

    monkeypatch.setattr(pool_module, "_PROXY_HEADER_TIMEOUT", 0.3)
    recorder = Recorder()
    options: dict[str, Any] = {"proxy_mode": 1, "proxy_ssl_context": link_context, "conn_timeout": 30.0}
    with running_server(recorder, **options) as (server, ports):
        started = time.monotonic()
        silent = Client("127.0.0.1", ports["plain"])
        assert silent.read_until_eof() == b""
        no_header = linked_client(ports["plain"], certificates)
        assert no_header.read_until_eof() == b""
        assert time.monotonic() - started < 10.0  # two deadlines of 0.6 s, not of 30 s
        assert wait_until(lambda: server.stats().sessions == 0)


def test_a_busy_refusal_sends_no_plaintext_to_a_peer_expecting_the_link(certificates: dict[str, str],
                                                                      link_context: ssl.SSLContext) -> None:
    recorder = Recorder()
    options: dict[str, Any] = {"proxy_mode": 2, "proxy_ssl_context": link_context, "context_num": 1}
    with running_server(recorder, **options) as (server, ports):
        first = linked_client(ports["plain"], certificates)
        first.send(HEADER)
        assert first.readline() == GREETING
        refused = Client("127.0.0.1", ports["plain"])
        assert refused.read_until_eof() == b""  # closed, no "* BYE" in clear where TLS is expected
        assert server.stats().sessions == 1


def test_the_daemon_unlocks_an_encrypted_link_key(tmp_path: Path, certificates: dict[str, str]) -> None:
    """imap_haproxy_certificate_passwd reaches the key; a wrong one stops start-up at its line."""
    from gximap.config import config_from_text
    from gximap.daemon import Daemon, StartupError

    key = serialization.load_pem_private_key(Path(certificates["link_key"]).read_bytes(), password=None)
    encrypted = tmp_path / "link.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"s3cret")))
    text = ("imap_accept_haproxy = 2\n"
            f"imap_haproxy_certificate_path = {certificates['link_cert']}\n"
            f"imap_haproxy_private_key_path = {encrypted}\n")
    context = Daemon(config_from_text(text + "imap_haproxy_certificate_passwd = s3cret\n", "g.cfg"), [])._proxy_tls_context()
    assert isinstance(context, ssl.SSLContext)
    with pytest.raises(StartupError, match=r"g\.cfg:4: imap_haproxy_certificate_passwd: TLS key .*wrong password"):
        Daemon(config_from_text(text + "imap_haproxy_certificate_passwd = nope\n", "g.cfg"), [])._proxy_tls_context()
