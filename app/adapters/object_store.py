"""The image store: face crops and review images, in a local directory or in S3.

Keys are ``<kind>/<device>/<yyyy-mm-dd>/<id>.png`` (UTC date of the sample), so a replayed
message overwrites its own object instead of adding another (idempotent by sample id), and
a person browsing the bucket finds a device's day in one prefix. Metadata (confidence,
device, model, timestamp, …) goes into S3 object metadata, or a ``.json`` file beside the
image in the local store.

A stored object is named by a URL (``s3://bucket/key`` or ``file:///abs/path``) that review
items carry. ``get`` only serves URLs of its own bucket or directory: a review item can
never make the review view read an arbitrary file or bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from edgewise.app.core.settings import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class ObjectNotFound(LookupError):
    """The URL is not one of this store's objects, or the object is gone."""


def key_segment(value: str) -> str:
    """A value made safe as one key segment (ids come from devices: trust nothing)."""
    safe = _UNSAFE.sub("_", value)[:200]
    return safe if safe.strip(".") else "_"


def object_key(kind: str, device: str, timestamp: float, sample_id: str) -> str:
    """``<kind>/<device>/<yyyy-mm-dd>/<id>.png`` with the sample's UTC date."""
    day = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%d")
    return f"{key_segment(kind)}/{key_segment(device)}/{day}/{key_segment(sample_id)}.png"


def s3_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``create_client("s3", ...)`` for the configured endpoint, region
    and keys (without keys: the AWS credential chain)."""
    kwargs: dict[str, Any] = {"region_name": settings.s3_region}
    if settings.s3_endpoint:
        kwargs["endpoint_url"] = settings.s3_endpoint
    if settings.s3_access_key_id:
        kwargs["aws_access_key_id"] = settings.s3_access_key_id
        kwargs["aws_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    return kwargs


class ImageStore(Protocol):
    """Where images go; both stores answer the same three calls."""

    async def put(self, key: str, body: bytes, metadata: dict[str, str]) -> str:
        """Store ``body`` under ``key``; return the object's URL."""
        ...

    async def get(self, url: str) -> tuple[bytes, dict[str, str]]:
        """Bytes and metadata of one of this store's objects; ObjectNotFound otherwise."""
        ...

    async def close(self) -> None: ...


class LocalImageStore:
    """A directory tree; each image has its metadata in ``<name>.png.json`` beside it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _write(self, path: Path, body: bytes, metadata: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, data in ((path.with_name(path.name + ".json"),
                              json.dumps(metadata, sort_keys=True).encode()), (path, body)):
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # a reader sees the old object or the new, never half

    async def put(self, key: str, body: bytes, metadata: dict[str, str]) -> str:
        path = self.root / key
        await asyncio.to_thread(self._write, path, body, metadata)
        return path.as_uri()

    async def get(self, url: str) -> tuple[bytes, dict[str, str]]:
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ObjectNotFound(f"{url[:200]} is not in the local image store")
        path = Path(unquote(parts.path)).resolve()
        if not path.is_relative_to(self.root) or path.suffix != ".png":
            raise ObjectNotFound(f"{url[:200]} is outside the image store {self.root}")
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectNotFound(f"{url[:200]} does not exist") from None
        meta_path = path.with_name(path.name + ".json")
        metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return body, metadata

    async def close(self) -> None:
        return None


class S3ImageStore:
    """An S3 (or MinIO, moto) bucket through aiobotocore; the bucket is created if missing.

    The client is opened on first use, in the event loop that uses it (Faust's), and kept.
    """

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.settings = settings
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock: asyncio.Lock | None = None

    def client_kwargs(self) -> dict[str, Any]:
        return s3_client_kwargs(self.settings)

    async def _s3(self) -> Any:
        if self._client is not None:
            return self._client
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._client is None:
                from aiobotocore.session import get_session
                from botocore.exceptions import ClientError

                stack = contextlib.AsyncExitStack()
                client = await stack.enter_async_context(
                    get_session().create_client("s3", **self.client_kwargs()))
                try:
                    await client.head_bucket(Bucket=self.bucket)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                        await stack.aclose()
                        raise
                    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                        await client.create_bucket(Bucket=self.bucket)
                self._stack, self._client = stack, client
        return self._client

    async def put(self, key: str, body: bytes, metadata: dict[str, str]) -> str:
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="image/png",
                            Metadata=metadata)
        return f"s3://{self.bucket}/{key}"

    async def get(self, url: str) -> tuple[bytes, dict[str, str]]:
        parts = urlsplit(url)
        key = parts.path.lstrip("/")
        if parts.scheme != "s3" or parts.netloc != self.bucket or not key:
            raise ObjectNotFound(f"{url[:200]} is not in bucket {self.bucket}")
        s3 = await self._s3()
        try:
            obj = await s3.get_object(Bucket=self.bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            raise ObjectNotFound(f"{url[:200]} does not exist") from None
        async with obj["Body"] as stream:
            body = await stream.read()
        return body, dict(obj.get("Metadata", {}))

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


#: S3 error codes that are worth waiting out although their HTTP status is 4xx
TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                             "RequestTimeTooSkewed", "TooManyRequests", "503", "500"})


def is_permanent(exc: BaseException) -> bool:
    """Whether a store failure will fail the same way again (so retrying is pointless).

    Invalid parameters, encoding errors and 4xx client errors other than throttling and
    timeouts are permanent; a store that is down, slow or full (5xx, OSError, connection
    errors) is transient and waited out.
    """
    if isinstance(exc, UnicodeError | TypeError | ValueError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "ParamValidationError" in names:
        return True
    response = getattr(exc, "response", None)
    if "ClientError" in names and isinstance(response, dict):
        error = response.get("Error") or {}
        code = str(error.get("Code", ""))
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code in TRANSIENT_CODES:
            return False
        if isinstance(status, int):
            return 400 <= status < 500
        return code in {"AccessDenied", "NoSuchBucket", "InvalidArgument", "InvalidBucketName",
                        "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                        "EntityTooLarge", "KeyTooLongError", "MetadataTooLarge"}
    return False


def store_for(settings: Settings) -> ImageStore:
    """The image store the settings choose."""
    if settings.image_store == "s3":
        return S3ImageStore(settings)
    return LocalImageStore(settings.image_dir)
