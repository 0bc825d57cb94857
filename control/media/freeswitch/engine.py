"""FreeSwitchEngine: rooms mixed by a pool of FreeSWITCH nodes (mod_conference over ESL).

Per participant the focus is a B2BUA (see `leg`): ``attach`` INVITEs the room's node with the
participant's audio offer and returns FreeSWITCH's answer, ``update`` re-INVITEs the leg,
``detach`` BYEs it. RTP flows between participant and FreeSWITCH; Chorus sees signalling
and the Event Socket only, so ``quality()`` has nothing to report (FreeSWITCH keeps RTCP).

Each node's Event Socket (`eslclient`, greenswitch in its own thread) feeds that node's
`ConferenceMembers`, which turns ``conference::maintenance`` events into the AudioEvents a
room reads: talking, an operator's mute (MuteChanged) and kick (Kicked). Mute, deaf and
kick go out as ``api conference <name> mute|unmute|deaf|undeaf|kick <member-id>``; a
member's noise gate as ``energy <member-id> <level>`` (`set_energy`, FreeSWITCH only: the
room-level default is the conference profile's ``energy-level``).

Faults: a node whose Event Socket is down or whose ``api status`` probe goes unanswered for
``failover_after`` seconds has failed; one whose Event Socket says SHUTDOWN (``fsctl
shutdown``, SIGTERM: FreeSWITCH then hangs every channel up) has failed at once. Its rooms
move to the fittest other node — a new leg there with each participant's last offer, then
StreamMoved so the room re-INVITEs the participant toward the new address — or, with no node
left, every participant of those rooms gets AudioLost (the room drops their audio, chat and
files go on). One leg whose SIP dialog dies while the Event Socket is up (see `_watch_leg`):
a BYE from the node is AudioLost (or Kicked, when its kick-member event follows); a dialog
the node lost (481/408, session timer) is re-homed on the room's node, a re-INVITE answered
481/408 becomes a new leg at once. The Event Socket reconnects by itself with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence

from control.config import FreeSwitchNode
from control.media.engine import (
    AudioAnswer,
    AudioEngine,
    AudioEngineError,
    AudioEvent,
    AudioLost,
    Kicked,
    ParticipantId,
    RoomId,
    StreamMoved,
)
from control.media.freeswitch.eslclient import (
    ClientEvent,
    EslAuthFailed,
    EslClient,
    EslConnected,
    EslDisconnected,
    EslEventReceived,
    EslUnavailable,
)
from control.media.freeswitch.leg import LegGone, MediaLeg
from control.media.freeswitch.members import (
    ConferenceMembers,
    conference_name,
    parse_conference_list,
)
from control.media.freeswitch.pool import NodePool, NodeState
from control.media.rtcpsession import StreamQuality
from control.sip import sdp
from control.sip.transport import Peer
from control.sip.useragent import UserAgent

__all__ = ["FreeSwitchEngine"]

log = logging.getLogger("chorus.media.freeswitch")

Key = tuple[RoomId, ParticipantId]
REMOTE_BYE = "remote BYE"  # control/sip/session.py's reason for a BYE the peer sent
# switch_core_destroy fires it (Event-Info "System Shutting Down") before it hangs every
# channel up with SYSTEM_SHUTDOWN and unloads the modules: `fsctl shutdown`, SIGTERM.
SHUTDOWN_EVENT = "SHUTDOWN"
RECOVER_WINDOW = 60.0  # seconds: a re-homed leg lost again within this is not re-homed again
_ENERGY = re.compile(r"^\+?(?:OK )?Energy \d+ = (\d+)")  # mod_conference's energy reply


class FreeSwitchEngine(AudioEngine):
    def __init__(
        self,
        ua: UserAgent,
        nodes: Sequence[FreeSwitchNode],
        *,
        answer_timeout: float = 10.0,
        health_interval: float = 5.0,
        failover_after: float = 5.0,
        reconnect_max: float = 30.0,
        reconnect_min: float = 0.5,
        leg_grace: float = 1.0,
    ) -> None:
        self._ua = ua
        self._pool = NodePool(nodes, failover_after=failover_after)
        self._answer_timeout = answer_timeout
        self._health_interval = health_interval
        self._failover_after = failover_after
        self._reconnect = (reconnect_min, reconnect_max)
        self._leg_grace = leg_grace  # how long a node's BYE waits for its kick-member event
        self._members = {n.name: ConferenceMembers() for n in nodes}
        self._clients: dict[str, EslClient] = {}
        self._legs: dict[Key, MediaLeg] = {}
        self._queue: asyncio.Queue[AudioEvent] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        self._refused: set[str] = set()  # nodes whose password was refused (logged once)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to every node's Event Socket (also done by the first attach)."""
        if self._watcher is not None or self._closed:
            return
        for node in self._pool.nodes.values():
            config = node.config
            client = EslClient(
                node.name,
                config.esl_host,
                config.esl_port,
                config.password,
                on_event=self._client_event,
                reconnect_min=self._reconnect[0],
                reconnect_max=self._reconnect[1],
            )
            self._clients[node.name] = client
            client.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
        for leg in list(self._legs.values()):
            leg.closing = True
        await asyncio.gather(
            *(leg.bye("shutdown") for leg in self._legs.values()), return_exceptions=True
        )
        self._legs.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(c.close() for c in self._clients.values()))

    def node_states(self) -> dict[str, NodeState]:
        return dict(self._pool.nodes)

    def leg(self, room: RoomId, participant: ParticipantId) -> MediaLeg | None:
        return self._legs.get((room, participant))

    def participants(self, room: RoomId) -> list[ParticipantId]:
        """Who has an audio leg in ``room`` (for operators' tools and tests)."""
        return [p for r, p in self._legs if r == room]

    def member_id(self, room: RoomId, participant: ParticipantId) -> int | None:
        """The participant's mod_conference member id, once its add-member was seen."""
        members = self._node_members(room, participant)
        return members.member_id(room, participant) if members is not None else None

    def _node_members(self, room: RoomId, participant: ParticipantId) -> ConferenceMembers | None:
        """The members of the node the participant's leg is on (None: no leg)."""
        leg = self._legs.get((room, participant))
        return self._members[leg.node] if leg is not None else None

    # --- AudioEngine ------------------------------------------------------------------------

    async def attach(
        self,
        room: RoomId,
        participant: ParticipantId,
        offer: sdp.SessionDescription,
        media_index: int,
    ) -> AudioAnswer:
        self.start()
        node = await self._place(room)
        if node is None:
            raise AudioEngineError(503, "no FreeSWITCH node is available")
        leg = await self._open_leg(node, room, participant, offer, media_index)
        return leg.answer

    async def update(
        self,
        room: RoomId,
        participant: ParticipantId,
        offer: sdp.SessionDescription,
        media_index: int,
    ) -> AudioAnswer:
        leg = self._legs.get((room, participant))
        if leg is None:
            return await self.attach(room, participant, offer, media_index)
        try:
            return await leg.reinvite(offer, media_index)
        except LegGone as exc:
            # The node forgot the dialog (481/408, RFC 5057 §5.1): this re-offer becomes
            # a new leg on the room's node, whose answer the participant gets.
            log.warning("%s: a new leg for %s in %s", exc.reason, participant, room)
            self._drop_leg(leg)
            node = await self._place(room)
            if node is None:
                raise AudioEngineError(503, "no FreeSWITCH node is available") from exc
            new = await self._open_leg(node, room, participant, offer, media_index)
            new.recovered_at = asyncio.get_running_loop().time()
            return new.answer

    async def detach(self, room: RoomId, participant: ParticipantId) -> None:
        leg = self._legs.pop((room, participant), None)
        if leg is None:
            return
        self._members[leg.node].forget(room, participant)
        if not any(r == room for r, _ in self._legs):
            self._pool.release(room)
        await leg.bye("detached")

    async def set_muted(self, room: RoomId, participant: ParticipantId, muted: bool) -> None:
        await self._member_command(
            room, participant, _mute(muted), asking=lambda m: m.asked_mute(room, participant, muted)
        )

    async def set_deaf(self, room: RoomId, participant: ParticipantId, deaf: bool) -> None:
        """``conference <name> deaf|undeaf <id>``: the node stops (or resumes) sending the
        room's mix to this member."""
        await self._member_command(
            room,
            participant,
            "deaf" if deaf else "undeaf",
            asking=lambda m: m.asked_deaf(room, participant, deaf),
        )

    async def set_energy(self, room: RoomId, participant: ParticipantId, level: int) -> int | None:
        """``conference <name> energy <id> <level>``: the member's noise gate, mod_conference's
        per-member energy threshold (below it the member's audio is not mixed and it is not
        talking). Not part of `AudioEngine` — the embedded mixer has no per-participant
        gate; the room-level default is the conference profile's ``energy-level``
        (deploy/freeswitch). Returns the level the node reports (``Energy N = L``), None when
        the participant is not a member (yet) or the node refused."""
        if level < 0:
            raise ValueError(f"energy level {level} is negative")
        reply = await self._member_command(room, participant, "energy", str(level))
        match = _ENERGY.match(reply or "")
        return int(match.group(1)) if match else None

    def energy_level(self, room: RoomId, participant: ParticipantId) -> int | None:
        """The member's noise gate as the node's events last said (None: unknown)."""
        members = self._node_members(room, participant)
        return members.energy_level(room, participant) if members is not None else None

    def deaf(self, room: RoomId, participant: ParticipantId) -> bool | None:
        """Whether the node says this member hears nothing (None: not a member yet)."""
        members = self._node_members(room, participant)
        return members.deaf(room, participant) if members is not None else None

    async def _member_command(
        self,
        room: RoomId,
        participant: ParticipantId,
        verb: str,
        *args: str,
        asking: Callable[[ConferenceMembers], None] | None = None,
    ) -> str | None:
        """``conference <name> <verb> <member-id> [args]`` on the leg's node: its reply, or
        None (logged) when the participant has no leg or no member yet. ``asking`` tells the
        node's members what is asked first, so that its echo is no news."""
        leg = self._legs.get((room, participant))
        if leg is None:
            return None
        member_id = await self._member_id(leg)
        if member_id is None:
            log.warning("cannot %s %s in %s: not a member yet", verb, participant, room)
            return None
        if asking is not None:
            asking(self._members[leg.node])
        command = " ".join(["conference", leg.conference, verb, str(member_id), *args])
        reply = await self._api(leg.node, command)
        if not reply.startswith(("OK", "+OK", "Energy")):
            log.warning("%s of %s in %s refused: %s", verb, participant, room, reply.strip())
        return reply

    async def kick(self, room: RoomId, participant: ParticipantId) -> bool:
        """``conference <name> kick <id>``: the node hangs the leg up (its BYE follows)."""
        leg = self._legs.get((room, participant))
        member_id = await self._member_id(leg) if leg is not None else None
        if leg is None or member_id is None:
            return False
        leg.closing = True
        self._members[leg.node].asked_kick(room, participant)
        reply = await self._api(leg.node, f"conference {leg.conference} kick {member_id}")
        return reply.startswith("OK")

    async def quality(self) -> dict[tuple[RoomId, ParticipantId], StreamQuality]:
        return {}  # RTCP terminates in FreeSWITCH; Chorus measures nothing itself

    async def events(self) -> AsyncIterator[AudioEvent]:
        while True:
            yield await self._queue.get()

    async def _place(self, room: RoomId) -> NodeState | None:
        """The room's node; while none is fit yet (Event Sockets still connecting, a node
        coming back) wait for one, at most ``answer_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._answer_timeout
        while (node := self._pool.place(room)) is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return node

    # --- legs -------------------------------------------------------------------------------

    async def _open_leg(
        self,
        node: NodeState,
        room: RoomId,
        participant: ParticipantId,
        offer: sdp.SessionDescription,
        media_index: int,
    ) -> MediaLeg:
        members = self._members[node.name]
        conference = members.expect(room, participant)
        config = node.config
        try:
            leg = await MediaLeg.open(
                self._ua,
                node=node.name,
                peer=Peer("udp", config.sip_host, config.sip_port),
                room=room,
                participant=participant,
                conference=conference,
                offer=offer,
                media_index=media_index,
                timeout=self._answer_timeout,
            )
        except AudioEngineError:
            members.forget(room, participant)
            if not any(r == room for r, _ in self._legs):
                self._pool.release(room)
            raise
        self._legs[(room, participant)] = leg
        self._spawn(self._watch_leg(leg))
        return leg

    async def _watch_leg(self, leg: MediaLeg) -> None:
        """The leg's SIP dialog ended without Chorus ending it, the Event Socket maybe up.

        A BYE from the node is its own decision (an operator's kick or ``uuid_kill``, its
        RTP timeout): once the Event Socket had ``leg_grace`` seconds to tell a kick (its
        kick-member event may come after the BYE), the audio is lost (AudioLost). A dialog
        lost without one (a refresh answered 481/408, the session timer expired, no ACK) is
        re-homed: a new leg with the participant's last offer on the room's node once it is
        fit (a node that is down is left to the failover, which moves this leg with the
        others), then StreamMoved — at most once per ``RECOVER_WINDOW``, so a node that keeps
        losing it ends it instead."""
        reason = await leg.session.terminated
        if not self._current(leg):
            return
        if reason == REMOTE_BYE:
            members = self._members[leg.node]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._leg_grace
            while (
                self._current(leg)
                and not leg.reported
                and members.member_id(leg.room, leg.participant) is not None
                and loop.time() < deadline
            ):
                await asyncio.sleep(0.05)
            if self._pool.nodes[leg.node].going_away:
                return  # a shutdown's hang-up: the re-homing has this leg (or is about to)
            if self._current(leg) and not leg.reported:
                self._lose(leg, f"media node {leg.node} ended the audio leg")
            return
        await self._recover(leg, reason)

    async def _recover(self, leg: MediaLeg, reason: str) -> None:
        loop = asyncio.get_running_loop()
        node = self._pool.nodes[leg.node]
        while self._current(leg) and not node.fit and not node.failed:
            await asyncio.sleep(0.1)  # down: the failover moves it (leg.moved) or it is back
        if not self._current(leg):
            return
        now = loop.time()
        if leg.recovered_at is not None and now - leg.recovered_at < RECOVER_WINDOW:
            self._lose(leg, f"media node {leg.node} lost the audio leg again ({reason})")
            return
        log.warning(
            "audio leg of %s in %s on %s lost (%s): re-homing it",
            leg.participant,
            leg.room,
            leg.node,
            reason,
        )
        self._drop_leg(leg)
        target = self._pool.place(leg.room)
        if target is None:
            self._lose(leg, f"audio leg lost ({reason}) and no media node is up")
            return
        try:
            new = await self._open_leg(
                target, leg.room, leg.participant, leg.offer, leg.media_index
            )
        except AudioEngineError as exc:
            self._lose(leg, f"audio leg lost ({reason}); {exc.reason}")
            return
        new.recovered_at = now
        self._queue.put_nowait(StreamMoved(leg.room, leg.participant, new.answer))

    def _current(self, leg: MediaLeg) -> bool:
        """The leg is still the participant's and nobody is ending or moving it."""
        if leg.closing or leg.moved or self._closed:
            return False
        return self._legs.get((leg.room, leg.participant)) is leg

    def _drop_leg(self, leg: MediaLeg) -> None:
        """Forget a leg (its dialog is gone or going) and release an emptied room."""
        leg.moved = True  # its end is no news any more
        if self._legs.get((leg.room, leg.participant)) is leg:
            del self._legs[(leg.room, leg.participant)]
        self._members[leg.node].forget(leg.room, leg.participant)
        if not any(r == leg.room for r, _ in self._legs):
            self._pool.release(leg.room)

    def _lose(self, leg: MediaLeg, reason: str) -> None:
        """The participant's audio is gone for good: the room drops the stream (AudioLost)."""
        if leg.reported:
            return
        leg.reported = True
        self._drop_leg(leg)
        self._queue.put_nowait(AudioLost(leg.room, leg.participant, reason))

    async def _member_id(self, leg: MediaLeg) -> int | None:
        members = self._members[leg.node]
        found = members.member_id(leg.room, leg.participant)
        if found is None:
            await self._resync(leg.node, leg.room)
            found = members.member_id(leg.room, leg.participant)
        return found

    async def _resync(self, name: str, room: RoomId) -> None:
        """Learn members from ``conference list`` (events missed while reconnecting)."""
        try:
            listing = await self._api(name, f"conference {conference_name(room)} list")
        except AudioEngineError:
            return
        for listed in parse_conference_list(listing):
            self._members[name].learn(room, listed)

    async def _api(self, name: str, command: str) -> str:
        client = self._clients.get(name)
        if client is None:
            raise AudioEngineError(503, f"no Event Socket for {name}")
        try:
            return await client.api(command, timeout=self._health_interval)
        except EslUnavailable as exc:
            raise AudioEngineError(503, str(exc)) from exc

    # --- the Event Socket -------------------------------------------------------------------

    def _client_event(self, event: ClientEvent) -> None:
        now = asyncio.get_running_loop().time()
        match event:
            case EslEventReceived(node=name, event=esl_event) if esl_event.name == SHUTDOWN_EVENT:
                log.warning(
                    "FreeSWITCH node %s is shutting down (%s)",
                    name,
                    esl_event.get("Event-Info") or "SHUTDOWN",
                )
                if self._pool.shutting_down(name, now):
                    self._spawn(self._rehome(self._pool.nodes[name], "is shutting down"))
            case EslEventReceived(node=name, event=esl_event):
                members = self._members[name]
                for audio_event in members.handle(esl_event):
                    if isinstance(audio_event, Kicked):
                        leg = self._legs.get((audio_event.room, audio_event.participant))
                        if leg is None:
                            continue
                        leg.reported = True
                    self._queue.put_nowait(audio_event)
            case EslConnected(node=name):
                log.info("Event Socket of %s connected", name)
                self._refused.discard(name)
                self._pool.set_connected(name, True, now)
                for room in self._pool.nodes[name].rooms:
                    self._spawn(self._resync(name, room))
            case EslDisconnected(node=name, reason=reason):
                log.warning("Event Socket of %s lost: %s", name, reason)
                self._pool.set_connected(name, False, now)
            case EslAuthFailed(node=name, reply=reply):
                if name not in self._refused:
                    self._refused.add(name)
                    log.error("Event Socket of %s refused our password (%s)", name, reply)
                self._pool.set_connected(name, False, now)

    async def _watch(self) -> None:
        """Probe every connected node, and re-home the rooms of nodes that failed."""
        loop = asyncio.get_running_loop()
        tick = max(0.05, min(self._health_interval, self._failover_after or 1.0) / 2)
        last_probe = 0.0
        while True:
            now = loop.time()
            if now - last_probe >= self._health_interval:
                last_probe = now
                for name, node in self._pool.nodes.items():
                    if node.connected:
                        self._spawn(self._probe(name))
            for node in self._pool.newly_failed(now):
                self._spawn(self._rehome(node))
            await asyncio.sleep(tick)

    async def _probe(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            reply = await self._api(name, "status")
            answering = "UP" in reply or "ready" in reply
        except AudioEngineError:
            answering = False
        if not answering and self._pool.nodes[name].answering:
            log.warning("FreeSWITCH node %s does not answer its health probe", name)
        self._pool.set_answering(name, answering, loop.time())

    async def _rehome(self, node: NodeState, why: str = "failed") -> None:
        """Move the rooms of a node that failed (or ``why``: is shutting down) to the fittest
        other node, or lose their audio when there is none. Every leg of the node is taken
        off it first, before any new leg is awaited: the node's own BYEs for them (a
        shutdown hangs every channel up) are then no news to `_watch_leg`."""
        legs = [leg for leg in self._legs.values() if leg.node == node.name]
        rooms = sorted({leg.room for leg in legs})
        log.error("FreeSWITCH node %s %s: re-homing %d room(s)", node.name, why, len(rooms))
        for old in legs:
            old.moved = True
            self._legs.pop((old.room, old.participant), None)
            self._members[node.name].forget(old.room, old.participant)
            self._ua.spawn(old.session.bye(reason=f"media node {why}"))
        for room in rooms:
            target = self._pool.place(room, avoid=[node.name])
            room_legs = [leg for leg in legs if leg.room == room]
            if target is None:
                self._pool.release(room)
                for old in room_legs:
                    self._lose(old, f"media node {node.name} {why} and no other node is up")
                continue
            for old in room_legs:
                try:
                    leg = await self._open_leg(
                        target, room, old.participant, old.offer, old.media_index
                    )
                except AudioEngineError as exc:
                    self._lose(old, f"media node {node.name} {why}; {exc.reason}")
                    continue
                self._queue.put_nowait(StreamMoved(room, old.participant, leg.answer))
        node.rooms.difference_update(rooms)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("FreeSWITCH engine task failed", exc_info=task.exception())


def _mute(muted: bool) -> str:
    return "mute" if muted else "unmute"
