"""The bodies of promotion and rollback requests: a version 1..2**31-1, nothing else."""

from __future__ import annotations

import pytest

from edgewise.app.core.frames import BadInput
from edgewise.app.run.model_views import parse_promotion


def test_a_promotion_names_a_version_and_a_rollback_nothing() -> None:
    assert parse_promotion(b'{"version": 3}', needs_version=True) == 3
    assert parse_promotion(b"{}", needs_version=False) is None
    assert parse_promotion(b"", needs_version=False) is None


@pytest.mark.parametrize("body,needs,reason", [
    (b'{"version": "3"}', True, "bad_version"),
    (b'{"version": true}', True, "bad_version"),
    (b'{"version": 0}', True, "bad_version"),
    (b'{"version": 2147483648}', True, "bad_version"),
    (b"{}", True, "bad_version"),
    (b'{"version": 3, "force": 1}', True, "unknown_field"),
    (b'{"version": 3}', False, "unknown_field"),
    (b"[3]", True, "bad_json"),
    (b"{", False, "bad_json"),
])
def test_a_bad_body_is_refused_with_its_reason(body: bytes, needs: bool, reason: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_promotion(body, needs_version=needs)
    assert caught.value.reason == reason
