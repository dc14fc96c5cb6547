"""The selected view's UID list (gximap.session.selected.UidRuns) and its sharing between sessions:
it must answer exactly like a plain ascending list, whatever the runs look like."""

from __future__ import annotations

import bisect
import gc
import random
from pathlib import Path

import pytest
from conversation import Conversation
from hypothesis import given, settings
from hypothesis import strategies as st
from test_parser_fuzz import plain_page

from gximap.imap.commands import PartialRange, SequenceSet
from gximap.session.selected import SHARED_VIEWS, SelectedMailbox, UidRuns, page_of_set, set_positions

REPO_DATA = Path(__file__).resolve().parent.parent / "data"

uid_lists = st.lists(st.integers(min_value=1, max_value=400), max_size=120).map(lambda values: sorted(set(values)))


def _check_like_list(runs: UidRuns, uids: list[int]) -> None:
    assert len(runs) == len(uids)
    assert list(runs) == uids
    assert bool(runs) == bool(uids)
    for index, uid in enumerate(uids):
        assert runs[index] == uid
        assert runs[index - len(uids)] == uid
        assert runs.position(uid) == index
        assert uid in runs
    with pytest.raises(IndexError):
        runs[len(uids)]
    for probe in range(0, (uids[-1] if uids else 0) + 3):
        assert runs.bisect_left(probe) == bisect.bisect_left(uids, probe)
        assert bisect.bisect_left(runs, probe) == bisect.bisect_left(uids, probe)  # other modules bisect it
        if probe not in uids:
            assert runs.position(probe) is None and probe not in runs
    for start in range(-2, len(uids) + 2):
        for stop in range(start, len(uids) + 3, 3):
            assert runs[start:stop] == uids[start:stop]
    assert runs[::2] == uids[::2]
    expected_ranges: list[tuple[int, int]] = []
    for uid in uids:
        if expected_ranges and expected_ranges[-1][1] == uid - 1:
            expected_ranges[-1] = (expected_ranges[-1][0], uid)
        else:
            expected_ranges.append((uid, uid))
    assert runs.ranges() == expected_ranges
    assert runs.run_count == len(expected_ranges)


@settings(max_examples=200, deadline=None)
@given(uid_lists)
def test_runs_answer_like_the_list(uids: list[int]) -> None:
    runs = UidRuns.from_sorted(uids)
    _check_like_list(runs, uids)
    assert UidRuns.from_ranges(runs.ranges()) == runs
    assert hash(UidRuns.from_sorted(list(uids))) == hash(runs)


@settings(max_examples=200, deadline=None)
@given(uid_lists, st.data())
def test_span_and_positions(uids: list[int], data: st.DataObject) -> None:
    runs = UidRuns.from_sorted(uids)
    low = data.draw(st.integers(min_value=0, max_value=410))
    high = data.draw(st.integers(min_value=low, max_value=420))
    start, stop = runs.span(low, high)
    assert runs.slice_list(start, stop) == [uid for uid in uids if low <= uid <= high]
    subset = sorted(data.draw(st.sets(st.sampled_from(uids))) if uids else [])
    positions = runs.positions_of(subset, base=1)
    assert list(positions) == [uids.index(uid) + 1 for uid in subset]
    with pytest.raises(ValueError):
        runs.positions_of([0, 1000])


# UIDs 1..150 with holes; sequence-set ranges over them, mostly short so that a set is several
# spans: either end "*" (None), reversed (4:2), overlapping others, naming UIDs absent from the
# list or above its highest.
page_uid_lists = st.builds(lambda top, holes: [uid for uid in range(1, top + 1) if uid not in holes],
                           st.integers(0, 150), st.sets(st.integers(1, 150), max_size=40))
set_ranges = st.lists(st.builds(lambda start, width, star: (None, start) if star == 1 else (start, None) if star == 2
                                else (start, max(start + width, 1)),
                                st.integers(1, 160), st.integers(-6, 12), st.integers(0, 12)),
                      min_size=1, max_size=8)
partial_ranges = st.builds(lambda first, second, from_last: PartialRange(first * (-1 if from_last else 1),
                                                                         second * (-1 if from_last else 1)),
                           st.integers(1, 70), st.integers(1, 70), st.booleans())


def plain_set(uids: list[int], ranges: list[tuple[int | None, int | None]], by_uid: bool) -> list[int]:
    """The UIDs a sequence set names, read plainly: each UID (or message number) tested against
    each range, "*" the highest; by UID, "n:*" names the highest even when n is above it (RFC
    3501 section 6.4.8: the range is read as "highest:n")."""
    if not uids:
        return []
    highest = uids[-1] if by_uid else len(uids)
    bounds = [sorted((highest if start is None else start, highest if end is None else end)) for start, end in ranges]
    return [uid for number, uid in enumerate(uids, 1)
            if any(low <= (uid if by_uid else number) <= high for low, high in bounds)]


@settings(max_examples=400, deadline=None)
@given(page_uid_lists, set_ranges, partial_ranges, st.booleans())
def test_the_page_of_a_set_is_found_from_its_ranges(uids: list[int], ranges: list[tuple[int | None, int | None]],
                                                    partial: PartialRange, by_uid: bool) -> None:
    """RFC 9394 section 3.3's FETCH page, worked out from the set's ranges (page_of_set), is the
    plain page of the plainly listed set; and the set, listed from its positions, is the plain set."""
    if not by_uid:  # message numbers beyond the count are BAD before this is asked
        ranges = [tuple(None if end is None else min(end, max(len(uids), 1)) for end in pair)  # type: ignore[misc]
                  for pair in ranges]
    runs = UidRuns.from_sorted(uids)
    seqset = SequenceSet(tuple(ranges))
    named = plain_set(uids, ranges, by_uid)
    assert [uid for start, stop in set_positions(runs, seqset, by_uid) for uid in runs.slice_list(start, stop)] == named
    assert page_of_set(runs, seqset, by_uid, partial) == plain_page(partial, named)


def test_a_page_of_a_large_set_lists_only_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """UID FETCH 1:* (PARTIAL -1:-50) of 300,000 messages in 100,000 runs builds the 50 UIDs,
    never the set: slice_list is asked for the page's positions only."""
    uids = [uid for uid in range(1, 400_001) if uid % 4]
    runs = UidRuns.from_sorted(uids)
    asked: list[tuple[int, int]] = []
    slice_list = UidRuns.slice_list

    def counted(self: UidRuns, start: int, stop: int) -> list[int]:
        asked.append((start, stop))
        return slice_list(self, start, stop)

    monkeypatch.setattr(UidRuns, "slice_list", counted)
    every = SequenceSet(((1, None),))
    assert page_of_set(runs, every, True, PartialRange(-1, -50)) == uids[-50:]
    assert asked == [(len(runs) - 50, len(runs))]
    asked.clear()
    assert page_of_set(runs, SequenceSet(((9, 9), (100, 3), (1000, None))), True, PartialRange(2, 4)) == [5, 6, 7]
    assert sum(stop - start for start, stop in asked) == 3


@settings(max_examples=200, deadline=None)
@given(uid_lists, st.lists(st.integers(min_value=1, max_value=450), max_size=40), st.data())
def test_derived_lists(uids: list[int], gone: list[int], data: st.DataObject) -> None:
    runs = UidRuns.from_sorted(uids)
    remaining, positions = runs.without(gone)
    assert positions == sorted(uids.index(uid) for uid in set(gone) if uid in uids)
    kept = [uid for uid in uids if uid not in set(gone)]
    _check_like_list(remaining, kept)
    assert list(runs) == uids  # the original never changes (other sessions share it)
    top = kept[-1] if kept else 0
    extra = sorted(set(data.draw(st.lists(st.integers(min_value=top + 1, max_value=top + 30), max_size=10))))
    grown = remaining.appended(extra)
    _check_like_list(grown, kept + extra)
    assert remaining.appended([]) is remaining


def test_a_contiguous_folder_is_one_run_whatever_its_size() -> None:
    runs = UidRuns.from_sorted(list(range(1, 200_001)))
    assert runs.run_count == 1 and len(runs) == 200_000 and runs[150_000] == 150_001
    holes = [uid for uid in range(1, 200_001) if uid % 50_000]
    assert UidRuns.from_sorted(holes).run_count == 4


def test_the_large_run_scan_finds_every_boundary() -> None:
    rng = random.Random(5)
    for _ in range(20):
        uids = sorted(rng.sample(range(1, 5000), rng.randint(100, 3000)))
        runs = UidRuns.from_sorted(uids)
        assert list(runs) == uids
        assert runs.run_count == 1 + sum(1 for a, b in zip(uids, uids[1:], strict=False) if b != a + 1)


# -- sharing between sessions --------------------------------------------------------------------------


class _Session:
    def __init__(self) -> None:
        self.enabled: set[str] = set()
        self.qresync_enabled = False
        self.uidonly = False
        self.rev2 = False
        self.notify = None


def _expunge(conv: Conversation, uids: list[int]) -> None:
    """Another session's STORE \\Deleted + UID EXPUNGE, straight into the store."""
    folder = conv.folder("INBOX").id
    conv.store.store_flags("alice", folder, uids, "add", ["\\Deleted"])
    assert conv.store.expunge("alice", folder, uids) == uids


def _view(conv: Conversation, *, readonly: bool = True) -> SelectedMailbox:
    folder = conv.folder("INBOX")
    view = SelectedMailbox(conv.store, "alice", folder, readonly=readonly, session=_Session())
    view.open()
    return view


def test_views_of_one_folder_state_share_one_list_and_diverge_on_write(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        conv.login()
        for _ in range(20):
            conv.add_message()
        first, second = _view(conv), _view(conv)
        assert first.runs is second.runs
        # A flag change leaves the UID set alone: a new view still shares (no folder read needed).
        conv.store.store_flags("alice", conv.folder("INBOX").id, [3], "add", ["\\Flagged"])
        third = _view(conv)
        assert third.runs is first.runs
        # Another session expunges: a view that may announce it gets its own list ...
        _expunge(conv, [5, 6])
        first.sync(allow_expunge=False)
        assert first.pending_expunge == {5, 6} and first.runs is second.runs  # held back: unchanged
        first.sync(allow_expunge=True)
        assert 5 not in first.runs and 5 in second.runs and len(second.runs) == 20
        # ... and when the second applies the same change, both share one list again.
        second.sync(allow_expunge=True)
        assert second.runs is first.runs
        conv.add_message()
        first.sync(allow_expunge=True)
        second.sync(allow_expunge=True)
        assert first.runs is second.runs and first.runs[-1] == 21
        fresh = _view(conv)
        assert fresh.runs is first.runs


def test_a_reselect_after_a_state_change_reads_the_new_uids(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        conv.login()
        for _ in range(10):
            conv.add_message()
        view = _view(conv)
        _expunge(conv, [2])
        conv.add_message()
        again = _view(conv)
        assert list(again.uids) == [1, *range(3, 12)]
        assert list(view.uids) == list(range(1, 11))


def test_shared_lists_are_released_with_their_views(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        conv.login()
        for _ in range(5):
            conv.add_message()
        view = _view(conv)
        remaining, _ = view.runs.without([1, 2, 3])
        interned = SHARED_VIEWS.intern(remaining)
        assert SHARED_VIEWS.intern(UidRuns.from_sorted([4, 5])) is interned
        del interned, remaining
        gc.collect()
        assert SHARED_VIEWS.intern(UidRuns.from_sorted([4, 5])) is not None


def test_states_filed_are_bounded_when_their_list_outlives_them(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A folder kept empty (mail fetched and deleted): each SELECT sees a new UIDNEXT, and every
    # state's list is the one empty list, which never dies. Its states are not kept for good.
    monkeypatch.setattr(SHARED_VIEWS, "max_states", 20)
    with Conversation(tmp_path) as conv:
        conv.login()
        folder_id = conv.folder("INBOX").id
        views = []
        for _ in range(50):
            uid = conv.add_message()
            conv.store.store_flags("alice", folder_id, [uid], "add", ("\\Deleted",))
            conv.store.expunge("alice", folder_id)
            views.append(_view(conv))
        assert all(view.runs is views[0].runs for view in views)   # still shared
        assert SHARED_VIEWS.states_filed(conv.store) == 20
        again = _view(conv)    # the latest state: found, not read again
        assert again.runs is views[-1].runs and SHARED_VIEWS.states_filed(conv.store) == 20


def test_states_whose_list_died_are_unfiled(tmp_path: Path) -> None:
    # Sessions that SELECT, change the folder and log out leave states no list is alive for:
    # they go at the next SELECT that files a state, not only when max_states is reached.
    with Conversation(tmp_path) as conv:
        conv.login()
        before = SHARED_VIEWS.states_filed(conv.store)
        for _ in range(40):
            conv.add_message()
            _view(conv)
        gc.collect()
        conv.add_message()
        _view(conv)
        # The last few lists are kept alive on purpose (_KEPT_STATES), so their states stay.
        assert SHARED_VIEWS.states_filed(conv.store) - before <= 10


# -- the view's RFC behaviour over runs ----------------------------------------------------------------


def test_expunge_held_back_keeps_numbers_until_allowed(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        conv.login()
        for _ in range(8):
            conv.add_message()
        conv.select()
        other = conv.second_session()
        other.login()
        other.select()
        other.command("STORE 2,5 +FLAGS.SILENT (\\Deleted)")
        other.command("EXPUNGE")
        # FETCH may not announce the expunge: message numbers stay, the expunged one is skipped.
        lines = conv.send(b"f1 FETCH 1:* (UID)\r\n")
        assert lines[:-1] == [b"* %d FETCH (UID %d)" % (n, n) for n in (1, 3, 4, 6, 7, 8)]
        assert lines[-1].startswith(b"f1 NO [EXPUNGEISSUED]")
        # A UID FETCH completes with OK, answers in the old numbers, then announces the expunges.
        lines = conv.command("UID FETCH 1:* (UID)")
        assert lines[:-1] == [*(b"* %d FETCH (UID %d)" % (n, n) for n in (1, 3, 4, 6, 7, 8)),
                              b"* 5 EXPUNGE", b"* 2 EXPUNGE"]
        assert lines[-1].split(b" ")[1] == b"OK"
        assert conv.command("NOOP")[:-1] == []
        assert conv.command("FETCH 1:* (UID)")[:-1] == [
            b"* %d FETCH (UID %d)" % (n, uid) for n, uid in enumerate((1, 3, 4, 6, 7, 8), start=1)]


def test_resolve_over_runs_with_holes(tmp_path: Path) -> None:
    with Conversation(tmp_path) as conv:
        conv.login()
        for _ in range(30):
            conv.add_message()
        _expunge(conv, [4, 5, 6, 20, 29])
        conv.select()
        view = conv.session.selected
        assert view is not None
        uids = [uid for uid in range(1, 31) if uid not in {4, 5, 6, 20, 29}]
        assert list(view.uids) == uids and view.runs.run_count == 4
        from gximap.imap.commands import SequenceSet

        def seq(text: str) -> SequenceSet:
            ranges = []
            for part in text.split(","):
                low, _, high = part.partition(":")
                ranges.append((None if low == "*" else int(low),
                               None if (high or low) == "*" else int(high or low)))
            return SequenceSet(tuple(ranges))

        assert view.resolve(seq("3:7,19:21"), uid=True) == [3, 7, 19, 21]
        assert view.resolve(seq("40:*"), uid=True) == [30]
        assert view.resolve(seq("*"), uid=True) == [30]
        assert view.resolve(seq("2:4,24:*"), uid=False) == [2, 3, 7, 28, 30]
        assert view.msn_of(7) == 4 and view.msn_of(5) is None and view.uid_at(4) == 7
        # The flat array other modules bisect: built once per shared list, equal to it.
        assert view.uids.tolist() == uids and view.uids is view.uids
