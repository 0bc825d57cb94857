"""The UA's timer heap: every transaction's and session's next deadline, earliest first.

Sans-IO beside ``timers`` (RFC 3261's timer values): the user agent arms one loop timer for
``first()`` and, when it fires, asks ``pop_due`` which owners to run. Kept apart from the UA
so its bookkeeping (slots, stale entries, compaction) is one module's job.
"""

from __future__ import annotations

import heapq
from typing import Protocol

__all__ = ["TimerHeap", "TimerOwner"]


class TimerOwner(Protocol):
    def next_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class _Slot:
    """An owner's place in the timer heap: every heap entry of one owner names the same
    slot, and ``forget`` (a session's ``unschedule``, a transaction's end) empties it. An ended
    session's entries may stay in the heap until their deadline or the next compaction, but
    what they hold is this empty slot, not the session with its dialog, 2xx, SDP and
    application state: held by the heap until then, those were most of a soak's RSS growth
    (bench/RESULTS.md, "Per-call retention")."""

    __slots__ = ("entries", "owner", "pushed")

    def __init__(self, owner: TimerOwner) -> None:
        self.owner: TimerOwner | None = owner
        self.entries = 0  # heap entries naming this slot
        self.pushed: float | None = None  # the deadline last pushed, while still in the heap


class TimerHeap:
    """Deadlines of timer owners; an owner may have several entries (each deadline it was
    pushed with), all naming its one slot."""

    __slots__ = ("_counter", "_heap", "_slots", "_stale")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Slot]] = []
        # The slot of every owner with entries in the heap (by identity: owners need not be
        # hashable by value); an owner leaves when its last entry does, or at ``forget``.
        self._slots: dict[int, _Slot] = {}
        self._counter = 0
        self._stale = 0  # heap entries whose slot was emptied (forgotten owners)

    def __len__(self) -> int:
        return len(self._heap)

    def first(self) -> float | None:
        """The earliest deadline in the heap (possibly an emptied entry's)."""
        return self._heap[0][0] if self._heap else None

    def owners(self) -> list[TimerOwner | None]:
        """The owner of every entry, None for an emptied one (for tests and probes)."""
        return [entry[2].owner for entry in self._heap]

    def push(self, owner: TimerOwner, deadline: float) -> bool:
        """Add ``owner``'s ``deadline``; False if that deadline is in the heap already (a
        transaction pumped again), when nothing changes."""
        slot = self._slots.get(id(owner))
        if slot is None:
            slot = self._slots[id(owner)] = _Slot(owner)
        elif slot.pushed == deadline:
            return False
        slot.entries += 1
        slot.pushed = deadline
        self._counter += 1
        heapq.heappush(self._heap, (deadline, self._counter, slot))
        return True

    def forget(self, owner: TimerOwner) -> None:
        """``owner`` has no deadlines left: its entries let go of it now. The emptied entries
        go at their deadline or in the next compaction (when they are more than a quarter)."""
        slot = self._slots.pop(id(owner), None)
        if slot is None:
            return
        slot.owner = None
        self._stale += slot.entries
        if self._stale > max(64, len(self._heap) // 4):
            self._compact()

    def _compact(self) -> None:
        """Drop the heap's entries of emptied slots and of owners with no deadline left."""
        kept: list[tuple[float, int, _Slot]] = []
        for entry in self._heap:
            owner = entry[2].owner
            if owner is not None and owner.next_timer() is not None:
                kept.append(entry)
        for slot in self._slots.values():
            slot.entries = 0
            slot.pushed = None
        for deadline, _, slot in kept:
            slot.entries += 1
            slot.pushed = deadline if slot.pushed is None else max(slot.pushed, deadline)
        self._slots = {key: slot for key, slot in self._slots.items() if slot.entries}
        heapq.heapify(kept)
        self._heap = kept
        self._stale = 0

    def pop_due(self, now: float) -> list[TimerOwner]:
        """The owners of every heap entry due at ``now``, each once, in deadline order; a
        slot whose last entry leaves the heap leaves the slot table (the owner's next
        ``push`` makes a new one)."""
        due: list[TimerOwner] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, slot = heapq.heappop(heap)
            slot.entries -= 1
            if slot.pushed == deadline:
                slot.pushed = None
            owner = slot.owner
            if owner is None:
                self._stale = max(0, self._stale - 1)
                continue
            if slot.entries == 0:
                del self._slots[id(owner)]
            if owner not in due:
                due.append(owner)
        return due
