"""The clock the MSRP asyncio layer reads and arms its timers on.

The transport's own timers (a peer that never connects, an accepted connection that names no
session, an idle connection, the core's deadline) are read and armed here rather than on the
event loop directly, so a test can hand in a clock it moves by hand (aioquic's cores take
``now`` for the same reason) and check a 30 s idle timeout without waiting 30 s or racing a
0.3 s one on a busy machine. In the server it is the event loop's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "LoopClock", "TimerHandle"]


class TimerHandle(Protocol):
    # No when(): uvloop's call_at hands back a plain Handle for a deadline already passed.
    def cancel(self) -> None: ...


class Clock(Protocol):
    """``time()`` and ``call_at()`` as :class:`asyncio.AbstractEventLoop` has them."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle: ...


class LoopClock:
    """The running event loop's clock (the default)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def time(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        return self.loop.call_at(when, callback)
