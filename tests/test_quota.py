"""QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT, SETQUOTA, STATUS DELETED-STORAGE and [OVERQUOTA]."""

from __future__ import annotations

import pytest
from conversation import Conversation

from gximap import config
from gximap.daemon import settings_from_config
from gximap.session.context import Settings


def message(size: int) -> bytes:
    """A message of exactly ``size`` octets."""
    head = b"From: bob@example.org\r\nSubject: sized\r\n\r\n"
    return head + b"x" * (size - len(head))


# Most tests here look at the accounts' own limits: without the server's default MAILBOX and
# ANNOTATION-STORAGE limits, which the tests of those defaults turn on.
NO_DEFAULTS = {"default_mailbox_quota": 0, "default_annotation_quota": 0}


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path, **NO_DEFAULTS) as conversation:
        conversation.login()
        yield conversation


@pytest.fixture
def admin(tmp_path):
    """alice may change quotas (imap_quota_admins = alice)."""
    with Conversation(tmp_path, quota_admins=("alice",), **NO_DEFAULTS) as conversation:
        conversation.login()
        yield conversation


def test_capabilities(conv, admin):
    caps = conv.capabilities()
    assert {"QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"} <= set(caps)
    assert "QUOTASET" not in caps
    assert "QUOTASET" in admin.capabilities()


def test_account_without_limits_has_no_quota_root(conv):
    conv.script("""
        C: a1 GETQUOTAROOT INBOX
        S: * QUOTAROOT INBOX
        S: a1 OK GETQUOTAROOT completed
        C: a2 GETQUOTA ""
        S: a2 NO [NONEXISTENT] No such quota root
    """)


def test_rfc_examples_with_the_account_root(admin):
    # RFC 9208 section 4 / RFC 2087 section 5, with gximap's one root "" per account; 10 KiB used.
    admin.add_message(data=message(6 * 1024))
    admin.add_message(data=message(4 * 1024))
    admin.script("""
        C: A001 SETQUOTA "" (STORAGE 512)
        S: * QUOTA "" (STORAGE 10 512)
        S: A001 OK SETQUOTA completed
        C: A002 GETQUOTA ""
        S: * QUOTA "" (STORAGE 10 512)
        S: A002 OK GETQUOTA completed
        C: A003 GETQUOTAROOT INBOX
        S: * QUOTAROOT INBOX ""
        S: * QUOTA "" (STORAGE 10 512)
        S: A003 OK GETQUOTAROOT completed
    """)
    assert admin.store.get_account("alice").quota_bytes == 512 * 1024


def test_storage_is_reported_in_kib_rounded_up(admin):
    admin.add_message(data=message(1025))
    admin.store.update_account("alice", quota_bytes=1000, quota_messages=5)  # already over it
    admin.script("""
        C: a1 GETQUOTA ""
        S: * QUOTA "" (STORAGE 2 1 MESSAGE 1 5)
        S: a1 OK GETQUOTA completed
    """)


def test_every_mailbox_shares_the_root(conv):
    conv.store.update_account("alice", quota_messages=100)
    conv.add_message("Sent")
    conv.command("CREATE Entw&APw-rfe")
    conv.script("""
        C: a1 GETQUOTAROOT Sent
        S: * QUOTAROOT Sent ""
        S: * QUOTA "" (MESSAGE 1 100)
        S: a1 OK GETQUOTAROOT completed
        C: a2 GETQUOTAROOT Entw&APw-rfe
        S: * QUOTAROOT Entw&APw-rfe ""
        S: * QUOTA "" (MESSAGE 1 100)
        S: a2 OK GETQUOTAROOT completed
    """)


def test_unknown_mailbox_and_root(conv):
    conv.store.update_account("alice", quota_messages=100)
    conv.script("""
        C: a1 GETQUOTAROOT Nowhere
        S: a1 NO [NONEXISTENT] Mailbox does not exist
        C: a2 GETQUOTA "#user/alice"
        S: a2 NO [NONEXISTENT] No such quota root
        C: a3 GETQUOTA
        S: a3 BAD {*}
    """)


def test_setquota_refused_without_admin_rights(conv):
    conv.store.update_account("alice", quota_messages=100)
    conv.script("""
        C: a1 SETQUOTA "" (STORAGE 512)
        S: a1 NO [NOPERM] Cannot change quota limits
    """)
    account = conv.store.get_account("alice")
    assert (account.quota_bytes, account.quota_messages) == (0, 100)


def test_setquota_drops_the_limits_it_does_not_name(admin):
    admin.script("""
        C: a1 SETQUOTA "" (STORAGE 512 MESSAGE 1000)
        S: * QUOTA "" (STORAGE 0 512 MESSAGE 0 1000)
        S: a1 OK SETQUOTA completed
        C: a2 SETQUOTA "" (message 5)
        S: * QUOTA "" (MESSAGE 0 5)
        S: a2 OK SETQUOTA completed
        C: a3 SETQUOTA "" ()
        S: a3 OK SETQUOTA completed
        C: a4 GETQUOTAROOT INBOX
        S: * QUOTAROOT INBOX
        S: a4 OK GETQUOTAROOT completed
    """)
    account = admin.store.get_account("alice")
    assert (account.quota_bytes, account.quota_messages) == (0, 0)


def test_setquota_errors_change_nothing(admin):
    admin.store.update_account("alice", quota_messages=7)
    admin.script("""
        C: a1 SETQUOTA "#user/alice" (STORAGE 512)
        S: a1 NO [NONEXISTENT] No such quota root
        C: a2 SETQUOTA "" (STORAGE 512 X-FOLDERS 10)
        S: a2 NO [CANNOT] Unsupported quota resource X-FOLDERS
        C: a3 SETQUOTA "" (STORAGE 0)
        S: a3 NO [LIMIT] Quota limit out of range: STORAGE
        C: a4 SETQUOTA "" (STORAGE 9007199254740992)
        S: a4 NO [LIMIT] Quota limit out of range: STORAGE
        C: a5 SETQUOTA "" (STORAGE)
        S: a5 BAD {*}
    """)
    account = admin.store.get_account("alice")
    assert (account.quota_bytes, account.quota_messages) == (0, 7)


def test_admin_sets_another_users_quota_by_impersonation(tmp_path):
    with Conversation(tmp_path, users=("alice", "root"), quota_admins=("root",)) as conv:
        conv.store.grant_owner("alice", "root")
        conv.login("root!alice")
        assert "QUOTASET" in conv.capabilities()
        conv.script("""
            C: a1 SETQUOTA "" (MESSAGE 50)
            S: * QUOTA "" (MESSAGE 0 50 MAILBOX 6 10000 ANNOTATION-STORAGE 0 1024)
            S: a1 OK SETQUOTA completed
        """)
        assert conv.store.get_account("alice").quota_messages == 50
        assert conv.store.get_account("root").quota_messages == 0
        # alice herself is no quota admin.
        other = conv.second_session()
        other.login("alice")
        assert "QUOTASET" not in other.capabilities()
        assert other.send(b"b1 SETQUOTA \"\" (MESSAGE 500)\r\n")[0].startswith(b"b1 NO [NOPERM]")


def test_append_copy_over_quota_fail_with_overquota(conv):
    conv.store.update_account("alice", quota_messages=2)
    conv.add_message()
    conv.select()
    conv.script("""
        C: a1 APPEND INBOX {5+}
        C: hello
        S: * 2 EXISTS
        S: * 2 RECENT
        S: a1 OK [APPENDUID {n} 2] APPEND completed
        C: a2 APPEND INBOX {5+}
        C: hello
        S: a2 NO [OVERQUOTA] Over quota
        C: a3 COPY 1 Trash
        S: a3 NO [OVERQUOTA] Over quota
    """)
    assert conv.store.usage("alice") == (len(b"From: bob@example.org\r\nSubject: test\r\n\r\nhello\r\n") + 5, 2)


def test_storage_quota_on_append(conv):
    conv.store.update_account("alice", quota_bytes=10 * 1024)
    conv.add_message(data=message(8 * 1024))
    data = message(3 * 1024)
    lines = conv.send(b"a1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data))
    assert lines == [b"a1 NO [OVERQUOTA] Over quota"]
    small = message(1024)
    lines = conv.send(b"a2 APPEND INBOX {%d+}\r\n%s\r\n" % (len(small), small))
    assert lines[-1].startswith(b"a2 OK [APPENDUID ")


def test_synchronising_append_over_quota_is_refused_before_the_upload(conv):
    # No "+": the client is not asked for octets that cannot be stored.
    conv.store.update_account("alice", quota_bytes=10 * 1024)
    conv.add_message(data=message(8 * 1024))
    data = message(3 * 1024)
    assert conv.send(b"a1 APPEND INBOX {%d}\r\n" % len(data)) == [b"a1 NO [OVERQUOTA] Over quota"]
    # The literal was never taken: what follows is framed as a new command.
    assert conv.send(b"a2 NOOP\r\n") == [b"a2 OK NOOP completed"]
    small = message(1024)
    assert conv.send(b"a3 APPEND INBOX {%d}\r\n" % len(small)) == [b"+ Ready for literal data"]
    assert conv.send(small + b"\r\n")[-1].startswith(b"a3 OK [APPENDUID ")
    assert conv.store.usage("alice")[1] == 2


def test_synchronising_append_over_message_quota_and_multiappend_total(conv):
    conv.store.update_account("alice", quota_messages=1)
    conv.add_message()
    assert conv.send(b"a1 APPEND INBOX {5}\r\n") == [b"a1 NO [OVERQUOTA] Over quota"]
    conv.store.update_account("alice", quota_messages=0, quota_bytes=10 * 1024)
    # MULTIAPPEND: each literal fits alone, the second one does not fit after the first.
    first = message(6 * 1024)
    assert conv.send(b"a2 APPEND INBOX {%d}\r\n" % len(first)) == [b"+ Ready for literal data"]
    assert conv.send(first + b" {%d}\r\n" % len(first)) == [b"a2 NO [OVERQUOTA] Over quota"]
    assert conv.send(b"a3 NOOP\r\n") == [b"a3 OK NOOP completed"]
    assert conv.store.usage("alice")[1] == 1


def test_early_overquota_counts_message_literals_only(conv):
    # The mailbox name as a literal is no message: a message that fits exactly is asked for.
    conv.store.update_account("alice", quota_bytes=10 * 1024)
    conv.add_message(data=message(8 * 1024))
    data = message(10 * 1024 - conv.store.usage("alice")[0])
    assert conv.send(b"a1 APPEND {5}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b"INBOX {%d}\r\n" % len(data)) == [b"+ Ready for literal data"]
    assert conv.send(data + b"\r\n")[-1].startswith(b"a1 OK [APPENDUID ")
    assert conv.store.usage("alice")[0] == 10 * 1024
    # MULTIAPPEND: room for one more message, so its second is refused before the upload.
    conv.store.update_account("alice", quota_bytes=0, quota_messages=3)
    first = message(1024)
    assert conv.send(b"a2 APPEND {5}\r\n") == [b"+ Ready for literal data"]
    assert conv.send(b"INBOX {%d}\r\n" % len(first)) == [b"+ Ready for literal data"]
    assert conv.send(first + b" {%d}\r\n" % len(first)) == [b"a2 NO [OVERQUOTA] Over quota"]
    assert conv.send(b"a3 NOOP\r\n") == [b"a3 OK NOOP completed"]
    assert conv.store.usage("alice")[1] == 2


def test_a_client_that_sends_the_literal_without_waiting_does_not_have_it_run_as_commands(conv):
    # RFC 3501 7.5: the client must wait for "+"; some do not. Their octets arrived before the
    # refusal went out, so they can only be the literal: discarded, never framed as commands.
    conv.store.update_account("alice", quota_messages=1)
    conv.add_message()
    body = b"Subject: x\r\n\r\nx1 DELETE Trash\r\nx2 LOGOUT\r\n"
    lines = conv.send(b"a1 APPEND INBOX {%d}\r\n%s\r\na2 NOOP\r\n" % (len(body), body))
    assert lines == [b"a1 NO [OVERQUOTA] Over quota", b"a2 OK NOOP completed"]
    assert conv.folder("Trash") is not None and not conv.closed
    # MULTIAPPEND sent whole: its second literal, already here too, goes the same way.
    lines = conv.send(b"a3 APPEND INBOX {%d}\r\n%s {%d}\r\n%s\r\na4 NOOP\r\n"
                      % (len(body), body, len(body), body))
    assert lines == [b"a3 NO [OVERQUOTA] Over quota", b"a4 OK NOOP completed"]
    # Octets that come in later than the refusal cannot be told from a new command.
    assert conv.send(b"a5 APPEND INBOX {5}\r\n") == [b"a5 NO [OVERQUOTA] Over quota"]
    assert conv.send(b"a6 NOOP\r\n") == [b"a6 OK NOOP completed"]
    assert conv.store.usage("alice")[1] == 1


def test_move_at_the_limit_is_allowed(conv):
    # One quota root per account: moving messages between its mailboxes changes no usage.
    conv.store.update_account("alice", quota_messages=1)
    conv.add_message()
    conv.select()
    lines = conv.command("MOVE 1 Trash")
    assert lines[-1].startswith(b"x") and b"OK" in lines[-1]
    assert conv.store.usage("alice")[1] == 1
    assert conv.folder("Trash").messages == 1


def test_expunge_frees_quota(conv):
    conv.store.update_account("alice", quota_messages=1)
    conv.add_message(flags=("\\Deleted",))
    conv.select()
    assert conv.send(b"a1 APPEND INBOX {5+}\r\nhello\r\n") == [b"a1 NO [OVERQUOTA] Over quota"]
    conv.command("EXPUNGE")
    assert conv.send(b"a2 APPEND INBOX {5+}\r\nhello\r\n")[-1].startswith(b"a2 OK ")


def test_status_deleted_and_deleted_storage(conv):
    conv.add_message(data=message(3000), flags=("\\Deleted",))
    conv.add_message(data=message(2049), flags=("\\Deleted", "\\Seen"))
    conv.add_message(data=message(50000))
    conv.script("""
        C: a1 STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)
        S: * STATUS INBOX (MESSAGES 3 DELETED 2 DELETED-STORAGE 5)
        S: a1 OK STATUS completed
        C: a2 STATUS Trash (DELETED DELETED-STORAGE)
        S: * STATUS Trash (DELETED 0 DELETED-STORAGE 0)
        S: a2 OK STATUS completed
    """)


def test_quota_admins_directive_reaches_the_sessions(tmp_path):
    path = tmp_path / "imap.cfg"
    path.write_text("imap_quota_admins = root, Alice\n")
    settings = settings_from_config(config.load_config([str(path)], required=True))
    assert settings.quota_admins == ("root", "Alice")
    assert config.lookup("imap_quota_admins").reloadable
    with Conversation(tmp_path / "server") as conv:
        conv.login()
        assert "QUOTASET" not in conv.capabilities()
        conv.ctx.reload(Settings(quota_admins=settings.quota_admins))  # SIGHUP
        assert "QUOTASET" in conv.capabilities()  # names compare case-insensitively
        conv.command('SETQUOTA "" (MESSAGE 10)')


# -- MAILBOX and ANNOTATION-STORAGE, with the server's defaults -----------------------------------


@pytest.fixture
def limited(tmp_path):
    """The server's defaults turned on small: 8 mailboxes (alice starts with 6), 1 KiB of
    annotations; alice may change quotas."""
    with Conversation(tmp_path, quota_admins=("alice",), default_mailbox_quota=8,
                      default_annotation_quota=1024) as conversation:
        conversation.login()
        yield conversation


def folder_names(conv: Conversation) -> list[str]:
    return sorted(folder.name for folder in conv.store.list_folders("alice"))


def test_default_quota_directives_reach_the_sessions(tmp_path):
    path = tmp_path / "imap.cfg"
    path.write_text("imap_default_mailbox_quota = 7\nimap_default_annotation_quota = 2K\n")
    settings = settings_from_config(config.load_config([str(path)], required=True))
    assert (settings.default_mailbox_quota, settings.default_annotation_quota) == (7, 2048)
    with Conversation(tmp_path / "server") as conv:
        conv.login()
        conv.ctx.reload(settings)  # SIGHUP
        conv.script("""
            C: a1 GETQUOTA ""
            S: * QUOTA "" (MAILBOX 6 7 ANNOTATION-STORAGE 0 2)
            S: a1 OK GETQUOTA completed
            C: a2 CREATE one
            S: a2 OK [MAILBOXID ({*})] CREATE completed
            C: a3 CREATE two
            S: a3 NO [OVERQUOTA] {*}
        """)


def test_capabilities_name_every_resource(conv):
    assert {"QUOTA=RES-MAILBOX", "QUOTA=RES-ANNOTATION-STORAGE"} <= set(conv.capabilities())


def test_server_defaults_give_every_account_a_root(tmp_path):
    with Conversation(tmp_path) as conv:   # the shipped defaults: 10,000 mailboxes, 1 MiB
        conv.login()
        conv.script("""
            C: a1 GETQUOTAROOT INBOX
            S: * QUOTAROOT INBOX ""
            S: * QUOTA "" (MAILBOX 6 10000 ANNOTATION-STORAGE 0 1024)
            S: a1 OK GETQUOTAROOT completed
        """)


def test_create_beyond_the_mailbox_quota(limited):
    before = folder_names(limited)
    limited.script("""
        C: a1 CREATE one/two/three
        S: a1 NO [OVERQUOTA] Mailbox quota reached: no more mailboxes can be created
        C: a2 CREATE one/two
        S: a2 OK [MAILBOXID ({*})] CREATE completed
        C: a3 GETQUOTA ""
        S: * QUOTA "" (MAILBOX 8 8 ANNOTATION-STORAGE 0 1)
        S: a3 OK GETQUOTA completed
        C: a4 CREATE one/two
        S: a4 NO [ALREADYEXISTS] Mailbox already exists
        C: a5 CREATE three
        S: a5 NO [OVERQUOTA] Mailbox quota reached: no more mailboxes can be created
    """)
    assert folder_names(limited) == sorted([*before, "one", "one/two"])


def test_rename_within_and_beyond_the_mailbox_quota(limited):
    limited.command("CREATE one")
    limited.command("CREATE two")   # 8 of 8
    limited.add_message()
    limited.script("""
        C: a1 RENAME one uno
        S: a1 OK RENAME completed
        C: a2 RENAME two deep/two
        S: a2 NO [OVERQUOTA] Mailbox quota reached: no more mailboxes can be created
        C: a3 RENAME INBOX Old
        S: a3 NO [OVERQUOTA] Mailbox quota reached: no more mailboxes can be created
        C: a4 DELETE uno
        S: a4 OK DELETE completed
        C: a5 RENAME INBOX Old
        S: a5 OK RENAME completed
    """)
    assert "deep" not in folder_names(limited)
    assert limited.store.get_folder("alice", "Old").messages == 1


def test_a_lowered_mailbox_limit_still_lets_the_user_delete_and_rename(limited):
    limited.store.update_account("alice", quota_mailboxes=3)   # alice has 6
    limited.script("""
        C: a1 GETQUOTA ""
        S: * QUOTA "" (MAILBOX 6 3 ANNOTATION-STORAGE 0 1)
        S: a1 OK GETQUOTA completed
        C: a2 RENAME Junk Spam
        S: a2 OK RENAME completed
        C: a3 DELETE Spam
        S: a3 OK DELETE completed
        C: a4 CREATE Junk
        S: a4 NO [OVERQUOTA] {*}
    """)


def test_setquota_sets_and_drops_the_accounts_own_limits(limited):
    limited.script("""
        C: a1 SETQUOTA "" (MAILBOX 20 ANNOTATION-STORAGE 4)
        S: * QUOTA "" (MAILBOX 6 20 ANNOTATION-STORAGE 0 4)
        S: a1 OK SETQUOTA completed
        C: a2 CREATE one
        S: a2 OK [MAILBOXID ({*})] CREATE completed
        C: a3 CREATE two
        S: a3 OK [MAILBOXID ({*})] CREATE completed
        C: a4 CREATE three
        S: a4 OK [MAILBOXID ({*})] CREATE completed
        C: a5 SETQUOTA "" (STORAGE 100)
        S: * QUOTA "" (STORAGE 0 100 MAILBOX 9 8 ANNOTATION-STORAGE 0 1)
        S: a5 OK SETQUOTA completed
        C: a6 CREATE four
        S: a6 NO [OVERQUOTA] {*}
    """)
    account = limited.store.get_account("alice")
    assert (account.quota_mailboxes, account.quota_annotation_bytes, account.quota_bytes) == (0, 0, 100 * 1024)


def test_annotations_count_against_the_annotation_quota(limited):
    value = "x" * 400
    # Name, value and 64 octets per entry, mailbox and server annotations together:
    # 3 x (64 + 16 + 400) > 1024.
    limited.script(f"""
        C: a1 SETMETADATA INBOX (/private/comment "{value}")
        S: a1 OK SETMETADATA completed
        C: a2 SETMETADATA "" (/private/comment "{value}")
        S: a2 OK SETMETADATA completed
        C: a3 SETMETADATA Sent (/private/comment "{value}")
        S: a3 NO [OVERQUOTA] Annotation storage quota exceeded
        C: a4 GETQUOTA ""
        S: * QUOTA "" (MAILBOX 6 8 ANNOTATION-STORAGE 1 1)
        S: a4 OK GETQUOTA completed
        C: a5 SETMETADATA INBOX (/private/comment "short")
        S: a5 OK SETMETADATA completed
        C: a6 SETMETADATA Sent (/private/comment "{'x' * 300}")
        S: a6 OK SETMETADATA completed
    """)
    assert limited.store.quota_usage("alice").annotation_bytes == 3 * (64 + len("/private/comment")) + 400 + 5 + 300


def test_a_lowered_annotation_limit_still_lets_the_user_shrink_and_remove(limited):
    limited.command('SETMETADATA INBOX (/private/comment "%s")' % ("x" * 900))
    limited.store.update_account("alice", quota_annotation_bytes=100)
    limited.script(f"""
        C: a1 SETMETADATA INBOX (/private/comment "{'y' * 500}")
        S: a1 OK SETMETADATA completed
        C: a2 SETMETADATA INBOX (/private/comment "{'y' * 501}")
        S: a2 NO [OVERQUOTA] {{*}}
        C: a3 SETMETADATA INBOX (/private/comment NIL /private/other "z")
        S: a3 OK SETMETADATA completed
    """)
    assert limited.store.quota_usage("alice").annotation_bytes == 64 + len("/private/other") + 1


def test_rename_inbox_copies_annotations_within_the_quota_only(limited):
    limited.command('SETMETADATA INBOX (/private/comment "%s")' % ("x" * 600))
    limited.script("""
        C: a1 RENAME INBOX Old
        S: a1 NO [OVERQUOTA] Annotation storage quota exceeded
    """)
    assert "Old" not in folder_names(limited)
    limited.store.update_account("alice", quota_annotation_bytes=4096)
    limited.script("""
        C: a2 RENAME INBOX Old
        S: a2 OK RENAME completed
    """)
    old = limited.store.get_folder("alice", "Old")
    assert limited.store.get_metadata("alice", old.id, ["/private/comment"]) == {"/private/comment": b"x" * 600}


def test_zero_defaults_leave_only_the_accounts_own_limits(conv):
    for name in ("a", "b", "c", "d", "e"):
        conv.command(f"CREATE {name}")
    conv.command('SETMETADATA INBOX (/private/comment "%s")' % ("x" * 5000))
    assert conv.store.quota_usage("alice").mailboxes == 11
    conv.store.update_account("alice", quota_mailboxes=11)
    conv.script("""
        C: a1 CREATE f
        S: a1 NO [OVERQUOTA] {*}
        C: a2 GETQUOTA ""
        S: * QUOTA "" (MAILBOX 11 11)
        S: a2 OK GETQUOTA completed
    """)


def test_subscriptions_are_bounded_like_mailboxes(limited):
    limited.command("CREATE one")
    limited.command("SUBSCRIBE one")   # 7 subscriptions of 8
    limited.command("DELETE one")      # the subscription stays (RFC 3501 6.3.6)
    limited.command("CREATE two")
    limited.command("SUBSCRIBE two")   # 8
    limited.command("DELETE two")
    limited.script("""
        C: a1 CREATE three
        S: a1 OK [MAILBOXID ({*})] CREATE completed
        C: a2 SUBSCRIBE three
        S: a2 NO [LIMIT] Too many subscriptions: unsubscribe from mailboxes that no longer exist
        C: a3 UNSUBSCRIBE one
        S: a3 OK UNSUBSCRIBE completed
        C: a4 SUBSCRIBE three
        S: a4 OK SUBSCRIBE completed
    """)
