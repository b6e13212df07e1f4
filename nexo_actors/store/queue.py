"""QueueStore: the actor that owns broker.db (SPEC §4).

One thread, one apsw connection. Writes arrive as told commands and are
group-committed: they collect while more messages wait in the mailbox and are
committed together (up to `persistence.max_batch`) as soon as the mailbox is
empty, so durability costs one fsync per burst rather than per event. Each
write's `done` callback runs after its transaction commits. Reads are asked
and always see every write told before them.

The depth of pending_events is a counter kept beside the table (counted once
at open, then moved by every insert/delete), and the table is keyed by its
FIFO seq so an insert is an append: enqueue cost does not grow with depth.
Drain outcomes name rows by event id; the store remembers the seq it handed
each id out with (FetchPending) and deletes/updates by seq.
`on_depth(depth)` tells the bridge whenever the depth changes, which is how
backpressure learns about it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

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
from nexo_actors.store.mailbox import Mailbox

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
        # event id -> seq of rows handed out by FetchPending and not yet settled.
        self.fetched: dict[str, int] = {}

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
            if self._take_waiting_writes():
                self._flush()  # nothing more to group with: mailbox empty, batch full, or a read
            elif len(self.batch) >= self.settings.max_batch or self.actor_inbox.empty():
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

    @staticmethod
    def _create_actor_inbox() -> Mailbox:
        # pykka's hook for the inbox; ours makes a tell cheaper (see mailbox.py).
        return Mailbox()

    def _take_waiting_writes(self) -> bool:
        """Move the told writes at the head of the mailbox into the batch.

        Going through pykka's loop costs several microseconds per message,
        more than the insert itself; taking the waiting writes in one go (in
        order, stopping at the first message that is not a told write: a
        read, a stop) halves the cost of an enqueue. Only this actor's thread
        takes from its mailbox, so looking at the head and then popping it is
        safe. Returns False when the mailbox is not ours (the caller then
        goes one message at a time).
        """
        inbox = self.actor_inbox
        if not isinstance(inbox, Mailbox):
            return False
        waiting = inbox.items
        batch = self.batch
        room = self.settings.max_batch - len(batch)
        while room > 0 and waiting:
            envelope = waiting[0]
            message = envelope.message
            if envelope.reply_to is not None or not isinstance(message, WRITES):
                break
            waiting.popleft()
            batch.append(message)
            room -= 1
        return True

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
                start = 0
                while start < len(batch):
                    end = start
                    while end < len(batch) and type(batch[end]) is EnqueuePending:
                        end += 1
                    if end > start:  # a run of enqueues: one prepared statement for all
                        results += self._insert_many(db, cast(list[EnqueuePending], batch[start:end]))
                        start = end
                    else:
                        results.append(self._apply(db, batch[start], dead_categories))
                        start += 1
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
        self._export(dead_categories)
        _call_all(batch, results)
        if self.pending != depth_before and self.on_depth is not None:
            self.on_depth(self.pending)

    def _export(self, dead_categories: list[str]) -> None:
        """After a commit: count the new dead letters and publish the depths."""
        for category in dead_categories:
            metrics.DEAD_LETTERS_TOTAL.labels(reason=category).inc()
        metrics.DISK_QUEUE_PENDING.set(self.pending)
        metrics.DEAD_LETTERS.set(self.dead_letters)

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
                    dead.append(metrics.DEAD_AGENT_FAILED)
                return int(attempts)
            case RecordDeadLetter():
                self._insert_dead(db, cmd.id, cmd.topic, cmd.payload, None, cmd.reason, cmd.attempts)
                dead.append(cmd.category)
                return None
        raise StoreError(f"unknown store command {type(cmd).__name__}")

    def _insert_pending(self, db: apsw.Connection, cmd: EnqueuePending) -> int:
        # seq is the rowid: SQLite appends at max + 1, constant cost at any depth.
        db.execute(
            "INSERT INTO pending_events (id, topic, payload, headers, enqueued_at, attempts)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            (cmd.id, cmd.topic, cmd.payload, encode_headers(cmd.headers), now_ms()))
        self.pending += 1
        self.enqueued_total += 1
        return self.pending

    def _insert_many(self, db: apsw.Connection, cmds: list[EnqueuePending]) -> list[int]:
        """`_insert_pending` for a run of enqueues; each one's result is the depth after it.

        Multi-row INSERTs of up to `_ROWS_PER_INSERT` rows: SQLite runs each in
        one step, so the store gives up the GIL (which apsw releases around
        every step) once per chunk instead of once per row. Under load a
        producer thread holds the GIL for its whole switch interval each time.
        """
        enqueued_at = now_ms()
        for start in range(0, len(cmds), _ROWS_PER_INSERT):
            chunk = cmds[start:start + _ROWS_PER_INSERT]
            params: list[Any] = []
            for c in chunk:
                params += (c.id, c.topic, c.payload, encode_headers(c.headers), enqueued_at)
            db.execute(_insert_rows_sql(len(chunk)), params)
        before = self.pending
        self.pending += len(cmds)
        self.enqueued_total += len(cmds)
        return list(range(before + 1, self.pending + 1))

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
        rows = [PendingRow._make(r) for r in query(
            self._db(), "SELECT id, topic, payload, headers, enqueued_at, seq, attempts"
            " FROM pending_events ORDER BY seq LIMIT ?", (limit,))]
        for row in rows:
            self.fetched[row.id] = row.seq
        return rows

    def _seq_of(self, db: apsw.Connection, id_: str) -> int | None:
        """The seq of a pending row named by event id (normally one handed out by a fetch)."""
        seq = self.fetched.pop(id_, None)
        if seq is not None:
            return seq
        # Not fetched by this store (a caller's own bookkeeping): one scan, off the hot path.
        found = query(db, "SELECT seq FROM pending_events WHERE id = ? ORDER BY seq LIMIT 1", (id_,))
        return int(found[0][0]) if found else None

    def _drain_outcome(self, outcome: DrainOutcome) -> int:
        db = self._db()
        categories: list[str] = []
        counters = (self.pending, self.dead_letters, self.drained_total, self.dead_lettered_total)
        # Settling a drain batch need not wait for an fsync: losing it (power
        # loss, not a process crash: WAL frames are in the OS by then) only
        # publishes the batch again, which at-least-once allows, and the next
        # synchronous=FULL commit or checkpoint makes it durable anyway. It
        # halves the cost of draining a backlog on a disk with slow fsyncs.
        relaxed = self.settings.synchronous == "full"
        if relaxed:
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            with db:
                deleted = self._settle(db, outcome, categories)
        except apsw.Error:
            (self.pending, self.dead_letters, self.drained_total,
             self.dead_lettered_total) = counters
            raise
        finally:
            if relaxed:
                db.execute("PRAGMA synchronous=FULL")
        if deleted:
            metrics.DISK_QUEUE_DRAINED.inc(deleted)
        self._export(categories)
        if self.on_depth is not None:
            self.on_depth(self.pending)
        return self.pending

    def _settle(self, db: apsw.Connection, outcome: DrainOutcome, categories: list[str]) -> int:
        """Apply one drain batch's outcome (inside a transaction); returns the rows delivered."""
        deleted = 0
        delivered = [(seq, id_) for id_ in outcome.delivered
                     if (seq := self._seq_of(db, id_)) is not None]
        if delivered:
            before = db.total_changes()
            # AND id: a seq freed by `dlq replay` and reused must not take another event.
            db.executemany("DELETE FROM pending_events WHERE seq = ? AND id = ?", delivered)
            deleted = db.total_changes() - before
            self.pending -= deleted
            self.drained_total += deleted
        for id_, error in outcome.failed:
            seq = self._seq_of(db, id_)
            if seq is None:
                continue
            db.execute("UPDATE pending_events SET attempts = attempts + 1, last_error = ?"
                       " WHERE seq = ? AND id = ?", (error, seq, id_))
            row = query(db, "SELECT attempts FROM pending_events WHERE seq = ? AND id = ?",
                        (seq, id_))
            if row and row[0][0] >= self.max_attempts:
                self._move_to_dead(db, seq, id_, error)
                categories.append(metrics.DEAD_PUBLISH_FAILED)
        for id_, reason in outcome.undecodable:
            seq = self._seq_of(db, id_)
            if seq is None:
                continue
            self._move_to_dead(db, seq, id_, reason)
            categories.append(metrics.DEAD_UNDECODABLE)
        return deleted

    def _move_to_dead(self, db: apsw.Connection, seq: int, id_: str, reason: str) -> None:
        row = query(db, "SELECT topic, payload, headers, attempts FROM pending_events"
                    " WHERE seq = ? AND id = ?", (seq, id_))
        if not row:
            return
        topic, payload, headers, attempts = row[0]
        self._insert_dead(db, id_, topic, payload, headers, reason, attempts)
        db.execute("DELETE FROM pending_events WHERE seq = ?", (seq,))
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


_ROWS_PER_INSERT = 100  # 500 bound values, well under SQLite's limit of 32766


@functools.cache
def _insert_rows_sql(rows: int) -> str:
    """The INSERT of `rows` pending events (one text per size, so apsw caches the statement)."""
    return ("INSERT INTO pending_events (id, topic, payload, headers, enqueued_at, attempts) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, 0)"] * rows))


def _call_all(batch: list[StoreCommand], results: list[Any]) -> None:
    """Every command's `done(result, None)`, in order (`_call` inlined: this is the hot path)."""
    for cmd, result in zip(batch, results, strict=True):
        done = cmd.done
        if done is None:
            continue
        try:
            done(result, None)
        except Exception:  # a caller's callback must not take the store down
            log.exception("store completion callback failed")


def _call(cmd: StoreCommand, result: Any, error: BaseException | None) -> None:
    if cmd.done is None:
        return
    try:
        cmd.done(result, error)
    except Exception:  # a caller's callback must not take the store down
        log.exception("store completion callback failed")
