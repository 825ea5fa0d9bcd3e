"""The retry rules of the agents, without Kafka: what follows a failed attempt, and when.

DESIGN: exponential backoff, 2 s then x2, 3 attempts in all. Attempt 1 is the agent's own
run of the event; a failure parks the event on the retry topic for attempt 2, due 2 s later;
a second failure parks it for attempt 3, due 4 s after that; a third failure gives up (the
dead-letter topic and the handler's ``on_give_up``). ``processors.app`` does the Kafka part.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_DELAYS_S: tuple[float, ...] = (2.0, 4.0)  # DESIGN: 2 s, x2, 3 attempts in all
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1


@dataclass(frozen=True)
class Retry:
    """Run the event again: attempt number ``attempt``, not before ``not_before_ms`` (epoch ms)."""

    attempt: int
    not_before_ms: int


@dataclass(frozen=True)
class GiveUp:
    """No attempt is left: dead-letter the event after ``attempts`` attempts."""

    attempts: int


def after_failure(failed_attempt: int, now_ms: int, delays_s: tuple[float, ...] = RETRY_DELAYS_S) -> Retry | GiveUp:
    """What follows the failure of attempt ``failed_attempt`` (1 = the first run) at ``now_ms``."""
    if failed_attempt < 1:
        raise ValueError(f"attempts are numbered from 1, not {failed_attempt}")
    if failed_attempt > len(delays_s):
        return GiveUp(attempts=failed_attempt)
    return Retry(attempt=failed_attempt + 1, not_before_ms=now_ms + int(delays_s[failed_attempt - 1] * 1000))


def wait_s(not_before_ms: int, now_ms: int) -> float:
    """Seconds until a parked event is due (0 when it is due already)."""
    return max(0.0, (not_before_ms - now_ms) / 1000)


def retry_partition(original_partition: int, retry_partitions: int) -> int:
    """The retry topic partition of an event: the partition number it came from.

    Faust tables are sharded by the partition of the event being processed (a table write goes
    to the changelog partition of the current event), and every topic an agent retries has the
    retry topic's partition count, so a retried handler writes its tables where the first
    attempt would have, and the worker that owns partition N of the inputs owns N of the retries.
    """
    return original_partition % retry_partitions
