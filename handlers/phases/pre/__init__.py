"""The pre phase: its steps, in order, and where each runs.

Scopes (`handlers.phases.steps.Scope`): `whole` is the phase in one worker, `group` one group of
subscriptions of a split run (`fan_out`), `verdict` the verdict of a split run or the fallback
verdict at the deadline. A step that changes anything runs its preview in a dry run.
"""

from __future__ import annotations

from handlers.adapters.channels import EMAIL_SEND
from handlers.adapters.inventory import RunMachine
from handlers.core.logs import RunLogger
from handlers.core.work import Step as Message
from handlers.core.work import WorkMessage
from handlers.phases.claims import Heartbeat
from handlers.phases.guest import RUN_COMMANDS
from handlers.phases.notify import notify_pre
from handlers.phases.pre.discover import discover
from handlers.phases.pre.fan_out import collect, dispatch, queue_fallback_verdict
from handlers.phases.pre.hold import await_approval
from handlers.phases.pre.in_guest import plan_guest
from handlers.phases.pre.late import refuse_late_event
from handlers.phases.pre.plan import plan
from handlers.phases.pre.send import preview_sends, send_and_wait
from handlers.phases.pre.starts import plan_snapshot_requests, plan_starts
from handlers.phases.pre.state import PreWork, summarize
from handlers.phases.pre.verdict import cancel, check, decide, preview_cancel
from handlers.phases.steps import NO_INVOCATION_END, PhaseRun, Scope, Step, invocation_end, run_steps
from handlers.runtime import Runtime

W, G, V = Scope.WHOLE, Scope.GROUP, Scope.VERDICT
# Each step's `permissions` are the Azure actions it calls: the custom roles of infra/ hold exactly
# these (tests/infra/test_least_privilege.py), reads come from Reader. Resource Graph shows only what
# the identity can read, so discovery's reads are the machines' own.
GRAPH_READ = "Microsoft.ResourceGraph/resources/read"
VM_READ = "Microsoft.Compute/virtualMachines/read"
ARC_READ = "Microsoft.HybridCompute/machines/read"

STEPS: list[Step[PreWork]] = [
    Step("late-event", "pre", refuse_late_event, "start nothing for a pre event after its window began or its post",
         scopes=frozenset({W, G}), records=("LatePreEvent", "alert-late-pre-event")),
    Step("fallback-verdict", "pre", queue_fallback_verdict, "queue the verdict for the deadline, in case this "
         "phase fails on every attempt", changes=True, scopes=frozenset({W}),
         settings=("MAINTENANCE_CUTOFF_SAFETY_SECONDS",), records=("FallbackQueuedAt",)),
    Step("discover", "pre", discover, "find the run's machines and the subscriptions the identity cannot read",
         scopes=frozenset({W, G}), permissions=(GRAPH_READ, VM_READ, ARC_READ),
         records=("UnreadableSubscriptions", "SubscriptionsWithoutMachines")),
    Step("notify", "pre", notify_pre, "the pre notice (machines, window, the hold link) to the configured "
         "channels, once", essential=False, scopes=frozenset({W}), permissions=(GRAPH_READ, *EMAIL_SEND),
         settings=("MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT", "MAINTENANCE_EMAIL_ENDPOINT",
                   "MAINTENANCE_TEAMS_WEBHOOK_URL", "MAINTENANCE_NOTIFY_DRY_RUN", "MAINTENANCE_HOLD_KEY"),
         records=("notice-*",)),
    Step("fan-out", "pre", dispatch, "split a run over many subscriptions into queue messages of a few each, each "
         "group's machines and views handed off in blob storage",
         changes=True, scopes=frozenset({W}), permissions=(GRAPH_READ,),
         settings=("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", "MAINTENANCE_HANDOFF_CONTAINER"),
         records=("SplitMessages", "HandedOff", "phase-pre-lane-*")),
    Step("collect", "pre", collect, "gather what the groups of a split run recorded (the machines found again when "
         "one did not finish); delete the hand-offs",
         scopes=frozenset({V}), permissions=(GRAPH_READ,), settings=("MAINTENANCE_HANDOFF_CONTAINER",)),
    Step("plan", "pre", plan, "plan each machine (start or not) and each disk's snapshot",
         scopes=frozenset({W, G}), permissions=(GRAPH_READ, VM_READ),
         settings=("MAINTENANCE_START_VMS", "MAINTENANCE_OPT_OUT_TAG", "MAINTENANCE_SNAPSHOT_DISKS"),
         records=("machine-*", "snapshot-*")),
    Step("guest-plan", "pre", plan_guest, "read the in-guest tags (services, scripts, wave) and build the "
         "run commands still due", scopes=frozenset({W, G}),
         settings=("MAINTENANCE_GUEST_ACTIONS", "MAINTENANCE_SCRIPT_FOLDER", "MAINTENANCE_SCRIPT_CONTAINER",
                   "MAINTENANCE_SCRIPT_TIMEOUT_SECONDS"), records=("machine-*",)),
    Step("starts", "pre", plan_starts, "the VMs whose start is due (an earlier attempt's are read back)",
         scopes=frozenset({W, G}), permissions=("Microsoft.Compute/virtualMachines/instanceView/read",)),
    Step("snapshots", "pre", plan_snapshot_requests, "the snapshot requests due",
         scopes=frozenset({W, G}), settings=("MAINTENANCE_SNAPSHOT_INCREMENTAL", "MAINTENANCE_SNAPSHOT_RETENTION_DAYS",
                                             "MAINTENANCE_SNAPSHOT_RESOURCE_GROUP")),
    Step("send", "pre", send_and_wait, "store the rows; send the starts, run commands and snapshots, wave by "
         "wave; wait until the deadline", preview=preview_sends, changes=True, scopes=frozenset({W, G}),
         permissions=("Microsoft.Compute/virtualMachines/start/action", "Microsoft.Compute/snapshots/write",
                      *RUN_COMMANDS),
         settings=("MAINTENANCE_PARALLELISM", "MAINTENANCE_CUTOFF_SAFETY_SECONDS", "MAINTENANCE_POLL_INTERVAL_SECONDS"),
         records=("machine-*", "snapshot-*")),
    Step("await-approval", "pre", await_approval, "in approval mode, leave the verdict to a person's approval "
         "(or to the deadline's verdict without one)", scopes=frozenset({W, V}),
         settings=("MAINTENANCE_APPROVAL_MODE", "MAINTENANCE_HOLD_KEY"), records=("AwaitingApprovalSince",)),
    Step("checks", "pre", check, "run the pre-checks over the run", scopes=frozenset({W, V}),
         settings=("MAINTENANCE_PRE_CHECKS", "MAINTENANCE_HOLD_TAG", "MAINTENANCE_CHECK_VM_AGENT",
                   "MAINTENANCE_HTTP_PROBE_URL"), records=("CheckFailures",)),
    Step("verdict", "pre", decide, "the verdict: ready, or the reasons against the run", scopes=frozenset({W, V}),
         records=("Verdict", "Checks", "FailingReasons")),
    Step("cancel", "pre", cancel, "cancel a failed run before the cutoff", preview=preview_cancel, changes=True,
         scopes=frozenset({W, V}), permissions=("Microsoft.Maintenance/applyUpdates/write",),
         settings=("MAINTENANCE_CANCEL_ON_FAILURE", "MAINTENANCE_UNCHECKED_RUN", "MAINTENANCE_CANCEL_API_VERSION"),
         records=("CancelOutcome", "alert-cancel-not-made", "alert-unchecked-run")),
]
# A rehearsal runs in one process with nothing draining the queue: no split, no fallback message.
REHEARSAL_STEPS = [step for step in STEPS if step.name not in ("fallback-verdict", "fan-out", "notify")]


def run_pre(runtime: Runtime, work: WorkMessage, log: RunLogger, *, beat: Heartbeat | None = None,
            machines: list[RunMachine] | None = None) -> PhaseRun[PreWork]:
    """The pre phase's steps for this message (the whole phase, a group, or the verdict).
    `machines` replaces discovery (a rehearsal of a run that has not happened)."""
    scope = {Message.LANES: G, Message.VERDICT: V}.get(work.step, W)
    steps = STEPS if beat is not None else REHEARSAL_STEPS
    # A rehearsal (no claim) runs in a process of its own, not in an invocation with a timeout.
    until = invocation_end(runtime) if beat is not None else NO_INVOCATION_END
    run = PhaseRun(runtime, work, log, scope, PreWork(given_machines=machines), invocation_end=until, beat=beat)
    run_steps(steps, run)
    if not run.ended:
        run.summary.update(summarize(run.state))
        if scope is G:
            for key in ("verdict", "cancel"):
                run.summary.pop(key, None)
            run.summary["subscriptions"] = list(work.lanes)
    return run

