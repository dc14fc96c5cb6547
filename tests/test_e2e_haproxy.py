"""Debian's real haproxy in front of the real gximap, configured from the shipped example
(etc/haproxy/haproxy.cfg) plus a send-proxy (v1) listener: log lines and the per-address login
limit see the original client address (the client binds distinct loopback addresses), IMAPS passes
through with the header first, and a direct untrusted peer that sends a PROXY header is refused.
Also haproxy terminating TLS itself, with send-proxy-v2-ssl telling gximap which clients used it
(and a CRC32C checksum on each header, which gximap verifies)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import GximapProcess, LineClient, free_port
from net_helpers import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed"),
]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "etc" / "haproxy" / "haproxy.cfg"
TIMEOUT = 10.0


class Client(LineClient):
    """An IMAP line client bound to a chosen loopback source address, optionally over TLS."""

    def __init__(self, port: int, source: str, tls: bool = False) -> None:
        super().__init__(port, source, timeout=TIMEOUT)
        if tls:
            self.starttls()

    def command(self, tag: str, text: str) -> bytes:  # type: ignore[override]
        """Send a command; return its tagged response line."""
        return super().command(tag, text)[-1]


def _wait_for(predicate, what: str, timeout: float = TIMEOUT) -> None:  # noqa: ANN001
    assert wait_until(predicate, timeout, interval=0.05), f"timed out waiting for {what}"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5, source_address=("127.0.0.99", 0)):
            return True
    except OSError:
        return False


def v2_header(source: str, dest: str, source_port: int, dest_port: int) -> bytes:
    """A PROXY protocol v2 header for a TCP over IPv4 connection (haproxy's proxy-protocol.txt)."""
    return (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + socket.inet_aton(source) + socket.inet_aton(dest)
            + source_port.to_bytes(2, "big") + dest_port.to_bytes(2, "big"))


def _greets_after_header(port: int) -> bool:
    """A trusted peer (127.0.0.1) must send a PROXY header before gximap says anything."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(v2_header("127.0.0.1", "127.0.0.1", 1, port))
            return sock.recv(4) == b"* OK"
    except OSError:
        return False


def start_behind_proxy(gximap: GximapProcess) -> GximapProcess:
    """GximapProcess.start for a server that trusts 127.0.0.1 as a proxy (its readiness probe
    connects from there without a header, which such a server rightly never greets)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    gximap.proc = subprocess.Popen([sys.executable, "-m", "gximap", "-c", str(gximap.config_path)],
                                   cwd=gximap.dir, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: gximap.proc.poll() is None and _greets_after_header(gximap.port),  # type: ignore[union-attr]
                  "gximap", timeout=20)
    except AssertionError:
        gximap.stop()
        raise AssertionError(f"gximap did not start:\n{gximap.output()}\n{gximap.log()}") from None
    return gximap


class HaproxyProcess:
    """haproxy run from a configuration text, until stop(); ``ports`` are its listeners."""

    def __init__(self, directory: Path, text: str, ports: tuple[int, ...]) -> None:
        self.config = directory / "haproxy.cfg"
        self.config.write_text(text)
        self.log = directory / "haproxy.log"
        self.ports = ports
        self.proc: subprocess.Popen | None = None

    def start(self) -> HaproxyProcess:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["haproxy", "-f", str(self.config), "-db"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: self.proc.poll() is None and all(  # type: ignore[union-attr]
                _listening(port) for port in self.ports), "haproxy")
        except AssertionError:
            self.stop()
            raise AssertionError(f"haproxy did not start:\n{self.log.read_text(errors='replace')}") from None
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Haproxy(HaproxyProcess):
    """The shipped example in front of ``gximap``, plus a send-proxy (v1) listener."""

    def __init__(self, directory: Path, gximap: GximapProcess) -> None:
        assert gximap.tls_port is not None
        self.v2_port, self.v1_port, self.tls_port = free_port(), free_port(), free_port()
        text = EXAMPLE.read_text()
        replacements = {
            "bind :143": f"bind 127.0.0.1:{self.v2_port}",
            "bind :993": f"bind 127.0.0.1:{self.tls_port}",
            "127.0.0.1:1143": f"127.0.0.1:{gximap.port}",
            "127.0.0.1:1993": f"127.0.0.1:{gximap.tls_port}",
        }
        for old, new in replacements.items():
            assert text.count(old) == 1, old  # the example still has the shape this test relies on
            text = text.replace(old, new)
        text += (f"\nfrontend imap_v1\n    bind 127.0.0.1:{self.v1_port}\n    default_backend gximap_v1\n"
                 f"\nbackend gximap_v1\n    server gximap 127.0.0.1:{gximap.port} send-proxy\n")
        super().__init__(directory, text, (self.v2_port, self.v1_port, self.tls_port))


def test_shipped_example_is_valid() -> None:
    check = subprocess.run(["haproxy", "-c", "-f", str(EXAMPLE)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    text = EXAMPLE.read_text()
    assert "send-proxy-v2" in text and "check-send-proxy" in text


@pytest.fixture
def proxied(tmp_path: Path):
    gximap = GximapProcess(tmp_path, tls=True, accounts={"alice": "secret", "bob": "secret"}, extra={
        "imap_accept_haproxy": "1",
        "imap_haproxy_trust": "127.0.0.1",
        "imap_auth_times": "10",
        "imap_auth_ip_times": "3",
    })
    start_behind_proxy(gximap)
    haproxy = Haproxy(tmp_path, gximap)
    try:
        haproxy.start()
        yield gximap, haproxy
    finally:
        haproxy.stop()
        gximap.stop()


def test_original_client_address_through_haproxy(proxied: tuple[GximapProcess, Haproxy]) -> None:
    gximap, haproxy = proxied
    # v2 header (send-proxy-v2) from 127.0.0.2, v1 header (send-proxy) from 127.0.0.3.
    for port, source, tag in ((haproxy.v2_port, "127.0.0.2", "v2"), (haproxy.v1_port, "127.0.0.3", "v1")):
        client = Client(port, source)
        assert client.readline().startswith(b"* OK")
        assert client.command(f"{tag}a", "LOGIN alice secret").startswith(f"{tag}a OK".encode())
        assert client.command(f"{tag}b", "LOGOUT").startswith(f"{tag}b OK".encode())
        client.close()
        _wait_for(lambda source=source, client=client: f"rhost=[{source}]:{client.port} user=alice LOGIN ok"
                  in gximap.log(), f"the {tag} login line")
    # Implicit TLS passes through: the header comes before the handshake.
    secure = Client(haproxy.tls_port, "127.0.0.4", tls=True)
    assert secure.readline().startswith(b"* OK")
    assert secure.command("t1", "LOGIN bob secret").startswith(b"t1 OK")
    secure.close()
    _wait_for(lambda: f"rhost=[127.0.0.4]:{secure.port} user=bob LOGIN ok" in gximap.log(), "the TLS login line")
    log = gximap.log()
    assert re.search(r"cmd conn=\S+ rhost=\[127\.0\.0\.2\]:\d+ user=alice OK: v2a LOGIN alice \*\*\*", log)
    assert "rhost=[127.0.0.1]" not in "\n".join(line for line in log.splitlines() if "user=" in line)


def test_address_throttling_applies_to_the_original_address(proxied: tuple[GximapProcess, Haproxy]) -> None:
    gximap, haproxy = proxied
    # A spray over user names from 127.0.0.5, alternating between the v1 and the v2 listener.
    for number, user in enumerate(("alice", "bob", "carol")):
        client = Client(haproxy.v1_port if number % 2 else haproxy.v2_port, "127.0.0.5")
        client.readline()
        assert client.command("s", f"LOGIN {user} guess{number}") == \
            b"s NO [AUTHENTICATIONFAILED] Authentication failed"
        client.close()
    blocked = Client(haproxy.v2_port, "127.0.0.5")
    blocked.readline()
    assert blocked.command("s", "LOGIN alice secret") == \
        b"s NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"
    blocked.close()
    # Every connection came from haproxy's 127.0.0.1, yet other clients are not affected.
    for port, source in ((haproxy.v2_port, "127.0.0.6"), (haproxy.v1_port, "127.0.0.7")):
        other = Client(port, source)
        other.readline()
        assert other.command("o", "LOGIN alice secret").startswith(b"o OK")
        other.close()
    _wait_for(lambda: "rhost=[127.0.0.7]" in gximap.log(), "the last login line")
    log = gximap.log()
    assert re.search(r"rhost=\[127\.0\.0\.5\]:\d+ address blocked for \d+s: too many failed logins", log)
    assert re.search(r"rhost=\[127\.0\.0\.5\]:\d+ user=alice LOGIN refused: address blocked", log)


def test_untrusted_direct_peer_with_a_proxy_header_is_refused(proxied: tuple[GximapProcess, Haproxy]) -> None:
    gximap, _haproxy = proxied
    # An untrusted peer (not 127.0.0.1) is served under its own address ...
    direct = Client(gximap.port, "127.0.0.8")
    assert direct.readline().startswith(b"* OK")
    assert direct.command("d1", "LOGIN bob secret").startswith(b"d1 OK")
    direct.close()
    # ... and refused when it pretends to be a proxy.
    spoofer = Client(gximap.port, "127.0.0.9")
    assert spoofer.readline().startswith(b"* OK")
    spoofer.send(b"PROXY TCP4 203.0.113.66 127.0.0.1 40000 143\r\nx LOGIN bob secret\r\n")
    assert spoofer.readline() == b""  # disconnected, the command never ran
    spoofer.close()
    v2_spoofer = Client(gximap.port, "127.0.0.9")
    assert v2_spoofer.readline().startswith(b"* OK")
    v2_spoofer.send(v2_header("203.0.113.66", "127.0.0.1", 40000, 143) + b"y LOGIN bob secret\r\n")
    assert v2_spoofer.readline() == b""
    v2_spoofer.close()
    _wait_for(lambda: "rhost=[127.0.0.8]" in gximap.log(), "the direct login line")
    # No wait for the spoofers: a command's log lines are written before its answer, so before
    # the disconnect each of them saw (and the log is written as each line comes).
    log = gximap.log()
    assert "203.0.113.66" not in "\n".join(line for line in log.splitlines() if "user=" in line)
    assert not re.search(r"rhost=\[127\.0\.0\.9\]:\d+ user=bob", log)


def test_v2_only_mode_refuses_v1_headers(tmp_path: Path) -> None:
    gximap = GximapProcess(tmp_path, tls=True, extra={
        "imap_accept_haproxy": "2", "imap_haproxy_trust": "127.0.0.1"})
    haproxy = Haproxy(tmp_path, gximap)
    try:
        start_behind_proxy(gximap)
        haproxy.start()
        good = Client(haproxy.v2_port, "127.0.0.2")
        assert good.readline().startswith(b"* OK")
        assert good.command("a", "LOGIN alice secret").startswith(b"a OK")
        good.close()
        refused = Client(haproxy.v1_port, "127.0.0.3")
        assert refused.readline() == b""  # gximap drops the v1 header; haproxy closes the client
        refused.close()
        _wait_for(lambda: "bad PROXY header" in gximap.log(), "the refusal in the log")
        assert "rhost=[127.0.0.3]" not in gximap.log()
    finally:
        haproxy.stop()
        gximap.stop()


def test_tls_terminated_by_haproxy_counts_as_tls(tmp_path: Path) -> None:
    """haproxy terminates the client's TLS and tells gximap with send-proxy-v2-ssl (the
    PP2_TYPE_SSL TLV): that client may log in although gximap requires TLS for passwords,
    while a client that reached haproxy in clear gets LOGINDISABLED and STARTTLS."""
    gximap = GximapProcess(tmp_path, tls=True, extra={
        "imap_accept_haproxy": "2",
        "imap_haproxy_trust": "127.0.0.1",
        "insecure_auth": "no",
    })
    pem = tmp_path / "haproxy.pem"
    pem.write_bytes(gximap.cert.read_bytes() + gximap.key.read_bytes())
    terminated, clear = free_port(), free_port()
    text = (
        "global\n    log stdout format raw local0\n"
        "defaults\n    mode tcp\n    log global\n    timeout connect 5s\n"
        "    timeout client 1m\n    timeout server 1m\n"
        f"frontend imaps_terminated\n    bind 127.0.0.1:{terminated} ssl crt {pem}\n    default_backend plain\n"
        f"frontend imap_clear\n    bind 127.0.0.1:{clear}\n    default_backend plain\n"
        # With a CRC32C of each header, which gximap verifies (a wrong sum would drop the client).
        f"backend plain\n    server gximap 127.0.0.1:{gximap.port} send-proxy-v2-ssl proxy-v2-options crc32c\n"
    )
    haproxy = HaproxyProcess(tmp_path, text, (terminated, clear))
    try:
        start_behind_proxy(gximap)
        haproxy.start()
        secure = Client(terminated, "127.0.0.2", tls=True)
        greeting = secure.readline()
        assert b"AUTH=PLAIN" in greeting and b"LOGINDISABLED" not in greeting and b"STARTTLS" not in greeting
        assert secure.command("a", "LOGIN alice secret").startswith(b"a OK")
        secure.close()
        plain = Client(clear, "127.0.0.3")
        greeting = plain.readline()
        assert b"LOGINDISABLED" in greeting and b"STARTTLS" in greeting
        assert plain.command("b", "LOGIN alice secret").startswith(b"b NO [PRIVACYREQUIRED]")
        plain.close()
        _wait_for(lambda: re.search(r"rhost=\[127\.0\.0\.2\]:\d+ user=alice LOGIN ok", gximap.log()),
                  "the login line of the client on TLS")
    finally:
        haproxy.stop()
        gximap.stop()
