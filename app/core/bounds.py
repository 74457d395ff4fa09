"""The bounds every boundary applies, whatever the frame kind: ids, labels, names, times.

Sample frames, prediction frames, JSON batches, review items, MQTT payloads and CDC rows
all carry ids, labels and timestamps, and each boundary must refuse the same things for
the same reasons, so the rules live here once. Each check raises :class:`BadInput` with
its reason code; the callers' stages dead-letter and go on.

Time is the subtle one. A timestamp decides which window a sample counts in, and the
newest timestamp of a device (or a site) decides which windows are kept, so one clock far
ahead would push every window of the others out. Timestamps must therefore be finite,
after 2000-01-01 (an edge whose clock was never set reports 1970) and no further ahead of
this host's clock than the future-skew bound (``Settings.future_skew_seconds``, at most
the window horizon).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import numpy as np

from edgewise.app.core.frames import BadInput

MAX_ID_LENGTH = 200
MAX_LABEL = 1_000_000
MAX_TOP_K = 100  # the largest top_k the settings allow
MAX_MODEL_VERSION = 2**31 - 1
MIN_TIMESTAMP = 946_684_800.0  # 2000-01-01 UTC
DEFAULT_FUTURE_SKEW_SECONDS = 30.0  # the settings' default: half of 6 windows of 10 s
MAX_LATENCY_MS = 1e12  # about 30 years either way; beyond that a column is garbage
#: Features of one tabular row at most: a row of them stays a few KB in a review item.
MAX_FEATURES = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON ``true`` must not pass as a number)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def check_ids(ids: Any, what: str = "ids") -> list[str]:
    """A list of unique, printable ids of 1..MAX_ID_LENGTH characters.

    Printable because ids become object keys, log lines and PostgreSQL text (which cannot
    hold NUL); unique because a batch counting the same sample twice is not idempotent.
    """
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadInput("missing_field", f"{what} must be a list of strings")
    lengths = list(map(len, ids))  # whole-list checks: this runs for every sample
    if ids and (min(lengths) == 0 or max(lengths) > MAX_ID_LENGTH
                or not "".join(ids).isprintable()):
        raise BadInput("bad_id", f"{what} must be 1..{MAX_ID_LENGTH} printable characters")
    if len(set(ids)) != len(ids):
        raise BadInput("duplicate_ids", f"the same id twice in {what}")
    return ids


def check_device(device: Any) -> str:
    """A device id: a non-empty printable string of at most MAX_ID_LENGTH characters."""
    if not isinstance(device, str) or not device or len(device) > MAX_ID_LENGTH \
            or not device.isprintable():
        raise BadInput("missing_field", "device must be a non-empty printable string")
    return device


def check_model(name: Any, version: Any) -> tuple[str, int]:
    """A model name (a plain name, as in the registry) and version (1..2**31-1)."""
    if not isinstance(name, str) or not is_int(version):
        raise BadInput("missing_field", "model must be a string and model_version an int")
    if not _NAME.fullmatch(name):
        raise BadInput("bad_model", f"model name {name[:80]!r} is not a plain name")
    if not 1 <= version <= MAX_MODEL_VERSION:
        raise BadInput("bad_model", f"model_version {version} outside 1..{MAX_MODEL_VERSION}")
    return name, version


def latest_allowed(future_skew: float, now: float | None = None) -> float:
    """The latest timestamp a boundary accepts right now."""
    return (time.time() if now is None else now) + future_skew


def check_time(value: Any, what: str, future_skew: float, now: float | None = None) -> float:
    """One timestamp in seconds: finite, after 2000, at most ``future_skew`` ahead."""
    if not is_number(value) or value < MIN_TIMESTAMP:
        raise BadInput("bad_timestamp", f"{what} must be finite seconds after 2000-01-01, not "
                                        f"{str(value)[:50]}")
    if value > latest_allowed(future_skew, now):
        raise BadInput("future_timestamp", f"{what} {value:.3f} is more than {future_skew:g} s "
                                           "ahead of this host's clock")
    return float(value)


def check_times(values: np.ndarray, what: str, future_skew: float,
                now: float | None = None) -> None:
    """A column of timestamps: float dtype, then the rules of :func:`check_time`."""
    if values.dtype.kind != "f":
        raise BadInput("bad_dtype", f"{what} must be float seconds, not {values.dtype}")
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)) or float(values.min()) < MIN_TIMESTAMP:
        raise BadInput("bad_timestamp", f"{what} must be finite seconds after 2000-01-01")
    newest = float(values.max())
    if newest > latest_allowed(future_skew, now):
        raise BadInput("future_timestamp", f"{what} {newest:.3f} is more than {future_skew:g} s "
                                           "ahead of this host's clock")


def check_labels(values: np.ndarray, what: str, unknown_allowed: bool) -> None:
    """A column of class labels: an integer dtype, 0..MAX_LABEL (and -1 for unknown truth)."""
    if values.dtype.kind not in "iu":
        raise BadInput("bad_dtype", f"{what} must be integers, not {values.dtype}")
    low = -1 if unknown_allowed else 0
    if values.size and (int(values.min()) < low or int(values.max()) > MAX_LABEL):
        raise BadInput("bad_label", f"{what} must lie in {low}..{MAX_LABEL}")


def check_probabilities(values: np.ndarray, what: str) -> None:
    """A column of probabilities: float dtype, finite, within 0..1."""
    if values.dtype.kind != "f":
        raise BadInput("bad_dtype", f"{what} must be floats, not {values.dtype}")
    if not np.all(np.isfinite(values)):
        raise BadInput("nan", f"{what} holds NaN or infinity")
    if values.size and (float(values.min()) < 0.0 or float(values.max()) > 1.0):
        raise BadInput("out_of_range", f"{what} must lie in 0..1")


def check_feature_rows(values: np.ndarray, n: int, what: str = "features") -> None:
    """Tabular rows: float32, ``(n, f)`` with 1..MAX_FEATURES features, each value finite or
    NaN (NaN marks a missing value; whether a feature may be missing is the model's to say,
    see ``models.input_schema``). Infinity is never a measurement."""
    if values.dtype != np.float32:
        raise BadInput("bad_dtype", f"{what} must be float32, not {values.dtype}")
    if values.ndim != 2 or values.shape[0] != n or not 1 <= values.shape[1] <= MAX_FEATURES:
        raise BadInput("wrong_shape", f"{what} {values.shape}, expected ({n}, 1..{MAX_FEATURES})")
    if np.isinf(values).any():
        raise BadInput("not_finite", f"{what} hold infinity (NaN alone marks a missing value)")


def check_count(n: int, max_samples: int, what: str = "samples") -> None:
    """1..max_samples rows: checked before any row is looked at."""
    if n == 0:
        raise BadInput("empty_batch", f"no {what}")
    if n > max_samples:
        raise BadInput("too_many_samples", f"{n} {what} > limit {max_samples}")


def check_size(data: bytes, max_bytes: int) -> None:
    """Not empty, not over the size limit: checked before anything else is trusted."""
    if not data:
        raise BadInput("empty", "message has no bytes")
    if len(data) > max_bytes:
        raise BadInput("oversize", f"{len(data)} bytes > limit {max_bytes}")
