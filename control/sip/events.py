"""Events the sans-IO SIP cores hand to the layer above (transactions, session timers).

Each event is a small frozen dataclass named for what happened; consumers ``match`` on the type.
"""

from __future__ import annotations

from dataclasses import dataclass

from control.sip.message import Request, Response

__all__ = [
    "AckFor2xxReceived",
    "AckReceived",
    "RefreshDue",
    "ResponseReceived",
    "SessionExpired",
    "SessionTimerEvent",
    "TimedOut",
    "TransactionEvent",
    "TransactionTerminated",
]


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A client transaction passes a provisional or final response up (RFC 3261 §17.1).

    After a 2xx to an INVITE, retransmissions of that 2xx (and 2xx from other forks) keep
    arriving as ``ResponseReceived`` while the transaction is in RFC 6026's Accepted state, so
    the dialog layer can ACK each one (§13.2.2.4).
    """

    response: Response


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B, F or H fired: no final response (client) or no ACK (INVITE server)."""


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The INVITE server transaction got the ACK for its non-2xx final response (§17.2.1)."""

    request: Request


@dataclass(frozen=True, slots=True)
class AckFor2xxReceived:
    """An ACK matched an INVITE server transaction in the Accepted state (RFC 6026 §7.1).

    That only happens with RFC 2543 peers (no magic-cookie branch, so the ACK for a 2xx keys
    like its INVITE). RFC 6026 says it MUST go to the TU, not be absorbed: it acknowledges the
    2xx, so the dialog layer should treat it exactly like an ACK that matched no transaction.
    """

    request: Request


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction is done and may be forgotten (always the last event it emits)."""


TransactionEvent = (
    ResponseReceived | TimedOut | AckReceived | AckFor2xxReceived | TransactionTerminated
)


@dataclass(frozen=True, slots=True)
class RefreshDue:
    """We are the refresher and half the session interval has passed (RFC 4028 §7.4, §10):
    send a session refresh (re-INVITE with the same SDP) now."""

    interval: int


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """No refresh succeeded before Session-Expires minus min(32, SE/3) (RFC 4028 §10): the
    session is dead, end the dialog with BYE and let the application drop the participant."""

    interval: int


SessionTimerEvent = RefreshDue | SessionExpired
