"""SEARCH's fast paths give exactly what the general path gives.

The fast paths (gximap.session.searching over midb.summary / midb.searchtext): light rows instead
of MessageMeta, encoded summaries ruled out by ``may_contain`` without decoding, the body plan
stored in the summary and the lowered-bytes scan of plain ASCII bodies, the byte test that rules
a header out for TEXT, bodies read ahead by a worker thread. The reference here recomputes every
message's text from its full MIME digest (midb.mime.digest, searchtext.body_text and, for TEXT,
part_headers_text) and compares it the slow, obvious way: case-folded substring.
"""

from __future__ import annotations

import base64
import quopri
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_searching import StubSession, criteria
from test_store_indexes import older_summary

from gximap.session import searching
from gximap.session.selected import SelectedMailbox
from midb import bodyrecords, mime, searchtext
from midb.keys import blob_key
from midb.store import Store
from midb.summary import (
    body_plan,
    decode_summary,
    encode_summary,
    may_contain,
    sort_record,
    sort_record_of,
    summarize,
)

REPO_DATA = Path(__file__).resolve().parent.parent / "data"

# Words with the characters case folding treats specially (ß -> ss, K (Kelvin) -> k, ﬁ -> fi,
# ſ -> s, İ -> i̇), non-Latin scripts and plain ASCII, so needles hit through folding too.
WORDS = ["zanzibar", "ZanZibar", "quokka", "STRASSE", "straße", "\u212aelvin", "kelvin", "\ufb01le", "file",
         "Mi\u017fs", "miss", "\u0130stanbul", "i\u0307stanbul", "\u0418\u0432\u0430\u043d", "caf\u00e9", "na\u00efve",
         "hello", "world", "a", "=?", "x=3D", "&amp;", "<b>", "r\u00e9sum\u00e9", "\u65e5\u672c"]
NEEDLES = ["zanzibar", "ZANZIBAR", "quokka", "strasse", "STRASSE", "ss", "kelvin", "\u212a", "file", "fi", "miss",
           "i\u0307stanbul", "istanbul", "\u0438\u0432\u0430\u043d", "CAF\u00c9", "hello world", "a", "=?", "x=3d",
           "&amp;", "&", "<b>", "b", "r\u00e9sum\u00e9", "\u65e5\u672c", "subject:", "from", "foo:bar"]
CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "windows-1252", "koi8-r", "iso-2022-jp", "utf-7", "utf-16", "x-unknown"]
ENCODINGS = ["7bit", "8bit", "quoted-printable", "base64", "x-strange"]


def _encode_body(text: str, charset: str, encoding: str) -> bytes:
    try:
        raw = text.encode(charset)
    except (LookupError, UnicodeEncodeError):
        raw = text.encode("utf-8")
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if encoding == "quoted-printable":
        return quopri.encodestring(raw)
    if encoding == "base64":
        return base64.encodebytes(raw)
    return raw


def _header_value(text: str, style: str) -> bytes:
    if style == "b":
        return b"=?utf-8?b?" + base64.b64encode(text.encode("utf-8")) + b"?="
    if style == "q":
        return b"=?iso-8859-1?q?" + quopri.encodestring(text.encode("latin-1", "replace"), header=True) + b"?="
    if style == "raw8":
        return text.encode("utf-8")
    return text.encode("ascii", "replace")


texts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=8).map(" ".join)


@st.composite
def leaf_parts(draw: Any) -> tuple[bytes, bytes]:
    """(Content-* header lines, body) of one text or binary entity."""
    kind = draw(st.sampled_from(["text/plain", "text/html", "text/calendar", "application/octet-stream"]))
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from(ENCODINGS))
    text = draw(texts)
    if kind == "text/html":
        text = "<html><body><p>" + text.replace("a", "&#97;", 1) + "</p></body></html>"
    disposition = draw(st.sampled_from([b"", b"Content-Disposition: attachment\r\n", b"Content-Disposition: inline\r\n"]))
    headers = (b"Content-Type: " + kind.encode() + b"; charset=" + charset.encode() + b"\r\n"
               + b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n" + disposition)
    return headers, _encode_body(text, charset, encoding)


@st.composite
def messages(draw: Any, depth: int = 0) -> bytes:
    subject = _header_value(draw(texts), draw(st.sampled_from(["ascii", "b", "q", "raw8"])))
    sender = _header_value(draw(texts), draw(st.sampled_from(["ascii", "b", "raw8"])))
    extra = draw(st.sampled_from([b"", b"X-Note: zan\r\n zibar\r\n", b"X-Tab:\tfoo:bar\r\n", b"Comments: strasse\r\n"]))
    top = b"Subject: " + subject + b"\r\nFrom: " + sender + b" <a@example.org>\r\nTo: b@example.org\r\n" + extra
    shape = draw(st.sampled_from(["leaf", "leaf", "bare", "multipart"] + (["rfc822"] if depth == 0 else [])))
    if shape == "bare":  # no MIME headers at all: text/plain, us-ascii
        return top + b"\r\n" + draw(texts).encode("utf-8") + b"\r\n"
    if shape == "leaf":
        headers, body = draw(leaf_parts())
        return top + b"MIME-Version: 1.0\r\n" + headers + b"\r\n" + body
    if shape == "rfc822":
        inner = draw(messages(depth=1))
        return top + b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    parts = draw(st.lists(leaf_parts(), min_size=1, max_size=3))
    body = b"".join(b"--XYZ\r\n" + headers + b"\r\n" + part_body + b"\r\n" for headers, part_body in parts)
    return (top + b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=XYZ\r\n\r\n"
            + body + b"--XYZ--\r\n")


# -- the reference: everything from the full digest, compared the obvious way ----------------------

def _reference_header_text(data: bytes, digest: mime.Digest) -> str:
    fields, _ = mime.parse_header_block(data, 0, digest.root.body_start)
    return "\n".join(data[start : value - 1].decode("latin-1") + ": "
                     + mime.decode_header_value(mime.unfold(data[value:end]))
                     for _name, start, value, end in fields)


def reference(data: bytes, where: str, needle: str) -> bool:
    digest = mime.digest(data)
    folded = needle.casefold()
    if not folded:
        return True
    if where == "BODY":
        return folded in searchtext.body_text(data, digest).casefold()
    if where == "TEXT":
        return folded in _reference_header_text(data, digest).casefold() \
            or folded in searchtext.body_text(data, digest).casefold() \
            or folded in searchtext.part_headers_text(data, digest).casefold()
    return folded in getattr(digest, where.lower().replace("from", "from_")).casefold()


def _open(tmp: Path, items: list[bytes], inline: int) -> tuple[Store, StubSession]:
    store = Store(tmp / f"midb-{inline}", fsync=False, data_path=[str(REPO_DATA)], inline_limit=inline)
    store.create_account("alice")
    folder = store.get_folder("alice", "INBOX")
    assert folder is not None
    store.append_many("alice", folder.id, [(data, ("\\Seen",) if index % 2 else (), None, 0)
                                           for index, data in enumerate(items)])
    session = StubSession(store)
    view = SelectedMailbox(store, "alice", folder, readonly=False, session=session)
    view.open()
    session.selected = view
    return store, session


def _quote(needle: str) -> str:
    return '"' + needle.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(items=st.lists(messages(), min_size=1, max_size=12), needles=st.lists(st.sampled_from(NEEDLES), min_size=1,
                                                                              max_size=3))
def test_search_matches_the_reference(tmp_path_factory: Any, items: list[bytes], needles: list[str]) -> None:
    tmp = tmp_path_factory.mktemp("equivalence")
    for inline in (0, 1 << 16):  # bodies as files, bodies in the index
        store, session = _open(tmp, items, inline)
        try:
            for needle in needles:
                for where in ("BODY", "TEXT", "SUBJECT", "FROM"):
                    expected = [uid for uid, data in enumerate(items, 1) if reference(data, where, needle)]
                    key = criteria(f"{where} {_quote(needle)}")
                    assert searching.search(session, key) == expected, (where, needle)
                    # the MessageMeta path (SORT, THREAD; any flag key) agrees
                    assert [meta.uid for meta in searching.search_records(session, key)] == expected
                    seen = [uid for uid in expected if uid % 2 == 0]
                    assert searching.search(session, criteria(f"SEEN {where} {_quote(needle)}")) == seen
                    assert searching.search(session, criteria(f"UNSEEN {where} {_quote(needle)}")) == \
                        [uid for uid in expected if uid % 2]
        finally:
            store.close()


def test_batches_and_read_ahead_cover_every_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small batches (a message count and a byte bound), so the read-ahead pipeline runs."""
    monkeypatch.setattr(searching, "_BATCH_MESSAGES", 7)
    monkeypatch.setattr(searching, "_BATCH_BYTES", 300)
    items = [b"Subject: m%d\r\n\r\n%s\r\n" % (n, b"zanzibar" if n % 5 == 0 else b"x" * (n % 400)) for n in range(200)]
    store, session = _open(tmp_path, items, 0)
    try:
        expected = [n + 1 for n in range(200) if n % 5 == 0]
        assert searching.search(session, criteria("BODY ZANZIBAR")) == expected
        assert searching.search(session, criteria("SUBJECT m1 BODY zanzibar")) == [uid for uid in expected
                                                                                  if str(uid - 1).startswith("1")]
        assert searching.search(session, criteria("UID 1:100 BODY zanzibar")) == [uid for uid in expected if uid <= 100]
    finally:
        store.close()


def test_expunged_bodies_and_format_1_summaries(tmp_path: Path) -> None:
    """A summary of format 1 (stored before the body plan) and one missing are still searched."""
    items = [b"Subject: one quokka\r\n\r\nzanzibar\r\n", b"Subject: two\r\n\r\nnothing\r\n",
             b"Subject: three quokka\r\n\r\nZanzibar\r\n"]
    store, session = _open(tmp_path, items, 0)
    try:
        assert session.selected is not None
        metas = store.messages("alice", session.selected.folder_id)
        old = summarize(store.digest(metas[0].blob))
        format_1 = older_summary(old, 1)
        assert decode_summary(format_1) == old and body_plan(format_1) is None

        def rewrite(txn: Any, dbs: Any, effects: Any) -> None:
            bodyrecords.put(txn, dbs, bodyrecords.SUMMARY, blob_key(metas[0].blob), format_1)
            bodyrecords.delete(txn, dbs, bodyrecords.SUMMARY, blob_key(metas[2].blob))

        store._write(rewrite, store._env)
        assert searching.search(session, criteria("BODY zanzibar")) == [1, 3]
        assert searching.search(session, criteria("SUBJECT QUOKKA")) == [1, 3]
        store.store_flags("alice", session.selected.folder_id, [3], "add", ["\\Deleted"])
        store.expunge("alice", session.selected.folder_id, [3])  # gone from the store, not the view
        assert searching.search(session, criteria("BODY zanzibar")) == [1]
        assert searching.search(session, criteria("TEXT zanzibar")) == [1]
    finally:
        store.close()


def test_ascii_folding_characters_are_those_of_the_unicode_tables() -> None:
    found = "".join(chr(code) for code in range(0x80, sys.maxunicode + 1)
                    if any(ord(char) < 0x80 for char in chr(code).casefold()))
    assert searchtext.ASCII_FOLDING_CHARACTERS == found


@settings(max_examples=300, deadline=None)
@given(subject=texts, sender=texts, style=st.sampled_from(["ascii", "b", "q", "raw8"]),
       needle=st.sampled_from(NEEDLES))
def test_may_contain_never_rules_out_a_match(subject: str, sender: str, style: str, needle: str) -> None:
    data = b"Subject: " + _header_value(subject, style) + b"\r\nFrom: " + _header_value(sender, style) + b"\r\n\r\nx\r\n"
    summary = summarize(mime.digest(data))
    folded = needle.casefold()
    raw_needle = searchtext.ascii_needle(folded)
    if raw_needle is None:
        return
    encoded = encode_summary(summary)
    if any(folded in value.casefold() for value in (summary.subject, summary.from_, summary.to)):
        assert may_contain(encoded, raw_needle)


@settings(max_examples=300, deadline=None)
@given(data=messages(), needle=st.sampled_from(NEEDLES))
def test_plans_and_byte_tests_agree_with_decoding(data: bytes, needle: str) -> None:
    digest = mime.digest(data)
    summary = summarize(digest)
    encoded = encode_summary(summary)
    assert decode_summary(encoded) == summary
    assert sort_record(encoded) == sort_record_of(summary)
    assert decode_summary(older_summary(summary, 2)) == summary
    assert body_plan(older_summary(summary, 2)) == body_plan(encoded)
    folded = needle.casefold()
    plan = body_plan(encoded)
    assert plan is not None
    if summary.leaf is None:
        assert plan[0] == searchtext.PLAN_DECODE
    else:
        assert plan == (searchtext.leaf_plan(summary.leaf), summary.leaf.body_start, summary.leaf.body_end)
        raw = searchtext.planned_ascii_body(data, *plan)
        if raw is not None:
            text = searchtext.body_text(data, summary.leaf).casefold()
            assert raw.decode("ascii").casefold() == text
    scan = searchtext.scan_needle(folded)
    if scan is not None and searchtext.raw_header_lacks(data, summary.header_size, scan):
        assert folded not in _reference_header_text(data, digest).casefold()
