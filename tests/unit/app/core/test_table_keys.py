"""Table keys: raw UTF-8 in the changelog, ``str`` back from every store."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from edgewise.app.core.context import StringKeyedTable, json_schema


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_keys_come_back_as_str_from_every_store(tmp_path: Path, store: str) -> None:
    app = faust.App("keys-test", broker="kafka://127.0.0.1:1", store=store,
                    datadir=str(tmp_path), web_enabled=False, Table=StringKeyedTable)
    table = app.Table("windows", default=None, partitions=4, schema=json_schema())
    data = table.data  # the store (RocksDB's is opened here)
    raw = app.serializers.dumps_key(data.key_type, "device-3", serializer=data.key_serializer)
    assert raw == b"device-3"  # what table_route hashes, as the source topic did
    # a RocksDB table decoded its keys to bytes: "key.startswith('…')" then raised in views
    assert app.serializers.loads_key(data.key_type, raw,
                                     serializer=data.key_serializer) == "device-3"
