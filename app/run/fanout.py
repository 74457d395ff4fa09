"""Asking every worker for its part: the fan-out behind the fleet views.

A table's keys are spread over the workers of a consumer group, so each worker's views
show only its own partitions. The fan-out asks every worker for its local part and merges
the answers. Who the workers are comes from Faust's partition assignor (the canonical view
URL of every member of this worker's group, in ``app.router.tables_metadata()``), plus
``peer_urls`` for workers of other groups (say score workers, whose dead letters and
confidence figures the dashboard shows too). This worker answers itself without HTTP.

Each peer has ``fanout_timeout_seconds`` to answer; one that does not (down, slow, or in
the middle of a rebalance) is reported in ``workers`` with ``ok: false`` and the reason,
and the merged answer says ``complete: false``: a partial figure is never passed off as
the whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from edgewise.app.core.peers import base_url, same_worker, url_ident


@dataclass(frozen=True)
class PeerAnswer:
    """One worker's answer: its part (``None`` when it has no such view), or why not."""

    url: str
    ok: bool
    part: Any = None
    ms: float = 0.0
    error: str = ""

    def describe(self) -> dict[str, Any]:
        """The worker as the merged answer lists it."""
        out: dict[str, Any] = {"url": self.url, "ok": self.ok, "ms": round(self.ms, 1)}
        if self.error:
            out["error"] = self.error
        if isinstance(self.part, dict):
            for name in ("worker", "stages"):
                if name in self.part:
                    out[name] = self.part[name]
        return out


def group_urls(metadata: dict[Any, Any] | None) -> list[str]:
    """Members' URLs from the assignor's host-to-partitions map."""
    return [base_url(url) for url in (metadata or {})]


def peer_list(own: str, members: Iterable[str], configured: Iterable[str]) -> list[str]:
    """This worker first, then every other worker once (same host and port = same worker)."""
    out = [base_url(own)]
    seen = {url_ident(own)}
    for url in sorted({base_url(u) for u in (*members, *configured)}):
        if url_ident(url) not in seen:
            seen.add(url_ident(url))
            out.append(url)
    return out


Fetch = Callable[[str, float], Awaitable[tuple[int, bytes]]]


async def ask_peers(urls: list[str], own: str, path: str, local: Callable[[], Any],
                    fetch: Fetch, timeout: float) -> list[PeerAnswer]:
    """Every worker's part of ``path``, asked at once; ``local()`` answers for this one."""

    async def ask(url: str) -> PeerAnswer:
        started = time.perf_counter()

        def took() -> float:
            return (time.perf_counter() - started) * 1000

        if same_worker(url, own):
            return PeerAnswer(url, True, local(), took())
        try:
            async with asyncio.timeout(timeout):
                status, body = await fetch(url + path, timeout)
        except TimeoutError:
            return PeerAnswer(url, False, None, took(), f"no answer within {timeout:g}s")
        except Exception as exc:  # refused, reset, DNS: the peer is reported, never fatal
            return PeerAnswer(url, False, None, took(), f"{type(exc).__name__}: {exc}"[:200])
        if status == 404:
            return PeerAnswer(url, True, None, took())  # answers, but has no such part
        if status != 200:
            return PeerAnswer(url, False, None, took(), f"HTTP {status}: {body[:120]!r}")
        try:
            return PeerAnswer(url, True, orjson.loads(body), took())
        except orjson.JSONDecodeError:
            return PeerAnswer(url, False, None, took(), "answer is not JSON")

    return list(await asyncio.gather(*(ask(url) for url in urls)))


def answered(answers: list[PeerAnswer]) -> dict[str, Any]:
    """The workers asked, and whether all of them answered."""
    return {"workers": [a.describe() for a in answers],
            "complete": all(a.ok for a in answers)}


def parts(answers: list[PeerAnswer]) -> list[Any]:
    """The parts of the workers that answered and have one."""
    return [a.part for a in answers if a.ok and a.part is not None]


def merge_review(answers: list[PeerAnswer], offset: int, limit: int, order: str
                 ) -> dict[str, Any]:
    """One page of the fleet's review queue: each worker's first ``offset + limit`` items
    in the same order, merged (so the page is exact), each item saying who holds it."""
    items = []
    queued = evicted = 0
    for answer in answers:
        if not answer.ok or not isinstance(answer.part, dict):
            continue
        queued += int(answer.part.get("queued", 0))
        evicted += int(answer.part.get("evicted", 0))
        items += [{**item, "worker": answer.url} for item in answer.part.get("items", [])]
    field = "margin" if order == "margin" else "confidence"
    items.sort(key=lambda item: (float(item.get(field, 1.0)), item["id"]))
    page = items[offset:offset + limit]
    return {"items": page, "count": len(page), "offset": offset, "order": order,
            "queued": queued, "evicted": evicted, **answered(answers)}
