"""AzureEmulator's public API for Run Command: what scripts do, Arc connectivity, what ran."""

from __future__ import annotations

from .ids import key
from .power import ARC_STATUSES, normalize_choice
from .run_command_model import RunCommandExecution, RunCommandInfo, ScriptRule, info, record
from .state import EmulatorModel


class RunCommandApi(EmulatorModel):
    """Mixed into AzureEmulator (which inherits the model through ArmService)."""

    def script_behaviour(
        self,
        machine_id: str | None = None,
        *,
        duration: float = 10.0,
        exit_code: int = 0,
        output: str = "",
        error: str = "",
        contains: str | None = None,
        times: int | None = None,
    ) -> ScriptRule:
        """Decide what the next executions do: the first armed rule whose machine matches (None: any)
        and whose `contains` (None: any) is a substring of the script text (or scriptUri, commandId)
        gives the duration (simulated seconds from start to end), exit code, output and error of an
        execution; `times` (None: always) counts down per execution. Rules apply in the order added.
        Without a rule: `run_command_default_seconds`, exit code 0, no output. An execution lasting
        longer than its timeoutInSeconds (> 0) ends TimedOut at start + timeout."""
        if duration < 0:
            raise ValueError("duration must be >= 0")
        if times is not None and times < 0:
            raise ValueError("times must be >= 0 or None")
        rule = ScriptRule(key(machine_id) if machine_id else None, float(duration), exit_code, output, error,
                          contains, times)  # fmt: skip
        with self.lock:
            self.run_command_store.rules.append(rule)
        return rule

    def clear_script_behaviours(self) -> None:
        """Forget every script_behaviour rule: executions then take the default behaviour."""
        with self.lock:
            self.run_command_store.rules.clear()

    def set_arc_status(self, machine_id: str, status: str) -> None:
        """Change an Arc machine's agent status (Connected, Disconnected, Expired): Resource Graph shows
        it at once; a run command PUT on a machine that is not Connected is refused (409)."""
        canonical = normalize_choice("status", status, ARC_STATUSES)
        with self.lock:
            self.arc_machines[key(machine_id)].status = canonical

    def run_command_executions(self, machine_id: str | None = None) -> list[RunCommandExecution]:
        """Every execution started by an accepted run command PUT, of one machine (None: all), as of
        now, ordered by start time (scheduled, for one still pending; PUT time for one that never
        started), then PUT time. Executions of deleted run commands stay listed."""
        with self.lock:
            now = self.clock.now()
            wanted = key(machine_id) if machine_id else None
            found = [ex for ex in self.run_command_store.executions if wanted is None or key(ex.machine_id) == wanted]
            # By (scheduled) start: one still pending sorts where it will start.
            found.sort(key=lambda ex: (ex.starts if ex.starts is not None else ex.put_at, ex.put_at))
            return [record(ex, now) for ex in found]

    def run_commands(self, machine_id: str) -> list[RunCommandInfo]:
        """The run command resources of a VM or Arc machine that exist now (those being deleted too,
        with `deleting` True), oldest first."""
        with self.lock:
            now = self.clock.now()
            store = self.run_command_store
            store.settle(now)
            machine = key(machine_id)
            found = [info(rc, now) for rc in store.resources.values() if key(rc.machine_id) == machine]
        return sorted(found, key=lambda i: i.created_at)
