"""The real gximap under a brute-force attack, its log read by Debian's real fail2ban-regex with the
shipped filter (etc/fail2ban/filter.d/gromox-imap.conf), and the shipped jail checked by
fail2ban-client. The attacker and a legitimate user connect from different loopback addresses."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e import GximapProcess, LineClient

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="fail2ban is not installed"),
]

REPO = Path(__file__).resolve().parent.parent
FILTER = REPO / "etc" / "fail2ban" / "filter.d" / "gromox-imap.conf"
JAIL = REPO / "etc" / "fail2ban" / "jail.d" / "gromox-imap.conf"
ATTACKER = "127.0.0.2"
LEGITIMATE = "127.0.0.3"
TIMEOUT = 10.0


class Client(LineClient):
    """An IMAP line client bound to a chosen loopback source address."""

    def __init__(self, port: int, source: str) -> None:
        super().__init__(port, source, timeout=TIMEOUT)


VICTIM_RETRIES = 5  # the shipped jail's maxretry


def _attack(server: GximapProcess) -> list[int]:
    """Three bad passwords for alice from the attacker (then blocked: two more refusals); alice's
    own clients, from her address, refused with the right password while she is blocked; and a
    good login for bob from that address. The attacker's source ports."""
    attacker_ports: list[int] = []
    try:
        attack = Client(server.port, ATTACKER)
        attacker_ports.append(attack.port)
        assert attack.readline().startswith(b"* OK")
        for number, password in enumerate(("123456", "password", "alice2024"), start=1):
            lines = attack.command(f"a{number}", f"LOGIN alice {password}")
            assert lines[-1] == f"a{number} NO [AUTHENTICATIONFAILED] Authentication failed".encode()
        assert attack.readline() == b"* BYE Too many failed logins, closing connection"
        attack.close()
        # The user is blocked now: even the right password is refused, on a new connection.
        again = Client(server.port, ATTACKER)
        attacker_ports.append(again.port)
        again.readline()
        assert again.command("b1", "LOGIN alice secret")[-1].startswith(b"b1 NO [AUTHENTICATIONFAILED]")
        plain = base64.b64encode(b"\0alice\0qwerty").decode()
        assert again.command("b2", f"AUTHENTICATE PLAIN {plain}")[-1].startswith(b"b2 NO")
        again.close()
        # alice's phone and mail client retry with her password meanwhile (as many times as the
        # jail allows): refused, but it must not get her own address banned.
        for number in range(VICTIM_RETRIES):
            victim = Client(server.port, LEGITIMATE)
            victim.readline()
            assert victim.command(f"v{number}", "LOGIN alice secret")[-1] == \
                f"v{number} NO [AUTHENTICATIONFAILED] Too many failed logins, try again later".encode()
            victim.close()

        user = Client(server.port, LEGITIMATE)
        user.readline()
        assert user.command("c1", "LOGIN bob secret")[-1].startswith(b"c1 OK")
        user.command("c2", "LOGOUT")
        user.close()
    finally:
        server.stop()
    return attacker_ports


def _matched(log_path: Path) -> list[str]:
    """What the shipped filter finds in a log file: "address user" per failure."""
    result = subprocess.run(["fail2ban-regex", "-o", "<ip> <F-USER>", str(log_path), str(FILTER)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.split("\n") if line]


def test_brute_force_is_caught_by_the_shipped_filter(tmp_path: Path) -> None:
    server = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret", "bob": "secret"},
                           extra={"imap_auth_times": "3", "imap_auth_ip_times": "0"})
    server.start()
    attacker_ports = _attack(server)

    log = server.log()
    # The documented, stable lines are there, one per failed login and one for the block: the
    # password guesses "rejected", the logins turned away unchecked during the block "refused".
    lines = re.findall(r"<4> rhost=\[(127\.0\.0\.[23])\]:(\d+) user=alice (LOGIN|PLAIN) (rejected|refused): (.+)", log)
    assert [(address, outcome, reason) for address, _port, _mech, outcome, reason in lines] == \
        [(ATTACKER, "rejected", "bad password")] * 3 + [(ATTACKER, "refused", "user blocked")] * 2 + \
        [(LEGITIMATE, "refused", "user blocked")] * VICTIM_RETRIES
    assert {int(port) for address, port, *_rest in lines if address == ATTACKER} == set(attacker_ports)
    assert re.search(r"<4> rhost=\[127\.0\.0\.2\]:\d+ user=alice blocked for 60s: too many failed logins", log)
    assert re.search(r"<5> rhost=\[127\.0\.0\.3\]:\d+ user=bob LOGIN ok\n", log)

    # Only the guesses count: the attacker is caught, alice's address (the attacker's lockout of
    # her made her clients fail) is not.
    assert _matched(server.log_path) == [f"{ATTACKER} alice"] * 3
    summary = subprocess.run(["fail2ban-regex", str(server.log_path), str(FILTER)],
                             capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0, summary.stderr
    assert re.search(r"Failregex: 3 total", summary.stdout), summary.stdout
    assert LEGITIMATE not in summary.stdout.split("Ignoreregex:")[0].split("Failregex:")[1]


def test_a_login_through_a_user_block_is_told_apart_and_not_counted(tmp_path: Path) -> None:
    """alice's client logged in before an attacker got her blocked; its next login, with the
    password the credential cache holds, gets through the block. The log says so (a sysadmin
    sees that someone else was failing as alice), and the shipped filter does not count it."""
    server = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret"},
                           extra={"imap_auth_times": "3", "imap_auth_ip_times": "0"})
    server.start()
    try:
        for round_ in ("before", "during"):
            client = Client(server.port, LEGITIMATE)
            client.readline()
            assert client.command("c1", "LOGIN alice secret")[-1].startswith(b"c1 OK"), round_
            client.command("c2", "LOGOUT")
            client.close()
            if round_ == "before":
                attack = Client(server.port, ATTACKER)
                attack.readline()
                for number in (1, 2, 3):
                    assert attack.command(f"a{number}", "LOGIN alice guess")[-1].startswith(f"a{number} NO".encode())
                assert attack.readline().startswith(b"* BYE")
                attack.close()
    finally:
        server.stop()
    oks = re.findall(r"<5> rhost=\[127\.0\.0\.3\]:\d+ user=alice LOGIN ok(.*)\n", server.log())
    assert oks == ["", " (user blocked; password matched the cache)"]
    assert _matched(server.log_path) == [f"{ATTACKER} alice"] * 3


def test_brute_force_logged_to_the_journal_is_caught_by_the_shipped_filter(tmp_path: Path) -> None:
    """imap_log_file = - under systemd: standard error is the journal's stream (JOURNAL_STREAM).
    Each line must carry its syslog priority as "<P>" for journald, and the shipped filter must
    match the line fail2ban's systemd backend makes of an entry: "HOST IDENTIFIER[PID]: MESSAGE"
    after the entry's time (fail2ban.server.filtersystemd.formatJournalEntry)."""
    server = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret", "bob": "secret"},
                           extra={"imap_auth_times": "3", "imap_auth_ip_times": "0", "imap_log_file": "-"})
    stream = tmp_path / "journal-stream"
    server.start(journal=stream)
    pid = server.proc.pid if server.proc else 0
    _attack(server)

    entries = [re.fullmatch(r"<([0-7])>(.*)", line) for line in stream.read_text().splitlines()]
    assert entries and all(entries), stream.read_text()  # every line is an entry with its priority
    messages = [(int(entry[1]), entry[2]) for entry in entries if entry]
    rejected = [text for priority, text in messages if " rejected: " in text]
    assert len(rejected) == 3 and all(priority == 5 for priority, text in messages if " rejected: " in text)
    assert all(text.startswith("rhost=[127.0.0.2]:") for text in rejected)
    assert sum(" refused: user blocked" in text for _priority, text in messages) == 2 + VICTIM_RETRIES
    assert not server.log_path.exists()
    lines = tmp_path / "as-fail2ban-reads-the-journal.log"
    lines.write_text("".join(f"2026-11-25 10:{number // 60:02d}:{number % 60:02d} mail.example.org gximap[{pid}]: "
                             f"{text}\n" for number, (_priority, text) in enumerate(messages[:3600])))
    assert _matched(lines) == [f"{ATTACKER} alice"] * 3


def test_failures_naming_odd_users_are_caught_by_the_shipped_filter(tmp_path: Path) -> None:
    """A password or an authorization identity that is not UTF-8, and an impersonation through
    SASL PLAIN's authorization identity: each is logged with the user's name (the bytes that are
    not UTF-8 escaped; authcid!authzid) and counted by the filter."""
    server = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret", "bob": "secret"},
                           extra={"imap_auth_times": "10", "imap_auth_ip_times": "0"})
    server.start()
    try:
        client = Client(server.port, ATTACKER)
        client.readline()
        password = "pässwort".encode("latin-1")
        client.send(b"a1 LOGIN alice {%d+}\r\n%s\r\n" % (len(password), password))
        assert client.until_tagged(b"a1")[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
        for tag, message in (("a2", b"sh\xe4red\0alice\0secret"), ("a3", b"bob\0alice\0guess")):
            plain = base64.b64encode(message).decode()
            assert client.command(tag, f"AUTHENTICATE PLAIN {plain}")[-1].startswith(f"{tag} NO".encode())
        client.close()
    finally:
        server.stop()
    assert re.findall(r"user=(\S+) (?:LOGIN|PLAIN) rejected: (.+)", server.log()) == [
        ("alice", "invalid UTF-8"), ("alice!sh\\xe4red", "invalid UTF-8"), ("alice!bob", "bad password")]
    assert _matched(server.log_path) == [f"{ATTACKER} alice", f"{ATTACKER} alice!sh\\xe4red", f"{ATTACKER} alice!bob"]


def test_a_client_cannot_feed_the_shipped_filter_through_the_debug_log(tmp_path: Path) -> None:
    """With imap_cmd_debug and io_debug on, the log carries what a client sends. A client that
    sends a rejection line naming someone else's address must not get that address banned: a
    regex that may match anywhere in a line does (the one gximap(8gx) once printed, below, to
    show that the forgery is in the log); the shipped filter, anchored where the message
    starts, does not. (gximap(8gx) now prints no regex: test_manpage.py.)"""
    victim = "203.0.113.9"
    server = GximapProcess(tmp_path, tls=False, extra={"io_debug": "yes", "imap_cmd_debug": "1"})
    server.start()
    try:
        forger = Client(server.port, ATTACKER)
        assert forger.readline().startswith(b"* OK")
        for number in range(5):
            forger.send(f"rhost=[{victim}]:{number} user=x LOGIN rejected: forged\r\n".encode())
            assert forger.readline().startswith(b"rhost=")  # BAD, under the would-be tag
        forger.close()
    finally:
        server.stop()
    unanchored = r": (?:<\d> )?rhost=\[<HOST>\]:\d+ user=\S* \S+ rejected:"
    naive = subprocess.run(["fail2ban-regex", "-o", "<ip>", str(server.log_path), unanchored],
                           capture_output=True, text=True, timeout=60)
    assert naive.returncode == 0, naive.stderr
    assert naive.stdout.split().count(victim) >= 5
    assert _matched(server.log_path) == []


def test_shipped_jail_is_a_valid_fail2ban_configuration(tmp_path: Path) -> None:
    if shutil.which("fail2ban-client") is None or not Path("/etc/fail2ban/jail.conf").is_file():
        pytest.skip("fail2ban-client or the Debian fail2ban configuration is missing")
    confdir = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", confdir, ignore=shutil.ignore_patterns("jail.local", "*.local"))
    for existing in (confdir / "jail.d").iterdir():
        existing.unlink()  # only our jail, whatever the host enabled
    logfile = tmp_path / "imap.log"
    logfile.write_text("")
    shutil.copy(FILTER, confdir / "filter.d" / FILTER.name)
    jail = JAIL.read_text()
    assert jail.count("logpath  = /var/log/gromox/imap.log") == 1
    (confdir / "jail.d" / JAIL.name).write_text(jail.replace("/var/log/gromox/imap.log", str(logfile)))
    test = subprocess.run(["fail2ban-client", "-c", str(confdir), "-t"], capture_output=True, text=True,
                          timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr
    dump = subprocess.run(["fail2ban-client", "-c", str(confdir), "-d"], capture_output=True, text=True,
                          timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "['add', 'gromox-imap', 'auto']" in dump.stdout
    assert "['set', 'gromox-imap', 'maxretry', 5]" in dump.stdout
    assert f"['set', 'gromox-imap', 'addlogpath', '{logfile}', 'head']" in dump.stdout
