"""RuntimeView: what the Supervisor has built, readable from any thread.

The Supervisor is its only writer. The control handler reads it to answer
`/ready`, `nexo actors` and `nexo status` without going through the
Supervisor's mailbox, so those keep answering while it boots or shuts down.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from nexo_actors.config.load import Config
from nexo_actors.supervision import ChildRegistry

if TYPE_CHECKING:
    from nexo_actors.agents.sizing import Sizing
    from nexo_actors.bus.bridge import Bridge


class Phase(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class RuntimeView:
    config: Config
    config_dir: Path
    instance_id: str
    children: ChildRegistry
    phase: Phase = Phase.STARTING
    started: float = field(default_factory=time.monotonic)
    supervisor: pykka.ActorRef[Any] | None = None
    store: pykka.ActorRef[Any] | None = None
    bridge: pykka.ActorRef[Any] | None = None
    bridge_core: Bridge | None = None
    hosts: list[pykka.ActorRef[Any]] = field(default_factory=list)
    host_of: dict[str, pykka.ActorRef[Any]] = field(default_factory=dict)
    control: pykka.ActorRef[Any] | None = None
    sidecar: Any = None
    sizing: Sizing | None = None
    attached: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def ask(ref: pykka.ActorRef[Any], message: Any, timeout: float) -> Any:
    """A blocking ask with a timeout (pykka.Timeout when it passes)."""
    return ref.ask(message, block=True, timeout=timeout)


def inbox_depth(ref: pykka.ActorRef[Any] | None) -> int:
    """Messages waiting in an actor's mailbox (pykka's queue.Queue, or the store's Mailbox)."""
    if ref is None or not ref.is_alive():
        return 0
    inbox: Any = ref.actor_inbox
    return int(inbox.qsize())
