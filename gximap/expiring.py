"""Expiry of an account's Trash and Junk in the background, when it logs in over IMAP or receives
mail over LMTP (imap_autoexpunge_trash, imap_autoexpunge_junk; the work is midb.expiry's).

Dovecot runs its autoexpunge at the end of IMAP, POP3 and LMTP sessions alike: an account that
only ever receives mail (read over another protocol, or not at all) still has its Junk expired.
Here it runs on a thread of its own (gximap.session.pieces.EXPIRY_WRITERS), at most once an hour
per account and process (midb.expiry.ExpiryThrottle): a login is answered, and a delivery
acknowledged, without waiting for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from gximap.session import pieces
from midb import expiry
from midb.blobs import PoolClosed

__all__ = ["expire_in_background"]


def expire_in_background(store: Any, throttle: expiry.ExpiryThrottle, account: str,
                         periods: Iterable[tuple[str, float]], log: logging.Logger) -> None:
    """Have ``account``'s folders with a period expired (``periods``: the server's, (special
    use, seconds) as the settings hold them; the account's own take their place), unless the
    throttle says it was done lately or the server is stopping."""
    if not throttle.due(account):
        return   # the usual case at a login or delivery: nothing more is done for it
    server_periods = dict(periods)
    if not any(seconds > 0 for seconds in server_periods.values()):   # only exemptions (a name's 0), or none
        # The server expires nothing: only an account with periods of its own has work, and
        # whether it has is read here, once an hour at most, rather than queued for the thread.
        try:
            own = store.get_account(account)
        except Exception as exc:  # noqa: BLE001 - a store trouble: the next turn looks again
            throttle.forget(account)
            log.warning("autoexpunge: %s: %s", account, exc)
            return
        if own is None or not any(seconds > 0 for _use, seconds in own.autoexpunge):
            return
    try:
        pieces.EXPIRY_WRITERS.get().submit(_expire, store, throttle, account, server_periods, log)
    except (PoolClosed, RuntimeError):  # the server is stopping: the next login's or delivery's turn
        throttle.forget(account)


def _expire(store: Any, throttle: expiry.ExpiryThrottle, account: str, periods: dict[str, float],
            log: logging.Logger) -> None:
    """expire_in_background's work: logged, never raised (nobody waits for it)."""
    try:
        for expired in expiry.expire_account(store, account, periods, stop=throttle.stopping.is_set):
            log.info("autoexpunge: %s: %d messages removed from %s", account, len(expired.uids), expired.folder)
    except Exception as exc:  # noqa: BLE001 - a store trouble: the next turn tries again
        throttle.forget(account)
        log.warning("autoexpunge: %s: %s", account, exc)
