"""Draining the disk queue, and the bridge's periodic tick (SPEC §4 step 3).

On reconnect, at boot and on every tick while rows wait: pending_events goes
out FIFO, `drain_batch` rows at a time, one drain at a time (overlapping
drains would publish rows twice). A row is deleted once a flush covering it
returns; a row that fails for its own reason (e.g. over the server's
max_payload) spends one of its `max_attempts`; NATS going away mid-batch
spends nothing. A row that cannot be decoded goes to dead letters at once.
With `type: local` replayed rows go to the local bus.

The tick also exports the breaker state, probes a half-open breaker, and
every `refresh_interval` asks the store to notice rows written by other
processes (`nexo dlq replay`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pykka

from nexo_actors import metrics
from nexo_actors.bus.local import LocalBus
from nexo_actors.bus.nats_link import LinkDownError, NatsLink
from nexo_actors.config.schema import Broker
from nexo_actors.errors import MessageDecodeError
from nexo_actors.messages import (
    DrainOutcome,
    FetchPending,
    Refresh,
    StoreCommand,
    StoreStats,
    StoreStatsRequest,
    decode_event,
)
from nexo_actors.resilience import BreakerState, CircuitBreaker
from nexo_actors.store.db import PendingRow, decode_headers

log = logging.getLogger(__name__)


def export_breaker(name: str, state: BreakerState) -> None:
    metrics.CIRCUIT_BREAKER_STATE.labels(breaker=name).set(int(state))


class Drainer:
    def __init__(self, settings: Broker, *, store: pykka.ActorRef[Any], local: LocalBus,
                 link: NatsLink | None, breaker: CircuitBreaker, loop: asyncio.AbstractEventLoop,
                 depth: Callable[[], int], on_depth: Callable[[int], None]) -> None:
        self.settings = settings
        self.store = store
        self.local = local
        self.link = link
        self.breaker = breaker
        self.loop = loop
        self.depth = depth
        self.on_depth = on_depth
        self.drains = 0
        self.stats = StoreStats(pending=0, dead_letters=0, inbox_open=0, enqueued_total=0,
                                drained_total=0, dead_lettered_total=0,
                                max_pending=settings.limits.max_pending, path="")
        self._draining = False
        self._last_refresh = 0.0

    async def tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bridge tick failed")

    async def tick(self) -> None:
        export_breaker("nats", self.breaker.state)
        now = time.monotonic()
        if now - self._last_refresh >= self.settings.refresh_interval:
            self._last_refresh = now
            # Through on_depth: a queue already full at boot must pause intake too.
            self.on_depth(await self._ask(Refresh()))
            self.stats = await self._ask(StoreStatsRequest())
        if self.link is None:
            if self.depth() > 0:
                self.start()
            return
        metrics.NATS_CONNECTED.set(1 if self.link.connected else 0)
        if not self.link.connected or not self.breaker.allow():
            return
        if self.depth() > 0:
            self.start()
        elif self.breaker.state is BreakerState.HALF_OPEN:
            try:
                await self.link.confirm()
            except Exception as exc:
                self.breaker.record_failure(str(exc))
            else:
                self.breaker.record_success()

    def start(self) -> None:
        """Start a drain unless one is running (loop thread)."""
        if not self._draining:
            self._draining = True
            self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while True:
                if self.link is not None and (not self.link.connected or not self.breaker.allow()):
                    return
                rows: list[PendingRow] = await self._ask(FetchPending(limit=self.settings.drain_batch))
                if not rows:
                    return
                self.drains += 1
                outcome, link_failed = await self._drain_batch(rows)
                self.on_depth(await self._ask(outcome))
                if link_failed:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("drain failed; it is retried on the next tick")
        finally:
            self._draining = False

    async def _drain_batch(self, rows: list[PendingRow]) -> tuple[DrainOutcome, bool]:
        published: list[str] = []
        failed: list[tuple[str, str]] = []
        undecodable: list[tuple[str, str]] = []
        for row in rows:
            try:
                event = decode_event(row.payload)
                headers = decode_headers(row.headers)
            except (MessageDecodeError, ValueError) as exc:
                undecodable.append((row.id, f"undecodable queued event: {exc}"))
                continue
            if self.link is None:
                self.local.publish(row.topic, event)
                published.append(row.id)
                continue
            try:
                await self.link.publish(row.topic, row.payload, headers or None)
            except LinkDownError:
                break  # the rest wait for the next drain; their attempts are not spent
            except Exception as exc:  # this row's own fault (e.g. over the server's max_payload)
                failed.append((row.id, f"publish failed: {exc!r}"))
                continue
            published.append(row.id)
        link_failed = False
        if self.link is not None and published:
            try:
                await self.link.confirm(len(published))
                self.breaker.record_success()
            except Exception as exc:
                # NATS went away mid-batch: nothing is counted against the rows.
                self.breaker.record_failure(str(exc))
                published, link_failed = [], True
        if published:
            transport = metrics.TRANSPORT_NATS if self.link else metrics.TRANSPORT_LOCAL
            metrics.EVENTS_PUBLISHED.labels(transport=transport).inc(len(published))
        return DrainOutcome(delivered=published, failed=failed, undecodable=undecodable), link_failed

    async def _ask(self, command: StoreCommand) -> Any:
        future = self.store.ask(command, block=False)
        timeout = float(self.settings.store_timeout)
        return await self.loop.run_in_executor(None, lambda: future.get(timeout=timeout))
