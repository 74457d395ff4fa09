"""The review queue: low-confidence predictions keyed by sample id, and its views (the list,
and each item's image: the stored object it points to, or its inline pixels as a PNG).

Bounded three ways, so neither memory nor the changelog grows with time: each item's record
(inline pixels above ``review_max_image_bytes`` are dropped, and an item still over
``MAX_ITEM_BYTES`` is refused), the count (``review_max_items``, shared out over the
partitions) and the age (``review_max_age_seconds`` since the hub queued the item). An
evicted item is deleted from the table, which writes a tombstone to the compacted changelog,
so a recovery does not bring it back. The order the view pages through is kept beside the
table (``tables.review_index``), not sorted per request.
"""

from __future__ import annotations

import base64
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


class ReviewQueue:
    """The table, its in-memory order, and the bounds; the review stage's only way in."""

    def __init__(self, table: faust.Table, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.index = ReviewIndex()
        self.max_items = max(1, math.ceil(settings.review_max_items / settings.partitions))
        self.max_age = settings.review_max_age_seconds
        self.max_image_bytes = settings.review_max_image_bytes
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
        if self._put(item, partition):
            return self._evict(partition)
        return []

    def keep_all(self, items: list[dict[str, Any]], partition: int
                 ) -> tuple[int, list[tuple[dict[str, Any], BadInput]]]:
        """``keep`` for the items of one group, all of ``partition``, evicting once after
        them all; returns how many were put in, and the items refused with why."""
        kept, refused = 0, []
        for item in items:
            try:
                kept += self._put(item, partition)
            except BadInput as exc:
                refused.append((item, exc))
        if kept:
            self._evict(partition)
        return kept, refused

    def _put(self, item: dict[str, Any], partition: int) -> bool:
        """One item into the table and the index; False when its sample is settled."""
        item = bound_item(item, self.max_image_bytes)
        key = item["id"]
        if self.settled(key):
            return False
        existing = self.table.get(key)
        now = self.clock()
        queued_at = existing.get("queued_at", now) if isinstance(existing, dict) else now
        value = {**keep_image_url(existing, item), "queued_at": queued_at,
                 "partition": partition}
        self.table[key] = value
        self.index.put(key, float(value["confidence"]), partition, queued_at)
        return True

    def _evict(self, partition: int) -> list[str]:
        """Delete what ``partition`` holds beyond the bounds (a tombstone each)."""
        evicted = self.index.evict(partition, self.clock(), self.max_items, self.max_age)
        for old in evicted:
            del self.table[old]  # a tombstone in the changelog
        self.evicted += len(evicted)
        return evicted

    def resolve(self, key: str) -> bool:
        """Take a settled item out of the queue; True if it was there. Like ``keep``, must
        run inside a stream of the item's partition (the tombstone goes there)."""
        self.index.discard(key)
        if self.table.get(key) is None:
            return False
        del self.table[key]
        return True

    async def image(self, item_id: str) -> bytes:
        """The PNG of a queued item held here; HTTPNotFound saying why there is none."""
        item = self.table.get(item_id)
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
        """The order again from the table (its keys change on recovery and rebalance)."""
        self.index.rebuild(self.table.items())

    def page(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of items, least confident first, and how many are queued."""
        now = self.clock()
        keys = self.index.page(offset, limit, now, self.max_age)
        items = [v for v in (self.table.get(k) for k in keys) if v is not None]
        return items, self.index.live_count(now, self.max_age)

    def page_by_margin(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of items, smallest top-2 margin first: a pass over the table (the index
        keeps the confidence order only), so the cost grows with the queue, not its square."""
        now = self.clock()
        cutoff = now - self.max_age
        live = (v for v in self.table.values()
                if isinstance(v, dict) and float(v.get("queued_at", now)) >= cutoff)
        best = heapq.nsmallest(offset + limit, live,
                               key=lambda v: (float(v.get("margin", 1.0)), v["id"]))
        return best[offset:], self.index.live_count(now, self.max_age)


def define(ctx: StageContext) -> ReviewQueue:
    """Create the table and attach ``/api/review``."""
    table = ctx.app.Table(
        TABLE, default=None, partitions=ctx.settings.partitions, schema=json_schema(),
        help="predictions waiting for a person, keyed by sample id",
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
