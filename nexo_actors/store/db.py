"""Opening broker.db and the row types read from it.

Shared by the QueueStore actor (the writer) and the CLI (`nexo dlq`), which
reads beside a running daemon thanks to WAL and writes only small
transactions under the busy timeout.
"""

from __future__ import annotations

import errno
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, cast

import apsw
import msgspec

from nexo_actors.errors import StoreError

SCHEMA_VERSION = 2

# Version 1 keyed pending_events by the (random) event id; version 2 keys it
# by seq so enqueue cost does not grow with depth (see schema.sql).
_MIGRATE_TO_2 = """
CREATE TABLE pending_events_v2 (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
    headers BLOB, enqueued_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT);
INSERT INTO pending_events_v2 (seq, id, topic, payload, headers, enqueued_at, attempts, last_error)
    SELECT seq, id, topic, payload, headers, enqueued_at, attempts, last_error
    FROM pending_events ORDER BY seq;
DROP TABLE pending_events;
ALTER TABLE pending_events_v2 RENAME TO pending_events;
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def open_db(path: Path, busy_timeout: float = 5.0, synchronous: str = "FULL",
            create: bool = True) -> apsw.Connection:
    """Open (and migrate) broker.db in WAL mode; StoreError names the file and the fix."""
    if not create and not path.exists():
        raise StoreError(f"{path} does not exist; has the runtime ever started with this config?")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
        conn = apsw.Connection(str(path), flags=flags)
        conn.set_busy_timeout(int(busy_timeout * 1000))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        version = scalar(conn, "PRAGMA user_version")
        if version < SCHEMA_VERSION:
            schema = resources.files("nexo_actors.store").joinpath("schema.sql").read_text()
            with conn:
                if version == 1:
                    conn.execute(_MIGRATE_TO_2)
                conn.execute(schema)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"{path} was written by a newer nexo_actors (schema {version}, this "
                             f"one knows {SCHEMA_VERSION}); upgrade, or move the file aside")
        return conn
    except apsw.ReadOnlyError as exc:
        raise StoreError(f"{path} is read-only for this process; check the owner of its "
                         "directory (see the preflight message) and that it is not mounted :ro") from exc
    except (apsw.CantOpenError, PermissionError) as exc:
        raise StoreError(f"cannot open {path}: {exc}; check that the directory exists and is "
                         "writable by this uid") from exc
    except apsw.CorruptError as exc:
        raise StoreError(f"{path} is corrupt ({exc}); move it aside to start with an empty "
                         "queue (its dead letters and pending events would be lost)") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoreError(f"no space left to open {path}; free disk space") from exc
        raise StoreError(f"cannot open {path}: {exc}") from exc


def query(conn: apsw.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows as tuples of Any: apsw's stubs type every cell as a union of all SQL types."""
    return cast(list[tuple[Any, ...]], conn.execute(sql, args).fetchall())


def scalar(conn: apsw.Connection, sql: str, args: tuple[Any, ...] = ()) -> int:
    return int(query(conn, sql, args)[0][0])


def encode_headers(headers: dict[str, str] | None) -> bytes | None:
    # msgspec: a tenth of json.dumps' cost on the enqueue path; same JSON object.
    return _headers_encoder.encode(headers) if headers else None


_headers_encoder = msgspec.json.Encoder(order="sorted")


def decode_headers(raw: bytes | None) -> dict[str, str]:
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("headers are not a JSON object")
    return {str(k): str(v) for k, v in value.items()}


class PendingRow(NamedTuple):
    """A queued event as FetchPending hands it out (a tuple: made 100 at a time per drain batch)."""

    id: str
    topic: str
    payload: bytes
    headers: bytes | None
    enqueued_at: int
    seq: int
    attempts: int


@dataclass(frozen=True)
class DeadLetterRow:
    id: str
    topic: str
    payload: bytes
    failed_at: int
    reason: str
    attempts: int


@dataclass(frozen=True)
class InboxRow:
    id: str
    agent_id: str
    topic: str
    payload: bytes
    received_at: int
    attempts: int
