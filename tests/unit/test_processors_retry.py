"""The agents' retry rules (processors/retry.py): attempts, backoff, giving up, partitions."""

from __future__ import annotations

import pytest

from processors.retry import MAX_ATTEMPTS, GiveUp, Retry, after_failure, retry_partition, wait_s
from schemas.topics import RETRY, load_topic_specs


def test_backoff_is_2_s_then_4_s_and_the_third_failure_gives_up() -> None:
    now = 1_700_000_000_000
    assert after_failure(1, now) == Retry(attempt=2, not_before_ms=now + 2000)
    assert after_failure(2, now) == Retry(attempt=3, not_before_ms=now + 4000)
    assert after_failure(3, now) == GiveUp(attempts=3)
    assert MAX_ATTEMPTS == 3


def test_a_whole_poison_chain_makes_three_attempts() -> None:
    attempts, t, step = [1], 0, after_failure(1, 0)
    while isinstance(step, Retry):
        assert step.not_before_ms > t  # each retry waits longer than the last
        t = step.not_before_ms
        attempts.append(step.attempt)
        step = after_failure(step.attempt, t)
    assert attempts == [1, 2, 3] and t == 2000 + 4000 and step == GiveUp(3)


def test_other_schedules_and_bad_attempt_numbers() -> None:
    assert after_failure(1, 0, delays_s=()) == GiveUp(1)
    assert after_failure(3, 10, delays_s=(1, 2, 4)) == Retry(4, 4010)
    with pytest.raises(ValueError):
        after_failure(0, 0)


def test_wait_until_due() -> None:
    assert wait_s(5000, 3500) == 1.5
    assert wait_s(5000, 5000) == 0.0 and wait_s(5000, 9000) == 0.0  # due or overdue: run now


def test_a_retry_keeps_its_partition_number() -> None:
    """Every topic an agent retries has the retry topic's partition count, so tables written by
    a retried handler land in the changelog partition of the first attempt."""
    specs = {t.name: t.partitions for t in load_topic_specs()}
    from processors.app import _HANDLERS  # the topics agents run handlers on
    from tapmask.settings import get_settings

    real_to_logical = {get_settings().topic(name): name for name in specs}
    for _service, real in _HANDLERS:
        assert specs[real_to_logical[real]] == specs[RETRY], real
    assert [retry_partition(p, specs[RETRY]) for p in range(specs[RETRY])] == list(range(specs[RETRY]))
