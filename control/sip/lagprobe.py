"""The asyncio side of load shedding: how late a periodic callback runs on the loop, fed to
an `OverloadGuard` (control/sip/overload.py), with one log line per change of state."""

from __future__ import annotations

import asyncio
import logging

from control.sip.overload import OverloadGuard, OverloadState

__all__ = ["PROBE_INTERVAL", "LagProbe"]

log = logging.getLogger("chorus.sip.overload")

# s between probes: 20 callbacks a second cost nothing, and a lag of a quarter second is
# seen within a probe or two of it starting.
PROBE_INTERVAL = 0.05


class LagProbe:
    """A ``call_at`` every ``interval``; the lag is how far past its deadline it ran."""

    def __init__(self, guard: OverloadGuard, interval: float = PROBE_INTERVAL) -> None:
        self.guard = guard
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._arm(self._loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, now: float) -> None:
        assert self._loop is not None
        # The deadline is kept here: uvloop's call_at may hand back a Handle without when().
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = now - self._due
        guard = self.guard
        match guard.sample(now, lag):
            case OverloadState.OVERLOADED:
                log.warning(
                    "overloaded: event loop %.0f ms behind (limit %.0f ms); new requests get "
                    "503 with Retry-After %d until it catches up",
                    guard.lag * 1000,
                    guard.overload_lag * 1000,
                    guard.retry_after,
                )
            case OverloadState.NORMAL:
                log.warning(
                    "overload over: event loop %.0f ms behind; %d requests refused since start",
                    guard.lag * 1000,
                    sum(guard.shed.values()),
                )
        self._arm(now)
