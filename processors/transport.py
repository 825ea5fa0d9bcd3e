"""Faust's aiokafka transport with the consumer's fetch wait made configurable.

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for the worker's consumer. A broker may
hold a fetch for that long when the partitions it asks for have no new data, and the consumer
has one fetch in flight per broker: a record produced just after the fetch went out then waits
up to 1.5 s per hop (Tansu, measured: 0.4-1.5 s; Apache Kafka answers as soon as data arrives,
so there a short wait only means more empty fetches while idle). Every agent is one hop, and a
segmentation request crosses three (validation, quota, status), so this bound is most of the
request → queued latency. Only configuration: the same code runs against any Kafka.

It also takes a per-message cost out of Faust's consumer loop (``Consumer._drain_messages``):
each fetched message is handed to the conductor as ``wait_first(on_message(msg),
suspend_flow.wait())``, i.e. four tasks, an ``asyncio.wait`` and three cancellations per
message, although ``on_message`` almost always finishes at once (it puts the event into the
agents' stream buffers, and waits only when a buffer is full). ``_Consumer.wait_first`` first
runs that coroutine up to its first suspension; finished, there is nothing to wait for (the
same outcome the race would have had, as nothing else could happen meanwhile); suspended, it
races the rest of it against a flow suspension exactly as Faust does. About a tenth of the
worker's CPU under load (bench/README.md).

And it makes the table-recovery highwater trustworthy on Tansu (``_ConsumerThread._highwaters``).
Faust rebuilds a table after a rebalance by reading its changelog partitions up to the end
offsets that ListOffsets(latest) answers, and declares recovery done there. Tansu 0.6's
object-store engines (memory://, s3://) answer that request wrongly: they list the partition's
batch objects, take the one with the newest last-modified time and answer *its base offset
+ 1* (tansu-storage ``dynostore.rs`` ``list_offsets``). So the records after the first of the
last batch are never counted, and on S3 (SeaweedFS keeps last-modified to the second; a tie
keeps the first object listed, the lowest offset) a partition whose batches were all written
within one second answers 1 whatever it holds. Faust then declared the table rebuilt after the
first record; what it had fetched beyond stayed in its recovery buffer, unapplied until the
next rebalance, so the jobs it took over folded into empty snapshots (the quota table's counts
likewise). Measured: 10 records in 4 quick batches → 1 on s3, 7 on memory. The
high watermark in a Fetch response comes from the partition's watermark record, which Tansu
keeps right (10). So the recovery highwater is the larger of the two answers; on Apache Kafka
both are the log end offset and nothing changes (one small fetch per broker per recovery).

Last, the app's flow control (``FlowControl``) no longer throws away the agents' buffered
events when the flow is resumed while it was running. faust-streaming's recovery
(``Recovery.on_recovery_completed``, unchanged on its master; faust-streaming/faust#596)
resumes the stream partitions and seeks them to their committed offsets while the flow is
still on from reading the changelogs, then calls ``app.flow_control.resume()``, which clears
every stream's buffer. An event fetched after its partition was sought and handed to a
stream during that seek (one OffsetFetch round trip per assigned partition, ~90 here) was
dropped there, never processed, and never fetched again: the consumer's position was
already past it (a later rebalance sought it back only if no commit had gone past it). Seen
live (tests/integration/test_processors_live.py, the rebuild test, about 1 run in 5 of the
full suite): a worker that took over every partition folded 1 of 8 fresh events, then
nothing. A suspended flow is still cleared on resume (its buffers hold events of the
assignment before the rebalance, which are fetched again); one that runs keeps what it
holds, and an event handed over before its partition was sought back is at worst processed
twice (at least once; every agent is idempotent).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Coroutine, Generator, Mapping
from typing import Any

import structlog
from aiokafka.protocol.fetch import FetchRequest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.services import WaitResults
from mode.utils.queues import FlowControlEvent

from tapmask.settings import get_settings

log = structlog.get_logger()

READ_UNCOMMITTED = 0
# A Fetch that must answer at once: wait 1 ms at most for no data at all. (Tansu 0.6 answers a
# Fetch with max_wait 0 with no partitions; Apache Kafka answers any of these at once.)
_PROBE_WAIT_MS = 1


async def fetched_high_watermarks(client: Any, offsets: Mapping[TP, int]) -> dict[TP, int]:
    """The high watermark each partition's leader reports in a Fetch at ``offsets[tp]``.

    ``client`` is an aiokafka ``AIOKafkaClient``. One request per leader, at most one byte a
    partition (a broker may still send the first batch). A partition that answers with an error,
    or has no known leader, is left out: the caller keeps what it had for it.
    """
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(lambda: defaultdict(list))
    wanted: dict[tuple[str, int], TP] = {}
    for tp, offset in offsets.items():
        node = client.cluster.leader_for_partition(tp)
        if node is None or node < 0 or offset is None or offset < 0:
            continue
        by_node[node][tp.topic].append((tp.partition, offset, 1))
        wanted[(tp.topic, tp.partition)] = tp

    async def one(node: int, topics: dict[str, list[tuple[int, int, int]]]) -> Any:
        return await client.send(node, FetchRequest(_PROBE_WAIT_MS, 0, 1, READ_UNCOMMITTED, list(topics.items())))

    found: dict[TP, int] = {}
    for response in await asyncio.gather(*(one(n, t) for n, t in by_node.items())):
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                tp = wanted.get((topic, partition))
                if tp is not None and error_code == 0 and highwater is not None and highwater >= 0:
                    found[tp] = highwater
    return found


async def guarded_end_offsets(client: Any, listed: Mapping[TP, int]) -> dict[TP, int]:
    """``listed`` (ListOffsets answers), raised to the Fetch high watermark where that is larger."""
    fetched = await fetched_high_watermarks(client, listed)
    out = dict(listed)
    for tp, highwater in fetched.items():
        if out.get(tp) is None or highwater > out[tp]:
            log.info("recovery.highwater_raised", topic=tp.topic, partition=tp.partition,
                     list_offsets=out.get(tp), fetch_high_watermark=highwater)
            out[tp] = highwater
    return out


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when it builds its fetcher in start(), which comes next.
        consumer._fetch_max_wait_ms = get_settings().kafka_fetch_max_wait_ms
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        """End offsets for table recovery (Faust's ``highwaters``), guarded against Tansu's
        ListOffsets answer (module docstring): the larger of it and the Fetch high watermark."""
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:  # last stable offsets: not what a Fetch reports
            return listed
        return await guarded_end_offsets(self._ensure_consumer()._client, listed)


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """``Service.wait_first``, with a fast path for the message hand-off of ``_drain_messages``."""
        handoff = coros[0] if len(coros) == 2 and timeout is None else None
        if getattr(handoff, "cr_code", None) is None or handoff.cr_code is not getattr(self.callback, "__code__", None):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            pending = handoff.send(None)  # run on_message up to its first suspension
        except StopIteration as done:
            coros[1].close()  # the flow-suspension wait was never started
            return WaitResults([handoff], [done.value], False)
        except BaseException:
            coros[1].close()
            raise
        return await super().wait_first(_Resumed(handoff, pending), coros[1])


class _Resumed:
    """The rest of a coroutine that was stepped by hand and is suspended on ``pending``: awaiting
    this goes on exactly as if the coroutine had been awaited from the start (``yield from``)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, to_yield = self.coro, self.pending
        while True:
            try:
                sent = yield to_yield
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # e.g. the task was cancelled: deliver it into the coroutine
                try:
                    to_yield = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    to_yield = coro.send(sent)
                except StopIteration as done:
                    return done.value


class FlowControl(FlowControlEvent):
    """The app's flow control into the streams' buffers: resuming a flow that runs clears
    nothing (module docstring: Faust's recovery would drop events handed over while it seeks)."""

    def resume(self) -> None:
        if self.is_active():
            return  # never suspended since the last resume: the buffers hold events of this assignment
        super().resume()  # after a suspension: clears the buffers, as Faust does


class Transport(faust_aiokafka.Transport):
    """The aiokafka transport whose worker consumer waits ``TAPMASK_KAFKA_FETCH_MAX_WAIT_MS``."""

    Consumer = _Consumer

