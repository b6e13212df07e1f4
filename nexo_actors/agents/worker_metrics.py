"""The only metrics an agent worker process writes: gauges about itself.

Kept apart from `nexo_actors.metrics` on purpose: importing that catalogue
creates the main process's unlabelled counters, and in multiprocess mode a
worker doing so would leave a counter file behind every time it is recycled.
These gauges are `liveall` (a pid label per process), so
`mark_process_dead(pid)` removes a dead worker's file and its samples vanish.
"""

from __future__ import annotations

from prometheus_client import Gauge

AGENT_WORKER_RSS = Gauge(
    "agent_worker_rss_bytes", "Resident memory of an agent worker process.", ["worker"],
    multiprocess_mode="liveall")
AGENT_WORKER_CPU = Gauge(
    "agent_worker_cpu_percent", "CPU use of an agent worker process.", ["worker"],
    multiprocess_mode="liveall")
