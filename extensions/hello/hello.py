#!/usr/bin/env python3
"""Example nexo extension: line-delimited JSON-RPC 2.0 on stdin/stdout.

One request per line in, one response per line out; stdout carries nothing
else (logs go to stderr, which nexo forwards to its own logs). Answers
`initialize` with the tools it serves and `tools/greet` with a greeting;
exits when stdin closes, which is how nexo stops it. Standard library only.
"""

from __future__ import annotations

import json
import sys
from typing import Any

SERVER_VERSION = "0.1.0"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

GREET_TOOL = {
    "name": "greet",
    "description": "Greet someone by name.",
    "input_schema": {
        "type": "object",
        "properties": {"name": {"type": "string", "description": "Who to greet"}},
        "required": ["name"],
    },
}


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def initialize(params: dict[str, Any]) -> dict[str, Any]:
    # params: {agent_version, extension_id}; nothing here depends on them.
    log(f"initialize from nexo {params.get('agent_version', '?')}")
    return {"server_version": SERVER_VERSION, "tools": [GREET_TOOL], "hooks": []}


def greet(params: dict[str, Any]) -> dict[str, Any]:
    # Extra keys (like `_meta` when [context] passthrough is on) are ignored.
    name = params.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RpcError(INVALID_PARAMS, "'name' must be a non-empty string")
    return {"greeting": f"Hello, {name.strip()}!"}


METHODS = {"initialize": initialize, "tools/greet": greet}


def handle(line: str) -> dict[str, Any] | None:
    """The response to one line, or None for a notification (a request without an id)."""
    try:
        request = json.loads(line)
    except json.JSONDecodeError as exc:
        return error_response(None, PARSE_ERROR, f"parse error: {exc}")
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" \
            or not isinstance(request.get("method"), str):
        rid = request.get("id") if isinstance(request, dict) else None
        return error_response(rid, INVALID_REQUEST, "expected a JSON-RPC 2.0 request object")
    rid = request.get("id")
    params = request.get("params", {})
    try:
        method = METHODS.get(request["method"])
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {request['method']}")
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "params must be an object")
        result = method(params)
    except RpcError as exc:
        return None if "id" not in request else error_response(rid, exc.code, exc.message)
    return None if "id" not in request else {"jsonrpc": "2.0", "id": rid, "result": result}


def error_response(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def log(message: str) -> None:
    print(f"hello: {message}", file=sys.stderr, flush=True)


def main() -> int:
    log("ready")
    for line in sys.stdin:
        if not line.strip():
            continue
        response = handle(line)
        if response is not None:
            sys.stdout.write(json.dumps(response) + "\n")
            sys.stdout.flush()
    log("stdin closed; exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
