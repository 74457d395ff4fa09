"""``edgewise db load digits``: the digits as rows of PostgreSQL tables, loaded with COPY.

One table per split, ``<table>_train`` and ``<table>_test``, each ``(id bigint primary
key, label smallint, pixels bytea, split text)``: 64 bytes of 0..16 per image, so a row is
what the CDC transform turns back into a sample. Rows go in with COPY, in chunks that are
each their own transaction, so a change stream sees many ordinary transactions rather than
one giant one. Ids continue after the largest id already in a table: loading twice appends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import asyncpg
import numpy as np
from sklearn.model_selection import train_test_split

from edgewise.agents.cdc.postgres import qualified_name
from edgewise.models.digits import digit_images

SPLITS = ("train", "test")
TEST_SHARE = 0.25
CHUNK_ROWS = 1000

Row = tuple[int, int, bytes, str]


def create_table_sql(schema: str, table: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {qualified_name(schema, table)} (id bigint PRIMARY "
            "KEY, label smallint NOT NULL, pixels bytea NOT NULL, split text NOT NULL)")


def split_digits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The bundled digits split 75/25, stratified, the same way every time."""
    images, labels = digit_images()
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_SHARE, random_state=seed, stratify=labels)
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def digit_rows(images: np.ndarray, labels: np.ndarray, split: str, first_id: int,
               repeat: int = 1) -> Iterator[Row]:
    """Table rows for the images, ids from ``first_id``, the whole set ``repeat`` times."""
    next_id = first_id
    for _ in range(repeat):
        for image, label in zip(images, labels, strict=True):
            yield next_id, int(label), np.asarray(image, dtype=np.uint8).tobytes(), split
            next_id += 1


def chunked(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def splits_for(choice: str) -> tuple[str, ...]:
    """``train``, ``test`` or ``both``."""
    return SPLITS if choice == "both" else (choice,)


async def copy_rows(conn: asyncpg.Connection, schema: str, table: str, rows: Iterator[Row],
                    progress: Callable[[int], None] | None = None,
                    chunk_rows: int = CHUNK_ROWS) -> int:
    """COPY rows into an existing table, one transaction per chunk; returns rows copied."""
    copied = 0
    for chunk in chunked(rows, chunk_rows):
        await conn.copy_records_to_table(table, schema_name=schema, records=chunk,
                                         columns=["id", "label", "pixels", "split"])
        copied += len(chunk)
        if progress:
            progress(len(chunk))
    return copied


async def load_digits(dsn: str, splits: Sequence[str], schema: str = "public",
                      table: str = "digits", repeat: int = 1,
                      progress: Callable[[str, int], Callable[[int], None]] | None = None,
                      ) -> dict[str, int]:
    """Create the split tables when missing and COPY the digits in; rows loaded per table.

    ``progress(table, total)`` returns a callback told how many rows each chunk added.
    """
    data = split_digits()
    conn = await asyncpg.connect(dsn, timeout=10)
    loaded: dict[str, int] = {}
    try:
        for split in splits:
            name = f"{table}_{split}"
            await conn.execute(create_table_sql(schema, name))
            first = 1 + await conn.fetchval(
                f"SELECT coalesce(max(id), 0) FROM {qualified_name(schema, name)}")
            images, labels = data[split]
            update = progress(f"{schema}.{name}", len(images) * repeat) if progress else None
            rows = digit_rows(images, labels, split, first, repeat)
            loaded[f"{schema}.{name}"] = await copy_rows(conn, schema, name, rows, update)
    finally:
        await conn.close()
    return loaded
