"""CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST (+ LIST-EXTENDED, LIST-STATUS, SPECIAL-USE)
LSUB XLIST NAMESPACE STATUS, including the RFC examples the store can reproduce."""

from __future__ import annotations

import random
import re

import pytest
from conversation import Conversation

from gximap.session import listing
from gximap.session.base import coalesced


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


def bare_account(conv: Conversation) -> None:
    """Only INBOX: drop the special-use folders every new account gets."""
    for folder in conv.store.list_folders("alice"):
        if folder.name != "INBOX":
            conv.store.delete_folder("alice", folder.name)
            conv.store.set_subscribed("alice", folder.name, False)


def rfc5258_account(conv: Conversation) -> None:
    """The mailboxes of RFC 5258 section 5 (and Cyrus' tests of it)."""
    bare_account(conv)
    for name in ("Fruit", "Fruit/Apple", "Fruit/Banana", "Fruit/Peach"):
        conv.command(f"CREATE {name}")
    conv.command("SUBSCRIBE Fruit/Banana")
    conv.command("SUBSCRIBE Fruit/Peach")
    conv.command("DELETE Fruit/Peach")
    for name in ("Tofu", "Vegetable", "Vegetable/Broccoli", "Vegetable/Corn"):
        conv.command(f"CREATE {name}")
    conv.command("SUBSCRIBE Vegetable")
    conv.command("SUBSCRIBE Vegetable/Broccoli")


def names(conv: Conversation) -> list[str]:
    return [folder.name for folder in conv.store.list_folders("alice")]


# -- CREATE ------------------------------------------------------------------------------------------


def test_create_and_list(conv):
    conv.script("""
        C: a1 CREATE Projects/2024/Q1
        S: a1 OK [MAILBOXID ({*})] CREATE completed
        C: a2 LIST "" Projects*
        S: * LIST (\\HasChildren) "/" Projects
        S: * LIST (\\HasChildren) "/" Projects/2024
        S: * LIST (\\HasNoChildren) "/" Projects/2024/Q1
        S: a2 OK LIST completed
    """)


def test_create_with_trailing_separator(conv):
    conv.command("CREATE Parent/")
    assert "Parent" in names(conv)


def test_create_existing_and_inbox(conv):
    conv.script("""
        C: a1 CREATE Sent
        S: a1 NO [ALREADYEXISTS] Mailbox already exists
        C: a2 CREATE inbox
        S: a2 NO [ALREADYEXISTS] Cannot create INBOX
        C: a3 CREATE INBOX/
        S: a3 NO [ALREADYEXISTS] Cannot create INBOX
        C: a4 CREATE INBOX/Child
        S: a4 OK [MAILBOXID ({*})] CREATE completed
    """)
    assert "INBOX/Child" in names(conv)


@pytest.mark.parametrize("name", ['"a//b"', '"../etc"', '"a/./b"', '"/abs"', '""', '"a/.."', '"a*"', '"50%"'])
def test_create_refuses_bad_names(conv, name):
    assert conv.send(f"a1 CREATE {name}\r\n".encode()) == [b"a1 NO [CANNOT] Invalid mailbox name"]


def test_create_names_needing_quotes_and_mutf7(conv):
    conv.command('CREATE "Project \\"X\\""')
    conv.command('CREATE "caf&AOk-"')
    conv.script("""
        C: a1 LIST "" P*
        S: * LIST (\\HasNoChildren) "/" "Project \\"X\\""
        S: a1 OK LIST completed
        C: a2 LIST "" caf*
        S: * LIST (\\HasNoChildren) "/" caf&AOk-
        S: a2 OK LIST completed
    """)
    assert "café" in names(conv)


def test_list_pattern_with_an_incomplete_mutf7_sequence_matches_rather_than_fails(conv):
    # A pattern is matched, it names nothing: an "&" that starts no sequence stands for itself.
    conv.command('CREATE "a&-b"')
    conv.command('CREATE "Caf&AOk-"')
    conv.script("""
        C: a1 LIST "" "a&*"
        S: * LIST (\\HasNoChildren) "/" a&-b
        S: a1 OK LIST completed
        C: a2 LIST "" "*&*"
        S: * LIST (\\HasNoChildren) "/" a&-b
        S: a2 OK LIST completed
        C: a3 LIST "" "Caf&AO*"
        S: a3 OK LIST completed
        C: a4 LSUB "" "Caf&AO*"
        S: a4 OK LSUB completed
        C: a5 CREATE "Caf&AO"
        S: a5 NO [CANNOT] Invalid mailbox name
    """)


NOT_NFC = b"NO [CANNOT] Mailbox name is not in Unicode NFC: send it with composed characters"


def test_new_mailbox_names_must_be_nfc(conv):
    """RFC 6855 section 3 (and RFC 9051 section 5.1): a mailbox name complies with Net-Unicode
    (RFC 5198 section 2: NFC). CREATE and RENAME refuse a new name that is not NFC, in
    modified UTF-7 or in UTF-8, rather than store a second spelling of a name that reads the
    same ("cafe" and a combining acute beside "café") or store another name than the client
    asked for. A folder stored under a non-NFC name before stays reachable by that name, and
    may be renamed to its NFC form."""
    decomposed = "cafe\u0301"
    conv.store.create_folder("alice", "old" + decomposed)
    assert conv.send(b'a1 CREATE "cafe&AwE-"\r\n') == [b"a1 " + NOT_NFC]
    assert conv.send(b'a2 RENAME INBOX "x/cafe&AwE-"\r\n') == [b"a2 " + NOT_NFC]
    assert conv.send(b'a3 STATUS "oldcafe&AwE-" (MESSAGES)\r\n')[-1] == b"a3 OK STATUS completed"
    assert conv.send(b'a4 RENAME "oldcafe&AwE-" "oldcaf&AOk-"\r\n') == [b"a4 OK RENAME completed"]
    assert "oldcafé" in names(conv) and "old" + decomposed not in names(conv)
    conv.command("ENABLE UTF8=ACCEPT")
    assert conv.send(b'a5 CREATE "%s"\r\n' % decomposed.encode()) == [b"a5 " + NOT_NFC]
    assert conv.send(b'a6 CREATE "caf\xc3\xa9"\r\n')[-1].startswith(b"a6 OK [MAILBOXID ")
    assert decomposed not in names(conv) and "café" in names(conv)


def test_create_special_use_rfc6154(conv):
    """RFC 6154 section 5.2 (adapted: midb keeps one special use per mailbox)."""
    conv.script("""
        C: t1 CREATE MySpecial (USE (\\Drafts \\Sent))
        S: t1 NO [USEATTR] Unsupported special-use attribute
        C: t2 CREATE MySpecial (USE (\\Drafts))
        S: t2 OK [MAILBOXID ({*})] CREATE completed
        C: t3 LIST "" MySpecial
        S: * LIST (\\Drafts \\HasNoChildren) "/" MySpecial
        S: t3 OK LIST completed
        C: t4 CREATE Everything (USE (\\All))
        S: t4 NO [USEATTR] Unsupported special-use attribute
        C: t5 CREATE Plain (USE ())
        S: t5 OK [MAILBOXID ({*})] CREATE completed
    """)
    assert "Everything" not in names(conv)


# -- DELETE ------------------------------------------------------------------------------------------


def test_delete(conv):
    conv.command("CREATE Old")
    conv.add_message("Old")
    conv.script("""
        C: a1 DELETE Old
        S: a1 OK DELETE completed
        C: a2 DELETE Old
        S: a2 NO [NONEXISTENT] Mailbox does not exist
        C: a3 DELETE inbox
        S: a3 NO [CANNOT] Cannot delete INBOX
    """)
    assert "Old" not in names(conv)


def test_delete_with_children_is_refused(conv):
    conv.command("CREATE Parent/Child")
    conv.script("""
        C: a1 DELETE Parent
        S: a1 NO [HASCHILDREN] Mailbox has inferior hierarchical names
        C: a2 DELETE Parent/Child
        S: a2 OK DELETE completed
        C: a3 DELETE Parent
        S: a3 OK DELETE completed
    """)


def test_delete_the_selected_mailbox(conv):
    conv.command("CREATE Doomed")
    conv.add_message("Doomed")
    conv.select("Doomed")
    conv.script("""
        C: a1 DELETE Doomed
        S: * OK [CLOSED] Previous mailbox closed
        S: a1 OK DELETE completed
        C: a2 FETCH 1 FLAGS
        S: a2 BAD [CLIENTBUG] No mailbox selected
        C: a3 NOOP
        S: a3 OK NOOP completed
    """)


def test_delete_another_mailbox_while_selected(conv):
    conv.command("CREATE Other")
    conv.select()
    conv.script("""
        C: a1 DELETE Other
        S: a1 OK DELETE completed
    """)
    assert conv.session.selected is not None


# -- RENAME ------------------------------------------------------------------------------------------


def test_rename_moves_children_and_subscriptions(conv):
    conv.command("CREATE Work/Reports")
    conv.command("SUBSCRIBE Work/Reports")
    conv.script("""
        C: a1 RENAME Work Job
        S: a1 OK RENAME completed
        C: a2 LIST "" Job*
        S: * LIST (\\HasChildren) "/" Job
        S: * LIST (\\HasNoChildren) "/" Job/Reports
        S: a2 OK LIST completed
        C: a3 LSUB "" Job*
        S: * LSUB () "/" Job/Reports
        S: a3 OK LSUB completed
        C: a4 LIST "" Work*
        S: a4 OK LIST completed
    """)


def test_rename_keeps_uidvalidity(conv):
    conv.command("CREATE A")
    before = conv.folder("A").uidvalidity
    conv.command("RENAME A B")
    assert conv.folder("B").uidvalidity == before


def test_rename_errors(conv):
    conv.command("CREATE A/B")
    conv.script("""
        C: a1 RENAME Missing X
        S: a1 NO [NONEXISTENT] Mailbox does not exist
        C: a2 RENAME A Sent
        S: a2 NO [ALREADYEXISTS] Mailbox already exists
        C: a3 RENAME A inbox
        S: a3 NO [ALREADYEXISTS] Cannot rename to INBOX
        C: a4 RENAME A A/B/C
        S: a4 NO [CANNOT] Cannot rename a mailbox into itself
        C: a5 RENAME A "a//b"
        S: a5 NO [CANNOT] Invalid mailbox name
        C: a6 RENAME A A
        S: a6 NO [ALREADYEXISTS] Mailbox already exists
        C: a7 RENAME A "A%"
        S: a7 NO [CANNOT] Invalid mailbox name
    """)


def test_rename_inbox_moves_messages_and_keeps_inbox(conv):
    """RFC 3501 6.3.5: INBOX's messages move to the new name, INBOX stays (empty), and its
    inferior names are unaffected."""
    conv.command("CREATE INBOX/Keep")
    conv.add_message()
    conv.add_message()
    conv.script("""
        C: a1 RENAME INBOX Old-Inbox
        S: a1 OK RENAME completed
        C: a2 STATUS INBOX (MESSAGES)
        S: * STATUS INBOX (MESSAGES 0)
        S: a2 OK STATUS completed
        C: a3 STATUS Old-Inbox (MESSAGES)
        S: * STATUS Old-Inbox (MESSAGES 2)
        S: a3 OK STATUS completed
    """)
    assert "INBOX/Keep" in names(conv)


def test_rename_inbox_beneath_itself(conv):
    """RFC 3501 6.3.5: INBOX stays where it is, so its messages may go to a new name beneath it
    (INBOX/old, the Courier habit); its other inferiors are unaffected. Any other mailbox still
    cannot be renamed into its own subtree."""
    conv.command("CREATE INBOX/Keep")
    conv.add_message()
    conv.script("""
        C: a1 RENAME INBOX INBOX/old
        S: a1 OK RENAME completed
        C: a2 STATUS INBOX (MESSAGES)
        S: * STATUS INBOX (MESSAGES 0)
        S: a2 OK STATUS completed
        C: a3 STATUS INBOX/old (MESSAGES)
        S: * STATUS INBOX/old (MESSAGES 1)
        S: a3 OK STATUS completed
        C: a4 RENAME INBOX/Keep INBOX/Keep/Deeper
        S: a4 NO [CANNOT] Cannot rename a mailbox into itself
    """)
    assert {"INBOX/Keep", "INBOX/old"} <= set(names(conv))


def test_a_new_name_with_a_c1_control_or_line_separator_is_refused(conv):
    """RFC 6855 section 3: mailbox names carry no C1 control (U+0080-U+009F) and no line or
    paragraph separator (U+2028, U+2029); in modified UTF-7 as in UTF-8, for CREATE and the
    new name of RENAME."""
    conv.command("CREATE Plain")
    conv.script("""
        C: a1 CREATE "a&AIU-b"
        S: a1 NO [CANNOT] Invalid mailbox name
        C: a2 CREATE "a&ICg-b"
        S: a2 NO [CANNOT] Invalid mailbox name
        C: a3 RENAME Plain "a&ICk-b"
        S: a3 NO [CANNOT] Invalid mailbox name
        C: a4 CREATE "caf&AOk-"
        S: a4 OK [MAILBOXID ({*})] CREATE completed
    """)
    conv.command("ENABLE UTF8=ACCEPT")
    assert conv.send('b1 CREATE "x\u0085y"\r\n'.encode())[-1] == b"b1 NO [CANNOT] Invalid mailbox name"
    assert conv.send('b2 CREATE "x\u2029y"\r\n'.encode())[-1] == b"b2 NO [CANNOT] Invalid mailbox name"


def test_rename_the_selected_mailbox(conv):
    conv.command("CREATE Box")
    conv.add_message("Box")
    conv.select("Box")
    conv.command("RENAME Box Crate")
    assert conv.session.selected.name == "Crate"
    conv.add_message("Crate")
    conv.script("""
        C: a1 NOOP
        S: * 2 EXISTS
        S: * 2 RECENT
        S: a1 OK NOOP completed
    """)


def test_folders_renamed_for_a_new_language_under_a_selected_session(conv):
    """midb user lang --rename-folders (Store.localize_folders) while a client has Trash open:
    the selection follows the folder, and LIST shows the new names."""
    conv.add_message("Trash")
    conv.select("Trash")
    renames = conv.store.localize_folders("alice", "de")
    assert {rename.new for rename in renames if rename.renamed} == {
        "Entwürfe", "Gesendet", "Papierkorb", "Spam", "Archiv"}
    conv.add_message("Papierkorb")
    conv.script("""
        C: a1 NOOP
        S: * 2 EXISTS
        S: * 2 RECENT
        S: a1 OK NOOP completed
        C: a2 FETCH 2 (UID)
        S: * 2 FETCH (UID 2)
        S: a2 OK FETCH completed
        C: a3 LIST "" "Papierkorb"
        S: * LIST (\\Trash \\HasNoChildren) "/" Papierkorb
        S: a3 OK LIST completed
        C: a4 LIST "" "Trash"
        S: a4 OK LIST completed
    """)


# -- SUBSCRIBE / UNSUBSCRIBE / LSUB ---------------------------------------------------------------------------


def test_subscribe_and_lsub(conv):
    rfc5258_account(conv)
    conv.script("""
        C: a1 LSUB "" *
        S: * LSUB () "/" INBOX
        S: * LSUB () "/" Fruit/Banana
        S: * LSUB (\\Noselect) "/" Fruit/Peach
        S: * LSUB () "/" Vegetable
        S: * LSUB () "/" Vegetable/Broccoli
        S: a1 OK LSUB completed
        C: a2 LSUB "" %
        S: * LSUB () "/" INBOX
        S: * LSUB (\\Noselect) "/" Fruit
        S: * LSUB () "/" Vegetable
        S: a2 OK LSUB completed
        C: a3 LSUB Fruit/ %
        S: * LSUB () "/" Fruit/Banana
        S: * LSUB (\\Noselect) "/" Fruit/Peach
        S: a3 OK LSUB completed
        C: a4 LSUB "" ""
        S: a4 OK LSUB completed
    """)


def test_lsub_names_an_unsubscribed_parent_only_where_a_percent_stops(conv):
    """RFC 3501 6.3.9: the parent of a subscribed name comes back (\\Noselect) because the
    pattern's "%" matched it and stopped at the delimiter; a pattern naming it outright, or
    with "*", does not bring it (Dovecot the same)."""
    rfc5258_account(conv)
    conv.script("""
        C: a1 LSUB "" Fruit
        S: a1 OK LSUB completed
        C: a2 LSUB "" Fr*
        S: * LSUB () "/" Fruit/Banana
        S: * LSUB (\\Noselect) "/" Fruit/Peach
        S: a2 OK LSUB completed
        C: a3 LSUB "" Fr%
        S: * LSUB (\\Noselect) "/" Fruit
        S: a3 OK LSUB completed
    """)


def test_subscribe_needs_an_existing_mailbox_unsubscribe_does_not(conv):
    conv.script("""
        C: a1 SUBSCRIBE Nowhere
        S: a1 NO [NONEXISTENT] Mailbox does not exist
        C: a2 UNSUBSCRIBE Nowhere
        S: a2 OK UNSUBSCRIBE completed
        C: a3 UNSUBSCRIBE Sent
        S: a3 OK UNSUBSCRIBE completed
        C: a4 LSUB "" Sent
        S: a4 OK LSUB completed
        C: a5 SUBSCRIBE Sent
        S: a5 OK SUBSCRIBE completed
        C: a6 LSUB "" Sent
        S: * LSUB () "/" Sent
        S: a6 OK LSUB completed
    """)


# -- LIST (RFC 3501) ---------------------------------------------------------------------------------------


def test_list_empty_pattern_returns_the_delimiter(conv):
    """RFC 3501 6.3.8: the root of a flat namespace is the empty string."""
    conv.script("""
        C: A101 LIST "" ""
        S: * LIST (\\Noselect) "/" ""
        S: A101 OK LIST completed
        C: A103 LIST /usr/staff/jones ""
        S: * LIST (\\Noselect) "/" ""
        S: A103 OK LIST completed
    """)


def test_list_reference_and_wildcards(conv):
    """RFC 3501 6.3.8's ~/Mail/ example, with the parent existing (midb creates parents)."""
    conv.command('CREATE "~/Mail/meetings"')
    conv.command('CREATE "~/Mail/foo/bar"')
    conv.script("""
        C: A202 LIST ~/Mail/ %
        S: * LIST (\\HasChildren) "/" ~/Mail/foo
        S: * LIST (\\HasNoChildren) "/" ~/Mail/meetings
        S: A202 OK LIST completed
        C: A203 LIST ~/Mail/ *
        S: * LIST (\\HasChildren) "/" ~/Mail/foo
        S: * LIST (\\HasNoChildren) "/" ~/Mail/foo/bar
        S: * LIST (\\HasNoChildren) "/" ~/Mail/meetings
        S: A203 OK LIST completed
        C: A204 LIST "" ~/%
        S: * LIST (\\HasChildren) "/" ~/Mail
        S: A204 OK LIST completed
        C: A205 LIST ~/Mail/ /x/%
        S: A205 OK LIST completed
        C: A206 LIST "" %/%/f%
        S: * LIST (\\HasChildren) "/" ~/Mail/foo
        S: A206 OK LIST completed
    """)


def test_list_percent_at_top_level(conv):
    conv.command("CREATE Sent/2024")
    conv.script("""
        C: a1 LIST "" %
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\Archive \\HasNoChildren) "/" Archive
        S: * LIST (\\Drafts \\HasNoChildren) "/" Drafts
        S: * LIST (\\Junk \\HasNoChildren) "/" Junk
        S: * LIST (\\Sent \\HasChildren) "/" Sent
        S: * LIST (\\Trash \\HasNoChildren) "/" Trash
        S: a1 OK LIST completed
    """)


def test_list_inbox_is_case_insensitive(conv):
    conv.command("CREATE INBOX/Sub")
    conv.script("""
        C: a1 LIST "" inbox
        S: * LIST (\\HasChildren) "/" INBOX
        S: a1 OK LIST completed
        C: a2 LIST "" InBoX/%
        S: * LIST (\\HasNoChildren) "/" INBOX/Sub
        S: a2 OK LIST completed
        C: a3 LIST inbox/ %
        S: * LIST (\\HasNoChildren) "/" INBOX/Sub
        S: a3 OK LIST completed
    """)


def test_inbox_is_case_insensitive_in_ascii_only(conv):
    """RFC 3501 5.1: "ınbox" (a dotless i: "ınbox".upper() == "INBOX" in Python) is a folder of
    its own, not INBOX, to CREATE, LIST and SELECT alike."""
    conv.add_message()
    conv.script("""
        C: a1 CREATE &ATE-nbox
        S: a1 OK [MAILBOXID ({*})] CREATE completed
        C: a2 LIST "" &ATE-nbox
        S: * LIST (\\HasNoChildren) "/" &ATE-nbox
        S: a2 OK LIST completed
        C: a3 STATUS &ATE-nbox (MESSAGES)
        S: * STATUS &ATE-nbox (MESSAGES 0)
        S: a3 OK STATUS completed
        C: a4 STATUS INBOX (MESSAGES)
        S: * STATUS INBOX (MESSAGES 1)
        S: a4 OK STATUS completed
    """)


def test_list_other_names_are_case_sensitive(conv):
    conv.script("""
        C: a1 LIST "" sent
        S: a1 OK LIST completed
    """)


# -- LIST-EXTENDED (RFC 5258), SPECIAL-USE (RFC 6154), LIST-STATUS (RFC 5819) -----------------------------


def test_rfc5258_example_1_and_3_children(conv):
    rfc5258_account(conv)
    expected = """
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * LIST (\\HasChildren) "/" Fruit
        S: * LIST (\\HasNoChildren) "/" Tofu
        S: * LIST (\\HasChildren) "/" Vegetable
        S: {tag} OK LIST completed
    """
    conv.script('C: A01 LIST "" %' + expected.replace("{tag}", "A01"))
    conv.script('C: A02 LIST "" % RETURN (CHILDREN)' + expected.replace("{tag}", "A02"))
    conv.script('C: A03 LIST (REMOTE) "" % RETURN (CHILDREN)' + expected.replace("{tag}", "A03"))


def test_rfc5258_example_2_subscribed(conv):
    rfc5258_account(conv)
    conv.script("""
        C: A02 LIST (SUBSCRIBED) "" *
        S: * LIST (\\Subscribed \\HasNoChildren) "/" INBOX
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Fruit/Banana
        S: * LIST (\\Subscribed \\NonExistent) "/" Fruit/Peach
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Vegetable/Broccoli
        S: A02 OK LIST completed
    """)


def test_rfc5258_subscribed_with_percent_needs_recursivematch(conv):
    rfc5258_account(conv)
    conv.script("""
        C: A05 LIST (SUBSCRIBED) "" %
        S: * LIST (\\Subscribed \\HasNoChildren) "/" INBOX
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable
        S: A05 OK LIST completed
        C: A06 LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)
        S: * LIST (\\Subscribed \\HasNoChildren) "/" INBOX
        S: * LIST (\\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable ("CHILDINFO" ("SUBSCRIBED"))
        S: A06 OK LIST completed
    """)


def test_rfc5258_recursivematch_with_star(conv):
    """RFC 5258 3.5: "servers SHOULD suppress redundant CHILDINFO responses": with "*" every
    subscribed child is returned itself, so no parent comes with CHILDINFO (nor is Fruit,
    which is not subscribed, listed at all); the answer is that of LIST (SUBSCRIBED) "" *."""
    rfc5258_account(conv)
    conv.script("""
        C: A07 LIST (SUBSCRIBED RECURSIVEMATCH) "" *
        S: * LIST (\\Subscribed \\HasNoChildren) "/" INBOX
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Fruit/Banana
        S: * LIST (\\Subscribed \\NonExistent) "/" Fruit/Peach
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Vegetable/Broccoli
        S: A07 OK LIST completed
        C: A08 LIST (SUBSCRIBED RECURSIVEMATCH) "" "Vegetable*"
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Vegetable/Broccoli
        S: A08 OK LIST completed
        C: A09 LIST (SUBSCRIBED RECURSIVEMATCH) "" "Fruit"
        S: * LIST (\\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))
        S: A09 OK LIST completed
    """)


def test_rfc5258_return_subscribed_and_multiple_patterns(conv):
    rfc5258_account(conv)
    conv.script("""
        C: A08 LIST "" ("Fruit/%" "Tofu" "Vegetable") RETURN (SUBSCRIBED)
        S: * LIST (\\HasNoChildren) "/" Fruit/Apple
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Fruit/Banana
        S: * LIST (\\HasNoChildren) "/" Tofu
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable
        S: A08 OK LIST completed
        C: A09 LIST "" ("Tofu" "T*" "")
        S: * LIST (\\HasNoChildren) "/" Tofu
        S: A09 OK LIST completed
    """)


def test_recursivematch_alone_is_bad(conv):
    conv.script("""
        C: a1 LIST (RECURSIVEMATCH) "" *
        S: a1 BAD {*}
        C: a2 LIST (SPECIAL-USE RECURSIVEMATCH) "" *
        S: a2 BAD {*}
        C: a3 LIST (BOGUS) "" *
        S: a3 BAD {*}
    """)


def test_rfc6154_special_use_selection_and_return(conv):
    conv.command("CREATE Zoo")
    special = """
        S: * LIST (\\Archive \\HasNoChildren) "/" Archive
        S: * LIST (\\Drafts \\HasNoChildren) "/" Drafts
        S: * LIST (\\Junk \\HasNoChildren) "/" Junk
        S: * LIST (\\Sent \\HasNoChildren) "/" Sent
        S: * LIST (\\Trash \\HasNoChildren) "/" Trash
    """
    conv.script('C: t1 LIST (SPECIAL-USE) "" *' + special + "S: t1 OK LIST completed")
    conv.script('C: t2 LIST "" * RETURN (SPECIAL-USE)\nS: * LIST (\\HasNoChildren) "/" INBOX' + special
                + 'S: * LIST (\\HasNoChildren) "/" Zoo\nS: t2 OK LIST completed')


def test_rfc5819_list_status(conv):
    bare_account(conv)
    conv.command("CREATE foo")
    for index in range(17):
        conv.add_message(flags=["\\Seen"] if index == 0 else [])
    for index in range(30):
        conv.add_message("foo", flags=["\\Seen"] if index == 0 else [])
    conv.script("""
        C: A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))
        S: * LIST (\\HasNoChildren) "/" INBOX
        S: * STATUS INBOX (MESSAGES 17 UNSEEN 16)
        S: * LIST (\\HasNoChildren) "/" foo
        S: * STATUS foo (MESSAGES 30 UNSEEN 29)
        S: A01 OK LIST completed
    """)


def test_rfc5819_no_status_for_a_parent_listed_for_its_children(conv):
    """RFC 5819 section 2: STATUS for each mailbox "matching the list pattern and selection
    options"; its example A02: a parent listed only for CHILDINFO gets none. Vegetable, subscribed
    itself, gets one, its CHILDINFO notwithstanding."""
    rfc5258_account(conv)
    conv.script("""
        C: A02 LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (STATUS (MESSAGES))
        S: * LIST (\\Subscribed \\HasNoChildren) "/" INBOX
        S: * STATUS INBOX (MESSAGES 0)
        S: * LIST (\\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))
        S: * LIST (\\Subscribed \\HasChildren) "/" Vegetable ("CHILDINFO" ("SUBSCRIBED"))
        S: * STATUS Vegetable (MESSAGES 0)
        S: A02 OK LIST completed
    """)


def test_list_status_skips_nonexistent_names(conv):
    rfc5258_account(conv)
    conv.script("""
        C: a1 LIST (SUBSCRIBED) "" Fruit/* RETURN (STATUS (MESSAGES))
        S: * LIST (\\Subscribed \\HasNoChildren) "/" Fruit/Banana
        S: * STATUS Fruit/Banana (MESSAGES 0)
        S: * LIST (\\Subscribed \\NonExistent) "/" Fruit/Peach
        S: a1 OK LIST completed
    """)


def test_list_names_in_utf8_under_imap4rev2(conv):
    conv.command('CREATE "Entw&APw-rfe/Alt"')
    conv.command("ENABLE IMAP4rev2")
    conv.script("""
        C: a1 LIST "" "Entwürfe/%"
        S: * LIST (\\HasNoChildren) "/" "Entwürfe/Alt"
        S: a1 OK LIST completed
        C: a2 STATUS "Entwürfe" (MESSAGES)
        S: * STATUS "Entwürfe" (MESSAGES 0)
        S: a2 OK STATUS completed
    """)


# -- XLIST / NAMESPACE ----------------------------------------------------------------------------------


def test_xlist_uses_gmail_attributes(conv):
    conv.script("""
        C: a1 XLIST "" *
        S: * XLIST (\\HasNoChildren \\Inbox) "/" INBOX
        S: * XLIST (\\HasNoChildren \\Archive) "/" Archive
        S: * XLIST (\\HasNoChildren \\Drafts) "/" Drafts
        S: * XLIST (\\HasNoChildren \\Spam) "/" Junk
        S: * XLIST (\\HasNoChildren \\Sent) "/" Sent
        S: * XLIST (\\HasNoChildren \\Trash) "/" Trash
        S: a1 OK XLIST completed
        C: a2 XLIST "" ""
        S: * XLIST (\\Noselect) "/" ""
        S: a2 OK XLIST completed
    """)


def test_namespace(conv):
    conv.script("""
        C: a1 NAMESPACE
        S: * NAMESPACE (("" "/")) NIL NIL
        S: a1 OK NAMESPACE completed
    """)


# -- STATUS ----------------------------------------------------------------------------------------------


def test_status_items(conv):
    conv.add_message(flags=["\\Seen"])
    conv.add_message(flags=["\\Deleted"])
    conv.add_message()
    folder = conv.folder("INBOX")
    conv.script(f"""
        C: a1 STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE APPENDLIMIT)
        S: * STATUS INBOX (MESSAGES 3 RECENT 3 UIDNEXT 4 UIDVALIDITY {folder.uidvalidity} UNSEEN 2 DELETED 1 SIZE {folder.size} APPENDLIMIT {conv.ctx.settings.max_literal})
        S: a1 OK STATUS completed
        C: a2 STATUS inbox (UIDNEXT MESSAGES)
        S: * STATUS INBOX (UIDNEXT 4 MESSAGES 3)
        S: a2 OK STATUS completed
    """)


def test_status_recent_is_claimed_by_a_select(conv):
    conv.add_message()
    other = conv.second_session()
    other.login()
    other.select()
    conv.script("""
        C: a1 STATUS INBOX (RECENT MESSAGES)
        S: * STATUS INBOX (RECENT 0 MESSAGES 1)
        S: a1 OK STATUS completed
    """)


def test_status_recent_of_the_selected_mailbox_counts_what_this_session_sees_as_recent(conv):
    """RFC 3501 6.3.10: RECENT is the number of messages with \\Recent, which in the selected
    mailbox are those this session claimed (a read-write SELECT) or was told of first."""
    conv.add_message()
    conv.add_message()
    assert b"* 2 RECENT" in conv.select()
    conv.script("""
        C: a2 STATUS INBOX (RECENT MESSAGES)
        S: * STATUS INBOX (RECENT 2 MESSAGES 2)
        S: a2 OK STATUS completed
    """)
    conv.add_message()   # not announced yet: nobody's, so \\Recent for everyone's STATUS
    examiner = conv.second_session()
    examiner.login()
    examiner.select(examine=True)   # told of it first, without claiming it: counted once
    assert b"* STATUS INBOX (RECENT 1)" in examiner.command("STATUS INBOX (RECENT)")
    conv.script("""
        C: a3 STATUS INBOX (RECENT)
        S: * STATUS INBOX (RECENT 3)
        S: * 3 EXISTS
        S: * 3 RECENT
        S: a3 OK STATUS completed
    """)
    other = conv.second_session()
    other.login()
    assert b"* STATUS INBOX (RECENT 0)" in other.command("STATUS INBOX (RECENT)")


def test_status_on_the_selected_mailbox_is_allowed(conv):
    conv.select()
    conv.script("""
        C: a1 STATUS INBOX (MESSAGES)
        S: * STATUS INBOX (MESSAGES 0)
        S: a1 OK STATUS completed
    """)


def test_status_errors(conv):
    conv.script("""
        C: a1 STATUS Nowhere (MESSAGES)
        S: a1 NO [NONEXISTENT] Mailbox does not exist
        C: a2 STATUS INBOX (BOGUS)
        S: a2 BAD {*}
        C: a3 STATUS INBOX ()
        S: a3 BAD {*}
    """)


# -- listing rules without a session ---------------------------------------------------------------------


def test_compile_pattern():
    assert listing.compile_pattern("a/%")("a/b")
    assert not listing.compile_pattern("a/%")("a/b/c")
    assert listing.compile_pattern("a/*")("a/b/c")
    assert listing.compile_pattern("a.b")("a.b") and not listing.compile_pattern("a.b")("axb")
    assert listing.compile_pattern("Inbox/%")("INBOX/x")
    assert not listing.compile_pattern("INB%")("inbox")


def _reference_match(pattern: str, name: str) -> bool:
    """The LIST wildcards as a regular expression: right, but exponential on many wildcards."""
    regex = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


def test_compile_pattern_agrees_with_the_regular_expression():
    rng = random.Random(4711)
    alphabet = "ab/*%"
    for _ in range(4000):
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))
        name = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 8)))
        assert listing.compile_pattern(pattern)(name) == _reference_match(pattern, name), (pattern, name)


def test_several_patterns_agree_with_the_regular_expressions():
    """LIST-EXTENDED's pattern lists: one NFA for all of them, no state carried between them."""
    rng = random.Random(815)
    for _ in range(1500):
        patterns = ["".join(rng.choice("ab/*%") for _ in range(rng.randint(0, 5)))
                    for _ in range(rng.randint(1, 4))]
        name = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 7)))
        expected = any(_reference_match(pattern, name) for pattern in patterns)
        assert bool(listing._matcher(patterns)(name)) == expected, (patterns, name)


def test_many_wildcards_are_linear():
    """A pattern of thousands of wildcards once held the interpreter lock for good in ``re``
    (catastrophic backtracking); it is answered like any other. Bounded by the test timeout."""
    name = "a" * 200
    assert not listing.compile_pattern("*" * 5000 + "x")(name)
    assert not listing.compile_pattern("*a" * 60 + "b")(name)
    assert listing.compile_pattern("%a" * 60 + "%")(name)
    assert not listing.compile_pattern("%a" * 60 + "%")(name[:100] + "/" + name[100:])


def test_literal_prefix():
    assert listing.literal_prefix(["*"]) == ""
    assert listing.literal_prefix(["Fruit/%"]) == "Fruit/"
    assert listing.literal_prefix(["Fruit/Apple"]) == "Fruit/Apple"
    assert listing.literal_prefix(["inbox/%"]) == "INBOX/"   # INBOX is matched in any case
    assert listing.literal_prefix(["inbox"]) == "INBOX"
    assert listing.literal_prefix(["Inbox*"]) == "Inbox"     # not the INBOX component: as matched
    assert listing.literal_prefix(["Fruit/%", "Fruit/Apple"]) == "Fruit/"
    assert listing.literal_prefix(["Fruit/%", "Vegetable/%"]) == ""
    assert listing.literal_prefix(["a%b*"]) == "a"
    assert listing.literal_prefix([]) == ""


def test_a_listing_of_one_branch_answers_as_one_of_every_folder(conv):
    """LIST, LSUB and XLIST read only the folders and subscriptions that start with the
    patterns' literal prefix; whatever the pattern and options, the answer is the one every
    folder and subscription would give."""
    rfc5258_account(conv)
    for name in ("Fruit/Apple/Green", "Fruitcake", "Fruit basket", "INBOX/Later", "Ünïcode/Ärger"):
        conv.store.create_folder("alice", name)
    for name in ("Fruit/Apple/Green", "Fruitcake", "Ünïcode/Ärger", "Gone/Deep", "INBOX/Later"):
        conv.store.set_subscribed("alice", name, True)
    conv.store.create_folder("alice", "Fruit/Old", special_use="\\Archive")
    every = conv.store.folder_entries("alice")
    every_subscription = conv.store.subscriptions("alice")
    option_sets = [{}, {"select_subscribed": True}, {"select_subscribed": True, "recursive_match": True},
                   {"return_subscribed": True}, {"select_special_use": True}]
    patterns = ["*", "%", "Fruit", "Fruit*", "Fruit/%", "Fruit%", "Fruit/Apple/%", "inbox", "inbox/*",
                "Ü*", "%/%", "Gone/%", "Gone/*", "Nothing", "Fruit/Peach"]
    for pattern in patterns:
        prefix = listing.literal_prefix([pattern])
        branch = conv.store.folder_entries("alice", prefix)
        branch_subscriptions = conv.store.subscriptions("alice", prefix)
        for options in option_sets:
            assert (listing.list_mailboxes(branch, branch_subscriptions, [pattern], **options)
                    == listing.list_mailboxes(every, every_subscription, [pattern], **options)), (pattern, options)
        assert (listing.lsub_mailboxes(conv.store.folder_names("alice", prefix), branch_subscriptions, pattern)
                == listing.lsub_mailboxes(conv.store.folder_names("alice"), every_subscription, pattern)), pattern
        assert conv.store.folder_names("alice", prefix) == [folder.name for folder in branch]
        assert listing.xlist_mailboxes(branch, pattern) == listing.xlist_mailboxes(every, pattern), pattern
    conv.script("""
        C: a1 LIST "" Fruit/%
        S: * LIST (\\HasChildren) "/" Fruit/Apple
        S: * LIST (\\HasNoChildren) "/" Fruit/Banana
        S: * LIST (\\Archive \\HasNoChildren) "/" Fruit/Old
        S: a1 OK LIST completed
        C: a2 LSUB "" Gone/%
        S: * LSUB (\\Noselect) "/" Gone/Deep
        S: a2 OK LSUB completed
        C: a3 LSUB "" %
        S: * LSUB () "/" INBOX
        S: * LSUB (\\Noselect) "/" Fruit
        S: * LSUB () "/" Fruitcake
        S: * LSUB (\\Noselect) "/" Gone
        S: * LSUB () "/" Vegetable
        S: * LSUB (\\Noselect) "/" &ANw-n&AO8-code
        S: a3 OK LSUB completed
    """)


def test_a_listing_larger_than_one_output_item_is_whole_and_in_order(conv):
    bare_account(conv)
    names = [f"Archive-{number:04d}-" + "x" * 100 for number in range(400)]   # about 50 KB of answer
    for name in names:
        conv.store.create_folder("alice", name)
    lines = conv.command('LIST "" *')
    assert lines[:-1] == [b'* LIST (\\HasNoChildren) "/" ' + name.encode() for name in ["INBOX", *names]]
    lines = conv.command('LIST "" * RETURN (STATUS (MESSAGES))')
    assert len(lines) == 1 + 2 * 401 and lines[-2] == b"* STATUS " + names[-1].encode() + b" (MESSAGES 0)"


def test_coalesced_lines_keep_their_order_and_bound_each_item():
    lines = [b"* %d\r\n" % number for number in range(1000)]
    items = list(coalesced(lines, limit=100))
    assert b"".join(items) == b"".join(lines)
    assert all(100 <= len(item) < 107 for item in items[:-1]) and 0 < len(items[-1]) < 107
    assert list(coalesced([], limit=100)) == []


def test_canonical_pattern():
    assert listing.canonical_pattern("Fruit/", "%") == "Fruit/%"
    assert listing.canonical_pattern("Fruit/", "/x") == "/x"
    assert listing.canonical_pattern("", "*") == "*"
