"""Telling people and systems about a run: each milestone (`handlers.phases.notices`) to each
configured channel (Event Grid, e-mail, Teams; `handlers.adapters.channels`), once.

- **Once**: before a milestone goes to a channel, its `notice-<milestone>-<channel>` row is
  inserted in the run's ledger partition (a conditional insert), and only the attempt that
  inserted it sends. Redelivered events, retried messages and a second worker all find the row.
  A worker that dies between the insert and the send leaves the row `sending`: that notice is
  not sent again (a duplicate is worse at 2 a.m. than a gap the ledger shows).
- **Never in the way**: a channel that fails is logged at WARNING and recorded on its row
  (`failed` and why, the webhook's secret scrubbed); the phase goes on.
- **Dry run**: MAINTENANCE_NOTIFY_DRY_RUN `label` sends with "[dry run]" in the title (and
  `dryRun: true` in the CloudEvent), `skip` sends nothing (rows say `skipped`).

The pre notice is step `notify` of the pre phase (right after discovery, so a person has the
most time to hold the run); every other milestone is sent when its phase ends (`notify_on_end`,
a run-end listener).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from handlers.adapters.channels import (
    CloudEventNotice,
    EmailNotice,
    notice_id,
    post_card,
    publish_events,
    scrub,
    send_email,
)
from handlers.adapters.inventory import MachineKind, get_vm_views
from handlers.adapters.operations import describe_error
from handlers.core.errors import SettingsError
from handlers.core.events import MaintenanceEvent
from handlers.core.logs import RunLogger, run_logger
from handlers.phases.notices import Notice, post_notices, pre_received, verdict_notices
from handlers.phases.run_end import PhaseEnd, PhaseEnding
from handlers.phases.steps import PhaseRun
from handlers.runtime import Runtime

if TYPE_CHECKING:
    from handlers.phases.pre.state import PreWork

DRY_RUN_LABEL = "[dry run] "


def notify_pre(run: PhaseRun[PreWork]) -> None:
    """Step `notify`: the pre notice, as soon as the run's machines are known."""
    runtime, work = run.runtime, run.state
    channels = runtime.settings.notify.channels
    if not channels:
        return
    views = {}
    if any(c != "eventgrid" for c in channels):  # people are told which machines are off
        ids = [m.resource_id for m in work.machines if m.kind is MachineKind.VM]
        views = get_vm_views(runtime.clients.resource_graph(), run.event.subscription_ids, ids)
    outcomes = send_notices(runtime, run.event, [pre_received(runtime, run.event, work.machines, views)], run.log)
    run.summary["notified"] = outcomes


def notify_on_end(ending: PhaseEnding) -> None:
    """A run-end listener: the verdict's milestones when a pre phase ends, the post summary and
    the report's when a post phase ends (however it ended)."""
    runtime, event = ending.runtime, ending.event
    if not runtime.settings.notify.channels:
        return
    row = runtime.ledger.get_run(event.correlation_id) or {}
    if ending.phase == "pre":
        if ending.how in (PhaseEnd.COMPLETED, PhaseEnd.VERDICT, PhaseEnd.FAILED_CLOSED):
            send_notices(runtime, event, verdict_notices(event, row), run_logger(event.correlation_id))
        return
    machines = runtime.ledger.list_machines(event.correlation_id)
    send_notices(runtime, event, post_notices(event, row, machines, ending.how.value), run_logger(event.correlation_id))


def send_notices(runtime: Runtime, event: MaintenanceEvent, notices: Sequence[Notice],
                 log: RunLogger) -> dict[str, str]:
    """Each notice to each configured channel that takes it, once; `milestone/channel` -> outcome."""
    settings = runtime.settings.notify
    dry = runtime.settings.dry_run
    outcomes: dict[str, str] = {}
    for notice in notices:
        for channel in settings.channels:
            if channel != "eventgrid" and not notice.for_people:
                continue
            key = f"{notice.milestone}/{channel}"
            try:
                outcomes[key] = _send_once(runtime, event, notice, channel, dry, log)
            except Exception as exc:  # the ledger itself failing: this notice is lost, say so
                log.warning("notice %s could not be recorded or sent: %s", key, scrub(str(exc)))
                outcomes[key] = "failed"
    return outcomes


def _send_once(runtime: Runtime, event: MaintenanceEvent, notice: Notice, channel: str, dry: bool,
               log: RunLogger) -> str:
    ledger, settings = runtime.ledger, runtime.settings.notify
    if not ledger.claim_notice(event.correlation_id, notice.milestone, channel):
        log.info("notice %s to %s was sent (or tried) before: not again", notice.milestone, channel)
        return "sent before"
    if dry and settings.dry_run == "skip":
        ledger.finish_notice(event.correlation_id, notice.milestone, channel, outcome="skipped",
                             detail="dry run (MAINTENANCE_NOTIFY_DRY_RUN is skip)")
        return "skipped"
    try:
        detail = _send(runtime, event, notice, channel, dry)
    except Exception as exc:
        detail = scrub(describe_error(exc) if isinstance(exc, AzureError) else f"{type(exc).__name__}: {exc}",
                       settings.teams_webhook_url)[:1000]
        log.warning("notice %s to %s failed (the phase goes on): %s", notice.milestone, channel, detail)
        ledger.finish_notice(event.correlation_id, notice.milestone, channel, outcome="failed", detail=detail)
        return "failed"
    ledger.finish_notice(event.correlation_id, notice.milestone, channel, outcome="sent", detail=detail)
    log.info("notice %s to %s: %s", notice.milestone, channel, detail)
    return "sent"


def _send(runtime: Runtime, event: MaintenanceEvent, notice: Notice, channel: str, dry: bool) -> str:
    settings, clients = runtime.settings.notify, runtime.clients
    title = (DRY_RUN_LABEL if dry else "") + notice.title
    if channel == "eventgrid":
        endpoint = _setting(settings.eventgrid_endpoint, "MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT")
        cloud_event = CloudEventNotice(
            type=notice.event_type, source=event.maintenance_configuration_id, subject=event.correlation_id,
            data={**notice.data, "dryRun": dry}, time=runtime.clock.utcnow(),
            id=notice_id(event.correlation_id, notice.milestone, channel))
        return publish_events(clients, endpoint, [cloud_event])
    if channel == "email":
        endpoint = _setting(settings.email_endpoint, "MAINTENANCE_EMAIL_ENDPOINT")
        sender = _setting(settings.email_sender, "MAINTENANCE_EMAIL_SENDER")
        return send_email(clients, endpoint, sender=sender, to=settings.email_to,
                          notice=_email(notice, title), operation_id=notice_id(event.correlation_id,
                                                                               notice.milestone, channel))
    return post_card(clients, _setting(settings.teams_webhook_url, "MAINTENANCE_TEAMS_WEBHOOK_URL"),
                     adaptive_card(notice, title))


def _setting(value: str | None, name: str) -> str:
    """A channel's setting (`NotifySettings.channels` lists only channels whose settings are set)."""
    if value is None:
        raise SettingsError(name, "not set, and its notification channel needs it")
    return value


def _email(notice: Notice, title: str) -> EmailNotice:
    text = [title, "", notice.summary, ""] if notice.summary else [title, ""]
    text += [f"{k}: {v}" for k, v in notice.facts]
    if notice.items:
        text += ["", f"{notice.items_title}:", *[f"- {item}" for item in notice.items]]
    text += [""] + [f"{label}: {url}" for label, url in notice.links]
    e = html.escape
    body = [f"<h2 style=\"font:600 18px system-ui,sans-serif\">{e(title)}</h2>"]
    if notice.summary:
        body.append(f"<p>{e(notice.summary)}</p>")
    body.append("<table cellpadding=\"4\">" + "".join(
        f"<tr><th align=\"left\">{e(k)}</th><td>{e(v)}</td></tr>" for k, v in notice.facts) + "</table>")
    if notice.items:
        body.append(f"<h3>{e(notice.items_title)}</h3><ul>" + "".join(f"<li>{e(i)}</li>" for i in notice.items)
                    + "</ul>")
    body += [f"<p><a href=\"{e(url, quote=True)}\" style=\"display:inline-block;padding:8px 16px;background:#0f6cbd;"
             f"color:#fff;text-decoration:none;border-radius:4px\">{e(label)}</a></p>" for label, url in notice.links]
    page = "<html><body style=\"font:14px system-ui,sans-serif;color:#1b1b1b\">" + "".join(body) + "</body></html>"
    return EmailNotice(subject=f"[Maintenance] {title}", text="\n".join(text).strip() + "\n", html=page)


def adaptive_card(notice: Notice, title: str) -> dict[str, Any]:
    """The notice as an Adaptive Card (schema 1.4, what Teams renders in a Workflows post)."""
    body: list[dict[str, Any]] = [{"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium",
                                   "wrap": True}]
    if notice.summary:
        body.append({"type": "TextBlock", "text": notice.summary, "wrap": True})
    body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in notice.facts]})
    if notice.items:
        body.append({"type": "TextBlock", "text": notice.items_title, "weight": "Bolder", "wrap": True,
                     "spacing": "Medium"})
        body += [{"type": "TextBlock", "text": f"- {item}", "wrap": True, "spacing": "None"} for item in notice.items]
    card: dict[str, Any] = {"type": "AdaptiveCard", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "version": "1.4", "body": body}
    if notice.links:
        card["actions"] = [{"type": "Action.OpenUrl", "title": label, "url": url} for label, url in notice.links]
    return card
