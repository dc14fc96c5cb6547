"""MTA integration services: LMTP delivery (``lmtp_listen``) and the Dovecot-protocol authentication
socket (``auth_listen``), run inside the gximap process.

    mta = MtaServices(cfg)                 # parses the directives; MtaConfigError names the bad one
    mta.bind(activated)                    # as root, with the IMAP listeners (before the privilege drop)
    mta.start(store, auth)                 # after the store is open; uses IMAP's AuthService
    mta.reload(cfg); mta.stop(grace)

Each protocol has a connection pool of its own (gximap.net.pool.Server), not a share of IMAP's:
its own ``*_context_num`` budget (an IMAP flood cannot starve mail delivery, nor the other way
round), its own busy reply (``421`` for LMTP), no PROXY protocol and no per-address connection
limit (the peer is the MTA). Their TCP listeners serve only the peers ``lmtp_listen_allow`` and
``auth_listen_allow`` list (loopback by default): a stranger let in to LMTP could deliver to any
account past the MTA's checks, and the auth socket believes the client address (``rip=``) a peer
sends, so a stranger let in could guess passwords and have the address limits count them against
someone else. The pools are small: one permanent worker each, one more per
``_SESSIONS_PER_WORKER`` contexts, grown on demand like IMAP's. Message copies are written by
separate delivery threads (gximap.lmtp.session), so a pool worker never waits for fsync.

UNIX sockets are created with ``unix_socket_mode`` and owned by ``unix_socket_owner`` (default:
``running_identity``), so that the MTA's user can be let in by group or mode. Removing a socket
file at the stop takes write permission on its directory, not ownership of the file: where
``running_identity`` cannot write there (Postfix's ``private/``), the file stays, and the next
start, as root, replaces it as stale. Under systemd socket activation, sockets named ``lmtp``
and ``auth`` (FileDescriptorName=) are taken instead of binding these addresses; systemd owns
their files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

from gximap import config as gxconfig
from gximap.config import Config
from gximap.net.listener import BoundListener, ListenerError, ListenerSpec, adopt_listener, bind_listeners
from gximap.net.privileges import PrivilegeError, resolve_identity
from midb.expiry import ExpiryThrottle

__all__ = ["MTA_SOCKET_NAMES", "MtaConfigError", "MtaServices"]

log = logging.getLogger("gximap.lmtp")

MTA_SOCKET_NAMES = ("lmtp", "auth")  # systemd FileDescriptorName= values taken by these services
_SESSIONS_PER_WORKER = 4
_MAX_DELIVERY_THREADS = 32
_LMTP_BUSY = b"421 4.3.2 Too many connections, try again later\r\n"


class MtaConfigError(Exception):
    """The LMTP / auth socket configuration cannot be used; the message names the directive."""


def _owner_ids(text: str) -> tuple[int, int]:
    try:
        user, gid, _ = resolve_identity(text)
    except PrivilegeError as exc:
        raise MtaConfigError(str(exc)) from None
    return user.pw_uid, gid


def lmtp_settings_from_config(cfg: Config):  # noqa: ANN201 - gximap.lmtp.session.LmtpSettings
    from gximap.lmtp.session import LmtpSettings

    return LmtpSettings(
        host_id=str(cfg.host_id),
        max_message_size=int(cfg.lmtp_max_message_size),
        max_line_length=int(cfg.lmtp_max_line_length),
        conn_timeout=float(cfg.lmtp_conn_timeout),
        # Copies stored at once: one per connection that can be in DATA, within reason.
        delivery_threads=max(2, min(_MAX_DELIVERY_THREADS, int(cfg.lmtp_context_num))),
    )


def delivery_settings_from_config(cfg: Config):  # noqa: ANN201 - gximap.lmtp.delivery.DeliverySettings
    from gximap.filters import FilterCommand, FilterSyntaxError
    from gximap.lmtp.delivery import DeliverySettings, parse_spam_header

    try:
        spam = parse_spam_header(str(cfg.lmtp_spam_header or ""))
    except ValueError as exc:
        raise MtaConfigError(f"lmtp_spam_header: {exc}") from None
    command_text = str(cfg.imap_filter_command or "").strip()
    command = None
    if command_text:
        try:
            command = FilterCommand.parse(command_text, timeout=float(cfg.imap_filter_timeout))
        except FilterSyntaxError as exc:
            raise MtaConfigError(f"imap_filter_command: {exc}") from None
    if command is not None and not os.access(command.program, os.X_OK):
        log.warning("imap_filter_command: %s is not an executable file (yet); deliveries go to INBOX "
                    "until it is", command.program)
    return DeliverySettings(spam_header=spam, filter=command, autoexpunge=gxconfig.autoexpunge_periods(cfg),
                            received_by=str(cfg.host_id) if cfg.lmtp_add_received_header else None)


class MtaServices:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.lmtp_addresses = self._addresses(cfg, "lmtp_listen")
        self.auth_addresses = self._addresses(cfg, "auth_listen")
        mode_text = str(cfg.unix_socket_mode or "0660")
        self.socket_mode = int(mode_text, 8)
        self.socket_owner: tuple[int, int] | None = None
        if any(isinstance(address, str) for address in (*self.lmtp_addresses, *self.auth_addresses)):
            self.socket_owner = self._socket_owner(cfg)
        # Checked now, so a bad value stops the start rather than the first delivery.
        self._delivery_settings = delivery_settings_from_config(cfg)
        self.lmtp_listeners: list[BoundListener] = []
        self.auth_listeners: list[BoundListener] = []
        self.servers: list[Any] = []
        self._lmtp_ctx: Any = None
        self._auth_ctx: Any = None
        self._lmtp_server: Any = None
        self._auth_server: Any = None

    @staticmethod
    def _socket_owner(cfg: Config) -> tuple[int, int] | None:
        explicit = str(cfg.unix_socket_owner or "").strip()
        source, text = ("unix_socket_owner", explicit) if explicit else \
            ("running_identity", str(cfg.running_identity or "").strip())
        if not text:
            return None
        if os.geteuid() != 0:
            if explicit:
                log.warning("unix_socket_owner ignored: not running as root")
            return None
        try:
            return _owner_ids(text)
        except MtaConfigError as exc:
            raise MtaConfigError(f"{source}: {exc}") from None

    @staticmethod
    def _addresses(cfg: Config, name: str) -> list[tuple[str, int] | str]:
        try:
            return [gxconfig.parse_socket_address(item) for item in cfg[name]]  # type: ignore[union-attr]
        except gxconfig.ValueSyntaxError as exc:
            raise MtaConfigError(f"{name}: {exc}") from None

    @property
    def enabled(self) -> bool:
        return bool(self.lmtp_listeners or self.auth_listeners)

    # -- start-up ---------------------------------------------------------------------------------

    def bind(self, activated: Sequence[tuple[int, str]] = ()) -> None:
        """Bind (or adopt, under socket activation) the listeners; ListenerError names the address."""
        adopted = {name: [fd for fd, fd_name in activated if fd_name == name] for name in MTA_SOCKET_NAMES}
        try:
            self.lmtp_listeners = ([adopt_listener(fd, False, "lmtp") for fd in adopted["lmtp"]]
                                   or bind_listeners(self._specs(self.lmtp_addresses, "lmtp")))
            self.auth_listeners = ([adopt_listener(fd, False, "auth") for fd in adopted["auth"]]
                                   or bind_listeners(self._specs(self.auth_addresses, "auth")))
        except ListenerError:
            self.close_listeners()
            raise

    def _specs(self, addresses: list[tuple[str, int] | str], kind: str) -> list[ListenerSpec]:
        specs = []
        for address in addresses:
            if isinstance(address, str):
                specs.append(ListenerSpec("", 0, False, kind, path=address, mode=self.socket_mode,
                                          owner=self.socket_owner))
            else:
                specs.append(ListenerSpec(address[0], address[1], False, kind))
        return specs

    def start(self, store: Any, auth: Any, *, processes: int = 1, index: int = 0,
              expiry: ExpiryThrottle | None = None) -> None:
        """Create and start the pools (a no-op without listeners). With several serving
        ``processes`` on the same listeners, process ``index`` takes its share of the context
        numbers (totals), and one whose contexts are all taken stops accepting until one is free,
        so that a sibling with room takes the connection instead of this one refusing it. A
        process whose share of a pool is 0 (fewer contexts than processes) runs no such pool:
        its siblings serve those listeners."""
        from gximap.auth.maps import MapSyntaxError, name_map_from_config
        from gximap.authsock.session import AuthSocketContext, AuthSocketSession, AuthSocketSettings
        from gximap.lmtp.delivery import DeliveryAgent
        from gximap.lmtp.session import LmtpContext, LmtpSession
        from gximap.net.pool import Server
        from gximap.net.siblings import share

        cfg = self.cfg
        lmtp_contexts = share(int(cfg.lmtp_context_num), processes, index)
        auth_contexts = share(int(cfg.auth_context_num), processes, index)
        if self.lmtp_listeners and lmtp_contexts:
            try:
                delivery_map = name_map_from_config(cfg, "delivery_map")
            except MapSyntaxError as exc:
                raise MtaConfigError(f"delivery_map: {exc}") from None
            agent = DeliveryAgent(store, delivery_map, self._delivery_settings, expiry)
            lmtp_ctx = self._lmtp_ctx = LmtpContext(lmtp_settings_from_config(cfg), agent)
            self._lmtp_server = Server(
                self.lmtp_listeners, lambda conn, waker: LmtpSession(lmtp_ctx, conn, waker),
                context_num=lmtp_contexts, thread_init_num=1,
                thread_charge_num=_SESSIONS_PER_WORKER, conn_timeout=float(cfg.lmtp_conn_timeout),
                ssl_context=None, busy_response=_LMTP_BUSY, io_errors=bool(cfg.io_errors),
                shared_listeners=processes > 1,
                peer_allow=list(cfg.lmtp_listen_allow), peer_allow_name="lmtp_listen_allow",
            )
            self.servers.append(self._lmtp_server)
        if self.auth_listeners and auth_contexts:
            auth_ctx = self._auth_ctx = AuthSocketContext(
                auth, AuthSocketSettings(insecure_auth=gxconfig.insecure_auth_allowed(cfg),
                                         sasl_scram=bool(cfg.imap_sasl_scram)))
            self._auth_server = Server(
                self.auth_listeners, lambda conn, waker: AuthSocketSession(auth_ctx, conn, waker),
                context_num=auth_contexts, thread_init_num=1,
                thread_charge_num=_SESSIONS_PER_WORKER, conn_timeout=float(cfg.imap_conn_timeout),
                ssl_context=None, busy_response=b"", io_errors=bool(cfg.io_errors),
                shared_listeners=processes > 1,
                peer_allow=list(cfg.auth_listen_allow), peer_allow_name="auth_listen_allow",
            )
            self.servers.append(self._auth_server)
        for server in self.servers:
            server.start()

    def describe(self) -> str:
        parts = [f"lmtp {listener.address}" for listener in self.lmtp_listeners]
        parts += [f"auth {listener.address}" for listener in self.auth_listeners]
        return ", ".join(parts)

    # -- run time ---------------------------------------------------------------------------------

    def reload(self, cfg: Config) -> None:
        """SIGHUP: lmtp_listen_allow, auth_listen_allow, imap_sasl_scram (for the auth socket's
        next handshakes and AUTHs), the filter command, its time-out and the spam header take
        effect at once."""
        # The configuration check parsed the entries as the pool does: these cannot refuse.
        if self._auth_server is not None:
            self._auth_server.reconfigure(peer_allow=list(cfg.auth_listen_allow))
        if self._auth_ctx is not None:
            self._auth_ctx.settings = dataclasses.replace(self._auth_ctx.settings,
                                                          sasl_scram=bool(cfg.imap_sasl_scram))
        if self._lmtp_server is not None:
            self._lmtp_server.reconfigure(peer_allow=list(cfg.lmtp_listen_allow))
        try:
            settings = delivery_settings_from_config(cfg)
        except MtaConfigError as exc:
            log.error("reload: %s; keeping the previous LMTP delivery settings", exc)
            return
        self._delivery_settings = settings
        if self._lmtp_ctx is not None:
            self._lmtp_ctx.agent.settings = settings
        self.cfg = cfg

    def stop(self, grace: float = 3.0) -> None:
        from gximap.lmtp.session import SHUTDOWN_WAIT

        for server in self.servers:
            # LMTP connections finish the copies they are storing before saying goodbye.
            server.stop(grace=max(grace, SHUTDOWN_WAIT + 1.0) if server is self._lmtp_server else grace)
        self.servers = []
        if self._lmtp_ctx is not None:
            self._lmtp_ctx.close()  # copies being stored are finished first
        self.close_listeners()

    def close_listeners(self) -> None:
        """Close (and remove the socket files of) listeners no pool took over."""
        for listener in [*self.lmtp_listeners, *self.auth_listeners]:
            listener.close()
