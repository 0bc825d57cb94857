"""Screen sharing: the ``com.ag-projects.screen-sharing`` chatroom extension, sans-IO.

A participant whose chat stream offered ``a=chatroom:... com.ag-projects.screen-sharing``
shares its screen by sending, at intervals, a JPEG of its desktop over that MSRP chat stream,
wrapped in CPIM with ``Content-Type: application/blink-screensharing`` (reference page
``sylkserver-applications.txt``, "Screen Sharing": the body right after the CPIM content
headers is the JPEG itself, ``ÿØÿà JFIF``; some senders base64 it, which we accept too).

`decode_frame` turns such a body into a validated `ScreenFrame` or raises `ScreenError`
carrying the MSRP status to answer (RFC 4975 §10: 400 malformed, 413 too large). Frames are
never relayed to chat. `ScreenBoard` keeps the latest frame of each sharing participant,
numbers them, ends a sharing after ``[screen] idle_timeout`` without a frame (fed `now`, it
reports its one deadline: `next_timer` / `handle_timer`, as aioquic does) or when told the
stream ended, and queues `SharingStarted` / `SharingEnded` events for the room.

Viewers (control/web) `await board.next_frame(room, participant, after=seq)`: it returns the
first frame newer than ``seq`` as soon as one is shown, or None once sharing has ended.
A slow viewer skips frames rather than queueing them: it always gets the latest.
`ScreenSharing` is the thin asyncio driver (one `call_at` at the board's deadline).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from control.media.engine import ParticipantId, RoomId
from control.msrp.cpim import CpimMessage
from control.msrp.errors import MsrpError

__all__ = [
    "SCREEN_CONTENT_TYPE",
    "SCREEN_SHARING_EXTENSION",
    "EndReason",
    "ScreenBoard",
    "ScreenError",
    "ScreenEvent",
    "ScreenFrame",
    "ScreenLimits",
    "ScreenSharing",
    "SharedFrame",
    "SharingEnded",
    "SharingStarted",
    "decode_frame",
    "is_screen_frame",
    "jpeg_dimensions",
]

log = logging.getLogger("chorus.screen")

SCREEN_CONTENT_TYPE = "application/blink-screensharing"
SCREEN_SHARING_EXTENSION = "com.ag-projects.screen-sharing"  # in a=chatroom (reference page)

ScreenKey = tuple[RoomId, ParticipantId]


class ScreenError(MsrpError):
    """A frame we refuse; `status` is the MSRP response code to send back (RFC 4975 §10).
    An MsrpError, so raised from a chat stream's validator it refuses that SEND only."""


@dataclass(frozen=True, slots=True)
class ScreenLimits:
    max_frame_bytes: int = 4 * 1024 * 1024  # one JPEG: a 4K desktop at usual quality fits
    max_width: int = 7680  # 8K UHD: beyond any desktop we expect to be shared
    max_height: int = 4320
    idle_timeout: float = 30.0  # seconds without a frame: the sharer stopped or vanished


@dataclass(frozen=True, slots=True)
class ScreenFrame:
    """One validated JPEG; `received_at` is the caller's clock (`now`)."""

    width: int
    height: int
    jpeg: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class SharedFrame:
    """A frame as shown on the board: whose it is and its number in that sharing (from 1)."""

    room: RoomId
    participant: ParticipantId
    sequence: int
    frame: ScreenFrame


class EndReason(Enum):
    IDLE = "idle"  # no frame for idle_timeout
    STOPPED = "stopped"  # the stream or the participant or the room ended


@dataclass(frozen=True, slots=True)
class SharingStarted:
    room: RoomId
    participant: ParticipantId
    at: float


@dataclass(frozen=True, slots=True)
class SharingEnded:
    room: RoomId
    participant: ParticipantId
    reason: EndReason
    at: float


ScreenEvent = SharingStarted | SharingEnded


def is_screen_frame(content_type: str | None) -> bool:
    """True for the CPIM content type of a screen-sharing frame (parameters ignored)."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == SCREEN_CONTENT_TYPE


# ---- JPEG (ITU-T T.81 Annex B) ------------------------------------------------------------

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
# B.1.1.3: SOF0-3, 5-7, 9-11, 13-15 carry the frame header; C4 (DHT), C8 (JPG), CC (DAC) do not.
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
_SOS = 0xDA


def jpeg_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) from the SOF frame header, checking the marker structure up to SOS.

    Raises ScreenError(400) for anything that is not a complete baseline/progressive JPEG:
    no SOI, no EOI at the end, a segment running past the data, no SOF before SOS.
    """
    if len(data) < 4 or not data.startswith(_SOI):
        raise ScreenError(400, "not a JPEG (no SOI marker)")
    if not data.endswith(_EOI):
        raise ScreenError(400, "truncated JPEG (no EOI marker at the end)")
    offset = 2
    end = len(data) - 2
    while offset < end:
        if data[offset] != 0xFF:
            raise ScreenError(400, f"JPEG marker expected at byte {offset}")
        marker = data[offset + 1]
        if marker == 0xFF:  # B.1.1.2: any marker may be preceded by fill bytes 0xFF
            offset += 1
            continue
        if marker in _STANDALONE:
            offset += 2
            continue
        if marker in (0x00, 0xD8, 0xD9):
            raise ScreenError(400, f"unexpected JPEG marker FF{marker:02X} at byte {offset}")
        if offset + 4 > end:
            raise ScreenError(400, "JPEG segment header past the end")
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if length < 2 or offset + 2 + length > end:
            raise ScreenError(400, f"JPEG segment FF{marker:02X} runs past the end")
        if marker in _SOF_MARKERS:
            if length < 8:
                raise ScreenError(400, "JPEG frame header too short")
            height = int.from_bytes(data[offset + 5 : offset + 7], "big")
            width = int.from_bytes(data[offset + 7 : offset + 9], "big")
            if width == 0 or height == 0:  # 0 lines means a DNL segment follows: refuse
                raise ScreenError(400, f"JPEG frame {width}x{height} has no size")
            return width, height
        if marker == _SOS:
            break
        offset += 2 + length
    raise ScreenError(400, "JPEG has no frame header (SOF) before its scan")


def _payload(body: bytes, content_headers: Iterable[tuple[str, str]], limit: int) -> bytes:
    """The JPEG bytes of a frame body: raw (the reference's example) or base64."""
    encoding = ""
    for name, value in content_headers:
        if name.lower() == "content-transfer-encoding":
            encoding = value.strip().lower()
    if encoding != "base64" and body.startswith(_SOI):
        if len(body) > limit:
            raise ScreenError(413, f"screen frame of {len(body)} bytes over {limit}")
        return body
    if len(body) > (limit + 2) // 3 * 4 + limit // 38 + 64:  # base64 with line breaks
        raise ScreenError(413, f"screen frame of {len(body)} base64 bytes over {limit} decoded")
    try:
        decoded = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ScreenError(400, "screen frame is neither a JPEG nor base64") from exc
    if len(decoded) > limit:
        raise ScreenError(413, f"screen frame of {len(decoded)} bytes over {limit}")
    return decoded


def decode_frame(
    body: bytes,
    *,
    now: float,
    limits: ScreenLimits,
    content_headers: Iterable[tuple[str, str]] = (),
) -> ScreenFrame:
    """Validate the body of a CPIM ``application/blink-screensharing`` message.

    400: not a JPEG (markers), 413: bigger than `max_frame_bytes` or than the dimension caps.
    """
    jpeg = _payload(body, content_headers, limits.max_frame_bytes)
    width, height = jpeg_dimensions(jpeg)
    if width > limits.max_width or height > limits.max_height:
        raise ScreenError(
            413, f"screen frame {width}x{height} over {limits.max_width}x{limits.max_height}"
        )
    return ScreenFrame(width, height, jpeg, now)


# ---- the board -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Sharing:
    latest: SharedFrame
    deadline: float
    waiters: list[asyncio.Future[SharedFrame | None]] = field(default_factory=list)


class ScreenBoard:
    """The current frame of every sharing participant, by room; fed frames and `now`."""

    def __init__(self, limits: ScreenLimits | None = None) -> None:
        self.limits = limits or ScreenLimits()
        self._sharing: dict[ScreenKey, _Sharing] = {}
        self._events: list[ScreenEvent] = []

    # ---- input ---------------------------------------------------------------------------

    def receive(
        self,
        room: RoomId,
        participant: ParticipantId,
        body: bytes,
        *,
        now: float,
        content_headers: Iterable[tuple[str, str]] = (),
    ) -> SharedFrame:
        """Decode, validate and show a frame body; raises ScreenError (nothing changes)."""
        frame = decode_frame(body, now=now, limits=self.limits, content_headers=content_headers)
        return self.show(room, participant, frame)

    def show(self, room: RoomId, participant: ParticipantId, frame: ScreenFrame) -> SharedFrame:
        """Make `frame` the participant's current image; wakes every viewer waiting on it."""
        key = (room, participant)
        deadline = frame.received_at + self.limits.idle_timeout
        sharing = self._sharing.get(key)
        if sharing is None:
            shared = SharedFrame(room, participant, 1, frame)
            self._sharing[key] = _Sharing(shared, deadline)
            self._events.append(SharingStarted(room, participant, frame.received_at))
            log.info(
                "screen sharing started: %s in %s (%dx%d)",
                participant,
                room,
                frame.width,
                frame.height,
            )
            return shared
        shared = SharedFrame(room, participant, sharing.latest.sequence + 1, frame)
        sharing.latest = shared
        sharing.deadline = deadline
        self._wake(sharing, shared)
        return shared

    def stop(self, room: RoomId, participant: ParticipantId, *, now: float) -> None:
        """The participant's chat stream (or the participant) ended: its sharing ends."""
        self._end((room, participant), EndReason.STOPPED, now)

    def stop_room(self, room: RoomId, *, now: float) -> None:
        for key in [key for key in self._sharing if key[0] == room]:
            self._end(key, EndReason.STOPPED, now)

    # ---- time ----------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """The earliest idle deadline, or None when nobody shares."""
        return min((s.deadline for s in self._sharing.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for key in [k for k, s in self._sharing.items() if s.deadline <= now]:
            self._end(key, EndReason.IDLE, now)

    # ---- output --------------------------------------------------------------------------

    def next_event(self) -> ScreenEvent | None:
        return self._events.pop(0) if self._events else None

    def current(self, room: RoomId, participant: ParticipantId) -> SharedFrame | None:
        sharing = self._sharing.get((room, participant))
        return sharing.latest if sharing is not None else None

    def sharing(self, room: RoomId) -> list[SharedFrame]:
        """The current frame of each participant sharing in `room`, oldest sharer first."""
        return [s.latest for (r, _), s in self._sharing.items() if r == room]

    def viewers(self, room: RoomId, participant: ParticipantId) -> int:
        """How many viewers are waiting for this sharer's next frame right now."""
        sharing = self._sharing.get((room, participant))
        return len(sharing.waiters) if sharing is not None else 0

    def frame_waiter(
        self, room: RoomId, participant: ParticipantId, *, after: int = 0
    ) -> asyncio.Future[SharedFrame | None]:
        """A future of the sharer's first frame numbered above `after` (already resolved when
        there is one), or of None when the participant is not sharing or stops first.
        Cancelling it stops the wait; no task is made, so a push loop can afford one per frame."""
        waiter: asyncio.Future[SharedFrame | None] = asyncio.get_running_loop().create_future()
        sharing = self._sharing.get((room, participant))
        if sharing is None:
            waiter.set_result(None)
        elif sharing.latest.sequence > after:
            waiter.set_result(sharing.latest)
        else:
            sharing.waiters.append(waiter)
            waiter.add_done_callback(lambda done: self._forget(sharing, done))
        return waiter

    async def next_frame(
        self, room: RoomId, participant: ParticipantId, *, after: int = 0
    ) -> SharedFrame | None:
        """The sharer's first frame numbered above `after`, waiting for it when needed;
        None if the participant is not sharing or stops before a newer frame arrives."""
        return await self.frame_waiter(room, participant, after=after)

    # ---- internals -----------------------------------------------------------------------

    @staticmethod
    def _forget(sharing: _Sharing, waiter: asyncio.Future[SharedFrame | None]) -> None:
        if waiter in sharing.waiters:  # cancelled before a frame came
            sharing.waiters.remove(waiter)

    @staticmethod
    def _wake(sharing: _Sharing, value: SharedFrame | None) -> None:
        waiters, sharing.waiters = sharing.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(value)

    def _end(self, key: ScreenKey, reason: EndReason, now: float) -> None:
        sharing = self._sharing.pop(key, None)
        if sharing is None:
            return
        self._wake(sharing, None)
        self._events.append(SharingEnded(key[0], key[1], reason, now))
        log.info("screen sharing ended (%s): %s in %s", reason.value, key[1], key[0])


class ScreenSharing:
    """The board on the event loop: `loop.time()` as `now`, one `call_at` re-armed at the
    board's deadline, its events handed out by `next_event()` (awaited by the room)."""

    def __init__(self, board: ScreenBoard, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.board = board
        self._loop = loop or asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        # The deadline the timer was armed for: uvloop's call_at hands back a plain Handle
        # (no when()) for a deadline already passed, so the time is kept here.
        self._timer_at = 0.0
        self._events: asyncio.Queue[ScreenEvent] = asyncio.Queue()

    def receive(
        self,
        room: RoomId,
        participant: ParticipantId,
        body: bytes,
        content_headers: Iterable[tuple[str, str]] = (),
    ) -> SharedFrame:
        """A frame from the participant's chat stream; raises ScreenError (400/413)."""
        try:
            return self.board.receive(
                room, participant, body, now=self._loop.time(), content_headers=content_headers
            )
        finally:
            self._pump()

    def receive_cpim(
        self, room: RoomId, participant: ParticipantId, message: CpimMessage
    ) -> SharedFrame | None:
        """A parsed CPIM message of the participant's chat stream: None when it is not a
        screen frame (route it as chat), else the frame shown; ScreenError (400/413)."""
        if not is_screen_frame(message.content_type):
            return None
        return self.receive(room, participant, message.body, message.content_headers)

    def stop(self, room: RoomId, participant: ParticipantId) -> None:
        self.board.stop(room, participant, now=self._loop.time())
        self._pump()

    def stop_room(self, room: RoomId) -> None:
        self.board.stop_room(room, now=self._loop.time())
        self._pump()

    async def next_event(self) -> ScreenEvent:
        return await self._events.get()

    def pending_events(self) -> list[ScreenEvent]:
        """Events not yet taken, without waiting (for callers that poll on their own input)."""
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        # asyncio may run a handle up to its clock resolution early: never before the deadline
        when = self._timer_at if self._timer is not None else 0.0
        self._timer = None
        self.board.handle_timer(max(self._loop.time(), when))
        self._pump()

    def _pump(self) -> None:
        while (event := self.board.next_event()) is not None:
            self._events.put_nowait(event)
        deadline = self.board.next_timer()
        if self._timer is not None and (deadline is None or self._timer_at != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
