"""The agent worker process: main loop of a child started by an AgentHost.

Frames arrive on the duplex pipe; a reader thread decodes them onto the
asyncio loop, where the agents run and every frame back to the parent is
written (one writer, so frames never interleave). The worker lives in its
own process group, so a Ctrl-C in a terminal or a signal sent to the whole
group by dumb-init reaches only the parent, which runs the ordered shutdown.
It exits when the parent says Stop, or when the pipe closes (parent gone).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection

import psutil

from nexo_actors.agents.runtime import AgentRuntime, ToolCalls
from nexo_actors.agents.worker_metrics import AGENT_WORKER_CPU, AGENT_WORKER_RSS
from nexo_actors.errors import MessageDecodeError
from nexo_actors.logs import setup_logging
from nexo_actors.messages import (
    Ack,
    Configure,
    Deliver,
    Frame,
    FrameUnion,
    Ping,
    Pong,
    Ready,
    StateReport,
    Stop,
    ToolResult,
    decode_frame,
    encode_frame,
)

log = logging.getLogger(__name__)

# Test hook (SPEC-sanctioned for the crash-loop test): a worker hosting this
# agent id exits right after it is configured, before saying Ready.
CRASH_AGENT_ENV = "NEXO_TEST_CRASH_AGENT"
CRASH_EXIT_CODE = 3
# Test hook (for the sidecar's boot-window test): seconds a worker waits after
# it is configured before saying Ready, so `/ready` is observably 503 `starting`.
READY_DELAY_ENV = "NEXO_TEST_READY_DELAY"
# Every Nth ping is answered with a StateReport too.
REPORT_EVERY = 4
# Frames handed to the loop per wake-up at most.
READ_BATCH = 256


def worker_main(conn: Connection, worker_id: int) -> None:
    """Entry point of the spawned child process."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging()
    try:
        asyncio.run(Worker(conn, worker_id).run())
    except (EOFError, OSError):
        pass  # the parent went away; nothing left to answer
    finally:
        conn.close()


class Worker:
    def __init__(self, conn: Connection, worker_id: int) -> None:
        self.conn = conn
        self.worker_id = worker_id
        self.agents: dict[str, AgentRuntime] = {}
        self.tools = ToolCalls(self.send)
        self.done = asyncio.Event()
        self.stopping = False
        self.process = psutil.Process()
        self.process.cpu_percent(None)

    def send(self, frame: Frame) -> None:
        self.conn.send_bytes(encode_frame(frame))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        first = await loop.run_in_executor(None, self.conn.recv_bytes)
        configure = decode_frame(first)
        if not isinstance(configure, Configure):
            raise MessageDecodeError(f"expected a configure frame first, got {type(configure).__name__}")
        if os.environ.get(CRASH_AGENT_ENV) in {a.id for a in configure.agents}:
            log.error("exiting at start on purpose (test hook %s)", CRASH_AGENT_ENV)
            os._exit(CRASH_EXIT_CODE)
        self.configure(configure)
        delay = float(os.environ.get(READY_DELAY_ENV) or 0)
        if delay > 0:
            log.warning("delaying the ready handshake by %gs (test hook %s)", delay, READY_DELAY_ENV)
            await asyncio.sleep(delay)
        self.send(Ready(worker_id=self.worker_id, pid=os.getpid(), agents=sorted(self.agents)))
        threading.Thread(target=self._read, args=(loop,), name="pipe-reader", daemon=True).start()
        await self.done.wait()

    def configure(self, frame: Configure) -> None:
        for agent in frame.agents:
            provider = frame.providers[agent.model.provider]
            runtime = self.agents.get(agent.id)
            if runtime is None:
                runtime = AgentRuntime(agent, provider, frame.short_term, self.send, self.tools)
                self.agents[agent.id] = runtime
                runtime.start()
            else:
                runtime.reconfigure(agent, provider)

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            frames: list[FrameUnion] = []
            try:
                frames.append(decode_frame(self.conn.recv_bytes()))
                # Everything already in the pipe goes over in one loop wake-up.
                while len(frames) < READ_BATCH and self.conn.poll(0):
                    frames.append(decode_frame(self.conn.recv_bytes()))
            except (EOFError, OSError):
                loop.call_soon_threadsafe(self.done.set)
                return
            except MessageDecodeError as exc:
                log.error("dropping an undecodable frame from the parent", extra={"error": str(exc)})
            if frames:
                loop.call_soon_threadsafe(self.on_frames, frames)

    def on_frames(self, frames: list[FrameUnion]) -> None:
        for frame in frames:
            self.on_frame(frame)

    def on_frame(self, frame: FrameUnion) -> None:
        match frame:
            case Deliver(agent_id=agent_id, event=event, redelivered=redelivered):
                runtime = self.agents.get(agent_id)
                if runtime is None or self.stopping:
                    return  # unknown agent / stopping: it stays open in the inbox
                runtime.deliver(event, redelivered)
            case Ack():
                pass  # the parent owns the journal; completed ids are remembered already
            case ToolResult(call_id=call_id, ok=ok, result=result, error=error):
                self.tools.resolve(call_id, ok, result, error)
            case Ping(seq=seq):
                self._pong(seq)
            case Configure():
                self.configure(frame)
            case Stop(grace=grace):
                asyncio.get_running_loop().create_task(self._stop(grace))
            case _:
                log.warning("unexpected frame from the parent", extra={"frame": type(frame).__name__})

    def _pong(self, seq: int) -> None:
        rss = self.process.memory_info().rss
        cpu = self.process.cpu_percent(None)
        AGENT_WORKER_RSS.labels(worker=str(self.worker_id)).set(rss)
        AGENT_WORKER_CPU.labels(worker=str(self.worker_id)).set(cpu)
        self.send(Pong(seq=seq, rss_bytes=rss, cpu_percent=cpu))
        if seq % REPORT_EVERY == 0:
            self.send(StateReport(agents=[a.report() for a in self.agents.values()]))

    async def _stop(self, grace: float) -> None:
        """Finish turns that are under way (within `grace`), then exit."""
        self.stopping = True
        deadline = time.monotonic() + grace
        while any(a.in_flight for a in self.agents.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for runtime in self.agents.values():
            runtime.stop()
        self.done.set()
