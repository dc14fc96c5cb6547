"""bench.idlepoll: how idle CPUs wait, recorded with the runs, and the guest halt polling a run
may set (on a stand-in sysfs tree: the tests never change the machine's own setting)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import __main__ as bench_main  # noqa: E402
from bench import idlepoll, report, roundtrip  # noqa: E402


def fake_sysfs(root: Path, *, driver: str | None = "haltpoll", poll: str | None = "0") -> Path:
    if driver is not None:
        cpuidle = root / "devices/system/cpu/cpuidle"
        cpuidle.mkdir(parents=True)
        (cpuidle / "current_driver").write_text(driver + "\n")
        (cpuidle / "current_governor_ro").write_text(driver + "\n")
    if poll is not None:
        parameters = root / "module/haltpoll/parameters"
        parameters.mkdir(parents=True)
        (parameters / "guest_halt_poll_ns").write_text(poll + "\n")
    return root


def halt_poll_file(root: Path) -> Path:
    return root / "module/haltpoll/parameters/guest_halt_poll_ns"


def test_idle_policy_reads_driver_governor_and_halt_poll(tmp_path: Path) -> None:
    policy = idlepoll.idle_policy(fake_sysfs(tmp_path, poll="200000"))
    assert policy == {"cpuidle_driver": "haltpoll", "cpuidle_governor": "haltpoll", "guest_halt_poll_ns": 200000}
    assert idlepoll.describe(policy) == "cpuidle haltpoll (haltpoll governor), guest halt polling up to 200,000 ns"


def test_idle_policy_of_a_machine_without_haltpoll(tmp_path: Path) -> None:
    policy = idlepoll.idle_policy(fake_sysfs(tmp_path, driver="intel_idle", poll=None))
    assert policy["guest_halt_poll_ns"] is None
    assert idlepoll.describe(policy) == "cpuidle intel_idle (intel_idle governor)"
    assert idlepoll.describe(idlepoll.idle_policy(tmp_path / "nothing")) == "cpuidle none"
    assert idlepoll.describe(idlepoll.idle_policy(fake_sysfs(tmp_path / "off"))).endswith(
        "guest halt polling off")


def test_guest_halt_polling_is_set_for_the_block_and_restored(tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path)
    assert idlepoll.setting_refused(1000, root) is None
    with idlepoll.guest_halt_polling(150000, root):
        assert idlepoll.idle_policy(root)["guest_halt_poll_ns"] == 150000
    assert halt_poll_file(root).read_text() == "0\n"
    with pytest.raises(RuntimeError, match="boom"), idlepoll.guest_halt_polling(5000, root):
        raise RuntimeError("boom")
    assert halt_poll_file(root).read_text() == "0\n"


def test_guest_halt_polling_refused_without_haltpoll_or_negative(tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path, poll=None)
    assert "no guest halt polling" in (idlepoll.setting_refused(1000, root) or "")
    assert idlepoll.setting_refused(-1, fake_sysfs(tmp_path / "settable")) == "cannot be negative"
    with pytest.raises(idlepoll.HaltPollUnavailable, match="no guest halt polling"):
        with idlepoll.guest_halt_polling(1000, root):
            pass
    with pytest.raises(ValueError, match="negative"):
        with idlepoll.guest_halt_polling(-1, fake_sysfs(tmp_path / "other")):
            pass


def test_an_unwritable_setting_asks_for_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_sysfs(tmp_path)
    monkeypatch.setattr(idlepoll.os, "access", lambda path, mode: False)  # root may write anything
    assert "run as root" in (idlepoll.setting_refused(1000, root) or "")


@pytest.mark.parametrize("options", [["--guest-halt-poll", "-5"], ["--guest-halt-poll", "1000"]])
def test_probes_refuse_halt_polling_they_cannot_set(options: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idlepoll, "setting_refused", lambda nanoseconds, root=None: "cannot write it: run as root")
    with pytest.raises(SystemExit):
        roundtrip.main(["--servers", "gximap", *options])
    args = bench_main.build_parser().parse_args(["--servers", "gximap", "--no-install", *options])
    with pytest.raises(SystemExit, match="--guest-halt-poll"):
        bench_main.run(args)


def test_table_header_says_how_idle_cpus_waited() -> None:
    policy = {"cpuidle_driver": "haltpoll", "cpuidle_governor": "haltpoll", "guest_halt_poll_ns": 200000}
    header = report.format_header({"host": {"cpus": 2, "idle": policy}, "guest_halt_poll_set": 200000, "servers": {}})
    assert ("idle CPUs: cpuidle haltpoll (haltpoll governor), guest halt polling up to 200,000 ns "
            "(set for this run)\n") in header
    header = report.format_header({"host": {"cpus": 2, "idle": dict(policy, guest_halt_poll_ns=0)}, "servers": {}})
    assert "guest halt polling off\n" in header and "set for this run" not in header
    assert "idle CPUs" not in report.format_header({"host": {"cpus": 2}, "servers": {}})  # older runs


@pytest.fixture
def default_sigterm() -> Iterator[None]:
    """SIGTERM as a fresh process has it (a test runner's worker may have its own handler)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("default_sigterm")
def test_sigterm_during_the_block_still_restores_the_setting(tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path)
    with pytest.raises(SystemExit) as ended:
        with idlepoll.guest_halt_polling(150000, root):
            assert halt_poll_file(root).read_text() == "150000\n"
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert ended.value.code == 128 + signal.SIGTERM
    assert halt_poll_file(root).read_text() == "0\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back as it was
