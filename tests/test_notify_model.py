"""Model-based test of NOTIFY's mailbox names (RFC 5465 sections 5.4 and 5.5): sessions with NOTIFY
SET watch while others CREATE, DELETE, RENAME (RENAME INBOX included), SUBSCRIBE and UNSUBSCRIBE
mailboxes of one account; at every sync point each watcher's view of the mailbox names and of
its subscriptions, built from nothing but the LIST responses NOTIFY sent it, equals what a fresh
LIST tells.

A watcher's view, from the responses (gximap.session.notify's MailboxName and SubscriptionChange):

* ``* LIST (...) "/" name``: the name exists, subscribed as ``\\Subscribed`` says;
  ``(\\NonExistent ...)``: no mailbox has the name (subscribed still if ``\\Subscribed``);
* ``("OLDNAME" (old))``: the mailbox was renamed, its children with it, with no LIST of theirs
  (section 5.4), their subscriptions too (not one of a name without a mailbox); but RENAME INBOX (RFC 3501 section 6.3.5) leaves
  INBOX (a new one) and its children.

What a session did itself it is not told (section 5: "SHOULD omit"): after its own command it
reads the names afresh, as a client knowing its own change would have them.

The default run is derandomized (the same 100 examples of up to 40 steps each time, about 8 s), with
rules that pick among the mailboxes there are and the subscribed ones besides those that pick
names blindly; SCRIPTS replays, as ordinary tests, the kinds of report that went wrong before.

GXIMAP_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/test_notify_model.py   (the long mode, random)
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from conversation import Conversation, InlineExecutor, response_codes
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from test_session_fuzz import PlainBackend

from gximap.auth.service import AuthService
from gximap.session.context import ServerContext, Settings
from midb.store import Store

LONG_RUN = "GXIMAP_FUZZ_EXAMPLES" in __import__("os").environ
EXAMPLES = int(__import__("os").environ.get("GXIMAP_FUZZ_EXAMPLES", "100"))
MODEL_SETTINGS = settings(max_examples=EXAMPLES, stateful_step_count=50 if LONG_RUN else 40, deadline=None,
                          derandomize=not LONG_RUN, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

REPO = Path(__file__).resolve().parent.parent
USER = "alice"
PASSWORD = "secret"
# Every name lives under one of these roots, so the subtree filter covers what personal does.
NAMES = ("Projects", "Projects/a", "Projects/a/deep", "Projects/b", "Archive", "Archive/x", "Lists",
         "INBOX/sub")
# The name a swap goes through (none of NAMES, so that it is free).
SWAP_NAME = "Swapping"
EVENTS = "(MessageNew MessageExpunge MailboxName SubscriptionChange)"
FILTERS = (f"NOTIFY SET (personal {EVENTS})",
           f"NOTIFY SET STATUS (personal {EVENTS})",
           f"NOTIFY SET (subtree (INBOX Projects Archive Lists) {EVENTS})",
           f"NOTIFY SET (selected (MessageNew MessageExpunge)) (personal {EVENTS})",
           f"NOTIFY SET (selected-delayed (MessageNew MessageExpunge)) (subtree (INBOX Projects Archive Lists) {EVENTS})",
           # Subscriptions alone: a RENAME's move of them is told without OLDNAME (section 5.5).
           "NOTIFY SET (personal (SubscriptionChange))",
           # The subscribed filter (section 6.4) follows the subscriptions it reports.
           "NOTIFY SET (subscribed (SubscriptionChange))",
           "NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge SubscriptionChange))")

_NAME = r'("(?:[^"\\]|\\.)*"|[^\s()]+)'
_LIST = re.compile(r'\* LIST \(([^)]*)\) (?:"/"|NIL) ' + _NAME + r'(?: \(("OLDNAME" \(' + _NAME + r'\))?.*\))?\Z')
_TAGGED = re.compile(r"(\S+) (OK|NO|BAD)\b")


def unquote(name: str) -> str:
    return name[1:-1].replace('\\"', '"').replace("\\\\", "\\") if name.startswith('"') else name


def canonical(name: str) -> str:
    return "INBOX" + name[5:] if name.upper().startswith("INBOX") and name[5:6] in ("", "/") else name


class ModelError(AssertionError):
    pass


class Watcher:
    """A session with NOTIFY SET and the client's view of the account's names."""

    def __init__(self, conv: Conversation, name: str, notify: str) -> None:
        self.conv = conv
        self.name = name
        self.notify = notify
        self.names: set[str] = set()
        self.subscribed: set[str] = set()
        # The names are told only with MailboxName; a watcher without it is held to its subscriptions.
        self.knows_names = "MailboxName" in notify

    def fail(self, message: str) -> None:
        recent = "\n".join(f"  {who}: {data[-700:]!r}" for who, data in self.conv.transcript[-10:])
        raise ModelError(f"{self.name} ({self.notify}): {message}\n{recent}")

    def run(self, text: str, *, allow_no: bool = False) -> tuple[str, list[str]]:
        """A command; the NOTIFY reports among its responses go into the view. Its tagged status."""
        tag = self.conv.next_tag()
        lines = [line.decode("utf-8", "surrogateescape") for line in self.conv.send(f"{tag} {text}\r\n".encode())]
        self.read(lines)
        tagged = [line for line in lines if line.startswith(tag + " ")]
        if len(tagged) != 1:
            self.fail(f"no single tagged answer for {text!r}: {lines!r}")
        status = _TAGGED.match(tagged[0])
        assert status is not None
        if status.group(2) == "BAD" or (status.group(2) == "NO" and not allow_no) or "[SERVERBUG]" in tagged[0]:
            self.fail(f"{text!r} answered {tagged[0]!r}")
        return status.group(2), lines

    def wake(self) -> None:
        if self.conv.wakes:
            self.read([line.decode("utf-8", "surrogateescape") for line in self.conv.wake()])

    def read(self, lines: list[str]) -> None:
        for line in lines:
            if "NOTIFICATIONOVERFLOW" in line or line.startswith(("* BYE", "* BAD")) or "[SERVERBUG]" in line:
                self.fail(f"unexpected {line!r}")
            found = _LIST.match(line)
            if found is None:
                continue
            attributes = {word.lower() for word in found.group(1).split()}
            name = canonical(unquote(found.group(2)))
            if found.group(4) is not None:
                self.renamed(canonical(unquote(found.group(4))), name)
            if {"\\nonexistent", "\\noselect"} & attributes:   # (a name kept for its children only)
                self.names.discard(name)
            else:
                self.names.add(name)
            if "\\subscribed" in attributes:
                self.subscribed.add(name)
            else:
                self.subscribed.discard(name)

    def renamed(self, old: str, new: str) -> None:
        """Section 5.4: one LIST with OLDNAME; the children moved too (not for INBOX)."""
        if old == "INBOX":
            self.names.add(new)
            return
        # The subscriptions of the mailboxes moved move with them; one of a name without a
        # mailbox (deleted after SUBSCRIBE) stays where it is.
        moved = {name for name in self.names if name == old or name.startswith(old + "/")}
        for known in (self.names, self.subscribed):
            carried = moved & known
            known.difference_update(carried)
            known.update(new + name[len(old):] for name in carried)

    def reread(self) -> None:
        """The names afresh (LIST) and the subscriptions (LIST (SUBSCRIBED)): what a client that
        made a change itself knows."""
        self.names, self.subscribed = self.truth()

    def truth(self) -> tuple[set[str], set[str]]:
        names: set[str] = set()
        subscribed: set[str] = set()
        for target, text in ((names, 'LIST "" "*"'), (subscribed, 'LIST (SUBSCRIBED) "" "*"')):
            tag = self.conv.next_tag()
            lines = [line.decode("utf-8", "surrogateescape")
                     for line in self.conv.send(f"{tag} {text}\r\n".encode())]
            if not lines or not lines[-1].startswith(f"{tag} OK"):
                self.fail(f"{text} answered {lines!r}")
            for line in lines:
                found = _LIST.match(line)
                if found is None or found.group(4) is not None:
                    continue
                attributes = {word.lower() for word in found.group(1).split()}
                name = canonical(unquote(found.group(2)))
                if target is names and ("\\nonexistent" in attributes or "\\noselect" in attributes):
                    continue
                if target is subscribed and "\\subscribed" not in attributes:
                    continue
                target.add(name)
        return names, subscribed


class NotifyNamesModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="gximap-notify-model-")
        self.store = Store(Path(self.tmp) / "midb", fsync=False, data_path=[str(REPO / "data")])
        self.store.create_account(USER)
        auth = AuthService(self.store, PlainBackend(), auth_times=1_000_000, ip_times=0, executor=InlineExecutor())
        self.ctx = ServerContext(Settings(), self.store, auth, response_codes())
        self.watchers: list[Watcher] = []
        self.oracle: Watcher | None = None

    def teardown(self) -> None:
        try:
            if self.watchers:
                self.sync()
        finally:
            for watcher in [*self.watchers, *([self.oracle] if self.oracle else [])]:
                watcher.conv.close()
            self.store.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def session(self, name: str, notify: str) -> Watcher:
        conv = Conversation(users=(), context=self.ctx)
        watcher = Watcher(conv, name, notify)
        watcher.run(f"LOGIN {USER} {PASSWORD}")
        return watcher

    @initialize(filters=st.lists(st.sampled_from(FILTERS), min_size=2, max_size=3),
                selected=st.lists(st.booleans(), min_size=3, max_size=3),
                existing=st.sets(st.sampled_from(NAMES), max_size=4))
    def open_sessions(self, filters: list[str], selected: list[bool], existing: set[str]) -> None:
        for name in sorted(existing):
            if self.store.get_folder(USER, name) is None:   # (Archive is made with the account)
                self.store.create_folder(USER, name)
        self.oracle = self.session("oracle", "none")
        for index, notify in enumerate(filters):
            watcher = self.session(f"session {index}", notify)
            if selected[index] or "selected" in notify:
                watcher.run("SELECT INBOX")
            watcher.run(notify)
            watcher.reread()
            self.watchers.append(watcher)

    def actor(self, index: int) -> Watcher:
        return self.watchers[index % len(self.watchers)]

    @rule(index=st.integers(0, 2), name=st.sampled_from(NAMES))
    def create(self, index: int, name: str) -> None:
        actor = self.actor(index)
        actor.run(f'CREATE "{name}"', allow_no=True)
        actor.reread()

    @rule(index=st.integers(0, 2), name=st.sampled_from(NAMES))
    def delete(self, index: int, name: str) -> None:
        actor = self.actor(index)
        actor.run(f'DELETE "{name}"', allow_no=True)
        actor.reread()

    @rule(index=st.integers(0, 2), old=st.sampled_from(("INBOX", *NAMES)), new=st.sampled_from(NAMES))
    def rename(self, index: int, old: str, new: str) -> None:
        actor = self.actor(index)
        actor.run(f'RENAME "{old}" "{new}"', allow_no=True)
        actor.reread()

    @rule(index=st.integers(0, 2), first=st.sampled_from(NAMES), second=st.sampled_from(NAMES))
    def swap(self, index: int, first: str, second: str) -> None:
        """Two names swapped through a third, the watchers hearing the three renames together."""
        actor = self.actor(index)
        if actor.run(f'RENAME "{first}" "{SWAP_NAME}"', allow_no=True)[0] == "OK":
            # The second RENAME fails for a name swapped with itself or its child: the first is
            # undone, else SWAP_NAME stays, a name outside the subtree filter.
            if actor.run(f'RENAME "{second}" "{first}"', allow_no=True)[0] == "OK":
                actor.run(f'RENAME "{SWAP_NAME}" "{second}"')
            else:
                actor.run(f'RENAME "{SWAP_NAME}" "{first}"')
        actor.reread()

    # The rules above pick names blindly, and most of their RENAMEs fail or move a mailbox nobody
    # subscribed: these pick among the mailboxes there are (and the subscribed ones), where the
    # reports that went wrong before were (a RENAME's move of subscriptions, names swapped).
    @rule(index=st.integers(0, 2), data=st.data(), new=st.sampled_from(NAMES))
    def rename_subscribed(self, index: int, data: st.DataObject, new: str) -> None:
        """A subscribed mailbox (or, with none, any) renamed, its subscription moving with it."""
        existing = self.existing()
        subscribed = sorted(set(self.store.subscriptions(USER)) & existing - {"INBOX"})
        choices = subscribed or sorted(existing)
        self.rename(index, data.draw(st.sampled_from(choices), label="old"), new)

    @rule(index=st.integers(0, 2), data=st.data())
    def swap_existing(self, index: int, data: st.DataObject) -> None:
        """Two mailboxes there are swapped (see swap)."""
        existing = sorted(self.existing() - {"INBOX"}) or NAMES   # (none there: they fail, as swap's may)
        first = data.draw(st.sampled_from(existing), label="first")
        second = data.draw(st.sampled_from(existing), label="second")
        self.swap(index, first, second)

    @rule(index=st.integers(0, 2), data=st.data(), subscribe=st.booleans())
    def subscription_existing(self, index: int, data: st.DataObject, subscribe: bool) -> None:
        """A mailbox there is subscribed or unsubscribed."""
        self.subscription(index, data.draw(st.sampled_from(sorted(self.existing())), label="name"), subscribe)

    def existing(self) -> set[str]:
        """The account's mailboxes now of the model's names (and INBOX, always there): those
        the subtree filter covers."""
        names = {"INBOX", *NAMES}
        return {name for entry in self.store.folder_entries(USER) if (name := canonical(entry.name)) in names}

    @rule(index=st.integers(0, 2), name=st.sampled_from(("INBOX", *NAMES)), subscribe=st.booleans())
    def subscription(self, index: int, name: str, subscribe: bool) -> None:
        actor = self.actor(index)
        actor.run(f'{"SUBSCRIBE" if subscribe else "UNSUBSCRIBE"} "{name}"', allow_no=True)
        actor.reread()

    @rule(name=st.sampled_from(("INBOX", *NAMES)))
    def deliver(self, name: str) -> None:
        """Mail into a mailbox (a STATUS for the watchers; none if it does not exist)."""
        info = self.store.get_folder(USER, name)
        if info is not None:
            self.store.append(USER, info.id, b"Subject: hi\r\n\r\nhello\r\n")

    @rule(index=st.integers(0, 2))
    def wake(self, index: int) -> None:
        self.actor(index).wake()

    @rule()
    def sync(self) -> None:
        """Every watcher reads what NOTIFY has for it (the pool's wakeup, then a NOOP): its view
        of the names and subscriptions is what LIST tells now."""
        assert self.oracle is not None
        names, subscribed = self.oracle.truth()
        for watcher in self.watchers:
            watcher.wake()
            watcher.run("NOOP")
            if watcher.knows_names and watcher.names != names:
                watcher.fail(f"names {sorted(watcher.names)}, LIST has {sorted(names)}")
            if watcher.subscribed != subscribed:
                watcher.fail(f"subscriptions {sorted(watcher.subscribed)}, LIST (SUBSCRIBED) has {sorted(subscribed)}")


def test_notify_watchers_see_the_names_the_store_has() -> None:
    run_state_machine_as_test(NotifyNamesModel, settings=MODEL_SETTINGS)


SUBSCRIPTIONS_ALONE = "NOTIFY SET (personal (SubscriptionChange))"
SUBSCRIBED_FILTER = "NOTIFY SET (subscribed (SubscriptionChange))"
NAMES_TOO = f"NOTIFY SET (personal {EVENTS})"
SUBTREE = f"NOTIFY SET (subtree (INBOX Projects Archive Lists) {EVENTS})"
# Steps of the model written out (rule, its arguments; session 0 acts, the others watch): the
# kinds of report that went wrong before, run whatever the random run draws. Each was a bug the
# default random run did not find (a RENAME's move of subscriptions told without MailboxName,
# names swapped, an UNSUBSCRIBE under the subscribed filter).
SCRIPTS: dict[str, tuple[list[str], set[str], list[tuple[str, dict[str, object]]]]] = {
    "rename-of-subscribed-names-without-mailbox-name": (
        [NAMES_TOO, SUBSCRIPTIONS_ALONE, SUBSCRIBED_FILTER], {"Projects/a"},
        [("subscription", {"name": "Projects", "subscribe": True}),
         ("subscription", {"name": "Projects/a", "subscribe": True}), ("sync", {}),
         ("rename", {"old": "Projects", "new": "Lists"}), ("sync", {}),
         ("rename", {"old": "Lists/a", "new": "Projects"}), ("sync", {})]),
    "subscribed-names-swapped": (
        [NAMES_TOO, NAMES_TOO, SUBSCRIPTIONS_ALONE, SUBTREE], {"Projects/a", "Lists"},
        [("subscription", {"name": "Projects/a", "subscribe": True}),
         ("subscription", {"name": "Lists", "subscribe": True}), ("sync", {}),
         ("swap", {"first": "Projects", "second": "Lists"}), ("sync", {}),
         ("swap", {"first": "Lists/a", "second": "Projects"}), ("sync", {})]),
    "unsubscribe-under-the-subscribed-filter": (
        [NAMES_TOO, SUBSCRIBED_FILTER], {"Lists", "Projects/b"},
        [("subscription", {"name": "Lists", "subscribe": True}),
         ("subscription", {"name": "Projects/b", "subscribe": True}), ("sync", {}),
         ("subscription", {"name": "Lists", "subscribe": False}),
         ("rename", {"old": "Projects", "new": "Archive/y"}), ("sync", {}),
         ("delete", {"name": "Archive/y/b"}), ("sync", {})]),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_notify_watchers_follow_a_scripted_sequence(script: str) -> None:
    filters, existing, steps = SCRIPTS[script]
    model = NotifyNamesModel()
    try:
        model.open_sessions(filters=filters, selected=[False] * len(filters), existing=existing)
        for step, arguments in steps:
            getattr(model, step)(**({"index": 0} if step != "sync" else {}), **arguments)
    finally:
        model.teardown()
