"""Shortcuts taken for speed give exactly what the general code gives: SEARCH answered from the
flag index, body search on undecoded ASCII, quoting of plain header values, batched body reads,
expunges applied to a session's view in place."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conversation import Conversation
from hypothesis import given, settings
from hypothesis import strategies as st

from gximap.imap import encode, fetchmime
from gximap.session import searching
from gximap.session.selected import SelectedMailbox
from midb import mime, searchtext
from midb.store import Store

REPO_DATA = Path(__file__).resolve().parent.parent / "data"


# -- SEARCH from the flag index ------------------------------------------------------------------------


@pytest.fixture()
def conv(tmp_path: Path) -> Iterator[Conversation]:
    with Conversation(tmp_path) as conversation:
        conversation.login()
        flags = [(), ("\\Seen",), ("\\Deleted",), ("\\Seen", "\\Deleted"), ("\\Flagged",)]
        for number in range(30):
            conversation.add_message(data=b"Subject: m%d\r\n\r\nbody %d\r\n" % (number, number),
                                     flags=flags[number % len(flags)])
        yield conversation


SEARCHES = ["UNSEEN", "DELETED", "UNSEEN DELETED", "UNSEEN 5:20", "UID 3:9 UNSEEN", "DELETED UID 1,4,28:*",
            "UNSEEN ALL", "NEW", "NOT UNSEEN", "UNSEEN FLAGGED", "OR UNSEEN DELETED", "(UNSEEN (DELETED))",
            "UNSEEN $", "UNDELETED", "SEEN"]


def test_index_answers_equal_the_general_evaluation(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    conv.select()
    # UID SEARCH announces expunges after its answer (one by message numbers leaves them to the
    # next): each UID SEARCH of the general evaluation runs in a second session with the same
    # view (\Recent aside, so no NEW), and each gets a fresh expunge that neither session has
    # been told of.
    other = conv.second_session()
    other.login()
    other.select()
    store = conv.store
    folder = conv.folder("INBOX").id
    for session in (conv, other):
        session.command("SEARCH RETURN (SAVE) 2:12")
    store.store_flags("alice", folder, [7, 8], "add", ["\\Deleted"])
    store.expunge("alice", folder, [3, 7, 8])     # another session: still in this view
    ghosts = iter([4, 9, 12, 13, 17, 19, 22, 24, 27, 29, 30, 2, 1, 5, 6])
    for uid in (False, True):
        for criteria in SEARCHES:
            if uid and criteria == "NEW":
                continue
            if uid:
                ghost = next(ghosts)
                store.store_flags("alice", folder, [ghost], "add", ["\\Deleted"])
                store.expunge("alice", folder, [ghost])
            command = ("UID " if uid else "") + "SEARCH " + criteria
            fast = conv.command(command)
            with monkeypatch.context() as patch:
                patch.setattr(searching, "_index_answer", lambda session, keys: None)
                slow = (other if uid else conv).command(command)
            assert fast[:-1] == slow[:-1], command
            # By message numbers, the expunge waits for a later command (RFC 7162 section 3.2.10).
            numbered = criteria == "UNSEEN 5:20"
            assert not uid or fast[-2].endswith(b" EXPUNGE") != numbered
    late = conv.add_message(data=b"Subject: late\r\n\r\nx\r\n")   # not announced yet: not found
    answer = conv.command("UID SEARCH UNSEEN")[0]
    assert answer == other.command("UID SEARCH UNSEEN")[0] == b"* SEARCH 6 10 11 15 16 18 20 21 23 25 26 28"
    assert b" %d" % late not in answer


def test_only_index_keys_and_sequences_skip_the_records(conv: Conversation) -> None:
    conv.select()
    calls: list[str] = []
    store = conv.store

    class Watching:
        def __getattr__(self, name: str) -> Any:
            if name in ("messages", "get_messages", "flag_rows"):
                calls.append(name)
            return getattr(store, name)

    conv.ctx.store = Watching()
    conv.command("UID SEARCH UNSEEN 1:20")
    assert calls == []
    conv.command("SEARCH UNSEEN FLAGGED")
    assert calls   # FLAGGED is not indexed: records are read


# -- body search on undecoded ASCII -------------------------------------------------------------------

BODIES = [
    b"Subject: a\r\n\r\nHello World, the QUICK brown fox\r\n",
    b"Subject: a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nStra\xc3\x9fe und Fluss\r\n",
    b"Subject: a\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain ASCII text, ss and SS\r\n",
    b"Subject: a\r\nContent-Type: text/plain; charset=utf-16\r\n\r\nab\r\n",
    b"Subject: a\r\nContent-Type: text/plain; charset=utf-7\r\n\r\nHi +ZeVnLIqe- there\r\n",
    b"Subject: a\r\nContent-Type: text/html\r\n\r\n<p>Hello <b>World</b></p>\r\n",
    b"Subject: a\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8gV29ybGQ=\r\n",
    b"Subject: a\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHello=20World=\r\n again\r\n",
    b"Subject: a\r\nContent-Type: application/pdf\r\n\r\n%PDF hello world\r\n",
    b"Subject: a\r\nContent-Type: text/x-python\r\nContent-Disposition: attachment\r\n\r\nprint('hello')\r\n",
    b"Subject: a\r\nContent-Type: text/plain; charset=latin1\r\n\r\ncaf\xe9 hello\r\n",
    b"Subject: a\r\n\r\n",
    b"no header at all, hello world",
]
NEEDLES = ["hello", "world", "quick brown", "strasse", "straße", "ss", "hello world", "ß", "print(", "é",
           "café", "\u212a", "k", "s", "the", "zzz"]


@pytest.mark.parametrize("data", BODIES)
def test_ascii_body_search_equals_decoding_search(data: bytes) -> None:
    digest = mime.digest(data)
    expected_text = searchtext.fold(searchtext.body_text(data, digest))
    raw = searchtext.ascii_body(data, digest.root)
    for needle in map(searchtext.fold, NEEDLES):
        if raw is not None:
            fast = needle.isascii() and needle.encode("ascii") in raw.lower()
            assert fast == (needle in expected_text), (data, needle)
    if digest.root.children is None and digest.root.message is None:
        assert searchtext.body_text(data, digest.root) == searchtext.body_text(data, digest)


def test_search_body_and_text_through_summaries(conv: Conversation) -> None:
    for data in BODIES:
        conv.add_message(data=data)
    conv.add_message(data=b"Subject: multi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                          b"Content-Type: text/plain\r\n\r\nhello inner\r\n--b--\r\n")
    conv.select()
    store = conv.store
    metas = store.messages("alice", conv.folder("INBOX").id)
    texts = {meta.uid: searchtext.fold(searchtext.body_text(store.read_body(meta.blob), store.digest(meta.blob)))
             for meta in metas}
    for needle in NEEDLES:
        expected = [uid for uid, text in texts.items() if searchtext.fold(needle) in text]
        lines = conv.command(f"UID SEARCH CHARSET UTF-8 BODY {{{len(needle.encode())}+}}\r\n{needle}")
        assert lines[0] == b" ".join([b"* SEARCH", *(b"%d" % uid for uid in expected)]), needle
    with_subject = [n for n in range(1, 45) if n != 43]   # 43 has no header field at all
    assert conv.command("SEARCH TEXT subject")[0] == b"* SEARCH " + b" ".join(b"%d" % n for n in with_subject)


# -- quoting plain values -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=80).map(lambda text: text.encode("utf-8"))),
       st.booleans())
def test_plain_value_quoting_equals_string(value: bytes, utf8: bool) -> None:
    reference = encode.string(fetchmime._utf8_text(value) if utf8 and not value.isascii() else value, utf8)
    assert fetchmime._ns(value, utf8) == reference
    assert fetchmime._ns(None, utf8) == encode.NIL


def test_address_lists_render_the_same_from_the_cache() -> None:
    addresses = ((b"Bob", None, b"bob", b"example.org"), (None, None, b"team", None), (None, None, None, None))
    first = fetchmime._address_list(addresses, False)
    assert fetchmime._address_list(addresses, False) is first
    assert first == b'(("Bob" NIL "bob" "example.org")(NIL NIL "team" NIL)(NIL NIL NIL NIL))'
    assert fetchmime._address_list(((b"J\xc3\xb6rg", None, b"j", b"x"),), True) == b'(("J\xc3\xb6rg" NIL "j" "x"))'
    assert fetchmime._address_list(((b"J\xc3\xb6rg", None, b"j", b"x"),), False).startswith(b"(({5}\r\n")


# -- batched body reads ---------------------------------------------------------------------------------


def test_read_bodies_in_order_with_gone_ones(tmp_path: Path) -> None:
    with Store(tmp_path / "midb", fsync=False, data_path=[str(REPO_DATA)]) as store:
        store.create_account("alice")
        folder = store.get_folder("alice", "INBOX")
        assert folder is not None
        bodies = [b"Subject: %d\r\n\r\n" % n + b"x" * n for n in range(150)]
        store.append_many("alice", folder.id, [(body, (), None, 0) for body in bodies])
        blobs = [meta.blob for meta in store.messages("alice", folder.id)]
        store.store_flags("alice", folder.id, [5, 100], "add", ["\\Deleted"])
        store.expunge("alice", folder.id)
        assert store.wait_for_removals()   # the files go a moment after the expunge (midb.removal)
        expected: list[bytes | None] = list(bodies)
        expected[4] = expected[99] = None
        assert store.read_bodies(blobs) == expected
        assert store.read_bodies(blobs[:3]) == bodies[:3]
        assert store.read_bodies([]) == []
        assert store.read_body(blobs[10], 3, 5) == bodies[10][3:8]
        assert store.read_body(blobs[10], 16) == bodies[10][16:]


# -- expunges applied to a view -----------------------------------------------------------------------


class _Session:
    enabled: set[str] = set()
    qresync_enabled = False
    uidonly = False
    rev2 = False
    notify = None


@pytest.mark.parametrize("seed", range(4))
def test_view_expunge_in_place_and_by_rebuild(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with Store(tmp_path / "midb", fsync=False, data_path=[str(REPO_DATA)]) as store:
        store.create_account("alice")
        folder = store.get_folder("alice", "INBOX")
        assert folder is not None
        store.append_many("alice", folder.id, [(b"x\r\n", (), None, 0)] * 300)
        view = SelectedMailbox(store, "alice", folder, readonly=True, session=_Session())
        view.open()
        current = list(view.uids)
        for size in (1, 3, 40, 1, 150):   # few and many expunged at once
            gone = set(rng.sample(current, min(size, len(current)))) | {10_000}
            expected_numbers = sorted((current.index(uid) + 1 for uid in gone if uid in current), reverse=True)
            assert view.remove_expunged(gone) == expected_numbers
            current = [uid for uid in current if uid not in gone]
            assert list(view.uids) == current
            assert all(view.msn_of(uid) == index + 1 for index, uid in enumerate(current))
        # Kept as runs of consecutive UIDs (gximap.session.selected.UidRuns), not a UID per entry.
        assert view.runs.run_count <= len(current)
