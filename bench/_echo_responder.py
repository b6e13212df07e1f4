"""Baseline for bench.pipeline: a bare nats-py echo responder in its own process.

    .venv/bin/python bench/_echo_responder.py URL SUBJECT [SUBJECT ...]

It answers what the runtime answers, on the same subjects: a request on
`plugin.inbound.<channel>` (a full envelope or a bare `{"text": ...}`) gets,
on its reply subject, a JSON event whose `payload.text` is `echo: <text>` and
whose `correlation_id` is the inbound event id. Everything the runtime adds
between the two (journal, actors, the worker process and its pipe, the
publish confirmation) is what this baseline leaves out. Subscriptions use
one queue group per subject, like the runtime's per-agent groups.

It prints `ready` on stdout once subscribed (after a flush), then serves
until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid

import msgspec
import nats
from nats.aio.msg import Msg

PREFIX = "echo: "
_decode = msgspec.json.Decoder()
_encode = msgspec.json.Encoder()


def answer(subject: str, data: bytes) -> bytes:
    raw = _decode.decode(data)
    if "id" in raw and "payload" in raw:
        event_id, payload = raw["id"], raw["payload"]
    else:
        event_id, payload = str(uuid.uuid4()), raw
    return _encode.encode({
        "id": str(uuid.uuid4()), "ts": time.time(), "topic": raw.get("reply_to") or subject,
        "source": "echo-baseline", "session_id": None, "correlation_id": event_id,
        "reply_to": None,
        "payload": {"text": PREFIX + str(payload.get("text", "")), "agent": "baseline",
                    "chat": payload.get("chat")},
    })


async def serve(url: str, subjects: list[str]) -> None:
    nc = await nats.connect(url, name="echo-baseline")

    async def on_msg(msg: Msg) -> None:
        if msg.reply:
            await nc.publish(msg.reply, answer(msg.subject, msg.data))

    for subject in subjects:
        await nc.subscribe(subject, queue=f"baseline.{subject}", cb=on_msg)
    await nc.flush()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    asyncio.run(serve(sys.argv[1], sys.argv[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
