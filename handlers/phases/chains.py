"""Operations that wait for others: a machine's chain, and waves of machines.

A chain is one machine's operations in order (start it, run its pre script, stop its services),
each sent when the one before it has ended, and what waits for the whole chain (its snapshots,
taken once the services are stopped). A strict chain stops at the first operation that did not
succeed; the rest are not sent. Waves (`maintenance-wave`) order the machines: the chains of
wave k+1 begin when every chain of wave k has ended (strict: and succeeded; otherwise wave k+1
is not sent and says why). Everything goes through the one waiting loop (`Operation.then`).

Follow-ups are held until `open()`: the ledger rows of a wave that has not begun may not be
stored yet when the first chains end, and no request is sent before its row is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from handlers.adapters.operations import Operation, OperationResult
from handlers.core.status import Outcome

Tasks = list[list[Operation]]


@dataclass
class Chain:
    key: str  # the machine's (lower-cased id)
    operations: list[Operation]
    after: list[Operation] = field(default_factory=list)  # sent once the chain has ended, however
    ok: bool = True
    ended: bool = False


class Waves:
    """The chains, wave by wave (`waves` lowest first); `first()` gives what is sent at once."""

    def __init__(self, waves: Iterable[list[Chain]], *, strict: bool, halted: Callable[[], str],
                 label: Callable[[int], str] = lambda index: f"wave {index + 1}") -> None:
        self._waves = [wave for wave in waves if wave]
        self._strict, self._halted, self._label = strict, halted, label
        self._current = -1
        self._held: Tasks = []
        self._open = False
        self.not_sent: dict[str, str] = {}  # chain key -> why (some of) its operations were not sent

    def first(self) -> Tasks:
        """The heads of the first wave's chains (and of the waves after it, while each is empty)."""
        return self._advance()

    def open(self) -> Tasks:
        """Every row is stored: what was held, and from now on follow-ups go out at once."""
        self._open, held, self._held = True, self._held, []
        return held

    def _advance(self) -> Tasks:
        tasks: Tasks = []
        while self._current + 1 < len(self._waves):
            if self._current >= 0 and not all(c.ended for c in self._waves[self._current]):
                break
            if self._current >= 0 and self._strict and not all(c.ok for c in self._waves[self._current]):
                failed = [c.key for c in self._waves[self._current] if not c.ok]
                self._block(self._current + 1, f"{self._label(self._current)} did not finish "
                                                f"({len(failed)} machine(s) not ready)")
                break
            halted = self._halted()
            if halted:
                self._block(self._current + 1, halted)
                break
            self._current += 1
            for chain in self._waves[self._current]:
                tasks += self._begin(chain)
        return tasks

    def _block(self, start: int, reason: str) -> None:
        for wave in self._waves[start:]:
            for chain in wave:
                chain.ended, chain.ok = True, False
                self.not_sent[chain.key] = f"{self._label(self._waves.index(wave))} not begun: {reason}"
        self._current = len(self._waves)

    def _begin(self, chain: Chain) -> Tasks:
        if not chain.operations:
            chain.ended = True
            return [[op] for op in chain.after]
        return [[self._linked(chain, 0)]]

    def _linked(self, chain: Chain, index: int) -> Operation:
        def then(result: OperationResult) -> Tasks:
            return self._hold(self._next(chain, index, result))

        return replace(chain.operations[index], then=then)

    def _next(self, chain: Chain, index: int, result: OperationResult) -> Tasks:
        if result.outcome != Outcome.SUCCEEDED:
            chain.ok = False
        halted = self._halted()
        if index + 1 < len(chain.operations) and (chain.ok or not self._strict) and not halted:
            return [[self._linked(chain, index + 1)]]
        if index + 1 < len(chain.operations):
            self.not_sent[chain.key] = halted or f"{chain.operations[index].action} did not succeed"
        chain.ended = True
        after = [[op] for op in chain.after] if not halted else []
        return after + self._advance()

    def _hold(self, tasks: Tasks) -> Tasks:
        if self._open:
            return tasks
        self._held += tasks
        return []


def waves_of(chains: Iterable[tuple[int | None, Chain]], *, descending: bool = False) -> list[list[Chain]]:
    """Chains grouped by wave: no wave first, then 0, 1, 2... (`descending`: the reverse)."""
    groups: dict[int, list[Chain]] = {}
    for wave, chain in chains:
        groups.setdefault(-1 if wave is None else wave, []).append(chain)
    return [groups[w] for w in sorted(groups, reverse=descending)]
