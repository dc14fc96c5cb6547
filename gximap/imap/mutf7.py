"""Modified UTF-7 mailbox names (RFC 3501 section 5.1.3).

Printable US-ASCII (0x20-0x7e) stands for itself, except ``&`` which is written ``&-``; every
other character is UTF-16BE, base64-encoded with ``,`` in place of ``/`` and no padding, between
``&`` and ``-``.

The decoder is strict, because two spellings of one name would let a client create look-alike
mailboxes or dodge name checks: it rejects what the RFC forbids an encoder to produce (printable
ASCII inside a shift, two adjacent shifts, non-zero padding bits, a dangling byte), raw 8-bit or
control bytes, unterminated shifts and invalid UTF-16.  Errors are ``ValueError``.
"""

from __future__ import annotations

import binascii
import re

# Runs that are not printable ASCII (or are "&") go through base64.
_NEEDS_SHIFT = re.compile(r"[^\x20-\x25\x27-\x7e]+")
_PLAIN_ASCII = re.compile(rb"[\x20-\x25\x27-\x7e]*\Z")
# One shift sequence: "&" + modified base64 + "-".  "&-" is the escaped ampersand.
_SHIFT = re.compile(rb"&([A-Za-z0-9+,]*)-")
_B64_TO_MODIFIED = bytes.maketrans(b"/", b",")
_MODIFIED_TO_B64 = bytes.maketrans(b",", b"/")


def _encode_run(run: str) -> str:
    raw = run.encode("utf-16-be")  # lone surrogates raise UnicodeEncodeError (a ValueError)
    b64 = binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_B64_TO_MODIFIED)
    return "&" + b64.decode("ascii") + "-"


def encode(name: str) -> bytes:
    """Encode a mailbox name to modified UTF-7; raises ValueError for lone surrogates."""
    if not _NEEDS_SHIFT.search(name):
        return name.encode("ascii")
    out: list[str] = []
    pos = 0
    for match in _NEEDS_SHIFT.finditer(name):
        out.append(name[pos : match.start()])
        out.append(_encode_run_with_ampersands(match.group()))
        pos = match.end()
    out.append(name[pos:])
    return "".join(out).encode("ascii")


def _encode_run_with_ampersands(run: str) -> str:
    # "&" is printable ASCII, so it must never appear inside base64: split the run around it.
    pieces = run.split("&")
    parts: list[str] = []
    for index, piece in enumerate(pieces):
        if index:
            parts.append("&-")
        if piece:
            parts.append(_encode_run(piece))
    return "".join(parts)


def _decode_shift(b64: bytes) -> str:
    if not b64:
        raise ValueError("empty modified base64 sequence")
    # Canonical length: every 16-bit unit is 16 bits; base64 carries 6 bits per character.
    remainder = len(b64) % 8
    if remainder not in (0, 3, 6):
        raise ValueError("modified base64 sequence has a dangling partial character")
    padded = b64.translate(_MODIFIED_TO_B64) + b"=" * (-len(b64) % 4)
    try:
        raw = binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"bad modified base64: {exc}") from None
    if len(raw) % 2:
        raise ValueError("modified base64 does not hold whole UTF-16 units")
    # Unused low bits of the last character must be zero (otherwise two spellings decode alike).
    if binascii.b2a_base64(raw, newline=False).rstrip(b"=") != b64.translate(_MODIFIED_TO_B64):
        raise ValueError("non-canonical modified base64 (padding bits set)")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-16 in modified UTF-7: {exc.reason}") from None
    for char in text:
        if "\x20" <= char <= "\x7e":
            raise ValueError("printable ASCII must not be base64-encoded in modified UTF-7")
    return text


def decode(data: bytes) -> str:
    """Decode a modified UTF-7 mailbox name; raises ValueError for anything non-canonical."""
    return _decode(data, lenient=False)


def decode_pattern(data: bytes) -> str:
    """Decode a LIST pattern: as :func:`decode`, but an ``&`` that starts no valid shift sequence
    stands for itself. A pattern is matched against names, it names nothing: a client's typed
    prefix cut inside a sequence (``Caf&AO*``) matches no name rather than failing the command,
    and ``a&*`` finds the names that start with "a&", as Dovecot does. A sequence that encodes
    printable ASCII (``&AGE-``, an "a") is taken literally, while adjacent sequences
    (``&AOk-&AOk-``), refused in a name, are decoded. Raw 8-bit and control bytes still raise
    ValueError."""
    try:
        return _decode(data, lenient=False)
    except ValueError:
        return _decode(data, lenient=True)


def _decode(data: bytes, *, lenient: bool) -> str:
    if b"&" not in data:
        if not _PLAIN_ASCII.match(data):
            raise ValueError("mailbox name holds bytes that modified UTF-7 must encode")
        return data.decode("ascii")
    out: list[str] = []
    pos = 0
    previous_was_shift = False
    length = len(data)
    while pos < length:
        amp = data.find(b"&", pos)
        end = length if amp < 0 else amp
        if end > pos:
            chunk = data[pos:end]
            if not _PLAIN_ASCII.match(chunk):
                raise ValueError("mailbox name holds bytes that modified UTF-7 must encode")
            out.append(chunk.decode("ascii"))
            previous_was_shift = False
        if amp < 0:
            break
        match = _SHIFT.match(data, amp)
        try:
            if match is None:
                raise ValueError("unterminated or malformed '&' sequence in modified UTF-7")
            b64 = match.group(1)
            if not b64:
                text = "&"
            elif previous_was_shift and not lenient:
                raise ValueError("adjacent modified base64 sequences must be merged")
            else:
                text = _decode_shift(b64)
        except ValueError:
            if not lenient:
                raise
            out.append("&")  # a pattern's "&" that starts no sequence stands for itself
            previous_was_shift = False
            pos = amp + 1
            continue
        out.append(text)
        previous_was_shift = bool(b64)
        pos = match.end()
    return "".join(out)


def is_valid(data: bytes) -> bool:
    try:
        decode(data)
    except ValueError:
        return False
    return True
