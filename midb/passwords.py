"""Password hashing for midb accounts, and verification of imported (Dovecot-style) hashes.

New hashes use scrypt (``hashlib.scrypt``, RFC 7914) in a self-describing string::

    $scrypt$ln=14,r=8,p=1$<salt>$<key>

``ln`` is log2(N); salt (16 bytes) and key (32 bytes) are standard base64 without padding.
ln=14, r=8, p=1 needs 16 MiB of memory and takes about 50 ms on the reference machine (2 cores,
2024-era x86-64): slow enough to make offline guessing expensive, fast enough that a burst of
logins does not stall the server. The parameters live in every stored string, so raising the
constants below later is safe: old hashes still verify, and ``needs_rehash`` tells the login path
to re-hash with the new cost.

Hashes imported from Dovecot carry a ``{SCHEME}`` prefix (optionally ``{SCHEME.b64}`` or
``{SCHEME.hex}``), decoded the way Dovecot's password-scheme.c does. The crypt(3) family
(``$1$``, ``$5$``, ``$6$``, ``$2y$``, ``$y$``) is checked with the standard library's ``crypt``
module (libxcrypt), present up to Python 3.12; without it those schemes are reported as
unsupported. Argon2 (``$argon2i$``/``$argon2id$``) uses the ``cryptography`` package.
``{SCRAM-SHA-256}`` (Dovecot's SCRAM keys, midb.scram) is checked by deriving the keys from the
password with the entry's salt and iterations; such an entry is also a SCRAM credential itself.

Verification never raises for malformed or unknown input: it logs a warning and returns False.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from midb.scram import ScramCredential

log = logging.getLogger(__name__)

SCRYPT_LOG2_N = 14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_KEY_BYTES = 32
NATIVE_PREFIX = "$scrypt$"

# Upper bounds for parameters read from a stored hash: a corrupted or hostile entry must not make
# one login allocate gigabytes or spin for minutes.
_SCRYPT_MAX_LOG2_N = 22
_SCRYPT_MAX_R = 32
_SCRYPT_MAX_P = 16
_ARGON2_MAX_MEMORY_KIB = 4 << 20
_ARGON2_MAX_ITERATIONS = 64
_PBKDF2_MAX_ROUNDS = 10_000_000


def _load_crypt() -> ModuleType | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # deprecated since 3.11, removed in 3.13
    except ImportError:
        return None
    return crypt


_crypt = _load_crypt()


def crypt_available() -> bool:
    """True when crypt(3)-style hashes ($1$, $5$, $6$, $2y$, ...) can be verified here."""
    return _crypt is not None


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    """Standard base64, padding optional (Dovecot and argon2 strings differ on padding)."""
    text = text.strip()
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _encode_password(password: str) -> bytes:
    return password.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# native scrypt


def hash_password(password: str) -> str:
    """Hash a password for storage in the account table (scrypt, see module docstring).

    Raises ValueError when the password cannot be encoded as UTF-8 (lone surrogates).
    """
    try:
        secret = _encode_password(password)
    except UnicodeEncodeError as exc:
        raise ValueError("password is not valid Unicode text") from exc
    salt = os.urandom(SCRYPT_SALT_BYTES)
    key = _scrypt(secret, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, SCRYPT_KEY_BYTES)
    return (f"{NATIVE_PREFIX}ln={SCRYPT_LOG2_N},r={SCRYPT_R},p={SCRYPT_P}"
            f"${_b64encode(salt)}${_b64encode(key)}")


def password_credentials(password: str) -> tuple[str, str]:
    """What to store when a password is set: its scrypt hash and its SCRAM-SHA-256 keys (in
    Dovecot's form, midb.scram), for Account.password_hash and Account.scram_sha256. Raises
    ValueError when the password cannot be encoded as UTF-8 (lone surrogates)."""
    from midb.scram import derive

    return hash_password(password), derive(password).text()


def _scrypt(secret: bytes, salt: bytes, log2_n: int, r: int, p: int, dklen: int) -> bytes:
    n = 1 << log2_n
    # OpenSSL refuses to run past maxmem; allow exactly what these parameters need plus slack.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


_NATIVE_RE = re.compile(r"^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


def _parse_native(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    match = _NATIVE_RE.match(stored)
    if match is None:
        return None
    log2_n, r, p = int(match[1]), int(match[2]), int(match[3])
    if not (1 <= log2_n <= _SCRYPT_MAX_LOG2_N and 1 <= r <= _SCRYPT_MAX_R and 1 <= p <= _SCRYPT_MAX_P):
        return None
    try:
        salt, key = _b64decode(match[4]), _b64decode(match[5])
    except (binascii.Error, ValueError):
        return None
    if not salt or not 16 <= len(key) <= 64:
        return None
    return log2_n, r, p, salt, key


def _verify_native(secret: bytes, stored: str) -> bool:
    parsed = _parse_native(stored)
    if parsed is None:
        log.warning("malformed scrypt password hash")
        return False
    log2_n, r, p, salt, key = parsed
    return hmac.compare_digest(_scrypt(secret, salt, log2_n, r, p, len(key)), key)


def needs_rehash(stored: str | None) -> bool:
    """True when ``stored`` is not a native scrypt hash at (at least) the current cost."""
    if not stored:
        return True
    parsed = _parse_native(stored)
    if parsed is None:
        return True
    log2_n, r, p, salt, key = parsed
    return (log2_n < SCRYPT_LOG2_N or r < SCRYPT_R or p < SCRYPT_P
            or len(salt) < SCRYPT_SALT_BYTES or len(key) < SCRYPT_KEY_BYTES)


# ---------------------------------------------------------------------------------------------
# imported schemes


class _Unsupported(Exception):
    """The scheme is known but cannot be checked here (missing library) or the entry is malformed."""


_ENC_NONE, _ENC_B64, _ENC_HEX = "none", "base64", "hex"


def _decode(text: str, encoding: str, raw_len: int, explicit: bool) -> bytes:
    """Dovecot's password_decode(): fixed-length schemes guess hex vs base64 by length."""
    if encoding == _ENC_NONE:
        return text.encode("utf-8")
    if raw_len and not explicit:
        encoding = _ENC_HEX if len(text) == raw_len * 2 else _ENC_B64
    try:
        if encoding == _ENC_HEX:
            try:
                raw = bytes.fromhex(text)
            except ValueError:
                if explicit:
                    raise
                raw = _b64decode(text)  # some lengths are valid as both; Dovecot falls back too
        else:
            raw = _b64decode(text)
    except (ValueError, binascii.Error) as exc:
        raise _Unsupported(f"not valid {encoding} data") from exc
    if raw_len and len(raw) != raw_len:
        raise _Unsupported(f"decoded length {len(raw)} instead of {raw_len}")
    return raw


def _plain_check(secret: bytes, raw: bytes) -> bool:
    return hmac.compare_digest(secret, raw)


def _digest_check(algorithm: str) -> Callable[[bytes, bytes], bool]:
    def check(secret: bytes, raw: bytes) -> bool:
        return hmac.compare_digest(hashlib.new(algorithm, secret).digest(), raw)
    return check


def _salted_check(algorithm: str) -> Callable[[bytes, bytes], bool]:
    size = hashlib.new(algorithm).digest_size

    def check(secret: bytes, raw: bytes) -> bool:
        # format: <digest(password + salt)><salt>
        if len(raw) <= size:
            raise _Unsupported("salted hash too short")
        digest, salt = raw[:size], raw[size:]
        return hmac.compare_digest(hashlib.new(algorithm, secret + salt).digest(), digest)
    return check


def _crypt_check(secret: bytes, raw: bytes) -> bool:
    if _crypt is None:
        raise _Unsupported("crypt(3) hashes need the 'crypt' module (Python < 3.13)")
    stored = raw.decode("utf-8", "replace")
    if not stored:
        return False
    try:
        computed = _crypt.crypt(secret.decode("utf-8"), stored)
    except (ValueError, OSError):  # embedded NUL, or libxcrypt refusing the setting
        return False
    if not computed or computed.startswith("*"):
        raise _Unsupported("crypt(3) does not support this hash method")
    return hmac.compare_digest(computed.encode("utf-8"), stored.encode("utf-8"))


def _md5_check(secret: bytes, raw: bytes) -> bool:
    # Dovecot's "MD5" means MD5-CRYPT when it looks like one, else PLAIN-MD5 (hex).
    if raw.startswith(b"$1$"):
        return _crypt_check(secret, raw)
    return _digest_check("md5")(secret, _decode(raw.decode("ascii", "replace"), _ENC_HEX, 16, False))


_PBKDF2_RE = re.compile(r"^\$1\$([^$]*)\$(\d{1,9})\$([0-9a-fA-F]{40})$")


def _pbkdf2_check(secret: bytes, raw: bytes) -> bool:
    # Dovecot: $1$<salt>$<rounds>$<hex PBKDF2-HMAC-SHA1, 20 bytes>, salt used as its ASCII text.
    match = _PBKDF2_RE.match(raw.decode("utf-8", "replace"))
    if match is None:
        raise _Unsupported("malformed PBKDF2 entry")
    rounds = int(match[2])
    if not 1 <= rounds <= _PBKDF2_MAX_ROUNDS:
        raise _Unsupported("PBKDF2 rounds out of range")
    key = hashlib.pbkdf2_hmac("sha1", secret, match[1].encode("utf-8"), rounds, 20)
    return hmac.compare_digest(key, bytes.fromhex(match[3]))


_ARGON2_RE = re.compile(
    r"^\$(argon2id|argon2i)\$(?:v=(\d+)\$)?m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


def _argon2_check(secret: bytes, raw: bytes) -> bool:
    match = _ARGON2_RE.match(raw.decode("utf-8", "replace"))
    if match is None:
        raise _Unsupported("malformed argon2 entry")
    variant, version = match[1], match[2]
    memory, iterations, lanes = int(match[3]), int(match[4]), int(match[5])
    if version not in (None, "19"):
        raise _Unsupported(f"argon2 version {version} not supported")
    if not (8 * lanes <= memory <= _ARGON2_MAX_MEMORY_KIB and 1 <= iterations <= _ARGON2_MAX_ITERATIONS
            and 1 <= lanes <= 255):
        raise _Unsupported("argon2 parameters out of range")
    try:
        salt, key = _b64decode(match[6]), _b64decode(match[7])
        from cryptography.hazmat.primitives.kdf import argon2
    except (binascii.Error, ValueError) as exc:
        raise _Unsupported("malformed argon2 salt or hash") from exc
    except ImportError as exc:
        raise _Unsupported("argon2 needs cryptography >= 44") from exc
    kdf_class = argon2.Argon2id if variant == "argon2id" else argon2.Argon2i
    try:
        kdf = kdf_class(salt=salt, length=len(key), iterations=iterations, lanes=lanes, memory_cost=memory)
        computed = kdf.derive(secret)
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm/ValueError by backend
        raise _Unsupported(f"argon2 not usable: {exc}") from exc
    return hmac.compare_digest(computed, key)


def _scram_check(secret: bytes, raw: bytes) -> bool:
    # Dovecot: iterations,base64(salt),base64(StoredKey),base64(ServerKey) (midb.scram).
    from midb.scram import parse_credential

    credential = parse_credential(raw.decode("utf-8", "replace"))
    if credential is None:
        raise _Unsupported("malformed SCRAM-SHA-256 entry or iterations out of range")
    return credential.matches(secret.decode("utf-8"))


# name -> (default encoding, raw length for fixed-size schemes or 0, checker)
_SCHEMES: dict[str, tuple[str, int, Callable[[bytes, bytes], bool]]] = {
    "PLAIN": (_ENC_NONE, 0, _plain_check),
    "CLEAR": (_ENC_NONE, 0, _plain_check),
    "CLEARTEXT": (_ENC_NONE, 0, _plain_check),
    "SHA": (_ENC_B64, 20, _digest_check("sha1")),
    "SHA1": (_ENC_B64, 20, _digest_check("sha1")),
    "SHA256": (_ENC_B64, 32, _digest_check("sha256")),
    "SHA512": (_ENC_B64, 64, _digest_check("sha512")),
    "SSHA": (_ENC_B64, 0, _salted_check("sha1")),
    "SSHA256": (_ENC_B64, 0, _salted_check("sha256")),
    "SSHA512": (_ENC_B64, 0, _salted_check("sha512")),
    "SMD5": (_ENC_B64, 0, _salted_check("md5")),
    "PLAIN-MD5": (_ENC_HEX, 16, _digest_check("md5")),
    "LDAP-MD5": (_ENC_B64, 16, _digest_check("md5")),
    "MD5": (_ENC_NONE, 0, _md5_check),
    "CRYPT": (_ENC_NONE, 0, _crypt_check),
    "MD5-CRYPT": (_ENC_NONE, 0, _crypt_check),
    "SHA256-CRYPT": (_ENC_NONE, 0, _crypt_check),
    "SHA512-CRYPT": (_ENC_NONE, 0, _crypt_check),
    "BLF-CRYPT": (_ENC_NONE, 0, _crypt_check),
    "PBKDF2": (_ENC_NONE, 0, _pbkdf2_check),
    "ARGON2I": (_ENC_NONE, 0, _argon2_check),
    "ARGON2ID": (_ENC_NONE, 0, _argon2_check),
    "SCRAM-SHA-256": (_ENC_NONE, 0, _scram_check),
}

SUPPORTED_SCHEMES: tuple[str, ...] = tuple(sorted(_SCHEMES))


def split_scheme(stored: str, default_scheme: str | None = None) -> tuple[str | None, str]:
    """Split ``{SCHEME}rest`` into (SCHEME, rest); recognise bare crypt/argon2/native strings.

    Returns (None, stored) when the scheme cannot be told.
    """
    if stored.startswith("{"):
        end = stored.find("}")
        if end > 1:
            return stored[1:end].upper(), stored[end + 1:]
        return None, stored
    if stored.startswith(NATIVE_PREFIX):
        return "SCRYPT", stored
    if stored.startswith(("$argon2id$", "$argon2i$")):
        return stored[1:stored.index("$", 1)].upper(), stored
    if stored.startswith("$1$"):
        return "MD5-CRYPT", stored
    if stored.startswith("$"):
        return "CRYPT", stored
    return default_scheme.upper() if default_scheme else None, stored


_CRYPT_SCHEMES = frozenset({"CRYPT", "MD5-CRYPT", "SHA256-CRYPT", "SHA512-CRYPT", "BLF-CRYPT"})


def is_supported_hash(stored: str, *, default_scheme: str | None = None) -> bool:
    """Whether ``stored`` names a scheme this module can verify (for importing existing hashes).

    Only the scheme and encoding suffix are checked, not the hash itself.
    """
    scheme, rest = split_scheme(stored, default_scheme)
    if scheme is None or not rest:
        return False
    if scheme == "SCRYPT":
        return _parse_native(rest) is not None
    name, _, suffix = scheme.partition(".")
    if name == "SCRAM-SHA-256":
        return not suffix and scram_credential_of(stored) is not None
    if name not in _SCHEMES or suffix not in ("", "B64", "BASE64", "HEX"):
        return False
    return _crypt is not None or name not in _CRYPT_SCHEMES and not (name == "MD5" and rest.startswith("$1$"))


def scram_credential_of(stored: str | None) -> ScramCredential | None:
    """The SCRAM-SHA-256 keys a stored hash is, when it is a Dovecot ``{SCRAM-SHA-256}`` entry
    (which both checks a password and serves SCRAM logins); else None."""
    if not stored:
        return None
    scheme, rest = split_scheme(stored)
    if scheme != "SCRAM-SHA-256":
        return None
    from midb.scram import parse_credential

    return parse_credential(rest)


def verify_password(password: str, stored: str | None, *, default_scheme: str | None = None) -> bool:
    """Check ``password`` against a stored hash (native scrypt or a Dovecot-style scheme).

    ``default_scheme`` applies to entries without a ``{SCHEME}`` prefix that are not recognisable
    on their own (Dovecot's passwd-file default is CRYPT). Never raises; unknown or unsupported
    schemes and malformed entries log a warning and return False.
    """
    if not stored or not isinstance(password, str):
        return False
    try:
        secret = _encode_password(password)
    except UnicodeEncodeError:
        return False
    scheme, rest = split_scheme(stored, default_scheme)
    if scheme is None:
        log.warning("password hash has no recognisable scheme")
        return False
    if scheme == "SCRYPT":
        return _verify_native(secret, rest)
    name, _, suffix = scheme.partition(".")
    entry = _SCHEMES.get(name)
    if entry is None:
        log.warning("unknown password scheme {%s}", scheme)
        return False
    default_encoding, raw_len, check = entry
    if not suffix:
        encoding, explicit = default_encoding, False
    elif suffix in ("B64", "BASE64"):
        encoding, explicit = _ENC_B64, True
    elif suffix == "HEX":
        encoding, explicit = _ENC_HEX, True
    else:
        log.warning("unknown password encoding in scheme {%s}", scheme)
        return False
    try:
        raw = _decode(rest, encoding, raw_len, explicit)
        return check(secret, raw)
    except _Unsupported as exc:
        log.warning("cannot verify {%s} password hash: %s", scheme, exc)
        return False
