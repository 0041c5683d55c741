"""A fair queue for the runs of one machine: at most `slots` train at once, the others wait their turn.

Each run started beyond the slots waits; when a run ends, the next to start is the one whose owner has the
fewest runs training (a student whose run is training waits behind one whose has not), then the one that
has waited longest. Runs side by side share the cores: each run's threads follow what the others leave
(workbench.engine.threads), so the machine is never oversubscribed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


def default_slots() -> int:
    """A run per GPU where there are GPUs, else a run per core (a small model's step uses one core well)."""
    import torch  # here: deciding the slots is the only use of torch by the app's own process

    from workbench.engine.threads import usable_cores

    return torch.cuda.device_count() or usable_cores()


@dataclass
class Entry:
    owner: str
    run_id: str
    launch: Callable[[], None] = field(repr=False)


class Scheduler:
    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"a scheduler needs at least one slot, got {slots}")
        self.slots = slots
        self._lock = threading.Lock()
        self._running: list[Entry] = []
        self._waiting: list[Entry] = []

    def submit(self, owner: str, run_id: str, launch: Callable[[], None]) -> None:
        """Launch the run now if a slot is free, else when its turn comes (`launch` is called then, once)."""
        entry = Entry(owner, run_id, launch)
        with self._lock:
            starts = len(self._running) < self.slots
            (self._running if starts else self._waiting).append(entry)
        if starts:
            launch()

    def done(self, run_id: str) -> None:
        """The run ended (or, waiting, was withdrawn): its slot goes to the next in turn."""
        with self._lock:
            self._waiting = [e for e in self._waiting if e.run_id != run_id]
            self._running = [e for e in self._running if e.run_id != run_id]
            starting = []
            while self._waiting and len(self._running) < self.slots:
                entry = self._in_turn()[0]
                self._waiting.remove(entry)
                self._running.append(entry)
                starting.append(entry)
        for entry in starting:
            entry.launch()

    def place(self, run_id: str) -> int | None:
        """1 for the next run to start, 2 for the one after...; None for a run that is not waiting."""
        with self._lock:
            ids = [e.run_id for e in self._in_turn()]
        return ids.index(run_id) + 1 if run_id in ids else None

    def waiting(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(e.owner, e.run_id) for e in self._in_turn()]

    def running(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(e.owner, e.run_id) for e in self._running]

    def _in_turn(self) -> list[Entry]:
        """The waiting runs in the order they will start: fewest runs of their owner's training first, then the
        longest waiting (the list is in arrival order, and the sort keeps it among equals)."""
        return sorted(self._waiting, key=lambda e: sum(r.owner == e.owner for r in self._running))
