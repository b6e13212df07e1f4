"""QueueStore: the actor that owns broker.db (SPEC §4).

One thread, one apsw connection. Writes arrive as told commands and are
group-committed: they collect while more messages wait in the mailbox and are
committed together (up to `persistence.max_batch`) as soon as the mailbox is
empty, so durability costs one fsync per burst rather than per event. Each
write's `done` callback runs after its transaction commits. Reads are asked
and always see every write told before them.

The depth of pending_events is a counter kept beside the table (counted once
at open, then moved by every insert/delete), so enqueue cost does not grow
with depth. `on_depth(depth)` tells the bridge whenever it changes, which is
how backpressure learns about it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pykka

from nexo_actors import metrics
from nexo_actors.config.schema import Persistence
from nexo_actors.errors import StoreError
from nexo_actors.messages import (
    CompleteInbound,
    CountRedelivery,
    DrainOutcome,
    EnqueuePending,
    FetchPending,
    JournalInbound,
    OpenInbox,
    RecordDeadLetter,
    Refresh,
    StoreCommand,
    StoreStats,
    StoreStatsRequest,
)
from nexo_actors.store.db import (
    InboxRow,
    PendingRow,
    encode_headers,
    now_ms,
    open_db,
    query,
    scalar,
)

log = logging.getLogger(__name__)

WRITES = (EnqueuePending, JournalInbound, CompleteInbound, CountRedelivery, RecordDeadLetter)


class QueueStore(pykka.ThreadingActor):
    """The only writer of broker.db while the daemon runs."""

    def __init__(self, path: Path, settings: Persistence, *, max_pending: int,
                 max_attempts: int, on_depth: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.path = path
        self.settings = settings
        self.max_pending = max_pending
        self.max_attempts = max_attempts
        self.on_depth = on_depth
        self.conn: apsw.Connection | None = None
        self.batch: list[StoreCommand] = []
        self.pending = 0
        self.dead_letters = 0
        self.enqueued_total = 0
        self.drained_total = 0
        self.dead_lettered_total = 0
        self.data_version = 0
        self.last_prune = 0.0

    # --- lifecycle ----------------------------------------------------------

    def on_start(self) -> None:
        self.conn = open_db(self.path, self.settings.busy_timeout, self.settings.synchronous.upper())
        self._recount()
        self.data_version = self._data_version()
        log.info("queue store open", extra={"db": str(self.path), "pending": self.pending,
                                            "dead_letters": self.dead_letters})

    def on_stop(self) -> None:
        self._flush()
        if self.conn is not None:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except apsw.Error as exc:  # a reader may hold the WAL; the next open recovers it
                log.warning("WAL checkpoint skipped", extra={"error": str(exc)})
            self.conn.close()
            self.conn = None
        log.info("queue store closed", extra={"pending": self.pending})

    def _db(self) -> apsw.Connection:
        if self.conn is None:
            raise StoreError(f"{self.path} is not open")
        return self.conn

    def _data_version(self) -> int:
        # The pragma (unlike Connection.data_version) changes only when *another*
        # connection commits, which is exactly what Refresh must notice.
        return scalar(self._db(), "PRAGMA data_version")

    def _recount(self) -> None:
        db = self._db()
        self.pending = scalar(db, "SELECT COUNT(*) FROM pending_events")
        self.dead_letters = scalar(db, "SELECT COUNT(*) FROM dead_letters")
        metrics.DISK_QUEUE_PENDING.set(self.pending)
        metrics.DEAD_LETTERS.set(self.dead_letters)

    # --- dispatch -----------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, WRITES):
            self.batch.append(message)
            if len(self.batch) >= self.settings.max_batch or self.actor_inbox.empty():
                self._flush()
            return None
        # A read sees every write told before it.
        self._flush()
        match message:
            case FetchPending(limit=limit):
                return self._fetch_pending(limit)
            case DrainOutcome():
                return self._drain_outcome(message)
            case OpenInbox(agent_ids=agent_ids, limit=limit):
                return self._open_inbox(agent_ids, limit)
            case Refresh():
                return self._refresh()
            case StoreStatsRequest():
                return self.stats()
        return super().on_receive(message)

    def stats(self) -> StoreStats:
        open_rows = scalar(self._db(), "SELECT COUNT(*) FROM inbox WHERE state = 'open'")
        return StoreStats(pending=self.pending, dead_letters=self.dead_letters,
                          inbox_open=int(open_rows), enqueued_total=self.enqueued_total,
                          drained_total=self.drained_total,
                          dead_lettered_total=self.dead_lettered_total,
                          max_pending=self.max_pending, path=str(self.path))

    # --- group commit -------------------------------------------------------

    def _flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        db = self._db()
        depth_before = self.pending
        counters = (self.pending, self.dead_letters, self.enqueued_total, self.dead_lettered_total)
        results: list[Any] = []
        dead_categories: list[str] = []
        try:
            with db:
                for cmd in batch:
                    results.append(self._apply(db, cmd, dead_categories))
        except apsw.Error as exc:
            (self.pending, self.dead_letters, self.enqueued_total,
             self.dead_lettered_total) = counters
            error = StoreError(f"writing {self.path} failed: {exc}; check free disk space and "
                               "the data directory's permissions")
            log.error("queue store write failed; %d writes refused", len(batch),
                      extra={"error": str(exc)})
            for cmd in batch:
                _call(cmd, None, error)
            return
        enqueued = self.enqueued_total - counters[2]
        if enqueued:
            metrics.DISK_QUEUE_ENQUEUED.inc(enqueued)
        for category in dead_categories:
            metrics.DEAD_LETTERS_TOTAL.labels(reason=category).inc()
        metrics.DISK_QUEUE_PENDING.set(self.pending)
        metrics.DEAD_LETTERS.set(self.dead_letters)
        for cmd, result in zip(batch, results, strict=True):
            _call(cmd, result, None)
        if self.pending != depth_before and self.on_depth is not None:
            self.on_depth(self.pending)

    def _apply(self, db: apsw.Connection, cmd: StoreCommand, dead: list[str]) -> Any:
        match cmd:
            case EnqueuePending():
                return self._insert_pending(db, cmd)
            case JournalInbound(event_id=event_id, agents=agents, topic=topic, payload=payload):
                fresh = []
                received = now_ms()
                for agent_id in agents:
                    db.execute(
                        "INSERT INTO inbox (id, agent_id, topic, payload, received_at, state, attempts)"
                        " VALUES (?, ?, ?, ?, ?, 'open', 0) ON CONFLICT DO NOTHING",
                        (event_id, agent_id, topic, payload, received))
                    if db.changes():
                        fresh.append(agent_id)
                return fresh
            case CompleteInbound(event_id=event_id, agent_id=agent_id, enqueue=enqueue):
                if enqueue is not None:
                    self._insert_pending(db, enqueue)
                db.execute("UPDATE inbox SET state = 'done', done_at = ? WHERE id = ? AND agent_id = ?",
                           (now_ms(), event_id, agent_id))
                return None
            case CountRedelivery(event_id=event_id, agent_id=agent_id, max_attempts=limit):
                db.execute("UPDATE inbox SET attempts = attempts + 1 WHERE id = ? AND agent_id = ?"
                           " AND state = 'open'", (event_id, agent_id))
                row = query(db, "SELECT attempts, topic, payload FROM inbox WHERE id = ? AND"
                            " agent_id = ?", (event_id, agent_id))
                if not row:
                    return 0
                attempts, topic, payload = row[0]
                if attempts >= limit:
                    db.execute("UPDATE inbox SET state = 'done', done_at = ? WHERE id = ? AND"
                               " agent_id = ?", (now_ms(), event_id, agent_id))
                    self._insert_dead(db, f"{event_id}:{agent_id}", topic, payload, None,
                                      f"agent {agent_id} did not finish it in {attempts} attempts"
                                      " (its worker died each time)", attempts)
                    dead.append("agent_failed")
                return int(attempts)
            case RecordDeadLetter():
                self._insert_dead(db, cmd.id, cmd.topic, cmd.payload, None, cmd.reason, cmd.attempts)
                dead.append(cmd.category)
                return None
        raise StoreError(f"unknown store command {type(cmd).__name__}")

    def _insert_pending(self, db: apsw.Connection, cmd: EnqueuePending) -> int:
        # MAX(seq) is one step down the UNIQUE index: constant cost at any depth.
        db.execute(
            "INSERT INTO pending_events (id, topic, payload, headers, enqueued_at, seq, attempts)"
            " VALUES (?, ?, ?, ?, ?, (SELECT IFNULL(MAX(seq), 0) + 1 FROM pending_events), 0)"
            " ON CONFLICT DO NOTHING",
            (cmd.id, cmd.topic, cmd.payload, encode_headers(cmd.headers), now_ms()))
        if db.changes():
            self.pending += 1
            self.enqueued_total += 1
        return self.pending

    def _insert_dead(self, db: apsw.Connection, id_: str, topic: str, payload: bytes,
                     headers: bytes | None, reason: str, attempts: int) -> None:
        known = query(db, "SELECT 1 FROM dead_letters WHERE id = ?", (id_,))
        db.execute(
            "INSERT INTO dead_letters (id, topic, payload, headers, failed_at, reason, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
            " failed_at = excluded.failed_at, reason = excluded.reason, attempts = excluded.attempts",
            (id_, topic, payload, headers, now_ms(), reason, attempts))
        if not known:
            self.dead_letters += 1
            self.dead_lettered_total += 1

    # --- reads and drain bookkeeping ---------------------------------------

    def _fetch_pending(self, limit: int) -> list[PendingRow]:
        rows = query(self._db(),
                     "SELECT id, topic, payload, headers, enqueued_at, seq, attempts"
                     " FROM pending_events ORDER BY seq LIMIT ?", (limit,))
        return [PendingRow(*r) for r in rows]

    def _drain_outcome(self, outcome: DrainOutcome) -> int:
        db = self._db()
        categories: list[str] = []
        with db:
            for id_ in outcome.delivered:
                db.execute("DELETE FROM pending_events WHERE id = ?", (id_,))
                if db.changes():
                    self.pending -= 1
                    self.drained_total += 1
            for id_, error in outcome.failed:
                db.execute("UPDATE pending_events SET attempts = attempts + 1, last_error = ?"
                           " WHERE id = ?", (error, id_))
                row = query(db, "SELECT attempts FROM pending_events WHERE id = ?", (id_,))
                if row and row[0][0] >= self.max_attempts:
                    self._move_to_dead(db, id_, error)
                    categories.append("publish_failed")
            for id_, reason in outcome.undecodable:
                self._move_to_dead(db, id_, reason)
                categories.append("undecodable")
        if outcome.delivered:
            metrics.DISK_QUEUE_DRAINED.inc(len(outcome.delivered))
        for category in categories:
            metrics.DEAD_LETTERS_TOTAL.labels(reason=category).inc()
        metrics.DISK_QUEUE_PENDING.set(self.pending)
        metrics.DEAD_LETTERS.set(self.dead_letters)
        if self.on_depth is not None:
            self.on_depth(self.pending)
        return self.pending

    def _move_to_dead(self, db: apsw.Connection, id_: str, reason: str) -> None:
        row = query(db, "SELECT topic, payload, headers, attempts FROM pending_events WHERE id = ?",
                    (id_,))
        if not row:
            return
        topic, payload, headers, attempts = row[0]
        self._insert_dead(db, id_, topic, payload, headers, reason, attempts)
        db.execute("DELETE FROM pending_events WHERE id = ?", (id_,))
        self.pending -= 1
        log.warning("event moved to dead letters", extra={"event_id": id_, "topic": topic,
                                                          "reason": reason, "attempts": attempts})

    def _open_inbox(self, agent_ids: list[str] | None, limit: int) -> list[InboxRow]:
        sql = ("SELECT id, agent_id, topic, payload, received_at, attempts FROM inbox"
               " WHERE state = 'open'")
        args: tuple[Any, ...] = ()
        if agent_ids is not None:
            sql += f" AND agent_id IN ({','.join('?' * len(agent_ids))})"
            args = tuple(agent_ids)
        sql += " ORDER BY received_at LIMIT ?"
        rows = query(self._db(), sql, (*args, limit))
        return [InboxRow(*r) for r in rows]

    def _refresh(self) -> int:
        db = self._db()
        version = self._data_version()
        if version != self.data_version:
            # Another process (nexo dlq replay/purge) committed: our counters are stale.
            self.data_version = version
            self._recount()
            if self.on_depth is not None:
                self.on_depth(self.pending)
        if time.monotonic() - self.last_prune >= self.settings.prune_interval:
            self.last_prune = time.monotonic()
            cutoff = now_ms() - int(self.settings.inbox_retention * 1000)
            with db:
                db.execute("DELETE FROM inbox WHERE state = 'done' AND done_at < ?", (cutoff,))
        return self.pending


def _call(cmd: StoreCommand, result: Any, error: BaseException | None) -> None:
    if cmd.done is None:
        return
    try:
        cmd.done(result, error)
    except Exception:  # a caller's callback must not take the store down
        log.exception("store completion callback failed")
