"""midb.objectids: the forms and rules of MAILBOXID, EMAILID and THREADID (RFC 8474)."""

from __future__ import annotations

from midb import objectids
from midb.mime import digest
from midb.store import Store

BLOB = "0123456789abcdef0123456789abcdef"


def test_every_id_is_an_objectid() -> None:
    for value in (objectids.mailbox_id(0, 1, 1), objectids.mailbox_id(2**32 - 1, 2**32 - 1, 2**32 - 1),
                  objectids.email_id(BLOB), objectids.thread_id(BLOB, None, None, ())):
        assert objectids.is_objectid(value) and value[0].isalpha(), value
    assert not objectids.is_objectid("") and not objectids.is_objectid("a b")


def test_mailbox_ids_differ_by_account_folder_and_uidvalidity() -> None:
    ids = {objectids.mailbox_id(account, folder, validity)
           for account in (1, 2, 17) for folder in (1, 2, 17) for validity in (1, 2, 17)}
    assert len(ids) == 27
    assert objectids.mailbox_id(1, 17, 2) != objectids.mailbox_id(17, 1, 2)
    assert objectids.mailbox_id(10, 11, 12) == "Fa-b-c"


def test_an_emailid_names_its_body_and_nothing_else() -> None:
    assert objectids.blob_of_email_id(objectids.email_id(BLOB)) == BLOB
    for other in ("M", "M" + BLOB.upper(), "M" + BLOB[:-1], "T" + BLOB, "F1-2", "M" + BLOB + "0"):
        assert objectids.blob_of_email_id(other) is None, other


def test_the_thread_root_is_the_first_reference_else_the_parent_else_the_message() -> None:
    assert objectids.thread_root("c@x", "b@x", ("a@x", "b@x")) == "a@x"
    assert objectids.thread_root("c@x", "b@x", ()) == "b@x"
    assert objectids.thread_root("c@x", None, ()) == "c@x"
    assert objectids.thread_root(None, None, ()) is None
    start = objectids.thread_id("1" * 32, "a@x", None, ())
    assert objectids.thread_id("2" * 32, "b@x", "a@x", ()) == start
    assert objectids.thread_id("3" * 32, "c@x", "b@x", ("a@x", "b@x")) == start
    assert objectids.thread_id("4" * 32, "d@x", None, ()) != start
    # Without any id, a message is a thread of its own, named after its body; a body id that
    # happens to be written like a message id does not join that message's thread.
    alone = objectids.thread_id(BLOB, None, None, ())
    assert alone != objectids.thread_id("f" * 32, None, None, ())
    assert alone != objectids.thread_id("0" * 32, BLOB, None, ())


def test_thread_ids_are_pinned() -> None:
    """A THREADID given out must never change (RFC 8474 section 5.2): these values are what
    every release gives, whatever changes in how they are computed."""
    assert objectids.thread_id("0" * 32, "start@example.org", None, ()) == "T3baa21798263acc3"
    assert objectids.thread_id(BLOB, None, None, ()) == "Tccaaace47f009353"
    assert objectids.is_thread_id("T3baa21798263acc3")
    assert not objectids.is_thread_id("T3BAA21798263ACC3") and not objectids.is_thread_id("Tnothing")
    parsed = digest(b"Message-ID: <r@x>\r\nReferences: <start@example.org> <m@x>\r\n\r\nx\r\n")
    assert objectids.thread_id("1" * 32, parsed.message_id, parsed.in_reply_to, parsed.references) == (
        "T3baa21798263acc3")


def test_a_deep_thread_keeps_its_first_message() -> None:
    """A References list longer than the digest keeps (1,000 ids) or than the bytes it reads
    (1 MiB) still names the thread's first message."""
    many = b" ".join(b"<r%d@x>" % number for number in range(1500))
    parsed = digest(b"Message-ID: <m@x>\r\nReferences: <root@x> " + many + b"\r\n\r\nx\r\n")
    assert len(parsed.references) == 1000
    assert parsed.references[0] == "root@x" and parsed.references[-1] == "r1499@x"
    huge = b"<root@x> <" + b"y" * (1 << 20) + b"> <last@x>"
    parsed = digest(b"References: " + huge + b"\r\n\r\nx\r\n")
    assert parsed.references == ("root@x", "last@x")


def test_thread_ids_from_parsed_messages() -> None:
    """The digest's fields (angle brackets gone, a References list folded over lines) give
    the conversation one id."""
    first = digest(b"Message-ID: <Start@Example.org>\r\nSubject: a\r\n\r\nx\r\n")
    reply = digest(b"Message-ID: <r@example.org>\r\nReferences: <Start@Example.org>\r\n\t<mid@example.org>\r\n"
                   b"\r\ny\r\n")
    ids = {objectids.thread_id(BLOB, d.message_id, d.in_reply_to, d.references) for d in (first, reply)}
    assert len(ids) == 1


def test_a_free_text_in_reply_to_names_no_thread() -> None:
    """An In-Reply-To without a msg-id is no id (RFC 5256): each message is its own thread's
    start, not one of a thread named after the text's first word."""
    parsed = [digest(b"Message-ID: <%d@x>\r\nIn-Reply-To: %s\r\n\r\nx\r\n" % (number, text))
              for number, text in enumerate((b"Your message of Mon, 1 Jan 2008", b"Your note of Tue"))]
    assert [d.in_reply_to for d in parsed] == [None, None]
    assert [objectids.thread_id_of(BLOB, d) for d in parsed] == [
        objectids.thread_id(BLOB, f"{number}@x", None, ()) for number in range(2)]


def test_a_quoted_message_id_is_the_same_id_unquoted() -> None:
    """RFC 5256's quoted id-left names the same message: a reply's THREADID is the one of the
    message it answers, however either writes the id."""
    first = digest(b'Message-ID: <"01KF8JCEOCBS0045PS"@xxx.yyy.com>\r\n\r\nx\r\n')
    reply = digest(b"Message-ID: <r@x>\r\nIn-Reply-To: <01KF8JCEOCBS0045PS@xxx.yyy.com>\r\n\r\ny\r\n")
    spaced = digest(b'Message-ID: <r2@x>\r\nReferences: < "01KF8JCEOCBS0045PS"@xxx.yyy.com >\r\n\r\ny\r\n')
    assert len({objectids.thread_id_of(BLOB, d) for d in (first, reply, spaced)}) == 1
    assert objectids.thread_root(None, None, ('"a"@x',)) == "a@x"


def test_a_copy_keeps_the_body_hence_its_emailid(store: Store) -> None:
    """COPY shares the source's body; the same bytes appended again get a body of their own."""
    store.create_account("alice")
    inbox = store.get_folder("alice", "INBOX")
    target = store.create_folder("alice", "Kept")
    assert inbox is not None
    _validity, uid = store.append("alice", inbox.id, b"Subject: x\r\n\r\nbody\r\n")
    (source,) = store.messages("alice", inbox.id)
    store.copy("alice", inbox.id, [uid], target.id)
    (copied,) = store.messages("alice", target.id)
    assert objectids.email_id(copied.blob) == objectids.email_id(source.blob)
    store.append("alice", inbox.id, b"Subject: x\r\n\r\nbody\r\n")
    assert len({meta.blob for meta in store.messages("alice", inbox.id)}) == 2
