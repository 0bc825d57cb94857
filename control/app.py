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
- :class:`Subscription`, :class:`Referral`: SUBSCRIBE (RFC 6665) and REFER (RFC 3515), thin
  for now: respond or reject.
- :class:`Messenger`: sends a MESSAGE of our own (RFC 3428 §4) and says how it was answered.

The ``respond`` method every request object has is the escape hatch for a status with
headers (``Allow``, ``Retry-After``); the named ones are what applications should use.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from control.sip import sdp
from control.sip.errors import SipError
from control.sip.message import Request
from control.sip.session import IncomingCall as SipCall
from control.sip.session import Offer, Session
from control.sip.transport import Peer
from control.sip.uri import NameAddr, SipUri, Uri
from control.sip.useragent import ALLOWED_METHODS, IncomingRequest, UserAgent, build_request

__all__ = [
    "Application",
    "IncomingCall",
    "IncomingMessage",
    "Messenger",
    "ReOffer",
    "Referral",
    "Subscription",
    "on_reoffer",
    "parse_offer",
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
    ) -> None:
        self._call = call
        self.offer = offer
        self._on_message = on_message

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

    def reject(self, status: int, reason: str | None = None) -> None:
        self._call.reject(status, reason)

    def accept(self, answer: bytes, *, user: str | None = None) -> Session:
        """Send 200 with ``answer``. MESSAGE inside the new dialog goes to the application's
        ``incoming_message`` with the session attached."""
        session = self._call.accept(answer, user=user)
        if self._on_message is not None:
            session.on_request = _DialogRequests(session, self._on_message)
        return session


class _DialogRequests:
    """``Session.on_request`` for a call: MESSAGE to the application, the rest as a session
    without an application hook answers them (INFO 200, UPDATE 501, else 405)."""

    def __init__(self, session: Session, handler: MessageHandler) -> None:
        self.session = session
        self.handler = handler

    async def __call__(self, incoming: IncomingRequest) -> None:
        match incoming.request.method:
            case "MESSAGE":
                await self.handler(IncomingMessage(incoming, session=self.session))
            case "INFO":
                incoming.respond(200)
            case "UPDATE":
                incoming.respond(501)
            case _:
                incoming.respond(405, headers=[("Allow", ALLOWED_METHODS)])


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


class Subscription(_Request):
    """A SUBSCRIBE (RFC 6665). Issue 10 adds the subscription state and NOTIFY."""

    @property
    def event(self) -> str | None:
        return self.request.headers.get("Event")

    @property
    def subscriber(self) -> NameAddr:
        return self.request.from_


class Referral(_Request):
    """A REFER (RFC 3515). Issue 10 adds the implicit subscription and its sipfrag NOTIFYs."""

    @property
    def refer_to(self) -> str | None:
        return self.request.headers.get("Refer-To")

    @property
    def referrer(self) -> NameAddr:
        return self.request.from_


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
