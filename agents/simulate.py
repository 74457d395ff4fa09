"""simulate: N edge devices emitting digit samples at a set rate.

A configurable share of samples is made harder (noise, rotation, occlusion) so that the
model is really unsure sometimes; the true label travels with every sample.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgewise.app.core.context import StageContext
from edgewise.app.core.records import SampleBatch
from edgewise.app.core.wire import encode_sample_batch
from edgewise.models.digits import digit_images, make_harder

STAGE = "simulate"


class DigitSimulator:
    """Makes sample batches for a fleet of simulated devices, round robin."""

    def __init__(self, devices: int, batch_size: int, hard_share: float, seed: int = 0,
                 run: str | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.images, self.labels = digit_images()
        self.hard = make_harder(self.images, self.rng)
        self.devices = [f"device-{i:03d}" for i in range(devices)]
        self.batch_size = batch_size
        self.hard_share = hard_share
        self.run = run or os.urandom(3).hex()
        self.sequence = dict.fromkeys(self.devices, 0)
        self.turn = 0

    def next_batch(self, size: int | None = None, now: float | None = None) -> SampleBatch:
        """The next device's next batch."""
        device = self.devices[self.turn % len(self.devices)]
        self.turn += 1
        n = size or self.batch_size
        pick = self.rng.integers(len(self.images), size=n)
        harder = self.rng.random(n) < self.hard_share
        pixels = np.where(harder[:, None, None], self.hard[pick], self.images[pick])
        first = self.sequence[device]
        self.sequence[device] = first + n
        ids = [f"{device}-{self.run}-{first + i}" for i in range(n)]
        stamp = time.time() if now is None else now
        return SampleBatch(
            device=device, kind="digits", ids=ids, timestamps=np.full(n, stamp),
            labels=self.labels[pick].astype(np.int32), pixels=pixels.astype(np.uint8),
        )


async def run_simulation(
    send: Any, simulator: DigitSimulator, rate: float, total: int = 0,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Send batches at ``rate`` samples/s until ``total`` samples (0: forever) or stopping."""
    sent = 0
    start = time.monotonic()
    while (not total or sent < total) and not stopping():
        size = simulator.batch_size if not total else min(simulator.batch_size, total - sent)
        batch = simulator.next_batch(size)
        await send(batch)
        sent += len(batch)
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


def register(ctx: StageContext) -> None:
    """Attach the simulator as a task of the app (``ctx.simulate_total`` samples, 0: forever)."""
    settings = ctx.settings
    total = ctx.simulate_total
    simulator = DigitSimulator(settings.devices, settings.batch_size, settings.hard_share)

    async def send(batch: SampleBatch) -> None:
        try:
            await ctx.send(STAGE, ctx.names.samples, batch.device.encode(),
                           encode_sample_batch(batch), STAGE)
        except Exception:
            if ctx.app.should_stop:  # shutting down: this batch was never sent, not lost
                return
            raise
        ctx.metrics.totals.samples_sent += len(batch)
        ctx.count(STAGE, events_out=1, samples=len(batch))

    @ctx.app.task
    async def simulate() -> None:
        # the worker's producer stops before its tasks do: look before every send
        await run_simulation(send, simulator, settings.rate, total,
                             stopping=lambda: bool(ctx.app.should_stop))
