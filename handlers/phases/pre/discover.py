"""Step `discover`: the run's machines (Resource Graph's applyUpdates records of the run) and
the event's subscriptions the app's identity cannot read. A group of a split run takes its
machines from the coordinator's hand-off (`handlers.adapters.handoffs`) when there is one."""

from __future__ import annotations

from azure.core.exceptions import AzureError

from handlers.adapters.handoffs import read_handoff
from handlers.adapters.inventory import MachineKind, RunMachine, find_run_machines, find_unreadable_subscriptions
from handlers.adapters.operations import describe_error
from handlers.core.errors import SettingsError
from handlers.core.ids import subscription_of
from handlers.core.status import Verdict
from handlers.phases.pre.state import PreWork
from handlers.phases.steps import Ended, PhaseRun, Scope

EMPTY_RUN_HINT = (
    "no machines found for this run. Likely causes: the app's identity has no Reader role on a "
    "target subscription (Resource Graph then returns nothing rather than an error), the run's "
    "scope holds only machines outside these subscriptions (Arc-enabled servers are listed but "
    "never started), or the dynamic scope matched nothing"
)


def discover(run: PhaseRun[PreWork]) -> None:
    work, event, log = run.state, run.event, run.log
    scope = list(run.work.lanes) if run.scope is Scope.GROUP else None
    machines = work.given_machines
    if machines is None and scope is not None:
        machines = _handed_off(run)
    if machines is None:
        machines = find_run_machines(run.runtime.clients.resource_graph(), scope or event.subscription_ids,
                                     event.correlation_id, log=log)
    if scope is not None:
        work.machines = [m for m in machines if subscription_of(m.resource_id) in scope]
    else:
        work.machines = machines
        work.unreadable = _unreadable_subscriptions(run)
        if not machines and not work.unreadable:
            log.warning(EMPTY_RUN_HINT)
            run.runtime.ledger.update_run(event.correlation_id, {"Verdict": Verdict.EMPTY.value, "MachineCount": 0})
            run.end(Ended.EMPTY, machines=0, verdict=Verdict.EMPTY.value)
            return
    if work.machines and all(m.kind is MachineKind.ARC for m in work.machines):
        log.warning("every machine of this run is an Arc-enabled server: none can be started or snapshotted "
                    "from Azure")


def _handed_off(run: PhaseRun[PreWork]) -> list[RunMachine] | None:
    """A group's machines (and views, for `plan`) as the coordinator stored them; None when there
    is no hand-off or it cannot be read (the group then asks Resource Graph)."""
    runtime, event = run.runtime, run.event
    try:
        handed = read_handoff(runtime.handoff_container(), event.correlation_id, run.work.ledger_phase)
    except (AzureError, SettingsError, ValueError) as exc:
        run.log.warning("the coordinator's hand-off could not be read (asking Resource Graph instead): %s",
                        describe_error(exc) if isinstance(exc, AzureError) else exc)
        return None
    if handed is None:
        return None
    machines, run.state.handed_views = handed
    return machines


def _unreadable_subscriptions(run: PhaseRun[PreWork]) -> list[str]:
    """The event's subscriptions the app cannot read (warned about and recorded; the
    subscriptions-readable check fails the run for them), and those holding none of the run's
    machines (warned about and recorded only: a dynamic scope may match nothing there)."""
    event, log = run.event, run.log
    unreadable = find_unreadable_subscriptions(run.runtime.clients.resource_graph(), event.subscription_ids)
    for subscription in unreadable:
        log.warning("subscription %s is not readable by the app's identity: Resource Graph shows nothing of it, so "
                    "its machines can be neither found nor started. The likely cause is a missing Reader role "
                    "assignment for the identity on that subscription", subscription)
    with_machines = {subscription_of(m.resource_id) for m in run.state.machines}
    empty = [s for s in event.subscription_ids if s not in with_machines and s not in unreadable]
    for subscription in empty:
        log.warning("subscription %s is readable but holds none of this run's machines", subscription)
    if unreadable or empty:
        run.runtime.ledger.update_run(event.correlation_id, {"UnreadableSubscriptions": ",".join(unreadable),
                                                             "SubscriptionsWithoutMachines": ",".join(empty)})
    return unreadable
