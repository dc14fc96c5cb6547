"""systemd integration: the unit files, socket activation (LISTEN_FDS) and readiness (NOTIFY_SOCKET).

The units are checked with ``systemd-analyze verify`` and ``security`` as `make install` lays them
out (ExecStart and Documentation= resolvable). The daemon tests start the real gximap: handed
listening sockets the way systemd hands them (fd 3 onward, LISTEN_PID, LISTEN_FDNAMES from the
.socket units), the IMAP ones and, separately, the LMTP and auth ones of the MTA socket units;
and with NOTIFY_SOCKET pointing at a datagram socket of the test.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import GximapProcess, free_port

REPO = Path(__file__).resolve().parent.parent
UNIT_DIR = REPO / "systemd"
UNITS = ("gximap.service", "gximap.socket", "gximap-imaps.socket", "gximap-lmtp.socket",
         "gximap-auth.socket")
# The MTA sockets for Postfix: in its queue directory, where its chrooted lmtp(8) and smtpd(8)
# reach them as private/gximap-lmtp and private/gximap-auth (etc/postfix/main.cf.gximap).
MTA_SOCKET_UNITS = {
    "gximap-lmtp.socket": ("lmtp", "/var/spool/postfix/private/gximap-lmtp"),
    "gximap-auth.socket": ("auth", "/var/spool/postfix/private/gximap-auth"),
}
SERVICE = UNIT_DIR / "gximap.service"
# systemd-analyze security rates exposure 0.0 (locked down) to 10.0; this unit rates 1.6.
MAX_EXPOSURE_TENTHS = 20
TIMEOUT = 20.0


def unit_settings(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as section -> [(key, value)], keeping repeated keys in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, equals, value = line.partition("=")
        assert equals, f"{path.name}: {line!r} is not key=value"
        current.append((key.strip(), value.strip()))
    return sections


def values(path: Path, section: str, key: str) -> list[str]:
    return [value for name, value in unit_settings(path).get(section, []) if name == key]


# ----------------------------------------------------------------------------------------------------
# unit files
# ----------------------------------------------------------------------------------------------------


def test_service_settings() -> None:
    def one(key: str) -> str:
        found = values(SERVICE, "Service", key)
        assert len(found) == 1, (key, found)
        return found[0]

    assert one("Type") == "notify"
    assert one("ExecStart") == "/usr/sbin/gximap"
    # the files are checked before the SIGHUP: a broken one fails `systemctl reload`
    assert values(SERVICE, "Service", "ExecReload") == ["/usr/sbin/gximap --check", "/bin/kill -HUP $MAINPID"]
    assert one("Restart") == "on-failure"
    assert one("RestartPreventExitStatus") == "2"  # gximap's exit status for configuration errors
    for key, expected in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
                          ("ProtectHome", "yes"), ("PrivateDevices", "yes"), ("User", "gromox")):
        assert one(key) == expected, key
    assert set(one("ReadWritePaths").split()) >= {"/var/lib/gromox", "/run/gromox"}
    assert one("RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert one("CapabilityBoundingSet") == one("AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert one("StateDirectory") == "gromox" and one("RuntimeDirectory") == "gromox"
    assert values(SERVICE, "Install", "WantedBy") == ["multi-user.target"]


def test_socket_units_name_their_descriptors_for_the_daemon() -> None:
    listen = {}
    for unit in ("gximap.socket", "gximap-imaps.socket"):
        path = UNIT_DIR / unit
        assert values(path, "Socket", "Service") == ["gximap.service"]
        assert values(path, "Install", "WantedBy") == ["sockets.target"]
        (name,) = values(path, "Socket", "FileDescriptorName")
        listen[name] = values(path, "Socket", "ListenStream")
    # One name per socket unit (systemd gives a unit's name to all its sockets), hence two units.
    assert listen == {"imap": ["143"], "imaps": ["993"]}


def test_mta_socket_units_give_postfix_its_sockets() -> None:
    from gximap.mta import MTA_SOCKET_NAMES

    assert set(UNITS) == {path.name for path in UNIT_DIR.iterdir()}  # every shipped unit is verified
    for unit, (name, path) in MTA_SOCKET_UNITS.items():
        socket_unit = UNIT_DIR / unit
        assert values(socket_unit, "Socket", "Service") == ["gximap.service"], unit
        assert values(socket_unit, "Install", "WantedBy") == ["sockets.target"], unit
        # The name routes the descriptor to gximap.mta instead of the IMAP listeners.
        assert values(socket_unit, "Socket", "FileDescriptorName") == [name], unit
        assert name in MTA_SOCKET_NAMES
        assert values(socket_unit, "Socket", "ListenStream") == [path], unit
        # gximap runs as gromox and can neither create nor chown a socket in Postfix's private/
        # directory: systemd does both. 0600 postfix:postfix, as Dovecot documents these sockets.
        assert values(socket_unit, "Socket", "SocketUser") == ["postfix"], unit
        assert values(socket_unit, "Socket", "SocketGroup") == ["postfix"], unit
        assert values(socket_unit, "Socket", "SocketMode") == ["0600"], unit
    main_cf = (REPO / "etc" / "postfix" / "main.cf.gximap").read_text()
    assert "\nvirtual_transport = lmtp:unix:private/gximap-lmtp\n" in main_cf
    assert "\nsmtpd_sasl_path = private/gximap-auth\n" in main_cf
    # The passed sockets are AF_UNIX ones, which the sandbox must let gximap use.
    assert "AF_UNIX" in values(SERVICE, "Service", "RestrictAddressFamilies")[0].split()


def systemd_analyze_or_skip(tmp_path: Path) -> str:
    """The systemd-analyze binary; skips (saying why) only when it cannot work in this environment."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (make sysdeps installs the systemd package)")
    probe = tmp_path / "probe.service"
    probe.write_text("[Unit]\nDescription=probe\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n")
    result = subprocess.run([tool, "verify", str(probe)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.skip(f"systemd-analyze cannot verify even a trivial unit here: {result.stderr.strip()}")
    return tool


@pytest.fixture(scope="module")
def installed_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make install` into a scratch PREFIX (no DESTDIR): ExecStart and the man pages then exist."""
    from test_packaging import copy_source, make_install

    work = tmp_path_factory.mktemp("prefix")
    source = copy_source(work / "src")
    prefix = work / "usr"
    make_install(source, None, str(prefix), sysconfdir=str(work / "etc"))
    return prefix


def test_units_pass_systemd_analyze_verify(installed_prefix: Path, tmp_path: Path) -> None:
    tool = systemd_analyze_or_skip(tmp_path)
    unit_dir = installed_prefix / "lib" / "systemd" / "system"
    service = (unit_dir / "gximap.service").read_text()
    assert f"\nExecStart={installed_prefix}/sbin/gximap\n" in service
    assert f"\nExecReload={installed_prefix}/sbin/gximap --check\n" in service
    # Documentation=man:... is checked by running man(1): point it at the installed pages.
    env = dict(os.environ, MANPATH=str(installed_prefix / "share" / "man"))
    result = subprocess.run([tool, "verify", *(str(unit_dir / unit) for unit in UNITS)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_service_exposure_stays_low(installed_prefix: Path, tmp_path: Path) -> None:
    tool = systemd_analyze_or_skip(tmp_path)
    service = installed_prefix / "lib" / "systemd" / "system" / "gximap.service"
    result = subprocess.run([tool, "security", "--offline=yes", f"--threshold={MAX_EXPOSURE_TENTHS}",
                             "--no-pager", str(service)], capture_output=True, text=True, timeout=60)
    if "--offline" in result.stderr and "unrecognized option" in result.stderr:
        pytest.skip(f"this systemd-analyze cannot rate unit files offline: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


# ----------------------------------------------------------------------------------------------------
# the daemon under systemd's protocols
# ----------------------------------------------------------------------------------------------------

# Puts the inherited listening sockets at fd 3, 4, ... and execs gximap in the same process, so
# that LISTEN_PID (its own pid) stays valid, as systemd does it.
LAUNCHER = """\
import fcntl, os, sys
sources = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in sources]
for fd in sources:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(high))
os.environ["LISTEN_FDNAMES"] = sys.argv[2]
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notification socket."""
    path = str(tmp_path / "notify")
    short_dir = None
    if len(path.encode()) > 100:  # sun_path holds 108 bytes
        short_dir = tempfile.mkdtemp(prefix="gxn")
        path = os.path.join(short_dir, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


def wait_for_notification(sock: socket.socket, wanted: bytes, proc: subprocess.Popen | None,
                          timeout: float = TIMEOUT) -> list[bytes]:
    """Collect notifications until one contains ``wanted``; returns all received."""
    received: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(0.2)
        try:
            message = sock.recv(4096)
        except TimeoutError:
            if proc is not None and proc.poll() is not None and wanted != b"STOPPING=1":
                raise AssertionError(f"gximap exited with {proc.returncode} before {wanted!r}") from None
            continue
        received.append(message)
        if wanted in message.split(b"\n"):
            return received
    raise AssertionError(f"no {wanted!r} within {timeout}s; got {received!r}")


def read_tagged(sock: socket.socket, tag: bytes) -> list[bytes]:
    """Response lines up to and including the one tagged ``tag``."""
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        lines = data.split(b"\r\n")
        for index, line in enumerate(lines[:-1]):
            if line.startswith(tag + b" "):
                return lines[:index + 1]
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the {tag!r} response: {data!r}"
        data += chunk
    raise AssertionError(f"no {tag!r} response: {data!r}")


def read_greeting(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        assert chunk, "connection closed before the greeting"
        data += chunk
    return data


def login_session(sock: socket.socket) -> list[bytes]:
    """Greeting, CAPABILITY, LOGIN, LOGOUT; returns the CAPABILITY response lines."""
    sock.settimeout(TIMEOUT)
    assert read_greeting(sock).startswith(b"* OK")
    sock.sendall(b"c1 CAPABILITY\r\n")
    capabilities = read_tagged(sock, b"c1")
    assert capabilities[-1].startswith(b"c1 OK")
    sock.sendall(b"c2 LOGIN alice secret\r\n")
    assert read_tagged(sock, b"c2")[-1].startswith(b"c2 OK")
    sock.sendall(b"c3 LOGOUT\r\n")
    assert read_tagged(sock, b"c3")[-1].startswith(b"c3 OK")
    return capabilities


def start_activated(gx: GximapProcess, notify_path: str, sockets: list[socket.socket], names: list[str]) -> None:
    """Start gximap as systemd would with ``sockets`` passed in under ``names`` (LAUNCHER sets
    LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES), and NOTIFY_SOCKET set."""
    launcher = gx.dir / "launcher.py"
    launcher.write_text(LAUNCHER)
    env = dict(os.environ, PYTHONUNBUFFERED="1", NOTIFY_SOCKET=notify_path)
    for variable in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(variable, None)
    fds = [sock.fileno() for sock in sockets]
    gx.proc = subprocess.Popen(
        [sys.executable, str(launcher), ",".join(map(str, fds)), ":".join(names),
         "-m", "gximap", "-c", str(gx.config_path)],
        cwd=gx.dir, env=env, pass_fds=fds, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def assert_not_listening(ports: tuple[int, ...] | list[int]) -> None:
    """The configuration's listen directives were not used: nothing answers on ``ports``."""
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.mark.e2e
def test_socket_activation_serves_inherited_sockets(tmp_path: Path,
                                                    notify_socket: tuple[socket.socket, str]) -> None:
    names = [values(UNIT_DIR / unit, "Socket", "FileDescriptorName")[0]
             for unit in ("gximap.socket", "gximap-imaps.socket")]
    gx = GximapProcess(tmp_path, accounts={"alice": "secret"}, tls=True)
    plain, implicit = listening_socket(), listening_socket()
    notify, notify_path = notify_socket
    try:
        start_activated(gx, notify_path, [plain, implicit], names)
        plain_port, implicit_port = plain.getsockname()[1], implicit.getsockname()[1]
        plain.close()  # the daemon holds its own copies now
        implicit.close()
        wait_for_notification(notify, b"READY=1", gx.proc)

        with socket.create_connection(("127.0.0.1", plain_port), timeout=TIMEOUT) as client:
            capabilities = b" ".join(login_session(client))
        assert b"STARTTLS" in capabilities  # "imap": plain IMAP, with STARTTLS on offer

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", implicit_port), timeout=TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as client:
                capabilities = b" ".join(login_session(client))
        assert b"STARTTLS" not in capabilities  # "imaps": already TLS

        assert gx.tls_port is not None
        assert_not_listening((gx.port, gx.tls_port))
    finally:
        plain.close()
        implicit.close()
        status = gx.stop()
    assert status == 0, gx.output() + gx.log()


@pytest.mark.e2e
def test_socket_activation_with_the_listen_directives_off_survives_a_reload(
        tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    """imap_listen_port = 0 is no error when systemd passes the listeners, at start-up and on
    every reload: the daemon has taken them (and their environment) by then (review63)."""
    gx = GximapProcess(tmp_path, accounts={"alice": "secret"}, tls=False, extra={"imap_listen": "", "imap_listen_port": "0"})
    plain = listening_socket()
    notify, notify_path = notify_socket
    try:
        start_activated(gx, notify_path, [plain], ["imap"])
        port = plain.getsockname()[1]
        plain.close()
        wait_for_notification(notify, b"READY=1", gx.proc)
        assert gx.proc is not None
        gx.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT
        while "configuration reloaded" not in gx.log() and "reload failed" not in gx.log():
            assert time.monotonic() < deadline, gx.log()
            time.sleep(0.05)
        assert "reload failed" not in gx.log()
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            login_session(client)
    finally:
        plain.close()
        status = gx.stop()
    assert status == 0, gx.output() + gx.log()


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, or a shorter directory when a socket path in it would not fit sun_path."""
    if len(os.fsencode(tmp_path / "lmtp-config")) <= 100:  # sun_path holds 108 bytes
        yield tmp_path
        return
    short_dir = Path(tempfile.mkdtemp(prefix="gxs"))
    try:
        yield short_dir
    finally:
        shutil.rmtree(short_dir, ignore_errors=True)


def unix_listening_socket(path: Path) -> socket.socket:
    """What systemd makes of ListenStream=PATH, SocketMode=0600 (without the chown to SocketUser)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def dovecot_auth_plain(path: Path, user: str, password: str) -> bytes:
    """One AUTH PLAIN over the Dovecot auth protocol as Postfix's smtpd asks it; the reply line."""
    response = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(b"VERSION\t1\t0\nCPID\t4242\n")  # Postfix speaks first, then reads
        data = b""
        while b"\nDONE\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed during the handshake: {data!r}"
            data += chunk
        assert data.startswith(b"VERSION\t1\t")
        sock.sendall(f"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.1\t"
                     f"resp={response}\n".encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            assert chunk, f"connection closed before the AUTH reply: {reply!r}"
            reply += chunk
    return reply


@pytest.mark.e2e
def test_socket_activation_hands_the_mta_sockets_to_lmtp_and_auth(
        tmp_path: Path, socket_dir: Path, notify_socket: tuple[socket.socket, str]) -> None:
    """gximap-lmtp.socket and gximap-auth.socket: the passed UNIX sockets serve LMTP delivery and
    SMTP AUTH in place of lmtp_listen and auth_listen, while IMAP binds its listeners from the
    configuration as usual (no imap/imaps descriptor is passed)."""
    names = [values(UNIT_DIR / unit, "Socket", "FileDescriptorName")[0] for unit in MTA_SOCKET_UNITS]
    assert names == ["lmtp", "auth"]
    lmtp_path, auth_path = socket_dir / "lmtp", socket_dir / "auth"
    config_lmtp_path, config_auth_path = socket_dir / "lmtp-config", socket_dir / "auth-config"
    config_lmtp_port, config_auth_port = free_port(), free_port()
    gx = GximapProcess(tmp_path, accounts={"alice": "secret"}, tls=False, extra={
        "lmtp_listen": f"unix:{config_lmtp_path} 127.0.0.1:{config_lmtp_port}",
        "auth_listen": f"unix:{config_auth_path} 127.0.0.1:{config_auth_port}",
        "delivery_map": "email_localpart",
    })
    lmtp_listener, auth_listener = unix_listening_socket(lmtp_path), unix_listening_socket(auth_path)
    notify, notify_path = notify_socket
    message = (b"From: Carol <carol@example.org>\r\nTo: alice@example.org\r\n"
               b"Subject: passed by systemd\r\nMessage-ID: <sd1@example.org>\r\n\r\nHello.\r\n")
    try:
        start_activated(gx, notify_path, [lmtp_listener, auth_listener], names)
        lmtp_listener.close()  # the daemon holds its own copies now
        auth_listener.close()
        wait_for_notification(notify, b"READY=1", gx.proc)

        with smtplib.LMTP(str(lmtp_path), timeout=TIMEOUT) as lmtp:
            assert lmtp.sendmail("carol@example.org", ["alice@example.org"], message) == {}
        assert dovecot_auth_plain(auth_path, "alice", "secret") == b"OK\t1\tuser=alice\n"

        with socket.create_connection(("127.0.0.1", gx.port), timeout=TIMEOUT) as client:
            client.settimeout(TIMEOUT)
            assert read_greeting(client).startswith(b"* OK")
            # One command at a time: read_tagged drops what it read past its tagged line.
            client.sendall(b"a1 LOGIN alice secret\r\n")
            assert read_tagged(client, b"a1")[-1].startswith(b"a1 OK")
            client.sendall(b"a2 SELECT INBOX\r\n")
            assert b"* 1 EXISTS" in read_tagged(client, b"a2")
            client.sendall(b"a3 FETCH 1 (BODY.PEEK[HEADER.FIELDS (DELIVERED-TO SUBJECT)])\r\n")
            fetched = b"\r\n".join(read_tagged(client, b"a3"))
            client.sendall(b"a4 LOGOUT\r\n")
            read_tagged(client, b"a4")
        assert b"Delivered-To: alice@example.org" in fetched and b"Subject: passed by systemd" in fetched

        # lmtp_listen and auth_listen of the configuration were not bound.
        assert not config_lmtp_path.exists() and not config_auth_path.exists()
        assert_not_listening((config_lmtp_port, config_auth_port))
    finally:
        lmtp_listener.close()
        auth_listener.close()
        status = gx.stop()
    assert status == 0, gx.output() + gx.log()
    assert f"lmtp unix:{lmtp_path}, auth unix:{auth_path}" in gx.log()
    # The socket files are systemd's: gximap leaves them for its next start.
    assert lmtp_path.is_socket() and auth_path.is_socket()


@pytest.mark.e2e
def test_notify_socket_receives_ready_and_stopping(tmp_path: Path,
                                                   notify_socket: tuple[socket.socket, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    notify, notify_path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", notify_path)
    for variable in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        monkeypatch.delenv(variable, raising=False)
    gx = GximapProcess(tmp_path, accounts={"alice": "secret"}, tls=False)
    try:
        gx.start(timeout=TIMEOUT)
        wait_for_notification(notify, b"READY=1", gx.proc)
        # READY=1 comes after the listeners and the store are up: a login works at once.
        with socket.create_connection(("127.0.0.1", gx.port), timeout=TIMEOUT) as client:
            login_session(client)
    finally:
        status = gx.stop()
    assert status == 0, gx.output() + gx.log()
    wait_for_notification(notify, b"STOPPING=1", None, timeout=2.0)
