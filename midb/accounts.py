"""Account records and account-name rules.

Account record (value of the account id in the `accounts` database): a marshal'ed tuple
(name, password_hash, lang, quota_bytes, quota_messages, disabled, created, quota_mailboxes,
quota_annotation_bytes, autoexpunge, scram_sha256); records written before the last four existed
have seven, nine or ten fields and read as 0, () (none of the account's own) and None (no SCRAM
keys). Usage counters live apart in
the `usage` database (account id -> >QQ bytes, messages) so hot paths never rewrite the account
record; the mailbox count and the annotation octets are counted when asked (midb.quotas).
"""

from __future__ import annotations

import functools
import marshal
import re
import struct
from dataclasses import dataclass

from midb.errors import InvalidName

MAX_ACCOUNT_NAME_BYTES = 255
# Characters an account name may not hold: whitespace (str.isspace, which re's \s matches alike),
# controls, DEL, and "!". One C-level search: every store call normalises its account name, and a
# loop over the characters in Python was 1.7 % of the server's CPU under the bench's mixed load.
_REFUSED_CHARACTER = re.compile(r"[\s\x00-\x1f\x7f!]")
USAGE = struct.Struct(">QQ")


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    password_hash: str | None
    lang: str | None
    quota_bytes: int        # 0 = unlimited
    quota_messages: int     # 0 = unlimited
    disabled: bool
    created: int            # unix time
    quota_mailboxes: int = 0          # 0 = none of its own (the server's default applies)
    quota_annotation_bytes: int = 0   # 0 = none of its own (the server's default applies)
    # The account's own expiry periods, ((special use, seconds), ...) sorted by use: they take the
    # place of the server's imap_autoexpunge_* for that use; 0 = never (midb.expiry).
    autoexpunge: tuple[tuple[str, int], ...] = ()
    # SCRAM-SHA-256 keys derived from the password, in Dovecot's form (midb.scram): set with
    # the password, dropped when a password is set without them.
    scram_sha256: str | None = None


def normalize_account_name(name: object) -> str:
    """Lowercase (plain str.lower, per the contract) and validate; InvalidName if unacceptable.

    Whitespace and control characters are refused, and so is "!" because "actor!mailbox" is the
    impersonation syntax of logins.
    """
    if not isinstance(name, str) or not name:
        raise InvalidName("account name must be a non-empty str")
    return _normalized_account_name(name)


# Every store call by account name normalises the name: a session asks for the same one or two
# names all day. Invalid names raise and are not kept.
@functools.lru_cache(maxsize=4096)
def _normalized_account_name(name: str) -> str:
    lowered = name.lower()
    refused = _REFUSED_CHARACTER.search(lowered)
    if refused is not None:
        raise InvalidName(f"invalid character {refused.group()!r} in account name")
    try:
        encoded = lowered.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName("account name is not valid Unicode") from None
    if len(encoded) > MAX_ACCOUNT_NAME_BYTES:
        raise InvalidName(f"account name longer than {MAX_ACCOUNT_NAME_BYTES} bytes")
    return lowered


def encode_account(account: Account) -> bytes:
    fields = (account.name, account.password_hash, account.lang, account.quota_bytes,
              account.quota_messages, account.disabled, account.created)
    # Seven fields while the newer settings are unset: the records stay readable by the release
    # before them (which unpacks seven), for as long as no account is given such a setting.
    if account.scram_sha256 is not None:  # the release before SCRAM reads the first ten
        return marshal.dumps((*fields, account.quota_mailboxes, account.quota_annotation_bytes,
                              account.autoexpunge, account.scram_sha256))
    if account.autoexpunge:
        return marshal.dumps((*fields, account.quota_mailboxes, account.quota_annotation_bytes,
                              account.autoexpunge))
    if account.quota_mailboxes or account.quota_annotation_bytes:
        return marshal.dumps((*fields, account.quota_mailboxes, account.quota_annotation_bytes))
    return marshal.dumps(fields)


def decode_account(account_id: int, raw: bytes) -> Account:
    fields = marshal.loads(raw)
    name, password_hash, lang, quota_bytes, quota_messages, disabled, created = fields[:7]
    quota_mailboxes, quota_annotation_bytes = fields[7:9] if len(fields) >= 9 else (0, 0)
    autoexpunge = tuple(tuple(pair) for pair in fields[9]) if len(fields) >= 10 else ()
    scram_sha256 = fields[10] if len(fields) >= 11 else None
    return Account(id=account_id, name=name, password_hash=password_hash, lang=lang,
                   quota_bytes=quota_bytes, quota_messages=quota_messages, disabled=disabled,
                   created=created, quota_mailboxes=quota_mailboxes,
                   quota_annotation_bytes=quota_annotation_bytes, autoexpunge=autoexpunge,
                   scram_sha256=scram_sha256)


def encode_usage(size: int, messages: int) -> bytes:
    return USAGE.pack(max(size, 0), max(messages, 0))


def decode_usage(raw: bytes | None) -> tuple[int, int]:
    if raw is None:
        return 0, 0
    return USAGE.unpack(raw)
