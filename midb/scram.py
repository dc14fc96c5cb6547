"""SCRAM-SHA-256 credentials (RFC 5802 section 3, RFC 7677): what a server keeps to check a
SCRAM login without knowing the password, and how it is derived.

    SaltedPassword = Hi(Normalize(password), salt, i)     (PBKDF2-HMAC-SHA-256)
    ClientKey      = HMAC(SaltedPassword, "Client Key")
    StoredKey      = H(ClientKey)
    ServerKey      = HMAC(SaltedPassword, "Server Key")

A credential is kept as Dovecot's ``{SCRAM-SHA-256}`` scheme keeps it (password-scheme-scram.c
``scram_generate``): ``iterations,base64(salt),base64(StoredKey),base64(ServerKey)``, so that a
Dovecot hash can be imported as it is and ours could be handed back to Dovecot.

Iterations: new credentials use DEFAULT_ITERATIONS = 100,000. RFC 7677 section 4 asks for at least
4096 (Dovecot's and PostgreSQL's default), but the keys are as good as a password hash for an
offline guesser: at 4096 one guess costs about 1 ms of one core, 50 times less than the scrypt hash
kept beside them (midb.passwords), so a stolen store would be guessed at the weaker of the two.
100,000 rounds cost about as much as that scrypt hash (some 40 ms here); the client pays them
once per login (or never: most clients keep SaltedPassword), the server only when a password is
set. Stored credentials with fewer than MIN_ITERATIONS (4096) are refused as malformed, and more
than MAX_ITERATIONS too: a hostile entry must not make a PLAIN check spin for minutes.

Normalize: RFC 5802 section 2.2 says SASLprep (RFC 4013). Dovecot derives its keys from the
password as typed, and most clients apply SASLprep and fall back to the password as typed when
SASLprep refuses it; for a printable ASCII password, and for most others, the two agree. New
credentials are derived from :func:`normalize_password` (SASLprep when it accepts the password,
else the password as typed), and :func:`verify_password` accepts either form, so imported Dovecot
credentials check out as well as ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stringprep
import unicodedata
from dataclasses import dataclass

DEFAULT_ITERATIONS = 100_000
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
KEY_BYTES = 32  # SHA-256
SCHEME = "SCRAM-SHA-256"


class SaslPrepError(ValueError):
    """The text holds what SASLprep prohibits (RFC 4013 section 2.3) or breaks its bidi rule."""


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep (stringprep profile, unassigned code points allowed as in a query)."""
    # 2.1 Mapping: non-ASCII spaces to SPACE, the "commonly mapped to nothing" characters removed.
    mapped = "".join(" " if stringprep.in_table_c12(char) else char
                     for char in text if not stringprep.in_table_b1(char))
    normalized = unicodedata.normalize("NFKC", mapped)  # 2.2
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
                  stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
                  stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
                  stringprep.in_table_c9)
    for char in normalized:  # 2.3
        if any(table(char) for table in prohibited):
            raise SaslPrepError(f"prohibited character U+{ord(char):04X}")
    # 2.4 / RFC 3454 section 6: a string with right-to-left characters may hold no left-to-right
    # ones, and must begin and end with a right-to-left character.
    if any(stringprep.in_table_d1(char) for char in normalized):
        if any(stringprep.in_table_d2(char) for char in normalized):
            raise SaslPrepError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            raise SaslPrepError("right-to-left text must begin and end with a right-to-left character")
    return normalized


def normalize_password(password: str) -> bytes:
    """The octets a SCRAM client hashes: SASLprep'd when SASLprep accepts the password, else as
    typed (module docstring). ValueError for a str that is not valid Unicode (lone surrogates)."""
    try:
        prepared = saslprep(password)
    except SaslPrepError:
        prepared = password
    try:
        return prepared.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("password is not valid Unicode text") from exc


def salted_password(password: bytes, salt: bytes, iterations: int) -> bytes:
    """Hi() of RFC 5802 section 2.2, which is PBKDF2 with HMAC-SHA-256 and one block."""
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations, KEY_BYTES)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def client_key(salted: bytes) -> bytes:
    return hmac_sha256(salted, b"Client Key")


def stored_key_of(client: bytes) -> bytes:
    return hashlib.sha256(client).digest()


def server_key(salted: bytes) -> bytes:
    return hmac_sha256(salted, b"Server Key")


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """What the server keeps of a password for SCRAM-SHA-256 (module docstring)."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def text(self) -> str:
        """Dovecot's form, without the ``{SCRAM-SHA-256}`` prefix."""
        return ",".join((str(self.iterations), _b64(self.salt), _b64(self.stored_key), _b64(self.server_key)))

    def matches(self, password: str) -> bool:
        """Whether ``password`` is the one these keys were derived from (a PLAIN login checked
        against an imported ``{SCRAM-SHA-256}`` hash): its normalized form, or the password as
        typed (Dovecot's), gives the same StoredKey. Costs one or two derivations."""
        try:
            candidates = [normalize_password(password), password.encode("utf-8")]
        except (ValueError, UnicodeEncodeError):
            return False
        if candidates[0] == candidates[1]:
            del candidates[1]
        found = False
        for secret in candidates:
            salted = salted_password(secret, self.salt, self.iterations)
            found |= hmac.compare_digest(stored_key_of(client_key(salted)), self.stored_key)
        return found


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def derive(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> ScramCredential:
    """New keys for ``password`` (a random salt unless one is given). ValueError for a password
    that is not valid Unicode, or iterations out of range."""
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"SCRAM iterations must be within {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    salted = salted_password(normalize_password(password), salt, iterations)
    return ScramCredential(iterations, salt, stored_key_of(client_key(salted)), server_key(salted))


def parse_credential(text: str) -> ScramCredential | None:
    """A credential from Dovecot's form (``{SCRAM-SHA-256}`` prefix optional); None when it is
    malformed or its iterations are out of range."""
    if text.startswith("{"):
        scheme, sep, text = text[1:].partition("}")
        if not sep or scheme.upper() != SCHEME:
            return None
    parts = text.strip().split(",")
    # ASCII digits only: str.isdigit() takes "\u00b2" too, which int() refuses (a ValueError where
    # verify_password promises none), and other scripts' digits, which Dovecot does not write.
    if len(parts) != 4 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 9:
        return None
    iterations = int(parts[0])
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        return None
    try:
        salt, stored, server = (base64.b64decode(part, validate=True) for part in parts[1:])
    except (binascii.Error, ValueError):
        return None
    if not salt or len(stored) != KEY_BYTES or len(server) != KEY_BYTES:
        return None
    return ScramCredential(iterations, salt, stored, server)
