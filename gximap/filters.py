"""IMAP filters at delivery: a command that picks the folder and adds flags (maddy's imap.filter.command).

    command = FilterCommand.parse("/usr/local/bin/sieve.sh {account_name} {sender}", timeout=10.0)
    outcome = command.run(message, {"account_name": "alice", "sender": "bob@example.org"})
    outcome.folder        # None: the default folder (INBOX)
    outcome.flags         # flags/keywords to add, validated
    outcome.error         # None, or why the filter's advice was ignored (logged by the caller)

The command line is split like a shell would (quotes, backslashes) but no shell ever runs: the
program is executed directly with an argument list. Placeholders ``{name}`` are expanded in the
arguments only, never in the program name, so no value taken from a message can choose what
runs; a value may contain anything (spaces, quotes, ``;``) and still stays one argument.
Placeholders: {account_name} {sender} {rcpt_to} {original_rcpt_to} {subject} {msg_id} {source_ip}
{source_host} {source_rdns} {auth_user} {address}; unknown ones are left as written.

The message goes to the command's standard input. Its standard output, read up to
``max_output`` bytes: the first line, if not empty, names the target folder; every further line
holds flags to add (``$Label1``, ``\\Flagged``; several per line separated by spaces are accepted).
A line that is not a valid flag is skipped. Whatever goes wrong (the program cannot start, exits
non-zero, is killed by a signal, runs past ``timeout``, writes too much or writes no UTF-8), the
outcome has ``error`` set, no folder and no flags: the message is delivered as if there were no
filter. The command runs in a session of its own and on a time-out its whole process group is
killed, so a stuck grandchild cannot outlive it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from midb.errors import InvalidFlag
from midb.messages import parse_flags

__all__ = ["PLACEHOLDERS", "FilterCommand", "FilterOutcome", "FilterSyntaxError", "valid_flag"]

PLACEHOLDERS = ("account_name", "sender", "rcpt_to", "original_rcpt_to", "subject", "msg_id", "source_ip",
                "source_host", "source_rdns", "auth_user", "address")
DEFAULT_MAX_OUTPUT = 64 * 1024
_MAX_STDERR = 4096  # kept for the log line when the filter fails
_WRITE_CHUNK = 64 * 1024
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")
_SYSTEM_FLAGS = {"\\seen": "\\Seen", "\\answered": "\\Answered", "\\flagged": "\\Flagged",
                 "\\deleted": "\\Deleted", "\\draft": "\\Draft"}
# Variables that would let a filter talk to systemd or inherit socket activation as if it were us.
_SCRUBBED_ENVIRONMENT = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_PID",
                         "WATCHDOG_USEC")


class FilterSyntaxError(ValueError):
    """The configured command line cannot be used."""


def valid_flag(text: str) -> str | None:
    """The canonical spelling of a flag a filter may add (a system flag other than \\Recent, or a
    keyword atom), or None."""
    if text.startswith("\\"):
        return _SYSTEM_FLAGS.get(text.lower())
    try:
        parse_flags([text])  # the store's own rule for keywords
    except InvalidFlag:
        return None
    return text


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    folder: str | None = None
    flags: tuple[str, ...] = ()
    error: str | None = None
    skipped_flags: tuple[str, ...] = ()  # output lines that were not valid flags
    elapsed: float = 0.0


@dataclass(frozen=True, slots=True)
class FilterCommand:
    program: str
    args: tuple[str, ...]
    timeout: float = 10.0
    max_output: int = DEFAULT_MAX_OUTPUT

    @classmethod
    def parse(cls, text: str, *, timeout: float = 10.0, max_output: int = DEFAULT_MAX_OUTPUT) -> FilterCommand:
        """Split a configured command line; FilterSyntaxError when it is unusable."""
        try:
            words = shlex.split(text, comments=False, posix=True)
        except ValueError as exc:
            raise FilterSyntaxError(f"cannot split the command line: {exc}") from None
        if not words:
            raise FilterSyntaxError("the command line is empty")
        program = words[0]
        if "\0" in text:
            raise FilterSyntaxError("the command line contains NUL")
        if _PLACEHOLDER_RE.search(program):
            raise FilterSyntaxError("placeholders are not expanded in the program name")
        if not os.path.isabs(program):
            raise FilterSyntaxError(f"{program!r}: the program must be given by its absolute path")
        if timeout <= 0 or max_output < 1:
            raise FilterSyntaxError("the time-out and the output limit must be positive")
        return cls(program, tuple(words[1:]), timeout, max_output)

    def argv(self, values: Mapping[str, str]) -> list[str]:
        """The argument list with placeholders expanded (NUL, which no argument can carry, dropped)."""

        def expand(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in PLACEHOLDERS:
                return match.group(0)
            return values.get(name, "").replace("\0", "")

        return [self.program, *(_PLACEHOLDER_RE.sub(expand, arg) for arg in self.args)]

    def run(self, message: bytes, values: Mapping[str, str]) -> FilterOutcome:
        """Run the filter on ``message``; never raises for anything the filter does."""
        started = time.monotonic()
        argv = self.argv(values)
        try:
            stdout, stderr, status, problem = _run(argv, message, self.timeout, self.max_output)
        except OSError as exc:
            return FilterOutcome(error=f"cannot run {self.program}: {exc.strerror or exc}",
                                 elapsed=time.monotonic() - started)
        elapsed = time.monotonic() - started
        if problem is None and status != 0:
            if status < 0:
                problem = f"killed by signal {-status}"
            else:
                problem = f"exit status {status}"
        if problem is not None:
            detail = _stderr_summary(stderr)
            return FilterOutcome(error=problem + (f": {detail}" if detail else ""), elapsed=elapsed)
        try:
            text = stdout.decode("utf-8")
        except UnicodeDecodeError:
            return FilterOutcome(error="output is not UTF-8", elapsed=elapsed)
        return _parse_output(text, elapsed)


def _parse_output(text: str, elapsed: float) -> FilterOutcome:
    lines = text.splitlines()
    folder = lines[0].strip() if lines else ""
    flags: list[str] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for line in lines[1:]:
        for word in line.split():
            flag = valid_flag(word)
            if flag is None:
                skipped.append(word)
            elif flag.lower() not in seen:
                seen.add(flag.lower())
                flags.append(flag)
    return FilterOutcome(folder or None, tuple(flags), None, tuple(skipped), elapsed)


def _stderr_summary(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())[:500]


def _child_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENVIRONMENT}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def _run(argv: Sequence[str], message: bytes, timeout: float,
         max_output: int) -> tuple[bytes, bytes, int, str | None]:
    """(stdout, stderr, exit status, problem): the problem names a time-out or an output overflow."""
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(  # noqa: S603 - an argument list, no shell: nothing is interpreted
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        close_fds=True, start_new_session=True, env=_child_environment(), cwd="/",
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdout, stderr = bytearray(), bytearray()
    problem: str | None = None
    view = memoryview(message)
    offset = 0
    with selectors.DefaultSelector() as selector:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
        if message:
            selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        try:
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    problem = f"timed out after {timeout:g}s"
                    break
                for key, _mask in selector.select(remaining):
                    ready = key.fileobj
                    if ready is proc.stdin:
                        try:
                            offset += os.write(proc.stdin.fileno(), view[offset:offset + _WRITE_CHUNK])
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            offset = len(view)  # the filter does not want (the rest of) the message
                        if offset >= len(view):
                            selector.unregister(proc.stdin)
                            proc.stdin.close()
                        continue
                    try:
                        chunk = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        selector.unregister(ready)
                        continue
                    if ready is proc.stdout:
                        stdout += chunk
                        if len(stdout) > max_output:
                            problem = f"more than {max_output} bytes of output"
                            break
                    elif len(stderr) < _MAX_STDERR:
                        stderr += chunk[:_MAX_STDERR - len(stderr)]
                if problem is not None:
                    break
        finally:
            view.release()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    stream.close()
    if problem is not None:
        _kill_group(proc)
    else:
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            proc.wait(remaining)
        except subprocess.TimeoutExpired:
            problem = f"timed out after {timeout:g}s"  # closed its output but kept running
            _kill_group(proc)
    return bytes(stdout), bytes(stderr), proc.returncode if proc.returncode is not None else -1, problem


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            with contextlib.suppress(OSError):
                proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5.0)
