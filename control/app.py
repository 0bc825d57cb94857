"""The Application interface and the domain objects applications receive (STYLE.md §5).

The server turns each request into one of these before an application sees it, so rooms, echo
and the XMPP gateway never parse SDP, pick To tags or build SIP requests by hand:

- :class:`IncomingCall`: a new INVITE with its offer already parsed (a malformed SDP body is
  answered 400/488 by the layer, an INVITE without an offer 488: no application here takes a
  delayed offer); accept with an answer, reject with a status. An accepted call's session
  hands re-offers to :func:`on_reoffer`'s handler already parsed too (:class:`ReOffer`), and
  a MESSAGE inside its dialog reaches the application's ``incoming_message`` with
  :attr:`IncomingMessage.session` set (RFC 3428 §4 allows MESSAGE within a dialog).
- :class:`IncomingMessage`: pager-mode MESSAGE (RFC 3428): sender, recipient, content type,
  body; ``accept(200|202)`` or ``reject``.
- :class:`Subscription`: SUBSCRIBE (RFC 6665), out of dialog or inside a call's dialog
  (:attr:`Subscription.session`). ``bad_event(*packages)`` (489 + Allow-Events),
  ``reject(status)``, or ``accept(expires=None)`` → :class:`~control.sip.notifier.Notifier`:
  ``notify(body, content_type)`` (in order, one in flight, ``pending`` to coalesce),
  ``terminate(reason, body=None, content_type=None)``, ``ended`` (future: the reason),
  ``on_refresh`` (called after a refreshing SUBSCRIBE; send the current state).
- :class:`Referral`: REFER (RFC 3515): ``refer_to`` (NameAddr), ``method`` (its URI's
  ``method`` parameter, INVITE by default), ``referred_by``; ``accept()`` → 202 and a
  :class:`ReferProgress` (``notify(status, reason)`` sends ``message/sipfrag`` NOTIFYs in
  ``Event: refer;id=<CSeq>``, a final status ends it); ``Refer-Sub: false`` (RFC 4488)
  is answered 202 with ``Refer-Sub: false`` and no NOTIFYs.
- :class:`Messenger`: sends a MESSAGE of our own (RFC 3428 §4) and says how it was answered.

The ``respond`` method every request object has is the escape hatch for a status with
headers (``Allow``, ``Retry-After``); the named ones are what applications should use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from control.sip import sdp
from control.sip.dialog import Dialog
from control.sip.errors import SipError
from control.sip.message import Request, reason_phrase
from control.sip.notifier import EventPolicy, Notifier
from control.sip.session import IncomingCall as SipCall
from control.sip.session import Offer, Session
from control.sip.subscription import (
    EventKey,
    IntervalTooBrief,
    NotifierCore,
    parse_event,
    parse_expires,
)
from control.sip.transport import Peer
from control.sip.uri import NameAddr, SipUri, Uri, parse_name_addr
from control.sip.useragent import (
    ALLOWED_METHODS,
    USER_AGENT,
    IncomingRequest,
    UserAgent,
    build_request,
)

__all__ = [
    "Application",
    "IncomingCall",
    "IncomingMessage",
    "Messenger",
    "Notifier",
    "ReOffer",
    "ReferProgress",
    "Referral",
    "Subscription",
    "on_reoffer",
    "parse_offer",
    "serve_dialog",
]

log = logging.getLogger("chorus.app")

Headers = Sequence[tuple[str, str]]


class Application(Protocol):
    """What conference, echo and xmpp implement (STYLE.md §5)."""

    async def incoming_invite(self, call: IncomingCall) -> None: ...

    async def incoming_message(self, message: IncomingMessage) -> None: ...

    async def incoming_subscribe(self, subscription: Subscription) -> None: ...

    async def incoming_refer(self, referral: Referral) -> None: ...

    async def shutdown(self) -> None: ...


MessageHandler = Callable[["IncomingMessage"], Awaitable[None]]


def parse_offer(incoming: IncomingRequest, *, required: bool) -> sdp.SessionDescription | None:
    """The request's SDP offer, or ``None`` after answering the request: 488 for a missing
    offer (when ``required``), the parser's 400/488 for a malformed one."""
    request = incoming.request
    content_type = request.content_type
    if not request.body or content_type is None or content_type.mime != "application/sdp":
        if required:
            incoming.respond(488, "an SDP offer is required")
        return None
    try:
        return sdp.parse(request.body)
    except SipError as exc:
        log.info("bad SDP from %s: %s", incoming.source, exc.reason)
        incoming.respond(exc.status, exc.reason)
        return None


class _Request:
    """What every incoming request object shares: the request, its source, a response."""

    def __init__(self, incoming: IncomingRequest) -> None:
        self.incoming = incoming

    @property
    def request(self) -> Request:
        return self.incoming.request

    @property
    def source(self) -> Peer:
        return self.incoming.source

    @property
    def request_uri(self) -> Uri:
        return self.request.uri

    @property
    def answered(self) -> bool:
        return self.incoming.final_sent

    def respond(
        self, status: int, reason: str | None = None, *, headers: Headers | None = None
    ) -> None:
        if not self.incoming.final_sent:
            self.incoming.respond(status, reason, headers=list(headers or ()))

    def reject(self, status: int, reason: str | None = None, *, headers: Headers = ()) -> None:
        """A final error response (``headers``: Allow, Retry-After, Accept …)."""
        self.respond(status, reason, headers=headers)


class IncomingCall:
    """A new INVITE whose offer is parsed (:attr:`offer`)."""

    def __init__(
        self,
        call: SipCall,
        offer: sdp.SessionDescription,
        *,
        on_message: MessageHandler | None = None,
        application: Application | None = None,
        policy: EventPolicy | None = None,
    ) -> None:
        self._call = call
        self.offer = offer
        self._on_message = on_message
        self._application = application
        self._policy = policy

    # ``incoming``, ``request``, ``body`` and ``has_sdp`` keep code written against the raw
    # INVITE working while it moves over (the conference); new code reads ``offer``.
    @property
    def incoming(self) -> IncomingRequest:
        return self._call.incoming

    @property
    def request(self) -> Request:
        return self._call.request

    @property
    def body(self) -> bytes:
        return self._call.body

    @property
    def has_sdp(self) -> bool:
        return True

    @property
    def remote_identity(self) -> NameAddr:
        """The caller (the From header; an edge that asserts identity has checked it)."""
        return self._call.remote_identity

    @property
    def local_identity(self) -> NameAddr:
        """Who was called (the To header)."""
        return self.request.to

    @property
    def request_uri(self) -> SipUri:
        uri = self._call.request_uri
        assert isinstance(uri, SipUri), "the server answers 416 to other schemes"
        return uri

    @property
    def source(self) -> Peer:
        return self.incoming.source

    @property
    def local_address(self) -> str:
        """Our IP toward the caller: what the answer's c= line says."""
        host, _ = self._call.ua.local_host_port("udp", self.incoming.source.host)
        return host

    @property
    def answered(self) -> bool:
        return self._call.answered

    @property
    def cancelled(self) -> bool:
        """The caller sent CANCEL (RFC 3261 §9.2): the call is answered 487 already."""
        return self.incoming.cancelled.done()

    def ringing(self) -> None:
        self._call.ringing()

    def reject(self, status: int, reason: str | None = None, *, headers: Headers = ()) -> None:
        """A final error response (``headers``: Retry-After for a 503, Allow …)."""
        if not headers:
            self._call.reject(status, reason)
        elif not self._call.answered:
            self._call.incoming.respond(
                status, reason, to_tag=self._call.local_tag, headers=list(headers)
            )

    def accept(self, answer: bytes, *, user: str | None = None) -> Session:
        """Send 200 with ``answer``. MESSAGE inside the new dialog goes to the application's
        ``incoming_message`` with the session attached."""
        session = self._call.accept(answer, user=user)
        if self._on_message is not None:
            session.on_request = _DialogRequests(
                session, self._on_message, self._application, self._policy
            )
        return session


class _DialogRequests:
    """``Session.on_request`` for a call: MESSAGE, and SUBSCRIBE / REFER that start a new
    subscription in the call's dialog (RFC 6665 §4.5.2, RFC 4579 §5.5), to the application;
    the rest as a session without an application hook answers them (INFO 200, UPDATE 501,
    else 405)."""

    def __init__(
        self,
        session: Session,
        handler: MessageHandler,
        application: Application | None = None,
        policy: EventPolicy | None = None,
    ) -> None:
        self.session = session
        self.handler = handler
        self.application = application
        self.policy = policy or EventPolicy()

    async def __call__(self, incoming: IncomingRequest) -> None:
        match incoming.request.method:
            case "MESSAGE":
                await self.handler(IncomingMessage(incoming, session=self.session))
            case "SUBSCRIBE" | "REFER" if self.application is not None:
                if precheck_event_request(incoming, self.policy):
                    await route_event_request(self.application, incoming, self.policy, self.session)
            case "INFO":
                incoming.respond(200)
            case "UPDATE":
                incoming.respond(501)
            case _:
                incoming.respond(405, headers=[("Allow", ALLOWED_METHODS)])


def serve_dialog(
    session: Session, application: Application, policy: EventPolicy | None = None
) -> None:
    """Hand ``session``'s in-dialog MESSAGE, SUBSCRIBE and REFER to ``application``, as
    :meth:`IncomingCall.accept` does for a call we answered: for a call we placed (the
    conference's REFER dial-out, control/conference/refer.py)."""
    session.on_request = _DialogRequests(session, application.incoming_message, application, policy)


class ReOffer:
    """A re-INVITE's offer, parsed; answered once with :meth:`answer` or :meth:`reject`."""

    def __init__(self, session: Session, offer: Offer, description: sdp.SessionDescription):
        self.session = session
        self._offer = offer
        self.offer = description

    @property
    def answered(self) -> bool:
        return self._offer.answered

    def answer(self, body: bytes) -> None:
        self.session.answer_reinvite(self._offer, body)

    def reject(self, status: int, reason: str | None = None) -> None:
        if not self._offer.answered:
            self._offer.incoming.respond(status, reason)


def on_reoffer(session: Session, handler: Callable[[ReOffer], Awaitable[None]]) -> None:
    """Hand the session's re-INVITEs to ``handler`` with their offer parsed (a re-INVITE
    without an offer is 488: no application here makes offers in a 200)."""

    async def reinvite(offer: Offer) -> None:
        description = parse_offer(offer.incoming, required=True)
        if description is not None:
            await handler(ReOffer(session, offer, description))

    session.on_reinvite = reinvite


class IncomingMessage(_Request):
    """A MESSAGE (RFC 3428), out of dialog or inside ``session``'s dialog."""

    def __init__(self, incoming: IncomingRequest, *, session: Session | None = None) -> None:
        super().__init__(incoming)
        self.session = session

    @property
    def sender(self) -> NameAddr:
        return self.request.from_

    @property
    def recipient(self) -> Uri:
        return self.request.uri

    @property
    def to(self) -> NameAddr:
        return self.request.to

    @property
    def content_type(self) -> str:
        """The Content-Type as sent (RFC 3428 §7 lets it default to text/plain)."""
        return self.request.headers.get("Content-Type") or "text/plain"

    @property
    def body(self) -> bytes:
        return self.request.body

    def accept(self, status: int = 200) -> None:
        """200, or 202 when the message is taken but not delivered yet (RFC 3428 §7)."""
        if status not in (200, 202):
            raise ValueError(f"a MESSAGE is accepted with 200 or 202, not {status}")
        self.respond(status)


def precheck_event_request(incoming: IncomingRequest, policy: EventPolicy) -> bool:
    """What every SUBSCRIBE and REFER is checked for before an application sees it; answers
    and returns False when one fails: a parsable Event (400, RFC 6665 §8.2.1), a Contact
    (400, it makes or refreshes the dialog), Expires at or above the floor (423 with
    Min-Expires, §4.2.1.1), exactly one parsable Refer-To (400, RFC 3515 §2.4.1), and the
    per-source limit (503 with Retry-After: an overload, not 489, which would tell the
    subscriber the package is unknown here)."""
    request = incoming.request
    try:
        if request.method == "SUBSCRIBE":
            parse_event(request.headers.get("Event"))
            policy.expires.grant(parse_expires(request.headers.get("Expires")))
        else:
            refer_to = request.headers.get_all("Refer-To")
            if len(refer_to) != 1:
                raise SipError(400, "REFER needs exactly one Refer-To")
            parse_name_addr(refer_to[0])
        if not request.contacts:
            raise SipError(400, "Missing Contact")
    except IntervalTooBrief as exc:
        incoming.respond(exc.status, exc.reason, headers=exc.headers)
        return False
    except SipError as exc:
        log.info("bad %s from %s: %s", request.method, incoming.source, exc.reason)
        incoming.respond(exc.status, exc.reason)
        return False
    subscribes = request.method == "SUBSCRIBE" or request.headers.get("Refer-Sub") != "false"
    if subscribes and policy.book.full(incoming.source.host):
        log.info("subscription limit reached for %s", incoming.source.host)
        incoming.respond(503, "Too many subscriptions", headers=[("Retry-After", "60")])
        return False
    return True


async def route_event_request(
    application: Application,
    incoming: IncomingRequest,
    policy: EventPolicy,
    session: Session | None = None,
) -> None:
    """Hand a checked SUBSCRIBE or REFER to the application as its domain object."""
    if incoming.request.method == "SUBSCRIBE":
        await application.incoming_subscribe(Subscription(incoming, policy=policy, session=session))
    else:
        await application.incoming_refer(Referral(incoming, policy=policy, session=session))


class _EventRequest(_Request):
    """A SUBSCRIBE or REFER: both may make a subscription (RFC 6665, RFC 3515), out of
    dialog or inside :attr:`session`'s, under the server's :class:`EventPolicy`."""

    def __init__(
        self,
        incoming: IncomingRequest,
        *,
        policy: EventPolicy | None = None,
        session: Session | None = None,
    ) -> None:
        super().__init__(incoming)
        self.policy = policy or EventPolicy()
        self.session = session


class Subscription(_EventRequest):
    """A SUBSCRIBE (RFC 6665), out of dialog or inside :attr:`session`'s dialog (§4.5.2).

    The server has checked what every package shares before the application sees it: an
    Event header (400), a Contact (400), Expires within bounds (423 with Min-Expires) and the
    per-source limit (503). The application decides the package: :meth:`bad_event` (489
    with Allow-Events), :meth:`reject`, or :meth:`accept` → a :class:`Notifier`.
    """

    @property
    def event(self) -> str | None:
        """The Event header as sent (``conference;id=1``); :attr:`event_key` parses it."""
        return self.request.headers.get("Event")

    @property
    def event_key(self) -> EventKey:
        return parse_event(self.event)

    @property
    def package(self) -> str:
        """The event package, lower case (``conference``, ``presence``)."""
        return self.event_key.package

    @property
    def subscriber(self) -> NameAddr:
        return self.request.from_

    @property
    def requested_expires(self) -> int | None:
        return parse_expires(self.request.headers.get("Expires"))

    @property
    def accept_types(self) -> list[str]:
        """The Accept header's media types (§7.2.3 lets a package default them)."""
        return [
            item.split(";")[0].strip().lower()
            for value in self.request.headers.get_all("Accept")
            for item in value.split(",")
            if item.strip()
        ]

    def bad_event(self, *packages: str) -> None:
        """489 Bad Event with the packages this resource offers (RFC 6665 §8.3.2, §7.2.2)."""
        headers = [("Allow-Events", ", ".join(packages))] if packages else []
        self.respond(489, headers=headers)

    def accept(self, *, expires: int | None = None) -> Notifier:
        """200 with the granted Expires (capped by ``[sip] subscription_max_expires`` and by
        ``expires``), a new dialog (To tag, Contact) unless in one already. Send the first
        NOTIFY at once (§4.2.1.1: the current state) with ``notifier.notify``. An initial
        ``Expires: 0`` is a fetch: the first ``notify`` is also the final one."""
        if self.incoming.final_sent:
            raise SipError(500, "SUBSCRIBE already answered")
        granted = self.policy.expires.grant(self.requested_expires)
        if expires is not None:
            granted = min(granted, expires)
        notifier = _accept_subscription(
            self.incoming, self.event_key, granted, 200, self.policy, self.session
        )
        notifier.fetch = granted == 0
        return notifier


def _accept_subscription(
    incoming: IncomingRequest,
    key: EventKey,
    expires: int,
    status: int,
    policy: EventPolicy,
    session: Session | None,
    extra: Headers = (),
) -> Notifier:
    """Answer ``status`` (200 for SUBSCRIBE, 202 for REFER) and make the notifier usage:
    in the session's dialog, or in a new one whose To tag the answer carries."""
    ua = incoming.ua
    request = incoming.request
    if session is not None:
        dialog = session.dialog
        peer = session.source
        direct = session.direct
    else:
        user = request.uri.user if isinstance(request.uri, SipUri) else None
        secure = isinstance(request.uri, SipUri) and request.uri.scheme == "sips"
        contact = ua.contact_for(incoming.source, user, secure=secure)
        dialog = Dialog.as_uas(request, ua.token(12), contact)
        peer = incoming.source
        direct = False
    response = request.make_response(status, to_tag=None if session else dialog.local_tag)
    response.headers.add("Expires", str(expires))
    response.headers.add("Contact", str(dialog.local_contact))
    for name, value in extra:
        response.headers.add(name, value)
    response.headers.add("Server", USER_AGENT)
    incoming.send_response(response)
    core = NotifierCore(key, expires, ua.now())
    return Notifier(ua, dialog, peer, core, policy=policy, direct=direct)


SIPFRAG = "message/sipfrag;version=2.0"  # RFC 3515 §2.4.5, RFC 3420


class ReferProgress:
    """The implicit subscription of an accepted REFER (RFC 3515 §2.4.4): ``notify(status,
    reason)`` sends ``SIP/2.0 180 Ringing`` as ``message/sipfrag``; a final status (>= 200)
    ends the subscription (``terminated;reason=noresource``). With ``Refer-Sub: false``
    (RFC 4488) there is no subscription and ``notify`` does nothing."""

    def __init__(self, notifier: Notifier | None) -> None:
        self.notifier = notifier
        self.final_status: int | None = None

    @property
    def subscribed(self) -> bool:
        return self.notifier is not None

    @property
    def ended(self) -> asyncio.Future[str] | None:
        return self.notifier.ended if self.notifier is not None else None

    def notify(self, status: int, reason: str | None = None) -> None:
        if self.final_status is not None:
            return
        body = f"SIP/2.0 {status} {reason or reason_phrase(status)}\r\n".encode()
        if status >= 200:
            self.final_status = status
        if self.notifier is None:
            return
        if status >= 200:
            self.notifier.terminate("noresource", body, SIPFRAG)
        else:
            self.notifier.notify(body, SIPFRAG)


class Referral(_EventRequest):
    """A REFER (RFC 3515), out of dialog or inside :attr:`session`'s dialog.

    The server checked one parsable Refer-To (400) and the per-source limit (503) first.
    :meth:`accept` answers 202 and returns the :class:`ReferProgress` to report on.
    """

    @property
    def refer_to(self) -> NameAddr:
        """The Refer-To target; its URI's ``method`` parameter is :attr:`method`."""
        return parse_name_addr(self.request.headers.get("Refer-To") or "")

    @property
    def method(self) -> str:
        """``INVITE`` unless the Refer-To URI says ``;method=BYE`` (RFC 3515 §2.4.2)."""
        uri = self.refer_to.uri
        if isinstance(uri, SipUri):
            return (uri.params.get("method") or "INVITE").upper()
        return "INVITE"

    @property
    def referred_by(self) -> NameAddr | None:
        """The Referred-By header (RFC 3892), when present and well formed."""
        value = self.request.headers.get("Referred-By")
        if value is None:
            return None
        try:
            return parse_name_addr(value)
        except SipError:
            return None

    @property
    def referrer(self) -> NameAddr:
        return self.request.from_

    @property
    def wants_subscription(self) -> bool:
        """False when the REFER says ``Refer-Sub: false`` (RFC 4488 §4)."""
        value = self.request.headers.get("Refer-Sub")
        return value is None or value.strip().lower() != "false"

    def accept(self) -> ReferProgress:
        """202 Accepted and, unless ``Refer-Sub: false``, the implicit subscription
        ``Event: refer;id=<CSeq>`` (RFC 3515 §2.4.6) with a first NOTIFY ``100 Trying``."""
        if self.incoming.final_sent:
            raise SipError(500, "REFER already answered")
        if not self.wants_subscription:
            # RFC 4488 §4: 202 with Refer-Sub: false, no subscription and no NOTIFY.
            self.respond(202, headers=[("Refer-Sub", "false")])
            return ReferProgress(None)
        key = EventKey("refer", str(self.request.cseq.number))
        expires = self.policy.expires.max_expires
        notifier = _accept_subscription(self.incoming, key, expires, 202, self.policy, self.session)
        progress = ReferProgress(notifier)
        progress.notify(100, "Trying")
        return progress


class Messenger:
    """Sends MESSAGE requests of our own (RFC 3428 §4): a fresh Call-ID and From tag each."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua

    async def send(
        self,
        to: NameAddr,
        from_: NameAddr,
        content_type: str,
        body: bytes,
        *,
        reply_to: IncomingMessage | None = None,
    ) -> int:
        """Send and return the final status. The request goes to the outbound proxy when one
        is configured, else back where ``reply_to`` came from, else to ``to``'s URI."""
        request = build_request(
            "MESSAGE",
            to.uri,
            from_=from_.with_tag(self.ua.token(12)),
            to=NameAddr(to.uri, to.display_name),
            call_id=self.ua.token(24),
            body=body,
            content_type=content_type,
        )
        if self.ua.outbound_proxy is not None or reply_to is None:
            peer = await self.ua.resolve(to.uri)
        else:
            peer = reply_to.source
        response = await self.ua.send_request(request, peer).final
        if response.status >= 300:
            log.info("MESSAGE to %s answered %s", to.uri, response.status)
        return response.status
