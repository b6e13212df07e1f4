"""Talk to a running test runtime through its real control socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nexo_actors.config.paths import control_socket
from nexo_actors.control.client import request
from nexo_actors.messages import (
    ActorsReply,
    ActorsRequest,
    ActorState,
    ReadyReply,
    ReadyRequest,
    SendReply,
    SendRequest,
    StatusReply,
    StatusRequest,
)
from tests.support.runtime import nexo


class Control:
    def __init__(self, conf_dir: Path) -> None:
        self.conf_dir = conf_dir
        self.socket = control_socket(conf_dir)

    def send(self, text: str, channel: str = "cli", wait: float = 10.0, sender: str = "tester") -> SendReply:
        reply: SendReply = request(self.socket, SendRequest(channel=channel, text=text, sender=sender,
                                                            wait=wait), timeout=wait + 10)
        return reply

    def actors(self) -> list[ActorState]:
        reply: ActorsReply = request(self.socket, ActorsRequest())
        return reply.actors

    def actor(self, name: str) -> ActorState:
        return next(a for a in self.actors() if a.name == name)

    def status(self) -> StatusReply:
        reply: StatusReply = request(self.socket, StatusRequest())
        return reply

    def ready(self) -> ReadyReply:
        reply: ReadyReply = request(self.socket, ReadyRequest())
        return reply

    def actors_json(self) -> list[dict[str, Any]]:
        """`nexo actors --json` through the real CLI."""
        done = nexo("--config", str(self.conf_dir), "actors", "--json")
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        actors: list[dict[str, Any]] = doc["actors"]
        return actors
