"""The shipped example `extensions/hello`: a valid manifest and a program that speaks §13's protocol."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexo_actors.extensions.discovery import discover
from nexo_actors.extensions.manifest import MANIFEST_NAME, StdioTransport, load_manifest
from tests.unit.extensions.manifests import settings

REPO = Path(__file__).resolve().parents[3]
HELLO = REPO / "extensions" / "hello"
READ_TIMEOUT = 10.0  # §13's handshake budget; the example answers in milliseconds


@pytest.fixture
def python_on_path(tmp_path: Path) -> str:
    """A PATH holding only `python3` (this interpreter), so the manifest's requirement is met."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    return str(bindir)


def test_example_validates_ok(python_on_path: str) -> None:
    d = discover(settings("extensions"), REPO, env={"PATH": python_on_path})
    [hello] = [e for e in d.extensions if e.id == "hello"]
    assert (hello.status, hello.reasons) == ("ok", [])
    assert hello.manifest is not None
    assert hello.manifest.capabilities.tools == ["greet"]
    assert hello.manifest.transport == StdioTransport(command="python3", args=["hello.py"])


def test_example_is_skipped_without_python3_on_path() -> None:
    d = discover(settings("extensions"), REPO, env={"PATH": ""})
    [hello] = [e for e in d.extensions if e.id == "hello"]
    assert hello.status == "skipped" and "python3" in hello.reasons[0]


class StdioPeer:
    """The example program on real pipes; every read has a timeout."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # EOF

    def send(self, message: dict[str, Any] | str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=READ_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no answer within {READ_TIMEOUT}s") from None
        assert line is not None, "the program closed stdout"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, rid: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        answer = self.read()
        assert answer["jsonrpc"] == "2.0" and answer["id"] == rid
        return answer

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=READ_TIMEOUT)


@pytest.fixture
def hello(python_on_path: str) -> Iterator[StdioPeer]:
    """The program started as the manifest says: its command and args, cwd = its directory."""
    manifest = load_manifest(HELLO / MANIFEST_NAME)
    assert isinstance(manifest.transport, StdioTransport)
    command = shutil.which(manifest.transport.command, path=python_on_path)
    assert command is not None
    peer = StdioPeer([command, *manifest.transport.args], HELLO)
    try:
        yield peer
    finally:
        if peer.proc.poll() is None:
            peer.proc.kill()
        peer.proc.wait(timeout=READ_TIMEOUT)
        for stream in (peer.proc.stdin, peer.proc.stdout, peer.proc.stderr):
            if stream is not None:
                stream.close()


def test_example_answers_initialize_and_greet_over_pipes(hello: StdioPeer) -> None:
    init = hello.call(1, "initialize", {"agent_version": "0.1.0", "extension_id": "hello"})
    result = init["result"]
    assert result["server_version"] == "0.1.0" and result["hooks"] == []
    [tool] = result["tools"]
    assert tool["name"] == "greet" and tool["description"]
    assert tool["input_schema"]["required"] == ["name"]

    greet = hello.call(2, "tools/greet", {"name": "Ana", "_meta": {"agent_id": "kate"}})
    assert greet["result"] == {"greeting": "Hello, Ana!"}
    assert hello.close() == 0


def test_example_reports_errors_as_json_rpc_errors(hello: StdioPeer) -> None:
    assert hello.call(1, "tools/nope", {})["error"]["code"] == -32601
    assert hello.call(2, "tools/greet", {})["error"]["code"] == -32602
    hello.send("not json")
    assert hello.read()["error"]["code"] == -32700
    hello.send({"jsonrpc": "2.0", "method": "tools/greet", "params": {"name": "x"}})  # notification
    assert hello.call(3, "tools/greet", {"name": "Bo"})["result"] == {"greeting": "Hello, Bo!"}
    assert hello.close() == 0
