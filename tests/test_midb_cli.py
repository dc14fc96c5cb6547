"""The `midb` admin tool, driven as `python -m midb` in a subprocess against a temporary store."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
from store_helpers import downgrade_to_schema_3, store_with_alice

from gximap import config as gxconfig
from midb.authdb import AccountDisabled, MidbAuth
from midb.cli import _FIELDS, SYNTAX, CliError, build_parser, load_settings, main, parse_size
from midb.store import Store

SHA512_CRYPT = ("{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTL"
                "iBFdcbYEdFCoEOfaS35inz1")


class Midb:
    """Runs the tool with a private config file (fsync off) and store directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = tmp_path / "store"
        self.config = tmp_path / "imap.cfg"
        self.config.write_text("# test configuration\nmidb_fsync = no\nmidb_map_size = 64M\n"
                               "some_other_directive = ignored\n")

    def __call__(self, *args: str, stdin: str = "", store: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "midb", "-c", str(self.config)]
        if store:
            command += ["--store", str(self.store)]
        return subprocess.run([*command, *args], input=stdin, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:midb"})

    def open(self) -> Store:
        return Store(self.store, fsync=False, map_size=64 << 20)


def _stats(output: str) -> dict[str, str]:
    """midb stats' lines as name -> the rest of the line."""
    return dict(line.split(None, 1) for line in output.splitlines())


@pytest.fixture
def midb(tmp_path: Path) -> Midb:
    return Midb(tmp_path)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("midb: error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr


# ---- parsing (in process: no store needed) ----------------------------------------------------


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    leaves: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                leaves += _leaf_commands(sub, (*prefix, name)) or [(*prefix, name)]
    return leaves


LEAVES = _leaf_commands(build_parser())


def test_command_set() -> None:
    assert set(LEAVES) == {
        ("user", "add"), ("user", "passwd"), ("user", "del"), ("user", "list"), ("user", "show"),
        ("user", "lang"), ("user", "quota"), ("user", "expire"), ("user", "disable"), ("user", "enable"),
        ("user", "scram"), ("owner", "grant"), ("owner", "revoke"), ("owner", "list"),
        ("import", "mbox"), ("import", "maildir"), ("export", "mbox"), ("export", "maildir"),
        ("expire",), ("verify",), ("backup",), ("stats",)}


@pytest.mark.parametrize("command", [(), ("user",), ("owner",), ("import",), ("export",), *LEAVES])
def test_help_on_every_command(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: midb {' '.join(command)}".rstrip())


def test_no_option_takes_a_password_value() -> None:
    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif any("pass" in option or "hash" in option for option in action.option_strings):
                assert action.nargs == 0, action.option_strings  # flags only, never a value
    walk(build_parser())


def test_parse_size() -> None:
    """Sizes given as options (quotas): the configuration's syntax, plus 'unlimited' and the
    KiB/MiB/GiB midb writes sizes with (user list, user quota)."""
    assert parse_size("1.5G") == 1610612736
    assert parse_size("512k") == 524288
    assert parse_size("10MB") == 10485760
    assert parse_size("2MiB") == 2097152
    assert parse_size("2.5 MiB") == 2621440
    assert parse_size("0") == 0
    assert parse_size("unlimited") == 0
    for bad in ("12Q", "iB", "1 2", "-1", "5iB", ""):
        with pytest.raises(CliError, match="is not a size"):
            parse_size(bad)


def test_directive_syntax_is_gximaps() -> None:
    """midb's table of the directives it reads gives each the kind and bounds gximap's has."""
    for name, syntax in SYNTAX.items():
        directive = gxconfig.lookup(name)
        assert directive is not None, name
        assert (syntax.kind, syntax.minimum, syntax.maximum, syntax.choices, syntax.optional) == (
            directive.kind, directive.minimum, directive.maximum, directive.choices, directive.default is None), name


def test_defaults_are_gximaps(tmp_path: Path) -> None:
    """A directive the configuration leaves out: midb takes the default gximap takes."""
    path = tmp_path / "imap.cfg"
    path.write_text("# nothing midb reads\n")
    unset = gxconfig.load_config([str(path)], required=True)._values   # as set, not derived
    settings = load_settings(str(path), None)
    for key, field in _FIELDS.items():
        assert getattr(settings, field) == unset[key], key


def _refused_alike(path: Path) -> str:
    """What gximap says of the file ``path``; midb says the same."""
    with pytest.raises(gxconfig.ConfigError) as refused:
        gxconfig.load_config([str(path)], required=True)
    with pytest.raises(CliError) as also_refused:
        load_settings(str(path), None)
    assert str(also_refused.value) == str(refused.value)
    return str(refused.value)


@pytest.mark.parametrize("line", [
    "midb_map_size = 8GiB", "midb_map_size = unlimited", "midb_map_size = 512K", "midb_map_size =",
    "midb_fsync = maybe", "midb_fsync =", "midb_path =", "midb_path = /a\x00b",
    "midb_shard_num = 0", "midb_shard_num = 300", "midb_shard_num = 1_6", "midb_shard_num = sixteen",
    "midb_shard_num =", "auth_backend = ldap", "auth_backend =",
    "midb_path /srv/midb", "midb$path = /srv/midb", "nonsense_without_equals",
])
def test_config_errors_are_gximaps(tmp_path: Path, line: str) -> None:
    """A value gximap refuses, midb refuses with the same FILE:LINE: directive: why."""
    path = tmp_path / "imap.cfg"
    path.write_text(f"# header\n{line}\n")
    assert _refused_alike(path).startswith(f"{path}:2: {line.split()[0]}: ")


@pytest.mark.parametrize("line", [
    "midb_map_size = 8GB", "midb_map_size = 1.5 g", "midb_fsync = OFF", "midb_fsync = 1", "midb_shard_num = +3",
    "midb_run_dir =", "midb_run_dir = /run/x", "auth_passwd_file =", "auth_backend = MIDB",
    "MIDB_PATH = /srv/midb",
])
def test_config_values_are_gximaps(tmp_path: Path, line: str) -> None:
    """A value gximap takes, midb takes as the same setting (an empty optional one: unset)."""
    path = tmp_path / "imap.cfg"
    path.write_text(line + "\n")
    key = line.split()[0].lower()
    expected = gxconfig.load_config([str(path)], required=True)._values[key]   # as set, not derived
    settings = load_settings(str(path), None)
    field = {"midb_path": "midb_path", "midb_run_dir": "run_dir", "midb_fsync": "fsync", "midb_map_size": "map_size",
             "midb_shard_num": "shards", "auth_backend": "auth_backend", "auth_passwd_file": "auth_passwd_file"}[key]
    assert getattr(settings, field) == expected


# ---- subprocess ----------------------------------------------------------------------------


def test_python_m_midb_and_usage_errors(midb: Midb) -> None:
    out = ok(midb("--help"))
    for command in ("user", "owner", "import", "verify", "backup", "stats"):
        assert command in out
    assert ok(midb("--version")).startswith("midb (gximap) ")
    fails(midb(), "the following arguments are required: COMMAND")
    fails(midb("user", "frobnicate"), "argument ACTION: invalid choice")
    # a password on the command line is impossible, in every spelling
    fails(midb("user", "add", "bob", "secret"), "unrecognized arguments: secret")
    fails(midb("user", "add", "bob", "--password", "secret"), "unrecognized arguments: --password")
    fails(midb("user", "add", "bob", "--password=secret"), "unrecognized arguments: --password=secret")
    fails(midb("user", "passwd", "bob", "--password-stdin=secret"), "ignored explicit argument 'secret'")
    assert not midb.store.exists()


def test_missing_store_and_config(midb: Midb, tmp_path: Path) -> None:
    fails(midb("user", "list"), f"no midb store at {midb.store}")
    fails(midb("-c", str(tmp_path / "missing.cfg"), "stats"), "cannot read")
    midb.config.write_text("midb_fsync = sometimes\n")
    fails(midb("stats"), f"{midb.config}:1: midb_fsync: 'sometimes' is not a boolean")


def test_config_values_refused_as_gximap_refuses_them(midb: Midb) -> None:
    midb.config.write_text("midb_fsync = no\nmidb_map_size = 8GiB\n")
    fails(midb("stats"), f"{midb.config}:2: midb_map_size: '8GiB' is not a size (a number with optional "
                         f"k/M/G/T suffix)")
    midb.config.write_text("midb_fsync = maybe\n")
    fails(midb("stats"), f"{midb.config}:1: midb_fsync: 'maybe' is not a boolean (yes/no, on/off, true/false, 1/0)")
    midb.config.write_text("midb_fsync = no\n\nmidb_path =\n")   # not ignored: gximap refuses it too
    fails(midb("user", "list", store=False), f"{midb.config}:3: midb_path: empty value")


def test_a_file_gximap_cannot_read_midb_refuses_alike(tmp_path: Path) -> None:
    path = tmp_path / "imap.cfg"
    path.write_bytes(b"midb_fsync = no\n# caf\xe9\n")
    assert _refused_alike(path) == f"{path}:2: (file): not valid UTF-8"


def test_without_c_the_files_gximap_reads_in_its_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without -c, midb reads gromox.cfg then imap.cfg, as gximap does: a store set in gromox.cfg
    is the one both use, and imap.cfg overrides it."""
    shared, own = tmp_path / "gromox.cfg", tmp_path / "imap.cfg"
    monkeypatch.setattr("midb.cli.DEFAULT_CONFIGS", (str(shared), str(own)))
    shared.write_text(f"midb_path = {tmp_path / 'shared'}\nmidb_fsync = no\n")
    assert load_settings(None, None).midb_path == str(tmp_path / "shared")
    own.write_text(f"midb_path = {tmp_path / 'own'}\n")
    settings = load_settings(None, None)
    assert (settings.midb_path, settings.fsync) == (str(tmp_path / "own"), False)
    assert settings.midb_path == str(gxconfig.load_config([str(shared), str(own)], required=True).midb_path)
    shared.unlink()
    own.unlink()
    assert load_settings(None, None).midb_path == "/var/lib/gromox/midb"


def test_another_store_does_not_take_the_configured_run_dir(tmp_path: Path) -> None:
    config = tmp_path / "imap.cfg"
    config.write_text(f"midb_path = {tmp_path / 'live'}\nmidb_run_dir = {tmp_path / 'run'}\n")
    assert load_settings(str(config), None).run_dir == str(tmp_path / "run")
    assert load_settings(str(config), str(tmp_path / "live")).run_dir == str(tmp_path / "run")
    # a backup's commits are not announced to the processes serving the live store
    assert load_settings(str(config), str(tmp_path / "backup")).run_dir is None


def test_config_supplies_midb_path(midb: Midb, tmp_path: Path) -> None:
    configured = tmp_path / "from-config"
    midb.config.write_text(f"MIDB_PATH = {configured}\nmidb_fsync = off\n")
    ok(midb("user", "add", "zed", "--password-stdin", stdin="pw\n", store=False))
    assert (configured / "index" / "data.mdb").is_file()
    assert "zed" in ok(midb("user", "list", store=False))
    # --store, before or after the command, overrides midb_path
    fails(midb("user", "list"), "no midb store")
    fails(midb("user", "list", "--store", str(tmp_path / "elsewhere"), store=False), "no midb store")


def test_config_sets_the_shard_count_of_a_new_store(midb: Midb) -> None:
    midb.config.write_text("midb_fsync = no\nmidb_shard_num = 300\n")
    fails(midb("user", "add", "zed", "--password-stdin", stdin="pw\n"),
          f"{midb.config}:2: midb_shard_num: 300 is above the maximum 256")
    midb.config.write_text("midb_fsync = no\nmidb_shard_num = 3\n")
    ok(midb("user", "add", "zed", "--password-stdin", stdin="pw\n"))
    assert [path.name for path in sorted(midb.store.glob("index*"))] == ["index", "index.1", "index.2"]
    assert _stats(ok(midb("stats")))["shards"] == "3"
    # Recorded in the store: a different setting later does not move any account.
    midb.config.write_text("midb_fsync = no\n")
    assert _stats(ok(midb("stats")))["shards"] == "3" and "zed" in ok(midb("user", "list"))


def test_user_lifecycle(midb: Midb) -> None:
    out = ok(midb("user", "add", "Alice@Example.org", "--password-stdin", "--lang", "de",
                  "--quota-bytes", "1.5G", "--quota-messages", "100", stdin="first secret\n"))
    assert "created account alice@example.org" in out and "Gesendet" in out
    store = midb.open()
    try:
        account = store.get_account("alice@example.org")
        assert account is not None
        assert (account.lang, account.quota_bytes, account.quota_messages) == ("de", 1610612736, 100)
        assert MidbAuth(store).authenticate("alice@example.org", "first secret") == "alice@example.org"
    finally:
        store.close()

    listing = ok(midb("user", "list"))
    assert listing.splitlines()[0].split() == ["NAME", "MESSAGES", "SIZE", "QUOTA", "LANG", "STATE"]
    assert "alice@example.org" in listing and "1.5 GiB/100 msgs" in listing

    shown = ok(midb("user", "show", "ALICE@example.org"))
    for expected in ("name:      alice@example.org", "language:  de", "disabled:  no", "password:  set (scrypt)",
                     "messages 100", "usage:     0 messages", "Papierkorb", "\\Trash", "UIDVALIDITY",
                     "keywords:  0 combinations (0.0% of the 16777215 an account can hold)"):
        assert expected in shown, expected

    ok(midb("user", "passwd", "alice@example.org", "--password-stdin", stdin="second secret\r\n"))
    out = ok(midb("user", "quota", "alice@example.org", "--bytes", "2.5M", "--messages", "0"))
    assert "storage 2.5 MiB (2621440 bytes), messages unlimited" in out
    assert "storage 2.5 MiB" in ok(midb("user", "quota", "alice@example.org"))
    assert "mailboxes imap_default_mailbox_quota, annotations imap_default_annotation_quota" in out
    out = ok(midb("user", "quota", "alice@example.org", "--mailboxes", "50", "--annotations", "4M"))
    assert "mailboxes 50, annotations 4.0 MiB" in out
    assert "6 mailboxes, 0 B of annotations" in ok(midb("user", "show", "alice@example.org"))
    out = ok(midb("user", "lang", "alice@example.org", "fr"))
    assert "language of alice@example.org set to fr" in out and "renamed" not in out
    assert "Papierkorb" in ok(midb("user", "show", "alice@example.org"))   # names kept without the option
    out = ok(midb("user", "lang", "alice@example.org", "fr", "--rename-folders"))
    assert "renamed Papierkorb to Corbeille (\\Trash)" in out and "renamed Gesendet to Envoyés (\\Sent)" in out
    out = ok(midb("user", "lang", "alice@example.org", "fr", "--rename-folders"))
    assert "kept Corbeille (\\Trash): already named so" in out
    ok(midb("user", "disable", "alice@example.org"))
    assert "disabled" in ok(midb("user", "list"))
    store = midb.open()
    try:
        account = store.get_account("alice@example.org")
        assert account is not None and account.disabled and account.lang == "fr"
        assert account.quota_bytes == 2621440 and account.quota_messages == 0
        assert (account.quota_mailboxes, account.quota_annotation_bytes) == (50, 4 << 20)
        with pytest.raises(AccountDisabled):
            MidbAuth(store).authenticate("alice@example.org", "second secret")
    finally:
        store.close()
    ok(midb("user", "enable", "alice@example.org"))
    store = midb.open()
    try:
        assert MidbAuth(store).authenticate("alice@example.org", "second secret") == "alice@example.org"
        assert MidbAuth(store).authenticate("alice@example.org", "first secret") is None
    finally:
        store.close()

    fails(midb("user", "del", "alice@example.org"), "refusing to delete alice@example.org without --yes")
    ok(midb("user", "del", "alice@example.org", "--yes"))
    assert "alice" not in ok(midb("user", "list"))


def test_user_errors(midb: Midb) -> None:
    ok(midb("user", "add", "bob", "--password-stdin", stdin="pw\n"))
    fails(midb("user", "add", "BOB", "--password-stdin", stdin="pw\n"), "account bob exists")
    fails(midb("user", "add", "carl", "--password-stdin", stdin="\n"), "empty passwords are not accepted")
    fails(midb("user", "add", "carl"), "no terminal to ask for the password on; use --password-stdin")
    fails(midb("user", "add", "bad name", "--password-stdin", stdin="pw\n"), "invalid character")
    fails(midb("user", "add", "carl", "--password-stdin", "--quota-bytes", "12Q", stdin="pw\n"),
          "'12Q' is not a size")
    fails(midb("user", "add", "carl", "--quota-messages", "-5"), "argument --quota-messages")
    fails(midb("user", "show", "nobody"), "no such account: nobody")
    fails(midb("user", "passwd", "nobody", "--password-stdin", stdin="x\n"), "no such account: nobody")
    fails(midb("user", "quota", "bob", "--bytes", "lots"), "'lots' is not a size")
    fails(midb("user", "lang", "bob", "not a tag"), "'not a tag' is not a language tag")
    fails(midb("user", "add", "carl", "--password-stdin", "--hash-stdin"), "not allowed with argument")
    assert "carl" not in ok(midb("user", "list"))


def test_user_add_with_existing_hash(midb: Midb) -> None:
    ok(midb("user", "add", "dora", "--hash-stdin", stdin=SHA512_CRYPT + "\n"))
    fails(midb("user", "add", "eve", "--hash-stdin", stdin="{NOPE}abc\n"), "unsupported password hash")
    ok(midb("user", "add", "finn", "--no-password"))
    shown = ok(midb("user", "show", "finn"))
    assert "password:  not set" in shown
    store = midb.open()
    try:
        assert MidbAuth(store).authenticate("dora", "Hello world!") == "dora"
        assert MidbAuth(store).authenticate("finn", "") is None
    finally:
        store.close()
    assert "password:  set (scrypt)" in ok(midb("user", "show", "dora"))  # re-hashed at login


def test_backend_note(midb: Midb) -> None:
    midb.config.write_text("midb_fsync = no\nauth_backend = passwd-file\nauth_passwd_file = /etc/dovecot/users\n")
    result = midb("user", "add", "gil", "--password-stdin", stdin="pw\n")
    ok(result)
    assert "auth_backend is passwd-file" in result.stderr


def test_owner_commands(midb: Midb) -> None:
    store = Store(midb.store, fsync=False, map_size=64 << 20)
    try:
        for name in ("shared", "hank", "ida"):
            store.create_account(name)
    finally:
        store.close()
    assert "hank now owns the mailbox shared" in ok(midb("owner", "grant", "shared", "HANK"))
    ok(midb("owner", "grant", "shared", "ida"))
    assert ok(midb("owner", "list", "shared")).split() == ["hank", "ida"]
    assert "owners:    hank, ida" in ok(midb("user", "show", "shared"))
    ok(midb("owner", "revoke", "shared", "hank"))
    assert ok(midb("owner", "list", "shared")).split() == ["ida"]
    fails(midb("owner", "revoke", "shared", "hank"), "hank is not an owner of shared")
    fails(midb("owner", "grant", "shared", "nobody"), "no such account: nobody")
    fails(midb("owner", "grant", "shared", "shared"), "an account always owns its own mailbox")
    fails(midb("owner", "list", "nobody"), "no such account: nobody")


def _dovecot_maildir(root: Path) -> None:
    for folder in (root, root / ".Sent", root / ".Projects.2024"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    (root / "cur" / "1700000001.M1.host:2,S").write_bytes(b"Subject: one\r\n\r\nbody one\r\n")
    (root / "cur" / "1700000002.M2.host:2,FRa").write_bytes(b"Subject: two\r\n\r\nbody two\r\n")
    (root / "dovecot-uidlist").write_text("3 V99 N10\n4 :1700000001.M1.host\n8 :1700000002.M2.host\n")
    (root / "dovecot-keywords").write_text("0 Important\n")
    (root / ".Sent" / "cur" / "1700000003.M3.host:2,S").write_bytes(b"Subject: sent\n\nlf body\n")
    (root / ".Projects.2024" / "new" / "1700000004.M4.host").write_bytes(b"Subject: p\r\n\r\np\r\n")


def test_import_highestmodseq_given(midb: Midb, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--highestmodseq: the value Dovecot reported, in place of the 2**32 floor, for every folder
    whose UIDs are kept."""
    args = build_parser().parse_args(["import", "mbox", "jo", "Old", "f", "--highestmodseq", "5000"])
    assert args.highestmodseq == 5000
    for wrong in ("0", "-3", "x", str((1 << 62) + 1)):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["import", "maildir", "jo", "d", "--highestmodseq", wrong])
        assert exited.value.code == 1
        assert "midb: error: argument --highestmodseq: " in capsys.readouterr().err
    ok(midb("user", "add", "jo", "--password-stdin", stdin="pw\n"))
    maildir = tmp_path / "Maildir"
    _dovecot_maildir(maildir)
    out = ok(midb("import", "maildir", "jo", str(maildir), "--highestmodseq", "5000"))
    assert "UIDVALIDITY 99 and UIDs kept, HIGHESTMODSEQ raised to 5000 (as given)" in out
    store = midb.open()
    try:
        inbox = store.get_folder("jo", "INBOX")
        assert inbox is not None and 5000 < inbox.highestmodseq < 5010
    finally:
        store.close()


def test_import_verify_backup_stats(midb: Midb, tmp_path: Path) -> None:
    ok(midb("user", "add", "jo", "--password-stdin", stdin="pw\n"))
    maildir = tmp_path / "Maildir"
    _dovecot_maildir(maildir)
    out = ok(midb("import", "maildir", "jo", str(maildir)))
    assert ("INBOX: 2 imported, 0 skipped (already present); UIDVALIDITY 99 and UIDs kept, "
            "HIGHESTMODSEQ raised to 4294967296 (the source's is not known)") in out
    assert "Projects/2024: 1 imported" in out and "(folder created)" in out
    assert "total: 4 imported, 0 skipped, 0 failed, 3 folders" in out
    again = ok(midb("import", "maildir", "jo", str(maildir)))
    assert "total: 0 imported, 4 skipped" in again

    mbox = tmp_path / "old.mbox"
    mbox.write_bytes(b"From a@b Thu Jan  4 10:20:30 2024\nSubject: m\nStatus: RO\n\n>From here\n\n"
                     b"From a@b Fri Jan  5 10:20:30 2024\nSubject: n\n\nbody\n")
    out = ok(midb("import", "mbox", "jo", "Old/Mail", str(mbox)))
    assert "Old/Mail: 2 imported" in out
    fails(midb("import", "mbox", "jo", "Old", str(tmp_path / "missing.mbox")), "cannot open")
    fails(midb("import", "mbox", "nobody", "Old", str(mbox)), "no such account: nobody")
    fails(midb("import", "maildir", "jo", str(tmp_path / "nothing")), f"{tmp_path / 'nothing'} is not a directory")

    store = midb.open()
    try:
        inbox = store.get_folder("jo", "INBOX")
        assert inbox is not None and inbox.uidvalidity == 99 and inbox.highestmodseq > 1 << 32
        metas = store.messages("jo", inbox.id)
        assert [(m.uid, m.flags) for m in metas] == [(4, ("\\Seen",)), (8, ("\\Answered", "\\Flagged", "Important"))]
        sent = store.get_folder("jo", "Sent")
        assert sent is not None
        assert store.read_body(store.messages("jo", sent.id)[0].blob) == b"Subject: sent\r\n\r\nlf body\r\n"
    finally:
        store.close()

    values = _stats(ok(midb("stats")))
    assert values["accounts"] == "1" and values["messages"] == "6"
    # One keyword combination: {Important}, the maildir's "a" (dovecot-keywords).
    assert values["keyword_sets"] == "1 (fullest account: 0.0% of its ids)"
    assert values["keyword_sets_limit"] == "16777215"
    assert ok(midb("verify")).strip() == "store is consistent"

    backup = tmp_path / "backup"
    ok(midb("backup", str(backup)))
    copy = Store(backup, fsync=False, map_size=64 << 20)
    try:
        assert [a.name for a in copy.list_accounts()] == ["jo"]
        folder = copy.get_folder("jo", "INBOX")
        assert folder is not None and copy.uids("jo", folder.id) == [4, 8]
    finally:
        copy.close()
    fails(midb("backup", str(backup)), "exists and is not an empty directory")


def test_verify_finds_and_repairs(midb: Midb) -> None:
    ok(midb("user", "add", "kai", "--password-stdin", stdin="pw\n"))
    store = midb.open()
    try:
        inbox = store.get_folder("kai", "INBOX")
        assert inbox is not None
        store.append("kai", inbox.id, b"Subject: x\r\n\r\nx\r\n")
        blob = store.messages("kai", inbox.id)[0].blob
        os.unlink(store.body_path(blob))
    finally:
        store.close()
    result = midb("verify")
    assert result.returncode == 1 and "problems found" in result.stdout
    repaired = midb("verify", "--repair")
    assert "Traceback" not in repaired.stderr
    after = midb("verify")
    assert after.returncode == repaired.returncode  # exit 1 from --repair exactly when problems remain


def test_read_only_reads_an_older_store_as_it_is_and_refuses_to_write(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """--read-only: what a sysadmin uses before an upgrade (a backup of the old store, a look at
    it) and on a backup: nothing is written, an older index is not upgraded (upgrade57 F2)."""
    path = tmp_path / "store"
    with store_with_alice(path) as store:
        folder = store.get_folder("alice", "INBOX")
        assert folder is not None
        store.append("alice", folder.id, b"Subject: kept\r\n\r\nbody\r\n", flags=("\\Seen",))
    downgrade_to_schema_3(path)
    where = ["--store", str(path), "--read-only"]

    def schema() -> int:
        environment = lmdb.open(str(path / "index"), max_dbs=32, readonly=True)
        try:
            with environment.begin() as txn:
                raw = txn.get(b"schema", db=environment.open_db(b"meta", txn=txn, create=False))
                assert raw is not None
                return int.from_bytes(raw, "big")
        finally:
            environment.close()

    assert main([*where, "stats"]) == 0 and "messages" in capsys.readouterr().out
    assert main([*where, "verify"]) == 0
    assert main([*where, "user", "show", "alice"]) == 0
    assert main(["user", "--store", str(path), "--read-only", "list"]) == 0  # between group and action too
    assert main(["--store", str(path), "backup", str(tmp_path / "copy"), "--read-only"]) == 0  # after the command too
    assert main([*where, "export", "maildir", "alice", str(tmp_path / "alice")]) == 0
    assert schema() == 3  # none of them upgraded it
    capsys.readouterr()
    for command, name in ((["user", "add", "bob", "--no-password"], "user add"), (["verify", "--repair"], "verify"),
                          (["user", "quota", "alice", "--bytes", "1G"], "user quota"),
                          (["import", "mbox", "alice", "X", "f"], "import mbox")):
        assert main([*where, *command]) == 1
        assert f"'{name}' changes the store: not with --read-only" in capsys.readouterr().err
    assert main([*where, "user", "quota", "alice"]) == 0  # showing it only reads
    assert schema() == 3
    # The backup is the old store, byte for byte what an older gximap reads; the export is whole.
    assert main(["--store", str(tmp_path / "copy"), "--read-only", "user", "list"]) == 0
    assert "alice" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "alice" / "cur")) == 1


def test_a_backup_on_read_only_media_is_read_with_read_only(midb: Midb, tmp_path: Path) -> None:
    """A store on a read-only file system (a backup on a DVD, a snapshot mounted ro): LMDB reads
    it without writing its lock file, so every command that only reads works with --read-only;
    the others say what to do. The mount is made in a private mount namespace (needs root)."""
    import shlex
    import shutil

    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no private mount namespace here (needs root)")
    with midb.open() as store:
        store.create_account("alice")
        store.append("alice", store.get_folder("alice", "INBOX").id, b"Subject: kept\r\n\r\nx\r\n")  # type: ignore[union-attr]
    base = [sys.executable, "-m", "midb", "-c", str(midb.config), "--store", str(midb.store)]
    commands = [[*base, "--read-only", "verify"], [*base, "--read-only", "user", "show", "alice"],
                [*base, "--read-only", "export", "mbox", "alice", "INBOX", str(tmp_path / "out.mbox")],
                [*base, "user", "lang", "alice", "de"]]
    script = (f"mount --bind {shlex.quote(str(midb.store))} {shlex.quote(str(midb.store))} && "
              f"mount -o remount,ro,bind {shlex.quote(str(midb.store))} && "
              + " ; ".join(f"{shlex.join(command)}; echo rc=$?" for command in commands))
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    if "mount:" in result.stderr:
        pytest.skip(f"cannot remount read-only here: {result.stderr.strip()}")
    codes = [line for line in result.stdout.splitlines() if line.startswith("rc=")]
    assert codes == ["rc=0", "rc=0", "rc=0", "rc=1"], (result.stdout, result.stderr)
    assert "store is consistent" in result.stdout and b"Subject: kept" in (tmp_path / "out.mbox").read_bytes()
    assert "read-only file system; commands that only read work with --read-only" in result.stderr
    assert "Traceback" not in result.stderr


def test_scram_keys_are_set_with_the_password_and_counted(midb: Midb) -> None:
    """A typed password gets SCRAM-SHA-256 keys; an imported hash none (but a Dovecot
    {SCRAM-SHA-256} one, which is keys itself); ``user scram`` lists who lacks them."""
    from midb.scram import derive

    ok(midb("user", "add", "alice", "--password-stdin", stdin="pencil\n"))
    ok(midb("user", "add", "bob", "--hash-stdin", stdin=SHA512_CRYPT + "\n"))
    dovecot = "{SCRAM-SHA-256}" + derive("pencil", iterations=4096).text()
    ok(midb("user", "add", "carol", "--hash-stdin", stdin=dovecot + "\n"))
    ok(midb("user", "add", "dave", "--no-password"))
    assert "scram:     SCRAM-SHA-256 keys (100000 iterations)" in ok(midb("user", "show", "alice"))
    assert "scram:     SCRAM-SHA-256 keys (4096 iterations)" in ok(midb("user", "show", "carol"))
    assert "scram:     none: derived at the next LOGIN or PLAIN login" in ok(midb("user", "show", "bob"))
    assert "scram:     none (no password)" in ok(midb("user", "show", "dave"))
    result = midb("user", "scram", "--read-only")
    assert ok(result) == "bob\n"
    assert result.stderr == "1 of 3 accounts with a password lack SCRAM-SHA-256 keys\n"
    store = midb.open()
    try:
        account, found = store.get_account("alice"), MidbAuth(store).scram_keys("alice")
        assert account is not None and account.scram_sha256 is not None
        assert found is not None and found.credential.matches("pencil")
    finally:
        store.close()
    ok(midb("user", "passwd", "alice", "--hash-stdin", stdin=SHA512_CRYPT + "\n"))  # the old keys go
    ok(midb("user", "passwd", "bob", "--password-stdin", stdin="new one\n"))
    assert ok(midb("user", "scram")) == "alice\n"
