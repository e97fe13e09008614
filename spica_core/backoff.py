"""Capped exponential backoff, for every retry that must never spin: a node's reconnects
(node pool), a stack's failed preflight check (daemon), the journal's replay into an
unreachable dbspica (daemon).

The wait after the n-th failure in a row is ``base * 2**(n-1)``, never above ``cap``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: Doublings past which the wait stops growing whatever the cap (2**30 times the base): the
#: arithmetic stays finite however long a failure lasts.
MAX_DOUBLINGS = 30


def capped_delay(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` failures in a row: 0 before any, then ``base``,
    doubling at each further one, never above ``cap``."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, MAX_DOUBLINGS))


@dataclass
class Backoff:
    """The failures in a row of one retried thing and when it is due again (monotonic)."""

    base: float
    cap: float
    failures: int = 0
    next_attempt: float = 0.0

    def failed(self) -> float:
        """One more failure: the seconds to wait before the next attempt."""
        self.failures += 1
        return self._wait(capped_delay(self.failures, self.base, self.cap))

    def at_cap(self) -> float:
        """A failure that waiting longer each time would not help (a bug, not an outage):
        wait ``cap`` now and at the failures that follow."""
        self.failures = max(self.failures, MAX_DOUBLINGS + 1)
        return self._wait(self.cap)

    def succeeded(self) -> None:
        self.failures = 0
        self.next_attempt = 0.0

    @property
    def waiting(self) -> bool:
        return time.monotonic() < self.next_attempt

    def _wait(self, delay: float) -> float:
        self.next_attempt = time.monotonic() + delay
        return delay
