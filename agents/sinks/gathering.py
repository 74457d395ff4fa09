"""The loop both sink stages run: gather messages, write their rows, then move on.

Up to ``sink_take`` messages are gathered (waiting at most ``sink_take_within``), each
decoded at the boundary (or dead-lettered), and their rows written in transactions of at
most ``sink_max_rows`` (a message is never split). The loop awaits every write before it
takes the next gathering, so the gathering's input is acknowledged, and committed, only
once the database has its rows: while the database is slow or away the stream waits, and
Faust stops fetching once the stage's small input buffer is full (back-pressure, never an
unbounded queue). When the database refuses the rows of a gathering for what they hold,
its messages are written one by one and only the refused ones are dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from edgewise.agents.sinks.tables import SinkTable
from edgewise.agents.sinks.writer import PostgresSink, RowsRefused
from edgewise.app.core.context import StageContext
from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import SettingsError

B = TypeVar("B")
Params = Callable[[Sequence[Any]], tuple[int, list[Any]]]


def sink_dsn(ctx: StageContext, stage: str) -> str:
    """The configured DSN; a stage without one refuses to start, in one line."""
    dsn = ctx.settings.sink_dsn.get_secret_value()
    if not dsn:
        raise SettingsError(f"the {stage} stage needs a PostgreSQL URL: set EDGEWISE_SINK_DSN "
                            "(postgresql://user:password@host:5432/db)")
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"the {stage} stage: EDGEWISE_SINK_DSN must start with "
                            "postgresql://")
    return dsn


def sink_for(ctx: StageContext, stage: str, table: SinkTable) -> PostgresSink:
    """The writer of ``table`` for ``stage``, closed when the app stops."""
    s = ctx.settings
    sink = PostgresSink(sink_dsn(ctx, stage), table, stage, first_delay=s.reconnect_min_seconds,
                        longest_delay=s.reconnect_max_seconds,
                        timeout=s.sink_write_timeout_seconds, metrics=ctx.metrics)

    @ctx.app.on_before_shutdown.connect
    async def close_sink(app: Any, **kwargs: Any) -> None:
        await sink.close()

    return sink


def in_transactions(parts: list[tuple[bytes, Any]], max_rows: int
                    ) -> list[list[tuple[bytes, Any]]]:
    """Consecutive (message, batch) pairs grouped into transactions of at most ``max_rows``
    rows (a batch larger than that alone in its own)."""
    groups: list[list[tuple[bytes, Any]]] = []
    rows = 0
    for part in parts:
        if not groups or rows + len(part[1]) > max_rows:
            groups.append([])
            rows = 0
        groups[-1].append(part)
        rows += len(part[1])
    return groups


async def sink_gatherings(ctx: StageContext, stream: Any, stage: str, source: str,
                          decode: Callable[[bytes], Any], params: Params,
                          sink: PostgresSink) -> None:
    """Run the stage over ``stream`` until it stops: ``decode`` checks each message at the
    boundary, ``params`` makes the upsert's parameters of a group of batches."""
    settings = ctx.settings
    async for values in stream.take(settings.sink_take, within=settings.sink_take_within):
        ctx.count(stage, events_in=len(values))
        parts = []
        for raw in values:
            ok, batch = await ctx.decode_or_dead_letter(stage, raw, source, decode)
            if ok:
                parts.append((raw, batch))
        with ctx.finishing(stage):
            for group in in_transactions(parts, settings.sink_max_rows):
                await write_group(ctx, stage, source, sink, params, group)


async def write_group(ctx: StageContext, stage: str, source: str, sink: PostgresSink,
                      params: Params, group: list[tuple[bytes, Any]]) -> None:
    """One transaction for the group; when its rows are refused, one per message, and the
    messages still refused are dead-lettered (``database_refused``)."""
    try:
        await write_batches(ctx, stage, sink, params, [batch for _, batch in group])
        return
    except RowsRefused as exc:
        if len(group) == 1:
            await ctx.dead_letter(stage, BadInput("database_refused", str(exc)), group[0][0],
                                  source)
            return
    for raw, batch in group:
        try:
            await write_batches(ctx, stage, sink, params, [batch])
        except RowsRefused as exc:
            await ctx.dead_letter(stage, BadInput("database_refused", str(exc)), raw, source)


async def write_batches(ctx: StageContext, stage: str, sink: PostgresSink, params: Params,
                        batches: list[Any]) -> None:
    """Upsert the batches' rows (a sample twice among them sent once) and count them."""
    _, args = params(batches)
    written = await sink.write(args)
    sent = sum(len(b) for b in batches)
    ctx.metrics.sink_rows.labels(stage, "written").inc(written)
    ctx.metrics.sink_rows.labels(stage, "repeated").inc(sent - written)
    ctx.count(stage, samples=sent)
