"""Pure range arithmetic of the missing gateway sequences (ingest/sequences.py)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from ingest.metrics import set_sequences_missing
from ingest.sequences import advance, split_range


@pytest.mark.parametrize(
    ("r", "hits", "left"),
    [
        ((3, 3), [3], []),  # a one-sequence range closes
        ((3, 7), [3], [(4, 7)]),  # first
        ((3, 7), [7], [(3, 6)]),  # last
        ((3, 7), [5], [(3, 4), (6, 7)]),  # middle: split in two
        ((3, 7), [4, 6, 4], [(3, 3), (5, 5), (7, 7)]),  # repeats count once
        ((3, 7), [3, 4, 5, 6, 7], []),
    ],
)
def test_split_range(r: tuple[int, int], hits: list[int], left: list[tuple[int, int]]) -> None:
    """What remains of a missing range once some of its sequences arrived."""
    assert split_range(r, hits) == left


def test_split_range_refuses_a_sequence_outside() -> None:
    """A hit outside the range is a caller bug, not something to paper over."""
    with pytest.raises(ValueError, match="outside"):
        split_range((3, 7), [8])


@pytest.mark.parametrize(
    ("last", "missing", "seqs", "expected"),
    [
        # (last_seq, removed, added, skipped, filled)
        (None, [], [5], (5, [], [], 0, 0)),  # first sight: no gap, we do not know where the gateway started
        (None, [], [3, 6], (6, [], [(4, 5)], 2, 0)),
        (5, [], [6, 7, 8], (8, [], [], 0, 0)),  # in order
        (5, [], [5], (5, [], [], 0, 0)),  # redelivery
        (5, [], [3, 4], (5, [], [], 0, 0)),  # below last_seq and not missing: a replay, nothing changes
        (5, [], [8], (8, [], [(6, 7)], 2, 0)),  # 6 and 7 skipped
        (5, [], [8, 7], (8, [], [(6, 6)], 1, 0)),  # reordered within one commit: only 6 is missing
        (5, [], [9, 9, 7], (9, [], [(6, 6), (8, 8)], 2, 0)),
        (8, [(6, 7)], [7], (8, [(6, 7)], [(6, 6)], 0, 1)),  # a late batch shrinks the range
        (8, [(6, 7)], [6, 7], (8, [(6, 7)], [], 0, 2)),  # and closes it
        (20, [(3, 9)], [5], (20, [(3, 9)], [(3, 4), (6, 9)], 0, 1)),  # split
        (20, [(3, 4), (10, 12)], [4, 11, 22], (22, [(3, 4), (10, 12)], [(3, 3), (10, 10), (12, 12), (21, 21)], 1, 2)),
        (20, [(3, 4)], [15], (20, [], [], 0, 0)),  # a range not holding the sequence is left alone
    ],
)
def test_advance(
    last: int | None,
    missing: list[tuple[int, int]],
    seqs: list[int],
    expected: tuple[int | None, list, list, int, int],
) -> None:
    """A sequence above last_seq opens the skipped range; a late one inside a missing range closes or splits it."""
    a = advance(last, missing, seqs)
    assert (a.last_seq, a.removed, a.added, a.skipped, a.filled) == expected


def test_any_arrival_order_ends_with_nothing_missing() -> None:
    """Committing 1..50 in a scrambled order, one commit at a time, leaves no range and skipped == filled."""
    order = [1, *sorted(range(2, 51), key=lambda s: (s * 37) % 101)]
    last, ranges, skipped, filled = None, set(), 0, 0
    for s in order:
        a = advance(last, ranges, [s])
        ranges = (ranges - set(a.removed)) | set(a.added)
        last, skipped, filled = a.last_seq, skipped + a.skipped, filled + a.filled
        assert skipped - filled == sum(hi - lo + 1 for lo, hi in ranges)
    assert (last, ranges) == (50, set())
    assert skipped == filled > 0


def test_missing_gauge_keeps_the_newest_report(uid: str) -> None:
    """A stale report (lower stamp) arriving after a newer one does not overwrite the gauge."""
    gw = f"gw-{uid}"
    value = lambda: REGISTRY.get_sample_value("fieldwatch_ingest_sequences_missing", {"gateway": gw})  # noqa: E731
    set_sequences_missing({gw: (3, 2)})
    assert value() == 2
    set_sequences_missing({gw: (5, 0)})
    set_sequences_missing({gw: (4, 1)})  # committed before the (5, 0) one, reported after it
    assert value() == 0
