"""Memory per idle IMAP session: many authenticated sessions in IDLE on a gximap started for the run.

    python bench/idle_memory.py [--sessions 1000,5000,10000] [--mailboxes 10] [--messages 200]

Starts ``python -m gximap -c FILE`` in a temporary directory (loopback only, fsync off), with
``--mailboxes`` accounts holding ``--messages`` messages each in INBOX. Passwords are checked
against a passwd-file of ``{PLAIN}`` entries: a login then costs microseconds instead of the
deliberate 50 ms of scrypt, and what is measured is the session, not the password hash. Sessions
are opened in stages (the ``--sessions`` counts, cumulative); each does LOGIN, SELECT INBOX and
IDLE, spread evenly over the mailboxes (so many sessions share a mailbox, as clients of one user
do). After each stage the server's resident memory is read from /proc and the figure printed is

    KiB/session = (RSS after the stage - RSS with --baseline sessions idle) / (sessions - baseline)

The baseline (default 100 sessions) absorbs one-time allocations (imports warmed up, thread
pools, caches). Every wait is bounded by --timeout; the server is stopped in a finally clause and
the directory removed. The client raises its own file-descriptor limit (the server raises its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from midb.store import Store  # noqa: E402

HOST = "127.0.0.1"
PASSWORD = "idle-secret"
START_TIMEOUT = 30.0
SETTLE = 1.0  # seconds to let the server finish handling the last IDLE before reading its memory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def message(number: int) -> bytes:
    return (b"From: Sender <sender@example.org>\r\nTo: <user@example.net>\r\nSubject: idle test %d\r\n"
            b"Message-ID: <%d@example.org>\r\n\r\n" % (number, number) + b"Some body text.\r\n" * 20)


def rss_kib(pid: int) -> int:
    """Resident set size of the process (all threads), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Server:
    """gximap in a temporary directory; stop() is idempotent and never leaves the process behind."""

    def __init__(self, directory: Path, *, mailboxes: int, messages: int, sessions: int) -> None:
        self.dir = directory
        self.port = free_port()
        self.accounts = [f"idle{number}" for number in range(mailboxes)]
        self.proc: subprocess.Popen[bytes] | None = None
        store = Store(str(directory / "midb"), fsync=False, data_path=[str(REPO / "data")])
        try:
            for account in self.accounts:
                store.create_account(account)
                inbox = store.get_folder(account, "INBOX")
                assert inbox is not None
                store.append_many(account, inbox.id, [(message(n), ("\\Seen",) if n % 4 else (), None, 0)
                                                      for n in range(messages)])
        finally:
            store.close()
        (directory / "passwd").write_text("".join(f"{name}:{{PLAIN}}{PASSWORD}\n" for name in self.accounts))
        settings = {
            "imap_listen": f"{HOST}:{self.port}",
            "midb_path": str(directory / "midb"),
            "midb_fsync": "no",
            "data_file_path": str(REPO / "data"),
            "imap_log_file": str(directory / "gximap.log"),
            "imap_log_level": "3",
            "running_identity": "",
            "context_num": str(sessions + 256),
            "imap_max_conn_per_user_ip": "0",  # every session from loopback, to a few accounts
            "imap_fd_limit": "0",
            "insecure_auth": "yes",
            "auth_backend": "passwd-file",
            "auth_passwd_file": str(directory / "passwd"),
            "imap_autologout_time": "2 hours",
        }
        self.config = directory / "imap.cfg"
        self.config.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gximap", "-c", str(self.config)], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr", "wb"),  # noqa: SIM115
                                     start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gximap exited with status {self.proc.returncode}: "
                                   + (self.dir / "stderr").read_text(errors="replace")[-2000:])
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=2) as sock:
                if sock.recv(4) == b"* OK":
                    return
            time.sleep(0.05)
        raise TimeoutError("gximap did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class IdleSession:
    """One client connection, driven into IDLE."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int, account: str, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 16)
            self.writer = writer
            await reader.readuntil(b"\r\n")
            for tag, command, done in ((b"a", b"LOGIN %s %s" % (account.encode(), PASSWORD.encode()), b"a OK"),
                                       (b"b", b"SELECT INBOX", b"b OK"), (b"c", b"IDLE", b"+ ")):
                writer.write(tag + b" " + command + b"\r\n")
                await writer.drain()
                while True:
                    line = await reader.readuntil(b"\r\n")
                    if line.startswith(done):
                        break
                    if line.startswith(tag + b" "):
                        raise RuntimeError(f"{command!r} failed: {line!r}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = None


async def open_sessions(port: int, accounts: list[str], first: int, count: int, concurrency: int,
                        timeout: float) -> list[IdleSession]:
    limit = asyncio.Semaphore(concurrency)
    sessions = [IdleSession() for _ in range(count)]

    async def one(index: int, session: IdleSession) -> None:
        async with limit:
            await session.open(port, accounts[(first + index) % len(accounts)], timeout)

    results = await asyncio.gather(*(one(index, session) for index, session in enumerate(sessions)),
                                   return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        for session in sessions:
            session.close()
        raise RuntimeError(f"{len(failures)} of {count} sessions failed, e.g. {failures[0]!r}")
    return sessions


async def run(args: argparse.Namespace) -> int:
    stages = sorted({int(value) for value in args.sessions.split(",") if value.strip()})
    if not stages or stages[0] <= args.baseline:
        raise SystemExit("every --sessions count must exceed --baseline")
    limit = raise_fd_limit(stages[-1] + 256)
    if limit < stages[-1] + 64:
        raise SystemExit(f"file-descriptor limit {limit} is too low for {stages[-1]} sessions")
    directory = Path(tempfile.mkdtemp(prefix="gximap-idle-"))
    server = Server(directory, mailboxes=args.mailboxes, messages=args.messages, sessions=stages[-1])
    sessions: list[IdleSession] = []
    deadline = time.monotonic() + args.timeout
    try:
        server.start()
        idle_rss = rss_kib(server.pid)
        sessions += await open_sessions(server.port, server.accounts, 0, args.baseline, args.concurrency,
                                        args.timeout)
        await asyncio.sleep(SETTLE)
        base = rss_kib(server.pid)
        print(f"server RSS: {idle_rss / 1024:.1f} MiB without sessions, {base / 1024:.1f} MiB with "
              f"{args.baseline} (baseline)")
        print(f"{'sessions':>9} {'RSS MiB':>9} {'KiB/session':>12} {'ramp s':>7}")
        for count in stages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print("time limit reached; stopping")
                break
            started = time.monotonic()
            sessions += await open_sessions(server.port, server.accounts, len(sessions), count - len(sessions),
                                            args.concurrency, min(remaining, args.timeout))
            ramp = time.monotonic() - started
            await asyncio.sleep(SETTLE)
            rss = rss_kib(server.pid)
            print(f"{count:>9} {rss / 1024:>9.1f} {(rss - base) / (count - args.baseline):>12.1f} {ramp:>7.1f}",
                  flush=True)
        return 0
    finally:
        for session in sessions:
            session.close()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="1000,5000,10000", help="cumulative session counts to measure at")
    parser.add_argument("--baseline", type=int, default=100, help="sessions open when the baseline is taken")
    parser.add_argument("--mailboxes", type=int, default=10, help="accounts the sessions are spread over")
    parser.add_argument("--messages", type=int, default=200, help="messages in each INBOX")
    parser.add_argument("--concurrency", type=int, default=200, help="sessions being opened at once")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the whole run may take")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
