"""Typed errors of the engine.

Each carries the names an operator needs (file, key, stack, node, URL); the faces turn them
into messages and exit codes (see ``exit_code``), the engine never prints or exits.
"""

from __future__ import annotations


class SpicaError(Exception):
    """Base of every error the engine raises on purpose."""

    #: Exit code the command line uses for this error (DESIGN §9).
    exit_code: int = 1


class UsageError(SpicaError):
    """A request that is wrong in itself: a bad name, filter or argument."""

    exit_code = 2


class InvalidName(UsageError):
    """A stack, node or partition name outside the allowed alphabet."""

    def __init__(self, kind: str, name: str, reason: str) -> None:
        self.kind = kind
        self.name = name
        shown = name if len(name) <= 60 else name[:57] + "..."
        super().__init__(f"invalid {kind} name {shown!r}: {reason}")


class ConfigError(SpicaError):
    """The configuration could not be found, parsed or validated."""

    exit_code = 2


class StackStateError(SpicaError):
    """An illegal stack transition: names the stack, its state and the allowed moves."""

    def __init__(self, stack: str, state: str, wanted: str, allowed: list[str]) -> None:
        self.stack = stack
        self.state = state
        self.wanted = wanted
        self.allowed = allowed
        moves = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"stack {stack} is {state}: cannot {wanted}; allowed from {state}: {moves}"
        )


class NotFound(SpicaError):
    """A named thing (stack, node, problem) that dbspica does not hold."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"no {kind} named {name!r} in dbspica")


class DatabaseUnavailable(SpicaError):
    """dbspica cannot be reached (or holds no schema); the URL is always masked."""

    exit_code = 3

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"dbspica unreachable at {url}: {reason}")


class SchemaError(DatabaseUnavailable):
    """dbspica answers but its schema is missing or older than this SPICA."""


class NodeUnreachable(SpicaError):
    """A node did not answer over SSH."""

    exit_code = 3

    def __init__(self, node: str, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"node {node} unreachable: {reason}")


class NodeAnswerLost(NodeUnreachable):
    """A request was sent to a node but no answer came back (the connection was lost or the
    call timed out): whether the node carried it out is unknown until someone looks."""

    def __init__(self, node: str, reason: str) -> None:
        self.node = node
        self.reason = reason
        SpicaError.__init__(
            self, f"node {node} stopped answering after the request was sent: {reason}"
        )
