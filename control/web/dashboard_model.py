"""The operator dashboard's view of the node (control/web/dashboard.py's ``DashboardModel``).

Built by ``chorus serve`` (cli.py) over the same sources as the metrics (control/metrics.py
``MetricSources``): the conference's rooms with their participants (as the admin API shows
them: control/web/api.py ``participant_json``), files and live screens, and the node's
health — audio engine and FreeSWITCH nodes, the Kamailio RPC link and cluster phase, the
XMPP component. A snapshot is plain JSON data; two equal snapshots mean nothing to push.

Changes are pushed from the room model: each room the model has seen calls it back through
``Room.listeners`` (what conference-info's ``on_change`` hears: participants, streams,
nicknames, mute, files, screens, lock), and the model wakes every follower. Rooms appearing,
and health, are found by the feed's short periodic look (dashboard.py ``SCAN_INTERVAL``).
That look is cheap: the rooms' part of the snapshot (a files query per room) is rebuilt only
when a room changed, the set of rooms changed, or `REFRESH` seconds passed (for what changes
without telling the room, such as the count of conference-info watchers).

Imported by cli.py only: it reads the conference's types, which import the web package.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from control import package_version
from control.cluster import ClusterAgent
from control.conference.room import Room
from control.media.engine import RoomId
from control.media.freeswitch import FreeSwitchEngine
from control.metrics import MetricSources
from control.web.api import participants_json, room_summary

__all__ = ["NodeDashboard"]

Waker = Callable[[], None]
REFRESH = 5.0  # seconds after which the rooms' part is rebuilt even without a change


class NodeDashboard:
    def __init__(
        self,
        sources: MetricSources,
        *,
        drain: Callable[[bool], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = sources
        self._drain = drain  # cli: what `chorus drain [--undo]` does; None outside cluster mode
        self.clock = clock
        self.started = clock()
        self._followers: set[Waker] = set()
        self._hooked: dict[RoomId, Room] = {}
        self._dirty = True
        self._rooms: list[dict[str, Any]] = []
        self._built: tuple[tuple[RoomId, ...], float] = ((), 0.0)  # rooms, when

    # --- pushing ---------------------------------------------------------------------------

    def follow(self, wake: Waker) -> None:
        self._followers.add(wake)

    def unfollow(self, wake: Waker) -> None:
        self._followers.discard(wake)

    def _changed(self) -> None:
        self._dirty = True
        for wake in list(self._followers):
            wake()

    def _hook(self, rooms: dict[RoomId, Room]) -> None:
        """Listen to every live room once; forget the rooms that ended."""
        for room_id, room in rooms.items():
            if self._hooked.get(room_id) is not room:
                room.listeners.append(self._changed)
                self._hooked[room_id] = room
        for room_id in [r for r, room in self._hooked.items() if rooms.get(r) is not room]:
            del self._hooked[room_id]

    # --- drain -----------------------------------------------------------------------------

    @property
    def can_drain(self) -> bool:
        return self._drain is not None and self.sources.cluster is not None

    def drain(self, undo: bool) -> None:
        assert self._drain is not None
        self._drain(undo)

    # --- the snapshot ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        conference = self.sources.conference
        rooms: dict[RoomId, Room] = dict(conference.rooms) if conference is not None else {}
        self._hook(rooms)
        now = self.clock()
        ids, when = self._built
        if self._dirty or ids != tuple(rooms) or now - when >= REFRESH:
            self._dirty = False
            self._rooms = [self._room(r) for r in rooms.values()]
            self._built = (tuple(rooms), now)
        return {"node": self._node(rooms), "rooms": self._rooms}

    def _room(self, room: Room) -> dict[str, Any]:
        conference = self.sources.conference
        assert conference is not None
        data = room_summary(room)
        data["participant_list"] = [  # XMPP occupants too (kind "xmpp")
            p for p in participants_json(room, conference.moderation) if not p["transfer_only"]
        ]
        files = conference.files.files.list(room.id) if conference.files is not None else []
        data["files"] = [
            {"name": f.name, "size": f.size, "sha1": f.sha1, "sender": f.sender} for f in files
        ]
        screens = conference.screens.board.sharing(room.id) if conference.screens else []
        data["screens"] = [str(s.participant) for s in screens]
        data["subscriptions"] = conference.subscription_count(room)
        return data

    def _node(self, rooms: dict[RoomId, Room]) -> dict[str, Any]:
        engine = self.sources.engine
        node: dict[str, Any] = {
            "version": package_version(),
            "started_at": self.started,  # not an uptime: snapshots stay equal while idle
            "rooms": len(rooms),
            "participants": sum(
                1
                for room in rooms.values()
                for p in room.participants.values()
                if not p.transfer_only
            ),
            "engine": "freeswitch" if isinstance(engine, FreeSwitchEngine) else "embedded",
            "freeswitch": [
                {"node": name, "up": state.fit, "rooms": len(state.rooms)}
                for name, state in sorted(engine.node_states().items())
            ]
            if isinstance(engine, FreeSwitchEngine)
            else [],
            "cluster": _cluster(self.sources.cluster),
            "xmpp": None,
            "can_drain": self.can_drain,
        }
        if self.sources.xmpp is not None:
            node["xmpp"] = {"connected": self.sources.xmpp.component.connected}
        return node


def _cluster(cluster: ClusterAgent | None) -> dict[str, Any] | None:
    if cluster is None:
        return None
    return {
        "phase": cluster.phase.value,
        "registered": cluster.core.registered,
        "kamailio_rpc_up": not cluster.core.failing,
    }
