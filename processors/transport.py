"""Faust's aiokafka transport with the consumer's fetch wait made configurable.

faust-streaming hard-codes ``fetch_max_wait_ms=1500`` for the worker's consumer. A broker may
hold a fetch for that long when the partitions it asks for have no new data, and the consumer
has one fetch in flight per broker: a record produced just after the fetch went out then waits
up to 1.5 s per hop (Tansu, measured: 0.4-1.5 s; Apache Kafka answers as soon as data arrives,
so there a short wait only means more empty fetches while idle). Every agent is one hop, and a
segmentation request crosses three (validation, quota, status), so this bound is most of the
request → queued latency. Only configuration: the same code runs against any Kafka.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

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


class Transport(faust_aiokafka.Transport):
    """The aiokafka transport whose worker consumer waits ``TAPMASK_KAFKA_FETCH_MAX_WAIT_MS``."""

    Consumer = _Consumer

