-- broker.db: the disk queue (events NATS has not confirmed), dead letters and
-- the inbox journal. Only the QueueStore actor writes it while the daemon
-- runs; `nexo dlq replay|purge` write small transactions beside it (WAL).
-- Schema changes only add tables/columns (user_version counts them).

CREATE TABLE IF NOT EXISTS pending_events (
    id          TEXT PRIMARY KEY,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    headers     BLOB,                      -- JSON object of NATS headers, or NULL
    enqueued_at INTEGER NOT NULL,          -- unix ms
    seq         INTEGER NOT NULL UNIQUE,   -- FIFO order of the drain
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
