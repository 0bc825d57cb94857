"""What went through the user agent, counted for /metrics (control/metrics.py reads it at
scrape time). Kept apart from the UA: the metrics side imports only this."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from control.sip.compose import ALLOWED_METHODS
from control.sip.message import Request

__all__ = ["COUNTED_METHODS", "SipCounters", "counted_method"]

# Methods counted by name in SipCounters; any other token a peer sends counts as "other", so
# a flood of invented methods cannot grow the counters (or the metrics' label sets).
COUNTED_METHODS = frozenset(ALLOWED_METHODS.split(", ")) | {
    "REGISTER",
    "PUBLISH",
    "UPDATE",
    "PRACK",
}


def counted_method(method: str) -> str:
    return method if method in COUNTED_METHODS else "other"


@dataclass(slots=True)
class SipCounters:
    """What went through the UA since it started. Retransmissions are the transactions'
    business and are not counted."""

    requests_received: Counter[str] = field(default_factory=Counter)  # new server transactions
    requests_sent: Counter[str] = field(default_factory=Counter)  # new client transactions
    # (method, status class 2..6) of every final response we sent
    final_responses: Counter[tuple[str, int]] = field(default_factory=Counter)
    calls: Counter[int] = field(default_factory=Counter)  # class of the final to initial INVITEs

    def count_final(self, request: Request, status: int) -> None:
        method = counted_method(request.method)
        self.final_responses[method, status // 100] += 1
        if method == "INVITE" and request.to.tag is None:  # a call, not a re-INVITE
            self.calls[status // 100] += 1
