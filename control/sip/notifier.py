"""The asyncio layer over :class:`~control.sip.subscription.NotifierCore`: a subscription we
notify, as a usage of its dialog (RFC 6665 §4.5.2), sending its NOTIFYs one at a time.

API summary (applications get these through :mod:`control.app`):

- :class:`Notifier`: ``notify(body, content_type)`` queues a NOTIFY (sent in order, one in
  flight; ``pending`` says how many wait, so a caller can coalesce); ``terminate(reason,
  body=None, content_type=None)`` sends what is queued and then the final NOTIFY
  (``Subscription-State: terminated;reason=…``); ``ended`` is a future resolved with the
  reason when the subscription is over (final NOTIFY answered, 481/408 to a NOTIFY,
  unsubscribe, expiry); ``on_refresh`` is called after each refreshing SUBSCRIBE (§4.2.1.2:
  a NOTIFY with the current state must follow: the callback sends it; without one the last
  body is sent again).
- :class:`SubscriptionBook`: live subscriptions per source address, the
  ``[sip] max_subscriptions_per_source`` limit.
- :class:`EventPolicy`: what the server hands the domain objects (expires bounds and the book).

A refreshing SUBSCRIBE inside the dialog reaches :meth:`Notifier.handle_request` through the
user agent's usage table (``UserAgent.add_usage``); so does an unsubscribe (``Expires: 0``:
200, then the final NOTIFY with ``reason=timeout``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from control.sip.dialog import Dialog
from control.sip.errors import SipError
from control.sip.message import Request
from control.sip.session import resolve_direct
from control.sip.subscription import (
    EventKey,
    ExpiresPolicy,
    IntervalTooBrief,
    NotifierCore,
    NotifyRequest,
    SubscriptionEnded,
    parse_expires,
)
from control.sip.transport import Peer
from control.sip.useragent import ALLOWED_METHODS, IncomingRequest, UserAgent

__all__ = ["EventPolicy", "Notifier", "SubscriptionBook"]

log = logging.getLogger("chorus.sip.notifier")


class SubscriptionBook:
    """Counts live subscriptions per source IP address (a per-source limit, §5.4 of RFC 6665
    warns of notifiers made to amplify traffic)."""

    def __init__(self, max_per_source: int) -> None:
        self.max_per_source = max_per_source
        self._count: Counter[str] = Counter()

    def full(self, host: str) -> bool:
        return self._count[host] >= self.max_per_source

    def add(self, host: str) -> None:
        self._count[host] += 1

    def release(self, host: str) -> None:
        self._count[host] -= 1
        if self._count[host] <= 0:
            del self._count[host]

    def count(self, host: str) -> int:
        return self._count[host]

    @property
    def total(self) -> int:
        return sum(self._count.values())


@dataclass(slots=True)
class EventPolicy:
    """Limits every subscription shares: expires bounds and the per-source book."""

    expires: ExpiresPolicy = field(default_factory=ExpiresPolicy)
    book: SubscriptionBook = field(default_factory=lambda: SubscriptionBook(100))


class Notifier:
    """One subscription we notify: a usage of ``dialog`` (which may be a session's)."""

    def __init__(
        self,
        ua: UserAgent,
        dialog: Dialog,
        peer: Peer,
        core: NotifierCore,
        *,
        policy: EventPolicy,
        direct: bool = False,
    ) -> None:
        self.ua = ua
        self.dialog = dialog
        self.peer = peer
        self.core = core
        self.policy = policy
        self.direct = direct
        self.on_refresh: Callable[[], None] | None = None
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.fetch = False  # Expires: 0 on the initial SUBSCRIBE: one NOTIFY, then over
        self._sending = False
        ua.add_usage(dialog.id, core.key, self)
        policy.book.add(peer.host)
        ua.schedule(self)

    @property
    def key(self) -> EventKey:
        return self.core.key

    @property
    def pending(self) -> int:
        return self.core.pending + (1 if self.core.in_flight else 0)

    @property
    def terminated(self) -> bool:
        return self.ended.done()

    # --- application side ------------------------------------------------------------------

    def notify(self, body: bytes, content_type: str) -> None:
        """Queue a NOTIFY with ``body`` (sent in order after those queued before)."""
        if self.fetch:
            self.terminate("timeout", body, content_type)
            return
        self.core.queue(body, content_type)
        self._pump()

    def terminate(
        self, reason: str = "noresource", body: bytes | None = None, content_type: str | None = None
    ) -> None:
        """End with a final NOTIFY (``reason`` from RFC 6665 §4.2.2: noresource when the
        resource is gone, deactivated, rejected, timeout, giveup, probation, invariant)."""
        self.fetch = False
        self.core.terminate(reason, body, content_type)
        self._pump()

    # --- sending ---------------------------------------------------------------------------

    def _pump(self) -> None:
        if self._sending or self.terminated:
            return
        notify = self.core.next_notify(self.ua.now())
        if notify is None:
            return
        self._sending = True
        self.ua.spawn(self._send(notify))

    async def _send(self, notify: NotifyRequest) -> None:
        status = 408
        try:
            peer = await self._next_peer()
            request = self.dialog.create_request(
                "NOTIFY",
                via=self.ua.via_for(peer),
                body=notify.body,
                content_type=notify.content_type,
                extra_headers=list(notify.headers),
            )
            response = await self.ua.send_request(request, peer).final
            status = response.status
            if status >= 300:
                log.info("NOTIFY %s on %s answered %s", self.core.key, self.dialog.call_id, status)
        finally:
            self._sending = False
            self.core.notify_answered(status)
            self._drain()
            self._pump()

    async def _next_peer(self) -> Peer:
        """As ``Session.next_peer``: the connection the subscription came on while it is
        reliable, else the route set or remote target (RFC 3261 §12.2.1.1)."""
        if self.peer.reliable:
            return self.peer
        try:
            if self.direct:
                return await resolve_direct(self.dialog.next_hop(), self.peer.transport)
            return await self.ua.resolve(self.dialog.next_hop())
        except (OSError, ValueError):
            return self.peer

    def _drain(self) -> None:
        while (event := self.core.next_event()) is not None:
            match event:
                case SubscriptionEnded(reason=reason):
                    self._finish(reason)

    def _finish(self, reason: str) -> None:
        if self.ended.done():
            return
        self.ua.remove_usage(self.dialog.id, self.core.key)
        self.ua.unschedule(self)
        self.policy.book.release(self.peer.host)
        self.ended.set_result(reason)

    # --- timer (UserAgent.schedule) --------------------------------------------------------

    def next_timer(self) -> float | None:
        return None if self.terminated else self.core.next_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self._pump()

    # --- in-dialog requests (DialogUsage) --------------------------------------------------

    def handle_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        try:
            self.dialog.receive_request(request)
        except SipError as exc:
            incoming.respond(exc.status, exc.reason)
            return
        if request.method != "SUBSCRIBE" or self.core.reason is not None:
            # A NOTIFY for our own subscription makes no sense (we are the notifier); a
            # refresh after the final NOTIFY went out finds no subscription (§4.1.2.2).
            status = 481 if request.method == "SUBSCRIBE" else 405
            incoming.respond(status, headers=[("Allow", ALLOWED_METHODS)] if status == 405 else [])
            return
        self._refresh(incoming, request)

    def _refresh(self, incoming: IncomingRequest, request: Request) -> None:
        try:
            granted = self.policy.expires.grant(parse_expires(request.headers.get("Expires")))
        except IntervalTooBrief as exc:
            incoming.respond(exc.status, exc.reason, headers=exc.headers)
            return
        except SipError as exc:
            incoming.respond(exc.status, exc.reason)
            return
        response = request.make_response(200)
        response.headers.add("Expires", str(granted))
        response.headers.add("Contact", str(self.dialog.local_contact))
        incoming.send_response(response)
        now = self.ua.now()
        if granted == 0:
            # §4.2.1.4: the unsubscribe is answered with the current state, terminated: the
            # state the application sends now is the final NOTIFY, as for a fetch.
            self.fetch = True
            if self.on_refresh is not None:
                self.on_refresh()
            if self.fetch:  # the application sent nothing: the last state goes again
                self.fetch = False
                self.core.refresh(0, now)
            self._pump()
            return
        self.core.refresh(granted, now)
        self.ua.schedule(self)
        if self.on_refresh is not None:
            self.on_refresh()  # §4.2.1.2: the current state follows the refresh
        else:
            self.core.queue(*(self.core.last_body or (b"", None)))
        self._pump()

    def handle_ack(self, request: Request, peer: Peer) -> None:
        """Subscriptions have no ACK; a stray one is dropped."""
