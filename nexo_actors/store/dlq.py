"""`nexo dlq`: read and repair dead letters, beside a running daemon or not.

Each operation is one short transaction on its own connection (WAL readers
never block the daemon; writers wait up to the busy timeout). Replayed rows
go back to pending_events with attempts 0 at the tail of the queue; a running
daemon notices the foreign commit on its next refresh and drains them, a
stopped one drains them at its next boot.
"""

from __future__ import annotations

from pathlib import Path

from nexo_actors.errors import DeadLetterNotFoundError
from nexo_actors.store.db import DeadLetterRow, now_ms, open_db, query


def list_dead_letters(path: Path, limit: int | None = None) -> list[DeadLetterRow]:
    if not path.exists():  # the runtime never started here: nothing has failed yet
        return []
    conn = open_db(path, create=False)
    try:
        sql = ("SELECT id, topic, payload, failed_at, reason, attempts FROM dead_letters"
               " ORDER BY failed_at, id")
        rows = query(conn, sql + " LIMIT ?", (limit,)) if limit else query(conn, sql)
        return [DeadLetterRow(*r) for r in rows]
    finally:
        conn.close()


def replay(path: Path, ids: list[str] | None) -> int:
    """Move the named dead letters (all when `ids` is None) back to pending_events."""
    if not path.exists():
        if ids:
            raise DeadLetterNotFoundError(f"no dead letter with id {', '.join(ids)}: {path} "
                                          "does not exist yet")
        return 0
    conn = open_db(path, create=False)
    try:
        with conn:
            if ids is None:
                selected = [r[0] for r in query(conn, "SELECT id FROM dead_letters ORDER BY failed_at, id")]
            else:
                missing = [i for i in ids
                           if not query(conn, "SELECT 1 FROM dead_letters WHERE id = ?", (i,))]
                if missing:
                    raise DeadLetterNotFoundError(
                        f"no dead letter with id {', '.join(missing)} in {path}; "
                        "see `nexo dlq list` for the ids")
                selected = ids
            # A copy of the event still pending (rare) gives way to the replayed one:
            # one scan for all of them, as pending_events has no index on id.
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS replaying (id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM temp.replaying")
            conn.executemany("INSERT OR IGNORE INTO temp.replaying (id) VALUES (?)",
                             [(i,) for i in selected])
            conn.execute("DELETE FROM pending_events WHERE id IN (SELECT id FROM temp.replaying)")
            for id_ in selected:
                # seq (the rowid) left out: SQLite appends the row at the tail of the queue.
                conn.execute(
                    "INSERT INTO pending_events (id, topic, payload, headers, enqueued_at, attempts)"
                    " SELECT id, topic, payload, headers, ?, 0 FROM dead_letters WHERE id = ?",
                    (now_ms(), id_))
                conn.execute("DELETE FROM dead_letters WHERE id = ?", (id_,))
                # A dead letter of an agent that never finished an event is named
                # "<event id>:<agent id>"; reopen its journal entry so the agent
                # accepts the event again instead of skipping it as done.
                event_id, sep, agent_id = id_.rpartition(":")
                if sep:
                    conn.execute("DELETE FROM inbox WHERE id = ? AND agent_id = ?",
                                 (event_id, agent_id))
        return len(selected)
    finally:
        conn.close()


def purge(path: Path) -> int:
    """Delete every dead letter; returns how many."""
    if not path.exists():
        return 0
    conn = open_db(path, create=False)
    try:
        with conn:
            count = int(query(conn, "SELECT COUNT(*) FROM dead_letters")[0][0])
            conn.execute("DELETE FROM dead_letters")
        return count
    finally:
        conn.close()
