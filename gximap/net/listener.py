"""Listening sockets: bind from the configuration, or adopt sockets passed by systemd.

Public API:
    ListenerSpec(host, port, tls, kind="imap", path="", mode=None, owner=None)
    bind_listeners(specs) -> list[BoundListener]   raises ListenerError naming the address
    bind_listener_sets(specs, count) -> list[list[BoundListener]]   one set per serving process
    adopt_listener(fd, tls, kind="imap") -> BoundListener
    systemd_listen_fds(unset_environment=True) -> list[tuple[int, str]]   (fd, name) from LISTEN_FDS
    BoundListener: .sock .tls .kind .unix .path .host .port .address .fileno() .close()

Hosts: an IPv4 or IPv6 literal (brackets allowed), a host name (every address it resolves to is
bound), or "" / "*" / "::" for the wildcard, which binds both "::" and "0.0.0.0" ("::" is
Gromox's default imap_listen_addr, which serves IPv4 clients too). IPv6 sockets are IPV6_V6ONLY
so that "::" and "0.0.0.0" can be bound side by side, as two listeners, whatever the system's
net.ipv6.bindv6only. An address bound twice in one call (the wildcard's half listed on its own
as well) is bound once; twice with different TLS settings is an error.

UNIX-domain stream sockets (LMTP, the Dovecot auth socket): a spec with ``path`` set. A stale
socket file left by a crash is replaced; one a live process still listens on is an error, as is a
path that exists but is not a socket. ``mode`` (e.g. 0o660) and ``owner`` ((uid, gid), -1 keeps
one) are applied to the file right after bind, before the socket listens, so no client can
connect through wider permissions. Closing a bound (not adopted) UNIX listener removes its file
when it is still the same file. Such a listener reports ``host`` = the path and ``port`` = 0.
Accepting connections is the pool's business (gximap.net.pool).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "BoundListener",
    "ListenerError",
    "ListenerSpec",
    "adopt_listener",
    "bind_listener_sets",
    "bind_listeners",
    "close_listener_sets",
    "format_address",
    "systemd_listen_fds",
]

_SD_LISTEN_FDS_START = 3


class ListenerError(Exception):
    """A listening socket could not be set up; the message names the address."""


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    host: str
    port: int
    tls: bool
    kind: str = "imap"
    path: str = ""  # non-empty: a UNIX-domain socket at this path (host and port are ignored)
    mode: int | None = None  # UNIX sockets: permission bits of the socket file
    owner: tuple[int, int] | None = None  # UNIX sockets: (uid, gid) of the socket file; -1 keeps one


@dataclass(eq=False, slots=True)
class BoundListener:
    sock: socket.socket
    tls: bool
    kind: str = "imap"
    # UNIX sockets this process bound: (device, inode) of the file, so close() removes only the
    # file it created (not one a successor bound at the same path meanwhile).
    created: tuple[int, int] | None = None

    @property
    def unix(self) -> bool:
        return self.sock.family == socket.AF_UNIX

    @property
    def path(self) -> str:
        """The socket file of a UNIX listener ("" otherwise, or when unnamed)."""
        if not self.unix:
            return ""
        try:
            name = self.sock.getsockname()
        except OSError:  # closed
            return ""
        return os.fsdecode(name) if isinstance(name, (str, bytes)) else ""

    @property
    def host(self) -> str:
        if self.unix:
            return self.path
        return str(self.sock.getsockname()[0])

    @property
    def port(self) -> int:
        if self.unix:
            return 0
        return int(self.sock.getsockname()[1])

    @property
    def address(self) -> str:
        if self.unix:
            return f"unix:{self.path}"
        return format_address(self.host, self.port)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        path = self.path if self.created is not None else ""
        with contextlib.suppress(OSError):
            self.sock.close()
        if path:
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                if (info.st_dev, info.st_ino) == self.created:
                    os.unlink(path)
            self.created = None


def format_address(host: str, port: int) -> str:
    """``[::1]:143`` / ``127.0.0.1:143``: the form used in messages."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_listeners(specs: Iterable[ListenerSpec]) -> list[BoundListener]:
    """Bind and listen on every spec. On any failure nothing stays bound and ListenerError says
    which address failed and why."""
    bound: list[BoundListener] = []
    tls_by_address: dict[tuple[str, int], bool] = {}
    try:
        for spec in specs:
            if spec.path:
                bound.append(_bind_unix(spec))
                continue
            if not 0 <= spec.port <= 65535:
                raise ListenerError(f"cannot listen on {spec.host}:{spec.port}: port out of range")
            for family, host in _resolve(spec.host, spec.port):
                if spec.port and (host, spec.port) in tls_by_address:
                    if tls_by_address[(host, spec.port)] != spec.tls:
                        raise ListenerError(f"cannot listen on {format_address(host, spec.port)}: "
                                            "listed both with and without implicit TLS")
                    continue
                sock = _bind_one(family, host, spec.port, optional=_is_wildcard(spec.host))
                if sock is not None:
                    bound.append(BoundListener(sock, spec.tls, spec.kind))
                    tls_by_address[(host, spec.port)] = spec.tls
    except BaseException:
        for listener in bound:
            listener.close()
        raise
    return bound


def bind_listener_sets(specs: Iterable[ListenerSpec], count: int) -> list[list[BoundListener]]:
    """``count`` sets of listeners for ``count`` serving processes (imap_process_num).

    Every set holds the same sockets: each address is bound once, before privileges are dropped,
    and every process accepts on it. A new connection wakes the pollers of all processes and the
    first to call accept() takes it, usually the least busy one at that moment. (SO_REUSEPORT,
    one socket per process, was used before: its hash of the client's address spread ten clients
    8 to 2 as often as not, and the busier process held up its clients while the other idled.)
    The parent keeps the sockets, so connections queued while a process restarts are taken by the
    others. The caller closes them with close_listener_sets.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    shared = bind_listeners(specs)
    return [list(shared) for _ in range(count)]


def close_listener_sets(sets: Iterable[Iterable[BoundListener]]) -> None:
    """Close every listener of every set once (UNIX listeners are shared between sets)."""
    seen: set[int] = set()
    for listeners in sets:
        for listener in listeners:
            if id(listener) not in seen:
                seen.add(id(listener))
                listener.close()


def _is_wildcard(host: str) -> bool:
    return host.strip() in ("", "*", "::", "[::]")


def _resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, str]]:
    text = host.strip()
    if _is_wildcard(text):
        return [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        return [(family, text)]
    try:
        infos = socket.getaddrinfo(text, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenerError(f"cannot listen on {format_address(text, port)}: {exc.strerror}") from None
    resolved: list[tuple[socket.AddressFamily, str]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr[0]) not in resolved:
            resolved.append((family, str(sockaddr[0])))
    if not resolved:
        raise ListenerError(f"cannot listen on {format_address(text, port)}: no IP address")
    return resolved


def _bind_one(family: socket.AddressFamily, host: str, port: int, *, optional: bool) -> socket.socket | None:
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if optional and exc.errno == errno.EAFNOSUPPORT:
            return None  # the wildcard on a host without IPv6: IPv4 alone will do
        raise ListenerError(f"cannot listen on {format_address(host, port)}: {exc.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise ListenerError(f"cannot listen on {format_address(host, port)}: {reason}") from None
    return sock


_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes including the terminating NUL


def _bind_unix(spec: ListenerSpec) -> BoundListener:
    path = spec.path
    where = f"unix:{path}"
    if "\0" in path or not path.startswith("/"):
        raise ListenerError(f"cannot listen on {where}: the path must be absolute")
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        raise ListenerError(f"cannot listen on {where}: path longer than {_UNIX_PATH_MAX} bytes")
    _remove_stale_socket(path, where)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenerError(f"cannot listen on {where}: {exc.strerror}") from None
    created: tuple[int, int] | None = None
    try:
        sock.bind(path)
        info = os.lstat(path)
        created = (info.st_dev, info.st_ino)
        if spec.mode is not None:
            os.chmod(path, spec.mode)
        if spec.owner is not None and spec.owner != (-1, -1):
            os.chown(path, spec.owner[0], spec.owner[1], follow_symlinks=False)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if created is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise ListenerError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return BoundListener(sock, spec.tls, spec.kind, created)


def _remove_stale_socket(path: str, where: str) -> None:
    """Remove a socket file nobody listens on any more; refuse to touch anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenerError(f"cannot listen on {where}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ListenerError(f"cannot listen on {where}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # nobody listens: left over from a previous run
    except OSError as exc:
        raise ListenerError(f"cannot listen on {where}: cannot probe the existing socket: "
                            f"{exc.strerror or exc}") from None
    else:
        raise ListenerError(f"cannot listen on {where}: another process is listening there")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ListenerError(f"cannot listen on {where}: cannot remove the stale socket: {exc.strerror}") from None


def adopt_listener(fd: int, tls: bool, kind: str = "imap") -> BoundListener:
    """Wrap an already-listening stream socket (socket activation). Takes ownership of ``fd``
    on success; on failure the descriptor is left open for the caller."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenerError(f"cannot adopt listening socket fd {fd}: {exc.strerror}") from None
    try:
        if sock.type != socket.SOCK_STREAM:
            raise ListenerError(f"cannot adopt fd {fd}: not a stream socket")
        if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            raise ListenerError(f"cannot adopt fd {fd}: not an IPv4/IPv6/UNIX socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ListenerError(f"cannot adopt fd {fd}: socket is not listening")
        sock.setblocking(False)
        sock.set_inheritable(False)
    except OSError as exc:
        sock.detach()  # on failure the descriptor stays the caller's
        raise ListenerError(f"cannot adopt fd {fd}: {exc.strerror}") from None
    except ListenerError:
        sock.detach()
        raise
    return BoundListener(sock, tls, kind)


def systemd_listen_fds(unset_environment: bool = True) -> list[tuple[int, str]]:
    """(fd, name) pairs passed by systemd socket activation (sd_listen_fds(3)); [] if none."""
    try:
        if int(os.environ.get("LISTEN_PID", "0")) != os.getpid():
            return []
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    names = os.environ.get("LISTEN_FDNAMES", "").split(":") if os.environ.get("LISTEN_FDNAMES") else []
    if unset_environment:
        for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(variable, None)
    result = []
    for index in range(max(count, 0)):
        name = names[index] if index < len(names) else "unknown"
        result.append((_SD_LISTEN_FDS_START + index, name))
    return result
