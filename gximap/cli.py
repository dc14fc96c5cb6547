"""``gximap [-c FILE] [-t|--check] [--version] [-?|--help]``: start-up order, signals, reload.

Start-up follows Gromox: read config → bind listeners → raise the fd limit → drop to
``running_identity`` → load TLS material → open the store → serve. Binding first lets an
unprivileged service own ports below 1024. The store is opened after the switch so its files
belong to the service user.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

from gximap import __version__, allocator
from gximap import config as gxconfig
from gximap import log as gxlog


def _parse_args(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """(action, config path). action: "help", "version", "check", or None to run; errors raise
    SystemExit."""
    config_path: str | None = None
    action: str | None = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-?", "-h", "--help"):
            return "help", None
        if arg == "--version":
            return "version", None
        if arg in ("--check", "-t"):
            action = "check"
        elif arg == "-c":
            if not args:
                raise SystemExit("gximap: option -c needs a file name")
            config_path = args.pop(0)
        elif arg.startswith("-c") and len(arg) > 2:
            config_path = arg[2:]
        else:
            raise SystemExit(f"gximap: unknown argument {arg!r} (try --help)")
    return action, config_path


def main(argv: Sequence[str] | None = None) -> int:
    action, config_path = _parse_args(sys.argv[1:] if argv is None else argv)
    if action == "help":
        sys.stdout.write(gxconfig.render_help())
        return 0
    if action == "version":
        print(f"gximap {__version__}")
        return 0
    # SIGHUP's default action ends the process, and start-up takes a while (the store, the
    # pool): from here on a reload (or logrotate's) asked for meanwhile is latched, and applied
    # once gximap serves (Daemon._serve).
    latch: SignalLatch | None = None
    if action is None:
        latch = SignalLatch()
        latch.catch_reload()
    paths = [config_path] if config_path else gxconfig.default_paths()
    try:
        # --check runs apart from the daemon (before a reload's SIGHUP), so it cannot see
        # whether systemd passes the daemon its listeners; _check says so when none is set.
        cfg = gxconfig.load_config(paths, required=bool(config_path),
                                   sockets_inherited=True if action == "check" else None)
        # The log target: --check looks at it here, a start by opening it (setup_logging, below).
        gxconfig.check_host(cfg, log_target=action == "check")
    except gxconfig.ConfigError as exc:
        _report_error(str(exc))
        return 2
    if action == "check":
        return _check(cfg, paths)
    try:
        gxlog.setup_logging(str(cfg.imap_log_file), gxconfig.log_level(cfg))
    except gxlog.LogSetupError as exc:   # as check_host words it, and what it cannot see (a file not writable)
        _report_error(str(gxconfig.error_at(cfg, "imap_log_file", str(exc))))
        return 2
    log = gxlog.get_logger()
    if not paths:
        log.log(gxlog.NOTICE, "no configuration file: neither %s exists; running on the defaults",
                " nor ".join(gxconfig.default_candidates()))
    for warning in cfg.warnings:
        log.warning("%s", warning)
    tuned = allocator.tune(os.environ)  # before the first thread and the first fork
    if tuned:
        log.debug("malloc settings: %s", " ".join(tuned))
    from gximap.daemon import Daemon, StartupError

    try:
        return Daemon(cfg, paths, latch=latch).run()
    except StartupError as exc:
        log.critical("%s", exc)
        if str(cfg.imap_log_file) != "-":  # (on standard error the log line says it already)
            _report_error(str(exc))
        return 1


def _check(cfg: gxconfig.Config, paths: Sequence[str]) -> int:
    """``gximap --check``: the checks of a start that need no listener and no store (see
    Daemon.check); what is wrong on standard error, exit status 2 (as a start would give for a
    configuration error), 0 when a start would get past them."""
    gxlog.setup_logging("-", 3)  # warnings and up: the data files' warnings, not into the daemon's log
    for warning in cfg.warnings:
        print(f"gximap: {warning}", file=sys.stderr)
    if not any(gxconfig.listen_addresses(cfg)):
        print("gximap: no IMAP listener is configured: a start needs systemd to pass them (gximap.socket)",
              file=sys.stderr)
    from gximap.daemon import Daemon, StartupError

    try:
        Daemon(cfg, paths).check()
    except StartupError as exc:
        _report_error(str(exc))
        return 2
    print(f"gximap: configuration good: {', '.join(paths) or 'the defaults (no file)'}")
    return 0


def _report_error(text: str) -> None:
    """Say why gximap cannot start, on standard error; in the journal at priority err."""
    print(f"{'<3>' if gxlog.stderr_is_journal() else ''}gximap: {text}", file=sys.stderr)


class SignalLatch:
    """Turns SIGTERM/SIGINT/SIGHUP into flags the main thread acts on (never work in a handler).
    SIGUSR1 and SIGUSR2 are noted and ignored: by default they would end the process without a
    word, and some logrotate recipes send SIGUSR1 to have logs reopened (SIGHUP does that).

    The handlers only set a flag and poke a pipe: a handler that took a lock (``Event.set()``)
    could deadlock the main thread it interrupts (see gximap.net.wakeup).
    """

    def __init__(self) -> None:
        from gximap.net.wakeup import WakePipe

        self.wake = WakePipe()
        self.stop = False
        self.reload = False
        self.ignored: int | None = None

    def catch_reload(self) -> None:
        """Latch SIGHUP only, until install(): from the start of the process, and of a serving
        process right after its fork, where the default action would end a gximap still
        starting (SIGTERM's default, ending it, is what a stop then wants)."""
        signal.signal(signal.SIGHUP, self._on_reload)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        signal.signal(signal.SIGUSR1, self._on_ignored)
        signal.signal(signal.SIGUSR2, self._on_ignored)

    def take_ignored(self) -> str | None:
        """The name of a signal ignored since the last call, if any."""
        signum, self.ignored = self.ignored, None
        return signal.Signals(signum).name if signum is not None else None

    def wait(self, timeout: float) -> None:
        """Sleep until a signal arrives or ``timeout`` passes; the flags say which signal."""
        self.wake.wait(timeout)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop = True
        self.wake.poke()

    def _on_reload(self, signum: int, frame: object) -> None:
        self.reload = True
        self.wake.poke()

    def _on_ignored(self, signum: int, frame: object) -> None:
        self.ignored = signum
        self.wake.poke()


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        logging.getLogger("gximap").warning("sd_notify failed: %s", exc)
