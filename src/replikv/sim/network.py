"""A simulated network: delay with jitter, loss, duplication, reordering and partitions.

Every decision comes from the simulation's seeded random generator, so one seed gives one
run. Raft must survive all of it (its messages carry enough to detect loss, duplicates and
stale deliveries). The real transport is TCP — per-link FIFO, no duplicates, loss only when a
connection breaks — so this network is harsher than production, on purpose.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(slots=True)
class NetworkFaults:
    delay_ms_min: int = 1
    delay_ms_max: int = 8
    loss: float = 0.0  # probability a message is dropped
    duplicate: float = 0.0  # probability a message is delivered twice
    # Probability that a message takes a long detour (up to delay_spike_ms), overtaking others.
    spike: float = 0.0
    delay_spike_ms: int = 300


class SimNetwork:
    def __init__(self, rng: random.Random, faults: NetworkFaults) -> None:
        self.rng = rng
        self.faults = faults
        self.blocked: set[tuple[str, str]] = set()  # (src, dst) links that drop everything
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    def delays_ms(self, src: str, dst: str) -> list[int]:
        """Delivery delays for one message from src to dst: [] lost, [d] once, [d1, d2] twice."""
        self.sent += 1
        f = self.faults
        if (src, dst) in self.blocked or (f.loss and self.rng.random() < f.loss):
            self.dropped += 1
            return []
        copies = 2 if f.duplicate and self.rng.random() < f.duplicate else 1
        self.duplicated += copies - 1
        out = []
        for _ in range(copies):
            d = self.rng.randint(f.delay_ms_min, f.delay_ms_max)
            if f.spike and self.rng.random() < f.spike:
                d += self.rng.randint(0, f.delay_spike_ms)
            out.append(d)
        return out

    def partition(self, *groups: set[str]) -> None:
        """Block every link between different groups (nodes in no group keep their links)."""
        self.blocked = {(a, b) for g1 in groups for g2 in groups if g1 is not g2
                        for a in g1 for b in g2}

    def block_one_way(self, src: str, dst: str) -> None:
        self.blocked.add((src, dst))

    def heal(self) -> None:
        self.blocked = set()
