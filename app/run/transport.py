"""A Faust transport whose consumer fetch wait is a setting.

Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``; on Tansu a waiting fetch is
answered late, so every sample would wait over a second. This transport is registered
under the ``faust.transports`` entry point as ``edgewise://`` and reads the wait from the
app (``app.edgewise_fetch_wait_ms``), set by the app factory from the settings.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

DEFAULT_FETCH_WAIT_MS = 500


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The driver's consumer thread with a configurable fetch wait."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(
            getattr(self.app, "edgewise_fetch_wait_ms", DEFAULT_FETCH_WAIT_MS)
        )
        return consumer


class Consumer(faust_aiokafka.Consumer):
    """Consumer that uses :class:`ConsumerThread`."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """aiokafka transport with the configurable-fetch-wait consumer."""

    Consumer = Consumer
