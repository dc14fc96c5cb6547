"""The server side of SASL SCRAM-SHA-256 (RFC 5802, RFC 7677): message parsing and the proof
check, sans-IO. The IMAP exchange is gximap.session.commands.auth's; the keys come from the
auth backend (midb.authdb ScramKeys), the maths from midb.scram.

What is offered: SCRAM-SHA-256 without channel binding. No -PLUS mechanism is advertised, so a
client's gs2 flag "y" (it could bind, but believes the server cannot) is accepted, and "p="
(binding asked for) is refused (RFC 5802 section 6). The "m=" extension, which no RFC defines,
is refused as section 5.1 requires. Names are decoded from saslname ("=2C" is ",", "=3D" is "=",
any other "=" is refused: section 5.1) and go through the same mapping and normalization as a
PLAIN login's (gximap.auth.maps); the password is the client's business.

An unknown user (or one without SCRAM keys) gets keys made up on the spot: a salt that is the
same for the same name every time, in every process and after a restart (an HMAC of the name
under the store's site secret: DecoySalts) and an iteration count drawn as the real users' are
spread (DecoySalts), so that the server-first message does not tell names apart; the proof then
fails as a wrong password does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from midb.errors import FileUnavailable
from midb.scram import DEFAULT_ITERATIONS, KEY_BYTES, ScramCredential, hmac_sha256, stored_key_of

log = logging.getLogger(__name__)

MECHANISM = "SCRAM-SHA-256"
_NONCE_BYTES = 18  # 24 characters of base64: 144 bits from the server, beside the client's
MAX_NONCE_LENGTH = 512  # a client's nonce, far beyond any client's (they send 24 to 32 characters)


class ScramError(ValueError):
    """A message that breaks RFC 5802's grammar or rules; the text is for the log."""


@dataclass(frozen=True, slots=True)
class ClientFirst:
    gs2_header: str  # "n,," / "y,," / "n,a=...," as sent: the client-final's c= repeats it
    authzid: str  # "" when none
    username: str
    nonce: str
    bare: str  # client-first-message-bare, part of the AuthMessage


@dataclass(frozen=True, slots=True)
class ClientFinal:
    channel_binding: bytes  # c=, decoded
    nonce: str
    proof: bytes
    without_proof: str  # client-final-message-without-proof, part of the AuthMessage


def decode_saslname(value: str) -> str:
    """RFC 5802 section 5.1: "=2C" and "=3D" stand for "," and "="; any other "=" is refused."""
    if "=" not in value:
        return value
    parts = value.split("=")
    out = [parts[0]]
    for part in parts[1:]:
        escape, rest = part[:2], part[2:]
        if escape == "2C":
            out.append("," + rest)
        elif escape == "3D":
            out.append("=" + rest)
        else:
            raise ScramError("'=' not followed by 2C or 3D in a name")
    return "".join(out)


def encode_saslname(value: str) -> str:
    """The client side of :func:`decode_saslname` (tests, and any client written here)."""
    return value.replace("=", "=3D").replace(",", "=2C")


def _printable_nonce(nonce: str) -> bool:
    # printable = %x21-2B / %x2D-7E (RFC 5802 section 7): visible ASCII but ","
    return 0 < len(nonce) <= MAX_NONCE_LENGTH and all("!" <= char <= "~" and char != "," for char in nonce)


def _check_extensions(fields: list[str]) -> None:
    """extensions = attr-val *("," attr-val), attr-val = ALPHA "=" value: none is known, so
    they are ignored (RFC 5802 section 5.1), but each must be one."""
    for extension in fields:
        if len(extension) < 2 or not (extension[0].isascii() and extension[0].isalpha()) or extension[1] != "=":
            raise ScramError("malformed extension")


def parse_client_first(message: str) -> ClientFirst:
    """client-first-message = gs2-header client-first-message-bare (RFC 5802 section 7)."""
    flag, sep, rest = message.partition(",")
    if not sep:
        raise ScramError("no gs2 header")
    if flag.startswith("p="):
        raise ScramError("channel binding asked for (no -PLUS mechanism is offered)")
    if flag not in ("n", "y"):
        raise ScramError("bad gs2 channel binding flag")
    authzid_field, sep, bare = rest.partition(",")
    if not sep:
        raise ScramError("no gs2 header")
    authzid = ""
    if authzid_field:
        if not authzid_field.startswith("a=") or len(authzid_field) == 2:
            raise ScramError("bad authzid in the gs2 header")
        authzid = decode_saslname(authzid_field[2:])
    fields = bare.split(",")
    if fields[0].startswith("m="):
        raise ScramError("mandatory extension not supported")
    if len(fields) < 2 or not fields[0].startswith("n=") or not fields[1].startswith("r="):
        raise ScramError("client-first-message lacks n= or r=")
    username = decode_saslname(fields[0][2:])
    nonce = fields[1][2:]
    if not username:
        raise ScramError("empty user name")
    if not _printable_nonce(nonce):
        raise ScramError("bad client nonce")
    _check_extensions(fields[2:])
    return ClientFirst(f"{flag},{authzid_field},", authzid, username, nonce, bare)


def parse_client_final(message: str) -> ClientFinal:
    """client-final-message = channel-binding "," nonce ["," extensions] "," proof."""
    without_proof, sep, proof_field = message.rpartition(",")
    if not sep or not proof_field.startswith("p="):
        raise ScramError("client-final-message lacks p=")
    fields = without_proof.split(",")
    if len(fields) < 2 or not fields[0].startswith("c=") or not fields[1].startswith("r="):
        raise ScramError("client-final-message lacks c= or r=")
    try:
        binding = base64.b64decode(fields[0][2:], validate=True)
        proof = base64.b64decode(proof_field[2:], validate=True)
    except (binascii.Error, ValueError):
        raise ScramError("bad base64 in c= or p=") from None
    if len(proof) != KEY_BYTES:
        raise ScramError("proof of the wrong length")
    _check_extensions(fields[2:])
    return ClientFinal(binding, fields[1][2:], proof, without_proof)


def server_nonce(client_nonce: str) -> str:
    """The combined nonce: the client's, then ours from ``secrets`` (base64 has no ",")."""
    return client_nonce + base64.b64encode(secrets.token_bytes(_NONCE_BYTES)).decode("ascii")


def server_first(nonce: str, credential: ScramCredential) -> str:
    salt = base64.b64encode(credential.salt).decode("ascii")
    return f"r={nonce},s={salt},i={credential.iterations}"


def auth_message(first: ClientFirst, server_first_message: str, final: ClientFinal) -> bytes:
    """RFC 5802 section 3: client-first-message-bare + "," + server-first-message + "," +
    client-final-message-without-proof."""
    return ",".join((first.bare, server_first_message, final.without_proof)).encode("utf-8", "surrogateescape")


def verify_proof(credential: ScramCredential, message: bytes, proof: bytes) -> bytes | None:
    """The ClientKey when the proof is right (RFC 5802 section 3: ClientKey = ClientProof XOR
    HMAC(StoredKey, AuthMessage), and H(ClientKey) must be StoredKey); else None. The same work
    whether it is right or not."""
    signature = hmac_sha256(credential.stored_key, message)
    key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    return key if hmac.compare_digest(stored_key_of(key), credential.stored_key) else None


def server_final(credential: ScramCredential, message: bytes) -> str:
    """v=ServerSignature: the client's proof that the server holds the keys."""
    return "v=" + base64.b64encode(hmac_sha256(credential.server_key, message)).decode("ascii")


# After the lasting secret could not be had (the store failed, or a read-only one has none yet),
# it is asked again at the first use this many seconds later; the uses between take the fallback.
SECRET_RETRY_INTERVAL = 5.0
# How long a census of the stored keys' iteration counts is used before it is taken again.
CENSUS_INTERVAL = 600.0
_DRAW_BITS = 64


class DecoySalts:
    """Made-up keys for names without SCRAM keys: the salt an HMAC of the name under a secret,
    so asking twice gives the same answer, as for a real user. The secret should outlive the
    process: a real user's salt never changes, so a decoy's that changed at a restart would tell
    the name apart. ``source`` gives such a secret (the store's site secret), asked at the first
    use (after the serving processes have forked) and kept once had. Without it (None, or the
    source fails) the fallback serves that one exchange: the secret drawn at start, or the one
    the serving processes share (share_secret); the source is asked again at a use
    SECRET_RETRY_INTERVAL later, so a store that failed once does not leave the salts to change
    at every restart for good.

    The iteration count: a real user answers with the count its keys were derived with, which
    is DEFAULT_ITERATIONS for keys midb made, but whatever the source's was for keys imported
    from Dovecot ({SCRAM-SHA-256}, 4096 by its default), or taken from a passwd-file. Those keep
    their count until a password login derives new ones (midb.authdb.MidbAuth), which a client
    that only speaks SCRAM never makes, and never for a passwd-file (the administrator's). A
    decoy that always said DEFAULT_ITERATIONS would tell every such name from an unknown one
    (with a passwd-file of Dovecot hashes, every name). So ``population`` (the backend's census:
    iteration count -> accounts with such keys) is drawn from: each name gets a count with the
    population's odds, from an HMAC of the name (the same at every ask), the counts taken in
    ascending order, so that as imported accounts' keys are derived anew the decoys that move
    go up, as those accounts do. The census is taken at the process's first SCRAM lookup, of any
    name (keep_census_current), and again in the background CENSUS_INTERVAL later; without one
    (no census, an empty one) DEFAULT_ITERATIONS."""

    def __init__(self, secret: bytes | None = None, *, source: Callable[[], bytes | None] | None = None,
                 population: Callable[[], Mapping[int, int]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fallback = secret if secret is not None else secrets.token_bytes(32)
        self._lasting: bytes | None = None
        self._source = source
        self._clock = clock
        self._ask_after = 0.0  # the clock reading before which the source is not asked again
        self._source_failing = False  # the last ask failed: a warning was logged for it
        self._asking = threading.Lock()  # the lookups of other threads wait for the source's answer
        self._population = population
        self._census: tuple[tuple[int, int], ...] | None = None  # (iterations, accounts), ascending
        self._census_due = 0.0
        self._counting = threading.Lock()  # held while a census is taken
        self._census_thread: threading.Thread | None = None

    def share_secret(self, channel_secret: bytes) -> None:
        """Use a secret derived from the sibling channel's (gximap.net.siblings), which every
        serving process shares, as the fallback: a client's next connection may reach another
        process, and a different salt there would tell the name apart from a real user's."""
        self._fallback = hmac.new(channel_secret, b"gximap scram decoy salts", hashlib.sha256).digest()

    def _current_secret(self) -> bytes:
        lasting = self._lasting
        if lasting is not None:
            return lasting
        if self._source is None:
            return self._fallback
        with self._asking:
            if self._lasting is not None:  # read by the thread this one waited for
                return self._lasting
            now = self._clock()
            if now < self._ask_after:
                return self._fallback
            try:
                lasting = self._source()
            except Exception as exc:  # noqa: BLE001 - a store that cannot be read or written now
                # One warning for a run of failures: the retries come every few seconds.
                (log.debug if self._source_failing else log.warning)(
                    "SCRAM decoy salts: no lasting secret (%s); the process's own until it is had "
                    "(asked again in %ss)", exc, SECRET_RETRY_INTERVAL)
                self._source_failing = True
                lasting = None
            if lasting is None:  # failed, or a read-only store that has none yet
                self._ask_after = now + SECRET_RETRY_INTERVAL
                return self._fallback
            if self._source_failing:
                log.info("SCRAM decoy salts: the lasting secret is read now")
            self._lasting = lasting
            return lasting

    def keep_census_current(self) -> None:
        """Called at every SCRAM lookup, a real user's too: the first census of the process is
        waited for here, whoever asks, and a later one is taken in the background. A census
        taken only when a made-up answer was due, and waited for, made that answer slower
        (about 1 s per 100,000 accounts) than a real user's: a timing oracle for names."""
        self._current_census()

    def census_settled(self, timeout: float = 30.0) -> None:
        """Wait for a census being taken in the background (for tests: the thread is a daemon,
        which nothing waits for at shutdown)."""
        thread = self._census_thread
        if thread is not None:
            thread.join(timeout)

    def _current_census(self) -> tuple[tuple[int, int], ...]:
        if self._population is None:
            return ()
        census = self._census
        if census is not None:
            # Due again: one background thread takes it while every lookup uses the one in hand.
            if self._clock() >= self._census_due and self._counting.acquire(blocking=False):
                thread = threading.Thread(target=self._retake_census, name="scram-census", daemon=True)
                self._census_thread = thread
                thread.start()
            return census
        # The first census is waited for: a name's count must not change between two asks.
        with self._counting:
            if self._census is None:
                self._take_census()
            assert self._census is not None
            return self._census

    def _retake_census(self) -> None:
        try:
            self._take_census()
        finally:
            self._counting.release()

    def _take_census(self) -> None:
        """A census from the population (the caller holds ``_counting``); on store trouble the one
        in hand (none at first: an empty one) is kept and asked again SECRET_RETRY_INTERVAL later."""
        assert self._population is not None
        now = self._clock()
        try:
            counts = self._population()
        except Exception as exc:  # noqa: BLE001 - store trouble: the census in hand, asked again soon
            # A passwd-file that cannot be read was logged by its reader, once: not again each retry.
            log.log(logging.DEBUG if isinstance(exc, FileUnavailable) else logging.WARNING,
                    "SCRAM decoy salts: no census of the stored keys' iteration counts (%s)", exc)
            self._census_due = now + SECRET_RETRY_INTERVAL
            if self._census is None:
                self._census = ()
            return
        self._census = tuple(sorted((iterations, accounts) for iterations, accounts in counts.items()
                                    if accounts > 0))
        self._census_due = now + CENSUS_INTERVAL

    def _iterations(self, secret: bytes, name: bytes) -> int:
        """The name's iteration count, drawn with the population's odds (class doc)."""
        census = self._current_census()
        total = sum(accounts for _iterations, accounts in census)
        if not total:
            return DEFAULT_ITERATIONS
        draw = int.from_bytes(hmac.new(secret, b"iterations\0" + name, hashlib.sha256).digest()[:_DRAW_BITS // 8],
                              "big")
        # The count whose share of the population holds draw / 2**64 (compared without division).
        reached = 0
        for iterations, accounts in census:
            reached += accounts
            if draw * total < reached << _DRAW_BITS:
                return iterations
        return census[-1][0]

    def credential(self, name: str) -> ScramCredential:
        secret = self._current_secret()
        encoded = name.encode("utf-8", "surrogatepass")
        salt = hmac.new(secret, encoded, hashlib.sha256).digest()[:16]
        # Random keys: no proof can match them (a SHA-256 preimage would be needed).
        return ScramCredential(self._iterations(secret, encoded), salt, secrets.token_bytes(KEY_BYTES),
                               secrets.token_bytes(KEY_BYTES))


def _text(data: bytes) -> str:
    """A client's message as text; bytes that are not UTF-8 become surrogate escapes, which
    AuthService refuses in a name ("invalid UTF-8") and the log shows as the bytes they were."""
    return data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class ScramOutcome:
    """What the client-final message proved: ``client_key`` when the proof is right (the caller
    has AuthService decide, and sends ``server_final`` with a success), else None and ``reason``."""

    client_key: bytes | None
    reason: str = ""
    server_final: bytes | None = None  # the server-final message (v=...), when the proof is right


class ScramServer:
    """One SCRAM-SHA-256 exchange, server side, sans-IO (RFC 5802 section 3): the client-first
    message makes it (ScramError when it breaks the grammar), :meth:`server_first` answers it with
    the keys the caller looked up (AuthService.submit_scram_lookup), and :meth:`finish` checks the
    client-final message. The transport (IMAP's continuation lines, the auth socket's CONT) and
    the verdict (AuthService.scram_result) are the caller's."""

    def __init__(self, client_first: bytes) -> None:
        self.first = parse_client_first(_text(client_first))
        self._credential: ScramCredential | None = None
        self._nonce = ""
        self._server_first = ""

    @property
    def username(self) -> str:
        return self.first.username

    @property
    def authzid(self) -> str | None:
        """The authorization identity, when it names another mailbox than the user's own."""
        authzid = self.first.authzid
        return authzid if authzid and authzid != self.first.username else None

    def server_first(self, credential: ScramCredential) -> bytes:
        """The server-first message: the combined nonce, the salt and the iteration count."""
        self._credential = credential
        self._nonce = server_nonce(self.first.nonce)
        self._server_first = server_first(self._nonce, credential)
        return self._server_first.encode("ascii")

    def finish(self, client_final: bytes) -> ScramOutcome:
        """Check the client-final message against the keys :meth:`server_first` was given."""
        credential = self._credential
        if credential is None:
            raise RuntimeError("SCRAM client-final checked before the server-first message was made")
        try:
            final = parse_client_final(_text(client_final))
        except ScramError as exc:
            return ScramOutcome(None, f"SCRAM client-final: {exc}")
        # RFC 5802 section 5.1: c= repeats the gs2 header (no channel binding data: not -PLUS);
        # r= is the nonce the server sent, client's and server's parts both.
        if final.channel_binding != self.first.gs2_header.encode("utf-8", "surrogateescape"):
            return ScramOutcome(None, "SCRAM client-final: channel binding does not match the gs2 header")
        if final.nonce != self._nonce:
            return ScramOutcome(None, "SCRAM client-final: nonce does not match")
        message = auth_message(self.first, self._server_first, final)
        client_key = verify_proof(credential, message, final.proof)
        if client_key is None:
            return ScramOutcome(None)
        return ScramOutcome(client_key, server_final=server_final(credential, message).encode("ascii"))
