"""The cluster core (control/cluster.py) on a fake clock, no Kamailio: which RPC comes next.

It registers before anything else, pins each live room once and refreshes the pin after a
third of its life, never sends a pin for a room that ended before its turn, marks itself
draining (and is drained when its last room ends), retries with doubling back-off after a
failure and reports only the first failure of an outage, and on stop deletes its pins before
it leaves the set. The agent's loop and the RoomObserver side run against a fake RPC.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from control.cluster import (
    CheckRegistration,
    ClusterAgent,
    ClusterCore,
    ClusterSettings,
    MarkActive,
    MarkDraining,
    NodePhase,
    Pin,
    Register,
    Unpin,
    Unregister,
    install_signal_handlers,
    signal_running_node,
)
from control.config import parse_config
from control.kamailio import KamailioUnreachable
from control.media.engine import RoomId

NODE = "sip:127.0.0.1:5090"
SETTINGS = ClusterSettings(rpc_url="http://127.0.0.1:1/RPC", node_uri=NODE, pin_expiry=90.0)


def started(now: float = 0.0) -> ClusterCore:
    core = ClusterCore(SETTINGS)
    core.start(now)
    action = core.next_action(now)
    assert action == Register()
    core.done(action, now)
    return core


def step(core: ClusterCore, now: float, **kwargs: Any) -> Any:
    """Take the next action and report it done."""
    action = core.next_action(now)
    if action is not None:
        core.done(action, now, **kwargs)
    return action


def test_nothing_before_start_then_register_first() -> None:
    core = ClusterCore(SETTINGS)
    core.room_opened(RoomId("a@h"))
    assert core.next_action(0.0) is None
    core.start(0.0)
    assert core.next_action(0.0) == Register()
    # one RPC at a time: nothing more while it is in flight
    assert core.next_action(0.0) is None
    assert core.next_deadline() is None


def test_pins_once_and_refreshes_after_a_third_of_the_expiry() -> None:
    core = started()
    core.room_opened(RoomId("a@h"))
    assert step(core, 1.0) == Pin(RoomId("a@h"))
    assert core.next_action(1.0) is None
    # the pin is refreshed at 1 + 90/3 = 31; the registration check comes at 30
    assert core.next_deadline() == 30.0
    assert step(core, 30.0, listed_flags="AP") == CheckRegistration()
    assert core.next_deadline() == 31.0
    assert core.next_action(30.5) is None
    assert step(core, 31.0) == Pin(RoomId("a@h"))
    assert core.pinned == {RoomId("a@h"): 31.0}


def test_a_room_that_ended_before_its_turn_is_never_sent() -> None:
    core = started()
    core.room_opened(RoomId("brief@h"))
    core.room_closed(RoomId("brief@h"))
    assert core.next_action(0.0) is None


def test_room_end_unpins_and_a_late_pin_answer_does_not_resurrect_it() -> None:
    core = started()
    core.room_opened(RoomId("a@h"))
    pin = core.next_action(0.0)
    assert pin == Pin(RoomId("a@h"))
    core.room_closed(RoomId("a@h"))  # ends while the pin is in flight
    core.done(pin, 0.1)
    assert core.pinned == {}
    core.room_opened(RoomId("b@h"))
    assert step(core, 0.2) == Pin(RoomId("b@h"))
    core.room_closed(RoomId("b@h"))
    assert step(core, 0.3) == Unpin(RoomId("b@h"))
    assert core.pinned == {}


def test_drain_marks_the_node_and_is_drained_when_the_last_room_ends() -> None:
    core = started()
    core.room_opened(RoomId("a@h"))
    assert step(core, 0.0) == Pin(RoomId("a@h"))
    assert core.drain()
    assert not core.drain()  # once
    assert core.phase is NodePhase.DRAINING
    assert step(core, 0.1) == MarkDraining()
    assert not core.drained
    # a join to a's room still arrives (its pin) — and rooms may still open here
    core.room_opened(RoomId("late@h"))
    assert step(core, 0.2) == Pin(RoomId("late@h"))
    core.room_closed(RoomId("a@h"))
    assert not core.drained
    core.room_closed(RoomId("late@h"))
    assert core.drained
    # undrain: active again in the dispatcher
    assert core.undrain()
    assert not core.drained
    actions = {step(core, 0.3), step(core, 0.4), step(core, 0.5)}
    assert MarkActive() in actions


def test_a_check_that_finds_us_gone_registers_again_and_re_pins() -> None:
    """Kamailio restarted: its in-memory dispatcher set and htable are empty."""
    core = started()
    core.room_opened(RoomId("a@h"))
    step(core, 0.0)
    assert step(core, 30.0, listed_flags=None) == CheckRegistration()
    assert step(core, 30.0) == Register()
    assert step(core, 30.1) == Pin(RoomId("a@h"))


def test_a_check_while_draining_finds_us_enabled_and_disables_again() -> None:
    core = started()
    core.drain()
    assert step(core, 0.0) == MarkDraining()
    assert step(core, 30.0, listed_flags="AP") == CheckRegistration()
    assert step(core, 30.0) == MarkDraining()
    assert step(core, 60.0, listed_flags="DX") == CheckRegistration()
    assert core.next_action(60.0) is None


def test_failures_back_off_doubling_and_only_the_first_is_reported() -> None:
    core = ClusterCore(SETTINGS)
    core.start(0.0)
    now = 0.0
    delays = []
    firsts = []
    for _ in range(9):
        action = core.next_action(now)
        assert action == Register()
        firsts.append(core.failed(action, now))
        deadline = core.next_deadline()
        assert deadline is not None
        assert core.next_action(deadline - 0.01) is None
        delays.append(round(deadline - now, 3))
        now = deadline
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert firsts == [True] + [False] * 8
    action = core.next_action(now)
    assert core.done(action, now)  # the outage ended: reported once
    core.room_opened(RoomId("a@h"))
    action = core.next_action(now)
    assert core.failed(action, now)  # a new outage: reported again
    assert core.next_deadline() == now + 0.5  # back-off starts over


def test_stop_deletes_pins_then_leaves_the_set() -> None:
    core = started()
    for name in ("a@h", "b@h"):
        core.room_opened(RoomId(name))
        step(core, 0.0)
    core.stop()
    core.room_opened(RoomId("c@h"))  # too late: nothing new is pinned
    actions = [step(core, 1.0), step(core, 1.0), step(core, 1.0)]
    assert sorted(map(repr, actions[:2])) == sorted(
        [repr(Unpin(RoomId("a@h"))), repr(Unpin(RoomId("b@h")))]
    )
    assert actions[2] == Unregister()
    assert core.settled
    assert core.next_action(2.0) is None


def test_settings_from_config_default_node_uri() -> None:
    config = parse_config(
        {
            "sip": {"listen": ["tls:127.0.0.1:5071", "tcp:127.0.0.1:5070"]},
            "cluster": {"kamailio_rpc": "http://127.0.0.1:5071/RPC", "pin_expiry": 60},
        }
    )
    settings = ClusterSettings.from_config(config)
    assert settings.node_uri == "sip:127.0.0.1:5070;transport=tcp"
    assert settings.refresh_interval == 20.0
    assert settings.htable == "rooms" and settings.setid == 1
    udp = parse_config({"sip": {"listen": ["udp:127.0.0.1:5090"]}})
    assert udp.node_sip_uri() == "sip:127.0.0.1:5090"
    assert not udp.cluster.enabled
    with pytest.raises(ValueError):
        ClusterSettings.from_config(udp)


# --------------------------------------------------------------------------- the agent


class FakeRpc:
    """Stands in for control.kamailio.KamailioRpc: records calls, can be 'down'."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.down = False
        self.listed: list[Any] = []
        self.changed = asyncio.Event()

    def _record(self, *call: Any) -> None:
        if self.down:
            raise KamailioUnreachable(str(call[0]), "ConnectionRefused")
        self.calls.append(call)
        self.changed.set()

    async def dispatcher_list(self) -> list[Any]:
        self._record("dispatcher.list")
        return self.listed

    async def dispatcher_add(self, *args: Any) -> None:
        self._record("dispatcher.add", *args)

    async def dispatcher_set_state(self, *args: Any) -> None:
        self._record("dispatcher.set_state", *(str(a) for a in args))

    async def dispatcher_remove(self, *args: Any) -> None:
        self._record("dispatcher.remove", *args)

    async def htable_set(self, *args: Any) -> None:
        self._record("htable.set", *args)

    async def htable_delete(self, *args: Any) -> bool:
        self._record("htable.delete", *args)
        return True


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_agent_performs_the_core_actions_and_survives_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chorus.cluster")
    agent = ClusterAgent(ClusterSettings(rpc_url="http://x/RPC", node_uri=NODE, retry_min=0.05))
    fake = FakeRpc()
    await agent.start()
    agent._rpc = fake  # type: ignore[assignment]
    await until(lambda: ("dispatcher.add", 1, NODE, 0, 0, "") in fake.calls)
    fake.down = True
    agent.room_opened(RoomId("r@h"))  # returns at once, whatever Kamailio does
    agent.room_opened(RoomId("s@h"))
    await asyncio.sleep(0.3)  # several failed tries, one warning
    warnings = [r for r in caplog.records if "retrying with back-off" in r.getMessage()]
    assert len(warnings) == 1
    fake.down = False
    await until(lambda: sum(c[0] == "htable.set" for c in fake.calls) == 2)
    assert ("htable.set", "rooms", "r@h", NODE, 3600) in fake.calls
    assert any("answers again" in r.getMessage() for r in caplog.records)
    agent.drain()
    await until(lambda: ("dispatcher.set_state", "d", "1", NODE) in fake.calls)
    assert ("htable.set", "nodes", NODE, "draining", 3600) in fake.calls
    assert not await agent.wait_drained(0.05)
    agent.room_closed(RoomId("r@h"))
    agent.room_closed(RoomId("s@h"))
    assert await agent.wait_drained(1.0)
    await agent.stop(timeout=2.0)
    assert ("htable.delete", "rooms", "r@h") in fake.calls
    assert fake.calls[-1] == ("dispatcher.remove", 1, NODE)


async def test_agent_stop_is_bounded_when_kamailio_is_down() -> None:
    agent = ClusterAgent(ClusterSettings(rpc_url="http://x/RPC", node_uri=NODE))
    fake = FakeRpc()
    fake.down = True
    await agent.start()
    agent._rpc = fake  # type: ignore[assignment]
    agent.room_opened(RoomId("r@h"))
    await agent.stop(timeout=0.2)  # returns although nothing could be sent
    assert agent.phase is NodePhase.STOPPED
    assert not agent.core.settled and agent.core.registered is False
    assert fake.calls == []


async def test_signals_drain_undo_and_exit_when_drained() -> None:
    """SIGUSR1 (`chorus drain`) drains, SIGUSR2 (`--undo`) takes new rooms again, and with
    drain_exit the stop event fires once the last room has ended."""
    agent = ClusterAgent(ClusterSettings(rpc_url="http://x/RPC", node_uri=NODE))
    fake = FakeRpc()
    await agent.start()
    agent._rpc = fake  # type: ignore[assignment]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    install_signal_handlers(agent, stop, drain_timeout=60.0, drain_exit=True)
    try:
        agent.room_opened(RoomId("r@h"))
        os.kill(os.getpid(), signal.SIGUSR1)
        await until(lambda: agent.phase is NodePhase.DRAINING)
        os.kill(os.getpid(), signal.SIGUSR2)
        await until(lambda: agent.phase is NodePhase.ACTIVE)
        agent.room_closed(RoomId("r@h"))
        await asyncio.sleep(0.05)
        assert not stop.is_set()  # undone: an empty active node stays up
        agent.room_opened(RoomId("s@h"))
        os.kill(os.getpid(), signal.SIGUSR1)
        await until(lambda: agent.phase is NodePhase.DRAINING)
        await asyncio.sleep(0.05)
        assert not stop.is_set()  # s@h still lives
        agent.room_closed(RoomId("s@h"))
        await asyncio.wait_for(stop.wait(), 5.0)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            loop.remove_signal_handler(signum)
        await agent.stop(timeout=1.0)
    assert ("dispatcher.set_state", "d", "1", NODE) in fake.calls
    assert ("dispatcher.set_state", "a", "1", NODE) in fake.calls


def test_chorus_drain_signals_the_pid_in_the_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "chorus.pid"
    with pytest.raises(ProcessLookupError):
        signal_running_node(pid_file)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pid_file.write_text(f"{sleeper.pid}\n")
        assert signal_running_node(pid_file) == sleeper.pid
        assert sleeper.wait(10) == -signal.SIGUSR1  # no handler there: SIGUSR1 ends it
    finally:
        sleeper.kill()
