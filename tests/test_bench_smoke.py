"""The benchmark harness (bench/): its client parser and report offline, and tiny real runs.

The real runs start gximap (and Dovecot / pymap when they are installed; never installed here) on
127.0.0.1 with ephemeral ports, in tmp_path, for a couple of seconds each.
"""

from __future__ import annotations

import asyncio
import email
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import __main__ as bench_main  # noqa: E402
from bench import (  # noqa: E402
    bodies,
    expunge,
    folders,
    lmdb_trees,
    loadgen,
    messages,
    noop,
    procstat,
    report,
    roundtrip,
    servers,
    workloads,
)
from bench.client import ImapConnection, Reply, dot_stuff  # noqa: E402
from bench.loadgen import percentile, summarize  # noqa: E402

# -- offline ----------------------------------------------------------------------------------------


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


def test_client_reassembles_responses_split_anywhere_including_literals() -> None:
    async def scenario() -> None:
        connection = ImapConnection()
        transport = _Transport()
        connection.connection_made(transport)
        stream = (b"* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n"
                  b"* 3 EXISTS\r\n"
                  b"* 1 FETCH (UID 7 BODY[] {12}\r\nab\r\ncd}\r\n{3})\r\n"
                  b"* 2 FETCH (UID 9 FLAGS (\\Seen))\r\n"
                  b"a1 OK [APPENDUID 5 11] done\r\n")
        # Feed the bytes in awkward pieces: 1 byte, then 5, then 7, ... across literal boundaries.
        pieces = []
        position, size = 0, 1
        while position < len(stream):
            pieces.append(stream[position:position + size])
            position += size
            size = size % 9 + 2
        for piece in pieces[:3]:
            connection.data_received(piece)
        reply_future = connection.send(b"UID FETCH 7,9 (BODY[] FLAGS)", collect=True)
        for piece in pieces[3:]:
            connection.data_received(piece)
        reply = await asyncio.wait_for(reply_future, 1)
        assert transport.written == b"a1 UID FETCH 7,9 (BODY[] FLAGS)\r\n"
        assert reply.ok and reply.append_uid() == 11
        assert reply.uids() == [7, 9]
        # Everything untagged after the greeting arrived while the command was outstanding.
        assert reply.untagged[:2] == [b"* 3 EXISTS", b"* 1 FETCH (UID 7 BODY[] {12}\r\nab\r\ncd}\r\n{3})"]
        assert connection.exists == 3
        connection.data_received(b"* 2 EXPUNGE\r\n")
        assert connection.exists == 2
        connection.connection_lost(None)
        assert connection.closed.done()

    asyncio.run(scenario())


def test_client_takes_runs_of_untagged_lines_whole_and_the_rest_line_by_line() -> None:
    """The bulk path (_untagged_run) and the per-line one agree, whatever the chunking: the
    untagged responses before a completion are its own, EXISTS and EXPUNGE are counted."""
    fetches = b"".join(b"* %d FETCH (UID %d FLAGS (\\Seen))\r\n" % (n, n + 100) for n in range(1, 301))
    first_14 = b"".join(line + b"\r\n" for line in fetches.split(b"\r\n")[:14])
    stream = (fetches + b"* 301 EXISTS\r\n* 4 EXPUNGE\r\n" + first_14 + b"* 2 FETCH (BODY[] {5}\r\n12345)\r\n"
              + b"a1 OK done\r\n* 9 FETCH (UID 9)\r\na2 OK second\r\n")

    async def replies(chunk: int) -> tuple[list[list[bytes]], int, int]:
        connection = ImapConnection()
        connection.connection_made(_Transport())
        connection.data_received(b"* OK ready\r\n")
        first = connection.send(b"FETCH 1:* FLAGS", collect=True)
        second = connection.send(b"NOOP", collect=True)
        bulk = 0
        original = connection._untagged_run

        def counting() -> bool:
            nonlocal bulk
            taken = original()
            bulk += taken
            return taken

        connection._untagged_run = counting  # type: ignore[method-assign]
        for start in range(0, len(stream), chunk):
            connection.data_received(stream[start:start + chunk])
        completions = [await asyncio.wait_for(first, 1), await asyncio.wait_for(second, 1)]
        # Counted without splitting a run into lines first, and the same as the lines split.
        counts = [reply.count for reply in completions]
        done = [reply.untagged for reply in completions]
        assert counts == [len(lines) for lines in done]
        return done, connection.exists, bulk

    reference, exists, _ = asyncio.run(replies(1))   # one byte at a time: never a whole run
    assert len(reference[0]) == 300 + 2 + 14 + 1 and reference[1] == [b"* 9 FETCH (UID 9)"]
    assert reference[0][-1] == b"* 2 FETCH (BODY[] {5}\r\n12345)" and exists == 300
    for chunk in (7, 64, 1000, 4096, len(stream)):
        got, got_exists, bulk = asyncio.run(replies(chunk))
        assert (got, got_exists) == (reference, exists), chunk
        if chunk in (1000, 4096):
            assert bulk > 0, "long runs of FETCH lines take the bulk path"


def test_client_takes_the_run_before_a_completion_in_bulk() -> None:
    """A chunk holding 300 FETCH lines, the completion, and the next command's lines: the
    run ahead of the completion goes in one piece, the rest line by line."""
    fetches = b"".join(b"* %d FETCH (UID %d FLAGS (\\Seen))\r\n" % (n, n) for n in range(1, 301))

    async def scenario() -> None:
        connection = ImapConnection()
        connection.connection_made(_Transport())
        connection.data_received(b"* OK ready\r\n")
        first = connection.send(b"FETCH 1:* FLAGS", collect=True)
        second = connection.send(b"NOOP", collect=True)
        dispatched: list[bytes] = []
        original = connection._dispatch

        def dispatch(response: bytes) -> None:
            dispatched.append(response)
            original(response)

        connection._dispatch = dispatch  # type: ignore[method-assign]
        connection.data_received(fetches + b"a1 OK done\r\n* 1 FETCH (FLAGS ())\r\na2 OK\r\n")
        reply = await asyncio.wait_for(first, 1)
        assert reply.count == 300 and reply.untagged[299] == b"* 300 FETCH (UID 300 FLAGS (\\Seen))"
        assert (await asyncio.wait_for(second, 1)).untagged == [b"* 1 FETCH (FLAGS ())"]
        assert dispatched == [b"a1 OK done", b"* 1 FETCH (FLAGS ())", b"a2 OK"]

    asyncio.run(scenario())


def test_client_counts_search_and_esearch_hits() -> None:
    assert Reply(b"OK", b"a OK", [b"* SEARCH 1 5 9"]).search_hits() == 3
    assert Reply(b"OK", b"a OK", [b"* SEARCH"]).search_hits() == 0
    assert Reply(b"OK", b"a OK", [b'* ESEARCH (TAG "a") COUNT 42']).search_hits() == 42
    assert Reply(b"OK", b"a OK", [b"* OK [HIGHESTMODSEQ 77] x"]).highest_modseq() == 77


def test_reply_ordering_summary() -> None:
    thread = Reply(b"OK", b"a OK", [b"* THREAD (1)(2 (3)(4 5))(6)"]).ordering(b"THREAD")
    assert (thread["numbers"], thread["threads"]) == (6, 3)
    same = Reply(b"OK", b"a OK", [b"* THREAD (1)(2 (3)(4 5))(6) "]).ordering(b"THREAD")
    assert same["answer_sha256"] == thread["answer_sha256"]
    other = Reply(b"OK", b"a OK", [b"* THREAD (1)(2 (4 5)(3))(6)"]).ordering(b"THREAD")
    assert other["answer_sha256"] != thread["answer_sha256"]
    assert Reply(b"OK", b"a OK", [b"* SORT 3 1 2"]).ordering(b"SORT")["numbers"] == 3
    assert "threads" not in Reply(b"OK", b"a OK", [b"* SORT"]).ordering(b"SORT")


def test_dot_stuffing() -> None:
    assert dot_stuff(b".a\r\n.b\r\nc") == b"..a\r\n..b\r\nc\r\n"


def test_messages_are_deterministic_and_hits_predictable() -> None:
    assert messages.make_message(1234) == messages.make_message(1234)
    assert messages.make_message(1) != messages.make_message(2)
    expected = messages.expected_hits(2000)
    subject_hits = sum(messages.SUBJECT_NEEDLE.encode() in messages.make_message(n).split(b"\r\n\r\n", 1)[0]
                       for n in range(1, 2001))
    body_hits = sum(messages.BODY_NEEDLE.encode() in messages.make_message(n).split(b"\r\n\r\n", 1)[1]
                    for n in range(1, 2001))
    assert (expected["subject"], expected["body"]) == (subject_hits, body_hits)
    assert subject_hits >= 1 and body_hits == 2
    assert expected["unseen"] == sum(1 for n in range(1, 2001) if not messages.is_seen(n))


def test_ratios_are_printed_only_when_both_servers_were_measured(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import probes

    figures = [("STORE", "store_s"), ("CPU", "cpu")]
    probes.print_ratios({"gximap": {"store_s": 1.0, "cpu": 3.0}}, figures)
    assert capsys.readouterr().out == ""
    probes.print_ratios({"gximap": {"store_s": 1.0, "cpu": 3.0}, "dovecot": {"store_s": 4.0, "cpu": 1.5}}, figures)
    assert capsys.readouterr().out == "gximap/Dovecot: STORE 0.25, CPU 2.00\n"


def test_a_padded_message_has_the_asked_size_and_the_same_search_hits() -> None:
    for number in (1, 13, 1007, 2013):
        plain, padded = messages.make_message(number), messages.make_message(number, size=24576)
        assert len(padded) == 24576 and padded.startswith(plain) and padded.endswith(b"\r\n")
        for needle in (messages.SUBJECT_NEEDLE, messages.BODY_NEEDLE):
            assert padded.count(needle.encode()) == plain.count(needle.encode())
    assert messages.make_message(5, size=10) == messages.make_message(5)   # already larger: kept
    assert [messages.filler(n) for n in (0, 1, 2)] == [b"", b"!", b"\r\n"]


def test_messages_hold_conversations() -> None:
    """Replies name their parent in In-Reply-To, their ancestry in References, and "Re:" the topic."""
    parsed = {n: email.message_from_bytes(messages.make_message(n)) for n in range(1, 3001)}
    replies = [n for n in parsed if messages.parent_of(n) is not None]
    assert 0.5 < len(replies) / len(parsed) < 0.7
    depths = [messages.depth_of(n) for n in parsed]
    assert max(depths) <= messages.MAX_DEPTH and max(depths) >= 5
    own = bare = 0
    for number in replies:
        message = parsed[number]
        parent = messages.parent_of(number)
        assert parent is not None and number - messages.REPLY_WINDOW <= parent < number
        assert message["Subject"] == "Re: " + parsed[messages.root_of(number)]["Subject"]
        references = (message["References"] or "").split()
        own_reply = messages.answers_own_reply(number)
        expected_parent = f"<{number}.sent@bench.invalid>" if own_reply else parsed[parent]["Message-ID"]
        assert message["In-Reply-To"] == expected_parent
        if references:
            assert references[-1] == expected_parent
            assert references[0] == parsed[messages.root_of(number)]["Message-ID"]
        else:
            bare += 1
        own += own_reply
    assert own > 0 and bare > 0
    for number in set(parsed) - set(replies):
        assert "In-Reply-To" not in parsed[number] and "References" not in parsed[number]
        assert not parsed[number]["Subject"].startswith("Re:")


def test_summarize_and_percentiles() -> None:
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2.0
    assert math.isnan(percentile([], 0.5))
    results: list[loadgen.Result] = [
        {"latencies": {"LOGIN": [0.010, 0.020]}, "errors": {"APPEND": 1}, "samples": ["x"], "cpu": 1.0, "wall": 10.0},
        {"latencies": {"LOGIN": [0.030], "APPEND": [0.005]}, "errors": {}, "samples": [], "cpu": 2.0, "wall": 10.0},
        {"error": "worker died"},
    ]
    summary = summarize(results, 2.0)
    assert summary["commands"]["LOGIN"]["ops"] == 3
    assert summary["commands"]["LOGIN"]["ops_per_s"] == 1.5
    assert summary["commands"]["LOGIN"]["p50_ms"] == pytest.approx(20.0)
    assert summary["commands"]["APPEND"]["errors"] == 1
    assert summary["total_ops"] == 4 and summary["errors"] == 1
    assert summary["loadgen_cpu_pct"] == pytest.approx(30.0)
    assert summary["worker_failures"] == ["worker died"]


def test_table_shows_values_and_ratios() -> None:
    def server(rate: float, p50: float) -> dict:
        return {"status": "ok", "version": "1", "workloads": {
            "mixed-10": {"status": "ok", "total_ops_per_s": rate, "errors": 0,
                         "commands": {"LOGIN": {"ops_per_s": rate / 10, "p50_ms": p50, "p99_ms": p50 * 3}}},
            "delivery": {"status": "n/a"}}}

    results = {"scale": {"mixed_clients": [10]},
               "servers": {"gximap": server(500.0, 2.0), "dovecot": server(1000.0, 1.0), "pymap": server(50.0, 8.0)}}
    table = report.format_table(results)
    row = next(line for line in table.splitlines() if line.startswith("mixed, 10 clients: total ops/s"))
    assert row.split()[-5:] == ["500", "1,000", "50", "0.50", "10.00"]
    p50 = next(line for line in table.splitlines() if "LOGIN p50 ms" in line)
    assert p50.split()[-5:] == ["2", "1", "8", "2.00", "0.25"]
    delivery = next(line for line in table.splitlines() if line.startswith("LMTP delivery"))
    assert delivery.split()[-3:] == ["n/a", "n/a", "n/a"]


def _timed_repeats(monkeypatch: pytest.MonkeyPatch, name: str, times: int, durations: list[float],
                   warmup: int = 0) -> dict:
    """The step run_repeated records for runs that take ``durations`` seconds, in order."""
    clock = [100.0]
    monkeypatch.setattr(loadgen.time, "perf_counter", lambda: clock[0])
    remaining = iter(durations)

    async def action() -> None:
        clock[0] += next(remaining)

    steps = loadgen._Steps(step_timeout=30.0)
    asyncio.run(steps.run_repeated(name, times, action, warmup=warmup))
    return steps.steps[name]


def test_a_repeated_step_reports_the_median_of_its_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    step = _timed_repeats(monkeypatch, "UID FETCH 1:* (UID FLAGS), median of 5", 5,
                          [0.030, 0.001, 0.020, 0.005, 0.010])
    assert step["status"] == "ok"
    assert step["runs_ms"] == [30.0, 1.0, 20.0, 5.0, 10.0]
    assert step["seconds"] == pytest.approx(0.010)
    assert step["client_cpu_ms"] >= 0.0  # the load generator's own CPU per run, the median
    assert "warmup_ms" not in step


def test_warm_up_runs_are_kept_apart_from_the_median(monkeypatch: pytest.MonkeyPatch) -> None:
    step = _timed_repeats(monkeypatch, "STATUS, median of 3", 3, [0.500, 0.300, 0.004, 0.002, 0.003], warmup=2)
    assert step["warmup_ms"] == [500.0, 300.0]
    assert step["runs_ms"] == [4.0, 2.0, 3.0]
    assert step["seconds"] == pytest.approx(0.003)


def test_a_repeated_step_that_fails_is_recorded_as_failed() -> None:
    async def action() -> None:
        raise loadgen.ImapError("connection closed: EOF")

    steps = loadgen._Steps(step_timeout=30.0)
    asyncio.run(steps.run_repeated("UID SEARCH UNSEEN, median of 5", 5, action))
    step = steps.steps["UID SEARCH UNSEEN, median of 5"]
    assert step["status"] == "error" and "runs_ms" not in step
    assert "connection closed" in step["detail"]


def test_disk_reads_are_counted_per_process_and_new_processes_from_zero() -> None:
    own = procstat.storage_reads([os.getpid()])
    assert set(own) == {os.getpid()} and own[os.getpid()] >= 0
    assert procstat.storage_reads([2 ** 22 + 7]) == {}  # no such process: nothing, no error
    # 5 more in a process seen before, 3 in one that started meanwhile, one that exited
    assert procstat.reads_since({10: 7, 11: 2}, {10: 12, 12: 3}) == 8


def test_table_shows_the_disk_reads_of_each_large_mailbox_step() -> None:
    steps = {"STATUS": {"status": "ok", "seconds": 0.001, "server_read_kib": 0},
             "SELECT": {"status": "ok", "seconds": 0.1, "server_read_kib": 31, "exists": 10},
             "UID FETCH 1:* (UID FLAGS)": {"status": "ok", "seconds": 0.05}}
    results = {"scale": {"large_messages": 10, "flag_changes": 5},
               "servers": {"gximap": {"status": "ok", "workloads": {"large": {"status": "ok", "steps": steps}}},
                           "dovecot": {"status": "ok", "workloads": {"large": {"status": "ok", "steps": {}}}}}}
    table = report.format_table(results)
    row = next(line for line in table.splitlines() if "server KiB read from disk" in line)
    assert "0/31/?" in row


def test_table_shows_the_load_generators_cpu_in_the_repeated_steps() -> None:
    steps = {loadgen.REPEATED_STATUS: {"status": "ok", "seconds": 0.0004, "client_cpu_ms": 0.12},
             f"UID FETCH 1:* (UID FLAGS), median of {loadgen.REPEATS}":
             {"status": "ok", "seconds": 0.056, "runs_ms": [56.0] * loadgen.REPEATS, "client_cpu_ms": 41.5},
             f"UID SEARCH UNSEEN, median of {loadgen.REPEATS}":
             {"status": "ok", "seconds": 0.006, "runs_ms": [6.0] * loadgen.REPEATS, "client_cpu_ms": 1.25}}
    results = {"scale": {"large_messages": 10, "flag_changes": 5},
               "servers": {"gximap": {"status": "ok", "workloads": {"large": {"status": "ok", "steps": steps}}}}}
    lines = report.format_table(results).splitlines()
    assert "0.12/41.5/1.25" in next(line for line in lines if "load generator CPU ms in the medians" in line)
    assert next(line for line in lines if "UID FETCH 1:* (UID FLAGS), median of" in line).endswith(" 56")


# -- real runs --------------------------------------------------------------------------------------


def _run(tmp_path: Path, *options: str) -> dict:
    args = bench_main.build_parser().parse_args([
        "--no-install", "--workdir", str(tmp_path / "run"), "--results", str(tmp_path / "results"),
        "--clients", "2", "--duration", "2", "--seed", "20", "--large", "200", "--idle", "20",
        "--login-duration", "2", "--lmtp-duration", "2", "--step-timeout", "30", "--status-sessions", "3",
        "--status-starts", "2", *options])
    lines: list[str] = []
    results = bench_main.run(args, log=lines.append)
    path = report.write_json(results, tmp_path / "results")
    assert json.loads(path.read_text())["servers"].keys() == results["servers"].keys()
    assert not servers.RUNNING, "a server was left running"
    assert not (tmp_path / "run").exists()
    return results


def _check_mixed(record: dict) -> None:
    mixed = record["workloads"]["mixed-2"]
    assert mixed["status"] == "ok", mixed
    assert mixed["errors"] == 0, mixed["error_samples"]
    for command in ("LOGIN", "SELECT", "FETCH_ENVELOPE", "FETCH_BODY", "STORE", "APPEND", "EXPUNGE"):
        assert mixed["commands"][command]["ops"] > 0, command
        assert mixed["commands"][command]["p99_ms"] >= mixed["commands"][command]["p50_ms"] > 0


def _check_large(record: dict) -> None:
    large = record["workloads"]["large"]
    assert large["status"] == "ok", large
    steps = large["steps"]
    expected = messages.expected_hits(200)
    assert steps["SELECT"]["exists"] == 200
    assert steps["SELECT"]["server_read_kib"] >= 0  # read from /proc around the step
    assert steps["UID FETCH 1:* (UID FLAGS)"]["responses"] == 200
    assert steps[loadgen.HEADERS_STEP]["responses"] == 200  # fewer than HEADER_MESSAGES: all of them
    assert steps["UID SEARCH UNSEEN"]["hits"] == expected["unseen"]
    assert steps["SEARCH SUBJECT"]["hits"] == expected["subject"]
    assert steps["SEARCH BODY"]["hits"] == expected["body"]
    for name, _command in loadgen.SORTING_STEPS:
        assert steps[name]["status"] == "ok", steps[name]
        assert steps[name]["numbers"] == 200, steps[name]
    # Each conversation is one thread: replies share their first message's subject and name it.
    assert steps["UID THREAD REFERENCES"]["threads"] == len({messages.root_of(n) for n in range(1, 201)})
    for name in ("STATUS", "UID FETCH 1:* (UID FLAGS)", "UID SEARCH UNSEEN", loadgen.HEADERS_STEP,
                 *(command.decode() for _name, command in loadgen.SORTING_STEPS)):
        repeated = steps[f"{name}, median of {loadgen.REPEATS}"]
        assert repeated["status"] == "ok", repeated
        assert len(repeated["runs_ms"]) == loadgen.REPEATS
        assert len(repeated["warmup_ms"]) == loadgen.WARMUP_RUNS
        assert repeated["seconds"] * 1000 == pytest.approx(statistics.median(repeated["runs_ms"]), abs=0.001)
        assert repeated["client_cpu_ms"] >= 0.0
    assert steps["SELECT"]["client_cpu_ms"] >= 0.0
    for name, count in ((workloads.FIRST_STATUS_OF_SESSIONS, 3), (workloads.FIRST_STATUS_AFTER_STARTS, 2)):
        first = steps[name]
        assert first["status"] == "ok", first
        assert len(first["runs_ms"]) == count and all(run > 0 for run in first["runs_ms"])
        assert first["seconds"] * 1000 == pytest.approx(statistics.median(first["runs_ms"]), abs=0.001)
    resync = steps["CONDSTORE resync"]
    assert resync["status"] in ("ok", "n/a"), resync
    if resync["status"] == "ok":
        assert resync["changed"] == resync["expected"] == 200


@pytest.mark.slow
def test_smoke_gximap_mixed_and_large_mailbox(tmp_path: Path) -> None:
    results = _run(tmp_path, "--servers", "gximap", "--workloads", "mixed,large")
    record = results["servers"]["gximap"]
    assert record["status"] == "ok", record.get("detail")
    _check_mixed(record)
    _check_large(record)
    # Every account logged in once before anything was measured, the large mailbox's too.
    assert workloads.LARGE_ACCOUNT in record["prime"]["accounts"] and not record["prime"]["failures"]
    table = report.format_table(results)
    assert "mixed, 2 clients: total ops/s" in table
    assert "rounds_ops_per_s" not in record["workloads"]["mixed-2"]  # one server: in one go
    # The fills' pages were written back before anything was measured, and the table says how long.
    assert record["fill"]["sync_s"] >= 0.0
    assert "write-back before measuring s (os.sync)" in table


@pytest.mark.slow
def test_smoke_gximap_idle_login_delivery(tmp_path: Path) -> None:
    results = _run(tmp_path, "--servers", "gximap", "--workloads", "idle,login,delivery")
    record = results["servers"]["gximap"]
    assert record["status"] == "ok", record.get("detail")
    idle = record["workloads"]["idle"]
    assert idle["sessions"] == 20 and idle["failed"] == 0, idle
    assert idle["wakeup"]["notified"] == idle["wakeup"]["sessions_watched"] == 2, idle["wakeup"]
    for scheme in servers.SCHEMES:
        login = record["workloads"][f"login-{scheme}"]
        assert login["status"] == "ok" and login["errors"] == 0, login
        assert login["logins_per_s"] > 0
    delivery = record["workloads"]["delivery"]
    if servers.gximap_lmtp_directive() is None:
        assert delivery["status"] == "n/a"
    else:
        assert delivery["status"] == "ok" and delivery["errors"] == 0, delivery


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """Dovecot's unprivileged processes (auth as dovecot, mail as nobody) must reach the files, and
    pytest's tmp_path lives under a 0700 directory: use a world-traversable temporary one."""
    directory = Path(tempfile.mkdtemp(prefix="gximap-bench-test-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(servers.DovecotServer.missing() is not None, reason="Dovecot is not installed")
def test_smoke_dovecot(traversable_dir: Path) -> None:
    results = _run(traversable_dir, "--servers", "dovecot", "--workloads", "mixed,large")
    record = results["servers"]["dovecot"]
    assert record["status"] == "ok", record.get("detail")
    _check_mixed(record)
    _check_large(record)


@pytest.mark.slow
@pytest.mark.skipif(servers.DovecotServer.missing() is not None, reason="Dovecot is not installed")
def test_smoke_mixed_rounds_alternate_between_servers(traversable_dir: Path) -> None:
    results = _run(traversable_dir, "--servers", "gximap,dovecot", "--workloads", "mixed", "--rounds", "2")
    assert list(results["servers"]) == ["gximap", "dovecot"]
    for name, other in (("gximap", "dovecot"), ("dovecot", "gximap")):
        record = results["servers"][name]
        assert record["status"] == "ok", record.get("detail")
        _check_mixed(record)
        mixed = record["workloads"]["mixed-2"]
        assert mixed["interleaved_with"] == [other]
        rounds = mixed["rounds_ops_per_s"]
        assert len(rounds) == 2 and all(ops > 0 for ops in rounds)
        # Equal rounds: the overall rate is their mean (every sample of both rounds counted once).
        assert mixed["duration_s"] == 2
        assert math.isclose(mixed["total_ops_per_s"], sum(rounds) / 2)
    assert "ops/s per round: gximap mixed-2 " in report.format_header(results)


def test_rounds_must_be_positive() -> None:
    args = bench_main.build_parser().parse_args(["--rounds", "0"])
    with pytest.raises(SystemExit, match="--rounds"):
        bench_main.scale_from_args(args)
    for option in ("--status-sessions", "--status-starts"):
        args = bench_main.build_parser().parse_args([option, "0"])
        with pytest.raises(SystemExit, match=option):
            bench_main.scale_from_args(args)


@pytest.mark.slow
@pytest.mark.skipif(servers.PymapServer.missing() is not None, reason="pymap is not installed")
def test_smoke_pymap(tmp_path: Path) -> None:
    results = _run(tmp_path, "--servers", "pymap", "--workloads", "mixed")
    record = results["servers"]["pymap"]
    assert record["status"] == "ok", record.get("detail")
    _check_mixed(record)


def test_lmdb_trees_probe_prints_a_rate_per_table_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scratch = tmp_path / "trees"
    assert lmdb_trees.main(["--duration", "0.3", "--trees", "2,1", "--dir", str(scratch)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rates = [line for line in lines if "commits/s" in line]
    assert [line.split(" table")[0].strip() for line in rates] == ["2", "1"]
    assert all(int(line.split(": ")[1].split()[0].replace(",", "")) > 0 for line in rates)
    assert not scratch.exists()   # the scratch tables are removed
    with pytest.raises(ValueError, match="trees must be"):
        lmdb_trees.commits_per_second(scratch, 9, 0.1)


def test_lmdb_trees_probe_spreads_writers_over_environments(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    scratch = tmp_path / "trees"
    assert lmdb_trees.main(["--duration", "0.3", "--trees", "2", "--shards", "1,3", "--dir", str(scratch)]) == 0
    rates = [line for line in capsys.readouterr().out.splitlines() if "commits/s" in line]
    assert [line.split(":")[0].strip() for line in rates] == ["2 table(s) per commit",
                                                              "2 table(s) per commit, 3 environments"]
    assert all(int(line.split(": ")[1].split()[0].replace(",", "")) > 0 for line in rates)
    assert not scratch.exists()
    with pytest.raises(ValueError, match="shards must be"):
        lmdb_trees.commits_per_second(scratch, 2, 0.1, shards=11)


def test_expunge_probe_times_the_answer_and_the_removals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scratch = tmp_path / "expunge"
    assert expunge.main(["--servers", "gximap", "--messages", "60", "--size", "17000", "--piece", "25",
                         "--dir", str(scratch)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "EXPUNGE of 60 messages of 17,000 bytes (bodies as files), fsync on"
    assert lines[1].startswith("over IMAP") and lines[2].split() == ["STORE", "EXPUNGE", "files", "gone"]
    name, store, answered, gone = lines[3].split()
    assert name == "gximap" and float(answered.rstrip("s")) <= float(gone.rstrip("s"))
    assert lines[4] == "in midb alone, pieces of 25"
    timed = {line[:34].strip(): line[34:].split() for line in lines[6:8]}
    assert set(timed) == {"files removed after the answer", "files removed inside (before)"}
    for answered, gone in timed.values():
        assert float(answered.rstrip("s")) <= float(gone.rstrip("s"))
    assert lines[8].startswith("answered in ") and not scratch.exists()
    assert expunge.main(["--servers", "gximap", "--messages", "40", "--size", "0", "--dir", str(scratch)]) == 0
    lines = capsys.readouterr().out.splitlines()   # the bench's own messages: inline in gximap
    assert lines[0] == "EXPUNGE of 40 of the bench's messages (1-5 KB), fsync on"
    assert len(lines) == 4 and lines[3].split()[0] == "gximap" and not scratch.exists()
    for options in (["--size", "100"], ["--size", "0", "--servers", ""]):
        with pytest.raises(SystemExit):   # neither files nor the bench's messages; nothing to measure
            expunge.main(options)


def test_a_server_where_priming_logins_failed_is_not_measured() -> None:
    from bench import workloads

    workloads.check_primed({"seconds": 0.1, "failures": []}, 10)
    with pytest.raises(servers.ServerError, match=r"priming: 2 of 10 accounts .*first: bench1: ImapError"):
        workloads.check_primed({"failures": ["bench1: ImapError: LOGIN bench1: b'a NO'", "bench2: x"]}, 10)
    with pytest.raises(servers.ServerError, match="priming failed: timed out"):
        workloads.check_primed({"failures": "timed out"}, 10)


@pytest.mark.slow
def test_noop_probe_prints_the_rate_and_cpu_per_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scratch = tmp_path / "noop"
    assert noop.main(["--servers", "gximap", "--clients", "2", "--duration", "1", "--dir", str(scratch)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("gximap"))
    rate = float(line.split()[1].replace(",", ""))
    cpu = float(line.split("NOOP/s")[1].split()[0])
    assert rate > 0 and cpu >= 0  # CPU is read in clock ticks: a short busy run may show none
    assert not servers.RUNNING, "the probe left a server running"
    assert not (scratch / "gximap").exists()   # its scratch directory is removed
    with pytest.raises(SystemExit):
        noop.main(["--servers", "exchange"])


def test_roundtrip_placements_need_two_cpus_to_be_apart() -> None:
    assert roundtrip.placements({3}) == {"free": ({3}, {3}), "shared": ({3}, {3})}
    assert roundtrip.placements({5, 2, 7}) == {"free": ({2, 5, 7}, {2, 5, 7}), "shared": ({2}, {2}),
                                               "apart": ({2}, {5})}


@pytest.mark.slow
def test_roundtrip_probe_times_each_placement_and_restores_the_affinity(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scratch = tmp_path / "roundtrip"
    allowed = os.sched_getaffinity(0)
    assert roundtrip.main(["--servers", "gximap", "--commands", "20", "--warmup", "2", "--rounds", "1",
                           "--dir", str(scratch)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("STATUS INBOX (MESSAGES UIDNEXT UNSEEN): 1 × 20 round trips")
    assert lines[1].startswith("idle CPUs: cpuidle ")
    expected = ["free", "shared"] + (["apart"] if len(allowed) > 1 else [])
    assert [line.split()[0] for line in lines[2:]] == expected
    for line in lines[2:]:
        words = line.split()   # free  gximap  141 /  200, CPU  90
        median, p90 = float(words[2]), float(words[4].rstrip(","))
        assert 0 < median <= p90
    assert os.sched_getaffinity(0) == allowed   # the load generator is free again
    assert not servers.RUNNING, "the probe left a server running"
    assert not (scratch / "gximap").exists()


@pytest.mark.parametrize("options", [["--commands", "0"], ["--rounds", "0"], ["--warmup", "-1"],
                                     ["--command", "NOOP\r\nLOGOUT"], ["--servers", "exchange"]])
def test_roundtrip_probe_refuses_bad_options(options: list[str]) -> None:
    with pytest.raises(SystemExit):
        roundtrip.main(options)


@pytest.mark.slow
def test_bodies_probe_fetches_the_whole_message_and_prints_the_rate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scratch = tmp_path / "bodies"
    assert bodies.main(["--servers", "gximap", "--clients", "2", "--size-mib", "2", "--duration", "1",
                        "--dir", str(scratch)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("gximap"))
    fetches_per_s, mib_per_s = float(line.split()[1]), float(line.split()[3])
    assert fetches_per_s > 0 and mib_per_s == pytest.approx(2 * fetches_per_s, rel=0.01)
    assert not servers.RUNNING, "the probe left a server running"
    assert not (scratch / "gximap").exists()
    with pytest.raises(SystemExit):
        bodies.main(["--size-mib", "100"])


def test_folders_probe_lists_the_created_tree_with_each_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2 parents of 3 children: the middle parent is Projects1, so its children are 3 lines and
    one name is 1; every answer lists the 8 Projects folders it should (no WARNING)."""
    scratch = tmp_path / "folders"
    assert folders.main(["--servers", "gximap", "--parents", "2", "--children", "3", "--repeats", "5",
                         "--dir", str(scratch)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out
    listed = {line.split(" median ")[0].strip(): int(line.split()[-2])
              for line in out.splitlines() if line.startswith("  ") and " listed" in line}
    assert set(listed) == {'LIST "" "*"', 'LIST "" "%"', 'LSUB "" "*"', 'LIST "" "Projects1/Sub02"',
                           'LIST "" "Projects1/%"', 'LIST (SUBSCRIBED) "" "*"',
                           'LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))'}
    assert listed['LIST "" "Projects1/%"'] == 3 and listed['LIST "" "Projects1/Sub02"'] == 1
    # Everything is the 2 + 6 Projects folders and the server's own (at least INBOX).
    assert listed['LIST "" "*"'] >= 9 and listed['LIST "" "%"'] == listed['LIST "" "*"'] - 6
    assert not servers.RUNNING, "the probe left a server running"
    assert not (scratch / "gximap").exists()


def test_folders_probe_figures_count_the_projects_folders(tmp_path: Path) -> None:
    figures = folders.measure("gximap", tmp_path / "gximap", 3, 2, 2)
    assert chr(int(figures["delimiter"])) == "/"
    expected = {"all": 9, "top": 3, "lsub": 9, "one": 1, "children": 2, "subscribed": 9, "status": 9}
    assert {key: figures[f"{key}.projects"] for key in expected} == expected
    assert all(figures[f"{key}.median_us"] > 0 for key in expected)


@pytest.mark.parametrize("options", [["--parents", "0"], ["--children", "-1"], ["--repeats", "0"],
                                     ["--parents", "50", "--children", "41"], ["--servers", "nosuch"]])
def test_folders_probe_refuses_bad_options(options: list[str]) -> None:
    with pytest.raises(SystemExit):
        folders.main(options)


def test_a_large_message_has_the_asked_size_and_no_nul() -> None:
    message = bodies.large_message(3 * (1 << 20) + 5, 7)
    assert len(message) == 3 * (1 << 20) + 5
    assert b"\x00" not in message and b"Subject: attachment 7\r\n" in message


def test_start_waits_for_the_servers_ready_notification() -> None:
    """bench.servers.wait_for_ready: READY=1 on the NOTIFY_SOCKET ends the wait; a server that
    exits first, or never says it, is a ServerError."""
    import socket
    import subprocess
    import time

    from bench.servers import ServerError, wait_for_ready

    def run(script: str, timeout: float) -> float:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            name = f"gximap-bench-test-{os.getpid()}-{time.monotonic_ns()}"
            notify.bind("\0" + name)
            env = {**os.environ, "NOTIFY_SOCKET": "@" + name}
            proc = subprocess.Popen([sys.executable, "-c", script], env=env)
            started = time.monotonic()
            try:
                wait_for_ready(notify, started + timeout, proc, "fake")
                return time.monotonic() - started
            finally:
                proc.kill()
                proc.wait()

    ready_late = ("import time; from gximap.cli import sd_notify; sd_notify('STATUS=starting'); "
                  "time.sleep(0.4); sd_notify('READY=1'); time.sleep(30)")
    assert run(ready_late, 20) >= 0.4
    with pytest.raises(ServerError, match="exited with status 3"):
        run("raise SystemExit(3)", 20)
    with pytest.raises(ServerError, match="did not report READY=1"):
        run("import time; time.sleep(30)", 0.5)


def test_dovecot_resyncs_a_filled_maildir_only_once_its_directories_have_settled(tmp_path: Path) -> None:
    folder = tmp_path / "Maildir" / ".Big"
    for sub in ("cur", "new"):
        (folder / sub).mkdir(parents=True)
    now = 1_800_000_000.0
    os.utime(folder / "new", (now - 60, now - 60))
    os.utime(folder / "cur", (now - 0.5, now - 0.5))
    assert servers.maildir_settle_delay([folder], now) == pytest.approx(servers.MAILDIR_SETTLE_SECONDS - 0.5)
    os.utime(folder / "cur", (now - 30, now - 30))
    assert servers.maildir_settle_delay([folder], now) == 0.0
    assert servers.maildir_settle_delay([], now) == 0.0
