"""SELECT EXAMINE CHECK CLOSE UNSELECT and IDLE (RFC 2177), incl. two sessions on one store."""

from __future__ import annotations

import pytest
from conversation import Conversation

from gximap.session.base import State


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def test_select_rfc3501_responses(conv):
    conv.add_message(flags=["\\Seen", "$Important"])
    conv.add_message(flags=["\\Seen", "Junk"])
    conv.add_message()
    conv.script("""
        C: A142 SELECT INBOX
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important Junk)
        S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important Junk \\*)] Flags permitted
        S: * 3 EXISTS
        S: * 3 RECENT
        S: * OK [UNSEEN 3] First unseen
        S: * OK [UIDVALIDITY {n:uidvalidity}] UIDs valid
        S: * OK [UIDNEXT 4] Predicted next UID
        S: * OK [HIGHESTMODSEQ {n:modseq}] Highest modification sequence
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: A142 OK [READ-WRITE] SELECT completed
    """)
    inbox = conv.folder("INBOX")
    assert int(conv.captured["uidvalidity"]) == inbox.uidvalidity
    # RFC 7162 3.1.2.1: sent on every SELECT, CONDSTORE-aware client or not.
    assert int(conv.captured["modseq"]) == inbox.highestmodseq
    assert conv.session.state is State.SELECTED


def test_select_empty_mailbox_has_no_unseen(conv):
    conv.script("""
        C: a1 SELECT Drafts
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted
        S: * 0 EXISTS
        S: * 0 RECENT
        S: * OK [UIDVALIDITY {n}] UIDs valid
        S: * OK [UIDNEXT 1] Predicted next UID
        S: * OK [HIGHESTMODSEQ {n}] Highest modification sequence
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: a1 OK [READ-WRITE] SELECT completed
    """)


def test_examine_is_read_only_and_claims_no_recent(conv):
    conv.add_message()
    conv.script("""
        C: a1 EXAMINE INBOX
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS ()] No permanent flags permitted
        S: * 1 EXISTS
        S: * 1 RECENT
        S: * OK [UNSEEN 1] First unseen
        S: * OK [UIDVALIDITY {n}] UIDs valid
        S: * OK [UIDNEXT 2] Predicted next UID
        S: * OK [HIGHESTMODSEQ {n}] Highest modification sequence
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: a1 OK [READ-ONLY] EXAMINE completed
    """)
    other = conv.second_session()
    other.login()
    assert b"* 1 RECENT" in other.select()


def test_recent_belongs_to_the_first_session_that_selects(conv):
    conv.add_message()
    assert b"* 1 RECENT" in conv.select()
    other = conv.second_session()
    other.login()
    assert b"* 0 RECENT" in other.select()


def test_select_imap4rev2_responses(conv):
    conv.command("ENABLE IMAP4rev2")
    conv.add_message()
    conv.command("CREATE Sent/2024")
    conv.script("""
        C: a1 SELECT INBOX
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted
        S: * 1 EXISTS
        S: * OK [UIDVALIDITY {n}] UIDs valid
        S: * OK [UIDNEXT 2] Predicted next UID
        S: * OK [HIGHESTMODSEQ {n}] Highest modification sequence
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: a1 OK [READ-WRITE] SELECT completed
        C: a2 SELECT sent
        S: * OK [CLOSED] Previous mailbox closed
        S: a2 NO [NONEXISTENT] Mailbox does not exist
        C: a3 EXAMINE Sent
        S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
        S: * OK [PERMANENTFLAGS ()] No permanent flags permitted
        S: * 0 EXISTS
        S: * OK [UIDVALIDITY {n}] UIDs valid
        S: * OK [UIDNEXT 1] Predicted next UID
        S: * OK [HIGHESTMODSEQ {n}] Highest modification sequence
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: * LIST (\\Sent \\HasChildren) "/" Sent
        S: a3 OK [READ-ONLY] EXAMINE completed
        C: a4 SELECT INBOX
        S: * OK [CLOSED] Previous mailbox closed
        S: * FLAGS {*}
        S: * OK [PERMANENTFLAGS {*}
        S: * 1 EXISTS
        S: * OK [UIDVALIDITY {n}] UIDs valid
        S: * OK [UIDNEXT 2] Predicted next UID
        S: * OK [HIGHESTMODSEQ {n}] Highest modification sequence
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: a4 OK [READ-WRITE] SELECT completed
    """)


def test_reselect_in_rev1_says_closed_too(conv):
    """RFC 7162 3.2.11: a server supporting QRESYNC sends [CLOSED], enabled or not."""
    conv.select()
    lines = conv.select("Sent")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert conv.session.selected.name == "Sent"


def test_failed_select_leaves_the_authenticated_state(conv):
    conv.select()
    conv.script("""
        C: a1 SELECT Nowhere
        S: * OK [CLOSED] Previous mailbox closed
        S: a1 NO [NONEXISTENT] Mailbox does not exist
        C: a2 CHECK
        S: a2 BAD [CLIENTBUG] No mailbox selected
    """)
    assert conv.session.state is State.AUTHENTICATED and conv.session.selected is None


def test_select_of_an_impossible_name_also_leaves_the_authenticated_state(conv):
    """Refused while the command is read (NO [CANNOT]): still a SELECT that failed. A BAD is
    no SELECT at all and leaves the mailbox selected."""
    conv.select()
    conv.script("""
        C: a1 EXAMINE "&AOQ"
        S: * OK [CLOSED] Previous mailbox closed
        S: a1 NO [CANNOT] Invalid mailbox name
        C: a2 CHECK
        S: a2 BAD [CLIENTBUG] No mailbox selected
    """)
    conv.select()
    conv.script("""
        C: a3 SELECT
        S: a3 BAD [CLIENTBUG] {*}
        C: a4 CHECK
        S: a4 OK CHECK completed
    """)


def test_select_bad_names_and_parameters(conv):
    conv.script("""
        C: a1 SELECT "a//b"
        S: a1 NO [NONEXISTENT] Mailbox does not exist
        C: a2 SELECT INBOX (QRESYNC (1 1))
        S: a2 BAD [CLIENTBUG] QRESYNC must be enabled first
        C: a3 SELECT INBOX (CONDSTORE)
        S: * FLAGS ({*})
        S: * OK [PERMANENTFLAGS ({*})] Flags permitted
        S: * 0 EXISTS
        S: * 0 RECENT
        S: * OK [UIDVALIDITY {n}] UIDs valid
        S: * OK [UIDNEXT 1] Predicted next UID
        S: * OK [HIGHESTMODSEQ {n}] Highest modification sequence
        S: * OK [MAILBOXID ({*})] Mailbox ID
        S: a3 OK [READ-WRITE] SELECT completed
    """)


def test_select_mutf7_name(conv):
    conv.command('CREATE "Entw&APw-rfe"')
    lines = conv.send(b'a1 SELECT "Entw&APw-rfe"\r\n')
    assert lines[-1] == b"a1 OK [READ-WRITE] SELECT completed"
    assert conv.session.selected.name == "Entwürfe"


def test_check(conv):
    conv.select()
    conv.add_message()
    conv.script("""
        C: a1 CHECK
        S: * 1 EXISTS
        S: * 1 RECENT
        S: a1 OK CHECK completed
    """)


def test_close_expunges_silently(conv):
    conv.add_message(flags=["\\Deleted"])
    conv.add_message()
    conv.add_message(flags=["\\Deleted", "\\Seen"])
    conv.select()
    conv.script("""
        C: a1 CLOSE
        S: a1 OK CLOSE completed
        C: a2 NOOP
        S: a2 OK NOOP completed
    """)
    assert conv.folder("INBOX").messages == 1
    assert conv.session.state is State.AUTHENTICATED


def test_close_read_only_does_not_expunge(conv):
    conv.add_message(flags=["\\Deleted"])
    conv.select(examine=True)
    conv.command("CLOSE")
    assert conv.folder("INBOX").messages == 1


def test_unselect_does_not_expunge(conv):
    conv.add_message(flags=["\\Deleted"])
    conv.select()
    conv.script("""
        C: a1 UNSELECT
        S: a1 OK UNSELECT completed
        C: a2 UNSELECT
        S: a2 BAD [CLIENTBUG] No mailbox selected
    """)
    assert conv.folder("INBOX").messages == 1


def test_idle_done(conv):
    conv.select()
    conv.script("""
        C: a1 IDLE
        S: + idling
        C: done
        S: a1 OK IDLE terminated
    """)


def test_idle_keepalive_then_autologout(tmp_path):
    """A quiet IDLE gets "* OK Still here" every imap_idle_notify_interval (as Dovecot's), so
    NAT gateways keep the connection; imap_autologout_time still counts from the client's last
    word. Outside IDLE the timer is the autologout."""
    with Conversation(tmp_path, autologout=1800.0, idle_notify_interval=120.0) as conv:
        conv.login()
        assert conv.session.idle_timeout() == 1800.0
        conv.select()
        conv.script("""
            C: a1 IDLE
            S: + idling
        """)
        session = conv.session
        assert session.idle_timeout() == pytest.approx(120.0)
        session.last_activity -= 130.0  # the client has been quiet past the interval
        conv.script("""
            T:
            S: * OK Still here
        """)
        # The next one an interval after this one: the pool counts from a keepalive.
        assert session.idle_timeout() == pytest.approx(120.0)
        conv.script("""
            T:
            S: * OK Still here
            C: DONE
            S: a1 OK IDLE terminated
            C: a2 IDLE
            S: + idling
        """)
        assert session.idle_timeout() == pytest.approx(120.0)
        session.last_activity -= 1750.0  # quiet since: 50 s of the autologout are left
        conv.script("""
            T:
            S: * OK Still here
        """)
        assert session.idle_timeout() == pytest.approx(50.0, abs=1.0)  # the autologout comes first
        session.last_activity -= 50.0  # and they have passed
        conv.script("""
            T:
            S: * BYE Autologout; idle for too long
        """)
        assert conv.closed


def test_idle_keepalive_can_be_turned_off(tmp_path):
    with Conversation(tmp_path, autologout=1800.0, idle_notify_interval=0.0) as conv:
        conv.login()
        conv.select()
        conv.script("""
            C: a1 IDLE
            S: + idling
        """)
        assert conv.session.idle_timeout() == 1800.0
        conv.script("""
            T:
            S: * BYE Autologout; idle for too long
        """)


def test_idle_needs_done(conv):
    conv.script("""
        C: a1 IDLE
        S: + idling
        C: a2 NOOP
        S: a1 BAD [CLIENTBUG] Expected DONE
        C: a3 NOOP
        S: a3 OK NOOP completed
    """)


def test_idle_needs_authentication(tmp_path):
    with Conversation(tmp_path) as conv:
        assert conv.send(b"a1 IDLE\r\n") == [b"a1 BAD [CLIENTBUG] Log in first"]


def test_idle_sees_another_sessions_changes(conv):
    """Session B changes the store; A's waker fires and the pool's wakeup() pushes updates."""
    conv.add_message(flags=["\\Deleted"])
    conv.select()
    other = conv.second_session()
    other.login()
    conv.script("""
        C: a1 IDLE
        S: + idling
    """)
    conv.add_message()  # delivered by someone else
    conv.script("""
        W:
        S: * 2 EXISTS
        S: * 2 RECENT
    """)
    other.select()
    other.command("CLOSE")  # expunges message 1, which A sees while idling
    conv.script("""
        W:
        S: * 1 EXPUNGE
        C: DONE
        S: a1 OK IDLE terminated
    """)


def test_changes_to_other_folders_do_not_wake(conv):
    conv.select()
    assert conv.send(b"a1 IDLE\r\n") == [b"+ idling"]
    conv.add_message("Sent")
    assert conv.wakes == 0
    conv.add_message("INBOX")
    assert conv.wakes == 1
    assert conv.wake() == [b"* 1 EXISTS", b"* 1 RECENT"]


def test_idle_in_authenticated_state_pushes_nothing(conv):
    conv.script("""
        C: a1 IDLE
        S: + idling
    """)
    conv.add_message()
    assert conv.wake(require=False) == []
    assert conv.send(b"DONE\r\n") == [b"a1 OK IDLE terminated"]


def test_updates_after_idle_under_imap4rev2(conv):
    conv.command("ENABLE IMAP4rev2")
    conv.select()
    conv.send(b"a1 IDLE\r\n")
    conv.add_message()
    assert conv.wake() == [b"* 1 EXISTS"]
    assert conv.send(b"DONE\r\n") == [b"a1 OK IDLE terminated"]
