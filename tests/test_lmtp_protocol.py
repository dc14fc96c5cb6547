"""gximap.lmtp.protocol: the sans-IO RFC 2033 state machine, transcripts and data framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gximap.lmtp.protocol import (
    OK,
    LmtpProtocol,
    MessageComplete,
    Recipient,
    RecipientRequest,
    Reply,
    State,
    decode_xtext,
    lhlo_lines,
    parse_path,
)

HOST = "mx.test.example"
MESSAGES: list[MessageComplete] = []  # what drive() saw complete, per test


def make(**kwargs: int) -> LmtpProtocol:
    kwargs.setdefault("max_message_size", 1 << 20)
    kwargs.setdefault("max_line_length", 1000)
    proto = LmtpProtocol(HOST, **kwargs)  # type: ignore[arg-type]  # mypy matches **dict[str, int] against host_id too
    proto.greet()
    assert proto.data_to_send() == f"220 {HOST} LMTP gximap ready\r\n".encode()
    return proto


def drive(proto: LmtpProtocol, data: bytes, accounts: dict[str, str] | None = None,
          results: list[str] | None = None) -> list[str]:
    """Feed ``data``; answer RCPTs (known ``accounts``) and messages (``results`` texts in turn,
    default 250). Returns the reply lines."""
    accounts = {"alice@test.example": "alice", "bob@test.example": "bob"} if accounts is None else accounts
    proto.receive(data)
    pending = list(results or [])
    while (event := proto.next_event()) is not None:
        if isinstance(event, RecipientRequest):
            account = accounts.get(event.address.lower())
            if account is None:
                proto.reply(Reply(550, "5.1.1", f"<{event.address}> unknown"))
            else:
                proto.accept_recipient(Recipient(event.address, event.orcpt, (account,)))
        else:
            assert isinstance(event, MessageComplete)
            MESSAGES.append(event)
            for rcpt in event.envelope.recipients:
                if event.failure is not None:
                    proto.reply(event.failure)
                elif pending:
                    code, status, text = pending.pop(0).split(" ", 2)
                    proto.reply(Reply(int(code), status, text))
                else:
                    proto.reply(Reply(250, "2.0.0", f"<{rcpt.address}> saved"))
            proto.message_done()
    return proto.data_to_send().decode("utf-8", "replace").split("\r\n")[:-1]


@pytest.fixture(autouse=True)
def _reset_messages() -> None:
    MESSAGES.clear()


def messages() -> list[MessageComplete]:
    return MESSAGES


# -- transcripts ------------------------------------------------------------------------------------


def test_lhlo_advertises_the_extensions() -> None:
    proto = make(max_message_size=5000)
    proto.receive(b"LHLO client.example\r\n")
    assert proto.next_event() is None
    keywords = list(lhlo_lines(proto.data_to_send()))
    assert keywords == [HOST, "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE 5000", "DSN", "SMTPUTF8",
                        "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"]
    assert proto.state is State.READY


def test_pipelined_transaction_one_reply_per_recipient_in_order() -> None:
    proto = make()
    replies = drive(proto, b"LHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<alice@test.example>\r\n"
                           b"RCPT TO:<ghost@test.example>\r\nRCPT TO:<Bob@test.example>\r\nDATA\r\n"
                           b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n",
                    results=["250 2.0.0 one", "452 4.2.2 two"])
    assert replies[8:] == [
        "250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 <ghost@test.example> unknown", "250 2.1.5 Ok",
        "354 2.0.0 Start mail input; end with <CRLF>.<CRLF>",
        "250 2.0.0 one", "452 4.2.2 two",
        f"221 2.0.0 {HOST} closing connection",
    ]
    (message,) = messages()
    assert message.body == b"Subject: hi\r\n\r\nbody\r\n"
    assert [r.address for r in message.envelope.recipients] == ["alice@test.example", "Bob@test.example"]
    assert message.envelope.sender == "s@x.example" and message.envelope.lhlo == "c"
    assert proto.closing and proto.transactions == 1


def test_waiting_event_blocks_further_parsing() -> None:
    proto = make()
    proto.receive(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nNOOP\r\n")
    event = proto.next_event()
    assert isinstance(event, RecipientRequest)
    assert proto.next_event() is event  # not answered yet: the same event, NOOP not parsed
    assert b"250 2.0.0 Ok" not in proto.data_to_send()
    proto.accept_recipient(Recipient(event.address))
    assert proto.next_event() is None
    assert proto.data_to_send().endswith(b"250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n")


def test_sequence_errors() -> None:
    proto = make()
    replies = drive(proto, b"MAIL FROM:<a@b.example>\r\nEHLO c\r\nHELO c\r\nLHLO c\r\nRCPT TO:<alice@test.example>\r\n"
                           b"DATA\r\nMAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n"
                           b"XFORWARD ADDR=1.2.3.4\r\nRSET\r\nDATA\r\n")
    codes = [line[:9] for line in replies if not line.startswith("250-")]
    assert codes == ["503 5.5.1", "500 5.5.1", "500 5.5.1", "250 XFORW", "503 5.5.1", "503 5.5.1",
                     "250 2.1.0", "503 5.5.1", "503 5.5.1", "503 5.5.1", "250 2.0.0", "503 5.5.1"]


def test_misc_commands() -> None:
    proto = make()
    replies = drive(proto, b"NOOP\r\nVRFY alice\r\nHELP\r\nRSET\r\nSTARTTLS\r\nBDAT 10\r\nnoop\r\n")
    assert [line[:9] for line in replies] == ["250 2.0.0", "252 2.5.0", "214 2.0.0", "250 2.0.0", "502 5.5.1",
                                              "500 5.5.2", "250 2.0.0"]


def test_mail_parameters() -> None:
    proto = make(max_message_size=1000)
    replies = drive(proto, b"LHLO c\r\n"
                           b"MAIL FROM:<a@b.example> SIZE=1001\r\n"
                           b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n"
                           b"MAIL FROM:<a@b.example> FROB=1\r\n"
                           b"MAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n"
                           b"MAIL FROM:<a@b.example> SIZE=x\r\n"
                           b"MAIL FROM:<a@b.example> SIZE=\xc2\xb2\r\n"  # a superscript two: not a number
                           b"MAIL FROM: <a@b.example> SIZE=1000 BODY=8bitmime SMTPUTF8 AUTH=u+2Bser@x.example "
                           b"RET=HDRS ENVID=id+3D1\r\n")
    assert [line[:9] for line in replies[8:]] == ["552 5.3.4", "555 5.5.4", "555 5.5.4", "501 5.5.4",
                                                  "501 5.5.4", "501 5.5.4", "250 2.1.0"]
    envelope = proto.envelope
    assert (envelope.size_hint, envelope.body_type, envelope.smtputf8) == (1000, "8BITMIME", True)
    assert (envelope.auth_user, envelope.ret, envelope.envid) == ("u+ser@x.example", "HDRS", "id=1")


def test_rcpt_parameters_and_postmaster() -> None:
    proto = make()
    proto.receive(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<alice@test.example> NOTIFY=SUCCESS,FAILURE "
                  b"ORCPT=rfc822;Alice+2Balias@test.example\r\n")
    event = proto.next_event()
    assert isinstance(event, RecipientRequest)
    assert (event.address, event.orcpt, event.notify) == ("alice@test.example", "Alice+alias@test.example",
                                                         ("SUCCESS", "FAILURE"))
    proto.accept_recipient(Recipient(event.address, event.orcpt))
    proto.receive(b"RCPT TO:<Postmaster>\r\nRCPT TO:<a@test.example> NOTIFY=NEVER,DELAY\r\n"
                  b"RCPT TO:<a@test.example> ORCPT=rfc822\r\nRCPT TO:<a@test.example> X=1\r\n")
    event = proto.next_event()
    assert isinstance(event, RecipientRequest) and event.address == "Postmaster"
    proto.accept_recipient(Recipient(event.address))
    assert proto.next_event() is None
    replies = proto.data_to_send().decode().split("\r\n")
    assert [line[:9] for line in replies[-5:-1]] == ["250 2.1.5", "501 5.5.4", "501 5.5.4", "555 5.5.4"]


def test_addresses() -> None:
    assert parse_path("<a@b.example> SIZE=1", reverse=True) == ("a@b.example", "SIZE=1")
    assert parse_path("<>", reverse=True) == ("", "")
    assert parse_path("<@relay.example,@r2.example:a@b.example>", reverse=False) == ("a@b.example", "")
    assert parse_path('<"john \\"q\\" doe"@b.example>', reverse=False)[0] == '"john \\"q\\" doe"@b.example'
    assert parse_path('<"a>b"@b.example>', reverse=False)[0] == '"a>b"@b.example'
    assert parse_path("<a@[192.0.2.1]>", reverse=False)[0] == "a@[192.0.2.1]"
    assert parse_path("<jörg@bücher.example>", reverse=False)[0] == "jörg@bücher.example"
    for bad, reverse in (("a@b.example", True), ("<>", False), ("<a@b.example", True), ("<a>", False),
                         ("<a@@b>", False), ("<a@b.example>x", False), ("<.a@b.example>", False),
                         ("<a@-b.example>", False), ("<" + "a" * 300 + "@b.example>", False)):
        with pytest.raises(ValueError):
            parse_path(bad, reverse=reverse)


def test_bad_addresses_get_syntax_replies() -> None:
    proto = make()
    replies = drive(proto, b"LHLO c\r\nMAIL FROM:a@b.example\r\nMAIL TO:<a@b.example>\r\nMAIL FROM:<>\r\n"
                           b"RCPT TO:<>\r\nRCPT TO:<bad address@x>\r\nRCPT FROM:<a@b.example>\r\n")
    assert [line[:9] for line in replies[8:]] == ["501 5.1.7", "501 5.5.4", "250 2.1.0", "501 5.1.3",
                                                  "501 5.1.3", "501 5.5.4"]


def test_xtext() -> None:
    assert decode_xtext("plain") == "plain"
    assert decode_xtext("a+2Bb+3Dc") == "a+b=c"
    assert decode_xtext("+C3+BC") == "ü"
    for bad in ("a+2b", "a+", "a b", "a=b", "+FF"):
        with pytest.raises(ValueError):
            decode_xtext(bad)


def test_xforward_attributes_last_one_transaction() -> None:
    proto = make()
    drive(proto, b"LHLO c\r\nXFORWARD NAME=mail.example ADDR=192.0.2.7\r\nXFORWARD HELO=helo.example "
                 b"PROTO=ESMTP IDENT=[UNAVAILABLE]\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<alice@test.example>\r\n"
                 b"DATA\r\nx\r\n.\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<alice@test.example>\r\nDATA\r\ny\r\n.\r\n")
    first, second = messages()
    assert first.envelope.xforward == {"NAME": "mail.example", "ADDR": "192.0.2.7", "HELO": "helo.example",
                                       "PROTO": "ESMTP", "IDENT": ""}
    assert second.envelope.xforward == {}
    replies = drive(proto, b"XFORWARD FOO=1\r\nXFORWARD\r\nXFORWARD NAME\r\n")
    assert [line[:9] for line in replies] == ["501 5.5.4"] * 3


def test_too_many_errors_close_the_connection() -> None:
    proto = make(max_errors=3)
    replies = drive(proto, b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
    assert replies == ["500 5.5.2 Error: command not recognized"] * 3 + ["421 4.7.0 Error: too many errors"]
    assert proto.closing
    proto.receive(b"NOOP\r\n")
    assert proto.next_event() is None and proto.data_to_send() == b""


def test_long_and_malformed_command_lines() -> None:
    proto = make(max_command_length=100)
    replies = drive(proto, b"NOOP " + b"x" * 200 + b"\r\nNOOP\r\n\xff\xfe\r\nNO\0OP\r\n")
    assert [line[:9] for line in replies] == ["500 5.5.2", "250 2.0.0", "500 5.5.2", "500 5.5.2"]
    # An over-long line that arrives in pieces is discarded up to its end, then parsing resumes.
    proto.receive(b"x" * 150)
    assert proto.next_event() is None
    proto.receive(b"y" * 150)
    proto.receive(b"z\r\nNOOP\r\n")
    assert proto.next_event() is None
    assert proto.data_to_send() == b"500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"


def test_a_line_of_the_longest_length_does_not_depend_on_where_a_read_ends() -> None:
    """A line of exactly max_command_length octets (CRLF not counted) is accepted whether its
    CRLF arrives with it or its LF arrives alone."""
    line = b"NOOP " + b"x" * 95
    assert drive(make(max_command_length=100), line + b"\r\n") == ["250 2.0.0 Ok"]
    proto = make(max_command_length=100)
    proto.receive(line + b"\r")
    assert proto.next_event() is None and proto.data_to_send() == b""
    assert drive(proto, b"\n") == ["250 2.0.0 Ok"]
    assert drive(make(max_command_length=100), line + b"xx\r\n") == ["500 5.5.2 Error: line too long"]


def test_goodbye_and_limits_on_construction() -> None:
    proto = make()
    proto.goodbye(Reply(421, "4.3.2", "bye"))
    assert proto.closing and proto.data_to_send() == b"421 4.3.2 bye\r\n"
    with pytest.raises(ValueError):
        LmtpProtocol(HOST, max_message_size=0)


def test_answers_out_of_turn_are_bugs() -> None:
    proto = make()
    with pytest.raises(RuntimeError):
        proto.accept_recipient(Recipient("a@b.example"))
    with pytest.raises(RuntimeError):
        proto.message_done()
    proto.receive(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\nx\r\n.\r\n")
    proto.accept_recipient(Recipient(proto.next_event().address))  # type: ignore[union-attr]
    assert isinstance(proto.next_event(), MessageComplete)
    with pytest.raises(RuntimeError):
        proto.message_done()  # no result given yet


# -- message data ---------------------------------------------------------------------------------


def _transaction(proto: LmtpProtocol) -> None:
    drive(proto, b"LHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<alice@test.example>\r\nDATA\r\n")


def test_dot_unstuffing_and_the_only_end_marker() -> None:
    proto = make()
    _transaction(proto)
    body = (b"..leading dot\r\n.\tdot tab\r\nbare\nLF\n.\nstill data\r\nx\r.\r\n"
            b"\r\n..\r\nlast\r\n.\r\n")
    drive(proto, body)
    (message,) = messages()
    assert message.body == (b".leading dot\r\n\tdot tab\r\nbare\nLF\n.\nstill data\r\nx\r.\r\n"
                            b"\r\n.\r\nlast\r\n")
    assert message.failure is None


def test_empty_message_and_pipelined_next_transaction() -> None:
    proto = make()
    _transaction(proto)
    replies = drive(proto, b".\r\nMAIL FROM:<>\r\nRSET\r\n")
    assert messages()[0].body == b""
    assert replies == ["250 2.0.0 <alice@test.example> saved", "250 2.1.0 Ok", "250 2.0.0 Ok"]


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                      max_size=30),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_stuffing_round_trip_in_any_chunking(lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"
    wire = stuffed + b"NOOP\r\n"
    proto = LmtpProtocol(HOST, max_message_size=1 << 20, max_line_length=1000)
    proto.receive(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n")
    event = proto.next_event()
    proto.accept_recipient(Recipient(event.address))  # type: ignore[union-attr]
    assert proto.next_event() is None and proto.state is State.DATA
    positions = sorted({cut % (len(wire) + 1) for cut in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *positions], [*positions, len(wire)], strict=True)]
    found: MessageComplete | None = None
    for piece in pieces:
        proto.receive(piece)
        event = proto.next_event()
        if event is not None:
            assert isinstance(event, MessageComplete) and found is None
            found = event
            proto.reply(OK)
            proto.message_done()
            assert proto.next_event() is None
    assert found is not None and found.body == body
    assert proto.data_to_send().endswith(b"250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n")  # the result, then NOOP


def test_size_limit_drops_the_body_and_reads_to_the_end() -> None:
    proto = make(max_message_size=100)
    drive(proto, b"LHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<alice@test.example>\r\n"
                 b"RCPT TO:<bob@test.example>\r\nDATA\r\n")
    replies = drive(proto, b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\nNOOP\r\n")
    assert replies == ["552 5.3.4 Error: message exceeds the size limit of 100 bytes"] * 2 + ["250 2.0.0 Ok"]
    assert messages()[0].body == b""


def test_exact_size_limit_is_accepted() -> None:
    proto = make(max_message_size=10)
    _transaction(proto)
    drive(proto, b"12345678\r\n.\r\n")
    assert messages()[0].failure is None and messages()[0].body == b"12345678\r\n"


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_line_length_limit(chunk: int) -> None:
    proto = make(max_line_length=20)
    _transaction(proto)
    ok_line = b"a" * 18 + b"\r\n"  # 20 bytes with CRLF: allowed
    data = ok_line * 3 + b"b" * 19 + b"\r\n" + ok_line + b".\r\n"
    for start in range(0, len(data), chunk):
        drive(proto, data[start:start + chunk])
    (message,) = messages()
    assert message.failure is not None and message.failure.code == 554 and message.body == b""
    proto2 = make(max_line_length=20)
    _transaction(proto2)
    drive(proto2, ok_line * 3 + b".\r\n")
    assert messages()[1].failure is None


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"LHLO c\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<alice@test.example>\r\n",
                     b"DATA\r\n", b".\r\n", b"..\r\n", b"\r\n", b"RSET\r\n", b"XFORWARD ADDR=1.2.3.4\r\n",
                     b"MAIL FROM:<> SIZE=99999999999999999999999\r\n", b"RCPT TO:<\"x\\\"@y>\r\n"])),
    max_size=30))
def test_any_input_is_answered_never_an_exception(chunks: list[bytes]) -> None:
    proto = make(max_message_size=300, max_line_length=50, max_command_length=100)
    for chunk in chunks:
        drive(proto, chunk)
        assert proto.buffered <= 100 + 80 or proto.state is State.DATA
