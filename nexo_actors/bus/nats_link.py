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

    async def confirm(self) -> None:
        """Wait for a flush covering every publish made before this call."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiting.append(fut)
        if len(self._waiting) >= self.settings.flush_batch:
            self._flush_now()
        elif self._flush_timer is None:
            self._flush_timer = self.loop.call_later(self.settings.flush_interval, self._flush_now)
        await fut

    def _flush_now(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            self.loop.create_task(self._flush(batch))

    async def _flush(self, batch: list[asyncio.Future[None]]) -> None:
        try:
            if not self.connected:
                raise LinkDownError("disconnected from NATS before the flush")
            await self.nc.flush(timeout=self.settings.flush_timeout)  # type: ignore[arg-type]  # float works; stub says int
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
        for fut in batch:
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
