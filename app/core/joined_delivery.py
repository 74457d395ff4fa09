"""Rows of concurrent requests for one device leave as one frame, each request answered
when the frame that carries its rows is acknowledged.

One record per request would cost the broker a record (and, on the embedded broker, a
produce batch: one record per batch) for every request, however small, and a partition
takes one batch at a time. So a device's rows wait while a frame of that device is on its
way, and the rows of every request that came meanwhile leave together as the next frame
(within the batch and record limits; rows repeating an id of the frame leave in a frame
of their own, since a frame holds each id once). Idle, a request's rows leave at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from edgewise.app.core.records import PREDICTION_COLUMN_BYTES, SampleBatch
from edgewise.app.core.wire import encode_sample_batch

log = logging.getLogger("edgewise")
Send = Callable[[bytes, bytes], Awaitable["asyncio.Future[Any]"]]


def frame_bytes(batch: SampleBatch) -> int:
    """About what a batch costs as a frame, and again as a prediction frame."""
    return batch.pixels.nbytes + sum(map(len, batch.ids)) + PREDICTION_COLUMN_BYTES * len(batch)


def joined(batches: list[SampleBatch]) -> SampleBatch:
    """Batches of one device as one, in order."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    return SampleBatch(first.device, first.kind, [i for b in batches for i in b.ids],
                       np.concatenate([b.timestamps for b in batches]),
                       np.concatenate([b.labels for b in batches]),
                       np.concatenate([b.pixels for b in batches]))


class JoinedDelivery:
    """Sends batches through ``send(key, value)`` (which returns the acknowledgement's
    future), one frame of a device at a time, joining what waits meanwhile."""

    def __init__(self, send: Send, max_samples: int, max_bytes: int) -> None:
        self.send = send
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.waiting: dict[str, list[tuple[SampleBatch, asyncio.Future[None]]]] = {}
        self.draining: dict[str, asyncio.Task[None]] = {}
        self.frames = 0

    async def deliver(self, batch: SampleBatch) -> None:
        """Return once the broker acknowledged the frame carrying ``batch``; raise what the
        send raised. ``batch`` must already be within the limits on its own."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a caller that gave up leaves it unread
        self.waiting.setdefault(batch.device, []).append((batch, done))
        if batch.device not in self.draining:
            task = asyncio.create_task(self._drain(batch.device))
            self.draining[batch.device] = task
        await asyncio.shield(done)

    async def _drain(self, device: str) -> None:
        cancelled = False
        try:
            while self.waiting.get(device):
                members = self.waiting.pop(device)
                try:
                    await self._send_wave(device, members)
                except Exception as exc:  # the send itself raised: its members learn it
                    for _, future in members:
                        if not future.done():
                            future.set_exception(exc)
        except asyncio.CancelledError:  # stopping: whoever still waits is told so
            cancelled = True
            for _, future in self.waiting.pop(device, []):
                future.cancel()
            raise
        finally:
            self.draining.pop(device, None)
            if not cancelled and self.waiting.get(device):  # came as the loop ended
                self.draining[device] = asyncio.create_task(self._drain(device))

    async def _send_wave(self, device: str,
                         members: list[tuple[SampleBatch, asyncio.Future[None]]]) -> None:
        """Send what waited as frames, then answer each member with its frame's outcome."""
        frames = self._frames(members)
        acks = [await self.send(device.encode(), encode_sample_batch(joined(parts)))
                for parts, _ in frames]
        self.frames += len(frames)
        results = await asyncio.gather(*acks, return_exceptions=True)
        for (_, futures), result in zip(frames, results, strict=True):
            for future in futures:
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(None)

    def _frames(self, members: list[tuple[SampleBatch, asyncio.Future[None]]]
                ) -> list[tuple[list[SampleBatch], list[asyncio.Future[None]]]]:
        """Members packed into frames within the limits, ids unique in each."""
        frames: list[tuple[list[SampleBatch], list[asyncio.Future[None]]]] = []
        rows = size = 0
        ids: set[str] = set()
        for batch, future in members:
            cost = frame_bytes(batch)
            if (not frames or rows + len(batch) > self.max_samples
                    or size + cost > self.max_bytes or not ids.isdisjoint(batch.ids)):
                frames.append(([], []))
                rows, size, ids = 0, 0, set()
            frames[-1][0].append(batch)
            frames[-1][1].append(future)
            rows, size = rows + len(batch), size + cost
            ids.update(batch.ids)
        return frames


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
