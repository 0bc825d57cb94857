"""RFC 4733 telephone-events (DTMF over RTP): payload codec and a de-duplicating receiver.

A sender repeats an event's packets while the key is held (same RTP timestamp, growing
duration) and sends the final "end" packet three times (RFC 4733 §2.5.1.4).  The receiver
turns that stream into one `DigitReceived` per key press.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

from control.media.rtp import RtpPacket

__all__ = [
    "DigitReceived",
    "DtmfError",
    "DtmfReceiver",
    "TelephoneEvent",
    "digit_to_event",
    "event_to_digit",
]

_EVENT = struct.Struct("!BBH")
# RFC 4733 §3.2, Table 3: events 0-15 are the DTMF keys, 16 is flash.
_DIGITS = "0123456789*#ABCD"


class DtmfError(ValueError):
    """A telephone-event payload that cannot be parsed."""


def event_to_digit(event: int) -> str | None:
    if 0 <= event < len(_DIGITS):
        return _DIGITS[event]
    if event == 16:
        return "flash"
    return None


def digit_to_event(digit: str) -> int:
    if digit == "flash":
        return 16
    index = _DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return index


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 §2.3 event block: event code, E bit, volume (-dBm0), duration (ticks)."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @property
    def digit(self) -> str | None:
        return event_to_digit(self.event)

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse the first event block; RFC 2198 redundancy is unwrapped before this."""
        if len(payload) < _EVENT.size:
            raise DtmfError("telephone-event payload shorter than 4 octets")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= 63:
            raise ValueError("event or volume out of range")
        flags = (0x80 if self.end else 0) | self.volume
        return _EVENT.pack(self.event, flags, min(self.duration, 0xFFFF))


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """One key press, reported once its end packet arrived (or a newer event began)."""

    digit: str
    duration: int  # RTP timestamp units
    volume: int
    timestamp: int  # RTP timestamp of the event start


class DtmfReceiver:
    """Turns a stream of telephone-event packets into key presses, each exactly once.

    An event is identified by its RTP timestamp (RFC 4733 §2.5.2.1).  A digit is
    reported on its first end packet; the retransmitted end packets then find it in the
    recent-events memory and are ignored.  If every end packet is lost, the digit is
    reported when a packet for a newer event arrives.
    """

    def __init__(self, *, memory: int = 16) -> None:
        self._memory = memory
        self._done: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._open: tuple[int, int, TelephoneEvent] | None = None  # (ssrc, ts, last)

    def receive(self, packet: RtpPacket) -> list[DigitReceived]:
        try:
            event = TelephoneEvent.parse(packet.payload)
        except DtmfError:
            return []
        key = (packet.ssrc, packet.timestamp)
        out: list[DigitReceived] = []
        if key in self._done:
            return out
        if self._open is not None and self._open[:2] != key:
            ssrc, ts, last = self._open
            self._open = None
            self._finish((ssrc, ts), last, out)
        if event.end:
            self._open = None
            self._finish(key, event, out)
        else:
            self._open = (packet.ssrc, packet.timestamp, event)
        return out

    def flush(self) -> list[DigitReceived]:
        """Report an event still open (its end never came), e.g. when the stream ends."""
        out: list[DigitReceived] = []
        if self._open is not None:
            ssrc, ts, last = self._open
            self._open = None
            self._finish((ssrc, ts), last, out)
        return out

    def _finish(
        self, key: tuple[int, int], event: TelephoneEvent, out: list[DigitReceived]
    ) -> None:
        self._done[key] = None
        while len(self._done) > self._memory:
            self._done.popitem(last=False)
        digit = event.digit
        if digit is not None:
            out.append(DigitReceived(digit, event.duration, event.volume, key[1]))
