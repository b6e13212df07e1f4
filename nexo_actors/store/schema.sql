-- broker.db: the disk queue (events NATS has not confirmed), dead letters and
-- the inbox journal. Only the QueueStore actor writes it while the daemon
-- runs; `nexo dlq replay|purge` write small transactions beside it (WAL).
-- user_version counts schema changes; db.py migrates older files.

-- Keyed by seq (the rowid): an insert appends at the right edge of the one
-- B-tree, so enqueue cost does not grow with depth. The event id is
-- deliberately not indexed: ids are random (uuid4), and an index on them
-- makes every insert touch a random page, costing ~3x more at 100k rows than
-- at 0. The store finds rows by the seq it read them with.
CREATE TABLE IF NOT EXISTS pending_events (
    seq         INTEGER PRIMARY KEY,       -- FIFO order of the drain
    id          TEXT NOT NULL,             -- the event id
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    headers     BLOB,                      -- JSON object of NATS headers, or NULL
    enqueued_at INTEGER NOT NULL,          -- unix ms
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
);

CREATE TABLE IF NOT EXISTS dead_letters (
    id        TEXT PRIMARY KEY,
    topic     TEXT NOT NULL,
    payload   BLOB NOT NULL,
    headers   BLOB,
    failed_at INTEGER NOT NULL,            -- unix ms
    reason    TEXT NOT NULL,
    attempts  INTEGER NOT NULL
);

-- One row per (event, agent): the same inbound event can reach two agents.
CREATE TABLE IF NOT EXISTS inbox (
    id          TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,             -- the event envelope, JSON
    received_at INTEGER NOT NULL,          -- unix ms
    state       TEXT NOT NULL,             -- open | done
    attempts    INTEGER NOT NULL DEFAULT 0,-- dispatches so far
    done_at     INTEGER,
    PRIMARY KEY (id, agent_id)
);

CREATE INDEX IF NOT EXISTS inbox_open ON inbox (received_at) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS inbox_done ON inbox (done_at) WHERE state = 'done';
