"""What sending a large message costs: FETCH BODY.PEEK[] of a big message, side by side.

    .venv/bin/python -m bench.bodies [--servers gximap,dovecot] [--clients 4] [--size-mib 16]
                                     [--duration 8] [--dir var/bench/bodies]

Each client logs in, appends one message of --size-mib MiB to its own INBOX (LITERAL+), selects
it and fetches it whole, again and again, for the duration (what a client downloading an
attachment asks). The probe prints the fetches per second, the MiB per second they carried, the
median time of one fetch and the server's CPU milliseconds per fetch, then the ratios
gximap/Dovecot. gximap hands a large body range on a plain connection to the kernel
(sendfile(2), gximap.net.handler.FileRegion); Dovecot reads the Maildir file and writes it to
the socket. The message is ASCII text without a NUL, so both send the stored bytes as they are.

Servers are started on 127.0.0.1 with the bench's own configuration (bench.servers), one at a
time, and stopped before the next; the run is bounded by --duration per server.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import time
from pathlib import Path

from bench import messages, probes, procstat, servers
from bench.client import ImapError, quote

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "var" / "bench" / "bodies"


def large_message(size: int, number: int) -> bytes:
    """A text message of ``size`` bytes (lines of 78 printable characters, no NUL)."""
    header = (b"From: sender%d@bench.invalid\r\nTo: user@bench.invalid\r\nSubject: attachment %d\r\n"
              b"Message-ID: <large%d@bench.invalid>\r\n\r\n" % (number, number, number))
    return header + messages.filler(size - len(header))


def _set_up(port: int, account: servers.Account, message: bytes) -> probes.LineClient:
    """Log in, append the message with LITERAL+ and select it."""
    reader = probes.LineClient(port)
    try:
        reader.command(b"LOGIN %s %s" % (quote(account.name), quote(account.password)))
        reader.command(b"APPEND INBOX {%d+}\r\n" % len(message) + message)
        reader.command(b"SELECT INBOX")
        return reader
    except BaseException:
        reader.close()
        raise


def _fetch_until(reader: probes.LineClient, size: int, deadline: float) -> list[float]:
    """The seconds each whole fetch of the appended message took, until ``deadline``."""
    times: list[float] = []
    while time.monotonic() < deadline:
        started = time.perf_counter()
        _, received = reader.command(b"FETCH 1 BODY.PEEK[]")
        times.append(time.perf_counter() - started)
        if received != size:
            raise ImapError(f"FETCH answered {received} bytes of literal, not {size}")
    return times


def measure(name: str, directory: Path, clients: int, size: int, duration: float) -> dict[str, float]:
    """Fetches per second, MiB per second, the median fetch and the server's CPU per fetch (the
    appends before are not counted)."""
    accounts = servers.make_accounts(clients, prefix="body")
    readers: list[probes.LineClient] = []
    with (probes.started_server(name, directory, accounts, max_sessions=clients + 16) as server,
          concurrent.futures.ThreadPoolExecutor(clients) as pool):
        try:
            readers = list(pool.map(lambda job: _set_up(server.imap_port, job[1], large_message(size, job[0])),
                                    enumerate(accounts)))
            before = procstat.sample_tree(server.pid, with_pss=False)
            started = time.monotonic()
            deadline = started + duration
            runs = list(pool.map(lambda reader: _fetch_until(reader, size, deadline), readers))
            elapsed = time.monotonic() - started
            after = procstat.sample_tree(server.pid, with_pss=False)
        finally:
            for reader in readers:
                reader.close()
    times = [seconds for run in runs for seconds in run]
    fetches = len(times)
    return {"fetches": fetches, "fetches_per_s": fetches / elapsed, "mib_per_s": fetches * size / elapsed / (1 << 20),
            "median_ms": 1e3 * statistics.median(times) if times else 0.0,
            "cpu_ms_per_fetch": 1e3 * (after.cpu_seconds - before.cpu_seconds) / max(fetches, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bodies", description=__doc__.split("\n")[0])
    probes.add_server_options(parser, DEFAULT_DIR)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--size-mib", type=float, default=16.0, help="size of the fetched message")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of fetches per server")
    args = parser.parse_args(argv)
    names = probes.server_names(parser, args)
    if args.clients < 1 or args.duration <= 0 or not 0 < args.size_mib <= 60:
        parser.error("--clients and --duration must be positive, --size-mib at most 60 (APPENDLIMIT is 64 MiB)")
    size = int(args.size_mib * (1 << 20))
    results = probes.measure_each(
        names, lambda name: measure(name, args.dir / name, args.clients, size, args.duration),
        lambda name, figures: (
            f"{name:8s} {figures['fetches_per_s']:7.1f} fetches/s  {figures['mib_per_s']:8.1f} MiB/s  "
            f"median {figures['median_ms']:7.1f} ms  {figures['cpu_ms_per_fetch']:6.2f} ms server CPU per fetch  "
            f"({args.clients} clients, {args.size_mib:g} MiB, {args.duration:g} s)"))
    probes.print_ratios(results, [("MiB/s", "mib_per_s"), ("median fetch", "median_ms"),
                                  ("CPU per fetch", "cpu_ms_per_fetch")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
