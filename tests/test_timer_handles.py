"""Loop timers armed for a deadline already passed: uvloop's `call_at` then hands back a plain
`Handle`, which has no `when()`.  The screen-sharing board and the MSRP connection re-arm
their one timer by comparing deadlines; they must keep the deadline themselves (the SIP UA's
same bug, a9be393, logged a traceback per call under load and never freed BYE transactions)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from control.conference.screen import ScreenSharing
from control.msrp.transport import _Connection


class PlainHandleLoop:
    """A clock like uvloop's for passed deadlines: `call_at` gives a Handle without when()."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.armed: list[tuple[float, asyncio.Handle]] = []
        self.loop = asyncio.new_event_loop()  # what a Handle needs to exist; never run

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.Handle:
        handle = asyncio.Handle(callback, (), self.loop)
        assert not hasattr(handle, "when")
        self.armed.append((when, handle))
        return handle


class OneDeadline:
    """A sans-IO core with one deadline, in the past."""

    def __init__(self, deadline: float) -> None:
        self.deadline: float | None = deadline
        self.fired: list[float] = []

    def next_timer(self) -> float | None:
        return self.deadline

    def next_event(self) -> None:
        return None

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.deadline = None


def test_screen_sharing_rearms_and_fires_a_plain_handle() -> None:
    loop = PlainHandleLoop(now=100.0)
    board = OneDeadline(deadline=99.0)
    sharing = ScreenSharing(board, loop=loop)  # type: ignore[arg-type]
    sharing._pump()
    sharing._pump()  # the same deadline again: kept, not re-armed, no when() asked
    assert [when for when, _ in loop.armed] == [99.0]
    board.deadline = 99.5  # a new deadline: the old handle cancelled, a new one armed
    sharing._pump()
    assert [when for when, _ in loop.armed] == [99.0, 99.5]
    assert loop.armed[0][1].cancelled()
    sharing._on_timer()
    assert board.fired == [100.0]  # never before the deadline it was armed for
    sharing.close()
    loop.loop.close()


def test_msrp_connection_rearms_a_plain_handle() -> None:
    clock = PlainHandleLoop(now=100.0)
    core = OneDeadline(deadline=99.0)
    connection = _Connection.__new__(_Connection)
    connection.core = core  # type: ignore[assignment]
    connection.clock = clock  # type: ignore[assignment]
    connection.closing = False
    connection._timer = None
    connection._timer_at = 0.0
    connection._arm()
    connection._arm()
    assert [when for when, _ in clock.armed] == [99.0]
    core.deadline = 101.0
    connection._arm()
    assert [when for when, _ in clock.armed] == [99.0, 101.0]
    assert clock.armed[0][1].cancelled()
    clock.loop.close()
