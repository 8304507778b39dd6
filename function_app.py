"""Azure Functions entry points (v2 programming model). Wiring only: logic is in `handlers/`.

- `pre_maintenance` / `post_maintenance`: Event Grid triggers; they validate, record the run and
  queue the work, then return at once so Event Grid never redelivers because we were slow.
- `maintenance_worker`: Storage-queue trigger doing the long work (starting, waiting, restoring).
- `maintenance_events_queue`: Storage-queue trigger for operators who have Event Grid deliver to a
  queue instead of the functions.
- `scheduled_event`: Event Grid trigger recording the Scheduled Events (platform maintenance)
  forwarded by the in-VM agent (`agent/`) in the ledger.
- `maintenance_link`: HTTP (anonymous: the link's signed token is the authority) behind the pre
  notice's hold and approve links.
- `missed_pre_events`: a timer (every five minutes) alerting on each run whose window started
  with no pre event recorded: what no event-driven alert can see.
- `maintenance_work_poison` / `maintenance_events_poison`: the messages of those two queues that
  failed on every attempt (the host moves them to `<queue>-poison`): alerted and recorded, and
  what can still be saved is (a verdict before the cutoff, one more try of an event).

Each function takes the invocation's `context` and runs its handler in it (`invocation`): the
threads a handler hands work to then log under the invocation, and its spans are children of the
host's (see README, Telemetry).
"""

from __future__ import annotations

import azure.functions as func

from handlers.core.events import EventKind
from handlers.core.settings import queue_names

# The handlers (and the Azure SDKs under them) are imported inside each function: the host
# indexes this module on every cold start, and an Event Grid acknowledgement must not wait for
# the compute and Resource Graph SDKs that only the queue worker uses.

WORK_QUEUE, EVENTS_QUEUE = queue_names()

app = func.FunctionApp()


@app.function_name("pre_maintenance")
@app.event_grid_trigger(arg_name="event")
def pre_maintenance(event: func.EventGridEvent, context: func.Context) -> None:
    from handlers.edge.intake import accept_event_grid_event
    from handlers.runtime import get_runtime, invocation

    with invocation(context):
        accept_event_grid_event(get_runtime(), event, expected=EventKind.PRE)


@app.function_name("post_maintenance")
@app.event_grid_trigger(arg_name="event")
def post_maintenance(event: func.EventGridEvent, context: func.Context) -> None:
    from handlers.edge.intake import accept_event_grid_event
    from handlers.runtime import get_runtime, invocation

    with invocation(context):
        accept_event_grid_event(get_runtime(), event, expected=EventKind.POST)


@app.function_name("maintenance_worker")
@app.queue_trigger(arg_name="message", queue_name=WORK_QUEUE, connection="AzureWebJobsStorage")
def maintenance_worker(message: func.QueueMessage, context: func.Context) -> None:
    from handlers.edge.worker import run_work_message
    from handlers.runtime import get_runtime, invocation

    with invocation(context):
        run_work_message(get_runtime(), message)


@app.function_name("maintenance_events_queue")
@app.queue_trigger(arg_name="message", queue_name=EVENTS_QUEUE, connection="AzureWebJobsStorage")
def maintenance_events_queue(message: func.QueueMessage, context: func.Context) -> None:
    from handlers.edge.intake import accept_queue_delivery
    from handlers.runtime import get_runtime, invocation

    with invocation(context):
        accept_queue_delivery(get_runtime(), message.get_body())


@app.function_name("scheduled_event")
@app.event_grid_trigger(arg_name="event")
def scheduled_event(event: func.EventGridEvent, context: func.Context) -> None:
    from handlers.edge.platform_events import record_platform_event
    from handlers.runtime import get_runtime, invocation

    with invocation(context):
        record_platform_event(get_runtime(), event)


@app.function_name("maintenance_link")
@app.route(route="maintenance/{action}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def maintenance_link(request: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    from handlers.edge.run_link import answer_link
    from handlers.runtime import get_runtime, invocation

    with invocation(context):
        return answer_link(get_runtime(), request)


@app.function_name("missed_pre_events")
@app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False, use_monitor=True)
def missed_pre_events(timer: func.TimerRequest, context: func.Context) -> None:
    from handlers.edge.missed_pre import watch_missed_pre_events
    from handlers.runtime import get_runtime, invocation

    with invocation(context):
        watch_missed_pre_events(get_runtime())


@app.function_name("maintenance_work_poison")
@app.queue_trigger(arg_name="message", queue_name=f"{WORK_QUEUE}-poison", connection="AzureWebJobsStorage")
def maintenance_work_poison(message: func.QueueMessage, context: func.Context) -> None:
    from handlers.edge.poison import handle_work_poison
    from handlers.runtime import get_runtime, invocation

    with invocation(context):
        handle_work_poison(get_runtime(), message)


@app.function_name("maintenance_events_poison")
@app.queue_trigger(arg_name="message", queue_name=f"{EVENTS_QUEUE}-poison", connection="AzureWebJobsStorage")
def maintenance_events_poison(message: func.QueueMessage, context: func.Context) -> None:
    from handlers.edge.poison import handle_events_poison
    from handlers.runtime import get_runtime, invocation

    with invocation(context):
        handle_events_poison(get_runtime(), message)
