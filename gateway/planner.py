"""Request planning: merge a device's tags into as few register reads as allowed. Pure.

Each Modbus request costs a round trip, so tags of the same register type are
coalesced into contiguous reads when the hole between them is at most
``max_gap`` registers and the read stays within ``max_registers`` (125 is the
protocol's limit for FC 3/4; coils and discrete inputs merge up to ``max_bits``,
2000 for FC 1/2). A merged read that a device refuses with "illegal data
address" (some devices have holes in their map) is cut in two by
:func:`split_request`; the driver keeps the split for the device's lifetime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.config import BIT_TABLES, MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ, Tag


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers of ``register_type`` from ``address``, serving ``tags``."""

    register_type: str
    address: int
    count: int
    tags: tuple[Tag, ...]

    def slice_for(self, tag: Tag, registers: Sequence[int]) -> Sequence[int]:
        """The part of this request's answer that holds ``tag``."""
        start = tag.address - self.address
        return registers[start : start + tag.count]


def plan_reads(
    tags: Iterable[Tag],
    *,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_gap: int = 16,
    max_bits: int = MAX_BITS_PER_READ,
) -> list[ReadRequest]:
    """Group ``tags`` into reads ordered by register type then address."""
    if max_registers < 1 or max_bits < 1:
        raise ValueError("max_registers and max_bits must be >= 1")
    plan: list[ReadRequest] = []
    by_type: dict[str, list[Tag]] = {}
    for tag in tags:
        by_type.setdefault(tag.register_type, []).append(tag)
    for register_type in sorted(by_type):
        group = sorted(by_type[register_type], key=lambda t: (t.address, t.count))
        limit = max_bits if register_type in BIT_TABLES else max_registers
        start = end = -1
        members: list[Tag] = []
        for tag in group:
            tag_end = tag.address + tag.count
            fits = members and tag.address - end <= max_gap and max(end, tag_end) - start <= limit
            if fits:
                end = max(end, tag_end)
                members.append(tag)
                continue
            if members:
                plan.append(ReadRequest(register_type, start, end - start, tuple(members)))
            start, end, members = tag.address, tag_end, [tag]
        if members:
            plan.append(ReadRequest(register_type, start, end - start, tuple(members)))
    return plan


def _span(register_type: str, tags: Sequence[Tag]) -> ReadRequest:
    start = min(t.address for t in tags)
    end = max(t.address + t.count for t in tags)
    return ReadRequest(register_type, start, end - start, tuple(tags))


def split_request(request: ReadRequest) -> list[ReadRequest]:
    """Cut a merged read in two halves by tag (each spanning only its own tags).

    Repeated on each half that fails again, a read converges on the readable
    tags in ``log2(tags)`` steps; a single-tag read cannot be split (``[request]``).
    """
    tags = sorted(request.tags, key=lambda t: (t.address, t.count))
    if len(tags) < 2:
        return [request]
    mid = len(tags) // 2
    return [_span(request.register_type, tags[:mid]), _span(request.register_type, tags[mid:])]
