"""What one IMAP command costs a server before any mailbox work: NOOP in a loop, side by side.

    .venv/bin/python -m bench.noop [--servers gximap,dovecot] [--clients 10] [--duration 8]
                                   [--dir var/bench/noop]

Each client logs in, selects its INBOX (100 messages) and sends NOOP after NOOP, one at a time,
for the duration. A NOOP does no mailbox work beyond the end-of-command check for changes, so the
server's CPU time per command is what receiving, dispatching and answering a command costs: for
gximap, the pool's wait for input and re-arming of the socket (gximap.net.pool, leader/follower),
the framer, the session's dispatch and the check; for Dovecot, its imap process's read-answer loop. The mixed
load (python -m bench) costs about 0.6 ms of server CPU per command, so this fixed part is the
share no faster IMAP command code can remove.

Servers are started on 127.0.0.1 with the bench's own configuration (bench.servers), one at a
time, and stopped before the next; the run is bounded by --duration per server.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench import probes, procstat, servers
from bench.client import ImapConnection, ImapError

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "var" / "bench" / "noop"
SEED_MESSAGES = 100
COMMAND_TIMEOUT = 10.0


async def _client(port: int, account: servers.Account, deadline: float) -> int:
    """NOOPs answered until ``deadline``."""
    connection = await ImapConnection.open("127.0.0.1", port, timeout=COMMAND_TIMEOUT)
    try:
        reply = await connection.login(account.name, account.password, timeout=COMMAND_TIMEOUT)
        if not reply.ok:
            raise ImapError(f"LOGIN failed: {reply.line[:200]!r}")
        await connection.checked(b"SELECT INBOX", timeout=COMMAND_TIMEOUT)
        answered = 0
        while time.monotonic() < deadline:
            await connection.checked(b"NOOP", timeout=COMMAND_TIMEOUT)
            answered += 1
        return answered
    finally:
        connection.close()


async def _drive(port: int, accounts: list[servers.Account], duration: float) -> int:
    deadline = time.monotonic() + duration
    return sum(await asyncio.gather(*(_client(port, account, deadline) for account in accounts)))


def measure(name: str, directory: Path, clients: int, duration: float) -> dict[str, float]:
    """NOOPs per second and the server's CPU microseconds per NOOP, for one server."""
    accounts = servers.make_accounts(clients, prefix="noop")

    def fill(server: servers.BenchServer) -> None:
        for account in accounts:
            server.fill(account.name, "INBOX", SEED_MESSAGES)

    with probes.started_server(name, directory, accounts, max_sessions=clients + 16, fill=fill) as server:
        before = procstat.sample_tree(server.pid, with_pss=False)
        started = time.monotonic()
        answered = asyncio.run(_drive(server.imap_port, accounts, duration))
        elapsed = time.monotonic() - started
        after = procstat.sample_tree(server.pid, with_pss=False)
    return {"noops_per_s": answered / elapsed,
            "cpu_us_per_noop": 1e6 * (after.cpu_seconds - before.cpu_seconds) / max(answered, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noop", description=__doc__.split("\n")[0])
    probes.add_server_options(parser, DEFAULT_DIR)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of NOOPs per server")
    args = parser.parse_args(argv)
    names = probes.server_names(parser, args)
    if args.clients < 1 or args.duration <= 0:
        parser.error("--clients and --duration must be positive")
    results = probes.measure_each(
        names, lambda name: measure(name, args.dir / name, args.clients, args.duration),
        lambda name, figures: (f"{name:8s} {figures['noops_per_s']:9,.0f} NOOP/s  {figures['cpu_us_per_noop']:7.1f} µs "
                               f"server CPU per NOOP  ({args.clients} clients, {args.duration:g} s)"))
    probes.print_ratios(results, [("NOOP/s", "noops_per_s"), ("CPU per NOOP", "cpu_us_per_noop")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
