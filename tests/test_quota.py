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


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path) as conversation:
        conversation.login()
        yield conversation


@pytest.fixture
def admin(tmp_path):
    """alice may change quotas (imap_quota_admins = alice)."""
    with Conversation(tmp_path, quota_admins=("alice",)) as conversation:
        conversation.login()
        yield conversation


def capabilities(conv: Conversation) -> list[str]:
    return conv.command("CAPABILITY")[0].decode().split()[2:]


def test_capabilities(conv, admin):
    caps = capabilities(conv)
    assert {"QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"} <= set(caps)
    assert "QUOTASET" not in caps
    assert "QUOTASET" in capabilities(admin)


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
        C: a2 SETQUOTA "" (STORAGE 512 MAILBOX 10)
        S: a2 NO [CANNOT] Unsupported quota resource MAILBOX
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
        assert "QUOTASET" in capabilities(conv)
        conv.script("""
            C: a1 SETQUOTA "" (MESSAGE 50)
            S: * QUOTA "" (MESSAGE 0 50)
            S: a1 OK SETQUOTA completed
        """)
        assert conv.store.get_account("alice").quota_messages == 50
        assert conv.store.get_account("root").quota_messages == 0
        # alice herself is no quota admin.
        other = conv.second_session()
        other.login("alice")
        assert "QUOTASET" not in capabilities(other)
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
        assert "QUOTASET" not in capabilities(conv)
        conv.ctx.reload(Settings(quota_admins=settings.quota_admins))  # SIGHUP
        assert "QUOTASET" in capabilities(conv)  # names compare case-insensitively
        conv.command('SETQUOTA "" (MESSAGE 10)')
