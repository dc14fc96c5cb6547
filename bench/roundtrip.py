"""One connection's command round trip, by where the scheduler runs the server: side by side.

    .venv/bin/python -m bench.roundtrip [--servers gximap,dovecot] [--command "STATUS INBOX (...)"]
                                        [--commands 1000] [--warmup 100] [--rounds 3]
                                        [--dir var/bench/roundtrip] [--guest-halt-poll NS]

The large-mailbox workload times its warm STATUS on one connection, one command at a time, with
the bench's asyncio client. On a 2-CPU machine that figure depends on whether the scheduler puts
the server next to the load generator: on one CPU a round trip costs the sum of both sides' CPU
time (no wake-up of another CPU); on two, each side's wake-up of the other is added
(bench/HISTORY.md, thirty-fifth pass). This probe times the same command in three placements, with the affinity of
the server's whole process tree (every thread) and of the load generator set for each:

- ``free``: both may run on any CPU, as in the bench (the scheduler's choice);
- ``shared``: both on the first CPU;
- ``apart``: the server on the first CPU, the load generator on the second (skipped with one CPU).

Threads the probe may not change (another user's, when it does not run as root) keep theirs.

Every round measures each server once in each placement, the servers in alternating order (all
of them run for the whole probe), on a fresh connection: ``--warmup`` untimed commands, then
``--commands`` timed ones. The probe prints, per placement and server, the median round trip,
its 90th percentile, and the server's CPU microseconds per command (from /proc, in clock ticks:
read it over a thousand commands or more), then the ratios gximap/Dovecot, under a line saying
how idle CPUs wait (bench.idlepoll). ``--guest-halt-poll NS`` measures everything a second time
with idle vCPUs polling up to NS nanoseconds before they halt (as root; restored afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench import idlepoll, probes, procstat, servers
from bench.client import ImapConnection, ImapError
from bench.loadgen import percentile

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "var" / "bench" / "roundtrip"
DEFAULT_COMMAND = "STATUS INBOX (MESSAGES UIDNEXT UNSEEN)"
SEED_MESSAGES = 100
COMMAND_TIMEOUT = 10.0
Affinity = tuple[set[int], set[int]]   # (the server's CPUs, the load generator's)


def placements(cpus: set[int]) -> dict[str, Affinity]:
    """The placements possible with ``cpus`` (this process's allowed CPUs): ``apart`` needs two."""
    ordered = sorted(cpus)
    first = {ordered[0]}
    chosen = {"free": (set(cpus), set(cpus)), "shared": (first, first)}
    if len(ordered) > 1:
        chosen["apart"] = (first, {ordered[1]})
    return chosen


def _threads(pid: int) -> list[int]:
    try:
        return [int(task) for task in os.listdir(f"/proc/{pid}/task")]
    except OSError:   # gone meanwhile
        return []


def pin_tree(root: int, cpus: set[int]) -> None:
    """Set the affinity of every thread of ``root``'s process tree. A thread that ends meanwhile,
    or that belongs to another user, is skipped."""
    for pid in procstat.process_tree(root):
        for thread in _threads(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(thread, cpus)


def pin_self(cpus: set[int]) -> None:
    """The load generator's threads (asyncio runs on the main one) on ``cpus``."""
    for thread in _threads(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(thread, cpus)


async def _timed_connection(server: servers.BenchServer, account: servers.Account, command: bytes,
                            warmup: int, commands: int, pin: Callable[[], None]) -> tuple[list[float], float]:
    """A fresh connection: log in, pin (Dovecot starts the session's process at login), run the
    warm-up, then time ``commands`` round trips; their seconds and the server's CPU seconds."""
    connection = await ImapConnection.open("127.0.0.1", server.imap_port, timeout=COMMAND_TIMEOUT)
    try:
        reply = await connection.login(account.name, account.password, timeout=COMMAND_TIMEOUT)
        if not reply.ok:
            raise ImapError(f"LOGIN failed: {reply.line[:200]!r}")
        pin()
        for _ in range(warmup):
            await connection.checked(command, collect=True, timeout=COMMAND_TIMEOUT)
        pin()  # threads a server started during the warm-up
        pids = procstat.process_tree(server.pid)
        cpu_before = procstat.cpu_seconds(server.pid, pids)
        runs: list[float] = []
        for _ in range(commands):
            started = time.perf_counter()
            await connection.checked(command, collect=True, timeout=COMMAND_TIMEOUT)
            runs.append(time.perf_counter() - started)
        return runs, procstat.cpu_seconds(server.pid, pids) - cpu_before
    finally:
        connection.close()


def measure(names: list[str], directory: Path, command: bytes, *, commands: int, warmup: int,
            rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """{placement: {server: figures}} over ``rounds`` rounds, every server running throughout."""
    account = servers.make_accounts(1, prefix="rt")[0]
    allowed = os.sched_getaffinity(0)
    chosen = placements(allowed)
    runs: dict[str, dict[str, list[float]]] = {place: {name: [] for name in names} for place in chosen}
    cpu: dict[str, dict[str, float]] = {place: dict.fromkeys(names, 0.0) for place in chosen}

    def fill(server: servers.BenchServer) -> None:
        server.fill(account.name, "INBOX", SEED_MESSAGES)

    with contextlib.ExitStack() as stack:
        started = {name: stack.enter_context(probes.started_server(name, directory / name, [account],
                                                                     max_sessions=16, fill=fill))
                   for name in names}
        try:
            for round_number in range(rounds):
                order = names if round_number % 2 == 0 else names[::-1]
                for place, (server_cpus, client_cpus) in chosen.items():
                    for name in order:
                        server = started[name]

                        def pin(server: servers.BenchServer = server, server_cpus: set[int] = server_cpus,
                                client_cpus: set[int] = client_cpus) -> None:
                            pin_tree(server.pid, server_cpus)
                            pin_self(client_cpus)

                        timed, server_cpu = asyncio.run(
                            _timed_connection(server, account, command, warmup, commands, pin))
                        runs[place][name].extend(timed)
                        cpu[place][name] += server_cpu
        finally:
            pin_self(allowed)
            for server in started.values():
                pin_tree(server.pid, allowed)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for place in chosen:
        results[place] = {}
        for name in names:
            timed = sorted(runs[place][name])
            results[place][name] = {
                "median_us": 1e6 * statistics.median(timed),
                "p90_us": 1e6 * percentile(timed, 0.9),
                "cpu_us_per_command": 1e6 * cpu[place][name] / len(timed),
            }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.roundtrip", description=__doc__.split("\n")[0])
    probes.add_server_options(parser, DEFAULT_DIR)
    parser.add_argument("--command", default=DEFAULT_COMMAND, help="the command timed (one line)")
    parser.add_argument("--commands", type=int, default=1000, help="timed commands per connection")
    parser.add_argument("--warmup", type=int, default=100, help="untimed commands before them")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--guest-halt-poll", type=int, metavar="NS",
                        help="measure again with idle vCPUs polling up to NS nanoseconds before they "
                             "halt (Linux's haltpoll driver; as root, restored afterwards)")
    args = parser.parse_args(argv)
    names = probes.server_names(parser, args)
    if args.commands < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--commands and --rounds must be positive, --warmup not negative")
    if args.guest_halt_poll is not None:
        reason = idlepoll.setting_refused(args.guest_halt_poll)
        if reason is not None:
            parser.error(f"--guest-halt-poll: {reason}")
    if not args.command or "\r" in args.command or "\n" in args.command:
        parser.error("--command must be one line")
    measured = probes.installed(names)
    if not measured:
        return 0
    print(f"{args.command}: {args.rounds} × {args.commands} round trips per server and placement "
          f"(median / 90th percentile µs, server CPU µs per command)")
    settings = [None] if args.guest_halt_poll is None else [None, args.guest_halt_poll]
    for halt_poll in settings:
        with contextlib.nullcontext() if halt_poll is None else idlepoll.guest_halt_polling(halt_poll):
            print(f"idle CPUs: {idlepoll.describe(idlepoll.idle_policy())}")
            results = measure(measured, args.dir, args.command.encode(), commands=args.commands,
                              warmup=args.warmup, rounds=args.rounds)
        _print_placements(results)
    return 0


def _print_placements(results: dict[str, dict[str, dict[str, float]]]) -> None:
    for place, figures in results.items():
        cells = "   ".join(f"{name} {values['median_us']:6.0f} / {values['p90_us']:6.0f}, CPU {values['cpu_us_per_command']:5.0f}"
                           for name, values in figures.items())
        ratio = ""
        if "gximap" in figures and "dovecot" in figures:
            ratio = f"   gximap/Dovecot {figures['gximap']['median_us'] / figures['dovecot']['median_us']:.2f}"
        print(f"{place:6s}  {cells}{ratio}")


if __name__ == "__main__":
    raise SystemExit(main())
