"""Jittered exponential backoff: how long to wait before the next connection attempt.

Pure: no clock, no sleeping; randomness is injected so tests can pin it.  Delay number ``n``
(counting from 0) is ``min(max, initial * multiplier**n)`` reduced by a random fraction of up
to ``jitter`` of itself.  Jitter spreads the reconnect storm when a broker comes back to many
nodes at once; keeping the lower half (``jitter`` 0.5) means no attempt follows another at once.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from ion.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not self.initial_s > 0:
            raise ConfigError("backoff initial delay must be positive")
        if self.max_s < self.initial_s:
            raise ConfigError("backoff max delay must be at least the initial delay")
        if self.multiplier < 1:
            raise ConfigError("backoff multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("backoff jitter must be between 0 and 1")

    def ceiling(self, attempt: int) -> float:
        """The delay before jitter for attempt ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must not be negative")
        if self.multiplier == 1:
            return self.initial_s
        # Past this exponent the product exceeds max_s anyway; avoids float overflow.
        limit = math.log(self.max_s / self.initial_s, self.multiplier) + 1
        if attempt > limit:
            return self.max_s
        return min(self.max_s, self.initial_s * self.multiplier**attempt)

    def delay(self, attempt: int, rand: float) -> float:
        """The delay for ``attempt`` given a random number ``rand`` in [0, 1)."""
        if not 0 <= rand <= 1:
            raise ValueError("rand must be in [0, 1]")
        return self.ceiling(attempt) * (1 - self.jitter * rand)


class Backoff:
    """The attempt counter around a policy: ``next_delay()`` after each failure, ``reset()``
    after a connection proved stable."""

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._random = random
        self._attempt = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        delay = self.policy.delay(self._attempt, self._random())
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0
