"""Sampling profiles of the gximap process while a workload runs (py-spy, attached by PID).

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
    """``with Profiler(pid, out):`` records while the block runs; the output is a raw collapsed file."""

    def __init__(self, pid: int, output: Path, *, rate: int = 97) -> None:
        self.pid = pid
        self.output = output
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        executable = ensure_py_spy()
        self.output.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.output.with_suffix(".log"), "wb")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [executable, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
                 "--nonblocking", "--output", str(self.output)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.proc = None


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


def summarize_profile(raw: Path, *, top: int = 12) -> dict[str, Any]:
    """Top self-time and inclusive (own code only) functions, as percentages of all samples."""
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
        total += count
        frames = [_parse_frame(frame) for frame in stack.split(";") if frame and not frame.startswith("process ")
                  and not frame.startswith("thread ")]
        if not frames:
            continue
        self_time[frames[-1][0]] += count
        seen: set[str] = set()
        for name, path in frames:
            if path.startswith(_OWN_CODE) and name not in seen:
                seen.add(name)
                inclusive[name] += count

    def ranked(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * count / total, 1)) for name, count in counter.most_common(top)]

    return {"samples": total, "self": ranked(self_time), "inclusive": ranked(inclusive)}
