"""midb.authdb: the midb and passwd-file authentication backends."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from midb.authdb import (
    AccountDisabled,
    AuthBackend,
    MidbAuth,
    PasswdFileAuth,
    ensure_account,
    make_backend,
    parse_passwd_file,
)
from midb.passwords import crypt_available, hash_password, needs_rehash
from midb.store import Store

SHA512_CRYPT = ("{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTL"
                "iBFdcbYEdFCoEOfaS35inz1")


def write_passwd(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


# ---- passwd-file ---------------------------------------------------------------------------


def test_parse_passwd_file_fields_and_tolerance(caplog: pytest.LogCaptureFixture) -> None:
    text = ("# comment\n"
            "\n"
            "alice@example.org:{PLAIN}pw1:1000:1000:Alice A:/home/alice:/bin/false:userdb_quota_rule=*:storage=1G nologin\n"
            "bob:{PLAIN}pw2\n"
            "no colon here\n"
            ":{PLAIN}emptyuser\n"
            "Bob:{PLAIN}second bob entry\n"
            "carol:{PLAIN}pw:with:colons?\n")
    with caplog.at_level(logging.WARNING, "midb.authdb"):
        entries = parse_passwd_file(text, "test")
    assert set(entries) == {"alice@example.org", "bob", "carol"}
    alice = entries["alice@example.org"]
    assert (alice.password, alice.uid, alice.gecos, alice.home) == ("{PLAIN}pw1", "1000", "Alice A", "/home/alice")
    assert alice.extra == {"userdb_quota_rule": "*:storage=1G", "nologin": ""}
    assert entries["bob"].password == "{PLAIN}pw2"
    assert entries["carol"].password == "{PLAIN}pw"
    assert "test:5: malformed line skipped" in caplog.text
    assert "test:6: malformed line skipped" in caplog.text
    assert "listed again" in caplog.text


def test_passwd_file_authenticate(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    salt = b"salt"
    ssha = __import__("base64").b64encode(hashlib.sha1(b"bobpw" + salt).digest() + salt).decode()
    write_passwd(path, f"Alice@Example.org:{{PLAIN}}alicepw::::::\nbob:{{SSHA}}{ssha}\n"
                       "nol:{PLAIN}x:::::: nologin\nnopw:{PLAIN}x:::::: nopassword\nempty:\n")
    backend = PasswdFileAuth(path)
    assert isinstance(backend, AuthBackend)
    assert backend.authenticate("alice@example.org", "alicepw") == "alice@example.org"
    assert backend.authenticate("ALICE@example.org", "alicepw") == "alice@example.org"
    assert backend.authenticate("alice@example.org", "wrong") is None
    assert backend.authenticate("bob", "bobpw") == "bob"
    assert backend.authenticate("nobody", "x") is None
    with pytest.raises(AccountDisabled):  # the right password: the client may be told
        backend.authenticate("nol", "x")
    assert backend.authenticate("nol", "wrong") is None
    assert backend.authenticate("nopw", "x") is None
    assert backend.authenticate("empty", "") is None
    assert backend.exists("BOB") and not backend.exists("nobody")


@pytest.mark.skipif(not crypt_available(), reason="crypt module not available")
def test_passwd_file_crypt_default_scheme(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    bare = SHA512_CRYPT.removeprefix("{SHA512-CRYPT}")
    write_passwd(path, f"u1:{SHA512_CRYPT}\nu2:{bare}\n")
    backend = PasswdFileAuth(path)
    assert backend.authenticate("u1", "Hello world!") == "u1"
    assert backend.authenticate("u2", "Hello world!") == "u2"


def test_passwd_file_reloads_on_change(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    write_passwd(path, "dave:{PLAIN}old\n")
    backend = PasswdFileAuth(path)
    assert backend.authenticate("dave", "old") == "dave"
    write_passwd(path, "dave:{PLAIN}new\nerin:{PLAIN}e\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # a visibly newer mtime
    assert backend.authenticate("dave", "old") is None
    assert backend.authenticate("dave", "new") == "dave"
    assert backend.exists("erin")
    # atomic replacement by rename is noticed through the inode
    replacement = tmp_path / "passwd.new"
    write_passwd(replacement, "frank:{PLAIN}f\n")
    os.replace(replacement, path)
    assert backend.authenticate("frank", "f") == "frank"
    assert not backend.exists("dave")


def test_passwd_file_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "passwd"
    with caplog.at_level(logging.ERROR, "midb.authdb"):
        backend = PasswdFileAuth(path)
        assert backend.authenticate("x", "y") is None
    assert "missing or unreadable" in caplog.text
    write_passwd(path, "x:{PLAIN}y\n")
    assert backend.authenticate("x", "y") == "x"
    path.unlink()
    assert backend.authenticate("x", "y") is None


def test_passwd_file_invalid_utf8_line_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(b"good:{PLAIN}pw\nbad\xff:{PLAIN}pw\n")
    with caplog.at_level(logging.WARNING, "midb.authdb"):
        backend = PasswdFileAuth(path)
        assert backend.authenticate("good", "pw") == "good"
    assert not backend.exists("bad\udcff")
    assert "not valid UTF-8" in caplog.text


def test_passwd_file_respects_disabled_midb_account(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "passwd"
    write_passwd(path, "gina:{PLAIN}pw\n")
    backend = make_backend("passwd-file", store, str(path))
    assert backend.authenticate("gina", "pw") == "gina"  # unknown to midb: fine, caller creates it
    ensure_account(store, "gina")
    store.update_account("gina", disabled=True)
    with pytest.raises(AccountDisabled):
        backend.authenticate("gina", "pw")
    assert backend.authenticate("gina", "wrong") is None
    # Why, for the log: each failure named as the administrator would act on it.
    assert backend.failure_reason("gina") == "bad password (account disabled)"
    assert backend.failure_reason("nobody") == "unknown user"
    store.update_account("gina", disabled=False)
    assert backend.failure_reason("gina") == "bad password"


# ---- midb backend --------------------------------------------------------------------------


def test_midb_auth(store: Store) -> None:
    store.create_account("Henry", password_hash=hash_password("pw"))
    backend = MidbAuth(store)
    assert isinstance(backend, AuthBackend)
    assert backend.authenticate("HENRY", "pw") == "henry"
    assert backend.authenticate("henry", "nope") is None
    assert backend.authenticate("nobody", "pw") is None
    assert backend.authenticate("bad\x00name", "pw") is None
    assert backend.exists("henry") and not backend.exists("nobody")
    store.update_account("henry", disabled=True)
    with pytest.raises(AccountDisabled):
        backend.authenticate("henry", "pw")
    assert backend.authenticate("henry", "nope") is None
    assert backend.failure_reason("henry") == "bad password (account disabled)"
    store.update_account("henry", disabled=False)
    assert backend.authenticate("henry", "pw") == "henry"
    assert backend.failure_reason("henry") == "bad password"
    assert backend.failure_reason("nobody") == "unknown user"
    assert backend.failure_reason("bad\x00name") == "unknown user"


def test_midb_auth_account_without_password(store: Store) -> None:
    store.create_account("ivy")
    assert MidbAuth(store).authenticate("ivy", "") is None
    assert MidbAuth(store).failure_reason("ivy") == "no password set"


def test_midb_auth_upgrades_imported_hash(store: Store) -> None:
    store.create_account("jack", password_hash="{PLAIN}legacy")
    assert MidbAuth(store, upgrade_hashes=False).authenticate("jack", "legacy") == "jack"
    assert store.get_account("jack").password_hash == "{PLAIN}legacy"  # type: ignore[union-attr]
    assert MidbAuth(store).authenticate("jack", "legacy") == "jack"
    upgraded = store.get_account("jack").password_hash  # type: ignore[union-attr]
    assert upgraded is not None and upgraded.startswith("$scrypt$") and not needs_rehash(upgraded)
    assert MidbAuth(store).authenticate("jack", "legacy") == "jack"


def test_make_backend(tmp_path: Path, store: Store) -> None:
    assert isinstance(make_backend("midb", store, None), MidbAuth)
    assert isinstance(make_backend("Passwd-File", store, str(tmp_path / "p")), PasswdFileAuth)
    with pytest.raises(ValueError, match="auth_passwd_file"):
        make_backend("passwd-file", store, None)
    with pytest.raises(ValueError, match="unknown auth_backend"):
        make_backend("ldap", store, None)
    with pytest.raises(ValueError):
        make_backend("midb", None, None)


def test_ensure_account(store: Store) -> None:
    created = ensure_account(store, "Kim")
    assert created.name == "kim"
    assert created.password_hash is None
    assert {f.name for f in store.list_folders("kim")} >= {"INBOX"}
    again = ensure_account(store, "KIM")
    assert again.id == created.id
