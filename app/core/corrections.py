"""Corrections: the true label a person set for one reviewed sample, as a request from the
correction station and as a record on the corrections topic, validated field by field.

A request names the sample and the label (``null`` takes a correction back). The worker
holding the sample's review item turns it into a record: the label plus what the model
said (device, model version, predicted label, confidence), so that the correction counts
toward that version's accuracy, and the review item itself (so that taking the correction
back can put the item in the queue again). Anyone with access can write to the topic, so
the correct stage checks every record as strictly as the view checks a request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from edgewise.app.core.bounds import (
    DEFAULT_FUTURE_SKEW_SECONDS,
    MAX_LABEL,
    check_ids,
    check_model,
    check_size,
    check_time,
    is_int,
    is_number,
)
from edgewise.app.core.frames import BadInput, json_object
from edgewise.app.core.review_items import parse_review_item

#: A request is an id and a label: a few hundred bytes; anything larger is refused unread.
MAX_REQUEST_BYTES = 4096
CORRECTION_SCHEMA = 1
REQUEST_FIELDS = frozenset({"id", "label"})
RECORD_FIELDS = frozenset({"schema", "id", "label", "device", "model", "model_version",
                           "predicted", "confidence", "corrected_at", "item"})


@dataclass(frozen=True, slots=True)
class CorrectionRequest:
    """What the station asks: set ``label`` for sample ``id``, or take it back (None)."""

    id: str
    label: int | None


def check_label(value: Any, what: str = "label", unknown_allowed: bool = False) -> int | None:
    """A class number 0..MAX_LABEL (``None`` only when allowed)."""
    if value is None and unknown_allowed:
        return None
    if not is_int(value) or not 0 <= value <= MAX_LABEL:
        raise BadInput("bad_label", f"{what} must be a class number 0..{MAX_LABEL}"
                                    f"{' or null' if unknown_allowed else ''}, not "
                                    f"{str(value)[:50]}")
    return int(value)


def _no_unknown_fields(doc: dict[str, Any], known: frozenset[str], what: str) -> None:
    unknown = sorted(set(doc) - known)
    if unknown:
        raise BadInput("unknown_field", f"{what} has unknown field(s) "
                                        f"{', '.join(k[:40] for k in unknown[:5])}")


def parse_correction_request(body: bytes, max_bytes: int = MAX_REQUEST_BYTES
                             ) -> CorrectionRequest:
    """A correction request, validated; BadInput (with the reason) otherwise."""
    check_size(body, max_bytes)
    doc = json_object(body, "correction")
    _no_unknown_fields(doc, REQUEST_FIELDS, "correction")
    if "id" not in doc or "label" not in doc:
        raise BadInput("missing_field", "a correction needs id and label (null takes it back)")
    if not isinstance(doc["id"], str):
        raise BadInput("bad_id", "id must be a string")
    check_ids([doc["id"]], "id")
    return CorrectionRequest(doc["id"], check_label(doc["label"], unknown_allowed=True))


def new_correction(request: CorrectionRequest, known: dict[str, Any],
                   now: float | None = None) -> dict[str, Any]:
    """The record for ``request``, from what is known of the sample: its review item
    (``known`` has ``confidence`` and ``label``) or its previous correction record."""
    if "predicted" in known:  # a previous correction: keep what the model said
        item = known.get("item")
        model, version = known["model"], known["model_version"]
        predicted, confidence, device = known["predicted"], known["confidence"], known["device"]
    else:
        item = {k: v for k, v in known.items() if k not in ("queued_at", "partition")}
        model, version = known["model"], known["model_version"]
        predicted, confidence, device = known["label"], known["confidence"], known["device"]
    return {
        "schema": CORRECTION_SCHEMA, "id": request.id, "label": request.label,
        "device": device, "model": model, "model_version": version,
        "predicted": predicted, "confidence": confidence,
        "corrected_at": time.time() if now is None else now, "item": item,
    }


def parse_correction(raw: bytes, max_bytes: int, *,
                     future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS,
                     now: float | None = None) -> dict[str, Any]:
    """A correction record from the corrections topic, validated; BadInput otherwise."""
    check_size(raw, max_bytes)
    doc = json_object(raw, "correction record")
    _no_unknown_fields(doc, RECORD_FIELDS, "correction record")
    missing = sorted(RECORD_FIELDS - set(doc))
    if missing:
        raise BadInput("missing_field", ", ".join(missing))
    if not is_int(doc["schema"]) or doc["schema"] != CORRECTION_SCHEMA:
        raise BadInput("unknown_schema_version", f"schema {str(doc['schema'])[:50]}")
    if not isinstance(doc["id"], str):
        raise BadInput("bad_id", "id must be a string")
    check_ids([doc["id"]], "id")
    check_label(doc["label"], unknown_allowed=True)
    check_label(doc["predicted"], "predicted")
    if not isinstance(doc["device"], str) or not doc["device"] or len(doc["device"]) > 200 \
            or not doc["device"].isprintable():
        raise BadInput("missing_field", "device must be a non-empty printable string")
    check_model(doc["model"], doc["model_version"])
    confidence = doc["confidence"]
    if not is_number(confidence) or not 0.0 <= confidence <= 1.0:
        raise BadInput("out_of_range", f"confidence must be in 0..1, not {str(confidence)[:50]}")
    doc["corrected_at"] = check_time(doc["corrected_at"], "corrected_at", future_skew, now)
    item = doc["item"]
    if item is not None:
        if not isinstance(item, dict):
            raise BadInput("bad_field", "item must be a review item or null")
        parsed = parse_review_item(orjson.dumps(item), max_bytes, future_skew=future_skew,
                                   now=now)
        if parsed["id"] != doc["id"]:
            raise BadInput("bad_field", "item is not the corrected sample's review item")
    return doc


def model_key(record: dict[str, Any]) -> str:
    """``<model>:<version>``, as the window and evaluation tables name model versions."""
    return f"{record['model']}:{record['model_version']}"
