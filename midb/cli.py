"""``midb``: administer the midb store (accounts, ownership, imports, verification, backups).

Settings come from the gximap configuration (``-c FILE``; by default /etc/gromox/gromox.cfg, then
/etc/gromox/imap.cfg, those that exist, as gximap reads them), of which only the midb-related
directives are used: midb never imports gximap. The files and the values are read by
midb.cfgvalues, as gximap's own reader reads them, so both accept and refuse the same lines and
values with the same messages.
``--store DIR`` overrides ``midb_path``.

Every error a user can cause ends with ``midb: error: ...`` on stderr and exit status 1;
passwords are read from a terminal prompt or from stdin, never from the command line.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from midb import cfgvalues
from midb.cfgvalues import Scalar, Syntax, parse_timespan
from midb.errors import MidbError, NoSuchAccount
from midb.expiry import PERIOD_DIRECTIVES, SPECIAL_USES, parse_folder_periods

if TYPE_CHECKING:
    from midb.accounts import Account
    from midb.exporter import ExportReport
    from midb.store import Store

DEFAULT_CONFIGS = cfgvalues.DEFAULT_CONFIG_FILES   # gximap's, in its order

log = logging.getLogger("midb")


class CliError(Exception):
    """A user error: reported as ``midb: error: <message>`` with exit status 1."""


# ---------------------------------------------------------------------------------------------
# configuration


# The typed directives midb reads, with the kind, default and bounds gximap.config.DIRECTIVES
# takes from the same table.
SYNTAX: dict[str, Syntax] = cfgvalues.MIDB_SYNTAX
# Every directive midb reads: the typed ones and those load_settings takes as text.
_DIRECTIVES = frozenset(SYNTAX) | {"default_lang", "data_file_path", "imap_autoexpunge_folders"}
# Directive -> the Settings field it sets.
_FIELDS = {"midb_path": "midb_path", "midb_run_dir": "run_dir", "midb_fsync": "fsync", "midb_map_size": "map_size",
           "midb_shard_num": "shards", "auth_backend": "auth_backend", "auth_passwd_file": "auth_passwd_file"}
_IEC_SUFFIX_RE = re.compile(r"(?<=[kmgt])i(?=b$)", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A size given as a command-line option (quotas): the configuration's syntax (``64K``,
    ``1.5G``), plus ``unlimited`` or ``none`` -> 0 and the ``KiB``/``GiB`` midb writes sizes with."""
    word = text.strip()
    if word.lower() in ("unlimited", "none"):
        return 0
    try:
        return cfgvalues.parse_size(_IEC_SUFFIX_RE.sub("", word))
    except ValueError:
        raise CliError(f"{text!r} is not a size (a number with optional K/M/G/T suffix, or unlimited)") from None


def _span(text: str, where: str) -> float:
    try:
        return parse_timespan(text)
    except ValueError as exc:
        raise CliError(f"{where}: {exc}") from None


def config_value(key: str, value: str, where: str) -> Scalar:
    """A directive's typed value as gximap reads it; errors as gximap words them,
    ``FILE:LINE: directive: why``."""
    try:
        return SYNTAX[key].parse(value)
    except ValueError as exc:
        raise CliError(f"{where}: {key}: {exc}") from None


def read_config(paths: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The midb-related directives of Gromox-style ``key = value`` files, read in order (a later
    line wins), each file as gximap reads it (midb.cfgvalues.directive_lines): a line gximap
    refuses is refused here too. Returns key -> (value, "file:line") so that errors can name
    where a bad value came from."""
    values: dict[str, tuple[str, str]] = {}
    for path in paths:
        try:
            for number, key, text in cfgvalues.directive_lines(cfgvalues.read_config_lines(path), path):
                if key in _DIRECTIVES:
                    values[key] = (text.strip(), f"{path}:{number}")
        except cfgvalues.ConfigError as exc:
            raise CliError(str(exc)) from None
    return values


def _default(key: str) -> Any:
    """A directive's value when the configuration does not set it: gximap's default, from the
    table both take it from (midb.cfgvalues.MIDB_SYNTAX)."""
    return SYNTAX[key].default_value()


@dataclass(slots=True)
class Settings:
    # The directives' values (_FIELDS), gximap's defaults until the configuration sets them.
    midb_path: str = _default("midb_path")
    fsync: bool = _default("midb_fsync")
    map_size: int = _default("midb_map_size")
    shards: int = _default("midb_shard_num")
    run_dir: str | None = _default("midb_run_dir")
    default_lang: str = "en"
    data_path: list[str] | None = None
    auth_backend: str = _default("auth_backend")
    auth_passwd_file: str | None = _default("auth_passwd_file")
    readonly: bool = False
    # Special use -> (value, "file:line") of its imap_autoexpunge_* (midb.expiry.PERIOD_DIRECTIVES),
    # what 'midb expire' does; parsed by that command only, so that a bad value stops no other.
    autoexpunge: dict[str, tuple[str, str]] = field(default_factory=dict)
    autoexpunge_folders: tuple[str, str] = ("", "")   # imap_autoexpunge_folders: (value, "file:line")


def load_settings(config: str | None, store_dir: str | None) -> Settings:
    settings = Settings()
    paths = [config] if config is not None else [path for path in DEFAULT_CONFIGS if os.path.isfile(path)]
    if paths:
        values = read_config(paths)
        for key, (value, where) in values.items():
            if key in _FIELDS:
                setattr(settings, _FIELDS[key], config_value(key, value, where))
            elif key == "default_lang" and value:   # empty: English folder names, as "en"
                settings.default_lang = value
            elif key == "data_file_path" and value:
                settings.data_path = [p for p in value.split(":") if p]
            elif key == "imap_autoexpunge_folders":
                settings.autoexpunge_folders = (value, where)
        settings.autoexpunge = {use: values[directive] for use, directive in PERIOD_DIRECTIVES.items()
                                if directive in values}
    if store_dir is not None:
        if settings.run_dir is not None and os.path.realpath(store_dir) != os.path.realpath(settings.midb_path):
            # Another store (a backup, say): midb_run_dir belongs to the configured one, whose
            # running gximap processes must not hear of this one's commits.
            settings.run_dir = None
        settings.midb_path = store_dir
    return settings


def open_store(settings: Settings, *, create: bool = False) -> Store:
    """Open the store; without ``create``, a missing store is an error instead of a new empty one.

    Read-write, like the server (the tool then also announces its changes to running gximap
    processes), unless --read-only: then nothing is written, and an index of an older schema
    is read as it is rather than upgraded.
    """
    from midb.store import Store

    if not create and not os.path.isfile(os.path.join(settings.midb_path, "index", "data.mdb")):
        raise CliError(f"no midb store at {settings.midb_path} (it is created by 'midb user add')")
    try:
        return Store(settings.midb_path, fsync=settings.fsync, map_size=settings.map_size,
                     run_dir=settings.run_dir, data_path=settings.data_path,
                     default_lang=settings.default_lang, shards=settings.shards, readonly=settings.readonly)
    except MidbError as exc:
        if not settings.readonly and os.strerror(errno.EROFS) in str(exc):
            # A backup on read-only media: LMDB reads it without its lock file there.
            raise CliError(f"{exc}: the store is on a read-only file system; commands that only read "
                           f"work with --read-only") from None
        raise


# ---------------------------------------------------------------------------------------------
# small helpers


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _quota_text(account: Account) -> str:
    size = "unlimited" if not account.quota_bytes else f"{human_size(account.quota_bytes)} ({account.quota_bytes} bytes)"
    count = "unlimited" if not account.quota_messages else str(account.quota_messages)
    # Without a limit of its own the account has gximap's default (imap.cfg), which midb does not read.
    mailboxes = str(account.quota_mailboxes) if account.quota_mailboxes else "imap_default_mailbox_quota"
    annotations = (human_size(account.quota_annotation_bytes) if account.quota_annotation_bytes
                   else "imap_default_annotation_quota")
    return f"storage {size}, messages {count}, mailboxes {mailboxes}, annotations {annotations}"


def _span_text(seconds: float) -> str:
    """A period as midb's options take it back: 30d, 12h, 90min, 45s."""
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _expiry_text(account: Account, settings: Settings) -> str:
    """Each special use's period for the account, and where it comes from."""
    own = dict(account.autoexpunge)
    parts = []
    for suffix, use in SPECIAL_USES.items():
        seconds: float
        if use in own:
            seconds, origin = own[use], "its own"
        else:
            directive = PERIOD_DIRECTIVES[use]
            value, where = settings.autoexpunge.get(use, ("0", ""))
            try:
                seconds = float(SYNTAX[directive].parse(value) or 0)
            except ValueError:
                seconds, origin = 0, f"{directive} unreadable at {where}"
            else:
                origin = directive
        period = _span_text(seconds) if seconds > 0 else "never"
        parts.append(f"{suffix.capitalize()} {period} ({origin})")
    return ", ".join(parts)


def _table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _scheme_of(password_hash: str | None) -> str:
    from midb.passwords import split_scheme

    if not password_hash:
        return "not set"
    scheme, _ = split_scheme(password_hash, "CRYPT")
    return f"set ({(scheme or 'unknown').lower()})"


def _scram_text(account: Account) -> str:
    from midb.authdb import account_scram_credential

    credential = account_scram_credential(account)
    if credential is not None:
        return f"SCRAM-SHA-256 keys ({credential.iterations} iterations)"
    if not account.password_hash:
        return "none (no password)"
    return "none: derived at the next LOGIN or PLAIN login, or when the password is set"


def cmd_user_scram(args: argparse.Namespace, settings: Settings) -> int:
    """The accounts with a password but no SCRAM-SHA-256 keys: they cannot log in with SCRAM
    (imap_sasl_scram) until they log in once otherwise or their password is set again."""
    from midb.authdb import account_scram_credential

    store = open_store(settings)
    try:
        accounts = [account for account in store.list_accounts() if account.password_hash]
    finally:
        store.close()
    lacking = [account.name for account in accounts if account_scram_credential(account) is None]
    for name in lacking:
        print(name)
    # The count apart from the list, which scripts read: "midb user scram | wc -l".
    print(f"{len(lacking)} of {len(accounts)} accounts with a password lack SCRAM-SHA-256 keys", file=sys.stderr)
    return 0


def read_new_password(from_stdin: bool) -> str:
    """The new password: first line of stdin, or typed twice at a terminal prompt."""
    if from_stdin:
        raw = sys.stdin.buffer.readline()
        try:
            password = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise CliError("the password on stdin is not valid UTF-8") from exc
    else:
        if not sys.stdin.isatty():
            raise CliError("no terminal to ask for the password on; use --password-stdin")
        password = getpass.getpass("New password: ")
        if getpass.getpass("Retype new password: ") != password:
            raise CliError("the passwords do not match")
    if not password:
        raise CliError("empty passwords are not accepted")
    if "\x00" in password:
        raise CliError("the password contains a NUL character")
    return password


def read_existing_hash() -> str:
    """A password hash in a supported scheme, from the first line of stdin."""
    from midb.passwords import SUPPORTED_SCHEMES, is_supported_hash

    try:
        stored = sys.stdin.buffer.readline().decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise CliError("the hash on stdin is not valid UTF-8") from exc
    if not stored:
        raise CliError("no password hash on stdin")
    if not is_supported_hash(stored):
        raise CliError("unsupported password hash: expected {SCHEME}hash with SCHEME one of "
                       + ", ".join(SUPPORTED_SCHEMES) + ", or a $scrypt$/$6$/$2y$/$argon2id$ string")
    return stored


def new_password_credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The hash and the SCRAM-SHA-256 keys to store for ``user add``/``user passwd``, from
    whichever source the options chose. An existing hash comes without keys (a Dovecot
    {SCRAM-SHA-256} hash is keys itself; the others get them at the account's next login)."""
    from midb.passwords import password_credentials

    if getattr(args, "no_password", False):
        return None, None
    if args.hash_stdin:
        return read_existing_hash(), None
    try:
        return password_credentials(read_new_password(args.password_stdin))
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _backend_note(settings: Settings) -> None:
    if settings.auth_backend != "midb":
        print(f"midb: note: auth_backend is {settings.auth_backend}; logins are not checked "
              f"against this password", file=sys.stderr)


def _account_or_fail(store: Store, name: str) -> str:
    account = store.get_account(name)
    if account is None:
        raise CliError(f"no such account: {name}")
    return account.name


_LANG_RE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*(?:\.[A-Za-z0-9-]+)?")


# ---------------------------------------------------------------------------------------------
# commands


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    if args.lang is not None and not _LANG_RE.fullmatch(args.lang):
        raise CliError(f"{args.lang!r} is not a language tag")
    quota_bytes = parse_size(args.quota_bytes) if args.quota_bytes is not None else None
    store = open_store(settings, create=True)
    try:
        if store.get_account(args.name) is not None:  # say so before asking for a password
            raise CliError(f"account {args.name.lower()} exists")
        password_hash, scram = new_password_credentials(args)
        account = store.create_account(args.name, password_hash=password_hash, lang=args.lang, scram_sha256=scram)
        if quota_bytes is not None or args.quota_messages is not None:
            changes: dict[str, int] = {}
            if quota_bytes is not None:
                changes["quota_bytes"] = quota_bytes
            if args.quota_messages is not None:
                changes["quota_messages"] = args.quota_messages
            account = store.update_account(account.name, **changes)  # type: ignore[arg-type]
        folders = ", ".join(f.name for f in store.list_folders(account.name))
    finally:
        store.close()
    print(f"created account {account.name} (folders: {folders})")
    if password_hash is not None:
        _backend_note(settings)
    return 0


def cmd_user_passwd(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    try:
        name = _account_or_fail(store, args.name)
        password_hash, scram = new_password_credentials(args)
        store.update_account(name, password_hash=password_hash, scram_sha256=scram)
    finally:
        store.close()
    print(f"password of {name} changed")
    _backend_note(settings)
    return 0


def cmd_user_del(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    try:
        name = _account_or_fail(store, args.name)
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(f"refusing to delete {name} without --yes (no terminal to ask on)")
            answer = input(f"Delete account {name} and all of its mail? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        store.delete_account(name)
    finally:
        store.close()
    print(f"deleted account {name}")
    return 0


def cmd_user_list(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    try:
        rows = [["NAME", "MESSAGES", "SIZE", "QUOTA", "LANG", "STATE"]]
        for account in store.list_accounts():
            size, messages = store.usage(account.name)
            quota = human_size(account.quota_bytes) if account.quota_bytes else "-"
            if account.quota_messages:
                quota += f"/{account.quota_messages} msgs"
            rows.append([account.name, str(messages), human_size(size), quota, account.lang or "-",
                         "disabled" if account.disabled else "enabled"])
    finally:
        store.close()
    if len(rows) > 1:
        print(_table(rows, right=frozenset({1, 2})))
    return 0


def cmd_user_show(args: argparse.Namespace, settings: Settings) -> int:
    from midb.columns import MAX_KEYWORD_SET, MAX_KEYWORD_SET_OCTETS, keyword_set_charge

    store = open_store(settings)
    try:
        account = store.get_account(args.name)
        if account is None:
            raise CliError(f"no such account: {args.name}")
        usage = store.quota_usage(account.name)
        size, messages = usage.bytes, usage.messages
        owners = store.owners(account.name)
        folders = store.list_folders(account.name)
        keyword_sets, keyword_octets = store.keyword_sets_used(account.name)
    finally:
        store.close()
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(account.created))
    print(f"name:      {account.name}")
    print(f"created:   {created}")
    print(f"language:  {account.lang or f'{settings.default_lang} (default_lang)'}")
    print(f"disabled:  {'yes' if account.disabled else 'no'}")
    print(f"password:  {_scheme_of(account.password_hash)}")
    print(f"scram:     {_scram_text(account)}")
    print(f"quota:     {_quota_text(account)}")
    print(f"expiry:    {_expiry_text(account, settings)}")
    print(f"usage:     {messages} messages, {human_size(size)} ({size} bytes), {len(folders)} mailboxes, "
          f"{human_size(usage.annotation_bytes)} of annotations")
    print(f"owners:    {', '.join(owners) if owners else '(none besides the account itself)'}")
    # Ids are never freed: how near the account is to refusing new keyword combinations.
    print(f"keywords:  {keyword_sets} combinations ({keyword_sets / MAX_KEYWORD_SET:.1%} of the "
          f"{MAX_KEYWORD_SET} an account can hold), {human_size(keyword_set_charge(keyword_sets, keyword_octets))} "
          f"of index of {human_size(MAX_KEYWORD_SET_OCTETS)}")
    print("folders:")
    rows = [["NAME", "SPECIAL-USE", "MESSAGES", "UNSEEN", "SIZE", "UIDVALIDITY", "UIDNEXT"]]
    for folder in folders:
        rows.append([folder.name, folder.special_use or "-", str(folder.messages), str(folder.unseen),
                     human_size(folder.size), str(folder.uidvalidity), str(folder.uidnext)])
    print("\n".join("  " + line for line in _table(rows, right=frozenset({2, 3, 4, 5, 6})).splitlines()))
    return 0


def cmd_user_lang(args: argparse.Namespace, settings: Settings) -> int:
    lang: str | None = args.lang
    if lang == "default":
        lang = None
    elif not _LANG_RE.fullmatch(args.lang):
        raise CliError(f"{args.lang!r} is not a language tag")
    store = open_store(settings)
    try:
        name = _account_or_fail(store, args.name)
        store.update_account(name, lang=lang)
        try:
            renames = store.localize_folders(name, lang) if args.rename_folders else []
        except MidbError as exc:
            raise CliError(f"language of {name} set, but the folders were not renamed ({exc}); "
                           "run the command again to rename them") from exc
    finally:
        store.close()
    print(f"language of {name} set to {lang or f'the default ({settings.default_lang})'}")
    for rename in renames:
        if rename.renamed:
            print(f"  renamed {rename.old} to {rename.new} ({rename.special_use})")
        else:
            print(f"  kept {rename.old} ({rename.special_use}): {rename.reason}")
    return 0


def cmd_user_quota(args: argparse.Namespace, settings: Settings) -> int:
    changes: dict[str, int] = {}
    if args.bytes is not None:
        changes["quota_bytes"] = parse_size(args.bytes)
    if args.messages is not None:
        if args.messages < 0:
            raise CliError("--messages must not be negative (0 means unlimited)")
        changes["quota_messages"] = args.messages
    if args.mailboxes is not None:
        changes["quota_mailboxes"] = args.mailboxes
    if args.annotations is not None:
        changes["quota_annotation_bytes"] = parse_size(args.annotations)
    store = open_store(settings)
    try:
        name = _account_or_fail(store, args.name)
        account = store.update_account(name, **changes) if changes else store.get_account(name)  # type: ignore[arg-type]
        assert account is not None
    finally:
        store.close()
    print(f"quota of {name}: {_quota_text(account)}")
    return 0


def cmd_user_expire(args: argparse.Namespace, settings: Settings) -> int:
    changes: dict[str, int | None] = {}
    for suffix, use in SPECIAL_USES.items():
        given = getattr(args, suffix)
        if given is not None:
            if given.strip().lower() == "default":
                changes[use] = None
                continue
            span = _span(given, f"--{suffix}")
            if 0 < span < 1:
                raise CliError(f"--{suffix}: {given!r} is less than a second (0 means never)")
            changes[use] = round(span)
    store = open_store(settings)
    try:
        name = _account_or_fail(store, args.name)
        account = store.get_account(name)
        assert account is not None
        if changes:
            own = dict(account.autoexpunge)
            for use, change in changes.items():
                if change is None:
                    own.pop(use, None)
                else:
                    own[use] = change
            account = store.update_account(name, autoexpunge=own)
    finally:
        store.close()
    print(f"expiry of {name}: {_expiry_text(account, settings)}")
    return 0


def _set_disabled(args: argparse.Namespace, settings: Settings, disabled: bool) -> int:
    store = open_store(settings)
    try:
        name = _account_or_fail(store, args.name)
        store.update_account(name, disabled=disabled)
    finally:
        store.close()
    print(f"account {name} {'disabled' if disabled else 'enabled'}")
    return 0


def cmd_user_disable(args: argparse.Namespace, settings: Settings) -> int:
    return _set_disabled(args, settings, True)


def cmd_user_enable(args: argparse.Namespace, settings: Settings) -> int:
    return _set_disabled(args, settings, False)


def cmd_owner_grant(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    try:
        mailbox, actor = _account_or_fail(store, args.mailbox), _account_or_fail(store, args.actor)
        if mailbox == actor:
            raise CliError("an account always owns its own mailbox")
        store.grant_owner(mailbox, actor)
    finally:
        store.close()
    print(f"{actor} now owns the mailbox {mailbox} (login as {actor}!{mailbox})")
    return 0


def cmd_owner_revoke(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    try:
        mailbox, actor = _account_or_fail(store, args.mailbox), args.actor.lower()
        if actor not in store.owners(mailbox):
            raise CliError(f"{actor} is not an owner of {mailbox}")
        store.revoke_owner(mailbox, actor)
    finally:
        store.close()
    print(f"{actor} no longer owns the mailbox {mailbox}")
    return 0


def cmd_owner_list(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    try:
        mailbox = _account_or_fail(store, args.mailbox)
        owners = store.owners(mailbox)
    finally:
        store.close()
    for owner in owners:
        print(owner)
    return 0


def _print_folder_report(report: object) -> None:
    from midb.importer import FolderReport

    assert isinstance(report, FolderReport)
    print(report.summary())
    for note in report.notes:
        print(f"  note: {note}")


def cmd_import_mbox(args: argparse.Namespace, settings: Settings) -> int:
    from midb.importer import import_mbox

    store = open_store(settings)
    try:
        account = _account_or_fail(store, args.account)
        report = import_mbox(store, account, args.folder, args.file,
                             variant="mboxo" if args.mboxo else "mboxrd", crlf=not args.keep_line_endings,
                             highestmodseq=args.highestmodseq)
    finally:
        store.close()
    _print_folder_report(report)
    return 0 if report.complete and not report.failed else 1


def cmd_import_maildir(args: argparse.Namespace, settings: Settings) -> int:
    from midb.importer import import_maildir, import_maildir_tree

    store = open_store(settings)
    try:
        account = _account_or_fail(store, args.account)
        if args.into is not None:
            folder_report = import_maildir(store, account, args.into, args.dir, crlf=not args.keep_line_endings,
                                           highestmodseq=args.highestmodseq)
            _print_folder_report(folder_report)
            return 0 if folder_report.complete and not folder_report.failed else 1
        report = import_maildir_tree(store, account, args.dir, crlf=not args.keep_line_endings,
                                     highestmodseq=args.highestmodseq)
    finally:
        store.close()
    for folder_report in report.folders:
        _print_folder_report(folder_report)
    for problem in report.problems:
        print(f"midb: problem: {problem}", file=sys.stderr)
    print(f"total: {report.imported} imported, {report.skipped} skipped, {report.failed} failed, "
          f"{len(report.folders)} folders")
    return 0 if not report.problems and not report.failed else 1


def _print_export_report(report: ExportReport) -> int:
    """Notes (what changed while the export ran) go with the summary; problems (what the export
    lacks) to standard error, and the command fails."""
    for problem in report.problems:
        print(f"midb: problem: {problem}", file=sys.stderr)
    print(report.summary())
    for note in report.notes:
        print(f"  note: {note}")
    return 1 if report.problems else 0


def cmd_export_maildir(args: argparse.Namespace, settings: Settings) -> int:
    from midb.exporter import export_maildir_tree

    store = open_store(settings)
    try:
        report = export_maildir_tree(store, _account_or_fail(store, args.account), args.dir, folders=args.folder)
    finally:
        store.close()
    return _print_export_report(report)


def cmd_export_mbox(args: argparse.Namespace, settings: Settings) -> int:
    from midb.exporter import export_mbox

    store = open_store(settings)
    try:
        report = export_mbox(store, _account_or_fail(store, args.account), args.folder, args.file)
    finally:
        store.close()
    return _print_export_report(report)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    try:
        problems = store.verify(repair=args.repair)
        remaining = store.verify(repair=False) if args.repair and problems else problems
    finally:
        store.close()
    for problem in problems:
        print(problem)
    # "orphan:" lines are leftovers of interrupted writes (bodies no index entry refers to): harmless,
    # and removed by --repair once they are old enough not to belong to a write in progress.
    errors = [problem for problem in remaining if not problem.startswith("orphan:")]
    if not problems:
        print("store is consistent")
    elif args.repair:
        print(f"{len(problems)} problems found, {len(problems) - len(remaining)} repaired, "
              f"{len(remaining)} remain")
        for problem in remaining:
            print(f"remaining: {problem}")
    else:
        print(f"{len(problems)} problems found ({len(problems) - len(errors)} harmless orphans); "
              f"run 'midb verify --repair' to fix what can be fixed")
    return 1 if errors else 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    dest = args.dest
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise CliError(f"{dest} exists and is not an empty directory")
    store = open_store(settings)
    try:
        store.backup(dest)
    finally:
        store.close()
    print(f"backup written to {dest}")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    try:
        stats = store.stats()
    finally:
        store.close()
    width = max((len(key) for key in stats), default=0)
    for key, value in stats.items():
        shown = f"{value} ({human_size(value)})" if key.endswith("bytes") and value >= 1024 else str(value)
        if key == "keyword_sets":  # ids are per account and never freed: how near the fullest is to the end
            shown += f" (fullest account: {value / stats['keyword_sets_limit']:.1%} of its ids)"
        print(f"{key.ljust(width)}  {shown}")
    return 0


def _folder_periods(text: str, where: str) -> tuple[tuple[str, float], ...]:
    try:
        return parse_folder_periods(text)
    except ValueError as exc:
        raise CliError(f"{where}: {exc}") from None


def cmd_expire(args: argparse.Namespace, settings: Settings) -> int:
    from midb.expiry import expire_account

    by_use: dict[str, float] = {}
    for use, (value, where) in settings.autoexpunge.items():
        by_use[use] = float(config_value(PERIOD_DIRECTIVES[use], value, where) or 0)
    for suffix, use in SPECIAL_USES.items():
        given = getattr(args, suffix)
        if given is not None:
            by_use[use] = _span(given, f"--{suffix}")
    # Name patterns first, in order (the first match wins): --folder's, then the configuration's.
    by_name = [pair for entry in args.folder for pair in _folder_periods(entry, "--folder")]
    folders, where = settings.autoexpunge_folders
    by_name += _folder_periods(folders, f"{where}: imap_autoexpunge_folders")
    periods: dict[str, float] = {}
    for name, seconds in by_name:
        periods.setdefault(name, seconds)   # a name given twice: the first is the one that matches
    periods.update((use, seconds) for use, seconds in by_use.items() if seconds > 0)
    if args.dry_run:
        settings.readonly = True  # writes nothing, upgrades no older index
    store = open_store(settings)
    failed = 0
    try:
        known = store.list_accounts()
        if (not any(seconds > 0 for seconds in periods.values())
                and not any(seconds > 0 for account in known for _use, seconds in account.autoexpunge)):
            raise CliError("no period to expire by: set imap_autoexpunge_trash, imap_autoexpunge_junk "
                           "or imap_autoexpunge_folders in the configuration, give --trash, --junk "
                           "or --folder, or give accounts periods of their own ('midb user expire')")
        accounts = args.accounts or [account.name for account in known]
        verb = "would be expunged from" if args.dry_run else "expunged from"
        total = 0
        for account in accounts:
            try:
                done = expire_account(store, account, periods, dry_run=args.dry_run)
            except MidbError as exc:  # one account's trouble (deleted meanwhile): the others go on
                print(f"midb: error: {account}: {exc or type(exc).__name__}", file=sys.stderr)
                failed += 1
                continue
            for expired in done:
                print(f"{account}: {len(expired.uids)} messages {verb} {expired.folder}")
                total += len(expired.uids)
        if len(accounts) != 1 or not total:
            print(f"{total} messages {verb.removesuffix(' from')} in all")
    finally:
        store.close()
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# argument parsing


class _Parser(argparse.ArgumentParser):
    """Usage errors: the usage line, then ``midb: error: ...``, exit status 1."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"midb: error: {message}\n")


Handler = Callable[[argparse.Namespace, Settings], int]


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", default=default,
                        help=f"gximap configuration file to take midb settings from "
                             f"(default: {' then '.join(DEFAULT_CONFIGS)}, those that exist)")
    parser.add_argument("--store", metavar="DIR", default=default,
                        help="midb store directory (overrides midb_path)")
    parser.add_argument("--read-only", action="store_true", default=False if default is None else default,
                        help="open the store read-only: write nothing, upgrade no older index "
                             "(for commands that only read)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="midb", allow_abbrev=False,
                     description="Administer the midb message store used by gximap.")
    _global_options(parser, None)
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def leaf(group: argparse._SubParsersAction[_Parser], name: str, handler: Handler,
             text: str, *, writes: bool | Callable[[argparse.Namespace], bool] = True) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=text, description=text, allow_abbrev=False)
        _global_options(sub, argparse.SUPPRESS)  # global options also accepted after the command
        sub.set_defaults(handler=handler, writes=writes)
        return sub

    def group(name: str, text: str, description: str) -> argparse._SubParsersAction[_Parser]:
        parser = commands.add_parser(name, help=text, description=description, allow_abbrev=False)
        _global_options(parser, argparse.SUPPRESS)  # also between the group and its action
        return parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    user = group("user", "manage accounts", "Manage accounts.")
    sub = leaf(user, "add", cmd_user_add, "create an account with its INBOX and special folders")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--lang", metavar="L", help="language of the folder names and of the user")
    sub.add_argument("--quota-bytes", metavar="SIZE", help="storage quota (K/M/G/T suffixes; 0 = unlimited)")
    sub.add_argument("--quota-messages", metavar="N", type=_non_negative, help="message count quota")
    _password_options(sub, allow_none=True)
    sub = leaf(user, "passwd", cmd_user_passwd, "set an account's password")
    sub.add_argument("name", metavar="NAME")
    _password_options(sub, allow_none=False)
    sub = leaf(user, "del", cmd_user_del, "delete an account and all of its mail")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    leaf(user, "list", cmd_user_list, "list accounts with usage and quota", writes=False)
    sub = leaf(user, "show", cmd_user_show, "show an account: folders, usage, quota, owners, language",
               writes=False)
    sub.add_argument("name", metavar="NAME")
    leaf(user, "scram", cmd_user_scram, "list the accounts with a password but no SCRAM-SHA-256 keys",
         writes=False)
    sub = leaf(user, "lang", cmd_user_lang, "set an account's language ('default' to follow default_lang)")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("lang", metavar="LANG")
    sub.add_argument("--rename-folders", action="store_true",
                     help="also rename the special-use folders to their names in LANG")
    sub = leaf(user, "quota", cmd_user_quota, "show or set an account's quota (0 = unlimited)",
               writes=lambda args: any(value is not None for value in
                                       (args.bytes, args.messages, args.mailboxes, args.annotations)))
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--bytes", metavar="SIZE", help="storage quota, e.g. 500M or 2G")
    sub.add_argument("--messages", metavar="N", type=_non_negative, help="message count quota")
    sub.add_argument("--mailboxes", metavar="N", type=_non_negative,
                     help="mailbox count quota (0 = gximap's imap_default_mailbox_quota)")
    sub.add_argument("--annotations", metavar="SIZE",
                     help="METADATA annotation quota, e.g. 4M (0 = gximap's imap_default_annotation_quota)")
    sub = leaf(user, "expire", cmd_user_expire,
               "show or set an account's own expiry periods of Trash and Junk (in place of "
               "imap_autoexpunge_trash/junk)",
               writes=lambda args: any(getattr(args, suffix) is not None for suffix in SPECIAL_USES))
    sub.add_argument("name", metavar="NAME")
    for suffix, use in SPECIAL_USES.items():
        sub.add_argument(f"--{suffix}", metavar="SPAN",
                         help=f"the account's period of its {suffix.capitalize()} folder, e.g. 14d "
                              f"(0: never; 'default': {PERIOD_DIRECTIVES[use]})")
    sub = leaf(user, "disable", cmd_user_disable, "suspend an account: refuse its logins and new mail (its mail is kept)")
    sub.add_argument("name", metavar="NAME")
    sub = leaf(user, "enable", cmd_user_enable, "allow logins to a disabled account again")
    sub.add_argument("name", metavar="NAME")

    owner = group("owner", "manage store ownership (actor!mailbox logins)",
                  "Manage store ownership: an owner may log in as ACTOR!MAILBOX with its own password.")
    for name, handler, text in (("grant", cmd_owner_grant, "let ACTOR open MAILBOX"),
                                ("revoke", cmd_owner_revoke, "take ownership of MAILBOX away from ACTOR")):
        sub = leaf(owner, name, handler, text)
        sub.add_argument("mailbox", metavar="MAILBOX")
        sub.add_argument("actor", metavar="ACTOR")
    sub = leaf(owner, "list", cmd_owner_list, "list the owners of MAILBOX", writes=False)
    sub.add_argument("mailbox", metavar="MAILBOX")

    imports = group("import", "import mail from mbox or Maildir",
                    "Import mail, keeping UIDs, flags, keywords and dates.")
    sub = leaf(imports, "mbox", cmd_import_mbox, "import an mbox file into a folder (created if missing)")
    sub.add_argument("account", metavar="ACCOUNT")
    sub.add_argument("folder", metavar="FOLDER")
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--mboxo", action="store_true",
                     help="the file is mboxo: unquote only '>From ' (default: mboxrd, '>>From ' too)")
    sub.add_argument("--keep-line-endings", action="store_true",
                     help="store bodies as found instead of converting bare LF to CRLF")
    _highestmodseq_option(sub)
    sub = leaf(imports, "maildir", cmd_import_maildir,
               "import a (Dovecot) Maildir++ tree: root = INBOX, .Sub.Folder = Sub/Folder")
    sub.add_argument("account", metavar="ACCOUNT")
    sub.add_argument("dir", metavar="DIR")
    sub.add_argument("--into", metavar="FOLDER",
                     help="import DIR as a single Maildir into FOLDER, ignoring subfolders")
    sub.add_argument("--keep-line-endings", action="store_true",
                     help="store bodies as found instead of converting bare LF to CRLF")
    _highestmodseq_option(sub)

    exports = group("export", "export mail to a Maildir++ tree or an mbox file",
                    "Export mail, with UIDs, flags, keywords and dates, in the formats 'midb import' "
                    "reads (and Dovecot, mutt, Thunderbird).")
    sub = leaf(exports, "maildir", cmd_export_maildir,
               "export an account as a (Dovecot) Maildir++ tree into DIR (new, or empty)", writes=False)
    sub.add_argument("account", metavar="ACCOUNT")
    sub.add_argument("dir", metavar="DIR")
    sub.add_argument("--folder", metavar="FOLDER", action="append",
                     help="export only FOLDER and the folders below it (may be repeated)")
    sub = leaf(exports, "mbox", cmd_export_mbox, "export one folder as an mbox file (mboxrd); FILE must not exist",
               writes=False)
    sub.add_argument("account", metavar="ACCOUNT")
    sub.add_argument("folder", metavar="FOLDER")
    sub.add_argument("file", metavar="FILE")

    sub = leaf(commands, "expire", cmd_expire,
               "expunge what has been in Trash or Junk longer than its period (gximap's "
               "imap_autoexpunge_trash/junk, or --trash/--junk), for ACCOUNTs or every account",
               writes=lambda args: not args.dry_run)
    sub.add_argument("accounts", metavar="ACCOUNT", nargs="*")
    for suffix, use in SPECIAL_USES.items():
        sub.add_argument(f"--{suffix}", metavar="SPAN",
                         help=f"period of the {suffix.capitalize()} folder, e.g. 30d (0: kept); default: "
                              f"{PERIOD_DIRECTIVES[use]}")
    sub.add_argument("--folder", metavar="NAME=SPAN", action="append", default=[],
                     help="period of the folders of that name (* and %% as in LIST), before "
                          "imap_autoexpunge_folders' entries and any special use's; repeatable")
    sub.add_argument("--dry-run", action="store_true",
                     help="say what would be expunged, and expunge nothing (the store is not written)")
    sub = leaf(commands, "verify", cmd_verify, "check the store's consistency (exit 1 if problems remain)",
               writes=lambda args: bool(args.repair))
    sub.add_argument("--repair", action="store_true", help="repair what can be repaired")
    sub = leaf(commands, "backup", cmd_backup, "write a consistent copy of the store to DEST", writes=False)
    sub.add_argument("dest", metavar="DEST")
    leaf(commands, "stats", cmd_stats, "print store totals: accounts, folders, messages, bytes", writes=False)
    return parser


def _password_options(parser: argparse.ArgumentParser, *, allow_none: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin instead of prompting")
    group.add_argument("--hash-stdin", action="store_true",
                       help="read an existing password hash (e.g. {SHA512-CRYPT}$6$... from Dovecot) "
                            "from stdin")
    if allow_none:
        group.add_argument("--no-password", action="store_true",
                           help="no password: logins only through another auth_backend")


def _highestmodseq_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--highestmodseq", metavar="N", type=_modseq, default=None,
                        help="the source's HIGHESTMODSEQ, which Dovecot keeps in its index, not in "
                             "the mail files (doveadm mailbox status -u USER highestmodseq '*'; give the "
                             "largest over the folders): folders whose UIDs are kept get mod-sequences "
                             "above it instead of above 2^32; either way CONDSTORE and QRESYNC clients "
                             "of the source fetch every message's flags once")


def _modseq(text: str) -> int:
    from midb.importer import MAX_GIVEN_MODSEQ

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 < value <= MAX_GIVEN_MODSEQ:
        raise argparse.ArgumentTypeError(f"{text!r} is not from 1 to {MAX_GIVEN_MODSEQ}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative (0 means unlimited)")
    return value


class _VersionAction(argparse.Action):
    """--version, looking the version up only when asked (importlib.metadata is slow to import)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"midb (gximap) {_version()}")
        parser.exit(0)


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("gximap")
    except (ImportError, PackageNotFoundError):
        return "unknown"


class _LogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"midb: {record.levelname.lower()}: {record.getMessage()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter())
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False
    try:
        settings = load_settings(args.config, args.store)
        settings.readonly = bool(args.read_only)
        writes = args.writes(args) if callable(args.writes) else args.writes
        if settings.readonly and writes:
            command = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
            raise CliError(f"'{command}' changes the store: not with --read-only")
        return int(args.handler(args, settings))
    except (CliError, NoSuchAccount) as exc:
        print(f"midb: error: {exc}", file=sys.stderr)
    except MidbError as exc:
        print(f"midb: error: {exc or type(exc).__name__}", file=sys.stderr)
    except BrokenPipeError:
        # stdout went away (e.g. piped into head): stop quietly; keep the interpreter's final
        # flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"midb: error: {exc.strerror or exc}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print("midb: interrupted", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
    return 1


if __name__ == "__main__":
    sys.exit(main())
