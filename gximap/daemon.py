"""The running daemon: wires configuration, listeners, privileges, TLS, the store and the pool."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from gximap import __version__
from gximap import config as gxconfig
from gximap import log as gxlog
from gximap.cli import SignalLatch, sd_notify
from gximap.config import Config
from gximap.net.siblings import share

if TYPE_CHECKING:  # for the hints only: the methods below import these where they use them
    import ssl

    from gximap.mta import MtaServices
    from gximap.net.pool import Server
    from gximap.net.tls import TlsConfigError

# Message bodies up to this size are kept in the midb index rather than in files of their own: a
# delivery then costs one index commit instead of a file created, written, synced and renamed and
# a directory synced; SEARCH BODY and FETCH read them without opening a file. Larger ones, and all
# of them once the LMDB map is half full, go to files (midb.store.Store inline_limit).
INLINE_BODY_LIMIT = 16 * 1024


class StartupError(Exception):
    """gximap cannot start; the message says why (and names the file or directive)."""


def _tls_protocols(cfg: Config) -> dict[str, str | None]:
    """tls_min_proto and tls_max_proto, as make_server_context takes them (every TLS context)."""
    return {"min_proto": str(cfg.tls_min_proto), "max_proto": str(cfg.tls_max_proto) if cfg.tls_max_proto else None}


# The directives of the TLS material, by TlsConfigError.part: the IMAP listeners' (_tls_context)
# and the proxy link's (_proxy_tls_context).
_IMAP_TLS = {"certificate": "imap_certificate_path", "key": "imap_private_key_path",
             "password": "imap_certificate_passwd"}
_PROXY_LINK_TLS = {"certificate": "imap_haproxy_certificate_path", "key": "imap_haproxy_private_key_path",
                   "password": "imap_haproxy_certificate_passwd", "ca": "imap_haproxy_ca_path"}


def _tls_error(cfg: Config, exc: TlsConfigError, directives: Mapping[str, str]) -> StartupError:
    """``exc`` located as every configuration error is (FILE:LINE: directive: why), at the
    directive its ``part`` names; tls_min_proto and tls_max_proto name themselves."""
    return StartupError(str(gxconfig.error_at(cfg, directives.get(exc.part, exc.part), str(exc))))


def settings_from_config(cfg: Config):  # noqa: ANN201 - gximap.session.context.Settings
    from gximap.session.context import Settings

    return Settings(
        host_id=str(cfg.host_id),
        rfc9051=bool(cfg.imap_rfc9051),
        enable_id=bool(cfg.enable_rfc2971_commands),
        force_tls=bool(cfg.imap_force_tls),
        insecure_auth=gxconfig.insecure_auth_allowed(cfg),
        sasl_login=bool(cfg.sasl_login),
        sasl_scram=bool(cfg.imap_sasl_scram),
        max_line=int(cfg.imap_max_line_length),
        max_literal=int(cfg.imap_max_literal_size),
        literal_spool_dir=str(cfg.midb_path),
        max_nesting=int(cfg.imap_max_nesting),
        max_args=int(cfg.imap_max_args),
        max_ranges=int(cfg.imap_max_ranges),
        max_bad_commands=int(cfg.imap_max_bad_commands),
        max_conn_per_user_ip=int(cfg.imap_max_conn_per_user_ip),
        conn_timeout=float(cfg.imap_conn_timeout),
        login_timeout=float(cfg.imap_login_timeout),
        autologout=float(cfg.imap_autologout_time),
        idle_notify_interval=float(cfg.imap_idle_notify_interval),
        default_lang=str(cfg.default_lang),
        version=__version__,
        quota_admins=tuple(cfg.imap_quota_admins),
        metadata_max_entries=int(cfg.imap_metadata_max_entries),
        metadata_max_size=int(cfg.imap_metadata_max_size),
        sort_cache_size=int(cfg.imap_sort_cache_size),
        metadata_comment=str(cfg.imap_metadata_comment),
        metadata_admin=str(cfg.imap_metadata_admin),
        default_mailbox_quota=int(cfg.imap_default_mailbox_quota),
        default_annotation_quota=int(cfg.imap_default_annotation_quota),
        autoexpunge=gxconfig.autoexpunge_periods(cfg),
        # NOTIFY's INBOXES (RFC 5465 section 6.3): a filter may file mail anywhere, the quarantine into \\Junk.
        delivery_filters=any(str(value or "").strip() for value in (cfg.imap_filter_command, cfg.lmtp_spam_header)),
    )


def preload_modules() -> None:
    """Import everything serving may need before dropping privileges.

    After the switch to ``running_identity`` the interpreter's own files may be unreadable (a
    Python installed under a private home directory), and a first request must not fail on a
    lazy import. Codecs are looked up lazily too, so every codec module is imported now: mail
    arrives in any charset.
    """
    import encodings
    import encodings.aliases
    import importlib
    import pkgutil

    for module in (
        "gximap.session.session", "gximap.net.pool", "gximap.net.tls", "gximap.imap.fetchmime",
        "gximap.auth.service", "midb.store", "midb.authdb", "midb.mime", "midb.searchtext",
        "midb.passwords", "setproctitle", "hashlib", "hmac", "ssl", "zlib", "email.utils",
        "email.header", "quopri", "base64", "binascii", "unicodedata",
        "gximap.mta", "gximap.lmtp.session", "gximap.lmtp.delivery", "gximap.authsock.session",
        "gximap.filters", "subprocess", "selectors", "shlex", "secrets", "email.errors",
    ):
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    for info in pkgutil.iter_modules(encodings.__path__):
        try:
            importlib.import_module(f"encodings.{info.name}")
        except Exception:  # noqa: BLE001 - platform-specific codecs (mbcs, oem) fail to import here
            pass


# imap_process_num = 0: this many serving processes per CPU, and at most AUTO_PROCESS_MAX.
# A process runs Python on one core at a time, and its workers spend much of their time waiting
# for the disk (a commit's fsync): with one process per CPU a core idles while its process's
# sessions queue for that process's one running thread. Two per CPU, against one, under the
# 10-client mixed load on 2 CPUs (bench/HISTORY.md, sixteenth pass): +12 % and +6 % in two A/B runs
# of alternating rounds, +15 % at 100 clients. The cap keeps big machines within LMDB's reader
# table (1,024 slots, one per thread that reads) and their memory within reason.
AUTO_PROCESSES_PER_CPU = 2
AUTO_PROCESS_MAX = 32


def process_count(cfg: Config) -> int:
    """imap_process_num, with 0 meaning two per CPU this process may run on (at most 32); never
    more than context_num, a total every process serves a share of: one with a share of 0
    sessions would serve no one (siblings.share)."""
    wanted = int(cfg.imap_process_num)
    if wanted <= 0:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        wanted = max(1, min(AUTO_PROCESSES_PER_CPU * cpus, AUTO_PROCESS_MAX))
    sessions = max(int(cfg.context_num), 1)
    if wanted > sessions and int(cfg.imap_process_num) > 0:
        gxlog.get_logger().warning("imap_process_num = %d is more than context_num = %d, the sessions "
                                   "they share: %d processes", wanted, sessions, sessions)
    return min(wanted, sessions)


def set_title(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:
        pass


def data_path(cfg: Config) -> list[str]:
    return [item for item in str(cfg.data_file_path).split(":") if item]


class Daemon:
    def __init__(self, cfg: Config, config_paths: Sequence[str], *, latch: SignalLatch | None = None) -> None:
        """``latch``: the one cli.main set to catch SIGHUP at the start, so that a reload asked
        for while gximap starts is applied once it serves; None makes one when serving starts."""
        self.cfg = cfg
        self.config_paths = list(config_paths)
        self.log = gxlog.get_logger()
        self.server: Server | None = None
        self.store = None
        self.ctx = None
        self.mta: MtaServices | None = None  # LMTP and the auth socket
        self._mta_activated: list[tuple[int, str]] = []
        self._imap_activated = False  # systemd passed the IMAP listeners (socket activation)
        self._listening: list[tuple[str, int]] = []  # the IMAP sockets' (host, port), for warnings
        self._process = (0, 1)  # (index, count) of this serving process (imap_process_num)
        self._proxy_ssl_context: ssl.SSLContext | None = None
        self._latch = latch

    # -- start-up, in Gromox's order -------------------------------------------------------------

    def _bind(self, count: int) -> list[list]:
        """One set of IMAP listeners per serving process (gximap.net.listener.bind_listener_sets)."""
        from gximap.mta import MTA_SOCKET_NAMES
        from gximap.net.listener import (
            ListenerError,
            ListenerSpec,
            adopt_listener,
            bind_listener_sets,
            systemd_listen_fds,
        )

        activated = systemd_listen_fds()
        self._mta_activated = [(fd, name) for fd, name in activated if name in MTA_SOCKET_NAMES]
        activated = [(fd, name) for fd, name in activated if name not in MTA_SOCKET_NAMES]
        self._imap_activated = bool(activated)
        try:
            if activated:
                # Socket activation: names from the .socket unit say which sockets are implicit TLS.
                # systemd passes one socket per address; the processes share it.
                adopted = [adopt_listener(fd, tls=name in ("imaps", "imap-tls", "tls")) for fd, name in activated]
                return [adopted] * count
            plain, tls = gxconfig.listen_addresses(self.cfg)   # not empty: check_consistency
            specs = [ListenerSpec(host, port, tls=False) for host, port in plain]
            specs += [ListenerSpec(host, port, tls=True) for host, port in tls]
            return bind_listener_sets(specs, count)
        except ListenerError as exc:
            raise StartupError(str(exc)) from None

    def _tls_context(self):  # noqa: ANN202
        cfg = self.cfg
        if not cfg.imap_support_tls:
            return None
        from gximap.net.tls import TlsConfigError, make_server_context

        try:
            return make_server_context(
                str(cfg.imap_certificate_path),
                str(cfg.imap_private_key_path) if cfg.imap_private_key_path else None,
                password=str(cfg.imap_certificate_passwd) if cfg.imap_certificate_passwd else None,
                **_tls_protocols(cfg),
            )
        except TlsConfigError as exc:
            raise _tls_error(cfg, exc, _IMAP_TLS) from None

    def _proxy_tls_context(self):  # noqa: ANN202
        """The TLS link with the proxies (imap_haproxy_certificate_path), or None."""
        cfg = self.cfg
        if not cfg.imap_haproxy_certificate_path:
            return None
        from gximap.net.tls import TlsConfigError, make_server_context, require_client_certificates

        try:
            context = make_server_context(
                str(cfg.imap_haproxy_certificate_path),
                str(cfg.imap_haproxy_private_key_path),
                password=str(cfg.imap_haproxy_certificate_passwd) if cfg.imap_haproxy_certificate_passwd else None,
                **_tls_protocols(cfg),
            )
        except TlsConfigError as exc:
            raise _tls_error(cfg, exc, _PROXY_LINK_TLS) from None
        if cfg.imap_haproxy_ca_path:
            try:
                require_client_certificates(context, str(cfg.imap_haproxy_ca_path))
            except TlsConfigError as exc:
                raise _tls_error(cfg, exc, _PROXY_LINK_TLS) from None
        return context

    def _open_store(self, *, take_over_removals: bool = True):  # noqa: ANN202
        from midb.errors import MidbError
        from midb.store import Store

        cfg = self.cfg
        try:
            return Store(
                str(cfg.midb_path),
                fsync=bool(cfg.midb_fsync),
                map_size=int(cfg.midb_map_size),
                run_dir=str(cfg.midb_run_dir) if cfg.midb_run_dir else None,
                data_path=data_path(cfg),
                default_lang=str(cfg.default_lang),
                inline_limit=INLINE_BODY_LIMIT,
                shards=int(cfg.midb_shard_num),
                parse_delay=float(cfg.midb_parse_delay) or None,
                take_over_removals=take_over_removals,
            )
        except (OSError, MidbError) as exc:
            raise StartupError(f"midb_path {cfg.midb_path}: cannot open the store: {exc}") from None

    def check(self) -> None:
        """``gximap --check``: what a start would refuse beyond the files' syntax, without
        binding a listener or opening the store, so that it may run beside the serving daemon
        (gximap.service runs it before the SIGHUP of a reload): the LMTP and auth socket
        settings, the name maps, the TLS material (read as running_identity when started as
        root, as a start reads it) and the data files (imap_code.txt, folder_lang.txt; what they
        lack is logged, as at a start). Raises StartupError."""
        from gximap.imap.codes import ResponseCodes
        from midb.folderlang import FolderLanguages

        self._mta_services()
        self._name_maps()
        self._drop_privileges()
        self._tls_context()
        self._proxy_tls_context()
        ResponseCodes.load(str(self.cfg.data_file_path))
        FolderLanguages.load(data_path(self.cfg))

    # Start-up steps that check as they go, shared by run() and check(): each raises StartupError.

    def _mta_services(self) -> MtaServices:
        from gximap.mta import MtaConfigError, MtaServices

        try:
            return MtaServices(self.cfg)
        except MtaConfigError as exc:
            raise StartupError(str(exc)) from None

    def _name_maps(self):  # noqa: ANN202
        """(auth_map, storage_map)."""
        from gximap.auth.maps import MapSyntaxError, name_map_from_config

        try:
            return name_map_from_config(self.cfg, "auth_map"), name_map_from_config(self.cfg, "storage_map")
        except MapSyntaxError as exc:
            raise StartupError(f"name mapping: {exc}") from None

    def _drop_privileges(self) -> None:
        from gximap.net.privileges import PrivilegeError, drop_privileges

        try:
            drop_privileges(str(self.cfg.running_identity or ""))
        except PrivilegeError as exc:
            raise StartupError(str(exc)) from None

    def run(self) -> int:
        from gximap.imap.codes import ResponseCodes
        from gximap.net.listener import ListenerError
        from gximap.net.privileges import raise_fd_limit

        cfg = self.cfg
        count = process_count(cfg)
        self.mta = mta = self._mta_services()
        listener_sets = self._bind(count)
        self._listening = [(listener.host, listener.port) for listener in listener_sets[0] if not listener.unix]
        exposed = gxconfig.open_proxy_warning(cfg, self._listening)
        if exposed:
            self.log.warning("%s", exposed)
        try:
            mta.bind(self._mta_activated)
        except ListenerError as exc:
            raise StartupError(str(exc)) from None
        raise_fd_limit(int(cfg.imap_fd_limit))
        preload_modules()
        self._drop_privileges()
        ssl_context = self._tls_context()
        self._proxy_ssl_context = self._proxy_tls_context()  # inherited by the serving processes
        if any(listener.tls for listener in listener_sets[0]) and ssl_context is None:
            raise StartupError("imap_listen_tls: implicit-TLS listeners need imap_support_tls = yes")
        if count == 1:
            codes = ResponseCodes.load(str(cfg.data_file_path))
            return self._serve(listener_sets[0], ssl_context, index=0, count=1, siblings=None, ready=None,
                               codes=codes)
        return self._supervise(listener_sets, ssl_context, count)

    def _supervise(self, listener_sets: list[list], ssl_context, count: int) -> int:  # noqa: ANN001
        """imap_process_num > 1: fork the serving processes and look after them (gximap.net.prefork)."""
        from gximap.imap.codes import ResponseCodes
        from gximap.net.listener import close_listener_sets
        from gximap.net.prefork import StartFailed, Supervisor
        from gximap.net.siblings import SiblingChannel

        cfg = self.cfg
        # Open the store once before forking: a store that cannot be opened is a start-up error
        # reported here, and a schema upgrade runs once, not in every process at the same time.
        self._open_store(take_over_removals=False).close()   # the serving processes take them over
        codes = ResponseCodes.load(str(cfg.data_file_path))  # read once; the processes inherit it
        siblings = SiblingChannel.create(count)
        latch = self._signal_latch()

        def serve(index: int, ready) -> int:  # noqa: ANN001
            return self._serve(listener_sets[index], ssl_context, index=index, count=count,
                               siblings=siblings, ready=ready, codes=codes)

        from gximap.lmtp.session import SHUTDOWN_WAIT

        # A process stops in about 3 s (sessions get BYE), LMTP connections finishing a delivery
        # in SHUTDOWN_WAIT; beyond that it is hung and gets SIGKILL.
        supervisor = Supervisor(count, serve, stop_grace=SHUTDOWN_WAIT + 10.0, on_change=self._master_title,
                                on_exit=siblings.announce_gone, on_fork=self._new_process_latch)
        latch.install()  # before the fork: a SIGTERM during start-up stops the processes started
        try:
            supervisor.start()
        except StartFailed as exc:
            close_listener_sets(listener_sets)
            raise StartupError(str(exc)) from None
        self.log.log(gxlog.NOTICE, "gximap %s serving on %s with %d processes (uid %d)",
                     __version__, self._describe(listener_sets[0]), count, os.getuid())
        sd_notify("READY=1")

        def take_reload() -> bool:
            self._note_ignored_signal(latch)
            if not latch.reload or latch.stop:
                return False
            latch.reload = False
            self._reload_config()  # the parent's copy: for its log and the next restart
            return True

        try:
            supervisor.supervise(lambda: latch.stop, take_reload, latch.wait)
        finally:
            sd_notify("STOPPING=1")
            self.log.log(gxlog.NOTICE, "gximap stopping")
            supervisor.stop()
            close_listener_sets(listener_sets)
            if self.mta is not None:
                self.mta.close_listeners()
            siblings.close_sockets()
        return 0

    def _signal_latch(self) -> SignalLatch:
        """The latch the serve (or supervise) loop waits on: the one catching SIGHUP since the
        start of this process, holding a reload asked for meanwhile."""
        if self._latch is None:
            self._latch = SignalLatch()
        return self._latch

    def _new_process_latch(self) -> None:
        """First thing in a forked serving process (SIGHUP blocked until it returns): a latch of
        its own that catches SIGHUP while the process starts, so that a reload forwarded to a
        process being restarted neither ends it nor is lost. The parent's latch stays the
        parent's: its pipe would wake the parent."""
        if self._latch is not None:
            self._latch.wake.close()  # this process's copies of the parent's descriptors
        self._latch = SignalLatch()
        self._latch.catch_reload()

    def _describe(self, listeners: list) -> str:
        """Where gximap serves, for the start-up log line."""
        where = ", ".join(f"{listener.address}{' (tls)' if listener.tls else ''}" for listener in listeners)
        if self.mta is not None and self.mta.enabled:
            where += ", " + self.mta.describe()
        return where

    def _serve(self, listeners: list, ssl_context, *, index: int, count: int, siblings,  # noqa: ANN001
               ready, codes) -> int:  # noqa: ANN001
        """Serve until SIGTERM: the whole of a single-process gximap, or one of several."""
        from gximap.imap.codes import Code
        from gximap.mta import MtaConfigError
        from gximap.net.pool import Server
        from gximap.net.siblings import AddressLedger, ConnectionHandoff

        cfg = self.cfg
        mta = self.mta
        assert mta is not None
        self._process = (index, count)
        if siblings is not None:
            siblings.attach(index)
        self.store = store = self._open_store()
        try:
            self.ctx = ctx = self._make_context(store, codes, siblings)
        except BaseException:
            store.close()  # a clean stop: its marker goes (midb.orphans)
            raise
        if siblings is not None:
            ctx.auth.share_with(siblings)
        gxlog.set_cmd_debug(int(cfg.imap_cmd_debug))
        gxlog.set_io_debug(bool(cfg.io_debug))

        from gximap.net.pool import blocking_section
        from gximap.session.pieces import BULK_WRITERS, EXPIRY_WRITERS
        from gximap.session.session import ImapSession
        from midb.env import set_blocking_hook

        # midb's commit waits step aside in the worker pool (see _RUNNING_TARGET in gximap.net.pool).
        set_blocking_hook(blocking_section)
        ledger = AddressLedger(siblings)
        self.server = server = Server(
            listeners,
            lambda conn, waker: ImapSession(ctx, conn, waker),
            context_num=share(int(cfg.context_num), count, index),   # >= 1: process_count
            thread_init_num=max(1, share(int(cfg.imap_thread_init_num), count, index)),
            thread_charge_num=int(cfg.imap_thread_charge_num),
            conn_timeout=float(cfg.imap_conn_timeout),
            ssl_context=ssl_context,
            busy_response=b"* BYE " + codes.ascii.text(Code.BYE_SERVER_BUSY, cfg.host_id).encode() + b"\r\n",
            proxy_mode=int(cfg.imap_accept_haproxy),
            proxy_trust=list(cfg.imap_haproxy_trust),
            proxy_ssl_context=self._proxy_ssl_context,
            io_errors=bool(cfg.io_errors),
            max_conn_per_ip=int(cfg.imap_max_conn_per_ip),
            address_ledger=ledger,
            shared_listeners=count > 1,
            handoff=(ConnectionHandoff(siblings, ledger, contexts=int(cfg.context_num))
                     if siblings is not None else None),
            on_change=self._title,
        )
        latch = self._signal_latch()
        latch.install()
        if siblings is not None:
            # Every component has registered (AuthService.share_with, the Server's AddressLedger
            # and ConnectionHandoff, the context's UserSessions), and no connection is accepted
            # yet: a sibling drops what it knew of this process when the hello arrives, so the
            # hello must come before any of our updates.
            siblings.say_hello()
        server.start()
        try:
            mta.start(store, ctx.auth, processes=count, index=index, expiry=ctx.expiry)
        except MtaConfigError as exc:
            server.stop(grace=0.0)
            store.close()  # a clean stop: its marker goes, and the next start does not sweep
            raise StartupError(str(exc)) from None
        from midb.orphans import OrphanSweeper

        # After a crash of a process using the store (this server's, or a midb command): its
        # orphan body files go, in a thread (midb.orphans). Before the readiness report only
        # the claim, a directory listing: "serving" in the log means the claims are made.
        sweeper = OrphanSweeper(store)
        sweeper.start()
        if count == 1:
            self.log.log(gxlog.NOTICE, "gximap %s serving on %s (uid %d)", __version__,
                         self._describe(listeners), os.getuid())
        self._title(server.stats())
        if ready is not None:
            ready()
        else:
            sd_notify("READY=1")
        try:
            while not latch.stop:
                latch.wait(1.0)
                self._note_ignored_signal(latch)
                if latch.reload and not latch.stop:
                    latch.reload = False
                    self.reload()
        finally:
            if ready is None:
                sd_notify("STOPPING=1")
                self.log.log(gxlog.NOTICE, "gximap stopping")
            sweeper.stop()   # ends within a batch of files: before the store closes
            mta.stop(grace=3.0)
            server.stop(grace=3.0)
            # The sessions are closed, their bulk writes settled; what they handed the bulk
            # writers as they closed (removing the copies of a COPY cut short) ends before the
            # store closes. A worker that outlived the grace period cannot hand over more.
            BULK_WRITERS.shutdown(final=True)
            ctx.expiry.stopping.set()   # the Trash and Junk expiry of a login: after its batch
            EXPIRY_WRITERS.shutdown(final=True)
            ctx.auth.close()
            if siblings is not None:
                siblings.close()
            store.close()
        return 0

    def _make_context(self, store, codes, siblings=None):  # noqa: ANN001, ANN202
        from gximap.auth.cache import CredentialCache
        from gximap.auth.service import AuthService
        from gximap.session.context import ServerContext
        from gximap.session.userlimit import UserSessions
        from midb.authdb import make_backend

        cfg = self.cfg
        backend = make_backend(str(cfg.auth_backend), store, str(cfg.auth_passwd_file or "") or None)
        auth_map, storage_map = self._name_maps()
        auth = AuthService(
            store,
            backend,
            auth_times=int(cfg.imap_auth_times),
            block_interval=float(cfg.block_interval_auths),
            ip_times=int(cfg.imap_auth_ip_times),
            ip_window=float(cfg.imap_auth_ip_window),
            hash_concurrency=os.cpu_count() or 2,
            auto_create=cfg.auth_backend == "passwd-file",
            auth_map=auth_map,
            storage_map=storage_map,
            cache=CredentialCache(float(cfg.imap_auth_cache_ttl), int(cfg.imap_auth_cache_entries)),
            failure_delay=float(cfg.imap_auth_failure_delay),
        )
        # Its ledger registers with the siblings here, before the hello (_serve).
        return ServerContext(settings_from_config(cfg), store, auth, codes, user_sessions=UserSessions(siblings))

    # -- run time ------------------------------------------------------------------------------

    def _title(self, stats) -> None:  # noqa: ANN001
        index, count = self._process
        if count == 1:
            set_title(f"gximap: {stats.sessions}/{self.cfg.context_num} sessions")
        else:
            set_title(f"gximap: process {index + 1}/{count}: {stats.sessions}/"
                      f"{share(int(self.cfg.context_num), count, index)} sessions")

    def _master_title(self, supervisor) -> None:  # noqa: ANN001
        set_title(f"gximap: master, {len(supervisor.pids)}/{supervisor.count} processes")

    def _reload_config(self) -> Config | None:
        """Re-read the configuration files and reopen the log; None when they are broken. The
        log is reopened first, so that what the reload says goes to the new file, not to the one
        logrotate has just moved away (it sends the SIGHUP for that)."""
        try:
            # The listeners are not reloaded; systemd's, if it passed them, are still in use
            # (their environment variables are gone by now).
            fresh = gxconfig.load_config(self.config_paths, required=True, sockets_inherited=self._imap_activated)
        except gxconfig.ConfigError as exc:
            self._reopen_log(self.cfg)
            self.log.error("reload failed, keeping the running configuration: %s", exc)
            return None
        cfg, needs_restart = self.cfg.reloaded(fresh)
        self._reopen_log(cfg)
        if self._process[0] == 0:  # with several processes, the first one speaks for all
            for name in needs_restart:
                self.log.warning("reload: %s changed; it takes effect after a restart", name)
            exposed = gxconfig.open_proxy_warning(cfg, self._listening)
            if exposed:
                self.log.warning("reload: %s", exposed)
        self.cfg = cfg
        return cfg

    def _note_ignored_signal(self, latch: SignalLatch) -> None:
        name = latch.take_ignored()
        if name is not None:
            self.log.warning("%s ignored: SIGHUP reopens the log and reloads the configuration", name)

    def _flush_auth_cache(self) -> None:
        if self.ctx is not None:
            flushed = self.ctx.auth.flush_cache()
            self.log.info("reload: authentication cache emptied (%d entries)", flushed)

    def _reopen_log(self, cfg: Config) -> None:
        try:
            gxlog.setup_logging(str(cfg.imap_log_file), gxconfig.log_level(cfg))
        except gxlog.LogSetupError as exc:
            self.log.error("reload: %s", exc)

    def reload(self) -> None:
        """SIGHUP: re-read the reloadable directives; sessions stay connected. The
        authentication cache is emptied whether the files read or not: it is the operator's
        way to make every user verify again, which a typo elsewhere must not cancel. A
        configuration that reads but cannot be applied is treated like one that does not read:
        the running one stays (it was applied before, so it applies again), and the daemon
        serves on; a reload must never end it."""
        running = self.cfg
        cfg = self._reload_config()
        if cfg is None:
            self._flush_auth_cache()
            return
        try:
            self._apply(cfg)
        except Exception:
            self.log.exception("reload failed, keeping the running configuration")
            self.cfg = running
            self._reopen_log(running)
            self._apply(running)
            self._flush_auth_cache()
            return
        self._flush_auth_cache()
        self.log.log(gxlog.NOTICE, "configuration reloaded")

    def _apply(self, cfg: Config) -> None:
        """Put the reloadable directives of ``cfg`` into effect. The step that can refuse a value
        (the PROXY trust list) comes first, and changes nothing when it does."""
        if self.server is not None:
            self.server.reconfigure(proxy_mode=int(cfg.imap_accept_haproxy),
                                    proxy_trust=list(cfg.imap_haproxy_trust))
        gxlog.set_cmd_debug(int(cfg.imap_cmd_debug))
        gxlog.set_io_debug(bool(cfg.io_debug))
        if self.ctx is not None:
            self.ctx.reload(settings_from_config(cfg))
            self.ctx.auth.failure_delay = float(cfg.imap_auth_failure_delay)  # the auth socket's too
        if self.mta is not None:
            self.mta.reload(cfg)
