"""Sampling profiles of the gximap processes while a workload runs (py-spy, attached by PID, with
``--subprocesses`` so that the serving processes of imap_process_num are sampled, not the idle parent).

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``, one line per
distinct stack, frames as ``function (path:line)``). :func:`summarize_profile` turns that into the
top self-time functions (leaf frames) and the top inclusive functions of gximap/midb code.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME_RE = re.compile(r"^(?P<function>.*?) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
_OWN_CODE = ("gximap/", "midb/")


def py_spy_path() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


def ensure_py_spy() -> str:
    """py-spy from this virtualenv, installed with pip when missing (only asked for by --profile)."""
    found = py_spy_path()
    if found:
        return found
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True, timeout=600)
    found = py_spy_path()
    if not found:
        raise RuntimeError("py-spy is not available after pip install")
    return found


class Profiler:
    """``with Profiler(pid, directory, name):`` records two raw collapsed-stack files while the block
    runs: ``name.cpu.txt`` (only the thread holding the GIL: where Python spends CPU) and
    ``name.wall.txt`` (every thread py-spy considers active: also shows fsync and lock waits)."""

    def __init__(self, pid: int, directory: Path, name: str, *, rate: int = 97) -> None:
        self.pid = pid
        self.cpu_output = directory / f"{name}.cpu.txt"
        self.wall_output = directory / f"{name}.wall.txt"
        self.rate = rate
        self.procs: list[subprocess.Popen[bytes]] = []

    def _start(self, executable: str, output: Path, extra: list[str]) -> None:
        log = open(output.with_suffix(".log"), "wb")  # noqa: SIM115 - handed to the child
        try:
            self.procs.append(subprocess.Popen(
                [executable, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
                 "--nonblocking", "--subprocesses", "--output", str(output), *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))
        finally:
            log.close()

    def __enter__(self) -> Profiler:
        executable = ensure_py_spy()
        self.cpu_output.parent.mkdir(parents=True, exist_ok=True)
        self._start(executable, self.cpu_output, ["--gil"])
        self._start(executable, self.wall_output, [])
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs = []

    def summary(self, *, top: int = 12) -> dict[str, Any]:
        return {"cpu": summarize_profile(self.cpu_output, top=top),
                "wall": summarize_profile(self.wall_output, top=top, skip_idle=True),
                "files": [str(self.cpu_output), str(self.wall_output)]}


def _parse_frame(frame: str) -> tuple[str, str]:
    """(``path:function``, path) with the repository prefix and line number dropped."""
    found = _FRAME_RE.match(frame.strip())
    if not found:
        return frame.strip(), ""
    path = found.group("path")
    for marker in _OWN_CODE:
        index = path.rfind("/" + marker)
        if index >= 0:
            path = path[index + 1:]
            break
        if path.startswith(marker):
            break
    else:
        if "/lib/python" in path:
            path = path[path.find("/lib/python") + 1:]
            path = re.sub(r"^lib/python3\.\d+/(site-packages/)?", "", path)
    return f"{path}:{found.group('function')}", path


# Leaf frames that mean "this thread is waiting for work", not "busy" (py-spy cannot always tell a
# thread blocked in a C call from a running one): left out of the wall-clock view.
IDLE_LEAVES = frozenset({
    "threading.py:Condition.wait", "threading.py:Event.wait", "threading.py:Semaphore.acquire",
    "threading.py:Thread.join", "queue.py:Queue.get", "selectors.py:EpollSelector.select",
    "gximap/net/pool.py:Server._poll_loop",
})


def summarize_profile(raw: Path, *, top: int = 12, skip_idle: bool = False) -> dict[str, Any]:
    """Top self-time and inclusive (own code only) functions, as percentages of the samples counted
    (``skip_idle`` leaves out stacks whose leaf is in :data:`IDLE_LEAVES`)."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    try:
        lines = raw.read_text(errors="replace").splitlines()
    except OSError:
        return {"samples": 0, "self": [], "inclusive": []}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse_frame(frame) for frame in stack.split(";") if frame and not frame.startswith("process ")
                  and not frame.startswith("thread ")]
        if not frames or (skip_idle and frames[-1][0] in IDLE_LEAVES):
            continue
        total += count
        self_time[frames[-1][0]] += count
        seen: set[str] = set()
        for name, path in frames:
            if path.startswith(_OWN_CODE) and name not in seen:
                seen.add(name)
                inclusive[name] += count

    def ranked(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * count / total, 1)) for name, count in counter.most_common(top)]

    return {"samples": total, "self": ranked(self_time), "inclusive": ranked(inclusive)}
