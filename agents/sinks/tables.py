"""The two tables the sinks write, and the SQL that creates and fills them.

One row per sample, keyed by ``(device, sample_id)``: sample ids are unique per device, and
a replayed or re-scored sample lands on its own row again (an upsert), so a table holds
each sample once whatever the stream repeats. Rows arrive in roughly increasing time, so
the time column has a BRIN index: it costs the writes next to nothing and answers "this
hour" or "last week" by skipping whole ranges of pages. (A table partitioned by time would
need the time in its primary key, and a sample sent again with another timestamp, as a CDC
snapshot taken again does, would then be stored twice.) The key columns compare bytewise
(``COLLATE "C"``), whatever the database's locale: ids are not words.

A write is one ``INSERT … SELECT`` from the gathering's columns (``sinks.columns``): each
travels as one array parameter, binary; what a batch holds once goes once per batch, the
variable-width values (top-k, a tabular row) as one flat array and pixels as one blob,
cut on the server by each row's batch and place; the per-row arrays are unnested side by
side in the select list, so the rows stream into the insert. Measured here this writes
more rows per second than a COPY into a staging table followed by ``INSERT … ON
CONFLICT``, with no staging table. The insert is first tried plain, every row new (the
usual case, and a fifth cheaper than with ``ON CONFLICT``); when a sample is already there
(a replay, a re-scoring) that statement fails whole and the upsert runs instead.
On a repeated sample:
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
    insert: str  # every row new (parameters: one array per column, see columns.py)
    upsert: str  # the same with the rule for a sample already there
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

def rows_of(columns: list[tuple[str, str]], count: str) -> str:
    """The per-row arrays unnested side by side in a select list (which streams rows;
    ``unnest`` in FROM would gather them all first), with each row's place ``i`` (0-based)
    among all rows."""
    return "(SELECT " + ", ".join(f"unnest({param}) AS {name}" for name, param in columns) + \
        f", generate_series(0, {count} - 1) AS i)"


#: Parameters: per batch $1 device, $2 kind, $3 model, $4 version, $5 scored_at, $6 its first
#: row, $7 its top-k width, $8 where its top-k start in $9 (labels) and $10 (probabilities);
#: per row $11 id, $12 batch (1-based), $13 label, $14 confidence, $15 true label, $16
#: latency, $17 time; $18 the number of rows.
PREDICTION_INSERT = """
INSERT INTO {table} AS t (device, sample_id, kind, model, model_version, label, confidence,
    top_labels, top_probs, true_label, latency_ms, sample_time, scored_at)
SELECT ($1::text[])[u.b], u.sample_id, ($2::text[])[u.b], ($3::text[])[u.b],
    ($4::integer[])[u.b], u.label, u.confidence,
    ($9::integer[])[u.top + 1 : u.top + u.k], ($10::real[])[u.top + 1 : u.top + u.k],
    nullif(u.true_label, -1), u.latency_ms, to_timestamp(u.sample_time),
    to_timestamp(($5::float8[])[u.b])
FROM (SELECT r.*, ($7::integer[])[r.b] AS k,
             ($8::integer[])[r.b] + (r.i - ($6::integer[])[r.b]) * ($7::integer[])[r.b] AS top
      FROM """ + rows_of([
    ("sample_id", "$11::text[]"), ("b", "$12::integer[]"), ("label", "$13::integer[]"),
    ("confidence", "$14::real[]"), ("true_label", "$15::integer[]"),
    ("latency_ms", "$16::real[]"), ("sample_time", "$17::float8[]")], "$18::integer") + """
      AS r) AS u
"""

PREDICTION_CONFLICT = """ON CONFLICT (device, sample_id) DO UPDATE SET kind = excluded.kind,
    model = excluded.model, model_version = excluded.model_version, label = excluded.label,
    confidence = excluded.confidence, top_labels = excluded.top_labels,
    top_probs = excluded.top_probs, true_label = excluded.true_label,
    latency_ms = excluded.latency_ms, sample_time = excluded.sample_time,
    scored_at = excluded.scored_at, written_at = now()
WHERE (t.scored_at, t.model_version) < (excluded.scored_at, excluded.model_version)
"""

#: Parameters: per batch $1 device, $2 kind, $3 its first row, its shape ($4 flat, $5 start,
#: $6 length), $7 where its pixels start in $11 and $8 their bytes per row (0: tabular), $9
#: where its rows start in $12 and $10 their width (0: an image); per row $13 id, $14 batch
#: (1-based), $15 time, $16 label; $17 the number of rows.
SAMPLE_INSERT = """
INSERT INTO {table} AS t (device, sample_id, kind, sample_time, label, shape, pixels,
    features)
SELECT ($1::text[])[u.b], u.sample_id, ($2::text[])[u.b], to_timestamp(u.sample_time),
    nullif(u.label, -1),
    ($4::integer[])[($5::integer[])[u.b] + 1 : ($5::integer[])[u.b] + ($6::integer[])[u.b]],
    CASE WHEN u.pw > 0
         THEN substring($11::bytea FROM ($7::integer[])[u.b] + u.j * u.pw + 1 FOR u.pw) END,
    CASE WHEN u.fw > 0
         THEN array_replace(($12::real[])[($9::integer[])[u.b] + u.j * u.fw + 1
                                          : ($9::integer[])[u.b] + (u.j + 1) * u.fw],
                            'NaN'::real, NULL) END
FROM (SELECT r.*, r.i - ($3::integer[])[r.b] AS j, ($8::integer[])[r.b] AS pw,
             ($10::integer[])[r.b] AS fw
      FROM """ + rows_of([
    ("sample_id", "$13::text[]"), ("b", "$14::integer[]"), ("sample_time", "$15::float8[]"),
    ("label", "$16::integer[]")], "$17::integer") + """
      AS r) AS u
"""

SAMPLE_CONFLICT = """ON CONFLICT (device, sample_id) DO NOTHING
"""


def predictions_table(name: str) -> SinkTable:
    """The predictions table: the newest scoring of each sample."""
    insert = PREDICTION_INSERT.format(table=qualified(name))
    return SinkTable(name, PREDICTION_COLUMNS, insert, insert + PREDICTION_CONFLICT)


def samples_table(name: str) -> SinkTable:
    """The raw samples table: each sample as it first came, for training later."""
    insert = SAMPLE_INSERT.format(table=qualified(name))
    return SinkTable(name, SAMPLE_COLUMNS, insert, insert + SAMPLE_CONFLICT)
