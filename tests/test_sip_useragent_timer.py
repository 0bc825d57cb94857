"""The UserAgent's one loop timer serves every deadline in its heap, earliest first.

Regression: when a due owner was rescheduled for later inside `_fire` (a transaction's Timer K,
a session's next refresh), the timer was armed for that owner's new deadline even though an
earlier one (another session's refresh) was still in the heap — which then waited for the
later one. A FreeSWITCH leg's session refresh never went out that way
(tests/test_freeswitch_session_timer.py).
"""

from __future__ import annotations

import asyncio

import uvloop

from control.sip.useragent import UserAgent


class Owner:
    """A TimerOwner with one deadline; once handled, the next one is ``then`` seconds on."""

    def __init__(self, ua: UserAgent, delay: float, then: float | None) -> None:
        self.ua = ua
        self.deadline: float | None = ua.now() + delay
        self.then = then
        self.handled = asyncio.Event()

    def next_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        assert self.deadline is not None and now >= self.deadline
        self.handled.set()
        self.deadline = None if self.then is None else now + self.then


async def test_an_owner_rescheduled_late_does_not_hide_an_earlier_deadline() -> None:
    ua = UserAgent()
    early = Owner(ua, 0.05, then=3600.0)  # handled first, then wants the timer an hour on
    second = Owner(ua, 0.2, then=None)  # due in between: must not wait for the hour
    ua.schedule(early)
    ua.schedule(second)
    await asyncio.wait_for(early.handled.wait(), 30)
    await asyncio.wait_for(second.handled.wait(), 30)
    assert ua._timer is not None and ua._timer_at == early.deadline  # the hour, now


async def test_deadlines_fire_in_order_whatever_order_they_were_scheduled() -> None:
    ua = UserAgent()
    owners = [Owner(ua, delay, then=None) for delay in (0.3, 0.1, 0.2)]
    for owner in owners:
        ua.schedule(owner)
    order: list[int] = []

    async def note(index: int) -> None:
        await owners[index].handled.wait()
        order.append(index)

    await asyncio.wait_for(asyncio.gather(*(note(i) for i in range(3))), 30)
    assert order == [1, 2, 0]


def test_a_deadline_already_passed_under_uvloop_does_not_break_the_next_schedule() -> None:
    """uvloop's call_at returns a plain Handle (no ``when()``) for a deadline in the past: a
    loop running late armed it so, and every schedule after raised AttributeError until it
    fired (each BYE's 200 under load: its transaction never scheduled, never freed)."""

    async def run() -> list[bool]:
        ua = UserAgent()
        late = Owner(ua, -0.5, then=None)  # due half a second ago: armed as call_soon
        ua.schedule(late)
        later = Owner(ua, 0.05, then=None)
        ua.schedule(later)  # raised here
        await asyncio.wait_for(asyncio.gather(late.handled.wait(), later.handled.wait()), 30)
        return [late.handled.is_set(), later.handled.is_set()]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(run()) == [True, True]
