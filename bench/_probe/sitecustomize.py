"""Per-hop timestamps for bench.pipeline's hop table (diagnosis only).

Active only when NEXO_PROBE_DIR is set (bench/_hops.py puts this directory
on PYTHONPATH of the runtime it starts, so the main process and its spawned
workers load it). It wraps a few runtime functions to record, per inbound
event id, `time.monotonic_ns()` (CLOCK_MONOTONIC: comparable across
processes) and the OS thread id, and appends them to
NEXO_PROBE_DIR/probe-<pid>.tsv every 0.3 s. Nothing in nexo_actors is
changed on disk; a wrapped name that no longer exists is skipped.
Cost: about 1 us per point, 12 points per message.
"""

from __future__ import annotations

import os
import sys

OUT = os.environ.get("NEXO_PROBE_DIR")
_RUNTIME = bool(sys.argv) and ("nexo" in " ".join(sys.argv) or sys.argv[0] in ("-c", ""))

if OUT and _RUNTIME:
    import threading
    import time
    from collections import deque
    from typing import Any

    _now = time.monotonic_ns
    _records: deque[tuple[str, str, int, int]] = deque()

    def rec(key: str, point: str, t: int | None = None) -> None:
        _records.append((key, point, _now() if t is None else t, threading.get_native_id()))

    def _flusher() -> None:
        path = os.path.join(OUT, f"probe-{os.getpid()}.tsv")
        with open(path, "a") as f:
            while True:
                time.sleep(0.3)
                lines = []
                while _records:
                    k, p, t, th = _records.popleft()
                    lines.append(f"{k}\t{p}\t{t}\t{th}\n")
                if lines:
                    f.write("".join(lines))
                    f.flush()

    threading.Thread(target=_flusher, name="probe-flusher", daemon=True).start()

    def _wrap(owner: Any, name: str, make: Any) -> None:
        original = getattr(owner, name, None)
        if original is not None:
            setattr(owner, name, make(original))

    try:
        from nexo_actors import supervisor
        from nexo_actors.agents import host, runtime, worker
        from nexo_actors.bus import bridge, publisher
        from nexo_actors.messages import Deliver, Reply
    except Exception as exc:  # the runtime changed shape: no probe, no harm
        print(f"probe disabled: {exc!r}", file=sys.stderr)
    else:
        def _parse(orig: Any) -> Any:
            def parse_inbound(*a: Any, **k: Any) -> Any:
                t = _now()
                event = orig(*a, **k)
                rec(event.id, "nats_cb", t)
                return event
            return parse_inbound
        _wrap(bridge, "parse_inbound", _parse)

        def _point(point: str, key: Any) -> Any:
            def make(orig: Any) -> Any:
                def wrapper(*a: Any, **k: Any) -> Any:
                    try:
                        found = key(*a, **k)
                    except Exception:  # called with another signature: skip the point
                        found = None
                    if found:
                        rec(found, point)
                    return orig(*a, **k)
                return wrapper
            return make

        _wrap(supervisor.Supervisor, "_deliver", _point("journaled", lambda s, a, e, r: e.id))
        _wrap(host.AgentHost, "_enqueue", _point("host_in", lambda s, a, e, r: e.id))
        _wrap(host.AgentHost, "_on_reply", _point("host_reply", lambda s, r: r.event_id))
        _wrap(host.AgentHost, "_on_published",
              _point("inbox_done", lambda s, a, e, err: e))
        _wrap(publisher.Publisher, "publish",
              _point("loop_pub", lambda s, t, e, inbound=None, **k: inbound and inbound[0]))
        _wrap(runtime.AgentRuntime, "_finish", _point("w_reply", lambda s, e, r: e))

        def _send(orig: Any) -> Any:
            def send(self: Any, frame: Any) -> Any:
                result = orig(self, frame)
                if isinstance(frame, Deliver):
                    rec(frame.event.id, "pipe_out")
                return result
            return send
        _wrap(host.AgentHost, "_send", _send)

        def _decoder(kind: type, point: str, key: Any) -> Any:
            def make(orig: Any) -> Any:
                def decode_frame(data: bytes) -> Any:
                    frame = orig(data)
                    if isinstance(frame, kind):
                        rec(key(frame), point)
                    return frame
                return decode_frame
            return make
        _wrap(host, "decode_frame", _decoder(Reply, "reader", lambda f: f.event_id))
        _wrap(worker, "decode_frame", _decoder(Deliver, "w_read", lambda f: f.event.id))

        def _confirm(orig: Any) -> Any:
            async def confirm(self: Any, sent: list[Any]) -> None:
                keys = [item.inbound[0] for item in sent if item.inbound]
                for key in keys:
                    rec(key, "written")  # the batch is in nats-py's buffer, its flush pending
                await orig(self, sent)
                for key in keys:
                    rec(key, "confirmed")
            return confirm
        _wrap(publisher.Publisher, "_confirm", _confirm)
