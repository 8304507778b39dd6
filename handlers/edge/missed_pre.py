"""The watch for pre events that never came (the `missed_pre_events` timer, every five minutes).

A pre event that is never delivered leaves no trace in the toolkit: nothing is started,
snapshotted or checked, and nobody hears of it, because every other alert follows from an event.
So the runs themselves are watched: Resource Graph lists the runs of the watched configurations
(MAINTENANCE_ALLOWED_CONFIGURATION_IDS; none set, nothing is watched: every configuration of every
readable subscription would include other teams' schedules) whose window started at least
MAINTENANCE_MISSED_PRE_GRACE_MINUTES ago, within the hour before that. A run whose pre phase the
ledger does not know raises the missed-pre-event alert, once per run (a conditional insert), and
the run row then says so (`./dev report` lists it).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from handlers.adapters.maintenance_runs import StartedRun, list_started_runs
from handlers.core import telemetry
from handlers.core.ids import name_of
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.runtime import Runtime

# How far back, before the grace, a window start is looked at: twelve timer periods. A watch
# that was down for longer than that does not alert on the runs it missed.
WATCH_SPAN = timedelta(hours=1)

log = logging.getLogger("maintenance")


def watch_missed_pre_events(runtime: Runtime) -> list[str]:
    """Alert on each run whose window started with no pre event recorded; the runs alerted now."""
    settings = runtime.settings
    if not settings.allowed_configuration_ids:
        log.info("missed pre events: not watched (MAINTENANCE_ALLOWED_CONFIGURATION_IDS is empty)")
        return []
    newest = runtime.clock.utcnow() - timedelta(minutes=settings.missed_pre_grace_minutes)
    runs = list_started_runs(runtime.clients, settings.allowed_configuration_ids,
                             oldest=newest - WATCH_SPAN, newest=newest)
    alerted = []
    for run in runs:
        if runtime.ledger.get_phase(run.correlation_id, "pre") is not None:
            continue
        with telemetry.scope(correlation_id=run.correlation_id, phase="pre"):
            if raise_alert(runtime.ledger, run.correlation_id, AlertKind.MISSED_PRE_EVENT, _message(run),
                           once=run.correlation_id, machines=run.machines, statuses=list(run.statuses)):
                alerted.append(run.correlation_id)
                runtime.ledger.update_run(run.correlation_id, {
                    "CorrelationId": run.correlation_id, "MaintenanceConfigurationId": run.configuration_id,
                    "WindowStart": run.started})
    log.info("missed pre events: %d run(s) started in the watched span, %d newly alerted", len(runs), len(alerted))
    return alerted


def _message(run: StartedRun) -> str:
    configuration = name_of(run.configuration_id) or run.configuration_id
    return (f"the window of run {name_of(run.correlation_id)} of configuration {configuration} started at "
            f"{run.started:%Y-%m-%d %H:%M} UTC ({run.machines} machine(s), {'/'.join(run.statuses)}) and no pre "
            "event was received: nothing was started, snapshotted or checked before it. Check the Event Grid "
            "subscription of the configuration's system topic and its dead-letter container")
