"""Shipping a registered model version to an edge, which has no access to the hub's disk.

The hub packs the artifact bytes with their registry metadata (``export_version``); the
edge writes them into its own registry in the same layout (``install_version``) and loads
them through ``ModelRegistry.load``, so the same checks apply at the edge as at the hub:
the sha256 must match and the version's adapter reads it (skops building only
allow-listed types). Nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil

from edgewise.models.registry import META, ModelMeta, ModelRegistry, RegistryError

_META_FIELDS = {f.name for f in dataclasses.fields(ModelMeta)}


def export_version(registry: ModelRegistry, name: str, version: int | None = None
                   ) -> tuple[ModelMeta, bytes]:
    """Metadata and artifact bytes of one version (the newest by default)."""
    meta = registry.meta(name, version)
    artifact = registry.artifact_path(meta).read_bytes()
    if hashlib.sha256(artifact).hexdigest() != meta.sha256:
        raise RegistryError(f"model {name} v{meta.version}: artifact does not match its sha256")
    return meta, artifact


def install_version(registry: ModelRegistry, meta: dict[str, object], artifact: bytes) -> bool:
    """Write a shipped version into ``registry``; True when new, False when already there.

    Refuses an artifact whose sha256 differs from its metadata, and a version number the
    registry already holds with different bytes (versions are immutable).
    """
    known = ModelMeta(**{k: v for k, v in meta.items() if k in _META_FIELDS})  # type: ignore[arg-type]
    if hashlib.sha256(artifact).hexdigest() != known.sha256:
        raise RegistryError(f"model {known.name} v{known.version}: artifact sha256 mismatch")
    file_name = registry.artifact_path(known).name  # a plain file name, or refused
    folder = registry.root / known.name / str(known.version)
    if (folder / META).is_file():
        if registry.meta(known.name, known.version).sha256 != known.sha256:
            raise RegistryError(
                f"model {known.name} v{known.version} already exists here with other bytes")
        return False
    staging = registry.root / known.name / f".incoming-{known.version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / file_name).write_bytes(artifact)
    (staging / META).write_text(json.dumps(known.to_dict(), indent=2))
    try:
        os.rename(staging, folder)  # the version appears whole or not at all
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / META).is_file():
            raise
        return False  # another process installed it at the same moment
    return True
