"""SASL SCRAM-SHA-256 (RFC 5802, RFC 7677): the key maths against RFC 7677's example, message
parsing, the stored keys (midb), and AUTHENTICATE SCRAM-SHA-256 conversations."""

from __future__ import annotations

import base64
import logging
import re

import pytest
from conversation import PASSWORD, Conversation
from scram_client import ScramClient, b64, unb64

from gximap import log as gxlog
from gximap.auth import scram
from gximap.session.base import State
from midb import scram as keys
from midb.authdb import MidbAuth, PasswdFileAuth
from midb.passwords import is_supported_hash, scram_credential_of, verify_password

# RFC 7677 section 3: user "user", password "pencil".
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = ("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _auth_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [re.sub(r"\]:\d+ ", "]:{port} ", record.getMessage())
            for record in caplog.records if record.name == "gximap.auth"]


# -- the maths and the messages ------------------------------------------------------------------


def test_rfc7677_example_checks_out_on_the_server_side():
    credential = keys.derive("pencil", iterations=4096, salt=RFC_SALT)
    first = scram.parse_client_first(RFC_CLIENT_FIRST)
    assert (first.username, first.authzid, first.gs2_header) == ("user", "", "n,,")
    final = scram.parse_client_final(RFC_CLIENT_FINAL)
    assert final.channel_binding == b"n,,"
    assert scram.server_first(final.nonce, credential) == RFC_SERVER_FIRST
    message = scram.auth_message(first, RFC_SERVER_FIRST, final)
    assert scram.verify_proof(credential, message, final.proof) is not None
    assert scram.server_final(credential, message) == RFC_SERVER_FINAL
    wrong = keys.derive("pencil2", iterations=4096, salt=RFC_SALT)
    assert scram.verify_proof(wrong, message, final.proof) is None


def test_credential_text_is_dovecots_and_parses_back():
    credential = keys.derive("pencil", iterations=4096, salt=RFC_SALT)
    text = credential.text()
    iterations, salt, stored, server = text.split(",")
    assert (iterations, salt) == ("4096", "W22ZaJ0SNY7soEsUEjb6gQ==")
    assert len(base64.b64decode(stored)) == len(base64.b64decode(server)) == 32
    assert keys.parse_credential(text) == credential
    assert keys.parse_credential("{SCRAM-SHA-256}" + text) == credential
    assert keys.parse_credential("{SCRAM-SHA-1}" + text) is None
    for broken in ("4095," + text.split(",", 1)[1], "x," + text.split(",", 1)[1], text + ",x",
                   text.replace(stored, "AAAA"), "", "4096,,,", "99999999999," + text.split(",", 1)[1],
                   "\u0664\u0660\u0669\u0666," + text.split(",", 1)[1],  # Arabic-Indic digits: not Dovecot's
                   "\u00b2," + text.split(",", 1)[1]):  # a digit to str.isdigit, none to int()
        assert keys.parse_credential(broken) is None, broken
    assert not verify_password("pencil", "{SCRAM-SHA-256}\u00b2," + text.split(",", 1)[1])  # no ValueError
    assert credential.matches("pencil") and not credential.matches("Pencil")


def test_default_iterations_and_bounds():
    assert keys.derive("x").iterations == keys.DEFAULT_ITERATIONS >= 4096
    with pytest.raises(ValueError):
        keys.derive("x", iterations=4095)
    with pytest.raises(ValueError):
        keys.derive("\udcff")


def test_saslprep_rfc4013_examples():
    assert keys.saslprep("I\u00adX") == "IX"  # soft hyphen mapped to nothing
    assert keys.saslprep("user") == "user"
    assert keys.saslprep("USER") == "USER"
    assert keys.saslprep("\u00aa") == "a"  # NFKC
    assert keys.saslprep("\u2168") == "IX"
    assert keys.saslprep("a\u00a0b") == "a b"  # non-ASCII space to SPACE
    for prohibited in ("\u0007", "\u0627\u0031"):  # a control character; bidi rule broken
        with pytest.raises(keys.SaslPrepError):
            keys.saslprep(prohibited)
    # What SASLprep refuses is hashed as typed (most clients' fallback).
    assert keys.normalize_password("a\u0007") == b"a\x07"


def test_a_password_is_matched_both_saslpreped_and_as_typed():
    """Ours are derived from the SASLprep'd password, Dovecot's from the password as typed."""
    ours = keys.derive("I\u00adX", iterations=4096)
    assert ours.matches("I\u00adX") and ours.matches("IX")
    salted = keys.salted_password("I\u00adX".encode(), RFC_SALT, 4096)
    dovecots = keys.ScramCredential(4096, RFC_SALT, keys.stored_key_of(keys.client_key(salted)),
                                    keys.server_key(salted))
    assert dovecots.matches("I\u00adX") and not dovecots.matches("IX")


@pytest.mark.parametrize("name, decoded", [("user", "user"), ("a=2Cb", "a,b"), ("=3D=2C", "=,"),
                                           ("x=3Dy=3D", "x=y=")])
def test_saslname_escapes(name, decoded):
    assert scram.decode_saslname(name) == decoded
    assert scram.encode_saslname(decoded) == name


@pytest.mark.parametrize("name", ["a=b", "a=2c", "a=", "=3"])
def test_saslname_with_a_bare_equals_is_refused(name):
    with pytest.raises(scram.ScramError):
        scram.decode_saslname(name)


def test_client_first_with_authzid_and_flags():
    first = scram.parse_client_first("y,a=bob=2Cx,n=al=3Dice,r=abc,x=1")
    assert (first.gs2_header, first.authzid, first.username, first.nonce) == ("y,a=bob=2Cx,", "bob,x", "al=ice", "abc")
    assert first.bare == "n=al=3Dice,r=abc,x=1"


@pytest.mark.parametrize("message", [
    "", "n", "n,", "p=tls-unique,,n=user,r=abc", "x,,n=user,r=abc", "n,b=x,n=user,r=abc", "n,a=,n=u,r=a",
    "n,,m=ext,n=user,r=abc", "n,,r=abc,n=user", "n,,n=,r=abc", "n,,n=user", "n,,n=user,r=", "n,,n=user,r=a,b c",
    "n,,n=us=er,r=abc", "n,,n=user,r=" + "a" * 513,
])
def test_malformed_client_first_is_refused(message):
    with pytest.raises(scram.ScramError):
        scram.parse_client_first(message)


@pytest.mark.parametrize("message", [
    "", "c=biws,r=abc", "r=abc,c=biws,p=" + b64(bytes(32)), "c=biws,p=" + b64(bytes(32)),
    "c=b!ws,r=abc,p=" + b64(bytes(32)), "c=biws,r=abc,p=" + b64(bytes(31)), "c=biws,r=abc,p=*",
])
def test_malformed_client_final_is_refused(message):
    with pytest.raises(scram.ScramError):
        scram.parse_client_final(message)


def test_decoy_salts_are_stable_per_name_and_secret():
    decoys = scram.DecoySalts(b"k" * 32)
    assert decoys.credential("nobody").salt == decoys.credential("nobody").salt
    assert decoys.credential("nobody").salt != decoys.credential("nobody2").salt
    assert decoys.credential("nobody").iterations == keys.DEFAULT_ITERATIONS
    assert scram.DecoySalts(b"j" * 32).credential("nobody").salt != decoys.credential("nobody").salt


def test_decoy_salts_outlive_a_restart(tmp_path):
    """A real user's salt never changes, so neither may a decoy's: the secret is the store's
    (Store.site_secret), the same for a new AuthService on the same store (a restart, another
    serving process), and not the one drawn when the process started."""
    from gximap.auth.service import AuthService
    from midb.store import Store

    def salt_after_start() -> bytes:
        store = Store(tmp_path / "midb", fsync=False)
        try:
            service = AuthService(store, MidbAuth(store))
            try:
                return service.scram_lookup("nobody", rhost="[192.0.2.1]:1", mech="SCRAM-SHA-256").credential.salt
            finally:
                service.close()
        finally:
            store.close()

    first = salt_after_start()
    assert salt_after_start() == first
    store = Store(tmp_path / "midb", fsync=False)
    try:
        assert store.site_secret(b"one") == store.site_secret(b"one") != store.site_secret(b"two")
    finally:
        store.close()
    readonly = Store(tmp_path / "fresh", fsync=False)
    readonly.close()
    readonly = Store(tmp_path / "fresh", fsync=False, readonly=True)
    try:
        assert readonly.site_secret(b"one") is None  # none drawn yet, and none may be written
        started = scram.DecoySalts(b"k" * 32).credential("x").salt
        assert scram.DecoySalts(b"k" * 32, source=lambda: None).credential("x").salt == started
    finally:
        readonly.close()


def test_decoy_salts_ask_for_the_lasting_secret_again_after_a_failure(caplog):
    """A store that cannot give the secret once (busy, its disk full) must not leave the salts to
    the start's secret for good: it is asked again at a use SECRET_RETRY_INTERVAL later (not at
    each one before), the start's secret serving the uses between; once had, it is kept."""
    now = [100.0]
    answers: list[bytes | Exception | None] = [OSError("lock timeout"), None, b"L" * 32]
    asked = []

    def source() -> bytes | None:
        asked.append(now[0])
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    started = scram.DecoySalts(b"k" * 32).credential("x").salt
    lasting = scram.DecoySalts(b"L" * 32).credential("x").salt
    decoys = scram.DecoySalts(b"k" * 32, source=source, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="gximap.auth.scram"):
        assert decoys.credential("x").salt == decoys.credential("x").salt == started and asked == [100.0]
        now[0] += scram.SECRET_RETRY_INTERVAL - 0.5
        assert decoys.credential("x").salt == started and asked == [100.0]  # not yet
        now[0] += 0.5
        assert decoys.credential("x").salt == started and len(asked) == 2  # asked: a read-only store's None
        now[0] += scram.SECRET_RETRY_INTERVAL
        assert decoys.credential("x").salt == lasting and len(asked) == 3
        now[0] += 1000
        assert decoys.credential("x").salt == lasting and len(asked) == 3  # kept, never asked again
        decoys.share_secret(b"c" * 32)  # the siblings' secret is the fallback only
        assert decoys.credential("x").salt == lasting
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "lock timeout" in warnings[0]


def test_decoy_salts_wait_for_the_lasting_secret_being_read():
    """Lookups run on several threads: one that comes while the first use still reads the
    lasting secret waits for it. It took the start's secret, and that name's salt changed
    between two attempts, as no real user's does."""
    import threading

    reading, go = threading.Event(), threading.Event()

    def slow_source() -> bytes:
        reading.set()
        go.wait()
        return b"L" * 32

    decoys = scram.DecoySalts(b"k" * 32, source=slow_source)
    salts: dict[str, bytes] = {}

    def look(key: str) -> None:
        salts[key] = decoys.credential("nobody").salt

    first = threading.Thread(target=look, args=("first",))
    first.start()
    assert reading.wait(10)
    second = threading.Thread(target=look, args=("second",))
    second.start()
    second.join(1)  # unblocked, it would be done by now
    go.set()
    first.join(10)
    second.join(10)
    assert salts["first"] == salts["second"] == scram.DecoySalts(b"L" * 32).credential("nobody").salt


def test_decoy_iterations_are_drawn_like_the_real_users():
    """Keys imported from Dovecot keep its 4096 iterations until a password login (never, for a
    client that speaks only SCRAM, or a passwd-file's): a decoy that always said 100,000 told
    every such name from an unknown one. Each name draws a count with the census's odds, the
    same at every ask; as low counts become fewer, the names that move go up, as real keys do."""
    names = [f"user{number}" for number in range(2000)]
    census = {4096: 3, keys.DEFAULT_ITERATIONS: 1}
    now = [0.0]
    counted = []

    def population() -> dict[int, int]:
        counted.append(now[0])
        return dict(census)

    decoys = scram.DecoySalts(b"k" * 32, population=population, clock=lambda: now[0])
    drawn = {name: decoys.credential(name).iterations for name in names}
    assert set(drawn.values()) == {4096, keys.DEFAULT_ITERATIONS}
    assert 0.70 < sum(count == 4096 for count in drawn.values()) / len(names) < 0.80
    assert all(decoys.credential(name).iterations == count for name, count in drawn.items())
    assert counted == [0.0]  # one census, used until CENSUS_INTERVAL is over
    census.update({4096: 1, keys.DEFAULT_ITERATIONS: 3})
    now[0] += scram.CENSUS_INTERVAL
    # Due again: taken in the background, the ask that finds it due answering from the old one.
    assert decoys.credential("user7").iterations == drawn["user7"]
    decoys.census_settled()
    after = {name: decoys.credential(name).iterations for name in names}
    assert counted == [0.0, scram.CENSUS_INTERVAL]
    assert 0.20 < sum(count == 4096 for count in after.values()) / len(names) < 0.30
    assert all(after[name] == keys.DEFAULT_ITERATIONS for name, count in drawn.items()
               if count == keys.DEFAULT_ITERATIONS)  # none went down
    # Another process (the same secret, the same census) answers the same.
    assert scram.DecoySalts(b"k" * 32, population=lambda: dict(census)).credential("user7").iterations == \
        after["user7"]
    # No census (another backend), an empty one, or one that fails: the default count.
    assert scram.DecoySalts(b"k" * 32).credential("user7").iterations == keys.DEFAULT_ITERATIONS
    assert scram.DecoySalts(b"k" * 32, population=dict).credential("user7").iterations == keys.DEFAULT_ITERATIONS

    def failing() -> dict[int, int]:
        raise OSError("lock timeout")

    assert scram.DecoySalts(b"k" * 32, population=failing).credential("x").iterations == keys.DEFAULT_ITERATIONS


def test_a_census_that_fails_again_keeps_the_one_in_hand():
    """Store trouble when the census is due again: the one in hand stays (no name's count
    moves), and it is asked again SECRET_RETRY_INTERVAL later, not CENSUS_INTERVAL."""
    now = [0.0]
    answers: list[dict[int, int] | None] = [{4096: 1}, None, {keys.DEFAULT_ITERATIONS: 1}]
    asked: list[float] = []

    def population() -> dict[int, int]:
        asked.append(now[0])
        answer = answers.pop(0)
        if answer is None:
            raise OSError("lock timeout")
        return answer

    decoys = scram.DecoySalts(b"k" * 32, population=population, clock=lambda: now[0])
    assert decoys.credential("x").iterations == 4096
    now[0] = scram.CENSUS_INTERVAL
    decoys.keep_census_current()
    decoys.census_settled()
    assert decoys.credential("x").iterations == 4096  # the failed retake kept the census in hand
    now[0] += scram.SECRET_RETRY_INTERVAL
    decoys.keep_census_current()
    decoys.census_settled()
    assert decoys.credential("x").iterations == keys.DEFAULT_ITERATIONS
    assert asked == [0.0, scram.CENSUS_INTERVAL, scram.CENSUS_INTERVAL + scram.SECRET_RETRY_INTERVAL]


def test_backends_count_their_keys_by_iterations(tmp_path):
    from midb.passwords import hash_password
    from midb.store import Store

    store = Store(tmp_path / "midb", fsync=False)
    try:
        store.create_account("alice", password_hash=hash_password("a"), scram_sha256=keys.derive("a").text())
        store.create_account("bob", password_hash="{SCRAM-SHA-256}" + keys.derive("b", iterations=4096).text())
        store.create_account("carol", password_hash=hash_password("c"))  # no keys yet
        store.create_account("dave")  # no password
        assert MidbAuth(store).scram_iteration_counts() == {keys.DEFAULT_ITERATIONS: 1, 4096: 1}
    finally:
        store.close()
    entry = "{SCRAM-SHA-256}" + keys.derive("pencil", iterations=4096).text()
    path = tmp_path / "passwd"
    path.write_text(f"carol:{entry}\ndave:{{PLAIN}}pencil\nerin:{entry}::::::nopassword\nfrank:{entry}\n")
    assert PasswdFileAuth(path).scram_iteration_counts() == {4096: 2}


# -- stored keys (midb) -------------------------------------------------------------------------------


def test_dovecot_scram_hash_is_a_password_hash_and_a_credential():
    credential = keys.derive("pencil", iterations=4096, salt=RFC_SALT)
    stored = "{SCRAM-SHA-256}" + credential.text()
    assert is_supported_hash(stored)
    assert not is_supported_hash("{SCRAM-SHA-256}4096,bad")
    assert verify_password("pencil", stored) and not verify_password("pencil!", stored)
    assert not verify_password("pencil", "{SCRAM-SHA-256}12,a,b,c")  # malformed: refused, no exception
    assert scram_credential_of(stored) == credential
    assert scram_credential_of("{SSHA}abc") is None


def test_new_password_drops_the_old_keys_and_login_derives_new_ones(tmp_path):
    with Conversation(tmp_path) as conv:
        store = conv.store
        assert store.get_account("alice").scram_sha256  # Conversation sets them as a password set does
        from midb.passwords import hash_password

        store.update_account("alice", password_hash=hash_password("other"))
        assert store.get_account("alice").scram_sha256 is None
        assert MidbAuth(store).scram_keys("alice") is None
        assert MidbAuth(store).scram_failure_reason("alice").startswith("no SCRAM keys")
        assert MidbAuth(store).authenticate("alice", "other") == "alice"  # the login derives them
        found = MidbAuth(store).scram_keys("alice")
        assert found is not None and found.may_log_in and found.credential.matches("other")
        assert found.credential.iterations == keys.DEFAULT_ITERATIONS
        # An imported {SCRAM-SHA-256} hash: keys at once; the first login rehashes to scrypt.
        imported = "{SCRAM-SHA-256}" + keys.derive("pencil", iterations=4096).text()
        store.update_account("alice", password_hash=imported)
        assert MidbAuth(store).scram_keys("alice").credential.iterations == 4096
        assert MidbAuth(store).authenticate("alice", "pencil") == "alice"
        account = store.get_account("alice")
        assert account.password_hash.startswith("$scrypt$") and keys.parse_credential(account.scram_sha256)
        store.update_account("alice", disabled=True)
        assert not MidbAuth(store).scram_keys("alice").may_log_in


@pytest.mark.parametrize("stored", ["{PLAIN}old", "scrypt"])
def test_a_login_never_stores_the_old_passwords_keys_over_a_new_one(tmp_path, monkeypatch, stored):
    """A login's upgrade (new SCRAM keys, and a rehash for a weak scheme) is derived from the
    password it checked; a password set meanwhile (midb user passwd) must stay, with its keys.
    Written unconditionally, the old password's keys (and hash) replaced the new password's, and
    whoever knew the old one kept logging in with it."""
    from midb import authdb
    from midb.passwords import hash_password, password_credentials

    with Conversation(tmp_path) as conv:
        store = conv.store
        store.update_account("alice", password_hash=stored if stored != "scrypt" else hash_password("old"))
        derive = authdb.derive

        def password_set_meanwhile(password, **kwargs):
            new_hash, new_keys = password_credentials("new")
            store.update_account("alice", password_hash=new_hash, scram_sha256=new_keys)
            return derive(password, **kwargs)

        monkeypatch.setattr(authdb, "derive", password_set_meanwhile)
        assert MidbAuth(store).authenticate("alice", "old") == "alice"  # right when it was checked
        account = store.get_account("alice")
        assert verify_password("new", account.password_hash) and not verify_password("old", account.password_hash)
        credential = keys.parse_credential(account.scram_sha256)
        assert credential.matches("new") and not credential.matches("old")


def test_store_refuses_malformed_keys(tmp_path):
    from midb.errors import InvalidArgument

    with Conversation(tmp_path) as conv, pytest.raises(InvalidArgument):
        conv.store.update_account("alice", scram_sha256="1,2,3")


def test_passwd_file_serves_scram_only_for_scram_entries(tmp_path):
    entry = "{SCRAM-SHA-256}" + keys.derive("pencil", iterations=4096).text()
    path = tmp_path / "passwd"
    path.write_text(f"carol:{entry}\ndave:{{PLAIN}}pencil\nerin:{entry}::::::nopassword\n")
    backend = PasswdFileAuth(path)
    carol = backend.scram_keys("Carol")
    assert carol is not None and carol.account == "carol" and carol.may_log_in
    assert backend.authenticate("carol", "pencil") == "carol"  # PLAIN against the same entry
    assert backend.scram_keys("dave") is None
    assert backend.scram_failure_reason("dave") == "passwd-file entry is not a {SCRAM-SHA-256} hash"
    assert backend.scram_keys("erin") is None and backend.scram_keys("nobody") is None
    assert backend.scram_failure_reason("nobody") == "unknown user"


# -- conversations ------------------------------------------------------------------------------------


@pytest.fixture
def conv(tmp_path):
    with Conversation(tmp_path, users=("alice", "bob"), sasl_scram=True) as conversation:
        yield conversation


def _exchange(conv: Conversation, client: ScramClient, *, initial: bool = False, tag: str = "a1") -> list[bytes]:
    """Run an exchange to its end; the server's last lines (the tagged answer)."""
    if initial:
        lines = conv.send(f"{tag} AUTHENTICATE SCRAM-SHA-256 {b64(client.first())}\r\n".encode())
    else:
        assert conv.send(f"{tag} AUTHENTICATE SCRAM-SHA-256\r\n".encode()) == [b"+ "]
        lines = conv.send(b64(client.first()).encode() + b"\r\n")
    if not lines[0].startswith(b"+ "):
        return lines
    lines = conv.send(b64(client.final(unb64(lines[0]))).encode() + b"\r\n")
    if not lines[0].startswith(b"+ "):
        return lines
    assert client.check_server_final(unb64(lines[0]))
    return conv.send(b"\r\n")


def test_full_exchange_logs_in(conv, caplog):
    client = ScramClient("alice", PASSWORD)
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        server_first = conv.send(f"a1 AUTHENTICATE SCRAM-SHA-256 {b64(client.first())}\r\n".encode())[0]
        assert client.check_server_final(unb64(conv.send(b64(client.final(unb64(server_first))).encode() + b"\r\n")[0]))
        assert _auth_lines(caplog) == []  # not logged in until the client answers the server's proof
        lines = conv.send(b"\r\n")
    assert lines[0].startswith(b"a1 OK [CAPABILITY IMAP4rev1 ") and lines[0].endswith(b"] Logged in")
    assert conv.session.state is State.AUTHENTICATED and conv.session.user == "alice"
    assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=alice SCRAM-SHA-256 ok"]


def test_sasl_ir_and_the_user_name_spelt_otherwise(conv):
    assert _exchange(conv, ScramClient("ALICE", PASSWORD), initial=True)[0].startswith(b"a1 OK ")
    assert conv.session.user == "alice"


def test_gs2_flag_y_is_accepted(conv):
    assert _exchange(conv, ScramClient("alice", PASSWORD, flag="y"))[0].startswith(b"a1 OK ")


def test_wrong_proof_is_a_wrong_password(conv, caplog):
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        lines = _exchange(conv, ScramClient("alice", "wrong"))
    assert lines == [b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert conv.session.auth_failures == conv.session.password_failures == 1
    # The line fail2ban's filter counts, as for a wrong PLAIN password.
    assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=alice SCRAM-SHA-256 rejected: bad password"]


def _server_first(conv: Conversation, name: str, tag: str) -> dict[str, str]:
    line = conv.send(f"{tag} AUTHENTICATE SCRAM-SHA-256 {b64(ScramClient(name, 'x').first())}\r\n".encode())[0]
    conv.send(b"*\r\n")
    return dict(part.split("=", 1) for part in unb64(line).decode().split(","))


def test_unknown_user_cannot_be_told_apart(tmp_path, caplog):
    with Conversation(tmp_path, users=("alice",), sasl_scram=True) as conv:
        # alice's keys at the default iteration count, as a password set now gets them.
        conv.store.update_account("alice", scram_sha256=keys.derive(PASSWORD).text())
        known, unknown = _server_first(conv, "alice", "a1"), _server_first(conv, "nobody", "a2")
        assert unknown["s"] == _server_first(conv, "nobody", "a3")["s"]  # the same salt each time
        assert known["s"] == _server_first(conv, "alice", "a4")["s"]
        assert unknown["s"] != _server_first(conv, "nobody2", "a5")["s"]
        assert unknown["i"] == known["i"] == str(keys.DEFAULT_ITERATIONS)
        assert len(base64.b64decode(unknown["s"])) == len(base64.b64decode(known["s"]))
        with caplog.at_level(logging.INFO, logger="gximap.auth"):
            answer_unknown = _exchange(conv, ScramClient("nobody", PASSWORD), tag="b1")
            answer_wrong = _exchange(conv, ScramClient("alice", "wrong"), tag="b2")
        assert answer_unknown == [b"b1 NO [AUTHENTICATIONFAILED] Authentication failed"]
        assert answer_wrong == [b"b2 NO [AUTHENTICATIONFAILED] Authentication failed"]
        assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=nobody SCRAM-SHA-256 rejected: unknown user",
                                       "rhost=[192.0.2.1]:{port} user=alice SCRAM-SHA-256 rejected: bad password"]


def test_unknown_users_answer_the_iteration_count_the_real_ones_have(conv):
    """Every account here has keys of 4096 iterations (as a Dovecot import would): an unknown
    name says 4096 too, where it said 100,000 and so told every real name apart."""
    assert {_server_first(conv, name, f"a{number}")["i"] for number, name in enumerate(
        ("alice", "bob", "nobody", "nobody2", "carol"))} == {"4096"}


def test_the_iteration_census_is_taken_at_the_first_scram_lookup_of_any_name(tmp_path, monkeypatch):
    """The census reads the whole account table (MidbAuth.scram_iteration_counts): it is taken
    at the process's first SCRAM lookup, whichever name asks (a census waited for only by made-up
    answers made them slower than a real user's, telling names apart), and then kept
    (CENSUS_INTERVAL); never for a password login, nor while SCRAM is not offered."""
    taken: list[str] = []
    census = MidbAuth.scram_iteration_counts

    def counting(self: MidbAuth) -> dict[int, int]:
        taken.append("census")
        return census(self)

    monkeypatch.setattr(MidbAuth, "scram_iteration_counts", counting)
    with Conversation(tmp_path / "off", users=("alice",)) as conv:
        assert conv.send(f"a1 AUTHENTICATE SCRAM-SHA-256 {b64(ScramClient('nobody', PASSWORD).first())}\r\n"
                         .encode())[0].startswith(b"a1 NO ")
        assert conv.send(b"a2 LOGIN alice wrong\r\n")[0].startswith(b"a2 NO ")
    assert taken == []
    with Conversation(tmp_path / "on", users=("alice", "bob"), sasl_scram=True) as conv:
        assert conv.send(b"a0 LOGIN alice wrong\r\n")[0].startswith(b"a0 NO ")
        assert taken == []
        assert _exchange(conv, ScramClient("alice", PASSWORD))[0].startswith(b"a1 OK ")
        assert taken == ["census"]  # a real user's first exchange takes it
        conv.command("UNAUTHENTICATE")
        conv.store.update_account("bob", scram_sha256=None)
        answered = {_server_first(conv, name, tag)["i"] for name, tag in (("nobody", "a4"), ("bob", "a5"),
                                                                            ("nobody2", "a6"))}
        assert answered == {"4096"} and taken == ["census"]  # kept for the made-up answers


def test_imported_low_iteration_keys_are_derived_anew_at_the_next_password_login(conv):
    """A Dovecot {SCRAM-SHA-256} hash serves SCRAM with its own count (4096) until the account's
    next LOGIN or PLAIN login, which knows the password: its keys are then derived at 100,000."""
    conv.store.update_account("alice", password_hash="{SCRAM-SHA-256}" + keys.derive(PASSWORD, iterations=4096).text())
    assert _server_first(conv, "alice", "a1")["i"] == "4096"
    assert _exchange(conv, ScramClient("alice", PASSWORD), tag="a2")[0].startswith(b"a2 OK ")
    conv.command("UNAUTHENTICATE")
    assert _server_first(conv, "alice", "a3")["i"] == "4096"  # a SCRAM login cannot: no password
    assert conv.send(b"a4 AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice\0" + PASSWORD.encode()) + b"\r\n")[0] \
        .startswith(b"a4 OK ")
    conv.command("UNAUTHENTICATE")
    assert _server_first(conv, "alice", "a5")["i"] == str(keys.DEFAULT_ITERATIONS)
    account = conv.store.get_account("alice")
    assert account.password_hash.startswith("$scrypt$")
    assert keys.parse_credential(account.scram_sha256).iterations == keys.DEFAULT_ITERATIONS
    assert _exchange(conv, ScramClient("alice", PASSWORD), tag="a6")[0].startswith(b"a6 OK ")


def test_account_without_keys_fails_like_a_wrong_password(conv, caplog):
    conv.store.update_account("bob", scram_sha256=None)
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert _exchange(conv, ScramClient("bob", PASSWORD))[0].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert "bob SCRAM-SHA-256 rejected: no SCRAM keys" in _auth_lines(caplog)[0]
    conv.command("LOGIN bob secret")  # the login derives them ...
    conv.command("UNAUTHENTICATE")
    assert _exchange(conv, ScramClient("bob", PASSWORD), tag="a2")[0].startswith(b"a2 OK ")  # ... for SCRAM


@pytest.mark.parametrize("step", ["before client-first", "at server-first", "at server-final"])
def test_cancel_at_each_step(conv, step, caplog):
    """"*" cancels wherever the server waits (BAD, as for PLAIN); after the server-final too,
    where the login was decided: it does not happen, and its place is free again. Logged as
    any cancel is (the BAD, for imap_cmd_debug), never as a login: the right proof's "ok" line
    waited for the client's answer, and a cancel counts as no failed login."""
    client = ScramClient("alice", PASSWORD)
    with caplog.at_level(logging.DEBUG):
        gxlog.set_cmd_debug(1)
        try:
            assert conv.send(b"a1 AUTHENTICATE SCRAM-SHA-256\r\n") == [b"+ "]
            if step != "before client-first":
                server_first = conv.send(b64(client.first()).encode() + b"\r\n")[0]
                if step == "at server-final":
                    assert conv.send(b64(client.final(unb64(server_first))).encode() + b"\r\n")[0].startswith(b"+ ")
            assert conv.send(b"*\r\n") == [b"a1 BAD Authentication cancelled"]
        finally:
            gxlog.set_cmd_debug(0)
    assert conv.session.state is State.NOT_AUTHENTICATED
    assert conv.session.auth_failures == 0
    assert conv.ctx.user_sessions.count("alice", "192.0.2.1") == 0
    assert _auth_lines(caplog) == []
    assert [record.getMessage() for record in caplog.records if record.name == "gximap.cmd"] == [
        f"cmd conn={conv.session.id} rhost=[192.0.2.1]:{conv.session.conn.peer_port} user=- BAD: "
        "a1 AUTHENTICATE SCRAM-SHA-256"]


@pytest.mark.parametrize("message", [b"n,,n=alice", b"p=tls-unique,,n=alice,r=abc", b"n,,m=x,n=alice,r=abc",
                                     b"", b"\xff\xfe"])
def test_malformed_client_first_fails(conv, message, caplog):
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        lines = conv.send(f"a1 AUTHENTICATE SCRAM-SHA-256 {b64(message) if message else '='}\r\n".encode())
    assert lines == [b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert conv.session.auth_failures == 1
    assert "SCRAM-SHA-256 rejected: SCRAM client-first: " in _auth_lines(caplog)[0]


def test_bad_base64_is_bad(conv):
    assert conv.send(b"a1 AUTHENTICATE SCRAM-SHA-256\r\n") == [b"+ "]
    assert conv.send(b"not*base64!\r\n") == [b"a1 BAD [CLIENTBUG] Invalid base64 data"]


@pytest.mark.parametrize("tamper", ["nonce", "binding", "garbage"])
def test_malformed_or_tampered_client_final_fails(conv, tamper, caplog):
    client = ScramClient("alice", PASSWORD)
    first = conv.send(f"a1 AUTHENTICATE SCRAM-SHA-256 {b64(client.first())}\r\n".encode())[0]
    final = client.final(unb64(first))
    if tamper == "nonce":
        final = final.replace(b",r=fyko", b",r=fykO")
    elif tamper == "binding":
        final = final.replace(b"c=biws", b"c=eSws")  # "y,,"
    else:
        final = b"c=biws"
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        lines = conv.send(b64(final).encode() + b"\r\n")
    assert lines == [b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert conv.session.password_failures == 1
    assert "alice SCRAM-SHA-256 rejected: SCRAM client-final: " in _auth_lines(caplog)[0]


def test_authzid_impersonation_follows_plains_rules(conv, caplog):
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert _exchange(conv, ScramClient("alice", PASSWORD, authzid="bob")) == [
            b"a1 NO [AUTHORIZATIONFAILED] Not authorized to access that mailbox"]
    assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=alice!bob SCRAM-SHA-256 refused: no store ownership"]
    conv.store.grant_owner("bob", "alice")
    assert _exchange(conv, ScramClient("alice", PASSWORD, authzid="bob"), tag="a2")[0].startswith(b"a2 OK ")
    assert conv.session.user == "bob" and conv.session.actor == "alice"


def test_bang_impersonation_and_authzid_equal_to_the_user(tmp_path):
    with Conversation(tmp_path, users=("alice", "bob"), sasl_scram=True) as conv:
        conv.store.grant_owner("bob", "alice")
        assert _exchange(conv, ScramClient("alice!bob", PASSWORD))[0].startswith(b"a1 OK ")
        assert conv.session.user == "bob" and conv.session.actor == "alice"
    with Conversation(tmp_path / "2", users=("alice",), sasl_scram=True) as conv:
        assert _exchange(conv, ScramClient("alice", PASSWORD, authzid="alice"))[0].startswith(b"a1 OK ")
        assert conv.session.user == "alice" and conv.session.actor is None


def test_wrong_proofs_block_the_user_as_wrong_passwords_do(tmp_path, caplog):
    with Conversation(tmp_path, users=("alice", "bob"), auth_times=3, sasl_scram=True) as conv:
        with caplog.at_level(logging.INFO, logger="gximap.auth"):
            for number in (1, 2):
                assert _exchange(conv, ScramClient("alice", "wrong"), tag=f"a{number}")[0].startswith(
                    f"a{number} NO [AUTHENTICATIONFAILED]".encode())
            assert _exchange(conv, ScramClient("alice", "wrong"), tag="a3") == [
                b"a3 NO [AUTHENTICATIONFAILED] Authentication failed",
                b"* BYE Too many failed logins, closing connection"]
        assert "rhost=[192.0.2.1]:{port} user=alice blocked for 60s: too many failed logins" in _auth_lines(caplog)
        # Blocked now, on another connection: the right proof is refused, as the right password is.
        other = conv.second_session()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gximap.auth"):
            assert _exchange(other, ScramClient("alice", PASSWORD), tag="b1") == [
                b"b1 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"]
            assert _exchange(other, ScramClient("alice", "wrong"), tag="b2") == [
                b"b2 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"]
        assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=alice SCRAM-SHA-256 refused: user blocked"] * 2
        assert other.session.password_failures == 0
        assert _exchange(other, ScramClient("bob", PASSWORD), tag="b3")[0].startswith(b"b3 OK ")


def test_a_right_proof_the_cache_holds_passes_a_user_block(tmp_path):
    from gximap.auth.cache import CredentialCache

    with Conversation(tmp_path, users=("alice",), auth_times=2, sasl_scram=True,
                      auth_cache=CredentialCache(300, 100)) as conv:
        assert _exchange(conv, ScramClient("alice", PASSWORD))[0].startswith(b"a1 OK ")
        conv.ctx.auth.block_user("alice", "test")
        other = conv.second_session()
        assert _exchange(other, ScramClient("alice", PASSWORD), tag="b1")[0].startswith(b"b1 OK ")
        third = conv.second_session()
        assert _exchange(third, ScramClient("alice", "wrong"), tag="c1") == [
            b"c1 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"]
        # A PLAIN password the cache does not hold stays refused: the SCRAM entry is its own.
        assert third.send(b"c2 LOGIN alice secret\r\n")[0].startswith(b"c2 NO [AUTHENTICATIONFAILED] Too many")


def _count_key_reads(conv: Conversation, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names whose SCRAM keys the backend is asked for from now on."""
    backend = conv.ctx.auth.backend
    assert isinstance(backend, MidbAuth)
    asked: list[str] = []
    original = backend.scram_keys

    def scram_keys(user: str):
        asked.append(user)
        return original(user)

    monkeypatch.setattr(backend, "scram_keys", scram_keys)
    return asked


def test_a_blocked_user_is_refused_at_the_client_first_its_keys_unread(tmp_path, caplog, monkeypatch):
    """Without a credential cache no proof gets through a user block, so the exchange is refused
    at its first message, as PLAIN is at its one: the same answer and log line, no keys read."""
    with Conversation(tmp_path, users=("alice",), sasl_scram=True) as conv:
        asked = _count_key_reads(conv, monkeypatch)
        conv.ctx.auth.block_user("alice", "test")
        blocked = b"NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"
        with caplog.at_level(logging.INFO, logger="gximap.auth"):
            assert conv.send(b"a1 LOGIN alice secret\r\n") == [b"a1 " + blocked]
            assert conv.send(f"a2 AUTHENTICATE SCRAM-SHA-256 {b64(ScramClient('alice', PASSWORD).first())}\r\n"
                             .encode()) == [b"a2 " + blocked]
            assert conv.send(b"a3 AUTHENTICATE SCRAM-SHA-256\r\n") == [b"+ "]
            assert conv.send(b64(ScramClient("ALICE", PASSWORD).first()).encode() + b"\r\n") == [b"a3 " + blocked]
        assert asked == []
        assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=alice LOGIN refused: user blocked",
                                       "rhost=[192.0.2.1]:{port} user=alice SCRAM-SHA-256 refused: user blocked",
                                       "rhost=[192.0.2.1]:{port} user=ALICE SCRAM-SHA-256 refused: user blocked"]
        assert conv.session.auth_failures == 3 and conv.session.password_failures == 0  # no guesses
        assert _exchange(conv, ScramClient("nobody", PASSWORD), tag="a4")[0].startswith(b"a4 NO ")
        assert asked == ["nobody"]  # others go on


def test_a_blocked_address_is_refused_at_the_client_first_even_with_a_cache(tmp_path, caplog, monkeypatch):
    """An address block refuses everything, a proof the cache holds included (as a password):
    at the client-first, no keys read. A user block with a cache goes on to the keys, which a
    proof the cache holds must be checked against (test_a_right_proof_the_cache_holds_passes_a_user_block)."""
    from gximap.auth.cache import CredentialCache

    with Conversation(tmp_path, users=("alice",), ip_times=2, sasl_scram=True,
                      auth_cache=CredentialCache(300, 100)) as conv:
        assert _exchange(conv, ScramClient("alice", PASSWORD))[0].startswith(b"a1 OK ")
        conv.command("UNAUTHENTICATE")
        for tag in ("a2", "a3"):
            assert conv.send(f"{tag} LOGIN alice wrong\r\n".encode())[0].startswith(f"{tag} NO ".encode())
        asked = _count_key_reads(conv, monkeypatch)
        with caplog.at_level(logging.INFO, logger="gximap.auth"):
            assert _exchange(conv, ScramClient("alice", PASSWORD), tag="a4") == [
                b"a4 NO [AUTHENTICATIONFAILED] Too many failed logins, try again later"]
        assert asked == []
        assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=alice SCRAM-SHA-256 refused: address blocked"]


def test_disabled_account_is_told_only_after_a_right_proof(conv):
    conv.store.update_account("alice", disabled=True)
    assert _exchange(conv, ScramClient("alice", "wrong"))[0].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert _exchange(conv, ScramClient("alice", PASSWORD), tag="a2") == [
        b"a2 NO [CONTACTADMIN] Account disabled; contact your administrator"]


def test_capability_follows_the_directive_and_the_plaintext_rule(tmp_path):
    with Conversation(tmp_path) as conv:
        assert "AUTH=SCRAM-SHA-256" not in conv.capabilities()
        assert conv.send(b"a1 AUTHENTICATE SCRAM-SHA-256\r\n") == [
            b"a1 NO [CANNOT] Unsupported authentication mechanism"]
    with Conversation(tmp_path / "on", sasl_scram=True) as conv:
        caps = conv.capabilities()
        assert caps.index("AUTH=SCRAM-SHA-256") < caps.index("AUTH=PLAIN")
        assert "AUTH=SCRAM-SHA-256-PLUS" not in caps
    with Conversation(tmp_path / "notls", tls=False, starttls=True, sasl_scram=True) as conv:
        assert "AUTH=SCRAM-SHA-256" not in conv.capabilities()
        assert conv.send(b"a1 AUTHENTICATE SCRAM-SHA-256\r\n") == [
            b"a1 NO [PRIVACYREQUIRED] Plaintext authentication disallowed"]
    with Conversation(tmp_path / "insecure", tls=False, insecure_auth=True, sasl_scram=True) as conv:
        assert "AUTH=SCRAM-SHA-256" in conv.capabilities()
        assert _exchange(conv, ScramClient("alice", PASSWORD))[0].startswith(b"a1 OK ")


def test_a_name_that_is_not_utf8_fails_cleanly(conv, caplog):
    client = ScramClient("alice", PASSWORD)
    client.bare = "n=b\udcf6b,r=abc"  # sent as the byte 0xf6
    first = b"n,," + client.bare.encode("utf-8", "surrogateescape")
    line = conv.send(f"a1 AUTHENTICATE SCRAM-SHA-256 {b64(first)}\r\n".encode())[0]
    assert line.startswith(b"+ ")
    with caplog.at_level(logging.INFO, logger="gximap.auth"):
        assert conv.send(b64(b"c=biws,r=abc,p=" + base64.b64encode(bytes(32))).encode() + b"\r\n") == [
            b"a1 NO [AUTHENTICATIONFAILED] Authentication failed"]
    # Screened first, as for PLAIN: the line names the bytes and counts for fail2ban.
    assert _auth_lines(caplog) == ["rhost=[192.0.2.1]:{port} user=b\\xf6b SCRAM-SHA-256 rejected: invalid UTF-8"]
