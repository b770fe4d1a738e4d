"""Request planning: merge a device's tags into as few register reads as allowed. Pure.

Each Modbus request costs a round trip, so tags of the same register type are
coalesced into contiguous reads when the hole between them is at most
``max_gap`` registers and the read stays within ``max_registers`` (125 is the
protocol's limit for FC 3/4). Later: split a read that fails with "illegal
address" and remember the split per device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.config import MAX_REGISTERS_PER_READ, Tag


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
    tags: Iterable[Tag], *, max_registers: int = MAX_REGISTERS_PER_READ, max_gap: int = 16
) -> list[ReadRequest]:
    """Group ``tags`` into reads ordered by register type then address."""
    if max_registers < 1:
        raise ValueError("max_registers must be >= 1")
    plan: list[ReadRequest] = []
    by_type: dict[str, list[Tag]] = {}
    for tag in tags:
        by_type.setdefault(tag.register_type, []).append(tag)
    for register_type in sorted(by_type):
        group = sorted(by_type[register_type], key=lambda t: (t.address, t.count))
        start = end = -1
        members: list[Tag] = []
        for tag in group:
            tag_end = tag.address + tag.count
            fits = members and tag.address - end <= max_gap and max(end, tag_end) - start <= max_registers
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
