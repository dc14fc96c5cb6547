"""midb.passwords: native scrypt hashes and Dovecot-style imported schemes."""

from __future__ import annotations

import base64
import hashlib
import logging
import time

import pytest

from midb import passwords
from midb.passwords import SUPPORTED_SCHEMES, hash_password, needs_rehash, split_scheme, verify_password

needs_crypt = pytest.mark.skipif(not passwords.crypt_available(), reason="crypt module not available")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# ---- native scrypt -------------------------------------------------------------------------


def test_native_hash_roundtrip_and_format() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$scrypt$ln=14,r=8,p=1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert not verify_password("", stored)
    assert not needs_rehash(stored)


def test_native_hash_is_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_native_hash_matches_hashlib_scrypt() -> None:
    stored = hash_password("pässwörd")
    _, _, params, salt, key = stored.split("$")
    assert params == "ln=14,r=8,p=1"
    raw_salt = base64.b64decode(salt + "=" * (-len(salt) % 4))
    expected = hashlib.scrypt("pässwörd".encode(), salt=raw_salt, n=1 << 14, r=8, p=1, dklen=32)
    assert base64.b64decode(key + "=" * (-len(key) % 4)) == expected


def test_native_hash_cost_is_moderate() -> None:
    start = time.perf_counter()
    verify_password("x", hash_password("x"))
    assert time.perf_counter() - start < 2.0


def test_lower_cost_hash_verifies_and_needs_rehash() -> None:
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(b"pw", salt=salt, n=1 << 10, r=8, p=1, dklen=32)
    weak = f"$scrypt$ln=10,r=8,p=1${b64(salt).rstrip('=')}${b64(key).rstrip('=')}"
    assert verify_password("pw", weak)
    assert needs_rehash(weak)


@pytest.mark.parametrize("stored", [
    "$scrypt$ln=40,r=8,p=1$AAAA$AAAA",          # absurd cost refused, not computed
    "$scrypt$ln=14,r=8,p=1$!!!$AAAA",
    "$scrypt$ln=14,r=8$AAAA$AAAA",
    "$scrypt$",
])
def test_malformed_native_hash_is_false(stored: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "midb.passwords"):
        assert not verify_password("pw", stored)
    assert needs_rehash(stored)


def test_unencodable_password() -> None:
    stored = hash_password("x")
    assert not verify_password("\udcff", stored)
    with pytest.raises(ValueError):
        hash_password("\ud800")


def test_imported_schemes_need_rehash() -> None:
    assert needs_rehash("{PLAIN}secret")
    assert needs_rehash(None)
    assert needs_rehash("")


# ---- Dovecot schemes ---------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["PLAIN", "CLEAR", "CLEARTEXT", "plain"])
def test_plain_schemes(scheme: str) -> None:
    assert verify_password("s3cret", f"{{{scheme}}}s3cret")
    assert not verify_password("s3cret!", f"{{{scheme}}}s3cret")


def test_plain_with_encodings() -> None:
    assert verify_password("s3cret", "{PLAIN.b64}" + b64(b"s3cret"))
    assert verify_password("s3cret", "{PLAIN.BASE64}" + b64(b"s3cret"))
    assert verify_password("s3cret", "{PLAIN.hex}" + b"s3cret".hex())


def test_sha_family_base64_and_hex() -> None:
    for scheme, algorithm in (("SHA", "sha1"), ("SHA1", "sha1"), ("SHA256", "sha256"), ("SHA512", "sha512")):
        digest = hashlib.new(algorithm, b"password").digest()
        assert verify_password("password", f"{{{scheme}}}{b64(digest)}"), scheme
        # Dovecot guesses hex from the length when no encoding suffix is given
        assert verify_password("password", f"{{{scheme}}}{digest.hex()}"), scheme
        assert verify_password("password", f"{{{scheme}.HEX}}{digest.hex().upper()}"), scheme
        assert not verify_password("Password", f"{{{scheme}}}{b64(digest)}"), scheme


def test_sha1_known_vector() -> None:
    # SHA1("password") = 5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8
    assert verify_password("password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")


def test_ssha256_hex_vector_from_doveadm() -> None:
    # `doveadm pw -t {SSHA256.hex}... -p pass` example circulating in Dovecot documentation
    stored = "{SSHA256.hex}4a847fefc4f9ab450f16783c5025d64313942a1ceb2599707cdb65940ba901e513fa442f"
    assert verify_password("pass", stored)
    assert not verify_password("pass1", stored)


@pytest.mark.parametrize("scheme,algorithm", [("SSHA", "sha1"), ("SSHA256", "sha256"),
                                              ("SSHA512", "sha512"), ("SMD5", "md5")])
def test_salted_schemes(scheme: str, algorithm: str) -> None:
    for salt in (b"\x01\x02\x03\x04", b"a much longer salt value"):
        raw = hashlib.new(algorithm, b"hunter2" + salt).digest() + salt
        assert verify_password("hunter2", f"{{{scheme}}}{b64(raw)}")
        assert verify_password("hunter2", f"{{{scheme}.hex}}{raw.hex()}")
        assert not verify_password("hunter3", f"{{{scheme}}}{b64(raw)}")


def test_salted_too_short_is_false(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "midb.passwords"):
        assert not verify_password("x", "{SSHA}" + b64(b"short"))
    assert "too short" in caplog.text


def test_md5_schemes() -> None:
    digest = hashlib.md5(b"password").digest()
    assert verify_password("password", "{PLAIN-MD5}" + digest.hex())
    assert verify_password("password", "{LDAP-MD5}" + b64(digest))
    assert verify_password("password", "{MD5}" + digest.hex())


def test_pbkdf2_dovecot_format() -> None:
    key = hashlib.pbkdf2_hmac("sha1", b"password", b"Ab3dEf7hIj9lMn0p", 5000, 20)
    stored = "{PBKDF2}$1$Ab3dEf7hIj9lMn0p$5000$" + key.hex()
    assert verify_password("password", stored)
    assert not verify_password("passwort", stored)
    assert not verify_password("password", "{PBKDF2}$1$salt$notanumber$" + key.hex())
    assert not verify_password("password", "{PBKDF2}$1$salt$999999999$" + key.hex())


@needs_crypt
def test_sha512_crypt_reference_vectors() -> None:
    # Test vectors from Ulrich Drepper's SHA-crypt specification
    assert verify_password("Hello world!", "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/"
                                           "O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1")
    assert verify_password("Hello world!", "{SHA512-CRYPT}$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeX"
                                           "bDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.")
    assert not verify_password("Hello world", "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/"
                                              "O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1")


@needs_crypt
def test_sha256_and_md5_crypt_vectors() -> None:
    assert verify_password("Hello world!", "{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5")
    assert verify_password("password", "{MD5-CRYPT}$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/")
    # Dovecot recognises a bare $1$ string as MD5-CRYPT
    assert verify_password("password", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/")
    assert not verify_password("passwore", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/")


@needs_crypt
def test_bcrypt_through_crypt() -> None:
    # OpenBSD bcrypt test vector
    stored = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
    assert verify_password("U*U", "{BLF-CRYPT}" + stored)
    assert not verify_password("U*V", "{BLF-CRYPT}" + stored)


@needs_crypt
def test_crypt_default_scheme_for_bare_entries() -> None:
    stored = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
    assert verify_password("Hello world!", stored)
    assert verify_password("Hello world!", stored, default_scheme="CRYPT")


def test_argon2_reference_vectors() -> None:
    # Reference outputs of the argon2 CLI for password "password", salt "somesalt", t=2, m=64 MiB
    argon2id = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
    argon2i = "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$wWKIMhR9lyDFvRz9YTZweHKfbftvj+qf+YFY4NeBbtA"
    assert verify_password("password", "{ARGON2ID}" + argon2id)
    assert verify_password("password", "{ARGON2I}" + argon2i)
    assert verify_password("password", argon2id)  # recognised without the prefix too
    assert not verify_password("passwore", "{ARGON2ID}" + argon2id)


def test_argon2_parameters_bounded(caplog: pytest.LogCaptureFixture) -> None:
    huge = "{ARGON2ID}$argon2id$v=19$m=99999999,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
    with caplog.at_level(logging.WARNING, "midb.passwords"):
        assert not verify_password("password", huge)
    assert "out of range" in caplog.text


@pytest.mark.parametrize("stored", [
    "{NOSUCH}abc", "{SHA.weird}abc", "{SHA}not base64!!", "{SHA}" + b64(b"wrong length"),
    "{SHA512-CRYPT}", "{", "{}x", "no scheme at all", "{PBKDF2}garbage", "{ARGON2ID}$argon2id$junk",
])
def test_unknown_or_malformed_never_raise(stored: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "midb.passwords"):
        assert verify_password("anything", stored) is False


def test_unknown_scheme_logs_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "midb.passwords"):
        assert not verify_password("x", "{RPA}abcd")
    assert "unknown password scheme {RPA}" in caplog.text


def test_empty_stored_hash_is_false() -> None:
    assert not verify_password("", "")
    assert not verify_password("", None)


def test_split_scheme() -> None:
    assert split_scheme("{ssha256.hex}abc") == ("SSHA256.HEX", "abc")
    assert split_scheme("$6$x$y") == ("CRYPT", "$6$x$y")
    assert split_scheme("$1$x$y") == ("MD5-CRYPT", "$1$x$y")
    assert split_scheme("$scrypt$ln=1") == ("SCRYPT", "$scrypt$ln=1")
    assert split_scheme("abc") == (None, "abc")
    assert split_scheme("abc", "crypt") == ("CRYPT", "abc")
    assert {"SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID", "PBKDF2", "SSHA"} <= set(SUPPORTED_SCHEMES)
