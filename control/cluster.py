"""Cluster control: a node behind the Kamailio edge joins, pins its rooms, drains and leaves.

Several control nodes sit behind one Kamailio (deploy/kamailio/kamailio.cfg). Kamailio
picks a node for a request by the dispatcher hash over the Request-URI user, which is
stable only while the set of nodes is; so each node also *pins* every room it hosts in the
Kamailio htable ``rooms`` (room id -> this node's URI) while the room lives, and the edge
follows a pin before it hashes. Adding, draining or removing nodes then never splits a live
room: its members keep reaching the node that has its mixer and state.

The node's life, as Kamailio sees it (all over JSON-RPC, control/kamailio.py):

- start: it adds its SIP URI to dispatcher set N (``dispatcher.add``; ``set_state a`` when
  the list file already has it). Kamailio probes every node with OPTIONS
  (``WITH_DS_PING``) and stops choosing one that does not answer.
- a room opens / ends: ``htable.setxs rooms <room> <node uri> <pin_expiry>`` /
  ``htable.delete``; live pins are refreshed every third of ``pin_expiry``, so only a dead
  node's pins expire on their own.
- drain (``chorus drain``, or SIGTERM): the node marks itself *disabled* in the dispatcher
  (``set_state d``: no new rooms are hashed to it, and unlike *inactive* the OPTIONS probes
  do not turn it active again) and writes ``nodes[<node uri>] = draining`` so the edge keeps
  following its pins: joins to its rooms still reach it until they empty.
- stop: its pins are deleted and it leaves the set (``dispatcher.remove``).

`ClusterCore` decides what to tell Kamailio next from what it wants and what Kamailio has
confirmed; it is fed events and a clock and does no I/O (STYLE.md §1). `ClusterAgent` is the
thin asyncio layer: one RPC at a time on its own task, so a Kamailio that is slow or down
never blocks or fails a call; a failed RPC is retried with back-off (0.5 s doubling to 30 s)
and logged once per outage. It is the conference's RoomObserver (control/conference/room.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from control.config import Config
from control.kamailio import DispatcherState, KamailioRpc, KamailioRpcError
from control.media.engine import RoomId

__all__ = [
    "NODE_TABLE",
    "Action",
    "CheckRegistration",
    "ClusterAgent",
    "ClusterCore",
    "ClusterSettings",
    "MarkActive",
    "MarkDraining",
    "NodePhase",
    "Pin",
    "Register",
    "Unpin",
    "Unregister",
    "install_signal_handlers",
    "signal_running_node",
]

log = logging.getLogger("chorus.cluster")

# kamailio.cfg's table of draining nodes (node URI -> "draining"); fixed like ``rooms`` is,
# because Kamailio's $sht() names its table literally.
NODE_TABLE = "nodes"
DRAINING = "draining"


class NodePhase(enum.Enum):
    IDLE = "idle"  # not started yet
    ACTIVE = "active"  # in the dispatcher set, taking new rooms
    DRAINING = "draining"  # disabled in the set: keeps its rooms, takes no new ones
    STOPPED = "stopped"  # leaving: unpin everything, leave the set


# --- what the core asks the agent to do on Kamailio, one at a time ------------------------


@dataclass(frozen=True, slots=True)
class Register:
    """Be in the dispatcher set and active (add when missing, else set state ``a``)."""


@dataclass(frozen=True, slots=True)
class MarkDraining:
    """``nodes[uri] = draining``, then dispatcher state ``d``."""


@dataclass(frozen=True, slots=True)
class MarkActive:
    """Dispatcher state ``a``, then forget the draining marker."""


@dataclass(frozen=True, slots=True)
class Unregister:
    """Forget the marker and leave the dispatcher set."""


@dataclass(frozen=True, slots=True)
class Pin:
    room: RoomId


@dataclass(frozen=True, slots=True)
class Unpin:
    room: RoomId


@dataclass(frozen=True, slots=True)
class CheckRegistration:
    """Read ``dispatcher.list``: a Kamailio that restarted has forgotten us and our pins."""


Action = Register | MarkDraining | MarkActive | Unregister | Pin | Unpin | CheckRegistration


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    rpc_url: str
    node_uri: str
    setid: int = 1
    htable: str = "rooms"
    pin_expiry: float = 3600.0
    rpc_timeout: float = 2.0
    retry_min: float = 0.5
    retry_max: float = 30.0

    @classmethod
    def from_config(cls, config: Config) -> ClusterSettings:
        cluster = config.cluster
        if cluster.kamailio_rpc is None:
            raise ValueError("[cluster] kamailio_rpc is not set")
        return cls(
            rpc_url=cluster.kamailio_rpc,
            node_uri=config.node_sip_uri(),
            setid=cluster.dispatcher_set,
            htable=cluster.htable,
            pin_expiry=cluster.pin_expiry,
            rpc_timeout=cluster.rpc_timeout,
        )

    @property
    def refresh_interval(self) -> float:
        """Pins are written again after a third of their life."""
        return self.pin_expiry / 3

    @property
    def check_interval(self) -> float:
        return min(self.refresh_interval, 30.0)


class ClusterCore:
    """What Kamailio should know about this node, and the next RPC to get it there.

    Wanted state (phase, live rooms) changes at once on events; applied state changes only
    when the agent reports an RPC done. Pins of a room that opened and ended between two
    RPCs are never sent at all.
    """

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.phase = NodePhase.IDLE
        self.rooms: set[RoomId] = set()
        self.pinned: dict[RoomId, float] = {}  # room -> when its pin was last written
        self.registered = False
        self.unregistered = False
        self.marked_draining: bool | None = None  # None: not known
        self._next_check = 0.0
        self._in_flight: Action | None = None
        self._retry_at: float | None = None
        self._delay = settings.retry_min
        self.failing = False

    # --- events ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self.phase is NodePhase.IDLE:
            self.phase = NodePhase.ACTIVE
            self._next_check = now + self.settings.check_interval

    def room_opened(self, room: RoomId) -> None:
        if self.phase is not NodePhase.STOPPED:
            self.rooms.add(room)

    def room_closed(self, room: RoomId) -> None:
        self.rooms.discard(room)

    def drain(self) -> bool:
        """Start draining; False when not active (already draining, or stopped)."""
        if self.phase is not NodePhase.ACTIVE:
            return False
        self.phase = NodePhase.DRAINING
        return True

    def undrain(self) -> bool:
        if self.phase is not NodePhase.DRAINING:
            return False
        self.phase = NodePhase.ACTIVE
        return True

    def stop(self) -> None:
        self.phase = NodePhase.STOPPED
        self.rooms.clear()
        self._retry_at = None  # the stop gets one prompt try, whatever the back-off was
        self._delay = self.settings.retry_min

    @property
    def drained(self) -> bool:
        """Draining and no room left: the node may exit."""
        return self.phase is NodePhase.DRAINING and not self.rooms

    @property
    def settled(self) -> bool:
        """Stopped, every pin deleted and the node out of the set."""
        return (
            self.phase is NodePhase.STOPPED
            and not self.pinned
            and self.unregistered
            and self._in_flight is None
        )

    # --- the next RPC -----------------------------------------------------------------------

    def next_action(self, now: float) -> Action | None:
        """The next RPC to make (it is then in flight until `done` or `failed`), or None."""
        if self._in_flight is not None:
            return None
        if self._retry_at is not None and now < self._retry_at:
            return None
        action = self._choose(now)
        self._in_flight = action
        return action

    def _choose(self, now: float) -> Action | None:
        if self.phase is NodePhase.IDLE:
            return None
        if self.phase is NodePhase.STOPPED:
            if self.pinned:
                return Unpin(next(iter(self.pinned)))
            if not self.unregistered:
                return Unregister()
            return None
        if not self.registered:
            return Register()
        want_draining = self.phase is NodePhase.DRAINING
        if self.marked_draining is not want_draining:
            return MarkDraining() if want_draining else MarkActive()
        for room in self.rooms:
            if room not in self.pinned:
                return Pin(room)
        for room in self.pinned:
            if room not in self.rooms:
                return Unpin(room)
        if now >= self._next_check:
            return CheckRegistration()
        refresh = self.settings.refresh_interval
        for room, written in self.pinned.items():
            if now - written >= refresh:
                return Pin(room)
        return None

    def next_deadline(self) -> float | None:
        """When `next_action` may have something new without an event: a retry, a check,
        a pin refresh. None while an RPC is in flight or nothing is scheduled."""
        if self._in_flight is not None:
            return None
        if self._retry_at is not None:
            return self._retry_at
        if self.phase in (NodePhase.IDLE, NodePhase.STOPPED):
            return None
        times = [self._next_check]
        if self.pinned:
            times.append(min(self.pinned.values()) + self.settings.refresh_interval)
        return min(times)

    def done(self, action: Action, now: float, *, listed_flags: str | None = None) -> bool:
        """The RPC worked. `listed_flags` answers CheckRegistration (None: not in the set).
        Returns True when this ends an outage (the agent logs the recovery)."""
        self._in_flight = None
        self._retry_at = None
        self._delay = self.settings.retry_min
        recovered, self.failing = self.failing, False
        match action:
            case Register():
                self.registered = True
                self.marked_draining = False
            case MarkDraining():
                self.marked_draining = True
            case MarkActive():
                self.marked_draining = False
            case Unregister():
                self.unregistered = True
                self.registered = False
            case Pin(room=room):
                if room in self.rooms:
                    self.pinned[room] = now
            case Unpin(room=room):
                self.pinned.pop(room, None)
            case CheckRegistration():
                self._next_check = now + self.settings.check_interval
                if listed_flags is None:
                    # Kamailio restarted (or someone removed us): add again, re-pin all.
                    self.registered = False
                    self.marked_draining = None
                    self.pinned.clear()
                elif self.phase is NodePhase.DRAINING and not listed_flags.upper().startswith("D"):
                    self.marked_draining = None
        return recovered

    def failed(self, action: Action, now: float) -> bool:
        """The RPC failed: retry after a back-off. True for the first failure of an outage
        (the agent logs that one only)."""
        self._in_flight = None
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, self.settings.retry_max)
        first, self.failing = not self.failing, True
        return first


class ClusterAgent:
    """The asyncio side: performs the core's RPCs on one task; the conference's observer."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.core = ClusterCore(settings)
        self._session: aiohttp.ClientSession | None = None
        self._rpc: KamailioRpc | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._settled = asyncio.Event()

    @classmethod
    def from_config(cls, config: Config) -> ClusterAgent:
        return cls(ClusterSettings.from_config(config))

    @property
    def phase(self) -> NodePhase:
        return self.core.phase

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession()
        self._rpc = KamailioRpc(
            self._session, self.settings.rpc_url, timeout=self.settings.rpc_timeout
        )
        self.core.start(loop.time())
        self._task = loop.create_task(self._run(), name="cluster-agent")
        log.info(
            "cluster: node %s joins dispatcher set %d at %s",
            self.settings.node_uri,
            self.settings.setid,
            self.settings.rpc_url,
        )

    # --- RoomObserver (never blocks, never raises into the conference) ------------------------

    def room_opened(self, room: RoomId) -> None:
        self.core.room_opened(room)
        self._changed()

    def room_closed(self, room: RoomId) -> None:
        self.core.room_closed(room)
        self._changed()

    # --- drain and stop ---------------------------------------------------------------------

    def drain(self) -> None:
        if self.core.drain():
            log.info(
                "cluster: draining (%d rooms left; new rooms go to other nodes)",
                len(self.core.rooms),
            )
        self._changed()

    def undrain(self) -> None:
        if self.core.undrain():
            log.info("cluster: active again")
        self._changed()

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """Wait until draining with no room left; False on timeout or when undrained."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return self.core.drained

    async def stop(self, timeout: float = 5.0) -> None:
        """Delete our pins and leave the set, for at most `timeout` seconds."""
        self.core.stop()
        self._changed()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._settled.wait(), timeout)
            except TimeoutError:
                log.warning("cluster: Kamailio not told of our exit within %.1f s", timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _changed(self) -> None:
        self._update_events()
        self._wake.set()

    def _update_events(self) -> None:
        if self.core.drained:
            self._drained.set()
        else:
            self._drained.clear()
        if self.core.settled:
            self._settled.set()

    # --- the RPC loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            action = self.core.next_action(loop.time())
            if action is None:
                self._update_events()
                deadline = self.core.next_deadline()
                self._wake.clear()
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            try:
                listed = await self._perform(action)
            except KamailioRpcError as exc:
                if self.core.failed(action, loop.time()):
                    log.warning(
                        "cluster: Kamailio at %s failed (%s); retrying with back-off, calls go on",
                        self.settings.rpc_url,
                        exc,
                    )
                continue
            except Exception:
                # A bug here must not stop the loop: the node would silently leave the cluster.
                log.exception("cluster: %s failed", action)
                self.core.failed(action, loop.time())
                continue
            if self.core.done(action, loop.time(), listed_flags=listed):
                log.info("cluster: Kamailio at %s answers again", self.settings.rpc_url)

    async def _perform(self, action: Action) -> str | None:
        rpc = self._rpc
        assert rpc is not None
        uri, setid = self.settings.node_uri, self.settings.setid
        expire = int(self.settings.pin_expiry)
        match action:
            case Register():
                if await self._listed_flags(rpc) is None:
                    await rpc.dispatcher_add(setid, uri, 0, 0, "")
                else:
                    await rpc.dispatcher_set_state(DispatcherState.ACTIVE, setid, uri)
                await rpc.htable_delete(NODE_TABLE, uri)  # a crashed predecessor's marker
                log.info("cluster: %s is in dispatcher set %d", uri, setid)
            case MarkDraining():
                await rpc.htable_set(NODE_TABLE, uri, DRAINING, expire)
                await rpc.dispatcher_set_state(DispatcherState.DISABLED, setid, uri)
                log.info("cluster: %s disabled in the dispatcher (draining)", uri)
            case MarkActive():
                await rpc.dispatcher_set_state(DispatcherState.ACTIVE, setid, uri)
                await rpc.htable_delete(NODE_TABLE, uri)
            case Unregister():
                await rpc.htable_delete(NODE_TABLE, uri)
                await rpc.dispatcher_remove(setid, uri)
                log.info("cluster: %s left dispatcher set %d", uri, setid)
            case Pin(room=room):
                await rpc.htable_set(self.settings.htable, room, uri, expire)
            case Unpin(room=room):
                await rpc.htable_delete(self.settings.htable, room)
            case CheckRegistration():
                flags = await self._listed_flags(rpc)
                if flags is not None and self.core.phase is NodePhase.DRAINING:
                    await rpc.htable_set(NODE_TABLE, uri, DRAINING, expire)
                return flags
        return None

    async def _listed_flags(self, rpc: KamailioRpc) -> str | None:
        for target in await rpc.dispatcher_list():
            if target.setid == self.settings.setid and target.uri == self.settings.node_uri:
                return target.flags
        return None


# --- the process side: signals, the pid file, `chorus drain` -----------------------------------


def install_signal_handlers(
    agent: ClusterAgent,
    stop: asyncio.Event,
    *,
    drain_timeout: float,
    drain_exit: bool,
) -> None:
    """SIGTERM/SIGINT: drain, wait up to `drain_timeout` for the rooms to end, then stop (a
    second one stops at once). SIGUSR1 (`chorus drain`): drain; with `drain_exit`, stop once
    the last room has ended. SIGUSR2 (`chorus drain --undo`): take new rooms again."""
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Task[None]] = []

    async def stop_when_drained(timeout: float | None) -> None:
        if await agent.wait_drained(timeout):
            log.info("cluster: drained, stopping")
        elif agent.phase is NodePhase.DRAINING:
            log.warning("cluster: rooms still open after %s s of draining, stopping", timeout)
        else:
            return  # undrained meanwhile
        stop.set()

    def wait_then_stop(timeout: float | None) -> None:
        waiting.append(loop.create_task(stop_when_drained(timeout)))

    terminating = False

    def on_terminate() -> None:
        nonlocal terminating
        if terminating:
            log.info("cluster: second stop signal, stopping now")
            stop.set()
            return
        terminating = True
        agent.drain()
        wait_then_stop(drain_timeout)

    def on_drain() -> None:
        agent.drain()
        if drain_exit:
            wait_then_stop(None)

    def on_undrain() -> None:
        if terminating:
            return  # stopping wins
        for task in waiting:
            task.cancel()
        waiting.clear()
        agent.undrain()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_terminate)
    loop.add_signal_handler(signal.SIGUSR1, on_drain)
    loop.add_signal_handler(signal.SIGUSR2, on_undrain)


def signal_running_node(pid_file: Path, *, undo: bool = False) -> int:
    """Send SIGUSR1 (drain) or SIGUSR2 (undo) to the node whose pid `pid_file` holds."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ProcessLookupError(f"no running node: cannot read {pid_file}: {exc}") from exc
    os.kill(pid, signal.SIGUSR2 if undo else signal.SIGUSR1)
    return pid
