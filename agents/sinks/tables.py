"""The two tables the sinks write, and the SQL that creates and fills them.

One row per sample, keyed by ``(device, sample_id)``: sample ids are unique per device, and
a replayed or re-scored sample lands on its own row again (an upsert), so a table holds
each sample once whatever the stream repeats. Rows arrive in roughly increasing time, so
the time column has a BRIN index: it costs the writes next to nothing and answers "this
hour" or "last week" by skipping whole ranges of pages. (A table partitioned by time would
need the time in its primary key, and a sample sent again with another timestamp, as a CDC
snapshot taken again does, would then be stored twice.) The key columns compare bytewise
(``COLLATE "C"``), whatever the database's locale: ids are not words.

A write is one ``INSERT … SELECT … FROM unnest(…) ON CONFLICT`` in its own transaction:
each column of the gathering travels as one array parameter (binary, a few C loops in
asyncpg, no Python work per row), the variable-width values (top-k, a tabular row, pixels)
as one flat array or blob with each row's offset and length, cut on the server. Measured
here it upserts more rows per second than a COPY into a staging table followed by the same
``INSERT … ON CONFLICT``, and it needs no staging table. On a repeated sample:
- predictions: the newest scoring wins (by ``scored_at``, then model version); an older
  or identical one changes nothing;
- samples: the first archived copy stays; a repeat changes nothing.
The command's row count is the rows written (new or changed); the others were repeats.
"""

from __future__ import annotations

from dataclasses import dataclass


def quote_ident(name: str) -> str:
    """An identifier quoted, always (names come from settings, already held to a pattern)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(name: str) -> str:
    """``schema.table`` or ``table`` as a quoted SQL name."""
    return ".".join(quote_ident(part) for part in name.split("."))


@dataclass(frozen=True)
class SinkTable:
    """A table a sink writes: its columns, how it is created, and its upsert."""

    name: str  # as configured: table or schema.table
    columns: tuple[tuple[str, str], ...]  # (column, definition), in order
    upsert: str  # the statement (parameters: one array per column, see columns.py)
    time_column: str = "sample_time"

    @property
    def lock_key(self) -> str:
        """What replicas creating the table at once take an advisory lock on."""
        return f"edgewise sink {self.name}"

    def create_statements(self) -> list[str]:
        """The table and its index on time, when missing; run under an advisory lock,
        since ``IF NOT EXISTS`` alone races when two replicas start together."""
        table = qualified(self.name)
        definitions = [f"{quote_ident(c)} {t}" for c, t in self.columns]
        index = quote_ident(f"{self.name.split('.')[-1]}_{self.time_column}_brin")
        schema = self.name.split(".")[0] if "." in self.name else None
        statements = [] if schema is None else [
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"]
        statements += [
            f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(definitions)}, "
            "PRIMARY KEY (device, sample_id))",
            f"CREATE INDEX IF NOT EXISTS {index} ON {table} USING brin "
            f"({quote_ident(self.time_column)})",
        ]
        return statements


KEY_COLUMNS = (("device", 'text COLLATE "C" NOT NULL'), ("sample_id", 'text COLLATE "C" NOT NULL'))

PREDICTION_COLUMNS: tuple[tuple[str, str], ...] = (
    *KEY_COLUMNS,
    ("kind", "text NOT NULL"),
    ("model", "text NOT NULL"),
    ("model_version", "integer NOT NULL"),
    ("label", "integer NOT NULL"),
    ("confidence", "real NOT NULL"),
    ("top_labels", "integer[] NOT NULL"),  # best first
    ("top_probs", "real[] NOT NULL"),
    ("true_label", "integer"),  # NULL: unknown
    ("latency_ms", "real NOT NULL"),  # the sample's time to its prediction
    ("sample_time", "timestamptz NOT NULL"),
    ("scored_at", "timestamptz NOT NULL"),
    ("written_at", "timestamptz NOT NULL DEFAULT now()"),
)

SAMPLE_COLUMNS: tuple[tuple[str, str], ...] = (
    *KEY_COLUMNS,
    ("kind", "text NOT NULL"),
    ("sample_time", "timestamptz NOT NULL"),
    ("label", "integer"),  # NULL: unknown
    ("shape", "integer[] NOT NULL"),  # an image's shape, or (features,) of a tabular row
    ("pixels", "bytea"),  # image kinds: uint8, row-major
    ("features", "real[]"),  # tabular: NULL elements where a value is missing
    ("archived_at", "timestamptz NOT NULL DEFAULT now()"),
)

PREDICTION_UPSERT = """
INSERT INTO {table} AS t (device, sample_id, kind, model, model_version, label, confidence,
    top_labels, top_probs, true_label, latency_ms, sample_time, scored_at)
SELECT u.device, u.sample_id, u.kind, u.model, u.model_version, u.label, u.confidence,
    ($8::integer[])[u.top_at + 1 : u.top_at + u.top_k],
    ($9::real[])[u.top_at + 1 : u.top_at + u.top_k],
    nullif(u.true_label, -1), u.latency_ms, to_timestamp(u.sample_time),
    to_timestamp(u.scored_at)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::integer[],
            $7::real[], $10::integer[], $11::integer[], $12::integer[], $13::real[],
            $14::float8[], $15::float8[])
    AS u(device, sample_id, kind, model, model_version, label, confidence, top_at, top_k,
         true_label, latency_ms, sample_time, scored_at)
ON CONFLICT (device, sample_id) DO UPDATE SET kind = excluded.kind, model = excluded.model,
    model_version = excluded.model_version, label = excluded.label,
    confidence = excluded.confidence, top_labels = excluded.top_labels,
    top_probs = excluded.top_probs, true_label = excluded.true_label,
    latency_ms = excluded.latency_ms, sample_time = excluded.sample_time,
    scored_at = excluded.scored_at, written_at = now()
WHERE (t.scored_at, t.model_version) < (excluded.scored_at, excluded.model_version)
"""

SAMPLE_UPSERT = """
INSERT INTO {table} AS t (device, sample_id, kind, sample_time, label, shape, pixels,
    features)
SELECT u.device, u.sample_id, u.kind, to_timestamp(u.sample_time), nullif(u.label, -1),
    ($6::integer[])[u.shape_at + 1 : u.shape_at + u.shape_len],
    CASE WHEN u.pixels_len > 0
         THEN substring($9::bytea FROM u.pixels_at + 1 FOR u.pixels_len) END,
    CASE WHEN u.features_len > 0
         THEN array_replace(($12::real[])[u.features_at + 1 : u.features_at + u.features_len],
                            'NaN'::real, NULL) END
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::integer[], $7::integer[],
            $8::integer[], $10::integer[], $11::integer[], $13::integer[], $14::integer[])
    AS u(device, sample_id, kind, sample_time, label, shape_at, shape_len, pixels_at,
         pixels_len, features_at, features_len)
ON CONFLICT (device, sample_id) DO NOTHING
"""


def predictions_table(name: str) -> SinkTable:
    """The predictions table: the newest scoring of each sample."""
    return SinkTable(name, PREDICTION_COLUMNS,
                     PREDICTION_UPSERT.format(table=qualified(name)))


def samples_table(name: str) -> SinkTable:
    """The raw samples table: each sample as it first came, for training later."""
    return SinkTable(name, SAMPLE_COLUMNS, SAMPLE_UPSERT.format(table=qualified(name)))
