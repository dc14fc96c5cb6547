"""imap_process_num: the real gximap with several serving processes under one parent."""

from __future__ import annotations

import contextlib
import functools
import imaplib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import AuthSocketClient, GximapProcess, LineClient, child_pids, free_port
from net_helpers import wait_until

pytestmark = pytest.mark.e2e


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _all_threads_stopped(pid: int) -> bool:
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


@contextlib.contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """Within the block the serving process ``pid`` is stopped (SIGSTOP), every thread of it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        # kill() returns before the stop takes effect; a thread not yet stopped could still
        # accept the next connection and leave it without a greeting.
        assert wait_until(functools.partial(_all_threads_stopped, pid), timeout=10.0)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _admitted_by(server: GximapProcess, client: LineClient) -> list[int]:
    """The processes whose log lines say they admitted ``client``'s connection (each line names
    the process that wrote it: gximap[pid])."""
    marker = f" [127.0.0.1]:{client.port}: accepted on "
    return [int(line.split("gximap[", 1)[1].split("]", 1)[0])
            for line in server.log().splitlines() if marker in line]


def _admitted_only_by(server: GximapProcess, client: LineClient, pid: int) -> bool:
    return _admitted_by(server, client) == [pid]


def _serving(server: GximapProcess) -> list[int]:
    assert server.proc is not None
    return [pid for pid in child_pids(server.proc.pid) if _title(pid).startswith("gximap: process ")]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GximapProcess]:
    # The tests log in to one account from loopback many times (imap_max_conn_per_user_ip: 0).
    proc = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret", "bob": "secret"},
                         extra={"imap_process_num": "2", "context_num": "60",
                                "imap_max_conn_per_user_ip": "0"}).start()
    assert wait_until(lambda: len(_serving(proc)) == 2, timeout=10.0)
    yield proc
    proc.stop()


def _login(port: int, user: str = "alice", source: str = "127.0.0.1") -> LineClient:
    client = LineClient(port, source)
    assert client.readline().startswith(b"* OK")
    assert client.command("a", f"LOGIN {user} secret")[-1].startswith(b"a OK")
    return client


def _login_in(server: GximapProcess, serving: int, stopped: int, user: str = "alice") -> LineClient:
    """A client logged in to the serving process ``serving``. Both processes accept on the same
    socket and which is free first depends on scheduling, so its sibling ``stopped`` is stopped
    (SIGSTOP) meanwhile: ``serving`` must take the connection. Which process took it is read
    from the log."""
    with _stopped(stopped):
        client = _login(server.port, user)
        try:
            assert wait_until(functools.partial(_admitted_only_by, server, client, serving), timeout=10.0), \
                (serving, _admitted_by(server, client), [_title(pid) for pid in _serving(server)])
        except BaseException:
            client.close()
            raise
        return client


def test_parent_and_two_serving_processes_share_the_connections(server: GximapProcess) -> None:
    # The parent retitles itself after its children are running, and they title themselves: the
    # children's titles can appear first.
    parent = server.proc
    assert parent is not None
    assert wait_until(lambda: _title(parent.pid) == "gximap: master, 2/2 processes", timeout=10.0), \
        _title(parent.pid)
    children = _serving(server)
    assert sorted(_title(pid).split(":")[1].strip() for pid in children) == ["process 1/2", "process 2/2"]
    clients: list[LineClient] = []

    def sessions() -> list[int]:
        return [int(_title(pid).rsplit(":", 1)[1].split("/")[0]) for pid in children]

    try:
        # Each process is made the only one free in turn (_login_in). Which process took a
        # connection is read from the log, not from a rise in its session count: that count also holds
        # connections that are not this test's, such as GximapProcess.start's readiness probes
        # (two of them when the start-up is slow), and on a loaded machine the close of one can
        # come after the count was read (flake57).
        for stopped, serving in ((children[0], children[1]), (children[1], children[0])):
            clients.append(_login_in(server, serving, stopped))
        clients += [_login(server.port) for _ in range(22)]
        # The session counts in the titles: every connection, in whichever process took it.
        assert wait_until(lambda: sum(sessions()) == 24, timeout=10.0), [_title(pid) for pid in children]
        assert all(count > 0 for count in sessions())
        # context_num is a total: each process takes half.
        assert all(_title(pid).endswith("/30 sessions") for pid in children)
    finally:
        for client in clients:
            client.close()


def test_a_serving_process_that_dies_is_restarted(server: GximapProcess) -> None:
    victim = _serving(server)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: victim not in _serving(server) and len(_serving(server)) == 2, timeout=10.0)
    assert "ended: killed by SIGKILL; restarting" in server.log()
    for _ in range(6):  # whichever process takes them, logins work
        client = _login(server.port)
        client.close()


def test_sighup_reaches_every_process_and_sigterm_stops_them_all(server: GximapProcess) -> None:
    children = _serving(server)
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    client.login("alice", "secret")
    server.write_config(imap_log_level="5")
    server.signal(signal.SIGHUP)
    assert wait_until(lambda: server.log().count("configuration reloaded") == 2, timeout=10.0)
    assert client.noop()[0] == "OK"
    client.logout()
    # Exit status 0 within the time: a SIGCHLD or SIGTERM handler that took an Event's lock
    # once deadlocked the parent it interrupted (gximap.net.wakeup); the generous timeout is
    # for a slow CI machine, not for that.
    assert server.stop(timeout=30.0) == 0
    assert wait_until(lambda: not any(_alive(pid) for pid in children), timeout=10.0)


def test_serving_processes_stop_when_the_parent_is_killed(server: GximapProcess) -> None:
    children = _serving(server)
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait(5)
    assert wait_until(lambda: not any(_alive(pid) for pid in children), timeout=10.0)


def _login_refused(port: int) -> bool:
    client = LineClient(port)
    try:
        assert client.readline().startswith(b"* OK")
        return client.command("r", "LOGIN alice secret")[-1].startswith(b"r NO")
    finally:
        client.close()


def test_a_user_blocked_in_one_process_is_blocked_in_all(tmp_path: Path) -> None:
    proc = GximapProcess(tmp_path, tls=False, extra={
        "imap_process_num": "2", "imap_auth_times": "2", "block_interval_auths": "1min"}).start()
    try:
        client = LineClient(proc.port)
        assert client.readline().startswith(b"* OK")
        client.command("a", "LOGIN alice wrong")
        client.command("b", "LOGIN alice wrong")
        client.close()
        assert wait_until(lambda: "blocked" in proc.log(), timeout=10.0)
        # The sibling hears of the block by a message, which may take a while on a loaded machine
        # (a fixed pause assumed it did not): each process is made the only one free in turn
        # until it refuses alice, so that both are known to have it before the spread below.
        assert wait_until(lambda: len(_serving(proc)) == 2, timeout=10.0)
        for stopped in _serving(proc):
            with _stopped(stopped):
                assert wait_until(functools.partial(_login_refused, proc.port), timeout=10.0)
        refused = 0
        for _ in range(12):  # spread over both processes: none may let alice in
            client = LineClient(proc.port)
            assert client.readline().startswith(b"* OK")
            reply = client.command("c", "LOGIN alice secret")[-1]
            refused += reply.startswith(b"c NO")
            client.close()
        assert refused == 12
    finally:
        proc.stop()


def test_max_conn_per_ip_counts_connections_in_every_process(tmp_path: Path) -> None:
    proc = GximapProcess(tmp_path, tls=False, extra={
        "imap_process_num": "2", "imap_max_conn_per_ip": "4"}).start()
    try:
        clients = []
        for _ in range(4):
            client = LineClient(proc.port, "127.0.0.9")
            assert client.readline().startswith(b"* OK")
            clients.append(client)
        # The siblings hear of them by a datagram each, and one process may hear before the
        # other (on a loaded machine, hundreds of ms apart). The kernel spreads connections over
        # the processes by a hash of the ports, so several refusals in a row may all come from the
        # process that already knows: wait until six in a row are refused, then six more, all in
        # one retried check (one accepted meanwhile is closed again, so the count goes back to four).

        def turned_away() -> bool:
            probe = LineClient(proc.port, "127.0.0.9")
            try:
                return probe.readline().startswith(b"* BYE")
            finally:
                probe.close()

        assert wait_until(lambda: all(turned_away() for _ in range(12)), timeout=30.0, interval=0.2)
        other = LineClient(proc.port, "127.0.0.10")  # other addresses are not affected
        assert other.readline().startswith(b"* OK")
        other.close()
        for client in clients:
            client.close()
    finally:
        proc.stop()


def test_sessions_per_account_and_address_count_in_every_process(tmp_path: Path) -> None:
    """imap_max_conn_per_user_ip holds for the whole service: each process tells the others of
    the sessions it holds (the context's UserSessions, registered before the hello)."""
    proc = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret", "bob": "secret"}, extra={
        "imap_process_num": "2", "imap_max_conn_per_user_ip": "3"}).start()
    try:
        held = [_login(proc.port, source="127.0.0.9") for _ in range(3)]

        def refused() -> bool:
            client = LineClient(proc.port, "127.0.0.9")
            try:
                assert client.readline().startswith(b"* OK")
                reply = client.command("r", "LOGIN alice secret")[-1]
            finally:
                client.close()
            assert reply.startswith((b"r OK", b"r NO [LIMIT] ")), reply
            return reply.startswith(b"r NO")

        # As for imap_max_conn_per_ip: a sibling hears of a session by a datagram, maybe late on
        # a loaded machine; then fourth logins are refused wherever they land (one let in
        # meanwhile is closed again at once).
        assert wait_until(lambda: all(refused() for _ in range(6)), timeout=15.0)
        assert "LOGIN refused: too many sessions from this address" in proc.log()
        _login(proc.port, "bob", source="127.0.0.9").close()  # another account has its own count
        held.pop().close()  # a session that ends frees its place in every process
        assert wait_until(lambda: not refused(), timeout=15.0)
        for client in held:
            client.close()
    finally:
        proc.stop()


def test_idle_sessions_in_both_processes_hear_of_new_mail(server: GximapProcess) -> None:
    idlers = []
    for number in range(8):
        client = _login(server.port, "bob")
        assert client.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
        client.send(f"i{number} IDLE\r\n".encode())
        assert client.readline().startswith(b"+ ")
        idlers.append(client)
    writer = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    writer.login("bob", "secret")
    assert writer.append("INBOX", None, None, b"Subject: hello\r\n\r\nbody\r\n")[0] == "OK"
    writer.logout()
    for client in idlers:
        assert client.readline() == b"* 1 EXISTS"
        client.send(b"DONE\r\n")
        client.close()


def test_every_context_is_used_before_a_connection_is_refused(tmp_path: Path) -> None:
    """context_num is split between the processes; a process that is full leaves new connections
    to its sibling instead of refusing them, whichever process the kernel wakes first. (The
    clients log in: a session that has not would be displaced by the newcomer instead.)"""
    proc = GximapProcess(tmp_path, tls=False, extra={"imap_process_num": "2", "context_num": "6"}).start()
    try:
        # The steady state: both processes serving (start() returns once one greets). Before,
        # a process still starting could be passed a connection and close it without a word
        # (ConnectionHandoff now offers only to siblings that said hello; test_prefork).
        assert wait_until(lambda: len(_serving(proc)) == 2, timeout=10.0)
        clients = _logged_in(proc, 6)
        extra = LineClient(proc.port)
        assert extra.readline().startswith(b"* BYE")
        extra.close()
        clients.pop().close()
        # The freed context is taken again (by the process that freed it, once it sees the close).
        assert wait_until(lambda: _greeted(proc.port), timeout=10.0)
        for client in clients:
            client.close()
    finally:
        proc.stop()


def _logged_in(proc: GximapProcess, count: int) -> list[LineClient]:
    """``count`` sessions of alice, each greeted and logged in."""
    clients = []
    for _ in range(count):
        client = LineClient(proc.port)
        assert client.readline().startswith(b"* OK")
        client.send(b"l LOGIN alice secret\r\n")
        assert client.readline().startswith(b"l OK")
        clients.append(client)
    return clients


def test_context_num_and_auth_context_num_are_totals_with_three_processes(tmp_path: Path) -> None:
    """4 sessions and 2 auth-socket connections among 3 processes: 4 and 2 in all, not each
    process's part rounded up (2 and 1 each: 6 and 3)."""
    auth_port = free_port()
    proc = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret"}, extra={
        "imap_process_num": "3", "context_num": "4", "auth_listen": f"127.0.0.1:{auth_port}",
        "auth_context_num": "2"}).start()
    clients: list[LineClient] = []
    auth_clients: list[AuthSocketClient] = []
    try:
        assert wait_until(lambda: len(_serving(proc)) == 3, timeout=10.0)
        # Each process has said hello (and so may be passed a connection): its pools are up.
        assert wait_until(lambda: proc.log().count("pool started") >= 3 + 2, timeout=10.0)
        clients += _logged_in(proc, 4)
        extra = LineClient(proc.port)
        assert extra.readline().startswith(b"* BYE")
        extra.close()
        assert all(_auth_handshake(auth_port, auth_clients) for _ in range(2))
        assert not _auth_handshake(auth_port, auth_clients)   # the processes with a share are full
        assert proc.log().count("pool started") == 3 + 2   # the third has no auth-socket pool
    finally:
        for client in clients:
            client.close()
        for auth_client in auth_clients:
            auth_client.close()
        proc.stop()


def _greeted(port: int) -> bool:
    client = LineClient(port)
    try:
        return client.readline().startswith(b"* OK")
    finally:
        client.close()


def _auth_handshake(port: int, clients: list[AuthSocketClient]) -> bool:
    """Whether an auth-socket connection gets its handshake (False: closed, refused busy); the
    client joins ``clients``."""
    try:
        client = AuthSocketClient(port)
    except (AssertionError, OSError):
        return False
    clients.append(client)
    return True


def test_the_auth_socket_is_shared_out_among_the_processes(tmp_path: Path) -> None:
    """auth_context_num is a total, as context_num: each process serves its share, and a full
    one leaves new connections to its sibling instead of refusing them (an MTA's smtpd
    processes each keep a connection open)."""
    auth_port = free_port()
    proc = GximapProcess(tmp_path, tls=False, accounts={"alice": "secret"}, extra={
        "imap_process_num": "2", "auth_listen": f"127.0.0.1:{auth_port}", "auth_context_num": "4"}).start()
    clients: list[AuthSocketClient] = []
    try:
        # Each process's share: 2 contexts (its IMAP pool has 25).
        assert wait_until(lambda: proc.log().count("1 listener(s), 2 contexts") == 2, timeout=10.0)
        assert all(_auth_handshake(auth_port, clients) for _ in range(4))
        assert clients[0].plain(1, "alice", "secret")[:2] == ["OK", "1"]
        assert not _auth_handshake(auth_port, clients)   # both processes full
        clients.pop(0).close()
        assert wait_until(lambda: _auth_handshake(auth_port, clients), timeout=10.0)
    finally:
        for client in clients:
            client.close()
        proc.stop()


def test_the_process_restarted_after_a_kill_sweeps_orphan_body_files_and_a_clean_stop_leaves_none(
        server: GximapProcess) -> None:
    """midb.orphans in the real server: a serving process killed leaves its marker; the one that
    replaces it claims the marker and removes the orphans old enough (here: one planted, as a
    killed APPEND leaves them); after a clean stop, no marker and no sweep at the next start."""
    from midb.blobs import BlobFiles
    from midb.orphans import markers_dir

    writers = markers_dir(str(server.midb))
    assert wait_until(lambda: len(os.listdir(writers)) == 2, timeout=10.0)   # one per serving process
    planted = BlobFiles(str(server.midb / "eml"), fsync=False, create=True)
    orphan = planted.path(planted.write(b"x" * 5000))
    os.utime(orphan, (1, 1))
    victim = _serving(server)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: not os.path.exists(orphan), timeout=20.0)
    assert wait_until(lambda: "removed 1 orphan body files (5000 bytes)" in server.log(), timeout=10.0)
    assert wait_until(lambda: len(os.listdir(writers)) == 2 and not any(
        name.startswith(f"{victim}-") for name in os.listdir(writers)), timeout=10.0)
    assert server.stop() == 0
    assert os.listdir(writers) == []
    server.start()
    try:
        # The parent says it serves once both processes are ready, and they claim before that.
        assert wait_until(lambda: server.log().count(" serving on ") == 2, timeout=10.0)
        assert server.log().count("stopped uncleanly: sweeping") == 1   # after the kill only
    finally:
        server.stop()


def test_notify_sessions_in_both_processes_hear_of_mail_to_another_mailbox(server: GximapProcess) -> None:
    """RFC 5465: MessageNew of a mailbox that is not selected reaches NOTIFY sessions in every
    process as an unsolicited STATUS, between commands (no IDLE, no NOOP)."""
    writer = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    writer.login("bob", "secret")
    assert writer.create("Lists")[0] == "OK"
    first, second = _serving(server)
    # Three watchers in each process: which process takes a connection is left to neither
    # scheduling nor chance (_login_in).
    watchers = [_login_in(server, serving, stopped, "bob")
                for serving, stopped in [(first, second), (second, first)] * 3]
    try:
        for number, client in enumerate(watchers):
            assert client.command(f"n{number}", "NOTIFY SET (personal (MessageNew MessageExpunge))")[-1].startswith(
                f"n{number} OK".encode())
        assert len({pid for client in watchers for pid in _admitted_by(server, client)}) == 2
        assert writer.append("Lists", None, None, b"Subject: hello\r\n\r\nbody\r\n")[0] == "OK"
        writer.logout()
        for client in watchers:
            line = client.readline()
            assert line.startswith(b"* STATUS Lists (MESSAGES 1 UIDNEXT 2 "), line
    finally:
        for client in watchers:
            client.close()


def test_notify_sessions_in_another_process_hear_of_every_mailbox_a_create_made(server: GximapProcess) -> None:
    """RFC 5465 section 5.4 across processes: CREATE p/q/r in one process makes p and p/q too, and
    a MailboxName watcher in the other lists each of them, even when the child was renamed before
    that process heard of any of it (it was stopped meanwhile: the events wait in its socket)."""
    first, second = _serving(server)
    watcher = _login_in(server, first, second, "bob")
    writer = _login_in(server, second, first, "bob")
    try:
        assert watcher.command("n1", "NOTIFY SET (personal (MailboxName))")[-1].startswith(b"n1 OK")
        with _stopped(first):
            assert writer.command("c1", "CREATE p/q/r")[-1].startswith(b"c1 OK")
            assert writer.command("r1", "RENAME p/q/r s")[-1].startswith(b"r1 OK")
        assert [watcher.readline() for _ in range(3)] == [
            b'* LIST (\\HasChildren) "/" p', b'* LIST (\\HasNoChildren) "/" p/q', b'* LIST (\\HasNoChildren) "/" s']
        assert writer.command("c2", "CREATE x/y")[-1].startswith(b"c2 OK")
        assert [watcher.readline() for _ in range(2)] == [
            b'* LIST (\\HasChildren) "/" x', b'* LIST (\\HasNoChildren) "/" x/y']
    finally:
        watcher.close()
        writer.close()


def test_imaplib_client_uses_notify(server: GximapProcess) -> None:
    """A real client: NOTIFY SET STATUS through imaplib, a change by another connection, and the
    STATUS and EXISTS responses it collects at its next command."""
    watcher = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    watcher.login("alice", "secret")
    typ, caps = watcher.capability()
    assert typ == "OK" and b"NOTIFY" in caps[0].split()
    assert watcher.create("Lists")[0] == "OK"
    assert watcher.select("INBOX")[0] == "OK"
    typ, _data = watcher.xatom("NOTIFY", "SET STATUS (selected (MessageNew MessageExpunge))"
                                         " (subtree Lists (MessageNew MessageExpunge))")
    assert typ == "OK"
    assert watcher.untagged_responses.pop("STATUS", None) == [b"Lists (MESSAGES 0 UIDNEXT 1 UIDVALIDITY "
                                                              + _uidvalidity(watcher, "Lists") + b" UNSEEN 0)"]
    writer = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    writer.login("alice", "secret")
    assert writer.append("Lists", None, None, b"Subject: one\r\n\r\nbody\r\n")[0] == "OK"
    assert writer.append("INBOX", None, None, b"Subject: two\r\n\r\nbody\r\n")[0] == "OK"
    writer.logout()
    statuses: list[bytes] = []

    def heard() -> bool:
        watcher.noop()
        statuses.extend(status for status in watcher.untagged_responses.pop("STATUS", [])
                        if isinstance(status, bytes))
        return any(status.startswith(b"Lists (MESSAGES 1 UIDNEXT 2 ") for status in statuses) and \
            b"1" in watcher.untagged_responses.get("EXISTS", [])

    assert wait_until(heard, timeout=10.0)
    assert watcher.xatom("NOTIFY", "NONE")[0] == "OK"
    watcher.logout()


def _uidvalidity(client: imaplib.IMAP4, mailbox: str) -> bytes:
    typ, data = client.status(mailbox, "(UIDVALIDITY)")
    assert typ == "OK"
    first = data[0]
    assert isinstance(first, bytes)
    return first.rsplit(b" ", 1)[1].rstrip(b")")
