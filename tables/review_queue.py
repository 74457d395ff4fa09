"""The review queue: low-confidence predictions, kept in groups (one table record per group
of items that arrived together, keyed by its first sample id), and its views (the list, and
each item's image: the stored object it points to, or its inline pixels as a PNG).

A group is one record so that the changelog takes one write per group kept, rewritten or
evicted, not one per item. Bounded three ways, so neither memory nor the changelog grows
with time: each item's record (inline pixels above ``review_max_image_bytes`` are dropped,
and an item still over ``max_item_bytes`` is refused), the count (``review_max_items``,
shared out over the partitions) and the age (``review_max_age_seconds`` since the hub queued
the item); a table record holds no more than ``table_record_max_bytes`` of items (unless
one item alone is larger). An evicted item is taken out of its record, which is rewritten,
or deleted (a tombstone in the compacted changelog) when it was the last, so a recovery
does not bring it back. The order the view pages through is kept beside the table
(``tables.review_index``), not sorted per request.
"""

from __future__ import annotations

import base64
import collections
import heapq
import math
import time
import weakref
from collections.abc import Callable
from typing import Any

import faust
import orjson
from aiohttp import web as aioweb

from edgewise.app.adapters.object_store import ImageStore, ObjectNotFound, store_for
from edgewise.app.adapters.review_images import review_png
from edgewise.app.core.context import StageContext, json_schema
from edgewise.app.core.frames import BadInput
from edgewise.app.core.query_params import whole_number
from edgewise.app.core.settings import Settings
from edgewise.tables.review_index import ReviewIndex

TABLE = "review_queue"
MAX_LIMIT = 1000
#: Room for an item's fields other than its inline pixels (ids, model, top-k, reason, URL).
MAX_FIELDS_BYTES = 16_384
ORDERS = ("confidence", "margin")
#: Bytes a table record adds around its items, and each item around its own JSON.
RECORD_OVERHEAD = 16
ITEM_OVERHEAD = 4
#: The queue of each app, for the stages beside review that settle its items (correct).
_QUEUES: weakref.WeakKeyDictionary[Any, ReviewQueue] = weakref.WeakKeyDictionary()


def queue_for(app: Any) -> ReviewQueue | None:
    """The review queue of ``app``, when its worker runs the review stage."""
    return _QUEUES.get(app)


def max_item_bytes(max_image_bytes: int) -> int:
    """The largest review record kept: the pixels' base64 plus the other fields."""
    return 4 * math.ceil(max_image_bytes / 3) + MAX_FIELDS_BYTES


def bound_item(item: dict[str, Any], max_image_bytes: int) -> dict[str, Any]:
    """The item as the table keeps it: inline pixels over the cap are dropped (the view then
    serves the stored ``image_url``, or says the image was omitted); BadInput (oversize) when
    the rest alone is over the record bound, so no record can near the broker's limit."""
    image = item.get("image_b64") or ""
    if len(image) > 4 * math.ceil(max_image_bytes / 3):
        item = {**item, "image_b64": "", "image_omitted": len(base64.b64decode(image))}
    size = len(orjson.dumps(item))
    if size > max_item_bytes(max_image_bytes):
        raise BadInput("oversize", f"review item of {size} bytes > "
                                   f"{max_item_bytes(max_image_bytes)} without its pixels")
    return item


def keep_image_url(existing: dict[str, Any] | None, item: dict[str, Any]) -> dict[str, Any]:
    """The item to keep: a replay without the stored image's URL must not lose it."""
    if existing and existing.get("image_url") and not item.get("image_url"):
        return {**item, "image_url": existing["image_url"]}
    return item


def record_items(value: Any) -> dict[str, dict[str, Any]]:
    """The items of one table record by id: a group's, or a single item written before
    records held groups (keyed by its own id)."""
    if not isinstance(value, dict):
        return {}
    if "items" in value:
        items = value["items"]
        return items if isinstance(items, dict) else {}
    return {value["id"]: value} if isinstance(value.get("id"), str) else {}


class ReviewQueue:
    """The table, its in-memory order, and the bounds; the review stage's only way in.

    A table record holds a group of items, keyed by its first item's id, so that a group
    costs one changelog record, not one per item: ``{"items": {id: item, ...}}``, split into
    several records (each keyed by its own first id) past ``table_record_max_bytes``. Every
    id of a group hashes to its key's partition, so the changelog stays co-partitioned and
    ``table_route`` by item id reaches the owner. ``groups`` maps each queued id to the key
    of its record; it is rebuilt from the table like the order is.
    """

    def __init__(self, table: faust.Table, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.index = ReviewIndex()
        self.groups: dict[str, str] = {}
        self.max_items = max(1, math.ceil(settings.review_max_items / settings.partitions))
        self.max_age = settings.review_max_age_seconds
        self.max_image_bytes = settings.review_max_image_bytes
        self.max_record_bytes = settings.table_record_max_bytes
        self.clock = clock
        self.evicted = 0
        #: True for a sample whose item is settled (corrected): a late copy of its item
        #: (a replay, the image sink's copy with its URL) must not queue it again.
        self.settled: Callable[[str], bool] = lambda key: False
        self.store: ImageStore | None = None  # where items' stored images are (the view's)

    def keep(self, item: dict[str, Any], partition: int) -> list[str]:
        """Put one item (bounded) into the table, then evict what its partition holds beyond
        the bounds; returns the evicted ids. BadInput when the item is too large even
        without its pixels. Must run inside a stream of the item's partition: the table
        writes go to the partition of the event being processed."""
        _, refused, evicted = self._apply([item], partition)
        if refused:
            raise refused[0][1]
        return evicted

    def keep_all(self, items: list[dict[str, Any]], partition: int
                 ) -> tuple[int, list[tuple[dict[str, Any], BadInput]]]:
        """``keep`` for the items of one group, all of ``partition``, evicting once after
        them all, each record touched written once; returns how many were put in, and the
        items refused with why."""
        kept, refused, _ = self._apply(items, partition)
        return kept, refused

    def get(self, item_id: str) -> dict[str, Any] | None:
        """The queued item of a sample held here, or None."""
        key = self.groups.get(item_id)
        return None if key is None else record_items(self.table.get(key)).get(item_id)

    def _apply(self, items: list[dict[str, Any]], partition: int
               ) -> tuple[int, list[tuple[dict[str, Any], BadInput]], list[str]]:
        """Put the items in, evict, then write each record touched once (a tombstone for
        one left empty)."""
        refused: list[tuple[dict[str, Any], BadInput]] = []
        incoming: dict[str, dict[str, Any]] = {}
        now = self.clock()
        for raw in items:
            try:
                item = bound_item(raw, self.max_image_bytes)
            except BadInput as exc:
                refused.append((raw, exc))
                continue
            key = item["id"]
            if self.settled(key):
                continue
            existing = incoming.get(key) or self.get(key)
            queued_at = existing.get("queued_at", now) if existing else now
            incoming[key] = {**keep_image_url(existing, item), "queued_at": queued_at,
                             "partition": partition}
        if not incoming:
            return 0, refused, []
        touched: dict[str, dict[str, dict[str, Any]]] = {}
        for key in incoming:  # out of the record each was in
            self._take_out(key, touched)
        self._place(list(incoming.values()), touched)
        for key, value in incoming.items():
            self.index.put(key, float(value["confidence"]), partition, value["queued_at"])
        evicted = self._evict(partition, touched)
        self._write(touched)
        return len(incoming), refused, evicted

    def _records(self, key: str, touched: dict[str, dict[str, dict[str, Any]]]
                 ) -> dict[str, dict[str, Any]]:
        """The items of record ``key`` as this write will leave them (a copy, read once)."""
        if key not in touched:
            touched[key] = dict(record_items(self.table.get(key)))
        return touched[key]

    def _take_out(self, item_id: str, touched: dict[str, dict[str, dict[str, Any]]]) -> None:
        key = self.groups.pop(item_id, None)
        if key is not None:
            self._records(key, touched).pop(item_id, None)

    def _place(self, values: list[dict[str, Any]],
               touched: dict[str, dict[str, dict[str, Any]]]) -> None:
        """New records for ``values``, each keyed by its first id and bounded by
        ``max_record_bytes`` (an item larger alone is a record alone). A record already
        under a chosen key is taken up: its other items join the ones being placed."""
        pending = collections.deque(values)
        while pending:
            first = pending[0]
            key = first["id"]
            for other in self._records(key, touched).values():
                if self.groups.get(other["id"]) == key:
                    del self.groups[other["id"]]
                    pending.append(other)
            record: dict[str, dict[str, Any]] = {}
            touched[key] = record
            size = RECORD_OVERHEAD
            while pending:
                value = pending[0]
                cost = len(orjson.dumps(value)) + len(value["id"]) + ITEM_OVERHEAD
                if record and size + cost > self.max_record_bytes:
                    break
                pending.popleft()
                record[value["id"]] = value
                self.groups[value["id"]] = key
                size += cost

    def _evict(self, partition: int, touched: dict[str, dict[str, dict[str, Any]]]
               ) -> list[str]:
        """Take out what ``partition`` holds beyond the bounds, record by record."""
        evicted = self.index.evict(partition, self.clock(), self.max_items, self.max_age)
        for old in evicted:
            self._take_out(old, touched)
        self.evicted += len(evicted)
        return evicted

    def _write(self, touched: dict[str, dict[str, dict[str, Any]]]) -> None:
        """One write per record touched: its items, or a tombstone when none are left."""
        for key, items in touched.items():
            if items:
                self.table[key] = {"items": items}
            elif self.table.get(key) is not None:
                del self.table[key]  # a tombstone in the changelog

    def resolve(self, key: str) -> bool:
        """Take a settled item out of the queue; True if it was there. Like ``keep``, must
        run inside a stream of the item's partition (its record is rewritten there, or
        tombstoned when it was the last)."""
        self.index.discard(key)
        if self.get(key) is None:
            self.groups.pop(key, None)
            return False
        touched: dict[str, dict[str, dict[str, Any]]] = {}
        self._take_out(key, touched)
        self._write(touched)
        return True

    async def image(self, item_id: str) -> bytes:
        """The PNG of a queued item held here; HTTPNotFound saying why there is none."""
        item = self.get(item_id)
        if item is None:
            raise aioweb.HTTPNotFound(text=f"no review item {item_id[:80]}")
        if self.store is None:
            raise aioweb.HTTPServiceUnavailable(text="this queue has no image store")
        try:
            return await review_image_bytes(item, self.store)
        except (ObjectNotFound, BadInput) as exc:
            raise aioweb.HTTPNotFound(
                text=f"no image for review item {item_id[:80]}: {exc}") from None

    def rebuild(self) -> None:
        """The ids' records and the order again from the table (its keys change on
        recovery and rebalance)."""
        self.groups = {}
        pairs = []
        for key, value in self.table.items():
            for item_id, item in record_items(value).items():
                self.groups[item_id] = key
                pairs.append((item_id, item))
        self.index.rebuild(pairs)

    def page(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of items, least confident first, and how many are queued."""
        now = self.clock()
        keys = self.index.page(offset, limit, now, self.max_age)
        items = [v for v in (self.get(k) for k in keys) if v is not None]
        return items, self.index.live_count(now, self.max_age)

    def page_by_margin(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of items, smallest top-2 margin first: a pass over the table (the index
        keeps the confidence order only), so the cost grows with the queue, not its square."""
        now = self.clock()
        cutoff = now - self.max_age
        live = (v for record in self.table.values() for v in record_items(record).values()
                if float(v.get("queued_at", now)) >= cutoff)
        best = heapq.nsmallest(offset + limit, live,
                               key=lambda v: (float(v.get("margin", 1.0)), v["id"]))
        return best[offset:], self.index.live_count(now, self.max_age)


def define(ctx: StageContext) -> ReviewQueue:
    """Create the table and attach ``/api/review``."""
    table = ctx.app.Table(
        TABLE, default=None, partitions=ctx.settings.partitions, schema=json_schema(),
        help="predictions waiting for a person, in groups keyed by their first sample id",
    )
    queue = ReviewQueue(table, ctx.settings)
    _QUEUES[ctx.app] = queue
    store = store_for(ctx.settings)
    queue.store = store

    @table.on_recover
    async def rebuild_order() -> None:
        queue.rebuild()

    @ctx.app.on_before_shutdown.connect
    async def close_store(app: Any, **kwargs: Any) -> None:
        await store.close()

    @ctx.app.page("/api/review")
    async def review(web: Any, request: Any) -> Any:
        limit = whole_number(request, "limit", "50", 1, MAX_LIMIT)
        offset = whole_number(request, "offset", "0", 0, 10 ** 9)
        order = request.query.get("order", "confidence")
        if order not in ORDERS:
            raise aioweb.HTTPBadRequest(text=f"order must be one of {', '.join(ORDERS)}")
        if order == "margin":
            items, queued = queue.page_by_margin(offset, limit)
        else:
            items, queued = queue.page(offset, limit)
        items = [{**item, "image": f"/api/review/{item['id']}/image"} for item in items]
        return web.json({"items": items, "count": len(items), "offset": offset, "order": order,
                         "queued": queued, "evicted": queue.evicted})

    @ctx.app.page("/api/review/{item_id}/image")
    @ctx.app.table_route(table=table, match_info="item_id")
    async def review_image(web: Any, request: Any, item_id: str) -> Any:
        return web.bytes(await queue.image(item_id), content_type="image/png")

    return queue


async def review_image_bytes(item: dict[str, Any], store: ImageStore) -> bytes:
    """The stored object the item points to, or a PNG of its inline pixels."""
    if item.get("image_url"):
        body, _ = await store.get(item["image_url"])
        return body
    return review_png(item)
