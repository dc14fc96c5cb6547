"""UNIX-domain listeners (gximap.net.listener) and the pool serving them (gximap.net.pool)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from net_helpers import TIMEOUT, Recorder

from gximap.net.listener import ListenerError, ListenerSpec, adopt_listener, bind_listeners
from gximap.net.pool import UNIX_PEER_HOST, Server


def spec(path: Path, **kwargs: object) -> ListenerSpec:
    return ListenerSpec("", 0, False, "lmtp", path=str(path), **kwargs)  # type: ignore[arg-type]


def test_bind_mode_owner_and_close_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lmtp.sock"
    (listener,) = bind_listeners([spec(path, mode=0o640, owner=(os.getuid(), os.getgid()))])
    try:
        assert listener.unix and listener.path == str(path) and listener.port == 0
        assert listener.address == f"unix:{path}"
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o640
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
    finally:
        listener.close()
    assert not path.exists()
    listener.close()  # twice is harmless


def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "auth"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays behind, nobody listens: as after a crash
    (listener,) = bind_listeners([spec(path)])
    try:
        with pytest.raises(ListenerError, match="another process is listening"):
            bind_listeners([spec(path)])
        assert path.exists()
    finally:
        listener.close()


def test_refuses_other_files_relative_and_long_paths(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(ListenerError, match="not a socket"):
        bind_listeners([spec(regular)])
    assert regular.read_text() == "keep me"
    with pytest.raises(ListenerError, match="absolute"):
        bind_listeners([ListenerSpec("", 0, False, path="relative.sock")])
    with pytest.raises(ListenerError, match="longer than"):
        bind_listeners([spec(tmp_path / ("x" * 200))])
    with pytest.raises(ListenerError, match="unix:"):
        bind_listeners([spec(tmp_path / "missing-dir" / "sock")])


def test_a_failure_unbinds_everything(tmp_path: Path) -> None:
    good = tmp_path / "good.sock"
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(ListenerError):
        bind_listeners([spec(good), spec(regular)])
    assert not good.exists()


def test_close_leaves_a_successors_socket_alone(tmp_path: Path) -> None:
    path = tmp_path / "s"
    (first,) = bind_listeners([spec(path)])
    os.unlink(path)  # e.g. an operator removed it, and another instance bound the path anew
    (second,) = bind_listeners([spec(path)])
    try:
        first.close()
        assert path.exists()
    finally:
        second.close()
    assert not path.exists()


def test_adopt_a_unix_listener(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "activated"))
    sock.listen()
    fd = sock.detach()
    listener = adopt_listener(fd, False, "auth")
    try:
        assert listener.unix and listener.kind == "auth" and listener.path.endswith("activated")
    finally:
        listener.close()
    assert (tmp_path / "activated").exists()  # systemd owns a socket it passed in


def test_pool_serves_unix_clients_with_peer_credentials(tmp_path: Path) -> None:
    path = tmp_path / "pool.sock"
    recorder = Recorder()
    server = Server(bind_listeners([spec(path)]), recorder.factory, context_num=2, thread_init_num=1,
                    thread_charge_num=1, conn_timeout=5.0, ssl_context=None, busy_response=b"BUSY\r\n",
                    proxy_mode=2)  # PROXY headers are never expected from UNIX-socket clients
    server.start()
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(TIMEOUT)
            client.connect(str(path))
            assert client.recv(100) == b"* OK test server ready\r\n"
            client.sendall(b"PEER\r\n")
            reply = client.recv(200)
            assert reply.startswith(f"OK {UNIX_PEER_HOST} 0 {path} 0 ".encode()), reply
        handler = recorder.handlers[0]
        assert handler.info.local_host == str(path) and handler.info.listener == "lmtp"
        assert handler.info.extra["peer_pid"] == str(os.getpid())
        assert handler.info.extra["peer_uid"] == str(os.getuid())
    finally:
        server.stop(grace=1.0)
    assert not path.exists()
