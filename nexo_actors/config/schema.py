"""The configuration schema: one msgspec Struct per YAML mapping.

Every Struct refuses unknown fields (a typo fails the boot with its path).
Every timeout, retry count and limit the runtime uses is a field here with
its default; code never carries its own literal for them. Durations are
seconds (float), sizes are bytes (int), converted once at load.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from nexo_actors.config.units import Duration, Size


class Schema(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base for every config Struct."""


# --- agents.yaml --------------------------------------------------------------


class ModelRef(Schema, frozen=True):
    provider: str
    model: str


class InboundBinding(Schema, frozen=True):
    """`plugin.inbound.<plugin>.<instance>`: a channel plugin instance bound to this agent."""

    plugin: str
    instance: str


class Heartbeat(Schema, frozen=True):
    enabled: bool = False
    interval: Duration = Duration(300.0)


class AgentOptions(Schema, frozen=True):
    debounce_ms: int = 0
    # Events handed to the agent's worker and not yet answered; more wait,
    # journaled, in the parent (never dropped).
    queue_cap: int = 64
    # How long a `delegate` call waits for the other agent's answer.
    delegate_timeout: Duration = Duration(30.0)


class Agent(Schema, frozen=True):
    id: str
    model: ModelRef
    description: str = ""
    channels: list[str] = []
    inbound_bindings: list[InboundBinding] = []
    allowed_delegates: list[str] = []
    system_prompt: str = ""
    heartbeat: Heartbeat = Heartbeat()
    config: AgentOptions = AgentOptions()


class AgentsFile(Schema, frozen=True):
    agents: list[Agent] = []


# --- broker.yaml --------------------------------------------------------------


class BrokerAuth(Schema, frozen=True):
    """Credentials come from files (Docker/Kubernetes secrets), never inline."""

    enabled: bool = False
    token_file: str = ""
    user: str = ""
    password_file: str = ""
    nkey_file: str = ""
    creds_file: str = ""


class BrokerTls(Schema, frozen=True):
    enabled: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


class Persistence(Schema, frozen=True):
    enabled: bool = True
    # A directory (existing, or written with a trailing /) means DIR/broker.db.
    path: str = "./data/queue/broker.db"
    busy_timeout: Duration = Duration(5.0)
    # Group commit: writes waiting together share one transaction, up to this many.
    max_batch: int = 1000
    # FULL: a commit survives power loss; NORMAL (WAL): survives a crash of
    # the process, may lose the last commits on power loss, costs fewer fsyncs.
    synchronous: Literal["full", "normal"] = "full"
    # Finished inbox rows are kept this long to recognise a redelivered
    # duplicate of an event already answered.
    inbox_retention: Duration = Duration(86400.0)
    prune_interval: Duration = Duration(60.0)


class Limits(Schema, frozen=True):
    max_payload: Size = Size(4 << 20)
    max_pending: int = 10000


class Fallback(Schema, frozen=True):
    mode: Literal["local_queue", "drop"] = "local_queue"
    drain_on_reconnect: bool = True


class BreakerSettings(Schema, frozen=True):
    failure_threshold: int = 5
    success_threshold: int = 2
    backoff: Duration = Duration(10.0)
    max_backoff: Duration = Duration(120.0)


class Broker(Schema, frozen=True):
    type: Literal["local", "nats"] = "local"
    url: str = "nats://localhost:4222"
    connect_timeout: Duration = Duration(2.0)
    reconnect_wait: Duration = Duration(0.5)
    # Publishes count as delivered only after a flush (PING/PONG) covering
    # them returns; flushes are batched by time and count.
    flush_interval: Duration = Duration(0.002)
    flush_batch: int = 512
    flush_timeout: Duration = Duration(2.0)
    drain_batch: int = 100
    max_attempts: int = 3
    # How often the bridge checks the link, retries the drain and notices
    # queue rows written by `nexo dlq replay`.
    tick_interval: Duration = Duration(0.5)
    refresh_interval: Duration = Duration(2.0)
    # Longest wait for the queue store to answer a read.
    store_timeout: Duration = Duration(10.0)
    # Slow-down for producers above half of max_pending, at most this much.
    max_slowdown: Duration = Duration(0.5)
    auth: BrokerAuth = BrokerAuth()
    tls: BrokerTls = BrokerTls()
    persistence: Persistence = Persistence()
    limits: Limits = Limits()
    fallback: Fallback = Fallback()
    breaker: BreakerSettings = BreakerSettings()


class BrokerFile(Schema, frozen=True):
    broker: Broker


# --- llm.yaml -----------------------------------------------------------------

ApiFlavor = Literal["echo", "openai_compat", "anthropic_messages"]
IMPLEMENTED_FLAVORS: frozenset[str] = frozenset({"echo"})


class RateLimit(Schema, frozen=True):
    requests_per_second: float = 0.0


class Provider(Schema, frozen=True):
    """One LLM provider. `api_flavor` defaults from the provider's name."""

    api_flavor: ApiFlavor | None = None
    prefix: str = "echo: "
    api_key: str = ""
    group_id: str = ""
    base_url: str = ""
    # OAuth client of providers that sign in instead of using an API key.
    client_id: str = ""
    client_secret: str = ""
    rate_limit: RateLimit = RateLimit()

    def flavor(self, name: str) -> str:
        if self.api_flavor is not None:
            return self.api_flavor
        if name == "echo":
            return "echo"
        if name in ("anthropic", "minimax"):
            return "anthropic_messages"
        return "openai_compat"


class Retry(Schema, frozen=True):
    max_attempts: int = 5
    initial_backoff_ms: int = 1000
    max_backoff_ms: int = 60000
    backoff_multiplier: float = 2.0


class LlmFile(Schema, frozen=True):
    providers: dict[str, Provider]
    retry: Retry = Retry()


# --- memory.yaml --------------------------------------------------------------


class ShortTerm(Schema, frozen=True):
    max_history_turns: int = 50
    session_ttl: Duration = Duration(86400.0)
    max_sessions: int = 10000
    sweep_interval: Duration = Duration(60.0)


class LongTerm(Schema, frozen=True):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "./data/memory.db"


class MemoryFile(Schema, frozen=True):
    short_term: ShortTerm = ShortTerm()
    long_term: LongTerm = LongTerm()


# --- extensions.yaml ----------------------------------------------------------


class ExtensionsSettings(Schema, frozen=True):
    enabled: bool = True
    search_paths: list[str] = msgspec.field(default_factory=lambda: ["./extensions"])
    ignore_dirs: list[str] = msgspec.field(
        default_factory=lambda: ["node_modules", ".git", "__pycache__", ".venv", "target"]
    )
    disabled: list[str] = []
    allowlist: list[str] = []
    max_depth: int = 3
    follow_links: bool = False


class ExtensionsFile(Schema, frozen=True):
    extensions: ExtensionsSettings = ExtensionsSettings()


# --- runtime.yaml -------------------------------------------------------------


class RestartPolicy(Schema, frozen=True):
    max_restarts: int = 5
    window: Duration = Duration(60.0)
    backoff: Duration = Duration(0.2)
    max_backoff: Duration = Duration(30.0)


class AgentProcesses(Schema, frozen=True):
    processes: int | Literal["auto"] = "auto"
    max_rss_mb: int = 512
    restart: RestartPolicy = RestartPolicy()
    # A new worker must say Ready within this long or it counts as a failed start.
    ready_timeout: Duration = Duration(20.0)
    # The parent pings every worker this often; no Pong for heartbeat_timeout = hung.
    heartbeat_interval: Duration = Duration(0.5)
    heartbeat_timeout: Duration = Duration(3.0)
    # How often actor states, RSS and CPU are sampled into the metrics.
    sample_interval: Duration = Duration(2.0)
    # An event whose worker died this many times while holding it goes to
    # dead letters instead of crashing the next worker too.
    max_redeliveries: int = 3


class ShutdownSettings(Schema, frozen=True):
    grace: Duration = Duration(5.0)


class SidecarSettings(Schema, frozen=True):
    enabled: bool = True
    health_bind: str = "0.0.0.0:8080"
    metrics_bind: str = "0.0.0.0:9090"
    workers: int = 2
    # The sidecar gives the runtime this long to answer before /ready says
    # `runtime unresponsive`.
    control_timeout: Duration = Duration(2.0)
    start_timeout: Duration = Duration(15.0)
    # Request threads per gunicorn worker: a /ready waiting on a wedged
    # runtime must not hold up /health or /metrics behind it.
    threads: int = 4
    # /health is 200 only if the runtime answers a ping within this.
    health_timeout: Duration = Duration(1.0)
    # gunicorn's graceful stop of its workers (whole seconds, rounded up);
    # kept short so the sidecar is gone well inside shutdown.grace.
    graceful_timeout: Duration = Duration(1.0)
    # How often the gunicorn master checks that the runtime (its parent) is
    # still alive; it stops itself when it is not, so no port stays bound.
    parent_check_interval: Duration = Duration(0.5)


class ReloadSettings(Schema, frozen=True):
    enabled: bool = True


class PreflightSettings(Schema, frozen=True):
    min_free_disk: Size = Size(64 << 20)
    # With the browser enabled, a smaller /dev/shm gets a warning and Chromium
    # gets --disable-dev-shm-usage.
    min_shm: Size = Size(512 << 20)


class LockSettings(Schema, frozen=True):
    takeover: bool = True
    takeover_wait: Duration = Duration(5.0)
    poll_interval: Duration = Duration(0.1)


class RuntimeFile(Schema, frozen=True):
    data_dir: str = "./data"
    agents: AgentProcesses = AgentProcesses()
    shutdown: ShutdownSettings = ShutdownSettings()
    sidecar: SidecarSettings = SidecarSettings()
    reload: ReloadSettings = ReloadSettings()
    preflight: PreflightSettings = PreflightSettings()
    lock: LockSettings = LockSettings()


# --- plugins/browser.yaml -----------------------------------------------------


class BrowserSettings(Schema, frozen=True):
    enabled: bool = False
    headless: bool = True
    executable: str = ""
    cdp_url: str = ""
    user_data_dir: str = "./data/browser/profile"
    window_width: int = 1280
    window_height: int = 800
    connect_timeout_ms: int = 10000
    command_timeout_ms: int = 15000
    args: list[str] = []
    pool_size: int | Literal["auto"] = "auto"


class BrowserFile(Schema, frozen=True):
    browser: BrowserSettings = BrowserSettings()
