"""Logged-in IMAP sessions per storage account and client address (imap_max_conn_per_user_ip).

Dovecot's mail_max_userip_connections (default 10 there too): without such a limit one account
(a misconfigured client opening a connection per folder, a script in a loop) can take every
context, and everyone else is then told ``* BYE`` too busy. A session counts from its login to
its end or its UNAUTHENTICATE, against the account it works on (the mailbox's for an
impersonation), from the address imap_max_conn_per_ip counts (the PROXY address when there is
one; an IPv6 address by its /64, gximap.net.proxy.address_key).

The counts are an AddressLedger's (gximap.net.siblings), keyed by address and account: with
several serving processes each tells the others what it holds, as for imap_max_conn_per_ip, so
the limit holds for the whole service (approximately: two processes admitting the same account's
logins at the same instant may both see room).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gximap.net.proxy import address_key
from gximap.net.siblings import AddressLedger

if TYPE_CHECKING:
    from gximap.net.siblings import SiblingChannel


class UserSessions:
    """The sessions each (account, address) holds in this process and, with a sibling channel,
    in the others."""

    def __init__(self, channel: SiblingChannel | None = None) -> None:
        # Its own ledger ("conn-imap-user" messages): the pool's counts connections per address,
        # and its totals are each process's load (ConnectionHandoff).
        self._ledger = AddressLedger(channel, name="imap-user")

    @staticmethod
    def key(account: str, address: str) -> str:
        # An address key holds no space (an IP address or network, or UNIX_PEER_HOST).
        return f"{address_key(address)} {account}"

    def hold(self, account: str, address: str, limit: int) -> str | None:
        """Count a session of ``account`` from ``address``; its key for release, or None (and
        nothing counted) when ``limit`` (> 0) sessions are held already."""
        key = self.key(account, address)
        return key if self._ledger.acquire(key, limit) else None

    def release(self, key: str) -> None:
        self._ledger.release(key)

    def count(self, account: str, address: str) -> int:
        """Sessions of ``account`` from ``address`` in every process (as far as this one knows)."""
        return self._ledger.count(self.key(account, address))
