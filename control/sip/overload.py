"""Load shedding by event-loop lag: refuse new work while the server is behind.

Sans-IO, as the other cores: fed lag samples with their time, asked about each new
out-of-dialog request with the time. The asyncio side (control/sip/lagprobe.py) measures the
lag; the UA (control/sip/useragent.py) asks `admit` and answers a refused request 503 with
`Retry-After` in its transaction, so the client's retransmissions are absorbed and the
client is told when to come back (RFC 3261 §21.5.4; RFC 7339 §1's point that a server which
keeps accepting work it cannot finish fails it all, here without RFC 7339's Via ``oc``
negotiation: any client understands 503 + Retry-After).

Why the event loop's lag: every SIP message, timer and RTP tick of this process runs on one
loop, so how late a periodic callback runs is how far behind the whole server is. Once it is
behind, UDP clients retransmit (RFC 3261 §17.1.1.2: T1, 2 T1, …), each retransmission is one
more message to parse, and the backlog feeds on itself: a 30-minute SIPp soak at 272 calls/s
fell behind after a transient at minute 14 and failed 22–34 % of its calls for the rest of
the run. Refusing new calls while behind is what lets it catch up.

Policy:

* The lag is smoothed by an exponentially weighted moving average whose weight is the time
  each sample covers (time constant ``smoothing``, 1 s): a stalled loop runs fewer probes,
  and weighting by sample count would under-count exactly the stalled periods. Not the max
  of the last N probes: that enters on one transient (a single GC pause, a disk flush) and
  sheds calls the server could have served; what hurts is lag that lasts, which the average
  sees within a second or two.
* Overloaded when the average exceeds ``overload_lag``; back to normal only when it falls
  below half of it (hysteresis) and at least ``min_overloaded`` has passed since entering,
  so the state does not flap on a lag hovering around the threshold.
* While overloaded `admit` refuses every new out-of-dialog request (INVITE, SUBSCRIBE,
  MESSAGE, REFER, OPTIONS, REGISTER, PUBLISH …). The UA never asks about in-dialog requests
  (BYE, re-INVITE, NOTIFY …), ACK, CANCEL or retransmissions of requests already in a
  transaction: they finish work the server already took, and refusing them would leave that
  work to time out and be retried, the backlog made worse.
* A guard whose probe stopped reporting (``stale_after`` without a sample: the probe was
  stopped) admits everything rather than shedding for ever.
* ``overload_lag`` 0 is off: nothing is ever refused.
"""

from __future__ import annotations

import math
from collections import Counter
from enum import Enum

__all__ = ["OverloadGuard", "OverloadState"]

SMOOTHING = 1.0  # s: the average's time constant; a lag must last about this long to count
MIN_OVERLOADED = 1.0  # s in overload before leaving it: at least one time constant of calm
STALE_AFTER = 5.0  # s without a sample: the probe is gone, stop shedding


class OverloadState(Enum):
    NORMAL = "normal"
    OVERLOADED = "overloaded"


class OverloadGuard:
    """Decides from the loop's lag whether new out-of-dialog requests are admitted.

    ``overload_lag`` and the times are seconds; ``retry_after`` is what the 503s say.
    """

    def __init__(
        self,
        overload_lag: float,
        *,
        retry_after: int = 2,
        smoothing: float = SMOOTHING,
        min_overloaded: float = MIN_OVERLOADED,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self.overload_lag = overload_lag
        self.retry_after = retry_after
        self.retry_header = str(retry_after)  # the Retry-After value, built once
        self.smoothing = smoothing
        self.min_overloaded = min_overloaded
        self.stale_after = stale_after
        self.overloaded = False
        self.lag = 0.0  # the smoothed lag, seconds
        self.last_lag = 0.0  # the latest sample
        self.entered = 0  # times the guard went into overload
        self.shed: Counter[str] = Counter()  # requests refused, by method
        self._last_sample: float | None = None
        self._since = 0.0  # when the guard last went into overload

    @property
    def enabled(self) -> bool:
        return self.overload_lag > 0

    def sample(self, now: float, lag: float) -> OverloadState | None:
        """Take one probe's lateness ``lag`` measured at ``now``; the new state if it changed."""
        if not self.enabled:
            return None
        lag = max(lag, 0.0)
        covered = lag if self._last_sample is None else max(now - self._last_sample, 0.0)
        self._last_sample = now
        self.last_lag = lag
        self.lag += (1.0 - math.exp(-covered / self.smoothing)) * (lag - self.lag)
        if not self.overloaded:
            if self.lag > self.overload_lag:
                self.overloaded = True
                self.entered += 1
                self._since = now
                return OverloadState.OVERLOADED
        elif self.lag < self.overload_lag / 2 and now - self._since >= self.min_overloaded:
            self.overloaded = False
            return OverloadState.NORMAL
        return None

    def admit(self, now: float, method: str = "other") -> bool:
        """May a new out-of-dialog ``method`` request be handled at ``now``? A refusal is
        counted under ``method`` (the caller passes the counted name, so the labels stay
        bounded)."""
        if not self.overloaded:
            return True
        if self._last_sample is not None and now - self._last_sample > self.stale_after:
            return True
        self.shed[method] += 1
        return False
