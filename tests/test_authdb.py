"""midb.authdb: the midb and passwd-file authentication backends."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
from pathlib import Path

import pytest

from midb import filewatch
from midb.authdb import (
    MAX_PASSWD_FILE_BYTES,
    AccountDisabled,
    AuthBackend,
    MidbAuth,
    PasswdFileAuth,
    ensure_account,
    make_backend,
    parse_passwd_file,
)
from midb.errors import FileUnavailable
from midb.filewatch import RETRY_INTERVAL, ReloadingFile
from midb.passwords import crypt_available, hash_password, needs_rehash
from midb.scram import derive
from midb.store import Store

SHA512_CRYPT = ("{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTL"
                "iBFdcbYEdFCoEOfaS35inz1")


SCRAM_ENTRY = "{SCRAM-SHA-256}" + derive("pw", iterations=4096).text()  # a Dovecot entry scram_keys serves


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


def _file_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_passwd_file_missing_is_a_temporary_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A missing passwd-file is a broken deployment, not "no users": every lookup fails with
    FileUnavailable (a temporary failure to the client), logged once with its errno."""
    path = tmp_path / "passwd"
    unreadable = [f"passwd-file {path} cannot be read: No such file or directory (ENOENT); "
                  "lookups in it fail as a temporary error until it can"]
    with caplog.at_level(logging.WARNING, "midb.authdb"):
        backend = PasswdFileAuth(path)  # no exception at start: the daemon starts, logins fail
        assert _file_errors(caplog) == unreadable  # logged at start, before any login
        for _ in range(3):
            with pytest.raises(FileUnavailable) as caught:
                backend.authenticate("x", "y")
        assert str(caught.value) == f"passwd-file {path} cannot be read"  # no errno per login
        assert caught.value.reason == "No such file or directory (ENOENT)"
        assert _file_errors(caplog) == unreadable
        caplog.clear()
        write_passwd(path, "x:{PLAIN}y\n")
        assert backend.authenticate("x", "y") == "x"
        assert _file_errors(caplog) == [f"passwd-file {path} can be read again"]
        path.unlink()
        with pytest.raises(FileUnavailable):
            backend.authenticate("x", "y")


def _deny_reading(monkeypatch: pytest.MonkeyPatch, path: Path, error: int = errno.EACCES) -> None:
    """open() of ``path`` fails with ``error``, as it does for a process that may not read it
    (the tests run as root, whom a chmod does not stop)."""
    real_open = os.open

    def failing_open(name: str | os.PathLike[str], flags: int, *args: object, **kwargs: object) -> int:
        if os.fspath(name) == os.fspath(path):
            raise OSError(error, os.strerror(error), os.fspath(name))
        return real_open(name, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing_open)


def test_unreadable_passwd_file_fails_every_lookup_and_serves_no_old_entries(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES after a good read: no user is "unknown", none gets in with the old entries (the
    edit that broke the file may be the one revoking them); each method that looks a user up
    raises. The error is logged once, not per lookup; the file is read again once it changes."""
    path = tmp_path / "passwd"
    write_passwd(path, f"dave:{{PLAIN}}old\nerin:{SCRAM_ENTRY}\n")
    backend = PasswdFileAuth(path)
    assert backend.authenticate("dave", "old") == "dave"
    assert backend.scram_keys("erin") is not None
    with caplog.at_level(logging.WARNING, "midb.authdb"):
        _deny_reading(monkeypatch, path)
        os.chmod(path, 0o000)  # what the administrator did; it changes the ctime, so it is seen
        for _ in range(3):
            for lookup in (lambda: backend.authenticate("dave", "old"), lambda: backend.authenticate("nobody", "x"),
                           lambda: backend.exists("dave"), lambda: backend.credential_stamp("dave"),
                           lambda: backend.failure_reason("dave"), lambda: backend.scram_keys("erin"),
                           lambda: backend.scram_failure_reason("erin"), backend.scram_iteration_counts):
                with pytest.raises(FileUnavailable) as caught:
                    lookup()
        assert caught.value.reason == "Permission denied (EACCES)"
        assert _file_errors(caplog) == [
            f"passwd-file {path} cannot be read: Permission denied (EACCES); "
            "lookups in it fail as a temporary error until it can"]
        caplog.clear()
        monkeypatch.undo()
        os.chmod(path, 0o644)
        assert backend.authenticate("dave", "old") == "dave"
        assert _file_errors(caplog) == [f"passwd-file {path} can be read again"]


def test_a_directory_in_place_of_the_passwd_file_is_unavailable(tmp_path: Path) -> None:
    """EISDIR, which even root gets (the e2e test's way to make the file unreadable)."""
    path = tmp_path / "passwd"
    path.mkdir()
    backend = PasswdFileAuth(path)
    with pytest.raises(FileUnavailable) as caught:
        backend.authenticate("x", "y")
    assert caught.value.reason == "Is a directory (EISDIR)"


def test_a_fifo_in_place_of_the_passwd_file_is_unavailable_not_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    os.mkfifo(path)
    with pytest.raises(FileUnavailable) as caught:
        PasswdFileAuth(path).exists("x")  # no writer: an open() without O_NONBLOCK would hang here
    assert caught.value.reason == "not a regular file"


def test_a_passwd_file_over_its_size_bound_is_unavailable_and_not_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file larger than MAX_PASSWD_FILE_BYTES (a log named by mistake, a runaway writer) is
    not read into memory: every lookup fails as a temporary error, logged once, as for an
    unreadable file; once it is cut to size it serves again. (Sparse: no disk is spent.)"""
    path = tmp_path / "passwd"
    write_passwd(path, "dave:{PLAIN}pw\n")
    os.truncate(path, MAX_PASSWD_FILE_BYTES + 1)
    reads: list[int] = []

    class CountingHandle(io.FileIO):
        def read(self, size: int | None = -1) -> bytes:
            reads.append(-1 if size is None else size)
            return super().read(size)

    monkeypatch.setattr(filewatch, "open", lambda fd, mode: CountingHandle(fd, "rb"), raising=False)
    too_large = [f"passwd-file {path} cannot be read: larger than {MAX_PASSWD_FILE_BYTES} bytes; "
                 "lookups in it fail as a temporary error until it can"]
    with caplog.at_level(logging.WARNING, "midb.authdb"):
        backend = PasswdFileAuth(path)
        assert _file_errors(caplog) == too_large  # at start, before any login
        for lookup in (lambda: backend.authenticate("dave", "pw"), lambda: backend.exists("dave"),
                       lambda: backend.credential_stamp("dave"), lambda: backend.scram_keys("dave")):
            with pytest.raises(FileUnavailable) as caught:
                lookup()
            assert caught.value.reason == f"larger than {MAX_PASSWD_FILE_BYTES} bytes"
        assert _file_errors(caplog) == too_large
        assert reads == []  # its size said so: no read of it at all
        caplog.clear()
        os.truncate(path, len("dave:{PLAIN}pw\n"))
        assert backend.authenticate("dave", "pw") == "dave"
        assert _file_errors(caplog) == [f"passwd-file {path} can be read again"]


def test_the_documented_passwd_file_bound_is_the_one_applied() -> None:
    """auth_passwd_file's text (gximap.cfg(5), the sample config) names the bound in MiB."""
    from gximap.config import DIRECTIVES

    doc = next(directive.doc for directive in DIRECTIVES if directive.name == "auth_passwd_file")
    assert MAX_PASSWD_FILE_BYTES % (1 << 20) == 0 and f"larger than {MAX_PASSWD_FILE_BYTES >> 20} MiB" in doc


def test_an_io_error_is_tried_again_without_a_change_to_the_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO may pass with nothing about the file changing: it is tried again every
    RETRY_INTERVAL (here a fake clock), not at every lookup, and logged once."""
    path = tmp_path / "passwd"
    write_passwd(path, "dave:{PLAIN}pw\n")
    now = [100.0]
    opened: list[str] = []
    real_open = os.open

    def counting_open(name: str | os.PathLike[str], flags: int, *args: object, **kwargs: object) -> int:
        opened.append(os.fspath(name))
        if failing[0]:
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(name))
        return real_open(name, flags, *args, **kwargs)  # type: ignore[arg-type]

    failing = [True]
    monkeypatch.setattr(os, "open", counting_open)
    with caplog.at_level(logging.WARNING, "midb.authdb"):
        table = ReloadingFile(str(path), lambda data: data, b"", what="passwd-file",
                              log=logging.getLogger("midb.authdb"), clock=lambda: now[0])
        for _ in range(5):
            with pytest.raises(FileUnavailable):
                table.current()
        assert len(opened) == 1
        now[0] += RETRY_INTERVAL
        with pytest.raises(FileUnavailable):
            table.current()
        assert len(opened) == 2
        assert len(_file_errors(caplog)) == 1  # the same error again is no change of state
        failing[0] = False
        with pytest.raises(FileUnavailable):
            table.current()  # not due yet
        now[0] += RETRY_INTERVAL
        assert table.current() == b"dave:{PLAIN}pw\n"
    assert _file_errors(caplog)[1:] == [f"passwd-file {path} can be read again"]


def test_a_file_over_its_size_bound_is_not_read_again_until_it_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Too large (or not a regular file) is what the file's stat says: unlike an EIO, time
    changes nothing, so a file that stays so is not read again every RETRY_INTERVAL (a map file
    over 64 MiB would be read whole each second while lookups come); a change to it is."""
    path = tmp_path / "map"
    path.write_bytes(b"a: x\nb: y\n")
    now = [100.0]
    opened: list[str] = []
    real_open = os.open

    def counting_open(name: str | os.PathLike[str], flags: int, *args: object, **kwargs: object) -> int:
        opened.append(os.fspath(name))
        return real_open(name, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    table = ReloadingFile(str(path), lambda data: data, b"", what="map file", max_bytes=4,
                          log=logging.getLogger("gximap.auth"), clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(FileUnavailable) as caught:
            table.current()
        now[0] += RETRY_INTERVAL
    assert caught.value.reason == "larger than 4 bytes"
    assert len(opened) == 1
    path.write_bytes(b"a: x")
    assert table.current() == b"a: x"
    assert len(opened) == 2


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
