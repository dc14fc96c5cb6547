"""The workloads: what is run against each server, and the figures each one yields.

1. ``mixed``: N concurrent clients log in, select, fetch envelopes and bodies, store flags, append
   and expunge for a fixed time: operations/s per command and latency p50/p99. The time may be
   split into rounds that alternate between the servers (``mixed_rounds``; see bench/__main__.py),
   the figures being over all rounds together.
2. ``large``: one folder of many messages: SELECT, UID FETCH 1:* (UID FLAGS), the headers of the
   newest 1,000 as a client lists them, UID SEARCH UNSEEN, SEARCH SUBJECT, SEARCH BODY, STATUS,
   and a CONDSTORE resync after 1,000 flag changes.
3. ``idle``: thousands of authenticated sessions in IDLE: server memory per session, and the time
   an APPEND by another client takes to reach every IDLE session of that mailbox.
4. ``delivery``: LMTP deliveries per second (fsync on).
5. ``login``: logins per second, with each server's default password scheme and with SHA512-CRYPT;
   for a server that caches verified credentials by default (gximap), also with the cache off.

Every workload is bounded in time (its duration plus the per-command timeout, or a step timeout)
and returns a JSON-serialisable dict; failures are recorded in the dict, never raised.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench import loadgen, messages, procstat
from bench.servers import Account, BenchServer, ServerError

Result = dict[str, Any]
WORKLOADS = ("mixed", "large", "idle", "delivery", "login")
LARGE_ACCOUNT = "bigbox"
LARGE_FOLDER = "Big"
_START_DELAY = 2.0  # seconds between spawning workers and the start of the measurement window


@dataclass(frozen=True)
class Scale:
    """How much of each workload to run (``--quick`` uses :data:`QUICK`)."""

    mixed_clients: tuple[int, ...] = (10, 100)
    mixed_duration: float = 60.0
    # The mixed duration is split into this many rounds, alternating between the servers, so that
    # a drift of the machine (its disk above all) over the run weighs on every server alike.
    mixed_rounds: int = 3
    cycles_per_login: int = 10
    envelopes: int = 20
    seed_messages: int = 100
    large_messages: int = 100_000
    large_step_timeout: float = 300.0
    flag_changes: int = 1000
    idle_sessions: int = 10_000
    idle_mailboxes: int = 10
    idle_ramp_timeout: float = 900.0
    idle_parallel: int = 32
    wakeup_timeout: float = 60.0
    lmtp_concurrency: int = 4
    lmtp_duration: float = 30.0
    login_clients: int = 10
    login_duration: float = 20.0
    # The large mailbox's first STATUS again, as medians (measure_first_status): of this many new
    # sessions on the running server, and after this many restarts of the server.
    status_sessions: int = 7
    status_starts: int = 5
    loadgen_procs: int = 1
    command_timeout: float = 60.0

    def to_dict(self) -> Result:
        return asdict(self)


DEFAULT = Scale()
QUICK = Scale(mixed_duration=10.0, mixed_rounds=1, seed_messages=50, large_messages=10_000,
              large_step_timeout=120.0, idle_sessions=1000, idle_ramp_timeout=300.0, lmtp_duration=10.0, login_duration=8.0,
              wakeup_timeout=30.0, status_sessions=3, status_starts=2)


@dataclass
class Monitor:
    """Server-side figures over a measurement window (CPU %, memory at the end)."""

    server: BenchServer
    started_at: float = field(default=0.0)
    cpu_before: float = field(default=0.0)

    def __enter__(self) -> Monitor:
        self.started_at = time.monotonic()
        self.cpu_before = procstat.cpu_seconds(self.server.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def figures(self) -> Result:
        wall = time.monotonic() - self.started_at
        sample = procstat.sample_tree(self.server.pid, with_pss=False)
        cpu = sample.cpu_seconds - self.cpu_before
        return {"server_cpu_s": cpu, "server_cpu_pct": 100.0 * cpu / wall if wall > 0 else 0.0,
                "server_rss_kib": sample.rss_kib, "server_processes": sample.processes}


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    parts = max(1, min(parts, len(items))) if items else 1
    return [items[index::parts] for index in range(parts)]


def _credentials(accounts: list[Account]) -> list[tuple[str, str]]:
    return [(account.name, account.password) for account in accounts]


# ----------------------------------------------------------------------------------------------------


def prime(server: BenchServer, accounts: list[Account], scale: Scale) -> Result:
    """Log in and select INBOX once per account (not measured)."""
    job = {"kind": "prime", "host": "127.0.0.1", "port": server.imap_port, "clients": _credentials(accounts),
           "parallel": 8, "command_timeout": scale.command_timeout}
    started = time.perf_counter()
    result = loadgen.run_jobs([job], timeout=scale.command_timeout * 4 + len(accounts))[0]
    return {"seconds": time.perf_counter() - started, "accounts": [account.name for account in accounts],
            "failures": result.get("failures", result.get("error"))}


def check_primed(primed: Result, accounts: int) -> None:
    """Stop before measuring a server on which an account could not log in: every figure after
    that would count refusals (and the failed logins may get the address blocked), not work."""
    failures = primed.get("failures")
    if not failures:
        return
    if isinstance(failures, str):  # the whole priming job failed
        raise ServerError(f"priming failed: {failures}")
    raise ServerError(f"priming: {len(failures)} of {accounts} accounts could not log in and select INBOX "
                      f"(first: {failures[0]}); is another server listening on the port?")


def run_mixed(server: BenchServer, accounts: list[Account], clients: int, scale: Scale) -> Result:
    """The mixed load in one go (all of ``scale.mixed_duration``)."""
    rounds = MixedRounds(server, accounts, clients, scale)
    rounds.run_round(scale.mixed_duration)
    return rounds.result()


class MixedRounds:
    """The mixed load of one server, run in one or more rounds; ``result()`` gives the figures over
    all of them (latency percentiles over every sample, ops/s over the summed durations) and the
    ops/s of each round."""

    def __init__(self, server: BenchServer, accounts: list[Account], clients: int, scale: Scale) -> None:
        self.server = server
        self.clients = clients
        self.scale = scale
        self.chosen = accounts[:clients]
        self.raw: list[Result] = []
        self.durations: list[float] = []
        self.round_ops_per_s: list[float] = []
        self.server_cpu = 0.0
        self.loadgen_wall = 0.0  # per round the longest worker's wall time (they run side by side)

    def run_round(self, duration: float) -> float | None:
        """One round of ``duration`` seconds; returns its ops/s (None when it could not run)."""
        if len(self.chosen) < self.clients:
            return None
        message = messages.make_message(999_999)
        start_at = time.monotonic() + _START_DELAY
        seed_base = 100_000 * len(self.durations)  # each round its own random choices
        jobs = [{"kind": "mixed", "host": "127.0.0.1", "port": self.server.imap_port, "clients": part,
                 "start_at": start_at, "duration": duration, "command_timeout": self.scale.command_timeout,
                 "cycles_per_login": self.scale.cycles_per_login, "envelopes": self.scale.envelopes,
                 "message": message, "seed": seed_base + 1000 * index}
                for index, part in enumerate(_split(_credentials(self.chosen), self.scale.loadgen_procs))]
        cpu_before = procstat.cpu_seconds(self.server.pid)
        results = loadgen.run_jobs(jobs, timeout=_START_DELAY + duration + self.scale.command_timeout + 60)
        self.server_cpu += procstat.cpu_seconds(self.server.pid) - cpu_before
        self.raw.extend(results)
        self.loadgen_wall += max((result.get("wall", 0.0) for result in results if "error" not in result),
                                 default=0.0)
        self.durations.append(duration)
        ops = loadgen.summarize(results, duration)["total_ops_per_s"]
        self.round_ops_per_s.append(ops)
        return ops

    def result(self) -> Result:
        if len(self.chosen) < self.clients:
            return {"status": "error", "detail": f"only {len(self.chosen)} accounts for {self.clients} clients"}
        duration = sum(self.durations)
        summary = loadgen.summarize(self.raw, duration)
        window = _START_DELAY * len(self.durations) + duration  # what the server CPU was read over
        summary.update({"status": "ok" if not summary["worker_failures"] else "error", "clients": self.clients,
                        "duration_s": duration,
                        "loadgen_cpu_pct": (100.0 * summary["loadgen_cpu_s"] / self.loadgen_wall
                                            if self.loadgen_wall else 0.0),
                        "server_cpu_s": self.server_cpu,
                        "server_cpu_pct": 100.0 * self.server_cpu / window if window else 0.0,
                        # CPU per operation moves far less with the disk's mood than ops/s does.
                        "server_cpu_ms_per_op": (1000.0 * self.server_cpu / summary["total_ops"]
                                                 if summary.get("total_ops") else None),
                        "server_rss_kib": procstat.sample_tree(self.server.pid, with_pss=False).rss_kib})
        if len(self.durations) > 1:
            summary["rounds_ops_per_s"] = self.round_ops_per_s
        return summary


FIRST_STATUS_OF_SESSIONS = "STATUS, first of a new session, median"
FIRST_STATUS_AFTER_STARTS = "STATUS, first after a start, median"


def run_large(server: BenchServer, account: Account, scale: Scale, primed: list[Account] | None = None) -> Result:
    """The large-mailbox steps (loadgen.large_job), then measure_first_status unless ``primed``
    is None (the accounts to prime after each restart, as the harness does after a start)."""
    job = {"kind": "large", "host": "127.0.0.1", "port": server.imap_port, "user": account.name,
           "password": account.password, "folder": LARGE_FOLDER, "step_timeout": scale.large_step_timeout,
           "flag_changes": scale.flag_changes, "subject_needle": messages.SUBJECT_NEEDLE,
           "body_needle": messages.BODY_NEEDLE, "server_pid": server.pid}
    with Monitor(server) as monitor:
        result = loadgen.run_jobs([job], timeout=scale.large_step_timeout * 12 + 60)[0]
    if "error" in result:
        return {"status": "error", "detail": result["error"]}
    expected = messages.expected_hits(scale.large_messages)
    result.update(monitor.figures())
    result.update({"status": "ok", "messages": scale.large_messages, "expected_hits": expected,
                   "loadgen_cpu_pct": 100.0 * result["cpu"] / result["wall"] if result["wall"] else 0.0})
    if primed is not None:
        result["steps"].update(measure_first_status(server, account, scale, primed))
    return result


def measure_first_status(server: BenchServer, account: Account, scale: Scale, primed: list[Account]) -> Result:
    """The large workload's first STATUS is one sample of a sub-millisecond command, and moves by
    half its value between runs (bench/HISTORY.md, thirty-ninth pass). Two medians of it:

    - of ``status_sessions`` new sessions on the running server: what a client that connects
      sees. A new Dovecot session is a new imap process; a new gximap session runs in a process
      that has served before.
    - of ``status_starts`` restarts of the server, each followed by priming ``primed`` (as after
      the first start) and one new session: the cold-start figure of the first step, repeated.

    Before them each server brings the folder's state on disk up to date (BenchServer.settle):
    the flag-change step has just changed the folder, and Dovecot then rescanned its 100,000
    files in every new session, 59-86 ms each (results/20261124T190125Z.json), until a sync
    well after the change, which a client's own open session would soon make.

    Returns the two steps, for the large result's "steps"."""
    settle_s = server.settle([(account.name, LARGE_FOLDER)])
    job = {"kind": "first_status", "host": "127.0.0.1", "user": account.name, "password": account.password,
           "folder": LARGE_FOLDER, "command_timeout": scale.command_timeout}
    timeout = scale.command_timeout * 4 + 60

    def sessions(count: int) -> list[float]:
        result = loadgen.run_jobs([dict(job, port=server.imap_port, sessions=count)], timeout=timeout)[0]
        if "error" in result:
            raise ServerError(f"first STATUS: {result['error']}")
        return list(result["runs"])

    steps: Result = {}
    for name, collect in ((FIRST_STATUS_OF_SESSIONS, lambda: sessions(scale.status_sessions)),
                          (FIRST_STATUS_AFTER_STARTS, lambda: _after_starts(server, scale, primed, sessions))):
        try:
            runs = collect()
        except (ServerError, OSError) as exc:
            steps[name] = {"status": "error", "detail": str(exc)[:300]}
            continue
        steps[name] = {"status": "ok", "seconds": statistics.median(runs),
                       "runs_ms": [round(run * 1000, 3) for run in runs]}
    steps[FIRST_STATUS_OF_SESSIONS]["settle_s"] = round(settle_s, 3)
    return steps


def _after_starts(server: BenchServer, scale: Scale, primed: list[Account],
                  sessions: Callable[[int], list[float]]) -> list[float]:
    runs: list[float] = []
    for _ in range(scale.status_starts):
        server.stop()
        server.start()
        check_primed(prime(server, primed, scale), len(primed))
        runs += sessions(1)
    return runs


def run_delivery(server: BenchServer, accounts: list[Account], scale: Scale) -> Result:
    if server.lmtp_port is None:
        return {"status": "n/a", "detail": f"{server.name} has no LMTP listener"}
    start_at = time.monotonic() + _START_DELAY
    job = {"kind": "lmtp", "host": "127.0.0.1", "port": server.lmtp_port, "start_at": start_at,
           "duration": scale.lmtp_duration, "command_timeout": scale.command_timeout,
           "concurrency": scale.lmtp_concurrency, "message": messages.make_message(424_242),
           "recipients": [f"{account.name}@bench.invalid" for account in accounts]}
    cpu_before = procstat.cpu_seconds(server.pid)
    results = loadgen.run_jobs([job], timeout=_START_DELAY + scale.lmtp_duration + scale.command_timeout + 60)
    summary = loadgen.summarize(results, scale.lmtp_duration)
    server_cpu = procstat.cpu_seconds(server.pid) - cpu_before
    deliver = summary["commands"].get("DELIVER", {})
    summary.update({"status": "ok" if deliver.get("ops") else "error",
                    "deliveries_per_s": deliver.get("ops_per_s", 0.0),
                    "concurrency": scale.lmtp_concurrency, "duration_s": scale.lmtp_duration,
                    "server_cpu_pct": 100.0 * server_cpu / (_START_DELAY + scale.lmtp_duration)})
    return summary


def run_logins(server: BenchServer, accounts: list[Account], scale: Scale, scheme: str) -> Result:
    chosen = accounts[:scale.login_clients]
    start_at = time.monotonic() + _START_DELAY
    jobs = [{"kind": "logins", "host": "127.0.0.1", "port": server.imap_port, "clients": part,
             "start_at": start_at, "duration": scale.login_duration, "command_timeout": scale.command_timeout}
            for part in _split(_credentials(chosen), scale.loadgen_procs)]
    cpu_before = procstat.cpu_seconds(server.pid)
    results = loadgen.run_jobs(jobs, timeout=_START_DELAY + scale.login_duration + scale.command_timeout + 60)
    summary = loadgen.summarize(results, scale.login_duration)
    server_cpu = procstat.cpu_seconds(server.pid) - cpu_before
    login = summary["commands"].get("LOGIN", {})
    summary.update({"status": "ok" if login.get("ops") else "error", "scheme": scheme,
                    "scheme_label": server.scheme_label(scheme),
                    "logins_per_s": login.get("ops_per_s", 0.0), "clients": len(chosen),
                    "duration_s": scale.login_duration,
                    "server_cpu_pct": 100.0 * server_cpu / (_START_DELAY + scale.login_duration)})
    return summary


def run_idle(server: BenchServer, accounts: list[Account], scale: Scale,
             log: Callable[[str], None] = print) -> Result:
    """Ramp up IDLE sessions over ``idle_mailboxes`` accounts, measure memory, then one APPEND's reach.

    The ramp stops early (and says so) when the machine runs short of memory.
    """
    mailboxes = accounts[:max(1, scale.idle_mailboxes)]
    sessions = [(mailboxes[n % len(mailboxes)].name, mailboxes[n % len(mailboxes)].password)
                for n in range(scale.idle_sessions)]
    procs = max(1, min(4, (scale.idle_sessions + 2499) // 2500), scale.loadgen_procs)
    jobs = [{"kind": "idle", "host": "127.0.0.1", "port": server.imap_port, "sessions": part,
             "parallel": scale.idle_parallel, "command_timeout": scale.command_timeout}
            for part in _split(sessions, procs)]
    time.sleep(1.0)
    before = procstat.sample_tree(server.pid)
    result: Result = {"status": "ok", "sessions_wanted": scale.idle_sessions, "mailboxes": len(mailboxes)}
    with server.session_capacity(scale.idle_sessions):
        return _idle(server, jobs, mailboxes, scale, log, result, before)


def _idle(server: BenchServer, jobs: list[loadgen.Job], mailboxes: list[Account], scale: Scale,
          log: Callable[[str], None], result: Result, before: procstat.TreeSample) -> Result:
    memory_floor = max(procstat.mem_total_kib() // 10, 1_500_000)
    fleet = loadgen.IdleFleet(jobs)
    try:
        ready: dict[int, Result] = {}
        progress = [0] * len(jobs)
        deadline = time.monotonic() + scale.idle_ramp_timeout
        halted_reason = ""
        last_log = time.monotonic()
        while len(ready) < len(jobs):
            if time.monotonic() > deadline and not halted_reason:
                halted_reason = f"ramp time limit ({scale.idle_ramp_timeout:.0f} s)"
                fleet.send_all({"cmd": "halt"})
            if not halted_reason and procstat.mem_available_kib() < memory_floor:
                halted_reason = f"memory: MemAvailable below {memory_floor // 1024} MiB"
                fleet.send_all({"cmd": "halt"})
            for index, message in fleet.poll(0.5):
                if message.get("event") == "progress":
                    progress[index] = message["ready"]
                elif message.get("event") in ("ready", "stopped"):
                    ready[index] = message
                    progress[index] = message.get("ready", 0)
            if time.monotonic() - last_log > 15:
                log(f"    idle: {sum(progress)} sessions so far")
                last_log = time.monotonic()
            if time.monotonic() > deadline + 120:
                break  # the workers did not even answer the halt; give up on them
        established = sum(message.get("ready", 0) for message in ready.values())
        result.update({
            "sessions": established,
            "failed": sum(message.get("failed", 0) for message in ready.values()),
            "failure_samples": [s for message in ready.values() for s in message.get("samples", [])][:5],
            "ramp_seconds": max((message.get("ramp_seconds", 0.0) for message in ready.values()), default=0.0),
            "halted": halted_reason,
        })
        time.sleep(2.0)
        after = procstat.sample_tree(server.pid)
        result.update({
            "rss_before_kib": before.rss_kib, "rss_after_kib": after.rss_kib,
            "pss_before_kib": before.pss_kib, "pss_after_kib": after.pss_kib,
            "processes_after": after.processes, "threads_after": after.threads,
            "rss_per_session_kib": (after.rss_kib - before.rss_kib) / established if established else None,
            "pss_per_session_kib": (after.pss_kib - before.pss_kib) / established if established else None,
        })
        result["wakeup"] = _wakeup(server, fleet, mailboxes[0], scale) if established else {"status": "n/a"}
        if not established:
            result["status"] = "error"
    finally:
        finals = fleet.close()
    result["dropped"] = sum(final.get("dropped", 0) for final in finals)
    cpu = sum(final.get("cpu", 0.0) for final in finals)
    wall = max((final.get("wall", 0.0) for final in finals), default=0.0)
    result["loadgen_cpu_pct"] = 100.0 * cpu / wall if wall else 0.0
    return result


def _wakeup(server: BenchServer, fleet: loadgen.IdleFleet, account: Account, scale: Scale) -> Result:
    # The workers' clock starts now, before the APPEND: give them the APPEND's own time limit too.
    fleet.send_all({"cmd": "watch", "user": account.name,
                    "timeout": scale.command_timeout + scale.wakeup_timeout})
    watching = fleet.collect("watching", 60)
    watched = sum(message.get("count", 0) for message in watching.values())
    try:
        sent_at, completed_at = loadgen.timed_append("127.0.0.1", server.imap_port, account.name,
                                                     account.password, messages.make_message(777_777),
                                                     timeout=scale.command_timeout)
    except (loadgen.ImapError, OSError) as exc:
        fleet.collect("arrivals", scale.command_timeout + scale.wakeup_timeout + 30)
        return {"status": "timeout" if isinstance(exc, TimeoutError) else "error",
                "detail": f"APPEND failed: {exc}", "sessions_watched": watched}
    arrivals = fleet.collect("arrivals", scale.command_timeout + scale.wakeup_timeout + 30)
    delays = sorted(t - sent_at for message in arrivals.values() for t in message.get("times", []))
    missing = sum(message.get("missing", 0) for message in arrivals.values())
    return {
        "status": "ok" if delays and not missing else ("partial" if delays else "error"),
        "sessions_watched": watched, "notified": len(delays), "missing": missing,
        "append_ms": (completed_at - sent_at) * 1000,
        "first_ms": delays[0] * 1000 if delays else None,
        "p50_ms": loadgen.percentile(delays, 0.5) * 1000 if delays else None,
        "all_ms": delays[-1] * 1000 if delays and not missing else None,
        "max_seen_ms": delays[-1] * 1000 if delays else None,
    }


def scaled(scale: Scale, **changes: Any) -> Scale:
    return replace(scale, **changes)
