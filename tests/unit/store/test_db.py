"""store.db: opening broker.db, and migrating a file written by an older version."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from nexo_actors.errors import StoreError
from nexo_actors.store.db import SCHEMA_VERSION, decode_headers, encode_headers, open_db, query

V1_PENDING = """
CREATE TABLE pending_events (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, headers BLOB,
    enqueued_at INTEGER NOT NULL, seq INTEGER NOT NULL UNIQUE,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, headers BLOB,
    failed_at INTEGER NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL);
PRAGMA user_version=1;
"""


def test_a_version_1_queue_is_migrated_with_its_rows_in_order(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    old = apsw.Connection(str(path))
    old.execute(V1_PENDING)
    old.executemany("INSERT INTO pending_events (id, topic, payload, headers, enqueued_at, seq,"
                    " attempts, last_error) VALUES (?, 't', x'00', NULL, 1, ?, ?, ?)",
                    [("b", 2, 1, "boom"), ("a", 1, 0, None), ("c", 9, 2, None)])
    old.close()

    conn = open_db(path)
    try:
        assert query(conn, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert query(conn, "SELECT seq, id, attempts, last_error FROM pending_events ORDER BY seq") == [
            (1, "a", 0, None), (2, "b", 1, "boom"), (9, "c", 2, None)]
        conn.execute("INSERT INTO pending_events (id, topic, payload, enqueued_at)"
                     " VALUES ('d', 't', x'00', 2)")
        assert query(conn, "SELECT seq FROM pending_events WHERE id = 'd'") == [(10,)], "appended"
        assert query(conn, "SELECT COUNT(*) FROM inbox") == [(0,)], "missing tables are created"
    finally:
        conn.close()


def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        open_db(path)


def test_headers_round_trip() -> None:
    headers = {"Nexo-Origin": "i1", "Nexo-Local-Delivered": "kate,ops"}
    raw = encode_headers(headers)
    assert raw is not None and decode_headers(raw) == headers
    assert encode_headers({}) is None and decode_headers(None) == {}
    assert decode_headers(b'{"Nexo-Origin": "i1"}') == {"Nexo-Origin": "i1"}, "files of version 1"
