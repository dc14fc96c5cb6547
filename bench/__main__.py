"""Benchmarks side by side: gximap, Dovecot and pymap under the same workloads.

    python -m bench [--quick] [--servers gximap,dovecot,pymap] [--workloads mixed,large,idle,delivery,login]
                    [--profile] [--no-install] [...]

Installs Dovecot (Debian packages, as root) and pymap (PyPI, own virtualenv under var/bench) when
missing, then for one server at a time: prepares its directory and accounts, fills the mailboxes,
starts it on 127.0.0.1, runs the workloads, stops it. The mixed load is the exception when
several servers run: all of them are up, and its time is split into rounds that alternate
between them (--rounds, default 3), so that the machine's drift over a run (its disk above all)
weighs on each server alike. Prints a table with every figure and the
ratios gximap/Dovecot and gximap/pymap, and writes everything to bench/results/<timestamp>.json.
No server outlives the run (try/finally, atexit, SIGTERM handler, process groups).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench import idlepoll, procstat, profiling, report, servers, workloads
from bench.servers import Account, BenchServer
from bench.workloads import Scale

Result = dict[str, Any]
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(servers.SERVER_CLASSES),
                        help="comma-separated servers to run (default: %(default)s)")
    parser.add_argument("--workloads", default=",".join(workloads.WORKLOADS),
                        help="comma-separated workloads (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="scaled down: 10 s runs, 10,000-message mailbox, 1,000 IDLE sessions")
    parser.add_argument("--clients", help="mixed-load client counts, e.g. 10,100")
    parser.add_argument("--duration", type=float, help="seconds per mixed-load run")
    parser.add_argument("--rounds", type=int,
                        help="split each mixed-load run into this many rounds that alternate between "
                             "the servers, all of them up meanwhile (default 3; 1 = each server in one "
                             "go, as with --quick or --profile)")
    parser.add_argument("--large", type=int, help="messages in the large mailbox")
    parser.add_argument("--idle", type=int, help="IDLE sessions")
    parser.add_argument("--login-duration", type=float, help="seconds per login run")
    parser.add_argument("--lmtp-duration", type=float, help="seconds of LMTP delivery")
    parser.add_argument("--seed", type=int, help="messages per account INBOX before the mixed load")
    parser.add_argument("--loadgen-procs", type=int, help="load generator processes for the mixed load")
    parser.add_argument("--step-timeout", type=float, help="time limit of one large-mailbox step, seconds")
    parser.add_argument("--status-sessions", type=int,
                        help="new sessions whose first STATUS of the large mailbox gives a median (default 7)")
    parser.add_argument("--status-starts", type=int,
                        help="server restarts whose first STATUS of the large mailbox gives a median (default 5)")
    parser.add_argument("--idle-ramp-timeout", type=float, help="time limit for opening the IDLE sessions, seconds")
    parser.add_argument("--mixed-scheme", choices=servers.SCHEMES, default=servers.SCHEME_DEFAULT,
                        help="password scheme during the mixed load: each server's default (as shipped), "
                             "or SHA512-CRYPT everywhere to keep password hashing out of the IMAP figures")
    parser.add_argument("--profile", action="store_true",
                        help="record py-spy profiles of gximap per workload into var/bench/profiles "
                             "(installs py-spy into .venv when missing)")
    parser.add_argument("--guest-halt-poll", type=int, metavar="NS",
                        help="for this run, let idle vCPUs poll up to NS nanoseconds before they halt "
                             "(Linux's haltpoll driver, as root; restored afterwards); recorded with "
                             "the results")
    parser.add_argument("--gximap-option", action="append", default=[], metavar="NAME=VALUE",
                        help="set a gximap directive for this run, after the bench's own settings "
                             "(repeatable), e.g. imap_process_num=4")
    parser.add_argument("--no-install", action="store_true",
                        help="do not install Dovecot/pymap; servers that are missing are skipped")
    parser.add_argument("--workdir", type=lambda text: Path(text).resolve(), default=servers.DEFAULT_STATE / "run",
                        help="where server directories are created (default: %(default)s)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="directory for the JSON results")
    parser.add_argument("--keep", action="store_true", help="keep the server directories afterwards")
    parser.add_argument("--table", type=Path, metavar="JSON",
                        help="print the table of an earlier run's results file and exit")
    return parser


def scale_from_args(args: argparse.Namespace) -> Scale:
    scale = workloads.QUICK if args.quick else workloads.DEFAULT
    changes: dict[str, Any] = {}
    if args.clients:
        changes["mixed_clients"] = tuple(int(x) for x in _csv(args.clients))
    for option, name in (("duration", "mixed_duration"), ("rounds", "mixed_rounds"),
                         ("large", "large_messages"), ("idle", "idle_sessions"),
                         ("login_duration", "login_duration"), ("lmtp_duration", "lmtp_duration"),
                         ("seed", "seed_messages"), ("loadgen_procs", "loadgen_procs"),
                         ("step_timeout", "large_step_timeout"), ("idle_ramp_timeout", "idle_ramp_timeout"),
                         ("status_sessions", "status_sessions"), ("status_starts", "status_starts")):
        value = getattr(args, option)
        if value is not None:
            changes[name] = value
    if changes.get("mixed_rounds", 1) < 1:
        raise SystemExit("--rounds must be at least 1")
    if changes.get("status_sessions", 1) < 1 or changes.get("status_starts", 1) < 1:
        raise SystemExit("--status-sessions and --status-starts must be at least 1")
    return workloads.scaled(scale, **changes)


def host_info() -> Result:
    return {
        "cpus": os.cpu_count(),
        "mem_gib": round(procstat.mem_total_kib() / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


class Harness:
    """Runs the selected workloads against one server after another."""

    def __init__(self, scale: Scale, selected: list[str], *, workdir: Path, profile_dir: Path | None,
                 mixed_scheme: str = servers.SCHEME_DEFAULT, log: Callable[[str], None] = print) -> None:
        self.scale = scale
        self.mixed_scheme = mixed_scheme
        self.selected = selected
        self.workdir = workdir
        self.profile_dir = profile_dir
        self.log = log
        count = max((*scale.mixed_clients, scale.idle_mailboxes, scale.login_clients, 1))
        self.accounts = servers.make_accounts(count)
        self.big = Account(workloads.LARGE_ACCOUNT, "pw-bigbox-bench")

    def _max_sessions(self) -> int:
        wanted = max((*self.scale.mixed_clients, self.scale.login_clients, 10)) * 2
        if "idle" in self.selected:
            wanted = max(wanted, self.scale.idle_sessions + 100)
        return wanted

    @contextmanager
    def _profiled(self, server: BenchServer, name: str, record: Result) -> Iterator[None]:
        if self.profile_dir is None or server.name != "gximap":
            yield
            return
        try:
            profiler = profiling.Profiler(server.pid, self.profile_dir, name)
            profiler.__enter__()
        except Exception as exc:  # noqa: BLE001 - a missing profiler must not stop the benchmark
            record.setdefault("profiles", {})[name] = {"error": str(exc)}
            yield
            return
        try:
            yield
        finally:
            profiler.__exit__(None, None, None)
            record.setdefault("profiles", {})[name] = profiler.summary()

    def _measure(self, server: BenchServer, record: Result, name: str, action: Callable[[], Result]) -> None:
        self.log(f"  {name} ...")
        started = time.monotonic()
        try:
            with self._profiled(server, name, record):
                result = action()
        except Exception as exc:  # noqa: BLE001 - one failed workload must not lose the others
            result = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}
        crash = self._crashed(server, name)
        if crash is not None:
            result = {**crash, "partial": result}
        result["elapsed_s"] = round(time.monotonic() - started, 2)
        record["workloads"][name] = result
        self.log(f"  {name}: {_one_line(name, result)}")

    @staticmethod
    def _crashed(server: BenchServer, name: str) -> Result | None:
        """When the server died during workload ``name``: the error to record. A crashed server
        invalidates the figures; it is restarted so that the other workloads still run."""
        status = server.exit_status()
        if status is None:
            return None
        crash = {"status": "error", "detail": f"{server.name} exited with status {status} during {name}",
                 "log_tail": server.tail_logs(2000)}
        server.stop()
        server.start()
        return crash

    def _run_mixed(self, server: BenchServer, record: Result) -> None:
        record["mixed_scheme"] = server.scheme_label(self.mixed_scheme)
        for clients in self.scale.mixed_clients:
            self._measure(server, record, f"mixed-{clients}",
                          functools.partial(workloads.run_mixed, server, self.accounts, clients, self.scale))

    def _create(self, name: str) -> tuple[BenchServer, Result]:
        cls = servers.SERVER_CLASSES[name]
        record: Result = {"status": "ok", "version": cls.version(), "workloads": {}, "fill": {}}
        server = cls(self.workdir / name, [*self.accounts, self.big], max_sessions=self._max_sessions())
        return server, record

    def _open(self, server: BenchServer, record: Result) -> None:
        """Prepare the accounts, fill the mailboxes, start the server, prime the sessions."""
        name, scale, selected = server.name, self.scale, self.selected
        self.log(f"{name}: preparing {len(self.accounts) + 1} accounts")
        server.prepare(servers.SCHEME_DEFAULT)
        if any(w in selected for w in ("mixed", "idle")) and scale.seed_messages:
            started = time.perf_counter()
            for account in self.accounts:
                server.fill(account.name, "INBOX", scale.seed_messages, first=1)
            record["fill"]["seed"] = {"messages_per_account": scale.seed_messages,
                                      "accounts": len(self.accounts),
                                      "seconds": time.perf_counter() - started}
        if "large" in selected:
            self.log(f"{name}: filling {scale.large_messages} messages")
            fill = server.fill(self.big.name, workloads.LARGE_FOLDER, scale.large_messages)
            record["fill"]["large"] = {"messages": fill.messages, "seconds": fill.seconds, "method": fill.method}
        # The fills write with fsync off; what they left for the kernel to write back must not
        # land in a measured command (the first durable commit of midb flushes every dirty page
        # of its file, and write-back of either server's files competes with the disk's syncs).
        record["fill"]["sync_s"] = _settle_disk()
        server.start()
        self.log(f"{name}: listening on 127.0.0.1:{server.imap_port}"
                 + (f", LMTP {server.lmtp_port}" if server.lmtp_port else ""))
        record["fill"]["after_fill_s"] = server.after_fill()
        record["fill"]["sync_s"] += _settle_disk()
        # Every account, the large mailbox's too: its first measured command must not be charged
        # for first-access work (for gximap the full password check, whose scrypt evicts the CPU
        # caches: 260-400 µs of cold caches on the next command; bench/HISTORY.md, 39th pass).
        primed = [*self.accounts, self.big]
        record["prime"] = workloads.prime(server, primed, scale)
        workloads.check_primed(record["prime"], len(primed))

    def _failed(self, name: str, record: Result, exc: Exception) -> None:
        record["status"] = "error"
        record["detail"] = f"{type(exc).__name__}: {exc}"
        self.log(f"{name}: {record['detail']}")

    def run_server(self, name: str) -> Result:
        """Every selected workload against one server, the mixed load in one go."""
        server, record = self._create(name)
        try:
            self._open(server, record)
            self._workloads(server, record, default_mixed=True)
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next server
            self._failed(name, record, exc)
        finally:
            server.stop()
        return record

    def run_interleaved(self, names: list[str]) -> dict[str, Result]:
        """All servers up at once for the mixed load, run in rounds that alternate between them
        (scale.mixed_rounds, each a share of mixed_duration); then each server alone, as in
        run_server, for its other workloads."""
        entries = [(name, *self._create(name)) for name in names]
        live: list[tuple[str, BenchServer, Result]] = []
        try:
            for name, server, record in entries:
                try:
                    self._open(server, record)
                    live.append((name, server, record))
                except Exception as exc:  # noqa: BLE001 - report it and go on with the others
                    self._failed(name, record, exc)
                    server.stop()
            self._mixed_rounds(live)
            for _, server, _ in live:
                server.stop()
            for name, server, record in live:
                try:
                    server.start()
                    self._workloads(server, record, default_mixed=False)
                except Exception as exc:  # noqa: BLE001 - report it and go on with the next server
                    self._failed(name, record, exc)
                finally:
                    server.stop()
        finally:
            for _, server, _ in entries:
                server.stop()
        return {name: record for name, _, record in entries}

    def _mixed_rounds(self, live: list[tuple[str, BenchServer, Result]]) -> None:
        scale = self.scale
        share = scale.mixed_duration / scale.mixed_rounds
        for _, server, record in live:
            record["mixed_scheme"] = server.scheme_label(self.mixed_scheme)
        for clients in scale.mixed_clients:
            name = f"mixed-{clients}"
            rounds = {server.name: workloads.MixedRounds(server, self.accounts, clients, scale)
                      for _, server, _ in live}
            failed: dict[str, Result] = {}
            started = time.monotonic()
            for number in range(1, scale.mixed_rounds + 1):
                for server_name, server, _ in live:
                    if server_name in failed:
                        continue
                    try:
                        ops = rounds[server_name].run_round(share)
                    except Exception as exc:  # noqa: BLE001 - one failed round must not lose the others
                        failed[server_name] = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}
                        continue
                    crash = self._crashed(server, name)
                    if crash is not None:
                        failed[server_name] = crash
                        continue
                    self.log(f"  {server_name} {name} round {number}/{scale.mixed_rounds}: "
                             f"{report.format_number(ops)} ops/s")
            for server_name, _, record in live:
                result = failed.get(server_name) or rounds[server_name].result()
                result["elapsed_s"] = round(time.monotonic() - started, 2)
                result["interleaved_with"] = [other for other, _, _ in live if other != server_name]
                record["workloads"][name] = result
                self.log(f"  {server_name} {name}: {_one_line(name, result)}")

    def _workloads(self, server: BenchServer, record: Result, *, default_mixed: bool) -> None:
        scale, selected = self.scale, self.selected
        if "mixed" in selected and self.mixed_scheme == servers.SCHEME_DEFAULT and default_mixed:
            self._run_mixed(server, record)
        if "large" in selected:
            self._measure(server, record, "large",
                          lambda: workloads.run_large(server, self.big, scale, primed=[*self.accounts, self.big]))
        if "delivery" in selected:
            self._measure(server, record, "delivery",
                          lambda: workloads.run_delivery(server, self.accounts, scale))
        if "login" in selected:
            self._measure(server, record, "login-default",
                          lambda: workloads.run_logins(server, self.accounts, scale, servers.SCHEME_DEFAULT))
            self._logins_without_cache(server, record)
        matched_mixed = "mixed" in selected and self.mixed_scheme == servers.SCHEME_MATCHED
        if "login" in selected or "idle" in selected or matched_mixed:
            # Restart with one scheme everybody shares: the like-for-like login figure, and
            # cheap logins for thousands of IDLE sessions.
            server.stop()
            server.set_scheme(servers.SCHEME_MATCHED)
            server.start()
            if matched_mixed:
                self._run_mixed(server, record)
            if "login" in selected:
                self._measure(server, record, f"login-{servers.SCHEME_MATCHED}",
                              lambda: workloads.run_logins(server, self.accounts, scale,
                                                           servers.SCHEME_MATCHED))
            if "idle" in selected:
                self._measure(server, record, "idle",
                              lambda: workloads.run_idle(server, self.accounts, scale, log=self.log))

    def _logins_without_cache(self, server: servers.BenchServer, record: Result) -> None:
        """The default-scheme login figure again with the server's credential cache off, so that
        the table shows the cost of the password hash itself next to the cached figure. A server
        whose default has no cache (Dovecot's auth_cache_size = 0) is not run twice."""
        name = "login-default-uncached"
        if not server.has_auth_cache:
            record["workloads"][name] = dict(record["workloads"].get("login-default", {}),
                                             note="no credential cache by default: same run as login-default")
            return
        server.stop()
        server.auth_cache = False
        try:
            server.start()
            self._measure(server, record, name,
                          lambda: workloads.run_logins(server, self.accounts, self.scale, servers.SCHEME_DEFAULT))
        finally:
            server.stop()
            server.auth_cache = True
            server.start()


def _settle_disk() -> float:
    """Write back every dirty page (os.sync) so that the measurements start from a quiet disk;
    returns the seconds it took."""
    started = time.perf_counter()
    os.sync()
    return time.perf_counter() - started


def _one_line(name: str, result: Result) -> str:
    status = result.get("status")
    if status != "ok":
        return f"{status} {result.get('detail', '')}".strip()
    if name.startswith("mixed"):
        return (f"{result['total_ops_per_s']:.0f} ops/s, {result['errors']} errors, load generator CPU "
                f"{result['loadgen_cpu_pct']:.0f}%, server CPU {result['server_cpu_pct']:.0f}%")
    if name.startswith("login"):
        return f"{result['logins_per_s']:.1f} logins/s ({result['scheme_label']})"
    if name == "delivery":
        return f"{result['deliveries_per_s']:.1f} deliveries/s"
    if name == "idle":
        return (f"{result.get('sessions')} sessions, {report.format_number(result.get('rss_per_session_kib'))} "
                f"KiB RSS each, wake-up {report.format_number(_wake(result))} ms")
    if name == "large":
        return ", ".join(f"{step} {report.format_number(v.get('seconds', 0) * 1000)} ms"
                         if v.get("status") == "ok" else f"{step} {v.get('status')}"
                         for step, v in result.get("steps", {}).items())
    return "done"


def _wake(result: Result) -> Any:
    wakeup = result.get("wakeup") or {}
    return wakeup.get("max_seen_ms")


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> Result:
    scale = scale_from_args(args)
    names = _csv(args.servers)
    unknown = [name for name in names if name not in servers.SERVER_CLASSES]
    if unknown:
        raise SystemExit(f"unknown servers: {', '.join(unknown)}")
    selected = _csv(args.workloads)
    unknown = [name for name in selected if name not in workloads.WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workloads: {', '.join(unknown)}")
    if args.guest_halt_poll is not None:
        reason = idlepoll.setting_refused(args.guest_halt_poll)
        if reason is not None:
            raise SystemExit(f"--guest-halt-poll: {reason}")
    started = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    results: Result = {"started": started.isoformat().replace("+00:00", "Z"), "quick": bool(args.quick),
                       "host": host_info(), "scale": scale.to_dict(), "workloads": selected, "servers": {}}
    servers.raise_own_fd_limit()
    unavailable = servers.ensure_installed(names, install=not args.no_install, log=log)
    profile_dir = None
    if args.profile:
        profile_dir = servers.DEFAULT_STATE / "profiles" / results["started"].replace(":", "")
    results["mixed_scheme"] = args.mixed_scheme
    for option in args.gximap_option:
        name, sep, value = option.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--gximap-option wants NAME=VALUE, not {option!r}")
        servers.GXIMAP_OVERRIDES[name.strip()] = value.strip()
    if servers.GXIMAP_OVERRIDES:
        results["gximap_options"] = dict(servers.GXIMAP_OVERRIDES)
    harness = Harness(scale, selected, workdir=args.workdir, profile_dir=profile_dir,
                      mixed_scheme=args.mixed_scheme, log=log)
    available = [name for name in names if name not in unavailable]
    # Rounds alternating between the servers need two servers and the mixed load as the servers
    # ship (the matched-scheme variant restarts them); a profile follows one server at a time.
    interleave = (len(available) > 1 and scale.mixed_rounds > 1 and "mixed" in selected
                  and args.mixed_scheme == servers.SCHEME_DEFAULT and profile_dir is None)
    halt_poll = ExitStack()
    try:
        if args.guest_halt_poll is not None:
            halt_poll.enter_context(idlepoll.guest_halt_polling(args.guest_halt_poll))
            results["guest_halt_poll_set"] = args.guest_halt_poll
        results["host"]["idle"] = idlepoll.idle_policy()
        for name in names:
            if name in unavailable:
                results["servers"][name] = {"status": "skipped", "detail": unavailable[name],
                                            "version": "-", "workloads": {}}
                log(f"{name}: skipped ({unavailable[name]})")
        if interleave:
            results["servers"].update(harness.run_interleaved(available))
        else:
            for name in available:
                results["servers"][name] = harness.run_server(name)
        results["servers"] = {name: results["servers"][name] for name in names}
    finally:
        servers.stop_all()
        halt_poll.close()
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    results["finished"] = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")
    return results


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.table is not None:
        earlier = json.loads(args.table.read_text())
        print(report.format_header(earlier))
        print()
        print(report.format_table(earlier))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    results = run(args)
    path = report.write_json(results, args.results)
    print()
    print(report.format_header(results))
    print()
    print(report.format_table(results))
    profiles = [(server, name, summary) for server, record in results["servers"].items()
                for name, summary in record.get("profiles", {}).items()]
    if profiles:
        print("\nprofiles of gximap (py-spy, self time as % of samples; cpu = thread holding the GIL,"
              " wall = busy threads incl. fsync/lock waits):")
        for _server, name, summary in profiles:
            if "error" in summary:
                print(f"  {name}: {summary['error']}")
                continue
            for view in ("cpu", "wall"):
                top = ", ".join(f"{func} {pct}%" for func, pct in summary[view].get("self", [])[:5])
                print(f"  {name} [{view}]: {top or 'no samples'}")
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
