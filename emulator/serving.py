"""Serving one request: token endpoint, fault injection, authentication, throttling, failures, dispatch."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

from . import authorization, compute, graph, maintenance, routes, run_commands, snapshots, tags
from .clock import EmulatorClock
from .faults import AFTER_MODES, BEFORE_MODES, strike
from .ids import key
from .messages import ArmError, ArmRequest, DroppedConnection, Reply, error_reply, not_found
from .state import EmulatorModel, RecordedRequest
from .throttle import BucketSpec, Throttler, retry_after_header

_TOKEN_LIFETIME = 24 * 3600  # real seconds, like App Service tokens: msal compares with time.time()
_ARM_QUOTA_HEADERS = {
    "arm.read": "x-ms-ratelimit-remaining-subscription-reads",
    "arm.write": "x-ms-ratelimit-remaining-subscription-writes",
    "arm.delete": "x-ms-ratelimit-remaining-subscription-deletes",
}
_NO_BEARER = ArmError("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
_NO_API_VERSION = ArmError("MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required.")
_THROTTLED = ArmError("TooManyRequests", "The request is being throttled.")


_RESOURCE_HANDLERS = {
    "disk.get": snapshots.get_disk,
    "snapshot.get": snapshots.get_snapshot,
    "snapshot.put": snapshots.put_snapshot,
    "snapshot.delete": snapshots.delete_snapshot,
    "diskOperation": snapshots.disk_operation_status,
    "runCommand.put": run_commands.put_run_command,
    "runCommand.get": run_commands.get_run_command,
    "runCommand.delete": run_commands.delete_run_command,
    "tags.patch": tags.patch_tags,
    "tags.get": tags.get_tags,
}


def _hhmmss(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class ArmService(EmulatorModel):
    """The request-serving half of the emulator; AzureEmulator adds the public seeding API."""

    def __init__(
        self,
        clock: EmulatorClock,
        *,
        latency: float,
        throttling: bool,
        buckets: Mapping[str, BucketSpec | tuple[float, float]] | None,
    ) -> None:
        super().__init__(clock)
        self.latency = latency
        self.throttling = throttling
        self.throttler = Throttler(buckets)

    def serve(self, request: ArmRequest) -> Reply:
        """Answer one request: the App Service token endpoint, or an ARM call.

        Raises DroppedConnection instead of answering when an injected fault drops the connection.
        """
        if request.path.lower().endswith("/msi/token"):
            return self._token(request)
        dropped: DroppedConnection | None = None
        with self.lock:
            now = self.clock.now()
            try:
                reply = self._dispatch(request, now)
            except DroppedConnection as drop:
                dropped = drop
                self.requests.append(RecordedRequest(request.method, request.url, request.path, 0, now, drop.kind))
            else:
                reply.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
                correlation = request.header("x-ms-client-request-id") or str(uuid.uuid4())
                reply.headers.setdefault("x-ms-correlation-request-id", correlation)
                self.requests.append(
                    RecordedRequest(request.method, request.url, request.path, reply.status, now, reply.fault)
                )
        # Never sleep holding the lock: other threads keep being served meanwhile. A refused
        # connection fails at once: there was no round trip.
        if dropped is None or dropped.kind != "refused":
            self.clock.sleep(self.latency)
        if dropped is not None:
            raise dropped
        return reply

    def _token(self, request: ArmRequest) -> Reply:
        with self.lock:
            self.token_requests += 1
            failure = self.take_failure("token", None, "request")
        if failure is not None:
            return Reply(failure[0].status, {"statusCode": failure[0].status, "message": failure[1].message})
        if not request.header("x-identity-header"):
            return Reply(400, {"statusCode": 400, "message": "X-IDENTITY-HEADER is missing."})
        token = {
            "access_token": f"emulator-token-{uuid.uuid4()}",
            "expires_on": str(int(time.time()) + _TOKEN_LIFETIME),
            "resource": request.query.get("resource", ""),
            "token_type": "Bearer",
            "client_id": "00000000-0000-0000-0000-00000000c11e",
        }
        return Reply(200, token)

    def _dispatch(self, request: ArmRequest, now: float) -> Reply:
        route = routes.match(request)
        # A random fault is drawn before ARM sees the request: a dropped connection or a front-door
        # error never reaches authentication or throttling.
        injector = self.fault_injector
        fault = injector.draw(route.failure_op) if injector and route and route.failure_op else None
        if injector is not None and fault is not None and not fault.after_write:
            return injector.inject(fault, applied=False)
        reply = self._answer(request, route, now)
        if injector is not None and fault is not None:
            # Meant to strike after the write; when the service refused it, nothing was applied.
            return injector.inject(fault, applied=reply.status < 400)
        return reply

    def _answer(self, request: ArmRequest, route: routes.Route | None, now: float) -> Reply:
        bearer = request.header("authorization") or ""
        if not bearer.lower().startswith("bearer ") or not bearer[7:].strip():
            challenge = 'Bearer authorization_uri="https://login.windows.net/", error="invalid_token"'
            return error_reply(401, _NO_BEARER, {"WWW-Authenticate": challenge})
        if "api-version" not in request.query:
            return error_reply(400, _NO_API_VERSION)
        if route is None:
            return not_found(request)
        action, refusal = authorization.refused(self.grants, route, request.path)
        if action:
            self.actions_called[action] += 1
        if refusal is not None:
            return refusal
        headers: dict[str, str] = {}
        wait = self._throttle(route, now, headers)
        if wait is not None:
            headers["Retry-After"] = retry_after_header(wait)
            return error_reply(429, _THROTTLED, headers)
        operation, target = route.failure_op, self._failure_target(route)
        failure = self.take_failure(operation, target, BEFORE_MODES) if operation else None
        if failure is not None:
            rule, error = failure
            if rule.status == 429:
                headers["Retry-After"] = "1"
            return strike(rule.mode, rule.status, error, headers)
        reply = self._handle(route, request, now)
        reply.headers.update(headers)
        # "lost-answer" / "applied-error" strike only once the service has applied the request.
        after = self.take_failure(operation, target, AFTER_MODES) if operation and reply.status < 400 else None
        if after is not None:
            rule, error = after
            return strike(rule.mode, rule.status, error, headers)
        return reply

    def _failure_target(self, route: routes.Route) -> str | None:
        """The resource id failures are matched on: for a status poll, the operation's VM or snapshot."""
        if route.name in ("operation", "arcOperation"):
            run_op = run_commands.find_operation(self, route)
            if run_op is not None:
                return run_op.resource_key  # a child of the machine: a rule for the machine matches it
            op = self.operations.get(route.operation_id)
            return op.vm_key if op else None
        if route.name == "diskOperation":
            disk_op = self.disk_operations.get(route.operation_id)
            return disk_op.resource_key if disk_op else None
        return route.resource_id

    def _throttle(self, route: routes.Route, now: float, headers: dict[str, str]) -> float | None:
        """Take tokens when throttling is on (None, or the wait); fill the quota headers either way."""
        keys = routes.throttle_keys(route, self)
        wait = self.throttler.acquire(keys, now) if self.throttling else None
        for policy, scope in keys:
            bucket = self.throttler.bucket(policy, scope, now)
            if policy == "graph":
                headers["x-ms-user-quota-remaining"] = str(int(bucket.tokens(now)))
                headers["x-ms-user-quota-resets-after"] = _hhmmss(bucket.time_to_full(now))
            elif policy in _ARM_QUOTA_HEADERS:
                headers[_ARM_QUOTA_HEADERS[policy]] = str(int(bucket.tokens(now)))
            elif policy == "compute.snapshot.subscription":
                remaining = int(bucket.tokens(now))
                headers["x-ms-ratelimit-remaining-resource"] = f"Microsoft.Compute/CreateUpdateDisks3Min;{remaining}"
        return wait

    def _handle(self, route: routes.Route, request: ArmRequest, now: float) -> Reply:
        if route.name == "graph":
            return graph.query(self, request)
        if route.name == "cancel":
            return maintenance.cancel(self, request)
        if route.name == "run.get":
            return maintenance.get_run(self, request)
        if route.name in _RESOURCE_HANDLERS:
            return _RESOURCE_HANDLERS[route.name](self, request, route)
        if route.name in ("operation", "arcOperation") and (run_op := run_commands.find_operation(self, route)):
            return run_commands.operation_status(self, request, run_op)
        if route.name in ("operation", "arcOperation"):
            op = self.operations.get(route.operation_id) if route.name == "operation" else None
            if op is None or op.subscription_id.lower() != route.subscription_id.lower():
                return error_reply(404, ArmError("NotFound", f"Operation {route.operation_id} was not found."))
            return compute.operation_status(self, request, op)
        vm = self.vms.get(key(route.resource_id or ""))
        if vm is None:
            return compute.vm_not_found(route.resource_group, route.vm_name)
        vm.settle(now)
        if route.name == "vm.action":
            return compute.vm_action(self, request, vm, route.action)
        if route.name == "vm.instanceView":
            return Reply(200, compute.instance_view_body(self, vm))
        expand = request.query.get("$expand", "").lower() == "instanceview"
        return Reply(200, compute.vm_body(self, vm, expand_instance_view=expand))
