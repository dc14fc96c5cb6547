"""Folder expiry (midb.expiry): imap_autoexpunge_trash/junk at login, and `midb expire`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conversation import Conversation, InlineExecutor
from store_helpers import folder_id
from test_midb_cli import Midb, fails, ok

from midb import savedates
from midb.errors import InvalidArgument
from midb.expiry import ExpiryThrottle, account_periods, expire_account, folder_matcher, parse_folder_periods
from midb.store import Store

DAY = 86400
MESSAGE = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n"


def _saved_days_ago(monkeypatch: pytest.MonkeyPatch, store: Store, mailbox: str, days: float, count: int = 1,
                    account: str = "alice", flags: tuple[str, ...] = ()) -> list[int]:
    """Messages saved into ``mailbox`` ``days`` ago (received long before)."""
    with monkeypatch.context() as patched:
        patched.setattr(savedates, "now", lambda: int(time.time() - days * DAY))
        folder = folder_id(store, mailbox, account)
        return [store.append(account, folder, MESSAGE, flags=flags, internaldate=1_000_000_000)[1]
                for _ in range(count)]


# ---- midb.expiry -------------------------------------------------------------------------------


def test_expire_account_empties_trash_and_junk_of_what_is_older_than_their_periods(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "store", fsync=False) as store:
        store.create_account("alice")
        old_trash = _saved_days_ago(monkeypatch, store, "Trash", 40, 3, flags=("\\Flagged",))
        young_trash = _saved_days_ago(monkeypatch, store, "Trash", 10)
        old_junk = _saved_days_ago(monkeypatch, store, "Junk", 8)
        kept = _saved_days_ago(monkeypatch, store, "INBOX", 400)  # no period: kept
        periods = {"\\Trash": 30 * DAY, "\\Junk": 7 * DAY}
        planned = expire_account(store, "alice", periods, dry_run=True)
        assert {item.folder: item.uids for item in planned} == {"Trash": old_trash, "Junk": old_junk}
        assert store.uids("alice", folder_id(store, "Trash")) == old_trash + young_trash  # nothing written
        done = expire_account(store, "alice", periods)
        assert {item.folder: item.uids for item in done} == {"Trash": old_trash, "Junk": old_junk}
        assert store.uids("alice", folder_id(store, "Trash")) == young_trash
        assert store.uids("alice", folder_id(store, "Junk")) == []
        assert store.uids("alice", folder_id(store, "INBOX")) == kept
        assert expire_account(store, "alice", periods) == []
        assert store.verify() == []


def test_an_accounts_own_periods_take_the_place_of_the_servers(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "store", fsync=False) as store:
        for name in ("alice", "bob"):
            store.create_account(name)
            _saved_days_ago(monkeypatch, store, "Trash", 40, account=name)
            _saved_days_ago(monkeypatch, store, "Junk", 3, account=name)
        store.update_account("alice", autoexpunge={"\\Trash": 0, "\\Junk": 2 * DAY})
        server = {"\\Trash": 30 * DAY}
        assert account_periods(store, "alice", server) == {"\\Junk": 2 * DAY}
        assert account_periods(store, "bob", server) == server
        assert [item.folder for item in expire_account(store, "alice", server)] == ["Junk"]
        assert [item.folder for item in expire_account(store, "bob", server)] == ["Trash"]
        assert [item.folder for item in expire_account(store, "alice", {})] == []
        store.update_account("alice", autoexpunge={"\\Trash": DAY})   # replaces what it had
        assert store.get_account("alice").autoexpunge == (("\\Trash", DAY),)  # type: ignore[union-attr]
        assert [item.folder for item in expire_account(store, "alice", {})] == ["Trash"]
        for wrong in ({"\\Sent": DAY}, {"\\Trash": -1}, {"\\Trash": 1.5}, (("\\Trash", DAY),)):
            with pytest.raises(InvalidArgument):
                store.update_account("alice", autoexpunge=wrong)


def test_folder_periods_read_as_dovecots_per_mailbox_autoexpunge() -> None:
    assert parse_folder_periods(" Spam=30d, Lists/*=90d ,Old Stuff = 2week,Keep=0,") == (
        ("Spam", 30 * DAY), ("Lists/*", 90 * DAY), ("Old Stuff", 14 * DAY), ("Keep", 0))
    assert parse_folder_periods("") == ()
    for wrong in ("Spam", "=30d", "Spam=soon", "Spam=30d=1", "\\Junk=1d", "Spam=0.5s"):
        with pytest.raises(ValueError, match="Spam|Junk|NAME=SPAN|30d"):
            parse_folder_periods(wrong)
    lists = folder_matcher("Lists/*")
    assert lists("Lists/a") and lists("Lists/a/b") and not lists("Lists") and not lists("Listsx/a")
    top = folder_matcher("Lists/%")
    assert top("Lists/a") and not top("Lists/a/b")
    assert folder_matcher("inbox/Old")("INBOX/Old") and not folder_matcher("spam")("Spam")
    assert folder_matcher("a.b(c)")("a.b(c)") and not folder_matcher("a.b")("axb")


def test_a_name_given_twice_keeps_its_first_period_and_patterns_never_backtrack() -> None:
    """The daemon made a dict of the pairs (the last won), the midb tool took the first
    (review63): one rule now, in the parser. A pattern of many wildcards answers at once (a
    regular expression took minutes, holding the interpreter lock)."""
    assert parse_folder_periods("Spam=30d, Lists/*=90d, Spam=0") == (("Spam", 30 * DAY), ("Lists/*", 90 * DAY))
    assert not folder_matcher("*a" * 12 + "b")("a" * 40)
    assert folder_matcher("*a" * 12)("a" * 40)


def test_a_folder_matched_by_name_takes_that_period_before_its_special_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "store", fsync=False) as store:
        store.create_account("alice")
        for name in ("Spam", "Lists/a", "Lists/b/deep"):
            store.create_folder("alice", name)
        spam = _saved_days_ago(monkeypatch, store, "Spam", 40)
        _saved_days_ago(monkeypatch, store, "Spam", 10)
        lists = [_saved_days_ago(monkeypatch, store, name, 100) for name in ("Lists/a", "Lists/b/deep")]
        _saved_days_ago(monkeypatch, store, "Junk", 400)   # exempt by name, whatever its \Junk period
        trash = _saved_days_ago(monkeypatch, store, "Trash", 40)
        periods = {"Spam": 30 * DAY, "Junk": 0, "Lists/*": 90 * DAY, "Lists/b/%": DAY, "\\Junk": DAY,
                   "\\Trash": 30 * DAY}
        done = expire_account(store, "alice", periods)
        assert {item.folder: item.uids for item in done} == {
            "Spam": spam, "Lists/a": lists[0], "Lists/b/deep": lists[1], "Trash": trash}
        assert len(store.uids("alice", folder_id(store, "Junk"))) == 1
        # Exemptions alone are no work; an account's own special-use periods leave names alone.
        assert expire_account(store, "alice", {"Junk": 0}) == []
        store.update_account("alice", autoexpunge={"\\Junk": DAY})
        assert account_periods(store, "alice", {"Junk": 0}) == {"Junk": 0, "\\Junk": DAY}
        assert expire_account(store, "alice", {"Junk": 0}) == []


def test_expire_account_goes_in_batches_and_stops_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import midb.store as store_module

    monkeypatch.setattr(store_module, "EXPIRE_BATCH", 2)
    with Store(tmp_path / "store", fsync=False) as store:
        store.create_account("alice")
        uids = _saved_days_ago(monkeypatch, store, "Trash", 40, 5)
        monkeypatch.setattr(store_module, "EXPIRE_BATCH", 2)
        asked: list[int] = []

        def stop() -> bool:
            asked.append(1)
            return len(asked) > 2  # two batches, then a shutdown

        (done,) = expire_account(store, "alice", {"\\Trash": DAY}, stop=stop)
        assert done.uids == uids[:4]
        (rest,) = expire_account(store, "alice", {"\\Trash": DAY})
        assert rest.uids == uids[4:]


def test_the_throttle_runs_an_account_once_an_interval_and_stays_bounded() -> None:
    throttle = ExpiryThrottle(interval=3600, limit=3)
    assert throttle.due("Alice", now=0)
    assert not throttle.due("alice", now=10)
    assert throttle.due("alice", now=3601)
    throttle.forget("ALICE")
    assert throttle.due("alice", now=3602)
    for number, name in enumerate(("b", "c", "d")):
        assert throttle.due(name, now=3700 + number)
    assert throttle.due("alice", now=3800)  # forgotten first (the oldest run) to stay within 3


# ---- at login ----------------------------------------------------------------------------------


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path, autoexpunge=(("\\Trash", 30 * DAY), ("\\Junk", 7 * DAY))) as conversation:
        yield conversation


def test_logging_in_expires_the_account_once_an_hour(conv: Conversation, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    old = _saved_days_ago(monkeypatch, conv.store, "Trash", 31, 2)
    young = _saved_days_ago(monkeypatch, conv.store, "Trash", 29)
    with caplog.at_level(logging.INFO, logger="gximap.imap"):
        conv.login()
    assert conv.store.uids("alice", conv.folder("Trash").id) == young
    assert "autoexpunge: alice: 2 messages removed from Trash" in caplog.text
    assert old[0] not in conv.store.uids("alice", conv.folder("Trash").id)
    # Another login within the hour: not again (the throttle), though more has expired since.
    _saved_days_ago(monkeypatch, conv.store, "Trash", 40)
    other = conv.second_session()
    other.login()
    assert len(conv.store.uids("alice", conv.folder("Trash").id)) == 2


def test_a_login_expires_folders_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Conversation(tmp_path, autoexpunge=(("Spam", 30 * DAY), ("Trash", 0), ("\\Trash", DAY))) as conv:
        conv.store.create_folder("alice", "Spam")
        _saved_days_ago(monkeypatch, conv.store, "Spam", 31, 2)
        kept = _saved_days_ago(monkeypatch, conv.store, "Trash", 31)
        conv.login()
        assert conv.store.uids("alice", conv.folder("Spam").id) == []
        assert conv.store.uids("alice", conv.folder("Trash").id) == kept


def test_a_session_with_trash_selected_is_told_of_the_expunges(conv: Conversation,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _saved_days_ago(monkeypatch, conv.store, "Trash", 31)
    _saved_days_ago(monkeypatch, conv.store, "Trash", 1)
    watcher = conv.second_session()
    conv.ctx.expiry.due("alice")  # the watcher's own login must not expire yet
    watcher.login()
    watcher.select("Trash")
    conv.ctx.expiry.forget("alice")
    conv.login()
    assert watcher.command("NOOP")[:-1] == [b"* 1 EXPUNGE"]


def test_a_login_while_the_server_stops_is_answered_and_expires_later(
        conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    """The expiry's thread is stopped (the daemon's stop): the login still succeeds, and the
    account is due again at its next login (review58)."""
    from gximap.session import pieces
    from midb.blobs import PoolClosed

    class Stopped:
        def get(self) -> None:
            raise PoolClosed("the autoexpunge threads are stopped")

    class Inline:
        def get(self) -> InlineExecutor:
            return InlineExecutor()

    uids = _saved_days_ago(monkeypatch, conv.store, "Trash", 31)
    monkeypatch.setattr(pieces, "BULK_WRITERS", Inline())
    monkeypatch.setattr(pieces, "EXPIRY_WRITERS", Stopped())
    conv.login()
    assert conv.store.uids("alice", conv.folder("Trash").id) == uids
    assert conv.ctx.expiry.due("alice")  # forgotten: due again


def test_without_periods_a_login_expires_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Conversation(tmp_path) as plain:
        uids = _saved_days_ago(monkeypatch, plain.store, "Trash", 4000)
        plain.login()
        assert plain.store.uids("alice", plain.folder("Trash").id) == uids


def test_a_login_expires_by_the_accounts_own_periods_where_the_server_has_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Conversation(tmp_path) as plain:
        _saved_days_ago(monkeypatch, plain.store, "Trash", 20)
        young = _saved_days_ago(monkeypatch, plain.store, "Trash", 5)
        plain.store.update_account("alice", autoexpunge={"\\Trash": 14 * DAY})
        plain.login()
        assert plain.store.uids("alice", plain.folder("Trash").id) == young


# ---- midb expire -------------------------------------------------------------------------------


@pytest.fixture()
def midb(tmp_path: Path) -> Midb:
    return Midb(tmp_path)


def _alice_and_bob(midb: Midb, monkeypatch: pytest.MonkeyPatch, *fills: tuple[str, str, float, int]) -> None:
    """The accounts alice and bob, with (account, mailbox, days ago, count) messages saved."""
    with midb.open() as store:
        store.create_account("alice")
        store.create_account("bob")
        for account, mailbox, days, count in fills:
            _saved_days_ago(monkeypatch, store, mailbox, days, count, account=account)


def test_midb_expire_takes_the_configured_periods_or_its_options(midb: Midb, monkeypatch: pytest.MonkeyPatch) -> None:
    _alice_and_bob(midb, monkeypatch, ("alice", "Trash", 40, 2), ("bob", "Junk", 10, 1), ("bob", "Trash", 5, 1))
    fails(midb("expire"), "no period to expire by")
    assert ok(midb("expire", "--trash", "30d", "--dry-run", "--read-only")) == (
        "alice: 2 messages would be expunged from Trash\n2 messages would be expunged in all\n")
    midb.config.write_text(midb.config.read_text() + "imap_autoexpunge_trash = 30d\nimap_autoexpunge_junk = 7d\n")
    assert ok(midb("expire")) == ("alice: 2 messages expunged from Trash\nbob: 1 messages expunged from Junk\n"
                                  "3 messages expunged in all\n")
    assert ok(midb("expire", "bob", "--trash", "1d")) == "bob: 1 messages expunged from Trash\n"
    assert ok(midb("expire")) == "0 messages expunged in all\n"
    fails(midb("expire", "--trash", "soon"), "--trash: 'soon' is not a duration")
    result = midb("expire", "nosuch", "alice", "--trash", "1s")  # one account's trouble stops no other
    assert result.returncode == 1 and "midb: error: nosuch: " in result.stderr
    assert result.stdout == "0 messages expunged in all\n"
    fails(midb("expire", "--read-only"), "'expire' changes the store: not with --read-only")
    # Folders by name: --folder first, then imap_autoexpunge_folders, before the special uses.
    with midb.open() as store:
        store.create_folder("bob", "Spam")
        _saved_days_ago(monkeypatch, store, "Spam", 3, 2, account="bob")
        _saved_days_ago(monkeypatch, store, "Junk", 3, 1, account="bob")
    assert ok(midb("expire", "bob", "--folder", "Spam=1d, Junk=0", "--junk", "1d", "--dry-run")) == (
        "bob: 2 messages would be expunged from Spam\n")
    midb.config.write_text(midb.config.read_text() + "imap_autoexpunge_folders = Spam=1d, Junk=2d\n")
    assert ok(midb("expire", "bob", "--folder", "Spam=5d")) == "bob: 1 messages expunged from Junk\n"
    assert ok(midb("expire", "bob")) == "bob: 2 messages expunged from Spam\n"
    fails(midb("expire", "--folder", "Spam"), "--folder: 'Spam' is not NAME=SPAN")
    midb.config.write_text(midb.config.read_text() + "imap_autoexpunge_junk = 7 fortnights\n")
    fails(midb("expire"), "imap.cfg:8: imap_autoexpunge_junk: '7 fortnights': unknown time unit 'fortnights'")
    assert "messages" in ok(midb("stats"))  # a bad period stops 'expire' alone


def test_midb_user_expire_sets_an_accounts_own_periods(midb: Midb, monkeypatch: pytest.MonkeyPatch) -> None:
    _alice_and_bob(midb, monkeypatch, ("alice", "Trash", 20, 2), ("bob", "Trash", 20, 1))
    midb.config.write_text(midb.config.read_text() + "imap_autoexpunge_junk = 7d\n")
    assert ok(midb("user", "expire", "alice")) == (
        "expiry of alice: Trash never (imap_autoexpunge_trash), Junk 7d (imap_autoexpunge_junk)\n")
    fails(midb("expire", "--junk", "0"), "no period to expire by")
    assert ok(midb("user", "expire", "alice", "--trash", "14d", "--junk", "0")) == (
        "expiry of alice: Trash 14d (its own), Junk never (its own)\n")
    assert "expiry:    Trash 14d (its own), Junk never (its own)\n" in ok(midb("user", "show", "alice"))
    assert ok(midb("expire", "--junk", "0")) == ("alice: 2 messages expunged from Trash\n"
                                                 "2 messages expunged in all\n")   # bob has no period
    assert ok(midb("user", "expire", "alice", "--junk", "default")) == (
        "expiry of alice: Trash 14d (its own), Junk 7d (imap_autoexpunge_junk)\n")
    fails(midb("user", "expire", "alice", "--trash", "soon"), "--trash: 'soon' is not a duration")
    fails(midb("user", "expire", "alice", "--trash", "500ms"), "--trash: '500ms' is less than a second")
    fails(midb("expire", "nobody"), "nobody: no such account")   # only accounts have periods here
    fails(midb("user", "expire", "nobody"), "no such account: nobody")
    fails(midb("user", "expire", "alice", "--trash", "1d", "--read-only"), "not with --read-only")
    assert ok(midb("user", "expire", "alice", "--read-only")).startswith("expiry of alice: Trash 14d")


# ---- after an LMTP delivery ---------------------------------------------------------------------


def test_a_delivery_expires_the_accounts_it_stored_into(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot's autoexpunge also runs at the end of an LMTP delivery: an account that only ever
    receives mail still has its Junk expired. Once an hour per account, shared with the logins
    (one throttle per process); an account whose copy failed is not touched."""
    from gximap.auth.maps import NameMap
    from gximap.lmtp.delivery import DeliveryAgent, DeliverySettings
    from gximap.lmtp.protocol import Envelope, Recipient
    from gximap.session import pieces

    class Inline:
        def get(self) -> InlineExecutor:
            return InlineExecutor()

    with Store(tmp_path / "store", fsync=False) as store:
        for name in ("alice", "bob"):
            store.create_account(name)
        old_junk = {name: _saved_days_ago(monkeypatch, store, "Junk", 8, account=name) for name in ("alice", "bob")}
        store.update_account("bob", quota_messages=1)  # bob's copy fails: over quota
        monkeypatch.setattr(pieces, "EXPIRY_WRITERS", Inline())
        throttle = ExpiryThrottle()
        agent = DeliveryAgent(store, NameMap.from_directives("email_localpart", "auto"),
                              DeliverySettings(autoexpunge=(("\\Junk", 7 * DAY),)), throttle)
        envelope = Envelope(sender="carol@example.org")
        recipient = Recipient("team@test.example", None, ("alice", "bob"))
        envelope.recipients.append(recipient)
        reply = agent.deliver(agent.prepare(envelope, MESSAGE), recipient, delivery_id="T.1")
        assert reply.code == 250
        assert store.uids("alice", folder_id(store, "Junk", "alice")) == []
        assert store.uids("bob", folder_id(store, "Junk", "bob")) == old_junk["bob"]
        assert not throttle.due("alice") and throttle.due("bob")
