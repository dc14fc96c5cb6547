"""The server's TLS context, with configuration mistakes reported in plain words.

Public API:
    make_server_context(cert_path, key_path, *, password=None, min_proto="tls1.2", max_proto=None,
                        client_ca=None) -> ssl.SSLContext
        max_proto: None for the newest OpenSSL offers; client_ca: PEM CA file, peers must then
        show a certificate it signed
    require_client_certificates(context, ca_path)    the same for a context made already
    TlsConfigError        .part: which setting is at fault (TlsPart), for the caller to name
    TLS_VERSIONS: the accepted ``tls_min_proto`` / ``tls_max_proto`` values

``imap_certificate_path`` may hold the whole chain (leaf first), as Gromox expects; the key may
sit in the same file (pass the same path, or an empty key path). Everything is checked with
``cryptography`` first, so that the operator reads "key does not match certificate" rather than
an OpenSSL error code: missing or unreadable files, no PEM certificate, a key of another
certificate, an encrypted key without or with the wrong password, a certificate outside its
validity period. The STARTTLS upgrade itself happens in gximap.net.transport / pool.
"""

from __future__ import annotations

import datetime
import logging
import ssl
import warnings
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = ["TLS_VERSIONS", "TlsConfigError", "TlsPart", "make_server_context", "require_client_certificates"]

log = logging.getLogger("gximap.net")

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "tls1.0": ssl.TLSVersion.TLSv1,
    "tls1.1": ssl.TLSVersion.TLSv1_1,
    "tls1.2": ssl.TLSVersion.TLSv1_2,
    "tls1.3": ssl.TLSVersion.TLSv1_3,
}


# What a TlsConfigError is about, for the caller to name the directive (and its line):
# tls_min_proto / tls_max_proto by name, the rest as the caller's certificate, key, password or CA.
TlsPart = Literal["certificate", "key", "password", "ca", "tls_min_proto", "tls_max_proto"]


class TlsConfigError(Exception):
    """The TLS material or settings cannot be used; the message says what to fix, ``part``
    which of the caller's settings is at fault."""

    def __init__(self, message: str, part: TlsPart) -> None:
        super().__init__(message)
        self.part: TlsPart = part


def make_server_context(
    cert_path: str,
    key_path: str | None,
    *,
    password: str | None = None,
    min_proto: str = "tls1.2",
    max_proto: str | None = None,
    client_ca: str | None = None,
) -> ssl.SSLContext:
    key_path = key_path or cert_path
    minimum = _version("tls_min_proto", min_proto)
    maximum = _version("tls_max_proto", max_proto) if max_proto else None
    if maximum is not None and maximum < minimum:
        raise TlsConfigError(f"tls_max_proto {max_proto} is below tls_min_proto {min_proto}", "tls_max_proto")
    cert_data = _read(cert_path, "certificate")
    key_data = cert_data if key_path == cert_path else _read(key_path, "key")
    certificates = _load_certificates(cert_path, cert_data, "certificate")
    _check_validity(cert_path, certificates[0])
    key, key_password = _load_key(key_path, key_data, password)
    if _public_der(key.public_key()) != _public_der(certificates[0].public_key()):
        raise TlsConfigError(f"TLS key {key_path} does not match the certificate in {cert_path}", "key")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # TLS 1.0/1.1 are refused by OpenSSL 3's default security level however the minimum is set;
    # an operator who asks for them explicitly gets them.
    if minimum < ssl.TLSVersion.TLSv1_2:
        log.warning("tls_min_proto %s enables deprecated TLS versions", min_proto)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        # Python flags TLS 1.0/1.1 as deprecated; the operator asked for them and was warned above.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
    # No compression (CRIME); no renegotiation, which the memory-BIO transport never expects.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(cert_path, key_path, password=key_password)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"TLS certificate {cert_path} / key {key_path}: {exc.reason or exc}",
                             "certificate") from None
    except OSError as exc:
        raise TlsConfigError(f"TLS certificate {cert_path} / key {key_path}: {exc.strerror or exc}",
                             "certificate") from None
    if client_ca is not None:
        require_client_certificates(context, client_ca)
    return context


def require_client_certificates(context: ssl.SSLContext, ca_path: str) -> None:
    """Make peers show a certificate signed by a CA of ``ca_path`` (PEM) to finish the handshake."""
    _load_certificates(ca_path, _read(ca_path, "ca"), "ca")
    try:
        context.load_verify_locations(cafile=ca_path)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"TLS CA certificate file {ca_path}: {exc.reason or exc}", "ca") from None
    context.verify_mode = ssl.CERT_REQUIRED


def _version(directive: Literal["tls_min_proto", "tls_max_proto"], value: str) -> ssl.TLSVersion:
    name = value.strip().lower()
    if name not in TLS_VERSIONS:
        raise TlsConfigError(f"{directive} {value!r} is not one of {', '.join(TLS_VERSIONS)}", directive)
    if name == "tls1.3" and not ssl.HAS_TLSv1_3:
        raise TlsConfigError(f"{directive} tls1.3: this system's OpenSSL does not support TLS 1.3", directive)
    return TLS_VERSIONS[name]


_FILE_WORDS: dict[TlsPart, str] = {"certificate": "certificate", "key": "key", "ca": "CA certificate"}


def _read(path: str, part: TlsPart) -> bytes:
    what = _FILE_WORDS[part]
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise TlsConfigError(f"TLS {what} file {path} does not exist", part) from None
    except PermissionError:
        raise TlsConfigError(f"TLS {what} file {path} is not readable (permission denied)", part) from None
    except IsADirectoryError:
        raise TlsConfigError(f"TLS {what} file {path} is a directory", part) from None
    except OSError as exc:
        raise TlsConfigError(f"TLS {what} file {path} cannot be read: {exc.strerror or exc}", part) from None


def _load_certificates(path: str, data: bytes, part: TlsPart) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TlsConfigError(f"TLS certificate file {path} does not contain a PEM certificate", part)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsConfigError(f"TLS certificate file {path} holds an invalid PEM certificate: {exc}", part) from None


def _check_validity(path: str, certificate: x509.Certificate) -> None:
    now = datetime.datetime.now(datetime.UTC)
    if now > certificate.not_valid_after_utc:
        raise TlsConfigError(
            f"TLS certificate {path} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
            "certificate",
        )
    if now < certificate.not_valid_before_utc:
        raise TlsConfigError(
            f"TLS certificate {path} is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
            "certificate",
        )


def _load_key(path: str, data: bytes, password: str | None) -> tuple[PrivateKeyTypes, bytes | None]:
    """The private key, and the password bytes to give OpenSSL (None if the key is not encrypted)."""
    if b"PRIVATE KEY-----" not in data:
        raise TlsConfigError(f"TLS key file {path} does not contain a PEM private key", "key")
    try:
        return serialization.load_pem_private_key(data, password=None), None
    except TypeError:
        pass  # encrypted
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TlsConfigError(f"TLS key file {path} holds an unusable private key: {exc}", "key") from None
    if not password:
        raise TlsConfigError(f"TLS key {path} is encrypted and no password is configured", "key")
    secret = password.encode("utf-8")
    try:
        return serialization.load_pem_private_key(data, password=secret), secret
    except (TypeError, ValueError):
        raise TlsConfigError(f"TLS key {path}: wrong password for the encrypted key", "password") from None


def _public_der(public_key: object) -> bytes:
    encode = getattr(public_key, "public_bytes", None)
    if encode is None:
        return b""
    return bytes(encode(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
