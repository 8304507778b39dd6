from __future__ import annotations

from typing import Any

import pytest
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest

from handlers.clients import ThrottleAwareRetryPolicy


class _Answer:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}


def _response(method: str, status: int) -> PipelineResponse[Any, Any]:
    return PipelineResponse(HttpRequest(method, "https://management.azure.com/x"), _Answer(status), None)  # type: ignore[arg-type]


def test_azure_core_alone_would_not_retry_a_throttled_post() -> None:
    policy = RetryPolicy()
    assert policy.is_retry(policy.configure_retries({}), _response("POST", 429)) is False


@pytest.mark.parametrize("method", ["POST", "GET", "PUT"])
def test_throttled_requests_are_retried_whatever_the_method(method: str) -> None:
    policy = ThrottleAwareRetryPolicy(retry_total=3, retry_status=3)
    assert policy.is_retry(policy.configure_retries({}), _response(method, 429)) is True


def test_other_post_failures_keep_azure_core_rules() -> None:
    policy = ThrottleAwareRetryPolicy()
    settings = policy.configure_retries({})
    assert policy.is_retry(settings, _response("POST", 409)) is False
    assert policy.is_retry(settings, _response("POST", 408)) is False  # may have run: not repeated


def test_no_retry_once_the_budget_is_spent() -> None:
    policy = ThrottleAwareRetryPolicy(retry_total=0, retry_status=0)
    assert policy.is_retry(policy.configure_retries({}), _response("POST", 429)) is False
