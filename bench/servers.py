"""Install, configure, fill, start and stop the servers under test: gximap, Dovecot and pymap.

Every server gets its own directory, listens on 127.0.0.1 only (ports picked free at start), runs in
its own process group (``start_new_session``) and is registered in :data:`RUNNING` so that
:func:`stop_all` — called from ``finally`` blocks, ``atexit`` and the SIGTERM handler — never leaves
one behind. Fsync is on wherever the server has the setting (gximap ``midb_fsync = yes``, Dovecot
``mail_fsync = always``; pymap writes through Python's :mod:`mailbox` and has no fsync option).

Password schemes (see :data:`SCHEMES`): ``default`` is what each server uses out of the box (gximap:
scrypt in the midb account table; Dovecot: ``doveadm pw``'s default, bcrypt; pymap: its passlib
default, PBKDF2-SHA256); ``SHA512-CRYPT`` is one scheme all three verify (crypt(3) ``$6$``, 5000
rounds) served from a passwd-file, for a like-for-like login figure.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, ClassVar

from bench import messages

if TYPE_CHECKING:
    from midb.store import Store

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "data"
DEFAULT_STATE = REPO / "var" / "bench"
PYMAP_VENV = DEFAULT_STATE / "venv-pymap"
HOST = "127.0.0.1"
SCHEME_DEFAULT = "default"
SCHEME_MATCHED = "SHA512-CRYPT"
SCHEMES = (SCHEME_DEFAULT, SCHEME_MATCHED)
FD_LIMIT = 65536
DOVECOT_PACKAGES = ("dovecot-imapd", "dovecot-lmtpd")
PYMAP_PACKAGES = ("pymap", "passlib")  # passlib: pymap's default hashes and the SHA512-CRYPT context
_FILL_BATCH = 1000


class ServerError(Exception):
    """A server could not be installed, configured or started."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    password: str


@dataclass(frozen=True, slots=True)
class FillResult:
    messages: int
    seconds: float
    method: str


# ----------------------------------------------------------------------------------------------------
# process handling
# ----------------------------------------------------------------------------------------------------

RUNNING: set[BenchServer] = set()


def stop_all() -> None:
    """Stop every server this process started (idempotent)."""
    for server in list(RUNNING):
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(stop_all)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_ready(notify: socket.socket, deadline: float, proc: subprocess.Popen[bytes], name: str) -> None:
    """Until a "READY=1" datagram arrives on ``notify`` (sd_notify's protocol); ServerError when
    the server exits or the deadline passes first."""
    while True:
        if proc.poll() is not None:
            raise ServerError(f"{name} exited with status {proc.returncode} while starting")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerError(f"{name} did not report READY=1 in time")
        notify.settimeout(min(remaining, 0.2))
        try:
            message = notify.recv(4096)
        except TimeoutError:
            continue
        if b"READY=1" in message.split(b"\n"):
            return


def wait_for_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None,
                  name: str = "server") -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"{name} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerError(f"{name}: nothing listens on {HOST}:{port}")


def _raise_fd_limit() -> None:
    """preexec_fn: allow the server many sessions (root may raise the hard limit too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT if os.geteuid() == 0 else max(soft, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))


def raise_own_fd_limit(wanted: int = FD_LIMIT) -> int:
    """Raise this process's descriptor limit as far as allowed; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted if os.geteuid() == 0 else min(wanted, hard))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _run(argv: list[str], *, timeout: float, input_text: str | None = None,
         env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=timeout,
                              env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise ServerError(f"{' '.join(argv[:4])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def sha512_crypt(password: str) -> str:
    """A crypt(3) SHA512-CRYPT hash (``$6$salt$...``, the implicit 5000 rounds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated in 3.11, still the simplest source of glibc-compatible $6$

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


# ----------------------------------------------------------------------------------------------------
# the common interface
# ----------------------------------------------------------------------------------------------------


# Directives set by ``python -m bench --gximap-option NAME=VALUE``, applied last (experiments such
# as imap_process_num=4 or imap_auth_cache_ttl=0 without editing this file).
GXIMAP_OVERRIDES: dict[str, str] = {}


class BenchServer(ABC):
    """One server under test. Lifecycle: prepare → fill → start → after_fill → … → stop."""

    name: ClassVar[str]

    def __init__(self, directory: Path, accounts: list[Account], *, max_sessions: int = 1000) -> None:
        self.dir = Path(directory)
        self.accounts = accounts
        self.max_sessions = max_sessions
        self.scheme = SCHEME_DEFAULT
        self.imap_port = 0
        self.lmtp_port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._filled: list[tuple[str, str]] = []
        self.auth_cache = True  # False: start with the credential cache off (has_auth_cache servers)

    @property
    def has_auth_cache(self) -> bool:
        """Whether the server caches verified credentials by default (then the bench also measures
        logins with the cache off)."""
        return False

    # -- installation -----------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def missing(cls) -> str | None:
        """Why the server cannot run here (None when it can)."""

    @classmethod
    @abstractmethod
    def install(cls) -> None:
        """Install the server when missing."""

    @classmethod
    @abstractmethod
    def version(cls) -> str:
        ...

    # -- configuration ----------------------------------------------------------------------------

    def prepare(self, scheme: str = SCHEME_DEFAULT) -> None:
        """Fresh directory, accounts with their passwords, configuration."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        os.chmod(self.dir, 0o755)
        self._setup()
        self.set_scheme(scheme)

    @abstractmethod
    def _setup(self) -> None:
        ...

    @abstractmethod
    def set_scheme(self, scheme: str) -> None:
        """Store every account's password with ``scheme`` (server stopped)."""

    @abstractmethod
    def scheme_label(self, scheme: str) -> str:
        ...

    @property
    def supports_lmtp(self) -> bool:
        return False

    # -- data -------------------------------------------------------------------------------------

    @abstractmethod
    def fill(self, account: str, folder: str, count: int, *, first: int = 1, size: int = 0) -> FillResult:
        """Put messages ``first..first+count-1`` (bench.messages, padded to ``size`` bytes when
        given) into ``folder`` (server stopped)."""

    @abstractmethod
    def message_files(self, account: str, folder: str) -> int:
        """How many files on disk hold messages of ``folder`` now (a Maildir's ``cur/`` and
        ``new/``; for gximap, every body file of its store, as bodies are not kept per folder)."""

    def after_fill(self) -> float:
        """Server-side work after a direct fill, with the server running; returns seconds spent."""
        return 0.0

    def settle(self, folders: list[tuple[str, str]]) -> float:
        """Bring the server's on-disk state of these (account, folder) pairs up to date after a
        workload changed them, with the server running, as a client's open session would in
        time; returns seconds spent."""
        return 0.0

    # -- running ----------------------------------------------------------------------------------

    @abstractmethod
    def _command(self) -> list[str]:
        ...

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    # The server tells systemd's NOTIFY_SOCKET "READY=1" once it serves (sd_notify): start()
    # waits for that as well as for the ports. gximap binds its listeners before it forks its
    # serving processes, so the port accepts some 0.3 s before they all run, and a measured
    # command sent meanwhile shares the CPUs with their start-up.
    notifies_ready: ClassVar[bool] = False

    def start(self, timeout: float = 60.0) -> None:
        if self.proc is not None:
            raise ServerError(f"{self.name} is already running")
        self.imap_port = free_port()
        self.lmtp_port = free_port() if self.supports_lmtp else None
        self._write_config()
        log = open(self.dir / f"{self.name}.out", "ab")  # noqa: SIM115 - closed in stop()
        self._log_handle = log
        environment = self._environment()
        with contextlib.ExitStack() as stack:
            notify = None
            if self.notifies_ready:
                notify = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
                # Linux's abstract namespace: no file to clean up, no path length limit.
                name = f"gximap-bench-{os.getpid()}-{id(self):x}-{time.monotonic_ns():x}"
                notify.bind("\0" + name)
                environment["NOTIFY_SOCKET"] = "@" + name
            self.proc = subprocess.Popen(
                self._command(), cwd=self.dir, env=environment, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_raise_fd_limit,
            )
            RUNNING.add(self)
            deadline = time.monotonic() + timeout
            try:
                wait_for_port(self.imap_port, deadline, self.proc, self.name)
                if self.lmtp_port is not None:
                    wait_for_port(self.lmtp_port, deadline, self.proc, self.name)
                if notify is not None:
                    wait_for_ready(notify, deadline, self.proc, self.name)
            except ServerError:
                self.stop()
                raise ServerError(f"{self.name} did not start; see {self.dir}: {self.tail_logs()}") from None

    @abstractmethod
    def _write_config(self) -> None:
        """Write the configuration now that the ports are known."""

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError(f"{self.name} is not running")
        return self.proc.pid

    def stop(self, timeout: float = 30.0) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                # The main process shuts its own children down (Dovecot's master does).
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            # Whatever is left in the group (stray session processes) is killed outright.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        finally:
            self.proc = None
            RUNNING.discard(self)
            handle = self._log_handle
            self._log_handle = None
            if handle is not None:
                handle.close()

    def session_capacity(self, sessions: int) -> contextlib.AbstractContextManager[None]:
        """Context in which the system allows ``sessions`` concurrent sessions of this server."""
        return contextlib.nullcontext()

    def exit_status(self) -> int | None:
        """The exit status when the server died on its own, else None."""
        return self.proc.poll() if self.proc is not None else None

    def tail_logs(self, limit: int = 3000) -> str:
        text = []
        for path in sorted(self.dir.glob("*.log")) + sorted(self.dir.glob("*.out")):
            with contextlib.suppress(OSError):
                text.append(f"--- {path.name}\n{path.read_text(errors='replace')[-limit:]}")
        return "\n".join(text)

    def __hash__(self) -> int:
        return id(self)


# ----------------------------------------------------------------------------------------------------
# Maildir writing (Dovecot and pymap: both use the Maildir++ layout)
# ----------------------------------------------------------------------------------------------------


def _maildir_path(root: Path, folder: str) -> Path:
    return root if folder == "INBOX" else root / ("." + folder.replace("/", "."))


def _maildir_folder(root: Path, folder: str) -> Path:
    path = _maildir_path(root, folder)
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    if folder != "INBOX":
        (path / "maildirfolder").touch()
    return path


# Dovecot trusts a Maildir directory's mtime only when it last looked at the directory more than
# MAILBOX_FULL_SYNC_INTERVAL (1 s) after that mtime: a file added within the same second would not
# change it. A directory scanned sooner is marked dirty in the index and rescanned by later syncs.
# The bench's fill is followed at once by force-resync, so without a wait the 100,000-message
# folder was rescanned by the STATUS commands of the large step (44-134 ms each,
# "Dovecot's slow mode" of the runs with that workload alone; bench/HISTORY.md, thirty-ninth pass).
# A mailbox whose last change is older than a second is the ordinary case.
MAILDIR_SETTLE_SECONDS = 2.0


def maildir_settle_delay(folders: Iterable[Path], now: float,
                         settle: float = MAILDIR_SETTLE_SECONDS) -> float:
    """Seconds to wait until the ``cur/`` and ``new/`` directories of ``folders`` were last changed
    at least ``settle`` seconds ago (0 when they already were)."""
    newest = max((os.stat(folder / sub).st_mtime for folder in folders for sub in ("cur", "new")),
                 default=now - settle)
    return max(0.0, newest + settle - now)


def write_maildir(root: Path, folder: str, count: int, *, first: int = 1, size: int = 0,
                  with_sizes: bool = True, owner: tuple[int, int] | None = None) -> float:
    """Write messages as Maildir files in ``cur/`` (no fsync: a bulk fill); returns seconds."""
    started = time.perf_counter()
    path = _maildir_folder(root, folder)
    cur = path / "cur"
    pid = os.getpid()
    for number, data, seen in messages.message_stream(count, first=first, size=size):
        stamp = messages.BASE_DATE + number * 60
        sizes = f",S={len(data)},W={len(data)}" if with_sizes else ""
        name = f"{stamp}.M{number}P{pid}.bench{sizes}:2,{'S' if seen else ''}"
        file = cur / name
        with open(file, "wb") as handle:
            handle.write(data)
        os.utime(file, (stamp, stamp))
        if owner is not None:
            os.chown(file, *owner)
    if owner is not None:
        for directory in (root, path, path / "cur", path / "new", path / "tmp"):
            os.chown(directory, *owner)
        if folder != "INBOX":
            os.chown(path / "maildirfolder", *owner)
    return time.perf_counter() - started


def count_files(*directories: Path) -> int:
    """Regular files under ``directories`` (a missing one counts none)."""
    return sum(len(names) for directory in directories for _, _, names in os.walk(directory))


def maildir_message_files(root: Path, folder: str) -> int:
    path = _maildir_path(root, folder)
    return count_files(path / "cur", path / "new")


# ----------------------------------------------------------------------------------------------------
# gximap
# ----------------------------------------------------------------------------------------------------


def gximap_lmtp_directive() -> str | None:
    """The name of gximap's LMTP listen directive, once gximap has one."""
    from gximap import config

    for directive in config.DIRECTIVES:
        if "lmtp" in directive.name and "listen" in directive.name and "tls" not in directive.name:
            return directive.name
    return None


def _gximap_shards() -> int:
    """The shard count gximap would create its store with (the bench creates it first)."""
    from gximap import config

    directive = config.lookup("midb_shard_num")
    if directive is None:   # a gximap from before shards
        return 1
    value = GXIMAP_OVERRIDES.get(directive.name, directive.default)
    return config.parse_int(str(value))


def _gximap_knows(name: str) -> bool:
    from gximap import config

    return config.lookup(name) is not None


class GximapServer(BenchServer):
    name = "gximap"
    notifies_ready = True

    @classmethod
    def missing(cls) -> str | None:
        try:
            import gximap  # noqa: F401
            import midb.store  # noqa: F401
        except ImportError as exc:
            return f"gximap is not importable: {exc}"
        return None

    @classmethod
    def install(cls) -> None:
        """gximap is this repository: `make deps` installs it into .venv."""
        reason = cls.missing()
        if reason is not None:
            raise ServerError(reason)

    @classmethod
    def version(cls) -> str:
        import gximap

        return str(getattr(gximap, "__version__", "?"))

    @property
    def midb_path(self) -> Path:
        return self.dir / "midb"

    @property
    def supports_lmtp(self) -> bool:
        return gximap_lmtp_directive() is not None

    def _store(self) -> Store:
        from midb.store import Store

        try:  # store bodies as the daemon does: small ones inside the index
            from gximap.daemon import INLINE_BODY_LIMIT
        except ImportError:
            INLINE_BODY_LIMIT = 0  # noqa: N806 - an older gximap keeps every body in a file
        return Store(str(self.midb_path), fsync=False, data_path=[str(DATA_DIR)], inline_limit=INLINE_BODY_LIMIT,
                     shards=_gximap_shards())

    def _setup(self) -> None:
        from midb.passwords import hash_password

        store = self._store()
        try:
            for account in self.accounts:
                store.create_account(account.name, password_hash=hash_password(account.password))
        finally:
            store.close()

    def set_scheme(self, scheme: str) -> None:
        self.scheme = scheme
        if scheme == SCHEME_MATCHED:
            lines = [f"{a.name}:{{SHA512-CRYPT}}{sha512_crypt(a.password)}\n" for a in self.accounts]
            (self.dir / "passwd").write_text("".join(lines))

    def scheme_label(self, scheme: str) -> str:
        return "scrypt ln=14 (midb)" if scheme == SCHEME_DEFAULT else "SHA512-CRYPT (passwd-file)"

    def fill(self, account: str, folder: str, count: int, *, first: int = 1, size: int = 0) -> FillResult:
        """Straight into the midb store, ``append_many`` in batches, fsync off (a bulk fill)."""
        started = time.perf_counter()
        store = self._store()
        try:
            info = store.get_folder(account, folder)
            if info is None:
                info = store.create_folder(account, folder)
            batch: list[tuple[bytes, tuple[str, ...], int, int]] = []
            for number, data, seen in messages.message_stream(count, first=first, size=size):
                batch.append((data, ("\\Seen",) if seen else (), messages.BASE_DATE + number * 60, 0))
                if len(batch) >= _FILL_BATCH:
                    store.append_many(account, info.id, batch)
                    batch = []
            if batch:
                store.append_many(account, info.id, batch)
        finally:
            store.close()
        self._filled.append((account, folder))
        return FillResult(count, time.perf_counter() - started, "midb Store.append_many, fsync off")

    def message_files(self, account: str, folder: str) -> int:
        return count_files(self.midb_path / "eml")

    def settings(self) -> dict[str, str]:
        settings = {
            "imap_listen": f"{HOST}:{self.imap_port}",
            "midb_path": str(self.midb_path),
            "midb_fsync": "yes",
            "data_file_path": str(DATA_DIR),
            "imap_log_file": str(self.dir / "gximap.log"),
            "imap_log_level": "4",
            "running_identity": "",
            # A quarter more than needed: with several processes each takes a share of
            # context_num, and the kernel spreads connections evenly only on average.
            "context_num": str(max(self.max_sessions * 5 // 4 + 256, 200)),
            "imap_fd_limit": "0",
            "insecure_auth": "yes",
        }
        if _gximap_knows("imap_max_conn_per_user_ip"):
            # The workloads log in to a few accounts from loopback (the idle one 1,000 sessions per
            # mailbox): as Dovecot's mail_max_userip_connections below.
            settings["imap_max_conn_per_user_ip"] = str(self.max_sessions + 100)
        if _gximap_knows("imap_process_num"):
            # gximap's automatic count (two per CPU), as Dovecot uses every core (its process per session).
            settings["imap_process_num"] = "0"
        if self.scheme == SCHEME_MATCHED:
            settings["auth_backend"] = "passwd-file"
            settings["auth_passwd_file"] = str(self.dir / "passwd")
        directive = gximap_lmtp_directive()
        if directive is not None and self.lmtp_port is not None:
            settings[directive] = f"{HOST}:{self.lmtp_port}"
            # Recipients are user@bench.invalid; the account is the local part (as Dovecot's %Ln).
            if _gximap_knows("delivery_map"):
                settings["delivery_map"] = "email_localpart"
        if not self.auth_cache:
            settings["imap_auth_cache_ttl"] = "0"
        # imap_auth_failure_delay keeps its default, 2 s, as Dovecot's auth_failure_delay keeps its 2 s
        # below: the same policy on both sides. No workload fails a login (check_primed stops a run
        # that does), so it costs neither anything measured.
        settings.update(GXIMAP_OVERRIDES)
        return settings

    @property
    def has_auth_cache(self) -> bool:
        return _gximap_knows("imap_auth_cache_ttl")

    def _write_config(self) -> None:
        text = "# written by bench/servers.py\n" + "".join(f"{k} = {v}\n" for k, v in self.settings().items())
        (self.dir / "imap.cfg").write_text(text)

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "gximap", "-c", str(self.dir / "imap.cfg")]


# ----------------------------------------------------------------------------------------------------
# Dovecot
# ----------------------------------------------------------------------------------------------------


def _apt_install(packages: Iterable[str]) -> None:
    """apt-get install as root, without starting the distribution's own service (policy-rc.d)."""
    packages = list(packages)
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]
    else:
        raise ServerError(f"{' '.join(packages)} missing and not root: install them as root")
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = False
    if os.geteuid() == 0 and not policy.exists():
        # Debian's maintainer scripts would start a system-wide Dovecot on 0.0.0.0:143 otherwise.
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        created_policy = True
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(prefix + ["apt-get", "update", "-qq"], timeout=600, env=env)
        _run(prefix + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
             timeout=1200, env=env)
    finally:
        if created_policy:
            policy.unlink(missing_ok=True)


def _raise_sysctls(directory: str, wanted: dict[str, int]) -> dict[str, int]:
    """Raise integer sysctls below ``wanted`` (root only); returns the old values of those changed."""
    saved: dict[str, int] = {}
    if os.geteuid() != 0:
        return saved
    for name, value in wanted.items():
        path = Path(directory) / name
        try:
            current = int(path.read_text().strip())
            if current < value:
                path.write_text(f"{value}\n")
                saved[name] = current
        except (OSError, ValueError):
            continue
    return saved


def _restore_sysctls(directory: str, saved: dict[str, int]) -> None:
    for name, value in saved.items():
        with contextlib.suppress(OSError):
            (Path(directory) / name).write_text(f"{value}\n")


class DovecotServer(BenchServer):
    name = "dovecot"

    @classmethod
    def missing(cls) -> str | None:
        if not shutil.which("dovecot") or not shutil.which("doveadm"):
            return "dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)"
        if not Path("/usr/lib/dovecot/lmtp").exists():
            return "dovecot-lmtpd is not installed"
        return None

    @classmethod
    def install(cls) -> None:
        if cls.missing() is not None:
            _apt_install(DOVECOT_PACKAGES)

    @classmethod
    def version(cls) -> str:
        try:
            return _run(["dovecot", "--version"], timeout=30).strip()
        except ServerError:
            return "?"

    @property
    def supports_lmtp(self) -> bool:
        return True

    @property
    def mail_owner(self) -> tuple[int, int] | None:
        """uid/gid of the mail files: nobody when running as root, else ourselves (no chown)."""
        if os.geteuid() == 0:
            entry = pwd.getpwnam("nobody")
            return entry.pw_uid, entry.pw_gid
        return None

    def _home(self, account: str) -> Path:
        return self.dir / "mail" / account

    def _setup(self) -> None:
        if os.geteuid() == 0:
            for parent in self.dir.parents:
                if not parent.stat().st_mode & 0o001:
                    raise ServerError(f"{parent} is not traversable by others: Dovecot's unprivileged "
                                      "processes could not reach their files (use another --workdir)")
        for sub in ("run", "state", "mail"):
            (self.dir / sub).mkdir()
            os.chmod(self.dir / sub, 0o755)
        owner = self.mail_owner
        for account in self.accounts:
            home = self._home(account.name)
            _maildir_folder(home / "Maildir", "INBOX")
            if owner is not None:
                for path in (home, home / "Maildir", *(home / "Maildir" / s for s in ("cur", "new", "tmp"))):
                    os.chown(path, *owner)

    def set_scheme(self, scheme: str) -> None:
        self.scheme = scheme
        uid, gid = self.mail_owner or (os.getuid(), os.getgid())
        lines = []
        for account in self.accounts:
            if scheme == SCHEME_MATCHED:
                hashed = "{SHA512-CRYPT}" + sha512_crypt(account.password)
            else:
                hashed = _run(["doveadm", "pw", "-p", account.password], timeout=30).strip()
            lines.append(f"{account.name}:{hashed}:{uid}:{gid}::{self._home(account.name)}::\n")
        path = self.dir / "passwd"
        path.write_text("".join(lines))
        os.chmod(path, 0o644)

    def scheme_label(self, scheme: str) -> str:
        return "BLF-CRYPT cost 5 (doveadm pw default)" if scheme == SCHEME_DEFAULT else "SHA512-CRYPT"

    def fill(self, account: str, folder: str, count: int, *, first: int = 1, size: int = 0) -> FillResult:
        seconds = write_maildir(self._home(account) / "Maildir", folder, count, first=first, size=size,
                                owner=self.mail_owner)
        self._filled.append((account, folder))
        return FillResult(count, seconds, "Maildir files + doveadm force-resync")

    def message_files(self, account: str, folder: str) -> int:
        return maildir_message_files(self._home(account) / "Maildir", folder)

    def after_fill(self) -> float:
        spent = self.settle(self._filled)
        self._filled.clear()
        return spent

    def settle(self, folders: list[tuple[str, str]]) -> float:
        """Wait until the folders' Maildir directories are MAILDIR_SETTLE_SECONDS old, then
        resync: Dovecot does not trust a directory it scanned within a second of its last
        change, and rescans it in every later sync until one that happens well after the
        change (maildir_settle_delay)."""
        started = time.perf_counter()
        paths = [_maildir_path(self._home(account) / "Maildir", folder) for account, folder in folders]
        time.sleep(maildir_settle_delay(paths, time.time()))
        for account, folder in folders:
            _run(["doveadm", "-c", str(self.dir / "dovecot.conf"), "force-resync", "-u", account, folder],
                 timeout=1800)
        return time.perf_counter() - started

    def config_text(self) -> str:
        root = os.geteuid() == 0
        uid, gid = self.mail_owner or (os.getuid(), os.getgid())
        me = pwd.getpwuid(os.getuid()).pw_name
        login_user = "dovenull" if root else me
        internal_user = "dovecot" if root else me
        processes = self.max_sessions + 512
        lmtp = f"""
service lmtp {{
  inet_listener lmtp {{
    address = {HOST}
    port = {self.lmtp_port}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@bench.invalid
}}""" if self.lmtp_port else ""
        return f"""# written by bench/servers.py: loopback only, own base directory, Maildir, fsync always
instance_name = gximap-bench-dovecot
base_dir = {self.dir / "run"}
state_dir = {self.dir / "state"}
log_path = {self.dir / "dovecot.log"}
info_log_path = {self.dir / "dovecot-info.log"}
listen = {HOST}
protocols = imap{" lmtp" if self.lmtp_port else ""}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
passdb {{
  driver = passwd-file
  args = {self.dir / "passwd"}
}}
userdb {{
  driver = passwd-file
  args = {self.dir / "passwd"}
}}
mail_location = maildir:~/Maildir
mail_fsync = always
first_valid_uid = {min(uid, 500)}
first_valid_gid = {min(gid, 500) or 1}
default_login_user = {login_user}
default_internal_user = {internal_user}
default_process_limit = {processes}
default_client_limit = {processes * 2}
default_vsz_limit = 1G
# Tuned as a busy site would run it: login processes in high-performance mode and imap
# processes reused and pre-started. With Dovecot's defaults (one new imap-login and one new imap
# process per connection) it set up about 30 sessions a second here, so at 100 reconnecting
# clients most of them were waiting to connect (CONNECT p50 2.8 s) and only the few others
# were measured.
service imap-login {{
  service_count = 0
  process_min_avail = {os.cpu_count() or 1}
  inet_listener imap {{
    address = {HOST}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = {processes}
  service_count = 0
  process_min_avail = {min(self.max_sessions, 16)}
}}
service anvil {{
  client_limit = {processes * 3}
}}
service auth {{
  client_limit = {processes * 4}
}}
protocol imap {{
  mail_max_userip_connections = {self.max_sessions + 100}
}}
{lmtp}
"""

    def _write_config(self) -> None:
        (self.dir / "dovecot.conf").write_text(self.config_text())

    @contextlib.contextmanager
    def session_capacity(self, sessions: int) -> Iterator[None]:
        """One imap process per session, each with its own inotify instance for IDLE: above the
        kernel's per-user limit (128 by default) Dovecot silently falls back to polling every
        mailbox_idle_check_interval (30 s). Raise the limits for the run, restore them afterwards."""
        wanted = {"max_user_instances": sessions + 1024, "max_user_watches": 4 * sessions + 65536}
        saved = _raise_sysctls("/proc/sys/fs/inotify", wanted)
        try:
            yield
        finally:
            _restore_sysctls("/proc/sys/fs/inotify", saved)

    def _command(self) -> list[str]:
        return ["dovecot", "-F", "-c", str(self.dir / "dovecot.conf")]


# ----------------------------------------------------------------------------------------------------
# pymap
# ----------------------------------------------------------------------------------------------------

_PYMAP_HASHER = r"""
import json, sys
from pymap.config import IMAPConfig
context = IMAPConfig._get_hash_context(None)  # pymap's own default when no --passlib-cfg is given
print(json.dumps([context.hash(p) for p in json.load(sys.stdin)]))
"""


class PymapServer(BenchServer):
    name = "pymap"
    venv: ClassVar[Path] = PYMAP_VENV

    @classmethod
    def executable(cls) -> Path:
        return cls.venv / "bin" / "pymap"

    @classmethod
    def missing(cls) -> str | None:
        if not cls.executable().exists():
            return f"pymap is not installed in {cls.venv}"
        if not (cls.venv / "bin" / "python").exists():
            return f"{cls.venv} is not a virtualenv"
        return None

    @classmethod
    def install(cls) -> None:
        if cls.missing() is None:
            return
        cls.venv.parent.mkdir(parents=True, exist_ok=True)
        base_python = getattr(sys, "_base_executable", sys.executable)
        _run([base_python, "-m", "venv", str(cls.venv)], timeout=300)
        _run([str(cls.venv / "bin" / "pip"), "install", "-q", *PYMAP_PACKAGES], timeout=1200)

    @classmethod
    def version(cls) -> str:
        try:
            return _run([str(cls.executable()), "--version"], timeout=60).strip()
        except ServerError:
            return "?"

    @property
    def base(self) -> Path:
        return self.dir / "base"

    def _setup(self) -> None:
        self.base.mkdir()
        users = "".join(f"{a.name}:x::::{a.name}:\n" for a in self.accounts)
        (self.base / "pymap-etc-passwd").write_text(users)
        for account in self.accounts:
            _maildir_folder(self.base / account.name, "INBOX")
        (self.dir / "passlib-sha512.cfg").write_text("[passlib]\nschemes = sha512_crypt\n")

    def set_scheme(self, scheme: str) -> None:
        self.scheme = scheme
        passwords = [a.password for a in self.accounts]
        if scheme == SCHEME_MATCHED:
            hashes = [sha512_crypt(p) for p in passwords]
        else:
            python = str(self.venv / "bin" / "python")
            hashes = json.loads(_run([python, "-c", _PYMAP_HASHER], input_text=json.dumps(passwords),
                                     timeout=600))
        lines = [f"{a.name}:{h}:::::::\n" for a, h in zip(self.accounts, hashes, strict=True)]
        (self.base / "pymap-etc-shadow").write_text("".join(lines))

    def scheme_label(self, scheme: str) -> str:
        return "PBKDF2-SHA256 29000 (passlib default)" if scheme == SCHEME_DEFAULT else "SHA512-CRYPT"

    def fill(self, account: str, folder: str, count: int, *, first: int = 1, size: int = 0) -> FillResult:
        seconds = write_maildir(self.base / account, folder, count, first=first, size=size, with_sizes=False)
        self._filled.append((account, folder))
        return FillResult(count, seconds, "Maildir files (pymap indexes at first SELECT)")


    def message_files(self, account: str, folder: str) -> int:
        return maildir_message_files(self.base / account, folder)
    def _write_config(self) -> None:
        """pymap is configured by its command line (see _command)."""
        return None

    def _command(self) -> list[str]:
        argv = [str(self.executable()), "--host", HOST, "--port", str(self.imap_port), "--no-tls"]
        if self.scheme == SCHEME_MATCHED:
            argv += ["--passlib-cfg", str(self.dir / "passlib-sha512.cfg")]
        return argv + ["maildir", str(self.base)]


SERVER_CLASSES: dict[str, type[BenchServer]] = {
    GximapServer.name: GximapServer,
    DovecotServer.name: DovecotServer,
    PymapServer.name: PymapServer,
}


def make_accounts(count: int, *, prefix: str = "user") -> list[Account]:
    return [Account(f"{prefix}{n:03d}", f"pw-{prefix}{n:03d}-bench") for n in range(count)]


def ensure_installed(names: Iterable[str], *, install: bool,
                     log: Callable[[str], None] = print) -> dict[str, str]:
    """Install what is missing (when allowed); returns {server: reason} for those that cannot run."""
    unavailable: dict[str, str] = {}
    for name in names:
        cls = SERVER_CLASSES[name]
        reason = cls.missing()
        if reason is not None and install:
            log(f"installing {name} ...")
            try:
                cls.install()
            except ServerError as exc:
                unavailable[name] = str(exc)
                continue
            reason = cls.missing()
        if reason is not None:
            unavailable[name] = reason
    return unavailable
