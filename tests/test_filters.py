"""gximap.filters: the IMAP filter command runner (parsing, expansion, output, failures, limits)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gximap.filters import FilterCommand, FilterSyntaxError, valid_flag

MESSAGE = b"Subject: test\r\n\r\nbody\r\n"


def script(tmp_path: Path, body: str, name: str = "filter.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_parse_splits_like_a_shell_without_one() -> None:
    command = FilterCommand.parse("/usr/bin/env 'a b' \"{sender}\" {rcpt_to}x", timeout=3)
    assert command.program == "/usr/bin/env" and command.args == ("a b", "{sender}", "{rcpt_to}x")
    assert command.timeout == 3


@pytest.mark.parametrize("text", ["", "   ", "relative/prog {sender}", "/bin/{account_name} x", "/bin/sh 'open",
                                  "/bin/sh\0x"])
def test_parse_refuses_unusable_command_lines(text: str) -> None:
    with pytest.raises(FilterSyntaxError):
        FilterCommand.parse(text)


def test_parse_refuses_bad_limits() -> None:
    with pytest.raises(FilterSyntaxError):
        FilterCommand.parse("/bin/true", timeout=0)
    with pytest.raises(FilterSyntaxError):
        FilterCommand.parse("/bin/true", max_output=0)


def test_expansion_keeps_each_value_one_argument() -> None:
    command = FilterCommand.parse("/bin/prog --from={sender} {subject} {unknown} {account_name}{account_name}")
    argv = command.argv({"sender": "a b; rm -rf / $(x) `y`", "subject": "two\0words", "account_name": "al"})
    assert argv == ["/bin/prog", "--from=a b; rm -rf / $(x) `y`", "twowords", "{unknown}", "alal"]
    # A value that looks like a placeholder is not expanded again.
    assert command.argv({"sender": "{subject}", "subject": "s"})[1] == "--from={subject}"


def test_output_folder_and_flags(tmp_path: Path) -> None:
    prog = script(tmp_path, "cat >/dev/null\nprintf 'Lists/Python\\n$Label1\\n\\\\seen \\\\Flagged $Label1\\n"
                            "\\\\Recent\\nbad(flag\\n\\n'\n")
    outcome = FilterCommand.parse(prog).run(MESSAGE, {})
    assert outcome.error is None
    assert outcome.folder == "Lists/Python"
    assert outcome.flags == ("$Label1", "\\Seen", "\\Flagged")
    assert outcome.skipped_flags == ("\\Recent", "bad(flag")


def test_empty_first_line_adds_flags_only_and_no_output_changes_nothing(tmp_path: Path) -> None:
    outcome = FilterCommand.parse(script(tmp_path, "printf '\\n$Tag\\n'\n")).run(MESSAGE, {})
    assert (outcome.folder, outcome.flags, outcome.error) == (None, ("$Tag",), None)
    outcome = FilterCommand.parse(script(tmp_path, "exit 0\n", "quiet.sh")).run(MESSAGE, {})
    assert (outcome.folder, outcome.flags, outcome.error) == (None, (), None)


def test_the_message_arrives_on_stdin_and_arguments_are_expanded(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    prog = script(tmp_path, f'cat > {seen}\nprintf "%s|" "$@" >> {seen}\n')
    outcome = FilterCommand.parse(f"{prog} {{account_name}} {{subject}}").run(
        MESSAGE, {"account_name": "alice", "subject": "hello world"})
    assert outcome.error is None
    assert seen.read_bytes() == MESSAGE + b"alice|hello world|"


@pytest.mark.parametrize(("body", "error"), [
    ("echo Junk; exit 2\n", "exit status 2"),
    ("echo Junk; echo 'why not' >&2; exit 1\n", "exit status 1: why not"),
    ("kill -TERM $$\n", "killed by signal 15"),
    ("printf '\\377\\376\\n'\n", "output is not UTF-8"),
])
def test_failures_mean_no_advice(tmp_path: Path, body: str, error: str) -> None:
    outcome = FilterCommand.parse(script(tmp_path, body)).run(MESSAGE, {})
    assert (outcome.folder, outcome.flags) == (None, ())
    assert outcome.error == error


def test_missing_program(tmp_path: Path) -> None:
    outcome = FilterCommand.parse(str(tmp_path / "nowhere")).run(MESSAGE, {})
    assert outcome.error is not None and outcome.error.startswith("cannot run")


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    prog = script(tmp_path, f"sleep 30 &\necho $! > {pid_file}\necho Junk\nwait\n")
    started = time.monotonic()
    outcome = FilterCommand.parse(prog, timeout=0.5).run(MESSAGE, {})
    assert outcome.error == "timed out after 0.5s" and outcome.folder is None
    assert time.monotonic() - started < 5
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_filter_that_closes_its_output_but_keeps_running_times_out(tmp_path: Path) -> None:
    prog = script(tmp_path, "exec >&- 2>&-\nsleep 30\n")
    outcome = FilterCommand.parse(prog, timeout=0.3).run(MESSAGE, {})
    assert outcome.error == "timed out after 0.3s"


def test_output_is_bounded(tmp_path: Path) -> None:
    prog = script(tmp_path, "yes INBOX\n")
    outcome = FilterCommand.parse(prog, max_output=1000, timeout=5).run(MESSAGE, {})
    assert outcome.error == "more than 1000 bytes of output"


def test_a_filter_ignoring_a_big_message_is_fine(tmp_path: Path) -> None:
    prog = script(tmp_path, "echo Archive\n")  # never reads stdin: the write side gets EPIPE
    outcome = FilterCommand.parse(prog).run(b"x" * (4 << 20), {})
    assert (outcome.folder, outcome.error) == ("Archive", None)


def test_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("GXIMAP_TEST_KEEP", "1")
    prog = script(tmp_path, 'printf "\\n%s\\n" "x${NOTIFY_SOCKET:-none}${GXIMAP_TEST_KEEP}"\n')
    outcome = FilterCommand.parse(prog).run(b"", {})
    assert outcome.flags == ("xnone1",)
    assert os.environ["NOTIFY_SOCKET"] == "/run/systemd/notify"


@pytest.mark.parametrize(("text", "flag"), [
    ("\\seen", "\\Seen"), ("\\ANSWERED", "\\Answered"), ("\\Draft", "\\Draft"), ("$Junk", "$Junk"),
    ("NonJunk", "NonJunk"), ("\\Recent", None), ("\\Custom", None), ("a b", None), ("a(b", None),
    ("ü", None), ("", None), ("x" * 1000, None),
])
def test_valid_flag(text: str, flag: str | None) -> None:
    assert valid_flag(text) == flag
