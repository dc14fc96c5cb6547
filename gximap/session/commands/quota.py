"""QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT, SETQUOTA over midb's per-account limits.

Every mailbox of an account shares one quota root, named "". midb keeps four limits per account
(0 meaning none):

* STORAGE: octets, reported in units of 1024 octets, rounded up (usage and limit alike, so
  usage <= limit in octets stays usage <= limit on the wire); a transactional usage counter;
* MESSAGE: the number of messages; a transactional usage counter;
* MAILBOX: the number of mailboxes; CREATE and RENAME beyond it fail with NO [OVERQUOTA];
* ANNOTATION-STORAGE: the octets of the account's METADATA annotations (entry names and values,
  and 64 octets per entry for its place in the index; mailbox and server ones), in units of 1024
  octets like STORAGE; SETMETADATA (and RENAME INBOX, which copies INBOX's annotations) beyond it
  fail with NO [OVERQUOTA]. RFC 9208 names the resource after the per-message annotations of
  RFC 5257, which gximap does not offer; METADATA's are the annotations it has, and Cyrus counts
  them against the same resource.

Subscriptions outlive their mailboxes (RFC 3501 6.3.6), so an account has at most as many as its
MAILBOX limit; SUBSCRIBE beyond it fails with NO [LIMIT] (it is no quota resource).

The last two are counted when asked (midb.quotas), and an account without a limit of its own has
the server's: imap_default_mailbox_quota and imap_default_annotation_quota. They keep one user
from filling the index, which every account shares, with mailboxes and annotations
(imap_metadata_max_entries and imap_metadata_max_size bound one mailbox only).

A QUOTA response cannot say "unlimited" (its resource list is never empty), so only limited
resources are reported, and an account without any limit (its own or the server's) has no quota
root at all: GETQUOTAROOT names none and GETQUOTA "" answers NO [NONEXISTENT].

SETQUOTA is offered (QUOTASET) only to the accounts listed in imap_quota_admins, and changes the
account the session works on: an administrator logs in as ``admin!user`` (with store ownership
of ``user``) to set that user's limits. As RFC 9208 section 4.1.3 says, the resources left out
of a SETQUOTA lose their limit (MAILBOX and ANNOTATION-STORAGE: the account's own, so the server's
default applies again; the QUOTA response to SETQUOTA shows the limits then in force). An account
is given more than the default, or in effect no limit, with a large limit of its own.

APPEND, COPY and MOVE beyond a limit fail with NO [OVERQUOTA] (midb's OverQuota, mapped in
gximap.session.errors). An APPEND is refused before the client uploads a synchronising literal
that would take STORAGE or MESSAGE past its limit (the session's continuation check). A MOVE
within the account changes no usage and is never refused.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from gximap.imap import commands as cmds
from gximap.imap.codes import Code
from gximap.session import capabilities
from gximap.session.base import AUTHENTICATED, CommandFailed, Done, command
from gximap.session.commands.mailbox import existing_folder, kib, store_name, wire_name
from midb import quotas

ROOT = ""  # the one quota root of an account
RESOURCES = ("STORAGE", "MESSAGE", quotas.MAILBOX, quotas.ANNOTATION_STORAGE)
# Resources counted in units of 1024 octets.
_IN_KIB = frozenset({"STORAGE", quotas.ANNOTATION_STORAGE})
# midb stores limits as signed 64-bit octet / message counts.
_MAX_LIMIT = {name: ((1 << 63) - 1) // 1024 if name in _IN_KIB else (1 << 63) - 1 for name in RESOURCES}
CRLF = b"\r\n"


def quota_resources(session: Any) -> list[tuple[str, int, int]]:
    """(resource, usage, limit) of the session's account, limited resources only, in the units
    of the protocol."""
    store = session.store
    account = store.get_account(session.user)
    if account is None:
        return []
    settings = session.settings
    limits = (account.quota_bytes, account.quota_messages,
              quotas.effective_limit(account.quota_mailboxes, settings.default_mailbox_quota),
              quotas.effective_limit(account.quota_annotation_bytes, settings.default_annotation_quota))
    if not any(limits):
        return []
    used = store.quota_usage(session.user)
    usages = (used.bytes, used.messages, used.mailboxes, used.annotation_bytes)
    return [(name, kib(usage), kib(limit)) if name in _IN_KIB else (name, usage, limit)
            for name, usage, limit in zip(RESOURCES, usages, limits, strict=True) if limit]


def quota_response(resources: list[tuple[str, int, int]]) -> bytes:
    items = b" ".join(b"%s %d %d" % (name.encode("ascii"), usage, limit) for name, usage, limit in resources)
    return b'* QUOTA "" (' + items + b")" + CRLF


def _require_root(root: str) -> None:
    if root != ROOT:
        raise CommandFailed(Code.NO_QUOTA_ROOT_UNKNOWN)


@command(cmds.GetQuota, states=AUTHENTICATED)
def getquota(session: Any, cmd: cmds.GetQuota) -> Generator[bytes, Any, Done]:
    _require_root(cmd.root)
    resources = quota_resources(session)
    if not resources:
        raise CommandFailed(Code.NO_QUOTA_ROOT_UNKNOWN)
    yield quota_response(resources)
    return Done(Code.OK_GETQUOTA)


@command(cmds.GetQuotaRoot, states=AUTHENTICATED)
def getquotaroot(session: Any, cmd: cmds.GetQuotaRoot) -> Generator[bytes, Any, Done]:
    folder = existing_folder(session, store_name(cmd.mailbox))
    resources = quota_resources(session)
    roots = b' ""' if resources else b""
    yield b"* QUOTAROOT " + wire_name(session, folder.name) + roots + CRLF
    if resources:
        yield quota_response(resources)
    return Done(Code.OK_GETQUOTAROOT)


@command(cmds.SetQuota, states=AUTHENTICATED)
def setquota(session: Any, cmd: cmds.SetQuota) -> Generator[bytes, Any, Done]:
    if not capabilities.may_set_quota(session):
        raise CommandFailed(Code.NO_SETQUOTA_DENIED)
    _require_root(cmd.root)
    limits = dict.fromkeys(RESOURCES, 0)  # what the command leaves out loses its (own) limit
    for resource, limit in cmd.limits:
        if resource not in RESOURCES:
            raise CommandFailed(Code.NO_QUOTA_RESOURCE, resource)
        # midb has no "nothing allowed" limit (0 means unlimited); 1 is the smallest one.
        if not 1 <= limit <= _MAX_LIMIT[resource]:
            raise CommandFailed(Code.NO_QUOTA_LIMIT, resource)
        limits[resource] = limit
    session.store.update_account(session.user, quota_bytes=limits["STORAGE"] * 1024,
                                 quota_messages=limits["MESSAGE"], quota_mailboxes=limits[quotas.MAILBOX],
                                 quota_annotation_bytes=limits[quotas.ANNOTATION_STORAGE] * 1024)
    session.ctx.log.info("session %s: %s set the quota of %s to %s", session.id, session.actor or session.user,
                         session.user, ", ".join(f"{name} {limit or 'none'}" for name, limit in limits.items()))
    resources = quota_resources(session)
    if resources:
        yield quota_response(resources)
    return Done(Code.OK_SETQUOTA)
