"""The fan-out: every worker asked once, this one without HTTP, a peer that does not answer
in time reported by name (never taken for an empty part), and the answers merged exactly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from edgewise.app.run.fanout import (
    PeerAnswer,
    answered,
    ask_peers,
    group_urls,
    merge_review,
    parts,
    peer_list,
)
from edgewise.app.services.processes import free_port

OWN = "http://127.0.0.1:7001"


def test_this_worker_first_then_every_other_once() -> None:
    members = group_urls({"http://127.0.0.1:7001": {}, "http://127.0.0.1:7002/": {"t": [1]}})
    urls = peer_list(OWN, members, ["http://127.0.0.1:7002", "http://10.0.0.9:80"])
    assert urls == [OWN, "http://10.0.0.9:80", "http://127.0.0.1:7002"]
    assert peer_list(OWN, [], []) == [OWN]


async def test_a_slow_a_failing_and_a_garbled_peer_are_each_reported() -> None:
    async def fetch(url: str, timeout: float) -> tuple[int, bytes]:
        if ":7002" in url:
            return 200, orjson.dumps({"worker": "w2", "n": 2})
        if ":7003" in url:
            await asyncio.sleep(10)
        if ":7004" in url:
            raise ConnectionRefusedError("refused")
        if ":7005" in url:
            return 200, b"<html>"
        if ":7006" in url:
            return 500, b"boom"
        return 404, b"no such page"

    urls = [OWN] + [f"http://127.0.0.1:{p}" for p in range(7002, 7008)]
    started = time.monotonic()
    answers = await ask_peers(urls, OWN, "/api/local/x", lambda: {"worker": "w1", "n": 1},
                              fetch, timeout=0.3)
    assert time.monotonic() - started < 2  # asked at once, the slow one cut off
    by_port = {a.url[-4:]: a for a in answers}
    assert by_port["7001"].part == {"worker": "w1", "n": 1} and by_port["7002"].ok
    assert not by_port["7003"].ok and "within 0.3s" in by_port["7003"].error
    assert not by_port["7004"].ok and "refused" in by_port["7004"].error
    assert not by_port["7005"].ok and "JSON" in by_port["7005"].error
    assert not by_port["7006"].ok and "500" in by_port["7006"].error
    assert by_port["7007"].ok and by_port["7007"].part is None  # answers, has no such view
    assert [p["n"] for p in parts(answers)] == [1, 2]
    summary = answered(answers)
    assert summary["complete"] is False
    assert [w["ok"] for w in summary["workers"]] == [True, True, False, False, False, False,
                                                     True]
    assert summary["workers"][1]["worker"] == "w2"


async def test_over_real_http_a_live_peer_answers_and_a_closed_port_is_marked() -> None:
    async def local_part(request: web.Request) -> web.Response:
        return web.json_response({"worker": "peer", "auth": request.headers.get("X-T", "")})

    server = web.Application()
    server.router.add_get("/api/local/x", local_part)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    closed = f"http://127.0.0.1:{free_port()}"
    try:
        async with aiohttp.ClientSession() as session:
            async def fetch(url: str, timeout: float) -> tuple[int, bytes]:
                async with session.get(url, headers={"X-T": "tok"}) as response:
                    return response.status, await response.read()

            answers = await ask_peers([OWN, f"http://127.0.0.1:{port}", closed], OWN,
                                      "/api/local/x", lambda: {"worker": "me"}, fetch, 2.0)
    finally:
        await runner.cleanup()
    assert [a.ok for a in answers] == [True, True, False]
    assert answers[1].part == {"worker": "peer", "auth": "tok"}
    assert answers[2].url == closed and answers[2].error


def review_part(*items: tuple[str, float, float], queued: int) -> dict[str, Any]:
    return {"items": [{"id": i, "confidence": c, "margin": m} for i, c, m in items],
            "queued": queued, "evicted": 1}


def test_review_pages_merge_exactly_and_say_who_holds_each_item() -> None:
    answers = [
        PeerAnswer("http://a", True, review_part(("a1", 0.1, 0.5), ("a2", 0.4, 0.01), queued=7)),
        PeerAnswer("http://b", True, review_part(("b1", 0.2, 0.2), ("b2", 0.3, 0.3), queued=5)),
        PeerAnswer("http://c", False, None, 2000.0, "no answer within 2s"),
    ]
    page = merge_review(answers, offset=1, limit=2, order="confidence")
    assert [(i["id"], i["worker"]) for i in page["items"]] == [("b1", "http://b"),
                                                               ("b2", "http://b")]
    assert page["queued"] == 12 and page["evicted"] == 2 and page["complete"] is False
    by_margin = merge_review(answers, 0, 2, "margin")
    assert [i["id"] for i in by_margin["items"]] == ["a2", "b1"]
