"""What the side-by-side probes (bench.noop, bench.bodies) share: the --servers and --dir options,
a server started for one measurement and always stopped and removed after it, and the loop that
measures each server that is installed."""

from __future__ import annotations

import argparse
import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import servers

Figures = dict[str, float]


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


def measure_each(names: list[str], measure: Callable[[str], Figures],
                 line: Callable[[str, Figures], str]) -> dict[str, Figures]:
    """Measure each installed server in turn, printing ``line`` of its figures; a server that is
    not installed is named as not measured."""
    results: dict[str, Figures] = {}
    for name in names:
        missing = servers.SERVER_CLASSES[name].missing()
        if missing:
            print(f"{name}: not measured ({missing})")
            continue
        results[name] = measure(name)
        print(line(name, results[name]))
    return results
