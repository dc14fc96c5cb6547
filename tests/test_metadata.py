"""METADATA (RFC 5464): midb's annotation store (midb/metadata.py) and the GETMETADATA /
SETMETADATA commands (gximap/session/commands/metadata.py), with the RFC's examples."""

from __future__ import annotations

import pytest
from conversation import DATA_DIR, Conversation

from gximap import config
from gximap.daemon import settings_from_config
from midb import errors
from midb.keys import folder_key
from midb.metadata import SERVER, normalize_entry
from midb.store import Store

# -- the store -----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "midb", fsync=False, data_path=[str(DATA_DIR)]) as midb:
        midb.create_account("alice")
        midb.create_account("bob")
        yield midb


def folder_id(store: Store, name: str, account: str = "alice") -> int:
    info = store.get_folder(account, name)
    assert info is not None
    return info.id


def test_set_get_remove_round_trip(store):
    inbox = folder_id(store, "INBOX")
    store.set_metadata("alice", inbox, [("/private/comment", b"mine"), ("/shared/comment", b"ours")])
    assert store.get_metadata("alice", inbox, ["/private/comment", "/shared/comment", "/private/x"]) == {
        "/private/comment": b"mine", "/shared/comment": b"ours"}
    store.set_metadata("alice", inbox, [("/private/comment", None), ("/private/never", None)])
    assert store.get_metadata("alice", inbox, ["/private/comment", "/shared/comment"]) == {
        "/shared/comment": b"ours"}


def test_entry_names_are_case_insensitive(store):
    inbox = folder_id(store, "INBOX")
    store.set_metadata("alice", inbox, [("/Private/Vendor/Example/Colour", b"red")])
    assert store.get_metadata("alice", inbox, ["/PRIVATE/vendor/example/colour"]) == {
        "/private/vendor/example/colour": b"red"}


def test_depth(store):
    inbox = folder_id(store, "INBOX")
    store.set_metadata("alice", inbox, [
        ("/private/a", b"0"), ("/private/a/b", b"1"), ("/private/a/b/c", b"2"), ("/private/ab", b"x"),
        ("/shared/a/b", b"s"),
    ])
    assert list(store.get_metadata("alice", inbox, ["/private/a"])) == ["/private/a"]
    assert list(store.get_metadata("alice", inbox, ["/private/a"], depth="1")) == ["/private/a", "/private/a/b"]
    assert list(store.get_metadata("alice", inbox, ["/private/a"], depth="infinity")) == [
        "/private/a", "/private/a/b", "/private/a/b/c"]
    assert list(store.get_metadata("alice", inbox, ["/private", "/shared"], depth="infinity")) == [
        "/private/a", "/private/a/b", "/private/a/b/c", "/private/ab", "/shared/a/b"]


def test_server_annotations_are_per_account(store):
    store.set_metadata("alice", SERVER, [("/private/vendor/x/theme", b"dark")])
    assert store.get_metadata("alice", SERVER, ["/private/vendor/x/theme"]) == {"/private/vendor/x/theme": b"dark"}
    assert store.get_metadata("bob", SERVER, ["/private/vendor/x/theme"]) == {}
    # Folder ids are per account: bob's INBOX does not see alice's INBOX annotations.
    store.set_metadata("alice", folder_id(store, "INBOX"), [("/private/comment", b"a")])
    assert store.get_metadata("bob", folder_id(store, "INBOX", "bob"), ["/private/comment"]) == {}


@pytest.mark.parametrize("entry", ["/private", "/shared", "private/x", "/other/x", "/private//x", "/private/x/",
                                   "/private/*", "/private/%", "/private/\x01", "/private/ü",
                                   "/private/\u212a", "/p" * 200, 7])
def test_invalid_entry_names(store, entry):
    with pytest.raises(errors.InvalidArgument):
        store.set_metadata("alice", SERVER, [(entry, b"v")])


def test_scopes_may_be_looked_up_but_not_set():
    assert normalize_entry("/Private") == "/private"
    with pytest.raises(errors.InvalidArgument):
        normalize_entry("/private", settable=True)


@pytest.mark.parametrize("bad", [
    dict(changes="/private/x"), dict(changes=[("/private/x", "text")]), dict(changes=[("/private/x",)]),
    dict(changes=[("/private/x", b"v")], max_entries=-1), dict(changes=[("/private/x", b"v")], max_value_size=None),
])
def test_invalid_arguments(store, bad):
    with pytest.raises(errors.InvalidArgument):
        store.set_metadata("alice", SERVER, bad.pop("changes"), **bad)


def test_invalid_lookups(store):
    with pytest.raises(errors.InvalidArgument):
        store.get_metadata("alice", SERVER, ["/private/x"], depth="2")
    with pytest.raises(errors.InvalidArgument):
        store.get_metadata("alice", SERVER, "/private/x")
    with pytest.raises(errors.InvalidArgument):
        store.get_metadata("alice", SERVER, 42)  # type: ignore[arg-type]
    with pytest.raises(errors.NoSuchFolder):
        store.get_metadata("alice", 999, ["/private/x"])
    with pytest.raises(errors.NoSuchFolder):
        store.set_metadata("alice", -1, [("/private/x", b"v")])
    with pytest.raises(errors.NoSuchAccount):
        store.get_metadata("carol", SERVER, ["/private/x"])


def test_value_size_limit_is_all_or_nothing(store):
    with pytest.raises(errors.MetadataTooBig) as raised:
        store.set_metadata("alice", SERVER, [("/private/a", b"ok"), ("/private/b", b"x" * 101)], max_value_size=100)
    assert raised.value.limit == 100
    assert store.get_metadata("alice", SERVER, ["/private/a", "/private/b"]) == {}


def test_entry_count_limit(store):
    inbox = folder_id(store, "INBOX")
    store.set_metadata("alice", inbox, [("/private/a", b"1"), ("/shared/b", b"2")], max_entries=3)
    with pytest.raises(errors.MetadataTooMany):
        store.set_metadata("alice", inbox, [("/private/c", b"3"), ("/private/d", b"4")], max_entries=3)
    assert store.get_metadata("alice", inbox, ["/private/c", "/private/d"]) == {}
    store.set_metadata("alice", inbox, [("/private/c", b"3"), ("/private/a", b"new")], max_entries=3)
    # A lowered limit still lets the owner replace and remove, just not grow.
    store.set_metadata("alice", inbox, [("/private/a", b"newer"), ("/shared/b", None)], max_entries=1)
    with pytest.raises(errors.MetadataTooMany):
        store.set_metadata("alice", inbox, [("/private/e", b"5")], max_entries=1)
    # Other folders and the server have their own count.
    store.set_metadata("alice", SERVER, [("/private/e", b"5")], max_entries=1)
    assert store.get_metadata("alice", inbox, ["/private"], depth="infinity") == {
        "/private/a": b"newer", "/private/c": b"3"}


def test_folder_life_cycle(store):
    work = store.create_folder("alice", "Work").id
    store.set_metadata("alice", work, [("/private/comment", b"projects")])
    renamed = store.rename_folder("alice", "Work", "Archive/Work")
    assert renamed.id == work
    assert store.get_metadata("alice", work, ["/private/comment"]) == {"/private/comment": b"projects"}
    store.delete_folder("alice", "Archive/Work")
    again = store.create_folder("alice", "Archive/Work").id
    assert store.get_metadata("alice", again, ["/private/comment"]) == {}
    assert store.verify() == []


def test_renaming_inbox_copies_its_annotations(store):
    inbox = folder_id(store, "INBOX")
    store.set_metadata("alice", inbox, [("/private/comment", b"inbox")])
    old_mail = store.rename_folder("alice", "INBOX", "Old mail")
    assert store.get_metadata("alice", inbox, ["/private/comment"]) == {"/private/comment": b"inbox"}
    assert store.get_metadata("alice", old_mail.id, ["/private/comment"]) == {"/private/comment": b"inbox"}


def test_deleting_the_account_removes_its_annotations(store):
    store.set_metadata("alice", SERVER, [("/private/x", b"1")])
    store.set_metadata("alice", folder_id(store, "INBOX"), [("/private/x", b"2")])
    store.delete_account("alice")
    store.create_account("alice")
    assert store.get_metadata("alice", SERVER, ["/private/x"]) == {}
    assert store.verify() == []


def test_verify_reports_and_repairs_dangling_annotations(store):
    account_id = store.get_account("alice").id

    def plant(txn, dbs, effects):
        txn.put(folder_key(account_id, 4242) + b"/private/lost", b"v", db=dbs.metadata)
        txn.put(folder_key(9999, 0) + b"/private/lost", b"v", db=dbs.metadata)

    store._write(plant, store._env)
    store.set_metadata("alice", SERVER, [("/private/kept", b"v")])
    problems = store.verify()
    assert len(problems) == 2 and all(problem.startswith("error: annotation") for problem in problems)
    store.verify(repair=True)
    assert store.verify() == []
    assert store.get_metadata("alice", SERVER, ["/private/kept"]) == {"/private/kept": b"v"}


# -- the commands ---------------------------------------------------------------------------------


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path, metadata_comment="Shared comment", metadata_admin="mailto:postmaster@example.org",
                      metadata_max_size=1024, metadata_max_entries=10) as conversation:
        conversation.login()
        yield conversation


def test_capabilities(conv):
    caps = conv.command("CAPABILITY")[0].decode().split()
    assert "METADATA" in caps and "METADATA-SERVER" in caps


def test_rfc5464_section_4_2_examples(conv):
    inbox = conv.folder("INBOX").id
    conv.store.set_metadata("alice", inbox, [("/private/comment", b"My own comment"),
                                             ("/shared/comment", b"Shared comment")])
    conv.script("""
        C: a GETMETADATA "" /shared/comment
        S: * METADATA "" (/shared/comment "Shared comment")
        S: a OK GETMETADATA completed
        C: a GETMETADATA "INBOX" /private/comment
        S: * METADATA INBOX (/private/comment "My own comment")
        S: a OK GETMETADATA completed
        C: a GETMETADATA "INBOX" (/shared/comment /private/comment)
        S: * METADATA INBOX (/shared/comment "Shared comment" /private/comment "My own comment")
        S: a OK GETMETADATA completed
    """)


def test_rfc5464_maxsize_example(conv):
    conv.store.set_metadata("alice", conv.folder("INBOX").id, [("/private/comment", b"My own comment"),
                                                              ("/shared/comment", b"c" * 2199)])
    conv.script("""
        C: a GETMETADATA "INBOX" (MAXSIZE 1024) (/shared/comment /private/comment)
        S: * METADATA INBOX (/private/comment "My own comment")
        S: a OK [METADATA LONGENTRIES 2199] GETMETADATA completed
        C: b GETMETADATA (MAXSIZE 1024) INBOX (/shared/comment /private/comment)
        S: * METADATA INBOX (/private/comment "My own comment")
        S: b OK [METADATA LONGENTRIES 2199] GETMETADATA completed
        C: c GETMETADATA (MAXSIZE 10) INBOX (/shared/comment /private/comment)
        S: c OK [METADATA LONGENTRIES 2199] GETMETADATA completed
    """)


def test_rfc5464_depth_example(conv):
    conv.store.set_metadata("alice", conv.folder("INBOX").id, [
        ("/private/filters/values/small", b"SMALLER 5000"),
        ("/private/filters/values/boss", b'FROM "boss@example.com"'),
        ("/private/filters/values/boss/deeper", b"not at depth 1"),
    ])
    conv.script("""
        C: a GETMETADATA "INBOX" (DEPTH 1) (/private/filters/values)
        S: * METADATA INBOX (/private/filters/values/boss "FROM \\"boss@example.com\\"" /private/filters/values/small "SMALLER 5000")
        S: a OK GETMETADATA completed
        C: b GETMETADATA (DEPTH infinity) INBOX /private/filters
        S: * METADATA INBOX (/private/filters/values/boss "FROM \\"boss@example.com\\"" /private/filters/values/boss/deeper "not at depth 1" /private/filters/values/small "SMALLER 5000")
        S: b OK GETMETADATA completed
        C: c GETMETADATA (DEPTH 1) INBOX /private/nothing
        S: c OK GETMETADATA completed
    """)  # noqa: E501


def test_rfc5464_section_4_3_examples(conv):
    conv.script("""
        C: a SETMETADATA INBOX (/private/comment {33}
        S: + Ready for literal data
        C: My new comment across
        C: two lines.)
        S: a OK SETMETADATA completed
        C: b GETMETADATA INBOX /private/comment
        S: * METADATA INBOX (/private/comment {33}
        S: My new comment across
        S: two lines.)
        S: b OK GETMETADATA completed
        C: a SETMETADATA INBOX (/private/comment NIL)
        S: a OK SETMETADATA completed
        C: a SETMETADATA INBOX (/private/comment "My new comment" /shared/comment "This one is for you!")
        S: a OK SETMETADATA completed
        C: c GETMETADATA INBOX (/private/comment /shared/comment)
        S: * METADATA INBOX (/private/comment "My new comment" /shared/comment "This one is for you!")
        S: c OK GETMETADATA completed
    """)


def test_rfc5464_toomany_example(conv):
    conv.store.set_metadata("alice", conv.folder("INBOX").id, [(f"/shared/n{i}", b"v") for i in range(10)])
    conv.script("""
        C: a SETMETADATA INBOX (/private/comment "My new comment")
        S: a NO [METADATA TOOMANY] Too many metadata entries
        C: b SETMETADATA INBOX (/shared/n1 "replaced" /shared/n2 NIL)
        S: b OK SETMETADATA completed
        C: c SETMETADATA INBOX (/private/comment "My new comment")
        S: c OK SETMETADATA completed
    """)


def test_rfc5464_section_4_4_1_examples(conv):
    conv.store.set_metadata("alice", conv.folder("INBOX").id, [("/private/comment", b"My comment"),
                                                              ("/shared/comment", b"Its sunny outside!")])
    conv.script("""
        C: a GETMETADATA "" /shared/comment
        S: * METADATA "" (/shared/comment "Shared comment")
        S: a OK GETMETADATA completed
        C: a GETMETADATA "INBOX" /private/comment /shared/comment
        S: * METADATA INBOX (/private/comment "My comment" /shared/comment "Its sunny outside!")
        S: a OK GETMETADATA completed
    """)


def test_missing_entries_are_nil_without_depth(conv):
    conv.script("""
        C: a GETMETADATA INBOX (/private/comment /shared/comment)
        S: * METADATA INBOX (/private/comment NIL /shared/comment NIL)
        S: a OK GETMETADATA completed
        C: b GETMETADATA INBOX /private
        S: b OK GETMETADATA completed
    """)


def test_value_too_large_is_refused_before_the_upload(conv):
    """A value announced as a synchronising literal longer than imap_metadata_max_size gets NO
    [METADATA MAXSIZE] instead of "+" (RFC 5464 section 4.3, RFC 9051 section 7.5), whichever
    of the command's values it is; an entry name sent as a literal, and a value within the
    limit, are taken as ever. Nothing is set."""
    too_long = b"a NO [METADATA MAXSIZE 1024] Metadata value too long"
    assert conv.send(b"a SETMETADATA INBOX (/private/comment {1025}\r\n") == [too_long]
    assert conv.send(b"a SETMETADATA INBOX (/private/comment ~{4096}\r\n") == [too_long]   # literal8
    assert conv.send(b"b SETMETADATA {5}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b'INBOX (/private/a "x" {16}\r\n') == [b"+ Ready for literal data"]   # an entry name
    assert conv.send(b"/private/comment {1024}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b"y" * 1024 + b" /private/b {1025}\r\n") == [b"b " + too_long[2:]]
    conv.script("""
        C: c GETMETADATA INBOX (/private/a /private/b /private/comment)
        S: * METADATA INBOX (/private/a NIL /private/b NIL /private/comment NIL)
        S: c OK GETMETADATA completed
    """)


def test_value_too_large_changes_nothing(conv):
    big = b"x" * 1025
    lines = conv.send(b'a SETMETADATA INBOX (/private/a "small" /private/b {1025+}\r\n' + big + b")\r\n")
    assert lines == [b"a NO [METADATA MAXSIZE 1024] Metadata value too long"]
    conv.script("""
        C: b GETMETADATA INBOX (/private/a /private/b)
        S: * METADATA INBOX (/private/a NIL /private/b NIL)
        S: b OK GETMETADATA completed
    """)


def test_binary_and_8bit_values(conv):
    # value = nstring / literal8: data with NUL travels as literal8 both ways.
    assert conv.send(b"a SETMETADATA INBOX (/private/vendor/test/bin ~{5+}\r\na\x00b\r\n)\r\n") == [
        b"a OK SETMETADATA completed"]
    assert conv.send(b"b GETMETADATA INBOX /private/vendor/test/bin\r\n") == [
        b"* METADATA INBOX (/private/vendor/test/bin ~{5}\r\na\x00b\r\n)", b"b OK GETMETADATA completed"]
    conv.script("""
        C: c SETMETADATA INBOX (/private/comment {7+}
        C: Grüße)
        S: c OK SETMETADATA completed
        C: d GETMETADATA INBOX /private/comment
        S: * METADATA INBOX (/private/comment {7}
        S: Grüße)
        S: d OK GETMETADATA completed
        C: e ENABLE UTF8=ACCEPT
        S: * ENABLED UTF8=ACCEPT
        S: e OK ENABLE completed
        C: f GETMETADATA INBOX /private/comment
        S: * METADATA INBOX (/private/comment "Grüße")
        S: f OK GETMETADATA completed
    """)


def test_8bit_values_that_are_not_utf8_go_as_literals_under_utf8_accept(conv):
    # RFC 6855 / RFC 9051: after ENABLE UTF8=ACCEPT a quoted string may hold 8-bit octets only
    # as valid UTF-8; a binary value without NUL is a literal, as it was before the ENABLE.
    assert conv.send(b"a SETMETADATA INBOX (/private/vendor/test/bin {2+}\r\n\xff\xfe)\r\n") == [
        b"a OK SETMETADATA completed"]
    conv.command("ENABLE UTF8=ACCEPT")
    assert conv.send(b"b GETMETADATA INBOX /private/vendor/test/bin\r\n") == [
        b"* METADATA INBOX (/private/vendor/test/bin {2}\r\n\xff\xfe)", b"b OK GETMETADATA completed"]


def test_server_entries(conv):
    conv.script("""
        C: a GETMETADATA "" (DEPTH infinity) /shared
        S: * METADATA "" (/shared/admin "mailto:postmaster@example.org" /shared/comment "Shared comment")
        S: a OK GETMETADATA completed
        C: b SETMETADATA "" (/shared/comment "mine now")
        S: b NO [NOPERM] Server annotation /shared/comment is read-only
        C: c SETMETADATA "" (/private/vendor/test/theme "dark" /shared/vendor/test/x "y")
        S: c NO [NOPERM] Server annotation /shared/vendor/test/x is read-only
        C: d SETMETADATA "" (/private/vendor/test/theme "dark")
        S: d OK SETMETADATA completed
        C: e GETMETADATA "" (DEPTH infinity) (/private /shared/admin)
        S: * METADATA "" (/private/vendor/test/theme "dark" /shared/admin "mailto:postmaster@example.org")
        S: e OK GETMETADATA completed
    """)


def test_server_entries_without_configuration(tmp_path):
    with Conversation(tmp_path) as conv:
        conv.login()
        conv.script("""
            C: a GETMETADATA "" (/shared/comment /shared/admin)
            S: * METADATA "" (/shared/comment NIL /shared/admin NIL)
            S: a OK GETMETADATA completed
        """)


def test_errors(conv):
    conv.script("""
        C: a GETMETADATA Nowhere /private/comment
        S: a NO [NONEXISTENT] Mailbox does not exist
        C: b SETMETADATA Nowhere (/private/comment "x")
        S: b NO [NONEXISTENT] Mailbox does not exist
        C: c GETMETADATA INBOX /comment
        S: c BAD {*}
        C: d SETMETADATA INBOX (/private/a* "x")
        S: d BAD {*}
        C: e SETMETADATA INBOX (/private "x")
        S: e BAD [CLIENTBUG] Invalid metadata entry name
        C: f GETMETADATA (DEPTH 2) INBOX /private
        S: f BAD {*}
        C: g GETMETADATA (MAXSIZE 1 MAXSIZE 2) INBOX /private
        S: g BAD {*}
        C: h SETMETADATA INBOX (/private/x//y "x")
        S: h BAD {*}
    """)
    lines = conv.send(b"i GETMETADATA INBOX {11+}\r\n/private/\xc3\xbc\r\n")
    assert lines == [b"i BAD [CLIENTBUG] Parse error: Invalid metadata entry name"]


def test_a_non_ascii_entry_name_does_not_alias_an_ascii_one(conv):
    # U+212A KELVIN SIGN lower-cases to ASCII "k": lowered before the check, the name was taken
    # as /private/k. RFC 5464 section 3.2: no non-ASCII in entry names; invalid ones are BAD.
    kelvin = "/private/\u212a".encode()
    lines = conv.send(b'a SETMETADATA INBOX (%s "x")\r\n' % kelvin)
    assert lines == [b"a BAD [CLIENTBUG] Parse error: Invalid metadata entry name"]
    lines = conv.send(b'b GETMETADATA INBOX "%s"\r\n' % kelvin)
    assert lines == [b"b BAD [CLIENTBUG] Parse error: Invalid metadata entry name"]
    assert conv.store.get_metadata("alice", conv.folder("INBOX").id, ["/private/k"]) == {}


def test_not_before_login(tmp_path):
    with Conversation(tmp_path) as conv:
        assert conv.send(b'a GETMETADATA "" /shared/comment\r\n') == [b"a BAD [CLIENTBUG] Log in first"]


def test_annotations_follow_renames_and_go_with_deletes(conv):
    conv.script("""
        C: a1 CREATE Work
        S: a1 OK [MAILBOXID ({*})] CREATE completed
        C: a2 SETMETADATA Work (/private/comment "projects")
        S: a2 OK SETMETADATA completed
        C: a3 RENAME Work Archive/Work
        S: a3 OK RENAME completed
        C: a4 GETMETADATA Archive/Work /private/comment
        S: * METADATA Archive/Work (/private/comment "projects")
        S: a4 OK GETMETADATA completed
        C: a5 DELETE Archive/Work
        S: a5 OK DELETE completed
        C: a6 CREATE Archive/Work
        S: a6 OK [MAILBOXID ({*})] CREATE completed
        C: a7 GETMETADATA Archive/Work /private/comment
        S: * METADATA Archive/Work (/private/comment NIL)
        S: a7 OK GETMETADATA completed
    """)


def test_works_in_selected_state_and_per_account(conv):
    conv.add_user("bob")
    conv.select()
    conv.command('SETMETADATA INBOX (/private/comment "alice\'s")')
    other = conv.second_session()
    other.login("bob")
    other.script("""
        C: b1 GETMETADATA INBOX /private/comment
        S: * METADATA INBOX (/private/comment NIL)
        S: b1 OK GETMETADATA completed
    """)


def test_directives_reach_the_sessions(tmp_path):
    path = tmp_path / "imap.cfg"
    path.write_text("imap_metadata_comment = Maintenance on Sunday\nimap_metadata_admin = tel:+1-555-0100\n"
                    "imap_metadata_max_size = 2K\nimap_metadata_max_entries = 12\n")
    settings = settings_from_config(config.load_config([str(path)], required=True))
    assert (settings.metadata_comment, settings.metadata_admin) == ("Maintenance on Sunday", "tel:+1-555-0100")
    assert (settings.metadata_max_size, settings.metadata_max_entries) == (2048, 12)
    path.write_text("imap_metadata_max_size = 512\n")  # RFC 5464 4.1: at least 1024 octets
    with pytest.raises(config.ConfigError):
        config.load_config([str(path)], required=True)
