"""The thin asyncio layer over a room's :class:`~.infosubs.RoomInfo`: one per room that has
conference-info subscribers, made on the first SUBSCRIBE and dropped with the last.

It hooks the room (``Room.on_change``), keeps one ``call_at`` armed at the core's next deadline
and hands each due body to its subscription's notifier (RFC 6665 NOTIFY, sent by the SIP
subscription core). No parsing or protocol decisions here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

from .info import CONFERENCE_INFO_TYPE, render_full, with_version
from .infosubs import RoomFileRecord, RoomInfo, room_snapshot
from .room import Room

__all__ = ["InfoNotifier", "RoomInfoService"]

log = logging.getLogger("chorus.conference.info")


class InfoNotifier(Protocol):
    """What this layer needs of an accepted subscription (control/app.py's handle)."""

    def notify(self, body: bytes, content_type: str) -> None: ...

    def terminate(self, reason: str, body: bytes | None, content_type: str | None) -> None: ...


class RoomInfoService:
    def __init__(
        self,
        room: Room,
        files: Callable[[], Sequence[RoomFileRecord]] = lambda: (),
        *,
        min_interval: float,
        max_subscriptions: int,
        host: str = "Chorus",
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.room = room
        self.core = RoomInfo(
            lambda: room_snapshot(room, files(), host=host),
            min_interval=min_interval,
            max_subscriptions=max_subscriptions,
        )
        self.notifiers: dict[Hashable, InfoNotifier] = {}
        self.wall = wall
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        room.on_change = self.changed

    @property
    def full(self) -> bool:
        return self.core.full

    def subscribe(self, key: Hashable, notifier: InfoNotifier) -> None:
        """A new subscription: its first NOTIFY carries the full document at once."""
        self.notifiers[key] = notifier
        notifier.notify(self.core.subscribe(key, self._loop.time()), CONFERENCE_INFO_TYPE)

    def refreshed(self, key: Hashable) -> None:
        """A refresh SUBSCRIBE: RFC 6665 §4.2.2 wants a NOTIFY; it carries the full state."""
        body = self.core.resend_full(key, self._loop.time())
        notifier = self.notifiers.get(key)
        if body is not None and notifier is not None:
            notifier.notify(body, CONFERENCE_INFO_TYPE)

    def unsubscribe(self, key: Hashable) -> None:
        self.notifiers.pop(key, None)
        self.core.unsubscribe(key)

    @property
    def empty(self) -> bool:
        return not self.notifiers

    def changed(self) -> None:
        self.core.changed(self._loop.time())
        self._arm()

    def _arm(self) -> None:
        deadline = self.core.next_timer()
        if deadline is None or (self._armed_at is not None and self._armed_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = deadline
        self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = self._armed_at = None
        for key, body in self.core.handle_timer(self._loop.time(), wall=self.wall()):
            notifier = self.notifiers.get(key)
            if notifier is None:
                continue
            try:
                notifier.notify(body, CONFERENCE_INFO_TYPE)
            except Exception:  # one subscriber's failure is logged once and harms no other
                log.exception("conference-info NOTIFY for %s failed", self.room.id)
        self._arm()

    def close(self, reason: str = "noresource") -> None:
        """The room ended: a last NOTIFY to each, terminated (RFC 6665 §4.2.2)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._armed_at = None
        bodies = dict(self.core.final(self.wall()))
        for key, notifier in self.notifiers.items():
            body = bodies.get(key)
            try:
                notifier.terminate(reason, body, CONFERENCE_INFO_TYPE if body else None)
            except Exception:
                log.exception("final conference-info NOTIFY for %s failed", self.room.id)
        self.notifiers.clear()
        if self.room.on_change == self.changed:
            self.room.on_change = None


class ConferenceInfo:
    """Every room's conference-info subscriptions on this node: a :class:`RoomInfoService` per
    room with subscribers (none for a room without: its changes cost nothing), its limit."""

    def __init__(
        self,
        *,
        min_interval: float = 1.0,
        max_subscriptions: int = 100,
        files: Callable[[Room], Sequence[RoomFileRecord]] = lambda _room: (),
        host: str = "Chorus",
    ) -> None:
        self.min_interval = min_interval
        self.max_subscriptions = max_subscriptions  # per room; one more is 503
        self.files = files
        self.host = host
        self.services: dict[str, RoomInfoService] = {}

    def full(self, room: Room) -> bool:
        service = self.services.get(room.id)
        return service is not None and service.full

    def count(self, room: Room) -> int:
        """Live conference-info subscriptions to ``room``."""
        service = self.services.get(room.id)
        return len(service.notifiers) if service is not None and service.room is room else 0

    def subscribe(self, room: Room, key: Hashable, notifier: InfoNotifier) -> None:
        service = self.services.get(room.id)
        if service is None or service.room is not room:
            service = self.services[room.id] = RoomInfoService(
                room,
                lambda: self.files(room),
                min_interval=self.min_interval,
                max_subscriptions=self.max_subscriptions,
                host=self.host,
            )
        service.subscribe(key, notifier)
        log.info("conference-info subscription to %s (%d)", room.id, len(service.notifiers))

    def refreshed(self, room: Room, key: Hashable) -> None:
        service = self.services.get(room.id)
        if service is not None:
            service.refreshed(key)

    def unsubscribe(self, room_id: str, key: Hashable) -> None:
        service = self.services.get(room_id)
        if service is None:
            return
        service.unsubscribe(key)
        if service.empty:
            service.close()
            del self.services[room_id]

    def room_ended(self, room: Room) -> None:
        """The room's last participant left: each subscription gets its terminated NOTIFY."""
        service = self.services.get(room.id)
        if service is not None and service.room is room:
            del self.services[room.id]
            service.close("noresource")

    def close(self) -> None:
        for service in list(self.services.values()):
            service.close("deactivated")  # §4.2.2: the subscriber may subscribe again later
        self.services.clear()

    def fetch(self, room: Room) -> bytes:
        """The full document for a fetch (SUBSCRIBE with ``Expires: 0``, RFC 6665 §4.4.3):
        one NOTIFY, no subscription kept."""
        return with_version(render_full(room_snapshot(room, self.files(room), host=self.host)), 1)
