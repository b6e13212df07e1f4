"""Load generator for bench.pipeline, run in a process of its own.

    .venv/bin/python -m bench._loadgen --url URL --subjects S1,S2 --mode closed \
        --concurrency 64 --duration 5 --warmup 1
    .venv/bin/python -m bench._loadgen ... --mode open --rate 2000

Requests are full event envelopes `{"id","ts","topic","source","payload":
{"text","sender"}}` sent round-robin over the subjects, each with a reply
subject of its own under one wildcard inbox subscription (cheaper than
nats-py's `request()`, which wraps every call in a future and a timeout).
Every reply is checked: `payload.text == "echo: <text>"` and
`correlation_id == <request id>`.

* closed: `concurrency` requests outstanding at all times (a reply, or a
  timeout, sends the next one): the maximum throughput.
* open: requests paced at `rate`/s whatever the replies do (no coordinated
  omission); latency is measured from the moment each request was written.

Only requests sent inside the window [warmup, warmup + duration] are
counted. On stdout: `{"phase": "start"}` when the window opens, `{"phase":
"end"}` when it closes (the caller samples CPU between the two), then one
JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import uuid
from typing import Any

import msgspec
import nats
from nats.aio.msg import Msg

PREFIX = "echo: "
SENDERS = 32
_decode = msgspec.json.Decoder()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.subjects: list[str] = args.subjects.split(",")
        self.inbox = f"_INBOX.bench.{uuid.uuid4().hex}"
        self.run_id = uuid.uuid4().hex[:12]
        self.nc: Any = None
        # seq -> (written at, event id, text)
        self.outstanding: dict[int, tuple[float, str, str]] = {}
        self.seq = 0
        self.window_start = 0.0
        self.window_end = 0.0
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.received_in_window = 0
        self.bad = 0
        self.timeouts = 0
        self.sent_in_window = 0
        self.closing = False
        self.send_errors = 0

    async def send(self, scheduled: float | None = None) -> None:
        seq = self.seq
        self.seq += 1
        subject = self.subjects[seq % len(self.subjects)]
        event_id = f"{self.run_id}-{seq:08d}-{uuid.uuid4().hex[:12]}"
        text = f"hello {seq}"
        body = (b'{"id":"%s","ts":%f,"topic":"%s","source":"bench","payload":'
                b'{"text":"%s","sender":"u%d"}}' % (event_id.encode(), time.time(), subject.encode(),
                                                    text.encode(), seq % SENDERS))
        now = time.perf_counter()
        self.outstanding[seq] = (now, event_id, text)
        if self.window_start <= now < self.window_end:
            self.sent_in_window += 1
            if scheduled is not None:
                self.lags.append(now - scheduled)
        try:
            await self.nc.publish(subject, body, reply=f"{self.inbox}.{seq}")
        except Exception:
            self.send_errors += 1
            self.outstanding.pop(seq, None)

    async def on_reply(self, msg: Msg) -> None:
        now = time.perf_counter()
        seq = int(msg.subject.rsplit(".", 1)[1])
        entry = self.outstanding.pop(seq, None)
        if entry is None:
            return  # answered after we gave up on it
        written, event_id, text = entry
        try:
            doc = _decode.decode(msg.data)
            ok = doc["correlation_id"] == event_id and doc["payload"]["text"] == PREFIX + text
        except Exception:
            ok = False
        if not ok:
            self.bad += 1
        if self.window_start <= written < self.window_end:
            self.received_in_window += 1
            self.latencies.append(now - written)
        if self.args.mode == "closed" and not self.closing:
            await self.send()

    async def reaper(self) -> None:
        """Requests unanswered after --timeout count as timeouts (closed mode replaces them)."""
        while True:
            await asyncio.sleep(0.25)
            limit = time.perf_counter() - self.args.timeout
            stale = [s for s, (t, _, _) in self.outstanding.items() if t < limit]
            for seq in stale:
                written, _, _ = self.outstanding.pop(seq)
                if self.window_start <= written < self.window_end:
                    self.timeouts += 1
                if self.args.mode == "closed" and not self.closing:
                    await self.send()

    async def run(self) -> dict[str, Any]:
        args = self.args
        self.nc = await nats.connect(args.url, name="bench-loadgen", pending_size=64 * 1024 * 1024)
        await self.nc.subscribe(f"{self.inbox}.*", cb=self.on_reply, pending_msgs_limit=-1,
                                pending_bytes_limit=-1)
        await self.nc.flush()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        begin = time.perf_counter()
        self.window_start = begin + args.warmup
        self.window_end = self.window_start + args.duration
        reaper = asyncio.get_running_loop().create_task(self.reaper())
        starter = asyncio.get_running_loop().create_task(self._phases())
        if args.mode == "closed":
            for _ in range(args.concurrency):
                await self.send()
            await asyncio.sleep(self.window_end - time.perf_counter())
        else:
            await self._paced(begin)
        emit({"phase": "end"})
        self.closing = True
        # Let the window's last requests come back (or time out).
        deadline = time.perf_counter() + args.timeout + 0.5
        while time.perf_counter() < deadline and any(
                t < self.window_end for t, _, _ in self.outstanding.values()):
            await asyncio.sleep(0.01)
        reaper.cancel()
        starter.cancel()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        await self.nc.close()
        lat = sorted(self.latencies)
        lags = sorted(self.lags)
        return {
            "mode": args.mode, "duration": args.duration, "sent": self.sent_in_window,
            "received": self.received_in_window, "rate": self.received_in_window / args.duration,
            "p50_ms": percentile(lat, 0.50) * 1e3, "p90_ms": percentile(lat, 0.90) * 1e3,
            "p99_ms": percentile(lat, 0.99) * 1e3, "max_ms": (lat[-1] * 1e3) if lat else float("nan"),
            "lag_p99_ms": percentile(lags, 0.99) * 1e3 if lags else 0.0,
            "bad": self.bad, "timeouts": self.timeouts, "send_errors": self.send_errors,
            "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "wall_s": time.perf_counter() - begin,
        }

    async def _phases(self) -> None:
        await asyncio.sleep(max(0.0, self.window_start - time.perf_counter()))
        emit({"phase": "start"})

    async def _paced(self, begin: float) -> None:
        """Open loop: request i is due at begin + i / rate, sent however replies go."""
        rate = self.args.rate
        tick = min(0.002, max(0.0005, 1.0 / rate))
        i = 0
        while True:
            now = time.perf_counter()
            if now >= self.window_end:
                return
            due = int((now - begin) * rate)
            while i < due:
                await self.send(scheduled=begin + i / rate)
                i += 1
            await asyncio.sleep(tick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--subjects", required=True, help="comma-separated")
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    emit(asyncio.run(Generator(args).run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
