"""INVITE sessions: the dialog usage applications talk to (RFC 3261 §13–15, RFC 3264).

``IncomingCall`` is an offer waiting for ``accept``/``reject``; ``Session`` is the established
call: re-INVITE both ways with 491 glare handling (§14.1), BYE, and the UAS's 2xx
retransmission until ACK (§13.3.1.4). Bodies are opaque bytes here; the SDP model lives in
``control.sip.sdp`` and the applications.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable

from control.sip.dialog import Dialog
from control.sip.errors import SipError
from control.sip.message import Request, Response
from control.sip.transaction import TwoHundredRetransmitter, build_cancel
from control.sip.transport import Peer
from control.sip.uri import NameAddr, SipUri, Uri, parse_name_addr
from control.sip.useragent import (
    ALLOWED_METHODS,
    IncomingRequest,
    OutgoingRequest,
    UserAgent,
    build_request,
)

log = logging.getLogger("chorus.sip.session")

SDP = "application/sdp"


class SessionState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Offer:
    """An SDP offer in an INVITE or re-INVITE, answered once."""

    def __init__(self, incoming: IncomingRequest) -> None:
        self.incoming = incoming

    @property
    def request(self) -> Request:
        return self.incoming.request

    @property
    def body(self) -> bytes:
        return self.request.body

    @property
    def has_sdp(self) -> bool:
        content_type = self.request.content_type
        return bool(self.body) and content_type is not None and content_type.mime == SDP

    @property
    def answered(self) -> bool:
        return self.incoming.final_sent


class IncomingCall(Offer):
    """A new INVITE. The application accepts it with an answer or rejects it."""

    def __init__(self, ua: UserAgent, incoming: IncomingRequest) -> None:
        super().__init__(incoming)
        self.ua = ua
        self.local_tag = ua.token(12)

    @property
    def remote_identity(self) -> NameAddr:
        return self.request.from_

    @property
    def request_uri(self) -> Uri:
        return self.request.uri

    def ringing(self) -> None:
        if not self.answered:
            self.incoming.respond(180, to_tag=self.local_tag)

    def reject(self, status: int, reason: str | None = None) -> None:
        if not self.answered:
            self.incoming.respond(status, reason, to_tag=self.local_tag)

    def _secure_request(self) -> bool:
        """§12.1.1: the dialog is SIPS when the Request-URI or the top Record-Route is."""
        if isinstance(self.request.uri, SipUri) and self.request.uri.scheme == "sips":
            return True
        routes = self.request.headers.get_all("Record-Route")
        if routes:
            try:
                uri = parse_name_addr(routes[0]).uri
            except SipError:
                return False
            return isinstance(uri, SipUri) and uri.scheme == "sips"
        return False

    def accept(self, answer: bytes, *, user: str | None = None) -> Session:
        """Send 200 with ``answer``; the session is confirmed when the ACK arrives."""
        if self.answered:
            raise SipError(487, "already answered or cancelled")
        contact = self.ua.contact_for(self.incoming.source, user, secure=self._secure_request())
        dialog = Dialog.as_uas(self.request, self.local_tag, contact)
        session = Session(self.ua, dialog, self.incoming.source, is_uac=False)
        response = self.request.make_response(
            200, to_tag=self.local_tag, body=answer, content_type=SDP
        )
        response.headers.add("Contact", str(contact))
        response.headers.add("Allow", ALLOWED_METHODS)
        response.headers.add("Supported", "replaces, norefersub")
        self.incoming.send_response(response)
        session.start_2xx_retransmission(response)
        return session


class Session:
    """An established (or confirming) INVITE dialog usage."""

    def __init__(self, ua: UserAgent, dialog: Dialog, source: Peer, *, is_uac: bool) -> None:
        self.ua = ua
        self.dialog = dialog
        self.source = source
        self.is_uac = is_uac
        self.state = SessionState.EARLY
        loop = asyncio.get_running_loop()
        self.confirmed: asyncio.Future[None] = loop.create_future()
        self.terminated: asyncio.Future[str] = loop.create_future()
        self.on_reinvite: Callable[[Offer], Awaitable[None]] | None = None
        self.on_request: Callable[[IncomingRequest], Awaitable[None]] | None = None
        self._retransmitter: TwoHundredRetransmitter | None = None
        self._pending_reinvite: OutgoingRequest | None = None
        self._reinvite_lock = asyncio.Lock()
        self._incoming_reinvite: IncomingRequest | None = None
        self._last_2xx: Response | None = None
        ua.dialogs[dialog.id] = self

    # --- peer routing --------------------------------------------------------------------

    async def next_peer(self) -> Peer:
        """Reuse the connection the dialog was created on while it is the next hop's; else
        resolve the route set or remote target (RFC 3261 §18.1.1, §12.2.1.1)."""
        if self.source.reliable:
            return self.source
        hop = self.dialog.next_hop()
        try:
            return (
                await self.ua.resolve(hop)
                if self.ua.outbound_proxy is None
                else (await self.ua.resolve(self.ua.outbound_proxy))
            )
        except (OSError, ValueError):
            return self.source

    # --- UAS side: 2xx retransmission and ACK ----------------------------------------------

    def start_2xx_retransmission(self, response: Response) -> None:
        # §13.3.1.4 applies on every transport: a proxy beyond a TCP hop may be on UDP.
        self._last_2xx = response
        self._retransmitter = TwoHundredRetransmitter(
            response.serialize(), now=self.ua.now(), timers=self.ua.timers
        )
        self.ua.schedule(self)

    def next_timer(self) -> float | None:
        return self._retransmitter.next_timer() if self._retransmitter else None

    def handle_timer(self, now: float) -> None:
        retransmitter = self._retransmitter
        if retransmitter is None:
            return
        retransmitter.handle_timer(now)
        assert self.ua.transport is not None
        for data in retransmitter.data_to_send():
            self.ua.transport.send(data, self.source)
        if retransmitter.timed_out:
            # §13.3.1.4: no ACK within 64*T1 — confirm and immediately end the session.
            self._retransmitter = None
            log.info("no ACK for 2xx on %s: ending with BYE", self.dialog.call_id)
            self.state = SessionState.CONFIRMED
            self.ua.spawn(self.bye(reason="no ACK"))

    def handle_ack(self, request: Request, peer: Peer) -> None:
        last = self._last_2xx
        if last is not None and request.cseq.number != last.cseq.number:
            # §13.3.1.4: only the ACK for the 2xx being resent stops it; a late ACK for an
            # earlier INVITE's 2xx (a retransmission the peer re-ACKed) is not that ACK.
            return
        if self._retransmitter is not None:
            self._retransmitter.ack_received()
            self._retransmitter = None
        if self.state is SessionState.EARLY:
            self.state = SessionState.CONFIRMED
        if not self.confirmed.done():
            self.confirmed.set_result(None)

    # --- in-dialog requests from the peer --------------------------------------------------

    def handle_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        try:
            self.dialog.receive_request(request)
        except SipError as exc:
            incoming.respond(exc.status, exc.reason)
            return
        match request.method:
            case "BYE":
                incoming.respond(200)
                self._terminate("remote BYE")
            case "INVITE":
                self._handle_reinvite(incoming)
            case "OPTIONS":
                incoming.respond(200, headers=[("Allow", ALLOWED_METHODS)])
            case "INFO" | "UPDATE" if self.on_request is None:
                incoming.respond(200 if request.method == "INFO" else 501)
            case _:
                if self.on_request is not None:
                    self.ua.spawn(self._run_request_hook(incoming))
                else:
                    incoming.respond(405, headers=[("Allow", ALLOWED_METHODS)])

    async def _run_request_hook(self, incoming: IncomingRequest) -> None:
        assert self.on_request is not None
        try:
            await self.on_request(incoming)
        finally:
            if not incoming.final_sent:
                incoming.respond(500)

    def _handle_reinvite(self, incoming: IncomingRequest) -> None:
        # §14.2: a re-INVITE while ours is pending → 491; while an earlier one of theirs is
        # unanswered → 500 with Retry-After.
        if self._pending_reinvite is not None:
            incoming.respond(491)
            return
        if self._incoming_reinvite is not None and not self._incoming_reinvite.final_sent:
            # §14.2: Retry-After chosen at random between 0 and 10 seconds.
            retry = str(self.ua.rng.randint(0, 10))
            incoming.respond(500, headers=[("Retry-After", retry)])
            return
        self._incoming_reinvite = incoming
        offer = Offer(incoming)
        if self.on_reinvite is None:
            incoming.respond(488)
            return
        self.ua.spawn(self._run_reinvite(offer))

    async def _run_reinvite(self, offer: Offer) -> None:
        assert self.on_reinvite is not None
        try:
            await self.on_reinvite(offer)
        finally:
            if not offer.answered:
                offer.incoming.respond(500)

    def answer_reinvite(self, offer: Offer, answer: bytes) -> None:
        response = offer.request.make_response(200, body=answer, content_type=SDP)
        response.headers.add("Contact", str(self.dialog.local_contact))
        offer.incoming.send_response(response)
        self.start_2xx_retransmission(response)

    # --- requests we send ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        peer = await self.next_peer()
        request = self.dialog.create_request(
            method,
            via=self.ua.via_for(peer),
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
        )
        outgoing = self.ua.send_request(request, peer)
        response = await outgoing.final
        if response.status == 481 or response.status == 408:
            self._terminate(f"{method} got {response.status}")
        return response

    async def reinvite(self, body: bytes, *, attempts: int = 3) -> Response:
        """Send a re-INVITE; on 491 wait as §14.1 says and try again.

        Calls are taken one at a time: §14.1 forbids a second re-INVITE while one is pending.
        """
        async with self._reinvite_lock:
            return await self._reinvite(body, attempts)

    async def _reinvite(self, body: bytes, attempts: int) -> Response:
        for _ in range(attempts):
            peer = await self.next_peer()
            request = self.dialog.create_request(
                "INVITE", via=self.ua.via_for(peer), body=body, content_type=SDP
            )
            outgoing = self.ua.send_request(request, peer)
            self._pending_reinvite = outgoing
            try:
                response = await outgoing.final
            finally:
                self._pending_reinvite = None
            if 200 <= response.status < 300:
                self.dialog.receive_response(request, response)
                self._ack_2xx(outgoing, peer)
                return response
            if response.status != 491:
                return response
            # §14.1: the Call-ID owner waits 2.1–4 s, the other side 0–2 s.
            delay = self.ua.rng.uniform(2.1, 4.0) if self.is_uac else self.ua.rng.uniform(0, 2)
            await asyncio.sleep(delay)
        return response

    def _ack_2xx(self, outgoing: OutgoingRequest, peer: Peer) -> None:
        """§13.2.2.4: ACK the 2xx, and again each retransmission of it: the UAS resends its
        2xx until an ACK gets through (§13.3.1.4), and would otherwise end the call."""
        invite = outgoing.request
        self._send_ack(invite, peer)
        outgoing.on_2xx_retransmission = lambda _: self._send_ack(invite, peer)

    def _send_ack(self, invite: Request, peer: Peer) -> None:
        ack = self.dialog.create_request("ACK", via=self.ua.via_for(peer), cseq=invite.cseq.number)
        self.ua.send_stateless(ack, peer)

    async def bye(self, *, reason: str = "local BYE") -> None:
        if self.state is SessionState.TERMINATED:
            return
        self._terminate(reason)
        try:
            await asyncio.wait_for(self.request("BYE"), timeout=64 * self.ua.timers.t1 + 1)
        except (TimeoutError, OSError, ValueError) as exc:
            log.debug("BYE on %s: %s", self.dialog.call_id, exc)

    def _terminate(self, reason: str) -> None:
        if self.state is SessionState.TERMINATED:
            return
        self.state = SessionState.TERMINATED
        self._retransmitter = None
        self.ua.dialogs.pop(self.dialog.id, None)
        if not self.terminated.done():
            self.terminated.set_result(reason)
        if not self.confirmed.done():
            self.confirmed.cancel()


async def place_call(
    ua: UserAgent,
    target: Uri,
    *,
    from_: NameAddr,
    offer: bytes,
    peer: Peer | None = None,
    timeout: float = 32.0,
) -> tuple[Session | None, Response]:
    """Send an INVITE as UAC (§13.2); on 2xx build the dialog, ACK, and return the session."""
    if peer is None:
        peer = await ua.resolve(target)
    contact = ua.contact_for(
        peer,
        from_.uri.user if hasattr(from_.uri, "user") else None,
        secure=isinstance(target, SipUri) and target.scheme == "sips",
    )
    request = build_request(
        "INVITE",
        target,
        from_=from_.with_tag(ua.token(12)) if from_.tag is None else from_,
        to=NameAddr(target),
        call_id=ua.token(24),
        contact=contact,
        body=offer,
        content_type=SDP,
        extra_headers=[("Allow", ALLOWED_METHODS)],
    )
    outgoing = ua.send_request(request, peer)
    try:
        response = await asyncio.wait_for(asyncio.shield(outgoing.final), timeout)
    except TimeoutError:
        cancel = build_cancel(outgoing.request)
        ua.send_request(cancel, peer)
        response = await outgoing.final
    if not 200 <= response.status < 300:
        return None, response
    dialog = Dialog.as_uac(outgoing.request, response)
    session = Session(ua, dialog, peer, is_uac=True)
    session.state = SessionState.CONFIRMED
    session.confirmed.set_result(None)
    ack_peer = await session.next_peer()
    session._send_ack(outgoing.request, ack_peer)

    def re_ack(_: Response) -> None:
        session._send_ack(outgoing.request, ack_peer)

    outgoing.on_2xx_retransmission = re_ack
    return session, response
