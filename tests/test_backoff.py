"""The one capped exponential backoff of node reconnects, failed checks and journal replay."""

from __future__ import annotations

import time

from spica_core.backoff import Backoff, capped_delay


def test_doubling_from_the_base_up_to_the_cap() -> None:
    assert [capped_delay(n, 0.5, 60.0) for n in range(9)] == [
        0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0,
    ]  # fmt: skip
    assert [capped_delay(n, 10.0, 600.0) for n in (1, 2, 6, 7, 8)] == [
        10.0, 20.0, 320.0, 600.0, 600.0,
    ]  # fmt: skip


def test_a_failure_lasting_for_ever_stays_at_the_cap() -> None:
    """No overflow however many failures in a row (a node down for weeks)."""
    assert capped_delay(100_000, 0.5, 60.0) == 60.0
    assert capped_delay(100_000, 0.2, 1e12) == 0.2 * 2**30


def test_backoff_state() -> None:
    retry = Backoff(0.2, 5.0)
    assert not retry.waiting
    assert [retry.failed() for _ in range(6)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert retry.waiting and retry.next_attempt > time.monotonic()
    retry.succeeded()
    assert (retry.failures, retry.waiting) == (0, False)
    assert retry.failed() == 0.2
    assert retry.at_cap() == 5.0
    assert retry.failed() == 5.0  # a bug's wait is not shortened by the next outage
    retry.succeeded()
    assert retry.failed() == 0.2
