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
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from tapmask.settings import get_settings


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when it builds its fetcher in start(), which comes next.
        consumer._fetch_max_wait_ms = get_settings().kafka_fetch_max_wait_ms
        return consumer


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


class Transport(faust_aiokafka.Transport):
    """The aiokafka transport whose worker consumer waits ``TAPMASK_KAFKA_FETCH_MAX_WAIT_MS``."""

    Consumer = _Consumer

