"""Signed model commands: the hub and its edges share a key, so an edge loads only what the
hub sent, sent to it, and not an old command played again.

The sha256 in a command catches a corrupt artifact, not a forged one: whoever can publish
on the command topic can pair any artifact with its own hash. So the bridge signs each
command with HMAC-SHA256 under ``model_signing_key`` over a canonical encoding of
everything in it that matters (``canonical_command``): the whole registry metadata (name,
version, sha256, algorithm, ...), the artifact's size (its bytes are bound by the sha256),
the time it was issued and the topic it was sent to. The edge checks the signature in
constant time before it installs or loads anything (``verify_command``), and remembers
the issue time of the last command it applied (``CommandLedger``), so an older command,
signed but stale, is refused: a rollback is a new command for an older version, never an
old command.

With no key configured, edges that apply model commands and bridges that send them
refuse to start (``require_signing_key``) unless ``allow_unsigned_models`` is set; then
commands go unsigned and edges take them as before (for a closed demo network only).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import orjson

from edgewise.app.adapters.mqtt_payloads import ModelCommand
from edgewise.app.core.frames import BadInput
from edgewise.app.core.settings import Settings

#: Domain separation: a signature over a model command is never valid for anything else.
CONTEXT = b"edgewise model command v1\n"


class SigningRefused(ValueError):
    """A process would handle model commands without a key, and that was not allowed."""


def signing_key(settings: Settings) -> bytes:
    """The shared key as bytes; empty when none is configured."""
    return settings.model_signing_key.get_secret_value().encode()


def require_signing_key(settings: Settings, role: str) -> bytes:
    """The key, or SigningRefused when there is none and unsigned models are not allowed."""
    key = signing_key(settings)
    if not key and not settings.allow_unsigned_models:
        raise SigningRefused(
            f"{role} handles model commands but no model_signing_key is set "
            "(EDGEWISE_MODEL_SIGNING_KEY); set one on the hub and the edges, or "
            "EDGEWISE_ALLOW_UNSIGNED_MODELS=true to accept unsigned commands")
    return key


def canonical_command(command: ModelCommand) -> bytes:
    """The bytes a signature covers: sorted-key JSON of metadata, size, time and target."""
    return CONTEXT + orjson.dumps({
        "command": "model-update", "meta": command.meta, "size": len(command.artifact),
        "sha256": command.meta.get("sha256"), "issued_ms": command.issued_ms,
        "target": command.target,
    }, option=orjson.OPT_SORT_KEYS)


def command_signature(command: ModelCommand, key: bytes) -> str:
    """HMAC-SHA256 of the canonical encoding, hex."""
    return hmac.new(key, canonical_command(command), hashlib.sha256).hexdigest()


def sign_command(command: ModelCommand, key: bytes) -> ModelCommand:
    """The command with its signature; unchanged (unsigned) when ``key`` is empty."""
    return replace(command, signature=command_signature(command, key)) if key else command


def verify_command(command: ModelCommand, key: bytes, topic: str) -> None:
    """Raise BadInput unless ``command`` was signed with ``key`` for ``topic``.

    With no key (unsigned models allowed) nothing is checked.
    """
    if not key:
        return
    if not command.signature:
        raise BadInput("unsigned", "model command carries no signature")
    if not hmac.compare_digest(command.signature, command_signature(command, key)):
        raise BadInput("bad_signature", "model command signature does not match")
    if command.target != topic:
        raise BadInput("wrong_target", f"command signed for {command.target[:200]!r}")


class CommandClock:
    """Issue times in milliseconds, strictly increasing even within one millisecond."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last = max(int(time.time() * 1000), self.last + 1)
        return self.last


class CommandLedger:
    """The issue time of the last model command an edge applied, kept on disk.

    ``check`` refuses a signed command older than the last one applied (a replay); the
    same command again (the retained one, after a reconnect or a restart) passes, and
    applying it again changes nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            doc = json.loads(path.read_text())
            self.last_ms = int(doc["issued_ms"])
            self.last_signature = str(doc.get("signature", ""))
        except FileNotFoundError:
            self.last_ms, self.last_signature = 0, ""
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a command ledger: {exc}") from None

    def check(self, command: ModelCommand) -> None:
        """BadInput when ``command`` was issued before the last one applied."""
        if not command.signature:  # unsigned (allowed): no replay protection to give
            return
        if command.issued_ms == self.last_ms and command.signature == self.last_signature:
            return
        if command.issued_ms <= self.last_ms:
            raise BadInput("replayed", f"command issued at {command.issued_ms} ms, not after "
                           f"the last applied ({self.last_ms} ms)")

    def record(self, command: ModelCommand) -> None:
        """Remember ``command`` as the last applied (atomically replaced)."""
        if not command.signature:
            return
        self.last_ms, self.last_signature = command.issued_ms, command.signature
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        staging.write_text(json.dumps({"issued_ms": self.last_ms,
                                       "signature": self.last_signature}))
        os.replace(staging, self.path)
