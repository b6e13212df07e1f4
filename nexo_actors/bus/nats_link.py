"""The NATS link: one nats-py client on the bridge's asyncio loop thread.

Only the bridge uses it. What it promises:

* reconnect forever (`max_reconnect_attempts=-1`) with a jittered wait, and
  the initial connection keeps trying too, so a runtime can boot before NATS;
* credentials come from files (token, user + password, nkey seed, creds) and
  are read at connect time, never logged;
* a publish counts as delivered only once a flush (PING/PONG) that covers it
  has returned. nats-py otherwise accepts publishes into a memory buffer
  while disconnected and only fails when that is full, and a crash loses the
  buffer (SPEC §4, "A trap to avoid"). Flushes are shared: every publish
  waiting within `flush_interval` (or up to `flush_batch` of them) rides on
  one PING;
* while not connected, `publish` fails at once (LinkDownError) instead of
  buffering, so the caller's fallback (the disk queue) takes the event.

Two nats-py (2.16) behaviours the confirmation works around:

* `Client.flush(timeout)` cancels its PONG future on timeout but leaves it in
  the client's PONG queue. When the server answers later (a stalled server
  resumed), the client's read loop dies on `InvalidStateError`: no more
  messages are read, and every later `flush()` returns at once *without* a
  PING, "confirming" publishes nothing has acknowledged. So each round trip
  runs in a task of its own with a long timeout (`PONG_GRACE`, beyond
  nats-py's own stale-connection detection) and the caller stops waiting
  after `flush_timeout` without cancelling it; a round whose connection went
  away is failed at once on disconnect. A read loop found dead anyway forces
  a reconnect instead of being trusted.
* `flush()` writes its PING straight to the socket, ahead of commands still
  waiting in the client's buffer for its flusher task (the socket is backed
  up). A PONG would then cover publishes still in this process's memory, so
  a round first waits for the flusher to hand the buffer to the socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from nexo_actors.config.schema import Broker
from nexo_actors.errors import BusError

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long a PING may wait for its PONG on a connection that is still open
# (see the module doc). Longer than nats-py's stale-connection detection
# (ping_interval 120 s x max_outstanding_pings 2), which replaces the
# connection and so ends the wait first.
PONG_GRACE = 600.0
MsgHandler = Callable[[Msg], Awaitable[None]]


class LinkDownError(BusError):
    """NATS is not connected; the caller should fall back."""


class NatsLink:
    def __init__(
        self,
        settings: Broker,
        *,
        name: str,
        loop: asyncio.AbstractEventLoop,
        on_connected: Callable[[], Awaitable[None]],
        on_disconnected: Callable[[str], Awaitable[None]],
        on_connect_failed: Callable[[str], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.name = name
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.on_connect_failed = on_connect_failed
        self.loop = loop
        self.nc = Client()
        self.last_error = ""
        self._waiting: list[asyncio.Future[None]] = []
        self._waiting_count = 0  # publishes covered by the waits in _waiting
        # Round trips (PING sent, PONG awaited) and the tasks running them.
        self._rounds: set[asyncio.Future[None]] = set()
        self._round_tasks: set[asyncio.Task[None]] = set()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._closing = False

    # --- thread plumbing ----------------------------------------------------

    def start(self) -> None:
        """Begin connecting (in the background: boot never waits for NATS)."""
        self.call(self._start_connect)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the loop thread (thread-safe, returns at once)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def run(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule a coroutine on the loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    # --- connection ---------------------------------------------------------

    def _start_connect(self) -> None:
        self._connect_task = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "servers": [s.url],
            "name": self.name,
            "connect_timeout": s.connect_timeout,
            "reconnect_time_wait": s.reconnect_wait,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
            # Publishing while disconnected must fail, not buffer: see module doc.
            "pending_size": 2 * 1024 * 1024,
            "error_cb": self._error_cb,
            "disconnected_cb": self._disconnected_cb,
            "reconnected_cb": self._reconnected_cb,
            "reconnect_to_server_handler": self._pick_server,
        }
        options.update(self._auth_options())
        tls = self._tls_context()
        if tls is not None:
            options["tls"] = tls
        try:
            await self.nc.connect(**options)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reconnects forever, so only a config problem ends up here
            self.last_error = _describe(exc, s.url)
            log.error("cannot connect to NATS", extra={"url": safe_url(s.url), "error": self.last_error})
            return
        log.info("connected to NATS", extra={"url": safe_url(s.url)})
        await self.on_connected()

    def _pick_server(self, servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        # nats-py's own reconnect waits a fixed time; many replicas restarting
        # together would hammer the server in lockstep, so add jitter.
        return servers[0], self.settings.reconnect_wait * random.uniform(0.5, 1.5)

    def _auth_options(self) -> dict[str, Any]:
        auth = self.settings.auth
        if not auth.enabled:
            return {}
        out: dict[str, Any] = {}
        if auth.token_file:
            out["token"] = Path(auth.token_file).read_text().strip()
        if auth.user:
            out["user"] = auth.user
        if auth.password_file:
            out["password"] = Path(auth.password_file).read_text().strip()
        if auth.nkey_file:
            out["nkeys_seed"] = auth.nkey_file
        if auth.creds_file:
            out["user_credentials"] = auth.creds_file
        return out

    def _tls_context(self) -> ssl.SSLContext | None:
        tls = self.settings.tls
        if not tls.enabled and not self.settings.url.startswith("tls://"):
            return None
        ctx = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
        return ctx

    async def _error_cb(self, exc: Exception) -> None:
        self.last_error = _describe(exc, self.settings.url)
        log.debug("NATS error", extra={"error": self.last_error})
        if not self.connected:
            await self.on_connect_failed(self.last_error)

    async def _disconnected_cb(self) -> None:
        if self._closing:
            return
        log.warning("disconnected from NATS; events go to the disk queue until it is back",
                    extra={"url": safe_url(self.settings.url)})
        self._fail_waiting(LinkDownError("disconnected from NATS before the flush returned"))
        self._fail_rounds(LinkDownError("disconnected from NATS before the PONG came back"))
        await self.on_disconnected(self.last_error or "disconnected")

    async def _reconnected_cb(self) -> None:
        log.info("reconnected to NATS", extra={"url": safe_url(self.settings.url)})
        await self.on_connected()

    # --- publishing ---------------------------------------------------------

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Write one message; it is *not* confirmed until `confirm()` returns."""
        if not self.connected:
            raise LinkDownError(f"not connected to {safe_url(self.settings.url)}")
        await self.nc.publish(subject, data, headers=headers or None)

    def writer(self) -> Callable[..., Awaitable[None]]:
        """`publish` without its per-message connection check, for one burst of writes.

        Take it right after checking `connected`, use it for the messages at
        hand and drop it: if the link fails meanwhile nats-py buffers the rest,
        and the flush that `confirm()` waits for fails, so nothing is counted
        as delivered that was not.
        """
        return self.nc.publish

    async def confirm(self, count: int = 1) -> None:
        """Wait for a flush covering every publish made before this call.

        `count` is how many publishes this wait covers: a flush goes out at
        once when `flush_batch` of them are waiting, else after `flush_interval`.
        """
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiting.append(fut)
        self._waiting_count += count
        if self._waiting_count >= self.settings.flush_batch:
            self._flush_now()
        elif self._flush_timer is None:
            self._flush_timer = self.loop.call_later(self.settings.flush_interval, self._flush_now)
        await fut

    def _flush_now(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._waiting = self._waiting, []
        self._waiting_count = 0
        if batch:
            self.loop.create_task(self._flush(batch))

    async def _flush(self, batch: list[asyncio.Future[None]]) -> None:
        try:
            if not self.connected:
                raise LinkDownError("disconnected from NATS before the flush")
            # shield: giving up must not cancel the round (see the module doc).
            await asyncio.wait_for(asyncio.shield(self._round_trip()), self.settings.flush_timeout)
        except Exception as exc:
            error = exc if isinstance(exc, BusError) else LinkDownError(
                f"flush to NATS failed: {_describe(exc, self.settings.url)}")
            for fut in batch:
                if not fut.done():
                    fut.set_exception(error)
            return
        for fut in batch:
            if not fut.done():
                fut.set_result(None)

    def _fail_waiting(self, error: BaseException) -> None:
        batch, self._waiting = self._waiting, []
        self._waiting_count = 0
        for fut in batch:
            if not fut.done():
                fut.set_exception(error)

    def _round_trip(self) -> asyncio.Future[None]:
        """A future resolved when a PONG covering every earlier publish comes back."""
        result: asyncio.Future[None] = self.loop.create_future()
        result.add_done_callback(_retrieve)
        self._rounds.add(result)
        task = self.loop.create_task(self._ping(result))
        self._round_tasks.add(task)
        task.add_done_callback(self._round_tasks.discard)
        return result

    async def _ping(self, result: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(self._write_barrier(), PONG_GRACE)
            reader: asyncio.Task[None] | None = getattr(self.nc, "_reading_task", None)
            if reader is not None and reader.done() and self.connected:
                # nats-py's flush() would return without a PING: nothing could be confirmed.
                await self._force_reconnect("the NATS client stopped reading its connection")
                raise LinkDownError("NATS connection is being replaced; its read loop had stopped")
            await self.nc.flush(timeout=PONG_GRACE)  # type: ignore[arg-type]  # float works; stub says int
        except Exception as exc:
            if not result.done():
                result.set_exception(exc)
        else:
            if not result.done():
                result.set_result(None)
        finally:
            self._rounds.discard(result)

    async def _write_barrier(self) -> None:
        """Return once nats-py's flusher has written everything buffered before this call."""
        queue: asyncio.Queue[asyncio.Future[None]] | None = getattr(self.nc, "_flush_queue", None)
        if queue is None or not self.connected:
            return
        written: asyncio.Future[None] = self.loop.create_future()
        await queue.put(written)  # the flusher writes the whole buffer, then resolves it
        await written

    async def _force_reconnect(self, why: str) -> None:
        log.warning("replacing the NATS connection", extra={"reason": why})
        process_op_err = getattr(self.nc, "_process_op_err", None)
        if process_op_err is not None:
            await process_op_err(nats.errors.StaleConnectionError())

    def _fail_rounds(self, error: BaseException) -> None:
        rounds, self._rounds = self._rounds, set()
        for fut in rounds:
            if not fut.done():
                fut.set_exception(error)

    # --- subscribing --------------------------------------------------------

    async def subscribe(self, subject: str, queue: str, handler: MsgHandler) -> Subscription:
        return await self.nc.subscribe(subject, queue=queue, cb=handler)

    # --- shutdown -----------------------------------------------------------

    def stop(self, timeout: float) -> None:
        """Flush what is buffered and close the connection (the loop is the bridge's)."""
        self._closing = True
        try:
            self.run(self._close()).result(timeout)
        except Exception as exc:
            log.warning("NATS connection did not close cleanly", extra={"error": repr(exc)})

    async def _close(self) -> None:
        self._flush_now()
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        if not self.nc.is_closed:
            try:
                await self.nc.close()
            except Exception as exc:  # closing a dead connection can raise; it is closed anyway
                log.debug("error while closing NATS", extra={"error": repr(exc)})
        self._fail_waiting(LinkDownError("NATS link closed"))
        self._fail_rounds(LinkDownError("NATS link closed"))
        for task in list(self._round_tasks):
            task.cancel()


def _retrieve(fut: asyncio.Future[None]) -> None:
    # Nobody may be waiting any more (the caller gave up after flush_timeout):
    # mark the outcome as seen so asyncio does not log it as lost.
    if not fut.cancelled():
        fut.exception()


def safe_url(url: str) -> str:
    """The URL without credentials (user:pass@ never reaches a log line)."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _describe(exc: BaseException, url: str) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in text:
        return f"{safe_url(url)}: connection refused"
    if isinstance(exc, nats.errors.NoServersError):
        return f"{safe_url(url)}: no servers available"
    if isinstance(exc, asyncio.TimeoutError | nats.errors.TimeoutError):
        return f"{safe_url(url)}: timed out"
    return f"{safe_url(url)}: {text}"
