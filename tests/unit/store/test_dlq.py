"""store.dlq: what `nexo dlq list|replay|purge` do to broker.db."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from nexo_actors.errors import DeadLetterNotFoundError
from nexo_actors.store import dlq
from nexo_actors.store.db import open_db


def seeded(path: Path) -> Path:
    conn = open_db(path)
    with conn:
        conn.execute("INSERT INTO pending_events (id, topic, payload, enqueued_at, seq, attempts)"
                     " VALUES ('p1', 'out.t', x'7b7d', 1, 7, 2)")
        for n, id_ in enumerate(["d1", "d2", "d3"]):
            conn.execute("INSERT INTO dead_letters (id, topic, payload, headers, failed_at, reason,"
                         " attempts) VALUES (?, 'out.t', x'7b7d', ?, ?, 'publish failed: x', 3)",
                         (id_, b'{"Nexo-Origin": "i1"}' if id_ == "d1" else None, 1000 + n))
    conn.close()
    return path


def table(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = apsw.Connection(str(path))
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def test_replay_moves_a_dead_letter_to_the_tail_with_attempts_zero(tmp_path: Path) -> None:
    db = seeded(tmp_path / "broker.db")
    assert dlq.replay(db, ["d1"]) == 1
    assert table(db, "SELECT id, attempts, last_error, headers FROM pending_events ORDER BY seq") == [
        ("p1", 2, None, None), ("d1", 0, None, b'{"Nexo-Origin": "i1"}')]
    assert [r.id for r in dlq.list_dead_letters(db)] == ["d2", "d3"]


def test_replay_of_an_unknown_id_fails_and_changes_nothing(tmp_path: Path) -> None:
    db = seeded(tmp_path / "broker.db")
    with pytest.raises(DeadLetterNotFoundError, match="nope"):
        dlq.replay(db, ["d2", "nope"])
    assert [r.id for r in dlq.list_dead_letters(db)] == ["d1", "d2", "d3"]
    assert table(db, "SELECT COUNT(*) FROM pending_events") == [(1,)]


def test_replay_all_list_limit_and_purge(tmp_path: Path) -> None:
    db = seeded(tmp_path / "broker.db")
    assert [r.id for r in dlq.list_dead_letters(db, limit=2)] == ["d1", "d2"]
    assert dlq.replay(db, None) == 3
    assert table(db, "SELECT id FROM pending_events ORDER BY seq") == [
        ("p1",), ("d1",), ("d2",), ("d3",)]
    assert dlq.purge(db) == 0
    seeded(tmp_path / "other.db")
    assert dlq.purge(tmp_path / "other.db") == 3
    assert dlq.list_dead_letters(tmp_path / "other.db") == []


def test_a_missing_database_has_no_dead_letters(tmp_path: Path) -> None:
    db = tmp_path / "never" / "broker.db"
    assert dlq.list_dead_letters(db) == []
    assert dlq.purge(db) == 0
    assert dlq.replay(db, None) == 0
    with pytest.raises(DeadLetterNotFoundError):
        dlq.replay(db, ["x"])
    assert not db.exists()
