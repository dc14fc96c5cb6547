"""gximap.log: levels, targets, the line format, fail2ban lines, cmd debug, io trace, redaction."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gximap import log
from gximap.log import (
    NOTICE,
    LogSetupError,
    auth_block,
    auth_failure,
    auth_refusal,
    auth_success,
    get_logger,
    io_trace,
    io_trace_end,
    io_trace_file,
    log_command,
    logs_command,
    redact_command,
    set_cmd_debug,
    set_io_debug,
    setup_logging,
)

PREFIX_RE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d "  # ISO 8601 local time with offset
    r"gximap\[(?P<pid>\d+)\]: <(?P<level>[1-6])> (?P<msg>.*)$"
)


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    set_cmd_debug(0)
    set_io_debug(False)
    log.reset_logging()


@pytest.fixture
def logfile(tmp_path: Path) -> Callable[..., list[tuple[int, str]]]:
    """Set up logging to a file; calling the result returns the (level, message) pairs so far."""
    path = tmp_path / "gximap.log"

    def read(level: int = 6) -> list[tuple[int, str]]:
        if not hasattr(read, "started"):
            setup_logging(str(path), level)
            read.started = True  # type: ignore[attr-defined]
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            match = PREFIX_RE.match(line)
            assert match is not None, line
            assert int(match.group("pid")) == os.getpid()
            entries.append((int(match.group("level")), match.group("msg")))
        return entries

    return read


# --- levels and targets ---------------------------------------------------------------------------


def test_level_mapping() -> None:
    assert logging.getLevelName(NOTICE) == "NOTICE"
    assert logging.WARNING > NOTICE > logging.INFO
    assert [log.GROMOX_LEVELS[n] for n in range(1, 7)] == [
        logging.CRITICAL, logging.ERROR, logging.WARNING, NOTICE, logging.INFO, logging.DEBUG]
    assert [log.gromox_level(log.GROMOX_LEVELS[n]) for n in range(1, 7)] == [1, 2, 3, 4, 5, 6]
    assert get_logger().name == "gximap" and get_logger("pool").name == "gximap.pool"


def test_file_format_and_level_filter(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(4)
    logger = get_logger("test")
    logger.critical("c")
    logger.error("e")
    logger.warning("w")
    logger.log(NOTICE, "n")
    logger.info("hidden at level 4")
    logger.debug("hidden too")
    assert logfile() == [(1, "c"), (2, "e"), (3, "w"), (4, "n")]


def test_reconfigure_reopens(tmp_path: Path) -> None:
    path = tmp_path / "gximap.log"
    setup_logging(str(path), 5)
    get_logger().info("before rotation")
    rotated = tmp_path / "gximap.log.1"
    path.rename(rotated)
    setup_logging(str(path), 5)  # what SIGHUP does after logrotate moved the file
    get_logger().info("after rotation")
    get_logger().debug("not at level 5")
    assert "before rotation" in rotated.read_text()
    assert "after rotation" not in rotated.read_text()
    text = path.read_text()
    assert "after rotation" in text and "not at level 5" not in text


def test_failed_reconfigure_keeps_target(tmp_path: Path) -> None:
    path = tmp_path / "gximap.log"
    setup_logging(str(path), 4)
    with pytest.raises(LogSetupError, match="does not exist"):
        setup_logging(str(tmp_path / "missing" / "x.log"), 4)
    get_logger().error("still here")
    assert "still here" in path.read_text()


def test_check_target_refuses_what_opening_the_file_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--check (check_target) must refuse the log files a start cannot open, in the words the
    start uses, and create none: a directory, a file not writable, a new file in a directory
    not writable. It only looked at the directory: --check said "configuration good", the start
    exited with status 2."""
    from gximap.log import check_target

    with pytest.raises(LogSetupError, match=r": cannot open log file: Is a directory$") as refused:
        check_target(str(tmp_path))
    with pytest.raises(LogSetupError) as opened:
        setup_logging(str(tmp_path), 4)
    assert str(opened.value) == str(refused.value)
    existing, new = tmp_path / "imap.log", tmp_path / "new.log"
    existing.write_text("")
    check_target(str(existing))
    check_target(str(new))
    # os.access as a user who may not write there (the tests may run as root, who may).
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    for path in (existing, new):
        with pytest.raises(LogSetupError, match=rf"^{path}: cannot open log file: Permission denied$"):
            check_target(str(path))
    monkeypatch.undo()
    assert not new.exists()


@pytest.mark.parametrize("level", [0, 7, True, "4"])
def test_bad_level(level: object, tmp_path: Path) -> None:
    with pytest.raises(LogSetupError):
        setup_logging(str(tmp_path / "x.log"), level)  # type: ignore[arg-type]


def test_stderr_target(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("-", 3)
    get_logger().warning("to stderr")
    get_logger().log(NOTICE, "filtered")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    match = PREFIX_RE.match(err[0])
    assert match is not None and match.group("level") == "3" and match.group("msg") == "to stderr"


def _journal_stream_of_fd_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make fd 2 count as the journal's stream, as systemd's JOURNAL_STREAM would."""
    status = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")


def test_stderr_to_the_journal_carries_syslog_priorities(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """journald takes a leading <P> as the entry's priority and records time and PID itself."""
    _journal_stream_of_fd_2(monkeypatch)
    assert log.stderr_is_journal()
    setup_logging("-", 6)
    get_logger().critical("crit")
    get_logger().error("error")
    get_logger().warning("warn")
    get_logger().log(NOTICE, "rhost=[192.0.2.1]:1 user=a LOGIN rejected: bad password")
    get_logger().info("info")
    get_logger().debug("debug\nsecond line")
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger().exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert lines[:6] == ["<2>crit", "<3>error", "<4>warn", "<5>rhost=[192.0.2.1]:1 user=a LOGIN rejected: bad password",
                         "<6>info", "<7>debug\\nsecond line"]
    assert lines[6] == "<3>failed" and lines[7] == "<3>| Traceback (most recent call last):"
    assert all(line.startswith("<3>| ") for line in lines[7:]) and lines[-1] == "<3>| ValueError: boom"


@pytest.mark.parametrize("value", ["", "garbage", "1:x", "0:0"])
def test_stderr_elsewhere_keeps_the_time_stamped_lines(value: str, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """JOURNAL_STREAM inherited by a process whose stderr goes elsewhere (a shell started from a
    service, a redirection) names another stream: the lines stay as they are in a file."""
    monkeypatch.setenv("JOURNAL_STREAM", value)
    assert not log.stderr_is_journal()
    setup_logging("-", 3)
    get_logger().warning("to stderr")
    match = PREFIX_RE.match(capsys.readouterr().err.splitlines()[0])
    assert match is not None and match.group("msg") == "to stderr"


def test_syslog_missing_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log, "SYSLOG_SOCKET", str(tmp_path / "no-such-socket"))
    with pytest.raises(LogSetupError, match="does not exist"):
        setup_logging("syslog", 4)


def test_syslog_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        monkeypatch.setattr(log, "SYSLOG_SOCKET", path)
        setup_logging("syslog", 4)
        get_logger().log(NOTICE, "hello %s", "world")
        get_logger().error("second")
        first, second = server.recv(4096), server.recv(4096)
    # priority = facility mail (2) * 8 + severity: notice 5, err 3; no time stamp in the text
    assert first == f"<21>gximap[{os.getpid()}]: <4> hello world\x00".encode()
    assert second == f"<19>gximap[{os.getpid()}]: <2> second\x00".encode()


def test_messages_are_one_line(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(6)
    get_logger().info("line one\nrhost=[192.0.2.1]:1 user=x LOGIN rejected: forged\r\x1b[31m")
    try:
        raise ValueError("boom\nrhost=[192.0.2.1]:1 user=x LOGIN rejected: forged")
    except ValueError:
        get_logger().exception("failure")
    entries = logfile()
    assert entries[0] == (5, "line one\\nrhost=[192.0.2.1]:1 user=x LOGIN rejected: forged\\r\\x1b[31m")
    assert entries[1] == (2, "failure")
    assert all(message.startswith("| ") for _, message in entries[2:])
    assert any("ValueError: boom" in message for _, message in entries[2:])


def test_midb_logger_is_routed(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(4)
    logging.getLogger("midb.env").warning("from the store")
    assert logfile() == [(3, "from the store")]


# --- fail2ban lines -------------------------------------------------------------------------------


def test_auth_lines_exact(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(5)
    auth_failure("[203.0.113.5]:51234", "alice", "login", "bad password")
    auth_block("[203.0.113.5]:51234", "alice", 60.0)
    auth_block("[2001:db8::1]:143", "bob", 1.5)
    auth_refusal("[198.51.100.2]:143", "alice", "plain", "user blocked")
    auth_success("[203.0.113.5]:51234", "alice", "LOGIN", None)
    auth_success("[203.0.113.5]:51234", "shared@example.org", "plain", "bob")
    auth_success("[203.0.113.5]:51234", "alice", "LOGIN", None, "user blocked; password matched the cache")
    auth_success("[203.0.113.5]:51234", "shared", "LOGIN", "bob", "user blocked; password matched the cache")
    assert logfile() == [
        (4, "rhost=[203.0.113.5]:51234 user=alice LOGIN rejected: bad password"),
        (4, "rhost=[203.0.113.5]:51234 user=alice blocked for 60s: too many failed logins"),
        (4, "rhost=[2001:db8::1]:143 user=bob blocked for 1.5s: too many failed logins"),
        (4, "rhost=[198.51.100.2]:143 user=alice PLAIN refused: user blocked"),  # fail2ban does not count it
        (5, "rhost=[203.0.113.5]:51234 user=alice LOGIN ok"),
        (5, "rhost=[203.0.113.5]:51234 user=shared@example.org PLAIN ok actor=bob"),
        # a login a user block let in: told apart, and still no "rejected" for fail2ban
        (5, "rhost=[203.0.113.5]:51234 user=alice LOGIN ok (user blocked; password matched the cache)"),
        (5, "rhost=[203.0.113.5]:51234 user=shared LOGIN ok actor=bob (user blocked; password matched the cache)"),
    ]


def test_auth_success_hidden_at_notice(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(4)
    auth_success("[192.0.2.1]:1", "alice", "LOGIN", None)
    auth_failure("[192.0.2.1]:1", "alice", "PLAIN", "bad password")
    assert logfile() == [(4, "rhost=[192.0.2.1]:1 user=alice PLAIN rejected: bad password")]


def test_log_injection_escaped(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(5)
    auth_failure("[192.0.2.7]:99", "x LOGIN rejected: y\nrhost=[198.51.100.1]:1 user=z", "LOGIN",
                 "bad password")
    auth_failure("[192.0.2.7]:99", "tab\there\\back\u2028sep", "PLAIN", "bad\npassword")
    auth_success("[192.0.2.7]:99", "", "LOGIN", "evil actor")
    # Bytes that were not UTF-8 (decoded with surrogateescape) are shown as the bytes they were.
    auth_failure("[192.0.2.7]:99", b"b\xf6b\xff\n".decode("utf-8", "surrogateescape"), "LOGIN", "invalid UTF-8")
    entries = logfile()
    assert entries == [
        (4, "rhost=[192.0.2.7]:99 user=x\\x20LOGIN\\x20rejected:\\x20y\\nrhost=[198.51.100.1]:1"
            "\\x20user=z LOGIN rejected: bad password"),
        (4, "rhost=[192.0.2.7]:99 user=tab\\there\\\\back\\u2028sep PLAIN rejected: bad\\npassword"),
        (5, "rhost=[192.0.2.7]:99 user= LOGIN ok actor=evil\\x20actor"),
        (4, "rhost=[192.0.2.7]:99 user=b\\xf6b\\xff\\n LOGIN rejected: invalid UTF-8"),
    ]
    # fail2ban sees exactly one address per line, the real one
    for _, message in entries:
        assert re.findall(r"rhost=\[([^\]]+)\]", message)[0] == "192.0.2.7"
        assert re.match(r"rhost=\[[^\]]+\]:\d+ user=\S* \S+ ", message)


# --- redaction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    (b"a1 LOGIN alice secret\r\n", b"a1 LOGIN alice ***\r\n"),
    (b"a1 login alice secret", b"a1 login alice ***"),
    (b'a1 LOGIN "alice" "s e c r e t"\r\n', b'a1 LOGIN "alice" ***\r\n'),
    (b'a1 LOGIN "al\\"ice x" pass\r\n', b'a1 LOGIN "al\\"ice x" ***\r\n'),
    (b"a1 LOGIN alice {6}\r\n", b"a1 LOGIN alice ***\r\n"),
    (b"a1 LOGIN alice {6+}\r\n", b"a1 LOGIN alice ***\r\n"),
    (b"a1 LOGIN {5}\r\n", b"a1 LOGIN {5}\r\n"),
    (b"a1 LOGIN {5}\r\nalice secret\r\n", b"a1 LOGIN {5}\r\nalice ***\r\n"),
    (b'a1 LOGIN "unterminated secret\r\n', b"a1 LOGIN ***\r\n"),
    (b"a1 LOGIN alice\r\n", b"a1 LOGIN alice\r\n"),
    (b"a1 LOGIN\r\n", b"a1 LOGIN\r\n"),
    (b"a2 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"a2 AUTHENTICATE PLAIN ***\r\n"),
    (b"a2 authenticate plain =\r\n", b"a2 authenticate plain ***\r\n"),
    (b"a2 AUTHENTICATE PLAIN\r\n", b"a2 AUTHENTICATE PLAIN\r\n"),
    (b"a3 SELECT INBOX\r\n", b"a3 SELECT INBOX\r\n"),
    (b"a4 LOGINX alice secret\r\n", b"a4 LOGINX alice secret\r\n"),
    (b"", b""),
])
def test_redact_command(line: bytes, expected: bytes) -> None:
    assert redact_command(line) == expected


def test_redact_never_raises_on_garbage() -> None:
    for line in (b"\xff\xfe LOGIN \x00\x01", b"x LOGIN {", b"x LOGIN {99999999999999999999}\r\nab",
                 b"x LOGIN {3}\r\nab", b" LOGIN a b", b"x AUTHENTICATE  "):
        assert isinstance(redact_command(line), bytes)
    assert b"b" not in redact_command(b"x LOGIN {3}\r\nab c")[-4:]


# --- imap_cmd_debug -------------------------------------------------------------------------------


def test_cmd_debug_levels(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(1)  # cmd debug prints whatever imap_log_level says
    log_command("c1", "[::1]:5000", None, b"a0 NOOP\r\n", "OK")  # level 0: nothing
    set_cmd_debug(1)
    log_command("c1", "[::1]:5000", None, b"a1 NOOP\r\n", "OK")
    log_command("c1", "[::1]:5000", None, b"a2 LOGIN alice secret\r\n", "NO")
    set_cmd_debug(2)
    log_command("c1", "[::1]:5000", "alice", b"a3 SELECT INBOX\r\n", "OK")
    log_command("c1", "[::1]:5000", "alice", b"a4 FOO\r\n", "bad")
    log_command("c1", "[::1]:5000", "al ice", b"a5 AUTHENTICATE PLAIN AGFsaWNl\r\n", "NO")
    assert logfile() == [
        (6, "cmd conn=c1 rhost=[::1]:5000 user=- NO: a2 LOGIN alice ***"),
        (6, "cmd conn=c1 rhost=[::1]:5000 user=alice OK: a3 SELECT INBOX"),
        (6, "cmd conn=c1 rhost=[::1]:5000 user=alice BAD: a4 FOO"),
        (6, "cmd conn=c1 rhost=[::1]:5000 user=al\\x20ice NO: a5 AUTHENTICATE PLAIN ***"),
    ]


def test_logs_command_says_what_log_command_would_log() -> None:
    try:
        set_cmd_debug(0)
        assert not logs_command("OK") and not logs_command("NO")
        set_cmd_debug(1)
        assert not logs_command("OK") and not logs_command("ok")
        assert logs_command("NO") and logs_command("bad")
        set_cmd_debug(2)
        assert logs_command("OK") and logs_command("NO")
    finally:
        set_cmd_debug(0)


def test_cmd_debug_validation_and_truncation(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    with pytest.raises(ValueError):
        set_cmd_debug(3)
    logfile(4)
    set_cmd_debug(2)
    log_command("c", "[::1]:1", "u", b"a APPEND INBOX " + b"x" * 5000 + b"\x00\r\n", "OK")
    [(_, message)] = logfile()
    assert message.endswith(f"... ({len('a APPEND INBOX ') + 5001} bytes)")
    assert len(message) < 2200


# --- io_debug -------------------------------------------------------------------------------------


def trace(conn: str, *exchange: tuple[str, bytes]) -> None:
    for direction, data in exchange:
        io_trace(conn, direction, data)


def test_io_trace_off_is_silent(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(6)
    trace("c", ("C", b"a LOGIN alice secret\r\n"), ("S", b"a OK\r\n"))
    assert logfile() == []
    assert log._trace_states == {}


def test_io_trace_basic_and_sensitive(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(4)
    set_io_debug(True)
    trace("c7", ("S", b"* OK ready\r\n"), ("C", b"a LOGIN alice secret\r\n"), ("S", b"a OK done\r\n"))
    io_trace("c7", "C", b"whatever", sensitive=True)
    with pytest.raises(ValueError):
        io_trace("c7", "X", b"")
    assert [m for _, m in logfile()] == [
        "io conn=c7 S: * OK ready",
        "io conn=c7 C: a LOGIN alice ***",
        "io conn=c7 S: a OK done",
        "io conn=c7 C: <redacted 8 bytes>",
    ]


def test_io_trace_of_bytes_sent_from_a_file_shows_their_count(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(4)
    io_trace_file("c8", 10)
    assert logfile() == []  # off: nothing, not even a state kept
    assert log._trace_states == {}
    set_io_debug(True)
    trace("c8", ("S", b"* 1 FETCH (BODY[] {5000000}\r\n"))
    io_trace_file("c8", 5_000_000)
    trace("c8", ("S", b")\r\nf OK done\r\n"))
    assert [m for _, m in logfile()] == [
        "io conn=c8 S: * 1 FETCH (BODY[] {5000000}",
        "io conn=c8 S: <5000000 bytes from a file>",
        "io conn=c8 S: )",
        "io conn=c8 S: f OK done",
    ]


def test_io_trace_login_literals(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(6)
    set_io_debug(True)
    trace("c", ("C", b"a LOGIN {5}\r\n"), ("S", b"+ Ready\r\n"), ("C", b"alice {6}\r\n"),
          ("S", b"+ Ready\r\n"), ("C", b"sec"), ("C", b"ret\r\n"), ("S", b"a OK\r\n"),
          ("C", b"b LOGIN bob {4+}\r\npa\r\n\r\nc NOOP\r\n"))
    messages = [m for _, m in logfile()]
    text = "\n".join(messages)
    assert "secret" not in text and "alice" not in text and "pa" not in text.replace("Ready", "")
    assert messages == [
        "io conn=c C: a LOGIN {5}",
        "io conn=c S: + Ready",
        "io conn=c C: <redacted 9 bytes>",
        "io conn=c S: + Ready",
        "io conn=c C: <redacted 6 bytes>",
        "io conn=c S: a OK",
        "io conn=c C: b LOGIN bob ***",
        "io conn=c C: <redacted 4 bytes>",
        "io conn=c C: c NOOP",
    ]


def test_io_trace_authenticate_exchange(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(6)
    set_io_debug(True)
    trace("c", ("C", b"a AUTHENTICATE LOGIN\r\n"), ("S", b"+ VXNlcm5hbWU6\r\n"), ("C", b"YWxpY2U=\r\n"),
          ("S", b"+ UGFzc3dvcmQ6\r\n"), ("C", b"c2VjcmV0\r\n"), ("S", b"a OK"), ("S", b" done\r\n"),
          ("C", b"b NOOP\r\n"))
    assert [m for _, m in logfile()] == [
        "io conn=c C: a AUTHENTICATE LOGIN",
        "io conn=c S: + VXNlcm5hbWU6",
        "io conn=c C: <redacted 8 bytes>",
        "io conn=c S: + UGFzc3dvcmQ6",
        "io conn=c C: <redacted 8 bytes>",
        "io conn=c S: a OK",
        "io conn=c S:  done",
        "io conn=c C: b NOOP",
    ]


def test_io_trace_split_line_and_end(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(6)
    set_io_debug(True)
    trace("c", ("C", b"a LOG"), ("C", b"IN alice sec"), ("C", b"ret\r\nb NOOP"))
    io_trace_end("c")
    assert [m for _, m in logfile()] == ["io conn=c C: a LOGIN alice ***", "io conn=c C: b NOOP"]
    assert "c" not in log._trace_states


def test_io_trace_refused_literal(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(6)
    set_io_debug(True)
    trace("c", ("C", b"a APPEND INBOX {99999999}\r\n"), ("S", b"a NO [TOOBIG] too big\r\n"),
          ("C", b"b LOGIN alice secret\r\n"))
    assert [m for _, m in logfile()][-1] == "io conn=c C: b LOGIN alice ***"


def test_io_trace_append_literal_shown(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(6)
    set_io_debug(True)
    trace("c", ("C", b"a APPEND INBOX {23}\r\n"), ("S", b"+ go\r\n"),
          ("C", b"x LOGIN not a command\r\n)\r\n"))
    assert [m for _, m in logfile()] == [
        "io conn=c C: a APPEND INBOX {23}",
        "io conn=c S: + go",
        "io conn=c C: x LOGIN not a command",
        "io conn=c C: )",
    ]


def test_io_trace_overlong_line(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(6)
    set_io_debug(True)
    size = log._MAX_PENDING_LINE + 10
    trace("c", ("C", b"a LOGIN alice " + b"s" * size), ("C", b"tail\r\nb NOOP\r\n"))
    messages = [m for _, m in logfile()]
    assert messages == [
        f"io conn=c C: <{size + len(b'a LOGIN alice ')} bytes without a line end>",
        "io conn=c C: <rest of an overlong line: 6 bytes>",
        "io conn=c C: b NOOP",
    ]


def test_io_trace_control_characters_escaped(logfile: Callable[..., list[tuple[int, str]]]) -> None:
    logfile(6)
    set_io_debug(True)
    trace("c", ("C", b"a SELECT \x1b[2J\xff\r\n"))
    assert [m for _, m in logfile()] == ["io conn=c C: a SELECT \\x1b[2J\\xff"]


def test_startup_errors_reach_the_journal_as_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Before logging is set up, why gximap cannot start goes to standard error: in the journal
    with priority err, so `systemctl status` and `journalctl -p err` show it."""
    from gximap import cli

    bad = tmp_path / "imap.cfg"
    bad.write_text("imap_conn_timeout = 3h30x\n")
    assert cli.main(["-c", str(bad)]) == 2
    plain = capsys.readouterr().err
    assert plain.startswith("gximap: ") and "imap_conn_timeout" in plain
    _journal_stream_of_fd_2(monkeypatch)
    assert cli.main(["-c", str(bad)]) == 2
    assert capsys.readouterr().err == "<3>" + plain
