"""CAPABILITY, NOOP, LOGOUT, ID (RFC 2971) and ENABLE (RFC 5161)."""

from __future__ import annotations

import pytest
from conversation import Conversation

from gximap import __version__
from gximap.net.handler import TransportAction


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path) as conversation:
        yield conversation


def test_capability_before_login_on_tls(conv):
    caps = conv.capabilities()
    assert caps[:2] == ["IMAP4rev1", "IMAP4rev2"]
    assert "AUTH=PLAIN" in caps and "SASL-IR" in caps
    assert "LOGINDISABLED" not in caps and "STARTTLS" not in caps
    assert "IDLE" not in caps and "ID" not in caps


def test_capability_on_plaintext_offers_starttls_and_disables_login(tmp_path):
    with Conversation(tmp_path, tls=False, starttls=True) as conv:
        caps = conv.capabilities()
        assert "STARTTLS" in caps and "LOGINDISABLED" in caps
        assert "AUTH=PLAIN" not in caps
        conv.send(b"s1 STARTTLS\r\n")
        caps = conv.capabilities()
        assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps


def test_capability_after_login_lists_the_extensions(conv):
    conv.login()
    caps = conv.capabilities()
    for extension in ("IDLE", "NAMESPACE", "UNSELECT", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE",
                      "CREATE-SPECIAL-USE", "ENABLE", "CHILDREN", "XLIST", "UNAUTHENTICATE"):
        assert extension in caps
    assert "AUTH=PLAIN" not in caps and "SASL-IR" not in caps
    assert f"APPENDLIMIT={conv.ctx.settings.max_literal}" in caps


def test_capability_without_rfc9051(tmp_path):
    with Conversation(tmp_path, rfc9051=False) as conv:
        assert "IMAP4rev2" not in conv.capabilities()


def test_noop_in_every_state(conv):
    conv.script("""
        C: a1 NOOP
        S: a1 OK NOOP completed
        C: a2 LOGIN alice secret
        S: a2 OK {*}
        C: a3 NOOP
        S: a3 OK NOOP completed
    """)


def test_noop_reports_changes_to_the_selected_mailbox(conv):
    conv.login()
    conv.select()
    conv.add_message()
    conv.add_message()
    conv.script("""
        C: a1 NOOP
        S: * 2 EXISTS
        S: * 2 RECENT
        S: a1 OK NOOP completed
        C: a2 NOOP
        S: a2 OK NOOP completed
    """)


def test_logout_closes_after_the_tagged_reply(conv):
    conv.login()
    conv.script("""
        C: a1 LOGOUT
        S: * BYE localhost IMAP server logging out
        S: a1 OK LOGOUT completed
    """)
    assert conv.actions == [TransportAction.CLOSE]


def test_id_is_unknown_unless_enabled(conv):
    conv.script("""
        C: a1 ID NIL
        S: a1 BAD [CLIENTBUG] Unknown command
    """)


def test_id_answers_name_and_version_and_remembers_the_client(tmp_path):
    with Conversation(tmp_path, enable_id=True) as conv:
        assert "ID" in conv.capabilities()
        conv.script(f"""
            C: a1 ID ("name" "sodr" "version" "19.34")
            S: * ID ("name" "gximap" "version" "{__version__}")
            S: a1 OK ID completed
        """)
        assert conv.session.client_id == {"name": "sodr", "version": "19.34"}
        conv.script("""
            C: a2 ID NIL
            S: * ID ("name" "gximap" "version" "{*}")
            S: a2 OK ID completed
        """)
        assert conv.session.client_id is None


def test_id_reports_the_configured_version(tmp_path):
    with Conversation(tmp_path, enable_id=True, version="9.9-test") as conv:
        assert conv.send(b"a1 ID NIL\r\n")[0] == b'* ID ("name" "gximap" "version" "9.9-test")'


def test_enable_only_in_authenticated_state(conv):
    conv.script("""
        C: a1 ENABLE IMAP4rev2
        S: a1 BAD [CLIENTBUG] Log in first
    """)
    conv.login()
    conv.select()
    conv.script("""
        C: a2 ENABLE IMAP4rev2
        S: a2 BAD [CLIENTBUG] Command not valid in this state
    """)
    assert not conv.session.rev2


def test_enable_lists_only_what_it_newly_enabled(conv):
    conv.login()
    conv.script("""
        C: a1 ENABLE X-GOOD-IDEA imap4REV2 UTF8=ACCEPT CONDSTORE QRESYNC
        S: * ENABLED IMAP4rev2 UTF8=ACCEPT CONDSTORE QRESYNC
        S: a1 OK ENABLE completed
        C: a2 ENABLE IMAP4rev2
        S: * ENABLED
        S: a2 OK ENABLE completed
    """)
    assert conv.session.enabled == {"IMAP4REV2", "UTF8=ACCEPT", "CONDSTORE", "QRESYNC"}


def test_enable_imap4rev2_needs_rfc9051(tmp_path):
    with Conversation(tmp_path, rfc9051=False) as conv:
        conv.login()
        conv.script("""
            C: a1 ENABLE IMAP4rev2
            S: * ENABLED
            S: a1 OK ENABLE completed
        """)
        assert not conv.session.rev2


def test_enable_imap4rev2_switches_mailbox_names_to_utf8(conv):
    conv.login()
    conv.command('CREATE "Entw&APw-rfe"')
    conv.script("""
        C: a1 LIST "" Entw*
        S: * LIST (\\HasNoChildren) "/" Entw&APw-rfe
        S: a1 OK LIST completed
        C: a2 ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: a2 OK ENABLE completed
        C: a3 LIST "" Entw*
        S: * LIST (\\HasNoChildren) "/" "Entwürfe"
        S: a3 OK LIST completed
    """)
