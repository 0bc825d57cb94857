"""Per-participant message rate: a token bucket fed by the caller's clock (sans-IO).

``rate`` tokens a second up to ``burst``; each message takes one. A flooder's excess is refused
at once (MSRP 413 "Too many messages": RFC 4975 has no 429) instead of queueing, so what the
room holds for one sender is bounded by the burst whatever the sender does.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    def __init__(self, rate: float, burst: int, *, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        """Whether a message may pass at ``now`` (taking its token if so)."""
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    @property
    def tokens(self) -> float:
        return self._tokens
