"""Signed model commands: canonical encoding, signatures checked, replays refused."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from edgewise.app.adapters.model_signing import (
    CONTEXT,
    CommandClock,
    CommandLedger,
    SigningRefused,
    canonical_command,
    require_signing_key,
    sign_command,
    verify_command,
)
from edgewise.app.adapters.mqtt_payloads import ModelCommand, parse_model_command
from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import Settings

KEY = b"hub-and-edges"
TOPIC = "edgewise/s1/all/command"
ARTIFACT = b"model bytes"
META = {"name": "digits", "version": 3, "sha256": hashlib.sha256(ARTIFACT).hexdigest(),
        "algorithm": "linear", "metrics": {"accuracy": 0.95}, "created_at": 1.7e9}


def command(**changes: object) -> ModelCommand:
    return replace(ModelCommand(dict(META), ARTIFACT, 1_000, TOPIC), **changes)  # type: ignore[arg-type]


def reason(fn: object) -> str:
    with pytest.raises(BadInput) as info:
        fn()  # type: ignore[operator]
    return info.value.reason


def test_the_canonical_encoding_is_independent_of_key_order_and_covers_every_field() -> None:
    shuffled = command(meta=dict(reversed(list(META.items()))))
    assert canonical_command(shuffled) == canonical_command(command())
    body = orjson.loads(canonical_command(command()).removeprefix(CONTEXT))
    assert body == {"command": "model-update", "meta": META, "size": len(ARTIFACT),
                    "sha256": META["sha256"], "issued_ms": 1_000, "target": TOPIC}


def test_a_signed_command_verifies_after_the_wire() -> None:
    sent = sign_command(command(), KEY)
    received = parse_model_command(sent.encode(), 10_000)
    assert received == sent and len(received.signature) == 64
    verify_command(received, KEY, TOPIC)
    assert sign_command(command(), b"") == command()  # no key: unsigned


@pytest.mark.parametrize("tamper", [
    {"meta": {**META, "name": "faces"}},
    {"meta": {**META, "version": 2}},
    {"meta": {**META, "algorithm": "forest"}},
    {"meta": {**META, "metrics": {"accuracy": 0.99}}},
    {"meta": {**META, "sha256": hashlib.sha256(b"other").hexdigest()}, "artifact": b"other"},
    {"artifact": ARTIFACT + b"!"},  # another size (its bytes are bound by the sha256)
    {"issued_ms": 2_000},
    {"target": "edgewise/all/all/command"},
])
def test_a_tampered_field_breaks_the_signature(tamper: dict[str, object]) -> None:
    forged = replace(sign_command(command(), KEY), **tamper)  # type: ignore[arg-type]
    assert reason(lambda: verify_command(forged, KEY, forged.target)) == "bad_signature"


def test_unsigned_wrongly_signed_and_redirected_commands_are_refused() -> None:
    assert reason(lambda: verify_command(command(), KEY, TOPIC)) == "unsigned"
    other_key = sign_command(command(), b"another key")
    assert reason(lambda: verify_command(other_key, KEY, TOPIC)) == "bad_signature"
    garbage = replace(sign_command(command(), KEY), signature="0" * 64)
    assert reason(lambda: verify_command(garbage, KEY, TOPIC)) == "bad_signature"
    signed = sign_command(command(), KEY)
    assert reason(lambda: verify_command(signed, KEY, "edgewise/s2/all/command")) == \
        "wrong_target"
    verify_command(command(), b"", TOPIC)  # unsigned models allowed: nothing to check
    bad = orjson.loads(signed.encode())
    for field, value in (("signature", "xyz"), ("signature", 7), ("issued_ms", -1),
                         ("issued_ms", 1.5), ("target", ["t"])):
        wire = orjson.dumps({**bad, field: value})
        assert reason(lambda w=wire: parse_model_command(w, 10_000)) == "bad_field"


def test_the_ledger_refuses_replays_and_outlives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "edge.commands.json"
    ledger = CommandLedger(path)
    first = sign_command(command(issued_ms=100), KEY)
    ledger.check(first)
    ledger.record(first)
    ledger.check(first)  # the same command again (retained, redelivered) passes
    older = sign_command(command(issued_ms=99), KEY)
    assert reason(lambda: ledger.check(older)) == "replayed"
    twin = sign_command(command(issued_ms=100, meta={**META, "version": 1}), KEY)
    assert reason(lambda: CommandLedger(path).check(twin)) == "replayed"
    CommandLedger(path).check(sign_command(command(issued_ms=101), KEY))
    path.write_text("[]")
    with pytest.raises(ValueError, match="not a command ledger"):
        CommandLedger(path)


def test_the_clock_never_repeats() -> None:
    clock = CommandClock()
    times = [clock.next() for _ in range(1000)]
    assert times == sorted(set(times))


def test_a_key_is_required_unless_unsigned_models_are_allowed() -> None:
    with pytest.raises(SigningRefused, match="EDGEWISE_MODEL_SIGNING_KEY"):
        require_signing_key(Settings(), "the bridge")
    assert require_signing_key(Settings(allow_unsigned_models=True), "the bridge") == b""
    assert require_signing_key(Settings(model_signing_key="k"), "the bridge") == b"k"
