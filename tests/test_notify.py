"""RFC 5465 NOTIFY: two sessions of one user; what one changes reaches the other unasked, as the
other's NOTIFY SET says. Parser forms (valid and broken), each filter and event, NOTIFY NONE,
SET STATUS, BADEVENT, SELECTED-DELAYED and NOTIFICATIONOVERFLOW."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation
from test_parser import parse

from gximap.imap import commands as c
from gximap.imap.parser import ParseError
from gximap.session import notify
from midb.errors import StoreBusy

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


# -- parser ------------------------------------------------------------------------------------


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


def test_parse_keeps_unknown_events_for_badevent() -> None:
    cmd = parse(b"a NOTIFY SET (personal (MailboxName XFoo))\r\n")
    assert isinstance(cmd, c.Notify) and cmd.groups is not None
    assert cmd.groups[0].events == ("MailboxName", "XFoo")


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


def test_subscribed_filter_follows_subscriptions(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (subscribed (MessageNew MessageExpunge SubscriptionChange))")
    b.command("APPEND Lists {12+}\r\nSubject: x\r\n")
    assert a.wake(require=False) == []
    b.command("SUBSCRIBE Lists")
    assert a.wake() == [b'* LIST (\\Subscribed) "/" Lists']
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    assert [line.split(b" (")[0] for line in a.wake()] == [b"* STATUS Lists"]
    b.command("UNSUBSCRIBE Lists")
    assert a.wake() == []   # no longer subscribed: not in the filter any more


def test_mailbox_name_create_rename_delete(pair: tuple[Conversation, Conversation]) -> None:
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    b.command("CREATE foo/bar")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" foo', b'* LIST (\\HasNoChildren) "/" foo/bar']
    b.command("RENAME foo baz")
    assert a.wake() == [b'* LIST (\\HasChildren) "/" baz ("OLDNAME" (foo))',
                        b'* LIST (\\HasNoChildren) "/" baz/bar ("OLDNAME" (foo/bar))']
    b.command("DELETE baz/bar")
    assert a.wake() == [b'* LIST (\\NonExistent) "/" baz/bar']


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


def test_a_report_that_met_a_store_error_is_tried_again_at_the_keepalive(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """No mailbox selected: a report that met a busy store warns, and IDLE's keepalive tries
    again (as it does for the selected mailbox's updates), rather than wait for another change."""
    a, b = pair
    a.command("NOTIFY SET (personal (MessageNew MessageExpunge))")
    a.script("""
        C: i1 IDLE
        S: + idling
    """)
    folder_by_id = a.store.folder_by_id

    def busy(*args: object, **kwargs: object) -> object:
        raise StoreBusy("too many concurrent readers")

    monkeypatch.setattr(a.store, "folder_by_id", busy)
    b.command("APPEND Lists {12+}\r\nSubject: y\r\n")
    assert a.wake() == [b"* NO [UNAVAILABLE] Changes to the mailbox will be reported later: "
                        b"too many concurrent readers"]
    monkeypatch.setattr(a.store, "folder_by_id", folder_by_id)
    uidvalidity = a.folder("Lists").uidvalidity
    assert a.timeout() == [b"* OK Still here",
                           b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % uidvalidity]


def test_notify_set_that_meets_a_store_error_leaves_the_settings_as_they_were(
        pair: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot NOTIFY SET compares later changes with could not be read: the command fails
    and what was set before stays, rather than a NOTIFY that reports every mailbox as new."""
    a, b = pair
    a.command("NOTIFY SET (personal (MailboxName))")
    folder_entries = a.store.folder_entries

    def busy(*args: object, **kwargs: object) -> object:
        raise StoreBusy("too many concurrent readers")

    monkeypatch.setattr(a.store, "folder_entries", busy)
    lines = a.send(b"n1 NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))\r\n")
    assert len(lines) == 1 and lines[0].startswith(b"n1 NO [UNAVAILABLE]"), lines
    monkeypatch.setattr(a.store, "folder_entries", folder_entries)
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
        store.store_flags("alice", inbox, [1], "add", ["\\Flagged"])   # not reported yet
        store.store_flags("alice", inbox, [2], "add", ["\\Seen"])      # the FETCH shows it
        return read_columns(*args, **kwargs)

    monkeypatch.setattr(store, "flag_column_batches", others_change_first)
    assert a.wake() == [b"* 2 EXISTS", b"* 2 RECENT", b"* OK [HIGHESTMODSEQ %d] Highest modification sequence" % pushed,
                        b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (%d))" % (pushed + 2),
                        b"* OK [HIGHESTMODSEQ %d] Highest modification sequence" % pushed]
    assert a.wake() == [b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % (pushed + 1),
                        b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (%d))" % (pushed + 2)]
