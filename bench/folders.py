"""What listing folders costs in an account with many folders: LIST and LSUB, side by side.

    .venv/bin/python -m bench.folders [--servers gximap,dovecot] [--parents 10] [--children 20]
                                      [--repeats 200] [--dir var/bench/folders]

One client logs in, creates --parents folders ``Projects<p>`` with --children subfolders
``Projects<p><delimiter>Sub<c>`` each (the delimiter is the server's, from ``LIST "" ""``) and
subscribes them all. It then sends each listing command --repeats times, one at a time, after 10
unmeasured runs: everything, the top level, LSUB, one name (what many clients ask before SELECT),
one folder's children (what a client asks when a folder is expanded), the subscribed folders
(LIST-EXTENDED) and everything with the message counts (LIST-STATUS, RFC 5819). The probe prints
the median and 90th percentile round trip of each command, the server's CPU microseconds per
command and the number of folders listed, then the ratios gximap/Dovecot.

Why: clients list folders at start-up and on every sync (Thunderbird lists all and the
subscriptions, K-9 lists at each folder refresh, mbsync lists both sides at each run), so an
account with a few hundred folders pays for LIST as often as for any mailbox command.

Servers are started on 127.0.0.1 with the bench's own configuration (bench.servers), one at a
time, and stopped before the next; the run is bounded by --repeats per command and a socket
timeout per answer.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bench import probes, procstat, servers
from bench.client import ImapError, quote
from bench.loadgen import percentile

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "var" / "bench" / "folders"
WARM_UP_RUNS = 10
MAX_FOLDERS = 2000
# /proc counts CPU time in clock ticks: the CPU per command is known to one tick over --repeats.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# `* LIST (flags) "d" ...`: the delimiter as a quoted string (a backslash comes escaped) or NIL.
_DELIMITER = re.compile(rb'^\* LIST \([^)]*\) (?:"((?:\\.|[^"\\])*)"|NIL)', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Listing:
    """One measured command: ``key`` names its figures, ``needs`` the capability it depends on
    (skipped without it), ``projects`` how many ``Projects`` folders its answer must list."""
    key: str
    text: str
    needs: str | None
    projects: int


def listings(delimiter: str, parents: int, children: int) -> list[Listing]:
    """The measured commands for a server whose hierarchy delimiter is ``delimiter``."""
    parent = parents // 2
    # Sub05 when there are that many children; the last one otherwise (a smaller test account).
    child = min(5, children - 1)
    everything = parents * (children + 1)
    return [
        Listing("all", 'LIST "" "*"', None, everything),
        Listing("top", 'LIST "" "%"', None, parents),
        Listing("lsub", 'LSUB "" "*"', None, everything),
        Listing("one", f'LIST "" "Projects{parent}{delimiter}Sub{child:02d}"', None, 1),
        Listing("children", f'LIST "" "Projects{parent}{delimiter}%"', None, children),
        Listing("subscribed", 'LIST (SUBSCRIBED) "" "*"', "LIST-EXTENDED", everything),
        Listing("status", 'LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))', "LIST-STATUS", everything),
    ]


def _delimiter(reader: probes.LineClient) -> str:
    """The hierarchy delimiter from ``LIST "" ""``; a flat namespace (NIL) cannot hold the tree."""
    answer: list[bytes] = []
    reader.command(b'LIST "" ""', answer)
    for line in answer:
        if match := _DELIMITER.match(line):
            if match.group(1) is None:
                raise ImapError("the server has no hierarchy delimiter (NIL)")
            return re.sub(rb"\\(.)", rb"\1", match.group(1)).decode("utf-8")
    raise ImapError(f'LIST "" "" answered no LIST line: {answer[:3]!r}')


def _capabilities(reader: probes.LineClient) -> set[str]:
    """The capabilities after login (a server may announce more than before it)."""
    answer: list[bytes] = []
    reader.command(b"CAPABILITY", answer)
    return {word.upper() for line in answer if line.upper().startswith(b"* CAPABILITY ")
            for word in line.decode("ascii", "replace").split()[2:]}


def _create_folders(reader: probes.LineClient, delimiter: str, parents: int, children: int) -> None:
    """Create and subscribe ``Projects<p>`` and its children, one command at a time."""
    for parent in range(parents):
        name = f"Projects{parent}"
        try:
            reader.command(b"CREATE " + quote(name))
        except ImapError as error:
            # Already there is fine: some servers make a parent when they make its first child.
            if "ALREADYEXISTS" not in str(error).upper():
                raise
        reader.command(b"SUBSCRIBE " + quote(name))
        for child in range(children):
            child_name = f"{name}{delimiter}Sub{child:02d}"
            reader.command(b"CREATE " + quote(child_name))
            reader.command(b"SUBSCRIBE " + quote(child_name))


def _listed(answer: list[bytes]) -> tuple[int, int]:
    """The LIST/LSUB lines of an answer, and those naming a Projects folder (the two servers'
    own folders differ, the Projects tree does not)."""
    lines = [line for line in answer if line[:7].upper() in (b"* LIST ", b"* LSUB ")]
    return len(lines), sum(1 for line in lines if b"Projects" in line)


def _measure_listing(reader: probes.LineClient, server_pid: int, text: bytes, repeats: int) -> dict[str, float]:
    """Round trips of ``repeats`` sequential sends of ``text`` and the server's CPU over them."""
    for _ in range(WARM_UP_RUNS):
        reader.command(text)
    times: list[float] = []
    before = procstat.sample_tree(server_pid, with_pss=False)
    for _ in range(repeats):
        started = time.perf_counter()
        reader.command(text)
        times.append(time.perf_counter() - started)
    after = procstat.sample_tree(server_pid, with_pss=False)
    # Counted on one more answer, outside the timed runs.
    answer: list[bytes] = []
    reader.command(text, answer)
    lines, projects = _listed(answer)
    times.sort()
    return {"median_us": 1e6 * percentile(times, 0.5), "p90_us": 1e6 * percentile(times, 0.9),
            "cpu_us": 1e6 * (after.cpu_seconds - before.cpu_seconds) / repeats,
            "lines": float(lines), "projects": float(projects)}


def measure(name: str, directory: Path, parents: int, children: int, repeats: int) -> dict[str, float]:
    """Per command (``<key>.median_us``, ``.p90_us``, ``.cpu_us``, ``.lines``, ``.projects``) for one
    server; ``delimiter`` is the code point of its hierarchy delimiter and ``<key>.skipped`` is 1
    for a command whose capability the server lacks."""
    accounts = servers.make_accounts(1, prefix="fold")
    account = accounts[0]
    with probes.started_server(name, directory, accounts, max_sessions=16) as server:
        reader = probes.LineClient(server.imap_port)
        try:
            reader.command(b"LOGIN %s %s" % (quote(account.name), quote(account.password)))
            delimiter = _delimiter(reader)
            capabilities = _capabilities(reader)
            _create_folders(reader, delimiter, parents, children)
            figures: dict[str, float] = {"delimiter": float(ord(delimiter))}
            for listing in listings(delimiter, parents, children):
                if listing.needs is not None and listing.needs not in capabilities:
                    figures[f"{listing.key}.skipped"] = 1.0
                    continue
                measured = _measure_listing(reader, server.pid, listing.text.encode("utf-8"), repeats)
                figures.update({f"{listing.key}.{field}": value for field, value in measured.items()})
            reader.command(b"LOGOUT")
        finally:
            reader.close()
    return figures


def _report(name: str, figures: dict[str, float], parents: int, children: int, repeats: int) -> str:
    """One line per command; a warning under a command that did not list the Projects folders
    it should have."""
    lines = [f"{name}: {parents} x {children} folders under Projects<p>, {repeats} round trips per command "
             f"(server CPU in steps of {1e6 / CLOCK_TICKS / repeats:.0f} us per command)"]
    for listing in listings(chr(int(figures["delimiter"])), parents, children):
        if f"{listing.key}.skipped" in figures:
            lines.append(f"  {listing.text:48s} skipped: no {listing.needs} in CAPABILITY")
            continue
        row = {field: figures[f"{listing.key}.{field}"] for field in ("median_us", "p90_us", "cpu_us", "lines", "projects")}
        lines.append(f"  {listing.text:48s} median {row['median_us']:8.0f} us  p90 {row['p90_us']:8.0f} us  "
                     f"CPU {row['cpu_us']:8.0f} us/command  {row['lines']:5.0f} listed")
        if row["projects"] != listing.projects:
            lines.append(f"  WARNING: {row['projects']:.0f} Projects folders listed, {listing.projects} expected")
    return "\n".join(lines)


def _ratio(gximap: float, dovecot: float) -> str:
    """``gximap / dovecot``; a dash when Dovecot's figure is zero (CPU below one clock tick)."""
    return f"{gximap / dovecot:6.2f}" if dovecot > 0 else "     -"


def _ratios(gximap: dict[str, float], dovecot: dict[str, float], parents: int, children: int) -> list[str]:
    """gximap/Dovecot per command measured on both, and a warning where they listed different
    numbers of Projects folders."""
    lines = ["gximap/Dovecot (the command as sent to gximap):"]
    for listing in listings(chr(int(gximap["delimiter"])), parents, children):
        if f"{listing.key}.median_us" not in gximap or f"{listing.key}.median_us" not in dovecot:
            lines.append(f"  {listing.text:48s} not measured on both")
            continue
        ratio = {field: _ratio(gximap[f"{listing.key}.{field}"], dovecot[f"{listing.key}.{field}"])
                 for field in ("median_us", "cpu_us")}
        lines.append(f"  {listing.text:48s} median {ratio['median_us']}  CPU per command {ratio['cpu_us']}")
        if gximap[f"{listing.key}.projects"] != dovecot[f"{listing.key}.projects"]:
            lines.append(f"  WARNING: gximap listed {gximap[f'{listing.key}.projects']:.0f} Projects folders, "
                         f"Dovecot {dovecot[f'{listing.key}.projects']:.0f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.folders", description=__doc__.split("\n")[0])
    probes.add_server_options(parser, DEFAULT_DIR)
    parser.add_argument("--parents", type=int, default=10, help="top-level Projects folders")
    parser.add_argument("--children", type=int, default=20, help="subfolders of each")
    parser.add_argument("--repeats", type=int, default=200, help="measured round trips per command")
    args = parser.parse_args(argv)
    names = probes.server_names(parser, args)
    if args.parents < 1 or args.children < 1 or args.repeats < 1:
        parser.error("--parents, --children and --repeats must be positive")
    if args.parents * args.children > MAX_FOLDERS:
        parser.error(f"--parents times --children must be at most {MAX_FOLDERS}")
    results = probes.measure_each(
        names, lambda name: measure(name, args.dir / name, args.parents, args.children, args.repeats),
        lambda name, figures: _report(name, figures, args.parents, args.children, args.repeats))
    if "gximap" in results and "dovecot" in results:
        print("\n".join(_ratios(results["gximap"], results["dovecot"], args.parents, args.children)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
