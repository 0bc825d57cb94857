"""RFC 4028 session timers, sans-IO: the header grammar, the negotiation, and one clock.

A session whose refreshes stop is dead. That is how a chat-only or file-only participant,
which has no RTP to time out, leaves a room when its client vanishes. Two halves:

* negotiation (pure functions over messages): what a UAS answers to a request's
  ``Session-Expires``/``Min-SE``/``Supported: timer`` (§9), what a UAC offers (§7.1) and reads
  back from the 2xx (§7.2), and when an interval is too small (422 with ``Min-SE``, §8);
* ``SessionTimer``, fed the time: it reports its one deadline and emits ``RefreshDue`` (we are
  the refresher, half the interval passed, §7.4) or ``SessionExpired`` (no refresh by
  Session-Expires minus min(32, SE/3), §10).

``refresher=uac``/``uas`` always names a role in the transaction that carried the header, not
in the dialog: in a re-INVITE we send, ``uac`` is us.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from control.sip.errors import SipError
from control.sip.events import RefreshDue, SessionExpired, SessionTimerEvent
from control.sip.message import Request, Response
from control.sip.uri import parse_params

__all__ = [
    "MIN_SE_FLOOR",
    "IntervalTooSmall",
    "Negotiated",
    "Refresher",
    "SessionExpires",
    "SessionTimer",
    "TimerPolicy",
    "answer_request",
    "offer_headers",
    "parse_min_se",
    "parse_session_expires",
    "read_answer",
    "retry_interval",
    "supports_timer",
]

MIN_SE_FLOOR = 90  # RFC 4028 §4: the smallest Min-SE on the wire; lower only for tests


class Refresher(enum.Enum):
    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """A ``Session-Expires`` value: the interval in seconds and, if named, the refresher."""

    interval: int
    refresher: Refresher | None = None

    def __str__(self) -> str:
        if self.refresher is None:
            return str(self.interval)
        return f"{self.interval};refresher={self.refresher.value}"


def _delta_seconds(text: str, header: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        raise SipError(400, f"bad {header}")
    return int(text)


def parse_session_expires(value: str) -> SessionExpires:
    """§4: ``delta-seconds *(;se-params)``; an unknown refresher value is a 400."""
    delta, _, rest = value.partition(";")
    interval = _delta_seconds(delta, "Session-Expires")
    if interval == 0:
        raise SipError(400, "bad Session-Expires")
    params = parse_params(rest)
    refresher = params.get("refresher")
    if refresher is None:
        return SessionExpires(interval)
    try:
        return SessionExpires(interval, Refresher(refresher.lower()))
    except ValueError:
        raise SipError(400, "bad Session-Expires refresher") from None


def parse_min_se(value: str) -> int:
    """§5: ``delta-seconds *(;generic-param)``."""
    return _delta_seconds(value.partition(";")[0], "Min-SE")


def _session_expires(message: Request | Response) -> SessionExpires | None:
    value = message.headers.get("Session-Expires")
    return None if value is None else parse_session_expires(value)


def _min_se(message: Request | Response) -> int | None:
    value = message.headers.get("Min-SE")
    return None if value is None else parse_min_se(value)


def supports_timer(message: Request | Response) -> bool:
    """The sender understands the extension: ``timer`` in Supported or Require."""
    tokens = message.headers.get_all("Supported") + message.headers.get_all("Require")
    return any(token.strip().lower() == "timer" for token in tokens)


@dataclass(frozen=True, slots=True)
class TimerPolicy:
    """Our side's numbers: the interval we ask for and the smallest we accept (seconds)."""

    session_expires: int = 1800
    min_se: int = MIN_SE_FLOOR

    def __post_init__(self) -> None:
        if self.min_se < 1:
            raise ValueError("min_se must be at least 1 second")
        if self.session_expires < self.min_se:
            raise ValueError("session_expires must not be below min_se")


class IntervalTooSmall(SipError):
    """§8.1: a Session-Expires below our Min-SE is answered 422 naming our minimum."""

    def __init__(self, min_se: int) -> None:
        super().__init__(422, "Session Interval Too Small")
        self.min_se = min_se

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [("Min-SE", str(self.min_se))]


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The session timer one refresh transaction settled on (roles are that transaction's)."""

    interval: int
    refresher: Refresher
    require: bool = False  # the 2xx must say ``Require: timer`` (the UAC supports it)

    def local_refresh(self, *, we_are_uac: bool) -> bool:
        """Whether we send the next refresh."""
        return (self.refresher is Refresher.UAC) == we_are_uac

    def response_headers(self) -> list[tuple[str, str]]:
        """What our 2xx carries as UAS (§9): Session-Expires with the refresher, Require."""
        headers = [("Session-Expires", str(SessionExpires(self.interval, self.refresher)))]
        if self.require:
            headers.append(("Require", "timer"))
        return headers


def answer_request(request: Request, policy: TimerPolicy) -> Negotiated:
    """§9: the UAS side of an INVITE, re-INVITE or UPDATE.

    A requested interval below our Min-SE raises ``IntervalTooSmall`` (422). We may shorten the
    interval to our own but never below the request's Min-SE, and never lengthen it. A UAC
    without ``timer`` cannot refresh, so we do (refresher=uas, no Require); a UAC that
    supports it and leaves the choice to us refreshes itself, which spares the focus a
    re-INVITE per participant and still ends a session whose client vanished.
    """
    requested = _session_expires(request)
    floor = max(policy.min_se, _min_se(request) or 0)
    if requested is not None:
        if requested.interval < policy.min_se:
            raise IntervalTooSmall(policy.min_se)
        interval = max(min(requested.interval, policy.session_expires), floor)
    else:
        interval = max(policy.session_expires, floor)
    supported = supports_timer(request)
    if not supported:
        refresher = Refresher.UAS
    elif requested is not None and requested.refresher is not None:
        refresher = requested.refresher
    else:
        refresher = Refresher.UAC
    return Negotiated(interval, refresher, require=supported)


def offer_headers(
    policy: TimerPolicy, interval: int, refresher: Refresher | None
) -> list[tuple[str, str]]:
    """§7.1/§7.4: what our INVITE or refresh re-INVITE carries as UAC."""
    return [
        ("Supported", "timer"),
        ("Session-Expires", str(SessionExpires(interval, refresher))),
        ("Min-SE", str(policy.min_se)),
    ]


def read_answer(response: Response, offered: int) -> Negotiated:
    """§7.2: the 2xx to our INVITE or refresh, read as its UAC.

    A 2xx without Session-Expires means the peer does not do session timers. RFC 4028 then
    allows no expiry at all; the focus keeps refreshing on its own interval instead, because a
    re-INVITE that times out (408) is how it learns that such a peer is gone. A 2xx naming no
    refresher leaves it to us.
    """
    answered = _session_expires(response)
    if answered is None:
        return Negotiated(offered, Refresher.UAC)
    return Negotiated(answered.interval, answered.refresher or Refresher.UAC)


def retry_interval(response: Response, offered: int) -> int | None:
    """§7.4: after a 422, the interval to try again with (its Min-SE), if that is larger."""
    try:
        minimum = _min_se(response)
    except SipError:
        return None
    if minimum is None or minimum <= offered:
        return None
    return minimum


class SessionTimer:
    """One session's refresh clock, fed the time (aioquic style: ``next_timer``/``handle_timer``).

    ``restart`` is called whenever a refresh transaction succeeds (a 2xx sent or received).
    """

    def __init__(self, interval: int, *, local_refresh: bool, now: float) -> None:
        self._events: deque[SessionTimerEvent] = deque()
        self.restart(interval, local_refresh=local_refresh, now=now)

    def restart(self, interval: int, *, local_refresh: bool, now: float) -> None:
        self.interval = interval
        self.local_refresh = local_refresh
        self._refreshed_at = now
        self._refresh_requested = False
        self.expired = False

    @property
    def refresh_at(self) -> float | None:
        """§7.4: the refresher refreshes at half the interval."""
        if not self.local_refresh:
            return None
        return self._refreshed_at + self.interval / 2

    @property
    def expires_at(self) -> float:
        """§10: the session is given up min(32, SE/3) seconds before it would expire."""
        return self._refreshed_at + self.interval - min(32.0, self.interval / 3)

    def next_timer(self) -> float | None:
        if self.expired:
            return None
        refresh_at = self.refresh_at
        if refresh_at is not None and not self._refresh_requested:
            return refresh_at
        return self.expires_at

    def handle_timer(self, now: float) -> None:
        if self.expired:
            return
        refresh_at = self.refresh_at
        if refresh_at is not None and not self._refresh_requested and now >= refresh_at:
            self._refresh_requested = True
            self._events.append(RefreshDue(self.interval))
        if now >= self.expires_at:
            self.expired = True
            self._events.append(SessionExpired(self.interval))

    def stop(self) -> None:
        self.expired = True
        self._events.clear()

    def next_event(self) -> SessionTimerEvent | None:
        return self._events.popleft() if self._events else None
