"""Property tests of the SORT/THREAD base subject (RFC 5256 section 2.1; midb.mime.base_subject,
which midb.mime.digest applies to the RFC 2047-decoded Subject) against a reference written
step by step from the RFC's algorithm and ABNF (section 5), on subjects made of the pieces the
algorithm looks for: "Re", "Fw", "Fwd" in any case, colons, blobs, "(fwd)" trailers, "[fwd: ]"
wrappers, tabs, folds and runs of blanks, non-ASCII text; plain or in encoded words.

One deliberate difference from the ABNF: BLOBCHAR is "any CHAR except '[' and ']'", CHAR being
US-ASCII; applied after step 1 has made the subject UTF-8, that would make "[Liste ü] Re: x" no
blob. gximap, as Dovecot, takes any character but the brackets in a blob (list tags carry
non-ASCII names), and so does this reference.

GXIMAP_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_base_subject_fuzz.py   (longer runs)
"""

from __future__ import annotations

import base64
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midb.mime import base_subject, decode_header_value, digest, is_reply_or_forward

EXAMPLES = int(os.environ.get("GXIMAP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WSP = " \t"


def _blob_end(text: str, pos: int) -> int | None:
    """subj-blob = "[" *BLOBCHAR "]" *WSP, at ``pos``: where it ends, or None."""
    if not text.startswith("[", pos):
        return None
    pos += 1
    while pos < len(text) and text[pos] not in "[]":
        pos += 1
    if pos == len(text) or text[pos] != "]":
        return None
    pos += 1
    while pos < len(text) and text[pos] in WSP:
        pos += 1
    return pos


def _refwd_end(text: str, pos: int) -> int | None:
    """subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":", at ``pos`` (case-insensitive, as
    ABNF strings are): where it ends, or None."""
    lowered = text.lower()
    for word in ("re", "fwd", "fw"):
        if not lowered.startswith(word, pos):
            continue
        at = pos + len(word)
        while at < len(text) and text[at] in WSP:
            at += 1
        for after in (at, _blob_end(text, at)):
            if after is not None and text.startswith(":", after):
                return after + 1
    return None


def _leader_end(text: str) -> tuple[int, bool] | None:
    """subj-leader = (*subj-blob subj-refwd) / WSP at the start: where it ends, and whether it
    is the first (a reply or forward marker), or None."""
    pos: int | None = 0
    while pos is not None:
        end = _refwd_end(text, pos)
        if end is not None:
            return end, True
        pos = _blob_end(text, pos)
    return (1, False) if text[:1] in tuple(WSP) and text else None


def reference_base_subject(subject: str) -> str:
    """RFC 5256 section 2.1, steps 1-7, for a subject already decoded from RFC 2047."""
    return reference_reading(subject)[0]


def reference_reading(subject: str) -> tuple[str, bool]:
    """(the base subject, whether a reply or forward marker went on the way: a subj-refwd in
    step 3, a "(fwd)" trailer in step 2, or a "[fwd: ]" wrapper in step 6; RFC 5256 section 2.1,
    the REFERENCES algorithm's "reply or forward", section 3 step 4)."""
    marked = False
    # (1) tabs and continuations to a space, runs of spaces to one
    text = "".join(" " if char in "\t\r\n" else char for char in subject)
    while "  " in text:
        text = text.replace("  ", " ")
    while True:
        # (2) subj-trailer = "(fwd)" / WSP, taken off the end until none is left
        while text.endswith(" ") or text.lower().endswith("(fwd)"):
            if text.endswith(" "):
                text = text[:-1]
            else:
                text, marked = text[:-5], True
        while True:
            # (3) a subj-leader off the front
            leader = _leader_end(text)
            if leader is not None:
                text = text[leader[0]:]
                marked = marked or leader[1]
                continue
            # (4) a leading subj-blob, when a non-empty subj-base is left after it
            end = _blob_end(text, 0)
            if end is not None and text[end:]:
                text = text[end:]
                continue
            break  # (5) repeat (3) and (4) until no matches remain
        # (6) "[fwd:" ... "]": both go, and again from step (2)
        if text.lower().startswith("[fwd:") and text.endswith("]"):
            text, marked = text[5:-1], True
            continue
        return text, marked  # (7)


PIECES = ["re", "Re", "RE", "fw", "Fw", "fwd", "FWD", "fWd", ":", " ", "  ", "\t", "\r\n ", "[", "]",
          "[x]", "[list]", "[Liste ü]", "(fwd)", "(FWD)", "[fwd:", "[Fwd: ", "x", "Hello", "über", "Ответ",
          "(", ")", "ref", "rere", "d", "e"]
subjects = st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=16).map("".join)


@FUZZ
@given(subjects)
def test_base_subject_is_the_rfc_algorithm(subject: str) -> None:
    expected, marked = reference_reading(subject)
    assert base_subject(subject) == expected
    # Removing blanks or blobs alone makes no reply or forward; any of the markers does.
    assert is_reply_or_forward(subject) == marked


def _encoded_word(text: str, charset: str, encoding: str) -> str:
    data = text.encode(charset)
    if encoding == "B":
        payload = base64.b64encode(data).decode()
    else:  # RFC 2047 section 4.2: "_" for a space; anything but safe ASCII as =XX
        payload = "".join("_" if byte == 0x20 else chr(byte) if chr(byte).isalnum() and byte < 0x80
                          else f"={byte:02X}" for byte in data)
    return f"=?{charset}?{encoding}?{payload}?="


@st.composite
def encoded_subjects(draw: st.DrawFn) -> tuple[bytes, str]:
    """(a Subject field of plain and encoded words, the text it decodes to). RFC 2047 section
    6.2: whitespace between two encoded words is not displayed; an encoded word stands apart
    from other text by whitespace. Plain words are ASCII (raw 8-bit fields are another matter)."""
    texts = st.lists(st.sampled_from([piece for piece in PIECES if piece.strip()]), min_size=1, max_size=4).map("".join)
    words = [(text, encoded) for text, encoded in draw(st.lists(st.tuples(texts, st.booleans()), min_size=1, max_size=6))
             if encoded or text.isascii()]
    raw: list[str] = []
    decoded: list[str] = []
    for index, (text, encoded) in enumerate(words):
        if index:
            raw.append(" ")
            if not (encoded and words[index - 1][1]):
                decoded.append(" ")
        if encoded:
            charsets = ["utf-8"] + (["iso-8859-1"] if all(ord(char) < 0x100 for char in text) else [])
            raw.append(_encoded_word(text, draw(st.sampled_from(charsets)), draw(st.sampled_from(["B", "Q"]))))
        else:
            raw.append(text)
        decoded.append(text)
    return "".join(raw).encode("ascii"), "".join(decoded)


@FUZZ
@given(encoded_subjects())
def test_the_base_subject_of_an_encoded_subject_is_that_of_its_text(field_and_text: tuple[bytes, str]) -> None:
    """Step 1's decoding: the Subject field's encoded words decoded, then steps 2-7; as the
    message digest keeps it for SORT and THREAD."""
    field, text = field_and_text
    assert decode_header_value(field) == text
    message = b"Subject: " + field + b"\r\nFrom: a@example.org\r\n\r\nbody\r\n"
    assert digest(message).base_subject == reference_base_subject(text)
