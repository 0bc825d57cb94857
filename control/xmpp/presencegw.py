"""Presence through the gateway (RFC 8048), the asyncio layer over control/xmpp/presence.py.

SIP watchers of XMPP users (:class:`PresenceGateway.incoming_subscribe`): a SUBSCRIBE
``Event: presence`` for ``sip:juliet@<xmpp domain>`` is accepted (RFC 6665) with a first
NOTIFY of what is known (closed until the XMPP user's presence arrives) and becomes an XMPP
``subscribe`` from the SIP user's JID (§5.2; if the XMPP user approved before, Prosody answers
with ``subscribed`` and the current presence at once, so no probe is needed: a probe before
approval would be answered ``unsubscribed``). Each presence of each resource then updates the
watcher's view and NOTIFYs one PIDF tuple per available resource. ``unsubscribed`` from the
XMPP user ends the SIP subscriptions (``terminated;reason=rejected``), ``unavailable`` of the
last resource is a closed NOTIFY. The last SIP subscription of a watcher to a presentity
ending sends XMPP ``unsubscribe`` (§5.4).

XMPP users watching SIP users (:class:`SipSubscription`): an XMPP ``subscribe`` to
``romeo@<sip domain>`` (or a probe when no SIP subscription runs, as after a restart) becomes
a SUBSCRIBE ``Event: presence`` toward the SIP side (RFC 8048 §6.3); its 2xx is XMPP
``subscribed``, each PIDF NOTIFY XMPP presence from ``romeo@<sip domain>/<tuple id>``, a
refusal ``unsubscribed``; the subscription is refreshed before it expires; ``unsubscribe``
is a SUBSCRIBE with Expires: 0. A SIP side that does not answer (408, 5xx, a lost refresh) is
tried again after a delay that doubles up to ``[xmpp] presence_retry_max`` (RetryPolicy):
backed off, never hammered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from control.app import Notifier, Subscription
from control.sip.dialog import Dialog
from control.sip.errors import SipError
from control.sip.message import Request, Response
from control.sip.subscription import (
    EventKey,
    SubscriberCore,
    SubscriptionEnded,
    SubscriptionRefreshDue,
    parse_expires,
    parse_subscription_state,
)
from control.sip.transport import Peer
from control.sip.uri import NameAddr, SipUri
from control.sip.useragent import ALLOWED_METHODS, IncomingRequest, UserAgent, build_request
from control.xmpp.addressing import Addressing, AddressRefused, Jid
from control.xmpp.component import Component, XmppPresence
from control.xmpp.presence import (
    PIDF_CONTENT_TYPE,
    PresenceRefused,
    PresenceView,
    ResourcePresence,
    RetryPolicy,
    build_pidf,
    parse_pidf,
    retryable,
    termination_action,
)

__all__ = ["PresenceGateway", "SipSubscription"]

log = logging.getLogger("chorus.xmpp.presence")

PRESENCE = EventKey("presence")
Key = tuple[str, str]  # (watcher bare JID, presentity bare JID)


def _bare(jid: Jid) -> Jid:
    return Jid(jid.local, jid.domain)


@dataclass(slots=True)
class _Watched:
    """An XMPP presentity and the SIP subscriptions of one SIP watcher to it."""

    watcher: Jid
    presentity: Jid
    entity: SipUri
    view: PresenceView = field(default_factory=PresenceView)
    notifiers: set[Notifier] = field(default_factory=set)
    rejected: bool = False


class PresenceGateway:
    """Both directions of presence for one :class:`~control.xmpp.app.XmppGateway`."""

    def __init__(
        self,
        ua: UserAgent,
        component: Component,
        addressing: Addressing,
        *,
        expires: int = 3600,
        retry_max: float = 300.0,
        limit: int = 10000,
    ) -> None:
        self.ua = ua
        self.component = component
        self.addressing = addressing
        self.expires = expires
        self.limit = limit
        self.retry = RetryPolicy(cap=retry_max, limit=limit)
        self.watched: dict[Key, _Watched] = {}
        self.subscriptions: dict[Key, SipSubscription] = {}

    # --- SIP watchers of XMPP users --------------------------------------------------------

    async def incoming_subscribe(self, subscription: Subscription) -> None:
        if subscription.package != "presence":
            subscription.bad_event("presence")
            return
        accept = subscription.accept_types
        if accept and not {PIDF_CONTENT_TYPE, "application/*", "*/*"} & set(accept):
            subscription.reject(406)  # RFC 6665 §8.3.1: nothing here in a type it takes
            return
        uri, watcher_uri = subscription.request_uri, subscription.subscriber.uri
        if not isinstance(uri, SipUri) or not isinstance(watcher_uri, SipUri):
            subscription.reject(416)
            return
        try:
            presentity = _bare(self.addressing.sip_to_jid(uri, side="xmpp"))
            watcher = _bare(self.addressing.sip_to_jid(watcher_uri, side="sip", sender=True))
        except AddressRefused as exc:
            log.info("presence SUBSCRIBE to %s refused: %s", uri, exc.reason)
            subscription.reject(exc.sip_status, exc.reason[:80])
            return
        key = (watcher.bare, presentity.bare)
        watched = self.watched.get(key)
        if not self.component.connected or (watched is None and len(self.watched) >= self.limit):
            subscription.reject(503, headers=[("Retry-After", "5")])
            return
        if watched is None:
            entity = self.addressing.jid_to_sip(presentity, side="xmpp")
            watched = self.watched[key] = _Watched(watcher, presentity, entity)
            self.component.send_presence(presentity, watcher, type="subscribe")
        notifier = subscription.accept()
        log.info("presence subscription of %s to %s", watcher, presentity)
        if not notifier.fetch:
            watched.notifiers.add(notifier)
            notifier.on_refresh = lambda: notifier.notify(self._pidf(watched), PIDF_CONTENT_TYPE)
            notifier.ended.add_done_callback(lambda _: self._sip_watch_ended(key, notifier))
        notifier.notify(self._pidf(watched), PIDF_CONTENT_TYPE)
        if not watched.notifiers:
            self._sip_watch_ended(key, None)

    def _pidf(self, watched: _Watched) -> bytes:
        tuples = {}
        for resource, presence in watched.view.available.items():
            full = Jid(watched.presentity.local, watched.presentity.domain, resource or None)
            tuples[resource] = (str(self.addressing.jid_to_sip(full, side="xmpp")), presence)
        return build_pidf(str(watched.entity), tuples)

    def _sip_watch_ended(self, key: Key, notifier: Notifier | None) -> None:
        watched = self.watched.get(key)
        if watched is None:
            return
        if notifier is not None:
            watched.notifiers.discard(notifier)
        if watched.notifiers:
            return
        del self.watched[key]
        if not watched.rejected and self.component.connected:
            self.component.send_presence(watched.presentity, watched.watcher, type="unsubscribe")

    def _xmpp_presentity(self, presence: XmppPresence) -> None:
        """Presence from an XMPP user to a SIP watcher."""
        watched = self.watched.get((presence.recipient.bare, presence.sender.bare))
        if watched is None:
            return
        match presence.type:
            case "available" | "unavailable":
                state = ResourcePresence(
                    presence.type == "available", presence.show, presence.status
                )
                if watched.view.update(presence.sender.resource or "", state):
                    for notifier in list(watched.notifiers):
                        notifier.notify(self._pidf(watched), PIDF_CONTENT_TYPE)
            case "unsubscribed" | "error":
                # §5.3: refused or revoked; an error: no such user or server (noresource).
                reason = "rejected" if presence.type == "unsubscribed" else "noresource"
                log.info("XMPP %s from %s ends its SIP watchers", presence.type, presence.sender)
                watched.rejected = True
                watched.view.clear()
                for notifier in list(watched.notifiers):
                    notifier.terminate(reason, self._pidf(watched), PIDF_CONTENT_TYPE)

    # --- XMPP stanzas ----------------------------------------------------------------------

    def xmpp_presence(self, presence: XmppPresence) -> None:
        """Every presence stanza for the component's JIDs (the component's handler)."""
        if presence.type in ("subscribe", "unsubscribe", "probe"):
            self._xmpp_watcher(presence)
            return
        if presence.type == "error" and (
            (presence.sender.bare, presence.recipient.bare) in self.subscriptions
        ):
            # our presence toward an XMPP user bounced: nobody to tell any more
            self._stop(self.subscriptions[(presence.sender.bare, presence.recipient.bare)])
        self._xmpp_presentity(presence)

    def _xmpp_watcher(self, presence: XmppPresence) -> None:
        """subscribe, unsubscribe and probe from an XMPP user to a SIP user (RFC 8048 §6)."""
        subscriber, presentity = _bare(presence.sender), _bare(presence.recipient)
        key = (subscriber.bare, presentity.bare)
        subscription = self.subscriptions.get(key)
        if presence.type == "unsubscribe":
            if subscription is not None:
                self._stop(subscription)
            return
        if subscription is not None:
            if presence.type == "subscribe" and subscription.approved:
                self.component.send_presence(subscriber, presentity, type="subscribed")
            subscription.announce_all()
            return
        try:
            target = self.addressing.jid_to_sip(presentity, side="sip")
            from_uri = self.addressing.jid_to_sip(subscriber, side="xmpp", sender=True)
        except AddressRefused as exc:
            log.info("XMPP %s to %s refused: %s", presence.type, presentity, exc.reason)
            if presence.type == "subscribe":
                self.component.send_presence(subscriber, presentity, type="unsubscribed")
            return
        if len(self.subscriptions) >= self.limit:
            log.warning("presence subscription limit (%d) reached", self.limit)
            return
        subscription = SipSubscription(self, subscriber, presentity, target, from_uri)
        self.subscriptions[key] = subscription
        subscription.start()

    def _stop(self, subscription: SipSubscription) -> None:
        """The XMPP user unsubscribed (or is gone): unsubscribe on the SIP side."""
        self.subscriptions.pop(subscription.key, None)
        subscription.unsubscribe()

    def forget(self, subscription: SipSubscription) -> None:
        if self.subscriptions.get(subscription.key) is subscription:
            del self.subscriptions[subscription.key]

    async def shutdown(self) -> None:
        for subscription in list(self.subscriptions.values()):
            self._stop(subscription)
        for watched in list(self.watched.values()):
            for notifier in list(watched.notifiers):
                notifier.terminate("noresource")


class SipSubscription:
    """One XMPP user's subscription to one SIP user's presence: a SUBSCRIBE dialog usage
    (RFC 6665 §4.1) over :class:`~control.sip.subscription.SubscriberCore`, its retries
    spaced by the gateway's :class:`~control.xmpp.presence.RetryPolicy`."""

    def __init__(
        self,
        gateway: PresenceGateway,
        subscriber: Jid,
        presentity: Jid,
        target: SipUri,
        from_uri: SipUri,
    ) -> None:
        self.gateway = gateway
        self.ua = gateway.ua
        self.subscriber = subscriber
        self.presentity = presentity
        self.target = target
        self.from_uri = from_uri
        self.key: Key = (subscriber.bare, presentity.bare)
        self.core: SubscriberCore | None = None
        self.dialog: Dialog | None = None
        self.view = PresenceView()
        self.approved = False
        self.retry_at: float | None = None
        self.closed = False
        self._sending = False

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe now, or when the retry policy lets us."""
        if self.closed or self._sending:
            return
        now = self.ua.now()
        not_before = self.gateway.retry.not_before(self.target_key)
        if not_before > now:
            self.retry_at = not_before
            self.ua.schedule(self)
            return
        self._end_dialog()
        self.core = SubscriberCore(PRESENCE, self.gateway.expires)
        self._send(self.core.subscribe_expires())

    @property
    def target_key(self) -> str:
        return str(self.target)

    def unsubscribe(self) -> None:
        """SUBSCRIBE with Expires: 0 (the final NOTIFY ends the dialog), and the XMPP user
        told every resource is gone (RFC 6121 §3.3.3)."""
        self.closed = True
        self.retry_at = None
        self._announce(self.view.clear())
        if self.core is not None and self.dialog is not None and not self.core.terminated:
            self._send(self.core.unsubscribe())
        else:
            self._end_dialog()

    def _send(self, expires: int) -> None:
        self._sending = True
        self.ua.spawn(self._subscribe(expires))

    async def _subscribe(self, expires: int) -> None:
        try:
            response = await self._request(expires)
        finally:
            self._sending = False
        if response is not None:
            self._answered(response, expires)

    async def _request(self, expires: int) -> Response | None:
        headers = [
            ("Event", PRESENCE.header()),
            ("Accept", PIDF_CONTENT_TYPE),
            ("Expires", str(expires)),
        ]
        try:
            if self.dialog is None:
                peer = await self.ua.resolve(self.target)
                request = build_request(
                    "SUBSCRIBE",
                    self.target,
                    from_=NameAddr(self.from_uri).with_tag(self.ua.token(12)),
                    to=NameAddr(self.target),
                    call_id=self.ua.token(24),
                    contact=self.ua.contact_for(peer, self.from_uri.user),
                    extra_headers=headers,
                )
            else:
                peer = await self.ua.resolve(self.dialog.next_hop())
                request = self.dialog.create_request(
                    "SUBSCRIBE", via=self.ua.via_for(peer), extra_headers=headers
                )
        except (OSError, ValueError) as exc:
            log.info("presence SUBSCRIBE to %s not sent: %s", self.target, exc)
            self._failed("503", None)
            return None
        response = await self.ua.send_request(request, peer).final
        if self.dialog is None and 200 <= response.status < 300 and not self.closed:
            try:
                self.dialog = Dialog.as_uac(request, response)
            except SipError as exc:
                log.info("presence SUBSCRIBE 2xx from %s unusable: %s", self.target, exc.reason)
                self._failed("500", None)
                return None
            self.ua.add_usage(self.dialog.id, PRESENCE, self)
        elif self.dialog is not None:
            self.dialog.receive_response(request, response)
        return response

    def _answered(self, response: Response, expires: int) -> None:
        assert self.core is not None
        status = response.status
        if 200 <= status < 300:
            self.gateway.retry.succeeded(self.target_key)
            if not self.approved and not self.closed:
                self.approved = True
                self.gateway.component.send_presence(
                    self.subscriber, self.presentity, type="subscribed"
                )
        elif self.closed:
            self._close()  # the unsubscribe failed: the notifier's expiry ends it there
            return
        elif status == 423 and expires:
            try:
                floor = parse_expires(response.headers.get("Min-Expires"))
            except SipError:
                floor = None
            if floor and floor > expires:  # §4.1.2.1: once more with Min-Expires
                self.core = SubscriberCore(PRESENCE, floor)
                self._send(floor)
                return
            self._failed(str(status), None)
            return
        elif retryable(status) or self.dialog is not None:
            self._failed(str(status), response.headers.get("Retry-After"))
            return
        else:
            log.info("presence SUBSCRIBE to %s refused %d", self.target, status)
            self.gateway.component.send_presence(
                self.subscriber, self.presentity, type="unsubscribed"
            )
            self._close()
            return
        try:
            granted = parse_expires(response.headers.get("Expires"))
        except SipError:
            granted = None
        self.core.response_received(status, granted, self.ua.now())
        self._drain()

    def _failed(self, why: str, retry_after: str | None) -> None:
        """No answer or a temporary failure: try again later, never at once (RFC 8048 §6.3
        leaves the policy to the gateway; RFC 3261 §21.5.4's Retry-After is honoured)."""
        if self.closed:
            return
        self._end_dialog()
        wait = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
        self.retry_at = self.gateway.retry.failed(self.target_key, self.ua.now(), retry_after=wait)
        log.info(
            "presence subscription to %s ended (%s): next try in %.0f s",
            self.target,
            why,
            self.retry_at - self.ua.now(),
        )
        self._announce(self.view.clear())
        self.ua.schedule(self)

    def _close(self) -> None:
        self.closed = True
        self._end_dialog()
        self.gateway.forget(self)

    def _end_dialog(self) -> None:
        if self.dialog is not None:
            self.ua.remove_usage(self.dialog.id, PRESENCE)
            self.dialog = None

    # --- XMPP side -------------------------------------------------------------------------

    def _announce(self, changed: dict[str, ResourcePresence]) -> None:
        component = self.gateway.component
        if not component.connected:
            return
        for resource, presence in changed.items():
            sender = Jid(self.presentity.local, self.presentity.domain, resource)
            if presence.available:
                component.send_presence(
                    self.subscriber, sender, show=presence.show, status=presence.status
                )
            else:
                component.send_presence(self.subscriber, sender, type="unavailable")

    def announce_all(self) -> None:
        """A probe (RFC 6121 §4.3): the current presence of every resource, or unavailable."""
        if self.view.available:
            self._announce(self.view.available)
        elif self.gateway.component.connected:
            self.gateway.component.send_presence(
                self.subscriber, self.presentity, type="unavailable"
            )

    # --- in-dialog requests (DialogUsage) --------------------------------------------------

    def handle_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.method != "NOTIFY" or self.dialog is None or self.core is None:
            status = 405 if request.method != "NOTIFY" else 481
            incoming.respond(status, headers=[("Allow", ALLOWED_METHODS)] if status == 405 else [])
            return
        try:
            self.dialog.receive_request(request)
            state = parse_subscription_state(request.headers.get("Subscription-State"))
        except SipError as exc:
            incoming.respond(exc.status, exc.reason)
            return
        status = self.core.notify_received(state, self.ua.now())
        if status == 200 and request.body:
            status = self._document(request)
        incoming.respond(status)
        self._drain(retry_after=state.retry_after)

    def _document(self, request: Request) -> int:
        content_type = request.content_type
        if content_type is None or content_type.mime != PIDF_CONTENT_TYPE:
            return 200  # RFC 6665 §4.1.3 lets us ignore a body we did not ask for
        try:
            tuples = parse_pidf(request.body)
        except PresenceRefused as exc:
            log.info("PIDF from %s refused: %s", self.target, exc.reason)
            return exc.sip_status
        self._announce(self.view.replace(tuples))
        return 200

    def handle_ack(self, request: Request, peer: Peer) -> None:
        """Subscriptions have no ACK."""

    # --- timers (UserAgent.schedule) -------------------------------------------------------

    def next_timer(self) -> float | None:
        if self.retry_at is not None and not self.closed:
            return self.retry_at
        if self.core is not None and (self.dialog is not None or not self.closed):
            return self.core.next_timer()  # an unanswered unsubscribe ends at expiry
        return None

    def handle_timer(self, now: float) -> None:
        if self.retry_at is not None:
            if now >= self.retry_at:
                self.retry_at = None
                self.start()
            return
        if self.core is not None:
            self.core.handle_timer(now)
            self._drain()

    def _drain(self, retry_after: int | None = None) -> None:
        assert self.core is not None
        while (event := self.core.next_event()) is not None:
            match event:
                case SubscriptionRefreshDue(expires=expires):
                    if not self._sending and not self.closed:
                        self._send(expires)
                case SubscriptionEnded(reason=reason):
                    self._ended(reason, retry_after)
        self.ua.schedule(self)

    def _ended(self, reason: str, retry_after: int | None) -> None:
        """The SIP subscription is over (final NOTIFY, 481, 408, expiry)."""
        self._end_dialog()
        if self.closed:
            self.gateway.forget(self)
            return
        # 408, 481, expiry, deactivated, probation …: subscribe again, through the retry
        # policy even for "resubscribe at once" reasons, so a notifier that ends every
        # subscription at once is not answered by a SUBSCRIBE loop.
        action = "retry" if reason.isdigit() else termination_action(reason)
        match action:
            case "resubscribe" | "retry":
                self._failed(reason, str(retry_after or ""))
            case "unsubscribed":
                self._announce(self.view.clear())
                self.gateway.component.send_presence(
                    self.subscriber, self.presentity, type="unsubscribed"
                )
                self._close()
            case _:
                self._announce(self.view.clear())
                self._close()
