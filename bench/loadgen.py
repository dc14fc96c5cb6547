"""The load generator: worker processes (multiprocessing, spawn) each running one asyncio loop.

A job is a plain dict with a ``kind`` (see :data:`JOB_KINDS`); :func:`run_jobs` runs one worker per
job and gathers their result dicts. Every worker reports the CPU time it used (``cpu``) over the
wall time of its measurement (``wall``), so the harness can show that the load generator was not
the bottleneck. Idle sessions are interactive and use :class:`IdleFleet` instead.

Latencies are measured per command from the moment it is written to the socket until its tagged
completion arrives; only commands that complete inside the measurement window are counted.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import random
import resource
import socket
import statistics
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

from bench import procstat
from bench.client import ImapConnection, ImapError, LmtpConnection, LmtpError, Reply, quote

Job = dict[str, Any]
Result = dict[str, Any]
_NETWORK_ERRORS = (ImapError, LmtpError, OSError, TimeoutError, asyncio.TimeoutError, EOFError)
_MAX_ERROR_SAMPLES = 5
# Warm runs of the large mailbox's quick read-only steps, whose median is reported beside the
# first run (_Steps.run_repeated): (step name, command).
REPEATS = 5
# Untimed runs of the same command before those (their times are kept as warmup_ms): "warm" means
# what a server that has run for a while does. Right after a start, gximap runs a command's
# Python code for the first time: CPython 3.11 turns a function's bytecode into its specialized
# form only after 8 calls, so one STATUS in a fresh process took 457, 158, 131 ... µs and
# settled at 72-75 µs from about the 15th (bench/HISTORY.md, twenty-fifth pass); Dovecot's new
# imap process settles after its first. The full run restarts each server just before this
# workload, so without these runs its "warm" medians were gximap's warm-up. The first run of
# each command stays a step of its own: that is the cold figure.
WARMUP_RUNS = 10
# What a webmail client asks to show a folder newest first, and to show it as threads.
SORT_COMMAND = b"UID SORT (REVERSE DATE) UTF-8 ALL"
THREAD_COMMAND = b"UID THREAD REFERENCES UTF-8 ALL"
REPEATED_STEPS = tuple((f"{command.decode()}, median of {REPEATS}", command)
                       for command in (b"UID FETCH 1:* (UID FLAGS)", b"UID SEARCH UNSEEN", SORT_COMMAND, THREAD_COMMAND))
SORTING_STEPS = (("UID SORT (REVERSE DATE)", SORT_COMMAND), ("UID THREAD REFERENCES", THREAD_COMMAND))
# STATUS is repeated too, but unselected, right after its first run (the command is per folder).
REPEATED_STATUS = f"STATUS, median of {REPEATS}"
# What Thunderbird fetches for each message it has not seen yet (its default header list), here
# for the newest HEADER_MESSAGES of the large folder; repeated too (the command depends on EXISTS).
HEADER_MESSAGES = 1000
HEADERS_STEP = f"FETCH headers of the newest {HEADER_MESSAGES:,}"
REPEATED_HEADERS = f"{HEADERS_STEP}, median of {REPEATS}"
CLIENT_HEADERS = (b"(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID"
                  b" Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])")


def _context() -> Any:
    return multiprocessing.get_context("spawn")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), max(hard, target)))
            return
        except (ValueError, OSError):
            continue


# ----------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------


class Recorder:
    """Per-command latencies and errors inside one measurement window."""

    def __init__(self, window_start: float, window_end: float) -> None:
        self.window_start = window_start
        self.window_end = window_end
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []

    def ok(self, name: str, started: float) -> None:
        finished = time.monotonic()
        if self.window_start <= started and finished <= self.window_end:
            self.latencies[name].append(finished - started)

    def reply(self, name: str, started: float, ok: bool, detail: bytes = b"") -> None:
        if ok:
            self.ok(name, started)
        else:
            self.error(name, detail.decode("ascii", "replace")[:200])

    def error(self, name: str, detail: str) -> None:
        if time.monotonic() <= self.window_end:
            self.errors[name] += 1
            if len(self.samples) < _MAX_ERROR_SAMPLES:
                self.samples.append(f"{name}: {detail}")

    def result(self) -> Result:
        return {"latencies": dict(self.latencies), "errors": dict(self.errors), "samples": self.samples}


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(results: list[Result], duration: float) -> Result:
    """Merge worker results: per command ops, ops/s, p50/p99 (ms), errors; load generator CPU."""
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    samples: list[str] = []
    cpu = 0.0
    wall = 0.0
    failures: list[str] = []
    for result in results:
        if "error" in result:
            failures.append(result["error"])
            continue
        for name, values in result["latencies"].items():
            latencies[name].extend(values)
        errors.update(result["errors"])
        samples.extend(result["samples"])
        cpu += result.get("cpu", 0.0)
        wall = max(wall, result.get("wall", 0.0))
    commands: dict[str, Result] = {}
    total = 0
    for name in sorted(set(latencies) | set(errors)):
        values = sorted(latencies.get(name, []))
        total += len(values)
        commands[name] = {
            "ops": len(values),
            "ops_per_s": len(values) / duration if duration > 0 else 0.0,
            "p50_ms": percentile(values, 0.50) * 1000,
            "p99_ms": percentile(values, 0.99) * 1000,
            "errors": errors.get(name, 0),
        }
    return {
        "commands": commands,
        "total_ops": total,
        "total_ops_per_s": total / duration if duration > 0 else 0.0,
        "errors": sum(errors.values()),
        "error_samples": samples[:_MAX_ERROR_SAMPLES],
        "loadgen_cpu_s": cpu,
        "loadgen_cpu_pct": 100.0 * cpu / wall if wall > 0 else 0.0,
        "worker_failures": failures,
    }


# ----------------------------------------------------------------------------------------------------
# workers
# ----------------------------------------------------------------------------------------------------


def _worker_entry(conn: Connection, job: Job) -> None:
    _raise_fd_limit()
    try:
        handler = JOB_KINDS[job["kind"]]
        result = asyncio.run(handler(job, conn))
    except BaseException:  # noqa: BLE001 - everything must reach the controller, it decides
        result = {"error": traceback.format_exc(limit=8)}
    try:
        conn.send(result)
    except (OSError, ValueError):
        pass


def run_jobs(jobs: list[Job], *, timeout: float) -> list[Result]:
    """Run one worker process per job; wait at most ``timeout`` seconds for all of them."""
    ctx = _context()
    workers: list[tuple[Any, Connection]] = []
    try:
        for job in jobs:
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_worker_entry, args=(child, job), daemon=True,
                                  name=f"bench-{job['kind']}")
            process.start()
            child.close()
            workers.append((process, parent))
        deadline = time.monotonic() + timeout
        results: list[Result] = []
        for _, parent in workers:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                results.append(parent.recv() if parent.poll(remaining) else {"error": "worker timed out"})
            except (EOFError, OSError) as exc:
                results.append({"error": f"worker died: {exc!r}"})
        return results
    finally:
        for process, parent in workers:
            parent.close()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _close(connection: ImapConnection | None) -> None:
    if connection is not None:
        connection.abort()


async def _logged_in(job: Job, user: str, password: str) -> ImapConnection:
    """A new connection to the job's server, logged in as ``user``; ImapError when the login is
    refused (the connection is closed then)."""
    connection = await ImapConnection.open(job["host"], job["port"], timeout=job["command_timeout"])
    try:
        reply = await connection.login(user, password, timeout=job["command_timeout"])
        if not reply.ok:
            raise ImapError(f"LOGIN {user}: {reply.line[:120]!r}")
    except BaseException:
        connection.abort()
        raise
    return connection


# -- 1. mixed client load ---------------------------------------------------------------------------


async def _mixed_client(job: Job, user: str, password: str, recorder: Recorder, seed: int) -> None:
    host, port = job["host"], job["port"]
    timeout = job["command_timeout"]
    message: bytes = job["message"]
    rng = random.Random(seed)
    end = recorder.window_end
    current = "CONNECT"
    while time.monotonic() < end:
        connection: ImapConnection | None = None
        try:
            current = "CONNECT"
            started = time.monotonic()
            connection = await ImapConnection.open(host, port, timeout=timeout)
            recorder.ok("CONNECT", started)
            current = "LOGIN"
            started = time.monotonic()
            reply = await connection.login(user, password, timeout=timeout)
            recorder.reply("LOGIN", started, reply.ok, reply.line)
            if not reply.ok:
                await asyncio.sleep(0.5)
                continue
            current = "SELECT"
            started = time.monotonic()
            reply = await connection.command(b"SELECT INBOX", timeout=timeout)
            recorder.reply("SELECT", started, reply.ok, reply.line)
            for _ in range(job["cycles_per_login"]):
                if time.monotonic() >= end:
                    break
                current = "FETCH_ENVELOPE"
                low = max(1, connection.exists - job["envelopes"] + 1)
                started = time.monotonic()
                reply = await connection.command(b"FETCH %d:* (UID FLAGS ENVELOPE RFC822.SIZE)" % low,
                                                 collect=True, timeout=timeout)
                recorder.reply(current, started, reply.ok, reply.line)
                uids = reply.uids()
                if uids:
                    uid = rng.choice(uids)
                    current = "FETCH_BODY"
                    started = time.monotonic()
                    reply = await connection.command(b"UID FETCH %d BODY.PEEK[]" % uid, timeout=timeout)
                    recorder.reply(current, started, reply.ok, reply.line)
                    current = "STORE"
                    sign = b"+" if rng.random() < 0.5 else b"-"
                    started = time.monotonic()
                    reply = await connection.command(b"UID STORE %d %sFLAGS (\\Flagged)" % (uid, sign),
                                                     timeout=timeout)
                    recorder.reply(current, started, reply.ok, reply.line)
                current = "APPEND"
                started = time.monotonic()
                reply = await connection.command(b"APPEND INBOX (\\Seen)", literal=message, timeout=timeout)
                recorder.reply(current, started, reply.ok, reply.line)
                new_uid = reply.append_uid() if reply.ok else None
                current = "STORE"
                started = time.monotonic()
                if new_uid is not None:
                    reply = await connection.command(b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % new_uid,
                                                     timeout=timeout)
                else:  # no APPENDUID: the new message is the last one once NOOP has reported it
                    await connection.command(b"NOOP", timeout=timeout)
                    reply = await connection.command(b"STORE %d +FLAGS.SILENT (\\Deleted)" % connection.exists,
                                                     timeout=timeout)
                recorder.reply(current, started, reply.ok, reply.line)
                current = "EXPUNGE"
                started = time.monotonic()
                command = b"UID EXPUNGE %d" % new_uid if new_uid is not None else b"EXPUNGE"
                reply = await connection.command(command, timeout=timeout)
                recorder.reply(current, started, reply.ok, reply.line)
            current = "LOGOUT"
            started = time.monotonic()
            reply = await connection.command(b"LOGOUT", timeout=timeout)
            recorder.reply(current, started, reply.ok, reply.line)
        except _NETWORK_ERRORS as exc:
            recorder.error(current, f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)
        finally:
            await _close(connection)


async def mixed_job(job: Job, conn: Connection) -> Result:
    """N clients (job["clients"]: [(user, password)]) running the mixed cycle for job["duration"] s."""
    await _sleep_until(job["start_at"])
    start = time.monotonic()
    recorder = Recorder(start, start + job["duration"])
    cpu_before = time.process_time()
    tasks = [asyncio.create_task(_mixed_client(job, user, password, recorder, job["seed"] + index))
             for index, (user, password) in enumerate(job["clients"])]
    try:
        async with asyncio.timeout(job["duration"] + job["command_timeout"] + 10):
            await asyncio.gather(*tasks)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result = recorder.result()
    result["cpu"] = time.process_time() - cpu_before
    result["wall"] = time.monotonic() - start
    return result


# -- 5. logins ------------------------------------------------------------------------------------


async def _login_client(job: Job, user: str, password: str, recorder: Recorder) -> None:
    host, port, timeout = job["host"], job["port"], job["command_timeout"]
    while time.monotonic() < recorder.window_end:
        connection: ImapConnection | None = None
        current = "CONNECT"
        try:
            started = time.monotonic()
            connection = await ImapConnection.open(host, port, timeout=timeout)
            current = "LOGIN"
            login_started = time.monotonic()
            reply = await connection.login(user, password, timeout=timeout)
            recorder.reply("LOGIN", login_started, reply.ok, reply.line)
            current = "LOGOUT"
            reply = await connection.command(b"LOGOUT", timeout=timeout)
            if reply.ok:
                recorder.ok("SESSION", started)  # connect + greeting + LOGIN + LOGOUT
        except _NETWORK_ERRORS as exc:
            recorder.error(current, f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)
        finally:
            await _close(connection)


async def login_job(job: Job, conn: Connection) -> Result:
    await _sleep_until(job["start_at"])
    start = time.monotonic()
    recorder = Recorder(start, start + job["duration"])
    cpu_before = time.process_time()
    tasks = [asyncio.create_task(_login_client(job, user, password, recorder))
             for user, password in job["clients"]]
    try:
        async with asyncio.timeout(job["duration"] + job["command_timeout"] + 10):
            await asyncio.gather(*tasks)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result = recorder.result()
    result["cpu"] = time.process_time() - cpu_before
    result["wall"] = time.monotonic() - start
    return result


# -- priming (not measured) ------------------------------------------------------------------------


async def prime_job(job: Job, conn: Connection) -> Result:
    """LOGIN + SELECT INBOX + LOGOUT once per account, so that first-access work (Dovecot's index
    files, pymap's UID list) is not charged to the first measured command."""
    gate = asyncio.Semaphore(job["parallel"])
    failures: list[str] = []

    async def prime(user: str, password: str) -> None:
        async with gate:
            connection: ImapConnection | None = None
            try:
                connection = await _logged_in(job, user, password)
                await connection.checked(b"SELECT INBOX", timeout=job["command_timeout"])
                await connection.command(b"LOGOUT", timeout=job["command_timeout"])
            except _NETWORK_ERRORS as exc:
                failures.append(f"{user}: {type(exc).__name__}: {exc}"[:200])
            finally:
                await _close(connection)

    await asyncio.gather(*(prime(user, password) for user, password in job["clients"]))
    return {"failures": failures}


# -- 4. LMTP delivery -----------------------------------------------------------------------------


async def _lmtp_client(job: Job, index: int, recorder: Recorder) -> None:
    recipients: list[str] = job["recipients"]
    message: bytes = job["message"]
    number = index
    while time.monotonic() < recorder.window_end:
        connection: LmtpConnection | None = None
        try:
            connection = await LmtpConnection.open(job["host"], job["port"], timeout=job["command_timeout"])
            while time.monotonic() < recorder.window_end:
                recipient = recipients[number % len(recipients)]
                number += job["concurrency"]
                started = time.monotonic()
                codes = await connection.deliver("sender@example.org", [recipient], message,
                                                 timeout=job["command_timeout"])
                ok = all(code // 100 == 2 for code in codes)
                recorder.reply("DELIVER", started, ok, repr(codes).encode())
        except _NETWORK_ERRORS as exc:
            recorder.error("DELIVER", f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)
        finally:
            if connection is not None:
                await connection.close()


async def lmtp_job(job: Job, conn: Connection) -> Result:
    await _sleep_until(job["start_at"])
    start = time.monotonic()
    recorder = Recorder(start, start + job["duration"])
    cpu_before = time.process_time()
    tasks = [asyncio.create_task(_lmtp_client(job, index, recorder)) for index in range(job["concurrency"])]
    try:
        async with asyncio.timeout(job["duration"] + job["command_timeout"] + 10):
            await asyncio.gather(*tasks)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result = recorder.result()
    result["cpu"] = time.process_time() - cpu_before
    result["wall"] = time.monotonic() - start
    return result


# -- 2. large mailbox -----------------------------------------------------------------------------


class _Steps:
    """Timed steps of the large-mailbox run; a failed or timed-out step is recorded, not raised."""

    def __init__(self, step_timeout: float, server_pid: int | None = None) -> None:
        self.step_timeout = step_timeout
        self.server_pid = server_pid  # its reads from disk are counted per step, when given
        self.steps: dict[str, Result] = {}
        self.gave_up = ""  # after a timeout the server is still busy: later figures would be skewed

    def _server_reads(self) -> dict[int, int]:
        if self.server_pid is None:
            return {}
        return procstat.storage_reads(procstat.process_tree(self.server_pid))

    async def run(self, name: str, action: Callable[[], Awaitable[Any]]) -> Any:
        if self.gave_up:
            self.steps[name] = {"status": "skipped", "detail": f"after {self.gave_up} timed out"}
            return None
        reads = self._server_reads()  # sampled outside the timed part: /proc is scanned
        client_cpu = time.process_time()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.step_timeout):
                value = await action()
        except _NETWORK_ERRORS as exc:
            status = "timeout" if isinstance(exc, TimeoutError) else "error"
            self.steps[name] = {"status": status, "seconds": time.perf_counter() - started,
                                "detail": f"{type(exc).__name__}: {exc}"[:300]}
            if status == "timeout":
                self.gave_up = name
            return None
        # The load generator's own CPU over the step: when it comes near the step's time, the
        # client, not the server, set the pace.
        self.steps[name] = {"status": "ok", "seconds": time.perf_counter() - started,
                            "client_cpu_ms": round((time.process_time() - client_cpu) * 1000, 3)}
        if self.server_pid is not None:
            self.steps[name]["server_read_kib"] = procstat.reads_since(reads, self._server_reads()) // 1024
        return value

    async def run_repeated(self, name: str, times: int, action: Callable[[], Awaitable[Any]], *,
                           warmup: int = 0) -> None:
        """``action`` ``warmup`` times, then ``times`` times in a row, each timed: the step's
        figure is the median of the latter (the warm-up runs are recorded as ``warmup_ms``).

        A step timed once measures where the scheduler happened to put the server and the
        client as much as the server: on two CPUs, one ``UID FETCH 1:*`` of 100,000 messages
        took 34-63 ms with the two pinned to different CPUs and 60-104 ms pinned to the same
        one, in fresh processes of the same server on the same data (bench/HISTORY.md, eighteenth
        pass). The first run after SELECT stays its own step; this one is the warm command's."""
        runs: list[float] = []
        client_cpu: list[float] = []

        async def repeat() -> None:
            for _ in range(warmup + times):
                cpu = time.process_time()
                started = time.perf_counter()
                await action()
                runs.append(time.perf_counter() - started)
                client_cpu.append(time.process_time() - cpu)

        await self.run(name, repeat)
        step = self.steps[name]
        warm_ups, runs, client_cpu = runs[:warmup], runs[warmup:], client_cpu[warmup:]
        if step.get("status") == "ok" and runs:
            step["seconds"] = statistics.median(runs)
            step["runs_ms"] = [round(run * 1000, 3) for run in runs]
            if warmup:
                step["warmup_ms"] = [round(run * 1000, 3) for run in warm_ups]
            step["client_cpu_ms"] = round(statistics.median(client_cpu) * 1000, 3)

    def note(self, name: str, **values: Any) -> None:
        self.steps.setdefault(name, {}).update(values)


class _GiveUp(Exception):
    """A large-mailbox step timed out: the remaining steps are skipped."""


async def large_job(job: Job, conn: Connection) -> Result:
    """STATUS, SELECT, UID FETCH 1:* (UID FLAGS), searches, and a CONDSTORE resync on one big folder."""
    host, port, user, password = job["host"], job["port"], job["user"], job["password"]
    folder = quote(job["folder"])
    select = b"SELECT " + folder
    flag_step = f"STORE {job['flag_changes']} flag changes"
    searches = (("UID SEARCH UNSEEN", b"UID SEARCH UNSEEN"),
                ("SEARCH SUBJECT", b"SEARCH SUBJECT " + quote(job["subject_needle"])),
                ("SEARCH BODY", b"SEARCH BODY " + quote(job["body_needle"])), *SORTING_STEPS)
    all_steps = ("STATUS", REPEATED_STATUS, "SELECT", "UID FETCH 1:* (UID FLAGS)", HEADERS_STEP,
                 *(name for name, _ in searches), "SELECT (again)", *(name for name, _ in REPEATED_STEPS),
                 REPEATED_HEADERS, flag_step, "CONDSTORE resync")
    steps = _Steps(job["step_timeout"], job.get("server_pid"))
    cpu_before = time.process_time()
    wall_start = time.monotonic()
    connections: list[ImapConnection] = []

    async def session(select_first: bool) -> ImapConnection:
        connection = await ImapConnection.open(host, port, timeout=job["step_timeout"])
        connections.append(connection)
        reply = await connection.login(user, password, timeout=job["step_timeout"])
        if not reply.ok:
            raise ImapError(f"LOGIN failed: {reply.line[:200]!r}")
        if select_first:
            await connection.checked(select, timeout=job["step_timeout"])
        return connection

    async def timed(name: str, client: ImapConnection, command: bytes) -> Reply | None:
        """One timed command; afterwards the caller gets a usable selected connection back."""
        reply = await steps.run(name, lambda: client.checked(command, collect=True))
        if steps.gave_up:
            raise _GiveUp
        return reply

    try:
        main = await session(select_first=False)
        status = b"STATUS " + folder + b" (MESSAGES UIDNEXT UNSEEN)"
        await timed("STATUS", main, status)
        # A sub-millisecond command timed once says more about where the scheduler put the two
        # processes than about the server (0.6-1.7 ms for gximap, 0.9-69 ms for Dovecot across
        # the runs of the twentieth pass, bench/HISTORY.md): its warm runs get a median of their own.
        await steps.run_repeated(REPEATED_STATUS, REPEATS, lambda: main.checked(status, collect=True),
                                  warmup=WARMUP_RUNS)
        if steps.gave_up:
            raise _GiveUp
        if await timed("SELECT", main, select) is None:
            main = await session(select_first=True)
        steps.note("SELECT", exists=main.exists)
        reply = await timed("UID FETCH 1:* (UID FLAGS)", main, b"UID FETCH 1:* (UID FLAGS)")
        if reply is not None:
            steps.note("UID FETCH 1:* (UID FLAGS)", responses=reply.count)
        headers = b"FETCH %d:* " % max(1, main.exists - HEADER_MESSAGES + 1) + CLIENT_HEADERS
        reply = await timed(HEADERS_STEP, main, headers)
        if reply is not None:
            steps.note(HEADERS_STEP, responses=reply.count)
        for name, command in searches:
            if main.closed.done():
                main = await session(select_first=True)
            reply = await timed(name, main, command)
            if reply is None:
                continue
            if command in (SORT_COMMAND, THREAD_COMMAND):
                steps.note(name, **reply.ordering(command.split()[1]))
            else:
                steps.note(name, hits=reply.search_hits())
        if main.closed.done():
            main = await session(select_first=True)
        await timed("SELECT (again)", main, select)
        for name, command in (*REPEATED_STEPS, (REPEATED_HEADERS, headers)):
            await steps.run_repeated(name, REPEATS, functools.partial(main.checked, command, collect=True),
                                     warmup=WARMUP_RUNS)
            if steps.gave_up:
                raise _GiveUp
        capabilities = main.capabilities or await main.fetch_capabilities()
        if b"CONDSTORE" not in capabilities:
            for name in (flag_step, "CONDSTORE resync"):
                steps.steps[name] = {"status": "n/a", "detail": "server lacks CONDSTORE"}
        else:
            reply = await main.checked(select + b" (CONDSTORE)", collect=True, timeout=job["step_timeout"])
            modseq = reply.highest_modseq() or 1
            found = await main.checked(b"UID SEARCH ALL", collect=True, timeout=job["step_timeout"])
            all_uids = [int(x) for response in found.untagged if response.startswith(b"* SEARCH")
                        for x in response.split()[2:]]
            stride = max(1, len(all_uids) // max(job["flag_changes"], 1))
            chosen = all_uids[::stride][:job["flag_changes"]]
            writer = await session(select_first=True)

            async def change_flags() -> None:
                for offset in range(0, len(chosen), 100):
                    uid_set = b",".join(b"%d" % uid for uid in chosen[offset:offset + 100])
                    await writer.checked(b"UID STORE " + uid_set + b" +FLAGS.SILENT ($BenchChanged)")

            await steps.run(flag_step, change_flags)
            steps.note(flag_step, changed=len(chosen))
            if steps.gave_up:
                raise _GiveUp
            client = await session(select_first=False)  # a client coming back, logged in already

            async def resync() -> int:
                await client.checked(select + b" (CONDSTORE)")
                reply = await client.checked(b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % modseq, collect=True)
                return reply.count

            changed = await steps.run("CONDSTORE resync", resync)
            if changed is not None:
                steps.note("CONDSTORE resync", changed=changed, expected=len(chosen))
    except _GiveUp:
        pass
    except _NETWORK_ERRORS as exc:
        steps.note("aborted", status="error", detail=f"{type(exc).__name__}: {exc}"[:300])
    finally:
        for connection in connections:
            connection.abort()
    reason = f"after {steps.gave_up} timed out" if steps.gave_up else "the run was aborted"
    for name in all_steps:
        steps.steps.setdefault(name, {"status": "skipped", "detail": reason})
    return {"steps": steps.steps, "cpu": time.process_time() - cpu_before, "wall": time.monotonic() - wall_start}


async def first_status_job(job: Job, conn: Connection) -> Result:
    """``sessions`` new sessions one after another, each logging in and timing its first STATUS
    of the large folder: what a client that connects sees, which one sample cannot tell (see
    workloads.measure_first_status)."""
    command = b"STATUS " + quote(job["folder"]) + b" (MESSAGES UIDNEXT UNSEEN)"
    runs: list[float] = []
    for _ in range(job["sessions"]):
        connection: ImapConnection | None = None
        try:
            connection = await _logged_in(job, job["user"], job["password"])
            started = time.perf_counter()
            await connection.checked(command, timeout=job["command_timeout"])
            runs.append(time.perf_counter() - started)
            await connection.command(b"LOGOUT", timeout=job["command_timeout"])
        except _NETWORK_ERRORS as exc:
            return {"error": f"{type(exc).__name__}: {exc}"[:300], "runs": runs}
        finally:
            await _close(connection)
    return {"runs": runs}


# -- 3. idle sessions (interactive) -----------------------------------------------------------------


async def idle_job(job: Job, conn: Connection) -> Result:
    """Open sessions in IDLE, then obey the controller: ``watch`` a user's sessions, ``halt``, ``stop``.

    Messages to the controller: progress, ready, watching, arrivals; the return value is the final one.
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Job] = asyncio.Queue()

    def on_pipe() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            inbox.put_nowait({"cmd": "stop"})

    loop.add_reader(conn.fileno(), on_pipe)
    host, port, timeout = job["host"], job["port"], job["command_timeout"]
    live: list[tuple[str, ImapConnection]] = []
    failures: Counter[str] = Counter()
    samples: list[str] = []
    halted = False
    gate = asyncio.Semaphore(job["parallel"])
    cpu_before = time.process_time()
    wall_start = time.monotonic()

    async def open_session(user: str, password: str) -> None:
        if halted:
            return
        async with gate:
            if halted:
                return
            connection: ImapConnection | None = None
            try:
                connection = await ImapConnection.open(host, port, timeout=timeout)
                reply = await connection.login(user, password, timeout=timeout)
                if not reply.ok:
                    raise ImapError(f"LOGIN: {reply.line[:120]!r}")
                await connection.checked(b"SELECT INBOX", timeout=timeout)
                await connection.start_idle(timeout=timeout)
                live.append((user, connection))
            except _NETWORK_ERRORS as exc:
                failures[type(exc).__name__] += 1
                if len(samples) < _MAX_ERROR_SAMPLES:
                    samples.append(f"{type(exc).__name__}: {exc}"[:200])
                if connection is not None:
                    connection.abort()
            except asyncio.CancelledError:  # halted mid-handshake: drop the half-open session
                if connection is not None:
                    connection.abort()
                raise

    openings = [asyncio.ensure_future(open_session(u, p)) for u, p in job["sessions"]]
    ramp = asyncio.gather(*openings, return_exceptions=True)
    ramp_started = time.monotonic()
    stopping = False
    try:
        pending_message: asyncio.Future[Job] | None = None
        while not ramp.done():
            if pending_message is None:
                pending_message = asyncio.ensure_future(inbox.get())
            either: set[asyncio.Future[Any]] = {ramp, pending_message}
            done, _ = await asyncio.wait(either, timeout=1.0,
                                         return_when=asyncio.FIRST_COMPLETED)
            if pending_message in done:
                command = pending_message.result().get("cmd")
                pending_message = None
                if command in ("halt", "stop"):
                    # A slow server may hold handshakes for minutes: stop them now, keep the rest.
                    halted = True
                    for opening in openings:
                        opening.cancel()
                if command == "stop":
                    stopping = True
                    break
            elif ramp not in done:
                conn.send({"event": "progress", "ready": len(live)})
        await asyncio.gather(ramp, return_exceptions=True)
        conn.send({"event": "ready", "ready": len(live), "failed": sum(failures.values()),
                   "failures": dict(failures), "samples": samples,
                   "ramp_seconds": time.monotonic() - ramp_started})
        while not stopping:
            message = await (pending_message if pending_message is not None else inbox.get())
            pending_message = None
            if message.get("cmd") == "stop":
                stopping = True
            elif message.get("cmd") == "watch":
                await _watch(conn, live, message)
    finally:
        dropped = sum(1 for _, connection in live if connection.closed.done())
        for _, connection in live:
            connection.abort()
        loop.remove_reader(conn.fileno())
    return {"event": "stopped", "dropped": dropped, "cpu": time.process_time() - cpu_before,
            "wall": time.monotonic() - wall_start}


async def _watch(conn: Connection, live: list[tuple[str, ImapConnection]], message: Job) -> None:
    """Record when each IDLE session of message["user"] sees a new EXISTS."""
    targets = [connection for user, connection in live if user == message["user"]
               and not connection.closed.done()]
    arrivals: list[float] = []
    everyone = asyncio.get_running_loop().create_future()

    def hook_for(connection: ImapConnection) -> Callable[[bytes], None]:
        baseline = connection.exists

        def hook(response: bytes) -> None:
            if response.endswith(b" EXISTS") and connection.exists > baseline:
                arrivals.append(time.monotonic())
                connection.on_untagged = None
                if len(arrivals) >= len(targets) and not everyone.done():
                    everyone.set_result(None)
        return hook

    for connection in targets:
        connection.on_untagged = hook_for(connection)
    conn.send({"event": "watching", "count": len(targets)})
    if targets:
        try:
            async with asyncio.timeout(message["timeout"]):
                await everyone
        except TimeoutError:
            pass
    for connection in targets:
        connection.on_untagged = None
    conn.send({"event": "arrivals", "times": arrivals, "missing": len(targets) - len(arrivals)})


class IdleFleet:
    """Controller side of the idle workload: one interactive worker per slice of the sessions."""

    def __init__(self, jobs: list[Job]) -> None:
        ctx = _context()
        self.workers: list[tuple[Any, Connection]] = []
        for job in jobs:
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_worker_entry, args=(child, job), daemon=True, name="bench-idle")
            process.start()
            child.close()
            self.workers.append((process, parent))
        self.ready = [0] * len(jobs)
        self.finished: list[Result | None] = [None] * len(jobs)

    def send_all(self, message: Job) -> None:
        for _, parent in self.workers:
            try:
                parent.send(message)
            except (OSError, ValueError):
                pass

    def poll(self, timeout: float) -> list[tuple[int, Result]]:
        """Messages that arrived within ``timeout`` seconds, as (worker index, message)."""
        from multiprocessing.connection import wait

        connections = [parent for _, parent in self.workers if not parent.closed]
        received: list[tuple[int, Result]] = []
        for ready in wait(connections, timeout):
            index = next(i for i, (_, parent) in enumerate(self.workers) if parent is ready)
            parent = self.workers[index][1]
            try:
                message = parent.recv()
            except (EOFError, OSError):
                message = {"event": "stopped", "error": "worker exited"}
                parent.close()
            if "error" in message and message.get("event") is None:
                message = {"event": "stopped", **message}
            received.append((index, message))
        return received

    def collect(self, event: str, timeout: float) -> dict[int, Result]:
        """Wait until every live worker sent ``event`` (or stopped) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        got: dict[int, Result] = {}
        while len(got) < len(self.workers) and time.monotonic() < deadline:
            for index, message in self.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                if message.get("event") == event or message.get("event") == "stopped":
                    got[index] = message
                    if message.get("event") == "stopped":
                        self.finished[index] = message
        return got

    def close(self, timeout: float = 30.0) -> list[Result]:
        self.send_all({"cmd": "stop"})
        deadline = time.monotonic() + timeout
        while any(result is None for result in self.finished) and time.monotonic() < deadline:
            for index, message in self.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                if message.get("event") == "stopped":
                    self.finished[index] = message
            if all(parent.closed for _, parent in self.workers):
                break
        for process, parent in self.workers:
            parent.close()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        return [result or {"error": "no final report"} for result in self.finished]


def timed_append(host: str, port: int, user: str, password: str, message: bytes, *,
                 mailbox: str = "INBOX", timeout: float = 30.0) -> tuple[float, float]:
    """APPEND one message from a separate blocking connection; returns (sent_at, completed_at) in
    time.monotonic() seconds (the same clock the workers use)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        reader = sock.makefile("rb")

        def until_tagged(tag: bytes) -> bytes:
            while True:
                line = reader.readline()
                if not line:
                    raise ImapError("connection closed")
                if line.startswith(tag + b" "):
                    return line

        reader.readline()  # greeting
        sock.sendall(b"l LOGIN " + quote(user) + b" " + quote(password) + b"\r\n")
        if not until_tagged(b"l").startswith(b"l OK"):
            raise ImapError("LOGIN failed for the APPEND client")
        sent_at = time.monotonic()
        sock.sendall(b"p APPEND " + quote(mailbox) + b" {%d}\r\n" % len(message))
        while True:
            line = reader.readline()
            if not line:
                raise ImapError("connection closed")
            if line.startswith(b"+"):
                break
            if line.startswith(b"p "):
                raise ImapError(f"APPEND refused: {line[:200]!r}")
        sock.sendall(message + b"\r\n")
        line = until_tagged(b"p")
        completed_at = time.monotonic()
        if not line.startswith(b"p OK"):
            raise ImapError(f"APPEND failed: {line[:200]!r}")
        sock.sendall(b"q LOGOUT\r\n")
    return sent_at, completed_at


JOB_KINDS: dict[str, Callable[[Job, Connection], Coroutine[Any, Any, Result]]] = {
    "mixed": mixed_job,
    "logins": login_job,
    "lmtp": lmtp_job,
    "large": large_job,
    "prime": prime_job,
    "first_status": first_status_job,
    "idle": idle_job,
}
