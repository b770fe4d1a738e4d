"""The persisted batch sequence and the backoff generator."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fwcore.retry import backoff_delays
from gateway.errors import SequenceError
from gateway.sequence import SequenceStore


def test_sequence_survives_a_restart(tmp_path: Path) -> None:
    """A new store over the same state dir continues where the old one stopped."""
    first = SequenceStore(tmp_path, "site-a", "gw-1")
    assert [first.next() for _ in range(3)] == [1, 2, 3]
    again = SequenceStore(tmp_path, "site-a", "gw-1")
    assert again.last == 3
    assert again.next() == 4


def test_sequences_of_different_gateways_are_independent(tmp_path: Path) -> None:
    """Two gateways sharing a state dir do not share a counter."""
    SequenceStore(tmp_path, "site-a", "gw-1").next()
    assert SequenceStore(tmp_path, "site-a", "gw-2").next() == 1


def test_sequence_file_is_replaced_atomically(tmp_path: Path) -> None:
    """No temp files are left behind after writes."""
    store = SequenceStore(tmp_path, "s", "g")
    for _ in range(5):
        store.next()
    assert [p.name for p in tmp_path.iterdir()] == ["seq-s-g.json"]


def test_reserve_persists_the_whole_range_in_one_write(tmp_path: Path) -> None:
    """A tick's batches take consecutive seqs; a restart continues after the last reserved, unused or not."""
    store = SequenceStore(tmp_path, "s", "g")
    assert store.next() == 1
    assert store.reserve(5) == 2  # 2..6
    assert store.last == 6
    assert SequenceStore(tmp_path, "s", "g").next() == 7  # never repeats a reserved number
    with pytest.raises(ValueError, match="at least one"):
        store.reserve(0)


def test_corrupt_sequence_file_is_refused(tmp_path: Path) -> None:
    """A corrupt file raises SequenceError instead of silently restarting at 1."""
    (tmp_path / "seq-s-g.json").write_text("{not json")
    with pytest.raises(SequenceError, match="corrupt"):
        _ = SequenceStore(tmp_path, "s", "g").last


def test_backoff_grows_to_the_cap_with_bounded_jitter() -> None:
    """Delays double from base up to the cap, each within ±jitter of the nominal value."""
    gen = backoff_delays(base=0.5, cap=4.0, factor=2.0, spread=(0.8, 1.2), rand=random.Random(1).random)
    delays = [next(gen) for _ in range(7)]
    for delay, nominal in zip(delays, [0.5, 1, 2, 4, 4, 4, 4], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jitter: capped delays are not identical


def test_backoff_rejects_nonsense_parameters() -> None:
    """A cap below the base is a programming error, reported at once."""
    with pytest.raises(ValueError):
        next(backoff_delays(base=2.0, cap=1.0))
