"""midb_parse_delay with the real gximap: a message is readable in every way the moment APPEND
answers, its parse is stored a moment later, and 0 parses inside the APPEND."""

from __future__ import annotations

import imaplib
import time
from pathlib import Path

import pytest
from e2e import DATA_DIR, GximapProcess

from midb import bodyrecords
from midb.keys import blob_key
from midb.store import Store

pytestmark = pytest.mark.e2e

MESSAGE = (b"From: Ann Example <ann@example.org>\r\nTo: bob@example.org\r\n"
           b"Subject: =?utf-8?q?caf=C3=A9?= plans\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=xx\r\n\r\n"
           b"--xx\r\nContent-Type: text/plain\r\n\r\nhello\r\n--xx\r\nContent-Type: text/html\r\n\r\n"
           b"<p>hello</p>\r\n--xx--\r\n")


def _digest_record(midb: Path) -> bytes | None:
    with Store(midb, fsync=False, readonly=True, data_path=[str(DATA_DIR)]) as store:
        folder = store.get_folder("alice", "INBOX")
        assert folder is not None
        uid = store.uids("alice", folder.id)[-1]
        blob = store.get_messages("alice", folder.id, [uid])[0].blob
        return store._body_records(bodyrecords.DIGEST, [blob_key(blob)])[0]


@pytest.mark.parametrize("delay", ["1s", "0"])
def test_a_message_is_readable_at_once_and_parsed_once(tmp_path: Path, delay: str) -> None:
    server = GximapProcess(tmp_path, tls=False, extra={"midb_parse_delay": delay}).start()
    try:
        client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
        client.login("alice", "secret")
        assert client.append("INBOX", None, None, MESSAGE)[0] == "OK"
        if delay == "0":
            assert _digest_record(server.midb) is not None   # parsed by the APPEND itself
        client.select("INBOX")
        typ, data = client.fetch("1", "(ENVELOPE BODYSTRUCTURE)")
        assert typ == "OK"
        first = data[0]
        assert first is not None
        answer = first if isinstance(first, bytes) else first[0]
        assert b'"=?utf-8?q?caf=C3=A9?= plans"' in answer
        assert b'("text" "plain"' in answer and b'"mixed"' in answer
        # (arg-type: imaplib sends a bytes argument as it is; typeshed allows only str)
        assert client.search("UTF-8", "SUBJECT", '"caf\xc3\xa9"'.encode("latin-1"))[1] == [b"1"]  # type: ignore[arg-type]
        part = client.fetch("1", "(BODY.PEEK[2])")[1][0]
        assert isinstance(part, tuple) and part[1] == b"<p>hello</p>"
        client.logout()
        # With a delay, the digest the FETCH computed is stored by the parser's thread.
        deadline = time.monotonic() + 10.0
        while _digest_record(server.midb) is None:
            assert time.monotonic() < deadline, "the parse was never stored"
            time.sleep(0.1)
    finally:
        assert server.stop() == 0
