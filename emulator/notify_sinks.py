"""Fake notification endpoints on loopback HTTPS (an Event Grid topic, ACS Email, a Teams Workflows
webhook) answering as the real services do: the real SDK clients run with their default transports,
auth policies and TLS verification (trust `ca_bundle` via REQUESTS_CA_BUNDLE), no mocks.

SDK facts (azure-eventgrid 4.22, azure-communication-email 1.1.0, azure-core 1.41):
- `EventGridPublisherClient` for a basic topic drops its keyword arguments (transport, retry_total,
  connection_verify): only the environment reaches its transport.
- `EmailClient.begin_send(...).result()` polls once right after the 202, then sleeps between polls
  while the status is running: Retry-After, but azure-core reads `Retry-After: 0` as absent and
  sleeps `polling_interval` (30 s unless given to the client or to `begin_send`). Sends here have
  succeeded by that first poll, so `.result()` costs one GET and no sleep.
"""

from __future__ import annotations

import copy
import secrets
import shutil
import ssl
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast, get_args
from urllib.parse import parse_qsl, unquote, urlsplit

from .https_server import self_signed_certificate
from .messages import ArmError, ArmRequest, Reply, error_reply

SinkKind = Literal["eventgrid", "email", "teams"]
KINDS: tuple[str, ...] = get_args(SinkKind)
_PREFIXES = {"/eventgrid/": "eventgrid", "/acs/": "email", "/teams/": "teams"}
_EVENTS_PATH, _SEND_PATH, _OPERATIONS_PATH = "/eventgrid/api/events", "/acs/emails:send", "/acs/emails/operations/"
_CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"
_ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


@dataclass(frozen=True)
class SentEmail:
    """A message the Email sink accepted, with the operation id its status is polled under."""
    operation_id: str
    message: dict[str, Any]


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    """Event Grid and ACS answer with Azure's common ErrorResponse, as ARM does."""
    return error_reply(status, ArmError(code, message), headers)


def _parse(request: ArmRequest) -> object:
    try:  # None when there is no JSON body: every validator below refuses None
        return request.json()
    except ValueError:  # UnicodeDecodeError is one too
        return None


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _first(checks: tuple[tuple[bool, str], ...]) -> str | None:
    return next((problem for passed, problem in checks if not passed), None)


def _cloud_events_problem(events: object) -> str | None:
    if not isinstance(events, list) or not events:
        return "The request body must be a non-empty JSON array of CloudEvents 1.0 events."
    return _first(tuple((isinstance(event, dict) and event.get("specversion") == "1.0"
                         and all(_text(event.get(name)) for name in ("id", "source", "type")),
                         f"Event {index} needs specversion '1.0', id, source and type.")
                        for index, event in enumerate(events)))


def _email_problem(message: object) -> str | None:
    """The first thing the service refuses in an EmailMessage (REST spec 2025-09-01)."""
    if not isinstance(message, dict):
        return "The request body must be a JSON object (EmailMessage)."
    recipients = message["recipients"] if isinstance(message.get("recipients"), dict) else {}
    groups = [recipients.get(group, []) for group in ("to", "cc", "bcc")]
    content = message["content"] if isinstance(message.get("content"), dict) else {}
    return _first((
        (_text(message.get("senderAddress")), "'senderAddress' is required."),
        (isinstance(groups[0], list) and bool(groups[0]), "'recipients.to' must list at least one recipient."),
        (all(isinstance(group, list) and all(isinstance(a, dict) and _text(a.get("address")) for a in group)
             for group in groups), "Every recipient needs an 'address'."),
        (_text(content.get("subject")), "'content.subject' is required."),
        (_text(content.get("plainText")) or _text(content.get("html")), "'content' needs 'plainText' or 'html'."),
    ))


def _teams_problem(post: object) -> str | None:
    """Workflows take Adaptive Cards only, not the retired connectors' MessageCard."""
    attachments = post.get("attachments") if isinstance(post, dict) else None
    attachments = attachments if isinstance(attachments, list) else []
    cards = [a.get("content") for a in attachments if isinstance(a, dict) and a.get("contentType") == _ADAPTIVE_CARD]
    return _first((
        (isinstance(post, dict) and post.get("type") == "message", "The body needs \"type\": \"message\"."),
        (bool(attachments) and len(cards) == len(attachments), f"'attachments' must be {_ADAPTIVE_CARD}s."),
        (all(isinstance(card, dict) and card.get("type") == "AdaptiveCard" and _text(card.get("version"))
             and isinstance(card.get("body"), list) for card in cards), "A card needs type, version and body."),
    ))


class _SinkState:
    """What the three fake services have received and been told to do. Handlers run on threads of
    their own; one lock held for a whole request keeps a repeated Operation-Id check atomic."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen = dict.fromkeys(KINDS, 0)
        self.faults: dict[str, tuple[int, int | None]] = {}  # kind: (status, times left or None)
        self.events: list[dict[str, Any]] = []
        self.operations: dict[str, SentEmail] = {}
        self.teams_posts: list[dict[str, Any]] = []

    def answer(self, request: ArmRequest) -> Reply:
        kind = next((k for prefix, k in _PREFIXES.items() if request.path.startswith(prefix)), None)
        if kind is None:
            return _error(404, "NotFound", f"Nothing is served at {request.path}.")
        with self.lock:
            self.seen[kind] += 1
            if kind not in self.faults:
                return {"eventgrid": self._eventgrid, "email": self._email, "teams": self._teams}[kind](request)
            status, left = self.faults.pop(kind)
            if left is None or left > 1:
                self.faults[kind] = (status, None if left is None else left - 1)
        phrase = HTTPStatus(status).phrase
        headers = {"Retry-After": "0"} if status in (429, 503) else {}
        return _error(status, phrase.replace(" ", ""), f"Injected failure: {phrase}.", headers)

    def _eventgrid(self, request: ArmRequest) -> Reply:
        headers = request.headers
        if request.method != "POST" or request.path != _EVENTS_PATH:
            return _error(404, "NotFound", f"No topic at {request.method} {request.path}.")
        bearer = headers.get("authorization", "").startswith("Bearer ")
        if not bearer and not {"aeg-sas-key", "aeg-sas-token"} & headers.keys():
            return _error(401, "Unauthorized", "Send a Bearer token, aeg-sas-key or aeg-sas-token.")
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != _CLOUDEVENTS_BATCH:
            return _error(415, "UnsupportedMediaType", f"The topic takes {_CLOUDEVENTS_BATCH}, not {media_type!r}.")
        problem = _cloud_events_problem(events := _parse(request))
        if problem is not None or "api-version" not in request.query:
            return _error(400, "BadRequest", problem or "api-version is required.")
        self.events.extend(cast("list[dict[str, Any]]", events))
        return Reply(200)

    def _email(self, request: ArmRequest) -> Reply:
        """Bearer tokens only (HMAC from AzureKeyCredential is refused: the app uses Entra ID). Once per
        Operation-Id, after the service's repeatable-requests page: a repeat of the same request gets
        the first answer and is not executed again, the id with another request gets 400, a repeat
        while the first still runs gets 409 (not here: an accepted send has finished by its answer)."""
        def refuse(status: int, code: str, message: str) -> Reply:
            return _error(status, code, message, {"x-ms-error-code": code})  # the spec's error header

        if not request.headers.get("authorization", "").startswith("Bearer "):
            return refuse(401, "Unauthorized", "A Bearer token is required.")
        if not (api_version := request.query.get("api-version", "")):
            return refuse(400, "BadRequest", "api-version is required.")
        if request.method == "GET" and request.path.startswith(_OPERATIONS_PATH):
            known = self.operations.get(request.path[len(_OPERATIONS_PATH):])
            if known is None:
                return refuse(404, "NotFound", "No such email operation.")
            return Reply(200, {"id": known.operation_id, "status": "Succeeded", "error": None})
        if request.method != "POST" or request.path != _SEND_PATH:
            return refuse(404, "NotFound", f"No Email API at {request.method} {request.path}.")
        if (problem := _email_problem(message := _parse(request))) is not None:
            return refuse(400, "BadRequest", problem)
        operation_id = request.headers.get("operation-id") or str(uuid.uuid4())
        earlier = self.operations.get(operation_id)
        if earlier is None:  # the dict keeps arrival order: it is the record of sent emails too
            self.operations[operation_id] = SentEmail(operation_id, cast("dict[str, Any]", message))
        elif earlier.message != message:
            return refuse(400, "BadRequest", f"Operation-Id {operation_id} was used for another message.")
        headers = {"Retry-After": "0", "Operation-Location":
                   f"https://{request.headers.get('host')}{_OPERATIONS_PATH}{operation_id}?api-version={api_version}"}
        return Reply(202, {"id": operation_id, "status": "Running"}, headers)

    def _teams(self, request: ArmRequest) -> Reply:
        # No auth: in real life the query's sig is the credential; it is not checked here.
        if request.method != "POST" or not request.path.startswith("/teams/workflows/"):
            return _error(404, "NotFound", f"No workflow at {request.method} {request.path}.")
        if (problem := _teams_problem(post := _parse(request))) is not None:
            return _error(400, "BadRequest", problem)
        self.teams_posts.append(cast("dict[str, Any]", post))
        return Reply(202)


def _checked(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"Unknown sink {kind!r}; valid: {', '.join(KINDS)}")
    return kind


@dataclass(eq=False)
class NotificationSinks:
    """Where the sinks listen, what they accepted, and switches to make them fail."""
    eventgrid_endpoint: str  # https://127.0.0.1:<port>/eventgrid/api/events
    email_endpoint: str  # https://127.0.0.1:<port>/acs
    teams_url: str = field(repr=False)  # .../teams/workflows/<id>/...?...&sig=<secret>
    ca_bundle: str  # PEM file to trust (REQUESTS_CA_BUNDLE)
    _server: ThreadingHTTPServer = field(repr=False)
    _workdir: str = field(repr=False)
    _state: _SinkState = field(repr=False)

    def events(self) -> list[dict[str, Any]]:
        """Accepted CloudEvents as parsed, in arrival order (a copy)."""
        with self._state.lock:
            return copy.deepcopy(self._state.events)

    def emails(self) -> list[SentEmail]:
        """Accepted email messages, each once however often it was sent (a copy)."""
        with self._state.lock:
            return copy.deepcopy(list(self._state.operations.values()))

    def teams_posts(self) -> list[dict[str, Any]]:
        """Accepted Teams webhook bodies, in arrival order (a copy)."""
        with self._state.lock:
            return copy.deepcopy(self._state.teams_posts)

    def requests_seen(self, kind: SinkKind) -> int:
        """Every request that reached `kind`, refused and failed ones included."""
        with self._state.lock:
            return self._state.seen[_checked(kind)]

    def fail(self, kind: SinkKind, status: int = 500, times: int | None = None) -> None:
        """Answer the next `times` requests of `kind` (all until `heal` when None) with `status` and
        a JSON error; 429 and 503 say `Retry-After: 0` (azure-core's RetryPolicy reads 0 as absent
        and backs off itself: 0 s before its first retry, longer before later ones)."""
        if not 400 <= HTTPStatus(status) <= 599:
            raise ValueError(f"fail() takes an error status (4xx or 5xx), not {status}")
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 (or None: until heal), not {times}")
        with self._state.lock:
            self._state.faults[_checked(kind)] = (status, times)

    def heal(self, kind: SinkKind) -> None:
        """Undo `fail(kind)`; healing a sink that is not failing is fine."""
        with self._state.lock:
            self._state.faults.pop(_checked(kind), None)

    def close(self) -> None:
        """Stop serving and remove the certificate files."""
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> NotificationSinks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve_notification_sinks() -> NotificationSinks:
    """Start the three sinks on one free loopback port over TLS (daemon threads); `close()` stops them."""
    workdir = tempfile.mkdtemp(prefix="notify-sinks-tls-")
    cert_path, key_path = self_signed_certificate(workdir)
    state = _SinkState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    # shutdown() waits up to one poll interval, and every test closes a server: keep it short.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True, name="notify-sinks").start()
    base = f"https://127.0.0.1:{server.server_address[1]}"
    # Shaped like a Workflows trigger URL; its sig is a secret in real life, hence a random one.
    teams_url = (f"{base}/teams/workflows/{uuid.uuid4().hex}/triggers/manual/paths/invoke"
                 f"?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={secrets.token_urlsafe(32)}")
    return NotificationSinks(f"{base}{_EVENTS_PATH}", f"{base}/acs", teams_url, cert_path, server, workdir, state)


def _handler_for(state: _SinkState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = state.answer(ArmRequest(
                self.command.upper(), f"https://{headers.get('host')}{self.path}", unquote(parts.path),
                {k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True)}, headers,
                self.rfile.read(length) if length else b""))
            content = reply.content()
            self.send_response(reply.status)
            content_type = {"Content-Type": "application/json; charset=utf-8"} if content else {}
            for name, value in {**content_type, **reply.headers, "Content-Length": str(len(content))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
            return None

    return Handler
