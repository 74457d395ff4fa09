"""The limits a process applies at every boundary, taken from its settings once.

Decoders take their limits as arguments, so they stay pure and testable; stages, the
bridge and CDC hold one :class:`Boundary` built from the settings and call the decoders
through it, so no stage can forget a limit (the batch size, the top-k width, the
future-skew bound) that another stage applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgewise.app.core.bounds import DEFAULT_FUTURE_SKEW_SECONDS, MAX_TOP_K
from edgewise.app.core.prediction_wire import decode_prediction_batch
from edgewise.app.core.records import PredictionBatch, SampleBatch
from edgewise.app.core.review_groups import GROUP_MAX_BYTES, ReviewGroup, parse_review_group
from edgewise.app.core.settings import Settings
from edgewise.app.core.wire import decode_sample_batch, validate_sample_batch


@dataclass(frozen=True)
class Boundary:
    """Size, count, width and time limits, and the decoders that apply them."""

    max_bytes: int = 4_000_000
    max_samples: int = 4096
    max_top_k: int = MAX_TOP_K
    future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> Boundary:
        return cls(settings.max_message_bytes, settings.max_batch_samples, MAX_TOP_K,
                   settings.future_skew_seconds)

    def samples(self, raw: bytes, now: float | None = None) -> SampleBatch:
        """A sample batch from a frame or JSON."""
        return decode_sample_batch(raw, self.max_bytes, self.max_samples,
                                   future_skew=self.future_skew, now=now)

    def sample_batch(self, batch: SampleBatch, now: float | None = None) -> SampleBatch:
        """A batch built in this process (CDC rows packed together), checked the same way."""
        return validate_sample_batch(batch, self.max_samples, now, future_skew=self.future_skew)

    def predictions(self, raw: bytes, now: float | None = None) -> PredictionBatch:
        """A prediction batch from a frame."""
        return decode_prediction_batch(raw, self.max_bytes, self.max_samples,
                                       max_top_k=self.max_top_k, future_skew=self.future_skew,
                                       now=now)

    def review_group(self, raw: bytes, now: float | None = None) -> ReviewGroup:
        """A record of the review topic: its items, each validated on its own."""
        return parse_review_group(raw, self.max_bytes, future_skew=self.future_skew, now=now)

    @property
    def review_group_bytes(self) -> int:
        """The bound a review group record is split at: what every reader accepts."""
        return min(GROUP_MAX_BYTES, self.max_bytes)
