"""The retry policy of every ARM client: azure-core's, with throttling handled as its own budget."""

from __future__ import annotations

import random
import re
from typing import Any

from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RequestHistory, RetryPolicy

# POSTs that are safe to send again: a VM power action (starting a VM that is starting joins the
# operation in flight; one that is running is done) and a Resource Graph query (a read).
_IDEMPOTENT_POST = re.compile(
    r"/providers/microsoft\.compute/virtualmachines/[^/]+/(start|deallocate|poweroff)(\?|$)"
    r"|/providers/microsoft\.resourcegraph/resources(\?|$)",
    re.IGNORECASE,
)

class ThrottleAwareRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy, with throttling (429) handled as its own, larger budget.

    - azure-core never retries a POST on 429, yet VM start/deallocate/powerOff and Resource
      Graph queries are all POSTs. A 429 means the request was refused before it ran, so
      repeating it after `Retry-After` cannot act twice.
    - Under a 429 storm every throttled caller is told the same `Retry-After`; all retrying at
      that instant throttles them again, so each waits `Retry-After` plus up to half of it again.
    - 429s draw on `throttle_retries`, not on the status-retry budget: being told to wait is
      not the request failing, and a fleet's worth of starts can be told so many times.
    - azure-core never retries a POST after a dropped connection (nor on a 502). The POSTs we
      send are idempotent (VM power actions: starting a VM that is starting joins the operation in
      flight; Resource Graph queries are reads), so they are retried on every error and 5xx like a
      PUT: one reset must not fail a start.
    """

    def __init__(self, *, throttle_retries: int = 60, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.throttle_retries = throttle_retries

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["throttle"] = self.throttle_retries
        return settings

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        if response.http_response.status_code == 429:
            return bool(settings.get("throttle", 0) > 0)
        return bool(super().is_retry(settings, response))

    def increment(self, settings: dict[str, Any], response: Any = None, error: Exception | None = None) -> bool:
        if isinstance(response, PipelineResponse) and response.http_response.status_code == 429:
            settings["throttle"] -= 1
            settings["history"].append(RequestHistory(response.http_request, http_response=response.http_response))
            return bool(settings["throttle"] >= 0)
        return bool(super().increment(settings, response=response, error=error))

    def _is_method_retryable(self, settings: dict[str, Any], request: Any, response: Any = None) -> bool:
        if request.method.upper() == "POST" and _IDEMPOTENT_POST.search(str(request.url)):
            return True
        return bool(super()._is_method_retryable(settings, request, response=response))

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        retry_after = self.get_retry_after(response) if response is not None else None
        if retry_after and response.http_response.status_code == 429:
            transport.sleep(retry_after * (1 + random.random() / 2))  # noqa: S311 - jitter, not security
            return
        super().sleep(settings, transport, response)
