"""Gateway sequence bookkeeping: which batch sequences are still missing (pure range arithmetic).

A gateway numbers its telemetry batches 1, 2, 3, … Ingest keeps, per gateway, the highest
sequence committed (``last_seq``) and the ranges below it that have not arrived yet
(``gateway_seq_missing``). A batch above ``last_seq`` opens the range it skipped; a late or
resent batch inside a missing range closes it or splits it in two. Two ingest workers sharing
an MQTT 5 subscription commit one gateway's batches out of order (Mosquitto dispatches
round-robin): seq 8 before seq 7 opens ``[7, 7]`` for a moment and 7 closes it again, so the
count of missing sequences is exact once everything has arrived. The writer applies
:func:`advance` under the gateway's row lock, in the transaction that stores the batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

#: An inclusive range of sequences ``(first, last)``.
SeqRange = tuple[int, int]


@dataclass(frozen=True, slots=True)
class SeqAdvance:
    """What committing some sequences does to one gateway's bookkeeping."""

    last_seq: int | None
    #: Stored ranges to delete (a late sequence fell inside them).
    removed: list[SeqRange] = field(default_factory=list)
    #: Ranges to insert: newly skipped ones and the remainders of split ranges.
    added: list[SeqRange] = field(default_factory=list)
    #: Sequences newly skipped (batches we have not seen yet).
    skipped: int = 0
    #: Sequences that were missing and arrived now.
    filled: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.added)


def split_range(r: SeqRange, hits: Iterable[int]) -> list[SeqRange]:
    """What is left of ``r`` once the sequences ``hits`` (all inside ``r``) arrived."""
    out: list[SeqRange] = []
    start = r[0]
    for h in sorted(set(hits)):
        if not r[0] <= h <= r[1]:
            raise ValueError(f"sequence {h} is outside the range {r}")
        if h > start:
            out.append((start, h - 1))
        start = h + 1
    if start <= r[1]:
        out.append((start, r[1]))
    return out


def advance(last_seq: int | None, missing: Iterable[SeqRange], seqs: Iterable[int]) -> SeqAdvance:
    """The bookkeeping change after committing ``seqs`` on top of ``last_seq`` and the ``missing`` ranges.

    ``missing`` needs to hold only the stored ranges that may contain a sequence of ``seqs``
    (the writer fetches just those); ranges are disjoint and below ``last_seq``. The first
    sequence ever seen opens no gap: we do not know where the gateway started. A sequence at
    or below ``last_seq`` that is in no missing range is a redelivery and changes nothing.
    """
    ordered = sorted(set(seqs))
    late = [] if last_seq is None else [s for s in ordered if s <= last_seq]
    removed: list[SeqRange] = []
    added: list[SeqRange] = []
    filled = 0
    if late:
        for r in sorted(set(missing)):
            hits = [s for s in late if r[0] <= s <= r[1]]
            if hits:
                removed.append(r)
                added += split_range(r, hits)
                filled += len(hits)
    high = last_seq
    skipped = 0
    for s in ordered:
        if high is None:
            high = s
        elif s > high:
            if s > high + 1:
                added.append((high + 1, s - 1))
                skipped += s - high - 1
            high = s
    return SeqAdvance(high, removed, added, skipped, filled)
