"""An application's own word on whether it is up: one GET of an operator's URL, 2xx or not.

Used before the window (`http-probe` of MAINTENANCE_PRE_CHECKS: ready for patching) and after it
(`http-probe` of MAINTENANCE_POST_CHECKS: healthy again). Redirects are not followed: a login page
answering 302 is not the application saying it is ready.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class ProbeResult:
    passed: bool
    detail: str  # "<url> answered 200", "<url> did not answer: ConnectTimeout"


def probe_url(url: str, *, timeout_seconds: float) -> ProbeResult:
    """GET `url` once; passed when it answers 2xx within the timeout."""
    try:
        response = requests.get(url, timeout=timeout_seconds, allow_redirects=False)
    except requests.RequestException as exc:
        return ProbeResult(False, f"{url} did not answer: {type(exc).__name__}")
    return ProbeResult(200 <= response.status_code < 300, f"{url} answered {response.status_code}")
