"""The signed links of the pre notice: hold a run, or approve it, until its cancellation cutoff.

A link is `<public url>/api/maintenance/<action>?run=<run key>&token=<token>`. The token is
`<payload>.<signature>`, both base64url without padding: the payload is compact JSON naming the
run (its ledger key), the action and the expiry (the run's cutoff, epoch seconds); the signature
is HMAC-SHA256 over the payload with MAINTENANCE_HOLD_KEY. So a token holds no secret and gives
no other power: it cannot be turned into another action, another run or a later time, and it is
never the function's key. Anything else (changed, truncated, signed with another key) is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from handlers.core.keys import run_key

ACTIONS = ("hold", "approve")
ROUTE = "maintenance/{action}"
_DOMAIN = b"update-manager-toolkit/run-link/v1."  # binds the signature to this use of the key
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,400}\.[A-Za-z0-9_-]{43}$")
_RUN_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


class LinkRefusedError(Exception):
    """The link cannot be honoured; the message says why, for the person who followed it."""


@dataclass(frozen=True)
class LinkClaims:
    run: str  # the run's ledger key
    action: str
    expires: datetime


def make_link(key: bytes, public_url: str, *, correlation_id: str, action: str, expires: datetime) -> str:
    """The link a person follows to take `action` on the run, good until `expires`."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    run = run_key(correlation_id)
    payload = _b64(json.dumps({"v": 1, "run": run, "act": action, "exp": int(expires.timestamp())},
                              separators=(",", ":"), sort_keys=True).encode())
    token = f"{payload}.{_b64(_sign(key, payload))}"
    return f"{public_url.rstrip('/')}/api/{ROUTE.format(action=action)}?{urlencode({'run': run, 'token': token})}"


def read_token(key: bytes, token: str, *, run: str, action: str, now: datetime) -> LinkClaims:
    """The token's claims once it is proven: signed with our key, for this run and action, not
    expired. LinkRefusedError otherwise (nothing about the key or a good token is revealed)."""
    if not _TOKEN.fullmatch(token or "") or not _RUN_KEY.fullmatch(run or ""):
        raise LinkRefusedError("This link is not valid: it is incomplete or was changed.")
    payload, signature = token.split(".")
    if not hmac.compare_digest(_unb64(signature), _sign(key, payload)):
        raise LinkRefusedError("This link is not valid: it is incomplete, was changed, or is not from this app.")
    try:
        claims = json.loads(_unb64(payload))
        claimed = LinkClaims(str(claims["run"]), str(claims["act"]), datetime.fromtimestamp(int(claims["exp"]), UTC))
    except (ValueError, KeyError, TypeError, OverflowError):
        raise LinkRefusedError("This link is not valid.") from None
    if claimed.action != action:
        raise LinkRefusedError(f"This link does not {action} runs (it is a {claimed.action} link).")
    if claimed.run != run:
        raise LinkRefusedError("This link is for another run.")
    if now >= claimed.expires:
        raise LinkRefusedError(f"This link has expired: the run's cancellation cutoff "
                               f"({claimed.expires:%Y-%m-%d %H:%M} UTC) has passed.")
    return claimed


def _sign(key: bytes, payload: str) -> bytes:
    return hmac.new(key, _DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
