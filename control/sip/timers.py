"""RFC 3261's timer values (§17.1.1.1, Table 4) and the UAS core's 2xx retransmission (§13.3.1.4).

The 2xx retransmitter lives beside the timer values rather than with the transactions: after
RFC 6026 the INVITE server transaction hands the 2xx to the UAS core, which times it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Timers", "TwoHundredRetransmitter"]


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 §17.1.1.1 and Table 4; the values come from config."""

    t1: float = 0.5  # RTT estimate; every other timer derives from it
    t2: float = 4.0  # cap on retransmit intervals of non-INVITE requests and INVITE responses
    t4: float = 5.0  # how long a message may linger in the network (Timers I and K)
    d: float = 32.0  # Timer D on unreliable transports: "at least 32 seconds" (§17.1.1.2)

    def __post_init__(self) -> None:
        if self.t1 <= 0 or self.t2 < self.t1 or self.t4 <= 0 or self.d < 0:
            raise ValueError(f"bad SIP timers {self}")

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L and M."""
        return 64 * self.t1


class TwoHundredRetransmitter:
    """Retransmits the 2xx to an INVITE until the ACK arrives (RFC 3261 §13.3.1.4).

    The INVITE server transaction sends the 2xx once and leaves (RFC 6026 Accepted state); the
    UAS core resends it at T1, then doubling up to T2, because the ACK to a 2xx is end to end.
    It does not send the first copy: create it right after the transaction sent the 2xx. After
    64*T1 without an ACK, ``timed_out`` is set and the UAS should confirm and send BYE.
    """

    def __init__(self, response_bytes: bytes, *, now: float, timers: Timers = Timers()) -> None:
        self._bytes = response_bytes
        self._timers = timers
        self._interval = timers.t1
        self._next: float | None = now + timers.t1
        self._give_up = now + timers.timeout
        self._outgoing: list[bytes] = []
        self.acked = False
        self.timed_out = False

    @property
    def done(self) -> bool:
        return self.acked or self.timed_out

    def ack_received(self) -> None:
        self.acked = True
        self._next = None

    def next_timer(self) -> float | None:
        if self.done or self._next is None:
            return None
        return min(self._next, self._give_up)

    def handle_timer(self, now: float) -> None:
        if self.done or self._next is None:
            return
        if now >= self._give_up:
            self.timed_out = True
            self._next = None
            return
        if now < self._next:
            return
        self._outgoing.append(self._bytes)
        while self._next <= now:  # a late caller skips missed deadlines instead of bursting
            self._interval = min(2 * self._interval, self._timers.t2)
            self._next += self._interval

    def data_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out
