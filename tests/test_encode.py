"""Response encoding helpers (gximap.imap.encode)."""

from __future__ import annotations

import calendar
import datetime
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gximap.imap import encode
from gximap.imap.commands import Append
from gximap.imap.framing import CommandFrame, Literal
from gximap.imap.parser import parse_command, parse_sequence_set


def test_string_primitives() -> None:
    assert encode.astring(b"INBOX") == b"INBOX"
    assert encode.astring(b"nil") == b'"nil"'
    assert encode.astring(b"a b") == b'"a b"'
    assert encode.string(b'say "hi"\\') == b'"say \\"hi\\"\\\\"'
    assert encode.string(b"two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert encode.nstring(None) == b"NIL"
    assert encode.literal(b"\x00", binary=True) == b"~{1}\r\n\x00"


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("Grüße".encode(), '"Grüße"'.encode()),             # valid UTF-8: quoted
        (b"caf\xe9", b"{4}\r\ncaf\xe9"),                     # latin-1: not UTF-8
        (b"\xff\xfe", b"{2}\r\n\xff\xfe"),                    # no UTF-8 at all
        (b"\xc0\xaf", b"{2}\r\n\xc0\xaf"),                    # an overlong "/"
        (b"\xed\xa0\x80", b"{3}\r\n\xed\xa0\x80"),              # a UTF-16 surrogate
        ("a\r\nü".encode(), b"{5}\r\na\r\n" + "ü".encode()),   # valid, but CR LF
    ],
)
def test_8bit_is_quoted_only_as_valid_utf8(value: bytes, wire: bytes) -> None:
    # RFC 9051 / RFC 6855: once UTF-8 is enabled, a quoted string may hold 8-bit octets only
    # as UTF-8 characters (QUOTED-CHAR =/ UTF8-2 / UTF8-3 / UTF8-4).
    assert encode.string(value, utf8=True) == wire
    assert encode.string(value) == encode.literal(value)   # without UTF-8, 8-bit is a literal


def test_flag_list() -> None:
    assert encode.flag_list(["\\Seen", "$Label1"]) == b"(\\Seen $Label1)"
    assert encode.flag_list([]) == b"()"


@pytest.mark.parametrize(
    ("numbers", "wire"),
    [
        ([1, 2, 3, 4, 5, 7, 9, 10, 11, 12], b"1:5,7,9:12"),
        ([42], b"42"),
        ([], b""),
        ([1, 3, 5], b"1,3,5"),
        ([5, 3, 4, 4, 1], b"1,3:5"),  # unsorted input is sorted and de-duplicated
        ((1, 2), b"1:2"),
        (iter([7, 8, 9]), b"7:9"),
        ([4294967294, 4294967295], b"4294967294:4294967295"),
    ],
)
def test_sequence_set(numbers, wire: bytes) -> None:
    assert encode.sequence_set(numbers) == wire


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(1, 5000), min_size=1, max_size=300))
def test_sequence_set_round_trips_through_the_parser(numbers: set[int]) -> None:
    wire = encode.sequence_set(sorted(numbers))
    resolved = parse_sequence_set(wire).resolve(5000)
    assert {n for low, high in resolved for n in range(low, high + 1)} == numbers
    assert len(wire.split(b",")) == len(resolved)  # maximally compressed


def test_sequence_set_is_fast_for_a_large_mailbox() -> None:
    uids = sorted(random.Random(7).sample(range(1, 400_000), 100_000))
    wire = encode.sequence_set(uids)
    assert parse_sequence_set(wire, max_ranges=100_000).resolve(400_000)[0][0] == uids[0]


def test_sequence_set_from_ranges() -> None:
    assert encode.sequence_set_from_ranges([(1, 5), (7, 7), (9, 12)]) == b"1:5,7,9:12"


def test_internaldate_rfc_example_and_round_trip() -> None:
    timestamp = calendar.timegm((1996, 7, 17, 9, 44, 25))
    assert encode.internaldate(timestamp, -420) == b'"17-Jul-1996 02:44:25 -0700"'
    assert encode.internaldate(0, 0) == b'"01-Jan-1970 00:00:00 +0000"'
    assert encode.internaldate(0, 330) == b'"01-Jan-1970 05:30:00 +0530"'
    assert encode.internaldate(0, 99999) == b'"01-Jan-1970 00:00:00 +0000"'  # nonsense zone


def test_internaldate_is_what_append_parses() -> None:
    for timestamp, zone in ((calendar.timegm((1996, 7, 17, 9, 44, 25)), -420), (1700000000, 60),
                            (951782400, 0), (4102444799, -720)):
        wire = encode.internaldate(timestamp, zone)
        frame = CommandFrame(b"a", (b"a APPEND INBOX " + wire + b" ", Literal(b"x"), b""))
        command = parse_command(frame)
        assert isinstance(command, Append)
        assert command.messages[0].date == (timestamp, zone)


@pytest.mark.parametrize(
    ("name", "utf8", "wire"),
    [
        ("INBOX", False, b"INBOX"),
        ("INBOX/é", False, b"INBOX/&AOk-"),
        ("Sent Items", False, b'"Sent Items"'),
        ('a"b\\c', False, b'"a\\"b\\\\c"'),
        ("NIL", False, b'"NIL"'),
        ("", False, b'""'),
        ("50%", False, b'"50%"'),
        ("Entwürfe", True, b'"Entw\xc3\xbcrfe"'),
        ("a&b", True, b"a&b"),
        ("a&b", False, b"a&-b"),
        ("x y" * 700, False, b'"' + b"x y" * 700 + b'"'),  # long names stay quoted, no literal
        ("line\nbreak", True, b"{10}\r\nline\nbreak"),
    ],
)
def test_mailbox_name(name: str, utf8: bool, wire: bytes) -> None:
    assert encode.mailbox_name(name, utf8) == wire


def test_mailbox_name_survives_a_lone_surrogate() -> None:
    assert encode.mailbox_name("bad\ud800") == b"bad&,,0-"  # U+FFFD


def test_response_lines() -> None:
    assert encode.tagged(b"a1", "OK", "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    assert encode.tagged(b"a1", "NO", "Mailbox does not exist", encode.response_code("TRYCREATE")) == (
        b"a1 NO [TRYCREATE] Mailbox does not exist\r\n"
    )
    assert encode.untagged_status("OK", "UIDs valid", encode.response_code("UIDVALIDITY", b"3857529045")) == (
        b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    )
    assert encode.untagged(b"3", b"EXISTS") == b"* 3 EXISTS\r\n"
    assert encode.continuation("Ready") == b"+ Ready\r\n"
    assert encode.continuation() == b"+ \r\n"
    assert encode.tagged(b"t", "BAD", "evil\r\n* OK x") == b"t BAD evil  * OK x\r\n"
    assert encode.tagged(b"t", "OK", "") == b"t OK Completed\r\n"


def test_internaldate_agrees_with_datetime_across_the_years() -> None:
    """The shifted-gmtime rendering gives what datetime in the message's zone gives."""
    rng = random.Random(7)
    for _ in range(2000):
        timestamp, zone = rng.randint(-62_135_000_000, 253_402_000_000), rng.randint(-1439, 1439)
        moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone(datetime.timedelta(minutes=zone)))
        expected = moment.strftime("%d-") + ("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()[moment.month - 1]
                                             + f"-{moment.year:04d} " + moment.strftime("%H:%M:%S %z"))
        assert encode.internaldate(timestamp, zone) == b'"' + expected.encode() + b'"'
    assert encode.internaldate(10**20, 60) == b'"01-Jan-1970 01:00:00 +0100"'  # beyond the year 9999
    assert encode.internaldate(1.9999999, 0) == b'"01-Jan-1970 00:00:02 +0000"'
