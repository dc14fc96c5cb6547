"""RFC 5465 NOTIFY: two sessions of one user; what one changes reaches the other unasked, as the
other's NOTIFY SET says. Parser forms (valid and broken), each filter and event, NOTIFY NONE,
SET STATUS, BADEVENT, SELECTED-DELAYED and NOTIFICATIONOVERFLOW."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation
from test_parser import parse

from gximap import config
from gximap.daemon import settings_from_config
from gximap.imap import commands as c
from gximap.imap.parser import ParseError
from gximap.session import condstore, notify, pieces
from gximap.session import session as session_module
from gximap.session.selected import uid_ranges_without
from midb import events as midb_events
from midb import store as store_module
from midb.errors import OverQuota, StoreBusy
from midb.store import Store

ALL_OTHER = "(MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange MailboxMetadataChange)"


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[tuple[Conversation, Conversation]]:
    with Conversation(tmp_path) as first:
        first.add_message(data=b"Subject: one\r\n\r\nbody\r\n")
        first.store.create_folder("alice", "Lists/a")
        second = first.second_session()
        first.login()
        second.login()
        yield first, second


BUSY_WARNING = b"* NO [UNAVAILABLE] Changes to the mailbox will be reported later: too many concurrent readers"


@contextlib.contextmanager
def _busy(store: object, method: str) -> Iterator[None]:
    """Within the block the store's ``method`` fails as a store with too many readers does."""

    def busy(*args: object, **kwargs: object) -> object:
        raise StoreBusy("too many concurrent readers")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, method, busy)
        yield


def _elsewhere(work: Callable[[], object]) -> None:
    """Run ``work`` on a thread of its own, as another session's worker or LMTP would commit:
    inside the session's step its change would count as the client's own (notify.AUTHOR), which
    NOTIFY does not report (RFC 5465 section 5)."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


# -- parser ------------------------------------------------------------------------------------


def _hold_others(patch: pytest.MonkeyPatch, state: notify.NotifyState, *,
                 pass_notices: bool = False) -> list[tuple[int, int]]:
    """Patch ``state.heard`` (undone with ``patch``) to hold other sessions' events, their
    datagrams still on their way, in the list returned, to be heard late; the client's own
    events, and with ``pass_notices`` notices (midb.events.is_notice), are heard as they come."""
    heard = state.heard
    held: list[tuple[int, int]] = []

    def hold_others(folder_id: int, modseq: int, own: bool = False) -> bool:
        if own or (pass_notices and midb_events.is_notice(modseq)):
            return heard(folder_id, modseq, own)
        held.append((folder_id, modseq))
        return False

    patch.setattr(state, "heard", hold_others)
    return held


def _hear_late(a: Conversation, held: list[tuple[int, int]]) -> None:
    """Hear the events ``_hold_others`` held, late, in their order."""
    state = a.session.notify
    assert state is not None
    for folder_id, modseq in held:
        a.session._notify_heard(state, "alice", folder_id, modseq)


def test_parse_notify_none_and_set() -> None:
    assert parse(b"a NOTIFY NONE\r\n") == c.Notify(b"a", None)
    cmd = parse(b"b notify set status (selected (MessageNew (uid body.peek[header.fields (from)]) messageexpunge))"
                b" (subtree (Lists \"a b\") (MessageNew MessageExpunge FlagChange)) (mailboxes INBOX NONE)\r\n")
    assert isinstance(cmd, c.Notify) and cmd.status
    assert cmd.groups is not None
    selected, subtree, mailboxes = cmd.groups
    assert selected.kind == "selected" and selected.events == ("MessageNew", "MessageExpunge")
    assert [att.name for att in selected.fetch_atts] == ["UID", "BODY"]
    assert subtree.kind == "subtree" and [m.name for m in subtree.mailboxes] == ["Lists", "a b"]
    assert subtree.events == ("MessageNew", "MessageExpunge", "FlagChange")
    assert mailboxes.events == () and [m.name for m in mailboxes.mailboxes] == ["INBOX"]


def test_parse_takes_message_new_attributes_with_or_without_a_space() -> None:
    """Section 8's message-event has a space before MessageNew's list, as the examples of
    section 3.1 do; without one (as the ABNF writes UPDATE's list) it is taken too."""
    spaced, tight = (parse(b"a NOTIFY SET (selected (MessageNew%s(UID FLAGS) MessageExpunge))\r\n" % space)
                     for space in (b" ", b""))
    assert isinstance(spaced, c.Notify) and isinstance(tight, c.Notify)
    assert spaced == tight and tight.groups is not None
    assert tight.groups[0].events == ("MessageNew", "MessageExpunge")
    assert tight.groups[0].fetch_atts == (c.FetchAtt("UID"), c.FetchAtt("FLAGS"))


def test_parse_keeps_unknown_events_for_badevent() -> None:
    cmd = parse(b"a NOTIFY SET (personal (MailboxName XFoo))\r\n")
    assert isinstance(cmd, c.Notify) and cmd.groups is not None
    assert cmd.groups[0].events == ("MailboxName", "XFoo")


def test_message_new_items_are_the_forms_that_leave_seen_alone() -> None:
    cmd = parse(b"a NOTIFY SET (selected (MessageNew (UID BODY[] BODY.PEEK[] RFC822 RFC822.TEXT BINARY[1]"
                b" BODY.PEEK[HEADER] RFC822.HEADER) MessageExpunge))\r\n")
    assert isinstance(cmd, c.Notify) and cmd.groups is not None
    assert [att.sets_seen for att in cmd.groups[0].fetch_atts].count(True) == 4
    items = c.peek_forms(cmd.groups[0].fetch_atts)
    assert [att.response_label() for att in items] == [b"UID", b"BODY[]", b"RFC822", b"RFC822.TEXT", b"BINARY[1]",
                                                        b"BODY[HEADER]", b"RFC822.HEADER"]
    assert not any(att.sets_seen for att in items)
    assert notify.NotifyState(cmd.groups).message_new_items == items


def test_message_new_leaves_out_ranges_in_any_order() -> None:
    """MessageNew's FETCH leaves out the client's own arrivals and those fetched on entry: two
    lists of ranges, unsorted together, that may overlap or reach beyond the new UIDs."""
    assert uid_ranges_without(5, 20, [(12, 13), (4, 6), (12, 12), (15, 30)]) == [(7, 11), (14, 14)]
    assert uid_ranges_without(5, 20, []) == [(5, 20)]
    assert uid_ranges_without(5, 20, [(1, 4), (21, 22)]) == [(5, 20)]
    assert uid_ranges_without(5, 20, [(5, 20)]) == []


@pytest.mark.parametrize("line", [
    b"a NOTIFY\r\n",
    b"a NOTIFY SET\r\n",
    b"a NOTIFY CLEAR\r\n",
    b"a NOTIFY NONE (personal NONE)\r\n",
    b"a NOTIFY SET (bogus NONE)\r\n",
    b"a NOTIFY SET (personal)\r\n",
    b"a NOTIFY SET (personal ())\r\n",
    b"a NOTIFY SET (subtree (MessageNew MessageExpunge))\r\n",
    b"a NOTIFY SET (personal (MessageNew))\r\n",               # section 5: MessageNew needs MessageExpunge
    b"a NOTIFY SET (personal (MessageExpunge))\r\n",
    b"a NOTIFY SET (personal (FlagChange))\r\n",                 # FlagChange needs both
    b"a NOTIFY SET (selected (MailboxName))\r\n",                # section 6: message events only
    b"a NOTIFY SET (selected NONE) (selected-delayed NONE)\r\n",  # one selected filter
    b"a NOTIFY SET (personal (MessageNew (UID) MessageExpunge))\r\n",  # fetch-att: selected only
    b"a NOTIFY SET (selected (MessageNew (BOGUS) MessageExpunge))\r\n",
    b"a NOTIFY SET (selected (MessageNew  (UID) MessageExpunge))\r\n",   # one space at most
    b"a NOTIFY SET (selected (MessageNew() MessageExpunge))\r\n",
    b"a NOTIFY SET (personal (MessageNew(UID) MessageExpunge))\r\n",     # fetch-att: selected only
    b"a NOTIFY SET (selected (MessageExpunge(UID) MessageNew))\r\n",     # MessageNew's alone
])
def test_parse_refuses_broken_forms(line: bytes) -> None:
    with pytest.raises(ParseError):
        parse(line)


# -- conversations -----------------------------------------------------------------------------


def test_capability_is_advertised(pair: tuple[Conversation, Conversation]) -> None:
    assert "NOTIFY" in pair[0].capabilities()


def test_set_status_reports_every_mailbox_but_the_selected(pair: tuple[Conversation, Conversation]) -> None:
    a, _b = pair
    a.select()
    lines = a.command("NOTIFY SET STATUS (selected (MessageNew MessageExpunge)) (subtree Lists (MessageNew MessageExpunge))")
    assert [line.split(b" (")[0] for line in lines[:-1]] == [b"* STATUS Lists", b"* STATUS Lists/a"]
    assert lines[0] == b"* STATUS Lists (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d UNSEEN 0)" % a.folder("Lists").uidvalidity


def test_set_status_reports_the_snapshot(pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY SET STATUS says the counters of the snapshot later changes are compared with (one
    read of the account's folders), not a read of each mailbox again."""
    a, _b = pair
    monkeypatch.setattr(a.store, "folder_counters", lambda *args: pytest.fail("a mailbox read again"))
    lines = a.command("NOTIFY SET STATUS (subtree (INBOX Lists) (MessageNew MessageExpunge))")
    assert lines[:-1] == [
        b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % a.folder("INBOX").uidvalidity,
        b"* STATUS Lists (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d UNSEEN 0)" % a.folder("Lists").uidvalidity,
        b"* STATUS Lists/a (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d UNSEEN 0)" % a.folder("Lists/a").uidvalidity]


def test_message_new_in_another_mailbox_is_a_status(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    b.command("SELECT Lists/a")
    b.command("APPEND Lists/a {12+}\r\nSubject: x\r\n")
    uidvalidity = a.folder("Lists/a").uidvalidity
    assert a.wake() == [b"* STATUS Lists/a (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % uidvalidity]
    # A flag change was not asked for: nothing.
    b.command("STORE 1 +FLAGS (\\Seen)")
    assert a.wake(require=False) == []
    b.command("STORE 1 +FLAGS (\\Deleted)")
    b.command("EXPUNGE")
    assert a.wake() == [b"* STATUS Lists/a (MESSAGES 0 UIDNEXT 2 UIDVALIDITY %d UNSEEN 0)" % uidvalidity]


def test_flag_change_with_condstore_has_highestmodseq(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("ENABLE CONDSTORE")
    a.command("NOTIFY SET (inboxes (MessageNew MessageExpunge FlagChange))")
    b.select()
    b.command("STORE 1 +FLAGS (\\Seen)")
    inbox = a.folder("INBOX")
    assert a.wake() == [b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 0 HIGHESTMODSEQ %d)"
                        % (inbox.uidvalidity, inbox.highestmodseq)]


def test_flag_change_that_moves_only_the_modseq_needs_condstore(pair: tuple[Conversation, Conversation]) -> None:
    """A flag change UNSEEN does not show is told by HIGHESTMODSEQ, which is sent only once
    CONDSTORE is enabled: before, its STATUS would repeat what the client knows (Dovecot sends
    none either). NOTIFY SET STATUS with FlagChange has HIGHESTMODSEQ anyway (section 3.1)."""
    a, b = pair
    inbox = a.folder("INBOX")
    assert a.command("NOTIFY SET STATUS (inboxes (MessageNew MessageExpunge FlagChange))")[:-1] == [
        b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1 HIGHESTMODSEQ %d)"
        % (inbox.uidvalidity, inbox.highestmodseq)]
    b.select()
    b.command("STORE 1 +FLAGS (\\Flagged)")
    assert a.wake(require=False) == []
    a.command("ENABLE CONDSTORE")
    b.command("STORE 1 -FLAGS (\\Flagged)")
    assert a.wake() == [b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1 HIGHESTMODSEQ %d)"
                        % (inbox.uidvalidity, a.folder("INBOX").highestmodseq)]


def test_inboxes_and_mailboxes_filters_name_only_their_mailboxes(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (inboxes (MessageNew MessageExpunge)) (mailboxes Lists (MessageNew MessageExpunge))")
    b.command("APPEND Lists/a {12+}\r\nSubject: x\r\n")
    assert a.wake(require=False) == []
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Lists"]
    b.command("APPEND INBOX {12+}\r\nSubject: z\r\n")
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS INBOX"]


def test_inboxes_is_personal_when_a_delivery_filter_may_file_mail_anywhere(tmp_path: Path) -> None:
    """RFC 5465 section 6.3: INBOXES are the mailboxes mail is delivered to, and a server that
    cannot tell "MUST treat inboxes as personal". With imap_filter_command a filter may file a
    delivery into any folder."""
    path = tmp_path / "imap.cfg"
    path.write_text("imap_filter_command = /usr/local/bin/file-it {account_name}\n")
    assert settings_from_config(config.load_config([str(path)], required=True)).delivery_filters
    path.write_text("")
    assert not settings_from_config(config.load_config([str(path)], required=True)).delivery_filters
    with Conversation(tmp_path / "server", delivery_filters=True) as a:
        a.store.create_folder("alice", "Lists")
        b = a.second_session()
        a.login()
        b.login()
        a.command("NOTIFY SET (inboxes (MessageNew MessageExpunge))")
        b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
        assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Lists"]
        b.command("APPEND INBOX {12+}\r\nSubject: z\r\n")
        assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS INBOX"]


def test_inboxes_is_personal_when_spam_is_quarantined(tmp_path: Path) -> None:
    """lmtp_spam_header has LMTP deliver spam into the \\Junk folder: that is a mailbox mail is
    delivered to too (RFC 5465 section 6.3), so INBOXES is PERSONAL then, as with a filter."""
    from gximap.auth.maps import NameMap
    from gximap.lmtp.delivery import DeliveryAgent, DeliverySettings, parse_spam_header
    from gximap.lmtp.protocol import Envelope, Recipient

    path = tmp_path / "imap.cfg"
    path.write_text("lmtp_spam_header = X-Spam: Yes\n")
    settings = settings_from_config(config.load_config([str(path)], required=True))
    with Conversation(tmp_path / "server", delivery_filters=settings.delivery_filters) as a:
        a.login()
        a.command("NOTIFY SET (inboxes (MessageNew MessageExpunge))")
        agent = DeliveryAgent(a.store, NameMap.from_directives("email_localpart", "auto"),
                              DeliverySettings(spam_header=parse_spam_header("X-Spam: Yes")))
        envelope = Envelope(sender="carol@example.org")
        recipient = Recipient("alice@test.example", None, ("alice",))
        envelope.recipients.append(recipient)
        prepared = agent.prepare(envelope, b"X-Spam: yes\r\nSubject: buy\r\n\r\nnow\r\n")
        assert agent.deliver(prepared, recipient, delivery_id="T.1").code == 250
        assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Junk"]


def test_subscribed_filter_follows_subscriptions(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (subscribed (MessageNew MessageExpunge SubscriptionChange))")
    b.command("APPEND Lists {12+}\r\nSubject: x\r\n")
    assert a.wake(require=False) == []
    b.command("SUBSCRIBE Lists")
    assert a.wake() == [b'* LIST (\\Subscribed \\HasChildren) "/" Lists']
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Lists"]
    b.command("UNSUBSCRIBE Lists")
    # Subscribed when it happened: the filter as the client knew it covers the unsubscribing.
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Lists']
    b.command("APPEND Lists {12+}\r\nSubject: z\r\n")
    assert a.wake(require=False) == []   # no longer subscribed: not in the filter any more


def test_mailbox_name_create_rename_delete(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    b.command("CREATE foo/bar")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" foo', b'* LIST (\\HasNoChildren) "/" foo/bar']
    b.command("RENAME foo baz")   # section 5.4: "No additional MailboxName events are sent for children"
    assert a.wake() == [b'* LIST (\\HasChildren) "/" baz ("OLDNAME" (foo))']
    b.command("DELETE baz/bar")   # its parent is affected too
    assert a.wake() == [b'* LIST (\\NonExistent) "/" baz/bar', b'* LIST (\\HasNoChildren) "/" baz']


def test_none_group_excludes_mailboxes_from_later_groups(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (subtree Lists NONE) (personal (MailboxName))")
    b.command("CREATE Lists/b")
    assert a.wake(require=False) == []
    b.command("CREATE Other")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Other']


def test_metadata_changes(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxMetadataChange ServerMetadataChange))")
    b.command('SETMETADATA Lists (/private/comment "hi")')
    assert a.wake() == [b"* METADATA Lists /private/comment"]
    b.command('SETMETADATA "" (/private/comment "server")')
    assert a.wake() == [b'* METADATA "" /private/comment']


def test_selected_pushes_between_commands_with_fetch_atts(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge))")
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    assert a.wake() == [b"* 2 EXISTS", b"* 2 RECENT",
                        b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {12}\r\nSubject: x\r\n)"]
    b.select()
    b.command("STORE 2 +FLAGS (\\Deleted)")
    b.command("EXPUNGE")
    assert a.wake() == [b"* 2 EXPUNGE"]


def test_selected_delayed_holds_expunges_for_a_command_that_allows_them(
        pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected-delayed (MessageNew MessageExpunge))")
    b.select()
    b.command("STORE 1 +FLAGS (\\Deleted)")
    b.command("EXPUNGE")
    assert a.wake() == []
    a.script("""
        C: f1 FETCH 1 UID
        S: f1 NO [EXPUNGEISSUED] Some of the requested messages no longer exist
        C: n1 NOOP
        S: * 1 EXPUNGE
        S: n1 OK NOOP completed
    """)


def test_notify_none_silences_idle(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.select()
    a.command("NOTIFY NONE")
    a.script("""
        C: i1 IDLE
        S: + idling
    """)
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    assert a.wake(require=False) == []
    a.script("""
        C: DONE
        S: * 2 EXISTS
        S: * 2 RECENT
        S: i1 OK IDLE terminated
    """)


def test_idle_reports_other_mailboxes(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    a.script("""
        C: i1 IDLE
        S: + idling
    """)
    b.command("APPEND Lists {12+}\r\nSubject: x\r\n")
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Lists"]
    a.script("""
        C: DONE
        S: i1 OK IDLE terminated
    """)


def test_unsupported_event_is_badevent_and_keeps_the_settings(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    lines = a.send(b"n1 NOTIFY SET (personal (MessageNew MessageExpunge AnnotationChange))\r\n")
    assert lines == [b"n1 NO [" + notify.BADEVENT_CODE + b"] Event not supported"]
    b.command("CREATE fresh")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" fresh']


def test_overflow_turns_notify_off(pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    monkeypatch.setattr(notify, "MAX_PENDING", 3)
    a.command(f"NOTIFY SET (personal {ALL_OTHER})")
    for number in range(5):
        b.command(f"CREATE burst{number}")
    assert a.wake() == [b"* OK [NOTIFICATIONOVERFLOW] Too many notifications: NOTIFY is off, check your mailboxes"]
    b.command("CREATE after")
    assert a.wake(require=False) == []
    assert a.session.notify is not None and not a.session.notify.active


def test_notify_is_valid_only_after_login(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        assert conv.send(b"n1 NOTIFY NONE\r\n")[0].startswith(b"n1 BAD")


def test_a_change_heard_while_new_messages_are_fetched_is_pushed_after(
        pair: tuple[Conversation, Conversation]) -> None:
    """The pool's wakeup() during the FETCH of MessageNew's attributes (which interrupts the IDLE)
    cannot push then; the change is pushed once that FETCH is done, not left for the next one."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew (UID) MessageExpunge)) (personal (MessageNew MessageExpunge))")
    a.script("""
        C: i1 IDLE
        S: + idling
    """)
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    a.session.wakeup()   # the pool's: the new message's FETCH is made, not run yet
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    uidvalidity = a.folder("Lists").uidvalidity
    assert a.wake() == [b"* 2 EXISTS", b"* 2 RECENT", b"* 2 FETCH (UID 2)",
                        b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % uidvalidity]
    assert a.wake(require=False) == []


def test_a_change_heard_behind_unread_output_is_pushed_once_it_is_read(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond OUTPUT_BACKLOG queued items wakeup() makes no notification; the change is pushed
    once the client has taken what was queued, not left waiting for another change."""
    a, b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    a.script("""
        C: i1 IDLE
        S: + idling
    """)
    monkeypatch.setattr(notify, "OUTPUT_BACKLOG", 0)
    a.session.timed_out()   # a keepalive the client has not read yet
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    uidvalidity = a.folder("Lists").uidvalidity
    assert a.wake() == [b"* OK Still here",
                        b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % uidvalidity]
    a.script("""
        C: DONE
        S: i1 OK IDLE terminated
    """)


def test_a_report_that_met_a_store_error_is_tried_again_a_second_later(
        pair: tuple[Conversation, Conversation]) -> None:
    """No mailbox selected: a report that met a busy store warns, and IDLE's idle timer comes
    back a second later to try again (as it does for the selected mailbox's updates), with the
    keepalive line, rather than wait for another change or the next keepalive. Once that
    succeeds, the timer is the keepalive's again: no retry follows (nothing selected clears
    what a failed catch-up left owed, which must not have the timer fire without end)."""
    a, b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    a.script("""
        C: i1 IDLE
        S: + idling
    """)
    with _busy(a.store, "folder_by_id"):
        b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
        assert a.wake() == [BUSY_WARNING]
    assert a.session.idle_timeout() <= session_module.IDLE_RETRY_FIRST + 0.5
    uidvalidity = a.folder("Lists").uidvalidity
    assert a.timeout() == [b"* OK Still here",
                           b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % uidvalidity]
    assert a.session.idle_timeout() == pytest.approx(a.session.settings.idle_notify_interval, abs=1)


def test_between_commands_a_report_that_met_a_store_error_is_tried_again_without_a_keepalive(
        pair: tuple[Conversation, Conversation]) -> None:
    """Not in IDLE: RFC 5465 section 3 lets the server send at any time, so a report that met a
    busy store is retried by the idle timer a second later (as in IDLE), with no keepalive line,
    rather than wait for another change or the client's next command. Once it succeeds the timer
    is the autologout's again."""
    a, b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    autologout = a.session.settings.autologout
    assert a.session.idle_timeout() == autologout
    with _busy(a.store, "folder_by_id"):
        b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
        assert a.wake() == [BUSY_WARNING]
    assert 0 < a.session.idle_timeout() <= session_module.IDLE_RETRY_FIRST + 0.5
    uidvalidity = a.folder("Lists").uidvalidity
    assert a.timeout() == [b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % uidvalidity]
    assert a.session.idle_timeout() == pytest.approx(autologout, abs=1)
    assert a.command("NOOP") == [b"x3 OK NOOP completed"]


def test_between_commands_selected_updates_that_met_a_store_error_are_retried(
        pair: tuple[Conversation, Conversation]) -> None:
    """The SELECTED filter's push between commands that met a busy store: the retry sends the
    updates (no keepalive line), though no further change of the mailbox was heard."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge FlagChange))")
    with _busy(a.store, "highestmodseq"):
        b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
        assert a.wake() == [BUSY_WARNING]
    assert 0 < a.session.idle_timeout() <= session_module.IDLE_RETRY_FIRST + 0.5
    assert a.timeout() == [b"* 2 EXISTS", b"* 2 RECENT"]
    assert a.session.idle_timeout() == pytest.approx(a.session.settings.autologout, abs=1)


def test_without_notify_a_failed_catch_up_between_commands_waits_for_the_next_command(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """No NOTIFY (or NOTIFY NONE): nothing may be sent between commands, so a catch-up that met a
    store error sets no timer: the idle timer stays the autologout's, and its end logs out."""
    a, b = pair
    a.select()
    a.command("NOTIFY NONE")
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    with _busy(a.store, "highestmodseq"):
        assert a.command("NOOP")[0] == BUSY_WARNING
    assert a.session.idle_timeout() == a.session.settings.autologout
    assert a.timeout()[0].startswith(b"* BYE")


def test_notify_set_that_meets_a_store_error_leaves_the_settings_as_they_were(
        pair: tuple[Conversation, Conversation]) -> None:
    """The snapshot NOTIFY SET compares later changes with could not be read: the command fails
    and what was set before stays, rather than a NOTIFY that reports every mailbox as new."""
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    with _busy(a.store, "folder_entries"):
        lines = a.send(b"n1 NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))\r\n")
    assert len(lines) == 1 and lines[0].startswith(b"n1 NO [UNAVAILABLE]"), lines
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    assert a.wake(require=False) == []   # no STATUS: MessageNew was not set
    b.command("CREATE fresh")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" fresh']


def test_selected_push_with_uidonly_and_a_live_search(pair: tuple[Conversation, Conversation]) -> None:
    """NOTIFY's push between commands under UIDONLY, with a live UID SEARCH (CONTEXT=SEARCH):
    EXISTS, the search's ADDTO after it, then MessageNew's FETCH as UIDFETCH; an expunge as the
    search's REMOVEFROM before VANISHED, never a message number."""
    a, b = pair
    a.command("ENABLE UIDONLY")
    a.select()
    a.command("NOTIFY SET (selected (MessageNew (FLAGS) MessageExpunge))")
    a.script("""
        C: s1 UID SEARCH RETURN (UPDATE) UNSEEN
        S: * ESEARCH (TAG "s1") UID
        S: s1 OK SEARCH completed
    """)
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    assert a.wake() == [b"* 2 EXISTS", b"* 2 RECENT", b'* ESEARCH (TAG "s1") UID ADDTO (0 2)',
                        b"* 2 UIDFETCH (FLAGS (\\Recent))"]
    b.select()
    b.command("STORE 2 +FLAGS (\\Deleted)")
    b.command("EXPUNGE")
    assert a.wake() == [b'* ESEARCH (TAG "s1") UID REMOVEFROM (0 2)', b"* VANISHED 2"]


def test_new_messages_announced_by_a_refusal_before_a_literal_get_their_fetch(
        pair: tuple[Conversation, Conversation]) -> None:
    """An APPEND refused before its literal (TRYCREATE) sends the selected mailbox's updates as
    any tagged NO does; a message they announce gets MessageNew's FETCH as after a command
    (the pool had not run wakeup() for it yet: the next push finds nothing new to fetch)."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew (UID) MessageExpunge))")
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    lines = a.send(b"p1 APPEND nosuch {12}\r\n")
    assert lines[:2] == [b"* 2 EXISTS", b"* 2 RECENT"]
    assert lines[2].startswith(b"p1 NO [TRYCREATE]")
    assert lines[3:] == [b"* 2 FETCH (UID 2)"]
    assert a.wake() == []


def test_subscription_of_a_name_without_a_mailbox_says_nonexistent(pair: tuple[Conversation, Conversation]) -> None:
    """RFC 5465 section 5.5 with RFC 5258 section 3: a subscribed name with no mailbox is
    ``\\Subscribed \\NonExistent``, as LIST (SUBSCRIBED) has it; its unsubscription ``\\NonExistent``.
    (SUBSCRIBE itself refuses a name that does not exist: the mailbox went before the report, or
    another tool subscribed the name.)"""
    a, b = pair
    a.command("NOTIFY SET (personal (SubscriptionChange))")
    b.command("SUBSCRIBE Lists/a")
    b.command("DELETE Lists/a")   # its subscription stays (RFC 3501 section 6.3.6)
    assert a.wake() == [b'* LIST (\\Subscribed \\NonExistent) "/" Lists/a']
    b.command("UNSUBSCRIBE Lists/a")
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Lists/a']
    a.store.set_subscribed("alice", "ghost", True)
    assert a.wake() == [b'* LIST (\\Subscribed \\NonExistent) "/" ghost']
    b.command("SUBSCRIBE Lists")
    assert a.wake() == [b'* LIST (\\Subscribed \\HasNoChildren) "/" Lists']
    b.command("UNSUBSCRIBE Lists")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists']


def test_own_subscription_change_of_a_deleted_mailbox_is_not_reported(pair: tuple[Conversation, Conversation]) -> None:
    """RFC 5465 section 5: the session that unsubscribes is not told of it; another that
    subscribes the name again is told, in the words LIST (SUBSCRIBED) has."""
    a, b = pair
    a.command("SUBSCRIBE Lists/a")
    a.command("NOTIFY SET (personal (SubscriptionChange))")
    b.command("DELETE Lists/a")
    assert a.wake(require=False) == []
    assert a.command("UNSUBSCRIBE Lists/a")[:-1] == []
    a.store.set_subscribed("alice", "Lists/a", True)
    assert a.wake() == [b'* LIST (\\Subscribed \\NonExistent) "/" Lists/a']


@pytest.mark.parametrize("item", ["BODY[]", "BODY[TEXT]", "BINARY[1]", "RFC822", "RFC822.TEXT"])
def test_message_new_fetch_attributes_never_set_seen(pair: tuple[Conversation, Conversation], item: str) -> None:
    """RFC 5465 section 5.2 asks the client not to use fetch attributes that set \\Seen and leaves
    the server's part open: gximap reports them as their .PEEK forms, since a notification the
    client did not ask for at that moment must not change the mailbox (and other clients' view)."""
    a, b = pair
    a.select()
    a.command(f"NOTIFY SET (selected (MessageNew (UID {item}) MessageExpunge))")
    b.command("APPEND INBOX {18+}\r\nSubject: x\r\n\r\nhi\r\n")
    lines = a.wake()
    assert lines[:2] == [b"* 2 EXISTS", b"* 2 RECENT"]
    # The item as asked (no .PEEK in a response label), and no FLAGS: \Seen was not set.
    assert len(lines) == 3 and lines[2].startswith(b"* 2 FETCH (UID 2 %b " % item.encode()), lines
    assert b"FLAGS" not in lines[2], lines
    inbox = a.folder("INBOX")
    assert "\\Seen" not in a.store.get_messages("alice", inbox.id, [2])[0].flags
    assert inbox.unseen == 2


def test_message_new_body_is_reported_as_asked(pair: tuple[Conversation, Conversation]) -> None:
    """BODY[] and BODY.PEEK[] both asked for: one BODY[] item (as FETCH merges them), \\Seen unset."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew (UID BODY[] BODY.PEEK[]) MessageExpunge))")
    b.command("APPEND INBOX {18+}\r\nSubject: x\r\n\r\nhi\r\n")
    assert a.wake() == [b"* 2 EXISTS", b"* 2 RECENT",
                        b"* 2 FETCH (UID 2 BODY[] {18}\r\nSubject: x\r\n\r\nhi\r\n)"]
    a.script("""
        C: f1 UID FETCH 2 FLAGS
        S: * 2 FETCH (UID 2 FLAGS (\\Recent))
        S: f1 OK FETCH completed
    """)


def test_parents_made_on_the_way_are_listed_whatever_became_of_the_child(
        pair: tuple[Conversation, Conversation]) -> None:
    """CREATE a/b/c makes a and a/b as well: each is a new mailbox (RFC 5465 section 5.4) even when
    the child was renamed or deleted before the report (the parents' own events tell of them)."""
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    b.command("CREATE p/q/r")
    b.command("RENAME p/q/r s")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" p', b'* LIST (\\HasNoChildren) "/" p/q',
                        b'* LIST (\\HasNoChildren) "/" s']
    b.command("CREATE x/y/z")
    b.command("DELETE x/y/z")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" x', b'* LIST (\\HasNoChildren) "/" x/y']
    b.command("RENAME s m/n/s")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" m', b'* LIST (\\HasChildren) "/" m/n',
                        b'* LIST (\\HasNoChildren) "/" m/n/s ("OLDNAME" (s))']


class _ReadCounter:
    """Counts the store's reads of folder records and counters (by method and folder)."""

    METHODS = ("folder_by_id", "folder_counters", "get_folder")

    def __init__(self, store: object, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: list[tuple[str, object]] = []
        for method in self.METHODS:
            monkeypatch.setattr(store, method, self._counting(method, getattr(store, method)))

    def _counting(self, method: str, real: Callable[..., object]) -> Callable[..., object]:
        def read(*args: object, **kwargs: object) -> object:
            self.reads.append((method, args[1]))
            return real(*args, **kwargs)

        return read


def test_selected_mailbox_updates_read_no_folder_counters(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """The selected mailbox's new messages, flag changes and expunges are its view's updates: no
    read of its folder record and counters (those are for the STATUS of another mailbox)."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge))")
    b.select()
    inbox = a.folder("INBOX").id
    counter = _ReadCounter(a.store, monkeypatch)
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    b.command("STORE 1 +FLAGS (\\Flagged)")
    counter.reads.clear()   # b's own
    assert a.wake() == [b"* 2 EXISTS", b"* 1 RECENT", b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))"]
    assert counter.reads == []
    b.command("STORE 2 +FLAGS (\\Deleted)")
    b.command("EXPUNGE")
    counter.reads.clear()
    assert a.wake() == [b"* 2 EXPUNGE"]
    assert counter.reads == []
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")   # another mailbox: its counters, for its STATUS
    counter.reads.clear()
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Lists"]
    assert [method for method, _folder in counter.reads] == ["folder_by_id"]
    assert inbox not in [folder for _method, folder in counter.reads]


def test_selected_filter_without_flag_change_reads_counters_only_when_its_mailbox_changed(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without FlagChange a flag change alone is not pushed: the selected mailbox's counters tell
    whether messages came or went. They are read when that mailbox changed, not at every change of
    the account."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge))")
    b.select()
    counter = _ReadCounter(a.store, monkeypatch)
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    counter.reads.clear()
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Lists"]
    assert [method for method, _folder in counter.reads] == ["folder_by_id"]
    b.command("STORE 1 +FLAGS (\\Flagged)")
    counter.reads.clear()
    assert a.wake() == []   # held for the next command
    assert [method for method, _name in counter.reads] == ["folder_counters"]
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    counter.reads.clear()
    assert a.wake() == [b"* 2 EXISTS", b"* 1 RECENT", b"* 1 FETCH (FLAGS (\\Flagged \\Recent))"]
    assert [method for method, _name in counter.reads] == ["folder_counters"]


def test_selected_updates_that_met_a_store_error_are_pushed_at_the_keepalive(
        pair: tuple[Conversation, Conversation]) -> None:
    """A push of the selected mailbox's updates that met a busy store warns; IDLE's keepalive
    tries again, though no further change of that mailbox was heard."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge FlagChange))")
    a.script("""
        C: i1 IDLE
        S: + idling
    """)
    with _busy(a.store, "highestmodseq"):
        b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
        assert a.wake() == [BUSY_WARNING]
    assert a.timeout() == [b"* OK Still here", b"* 2 EXISTS", b"* 2 RECENT"]
    a.script("""
        C: DONE
        S: i1 OK IDLE terminated
    """)


def test_a_rename_of_the_selected_mailbox_is_listed(pair: tuple[Conversation, Conversation]) -> None:
    """With MailboxName the selected mailbox is read at its changes after all: its name may be
    what changed (RFC 5465 section 5.4)."""
    a, b = pair
    a.select("Lists/a")
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MailboxName))")
    b.command("RENAME Lists/a Lists/b")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/b ("OLDNAME" (Lists/a))']


@pytest.mark.parametrize("method", ["subscriptions_since", "get_metadata"])
def test_notices_that_met_a_store_error_are_reported_at_the_keepalive(
        pair: tuple[Conversation, Conversation], method: str) -> None:
    """A subscription or annotation change whose report met a busy store is not lost: the
    warning says it comes later, and IDLE's keepalive reports it (with the mailbox change heard
    in the same report)."""
    a, b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge SubscriptionChange MailboxMetadataChange))")
    a.script("""
        C: i1 IDLE
        S: + idling
    """)
    with _busy(a.store, method):
        b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
        b.command("SUBSCRIBE Lists/a")
        b.command('SETMETADATA Lists (/private/comment "hi")')
        assert a.wake() == [BUSY_WARNING]
    uidvalidity = a.folder("Lists").uidvalidity
    assert a.timeout() == [b"* OK Still here",
                           b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % uidvalidity,
                           b'* LIST (\\Subscribed \\HasNoChildren) "/" Lists/a', b"* METADATA Lists /private/comment"]


def test_a_change_heard_after_a_commands_catch_up_is_pushed_after_its_answer(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """A message that comes after the catch-up before a command's tagged answer (during a live
    search's re-check, or a moment later) is not in that answer's updates: it is pushed after
    the answer, not left for the next command (nor missed by an IDLE that follows)."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge))")
    announce = condstore.announce_highestmodseq
    arrivals = [b"Subject: x\r\n\r\nhi\r\n"]

    def announce_then_deliver(*args: Any, **kwargs: Any) -> Any:
        lines = announce(*args, **kwargs)
        if arrivals:
            data = arrivals.pop()
            _elsewhere(lambda: a.add_message(data=data))   # as LMTP would, after the catch-up
        return lines

    monkeypatch.setattr(condstore, "announce_highestmodseq", announce_then_deliver)
    assert a.send(b"n1 NOOP\r\n") == [b"n1 OK NOOP completed", b"* 2 EXISTS", b"* 2 RECENT"]
    assert a.wake() == []   # (the waker fired for it: nothing more to say)
    a.script("""
        C: i1 IDLE
        S: + idling
        C: DONE
        S: i1 OK IDLE terminated
    """)


def test_a_change_heard_during_a_command_answered_bad_is_pushed_after_the_answer(
        pair: tuple[Conversation, Conversation]) -> None:
    """A BAD answer carries no updates: a change of the selected mailbox heard during the command
    (its waker fired, the pool had not run wakeup() yet) is pushed after it, not forgotten."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge))")
    a.add_message()
    lines = a.send(b"b1 LOGIN alice secret\r\n")
    assert len(lines) == 3 and lines[0].startswith(b"b1 BAD "), lines
    assert lines[1:] == [b"* 2 EXISTS", b"* 2 RECENT"]
    assert a.wake() == []


def test_a_flag_change_held_for_the_next_command_is_not_looked_at_again(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without FlagChange, a flag change of the selected mailbox waits for the next command once
    its counters said no message came or went: a later change of another mailbox does not read
    them again."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge))")
    b.select()
    counter = _ReadCounter(a.store, monkeypatch)
    b.command("STORE 1 +FLAGS (\\Flagged)")
    counter.reads.clear()
    assert a.wake() == []
    assert [method for method, _name in counter.reads] == ["folder_counters"]
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    counter.reads.clear()
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Lists"]
    assert [method for method, _folder in counter.reads] == ["folder_by_id"]
    assert a.command("NOOP")[:-1] == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))"]


def test_a_parent_reported_before_its_new_childs_event_has_children(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """CREATE p/q announces p and p/q in one commit, one event each: the pool may serve the
    session between the two (its waker fired at the first). p is listed with \\HasChildren all
    the same: p/q exists by then, heard of or not (RFC 5258 section 4)."""
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    state = a.session.notify
    assert state is not None
    heard = state.heard
    reports: list[list[bytes]] = []

    def heard_then_served(folder_id: int, modseq: int, own: bool = False) -> bool:
        noted = heard(folder_id, modseq, own)
        if not reports:
            reports.append(a.wake(require=False))   # (the waker is called once this returns)
        return noted

    monkeypatch.setattr(state, "heard", heard_then_served)
    b.command("CREATE p/q")
    reports.append(a.wake())
    assert reports == [[b'* LIST (\\HasChildren) "/" p'], [b'* LIST (\\HasNoChildren) "/" p/q']]


# -- RFC 5465 section 5: what the client did itself is not reported to it ----------------------


def test_own_mailbox_name_changes_are_not_reported(pair: tuple[Conversation, Conversation]) -> None:
    """Section 5: the client's own CREATE, RENAME and DELETE get no LIST; another session's do,
    also of the mailboxes this one made (compared with them as they were after its commands)."""
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    assert a.command("CREATE mine/sub")[:-1] == []
    assert a.command("RENAME mine ours")[:-1] == []
    assert a.command("DELETE ours/sub")[:-1] == []
    assert a.wake(require=False) == []
    b.command("CREATE ours/theirs")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" ours/theirs', b'* LIST (\\HasChildren) "/" ours']
    b.command("RENAME ours/theirs ours/renamed")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" ours/renamed ("OLDNAME" (ours/theirs))']


def test_own_subscription_changes_are_not_reported(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (personal (SubscriptionChange))")
    assert a.command("SUBSCRIBE Lists")[:-1] == []
    assert a.wake(require=False) == []
    b.command("SUBSCRIBE Lists/a")
    assert a.wake() == [b'* LIST (\\Subscribed \\HasNoChildren) "/" Lists/a']
    assert a.command("UNSUBSCRIBE Lists/a")[:-1] == []
    assert a.wake(require=False) == []
    b.command("UNSUBSCRIBE Lists")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Lists']


def test_own_annotations_are_not_reported(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxMetadataChange ServerMetadataChange))")
    assert a.command('SETMETADATA Lists (/private/comment "mine")')[:-1] == []
    assert a.command('SETMETADATA "" (/private/comment "mine")')[:-1] == []
    assert a.wake(require=False) == []
    b.command('SETMETADATA Lists (/private/other "theirs")')
    assert a.wake() == [b"* METADATA Lists /private/other"]
    assert a.command('SETMETADATA Lists (/private/other NIL)')[:-1] == []
    b.command('SETMETADATA "" (/private/comment "theirs")')
    assert a.wake() == [b'* METADATA "" /private/comment']


def test_own_messages_in_another_mailbox_are_not_reported(pair: tuple[Conversation, Conversation]) -> None:
    """The client's APPEND, COPY and MOVE into a mailbox it watches give no STATUS; another
    session's next change there does, with the counters as they are then."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge FlagChange))")
    assert a.command("APPEND Lists {12+}\r\nSubject: x\r\n")[:-1] == []
    assert a.command("COPY 1 Lists")[:-1] == []
    lines = a.command("MOVE 1 Lists")
    assert [line.split(b" [")[0] for line in lines[:-1]] == [b"* OK", b"* 1 EXPUNGE"]
    assert a.wake(require=False) == []
    b.select("Lists")
    b.command("STORE 1 +FLAGS (\\Seen)")
    uidvalidity = a.folder("Lists").uidvalidity
    assert a.wake() == [b"* STATUS Lists (MESSAGES 3 UIDNEXT 4 UIDVALIDITY %d UNSEEN 2)" % uidvalidity]


def test_own_and_another_sessions_change_in_one_window_are_reported(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery committed while the client's own APPEND runs is reported with it (the STATUS
    says both)."""
    a, _b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    append = a.store.append

    def append_then_deliver(*args: Any, **kwargs: Any) -> Any:
        result = append(*args, **kwargs)
        _elsewhere(lambda: append("alice", a.folder("Lists").id, b"Subject: y\r\n\r\n"))
        return result

    monkeypatch.setattr(a.store, "append", append_then_deliver)
    uidvalidity = a.folder("Lists").uidvalidity
    assert a.command("APPEND Lists {12+}\r\nSubject: x\r\n")[:-1] == [
        b"* STATUS Lists (MESSAGES 2 UIDNEXT 3 UIDVALIDITY %d UNSEEN 2)" % uidvalidity]


def test_own_and_another_sessions_names_in_one_window_are_told_apart(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another session's CREATE and SUBSCRIBE committed while the client's own run are reported;
    the client's own are not."""
    a, _b = pair
    a.command("NOTIFY SET (personal (MailboxName SubscriptionChange))")
    create, subscribe = a.store.create_folder, a.store.set_subscribed

    def create_then_theirs(*args: Any, **kwargs: Any) -> Any:
        made = create(*args, **kwargs)
        _elsewhere(lambda: create("alice", "theirs"))
        return made

    def subscribe_then_theirs(*args: Any, **kwargs: Any) -> None:
        subscribe(*args, **kwargs)
        _elsewhere(lambda: subscribe("alice", "Lists/a", True))

    monkeypatch.setattr(a.store, "create_folder", create_then_theirs)
    monkeypatch.setattr(a.store, "set_subscribed", subscribe_then_theirs)
    assert a.command("CREATE mine")[:-1] == [b'* LIST (\\HasNoChildren) "/" theirs']
    assert a.command("SUBSCRIBE mine")[:-1] == [b'* LIST (\\Subscribed \\HasNoChildren) "/" Lists/a']
    assert a.wake() == []


def test_a_change_heard_after_the_clients_own_is_reported(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another session's delivery committed before the client's own APPEND to the same mailbox,
    whose notification arrives only after the APPEND was answered (a datagram from another
    process, late): the counters the APPEND's end took in already held it, so it is reported
    all the same (a STATUS of the mailbox as it is), not compared away."""
    a, _b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    state = a.session.notify
    assert state is not None
    with monkeypatch.context() as patch:
        held = _hold_others(patch, state)
        _elsewhere(lambda: a.add_message("Lists"))
        assert held
        assert a.command("APPEND Lists {12+}\r\nSubject: x\r\n")[:-1] == []
    _hear_late(a, held)
    uidvalidity = a.folder("Lists").uidvalidity
    assert a.wake() == [b"* STATUS Lists (MESSAGES 2 UIDNEXT 3 UIDVALIDITY %d UNSEEN 2)" % uidvalidity]
    # A later change is compared with that as usual: a flag change alone says nothing here.
    _elsewhere(lambda: a.store.store_flags("alice", a.folder("Lists").id, [1], "add", ["\\Flagged"]))
    assert a.wake() == []


def test_a_rename_after_the_clients_own_change_repeats_no_status(pair: tuple[Conversation, Conversation]) -> None:
    """Another session's RENAME of a mailbox the client has just changed itself: its event has the
    mailbox's HIGHESTMODSEQ, which the client's own APPEND gave it, so it is no message change
    (no other commit has that modseq) and the counters the APPEND's end took in are still the
    client's: the LIST with OLDNAME, no STATUS repeating them."""
    a, b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))")
    assert a.command("APPEND Lists/a {12+}\r\nSubject: x\r\n")[:-1] == []
    b.command("RENAME Lists/a Lists/c")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/c ("OLDNAME" (Lists/a))']
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    assert a.command("APPEND Lists/c {12+}\r\nSubject: y\r\n")[:-1] == []
    b.command("RENAME Lists/c Lists/d")
    assert a.wake() == []
    # The next change of another session is compared with what the client knows, as usual.
    b.command("APPEND Lists/d {12+}\r\nSubject: z\r\n")
    uidvalidity = a.folder("Lists/d").uidvalidity
    assert a.wake() == [b"* STATUS Lists/d (MESSAGES 3 UIDNEXT 4 UIDVALIDITY %d UNSEEN 3)" % uidvalidity]


def test_a_late_change_at_the_modseq_taken_in_is_still_reported(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """The counters the client's own change took in may hold another session's change whose
    notification comes later; when that change, not the client's, gave the HIGHESTMODSEQ taken
    in, an event at that modseq may be it: reported (a STATUS of the mailbox as it is), be it
    the change's own late event or another session's RENAME heard first."""
    a, b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))")
    state = a.session.notify
    assert state is not None
    lists = a.folder("Lists/a")
    append = a.store.append

    def append_then_deliver(*args: Any, **kwargs: Any) -> Any:
        result = append(*args, **kwargs)
        _elsewhere(lambda: append("alice", lists.id, b"Subject: y\r\n\r\n"))   # the last modseq: theirs
        return result

    monkeypatch.setattr(a.store, "append", append_then_deliver)
    with monkeypatch.context() as patch:
        held = _hold_others(patch, state)
        assert a.command("APPEND Lists/a {12+}\r\nSubject: x\r\n")[:-1] == []
    b.command("RENAME Lists/a Lists/c")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/c ("OLDNAME" (Lists/a))',
                        b"* STATUS Lists/c (MESSAGES 2 UIDNEXT 3 UIDVALIDITY %d UNSEEN 2)" % lists.uidvalidity]
    assert held
    _hear_late(a, held)   # (the delivery's own event, late: told already)
    assert a.wake() == []


def test_a_late_change_before_the_clients_own_rename_of_inbox_is_reported(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """RENAME INBOX of an empty INBOX announces INBOX at the HIGHESTMODSEQ it had, which another
    session's expunge may have given: its late event at that modseq is reported all the same."""
    a, b = pair
    a.command("NOTIFY SET (inboxes (MessageNew MessageExpunge))")
    state = a.session.notify
    assert state is not None
    with monkeypatch.context() as patch:
        held = _hold_others(patch, state)
        _elsewhere(lambda: a.store.remove_messages("alice", a.folder("INBOX").id, [1]))   # one commit
        assert len(held) == 1
        assert a.command("RENAME INBOX Old")[:-1] == []
    _hear_late(a, held)
    inbox = a.folder("INBOX")
    assert a.wake() == [b"* STATUS INBOX (MESSAGES 0 UIDNEXT 2 UIDVALIDITY %d UNSEEN 0)" % inbox.uidvalidity]


@pytest.mark.parametrize(("target", "parents"), [
    ("Lists/c", []),
    ("Other/c", [b'* LIST (\\HasNoChildren) "/" Lists', b'* LIST (\\HasChildren) "/" Other'])])
def test_a_late_rename_taken_in_with_the_clients_own_change_is_listed(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch, target: str,
        parents: list[bytes]) -> None:
    """Another session's RENAME committed after the client's own APPEND but before its end read the
    mailbox: the new name is taken in, unreported, and the RENAME's late event (at the APPEND's
    modseq) lists the mailbox as it is, with the name the client knew as its OLDNAME (section
    5.4), and the parents whose \\HasChildren it changed, as any rename of another's."""
    a, _b = pair
    _b.command("CREATE Other")
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))")
    state = a.session.notify
    assert state is not None
    append, rename = a.store.append, a.store.rename_folder

    def append_then_rename(*args: Any, **kwargs: Any) -> Any:
        result = append(*args, **kwargs)
        _elsewhere(lambda: rename("alice", "Lists/a", target))
        return result

    monkeypatch.setattr(a.store, "append", append_then_rename)
    with monkeypatch.context() as patch:
        held = _hold_others(patch, state)
        assert a.command("APPEND Lists/a {12+}\r\nSubject: x\r\n")[:-1] == []
    assert len(held) == 1
    _hear_late(a, held)
    uidvalidity = a.folder(target).uidvalidity
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" %b ("OLDNAME" (Lists/a))' % target.encode(),
                        b"* STATUS %b (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % (target.encode(), uidvalidity),
                        *parents]
    monkeypatch.setattr(a.store, "append", append)
    _b.command(f"APPEND {target} {{12+}}\r\nSubject: y\r\n")   # (the name told is forgotten: a plain STATUS)
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS " + target.encode()]


def test_a_rename_of_anothers_taken_in_with_the_clients_own_rename_says_the_clients_name(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """The client renames Lists/a to Lists/b; another session renames it on to Lists/c before the
    RENAME's end reads it. The client's own rename is not reported; the other's, taken in with it,
    is listed at its late event with OLDNAME Lists/b, the name the client gave it (its children
    moved with it get no LIST)."""
    a, _b = pair
    a.store.create_folder("alice", "Lists/a/kid")
    a.command("NOTIFY SET (personal (MailboxName))")
    state = a.session.notify
    assert state is not None
    rename = a.store.rename_folder

    def rename_then_rename_on(*args: Any, **kwargs: Any) -> Any:
        result = rename(*args, **kwargs)
        _elsewhere(lambda: rename("alice", "Lists/b", "Lists/c"))
        return result

    monkeypatch.setattr(a.store, "rename_folder", rename_then_rename_on)
    with monkeypatch.context() as patch:
        held = _hold_others(patch, state)
        assert a.command("RENAME Lists/a Lists/b")[:-1] == []
    assert len(held) == 2
    _hear_late(a, held)
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Lists/c ("OLDNAME" (Lists/b))']


class _ThreadWriters:
    """Stands in for pieces.BULK_WRITERS: each piece is written by a thread of its own (with
    the context of its own, as a pool's thread has), the future done when submit() returns."""

    def get(self) -> _ThreadWriters:
        return self

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            _elsewhere(lambda: future.set_result(function(*args)))
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting session
            future.set_exception(error)
        return future


def test_own_bulk_copy_written_off_the_worker_is_not_reported(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """A COPY written in pieces by BULK_WRITERS' threads is the client's own all the same."""
    a, _b = pair
    monkeypatch.setattr(pieces, "BULK_WRITERS", _ThreadWriters())
    monkeypatch.setattr(pieces, "FIRST_PIECE", 2)
    for _ in range(5):
        a.add_message()
    a.select()
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    assert a.command("COPY 1:* Lists")[:-1] == []
    assert a.wake(require=False) == []


def test_own_failed_bulk_copy_undone_off_the_worker_is_not_reported(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """A COPY whose second piece fails has the copies of the first removed by BULK_WRITERS too
    (copy_move._hand_over_undo): that removal is the client's own as well. Another session's
    next change there gets a STATUS with the counters as they are."""
    a, b = pair
    monkeypatch.setattr(pieces, "BULK_WRITERS", _ThreadWriters())
    monkeypatch.setattr(pieces, "FIRST_PIECE", 2)
    for _ in range(5):
        a.add_message()
    a.select()
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    copy, calls = a.store.copy, []

    def second_piece_over_quota(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 2:
            raise OverQuota("STORAGE")
        return copy(*args, **kwargs)

    monkeypatch.setattr(a.store, "copy", second_piece_over_quota)
    lines = a.send(b"c1 COPY 1:* Lists\r\n")
    assert len(lines) == 1 and lines[0].startswith(b"c1 NO [OVERQUOTA]"), lines
    lists = a.folder("Lists")
    assert (lists.messages, lists.uidnext) == (0, 3)   # the first piece's two copies, removed
    assert a.wake(require=False) == []
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    assert a.wake() == [b"* STATUS Lists (MESSAGES 1 UIDNEXT 4 UIDVALIDITY %d UNSEEN 1)" % lists.uidvalidity]


def test_own_new_messages_in_the_selected_mailbox_get_no_fetch(pair: tuple[Conversation, Conversation]) -> None:
    """Section 5.2: no MessageNew FETCH for what the client's own APPEND, COPY, MOVE or REPLACE
    put into the selected mailbox (its EXISTS goes all the same); another session's new message
    announced by the same update gets its FETCH."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew (UID) MessageExpunge))")
    lines = a.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    assert lines[:2] == [b"* 2 EXISTS", b"* 2 RECENT"] and len(lines) == 3
    lines = a.command("COPY 1 INBOX")
    assert lines[:2] == [b"* 3 EXISTS", b"* 3 RECENT"] and len(lines) == 3
    lines = a.command("MOVE 1 INBOX")
    assert [line.split(b" [")[0] for line in lines[:-1]] == [b"* OK", b"* 1 EXPUNGE", b"* 3 EXISTS", b"* 3 RECENT"]
    lines = a.send(b"r1 UID REPLACE 4 INBOX {12+}\r\nSubject: r\r\n\r\n")
    assert [line.split(b" [")[0] for line in lines[:-1]] == [b"* OK", b"* 3 EXPUNGE", b"* 3 EXISTS", b"* 3 RECENT"]
    assert lines[-1].startswith(b"r1 OK"), lines
    b.command("APPEND INBOX {12+}\r\nSubject: y\r\n")
    lines = a.send(b"p1 APPEND INBOX {12+}\r\nSubject: z\r\n\r\n")
    assert lines[:2] == [b"* 5 EXISTS", b"* 5 RECENT"] and lines[2].startswith(b"p1 OK"), lines
    assert lines[3:] == [b"* 4 FETCH (UID 6)"]   # b's, after the answer; not a's own (UID 7)
    assert a.wake(require=False) == []


def test_flag_change_of_the_selected_mailbox_says_the_uid(pair: tuple[Conversation, Conversation]) -> None:
    """Section 5.1: the FETCH of a flag change (FlagChange for the selected mailbox) has UID and
    FLAGS; with a live search its FETCH comes before the ESEARCH."""
    a, b = pair
    a.select()
    a.command("NOTIFY SET (selected (MessageNew MessageExpunge FlagChange))")
    a.script("""
        C: s1 SEARCH RETURN (UPDATE) FLAGGED
        S: * ESEARCH (TAG "s1")
        S: s1 OK SEARCH completed
    """)
    b.select()
    b.command("STORE 1 +FLAGS (\\Flagged)")
    assert a.wake() == [b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))", b'* ESEARCH (TAG "s1") ADDTO (0 1)']


def test_notify_set_returns_the_selected_mailboxs_changes(pair: tuple[Conversation, Conversation]) -> None:
    """Section 3.1: a successful NOTIFY SET is an implicit NOOP."""
    a, b = pair
    a.select()
    b.command("APPEND INBOX {12+}\r\nSubject: y\r\n")
    assert a.command("NOTIFY SET (personal (MailboxName))")[:-1] == [b"* 2 EXISTS", b"* 2 RECENT"]


# -- RFC 5465 sections 5.4, 5.5, 6.4: the LIST responses ---------------------------------------


def test_create_and_delete_list_the_direct_parent(pair: tuple[Conversation, Conversation]) -> None:
    """Section 5.4: a created or deleted mailbox's direct parent is affected too (its
    \\HasChildren); once told, it is not listed again while that stays as it was."""
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    b.command("CREATE Lists/b")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/b', b'* LIST (\\HasChildren) "/" Lists']
    b.command("DELETE Lists/b")
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Lists/b']
    b.command("DELETE Lists/a")
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Lists/a', b'* LIST (\\HasNoChildren) "/" Lists']


def test_rename_lists_the_renamed_mailbox_only(pair: tuple[Conversation, Conversation]) -> None:
    """Section 5.4: "When a mailbox is renamed, its children are renamed too. No additional
    MailboxName events are sent for children in this case." A watcher of the child alone hears
    of it, since the parent's LIST was not sent to it."""
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    b.command("RENAME Lists Other")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Other ("OLDNAME" (Lists))']
    b.command("APPEND Other/a {12+}\r\nSubject: y\r\n")
    assert a.wake(require=False) == []
    a.command("NOTIFY SET (mailboxes (Other/a Third/a) (MailboxName))")
    b.command("RENAME Other Third")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Third/a ("OLDNAME" (Other/a))']


def test_rename_lists_a_parent_whose_children_changed(pair: tuple[Conversation, Conversation]) -> None:
    """A RENAME takes a child from one parent and gives it to another. Section 5.4 names the
    parents affected only for CREATE and DELETE, but asks for \\HasChildren "as appropriate",
    and section 5.5 for accurate attributes: the old parent that lost its last child is listed
    with \\HasNoChildren, an existing new parent that got its first with \\HasChildren; a
    parent whose attribute stayed is not listed, nor one the rename made (its own LIST tells)."""
    a, b = pair
    b.command("CREATE Third")
    b.command("CREATE Lists/b")
    a.command("NOTIFY SET (personal (MailboxName))")
    b.command("RENAME Lists/b Lists/c")   # one parent, before and after
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/c ("OLDNAME" (Lists/b))']
    b.command("RENAME Lists/c Third/c")   # Lists keeps Lists/a; Third gets its first child
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Third/c ("OLDNAME" (Lists/c))',
                        b'* LIST (\\HasChildren) "/" Third']
    b.command("RENAME Lists/a Third/a")   # Lists loses its last child; Third had one
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Third/a ("OLDNAME" (Lists/a))',
                        b'* LIST (\\HasNoChildren) "/" Lists']
    b.command("RENAME Third/a New/a")     # New is made on the way: listed as made, once
    assert a.wake() == [b'* LIST (\\HasChildren) "/" New',
                        b'* LIST (\\HasNoChildren) "/" New/a ("OLDNAME" (Third/a))']
    b.command("RENAME Third/c Lists/c")   # both parents change; Lists was told \\HasNoChildren
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/c ("OLDNAME" (Third/c))',
                        b'* LIST (\\HasChildren) "/" Lists', b'* LIST (\\HasNoChildren) "/" Third']
    a.command("NOTIFY SET (mailboxes (Lists Third) (MailboxName))")
    b.command("RENAME Lists/c Third/c")   # the mailbox is not watched; its parents are
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists', b'* LIST (\\HasChildren) "/" Third']
    b.command("RENAME INBOX Lists/Inbox")   # INBOX stays (no LIST); Lists gets its first child
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Lists']


def test_a_child_heard_before_its_parents_rename_does_not_hide_the_new_parents_change(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """RENAME Top/x Other/x announces Top/x and Top/x/y, one event each, which may reach the
    session in two reports, the child's first (its own LIST then). The parent's report still
    lists Other, which got its first child, and Top, which lost its last: the child already
    under its new name is no child Other had before."""
    a, b = pair
    b.command("CREATE Other")
    b.command("CREATE Top/x/y")
    a.command("NOTIFY SET (personal (MailboxName))")
    state = a.session.notify
    assert state is not None
    child = a.folder("Top/x/y").id
    with monkeypatch.context() as patch:
        held = _hold_others(patch, state)
        b.command("RENAME Top/x Other/x")
    assert {folder_id for folder_id, _modseq in held} == {child, a.folder("Other/x").id}
    for folder_id, modseq in sorted(held, key=lambda event: event[0] != child):
        a.session._notify_heard(state, "alice", folder_id, modseq)
        if folder_id == child:
            assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Other/x/y ("OLDNAME" (Top/x/y))']
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Other/x ("OLDNAME" (Top/x))',
                        b'* LIST (\\HasChildren) "/" Other', b'* LIST (\\HasNoChildren) "/" Top']


def test_a_name_freed_by_rename_is_told_before_it_is_taken_again(pair: tuple[Conversation, Conversation]) -> None:
    """Reports of changes heard together: a RENAME's LIST (with OLDNAME) comes before the LIST of
    a mailbox made or renamed into the old name (or beneath it), and a DELETE's before a rename
    into its name, whatever the name order: else a client that applies them in order (RFC 5465
    section 5.4: the children move with a rename) renames the new mailbox away, and its list of
    names is wrong from then on."""
    a, b = pair
    b.command("CREATE Lists/c")
    b.command("CREATE Old")
    a.command("NOTIFY SET (personal (MailboxName))")
    b.command("RENAME Lists/a Lists/z")
    b.command("CREATE Lists/a")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/z ("OLDNAME" (Lists/a))',
                        b'* LIST (\\HasNoChildren) "/" Lists/a', b'* LIST (\\HasChildren) "/" Lists']
    b.command("RENAME Lists/a Lists/b")   # a chain: Lists/c takes the name Lists/a freed
    b.command("RENAME Lists/c Lists/a")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/b ("OLDNAME" (Lists/a))',
                        b'* LIST (\\HasNoChildren) "/" Lists/a ("OLDNAME" (Lists/c))']
    b.command("RENAME Lists Zed")   # the children move with it: Lists/q is a new child of a new Lists
    b.command("CREATE Lists/q")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Zed ("OLDNAME" (Lists))',
                        b'* LIST (\\HasChildren) "/" Lists', b'* LIST (\\HasNoChildren) "/" Lists/q']
    # A deleted mailbox's name taken by a rename: DELETE's LIST first (with the attributes the
    # name has now: section 5.5), then the rename's; else the client would drop Lists/q at last.
    b.command("DELETE Lists/q")
    b.command("RENAME Old Lists/q")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/q', b'* LIST (\\HasNoChildren) "/" Lists/q ("OLDNAME" (Old))']


def test_a_tree_renamed_beneath_a_name_its_own_rename_freed(pair: tuple[Conversation, Conversation]) -> None:
    """Lists (with Lists/a) goes to Zed/x, then Zed to Lists/a, which makes Lists anew above it:
    Lists ends as Lists/a/x, beneath its child's old name. Lists's move is told first (its child
    moves with it, no LIST of its own, section 5.4; nor does it order anything), then the new
    Lists and Zed's move: in name order the client moved the new Lists and Lists/a away with the
    old Lists's rename."""
    a, b = pair
    b.command("CREATE Zed")
    a.command("NOTIFY SET (personal (MailboxName))")
    b.command("RENAME Lists Zed/x")
    b.command("RENAME Zed Lists/a")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Lists/a/x ("OLDNAME" (Lists))', b'* LIST (\\HasChildren) "/" Lists',
                        b'* LIST (\\HasChildren) "/" Lists/a ("OLDNAME" (Zed))']


def test_names_swapped_are_told_as_one_gone_and_made_again(pair: tuple[Conversation, Conversation]) -> None:
    """RENAME Lists Tmp, RENAME Notes Lists, RENAME Tmp Notes heard together: each mailbox took the
    other's name, and no order of two LISTs with OLDNAME tells it (the first renames onto a name
    the client has; the second then moves both away). One is told gone (section 5.4:
    \\NonExistent, its child first), the other's rename into the freed name, then the first made
    again, its child too (it is new to the client). Told in name order, the client ended with
    Notes, Notes/a and Notes/kid, and no Lists."""
    a, b = pair
    b.command("CREATE Notes/kid")
    b.command("SUBSCRIBE Notes")
    a.command("NOTIFY SET (personal (MailboxName SubscriptionChange))")
    b.command("RENAME Lists Tmp")
    b.command("RENAME Notes Lists")
    b.command("RENAME Tmp Notes")
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Notes/kid', b'* LIST (\\NonExistent) "/" Notes',
                        b'* LIST (\\HasChildren) "/" Notes ("OLDNAME" (Lists))',
                        b'* LIST (\\Subscribed \\HasChildren) "/" Lists', b'* LIST (\\HasNoChildren) "/" Lists/kid']


def test_a_child_moved_or_deleted_on_its_own_is_told_before_its_parent_moves(
        pair: tuple[Conversation, Conversation]) -> None:
    """Lists/a renamed to Lists/b, then Lists renamed to Zed (heard together): Lists/a's rename is
    told first, while the client has it there; after Lists's, the client would have moved it to
    Zed/a with its parent and kept it. A child deleted before its parent's rename likewise."""
    a, b = pair
    b.command("CREATE Lists/c")
    a.command("NOTIFY SET (personal (MailboxName))")
    b.command("RENAME Lists/a Lists/b")
    b.command("RENAME Lists Zed")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Zed/b ("OLDNAME" (Lists/a))',
                        b'* LIST (\\HasChildren) "/" Zed ("OLDNAME" (Lists))']
    b.command("DELETE Zed/c")
    b.command("RENAME Zed Lists")
    # (Zed/b moves with Zed: no LIST of its own. Zed's LIST last: the parent of a deleted one.)
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Zed/c', b'* LIST (\\HasChildren) "/" Lists ("OLDNAME" (Zed))',
                        b'* LIST (\\NonExistent) "/" Zed']


def test_a_subscription_a_rename_listed_is_known_to_the_client(pair: tuple[Conversation, Conversation]) -> None:
    """The client's own UNSUBSCRIBE of a name whose subscription another's RENAME had just moved
    (a no-op): the RENAME's LIST then tells the new name \\Subscribed, which the client now
    knows; another's UNSUBSCRIBE of it after is a change to tell. The base the subscriptions are
    compared with lacked the new name (the move found the old one gone), and nothing came."""
    a, b = pair
    b.command("SUBSCRIBE Lists/a")
    a.command("NOTIFY SET (personal (MailboxName SubscriptionChange))")
    b.command("RENAME Lists/a Lists/b")
    assert a.command("UNSUBSCRIBE Lists/a")[:-1] == [
        b'* LIST (\\Subscribed \\HasNoChildren) "/" Lists/b ("OLDNAME" (Lists/a))']
    b.command("UNSUBSCRIBE Lists/b")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/b']


def test_a_subscription_change_after_a_rename_is_told_after_it(pair: tuple[Conversation, Conversation]) -> None:
    """A client applies the LISTs in order, a rename moving the subscriptions of the children it
    knows (section 5.4): another's UNSUBSCRIBE of a child the RENAME moved is told after the
    rename's LIST. Told before it, the rename then moved the child's old subscription onto the
    new name, and the client had Zed/a subscribed."""
    a, b = pair
    b.command("SUBSCRIBE Lists/a")
    a.command("NOTIFY SET (personal (MailboxName SubscriptionChange))")
    b.command("RENAME Lists Zed")
    b.command("UNSUBSCRIBE Zed/a")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Zed ("OLDNAME" (Lists))',
                        b'* LIST (\\HasNoChildren) "/" Zed/a']


@pytest.mark.parametrize("events", ["(SubscriptionChange)", "(MailboxName SubscriptionChange)"])
def test_a_subscription_a_rename_moved_to_a_mailbox_deleted_since_is_told(
        pair: tuple[Conversation, Conversation], events: str) -> None:
    """RENAME moves the subscription (section 5.4), DELETE leaves it (RFC 3501 section 6.3.4):
    after another's RENAME Archive Projects and DELETE Projects, Projects is subscribed without a
    mailbox (section 5.5, RFC 5258 section 3). The report saw Archive gone and nothing of
    Projects: the subscription the client had not heard moved was not told, and the NOTIFY
    model run (tests/test_notify_model.py) found its watcher's subscriptions short of Projects.
    Archive's LIST is MailboxName's, or SubscriptionChange's (no longer subscribed)."""
    a, b = pair
    a.command(f"NOTIFY SET (personal {events})")
    b.command("RENAME Archive Projects")
    b.command("DELETE Projects")
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Archive', b'* LIST (\\Subscribed \\NonExistent) "/" Projects']
    b.command("UNSUBSCRIBE Projects")
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Projects']
    # A child moved with its parent and deleted: its subscription stays under the new name.
    b.command("SUBSCRIBE Lists/a")
    assert a.wake() == [b'* LIST (\\Subscribed \\HasNoChildren) "/" Lists/a']
    b.command("RENAME Lists Zed")
    b.command("DELETE Zed/a")
    told = [b'* LIST (\\NonExistent) "/" Lists/a', b'* LIST (\\Subscribed \\NonExistent) "/" Zed/a']
    if "MailboxName" in events:   # (the child's end first, while the client has it under Lists)
        told[1:1] = [b'* LIST (\\HasNoChildren) "/" Zed ("OLDNAME" (Lists))', b'* LIST (\\NonExistent) "/" Lists']
    assert a.wake() == told


@pytest.mark.parametrize("spec", ["personal", "subscribed"])
def test_a_rename_moves_subscriptions_told_by_subscription_change_alone(
        pair: tuple[Conversation, Conversation], spec: str) -> None:
    """Section 5.4: RENAME moves the subscriptions of the mailbox and its children. A client
    that asked for SubscriptionChange but not MailboxName gets no LIST with OLDNAME: the move is
    a subscription change of both names (section 5.5), the old ones' LISTs without \\Subscribed,
    the new ones' with it. None came: the client kept Lists and Lists/a subscribed. Under the
    subscribed filter the old names are no longer subscribed, but their subscription moved to
    names it covers: the same change, told whole."""
    a, b = pair
    b.command("SUBSCRIBE Lists")
    b.command("SUBSCRIBE Lists/a")
    a.command(f"NOTIFY SET ({spec} (SubscriptionChange))")
    b.command("RENAME Lists Zed")
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Lists', b'* LIST (\\NonExistent) "/" Lists/a',
                        b'* LIST (\\Subscribed \\HasChildren) "/" Zed',
                        b'* LIST (\\Subscribed \\HasNoChildren) "/" Zed/a']
    # A rename of a mailbox not subscribed changes no subscription: nothing to tell.
    b.command("CREATE Notes")
    b.command("RENAME Notes Memo")
    assert a.wake(require=False) == []


def test_a_rename_into_the_filter_tells_the_subscriptions_it_moved_from_outside(
        pair: tuple[Conversation, Conversation]) -> None:
    """As above, with a filter of the new name alone: the subscriptions moved into it are told,
    and so are the old names they left (outside the filter, but else the client keeps them
    subscribed beside the new ones)."""
    a, b = pair
    b.command("SUBSCRIBE Lists")
    b.command("SUBSCRIBE Lists/a")
    a.command("NOTIFY SET (subtree Zed (SubscriptionChange))")
    b.command("RENAME Lists Zed")
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Lists', b'* LIST (\\NonExistent) "/" Lists/a',
                        b'* LIST (\\Subscribed \\HasChildren) "/" Zed',
                        b'* LIST (\\Subscribed \\HasNoChildren) "/" Zed/a']


def test_a_subscription_a_new_mailbox_took_from_its_first_name_is_told(pair: tuple[Conversation, Conversation]) -> None:
    """The other way round: a name subscribed without a mailbox (DELETE keeps the subscription,
    RFC 3501 section 6.3.4), made again and renamed before the report. The RENAME moved the
    subscription away (section 5.4); the report saw a new mailbox Projects, listed \\Subscribed,
    and the client kept Notes subscribed. Found by the NOTIFY model run."""
    a, b = pair
    b.command("CREATE Notes")
    b.command("SUBSCRIBE Notes")
    b.command("DELETE Notes")
    a.command("NOTIFY SET (personal (MailboxName SubscriptionChange))")
    b.command("CREATE Notes")
    b.command("RENAME Notes Projects")
    assert a.wake() == [b'* LIST (\\Subscribed \\HasNoChildren) "/" Projects', b'* LIST (\\NonExistent) "/" Notes']
    # Made, renamed and deleted before the report: no LIST of the mailbox's, but the
    # subscription's move.
    a.store.set_subscribed("alice", "Notes", True)   # (as another tool may: SUBSCRIBE wants a mailbox)
    assert a.wake() == [b'* LIST (\\Subscribed \\NonExistent) "/" Notes']
    b.command("CREATE Notes")
    b.command("RENAME Notes Gone")
    b.command("DELETE Gone")
    assert a.wake() == [b'* LIST (\\Subscribed \\NonExistent) "/" Gone', b'* LIST (\\NonExistent) "/" Notes']


def test_a_renamed_subscribed_mailbox_is_listed_subscribed(pair: tuple[Conversation, Conversation]) -> None:
    """Section 5.4: RENAME moves the subscription (the new name is subscribed by the server):
    its LIST says \\Subscribed. Section 6.4: the subscribed filter follows it."""
    a, b = pair
    b.command("SUBSCRIBE Lists/a")
    a.command("NOTIFY SET (personal (MailboxName)) (subscribed (MessageNew MessageExpunge))")
    b.command("RENAME Lists/a Lists/c")
    assert a.wake() == [b'* LIST (\\Subscribed \\HasNoChildren) "/" Lists/c ("OLDNAME" (Lists/a))']
    b.command("APPEND Lists/c {12+}\r\nSubject: y\r\n")
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Lists/c"]


def test_rename_inbox_is_told_as_a_rename_of_inbox(pair: tuple[Conversation, Conversation]) -> None:
    """RFC 3501 section 6.3.5: RENAME INBOX moves INBOX's messages into a new mailbox and leaves
    INBOX, empty. RFC 5465 section 5.4: the new name gets its LIST with OLDNAME, "When INBOX is
    renamed, a new INBOX is assumed to be created. No MailboxName event is sent for INBOX in this
    case": INBOX gets no LIST, but its STATUS (its messages left), and the new mailbox (a new
    UIDVALIDITY) and the parent made on the way their own, as any new mailbox."""
    a, b = pair
    a.command(f"NOTIFY SET (personal {ALL_OTHER})")
    b.command("RENAME INBOX Old/Inbox")
    inbox, old, moved = a.folder("INBOX"), a.folder("Old"), a.folder("Old/Inbox")
    assert a.wake() == [
        b"* STATUS INBOX (MESSAGES 0 UIDNEXT 2 UIDVALIDITY %d UNSEEN 0)" % inbox.uidvalidity,
        b'* LIST (\\HasChildren) "/" Old',
        b"* STATUS Old (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d UNSEEN 0)" % old.uidvalidity,
        b'* LIST (\\HasNoChildren) "/" Old/Inbox ("OLDNAME" (INBOX))',
        b"* STATUS Old/Inbox (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % moved.uidvalidity]
    # A watcher of INBOX's name hears of it as of any rename of a mailbox it names.
    a.command("NOTIFY SET (mailboxes INBOX (MailboxName))")
    b.command("RENAME INBOX Lists/b")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Lists/b ("OLDNAME" (INBOX))']
    # The client's own RENAME INBOX is not reported to it (section 5).
    a.command(f"NOTIFY SET (personal {ALL_OTHER})")
    assert a.command("RENAME INBOX Lists/c")[:-1] == []
    assert a.wake(require=False) == []


def test_rename_inbox_heard_before_its_folders_events_is_told_whole(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool may serve the session between the events of one commit: a report of the RENAME
    INBOX notice alone reads the new mailbox for it; its own event, later, repeats nothing."""
    a, b = pair
    a.command(f"NOTIFY SET (personal {ALL_OTHER})")
    state = a.session.notify
    assert state is not None
    with monkeypatch.context() as patch:
        held = _hold_others(patch, state, pass_notices=True)
        b.command("RENAME INBOX Moved")
        moved = a.folder("Moved")
        assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Moved ("OLDNAME" (INBOX))',
                            b"* STATUS Moved (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % moved.uidvalidity]
    _hear_late(a, held)
    assert a.wake() == [b"* STATUS INBOX (MESSAGES 0 UIDNEXT 2 UIDVALIDITY %d UNSEEN 0)" % a.folder("INBOX").uidvalidity]


def test_list_responses_carry_every_attribute(pair: tuple[Conversation, Conversation]) -> None:
    """Section 5.5: "all mailbox attributes MUST be accurately computed" (children, special
    use), as in LIST; the same in MailboxName's LIST."""
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName SubscriptionChange))")
    b.command("CREATE Notes (USE (\\Archive))")
    assert a.wake() == [b'* LIST (\\Archive \\HasNoChildren) "/" Notes']
    b.command("SUBSCRIBE Notes")
    assert a.wake() == [b'* LIST (\\Subscribed \\Archive \\HasNoChildren) "/" Notes']
    b.command("CREATE Sent/old")   # (Sent: made and subscribed with the account)
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Sent/old', b'* LIST (\\Subscribed \\Sent \\HasChildren) "/" Sent']
    b.command("SUBSCRIBE Lists")
    assert a.wake() == [b'* LIST (\\Subscribed \\HasChildren) "/" Lists']


def test_a_new_mailbox_its_filter_covers_gets_a_status(pair: tuple[Conversation, Conversation]) -> None:
    """Section 5.1: "the server MUST notify the client about mailbox UIDVALIDITY changes": a
    mailbox made anew (or renamed) under a name the message events cover gets its STATUS."""
    a, b = pair
    a.command("NOTIFY SET (mailboxes Fresh (MessageNew MessageExpunge FlagChange))")
    b.command("CREATE Fresh")
    first = a.folder("Fresh").uidvalidity
    assert a.wake() == [b"* STATUS Fresh (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d UNSEEN 0)" % first]
    b.command("DELETE Fresh")
    assert a.wake(require=False) == []
    b.command("RENAME Lists/a Fresh")
    moved = a.folder("Fresh").uidvalidity
    assert moved != first
    assert a.wake() == [b"* STATUS Fresh (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d UNSEEN 0)" % moved]


def test_an_unknown_event_for_the_selected_mailbox_is_badevent(pair: tuple[Conversation, Conversation]) -> None:
    """Section 3.1: an unsupported event is NO [BADEVENT], not BAD, whatever its filter."""
    a, _b = pair
    lines = a.send(b"n1 NOTIFY SET (selected (MessageNew MessageExpunge XFoo))\r\n")
    assert lines == [b"n1 NO [" + notify.BADEVENT_CODE + b"] Event not supported"]


def test_message_new_fetch_carries_modseq_once_condstore_aware(pair: tuple[Conversation, Conversation]) -> None:
    """RFC 7162 section 3.1: once the client is CONDSTORE-aware every unsolicited FETCH carries
    UID and MODSEQ; MessageNew's FETCH is the server's own (no FETCH of the client's asked for
    it), so it does too."""
    a, b = pair
    a.command("ENABLE CONDSTORE")
    a.select()
    a.command("NOTIFY SET (selected (MessageNew (FLAGS) MessageExpunge))")
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    modseq = a.folder("INBOX").highestmodseq
    assert a.wake() == [b"* 2 EXISTS", b"* 2 RECENT", b"* 2 FETCH (UID 2 FLAGS (\\Recent) MODSEQ (%d))" % modseq]


def test_message_new_naming_modseq_enables_condstore_with_notify(pair: tuple[Conversation, Conversation]) -> None:
    """RFC 7162 section 3.1: a command that names the MODSEQ fetch-att enables CONDSTORE (as FETCH
    MODSEQ does); NOTIFY SET with MessageNew (MODSEQ) names it, so NOTIFY tells the selected
    mailbox's HIGHESTMODSEQ, and its STATUS responses have theirs, not the first push, between
    an EXISTS and its FETCH."""
    a, b = pair
    a.select()
    highest = a.folder("INBOX").highestmodseq
    lists = a.folder("Lists")
    assert a.command("NOTIFY SET STATUS (selected (MessageNew (UID MODSEQ) MessageExpunge))"
                     " (mailboxes Lists (MessageNew MessageExpunge))")[:-1] == [
        b"* OK [HIGHESTMODSEQ %d] Highest modification sequence" % highest,
        b"* STATUS Lists (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d UNSEEN 0 HIGHESTMODSEQ %d)"
        % (lists.uidvalidity, lists.highestmodseq)]
    assert condstore.enabled(a.session)
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    assert a.wake() == [b"* 2 EXISTS", b"* 2 RECENT", b"* 2 FETCH (UID 2 MODSEQ (%d))" % a.folder("INBOX").highestmodseq]


def test_notify_refused_does_not_enable_condstore(pair: tuple[Conversation, Conversation]) -> None:
    a, _b = pair
    lines = a.send(b"n1 NOTIFY SET (selected (MessageNew (MODSEQ) MessageExpunge AnnotationChange))\r\n")
    assert lines[-1].startswith(b"n1 NO [BADEVENT")
    assert not condstore.enabled(a.session)


def test_message_new_fetch_beyond_the_catch_up_is_followed_by_a_safe_highestmodseq(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """MessageNew's FETCH runs after the push's catch-up, with no catch-up after it: a change
    committed in between shows in its MODSEQ while an earlier one (another message's flags) is
    still to be reported. A QRESYNC client resynchronising from that MODSEQ would never learn
    of the earlier change, so it is told the HIGHESTMODSEQ of the catch-up (RFC 7162 section
    3.2.10, erratum 1810's rule for expunges, which holds for any change not yet reported)."""
    a, b = pair
    a.command("ENABLE QRESYNC")
    a.select()
    a.command("NOTIFY SET (selected (MessageNew (UID FLAGS) MessageExpunge FlagChange))")
    store = a.store
    inbox = a.folder("INBOX").id
    b.command("APPEND INBOX {12+}\r\nSubject: x\r\n")
    pushed = a.folder("INBOX").highestmodseq
    read_columns = store.flag_column_batches

    def others_change_first(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(store, "flag_column_batches", read_columns)
        _elsewhere(lambda: store.store_flags("alice", inbox, [1], "add", ["\\Flagged"]))   # not reported yet
        _elsewhere(lambda: store.store_flags("alice", inbox, [2], "add", ["\\Seen"]))      # the FETCH shows it
        return read_columns(*args, **kwargs)

    monkeypatch.setattr(store, "flag_column_batches", others_change_first)
    assert a.wake() == [b"* 2 EXISTS", b"* 2 RECENT", b"* OK [HIGHESTMODSEQ %d] Highest modification sequence" % pushed,
                        b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (%d))" % (pushed + 2),
                        b"* OK [HIGHESTMODSEQ %d] Highest modification sequence" % pushed]
    assert a.wake() == [b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % (pushed + 1),
                        b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (%d))" % (pushed + 2)]


# -- the client's own changes never overflow it (section 5 before section 5.8) -----------------


def _tree(conv: Conversation, top: str, children: int) -> None:
    """``top`` and ``children`` mailboxes beneath it, made straight in the store."""
    conv.store.create_folder("alice", top)
    for number in range(children):
        conv.store.create_folder("alice", f"{top}/c{number}")


def test_own_rename_of_a_big_tree_does_not_overflow(pair: tuple[Conversation, Conversation]) -> None:
    """A RENAME moves every mailbox of the tree, and midb announces each: more than MAX_PENDING
    of them, all the client's own, are not reported (section 5), so they cannot overflow it."""
    a, b = pair
    _tree(a, "big", notify.MAX_PENDING + 1)
    a.command(f"NOTIFY SET (personal {ALL_OTHER})")
    assert a.command("RENAME big huge")[:-1] == []
    assert a.wake(require=False) == []
    state = a.session.notify
    assert state is not None and state.active
    b.command("CREATE huge/c0/theirs")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" huge/c0/theirs',
                        b"* STATUS huge/c0/theirs (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d UNSEEN 0)"
                        % a.folder("huge/c0/theirs").uidvalidity, b'* LIST (\\HasChildren) "/" huge/c0']


def test_own_deletes_of_a_big_tree_do_not_overflow(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """DELETE takes one mailbox (a mailbox with children is refused): a tree goes with one DELETE
    a mailbox, each taken in at its command's end, however many, in one pipelined burst too."""
    a, b = pair
    monkeypatch.setattr(notify, "MAX_PENDING", 3)
    _tree(a, "big", 5)
    a.command(f"NOTIFY SET (personal {ALL_OTHER})")
    burst = b"".join(b"d%d DELETE big/c%d\r\n" % (number, number) for number in range(5)) + b"d9 DELETE big\r\n"
    lines = a.send(burst)
    assert [line.split(b" ")[1] for line in lines] == [b"OK"] * 6, lines
    assert a.wake(require=False) == []
    b.command("CREATE big")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" big',
                        b"* STATUS big (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d UNSEEN 0)" % a.folder("big").uidvalidity]


def test_another_sessions_rename_of_a_big_tree_is_one_clean_overflow(
        pair: tuple[Conversation, Conversation]) -> None:
    """Another session's RENAME of more than MAX_PENDING mailboxes may overflow the watcher
    (section 5.8): one NOTIFICATIONOVERFLOW, then NOTIFY NONE; the session goes on, and a new
    NOTIFY SET reports from the names as they are now."""
    a, b = pair
    _tree(a, "big", notify.MAX_PENDING + 1)
    a.select()
    a.command(f"NOTIFY SET (selected (MessageNew MessageExpunge)) (personal {ALL_OTHER})")
    b.command("RENAME big huge")
    assert a.wake() == [b"* OK [NOTIFICATIONOVERFLOW] Too many notifications: NOTIFY is off, check your mailboxes"]
    assert a.wake(require=False) == []
    state = a.session.notify
    assert state is not None and not state.active
    assert a.command("NOOP")[:-1] == []
    a.command(f"NOTIFY SET (personal {ALL_OTHER})")
    b.command("RENAME huge/c0 huge/d0")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" huge/d0 ("OLDNAME" (huge/c0))']


# -- cost in accounts with many folders ----------------------------------------------------------


def _rows_read_by_reports(tmp_path: Path, folders: int) -> tuple[list[list[bytes]], list[int]]:
    """The store rows (cursor rows and names looked up) each NOTIFY report reads in an account
    of ``folders`` subscribed folders, for another session's CREATE, RENAME, SUBSCRIBE,
    UNSUBSCRIBE and DELETE; and what each report says, which must not depend on the others."""
    rows = 0
    real_prefix_items, real_name_facts = store_module.prefix_items, Store.name_facts

    def counting_prefix_items(*args: Any, **kwargs: Any) -> list[Any]:
        nonlocal rows
        found = real_prefix_items(*args, **kwargs)
        rows += len(found)
        return found

    def counting_name_facts(self: Store, account: str, names: Any, **kwargs: Any) -> Any:
        nonlocal rows
        names = list(names)
        rows += len(names)
        return real_name_facts(self, account, names, **kwargs)

    reports: list[list[bytes]] = []
    reads: list[int] = []
    with Conversation(tmp_path / str(folders)) as a:
        for index in range(folders):
            a.store.create_folder("alice", f"Box/{index:04}")
            a.store.set_subscribed("alice", f"Box/{index:04}", True)
        b = a.second_session()
        a.login()
        b.login()
        a.command("NOTIFY SET (personal (MailboxName SubscriptionChange))")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(store_module, "prefix_items", counting_prefix_items)
            patch.setattr(Store, "name_facts", counting_name_facts)
            for command in ("CREATE New/a", "RENAME New Newer", "SUBSCRIBE Newer/a", "UNSUBSCRIBE Box/0001",
                            "DELETE Newer/a"):
                b.command(command)
                rows = 0
                reports.append(a.wake())
                reads.append(rows)
    return reports, reads


def test_a_report_reads_what_it_tells_not_every_folder(tmp_path: Path) -> None:
    """A report of another session's CREATE, RENAME, SUBSCRIBE, UNSUBSCRIBE or DELETE reads the
    names it lists and the subscriptions that changed, as many in an account of 300 folders as
    in one of 10 (it read every folder name and subscription, per report)."""
    (reports, few), (reports_of_many, many) = _rows_read_by_reports(tmp_path, 10), _rows_read_by_reports(tmp_path, 300)
    assert few == many
    assert reports == reports_of_many == [
        [b'* LIST (\\HasChildren) "/" New', b'* LIST (\\HasNoChildren) "/" New/a'],
        [b'* LIST (\\HasChildren) "/" Newer ("OLDNAME" (New))'],
        [b'* LIST (\\Subscribed \\HasNoChildren) "/" Newer/a'],
        [b'* LIST (\\HasNoChildren) "/" Box/0001'],
        [b'* LIST (\\Subscribed \\NonExistent) "/" Newer/a', b'* LIST (\\HasNoChildren) "/" Newer']]


def test_subscriptions_changed_beyond_the_log_are_read_in_full(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """More changes of the subscriptions than midb logs (SUBSCRIPTION_LOG_KEPT) between two
    reports: the report reads them all and tells each change."""
    a, b = pair
    monkeypatch.setattr(store_module, "SUBSCRIPTION_LOG_KEPT", 2)
    a.command("NOTIFY SET (personal (SubscriptionChange))")
    with _busy(a.store, "subscriptions_since"):
        for name in ("Lists", "Lists/a", "INBOX"):
            b.command(f"{'UNSUBSCRIBE' if name == 'INBOX' else 'SUBSCRIBE'} {name}")
        assert a.wake() == [BUSY_WARNING]
    assert a.timeout() == [b'* LIST (\\HasNoChildren) "/" INBOX',
                           b'* LIST (\\Subscribed \\HasChildren) "/" Lists',
                           b'* LIST (\\Subscribed \\HasNoChildren) "/" Lists/a']
    b.command("UNSUBSCRIBE Lists")   # (logged again: read as a change)
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Lists']


def test_snapshot_finds_the_names_below_one_in_order() -> None:
    seen = notify._Seen("a", 0, 1, 1, 0, 1)
    snapshot = notify._Snapshot([(1, seen), (2, seen._replace(name="a/x")), (3, seen._replace(name="a b")),
                                 (4, seen._replace(name="a.b/c")), (5, seen._replace(name="a/x/y"))])
    assert list(snapshot.below("a")) == [("a/x", 2), ("a/x/y", 5)]
    assert snapshot.at_or_below("a") == [("a", 1), ("a/x", 2), ("a/x/y", 5)]
    snapshot[2] = snapshot[2]._replace(name="b/x")
    snapshot[6] = seen._replace(name="a/z")
    del snapshot[5]
    assert list(snapshot.below("a")) == [("a/z", 6)] and list(snapshot.below("b")) == [("b/x", 2)]
    assert snapshot.named("a b") and not snapshot.named("a/x") and not snapshot.named("c")
    assert snapshot._by_name == sorted((item.name, folder_id) for folder_id, item in snapshot.items())


def _append_while_another_renames(a: Conversation, monkeypatch: pytest.MonkeyPatch, old: str,
                                  new: str, also: Callable[[], object] | None = None,
                                  told_at_append: tuple[bytes, ...] = ()) -> list[tuple[int, int]]:
    """The client APPENDs to ``old`` while another session renames it to ``new``: the APPEND's end
    takes the new names in, unreported; the RENAME's events are held (its datagrams still on
    their way) and returned, to be heard late. ``also``: another change made after the RENAME,
    whose notices are heard in time: the APPEND's end reports ``told_at_append``."""
    state = a.session.notify
    assert state is not None
    append, rename = a.store.append, a.store.rename_folder

    def append_then_rename(*args: Any, **kwargs: Any) -> Any:
        result = append(*args, **kwargs)
        _elsewhere(lambda: rename("alice", old, new))
        if also is not None:
            _elsewhere(also)
        return result

    with monkeypatch.context() as patch:
        held = _hold_others(patch, state, pass_notices=also is not None)
        patch.setattr(a.store, "append", append_then_rename)
        assert a.command(f"APPEND {old} {{12+}}\r\nSubject: x\r\n")[:-1] == list(told_at_append)
    return held


@pytest.mark.parametrize(("events", "told"), [
    ("SubscriptionChange", [b'* LIST (\\NonExistent) "/" Lists', b'* LIST (\\NonExistent) "/" Lists/a',
                            b'* LIST (\\Subscribed \\HasChildren) "/" Zed',
                            b'* LIST (\\Subscribed \\HasNoChildren) "/" Zed/a']),
    ("MailboxName SubscriptionChange", [b'* LIST (\\Subscribed \\HasChildren) "/" Zed ("OLDNAME" (Lists))'])])
def test_a_late_rename_of_subscribed_names_taken_in_with_the_clients_own_change_is_told(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch, events: str,
        told: list[bytes]) -> None:
    """Another session's RENAME of subscribed Lists (and Lists/a) committed while the client's
    APPEND to Lists ran, heard after the APPEND's end took the new names in. Without MailboxName
    no LIST with OLDNAME can tell the move (section 5.4): at the late event the subscriptions go
    back to the names the client knows, and the move is told as the subscription change it is
    (section 5.5), as when the rename is heard in time. None came: the client kept Lists and
    Lists/a subscribed. With MailboxName the LIST with OLDNAME tells it, as before."""
    a, b = pair
    b.command("SUBSCRIBE Lists")
    b.command("SUBSCRIBE Lists/a")
    a.command(f"NOTIFY SET (personal ({events}))")
    held = _append_while_another_renames(a, monkeypatch, "Lists", "Zed")
    assert len(held) == 2
    _hear_late(a, held)
    assert a.wake() == told
    # The client's view now matches the store's: another's UNSUBSCRIBE of the new name is told.
    b.command("UNSUBSCRIBE Zed/a")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Zed/a']


def test_a_late_rename_taken_in_is_told_after_a_report_of_other_subscriptions(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """As above (Lists renamed to Zed, taken in with the client's APPEND, its subscribed child
    Lists/a moving to Zed/a), but another subscription change is reported before the late events
    come. That report compared the subscriptions the rename moved (the client's view, taken in,
    matched the store's) and forgot them: the late event moved them back and nothing compared
    them again, and the client kept Lists/a subscribed and never heard of Zed/a. Zed's event
    comes alone: the report reads Zed/a's attributes all the same (it said \\NonExistent)."""
    a, b = pair
    b.command("SUBSCRIBE Lists/a")
    a.command("NOTIFY SET (personal (SubscriptionChange))")
    held = _append_while_another_renames(a, monkeypatch, "Lists", "Zed")
    assert len(held) == 2
    b.command("UNSUBSCRIBE INBOX")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" INBOX']
    state = a.session.notify
    assert state is not None
    # (Its child's event may come in a later datagram.)
    zed = a.folder("Zed").id
    a.session._notify_heard(state, "alice", zed, dict(held)[zed])
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Lists/a', b'* LIST (\\Subscribed \\HasNoChildren) "/" Zed/a']


@pytest.mark.parametrize(("case", "between", "told"), [
    # Zed subscribed already, without a mailbox (DELETE keeps the subscription, RFC 3501 section
    # 6.3.4): the RENAME leaves it so and unsubscribes Lists/a.
    ("new-name-subscribed-already", [], [b'* LIST (\\NonExistent) "/" Lists/a']),
    # Zed unsubscribed by another, told before the late event: Lists/a is still to tell.
    ("new-name-unsubscribed-since", [b'* LIST (\\HasNoChildren) "/" Zed'], [b'* LIST (\\NonExistent) "/" Lists/a'])])
def test_a_late_rename_taken_in_tells_the_old_name_unsubscribed(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch, case: str,
        between: list[bytes], told: list[bytes]) -> None:
    """Another session's RENAME of subscribed Lists/a to Zed taken in with the client's APPEND,
    heard late, without MailboxName. The late event restored the client's Lists/a only while the
    client had Zed as the rename taken in left it (subscribed, and not before): with Zed
    subscribed already, or unsubscribed (and told) since, nothing was told and the client kept
    Lists/a subscribed."""
    a, b = pair
    b.command("SUBSCRIBE Lists/a")
    if case == "new-name-subscribed-already":
        b.command("CREATE Zed")
        b.command("SUBSCRIBE Zed")
        b.command("DELETE Zed")
    a.command("NOTIFY SET (personal (SubscriptionChange))")
    held = _append_while_another_renames(a, monkeypatch, "Lists/a", "Zed")
    assert len(held) == 1
    if case == "new-name-unsubscribed-since":
        b.command("UNSUBSCRIBE Zed")
    assert a.wake(require=False) == between
    _hear_late(a, held)
    assert a.wake() == told
    assert "Lists/a" not in a.store.subscriptions("alice")


def test_a_late_rename_taken_in_tells_the_subscriptions_move_after_another_change_was_reported(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """As above (no MailboxName), but another session's SUBSCRIBE came in time to be reported at
    the APPEND's end: that report compared the subscriptions, and found the names the taken-in
    RENAME moved alike in the client's view and the store's. The late event still moves them
    back to the names the client knows, and tells their move (section 5.5): the client was told
    nothing, kept Lists and Lists/a subscribed, and missed a later UNSUBSCRIBE of Zed/a."""
    a, b = pair
    b.command("SUBSCRIBE Lists")
    b.command("SUBSCRIBE Lists/a")
    a.command("NOTIFY SET (personal (SubscriptionChange))")
    held = _append_while_another_renames(a, monkeypatch, "Lists", "Zed",
                                         also=lambda: a.store.set_subscribed("alice", "Other", True),
                                         told_at_append=(b'* LIST (\\Subscribed \\NonExistent) "/" Other',))
    assert len(held) == 2
    _hear_late(a, held)
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Lists', b'* LIST (\\NonExistent) "/" Lists/a',
                        b'* LIST (\\Subscribed \\HasChildren) "/" Zed',
                        b'* LIST (\\Subscribed \\HasNoChildren) "/" Zed/a']
    b.command("UNSUBSCRIBE Zed/a")
    assert a.wake() == [b'* LIST (\\HasNoChildren) "/" Zed/a']


def test_a_late_rename_taken_in_tells_the_subscriptions_move_with_the_attributes_of_the_names_now(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, and Lists/a made again before the late events come: the LIST that tells its
    subscription gone says what LIST says of it now (section 5.5), a mailbox, not \\NonExistent."""
    a, b = pair
    b.command("SUBSCRIBE Lists")
    b.command("SUBSCRIBE Lists/a")
    a.command("NOTIFY SET (personal (SubscriptionChange))")
    held = _append_while_another_renames(a, monkeypatch, "Lists", "Zed")
    assert len(held) == 2
    b.command("CREATE Lists/a")
    assert a.wake() == []   # (no MailboxName: taken in)
    _hear_late(a, held)
    assert a.wake() == [b'* LIST (\\HasChildren) "/" Lists', b'* LIST (\\HasNoChildren) "/" Lists/a',
                        b'* LIST (\\Subscribed \\HasChildren) "/" Zed',
                        b'* LIST (\\Subscribed \\HasNoChildren) "/" Zed/a']


def test_a_late_rename_taken_in_of_a_mailbox_deleted_since_tells_the_subscriptions_move(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, but the renamed mailbox is deleted before the late events come: DELETE keeps the
    subscription the RENAME moved to Zed (RFC 3501 section 6.3.4), which the client has under
    Lists/a. Taken in with the APPEND, the move was never told."""
    a, b = pair
    b.command("SUBSCRIBE Lists/a")
    a.command("NOTIFY SET (personal (SubscriptionChange))")
    held = _append_while_another_renames(a, monkeypatch, "Lists/a", "Zed")
    assert len(held) == 1
    b.command("DELETE Zed")   # (its event, heard, waits with the rename's for the next report)
    _hear_late(a, held)
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Lists/a', b'* LIST (\\Subscribed \\NonExistent) "/" Zed']


def test_a_late_rename_taken_in_of_a_mailbox_deleted_since_is_told_gone_by_the_clients_name(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another session's RENAME of Lists/a to Zed taken in with the client's APPEND, and Zed deleted
    before the late events come: the client never heard of Zed; Lists/a is what it has to be told
    gone (section 5.4: \\NonExistent), and its parent Lists that lost its last child."""
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    held = _append_while_another_renames(a, monkeypatch, "Lists/a", "Zed")
    assert len(held) == 1
    b.command("DELETE Zed")
    _hear_late(a, held)
    assert a.wake() == [b'* LIST (\\NonExistent) "/" Lists/a', b'* LIST (\\HasNoChildren) "/" Lists']


@pytest.mark.parametrize(("events", "told"), [
    ("MailboxName SubscriptionChange", [b'* LIST (\\Subscribed \\HasNoChildren) "/" Yak ("OLDNAME" (Lists/a))',
                                        b'* LIST (\\HasNoChildren) "/" Lists']),
    ("SubscriptionChange", [b'* LIST (\\NonExistent) "/" Lists/a', b'* LIST (\\Subscribed \\HasNoChildren) "/" Yak'])])
def test_a_late_rename_taken_in_and_renamed_on_says_the_clients_name(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch, events: str,
        told: list[bytes]) -> None:
    """Another session's RENAME of Lists/a to Zed taken in with the client's APPEND, then Zed
    renamed on to Yak before the late events come: the client never heard of Zed; the LIST of
    Yak has OLDNAME Lists/a, the name it knows (section 5.4), and Lists, which lost its last
    child, is listed too. Without MailboxName the subscription's move is told from Lists/a."""
    a, b = pair
    b.command("SUBSCRIBE Lists/a")
    a.command(f"NOTIFY SET (personal ({events}))")
    held = _append_while_another_renames(a, monkeypatch, "Lists/a", "Zed")
    assert len(held) == 1
    b.command("RENAME Zed Yak")
    _hear_late(a, held)
    assert a.wake() == told


_LIST_LINE = re.compile(rb'\* LIST \(([^)]*)\) "/" (\S+)(?: \("OLDNAME" \((\S+)\)\))?\Z')


class _ClientView:
    """The mailbox names and subscriptions a client knows, from a LIST at the start and the
    NOTIFY LISTs it is told since (section 5.4: a LIST with OLDNAME moves the name and the
    children the client knows, their subscriptions with them). Each name told as OLDNAME, or as
    \\NonExistent without \\Subscribed (a mailbox or a subscription gone), is checked to be one
    the client knows: else it cannot apply it."""

    def __init__(self, conversation: Conversation, events: str) -> None:
        self.conversation = conversation
        self.knows_names = "MailboxName" in events
        self.knows_subscriptions = "SubscriptionChange" in events
        self.names, self.subscribed = self.truth()

    def truth(self) -> tuple[set[str], set[str]]:
        """What LIST and LIST (SUBSCRIBED) give now."""
        names: set[str] = set()
        subscribed: set[str] = set()
        for line in self.conversation.command('LIST (SUBSCRIBED) "" "*"')[:-1]:
            found = _LIST_LINE.match(line)
            assert found is not None, line
            attributes = found.group(1).split()
            name = found.group(2).decode()
            if b"\\NonExistent" not in attributes:
                names.add(name)
            if b"\\Subscribed" in attributes:
                subscribed.add(name)
        return names, subscribed

    def read(self, lines: list[bytes]) -> None:
        for line in lines:
            found = _LIST_LINE.match(line)
            assert found is not None, line
            attributes = found.group(1).split()
            name = found.group(2).decode()
            if found.group(3) is not None:
                old = found.group(3).decode()
                assert old in self.names, f"OLDNAME {old} unknown to the client: {line!r}"
                moved = {known for known in self.names if known == old or known.startswith(old + "/")}
                for known in (self.names, self.subscribed):
                    carried = moved & known
                    known.difference_update(carried)
                    known.update(name + known_name[len(old):] for known_name in carried)
            if b"\\NonExistent" in attributes:
                knowable = self.names | self.subscribed if self.knows_names else self.subscribed
                assert b"\\Subscribed" in attributes or name in knowable, (
                    f"{name} told gone, unknown to the client: {line!r}")
                self.names.discard(name)
            else:
                self.names.add(name)
            if b"\\Subscribed" in attributes:
                self.subscribed.add(name)
            else:
                self.subscribed.discard(name)

    def check(self) -> None:
        names, subscribed = self.truth()
        if self.knows_names:
            assert self.names == names
        if self.knows_subscriptions:
            assert self.subscribed == subscribed


@pytest.mark.parametrize("events", ["MailboxName", "MailboxName SubscriptionChange", "SubscriptionChange"])
@pytest.mark.parametrize("told_between", [False, True], ids=["heard-together", "child-told-first"])
@pytest.mark.parametrize("child_change", ["DELETE Zed/a", "RENAME Zed/a Zed/b", "RENAME Zed/a Other"])
def test_a_late_rename_taken_in_whose_child_changed_since_leaves_the_client_with_the_names_list_gives(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch, events: str,
        told_between: bool, child_change: str) -> None:
    """Another session's RENAME of Lists (subscribed, as Lists/a) to Zed taken in with the
    client's APPEND, its events heard late; before they come another session deletes or renames
    the child Zed/a (its change reported first, or with the late events). The client ends with
    the names and subscriptions LIST gives, and is told as OLDNAME or \\NonExistent only names
    it knows (section 5.4)."""
    a, b = pair
    b.command("SUBSCRIBE Lists")
    b.command("SUBSCRIBE Lists/a")
    view = _ClientView(b, events)
    a.command(f"NOTIFY SET (personal ({events}))")
    held = _append_while_another_renames(a, monkeypatch, "Lists", "Zed")
    assert len(held) == 2
    b.command(child_change)
    if told_between:
        view.read(a.wake(require=False))
    _hear_late(a, held)
    view.read(a.wake(require=False))
    view.check()


@pytest.mark.parametrize("events", ["MailboxName SubscriptionChange", "SubscriptionChange"])
@pytest.mark.parametrize("renamed_on", [False, True], ids=["", "renamed-on-since"])
def test_two_late_renames_taken_in_one_after_the_other_keep_a_name_subscribed_already(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch, events: str,
        renamed_on: bool) -> None:
    """Another session renames subscribed Lists to Zed, subscribed already without a mailbox (a
    DELETE keeps the subscription, RFC 3501 section 6.3.4), then Zed to Yak, each taken in with
    one of the client's APPENDs, the events of both heard late. The client knew Zed subscribed:
    the second rename moved that one subscription to Yak, so Zed is to be told unsubscribed, and
    Lists too. The second take-in noted Yak's as Lists's alone and forgot Zed's: the client kept
    Zed subscribed. Likewise when Yak is renamed on (to Wim) before the late events come."""
    a, b = pair
    b.command("CREATE Zed")
    b.command("SUBSCRIBE Zed")
    b.command("DELETE Zed")
    b.command("SUBSCRIBE Lists")
    view = _ClientView(b, events)
    assert {"Lists", "Zed"} <= view.subscribed
    a.command(f"NOTIFY SET (personal ({events}))")
    held = _append_while_another_renames(a, monkeypatch, "Lists", "Zed")
    held += _append_while_another_renames(a, monkeypatch, "Zed", "Yak")
    if renamed_on:
        b.command("RENAME Yak Wim")
    _hear_late(a, held)
    view.read(a.wake(require=False))
    view.check()
