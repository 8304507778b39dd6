"""Transport-neutral request and reply values the handlers work with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ArmError:
    """An ARM error: the `error` object of an error body or of a failed operation."""

    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class ArmRequest:
    """An incoming request: lower-cased header and query names, raw body."""

    method: str
    url: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body parsed as JSON; ValueError when it is not."""
        if not self.body:
            raise ValueError("empty body")
        return json.loads(self.body.decode("utf-8-sig"))


@dataclass
class Reply:
    """What the emulator answers; the transport turns it into an azure-core response.

    `fault` names the injected fault that shaped this answer ("" for none), for the request log.
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    fault: str = ""

    def content(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode("utf-8")


class DroppedConnection(Exception):
    """Raised by `serve` instead of answering: the connection fails and no response is sent.

    kind: "reset" or "refused" (nothing was applied) or "lost-answer" (applied, then the answer lost).
    Transports turn it into what a client would see on a real connection.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def error_reply(status: int, error: ArmError, headers: Mapping[str, str] | None = None) -> Reply:
    """An ARM error body `{"error": {"code", "message"}}`."""
    return Reply(status, {"error": error.as_dict()}, dict(headers or {}))


def not_found(request: ArmRequest) -> Reply:
    return error_reply(404, ArmError("NotFound", f"The emulator does not serve {request.method} {request.path}."))
