from __future__ import annotations

from typing import Any

import pytest
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest

from handlers.adapters.retries import ThrottleAwareRetryPolicy


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


def test_no_retry_once_the_throttle_budget_is_spent() -> None:
    policy = ThrottleAwareRetryPolicy(throttle_retries=0)
    assert policy.is_retry(policy.configure_retries({}), _response("POST", 429)) is False


def test_throttling_draws_on_its_own_budget() -> None:
    policy = ThrottleAwareRetryPolicy(retry_total=1, retry_status=1, throttle_retries=5)
    settings = policy.configure_retries({})
    for _ in range(5):
        assert policy.is_retry(settings, _response("POST", 429))
        assert policy.increment(settings, response=_response("POST", 429))
    assert settings["status"] == 1 and settings["total"] == 1, "a 429 is not a failed attempt"
    assert policy.is_retry(settings, _response("POST", 429)) is False


class _Clock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_throttled_callers_spread_their_retries() -> None:
    policy = ThrottleAwareRetryPolicy()
    response = _response("POST", 429)
    response.http_response.headers["Retry-After"] = "10"
    clock = _Clock()
    for _ in range(50):
        policy.sleep(policy.configure_retries({}), clock, response)
    assert all(10 <= s <= 15 for s in clock.slept)
    assert len({round(s, 3) for s in clock.slept}) > 10, "not everyone retries at the same instant"
