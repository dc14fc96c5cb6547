"""TLS context construction with clear errors, and self-signed certificate generation."""

from __future__ import annotations

import builtins
import datetime
import ipaddress
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import gximap.net.tls as tls_module
from gximap.net.certs import generate_self_signed
from gximap.net.tls import TlsConfigError, make_server_context

UTC = datetime.UTC


def build_certificate(
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: str = "localhost",
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    issuer: str | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(days=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    )
    return builder.sign(issuer_key or key, hashes.SHA256())


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def write_pair(
    directory: Path, certificate_data: bytes, key_data: bytes, name: str = "server"
) -> tuple[str, str]:
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(certificate_data)
    key_path.write_bytes(key_data)
    return str(cert_path), str(key_path)


def handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> str:
    """Run a real TLS handshake over a socket pair; returns the negotiated version."""
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(5)
    client_sock.settimeout(5)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_context.wrap_socket(server_sock, server_side=True) as tls:
                tls.sendall(b"hello")
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(client_sock, server_hostname="localhost") as tls:
            assert tls.recv(5) == b"hello"
            version = tls.version()
            assert version is not None
            return version
    finally:
        thread.join(5)
        server_sock.close()


def client_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


# -- make_server_context ------------------------------------------------------------------


def test_context_from_chain_file_serves_a_handshake(tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build_certificate(ca_key, subject="Test CA", ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = build_certificate(leaf_key, issuer_key=ca_key, issuer="Test CA")
    cert_path, key_path = write_pair(tmp_path, pem(leaf) + pem(ca), key_pem(leaf_key))
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(pem(ca))
    context = make_server_context(cert_path, key_path)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert handshake(context, client_context(str(ca_path))).startswith("TLSv1.")


def test_combined_pem_and_rsa_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = build_certificate(key)  # type: ignore[arg-type]
    combined = tmp_path / "combined.pem"
    combined.write_bytes(key_pem(key) + pem(certificate))
    context = make_server_context(str(combined), None)
    assert handshake(context, client_context(str(combined))).startswith("TLSv1.")
    assert make_server_context(str(combined), str(combined)) is not None


def test_min_proto(tmp_path: Path) -> None:
    cert_path, key_path = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    generate_self_signed(cert_path, key_path, ["localhost"])
    strict = make_server_context(cert_path, key_path, min_proto="TLS1.3")
    assert strict.minimum_version == ssl.TLSVersion.TLSv1_3
    old_client = client_context(cert_path)
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(strict, old_client)
    assert handshake(strict, client_context(cert_path)) == "TLSv1.3"
    lenient = make_server_context(cert_path, key_path, min_proto="tls1.0")
    assert lenient.minimum_version == ssl.TLSVersion.TLSv1
    with pytest.raises(TlsConfigError, match="tls_min_proto 'ssl3' is not one of tls1.0, tls1.1"):
        make_server_context(cert_path, key_path, min_proto="ssl3")


def test_max_proto(tmp_path: Path) -> None:
    """tls_max_proto with tls_min_proto: maddy's 'protocols tls1.2 tls1.2' pins one version."""
    cert_path, key_path = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    generate_self_signed(cert_path, key_path, ["localhost"])
    pinned = make_server_context(cert_path, key_path, min_proto="tls1.2", max_proto="TLS1.2")
    assert pinned.maximum_version == ssl.TLSVersion.TLSv1_2
    assert handshake(pinned, client_context(cert_path)) == "TLSv1.2"
    new_client = client_context(cert_path)
    new_client.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(pinned, new_client)
    assert make_server_context(cert_path, key_path).maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    with pytest.raises(TlsConfigError, match="tls_max_proto tls1.1 is below tls_min_proto tls1.2"):
        make_server_context(cert_path, key_path, max_proto="tls1.1")
    with pytest.raises(TlsConfigError, match="tls_max_proto 'tls2' is not one of"):
        make_server_context(cert_path, key_path, max_proto="tls2")


def test_missing_and_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert_path, key_path = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    generate_self_signed(cert_path, key_path, ["localhost"])
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(TlsConfigError, match=f"TLS certificate file {missing} does not exist"):
        make_server_context(missing, key_path)
    with pytest.raises(TlsConfigError, match=f"TLS key file {missing} does not exist"):
        make_server_context(cert_path, missing)
    with pytest.raises(TlsConfigError, match="is a directory"):
        make_server_context(str(tmp_path), key_path)

    real_open = builtins.open

    def guarded_open(path: object, *args: object, **kwargs: object) -> object:
        if path == key_path:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(tls_module, "open", guarded_open, raising=False)
    with pytest.raises(TlsConfigError, match=f"TLS key file {key_path} is not readable .permission denied."):
        make_server_context(cert_path, key_path)


def test_not_a_certificate(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = write_pair(tmp_path, b"this is not a certificate\n", key_pem(key))
    with pytest.raises(TlsConfigError, match="does not contain a PEM certificate"):
        make_server_context(cert_path, key_path)
    broken = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    cert_path, key_path = write_pair(tmp_path, broken, key_pem(key), "broken")
    with pytest.raises(TlsConfigError, match="invalid PEM certificate"):
        make_server_context(cert_path, key_path)
    cert_path, key_path = write_pair(tmp_path, pem(build_certificate(key)), b"no key here\n", "nokey")
    with pytest.raises(TlsConfigError, match="does not contain a PEM private key"):
        make_server_context(cert_path, key_path)


def test_key_does_not_match_certificate(tmp_path: Path) -> None:
    certificate = build_certificate(ec.generate_private_key(ec.SECP256R1()))
    other_key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = write_pair(tmp_path, pem(certificate), key_pem(other_key))
    with pytest.raises(TlsConfigError, match=f"TLS key {key_path} does not match the certificate"):
        make_server_context(cert_path, key_path)


def test_encrypted_key_passwords(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = write_pair(tmp_path, pem(build_certificate(key)), key_pem(key, b"s3cret"))
    with pytest.raises(TlsConfigError, match="wrong password"):
        make_server_context(cert_path, key_path, password="guess")
    with pytest.raises(TlsConfigError, match="encrypted and no password is configured"):
        make_server_context(cert_path, key_path)
    context = make_server_context(cert_path, key_path, password="s3cret")
    assert handshake(context, client_context(cert_path)).startswith("TLSv1.")


def test_certificate_validity_period(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    expired = build_certificate(
        key, not_before=now - datetime.timedelta(days=60), not_after=now - datetime.timedelta(days=1)
    )
    cert_path, key_path = write_pair(tmp_path, pem(expired), key_pem(key), "expired")
    with pytest.raises(TlsConfigError, match=f"TLS certificate {cert_path} expired on"):
        make_server_context(cert_path, key_path)
    future = build_certificate(
        key, not_before=now + datetime.timedelta(days=2), not_after=now + datetime.timedelta(days=60)
    )
    cert_path, key_path = write_pair(tmp_path, pem(future), key_pem(key), "future")
    with pytest.raises(TlsConfigError, match="is not valid before"):
        make_server_context(cert_path, key_path)


@pytest.mark.parametrize(("case", "at"), [
    ("missing certificate", ":2: imap_certificate_path: TLS certificate file"),
    ("expired certificate", ":2: imap_certificate_path: TLS certificate"),
    ("not a key", ":3: imap_private_key_path: TLS key file"),
    ("another certificate's key", ":3: imap_private_key_path: TLS key"),
    ("no password", ":3: imap_private_key_path: TLS key"),
    ("wrong password", ":4: imap_certificate_passwd: TLS key"),
])
def test_the_daemon_names_file_line_and_directive_of_the_tls_material_at_fault(
        tmp_path: Path, case: str, at: str) -> None:
    """As every configuration error does (FILE:LINE: directive: why); the main certificate's
    were reported without them ("gximap: TLS certificate file X does not exist")."""
    from gximap.config import config_from_text
    from gximap.daemon import Daemon, StartupError

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    certificate = (build_certificate(key, not_before=now - datetime.timedelta(days=9),
                                     not_after=now - datetime.timedelta(days=1))
                   if case == "expired certificate" else build_certificate(key))
    other = ec.generate_private_key(ec.SECP256R1())
    key_data = {"not a key": b"no key here\n", "another certificate's key": key_pem(other),
                "no password": key_pem(key, b"s3cret"), "wrong password": key_pem(key, b"s3cret")}
    cert_path, key_path = write_pair(tmp_path, pem(certificate), key_data.get(case, key_pem(key)))
    if case == "missing certificate":
        cert_path = str(tmp_path / "nope.pem")
    password_line = "imap_certificate_passwd = guess\n" if case == "wrong password" else ""
    text = (f"imap_support_tls = yes\nimap_certificate_path = {cert_path}\nimap_private_key_path = {key_path}\n"
            f"{password_line}")
    with pytest.raises(StartupError) as refused:
        Daemon(config_from_text(text, "t.cfg"), [])._tls_context()
    assert str(refused.value).startswith(f"t.cfg{at}"), str(refused.value)


# -- generate_self_signed -----------------------------------------------------------------


def test_generate_self_signed(tmp_path: Path) -> None:
    cert_path = tmp_path / "new" / "dir" / "cert.pem"
    key_path = tmp_path / "private" / "key.pem"
    generate_self_signed(str(cert_path), str(key_path), ["mail.example.org", "127.0.0.1", "::1"], days=90)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cert_path).st_mode) == 0o644
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mail.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mail.example.org"
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert datetime.timedelta(days=90) <= lifetime <= datetime.timedelta(days=90, minutes=10)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert [name for name in os.listdir(key_path.parent)] == ["key.pem"]  # no temporary left over
    make_server_context(str(cert_path), str(key_path))


def test_generate_self_signed_rsa_and_errors(tmp_path: Path) -> None:
    cert_path, key_path = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    generate_self_signed(cert_path, key_path, [], key_type="rsa")
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    with pytest.raises(ValueError, match="key_type"):
        generate_self_signed(cert_path, key_path, ["x"], key_type="dsa")
    with pytest.raises(ValueError, match="at least one day"):
        generate_self_signed(cert_path, key_path, ["x"], days=0)
