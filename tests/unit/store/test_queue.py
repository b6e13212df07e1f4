"""QueueStore (SPEC §4 storage): group commit, FIFO drain bookkeeping, inbox, refresh.

Real SQLite files; the actor runs on its own thread as in the daemon.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from nexo_actors.config.schema import Persistence
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
    StoreStats,
    StoreStatsRequest,
)
from nexo_actors.store import dlq
from nexo_actors.store.db import PendingRow
from nexo_actors.store.queue import QueueStore

MAX_ATTEMPTS = 3


class Store:
    """A started QueueStore plus what it told the bridge about its depth."""

    def __init__(self, path: Path, **settings: Any) -> None:
        self.path = path
        self.depths: list[int] = []
        self.ref = QueueStore.start(path, Persistence(path=str(path), **settings),
                                    max_pending=100, max_attempts=MAX_ATTEMPTS,
                                    on_depth=self.depths.append)
        self.stats()  # on_start (which opens the file) has run

    def ask(self, message: Any) -> Any:
        return self.ref.ask(message, timeout=30)

    def write(self, make: Callable[[Callable[[Any, BaseException | None], None]], Any]) -> Any:
        """Tell one write and wait for its done callback; returns its result."""
        got: list[tuple[Any, BaseException | None]] = []
        finished = threading.Event()

        def done(result: Any, error: BaseException | None) -> None:
            got.append((result, error))
            finished.set()

        self.ref.tell(make(done))
        assert finished.wait(10), "done callback never ran"
        result, error = got[0]
        assert error is None, error
        return result

    def enqueue(self, id_: str, payload: bytes = b"{}") -> int:
        return int(self.write(lambda done: EnqueuePending(id=id_, topic="out.t", payload=payload,
                                                          done=done)))

    def stats(self) -> StoreStats:
        result: StoreStats = self.ask(StoreStatsRequest())
        return result

    def stop(self) -> None:
        if self.ref.is_alive():
            self.ref.stop()


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., Store]]:
    started: list[Store] = []

    def start(path: Path | None = None, **settings: Any) -> Store:
        store = Store(path or tmp_path / "broker.db", **settings)
        started.append(store)
        return store

    try:
        yield start
    finally:
        for store in reversed(started):
            store.stop()


def reader(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(5000)
    return conn


def test_group_commit_every_write_is_committed_before_its_callback_under_concurrency(
        open_store: Callable[..., Store], tmp_path: Path) -> None:
    store = open_store()
    threads, per_thread = 8, 400
    # Only the store's thread uses this connection (callbacks run there).
    other = reader(tmp_path / "broker.db")
    lock = threading.Lock()
    invisible: list[str] = []
    errors: list[BaseException] = []
    calls: dict[str, int] = {}
    all_done = threading.Event()
    total = threads * per_thread

    def done_for(id_: str) -> Callable[[Any, BaseException | None], None]:
        def done(_result: Any, error: BaseException | None) -> None:
            seen = other.execute("SELECT 1 FROM pending_events WHERE id = ?", (id_,)).fetchall()
            with lock:
                if error is not None:
                    errors.append(error)
                if not seen:
                    invisible.append(id_)
                calls[id_] = calls.get(id_, 0) + 1
                if sum(calls.values()) == total:
                    all_done.set()
        return done

    def producer(t: int) -> None:
        for n in range(per_thread):
            id_ = f"t{t}-{n}"
            store.ref.tell(EnqueuePending(id=id_, topic="out.t", payload=b"{}", done=done_for(id_)))

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert all_done.wait(60), f"{sum(calls.values())} of {total} callbacks ran"
    other.close()

    assert errors == []
    assert invisible == [], "a done callback ran before its row was visible to another connection"
    assert set(calls.values()) == {1}, "each callback runs exactly once"
    assert store.stats().pending == total
    rows: list[PendingRow] = store.ask(FetchPending(limit=total + 1))
    assert len(rows) == total
    for t in range(threads):  # each producer's own order is the queue's order
        mine = [int(r.id.split("-")[1]) for r in rows if r.id.startswith(f"t{t}-")]
        assert mine == list(range(per_thread))
    assert store.depths[-1] == total


def test_fetch_pending_is_fifo_by_enqueue_order_across_drains(open_store: Callable[..., Store]) -> None:
    store = open_store()
    ids = [f"e{n:03d}" for n in range(250)]
    for id_ in reversed(ids[:5]):  # ids sort one way, enqueue order another
        store.enqueue(id_)
    for id_ in ids[5:]:
        store.enqueue(id_)
    expected = list(reversed(ids[:5])) + ids[5:]
    drained: list[str] = []
    while True:
        rows: list[PendingRow] = store.ask(FetchPending(limit=100))
        if not rows:
            break
        assert len(rows) <= 100
        drained += [r.id for r in rows]
        store.ask(DrainOutcome(delivered=[r.id for r in rows]))
        if len(drained) == 100:
            store.enqueue("late")  # enqueued after the first batch left: still at the tail
            expected.append("late")
    assert drained == expected


def test_drain_outcome_deletes_counts_and_dead_letters(open_store: Callable[..., Store],
                                                       tmp_path: Path) -> None:
    store = open_store()
    for id_ in ("ok", "flaky", "broken"):
        store.enqueue(id_, b'{"id": "x"}')
    assert store.ask(DrainOutcome(delivered=["ok"], failed=[("flaky", "publish failed: 1")],
                                  undecodable=[("broken", "undecodable queued event: bad")])) == 1
    conn = reader(tmp_path / "broker.db")
    try:
        assert conn.execute("SELECT id, attempts, last_error FROM pending_events").fetchall() == [
            ("flaky", 1, "publish failed: 1")]
        assert conn.execute("SELECT id, reason, attempts FROM dead_letters").fetchall() == [
            ("broken", "undecodable queued event: bad", 0)], "undecodable: straight to dead letters"

        store.ask(DrainOutcome(delivered=[], failed=[("flaky", "publish failed: 2")]))
        assert conn.execute("SELECT attempts FROM pending_events").fetchall() == [(2,)]
        depth = store.ask(DrainOutcome(delivered=[], failed=[("flaky", "publish failed: 3")]))
        assert depth == 0
        assert conn.execute("SELECT COUNT(*) FROM pending_events").fetchall() == [(0,)]
        assert conn.execute(
            "SELECT reason, attempts, payload FROM dead_letters WHERE id = 'flaky'").fetchall() == [
            ("publish failed: 3", MAX_ATTEMPTS, b'{"id": "x"}')], "the last error is the reason"
    finally:
        conn.close()
    stats = store.stats()
    assert (stats.pending, stats.dead_letters, stats.drained_total) == (0, 2, 1)
    assert store.depths[-1] == 0


def test_reads_see_every_write_told_before_them(open_store: Callable[..., Store]) -> None:
    store = open_store()
    for n in range(50):
        store.ref.tell(EnqueuePending(id=f"e{n}", topic="out.t", payload=b"{}"))
    rows: list[PendingRow] = store.ask(FetchPending(limit=100))
    assert [r.id for r in rows] == [f"e{n}" for n in range(50)]


def test_a_raising_callback_does_not_stop_the_store(open_store: Callable[..., Store]) -> None:
    store = open_store()

    def boom(_result: Any, _error: BaseException | None) -> None:
        raise RuntimeError("caller bug")

    store.ref.tell(EnqueuePending(id="a", topic="out.t", payload=b"{}", done=boom))
    assert store.enqueue("b") == 2


def test_inbox_journal_duplicates_completion_and_reopen_after_restart(
        open_store: Callable[..., Store], tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    store = open_store(path)

    def journal(event_id: str, agents: list[str]) -> list[str]:
        result: list[str] = store.write(lambda done: JournalInbound(
            event_id=event_id, agents=agents, topic="plugin.inbound.cli", payload=b"{}",
            done=done))
        return result

    assert journal("e1", ["kate", "ops"]) == ["kate", "ops"]
    assert journal("e1", ["kate"]) == [], "a known id is a duplicate: no fresh agent"
    assert journal("e2", ["kate"]) == ["kate"]
    reply = EnqueuePending(id="r2", topic="plugin.outbound.cli", payload=b"{}")
    store.write(lambda done: CompleteInbound(event_id="e2", agent_id="kate", enqueue=reply,
                                             done=done))
    store.write(lambda done: CompleteInbound(event_id="e1", agent_id="ops", done=done))
    assert journal("e2", ["kate"]) == [], "a completed id is still a duplicate"
    store.stop()

    store = open_store(path)  # a restart on the same file
    rows = store.ask(OpenInbox())
    assert [(r.id, r.agent_id) for r in rows] == [("e1", "kate")]
    assert [r.id for r in store.ask(OpenInbox(agent_ids=["ops"]))] == []
    assert [r.id for r in store.ask(FetchPending(limit=10))] == ["r2"], (
        "the reply was queued in the transaction that closed its row")


def test_count_redelivery_dead_letters_an_event_that_keeps_killing_its_worker(
        open_store: Callable[..., Store], tmp_path: Path) -> None:
    store = open_store()
    store.write(lambda done: JournalInbound(event_id="e1", agents=["kate"], topic="t",
                                            payload=b"{}", done=done))
    counts = [store.write(lambda done: CountRedelivery(event_id="e1", agent_id="kate",
                                                       max_attempts=3, done=done))
              for _ in range(3)]
    assert counts == [1, 2, 3]
    assert store.ask(OpenInbox()) == []
    [row] = dlq.list_dead_letters(tmp_path / "broker.db")
    assert row.id == "e1:kate" and "kate" in row.reason and row.attempts == 3

    assert dlq.replay(tmp_path / "broker.db", ["e1:kate"]) == 1
    store.ask(Refresh())
    fresh: list[str] = store.write(lambda done: JournalInbound(
        event_id="e1", agents=["kate"], topic="t", payload=b"{}", done=done))
    assert fresh == ["kate"], "a replayed agent dead letter reopens its inbox entry"


def test_refresh_notices_dlq_replay_and_purge_by_another_connection(
        open_store: Callable[..., Store], tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    store = open_store(path)
    store.enqueue("keep")
    for id_ in ("a", "b"):
        store.write(lambda done, i=id_: RecordDeadLetter(id=i, topic="t", payload=b"x",
                                                         reason="poison", category="test",
                                                         done=done))
    assert (store.stats().pending, store.stats().dead_letters) == (1, 2)

    assert dlq.replay(path, ["a"]) == 1  # its own connection, as `nexo dlq replay` does
    assert store.stats().pending == 1, "not noticed before a refresh"
    assert store.ask(Refresh()) == 2
    assert store.depths[-1] == 2, "the bridge hears the new depth"
    assert (store.stats().pending, store.stats().dead_letters) == (2, 1)
    assert [r.id for r in store.ask(FetchPending(limit=10))] == ["keep", "a"]

    assert dlq.purge(path) == 1
    store.ask(Refresh())
    assert store.stats().dead_letters == 0
