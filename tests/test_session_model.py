"""Model-based tests: what each session shows of a mailbox stays equal to the store while other
sessions change it (hypothesis stateful testing over tests/conversation.py).

Two or three sessions of one account share a store: two have INBOX selected, a third (when
there is one) the folder Other. Random steps deliver mail straight into the store (one message
or a dozen), APPEND, STORE flags (+/-/=, .SILENT, UNCHANGEDSINCE), EXPUNGE, UID EXPUNGE, COPY,
MOVE and REPLACE between the two folders, FETCH flags, go into IDLE and come out of it, let the
pool wake an idling (or NOTIFY) session, start live searches (SEARCH/SORT RETURN (UPDATE ALL),
RFC 5267) and CANCELUPDATE them, and select the mailbox again (with QRESYNC's known UIDs and
HIGHESTMODSEQ where enabled). Each session has its own extensions: none, CONDSTORE, QRESYNC,
UIDONLY, IMAP4rev2, NOTIFY SET STATUS, or several. In half the runs every look at the clock
pauses (base.SLICE_SECONDS 0), and a change another process makes (arm_foreign_change) commits
in the next pause of any session: between the slices of a search, of a live search's re-check,
or between a push and NOTIFY's FETCH of new messages.

Every session's client side is a model (:class:`ClientView`) built from the responses that
session received, and nothing else: its message list from EXISTS, EXPUNGE, VANISHED and the UIDs
of FETCH/UIDFETCH, its flags from FETCH FLAGS (and, for .SILENT, from its own STORE), its live
results from the first ESEARCH plus ADDTO/REMOVEFROM (positions checked as they come), the
HIGHESTMODSEQ a QRESYNC client would resynchronise from, and the STATUS NOTIFY reported.

Invariants. At every tagged answer: no BAD, no NO but [EXPUNGEISSUED] where RFC 2180 allows it,
no [SERVERBUG], no BYE, nothing logged at ERROR (a traceback); the responses make sense to the
model (no number beyond the count, no EXISTS that shrinks, no EXPUNGE once QRESYNC or UIDONLY is
on, no FETCH with a number under UIDONLY, an unsolicited FETCH with UID and MODSEQ once
CONDSTORE-aware, no change of a live search it does not have, no UID that contradicts one it
knows); and for QRESYNC, the HIGHESTMODSEQ it holds covers only what it was told (no expunge at
or below it unreported, no flag change either: RFC 7162 section 3.2.10 as amended by erratum
1810). At a sync point (a NOOP's, CHECK's or IDLE's tagged answer, after which the client fetches
the UIDs and flags of messages it knows by EXISTS alone): its messages and flags equal the
store's; each live search's result (and for SORT its order) equals a fresh UID SEARCH/SORT; with
CONDSTORE each MODSEQ it learned equals the store's; with QRESYNC its HIGHESTMODSEQ is the
folder's; with NOTIFY the STATUS it last got for every other mailbox is the mailbox's now.

What the model accepts that a stricter reading might not (each allowed by the RFCs):

* a live search's ADDTO/REMOVEFROM before the tagged answer of the SEARCH that made it: the
  catch-up at the command's end brings messages the search did not see, and the client has the
  result from the ESEARCH before (RFC 5267 section 4.3 says nothing against it);
* with NOTIFY, untagged responses after a tagged answer (MessageNew's FETCH; RFC 5465 section 3
  lets the server report at any time), and a FETCH the next push repeats;
* QRESYNC SELECT with known UIDs reports changes of those only (RFC 7162 section 3.2.5's
  known-uids; gximap.session.condstore.qresync_responses): new messages are EXISTS the client
  fetches itself;
* VANISHED of a UID the client knows by EXISTS alone (it drops one of those);
* CANCELUPDATE's own answer may still carry an update of the search it ends.

GXIMAP_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/test_session_model.py   (the long mode, random;
the default run is smaller and derandomized, so it is the same in every CI run)
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from conversation import Conversation, InlineExecutor, response_codes
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from test_session_fuzz import PlainBackend

from gximap.auth.service import AuthService
from gximap.session import base, searching
from gximap.session.context import ServerContext, Settings
from midb.errors import StoreBusy
from midb.store import Store

LONG_RUN = "GXIMAP_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("GXIMAP_FUZZ_EXAMPLES", "30"))
MODEL_SETTINGS = settings(max_examples=EXAMPLES, stateful_step_count=60 if LONG_RUN else 30, deadline=None,
                          derandomize=not LONG_RUN, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])

REPO = Path(__file__).resolve().parent.parent
USER = "alice"
PASSWORD = "secret"
FOLDERS = ("INBOX", "Other")

# The extensions a session may have turned on before selecting its mailbox.
FEATURES = ("CONDSTORE", "QRESYNC", "UIDONLY", "IMAP4rev2", "NOTIFY")
# The watching session's, one test each, so that every kind runs in every CI run.
WATCHER_MODES = {
    "plain": frozenset(),
    "condstore": frozenset({"CONDSTORE"}),
    "qresync": frozenset({"QRESYNC"}),
    "uidonly": frozenset({"UIDONLY"}),
    "uidonly-qresync": frozenset({"UIDONLY", "QRESYNC"}),
    "notify": frozenset({"NOTIFY", "CONDSTORE"}),
    "rev2": frozenset({"IMAP4rev2"}),
}
NOTIFY_SET = ("NOTIFY SET STATUS (selected (MessageNew (UID FLAGS) MessageExpunge FlagChange))"
              " (personal (MessageNew MessageExpunge FlagChange))")
# MessageNew naming MODSEQ: NOTIFY SET enables CONDSTORE (RFC 7162 section 3.1).
NOTIFY_SET_MODSEQ = NOTIFY_SET.replace("MessageNew (UID FLAGS)", "MessageNew (UID FLAGS MODSEQ)")
# Store reads a push, a catch-up or a live search's re-check makes; the idle_store_error rule
# makes one fail (StoreBusy) as a busy LMDB does.
BUSY_METHODS = ("view_changes_since", "highestmodseq", "flag_rows", "keywords", "search_summaries",
                "search_rows", "get_messages", "claim_recent_range", "folder_by_id")
MAX_RETRIES = 8   # idle timer firings an injected store error may take to be made up for

FLAGS = ("\\Seen", "\\Flagged", "\\Deleted", "\\Answered", "$kw", "$Junk")
SUBJECTS = ("apple", "banana split", "cherry", "apple pie", "Re: banana", "damson")
SENDERS = ("carol@example.org", "bob@example.org", "dave@example.net")
BODIES = ("red fruit", "yellow fruit", "small stone fruit and more words to make it larger", "yellow")
DATES = (1_700_000_000, 1_700_000_000, 1_700_086_400, 1_690_000_000)  # ties on purpose
SEARCHES = ("FLAGGED", "UNSEEN", "SEEN", "KEYWORD $kw", "DELETED", "NOT DELETED", "SUBJECT apple",
            "BODY yellow", "OR FLAGGED SUBJECT banana", "FROM carol", "ALL", "LARGER 150",
            "NOT KEYWORD $kw", "ANSWERED UNSEEN")
SORTS = ("(SUBJECT)", "(REVERSE ARRIVAL)", "(FROM SIZE)", "(REVERSE SUBJECT DATE)", "(ARRIVAL)", "(SIZE)")
MAX_CONTEXTS = 4   # below searchcontext.MAX_CONTEXTS: NOUPDATE is not what this tests
MAX_MESSAGES = 40  # per folder: deliveries stop there, so a run stays quick

_SEARCH_SET = re.compile(r"\* (SEARCH|SORT)((?: \d+)*)\Z")
_TAGGED = re.compile(r"(\S+) (OK|NO|BAD)(?: \[([^\]]*)\])?")
_FETCH = re.compile(r"\* (\d+) (FETCH|UIDFETCH) \((.*)\)\Z")
_FETCH_UID = re.compile(r"(?:\(|^| )UID (\d+)")
_FETCH_FLAGS = re.compile(r"(?:^| )FLAGS \(([^)]*)\)")
_FETCH_MODSEQ = re.compile(r"(?:^| )MODSEQ \((\d+)\)")
_ESEARCH = re.compile(r'\* ESEARCH \(TAG "([^"]+)"\)( UID)?(.*)\Z')
_ESEARCH_ITEM = re.compile(r" (ALL|MIN|MAX|COUNT) (\S+)| (ADDTO|REMOVEFROM) \(([^)]*)\)")
_STATUS = re.compile(r'\* STATUS ("[^"]*"|\S+) \((.*)\)\Z')
_HIGHESTMODSEQ = re.compile(r"\[HIGHESTMODSEQ (\d+)\]")


def numbers(sequence_set: str) -> list[int]:
    """The numbers of a sequence set in the order written (``5:3`` counts down)."""
    out: list[int] = []
    for piece in sequence_set.split(","):
        low, _, high = piece.partition(":")
        first, last = int(low), int(high or low)
        step = 1 if last >= first else -1
        out.extend(range(first, last + step, step))
    return out


def sequence_set(items: list[int]) -> str:
    return ",".join(str(item) for item in items)


def flag_set(text: str) -> frozenset[str]:
    """Flags as compared: keywords are case-insensitive, \\Recent is a session's, not a message's."""
    return frozenset(flag.lower() for flag in text.split() if flag.lower() != "\\recent")


def folder_info(store: Store, name: str) -> Any:
    info = store.get_folder(USER, name)
    assert info is not None, name
    return info


def message(subject: int, sender: int, body: int) -> bytes:
    return (f"From: {SENDERS[sender]}\r\nSubject: {SUBJECTS[subject]}\r\n"
            f"Date: Tue, 14 Nov 2023 {10 + subject}:00:00 +0000\r\n\r\n{BODIES[body]}\r\n").encode()


class ModelError(AssertionError):
    pass


@dataclass(eq=False)
class Slot:
    """One message of a client's list: its UID once told, its flags and MODSEQ as last told."""

    uid: int | None = None
    flags: frozenset[str] | None = None
    modseq: int | None = None


@dataclass
class LiveSearch:
    """A live SEARCH or SORT as the client keeps it: ``members`` are UIDs (a UID SEARCH/SORT) or
    the client's Slots (message numbers name them when they arrive); a SORT's in sort order."""

    tag: str
    uid: bool
    criteria: str
    sort: str | None
    members: list[Any] = field(default_factory=list)


class ClientView:
    """A client of one session: sends commands, reads the responses, keeps its model."""

    def __init__(self, conv: Conversation, name: str, folder: str, features: frozenset[str]) -> None:
        self.conv = conv
        self.name = name
        self.folder = folder
        self.features = features
        self.slots: list[Slot] = []
        self.live: dict[str, LiveSearch] = {}
        self.cancelled: set[str] = set()
        self.highest: int | None = None       # the HIGHESTMODSEQ a QRESYNC client resyncs from
        self.statuses: dict[str, dict[str, int]] = {}   # NOTIFY: mailbox -> last STATUS items
        self.idle_tag: str | None = None
        self.tag: str | None = None           # of the command running (or IDLE)
        self.starting: LiveSearch | None = None   # a SEARCH/SORT RETURN (UPDATE) running
        self.oracle: list[int] | None = None      # a UID SEARCH/SORT's answer
        self.selecting: dict[str, Any] | None = None   # a SELECT running: what it said
        self.fetching = False                      # the command running is a FETCH
        self.cancelling: LiveSearch | None = None  # a CANCELUPDATE running: its live search
        # The command running may get no EXPUNGE or VANISHED: FETCH, STORE, SEARCH (RFC 3501
        # 7.4.1) and a UID SEARCH/SORT/THREAD whose criteria hold message numbers (RFC 7162 3.2.10).
        self.numbered = False
        self.closing = False       # a CLOSE running
        self.store_busy = False    # a store error is injected: NO [UNAVAILABLE] may come
        self.after_close = False   # the mailbox was left by CLOSE: the next SELECT is from its cache
        self.close_code: int | None = None   # the HIGHESTMODSEQ the last CLOSE gave

    # -- what the session has -------------------------------------------------------------------

    @property
    def uidonly(self) -> bool:
        return "UIDONLY" in self.features

    @property
    def vanished(self) -> bool:
        """Expunges come as VANISHED (QRESYNC, or UIDONLY: RFC 9586 section 3.3)."""
        return bool({"QRESYNC", "UIDONLY"} & self.features)

    @property
    def condstore(self) -> bool:
        return bool({"CONDSTORE", "QRESYNC"} & self.features)

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.features

    def fail(self, message: str) -> NoReturn:
        recent = "\n".join(f"  {who}: {data[-600:]!r}" for who, data in self.conv.transcript[-8:])
        raise ModelError(f"{self.name} ({self.folder}, {sorted(self.features)}): {message}\n{recent}")

    def known_uids(self) -> list[int]:
        return [slot.uid for slot in self.slots if slot.uid is not None]

    # -- commands -------------------------------------------------------------------------------

    def run(self, text: str, *, literal: bytes | None = None, allow: tuple[str, ...] = (),
            starting: LiveSearch | None = None, numbered: bool = False) -> list[str]:
        """Send a command (ending IDLE first); read every response; check the tagged answer is
        OK, or NO with a code in ``allow``. ``starting``: the live search the command makes
        (its tag is set here); ``numbered``: a UID command whose criteria hold message numbers."""
        self.end_idle()
        tag = self.conv.next_tag()
        self.tag = tag
        self.fetching = text.startswith(("FETCH ", "UID FETCH "))
        self.numbered = numbered or text.startswith(("FETCH ", "STORE ", "SEARCH ", "SORT ", "THREAD "))
        if starting is not None:
            starting.tag = tag
            self.starting = starting
        data = f"{tag} {text}".encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        lines = self.read(self.conv.send(data + b"\r\n"))
        self.finish(tag, lines, allow)
        return lines

    def start_idle(self) -> None:
        self.end_idle()
        tag = self.conv.next_tag()
        self.tag = self.idle_tag = tag
        lines = self.read(self.conv.send(f"{tag} IDLE\r\n".encode()))
        if not lines or not any(line.startswith("+ ") for line in lines):
            self.fail(f"IDLE not accepted: {lines!r}")
        self.after_push()

    def end_idle(self) -> None:
        if self.idle_tag is None:
            return
        tag, self.idle_tag = self.idle_tag, None
        lines = self.read(self.conv.send(b"DONE\r\n"))
        self.finish(tag, lines, ())

    def wake(self) -> None:
        """The pool runs the session's wakeup() because its waker fired."""
        if self.conv.wakes:
            self.read(self.conv.wake())
            self.after_push()

    def finish(self, tag: str, lines: list[str], allow: tuple[str, ...]) -> None:
        tagged = [line for line in lines if _TAGGED.match(line) and line.split(" ", 1)[0] == tag]
        if len(tagged) != 1:
            self.fail(f"no single tagged answer for {tag}: {lines!r}")
        # With NOTIFY the server reports changes at any time (RFC 5465 section 3), also right
        # after a tagged answer (new messages' FETCH, gximap.session.session next_output).
        if lines[-1] != tagged[0] and ("NOTIFY" not in self.features or
                                       not all(line.startswith("* ") for line in lines[lines.index(tagged[0]) + 1:])):
            self.fail(f"responses after the tagged answer of {tag}: {lines!r}")
        match = _TAGGED.match(tagged[0])
        assert match is not None
        status, code = match.group(2), match.group(3) or ""
        if status != "OK" and not (status == "NO" and code.split(" ")[0] in allow):
            self.fail(f"command answered {tagged[0]!r}")
        self.tag = None
        self.numbered = False
        self.after_push()

    def after_push(self) -> None:
        """What holds whenever the session has finished sending: a command's end, an IDLE push."""
        if self.qresync and self.selecting is None:
            self.check_highest()

    # -- reading responses ----------------------------------------------------------------------

    def read(self, raw: list[bytes]) -> list[str]:
        lines = [line.decode("utf-8", "surrogateescape") for line in raw]
        for line in lines:
            self.read_line(line)
        return lines

    def read_line(self, line: str) -> None:
        if "[SERVERBUG]" in line:
            self.fail(f"a command handler failed: {line!r}")
        if not line.startswith("* "):
            self.read_tagged(line)
            return
        words = line.split(" ")
        if words[1] in ("BYE", "BAD"):
            self.fail(f"unexpected {line!r}")
        if words[1] == "NO":
            if self.store_busy and words[2] == "[UNAVAILABLE]":
                return   # a catch-up or push met the injected store error: made up for later
            match = re.match(r'\* NO \[NOUPDATE "([^"]+)"\]', line)
            if match is None or match.group(1) != self.tag or match.group(1) not in self.live:
                self.fail(f"unexpected {line!r}")
            del self.live[match.group(1)]   # refused: not kept live (RFC 5267 section 4.3.1)
            return
        if words[1] == "OK":
            if line.startswith("* OK [CLOSED]"):
                if self.selecting is None:
                    self.fail("CLOSED outside SELECT")
                self.live.clear()
            self.note_highestmodseq(line)
            return
        if self.numbered and ((len(words) > 2 and words[2] == "EXPUNGE")
                              or (words[1] == "VANISHED" and words[2] != "(EARLIER)")):
            self.fail(f"{line!r} during a command that names messages by number (RFC 3501 7.4.1, RFC 7162 3.2.10)")
        if len(words) > 2 and words[2] == "EXISTS":
            self.exists(int(words[1]))
        elif len(words) > 2 and words[2] == "EXPUNGE":
            self.expunge(int(words[1]))
        elif words[1] == "VANISHED":
            self.vanish(line)
        elif (fetch := _FETCH.match(line)) is not None:
            self.fetch(int(fetch.group(1)), fetch.group(2) == "UIDFETCH", fetch.group(3))
        elif (esearch := _ESEARCH.match(line)) is not None:
            self.esearch(esearch.group(1), bool(esearch.group(2)), esearch.group(3))
        elif (found := _SEARCH_SET.match(line)) is not None:
            self.oracle = [int(number) for number in found.group(2).split()]
        elif (status := _STATUS.match(line)) is not None:
            items = status.group(2).split()
            told = {items[index]: int(items[index + 1]) for index in range(0, len(items), 2)}
            if self.condstore and "HIGHESTMODSEQ" not in told:
                self.fail(f"a STATUS without HIGHESTMODSEQ once CONDSTORE is on: {line!r}")
            self.statuses[status.group(1).strip('"')] = told
        # FLAGS, RECENT, CAPABILITY, ENABLED, LIST: nothing the model keeps

    def read_tagged(self, line: str) -> None:
        if line.startswith("+ "):
            return
        match = _TAGGED.match(line)
        if match is None or match.group(1) != self.tag:
            self.fail(f"a line that is no response to {self.tag}: {line!r}")
        # The command is over: what follows (NOTIFY reports at any time, RFC 5465 section 3) is
        # no response to it, nor held back by it (an EXPUNGE after a FETCH's answer is allowed).
        self.numbered = self.fetching = False
        if self.closing:
            self.closed(match.group(2) == "OK", line)
        self.note_highestmodseq(line)
        if self.starting is not None:
            self.fail("a SEARCH/SORT RETURN (UPDATE) without its ESEARCH")
        if self.selecting is not None:
            self.selected(match.group(2) == "OK")

    def closed(self, ok: bool, line: str) -> None:
        """CLOSE's tagged answer: the client drops what it knew as \\Deleted (CLOSE expunges
        those silently), its live searches end, and a QRESYNC client keeps the rest as its cache
        with the HIGHESTMODSEQ the answer gives (RFC 7162 section 3.2.8), checked as any other
        (after_push: no change at or below it the client was not told of)."""
        self.closing = False
        if not ok:
            self.fail(f"CLOSE answered {line!r}")
        found = _HIGHESTMODSEQ.search(line)
        self.close_code = int(found.group(1)) if found else None
        if found is not None and not self.qresync:
            self.fail(f"[HIGHESTMODSEQ] in CLOSE's answer to a client without QRESYNC: {line!r}")
        # (what EXISTS alone told of in CLOSE's answer the client cannot name: not cached)
        self.slots = [slot for slot in self.slots
                      if slot.uid is not None and "\\deleted" not in (slot.flags or frozenset())]
        self.cancelled.update(self.live)
        self.live.clear()
        self.after_close = True

    def note_highestmodseq(self, line: str) -> None:
        found = _HIGHESTMODSEQ.search(line)
        if found is not None:
            # RFC 7162 section 3.2.10 with erratum 1810: a lower value than a MODSEQ seen before
            # is the server saying "an expunge below that is still to come": it replaces it.
            self.highest = int(found.group(1))

    def slot_at(self, number: int) -> Slot:
        if not 1 <= number <= len(self.slots):
            self.fail(f"message number {number} of {len(self.slots)}")
        return self.slots[number - 1]

    def exists(self, count: int) -> None:
        if self.selecting is not None:
            self.selecting["exists"] = count
            return
        if count < len(self.slots):
            # RFC 3501 section 7.4.1 (and 9051 7.5.1): only EXPUNGE/VANISHED make the count smaller.
            self.fail(f"EXISTS {count} below the {len(self.slots)} messages known")
        self.slots.extend(Slot() for _ in range(count - len(self.slots)))

    def expunge(self, number: int) -> None:
        if self.vanished:
            self.fail("EXPUNGE after ENABLE QRESYNC/UIDONLY (RFC 7162 3.2.10, RFC 9586 3.3: VANISHED)")
        slot = self.slot_at(number)
        self.slots.remove(slot)

    def vanish(self, line: str) -> None:
        earlier = line.startswith("* VANISHED (EARLIER) ")
        uids = numbers(line.split(" ")[-1])
        if earlier:
            if self.selecting is None:
                self.fail("VANISHED (EARLIER) outside a QRESYNC SELECT")
            self.selecting["vanished"].update(uids)
            return
        if not self.vanished:
            self.fail("VANISHED without QRESYNC or UIDONLY")
        for uid in uids:
            slot = next((slot for slot in self.slots if slot.uid == uid), None)
            if slot is None:
                # A message known by EXISTS alone, between the known UIDs around it: which of
                # such neighbours does not matter, they carry nothing the model uses (the live
                # searches of such sessions name UIDs).
                slot = self.unknown_place(uid)
            for live in self.live.values():
                if slot in live.members or (live.uid and uid in live.members):
                    self.fail(f"VANISHED {uid} still in live search {live.tag} (no REMOVEFROM before)")
            self.slots.remove(slot)

    def unknown_place(self, uid: int) -> Slot:
        """A message known by EXISTS alone that may have UID ``uid``: between the known UIDs
        around it (with UIDONLY, where the list has no order the client sees, any)."""
        for index, slot in enumerate(self.slots):
            if slot.uid is not None:
                continue
            below = [other.uid for other in self.slots[:index] if other.uid is not None]
            above = [other.uid for other in self.slots[index + 1:] if other.uid is not None]
            if self.uidonly or ((not below or below[-1] < uid) and (not above or uid < above[0])):
                return slot
        self.fail(f"VANISHED {uid}, a UID not in the view")

    def fetch(self, number: int, uidfetch: bool, items: str) -> None:
        uid_match = _FETCH_UID.search(items)
        flags_match = _FETCH_FLAGS.search(items)
        modseq_match = _FETCH_MODSEQ.search(items)
        if self.uidonly != uidfetch:
            self.fail("FETCH with a message number after ENABLE UIDONLY" if self.uidonly else "UIDFETCH")
        uid = number if uidfetch else (int(uid_match.group(1)) if uid_match else None)
        if self.selecting is not None:
            if uid is None:
                self.fail("a FETCH without UID in a QRESYNC SELECT")
            self.selecting["fetched"][uid] = (number, flags_match and flag_set(flags_match.group(1)),
                                              modseq_match and int(modseq_match.group(1)))
            return
        if self.condstore and not self.fetching and (uid is None or modseq_match is None):
            # RFC 7162 section 3.1: once CONDSTORE-aware, every untagged FETCH not answering a
            # FETCH carries UID and MODSEQ (a STORE's, one caused by an external agent, ...).
            self.fail(f"an untagged FETCH without UID and MODSEQ: {items!r}")
        slot = self.slot_for_uid(number) if uidfetch else self.slot_at(number)
        if uid is not None:
            self.learn_uid(slot, uid)
        if flags_match is not None:
            slot.flags = flag_set(flags_match.group(1))
        if modseq_match is not None:
            slot.modseq = int(modseq_match.group(1))
            if self.highest is not None:
                self.highest = max(self.highest, slot.modseq)

    def slot_for_uid(self, uid: int) -> Slot:
        """UIDONLY: the message a UIDFETCH names. One the client does not know yet takes the
        place of one it knows by EXISTS alone (the order of a UIDONLY client's list is the UIDs')."""
        slot = next((slot for slot in self.slots if slot.uid == uid), None)
        if slot is not None:
            return slot
        unknown = [slot for slot in self.slots if slot.uid is None]
        if not unknown:
            self.fail(f"UIDFETCH of UID {uid}, not in the view")
        unknown[0].uid = uid
        self.slots.sort(key=lambda slot: (slot.uid is None, slot.uid or 0))
        return unknown[0]

    def learn_uid(self, slot: Slot, uid: int) -> None:
        if slot.uid is not None:
            if slot.uid != uid:
                self.fail(f"UID {uid} for the message the client knows as UID {slot.uid}")
            return
        index = self.slots.index(slot)
        before = [other.uid for other in self.slots[:index] if other.uid is not None]
        after = [other.uid for other in self.slots[index + 1:] if other.uid is not None]
        if (before and before[-1] >= uid) or (after and after[0] <= uid):
            self.fail(f"UID {uid} out of order at message {index + 1}")
        slot.uid = uid

    def esearch(self, tag: str, uid: bool, rest: str) -> None:
        items = [(m.group(1) or m.group(3), m.group(2) if m.group(1) else m.group(4))
                 for m in _ESEARCH_ITEM.finditer(rest)]
        if "".join(m.group(0) for m in _ESEARCH_ITEM.finditer(rest)) != rest:
            self.fail(f"ESEARCH items not understood: {rest!r}")
        starting = self.starting
        if tag == self.tag and starting is not None:
            if uid != starting.uid:
                self.fail("ESEARCH UID-ness differs from the command's")
            for name, value in items:
                if name in ("ADDTO", "REMOVEFROM"):
                    self.fail("ADDTO/REMOVEFROM in a search's own answer")
                if name == "ALL":
                    found = numbers(value)
                    starting.members = found if uid else [self.slot_at(number) for number in found]
            # Live from now on: the catch-up at the command's end may already change it (a message
            # the view learns of then), before the tagged answer.
            self.live[tag] = starting
            self.starting = None
            return
        if tag == self.tag and self.oracle is None and not any(name in ("ADDTO", "REMOVEFROM") for name, _ in items):
            # An IMAP4rev2 UID SEARCH answers with ESEARCH (RFC 9051 section 7.3.4).
            self.oracle = next((numbers(value) for name, value in items if name == "ALL"), [])
            return
        live = self.live.get(tag)
        if live is None and self.cancelling is not None and self.cancelling.tag == tag:
            return
        if live is None:
            state = "cancelled" if tag in self.cancelled else "unknown"
            self.fail(f"ESEARCH for the {state} live search {tag!r}")
        if uid != live.uid:
            self.fail(f"ESEARCH UID-ness differs from live search {tag!r}")
        for name, value in items:
            if name not in ("ADDTO", "REMOVEFROM"):
                self.fail(f"{name} in an update of live search {tag!r} (RFC 5267 4.3: ADDTO/REMOVEFROM only)")
            words = value.split()
            if len(words) % 2:
                self.fail(f"odd {name} list {value!r}")
            for index in range(0, len(words), 2):
                position, changed = int(words[index]), numbers(words[index + 1])
                members = changed if uid else [self.slot_at(number) for number in changed]
                if name == "ADDTO":
                    self.add_to(live, position, members)
                else:
                    self.remove_from(live, position, members)

    def add_to(self, live: LiveSearch, position: int, members: list[Any]) -> None:
        for member in members:
            if member in live.members:
                self.fail(f"ADDTO of a member of {live.tag!r}")
        if live.sort is None:
            if position != 0:
                # RFC 5267 section 4.3.3 allows a SEARCH context's positions; gximap sends 0.
                self.fail(f"ADDTO position {position} for a SEARCH context")
            live.members.extend(members)
            return
        if not 1 <= position <= len(live.members) + 1:
            self.fail(f"ADDTO position {position} beyond {len(live.members)} members of {live.tag!r}")
        live.members[position - 1:position - 1] = members

    def remove_from(self, live: LiveSearch, position: int, members: list[Any]) -> None:
        if live.sort is None:
            if position != 0:
                self.fail(f"REMOVEFROM position {position} for a SEARCH context")
            for member in members:
                if member not in live.members:
                    self.fail(f"REMOVEFROM of a non-member of {live.tag!r}")
                live.members.remove(member)
            return
        # The positions are those before the removal (section 4.3.4), given highest first.
        if live.members[position - 1:position - 1 + len(members)] != members or position < 1:
            self.fail(f"REMOVEFROM ({position} ...) of {live.tag!r}: not there, members are "
                      f"{[self.describe(member) for member in live.members]}")
        del live.members[position - 1:position - 1 + len(members)]

    @staticmethod
    def describe(member: Any) -> Any:
        return member.uid if isinstance(member, Slot) else member

    # -- SELECT ---------------------------------------------------------------------------------

    def select(self, store: Store) -> None:
        """Select the mailbox (again): with QRESYNC, from what the client knows (after fetching
        what it knows by EXISTS alone); else afresh."""
        self.end_idle()
        if self.qresync and self.highest is not None and self.slots:
            self.resolve()
            known = self.known_uids()
            uidvalidity = folder_info(store, self.folder).uidvalidity
            known_uids = f" {sequence_set(known)}" if known else ""
            text = f'SELECT "{self.folder}" (QRESYNC ({uidvalidity} {self.highest}{known_uids}))'
            self.selecting = {"exists": None, "vanished": set(), "fetched": {}, "qresync": True,
                              "known": {slot.uid: (slot.flags, slot.modseq) for slot in self.slots}}
        else:
            text = f'SELECT "{self.folder}"'
            self.selecting = {"exists": None, "vanished": set(), "fetched": {}, "qresync": False, "known": {}}
        self.run(text)

    def selected(self, ok: bool) -> None:
        selecting, self.selecting = self.selecting, None
        after_close, self.after_close = self.after_close, False
        assert selecting is not None
        if not ok:
            self.fail("SELECT failed")
        self.live.clear()
        count = selecting["exists"]
        if count is None:
            self.fail("SELECT without EXISTS")
        if not selecting["qresync"]:
            self.slots = [Slot() for _ in range(count)]
            for uid, (number, _flags, _modseq) in selecting["fetched"].items():
                self.fail(f"FETCH of UID {uid} (message {number}) in a SELECT without QRESYNC")
            return
        known: dict[int, tuple[Any, Any]] = {uid: state for uid, state in selecting["known"].items()
                                             if uid not in selecting["vanished"]}
        for uid, (_number, flags, modseq) in selecting["fetched"].items():
            old_flags, old_modseq = known.get(uid, (None, None))
            known[uid] = (flags if flags is not None else old_flags, modseq if modseq is not None else old_modseq)
        uids = sorted(known)
        if after_close and len(uids) < count:
            # The cache CLOSE left may lack a message in the middle (one the client thought
            # \\Deleted that another session undeleted before CLOSE, unreported): the client
            # cannot place the new ones and learns every message's UID afresh (resolve).
            self.slots = [Slot() for _ in range(count)]
            return
        if len(uids) > count:
            # RFC 7162 section 3.2.5: what the client knew, less VANISHED (EARLIER), plus the
            # FETCHes of the known messages changed, is the mailbox but for the messages new to
            # it (the known UIDs limit what is reported): those it fetches as after EXISTS.
            self.fail(f"QRESYNC left the client with {len(uids)} UIDs ({uids}), EXISTS said {count}")
        self.slots = [Slot(uid, *known[uid]) for uid in uids] + [Slot() for _ in range(count - len(uids))]
        for uid, (number, _flags, _modseq) in selecting["fetched"].items():
            if self.uidonly:
                continue
            if uids.index(uid) + 1 != number:
                self.fail(f"QRESYNC FETCH of UID {uid} as message {number}, it is {uids.index(uid) + 1}")

    # -- catching up and checking ---------------------------------------------------------------

    def resolve(self) -> None:
        """Fetch the UID and flags of every message known by EXISTS alone (and the flags of those
        a .SILENT STORE left unknown), as a client does after EXISTS: by message number, or with
        UIDONLY by the UIDs it does not know. Another change may come with the answer: again."""
        for _attempt in range(5):
            unknown = [slot for slot in self.slots if slot.uid is None or slot.flags is None
                       or (self.condstore and slot.modseq is None)]
            if not unknown:
                return
            items = "UID FLAGS MODSEQ" if self.condstore else "UID FLAGS"
            if not self.uidonly:
                numbered = sequence_set([self.slots.index(slot) + 1 for slot in unknown])
                if self.run(f"FETCH {numbered} ({items})", allow=("EXPUNGEISSUED",))[-1].split(" ")[1] == "NO":
                    self.run("NOOP")   # one is gone (RFC 2180 4.1.2): the NOOP says which
                continue
            known = self.known_uids()
            parts = [str(slot.uid) for slot in unknown if slot.uid is not None]
            if any(slot.uid is None for slot in unknown):
                # The UIDs between those it knows, and above them.
                bounds = [0, *known]
                parts += [f"{low + 1}:{high - 1}" for low, high in zip(bounds, known, strict=False) if high - low > 1]
                parts.append(f"{bounds[-1] + 1}:*")
            self.run(f"UID FETCH {','.join(parts)} ({items})")
        self.fail(f"messages still unknown after fetching: {[self.describe(slot) for slot in self.slots]}")

    def sync(self, how: str) -> None:
        """A sync point: NOOP or CHECK, or IDLE and DONE (ending an IDLE in progress is one too)."""
        if self.idle_tag is not None or how == "idle":
            if self.idle_tag is None:
                self.start_idle()
            self.end_idle()
        else:
            self.run("NOOP" if how == "noop" else "CHECK")

    def check(self, store: Store) -> None:
        folder = folder_info(store, self.folder)
        metas = store.messages(USER, folder.id)
        truth = [meta.uid for meta in metas]
        mine = self.known_uids()
        if mine != truth:
            self.fail(f"message list {mine} but the store has {truth}")
        for slot, meta in zip(self.slots, metas, strict=True):
            if slot.flags != flag_set(" ".join(meta.flags)):
                self.fail(f"UID {meta.uid}: flags {sorted(slot.flags or ())}, the store has {meta.flags}")
            if self.condstore and slot.modseq != meta.modseq:
                self.fail(f"UID {meta.uid}: MODSEQ {slot.modseq}, the store has {meta.modseq}")
        if self.qresync and self.highest != folder.highestmodseq:
            self.fail(f"HIGHESTMODSEQ {self.highest}, the folder's is {folder.highestmodseq}")
        for live in list(self.live.values()):
            self.check_live(live)
        if "NOTIFY" in self.features:
            self.check_statuses(store)

    def check_live(self, live: LiveSearch) -> None:
        if not live.uid:
            for member in live.members:
                if member not in self.slots:
                    self.fail(f"live search {live.tag!r} keeps an expunged message (UID {member.uid})")
        members = [self.describe(member) for member in live.members]
        self.oracle = None
        if live.sort is None:
            self.run(f"UID SEARCH {live.criteria}")
            expected: list[int] = sorted(self.oracle or [])
            if sorted(members) != expected:
                self.fail(f"live search {live.tag!r} ({live.criteria}) holds {sorted(members)}, "
                          f"UID SEARCH finds {expected}")
        else:
            self.run(f"UID SORT {live.sort} UTF-8 {live.criteria}")
            expected = list(self.oracle or [])
            if members != expected:
                self.fail(f"live sort {live.tag!r} ({live.sort} {live.criteria}) holds {members}, "
                          f"UID SORT gives {expected}")
        self.oracle = None

    def wrote_into(self, name: str) -> None:
        """The client's own APPEND/COPY/MOVE/REPLACE into another mailbox: NOTIFY does not report
        it (RFC 5465 section 5: "The server SHOULD omit notifying the client if the event is
        caused by this client"), and the client knows what it did. Its last STATUS of that
        mailbox is no longer what it holds: not checked until NOTIFY tells one again."""
        if name != self.folder:
            self.statuses.pop(name, None)

    def check_statuses(self, store: Store) -> None:
        for name, items in self.statuses.items():
            if name == self.folder:
                continue
            folder = folder_info(store, name)
            now = {"MESSAGES": folder.messages, "UIDNEXT": folder.uidnext, "UNSEEN": folder.unseen}
            if "HIGHESTMODSEQ" in items:   # (not in one told before CONDSTORE came on)
                now["HIGHESTMODSEQ"] = folder.highestmodseq
            told = {key: value for key, value in items.items() if key in now}
            if told != now:
                self.fail(f"NOTIFY told STATUS {name} {told}, it is {now}")

    def check_highest(self) -> None:
        """The HIGHESTMODSEQ the client holds is safe to resynchronise from: every expunge and
        flag change at or below it was reported (RFC 7162 section 3.2.10, erratum 1810)."""
        if self.highest is None:
            return
        store = self.conv.store
        folder = folder_info(store, self.folder)
        gone = set(store.vanished_since(USER, folder.id, 0).uids) - set(
            store.vanished_since(USER, folder.id, self.highest).uids)
        held = gone.intersection(self.known_uids())
        if held:
            self.fail(f"HIGHESTMODSEQ {self.highest} though the expunge of {sorted(held)} was not reported")
        metas = {meta.uid: meta for meta in store.messages(USER, folder.id)}
        for slot in self.slots:
            meta = metas.get(slot.uid) if slot.uid is not None else None
            if meta is not None and meta.modseq <= self.highest and slot.flags is not None \
                    and slot.flags != flag_set(" ".join(meta.flags)):
                self.fail(f"HIGHESTMODSEQ {self.highest} though UID {meta.uid}'s change at "
                          f"{meta.modseq} was not reported")


class _LogErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def step(function: Any) -> Any:
    """A rule that marks the machine unsettled until the invariants have passed after it."""
    @functools.wraps(function)
    def run(self: SessionsModel, **arguments: Any) -> None:
        self.settled = False
        function(self, **arguments)
    return run


picks = st.lists(st.integers(-1, 60), min_size=1, max_size=4)


class SessionsModel(RuleBasedStateMachine):
    """Sessions on one store, each with a ClientView; the rules are what clients and the MTA do."""

    WATCHER: frozenset[str] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="gximap-model-")
        self.store = Store(Path(self.tmp) / "midb", fsync=False, data_path=[str(REPO / "data")])
        self.store.create_account(USER)
        self.store.create_folder(USER, "Other")
        auth = AuthService(self.store, PlainBackend(), auth_times=1_000_000, ip_times=0, executor=InlineExecutor())
        self.ctx = ServerContext(Settings(), self.store, auth, response_codes())
        self.errors = _LogErrors()
        logging.getLogger("gximap").addHandler(self.errors)
        self.views: list[ClientView] = []
        self.settled = True   # the last step ran to its end and passed the invariants
        self.armed: list[Any] = []   # foreign changes for the next pause of a session
        self.fired = 0               # foreign changes made so far
        self.quiet = False           # none now (a check is running)
        self.unslice: tuple[float, int] | None = None

    def teardown(self) -> None:
        try:
            if self.views and self.settled:
                for view in self.views:   # the last sync point: every view equals the store
                    self.sync_and_check(view, "noop")
            self.no_errors_logged()
        finally:
            if self.unslice is not None:
                base.SLICE_SECONDS, searching._FILTER_CHUNK = self.unslice
            logging.getLogger("gximap").removeHandler(self.errors)
            for view in self.views:
                view.conv.close()
            self.store.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(others=st.lists(st.sets(st.sampled_from(FEATURES)), min_size=1, max_size=2),
                preload=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(0, 3)), max_size=8),
                sliced=st.booleans(), notify_modseq=st.booleans())
    @step
    def open_sessions(self, others: list[set[str]], preload: list[tuple[int, int, int]], sliced: bool,
                      notify_modseq: bool) -> None:
        # Sliced, every look at the clock pauses (and the record filter takes two records a
        # chunk): the sliced paths run, and a foreign change (arm_foreign_change) lands in a
        # pause. Else none does, however loaded the machine: a run does the same every time.
        self.unslice = (base.SLICE_SECONDS, searching._FILTER_CHUNK)
        base.SLICE_SECONDS, searching._FILTER_CHUNK = (0.0, 2) if sliced else (3600.0, 10**9)
        for subject, sender, body in preload:
            self.store.append(USER, folder_info(self.store, "INBOX").id, message(subject, sender, body))
        for index, features in enumerate([set(self.WATCHER), *others]):
            folder = FOLDERS[index // 2]   # sessions 0 and 1 on INBOX, 2 on Other
            conv = Conversation(users=(), context=self.ctx)
            conv.session.process = functools.partial(self.process_then_interleave, conv.session.process)  # type: ignore[method-assign]
            view = ClientView(conv, f"session {index}", folder, frozenset(features))
            view.run(f"LOGIN {USER} {PASSWORD}")
            enable = sorted(features - {"NOTIFY"})
            if enable:
                view.run("ENABLE " + " ".join(enable))
            view.select(self.store)
            if "NOTIFY" in features:
                self.notify_set(view, notify_modseq)
            view.resolve()
            view.check(self.store)
            self.views.append(view)

    @staticmethod
    def notify_set(view: ClientView, modseq: bool) -> None:
        """NOTIFY SET; with MODSEQ in MessageNew's list, CONDSTORE comes on with it: its
        HIGHESTMODSEQ told at once (RFC 7162 section 3.1), every later untagged FETCH with MODSEQ."""
        enabling = modseq and not view.condstore
        if enabling:
            view.features = view.features | {"CONDSTORE"}
        lines = view.run(NOTIFY_SET_MODSEQ if modseq else NOTIFY_SET)
        if enabling and not any(_HIGHESTMODSEQ.search(line) for line in lines):
            view.fail(f"NOTIFY SET naming MODSEQ did not enable CONDSTORE: {lines!r}")

    def process_then_interleave(self, process: Any, limit: int) -> bool:
        """The session's process(): when it paused with work left, another process's change
        that arm_foreign_change queued commits now, between two of its slices."""
        more = bool(process(limit))
        if more and self.armed and not self.quiet:
            self.armed.pop(0)()
            self.fired += 1
        return more

    def sync_and_check(self, view: ClientView, how: str) -> None:
        """A sync point of ``view``'s session, then the check that its client's model equals the
        store. A foreign change may land in the sync command's pauses; then no more: another
        NOOP brings what landed after its catch-up, the client fetches what it knows by EXISTS
        alone, and the fresh searches that check the live ones see what those saw."""
        fired = self.fired
        view.sync(how)
        self.quiet = True
        try:
            if self.fired != fired:
                view.sync("noop")
            view.resolve()
            view.check(self.store)
        finally:
            self.quiet = False

    def view(self, index: int) -> ClientView:
        return self.views[index % len(self.views)]

    @staticmethod
    def chosen(view: ClientView, pick: list[int]) -> list[Slot]:
        """The messages ``pick`` names in the client's list: by position, every one for a -1."""
        if not view.slots:
            return []
        if -1 in pick:
            return list(view.slots)
        return sorted({view.slots[index % len(view.slots)] for index in pick}, key=view.slots.index)

    def message_set(self, view: ClientView, pick: list[int], use_uid: bool) -> str | None:
        """A set naming the picked messages: by message number or by UID (those with a known
        UID), or None when there is nothing to name."""
        slots = self.chosen(view, pick)
        if use_uid or view.uidonly:
            uids = [slot.uid for slot in slots if slot.uid is not None]
            return sequence_set(uids) if uids else None
        return sequence_set([view.slots.index(slot) + 1 for slot in slots]) if slots else None

    def picked(self, index: int, pick: list[int], use_uid: bool) -> tuple[ClientView, str, str] | None:
        """Session ``index``'s client out of IDLE (``pick`` names messages of the list IDLE's
        end left), the prefix of a command naming messages ("UID " by UID, as always under
        UIDONLY) and the set naming the picked ones; None when there is nothing to name."""
        view = self.view(index)
        view.end_idle()
        by_uid = use_uid or view.uidonly
        named = self.message_set(view, pick, by_uid)
        return None if named is None else (view, "UID " if by_uid else "", named)

    @invariant()
    def no_errors_logged(self) -> None:
        self.settled = not self.errors.records
        if self.errors.records:
            record = self.errors.records[0]
            raise ModelError(f"logged: {record.getMessage()}\n{logging.Formatter().formatException(record.exc_info)}"
                             if record.exc_info else f"logged: {record.getMessage()}")

    # -- the rules ------------------------------------------------------------------------------

    @rule(folder=st.sampled_from(FOLDERS), subject=st.integers(0, 5), sender=st.integers(0, 2),
          body=st.integers(0, 3), date=st.sampled_from(DATES), flags=st.sets(st.sampled_from(FLAGS), max_size=2),
          count=st.sampled_from((1, 1, 1, 2, 12)))
    @step
    def deliver(self, folder: str, subject: int, sender: int, body: int, date: int, flags: set[str],
                count: int) -> None:
        """Mail arrives by LMTP (straight into the store); sometimes a dozen at once (more than
        the live searches merge one by one)."""
        self.deliver_now(folder, subject, sender, body, date, flags, count)

    def deliver_now(self, folder: str, subject: int, sender: int, body: int, date: int, flags: set[str],
                    count: int) -> None:
        info = folder_info(self.store, folder)
        for number in range(min(count, MAX_MESSAGES - info.messages)):
            self.store.append(USER, info.id, message((subject + number) % len(SUBJECTS), sender,
                                                     (body + number) % len(BODIES)),
                              flags=tuple(sorted(flags)), internaldate=date + number % 2)

    @rule(kind=st.sampled_from(("deliver", "flags", "expunge", "move")), folder=st.sampled_from(FOLDERS),
          pick=st.lists(st.integers(0, 60), min_size=1, max_size=12), mode=st.sampled_from(("add", "remove", "set")),
          flags=st.sets(st.sampled_from(FLAGS), min_size=1, max_size=2), count=st.sampled_from((1, 12)))
    @step
    def arm_foreign_change(self, kind: str, folder: str, pick: list[int], mode: str, flags: set[str],
                           count: int) -> None:
        """Another process changes the store at the next pause of a session (while a command's
        search or a live search's re-check is between two slices), or never if none pauses."""
        store = self.store

        def change() -> None:
            info = folder_info(store, folder)
            uids = store.uids(USER, info.id)
            named = sorted({uids[index % len(uids)] for index in pick}) if uids else []
            if kind == "deliver":
                self.deliver_now(folder, pick[0] % len(SUBJECTS), 1, pick[-1] % len(BODIES), DATES[0], flags, count)
            elif kind == "flags" and named:
                store.store_flags(USER, info.id, named, mode, sorted(flags))
            elif kind == "expunge" and named:
                store.remove_messages(USER, info.id, named)
            elif kind == "move" and named:
                other = folder_info(store, FOLDERS[1] if folder == FOLDERS[0] else FOLDERS[0])
                if other.messages + len(named) <= MAX_MESSAGES:
                    store.move(USER, info.id, named, other.id)

        self.armed.append(change)

    @rule(index=st.integers(0, 2), to_other=st.booleans(), subject=st.integers(0, 5), body=st.integers(0, 3),
          flags=st.sets(st.sampled_from(FLAGS), max_size=2))
    @step
    def append(self, index: int, to_other: bool, subject: int, body: int, flags: set[str]) -> None:
        view = self.view(index)
        folder = FOLDERS[1] if to_other else FOLDERS[0]
        if folder_info(self.store, folder).messages < MAX_MESSAGES:
            view.end_idle()   # (what IDLE held is read before the client's own write)
            view.wrote_into(folder)
            view.run(f'APPEND "{folder}" ({" ".join(sorted(flags))})', literal=message(subject, 0, body))

    @rule(index=st.integers(0, 2), pick=picks, use_uid=st.booleans(), silent=st.booleans(),
          mode=st.sampled_from(("+", "-", "")), flags=st.sets(st.sampled_from(FLAGS), min_size=1, max_size=2),
          unchanged=st.sampled_from((None, None, "known", "zero")))
    @step
    def store_flags(self, index: int, pick: list[int], use_uid: bool, silent: bool, mode: str,
                    flags: set[str], unchanged: str | None) -> None:
        picked = self.picked(index, pick, use_uid)
        if picked is None:
            return
        view, uid_prefix, named = picked
        modifier = ""
        if unchanged is not None and view.condstore:
            # RFC 7162 section 3.1.3: the MODSEQ the client knows (a message changed since is
            # refused, OK [MODIFIED]), or 0 (every one refused).
            known = [slot.modseq or 0 for slot in self.chosen(view, pick)]
            modifier = f" (UNCHANGEDSINCE {min(known) if unchanged == 'known' else 0})"
        if silent:
            # The client records its own change: the server does not echo it (RFC 3501 6.4.6);
            # one it refused (UNCHANGEDSINCE) or another session's change it overwrote comes as a
            # FETCH of the flags after this.
            change = flag_set(" ".join(flags))
            for slot in self.chosen(view, pick):
                if slot.flags is not None and (slot.uid is not None or not uid_prefix):
                    slot.flags = slot.flags | change if mode == "+" else (
                        slot.flags - change if mode == "-" else change)
        view.run(f"{uid_prefix}STORE {named}{modifier} {mode}FLAGS{'.SILENT' if silent else ''}"
                 f" ({' '.join(sorted(flags))})", allow=("EXPUNGEISSUED",))

    @rule(index=st.integers(0, 2), pick=picks, use_uid=st.booleans(), to_other=st.booleans(),
          subject=st.integers(0, 5), body=st.integers(0, 3), flags=st.sets(st.sampled_from(FLAGS), max_size=2))
    @step
    def replace(self, index: int, pick: list[int], use_uid: bool, to_other: bool, subject: int, body: int,
                flags: set[str]) -> None:
        """REPLACE (RFC 8508): the new version saved, the old one expunged, in one step."""
        view = self.view(index)
        view.end_idle()
        slots = self.chosen(view, pick[:1])
        target = FOLDERS[1] if to_other else FOLDERS[0]
        if not slots or folder_info(self.store, target).messages >= MAX_MESSAGES:
            return
        if use_uid or view.uidonly:
            if slots[0].uid is None:
                return
            verb, number = "UID REPLACE", slots[0].uid
        else:
            verb, number = "REPLACE", view.slots.index(slots[0]) + 1
        view.wrote_into(target)
        view.run(f'{verb} {number} "{target}" ({" ".join(sorted(flags))})', literal=message(subject, 2, body),
                 allow=("EXPUNGEISSUED",))

    @rule(index=st.integers(0, 2), pick=picks, use_uid=st.booleans())
    @step
    def expunge(self, index: int, pick: list[int], use_uid: bool) -> None:
        view = self.view(index)
        view.end_idle()
        named = self.message_set(view, pick, True) if use_uid else None
        view.run(f"UID EXPUNGE {named}" if named else "EXPUNGE")

    @rule(index=st.integers(0, 2), pick=picks, use_uid=st.booleans(), move=st.booleans())
    @step
    def copy_or_move(self, index: int, pick: list[int], use_uid: bool, move: bool) -> None:
        picked = self.picked(index, pick, use_uid)
        if picked is None:
            return
        view, uid_prefix, named = picked
        target = FOLDERS[1] if view.folder == FOLDERS[0] else FOLDERS[0]
        if folder_info(self.store, target).messages >= MAX_MESSAGES:
            return
        view.wrote_into(target)
        view.run(f'{uid_prefix}{"MOVE" if move else "COPY"} {named} "{target}"', allow=("EXPUNGEISSUED",))

    @rule(index=st.integers(0, 2), pick=picks, use_uid=st.booleans())
    @step
    def fetch_flags(self, index: int, pick: list[int], use_uid: bool) -> None:
        picked = self.picked(index, pick, use_uid)
        if picked is None:
            return
        view, uid_prefix, named = picked
        view.run(f"{uid_prefix}FETCH {named} (FLAGS)", allow=("EXPUNGEISSUED",))

    @rule(index=st.integers(0, 2))
    @step
    def idle(self, index: int) -> None:
        view = self.view(index)
        if view.idle_tag is None:
            view.start_idle()

    @rule()
    @step
    def wake_sessions(self) -> None:
        """The pool runs wakeup() for every session whose waker fired (IDLE, NOTIFY)."""
        for view in self.views:
            view.wake()

    @rule(index=st.integers(0, 2), how=st.sampled_from(("noop", "idle", "check")))
    @step
    def sync_point(self, index: int, how: str) -> None:
        self.sync_and_check(self.view(index), how)

    @rule(index=st.integers(0, 2), criteria=st.sampled_from(SEARCHES), sort=st.one_of(st.none(), st.sampled_from(SORTS)),
          use_uid=st.booleans(), extra=st.sampled_from(("", " COUNT", " MIN MAX")),
          modseq=st.sampled_from((False, False, False, True)))
    @step
    def live_search(self, index: int, criteria: str, sort: str | None, use_uid: bool, extra: str,
                    modseq: bool) -> None:
        self.start_live_search(self.view(index), criteria, sort, use_uid, extra, modseq)

    @staticmethod
    def start_live_search(view: ClientView, criteria: str, sort: str | None, use_uid: bool, extra: str,
                          modseq: bool) -> None:
        """SEARCH/SORT RETURN (UPDATE ...); with ``modseq``, UPDATE's fetch-att list names MODSEQ,
        which enables CONDSTORE as the command runs (RFC 7162 section 3.1)."""
        if len(view.live) >= MAX_CONTEXTS:
            return
        # A QRESYNC or UIDONLY client works by UID (see ClientView.vanish).
        use_uid = use_uid or view.vanished
        verb = ("UID " if use_uid else "") + ("SEARCH" if sort is None else "SORT")
        returns = f"RETURN (UPDATE{' (UID MODSEQ)' if modseq else ''} ALL{extra})"
        text = f"{verb} {returns} {criteria}" if sort is None else f"{verb} {returns} {sort} UTF-8 {criteria}"
        enabling = modseq and not view.condstore
        if enabling:
            view.features = view.features | {"CONDSTORE"}
        lines = view.run(text, starting=LiveSearch("", use_uid, criteria, sort))
        if enabling and not any(_HIGHESTMODSEQ.search(line) for line in lines):
            view.fail(f"RETURN (UPDATE (MODSEQ)) did not enable CONDSTORE: {lines!r}")

    @rule(index=st.integers(0, 2), which=st.integers(0, 10))
    @step
    def cancel_update(self, index: int, which: int) -> None:
        view = self.view(index)
        if not view.live:
            return
        tag = sorted(view.live)[which % len(view.live)]
        view.end_idle()
        # Updates may still come before the tagged answer; none after it (RFC 5267 4.3.5).
        view.cancelling = view.live.pop(tag)
        view.run(f'CANCELUPDATE "{tag}"')
        view.cancelling = None
        view.cancelled.add(tag)

    @rule(index=st.integers(0, 2))
    @step
    def select_again(self, index: int) -> None:
        view = self.view(index)
        for live in view.live.values():
            view.cancelled.add(live.tag)
        view.select(self.store)


    @rule(index=st.integers(0, 2))
    @step
    def close_and_select(self, index: int) -> None:
        """CLOSE (what is \\Deleted expunged silently), then SELECT again: a QRESYNC client from
        its cache and the HIGHESTMODSEQ CLOSE gave, which a CLOSE that expunged must give (RFC
        7162 section 3.2.8) and which may not pass a change the client was not told of
        (ClientView.check_highest, after CLOSE's answer)."""
        view = self.view(index)
        view.end_idle()
        view.resolve()
        fired = self.fired
        deleted = self.store.deleted_uids(USER, folder_info(self.store, view.folder).id)
        view.closing = True
        view.run("CLOSE")
        if self.fired == fired and view.qresync and bool(deleted) != (view.close_code is not None):
            view.fail(f"CLOSE expunged {deleted}, its answer gave HIGHESTMODSEQ {view.close_code}")
        view.select(self.store)

    @rule(index=st.integers(0, 2), pick=picks,
          verb=st.sampled_from(("SEARCH", "SORT (ARRIVAL) UTF-8", "SORT (REVERSE SUBJECT) UTF-8",
                                "THREAD REFERENCES UTF-8")),
          criteria=st.sampled_from(("", "", " UNDELETED", " FLAGGED")))
    @step
    def uid_search_by_numbers(self, index: int, pick: list[int], verb: str, criteria: str) -> None:
        """A UID SEARCH/SORT/THREAD whose criteria hold message numbers: no EXPUNGE or VANISHED
        while it runs (RFC 7162 section 3.2.10; ClientView.numbered), so the numbers name the
        client's messages: the UIDs found are theirs, and with no other criterion every one the
        store still has."""
        view = self.view(index)
        if view.uidonly:   # RFC 9586 section 3: no message numbers
            return
        view.end_idle()
        view.resolve()
        slots = self.chosen(view, pick)
        if not slots:
            return
        named = {slot.uid for slot in slots if slot.uid is not None}   # every one (resolve)
        view.oracle = None
        lines = view.run(f"UID {verb} {sequence_set([view.slots.index(slot) + 1 for slot in slots])}{criteria}",
                         numbered=True)
        if verb.startswith("THREAD"):
            found = [int(uid) for line in lines if line.startswith("* THREAD") for uid in re.findall(r"\d+", line)]
        else:
            found = list(view.oracle or [])
        view.oracle = None
        if not set(found) <= named:
            view.fail(f"UID {verb} of messages with UIDs {sorted(named)} found {found}")
        present = named & set(self.store.uids(USER, folder_info(self.store, view.folder).id))
        if not criteria and not present <= set(found):
            view.fail(f"UID {verb} of messages with UIDs {sorted(named)} found {found}, not {sorted(present)}")

    @rule(index=st.integers(0, 2), change=st.sampled_from(("deliver", "flags", "expunge")),
          method=st.sampled_from(BUSY_METHODS), failures=st.integers(1, 3),
          pick=st.lists(st.integers(0, 60), min_size=1, max_size=12),
          flags=st.sets(st.sampled_from(FLAGS), min_size=1, max_size=2),
          search=st.one_of(st.none(), st.sampled_from(SEARCHES)), count=st.sampled_from((1, 12)))
    @step
    def idle_store_error(self, index: int, change: str, method: str, failures: int, pick: list[int],
                         flags: set[str], search: str | None, count: int) -> None:
        """In IDLE, another's change, and the push or a live search's re-check it causes meets a
        store error (StoreBusy) ``failures`` times: the session's idle timer (timed_out) makes
        it again until it succeeds, and then the client's view is the store's: DONE has nothing
        left to report, and the sync point after it checks everything."""
        view = self.view(index)
        if search is not None:
            view.end_idle()
            self.start_live_search(view, search, None, True, "", False)
        if view.idle_tag is None:
            view.start_idle()
        store = self.store
        info = folder_info(store, view.folder)
        uids = store.uids(USER, info.id)
        named = sorted({uids[index % len(uids)] for index in pick}) if uids else []
        if change == "deliver" or not named:
            self.deliver_now(view.folder, pick[0] % len(SUBJECTS), 2, pick[-1] % len(BODIES), DATES[1], flags, count)
        elif change == "flags":
            store.store_flags(USER, info.id, named, "add" if pick[0] % 2 else "remove", sorted(flags))
        else:
            store.remove_messages(USER, info.id, named)
        original = getattr(store, method)
        left = [failures]

        def busy(*args: Any, **kwargs: Any) -> Any:
            if left[0]:
                left[0] -= 1
                raise StoreBusy("too many concurrent readers")
            return original(*args, **kwargs)

        setattr(store, method, busy)
        # No foreign change until DONE: none meets the injected error, and DONE has only what
        # the retries left to report.
        view.store_busy = self.quiet = True
        session = view.conv.session
        try:
            try:
                view.wake()
                for _retry in range(MAX_RETRIES):
                    if not session._idle.retry_due:
                        break
                    view.read(view.conv.timeout())
                    view.after_push()
            finally:
                delattr(store, method)
                view.store_busy = False
            if session._idle.retry_due:
                view.fail(f"still owing updates after {MAX_RETRIES} retries ({failures} store errors)")
            tag, view.idle_tag = view.idle_tag, None
            assert tag is not None
            lines = view.read(view.conv.send(b"DONE\r\n"))
            view.finish(tag, lines, ())
            if lines[:-1]:
                view.fail(f"DONE after the retries still reported {lines[:-1]!r} ({failures - left[0]} store errors)")
        finally:
            self.quiet = False
        self.sync_and_check(view, "noop")


@pytest.mark.parametrize("mode", sorted(WATCHER_MODES))
def test_session_views_follow_the_store(mode: str) -> None:
    machine = type(f"SessionsModel_{mode.replace('-', '_')}", (SessionsModel,), {"WATCHER": WATCHER_MODES[mode]})
    run_state_machine_as_test(machine, settings=MODEL_SETTINGS)


def test_a_notify_expunge_after_the_answer_of_a_fetch_by_number_is_not_during_it() -> None:
    """The qresync run's falsifying example (seed 651118466, GXIMAP_FUZZ_EXAMPLES=1500): another
    session's expunge, committed in a pause of a FETCH by message number, is held back by it
    (RFC 3501 section 7.4.1) and NOTIFY pushes it right after the tagged answer (RFC 5465
    section 3). The model read that EXPUNGE as one during the FETCH: it ended the command only
    after reading all the lines."""
    machine = type("SessionsModel_qresync", (SessionsModel,), {"WATCHER": WATCHER_MODES["qresync"]})
    state = machine()
    try:
        state.open_sessions(others=[{"NOTIFY", "CONDSTORE"}], preload=[(0, 0, 0)], sliced=True, notify_modseq=False)
        state.live_search(criteria="FLAGGED", extra="", index=1, modseq=False, sort=None, use_uid=False)
        state.arm_foreign_change(count=1, flags={"\\Seen"}, folder="INBOX", kind="deliver", mode="add", pick=[0])
        state.arm_foreign_change(count=1, flags={"\\Seen"}, folder="INBOX", kind="expunge", mode="add", pick=[0])
        state.fetch_flags(index=1, pick=[0], use_uid=False)
        state.no_errors_logged()
    finally:
        state.teardown()
