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
under the store's site secret: DecoySalts) and the default iteration count, so that the
server-first message does not tell names apart; the proof then fails as a wrong password does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

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


class DecoySalts:
    """Made-up keys for names without SCRAM keys: the salt an HMAC of the name under a secret,
    so asking twice gives the same answer, as for a real user. The secret should outlive the
    process: a real user's salt never changes, so a decoy's that changed at a restart would tell
    the name apart. ``source`` gives such a secret (the store's site secret), asked at the first
    use (after the serving processes have forked) and kept; without one (None, or it fails), the
    secret drawn at start, or the one the serving processes share (share_secret)."""

    def __init__(self, secret: bytes | None = None, *, source: Callable[[], bytes | None] | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._source = source
        self._asking = threading.Lock()  # the lookups of other threads wait for the source's answer

    def share_secret(self, channel_secret: bytes) -> None:
        """Use a secret derived from the sibling channel's (gximap.net.siblings), which every
        serving process shares: a client's next connection may reach another process, and a
        different salt there would tell the name apart from a real user's."""
        self._secret = hmac.new(channel_secret, b"gximap scram decoy salts", hashlib.sha256).digest()

    def _current_secret(self) -> bytes:
        if self._source is None:
            return self._secret
        with self._asking:
            source = self._source
            if source is not None:
                try:
                    lasting = source()
                except Exception as exc:  # a store that cannot be written now: the start's secret
                    log.warning("SCRAM decoy salts: no lasting secret (%s); they change at a restart", exc)
                else:
                    if lasting is not None:
                        self._secret = lasting
                self._source = None  # after the secret: a thread that sees None reads the one kept
            return self._secret

    def credential(self, name: str) -> ScramCredential:
        salt = hmac.new(self._current_secret(), name.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:16]
        # Random keys: no proof can match them (a SHA-256 preimage would be needed).
        return ScramCredential(DEFAULT_ITERATIONS, salt, secrets.token_bytes(KEY_BYTES), secrets.token_bytes(KEY_BYTES))


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
