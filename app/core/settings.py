"""The one validated settings object of edgewise.

Every field has a default, an environment variable (``EDGEWISE_<FIELD>``) and one line of
documentation (its ``description``). An optional TOML file (``EDGEWISE_CONFIG`` or
``--config``) sits below the environment, which sits below explicit keyword arguments.
``edgewise config`` prints the effective values.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

#: A table edgewise creates: ``table`` or ``schema.table``, plain lower-case identifiers.
TABLE_NAME = re.compile(r"(?:[a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}")
#: An S3 bucket name (3..63 lower-case letters, digits, dots and hyphens).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class SettingsError(ValueError):
    """A configuration problem, phrased as one line for the person at the terminal."""


class Settings(BaseSettings):
    """Effective configuration of an edgewise process."""

    model_config = SettingsConfigDict(
        env_prefix="EDGEWISE_", extra="forbid", frozen=True, validate_default=True
    )

    broker: str = Field(
        "embedded",
        description="Kafka URL (kafka://host:9092[;host2:9092]) or 'embedded' to start Tansu",
    )
    broker_profile: Literal["auto", "embedded", "kafka"] = Field(
        "auto", description="broker tuning: auto detects the embedded Tansu by its cluster id"
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="Faust's processing guarantee; exactly_once needs Kafka transactions "
        "(not on Tansu)",
    )
    session_timeout_seconds: float = Field(
        0.0, ge=0, le=300, description="consumer-group session: a worker that stops answering "
        "(killed, a lost machine) loses its partitions to the others after this; 0: 6 s on "
        "Tansu, 10 s on Kafka (the broker's group.min.session.timeout.ms must allow it)"
    )
    store: Literal["memory", "rocksdb"] = Field(
        "memory", description="where tables live: memory (rebuilt from the changelog at each "
        "start) or rocksdb (on disk under data_dir, for state larger than memory; a restart "
        "reads only the changelog written since)"
    )
    table_standby_replicas: int = Field(
        1, ge=0, le=8, description="standby copies of each table partition other workers of "
        "the group keep warm from the changelog, to take over without a rebuild"
    )
    app_id: str = Field("edgewise", description="Faust app id: consumer group and table prefix")
    topic_prefix: str = Field("edgewise", description="prefix of every topic edgewise owns")
    partitions: int = Field(4, ge=1, le=1024, description="partitions of the stage topics")
    replication_factor: int = Field(
        0, ge=0, le=16,
        description="replicas of every topic edgewise creates; 0: 3 on a cluster of 3 or more, "
        "else one per broker",
    )
    kafka_cache_dir: Path = Field(
        Path("~/.cache/edgewise/kafka"),
        description="where Maven puts Apache Kafka's jars (edgewise broker --kafka, tests)",
    )
    data_dir: Path = Field(Path(".edgewise"), description="worker state and local data directory")
    models_dir: Path = Field(Path(".edgewise/models"), description="model registry directory")
    model_name: str = Field("digits", description="registered model the score stage serves")
    web_host: str = Field("127.0.0.1", description="address the HTTP views listen on")
    web_port: int = Field(0, ge=0, le=65535, description="HTTP port of the views; 0 picks free")
    fetch_wait_ms: int = Field(
        -1, ge=-1, le=60_000,
        description="consumer fetch wait; -1 means 20 ms on the embedded broker, 500 on Kafka",
    )
    devices: int = Field(4, ge=1, le=10_000, description="simulated edge devices")
    rate: float = Field(200.0, gt=0, le=1e7, description="simulated samples per second, all")
    batch_size: int = Field(32, ge=1, le=65_536, description="samples per simulated batch")
    hard_share: float = Field(
        0.2, ge=0, le=1, description="share of simulated samples made harder (noise etc.)"
    )
    low_confidence: float = Field(
        0.6, ge=0, le=1, description="confidence below which a prediction goes to review"
    )
    min_margin: float = Field(
        0.15, ge=0, le=1, description="top-2 probability margin below which it goes to review"
    )
    top_k: int = Field(3, ge=1, le=100, description="probabilities kept per prediction")
    tumbling_seconds: float = Field(10.0, gt=0, description="tumbling window size")
    hopping_seconds: float = Field(30.0, gt=0, description="hopping window size")
    hopping_step_seconds: float = Field(10.0, gt=0, description="hopping window step")
    windows_kept: int = Field(
        6, ge=1, le=1000, description="closed windows kept per kind; older data counts as late"
    )
    window_max_models: int = Field(
        4, ge=1, le=64, description="model versions per window; the rest add up under (other)"
    )
    window_max_labels: int = Field(
        100, ge=1, le=10_000, description="labels counted per window; the rest under 'other'"
    )
    table_record_max_bytes: int = Field(
        64 * 1024, ge=16 * 1024, le=1_000_000,
        description="bound of a window/evaluation record; oldest windows evicted beyond it",
    )
    device_max_age_seconds: float = Field(
        7 * 86400.0, gt=0, description="a device silent this long leaves the window tables"
    )
    device_max_count: int = Field(
        10_000, ge=1, description="devices kept per partition in the window tables (LRU)"
    )
    dedupe_seconds: float = Field(
        600.0, gt=0, description="event time for which a repeated sample id is recognised"
    )
    dedupe_max_ids: int = Field(
        500_000, ge=1024, description="sample ids remembered per device for deduplication"
    )
    max_message_bytes: int = Field(
        4_000_000, ge=1024, description="largest message a stage accepts; larger is dead-lettered"
    )
    max_batch_samples: int = Field(4096, ge=1, description="largest sample count in one batch")
    max_future_skew_seconds: float = Field(
        -1.0, ge=-1,
        description="how far ahead of this host's clock a timestamp may be (else dead-lettered); "
        "-1: half the window horizon; at most the horizon (windows_kept x shortest window)",
    )
    score_take: int = Field(64, ge=1, description="batches the score stage gathers per call")
    score_take_within: float = Field(
        0.005, gt=0, description="seconds the score stage waits to gather batches"
    )
    fold_take: int = Field(
        64, ge=1, description="prediction batches aggregate and evaluate gather per fold"
    )
    fold_take_within: float = Field(
        0.005, gt=0, description="seconds aggregate and evaluate wait to gather batches"
    )
    # database change streams
    cdc_dsn: str = Field("", description="PostgreSQL URL the CDC stage and db commands use")
    cdc_slot: str = Field("edgewise_slot", description="logical replication slot (pgoutput) of CDC")
    cdc_publication: str = Field(
        "edgewise_pub", description="publication CDC reads; made if missing"
    )
    cdc_tables: str = Field(
        "", description="comma-separated schema.table list CDC captures; empty: all tables"
    )
    cdc_topic_prefix: str = Field(
        "edgewise", description="CDC topics are <prefix>.<schema>.<table> (Debezium topic.prefix)"
    )
    cdc_partitions: int = Field(8, ge=1, le=1024, description="partitions of each CDC topic")
    cdc_snapshot_mode: Literal["initial", "never", "always"] = Field(
        "initial", description="initial: snapshot once per slot; always: at every start; never"
    )
    cdc_max_changes: int = Field(
        20_000, ge=1, description="changes per slot peek (whole transactions; big ones are paged)"
    )
    cdc_page_rows: int = Field(
        2000, ge=1, le=1_000_000, description="rows fetched at a time from a peek or snapshot"
    )
    cdc_max_in_flight: int = Field(
        10_000, ge=1, description="CDC events awaiting a Kafka ack before capture waits"
    )
    cdc_poll_seconds: float = Field(0.05, gt=0, le=60, description="pause after an empty peek")
    cdc_heartbeat_seconds: float = Field(
        10.0, gt=0, description="advance the slot this often when nothing is ours (frees WAL)"
    )
    cdc_reconnect_max_seconds: float = Field(
        5.0, gt=0, description="longest wait between reconnects to PostgreSQL"
    )
    cdc_transform_topics: str = Field(
        "", description="CDC topics turned into samples (comma-separated); empty: the digits "
        "test table's"
    )
    cdc_id_column: str = Field("id", description="column holding a row's sample id")
    cdc_label_column: str = Field("label", description="column of the true label; empty: none")
    cdc_image_column: str = Field("pixels", description="column of the image (bytea or numbers)")
    cdc_image_shape: str = Field("8x8", description="shape of the image column, e.g. 8x8")
    cdc_sample_kind: str = Field("digits", description="sample kind the CDC rows become")
    cdc_device_column: str = Field(
        "", description="column naming the device; empty: cdc:<schema>.<table>"
    )
    cdc_pack_rows: int = Field(256, ge=1, description="CDC rows packed into one sample batch")
    cdc_pack_seconds: float = Field(
        0.05, gt=0, le=10, description="seconds the transform waits to pack rows"
    )
    review_max_items: int = Field(
        10_000, ge=1, description="review items kept, all partitions (each its share); oldest "
        "evicted first"
    )
    review_max_age_seconds: float = Field(
        86_400.0, gt=0, description="review items older than this (queued at the hub) are "
        "evicted"
    )
    review_max_image_bytes: int = Field(
        65_536, ge=0, description="inline pixels a review item keeps; larger are dropped (its "
        "stored image stays)"
    )
    site_max_devices: int = Field(
        64, ge=1, le=10_000, description="devices kept per site in site_metrics; the longest "
        "silent evicted first"
    )
    site_device_max_age_seconds: float = Field(
        3600.0, gt=0, description="a device silent this long (by window start) leaves its "
        "site's metrics"
    )
    evaluation_window_seconds: float = Field(
        60.0, gt=0, description="tumbling window of the online evaluation"
    )
    evaluation_windows_kept: int = Field(
        10, ge=1, le=1000, description="evaluation windows kept per model version"
    )
    evaluation_max_models: int = Field(
        16, ge=1, le=256, description="model versions evaluated per device; the oldest dropped"
    )
    evaluation_log_loss_floor: float = Field(
        1e-6, gt=0, lt=1, description="probability used when the true class is not in the top-k"
    )

    corrections_max_items: int = Field(
        10_000, ge=1, description="corrections kept, all partitions (each its share); oldest "
        "evicted first"
    )
    corrections_max_age_seconds: float = Field(
        30 * 86_400.0, gt=0, description="corrections older than this (made at the hub) are "
        "evicted"
    )

    retrain_every_corrections: int = Field(
        50, ge=1, le=10_000_000, description="the retrain stage trains a candidate after this "
        "many new corrections"
    )
    retrain_min_interval_seconds: float = Field(
        60.0, ge=0, description="and not sooner than this after its last training"
    )
    retrain_margin: float = Field(
        0.01, ge=0, le=1, description="a candidate is promoted only if not worse than the "
        "served model by more than this"
    )
    shadow_samples: int = Field(
        500, ge=0, le=100_000_000, description="a candidate that passed the held-out sets is "
        "scored beside the served model on this many live samples before it is promoted or "
        "rejected; 0: held-out sets only"
    )
    shadow_timeout_seconds: float = Field(
        600.0, gt=0, description="a candidate that has not seen shadow_samples samples by "
        "then is rejected"
    )

    # HTTP views: write token, fan-out to the other workers
    api_token: SecretStr = Field(
        SecretStr(""), description="token write endpoints require (Authorization: Bearer); "
        "empty: none"
    )
    api_token_reads: bool = Field(
        False, description="reads (views, dashboard) need the token too; default open"
    )
    peer_urls: str = Field(
        "", description="comma-separated view URLs of workers of other groups the dashboard "
        "also asks"
    )
    fanout_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="how long the dashboard waits for each peer's part"
    )

    # HTTP ingest of tabular rows (the ingest_http stage)
    ingest_max_bytes: int = Field(
        1_048_576, ge=1024, le=64_000_000, description="largest POST /api/ingest body; larger "
        "is refused (413)"
    )
    ingest_max_rows: int = Field(
        4096, ge=1, le=1_000_000, description="rows one POST /api/ingest may carry; more is "
        "refused (413)"
    )
    ingest_max_in_flight_rows: int = Field(
        50_000, ge=1, description="rows a worker holds accepted but not yet acknowledged by "
        "the broker; a request beyond it is answered 429"
    )
    ingest_ack_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="how long a request waits for the broker to "
        "acknowledge its rows before it is answered 503"
    )
    ingest_retry_after_seconds: float = Field(
        1.0, gt=0, le=3600, description="Retry-After of a 429 or 503; after a failed delivery "
        "requests are answered 503 for this long"
    )
    ingest_device: str = Field(
        "http", min_length=1, max_length=200, description="device of ingested rows that name "
        "none (rows are partitioned by device)"
    )

    # results and raw samples into PostgreSQL (the sink_predictions and sink_samples stages)
    sink_dsn: SecretStr = Field(
        SecretStr(""), description="PostgreSQL URL the sink stages write to "
        "(postgresql://user:password@host:5432/db); the sink stages refuse to start without one"
    )
    sink_predictions_table: str = Field(
        "edgewise_predictions", description="table (or schema.table) of the predictions "
        "sink_predictions writes, one row per sample; created when missing"
    )
    sink_samples_table: str = Field(
        "edgewise_samples", description="table (or schema.table) of the raw samples "
        "sink_samples archives for training, one row per sample; created when missing"
    )
    sink_take: int = Field(
        64, ge=1, le=10_000, description="messages a sink stage gathers into one write"
    )
    sink_take_within: float = Field(
        0.05, gt=0, le=10, description="seconds a sink stage waits for a gathering to fill"
    )
    sink_max_rows: int = Field(
        20_000, ge=1, le=1_000_000, description="rows of one database transaction; a larger "
        "gathering is written in several, all before its input is committed"
    )
    sink_write_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="a write the database has not finished by then is "
        "abandoned (connection closed) and tried again"
    )

    # object references: images fetched from S3 or the image directory (the refs stage)
    refs_buckets: str = Field(
        "", description="comma-separated S3 buckets the refs stage may fetch from; empty: "
        "s3_bucket alone"
    )
    refs_device: str = Field(
        "refs", min_length=1, max_length=200, description="device of referenced images "
        "whose reference names none (samples are partitioned by device)"
    )
    refs_max_object_bytes: int = Field(
        8_388_608, ge=64, le=1_073_741_824, description="largest object the refs stage "
        "fetches (by its stated size, then by what arrives); larger is dead-lettered"
    )
    refs_max_pixels: int = Field(
        16_777_216, ge=64, le=268_435_456, description="most pixels (width x height, read "
        "from the image's header before decoding) of a referenced image"
    )
    refs_concurrency: int = Field(
        16, ge=1, le=1024, description="objects one refs worker fetches at a time"
    )
    refs_fetch_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="one attempt to fetch an object; a timed-out attempt "
        "is retried with backoff"
    )

    # edge, bridge, object store
    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="MQTT broker of the edge and bridge")
    mqtt_root: str = Field(
        "edgewise", description="root of the MQTT topic tree root/site/device/kind"
    )
    mqtt_keepalive: int = Field(10, ge=2, le=3600, description="MQTT keepalive seconds")
    mqtt_client_id: str = Field(
        "", description="MQTT client id (persistent session); empty derives one from device/app"
    )
    model_signing_key: SecretStr = Field(
        SecretStr(""), description="key the bridge signs edge model commands with and edges "
        "check them with (HMAC-SHA256); empty: none"
    )
    allow_unsigned_models: bool = Field(
        False, description="with no model_signing_key, let edges apply unsigned model "
        "commands and bridges send them; otherwise both refuse to start"
    )
    site: str = Field("site-1", description="site of this edge device (MQTT topic segment)")
    device_id: str = Field("edge-1", description="id of this edge device (MQTT topic segment)")
    geo: str = Field("", description="optional 'lat,lon' of this edge device, sent as metadata")
    edge_rate: float = Field(
        20.0, gt=0, le=1e6, description="edge samples (digits) or frames (camera) per second"
    )
    edge_batch_size: int = Field(16, ge=1, le=4096, description="digits per edge MQTT message")
    edge_window_seconds: float = Field(
        10.0, gt=0, description="tumbling window of the metrics an edge sends"
    )
    spool_max_items: int = Field(
        100_000, ge=1, description="messages the edge keeps while offline; oldest dropped beyond"
    )
    spool_max_bytes: int = Field(
        256_000_000, ge=1024, description="payload bytes the edge keeps while offline"
    )
    spool_fsync: bool = Field(
        True, description="fsync each spooled batch: survives power loss; off survives only a "
        "crash"
    )
    reconnect_min_seconds: float = Field(
        0.2, gt=0, description="first delay before trying again: an MQTT reconnect, a database "
        "write, an object store request"
    )
    reconnect_max_seconds: float = Field(
        5.0, gt=0, description="longest delay before trying again (the delay doubles up to it)"
    )
    image_store: Literal["local", "s3"] = Field(
        "local", description="where face crops and review images go: local directory or S3"
    )
    image_dir: Path = Field(Path(".edgewise/images"), description="local image store directory")
    s3_bucket: str = Field("edgewise", description="S3 bucket of the image store")
    s3_endpoint: str = Field("", description="S3 endpoint URL (MinIO, moto); empty means AWS")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_access_key_id: str = Field("", description="S3 access key id; empty uses the AWS chain")
    s3_secret_access_key: SecretStr = Field(
        SecretStr(""), description="S3 secret access key; empty uses the AWS credential chain"
    )
    max_image_side: int = Field(
        2048, ge=24, le=8192, description="largest image side (pixels) a face payload may carry"
    )

    shutdown_seconds: float = Field(
        8.0, gt=0, le=300, description="a worker stopping (SIGTERM, Ctrl-C) is gone within this"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "warning", description="log level of the worker"
    )

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if value == "embedded":
            return value
        if not value.startswith(("kafka://", "aiokafka://", "edgewise://")):
            raise ValueError("must be 'embedded' or start with kafka://")
        return value

    @field_validator("peer_urls")
    @classmethod
    def _peer_urls(cls, value: str) -> str:
        for url in filter(None, (u.strip() for u in value.split(","))):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"peer URL {url[:80]!r} must start with http:// or https://")
        return value

    @field_validator("sink_predictions_table", "sink_samples_table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not TABLE_NAME.fullmatch(value):
            raise ValueError("must be a table or schema.table of lower-case letters, digits "
                             "and _ (at most 63 each), starting with a letter or _")
        return value

    @field_validator("refs_buckets")
    @classmethod
    def _bucket_names(cls, value: str) -> str:
        for bucket in filter(None, (b.strip() for b in value.split(","))):
            if not BUCKET_NAME.fullmatch(bucket):
                raise ValueError(f"bucket {bucket[:80]!r} is not an S3 bucket name")
        return value

    @model_validator(mode="after")
    def _skew_within_horizon(self) -> Settings:
        skew = self.max_future_skew_seconds
        if skew != -1 and not 0 < skew <= self.window_horizon_seconds:
            raise ValueError(
                f"max_future_skew_seconds must be -1 or in (0, {self.window_horizon_seconds:g}]: "
                "a clock further ahead would push every other device's windows out")
        return self

    @property
    def window_horizon_seconds(self) -> float:
        """How far back the kept windows reach: ``windows_kept`` of the shortest window kind
        (device tumbling, hopping step, edge windows)."""
        shortest = min(self.tumbling_seconds, self.hopping_step_seconds, self.edge_window_seconds)
        return self.windows_kept * shortest

    @property
    def future_skew_seconds(self) -> float:
        """The effective future-skew bound every boundary applies to timestamps.

        Half the horizon by default: an edge ahead by the whole bound then still leaves the
        newest half of the kept windows to the devices whose clocks are right.
        """
        skew = self.max_future_skew_seconds
        return self.window_horizon_seconds / 2 if skew == -1 else skew

    @property
    def allowed_buckets(self) -> frozenset[str]:
        """The buckets the refs stage may read: ``refs_buckets``, else the image store's."""
        named = {b.strip() for b in self.refs_buckets.split(",") if b.strip()}
        return frozenset(named or {self.s3_bucket})

    @property
    def peers(self) -> list[str]:
        """The configured peer URLs, without a trailing slash."""
        return [u.strip().rstrip("/") for u in self.peer_urls.split(",") if u.strip()]

    @property
    def embedded(self) -> bool:
        """True when edgewise starts its own Tansu broker."""
        return self.broker == "embedded"

    @property
    def embedded_profile(self) -> bool:
        """True when the broker is Tansu and needs the embedded broker profile."""
        return self.broker == "embedded" or self.broker_profile == "embedded"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings


def describe(settings: Settings) -> list[tuple[str, Any, str, str]]:
    """Rows of (field, value, environment variable, documentation) for ``edgewise config``."""
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append(
            (name, getattr(settings, name), f"EDGEWISE_{name.upper()}", field.description or "")
        )
    return rows


def _one_line(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown setting '{where}'")
        elif not err["loc"]:  # a rule across fields: its input is the whole object
            problems.append(err["msg"].removeprefix("Value error, "))
        else:
            problems.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration: " + "; ".join(problems)


def _unknown_env() -> list[str]:
    known = {f"EDGEWISE_{name.upper()}" for name in Settings.model_fields}
    known |= {"EDGEWISE_CONFIG", "EDGEWISE_DEBUG"}
    return sorted(k for k in os.environ
                  if k.upper().startswith("EDGEWISE_") and k.upper() not in known)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings: keyword overrides, then environment, then TOML file.

    Raises SettingsError with one readable line for an unknown or invalid value.
    """
    file_values: dict[str, Any] = {}
    path = config_file or os.environ.get("EDGEWISE_CONFIG")
    if path:
        try:
            file_values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
        file_values = dict(file_values.get("edgewise", file_values))
    unknown = _unknown_env()
    if unknown:
        raise SettingsError(f"unknown environment setting {', '.join(unknown)}")
    present = {k.upper() for k in os.environ}  # pydantic-settings matches any case
    env_names = {name for name in Settings.model_fields if f"EDGEWISE_{name.upper()}" in present}
    merged = {k: v for k, v in file_values.items() if k not in env_names}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
