"""The metric catalogue (SPEC §7): every Prometheus metric, defined once.

Names are fixed by the spec. Labels carry only bounded, non-secret values:
agent ids, actor names, transports, breaker names and reason *categories*
(never a sender id, an event id, a URL with credentials or a secret).

The runtime runs several processes, so metrics use prometheus_client's
multiprocess mode: the daemon points PROMETHEUS_MULTIPROC_DIR at
`<data>/run/metrics` (wiped at boot) *before* this module is imported.
Counters and histograms are only ever written by the main process, so a
recycled worker leaves no counter file behind; workers write just their own
`liveall` gauges (agents/worker_metrics.py), which `mark_process_dead(pid)`
deletes when they exit.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from nexo_actors import __version__

# --- label values: bounded categories, defined once -----------------------------
TRANSPORT_NATS, TRANSPORT_LOCAL, TRANSPORT_QUEUED = "nats", "local", "queued"
DROP_EMPTY = "empty"                      # neither text nor media
DROP_DUPLICATE = "duplicate"              # an event id already journaled for that agent
DROP_NATS_UNAVAILABLE = "nats_unavailable"  # fallback.mode: drop while NATS is away
DEAD_DESERIALIZATION = "deserialization"  # a poison body on an inbound subject
DEAD_PUBLISH_FAILED = "publish_failed"    # max_attempts failed drains
DEAD_UNDECODABLE = "undecodable"          # a queued row that no longer decodes
DEAD_AGENT_FAILED = "agent_failed"        # its worker died max_redeliveries times on it
TRANSPORTS = (TRANSPORT_NATS, TRANSPORT_LOCAL, TRANSPORT_QUEUED)
DROP_REASONS = (DROP_EMPTY, DROP_DUPLICATE, DROP_NATS_UNAVAILABLE)
DEAD_LETTER_REASONS = (DEAD_DESERIALIZATION, DEAD_PUBLISH_FAILED, DEAD_UNDECODABLE, DEAD_AGENT_FAILED)

# --- messages and events (main process) ---------------------------------------
MESSAGES_PROCESSED = Counter(
    "messages_processed", "Inbound events an agent finished (replied or decided not to).",
    ["agent"])
MESSAGES_DROPPED = Counter(
    "messages_dropped", "Events discarded on purpose, by reason category.", ["reason"])
EVENTS_PUBLISHED = Counter(
    "events_published", "Events published, by how they left: nats, local bus, or queued to disk.",
    ["transport"])
AGENT_TURN_SECONDS = Histogram(
    "agent_turn_seconds", "Time an agent spent on one inbound event.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

# --- disk queue and dead letters (main process: QueueStore) -------------------
DISK_QUEUE_PENDING = Gauge(
    "disk_queue_pending", "Events waiting in pending_events for NATS.", multiprocess_mode="livesum")
DISK_QUEUE_ENQUEUED = Counter("disk_queue_enqueued", "Events written to pending_events.")
DISK_QUEUE_DRAINED = Counter("disk_queue_drained", "Events drained from pending_events to NATS.")
# The spec names both `dead_letters_total` (cumulative) and `dead_letters`
# (current rows). A Counter called "dead_letters" would expose a family of that
# name clashing with the gauge, so the cumulative count is a gauge that only
# ever goes up (rate() works on it just the same).
DEAD_LETTERS_TOTAL = Gauge(
    "dead_letters_total", "Events moved to dead_letters since boot, by reason category.",
    ["reason"], multiprocess_mode="livesum")
DEAD_LETTERS = Gauge(
    "dead_letters", "Rows currently in dead_letters.", multiprocess_mode="livesum")

# --- broker (main process: BrokerBridge) --------------------------------------
CIRCUIT_BREAKER_STATE = Gauge(
    "circuit_breaker_state", "0 closed, 1 open, 2 half-open.", ["breaker"],
    multiprocess_mode="livemax")
NATS_CONNECTED = Gauge("nats_connected", "1 while the NATS link is up.", multiprocess_mode="livemax")

# --- actors and processes -----------------------------------------------------
ACTOR_RESTARTS = Counter("actor_restarts", "Restarts of an actor or child process.", ["actor"])
ACTOR_UP = Gauge("actor_up", "1 while the actor is running.", ["actor"], multiprocess_mode="livemax")
ACTOR_MAILBOX_DEPTH = Gauge(
    "actor_mailbox_depth", "Messages waiting in the actor's mailbox.", ["actor"],
    multiprocess_mode="livemax")
# agent_worker_rss_bytes / agent_worker_cpu_percent: written by each worker
# about itself, see nexo_actors.agents.worker_metrics.
MAIN_RSS = Gauge("nexo_main_rss_bytes", "Resident memory of the runtime's main process.",
                 multiprocess_mode="livesum")
MAIN_CPU = Gauge("nexo_main_cpu_percent", "CPU use of the runtime's main process.",
                 multiprocess_mode="livesum")

# --- config and build ---------------------------------------------------------
CONFIG_RELOAD_REJECTED = Counter(
    "config_reload_rejected", "Reloads refused because the new config was invalid.")
BUILD_INFO = Gauge("nexo_build_info", "Always 1; the version is the label.", ["version"],
                   multiprocess_mode="livemax")


def publish_build_info() -> None:
    BUILD_INFO.labels(version=__version__).set(1)
