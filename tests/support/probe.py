"""An external nats-py client for tests: subscribes, publishes, reads streams.

It runs on an asyncio loop of its own (a background thread), reconnects
forever and fast, and records every message it receives, headers included.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from nexo_actors.messages import ORIGIN_HEADER

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    subject: str
    id: str
    headers: dict[str, str]
    data: bytes

    @property
    def queued(self) -> bool:
        """A copy drained from a disk queue (it names the runtime that queued it)."""
        return ORIGIN_HEADER in self.headers


def event_id(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        return ""
    return str(doc.get("id", "")) if isinstance(doc, dict) else ""


class Probe:
    """An external nats-py client on its own loop thread (reconnects forever, fast)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="probe", daemon=True)
        self.thread.start()
        self.nc: Client = Client()
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.reconnects = 0
        try:
            self.run(self._connect())
        except BaseException:
            self.close()
            raise

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self) -> None:
        async def reconnected() -> None:
            self.reconnects += 1

        self.nc = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.05,
                                     connect_timeout=2, reconnected_cb=reconnected,
                                     name="test-probe")

    def subscribe(self, subject: str, queue: str = "") -> None:
        async def on_msg(msg: Msg) -> None:
            item = Received(msg.subject, event_id(msg.data), dict(msg.headers or {}), msg.data)
            with self.lock:
                self.received.append(item)

        async def sub() -> None:
            await self.nc.subscribe(subject, queue=queue, cb=on_msg)
            await self.nc.flush()

        self.run(sub())

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def ids(self) -> set[str]:
        return {m.id for m in self.messages()}

    def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        async def pub() -> None:
            await self.nc.publish(subject, data, headers=headers)
            await self.nc.flush()

        self.run(pub())

    def add_stream(self, name: str, subjects: list[str]) -> None:
        """A file-backed JetStream stream: the server's own record of what it received."""
        self.run(self.nc.jetstream().add_stream(StreamConfig(
            name=name, subjects=subjects, storage=StorageType.FILE)))

    def stream_messages(self, name: str) -> list[Received]:
        """Every message of the stream, in the order the server stored them."""
        return self.run(self._read_stream(name), timeout=60)

    async def _read_stream(self, name: str) -> list[Received]:
        js = self.nc.jetstream()
        info = await js.stream_info(name)
        total = info.state.messages
        subjects = info.config.subjects or [">"]
        sub = await js.pull_subscribe(subjects[0], stream=name, config=ConsumerConfig(
            ack_policy=AckPolicy.NONE))
        out: list[Received] = []
        try:
            while len(out) < total:
                batch = await sub.fetch(min(1000, total - len(out)), timeout=5)
                out += [Received(m.subject, event_id(m.data), dict(m.headers or {}), m.data)
                        for m in batch]
        finally:
            await sub.unsubscribe()
        return out

    def stream_count(self, name: str) -> int:
        async def count() -> int:
            return int((await self.nc.jetstream().stream_info(name)).state.messages)

        return self.run(count())

    def close(self) -> None:
        async def shut() -> None:
            if not self.nc.is_closed:
                await self.nc.close()

        try:
            self.run(shut(), timeout=5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
