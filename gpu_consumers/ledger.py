"""Per-job delivery ledger in Valkey: how many times a job was started, failed, interrupted.

Why: Kafka redelivers a job by offset and says nothing about how often it did, yet every
progress and completion event must carry an ``attempt`` that grows on redelivery (the status
fold lets a newer attempt restart progress from 0), retries are bounded across consumers
(a job that failed twice on consumer A fails once more at most on consumer B), and a job
that kills its worker every time must eventually be failed instead of looping forever.

One hash per job, ``tapmask:gpu:job:{job_id}``, updated with atomic HINCRBY:

* ``starts``        - incremented by the consumer when it begins a try: the attempt number
                      is ``max(spec.attempt, starts)``;
* ``failures``      - retryable failures so far (bounded by ``consumer_retry_attempts``);
* ``interruptions`` - clean stops (spot notice, SIGTERM, partition revoked);
* ``ooms``          - out-of-memory failures: each one halves the size of the next try;
* ``last_error``    - the reason of the latest failure, for the final ``failed`` event;
* ``outcome``       - "complete" or "failed", with ``done``;
* ``done``          - set once the completion event is acknowledged: a redelivery of a job
                      that finished but was not committed (worker killed in between) is
                      committed at once instead of being run again.

Crashes (worker killed mid-try) are what is left: ``starts - 1 - failures - interruptions``.
Keys expire after the job topic's retention (7 days).

When Valkey cannot be reached the ledger degrades to a process-local counter (logged): jobs
still run and commit, but the attempt number then only grows within one consumer.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger()

TTL_S = 7 * 24 * 3600
FIELDS = ("starts", "failures", "interruptions", "done", "ooms")


@dataclass(frozen=True)
class JobCounts:
    """A job's ledger after this consumer began a try."""

    starts: int = 0
    failures: int = 0
    interruptions: int = 0
    done: int = 0
    ooms: int = 0
    last_error: str = ""
    outcome: str = ""  # "complete" | "failed" once done

    @property
    def crashes(self) -> int:
        """Earlier tries that ended without a recorded outcome (their worker died)."""
        return max(0, self.starts - 1 - self.failures - self.interruptions - self.done)


class JobLedger:
    """Valkey-backed counters with a process-local fallback."""

    def __init__(self, redis_url: str | None, client: Any | None = None) -> None:
        self._client = client
        if self._client is None and redis_url:
            import redis

            self._client = redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._local: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
        self._errors: dict[str, str] = {}
        self._outcomes: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(job_id: str) -> str:
        return f"tapmask:gpu:job:{job_id}"

    def _incr(self, job_id: str, field: str, by: int = 1, error: str | None = None, outcome: str | None = None) -> JobCounts:
        if self._client is not None:
            try:
                pipe = self._client.pipeline()
                pipe.hincrby(self.key(job_id), field, by)
                if error is not None:
                    pipe.hset(self.key(job_id), "last_error", error[:1000])
                if outcome is not None:
                    pipe.hset(self.key(job_id), "outcome", outcome)
                pipe.expire(self.key(job_id), TTL_S)
                pipe.hgetall(self.key(job_id))
                raw = pipe.execute()[-1]
                return JobCounts(**{f: int(raw.get(f.encode(), 0)) for f in FIELDS},
                                 last_error=raw.get(b"last_error", b"").decode("utf-8", "replace"),
                                 outcome=raw.get(b"outcome", b"").decode())
            except Exception as exc:  # noqa: BLE001 - any Valkey trouble: degrade, do not stop the job
                log.warning("ledger.unavailable", error=str(exc))
        with self._lock:
            counts = self._local[job_id]
            counts[field] += by
            if error is not None:
                self._errors[job_id] = error[:1000]
            if outcome is not None:
                self._outcomes[job_id] = outcome
            return JobCounts(**counts, last_error=self._errors.get(job_id, ""), outcome=self._outcomes.get(job_id, ""))

    def start(self, job_id: str) -> JobCounts:
        """Record that a try begins; returns the counts including it."""
        return self._incr(job_id, "starts")

    def failed(self, job_id: str, error: str, oom: bool = False) -> JobCounts:
        """Record a retryable failure of the current try (and its reason)."""
        if oom:
            self._incr(job_id, "ooms")
        return self._incr(job_id, "failures", error=error)

    def interrupted(self, job_id: str) -> JobCounts:
        """Record a clean stop (spot, SIGTERM, revoke) of the current try."""
        return self._incr(job_id, "interruptions")

    def finished(self, job_id: str, outcome: str = "complete", error: str | None = None) -> JobCounts:
        """Record that the job's completion event (complete or failed, with ``error`` as the
        dead-letter reason) is acknowledged."""
        return self._incr(job_id, "done", outcome=outcome, error=error)

    def reopen(self, job_id: str) -> None:
        """Forget that the job finished (its output turned out to be missing): run it again."""
        counts = self.peek(job_id)
        if counts.done:
            self._incr(job_id, "done", -counts.done)

    def peek(self, job_id: str) -> JobCounts:
        """The counts without changing them."""
        return self._incr(job_id, "starts", 0)
