"""Capped exponential backoff with jitter, so many clients retrying do not retry in step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays initial, initial*factor, ... up to cap, each stretched by up to `jitter`
    of itself (client-go's reflector uses 0.8 s doubling to 30 s with jitter 1.0)."""

    initial: float = 0.8
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 1.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self, at_least: float = 0.0) -> float:
        """The delay before the next try (never below `at_least`, e.g. a Retry-After)."""
        base = min(self.cap, self.initial * self.factor**self.failures)
        self.failures += 1
        return max(at_least, base * (1.0 + self.jitter * self.rng.random()))

    def reset(self) -> None:
        self.failures = 0
