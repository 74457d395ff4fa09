"""The peer ``edgewise bench ingest`` measures ingest_http against: a plain aiohttp server
and an aiokafka producer doing the same work (the same parsing and schema checks, the same
frames, 202 once the broker acknowledged), with no Faust around it.

Run as ``python -m edgewise.app.bench.plain_collector BOOTSTRAP TOPIC PORT SCHEMA_JSON
PROFILE``; it serves ``POST /api/ingest`` until SIGTERM.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from edgewise.app.core import broker_profile
from edgewise.app.core.frames import BadInput
from edgewise.app.core.ingest_rows import frames_within, parse_ingest
from edgewise.app.core.input_schema import InputSchema
from edgewise.app.core.settings import load_settings
from edgewise.app.core.wire import encode_sample_batch


async def serve(bootstrap: str, topic: str, port: int, schema: InputSchema,
                profile: str) -> None:
    settings = load_settings(broker=f"kafka://{bootstrap}", broker_profile=profile)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                **broker_profile.producer_options(settings))
    await producer.start()
    prefix, counter = os.urandom(5).hex(), itertools.count()

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            rows = parse_ingest(body, request.headers.get("Content-Type", ""), schema,
                                max_rows=settings.ingest_max_rows, default_device="http",
                                new_id=lambda: f"{prefix}-{next(counter)}")
        except BadInput as exc:
            return web.json_response({"error": exc.reason, "detail": exc.detail}, status=400)
        futures = [await producer.send(topic, encode_sample_batch(frame),
                                       key=frame.device.encode())
                   for batch in rows.batches
                   for frame in frames_within(batch, settings.max_batch_samples, 1 << 20)]
        await asyncio.gather(*futures)
        return web.json_response({"accepted": len(rows), "ids": rows.ids}, status=202,
                                 dumps=lambda v: orjson.dumps(v).decode())

    app = web.Application(client_max_size=settings.ingest_max_bytes)
    app.router.add_post("/api/ingest", ingest)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()
    await producer.stop()


def main() -> None:
    bootstrap, topic, port, schema, profile = sys.argv[1:6]
    asyncio.run(serve(bootstrap, topic, int(port), InputSchema.from_dict(orjson.loads(schema)),
                      profile))


if __name__ == "__main__":
    main()
