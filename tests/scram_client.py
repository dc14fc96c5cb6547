"""The client side of SCRAM-SHA-256 (RFC 5802 section 3), written from the RFC for the tests:
independent of the server's code but for the key derivation's primitives (hashlib, hmac)."""

from __future__ import annotations

import base64
import hashlib
import hmac


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramClient:
    def __init__(self, username: str, password: str, *, authzid: str = "", nonce: str = "fyko+d2lbbFgONRv9qkxdawL",
                 flag: str = "n") -> None:
        self.username = username
        self.password = password
        self.nonce = nonce
        self.gs2_header = f"{flag},{'a=' + _escape(authzid) if authzid else ''},"
        self.bare = f"n={_escape(username)},r={nonce}"
        self.server_signature = b""
        self.final_without_proof = ""
        self._answered = 0   # challenges answered by respond()

    def first(self) -> bytes:
        return (self.gs2_header + self.bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("ascii")
        attributes = dict(part.split("=", 1) for part in text.split(","))
        combined, salt, iterations = attributes["r"], base64.b64decode(attributes["s"]), int(attributes["i"])
        assert combined.startswith(self.nonce) and len(combined) > len(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode("utf-8"), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        binding = base64.b64encode(self.gs2_header.encode("utf-8")).decode("ascii")
        self.final_without_proof = f"c={binding},r={combined}"
        auth_message = f"{self.bare},{text},{self.final_without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return f"{self.final_without_proof},p={base64.b64encode(proof).decode('ascii')}".encode()

    def check_server_final(self, message: bytes) -> bool:
        return message == b"v=" + base64.b64encode(self.server_signature)

    def respond(self, challenge: bytes) -> bytes | None:
        """The answer to the server's next challenge, as a client library's SASL callback gives it
        (imaplib's authobject; smtplib's with text): the client-first message (its challenge
        empty), the client-final message, then an empty answer to a server-final message whose
        proof is right, or None (abort the exchange) to one whose proof is wrong."""
        step, self._answered = self._answered, self._answered + 1
        if step == 0:
            return self.first()
        if step == 1:
            return self.final(challenge)
        return b"" if self.check_server_final(challenge) else None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(line: bytes) -> bytes:
    """The data of a continuation request line ``+ base64``."""
    assert line.startswith(b"+ "), line
    return base64.b64decode(line[2:].strip())
