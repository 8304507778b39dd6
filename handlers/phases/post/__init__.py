"""The post phase: its steps, in order.

`restore-power`, `patch-results`, `retention` and `health` run beside the steps after them
(`Step.beside`). The restores' plan first, alone (they are what is billed); once it is stored,
the others start while the restores are sent: the patch results (Resource Graph reads, ledger
writes), the deletes (on ARM's delete budget, which nothing else here uses) and the health
checks (reads). `tags` waits for the patch results it stamps and for the restores' requests to
be out: its writes come right after theirs in ARM's write budget. `report` starts when all four
have ended. `start-services` and the steps after `restore-power` are not essential: a failure
there is recorded on the run and the steps after it (the report, the notifications) still run.
A step that runs out of its invocation's time (the restores may wait for up to
MAINTENANCE_RESTORE_TIMEOUT_SECONDS) hands the phase to a new invocation, which leaves out the
steps that finished.
"""

from __future__ import annotations

import json

from handlers.adapters.patch_results import PATCH_RESULTS_READ
from handlers.core.logs import RunLogger
from handlers.core.work import WorkMessage
from handlers.phases.claims import Heartbeat
from handlers.phases.guest import RUN_COMMANDS
from handlers.phases.notify import notify_on_end
from handlers.phases.post.await_pre import await_pre
from handlers.phases.post.health import check_health
from handlers.phases.post.in_guest import preview_start_services, start_services
from handlers.phases.post.patch_results import read_patch_results
from handlers.phases.post.report import report_on_unfinished_end, write_report
from handlers.phases.post.restore import preview_restore, restore_power
from handlers.phases.post.retention import preview_retention, run_retention
from handlers.phases.post.stamp_tags import preview_tags, stamp_tags
from handlers.phases.post.state import PostWork
from handlers.phases.run_end import LISTENERS
from handlers.phases.steps import PhaseRun, Scope, Step, invocation_end, run_steps
from handlers.runtime import Runtime

STEPS: list[Step[PostWork]] = [
    Step("await-pre", "post", await_pre, "record the run's status; wait for the pre phase to end",
         records=("PostStatus", "RunStatus")),
    Step("start-services", "post", start_services, "start in the guests what the pre phase stopped, run the post "
         "scripts (on machines that stay on), wave by wave", preview=preview_start_services, changes=True,
         essential=False, settings=("MAINTENANCE_GUEST_ACTIONS", "MAINTENANCE_SCRIPT_FOLDER",
                                    "MAINTENANCE_SCRIPT_CONTAINER", "MAINTENANCE_SCRIPT_TIMEOUT_SECONDS"),
         permissions=RUN_COMMANDS, records=("machine-*", "GuestPostDeadline")),
    Step("restore-power", "post", restore_power, "put back exactly the VMs the pre phase started (deallocations "
         "first); once what it will send is stored, the steps after it go on while it sends and waits", beside=True,
         preview=preview_restore, changes=True,
         settings=("MAINTENANCE_RESTORE_VMS", "MAINTENANCE_RESTORE_TIMEOUT_SECONDS", "MAINTENANCE_PARALLELISM"),
         permissions=("Microsoft.Compute/virtualMachines/deallocate/action",
                      "Microsoft.Compute/virtualMachines/powerOff/action"),
         records=("machine-*", "RestoreDeadline", "RestoreSummary", "alert-left-running")),
    Step("patch-results", "post", read_patch_results, "beside the steps after it from the start: read what Update "
         "Manager installed in each machine, until every one has a final result or the wait is over",
         essential=False, beside=True, settings=("MAINTENANCE_PATCH_RESULTS_WAIT_SECONDS",),
         permissions=PATCH_RESULTS_READ, records=("machine-*", "PatchResultsWaited", "PatchSummary")),
    Step("retention", "post", run_retention, "beside the steps after it from the start: delete this toolkit's "
         "expired snapshots (not those of failed runs)", preview=preview_retention, changes=True, essential=False,
         beside=True, settings=("MAINTENANCE_SNAPSHOT_RETENTION_DAYS",),
         permissions=("Microsoft.Compute/snapshots/delete",),
         records=("RetentionSeen", "RetentionExpired", "RetentionDeleted", "RetentionFailed")),
    Step("health", "post", check_health, "check the machines are healthy after patching (running again, VM agent "
         "Ready, the http probe), rechecking the failing ones until the wait is over; name the rollback candidates; "
         "beside the steps after it from the start", essential=False, beside=True,
         settings=("MAINTENANCE_POST_CHECKS", "MAINTENANCE_POST_CHECK_WAIT_SECONDS", "MAINTENANCE_HTTP_PROBE_URL",
                   "MAINTENANCE_HTTP_PROBE_TIMEOUT_SECONDS", "MAINTENANCE_POLL_INTERVAL_SECONDS"),
         permissions=("Microsoft.Compute/virtualMachines/instanceView/read", "Microsoft.ResourceGraph/resources/read"),
         records=("machine-*", "HealthWaited", "HealthSummary")),
    Step("tags", "post", stamp_tags, "once the patch results are read and the restores sent, stamp each machine with "
         "the run's time and its patch status (merged: no other tag is touched)", waits_for=("patch-results",),
         preview=preview_tags, changes=True, essential=False, settings=("MAINTENANCE_RESULT_TAGS",),
         permissions=("Microsoft.Resources/tags/write",), records=("TagsStamped", "TagsFailed")),
    Step("report", "post", write_report, "once the restores, patch results, retention and health have ended, write "
         "the run's report (JSON and HTML) to the app's storage", essential=False,
         waits_for=("restore-power", "patch-results", "retention", "health"),
         settings=("MAINTENANCE_REPORT_CONTAINER",), records=("ReportUrl", "ReportJsonUrl")),
]

# A post phase that never reaches `report` still gets one (the listener writes it at the phase's end);
# then the milestones go out (the post summary links the report, so it comes after it).
for _listener in (report_on_unfinished_end, notify_on_end):
    if _listener not in LISTENERS:
        LISTENERS.append(_listener)


def run_post(runtime: Runtime, work: WorkMessage, log: RunLogger, *,
             beat: Heartbeat | None = None) -> PhaseRun[PostWork]:
    """The post phase's steps, from the step the message resumes at."""
    run = PhaseRun(runtime, work, log, Scope.WHOLE, PostWork(), invocation_end=invocation_end(runtime), beat=beat)
    run_steps(STEPS, run, resume=work.resume, done=work.done)
    if "restore" not in run.summary:  # the restores ended in an earlier invocation: the phase's summary has them
        recorded = (runtime.ledger.get_run(work.event.correlation_id) or {}).get("RestoreSummary")
        if isinstance(recorded, str) and recorded:
            run.summary = {**json.loads(recorded), **run.summary}
    return run
