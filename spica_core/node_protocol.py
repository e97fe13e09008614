"""The node protocol: the one definition of what the console and the node agent say.

Transport: JSON lines (UTF-8) over the stdin/stdout of ``spica node serve`` running in an SSH
channel. The agent first writes a hello; then each request line gets exactly one response
line, in order, carrying the request's id::

    agent:   {"hello": "spica-agent", "protocol": 1, "version": "0.1.0", "root": "/data/spica", ...}
    client:  {"id": 7, "verb": "status", "args": {"partitions": [{"name": "raid1"}]}}
    agent:   {"id": 7, "ok": true, "result": {...}}
    agent:   {"id": 8, "ok": false, "error": {"code": "bad_name", "message": "..."}}

Errors are always structured responses (never a traceback on the wire); after any error the
agent keeps serving. Both ends import this module; nothing else defines verbs or shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from spica_core.node.layout import MAX_COMMANDS_BYTES

PROTOCOL_VERSION = 1
HELLO = "spica-agent"

#: A request line longer than this is refused (``too_large``) without being parsed. It
#: leaves room for the largest ``stage``: commands of MAX_COMMANDS_BYTES sent in base64
#: (``commands_b64``: 4 bytes per 3, whatever the text holds), plus the other arguments.
MAX_REQUEST_BYTES = 64 * 1024 + 4 * -(-MAX_COMMANDS_BYTES // 3)
#: Bounds of ``tail``.
DEFAULT_TAIL_LINES = 50
MAX_TAIL_LINES = 5000
MAX_TAIL_BYTES = 256 * 1024


class Verb(StrEnum):
    PING = "ping"
    STATUS = "status"
    TAIL = "tail"
    VERSIONS = "versions"
    # Operator actions (spica_core.node.actions); each takes "dry_run".
    # {stack, commands_b64 (or commands, text), inputs?}: write commands.sh of a planned stack
    STAGE = "stage"
    LAUNCH = "launch"  # {stack, priority, by}: planned -> pending
    REQUEUE = "requeue"  # {stack, priority, by, from_start}: failed -> pending
    UNLOCK = "unlock"  # {stack, to: failed|pending, by}: stale running -> to
    UNLOCK_QFIN = "unlock_qfin"  # {partition, by}: remove a dead holder's QFin lock
    REMOVE = "remove"  # {stack, purge: [paths]}: queue file, stack dir, listed inputs


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"  # not JSON, not an object, missing id/verb
    TOO_LARGE = "too_large"  # request line over MAX_REQUEST_BYTES
    UNKNOWN_VERB = "unknown_verb"
    BAD_ARGS = "bad_args"  # args of the wrong shape or type
    BAD_NAME = "bad_name"  # a stack/partition name outside spica_core.names
    OUTSIDE_ROOT = "outside_root"  # a path (or symlink) leading out of the spica root
    NOT_FOUND = "not_found"
    WRONG_STATE = "wrong_state"  # the stack is not (or no longer) where the action needs it
    INTERNAL = "internal"  # an unexpected failure, described in one line


class ProtocolError(Exception):
    """A structured error, raised on either end; ``code`` is an :class:`ErrorCode`."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class Request:
    id: int | str
    verb: str
    args: dict[str, Any]

    def encode(self) -> bytes:
        return encode({"id": self.id, "verb": self.verb, "args": self.args})


def encode(message: dict[str, Any]) -> bytes:
    """One JSON line; never contains a raw newline, whatever the strings hold."""
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


def hello(version: str, root: str, **extra: Any) -> dict[str, Any]:
    return {"hello": HELLO, "protocol": PROTOCOL_VERSION, "version": version, "root": root, **extra}


def check_hello(message: Any) -> dict[str, Any]:
    """Validate the agent's first line; raises ProtocolError when it is not a SPICA agent."""
    if not isinstance(message, dict) or message.get("hello") != HELLO:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not a spica agent greeting: {message!r:.200}")
    if message.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"agent speaks protocol {message.get('protocol')}, this SPICA speaks "
            f"{PROTOCOL_VERSION} (install the same SPICA version on the node)",
        )
    return message


def ok(request_id: int | str | None, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def fail(request_id: int | str | None, code: ErrorCode | str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": str(code), "message": message}}


def decode_request(line: bytes) -> Request:
    """Parse one request line, or raise ProtocolError(bad_request / too_large)."""
    if len(line) > MAX_REQUEST_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"request of {len(line)} bytes, at most {MAX_REQUEST_BYTES}"
        )
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not a JSON line: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request is a JSON object")
    rid = message.get("id")
    if not isinstance(rid, int | str) or isinstance(rid, bool):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request needs an integer or string id")
    verb = message.get("verb")
    if not isinstance(verb, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request needs a verb")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(ErrorCode.BAD_ARGS, "args must be a JSON object")
    return Request(rid, verb, args)


def decode_response(line: bytes) -> dict[str, Any]:
    """Parse one response line; returns the result or raises the agent's ProtocolError."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"agent sent a non-JSON line: {exc}") from None
    if not isinstance(message, dict) or "ok" not in message:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"agent sent no response: {message!r:.200}")
    return message


def result_of(message: dict[str, Any]) -> Any:
    if message.get("ok"):
        return message.get("result")
    err = message.get("error") or {}
    raise ProtocolError(str(err.get("code", "internal")), str(err.get("message", "")))
