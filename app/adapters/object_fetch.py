"""Fetching a referenced object, from S3 (aiobotocore) or the image directory, within limits.

``fetch`` makes one attempt, bounded by a timeout, and sorts what goes wrong in two:
- the object itself cannot be had, and asking again will not change that: BadInput with
  the reason (``object_missing``, ``object_too_large``, ``access_denied``,
  ``outside_image_dir``, ``fetch_refused``), for the stage to dead-letter;
- anything else (the store down or slow, a timeout, throttling): raised as it is, for the
  caller to try again with backoff.

The size is checked before the body is read (the object's stated length, or the file's),
and again while it is read, so a store that lies about a length cannot make a worker
hold more than the limit. Only the configured buckets are ever asked (the references are
checked before, ``core.object_refs``; the fetcher checks again). A path is resolved, links
followed, and must still lie within the image directory. User metadata comes back with
the body (S3 ``x-amz-meta-*``; locally the ``.json`` the local image store writes beside
an image).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from edgewise.app.adapters.object_store import is_permanent, s3_client_kwargs
from edgewise.app.core.frames import BadInput
from edgewise.app.core.object_refs import ObjectRef
from edgewise.app.core.settings import Settings

MAX_METADATA_BYTES = 8192
READ_CHUNK_BYTES = 65_536
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchVersion"})
DENIED_CODES = frozenset({"AccessDenied", "403", "AllAccessDisabled", "InvalidObjectState"})


@dataclass(frozen=True)
class FetchedObject:
    body: bytes
    metadata: dict[str, str]


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code", ""))
    return ""


def refusal_of(exc: BaseException, ref: ObjectRef) -> BadInput | None:
    """The BadInput for a failure about the object itself, or None (try again)."""
    code = error_code(exc)
    if code in MISSING_CODES:
        return BadInput("object_missing", f"{ref.url[:300]}: {code}")
    if code in DENIED_CODES:
        return BadInput("access_denied", f"{ref.url[:300]}: {code}")
    if is_permanent(exc):
        return BadInput("fetch_refused", f"{ref.url[:300]}: {type(exc).__name__}: "
                                         f"{str(exc)[:200]}")
    return None


def too_large(ref: ObjectRef, size: int, limit: int) -> BadInput:
    return BadInput("object_too_large", f"{ref.url[:300]}: {size:,} bytes, over {limit:,}")


class ObjectFetcher:
    """Fetches references of the configured buckets and image directory."""

    def __init__(self, settings: Settings, concurrency: int | None = None) -> None:
        self.settings = settings
        self.buckets = settings.allowed_buckets
        self.image_dir = Path(settings.image_dir).resolve()
        self.limit = settings.refs_max_object_bytes
        self.timeout = settings.refs_fetch_timeout_seconds
        self.concurrency = concurrency or settings.refs_concurrency
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session

                config = AioConfig(connect_timeout=self.timeout, read_timeout=self.timeout,
                                   max_pool_connections=self.concurrency,
                                   retries={"total_max_attempts": 1})  # the caller retries
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(get_session().create_client(
                    "s3", config=config, **s3_client_kwargs(self.settings)))
                self._stack = stack
        return self._client

    async def fetch(self, ref: ObjectRef) -> FetchedObject:
        """One attempt within the timeout (see the module's docstring)."""
        async with asyncio.timeout(self.timeout):
            if ref.bucket is None:
                return await asyncio.to_thread(self.read_local, ref)
            return await self.read_s3(ref)

    async def read_s3(self, ref: ObjectRef) -> FetchedObject:
        if ref.bucket not in self.buckets:
            raise BadInput("bucket_not_allowed", f"bucket {ref.bucket!r} is not configured")
        if ref.size is not None and ref.size > self.limit:
            raise too_large(ref, ref.size, self.limit)
        s3 = await self._s3()
        try:
            obj = await s3.get_object(Bucket=ref.bucket, Key=ref.key)
        except Exception as exc:
            refused = refusal_of(exc, ref)
            if refused is None:
                raise
            raise refused from None
        async with obj["Body"] as stream:
            length = obj.get("ContentLength")
            if isinstance(length, int) and length > self.limit:
                raise too_large(ref, length, self.limit)
            chunks, size = [], 0
            async for chunk in stream.iter_chunks(READ_CHUNK_BYTES):  # checks the length
                size += len(chunk)
                if size > self.limit:
                    raise too_large(ref, size, self.limit)
                chunks.append(chunk)
        return FetchedObject(b"".join(chunks), {str(k).lower(): str(v) for k, v in (
            obj.get("Metadata") or {}).items()})

    def read_local(self, ref: ObjectRef) -> FetchedObject:
        path = (self.image_dir / ref.key).resolve()
        if not path.is_relative_to(self.image_dir):
            raise BadInput("outside_image_dir", f"{ref.key[:200]!r} leads out of the image "
                                                "directory")
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise BadInput("object_missing", f"{ref.url[:300]} is not a file")
            if size > self.limit:
                raise too_large(ref, size, self.limit)
            with open(path, "rb") as handle:
                body = handle.read(self.limit + 1)
        except FileNotFoundError:
            raise BadInput("object_missing", f"{ref.url[:300]} does not exist") from None
        except PermissionError:
            raise BadInput("access_denied", f"{ref.url[:300]}: permission denied") from None
        if len(body) > self.limit:
            raise too_large(ref, len(body), self.limit)
        return FetchedObject(body, local_metadata(path))

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def local_metadata(path: Path) -> dict[str, str]:
    """The metadata the local image store keeps beside an image (``<name>.json``), if any:
    a small JSON object of strings; anything else is no metadata."""
    side = path.with_name(path.name + ".json")
    try:
        if not side.is_file() or side.stat().st_size > MAX_METADATA_BYTES:
            return {}
        doc = orjson.loads(side.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k).lower(): str(v) for k, v in doc.items() if isinstance(v, str | int)}
