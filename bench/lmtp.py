"""Benchmark of LMTP delivery into a gximap started for the run (loopback only, fsync on).

    python bench/lmtp.py [--seconds 5] [--connections 4] [--size 4096] [--dir DIR] [--no-fsync]

Starts ``python -m gximap -c FILE`` in a temporary directory with ``midb_fsync = yes``, an LMTP
listener on 127.0.0.1 and ten accounts, then for each scenario (one recipient per message, ten
recipients per message) keeps ``--connections`` LMTP clients busy for ``--seconds`` (pipelined
MAIL/RCPT/DATA, as Postfix sends them) and prints messages and recipient deliveries per second and
the latency of a transaction. Every wait is bounded; the server is stopped in a finally clause.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from midb.store import Store  # noqa: E402

ACCOUNTS = [f"user{number}" for number in range(10)]
IO_TIMEOUT = 30.0
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_message(size: int) -> bytes:
    header = (b"From: Bench <bench@example.org>\r\nTo: users@bench.example\r\nSubject: LMTP benchmark\r\n"
              b"Message-ID: <bench@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n")
    line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\r\n"
    body = line * max(1, (size - len(header)) // len(line))
    return header + body


class GximapServer:
    def __init__(self, directory: Path, *, fsync: bool) -> None:
        self.dir = directory
        self.imap_port = free_port()
        self.lmtp_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        config = {
            "imap_listen": f"127.0.0.1:{self.imap_port}",
            "lmtp_listen": f"127.0.0.1:{self.lmtp_port}",
            "midb_path": str(directory / "midb"),
            "midb_fsync": "yes" if fsync else "no",
            "data_file_path": str(REPO / "data"),
            "imap_log_file": str(directory / "gximap.log"),
            "imap_log_level": "3",
            "running_identity": "",
            "delivery_map": "email_localpart",
            "lmtp_context_num": "64",
        }
        (directory / "imap.cfg").write_text("".join(f"{key} = {value}\n" for key, value in config.items()))
        with Store(str(directory / "midb"), fsync=False, data_path=[str(REPO / "data")]) as store:
            for name in ACCOUNTS:
                store.create_account(name)

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gximap", "-c", str(self.dir / "imap.cfg")],
                                     cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gximap exited with status {self.proc.returncode}; see {self.dir}/gximap.log")
            try:
                with socket.create_connection(("127.0.0.1", self.lmtp_port), timeout=2) as sock:
                    if sock.recv(4) == b"220 ":
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("gximap did not start serving LMTP in time")

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class LmtpClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buffer = b""
        self._replies(1)
        self.sock.sendall(b"LHLO bench.example\r\n")
        while not self._line().startswith(b"250 "):
            pass

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("LMTP server closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _replies(self, count: int) -> list[bytes]:
        return [self._line() for _ in range(count)]

    def deliver(self, recipients: list[str], wire: bytes) -> None:
        """One pipelined transaction; raises when a reply is not positive."""
        self.sock.sendall(b"MAIL FROM:<bench@example.org>\r\n"
                          + b"".join(b"RCPT TO:<%s@bench.example>\r\n" % r.encode() for r in recipients)
                          + b"DATA\r\n")
        replies = self._replies(len(recipients) + 2)
        if not replies[-1].startswith(b"354"):
            raise RuntimeError(f"transaction refused: {replies!r}")
        self.sock.sendall(wire)
        for reply in self._replies(len(recipients)):
            if not reply.startswith(b"250"):
                raise RuntimeError(f"delivery failed: {reply!r}")

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()


@dataclass
class Result:
    messages: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_scenario(port: int, recipients: int, connections: int, seconds: float, wire: bytes) -> tuple[Result, float]:
    result = Result()
    stop_at = time.monotonic() + seconds

    def worker(index: int) -> None:
        try:
            client = LmtpClient(port)
        except (OSError, ConnectionError) as exc:
            with result.lock:
                result.errors.append(str(exc))
            return
        try:
            number = index
            while time.monotonic() < stop_at:
                targets = [ACCOUNTS[(number + offset) % len(ACCOUNTS)] for offset in range(recipients)]
                started = time.monotonic()
                client.deliver(targets, wire)
                elapsed = time.monotonic() - started
                with result.lock:
                    result.messages += 1
                    result.latencies.append(elapsed)
                number += 1
        except (OSError, RuntimeError, ConnectionError) as exc:
            with result.lock:
                result.errors.append(str(exc))
        finally:
            client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + IO_TIMEOUT)
    return result, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each scenario")
    parser.add_argument("--connections", type=int, default=4, help="concurrent LMTP connections")
    parser.add_argument("--size", type=int, default=4096, help="message size in bytes")
    parser.add_argument("--dir", help="directory for the server (default: a temporary one, removed after)")
    parser.add_argument("--no-fsync", action="store_true", help="midb_fsync = no (for comparison)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.connections < 1 or args.size < 200:
        parser.error("--seconds must be positive, --connections at least 1, --size at least 200")

    own_dir = args.dir is None
    directory = Path(tempfile.mkdtemp(prefix="gximap-bench-lmtp-")) if own_dir else Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    message = make_message(args.size)
    wire = message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    server = GximapServer(directory, fsync=not args.no_fsync)
    failed = False
    try:
        server.start()
        print(f"gximap LMTP on 127.0.0.1:{server.lmtp_port}, fsync {'off' if args.no_fsync else 'on'}, "
              f"{args.connections} connection(s), {len(message)}-byte messages, {args.seconds:g} s per scenario")
        print(f"{'recipients':>10} {'messages/s':>11} {'deliveries/s':>13} {'p50 ms':>8} {'p95 ms':>8} {'errors':>7}")
        for recipients in (1, 10):
            result, elapsed = run_scenario(server.lmtp_port, recipients, args.connections, args.seconds, wire)
            latencies = sorted(result.latencies) or [0.0]
            p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
            print(f"{recipients:>10} {result.messages / elapsed:>11.1f} {result.messages * recipients / elapsed:>13.1f} "
                  f"{statistics.median(latencies) * 1000:>8.1f} {p95 * 1000:>8.1f} {len(result.errors):>7}")
            for error in result.errors[:3]:
                print(f"  error: {error}")
            failed = failed or bool(result.errors)
    finally:
        server.stop()
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
