"""The HTTP function behind the pre notice's links: hold a run, or approve it.

GET shows what the link would do and a button; only the POST that button sends changes anything.
Mail scanners (Safe Links and the like) open every link in a message, so a GET that held the run
would hold every run whose notice was scanned. Both answer with a small page saying what
happened. A link that is bad, changed, expired, for another run or another action, or followed
after the run's cutoff is refused with nothing recorded (`handlers.core.run_links`).
"""

from __future__ import annotations

import html
from datetime import datetime
from urllib.parse import parse_qs

import azure.functions as func

from handlers.core.ids import configuration_name_of
from handlers.core.logs import run_logger
from handlers.core.run_links import ACTIONS, LinkRefusedError, read_token
from handlers.phases.pre.hold import Answer, approve_run, hold_run, pre_event_of
from handlers.runtime import Runtime

_MAX_BODY = 4096
_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never hand it to another site
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
}
_VERB = {"hold": "Hold", "approve": "Approve"}


def answer_link(runtime: Runtime, request: func.HttpRequest) -> func.HttpResponse:
    action = (request.route_params or {}).get("action", "")
    if action not in ACTIONS:
        return _page(404, "Not found", "There is nothing here.")
    hold = runtime.settings.hold
    if hold.key is None:
        return _page(404, "Not enabled", "This app does not take hold or approve links (MAINTENANCE_HOLD_KEY is "
                                         "not set).")
    fields = _fields(request)
    if fields is None:
        return _page(400, "Bad request", "The request could not be read.")
    run, token = fields.get("run", ""), fields.get("token", "")
    now = runtime.clock.utcnow()
    try:
        read_token(hold.key, token, run=run, action=action, now=now)
    except LinkRefusedError as refused:
        run_logger(None).warning("a %s link was refused: %s", action, refused)
        return _page(403, "Link refused", str(refused))
    row = runtime.ledger.get_run_by_key(run)
    if row is None or not row.get("CorrelationId") or not row.get("WindowStart"):
        return _page(404, "No such run", "This app has no record of the run this link is for.")
    event = pre_event_of(row)
    title = (f"{_VERB[action]} the run of {configuration_name_of(event.correlation_id)}, "
             f"window {event.start:%Y-%m-%d %H:%M} UTC")
    if event.cancellation_cutoff is None or now >= event.cancellation_cutoff:
        return _page(409, title, "Too late: the run's cancellation cutoff has passed, so it can no longer be held "
                                 "or approved.")
    if request.method.upper() == "GET":
        return _confirm(title, action, run, token, event.cancellation_cutoff)
    answer = (hold_run if action == "hold" else approve_run)(runtime, row, now=now)
    log = run_logger(event.correlation_id)
    log.info("%s link: %s (%s)", action, "accepted" if answer.accepted else "refused", answer.message)
    return _answered(title, answer)


def _fields(request: func.HttpRequest) -> dict[str, str] | None:
    """run and token: from the query of a GET, from the form of a POST (small, or refused)."""
    if request.method.upper() == "GET":
        return {k: str(v) for k, v in (request.params or {}).items()}
    body = request.get_body() or b""
    if len(body) > _MAX_BODY:
        return None
    try:
        parsed = parse_qs(body.decode("ascii"), strict_parsing=False, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in parsed.items() if v}


def _confirm(title: str, action: str, run: str, token: str, cutoff: datetime) -> func.HttpResponse:
    what = ("The run will be cancelled before it starts: no machine is patched in this window."
            if action == "hold" else "The run goes ahead if its checks pass. Without an approval it is cancelled.")
    form = (f'<form method="post"><input type="hidden" name="run" value="{html.escape(run)}">'
            f'<input type="hidden" name="token" value="{html.escape(token)}">'
            f'<button type="submit">{_VERB[action]} this run</button></form>')
    return _page(200, title, f"{what} Possible until {cutoff:%Y-%m-%d %H:%M} UTC.", form)


def _answered(title: str, answer: Answer) -> func.HttpResponse:
    return _page(200 if answer.accepted else 409, title, answer.message)


def _page(status: int, title: str, message: str, extra: str = "") -> func.HttpResponse:
    body = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:38em;"
            "margin:3em auto;padding:0 1em;color:#1b1b1b}h1{font-size:1.3em}button{font:inherit;padding:.5em 1.2em;"
            "border:0;border-radius:4px;background:#0f6cbd;color:#fff;cursor:pointer}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>{extra}"
            "<p style=\"color:#616161;font-size:.85em\">Update Manager maintenance toolkit</p></body></html>")
    return func.HttpResponse(body, status_code=status, headers=dict(_HEADERS))

