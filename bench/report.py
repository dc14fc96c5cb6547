"""The results table (text) and the JSON file of a run.

Each row is one figure for every server plus the ratios gximap/Dovecot and gximap/pymap. A row
is marked ``↑`` when higher is better (rates) or ``↓`` when lower is better (times, memory); a
ratio above 1 therefore means gximap is ahead on ``↑`` rows and behind on ``↓`` rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import idlepoll
from bench.loadgen import HEADERS_STEP, REPEATED_HEADERS, REPEATED_STATUS, REPEATED_STEPS, SORTING_STEPS
from bench.workloads import FIRST_STATUS_AFTER_STARTS, FIRST_STATUS_OF_SESSIONS

Result = dict[str, Any]
Cell = float | str | None
SERVER_ORDER = ("gximap", "dovecot", "pymap")
MIXED_COMMANDS = ("LOGIN", "SELECT", "FETCH_ENVELOPE", "FETCH_BODY", "STORE", "APPEND", "EXPUNGE")
LARGE_STEPS = ("STATUS", REPEATED_STATUS, "SELECT", "UID FETCH 1:* (UID FLAGS)", HEADERS_STEP, "UID SEARCH UNSEEN",
               "SEARCH SUBJECT", "SEARCH BODY", *(name for name, _ in SORTING_STEPS), "SELECT (again)",
               *(name for name, _ in REPEATED_STEPS), REPEATED_HEADERS)


@dataclass(frozen=True)
class Row:
    label: str
    better: str  # "↑", "↓" or "" (information only, no ratio)
    extract: Callable[[Result], Cell]


def _get(data: Result | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _workload(name: str) -> Callable[[Result], Result | None]:
    return lambda server: _get(server, "workloads", name)


def _command_figure(command: str, key: str) -> Callable[[Result], Cell]:
    """One command's figure from a mixed-load result."""
    return lambda data: _get(data, "commands", command, key)


def _status_or(value: Callable[[Result], Cell], workload: Callable[[Result], Result | None]) -> Callable[[Result], Cell]:
    def extract(server: Result) -> Cell:
        data = workload(server)
        if data is None:
            return None
        status = data.get("status")
        if status in ("n/a", "error", "timeout", "skipped"):
            return status
        return value(data)
    return extract


def _rows_for_mixed(name: str, clients: int) -> list[Row]:
    workload = _workload(name)
    rows = [Row(f"mixed, {clients} clients: total ops/s", "↑",
                _status_or(lambda d: d.get("total_ops_per_s"), workload))]
    for command in MIXED_COMMANDS:
        for label, direction, key in (("ops/s", "↑", "ops_per_s"), ("p50 ms", "↓", "p50_ms"),
                                      ("p99 ms", "↓", "p99_ms")):
            rows.append(Row(f"  {command} {label}", direction,
                            _status_or(_command_figure(command, key), workload)))
    rows.append(Row("  errors", "", _status_or(lambda d: d.get("errors"), workload)))
    rows.append(Row("  server CPU %", "", _status_or(lambda d: d.get("server_cpu_pct"), workload)))
    rows.append(Row("  server CPU ms per op", "↓", _status_or(lambda d: d.get("server_cpu_ms_per_op"), workload)))
    rows.append(Row("  load generator CPU %", "", _status_or(lambda d: d.get("loadgen_cpu_pct"), workload)))
    return rows


def _step_value(step: str) -> Callable[[Result], Cell]:
    def extract(data: Result) -> Cell:
        found = _get(data, "steps", step)
        if found is None:
            return None
        if found.get("status") != "ok":
            return str(found.get("status"))
        return found["seconds"] * 1000
    return extract


def _large_rows(results: Result) -> list[Row]:
    messages = _get(results, "scale", "large_messages")
    workload = _workload("large")
    rows = [
        Row(f"large mailbox ({messages} msgs): fill s (method differs)", "",
            lambda s: _get(s, "fill", "large", "seconds")),
        Row("  post-fill server work s (doveadm force-resync)", "",
            lambda s: _get(s, "fill", "after_fill_s") if _get(s, "fill", "large") else None),
        Row("  write-back before measuring s (os.sync)", "",
            lambda s: _get(s, "fill", "sync_s") if _get(s, "fill", "large") else None),
    ]
    for step in LARGE_STEPS:
        rows.append(Row(f"  {step} ms", "↓", _status_or(_step_value(step), workload)))
    flag_step = f"STORE {_get(results, 'scale', 'flag_changes')} flag changes"
    rows.append(Row(f"  {flag_step} ms", "↓", _status_or(_step_value(flag_step), workload)))
    rows.append(Row("  CONDSTORE resync ms", "↓", _status_or(_step_value("CONDSTORE resync"), workload)))
    for step, count in ((FIRST_STATUS_OF_SESSIONS, "status_sessions"), (FIRST_STATUS_AFTER_STARTS, "status_starts")):
        rows.append(Row(f"  {step} of {_get(results, 'scale', count) or '?'} ms", "↓",
                        _status_or(_step_value(step), workload)))
    rows.append(Row("  SEARCH hits unseen/subject/body", "", _status_or(_hits, workload)))
    for name, _command in SORTING_STEPS:
        rows.append(Row(f"  {name}: answer", "", _status_or(_ordering(name), workload)))
    rows.append(Row("  load generator CPU ms in the medians", "", _status_or(_client_cpu, workload)))
    rows.append(Row("  server KiB read from disk per step, in the order above", "", _status_or(_disk_reads, workload)))
    return rows


def _disk_reads(data: Result) -> Cell:
    """What each step had to read from disk, in step order: a large first SELECT or FETCH that
    read megabytes measured the disk (the page cache had dropped the index), not the code."""
    counts = [_get(step, "server_read_kib") for name, step in (data.get("steps") or {}).items()
              if name != "aborted"]
    if all(count is None for count in counts):
        return None
    return _slashed(counts)


def _client_cpu(data: Result) -> Cell:
    """The client's CPU per repeated command: a figure near the step's time says the client
    set the pace, whatever the server."""
    return _slashed([_get(data, "steps", step, "client_cpu_ms")
                     for step in (REPEATED_STATUS, *(name for name, _ in REPEATED_STEPS), REPEATED_HEADERS)])


def _hits(data: Result) -> Cell:
    return _slashed([_get(data, "steps", step, "hits")
                     for step in ("UID SEARCH UNSEEN", "SEARCH SUBJECT", "SEARCH BODY")])


def _ordering(step: str) -> Callable[[Result], Cell]:
    """A SORT or THREAD answer as numbers (threads) and digest: equal digests, equal answers."""
    def extract(data: Result) -> Cell:
        answer = _get(data, "steps", step) or {}
        if "answer_sha256" not in answer:
            return None
        threads = f" in {answer['threads']:,} threads" if "threads" in answer else ""
        return f"{answer['numbers']:,}{threads} {answer['answer_sha256'][:8]}"
    return extract


def _slashed(parts: list[Any]) -> str:
    """Several figures in one cell, ``?`` for a missing one."""
    return "/".join("?" if part is None else str(part) for part in parts)


def _wake(key: str) -> Callable[[Result], Cell]:
    def extract(data: Result) -> Cell:
        wakeup = data.get("wakeup") or {}
        status = wakeup.get("status")
        if status not in ("ok", "partial"):
            return "timeout" if "timed out" in str(wakeup.get("detail", "")) else status
        return wakeup.get(key)
    return extract


def _idle_rows() -> list[Row]:
    workload = _workload("idle")

    def wake(key: str) -> Callable[[Result], Cell]:
        return _status_or(_wake(key), workload)

    return [
        Row("idle: sessions in IDLE", "↑", _status_or(lambda d: d.get("sessions"), workload)),
        Row("  RSS per session KiB", "↓", _status_or(lambda d: d.get("rss_per_session_kib"), workload)),
        Row("  PSS per session KiB", "↓", _status_or(lambda d: d.get("pss_per_session_kib"), workload)),
        Row("  RSS total after MiB", "↓",
            _status_or(lambda d: (d.get("rss_after_kib") or 0) / 1024, workload)),
        Row("  APPEND → all IDLE sessions, p50 ms", "↓", wake("p50_ms")),
        Row("  APPEND → all IDLE sessions, last ms", "↓", wake("max_seen_ms")),
        Row("  sessions notified/watched", "", _status_or(_notified, workload)),
        Row("  sessions that failed to open", "", _status_or(lambda d: d.get("failed"), workload)),
        Row("  ramp-up s", "", _status_or(lambda d: d.get("ramp_seconds"), workload)),
        Row("  ramp cut short by", "", _status_or(lambda d: d.get("halted") or None, workload)),
    ]


def _notified(data: Result) -> Cell:
    wakeup = data.get("wakeup") or {}
    if "notified" not in wakeup:
        return _wake("notified")(data)
    return f"{wakeup['notified']}/{wakeup.get('sessions_watched')}"


def _delivery_rows() -> list[Row]:
    workload = _workload("delivery")
    return [
        Row("LMTP delivery: deliveries/s", "↑", _status_or(lambda d: d.get("deliveries_per_s"), workload)),
        Row("  p50 ms", "↓", _status_or(lambda d: _get(d, "commands", "DELIVER", "p50_ms"), workload)),
        Row("  p99 ms", "↓", _status_or(lambda d: _get(d, "commands", "DELIVER", "p99_ms"), workload)),
    ]


def _login_rows(scheme: str, title: str) -> list[Row]:
    workload = _workload(f"login-{scheme}")
    return [
        Row(f"{title}: logins/s", "↑", _status_or(lambda d: d.get("logins_per_s"), workload)),
        Row("  LOGIN p50 ms", "↓", _status_or(lambda d: _get(d, "commands", "LOGIN", "p50_ms"), workload)),
        Row("  LOGIN p99 ms", "↓", _status_or(lambda d: _get(d, "commands", "LOGIN", "p99_ms"), workload)),
        Row("  scheme", "", _status_or(lambda d: d.get("scheme_label"), workload)),
    ]


def table_rows(results: Result) -> list[Row]:
    rows: list[Row] = []
    for clients in _get(results, "scale", "mixed_clients") or ():
        rows += _rows_for_mixed(f"mixed-{clients}", clients)
    rows += _large_rows(results)
    rows += _idle_rows()
    rows += _delivery_rows()
    rows += _login_rows("default", "login, default scheme")
    rows += _login_rows("default-uncached", "login, default scheme, no credential cache")
    rows += _login_rows("SHA512-CRYPT", "login, SHA512-CRYPT everywhere")
    return rows


def format_number(value: Cell) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(mine: Cell, other: Cell) -> str:
    if isinstance(mine, int | float) and isinstance(other, int | float) and other and not math.isnan(other) \
            and not math.isnan(mine):
        return f"{mine / other:.2f}"
    return ""


def format_table(results: Result) -> str:
    servers = results.get("servers", {})
    names = [name for name in SERVER_ORDER if name in servers]
    columns = ["", *names]
    with_dovecot = "gximap" in names and "dovecot" in names
    with_pymap = "gximap" in names and "pymap" in names
    if with_dovecot:
        columns.append("gx/dovecot")
    if with_pymap:
        columns.append("gx/pymap")
    lines: list[list[str]] = []
    for row in table_rows(results):
        values = {name: row.extract(servers[name]) for name in names}
        if all(value is None for value in values.values()):
            continue
        line = [f"{row.label} {row.better}".rstrip()] + [format_number(values[name]) for name in names]
        if with_dovecot:
            line.append(_ratio(values["gximap"], values["dovecot"]) if row.better else "")
        if with_pymap:
            line.append(_ratio(values["gximap"], values["pymap"]) if row.better else "")
        lines.append(line)
    widths = [max(len(columns[i]), *(len(line[i]) for line in lines)) if lines else len(columns[i])
              for i in range(len(columns))]
    out = ["  ".join(columns[i].ljust(widths[i]) if i == 0 else columns[i].rjust(widths[i])
                     for i in range(len(columns)))]
    out.append("  ".join("-" * width for width in widths))
    for line in lines:
        out.append("  ".join(line[i].ljust(widths[i]) if i == 0 else line[i].rjust(widths[i])
                             for i in range(len(columns))))
    notes = []
    for name in names:
        server = servers[name]
        if server.get("status") != "ok":
            notes.append(f"{name}: {server.get('status')} — {server.get('detail', '')}".rstrip(" —"))
    if notes:
        out.append("")
        out.extend(notes)
    return "\n".join(out)


def format_header(results: Result) -> str:
    host = results.get("host", {})
    servers = results.get("servers", {})
    versions = ", ".join(f"{name} {servers[name].get('version', '?')}" for name in SERVER_ORDER
                         if name in servers)
    return (f"gximap benchmark {results.get('started', '')} ({'quick' if results.get('quick') else 'full'} run)\n"
            f"host: {host.get('cpus')} CPUs, {host.get('mem_gib')} GiB RAM, {host.get('kernel', '')}\n"
            f"{_idle_line(results)}"
            f"servers: {versions}\n"
            f"mixed load logs in with: {results.get('mixed_scheme', 'default')} password scheme\n"
            f"{_mixed_rounds_line(results)}"
            "↑ higher is better, ↓ lower is better; ratios are gximap ÷ other")


def _idle_line(results: Result) -> str:
    """How idle CPUs waited (bench.idlepoll); runs from before it was recorded have no line."""
    policy = results.get("host", {}).get("idle")
    if not policy:
        return ""
    setting = " (set for this run)" if results.get("guest_halt_poll_set") is not None else ""
    return f"idle CPUs: {idlepoll.describe(policy)}{setting}\n"


def _mixed_rounds_line(results: Result) -> str:
    """How the mixed load was run, with each server's ops/s per round when they alternated."""
    parts = []
    for name in SERVER_ORDER:
        for workload, figures in (results.get("servers", {}).get(name, {}).get("workloads") or {}).items():
            rounds = figures.get("rounds_ops_per_s") if isinstance(figures, dict) else None
            if workload.startswith("mixed") and rounds:
                parts.append(f"{name} {workload} " + "/".join(format_number(ops) for ops in rounds))
    if not parts:
        return ""
    return f"mixed load in rounds alternating between the servers, ops/s per round: {'; '.join(parts)}\n"


def write_json(results: Result, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = str(results.get("started", "run")).replace(":", "").replace("-", "")
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=False, default=str) + "\n")
    return path
