"""What the side-by-side probes (bench.noop, bench.bodies, bench.folders, bench.roundtrip) share:
the --servers and --dir options, a server started for one measurement and always stopped and
removed after it, the list (and the loop that measures each) of the servers that are installed,
and a blocking client connection."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import servers
from bench.client import ImapError

Figures = dict[str, float]
COMMAND_TIMEOUT = 60.0


def add_server_options(parser: argparse.ArgumentParser, default_dir: Path) -> None:
    parser.add_argument("--servers", default="gximap,dovecot")
    parser.add_argument("--dir", type=Path, default=default_dir)


def server_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The --servers list; an unknown name is a usage error."""
    names = [name for name in args.servers.split(",") if name]
    unknown = [name for name in names if name not in servers.SERVER_CLASSES]
    if unknown:
        parser.error(f"unknown servers {unknown}")
    return names


@contextlib.contextmanager
def started_server(name: str, directory: Path, accounts: list[servers.Account], *, max_sessions: int,
                   fill: Callable[[servers.BenchServer], None] | None = None) -> Iterator[servers.BenchServer]:
    """``name``'s server in a fresh ``directory`` with the accounts (and what ``fill`` stores
    before it starts), on 127.0.0.1; stopped and its directory removed afterwards."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    server = servers.SERVER_CLASSES[name](directory, accounts, max_sessions=max_sessions)
    try:
        server.prepare(servers.SCHEME_DEFAULT)
        if fill is not None:
            fill(server)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def installed(names: list[str]) -> list[str]:
    """The servers of ``names`` that are installed; each other one is named as not measured."""
    found = []
    for name in names:
        missing = servers.SERVER_CLASSES[name].missing()
        if missing:
            print(f"{name}: not measured ({missing})")
        else:
            found.append(name)
    return found


def measure_each(names: list[str], measure: Callable[[str], Figures],
                 line: Callable[[str, Figures], str]) -> dict[str, Figures]:
    """Measure each installed server in turn, printing ``line`` of its figures; a server that is
    not installed is named as not measured."""
    results: dict[str, Figures] = {}
    for name in installed(names):
        results[name] = measure(name)
        print(line(name, results[name]))
    return results


def print_ratios(results: dict[str, Figures], figures: list[tuple[str, str]]) -> None:
    """Print gximap's figures over Dovecot's, ``(label, key)`` each, when both were measured."""
    if "gximap" in results and "dovecot" in results:
        gximap, dovecot = results["gximap"], results["dovecot"]
        print("gximap/Dovecot: " + ", ".join(f"{label} {gximap[key] / max(dovecot[key], 1e-9):.2f}"
                                             for label, key in figures))


class LineClient:
    """A blocking IMAP client connection that skips literals unread: a probe's client must cost
    far less per byte than the servers (asyncio and a copy of each answer cost more than gximap's
    sendfile path in bench.bodies)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=COMMAND_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.scratch = memoryview(bytearray(1 << 20))
        self.tags = 0
        if not self.line().startswith(b"* OK"):
            raise ImapError("unexpected greeting")

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ImapError("connection closed")
            self.buffer += data
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 2]
        return line

    def skip(self, count: int) -> None:
        taken = min(count, len(self.buffer))
        del self.buffer[:taken]
        count -= taken
        while count > 0:
            got = self.sock.recv_into(self.scratch, min(count, len(self.scratch)))
            if not got:
                raise ImapError("connection closed")
            count -= got

    def command(self, text: bytes, untagged: list[bytes] | None = None) -> tuple[bytes, int]:
        """Send a command; its tagged status line and the literal octets of its answer. When
        ``untagged`` is given, the first line of each untagged response is appended to it (up to
        its first literal, which is skipped like any other)."""
        self.tags += 1
        tag = b"b%d" % self.tags
        self.sock.sendall(tag + b" " + text + b"\r\n")
        literal_bytes = 0
        after_literal = False
        while True:
            line = self.line()
            # The rest of a response after a literal is not a new response, whatever it starts with.
            if untagged is not None and not after_literal and line.startswith(b"* "):
                untagged.append(line)
            after_literal = False
            if line.endswith(b"}") and b"{" in line:
                count = int(line[line.rindex(b"{") + 1:-1].rstrip(b"+"))
                self.skip(count)
                literal_bytes += count
                after_literal = True
                continue
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise ImapError(f"{text[:40]!r}: {line[:200]!r}")
                return line, literal_bytes

    def close(self) -> None:
        self.sock.close()
