"""Property tests of IMAP URL parsing (RFC 5092; gximap.imap.imapurl, as CATENATE takes URLs):
URLs built from random valid components by an encoder written from RFC 5092 section 11's
grammar come back with those components, whatever %-escapes, parameter-name case and server
part they were written with. (That any bytes give an ImapUrl or UrlError, and nothing else, is
tests/test_parser_fuzz.py's test_imap_urls_parse_or_refuse.)

GXIMAP_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_imapurl_fuzz.py   (longer runs)
"""

from __future__ import annotations

import os
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gximap.imap import imapurl
from gximap.imap.commands import normalize_inbox
from gximap.imap.parser import MAX_NUMBER, parse_section_spec

EXAMPLES = int(os.environ.get("GXIMAP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# RFC 5092 section 11: achar = uchar / "&" / "=" / "~"; uchar = unreserved / pct-encoded /
# sub-delims-sh / ":" / "@"; sub-delims-sh = "!" / "$" / "'" / "(" / ")" / "*" / "+" / ",";
# bchar = achar / ":" / "@" / "/". What a mailbox segment may hold unescaped ("/" separates
# the segments).
ACHAR = set(string.ascii_letters + string.digits + "-._~" + "!$'()*+," + ":@" + "&=")

nz_numbers = st.integers(1, MAX_NUMBER)
# A segment of a mailbox name: any text but NUL ("/" inside one is %-escaped, and is then a
# hierarchy separator like a raw one).
segments = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), min_size=1, max_size=8)


def escape(octets: bytes, safe: set[str], draw: st.DrawFn) -> str:
    """%-escape what is not ``safe``; escape some safe octets too, in either hex case (RFC 3986
    section 2.1: an escape of an unreserved character decodes to it)."""
    out = []
    for byte in octets:
        char = chr(byte)
        if char in safe and not draw(st.integers(0, 7)) == 0:
            out.append(char)
        else:
            text = f"%{byte:02X}"
            out.append(text if draw(st.booleans()) else text.lower())
    return "".join(out)


@st.composite
def mailboxes(draw: st.DrawFn) -> tuple[str, str]:
    """(the %-encoded enc-mailbox, the name it decodes to)."""
    parts = draw(st.lists(segments, min_size=1, max_size=3))
    encoded = []
    for part in parts:
        text = escape(part.encode(), ACHAR, draw)
        if text in (".", ".."):
            # A dot-segment is resolved away (RFC 5092 section 7); a mailbox so named is
            # written with its dots escaped.
            text = "".join(f"%{ord(char):02X}" for char in text)
        encoded.append(text)
    return "/".join(encoded), "/".join(parts)


# Section-specs (RFC 3501 section 9) as written in ;SECTION= before %-escaping.
SECTIONS = [b"HEADER", b"TEXT", b"1", b"1.2", b"3.MIME", b"2.HEADER", b"1.TEXT",
            b"HEADER.FIELDS (From To)", b"HEADER.FIELDS.NOT (Received)", b"4.1.HEADER.FIELDS (Subject)"]


@st.composite
def urls(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    expected: dict[str, object] = {"user": None, "host": None, "port": None}
    prefix = "/"
    if draw(st.booleans()):
        user = draw(st.none() | st.text(st.characters(codec="utf-8"), min_size=1, max_size=8))
        host = draw(st.sampled_from(["mail.example.org", "Host", "[2001:db8::1]", "192.0.2.7"]))
        server = host
        if user is not None:
            userinfo = escape(user.encode(), ACHAR - {"@"}, draw)  # "@" ends the userinfo
            if draw(st.booleans()):
                userinfo += ";" + draw(st.sampled_from(["AUTH", "auth"])) + "=" + draw(st.sampled_from(["*", "GSSAPI"]))
            server = userinfo + "@" + server
        # RFC 5092 section 1: no port is 143; RFC 3986 section 3.2.3: an empty one is none,
        # and port = *DIGIT, so leading zeros are allowed.
        port = draw(st.none() | st.integers(0, 65535))
        if port is None:
            server += draw(st.sampled_from(["", ":"]))
        else:
            server += ":" + "0" * draw(st.integers(0, 2)) + str(port)
        prefix = draw(st.sampled_from(["imap://", "IMAP://"])) + server + "/"
        expected.update(user=user, host=host.lower(), port=imapurl.DEFAULT_PORT if port is None else port)
    mailbox, name = draw(mailboxes())
    expected["mailbox"] = normalize_inbox(name)

    def parameter(keyword: str) -> str:
        return draw(st.sampled_from([keyword, keyword.lower(), keyword.capitalize()]))

    url = prefix + mailbox
    uidvalidity = draw(st.none() | nz_numbers)
    if uidvalidity is not None:
        url += f";{parameter('UIDVALIDITY')}={uidvalidity}"
    uid = draw(nz_numbers)
    url += f"/;{parameter('UID')}={uid}"
    expected.update(uidvalidity=uidvalidity, uid=uid, section=None, partial=None)
    section = draw(st.none() | st.sampled_from(SECTIONS))
    if section is not None:
        url += f"/;{parameter('SECTION')}=" + escape(section, ACHAR - {"/"}, draw)
        expected["section"] = parse_section_spec(section)
    if draw(st.booleans()):
        offset = draw(st.integers(0, MAX_NUMBER))
        length = draw(st.none() | nz_numbers)
        url += f"/;{parameter('PARTIAL')}={offset}" + ("" if length is None else f".{length}")
        expected["partial"] = (offset, length)
    return url.encode("ascii"), expected


@FUZZ
@given(urls())
def test_urls_built_from_components_give_them_back(built: tuple[bytes, dict[str, object]]) -> None:
    url, expected = built
    found = imapurl.parse(url)
    assert {name: getattr(found, name) for name in expected} == expected
    if "&" not in found.mailbox:
        assert found.mutf7_name is None  # a second reading only where modified UTF-7 could be


@FUZZ
@given(built=urls(), detour=st.lists(st.text(st.sampled_from("abc"), min_size=1, max_size=3), min_size=1, max_size=3))
def test_dot_segments_before_the_mailbox_resolve_away(built: tuple[bytes, dict[str, object]], detour: list[str]) -> None:
    """RFC 5092 section 7 (RFC 3986 section 5.2.4): ``/x/y/../../Mailbox`` names Mailbox."""
    url, expected = built
    text = url.decode()
    start = text.index("/", len("imap://")) + 1 if text.lower().startswith("imap://") else 1
    detoured = text[:start] + "/".join(detour) + "/" + "../" * len(detour) + text[start:]
    assert imapurl.parse(detoured.encode()).mailbox == expected["mailbox"]
