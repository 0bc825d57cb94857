"""SIP-specific event notification (RFC 6665), sans-IO: the notifier and subscriber cores.

No sockets, no loop, no clock: every time-dependent call takes ``now``; each core reports its
one deadline (``next_timer``) and acts on it in ``handle_timer(now)``, as the transactions and
the session timer do. Events come out of ``next_event()``.

API summary
-----------
- :func:`parse_event` → :class:`EventKey` ``(package, id)``: the key of a subscription inside
  its dialog (§4.5.2: several usages per dialog, one per event package and id).
- :class:`ExpiresPolicy` ``(min_expires, max_expires, default_expires)``; ``grant(requested)``
  returns what the 200 says (§4.2.1.1: shortened, never lengthened) or raises
  :class:`IntervalTooBrief` (423 with ``Min-Expires``). ``Expires: 0`` is always granted:
  it is an unsubscribe (§4.2.1.4), never 423.
- :class:`NotifierCore`: one subscription on the notifier side. ``refresh(expires, now)``
  (a SUBSCRIBE, initial or in-dialog), ``queue(body, content_type)`` then ``next_notify(now)``
  → :class:`NotifyRequest` (headers and body of the next NOTIFY; one in flight at a time, in
  order), ``notify_answered(status, now)`` (481 and 408 end the subscription, §4.2.2 and
  RFC 5057 §5.2), ``terminate(reason)`` (the final NOTIFY carries
  ``Subscription-State: terminated;reason=…``). The expiry deadline produces a final NOTIFY
  with ``reason=timeout`` (§4.2.2). Events: :class:`SubscriptionEnded`.
- :class:`SubscriberCore`: one subscription on the subscriber side. ``subscribe_expires()``,
  ``response_received(status, expires, now)``, ``notify_received(state, now)`` (→ the status
  to answer: 200, or 481 for a subscription we do not have any more), a refresh deadline
  before expiry (:class:`SubscriptionRefreshDue`), ``unsubscribe()``. Events:
  :class:`SubscriptionRefreshDue`, :class:`SubscriptionEnded`.
- :func:`parse_subscription_state` / :class:`SubscriptionStateValue`.

Unsubscribing (§4.2.1.4): the notifier answers ``SUBSCRIBE`` with ``Expires: 0`` by 200
(Expires: 0) and then a NOTIFY with ``Subscription-State: terminated``. §4.2.1.4 does not
name the reason; we say ``timeout`` (§4.2.2: "the subscription has been terminated because it
was not refreshed before it expired" — an Expires of 0 is exactly that), as most stacks do.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from control.sip.errors import SipError
from control.sip.uri import parse_params

__all__ = [
    "EventKey",
    "ExpiresPolicy",
    "IntervalTooBrief",
    "NotifierCore",
    "NotifyRequest",
    "SubState",
    "SubscriberCore",
    "SubscriptionEnded",
    "SubscriptionRefreshDue",
    "SubscriptionStateValue",
    "TERMINATION_REASONS",
    "parse_event",
    "parse_expires",
    "parse_subscription_state",
]

# RFC 6665 §4.2.2 / §8.2.3 (IANA registry): reasons in Subscription-State: terminated.
TERMINATION_REASONS = frozenset(
    {"deactivated", "probation", "rejected", "timeout", "giveup", "noresource", "invariant"}
)


@dataclass(frozen=True, slots=True)
class EventKey:
    """An event package and its ``id`` parameter (§7.2.1): the subscription's key in a dialog.
    Packages are compared case-insensitively (tokens), ids exactly (§8.2.1)."""

    package: str
    id: str | None = None

    def header(self) -> str:
        """The Event header value that NOTIFYs of this subscription carry."""
        return self.package if self.id is None else f"{self.package};id={self.id}"


def parse_event(value: str | None) -> EventKey:
    """``Event: conference;id=7`` → ``EventKey("conference", "7")``; a missing or empty Event
    header is 400 (the package is not guessed, §8.2.1)."""
    if value is None or not value.strip():
        raise SipError(400, "Missing Event header")
    package, _, rest = value.strip().partition(";")
    package = package.strip().lower()
    if not package:
        raise SipError(400, "Empty event package")
    try:
        params = parse_params(";" + rest) if rest else {}
    except SipError:
        raise
    except ValueError as exc:
        raise SipError(400, "Bad Event parameters") from exc
    return EventKey(package, params.get("id"))


def parse_expires(value: str | None) -> int | None:
    """The Expires header as an integer of seconds, ``None`` when absent; bad ones are 400."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise SipError(400, "Bad Expires")
    return min(int(text), 2**32 - 1)  # RFC 3261 §20.19: delta-seconds up to 2**32-1


class IntervalTooBrief(SipError):
    """§4.2.1.1: 423 Interval Too Brief, with the Min-Expires the subscriber should use."""

    def __init__(self, min_expires: int) -> None:
        super().__init__(423, "Interval Too Brief")
        self.min_expires = min_expires

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [("Min-Expires", str(self.min_expires))]


@dataclass(frozen=True, slots=True)
class ExpiresPolicy:
    """The notifier's bounds on subscription duration (config: ``[sip] subscription_*``)."""

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600  # a SUBSCRIBE without Expires; each package has one (§7.2)

    def grant(self, requested: int | None) -> int:
        """What the 200 says: shortened to ``max_expires``, 0 kept (an unsubscribe), 423
        below ``min_expires``."""
        if requested is None:
            requested = self.default_expires
        if requested == 0:
            return 0
        if requested < self.min_expires:
            raise IntervalTooBrief(self.min_expires)
        return min(requested, self.max_expires)


class SubState(enum.Enum):
    ACTIVE = "active"
    PENDING = "pending"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class SubscriptionStateValue:
    """A parsed Subscription-State header (§8.2.3)."""

    state: SubState
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None

    def header(self) -> str:
        out = self.state.value
        if self.state is SubState.TERMINATED:
            if self.reason:
                out += f";reason={self.reason}"
            if self.retry_after is not None:
                out += f";retry-after={self.retry_after}"
        elif self.expires is not None:
            out += f";expires={self.expires}"
        return out


def parse_subscription_state(value: str | None) -> SubscriptionStateValue:
    if value is None or not value.strip():
        raise SipError(400, "Missing Subscription-State")
    state_text, _, rest = value.strip().partition(";")
    try:
        state = SubState(state_text.strip().lower())
    except ValueError as exc:
        raise SipError(400, f"Unknown subscription state {state_text.strip()[:20]!r}") from exc
    params = parse_params(";" + rest) if rest else {}

    def number(name: str) -> int | None:
        text = params.get(name)
        if text is None:
            return None
        if not text.isdigit():
            raise SipError(400, f"Bad Subscription-State {name}")
        return int(text)

    return SubscriptionStateValue(
        state, number("expires"), (params.get("reason") or None), number("retry-after")
    )


@dataclass(frozen=True, slots=True)
class SubscriptionEnded:
    """The subscription is over (final NOTIFY sent or received, 481, timeout). ``reason`` is
    the Subscription-State reason or what ended it (``"481"``, ``"408"``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class SubscriptionRefreshDue:
    """Subscriber side: send a refreshing SUBSCRIBE now with this Expires."""

    expires: int


@dataclass(frozen=True, slots=True)
class NotifyRequest:
    """What the next NOTIFY says: its headers (Event, Subscription-State) and body."""

    headers: tuple[tuple[str, str], ...]
    body: bytes
    content_type: str | None
    final: bool


class NotifierCore:
    """One subscription, notifier side (§4.2). Created by an accepted SUBSCRIBE or REFER.

    Bodies are sent in the order queued, one NOTIFY in flight at a time (§4.2.2 does not
    require it, but a subscriber that sees NOTIFYs reordered on UDP would apply an older
    state last: RFC 4575 versions catch that, sipfrag has none). The caller asks
    :meth:`next_notify` after queueing or after each answer.
    """

    def __init__(self, key: EventKey, expires: int, now: float) -> None:
        self.key = key
        self.state = SubState.ACTIVE
        self.expires_at = now + expires
        self.reason: str | None = None
        self._queue: deque[tuple[bytes, str | None]] = deque()
        self._final: tuple[bytes, str | None] | None = None
        self._final_queued = False
        self._in_flight = False
        self.last_body: tuple[bytes, str | None] | None = None
        self._events: deque[SubscriptionEnded] = deque()

    # --- state -----------------------------------------------------------------------------

    @property
    def terminated(self) -> bool:
        return self.state is SubState.TERMINATED

    @property
    def in_flight(self) -> bool:
        return self._in_flight

    @property
    def pending(self) -> int:
        """Bodies queued and not yet sent (a caller may coalesce when this is not 0)."""
        return len(self._queue)

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))

    def refresh(self, expires: int, now: float) -> None:
        """A SUBSCRIBE refreshed the subscription (``expires`` already granted); 0 ends it
        with a final NOTIFY, reason ``timeout`` (§4.2.1.4)."""
        if self.terminated:
            return
        if expires == 0:
            self.terminate("timeout")
            return
        self.expires_at = now + expires

    # --- NOTIFY ----------------------------------------------------------------------------

    def queue(self, body: bytes, content_type: str | None) -> None:
        if self.terminated or self.reason is not None:
            return  # after terminate() only the final NOTIFY goes out
        self._queue.append((body, content_type))

    def terminate(
        self, reason: str, body: bytes | None = None, content_type: str | None = None
    ) -> None:
        """End the subscription: what is queued goes out, then a final NOTIFY (§4.2.2)."""
        if self.terminated or self.reason is not None:
            return
        self.reason = reason
        if body is None and self.last_body is not None and not self._queue:
            body, content_type = self.last_body
        self._final = (body or b"", content_type if body else None)

    def next_notify(self, now: float) -> NotifyRequest | None:
        """The next NOTIFY to send, or ``None`` (one in flight, nothing queued, or ended)."""
        if self._in_flight or self.terminated:
            return None
        if self._queue:
            body, content_type = self._queue.popleft()
            final = False
        elif self._final is not None and not self._final_queued:
            body, content_type = self._final
            self._final_queued = True
            final = True
        else:
            return None
        self._in_flight = True
        if body or content_type:
            self.last_body = (body, content_type)
        if final:
            value = SubscriptionStateValue(SubState.TERMINATED, reason=self.reason)
        else:
            value = SubscriptionStateValue(SubState.ACTIVE, expires=self.remaining(now))
        headers = (("Event", self.key.header()), ("Subscription-State", value.header()))
        return NotifyRequest(headers, body, content_type, final)

    def notify_answered(self, status: int) -> None:
        """The NOTIFY in flight got its final response."""
        self._in_flight = False
        if self.terminated:
            return
        if self._final_queued:
            self._end(self.reason or "terminated")
        elif status in (481, 408):
            # §4.2.2: 481 removes the subscription; a timeout (408, Timer F) SHOULD.
            self._end(str(status))

    # --- timer -----------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        if self.terminated or self.reason is not None:
            return None
        return self.expires_at

    def handle_timer(self, now: float) -> None:
        if self.reason is None and not self.terminated and now >= self.expires_at:
            self.terminate("timeout")  # §4.2.2: not refreshed in time

    def next_event(self) -> SubscriptionEnded | None:
        return self._events.popleft() if self._events else None

    def _end(self, reason: str) -> None:
        self.state = SubState.TERMINATED
        self._queue.clear()
        self._events.append(SubscriptionEnded(reason))


class SubscriberCore:
    """One subscription, subscriber side (§4.1). The caller sends the SUBSCRIBEs.

    The refresh is due ``min(32, expires/3)`` seconds before expiry (RFC 6665 leaves the
    margin to the subscriber; this is RFC 4028 §10's margin for sessions).
    """

    def __init__(self, key: EventKey, expires: int) -> None:
        self.key = key
        self.requested = expires
        self.state = SubState.PENDING
        self.expires_at: float | None = None
        self.refresh_at: float | None = None
        self.reason: str | None = None
        self._unsubscribing = False
        self._events: deque[SubscriptionRefreshDue | SubscriptionEnded] = deque()

    @property
    def terminated(self) -> bool:
        return self.state is SubState.TERMINATED

    def subscribe_expires(self) -> int:
        return 0 if self._unsubscribing else self.requested

    def response_received(self, status: int, expires: int | None, now: float) -> None:
        """The final response to a SUBSCRIBE we sent (initial, refresh or unsubscribe)."""
        if self.terminated:
            return
        if 200 <= status < 300:
            if self._unsubscribing:
                return  # the terminated NOTIFY ends it (§4.1.2.3); the deadline stays
            granted = self.requested if expires is None else expires
            if granted == 0:
                self._end("timeout")
                return
            self._arm(granted, now)
        elif status == 423:
            self._end("423")  # the caller may retry with Min-Expires
        elif status in (481, 408) or not self._unsubscribing and self.expires_at is None:
            self._end(str(status))  # §4.1.2.2: a failed refresh of a lost subscription
        # other failures of a refresh: the subscription lasts until it expires (§4.1.2.2)

    def notify_received(self, state: SubscriptionStateValue, now: float) -> int:
        """A NOTIFY for this subscription: the status to answer it with (§4.1.3)."""
        if self.terminated:
            return 481
        if state.state is SubState.TERMINATED:
            self._end(state.reason or "terminated")
            return 200
        self.state = state.state
        if state.expires is not None and not self._unsubscribing:
            self._arm(state.expires, now, only_shorter=True)
        return 200

    def unsubscribe(self) -> int:
        """Send SUBSCRIBE with this Expires (0) next; the notifier's final NOTIFY ends it."""
        self._unsubscribing = True
        self.refresh_at = None
        return 0

    def next_timer(self) -> float | None:
        if self.terminated:
            return None
        return self.refresh_at if self.refresh_at is not None else self.expires_at

    def handle_timer(self, now: float) -> None:
        if self.terminated:
            return
        if self.refresh_at is not None and now >= self.refresh_at:
            self.refresh_at = None
            self._events.append(SubscriptionRefreshDue(self.requested))
        elif self.refresh_at is None and self.expires_at is not None and now >= self.expires_at:
            self._end("timeout")

    def next_event(self) -> SubscriptionRefreshDue | SubscriptionEnded | None:
        return self._events.popleft() if self._events else None

    def _arm(self, expires: int, now: float, *, only_shorter: bool = False) -> None:
        expires_at = now + expires
        if only_shorter and self.expires_at is not None and expires_at >= self.expires_at:
            return
        self.expires_at = expires_at
        self.refresh_at = now + expires - min(32.0, expires / 3)

    def _end(self, reason: str) -> None:
        self.state = SubState.TERMINATED
        self.reason = reason
        self.refresh_at = None
        self._events.append(SubscriptionEnded(reason))
