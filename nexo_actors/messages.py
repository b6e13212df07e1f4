"""Every message that crosses an actor, a pipe, a socket or the bus.

Three families, each a tagged union decoded at its boundary and dispatched
with `match`:

* `Event` - the envelope of SPEC §3; JSON on NATS, msgpack inside.
* `Frame` - parent <-> agent worker over a duplex pipe (msgpack).
* `ControlRequest` / `ControlReply` - the CLI and sidecar <-> the daemon's
  control socket (msgpack, length-prefixed).

Structs are frozen and keyword-only. Schemas evolve only by appending fields
with defaults, so an older peer still decodes a newer message.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from nexo_actors.config.schema import Agent, Provider, ShortTerm
from nexo_actors.config.units import dec_hook, enc_hook
from nexo_actors.errors import MessageDecodeError

# NATS headers on a queued copy of an event that this runtime already
# delivered to its own subscribers: when the disk queue drains it to NATS,
# the runtime named in ORIGIN_HEADER skips it (no duplicate), everyone else
# receives it (no loss).
ORIGIN_HEADER = "Nexo-Origin"
LOCAL_HEADER = "Nexo-Local-Delivered"


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every message struct."""


# --- the event envelope -------------------------------------------------------


class Event(Message, frozen=True, kw_only=True):
    id: str
    ts: float
    topic: str
    source: str
    payload: dict[str, Any]
    session_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None

    @property
    def text(self) -> str | None:
        value = self.payload.get("text")
        return value if isinstance(value, str) else None


def new_event(
    topic: str,
    payload: dict[str, Any],
    source: str,
    *,
    session_id: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
) -> Event:
    return Event(
        id=str(uuid.uuid4()),
        ts=time.time(),
        topic=topic,
        source=source,
        payload=payload,
        session_id=session_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
    )


class InboundPayload(msgspec.Struct, kw_only=True):
    """What an inbound event's payload must look like (extra keys are kept, not checked)."""

    text: str | None = None
    sender: str = "anonymous"
    chat: str | None = None
    media: list[Any] | None = None


_event_json_encoder = msgspec.json.Encoder()
_event_json_decoder = msgspec.json.Decoder(Event)
_inbound_payload_decoder = msgspec.json.Decoder(InboundPayload)


def encode_event(event: Event) -> bytes:
    """JSON bytes for NATS and the disk queue."""
    return _event_json_encoder.encode(event)


def decode_event(data: bytes) -> Event:
    """Strict decode of an envelope; raises MessageDecodeError naming the problem."""
    try:
        return _event_json_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"not a valid event envelope: {exc}") from exc


def parse_inbound(subject: str, data: bytes, max_payload: int, reply: str | None = None) -> Event:
    """Bytes received on an inbound subject -> an Event, or MessageDecodeError.

    A valid envelope is taken as is (its topic is the subject it arrived on).
    A JSON object with `text` that is not an envelope is wrapped into one. The
    NATS reply subject, when there is one, becomes `reply_to` so request/reply
    clients get the answer.
    """
    if len(data) > max_payload:
        raise MessageDecodeError(
            f"deserialization error: body is {len(data)} bytes, over max_payload {max_payload}"
        )
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"deserialization error: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MessageDecodeError(
            f"deserialization error: expected a JSON object, got {type(raw).__name__}"
        )
    if "id" in raw and "payload" in raw:
        try:
            event = msgspec.convert(raw, Event)
        except msgspec.ValidationError as exc:
            raise MessageDecodeError(f"deserialization error: invalid envelope: {exc}") from exc
        _validate_payload(event.payload)
        return msgspec.structs.replace(
            event, topic=subject, reply_to=event.reply_to or reply or None
        )
    if "text" not in raw and "media" not in raw:
        raise MessageDecodeError(
            "deserialization error: neither an event envelope nor an object with 'text'"
        )
    _validate_payload(raw)
    return Event(
        id=str(uuid.uuid4()),
        ts=time.time(),
        topic=subject,
        source="external",
        payload=raw,
        reply_to=reply or None,
    )


def _validate_payload(payload: dict[str, Any]) -> None:
    try:
        msgspec.convert(payload, InboundPayload)
    except msgspec.ValidationError as exc:
        raise MessageDecodeError(f"deserialization error: invalid payload: {exc}") from exc


def is_empty(event: Event) -> bool:
    """An inbound event with neither text nor media never reaches an agent."""
    text = event.payload.get("text")
    media = event.payload.get("media")
    return not (isinstance(text, str) and text.strip()) and not media


# --- parent <-> worker frames -------------------------------------------------


class Frame(Message, frozen=True, kw_only=True, tag_field="type"):
    """Base of the pipe frames; `type` carries the class tag."""


class Configure(Frame, frozen=True, kw_only=True, tag="configure"):
    """Parent -> worker: the agents it runs and their providers (first frame; reload)."""

    worker_id: int
    instance_id: str
    agents: list[Agent]
    providers: dict[str, Provider]
    short_term: ShortTerm


class Ready(Frame, frozen=True, kw_only=True, tag="ready"):
    """Worker -> parent: configured and accepting Deliver frames."""

    worker_id: int
    pid: int
    agents: list[str]


class Deliver(Frame, frozen=True, kw_only=True, tag="deliver"):
    """Parent -> worker: one inbound event for one agent."""

    agent_id: str
    event: Event
    redelivered: bool = False


class Reply(Frame, frozen=True, kw_only=True, tag="reply"):
    """Worker -> parent: the agent finished an event (with a reply or deciding not to)."""

    agent_id: str
    event_id: str
    reply: Event | None
    topic: str | None
    outcome: str = "replied"
    turn_seconds: float = 0.0


class Ack(Frame, frozen=True, kw_only=True, tag="ack"):
    """Parent -> worker: the reply to event_id is published or durably queued."""

    agent_id: str
    event_id: str


class Publish(Frame, frozen=True, kw_only=True, tag="publish"):
    """Worker -> parent: an event the agent emits outside a reply (heartbeats)."""

    agent_id: str
    topic: str
    event: Event


class ToolCall(Frame, frozen=True, kw_only=True, tag="tool_call"):
    """Worker -> parent: run a tool whose owner lives in the main process."""

    call_id: str
    agent_id: str
    tool: str
    args: dict[str, Any]
    timeout: float


class ToolResult(Frame, frozen=True, kw_only=True, tag="tool_result"):
    """Parent -> worker: the answer to a ToolCall."""

    call_id: str
    ok: bool
    result: str = ""
    error: str = ""


class Ping(Frame, frozen=True, kw_only=True, tag="ping"):
    seq: int


class Pong(Frame, frozen=True, kw_only=True, tag="pong"):
    seq: int
    rss_bytes: int = 0
    cpu_percent: float = 0.0


class AgentReport(Message, frozen=True, kw_only=True):
    agent_id: str
    in_flight: int
    sessions: int
    completed: int


class StateReport(Frame, frozen=True, kw_only=True, tag="state_report"):
    """Worker -> parent, answering a Ping every few seconds: per-agent detail."""

    agents: list[AgentReport]


class Stop(Frame, frozen=True, kw_only=True, tag="stop"):
    """Parent -> worker: finish what is cheap to finish within `grace`, then exit."""

    grace: float


FrameUnion = (
    Configure | Ready | Deliver | Reply | Ack | Publish | ToolCall | ToolResult | Ping | Pong
    | StateReport | Stop
)

_frame_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_frame_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(FrameUnion, dec_hook=dec_hook)


def encode_frame(frame: Frame) -> bytes:
    return _frame_encoder.encode(frame)


def decode_frame(data: bytes) -> FrameUnion:
    try:
        frame: FrameUnion = _frame_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"invalid worker frame ({len(data)} bytes): {exc}") from exc
    return frame


# --- control socket -----------------------------------------------------------


class ControlRequest(Message, frozen=True, kw_only=True, tag_field="type"):
    """Base of what the CLI and the sidecar ask the daemon."""


class PingRequest(ControlRequest, frozen=True, kw_only=True, tag="ping"):
    pass


class ActorsRequest(ControlRequest, frozen=True, kw_only=True, tag="actors"):
    pass


class StatusRequest(ControlRequest, frozen=True, kw_only=True, tag="status"):
    pass


class ReadyRequest(ControlRequest, frozen=True, kw_only=True, tag="ready"):
    pass


class SendRequest(ControlRequest, frozen=True, kw_only=True, tag="send"):
    channel: str
    text: str
    sender: str = "cli"
    wait: float = 10.0


class ReloadRequest(ControlRequest, frozen=True, kw_only=True, tag="reload"):
    pass


class StopRequest(ControlRequest, frozen=True, kw_only=True, tag="stop"):
    pass


RequestUnion = (
    PingRequest | ActorsRequest | StatusRequest | ReadyRequest | SendRequest | ReloadRequest
    | StopRequest
)


class ActorState(Message, frozen=True, kw_only=True):
    """One actor's state record (SPEC §1): what `nexo actors` prints."""

    name: str
    kind: str
    pid: int
    status: str  # starting|running|degraded|restarting|failed|stopping|stopped
    mailbox_depth: int = 0
    restarts: int = 0
    last_error: str = ""
    uptime_s: float = 0.0
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    details: dict[str, str | int | float | bool | None] = {}


class Reason(Message, frozen=True, kw_only=True):
    subsystem: str
    detail: str


class ControlReply(Message, frozen=True, kw_only=True, tag_field="type"):
    """Base of the daemon's answers."""


class Pong_(ControlReply, frozen=True, kw_only=True, tag="pong"):
    pid: int
    version: str


class ActorsReply(ControlReply, frozen=True, kw_only=True, tag="actors"):
    actors: list[ActorState]


class ReadyReply(ControlReply, frozen=True, kw_only=True, tag="ready"):
    ready: bool
    agents_running: int
    agents_total: int
    broker: str
    reasons: list[Reason] = []
    degraded: list[Reason] = []


class StatusReply(ControlReply, frozen=True, kw_only=True, tag="status"):
    pid: int
    version: str
    uptime_s: float
    config_dir: str
    data_dir: str
    broker: dict[str, str | int | float | bool | None]
    queue: dict[str, int]
    sizing: dict[str, str | int | float]
    workers: list[ActorState]
    agents: dict[str, str]
    ready: ReadyReply


class SendReply(ControlReply, frozen=True, kw_only=True, tag="send"):
    event_id: str
    reply: Event | None


class OkReply(ControlReply, frozen=True, kw_only=True, tag="ok"):
    detail: str = ""


class ErrorReply(ControlReply, frozen=True, kw_only=True, tag="error"):
    message: str


ReplyUnion = Pong_ | ActorsReply | ReadyReply | StatusReply | SendReply | OkReply | ErrorReply

_control_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_request_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(RequestUnion)
_reply_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(ReplyUnion)


def encode_control(message: ControlRequest | ControlReply) -> bytes:
    return _control_encoder.encode(message)


def decode_request(data: bytes) -> RequestUnion:
    try:
        request: RequestUnion = _request_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"invalid control request: {exc}") from exc
    return request


def decode_reply(data: bytes) -> ReplyUnion:
    try:
        reply: ReplyUnion = _reply_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"invalid control reply: {exc}") from exc
    return reply


# --- QueueStore commands (in-process only, never encoded) ---------------------
# Writes are told and group-committed; `done(result, error)` runs on the
# store's thread after the transaction, so callers never block the store and
# the store never blocks on them. Reads are asked and answered directly.

StoreDone = Callable[[Any, BaseException | None], None]


class StoreCommand(Message, frozen=True, kw_only=True):
    done: StoreDone | None = None


class EnqueuePending(StoreCommand, frozen=True, kw_only=True):
    """Make an event durable in pending_events (NATS away or failing)."""

    id: str
    topic: str
    payload: bytes
    headers: dict[str, str] | None = None


class JournalInbound(StoreCommand, frozen=True, kw_only=True):
    """Record an accepted inbound event for each agent before dispatch.

    Result: the agent ids for which the row is new (a known id is a duplicate).
    """

    event_id: str
    agents: list[str]
    topic: str
    payload: bytes


class CompleteInbound(StoreCommand, frozen=True, kw_only=True):
    """Mark an inbox row done; with `enqueue`, in the same transaction as queuing the reply."""

    event_id: str
    agent_id: str
    enqueue: EnqueuePending | None = None


class CountRedelivery(StoreCommand, frozen=True, kw_only=True):
    """An open inbox row is dispatched again; result: its new attempt count.

    At `max_attempts` the row is closed and its event moved to dead letters,
    so an event that kills its worker every time cannot crash-loop forever.
    """

    event_id: str
    agent_id: str
    max_attempts: int


class RecordDeadLetter(StoreCommand, frozen=True, kw_only=True):
    """An event that can never be delivered (poison body, too large)."""

    id: str
    topic: str
    payload: bytes
    reason: str
    category: str
    attempts: int = 0


class FetchPending(StoreCommand, frozen=True, kw_only=True):
    """Read: the oldest `limit` pending rows, FIFO by enqueue order."""

    limit: int


class DrainOutcome(StoreCommand, frozen=True, kw_only=True):
    """Result of one drain batch: delete delivered, count failures, dead-letter poison."""

    delivered: list[str]
    failed: list[tuple[str, str]] = []
    undecodable: list[tuple[str, str]] = []


class OpenInbox(StoreCommand, frozen=True, kw_only=True):
    """Read: unfinished inbox rows (for boot and for a dead worker's agents)."""

    agent_ids: list[str] | None = None
    limit: int = 100000


class Refresh(StoreCommand, frozen=True, kw_only=True):
    """Read: notice writes by other processes (`nexo dlq replay`), prune old done rows."""


class StoreStatsRequest(StoreCommand, frozen=True, kw_only=True):
    """Read: depths and counters for state records and /ready."""


class StoreStats(Message, frozen=True, kw_only=True):
    pending: int
    dead_letters: int
    inbox_open: int
    enqueued_total: int
    drained_total: int
    dead_lettered_total: int
    max_pending: int
    path: str


# --- AgentHost commands (in-process only) -------------------------------------


class HostCommand(Message, frozen=True, kw_only=True):
    """Base of what an AgentHost actor is told."""


class HostDeliver(HostCommand, frozen=True, kw_only=True):
    agent_id: str
    event: Event
    redelivered: bool = False


class HostFrames(HostCommand, frozen=True, kw_only=True):
    """Frames read from the worker's pipe in one go by the reader thread of `generation`.

    The reader hands over everything already waiting in the pipe at once:
    under load one actor wake-up serves many replies.
    """

    frames: list[Any]
    generation: int


class HostExited(HostCommand, frozen=True, kw_only=True):
    generation: int
    exitcode: int | None


class HostSpawn(HostCommand, frozen=True, kw_only=True):
    generation: int


class HostTick(HostCommand, frozen=True, kw_only=True):
    pass


class HostPublished(HostCommand, frozen=True, kw_only=True):
    """The reply to (event_id, agent_id) is published or queued (error: it is not)."""

    agent_id: str
    event_id: str
    error: str | None = None


class HostRouteReply(HostCommand, frozen=True, kw_only=True):
    """An answer to a delegation this host sent (matched by correlation_id)."""

    event: Event


class HostToolTimeout(HostCommand, frozen=True, kw_only=True):
    route_id: str


class HostGiveUp(HostCommand, frozen=True, kw_only=True):
    """An event redelivered too often went to dead letters: forget it."""

    agent_id: str
    event_id: str


class HostReconfigure(HostCommand, frozen=True, kw_only=True):
    agents: list[Agent]
    providers: dict[str, Provider]
    short_term: ShortTerm


class HostStop(HostCommand, frozen=True, kw_only=True):
    grace: float


class HostKill(HostCommand, frozen=True, kw_only=True):
    pass


class HostStateRequest(HostCommand, frozen=True, kw_only=True):
    pass


# --- Supervisor commands (in-process only) ------------------------------------


class SupervisorCommand(Message, frozen=True, kw_only=True):
    """Base of what the Supervisor actor is told or asked."""


class Boot(SupervisorCommand, frozen=True, kw_only=True):
    pass


class Shutdown(SupervisorCommand, frozen=True, kw_only=True):
    deadline: float  # time.monotonic() by which everything must be down


class Reload(SupervisorCommand, frozen=True, kw_only=True):
    source: str = "nexo reload"


class Sample(SupervisorCommand, frozen=True, kw_only=True):
    pass
