"""The FreeSWITCH pool: which node hosts which room, and which nodes are fit to.

Room affinity: all of a room's legs go to one node (mod_conference mixes one conference on
one box). A new room goes to the fit node hosting the fewest rooms, ties broken by the
configured order. A node is fit while its Event Socket is connected and answers its health
probe; one that has been unfit for ``failover_after`` seconds is *failed*: its rooms are
re-homed and it takes no new rooms until it is fit again. A node that says it is shutting down
(`going_away`) has failed at once. Plain state, fed the clock by the engine (sans-IO).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from control.config import FreeSwitchNode
from control.media.engine import RoomId

__all__ = ["NodePool", "NodeState"]


@dataclass(slots=True)
class NodeState:
    config: FreeSwitchNode
    connected: bool = False  # Event Socket up and authenticated
    answering: bool = True  # the last health probe got its answer
    unfit_since: float | None = 0.0  # when it last stopped being fit (0: never was yet)
    failed: bool = False
    going_away: bool = False  # it said SHUTDOWN: unfit until a new Event Socket connection
    rooms: set[RoomId] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def fit(self) -> bool:
        return self.connected and self.answering and not self.failed and not self.going_away


class NodePool:
    def __init__(self, nodes: Sequence[FreeSwitchNode], *, failover_after: float) -> None:
        if not nodes:
            raise ValueError("a FreeSWITCH pool needs at least one node")
        self.nodes = {n.name: NodeState(n) for n in nodes}
        self._order = [n.name for n in nodes]
        self._failover_after = failover_after
        self._room_node: dict[RoomId, str] = {}

    def node_of(self, room: RoomId) -> NodeState | None:
        name = self._room_node.get(room)
        return self.nodes[name] if name is not None else None

    def place(self, room: RoomId, *, avoid: Iterable[str] = ()) -> NodeState | None:
        """The room's node (choosing one for a new room); None when no node is fit."""
        current = self.node_of(room)
        if current is not None and current.fit and current.name not in set(avoid):
            return current
        skip = set(avoid)
        candidates = [
            self.nodes[name] for name in self._order if self.nodes[name].fit and name not in skip
        ]
        if not candidates:
            return None
        chosen = min(candidates, key=lambda n: len(n.rooms))
        if current is not None:
            current.rooms.discard(room)
        chosen.rooms.add(room)
        self._room_node[room] = chosen.name
        return chosen

    def release(self, room: RoomId) -> None:
        name = self._room_node.pop(room, None)
        if name is not None:
            self.nodes[name].rooms.discard(room)

    # --- health -----------------------------------------------------------------------------

    def set_connected(self, name: str, connected: bool, now: float) -> None:
        node = self.nodes[name]
        node.connected = connected
        if connected:  # a new connection: the node (re)started
            node.answering = True
            node.going_away = False
        self._update(node, now)

    def shutting_down(self, name: str, now: float) -> bool:
        """The node said it is shutting down (the Event Socket's SHUTDOWN event): failed at
        once, not ``failover_after`` later, and unfit until its Event Socket connects anew
        (a restarted node) whatever its old connection and probes still say. True when it
        was not failed yet (its rooms are to be re-homed now)."""
        node = self.nodes[name]
        node.going_away = True
        if node.unfit_since is None:
            node.unfit_since = now
        if node.failed:
            return False
        node.failed = True
        return True

    def set_answering(self, name: str, answering: bool, now: float) -> None:
        node = self.nodes[name]
        node.answering = answering
        self._update(node, now)

    def _update(self, node: NodeState, now: float) -> None:
        if node.connected and node.answering and not node.going_away:
            node.unfit_since = None
            node.failed = False
        elif node.unfit_since is None:
            node.unfit_since = now

    def newly_failed(self, now: float) -> list[NodeState]:
        """Nodes unfit for ``failover_after`` seconds that were not failed yet."""
        failed = []
        for node in self.nodes.values():
            since = node.unfit_since
            if node.failed or since is None or since == 0.0 and not node.rooms:
                continue
            if now - since >= self._failover_after:
                node.failed = True
                failed.append(node)
        return failed
