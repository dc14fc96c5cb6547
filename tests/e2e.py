"""Start the real ``gximap`` process for end-to-end tests (loopback only, bounded waits).

``GximapProcess`` writes a config into a temporary directory, creates accounts directly in the
midb store (before the server opens it), starts ``python -m gximap -c FILE`` and waits until the
listeners accept connections. ``stop()`` sends SIGTERM and waits; anything left is killed.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "data"
_HASH_CACHE: dict[str, str] = {}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def password_hash(password: str) -> str:
    """scrypt is slow on purpose: hash each test password once per test run."""
    if password not in _HASH_CACHE:
        from midb.passwords import hash_password

        _HASH_CACHE[password] = hash_password(password)
    return _HASH_CACHE[password]


def wait_for_port(port: int, deadline: float, proc: subprocess.Popen | None = None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gximap exited early with status {proc.returncode}")
        # The listeners are bound before the privilege drop and the store opening, so a
        # connection is accepted early; the greeting says the server is really serving.
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(4) == b"* OK":
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return sorted(found)


class GximapProcess:
    def __init__(self, directory: Path, *, accounts: dict[str, str] | None = None, tls: bool = True,
                 extra: dict[str, str] | None = None) -> None:
        self.dir = Path(directory)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.cert = self.dir / "tls" / "cert.pem"
        self.key = self.dir / "tls" / "key.pem"
        self.midb = self.dir / "midb"
        self.log_path = self.dir / "gximap.log"
        self.config_path = self.dir / "imap.cfg"
        self.accounts = accounts if accounts is not None else {"alice": "secret"}
        self.proc: subprocess.Popen | None = None
        settings = {
            "imap_listen": f"127.0.0.1:{self.port}",
            "midb_path": str(self.midb),
            "midb_fsync": "no",
            "data_file_path": str(DATA_DIR),
            "imap_log_file": str(self.log_path),
            "imap_log_level": "6",
            "imap_cmd_debug": "2",
            "running_identity": "",
            "imap_thread_init_num": "2",
            "context_num": "50",
            "insecure_auth": "yes",
            # Failed logins answered at once: the suite fails many, and a test of the delay sets it.
            "imap_auth_failure_delay": "0",
        }
        if tls:
            from gximap.net.certs import generate_self_signed

            generate_self_signed(str(self.cert), str(self.key), ["localhost", "127.0.0.1"])
            settings.update({
                "imap_listen_tls": f"127.0.0.1:{self.tls_port}",
                "imap_support_tls": "yes",
                "imap_certificate_path": str(self.cert),
                "imap_private_key_path": str(self.key),
            })
        settings.update(extra or {})
        self.settings = settings
        self.write_config()
        self._create_accounts()

    def write_config(self, **changes: str) -> None:
        self.settings.update(changes)
        text = "".join(f"{key} = {value}\n" for key, value in self.settings.items())
        self.config_path.write_text(text)

    def _create_accounts(self) -> None:
        from midb.store import Store

        store = Store(str(self.midb), fsync=False, data_path=[str(DATA_DIR)])
        try:
            for name, password in self.accounts.items():
                if store.get_account(name) is None:
                    store.create_account(name, password_hash=password_hash(password))
        finally:
            store.close()

    def start(self, timeout: float = 60.0, *, journal: Path | None = None,
              wrap: Callable[[list[str]], list[str]] | None = None) -> GximapProcess:
        """Start the server. With ``journal``, its standard output and error go to that file,
        named in JOURNAL_STREAM as systemd names the journal's stream (what journald would read).
        ``wrap`` turns the command line into the one run (e.g. inside a mount namespace).
        ``timeout`` is only a bound: a start takes 0.8 s of CPU, 2-3 s at a load average of 16 on
        two cores and over 20 s at 25 (the interpreter and its imports starved)."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("JOURNAL_STREAM", None)
        output: Any = subprocess.PIPE
        if journal is not None:
            output = journal.open("ab")
            status = os.fstat(output.fileno())
            env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
        try:
            command = [sys.executable, "-m", "gximap", "-c", str(self.config_path)]
            self.proc = subprocess.Popen(
                wrap(command) if wrap is not None else command,
                cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT,
            )
        finally:
            if journal is not None:
                output.close()
        deadline = time.monotonic() + timeout
        try:
            wait_for_port(self.port, deadline, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"gximap did not start:\n{self.output()}\n{self.log()}") from None
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout and not proc.stdout.closed:
            self._output = proc.stdout.read().decode(errors="replace")
            proc.stdout.close()
        return proc.returncode

    def output(self) -> str:
        return getattr(self, "_output", "")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def insecure_client_tls() -> ssl.SSLContext:
    """The test servers use self-signed certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class LineClient:
    """A blocking IMAP line client for end-to-end tests, optionally bound to a chosen loopback
    source address (the whole 127/8 is loopback) so that per-address behaviour can be observed."""

    def __init__(self, port: int, source: str = "127.0.0.1", *, timeout: float = 10.0) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                                            source_address=(source, 0))
        self.port = self.sock.getsockname()[1]
        self.buffer = b""

    def starttls(self) -> None:
        assert not self.buffer, f"plaintext left over before the handshake: {self.buffer!r}"
        self.sock = insecure_client_tls().wrap_socket(self.sock, server_hostname="localhost")

    def readline(self) -> bytes:
        """One line without CRLF; b"" once the server has closed the connection."""
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                chunk = b""
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until_tagged(self, tag: bytes, limit: int = 1000) -> list[bytes]:
        lines = []
        for _ in range(limit):
            line = self.readline()
            lines.append(line)
            if not line or line.startswith(tag + b" "):
                return lines
        raise AssertionError(f"no tagged response for {tag!r}: {lines!r}")

    def command(self, tag: str, text: str) -> list[bytes]:
        """Send a command; return every line up to and including its tagged response."""
        self.send(f"{tag} {text}\r\n".encode())
        return self.until_tagged(tag.encode())

    def close(self) -> None:
        self.sock.close()


class AuthSocketClient:
    """The client side of Dovecot's auth protocol, as Postfix speaks it, over TCP (``address`` a
    loopback port) or a UNIX socket (``address`` its path)."""

    def __init__(self, address: int | str) -> None:
        if isinstance(address, int):
            self.sock = socket.create_connection(("127.0.0.1", address), timeout=10.0)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10.0)
            try:
                self.sock.connect(address)
            except OSError:
                self.sock.close()
                raise
        self.reader = self.sock.makefile("rb")
        self.sock.sendall(b"VERSION\t1\t2\nCPID\t4242\n")
        self.handshake: list[bytes] = []
        for _ in range(50):
            line = self.reader.readline().rstrip(b"\n")
            self.handshake.append(line)
            if line == b"DONE" or not line:
                break
        assert self.handshake[0].startswith(b"VERSION\t1\t") and self.handshake[-1] == b"DONE", self.handshake
        assert b"MECH\tPLAIN" in b"\n".join(self.handshake)

    def send(self, line: str) -> list[str]:
        """One request line (without its LF); the reply's fields."""
        self.sock.sendall(line.encode() + b"\n")
        return self.reader.readline().decode().rstrip("\n").split("\t")

    def plain(self, request_id: int, authcid: str, password: str, rip: str = "127.0.0.1") -> list[str]:
        response = base64.b64encode(b"\0" + authcid.encode() + b"\0" + password.encode()).decode()
        return self.send(f"AUTH\t{request_id}\tPLAIN\tservice=smtp\tsecured\trip={rip}\tresp={response}")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
