"""The gateway's Application (STYLE.md §5): SIP MESSAGE ↔ XMPP chat through the component.

SIP → XMPP: a MESSAGE to a served XMPP domain (``[xmpp] xmpp_domains``) from a served SIP
domain becomes one chat message from ``user@<sip domain>``; it is answered 202 (RFC 3428 §7:
taken, not yet delivered — XMPP says nothing on success), and an XMPP error that comes back
for it is reported to the SIP sender by a MESSAGE from the XMPP user's address, so nothing is
lost silently. While the XMPP server is away the answer is 503 with Retry-After.

XMPP → SIP: a chat message to ``user@<sip domain>`` becomes one MESSAGE (sent once, never
split: a long message is one request or a refusal); a final failure comes back to the XMPP
sender as an error stanza with the mapped condition (RFC 7572 §5.2).

Receipts (control/xmpp/receipts.py): XEP-0184 requests and receipts ↔ IMDN positive and
negative delivery notifications (RFC 5438) in CPIM, both ways.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec, TypeVar

from control.app import IncomingCall, IncomingMessage, Messenger, Referral, Subscription
from control.msrp.imdn import ImdnNotification
from control.msrp.transport import MsrpTransport
from control.sip.uri import NameAddr, SipUri
from control.sip.useragent import UserAgent
from control.xmpp.addressing import Addressing, AddressRefused, Jid
from control.xmpp.chatgw import ChatSessionGateway
from control.xmpp.component import Component, XmppMessage, XmppPresence
from control.xmpp.errors import StanzaLimits
from control.xmpp.jinglegw import JingleGateway
from control.xmpp.messages import (
    ACCEPTED_TYPES,
    Chat,
    MessageRefused,
    chat_from_sip,
    condition_for_status,
    sip_from_chat,
)
from control.xmpp.mucgw import MucGateway
from control.xmpp.presencegw import PresenceGateway
from control.xmpp.receipts import (
    ReceiptBook,
    SipOrigin,
    XmppOrigin,
    delivery_notification,
    imdn_request_of,
    notification_of,
    wrap_with_request,
)

__all__ = ["GatewaySettings", "XmppGateway"]

log = logging.getLogger("chorus.xmpp")

P = ParamSpec("P")
T = TypeVar("T")

SIP_SIDE_DOWN = 0  # _send_sip: the MESSAGE could not even be sent (service-unavailable)
PENDING_LIMIT = 10000  # messages remembered for an error or a receipt that may come back


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    component_jid: str
    component_secret: str
    server: tuple[str, int]
    sip_domains: tuple[str, ...]
    xmpp_domains: tuple[str, ...]
    reconnect_max: float = 30.0
    max_message_bytes: int = 65536
    max_stanza_bytes: int = 262144
    send_timeout: float = 30.0
    presence_expires: int = 3600
    presence_retry_max: float = 300.0
    max_presence_subscriptions: int = 10000
    chat_sessions: bool = False
    chat_session_idle: float = 600.0
    max_chat_sessions: int = 1000
    max_jingle_calls: int = 100
    jingle_ring_timeout: float = 60.0
    jingle_ice_addresses: tuple[str, ...] = ()


class XmppGateway:
    """SIP requests for the XMPP domains, and the component's messages for the SIP users."""

    def __init__(
        self,
        ua: UserAgent,
        settings: GatewaySettings,
        *,
        muc: MucGateway | None = None,
        msrp: MsrpTransport | None = None,
        rtp_host: str = "127.0.0.1",
    ) -> None:
        self.ua = ua
        self.settings = settings
        self.muc = muc  # MUC <-> room chat (control/xmpp/mucgw.py), a component of its own
        self.addressing = Addressing(settings.sip_domains, settings.xmpp_domains)
        self.messenger = Messenger(ua)
        self.component = Component(
            settings.component_jid,
            settings.component_secret,
            settings.server,
            self.xmpp_message,
            on_presence=self._xmpp_presence,
            reconnect_max=settings.reconnect_max,
            limits=StanzaLimits(max_stanza_bytes=settings.max_stanza_bytes),
            domains=settings.sip_domains,
            on_down=self._xmpp_down,
            on_jingle=lambda iq: self.jingle.xmpp_iq(iq),
            on_jingle_message=lambda *m: self.jingle.xmpp_message(*m),
        )
        # Jingle audio calls <-> SIP INVITEs with RTP (jinglegw.py)
        self.jingle = self._part(
            JingleGateway,
            max_calls=settings.max_jingle_calls,
            ring_timeout=settings.jingle_ring_timeout,
            ice_addresses=settings.jingle_ice_addresses,
            rtp_host=rtp_host,
        )
        self.presence = self._part(
            PresenceGateway,
            expires=settings.presence_expires,
            retry_max=settings.presence_retry_max,
            limit=settings.max_presence_subscriptions,
        )
        # RFC 7573 chat sessions (chatgw.py), over the server's MSRP transport
        self.chats = (
            self._part(
                ChatSessionGateway,
                msrp,
                chat_sessions=settings.chat_sessions,
                idle=settings.chat_session_idle,
                limit=settings.max_chat_sessions,
                max_message_bytes=settings.max_message_bytes,
                invite_timeout=settings.send_timeout,
            )
            if msrp is not None
            else None
        )
        # stanza id of a message sent to XMPP -> its SIP origin, for an error or a receipt
        self._pending: ReceiptBook[SipOrigin] = ReceiptBook(PENDING_LIMIT)
        # our IMDN Message-ID of a message sent to SIP -> the XMPP stanza to acknowledge
        self._to_sip: ReceiptBook[XmppOrigin] = ReceiptBook(PENDING_LIMIT)

    def _part(
        self,
        factory: Callable[Concatenate[UserAgent, Component, Addressing, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """One part of the gateway (Jingle calls, presence, chat sessions): each works on the
        same user agent, component and address mapping, and takes its own settings after."""
        return factory(self.ua, self.component, self.addressing, *args, **kwargs)

    def start(self) -> None:
        self.component.start()
        if self.muc is not None:
            self.muc.start()

    async def shutdown(self) -> None:
        if self.muc is not None:
            await self.muc.stop()
        if self.chats is not None:
            await self.chats.shutdown()
        await self.jingle.shutdown()
        await self.presence.shutdown()
        await self.component.stop()

    # SIP → XMPP ---------------------------------------------------------------------------

    async def incoming_message(self, message: IncomingMessage) -> None:
        recipient_uri = message.recipient
        sender_uri = message.sender.uri
        if not isinstance(recipient_uri, SipUri) or not isinstance(sender_uri, SipUri):
            message.reject(416)
            return
        try:
            recipient = self.addressing.sip_to_jid(recipient_uri, side="xmpp")
            sender = self.addressing.sip_to_jid(sender_uri, side="sip", sender=True)
            notification = notification_of(message.content_type, message.body)
            imdn = imdn_request_of(message.content_type, message.body)
            chat = None
            if notification is None:
                chat = chat_from_sip(
                    message.content_type, message.body, max_bytes=self.settings.max_message_bytes
                )
        except (AddressRefused, MessageRefused) as exc:
            log.info("MESSAGE to %s refused: %s", recipient_uri, exc)
            status = exc.sip_status
            headers = [("Accept", ", ".join(ACCEPTED_TYPES))] if status == 415 else []
            message.reject(status, exc.reason[:80], headers=headers)
            return
        if not self.component.connected:
            message.reject(503, "XMPP server unavailable", headers=[("Retry-After", "5")])
            return
        if notification is not None:
            self._sip_notification(message, notification, sender, recipient)
            return
        assert chat is not None
        stanza_id = self.ua.token(16)
        wanted = imdn is not None and imdn.positive
        self.component.send_chat(recipient, sender, chat, id=stanza_id, request_receipt=wanted)
        self._pending.add(stanza_id, SipOrigin(sender_uri, recipient_uri, imdn))
        message.accept(202)

    def _sip_notification(
        self, message: IncomingMessage, notification: ImdnNotification, sender: Jid, recipient: Jid
    ) -> None:
        """A SIP user's IMDN for a message an XMPP user sent: a receipt (delivered) or an
        error stanza (failed, forbidden, error) for the XMPP stanza it carried."""
        origin = self._to_sip.pop(notification.message_id)
        if origin is None:
            log.info("IMDN from %s for no message of ours", message.sender.uri)
            message.accept(200)  # nothing waits for it any more (RFC 5438 §7.2.1.1)
            return
        if origin.recipient.bare != sender.bare or origin.sender.bare != recipient.bare:
            self._to_sip.add(notification.message_id, origin)
            log.info("IMDN from %s for a message sent to %s", sender, origin.recipient)
            message.reject(403, "not the message's recipient")
            return
        if notification.status == "delivered":
            self.component.send_receipt(
                origin.sender, origin.recipient, id=self.ua.token(16), of=origin.stanza_id
            )
        else:
            self.component.send_error(
                origin.sender,
                origin.recipient,
                id=origin.stanza_id,
                condition="recipient-unavailable",
                text=f"SIP recipient reports the message {notification.status}",
            )
        message.accept(200)

    async def incoming_invite(self, call: IncomingCall) -> None:
        """An INVITE with MSRP chat to an XMPP user: a chat session (RFC 7573, chatgw.py);
        one with audio and no chat: a Jingle call (jinglegw.py)."""
        kinds = {m.media for m in call.offer.media if not m.rejected}
        if "audio" in kinds and "message" not in kinds:
            await self.jingle.incoming_invite(call)
            return
        if self.chats is None:
            call.reject(488, "no MSRP transport for chat sessions")
            return
        await self.chats.incoming_invite(call)

    async def incoming_subscribe(self, subscription: Subscription) -> None:
        await self.presence.incoming_subscribe(subscription)  # RFC 8048, presencegw.py

    async def incoming_refer(self, referral: Referral) -> None:
        referral.reject(405)

    # XMPP → SIP ---------------------------------------------------------------------------

    def _xmpp_down(self) -> None:
        """The XMPP server went away: its users' sessions with it are gone, so are the chat
        sessions (BYE toward SIP)."""
        if self.chats is not None:
            self.chats.xmpp_lost()
        self.jingle.xmpp_lost()

    def _xmpp_presence(self, presence: XmppPresence) -> None:
        if presence.type == "unavailable" and self.chats is not None:
            self.chats.xmpp_unavailable(presence.sender)  # RFC 7573: the session ends
        self.presence.xmpp_presence(presence)

    async def xmpp_message(self, message: XmppMessage) -> None:
        if (message.type == "error" or message.receipt_of is not None) and (
            self.chats is not None and self.chats.xmpp_report(message)
        ):
            return  # for a SIP user's message in a chat session: an IMDN over its MSRP
        if message.type == "error":
            await self._xmpp_error(message)
            return
        if message.receipt_of is not None:
            await self._xmpp_receipt(message)
            return
        if message.type == "groupchat":
            self._refuse(message, "not-acceptable", "no groupchat to a SIP user")
            return
        content = sip_from_chat(message.chat)
        if content is None:
            return  # a receipt or other payload alone: nothing SIP carries (yet)
        content_type, body = content
        if len(body) > self.settings.max_message_bytes:
            self._refuse(message, "policy-violation", "message over the gateway's size limit")
            return
        try:
            sender = self.addressing.jid_to_sip(message.sender, side="xmpp", sender=True)
            recipient = self.addressing.jid_to_sip(message.recipient, side="sip")
        except AddressRefused as exc:
            self._refuse(message, exc.condition, exc.reason)
            return
        if self.chats is not None and await self.chats.route(message, sender, recipient):
            return  # a chat session's message: over its MSRP, not as a MESSAGE
        imdn_id = None
        if message.receipt_request and message.chat.body is not None and message.id:
            imdn_id = self.ua.token(16)
            content_type, body = wrap_with_request(
                content_type,
                body,
                message_id=imdn_id,
                sender=sender,
                recipient=recipient,
                now=datetime.now(UTC),
            )
            self._to_sip.add(imdn_id, XmppOrigin(message.sender, message.recipient, message.id))
        status = await self._send_sip(recipient, sender, content_type, body)
        if status == SIP_SIDE_DOWN:
            self._refuse(message, "service-unavailable", "the SIP side is not reachable")
        elif status is None:
            self._refuse(message, "recipient-unavailable", "SIP recipient did not answer")
        elif status >= 300:
            self._refuse(message, condition_for_status(status), f"SIP answered {status}")
        if imdn_id is not None and (status is None or not 200 <= status < 300):
            self._to_sip.pop(imdn_id)  # the error stanza said it; no IMDN will follow

    async def _send_sip(
        self, to: SipUri, from_: SipUri, content_type: str, body: bytes
    ) -> int | None:
        """One MESSAGE of ours; its final status, None when it got no answer in time,
        :data:`SIP_SIDE_DOWN` when it could not be sent at all (no route, connection refused)."""
        try:
            return await asyncio.wait_for(
                self.messenger.send(NameAddr(to), NameAddr(from_), content_type, body),
                self.settings.send_timeout,
            )
        except TimeoutError:
            log.info("MESSAGE to %s: no answer in %g s", to, self.settings.send_timeout)
            return None
        except (OSError, ValueError) as exc:
            log.info("MESSAGE to %s not sent: %s", to, exc)
            return SIP_SIDE_DOWN

    async def _xmpp_receipt(self, message: XmppMessage) -> None:
        """An XMPP user's receipt for a message a SIP user sent: a delivered IMDN back to
        that sender, when the sender asked for positive delivery notifications."""
        assert message.receipt_of is not None
        origin = self._pending.pop(message.receipt_of)
        if origin is None or origin.imdn is None or not origin.imdn.positive:
            log.info("XMPP receipt from %s for no message awaiting one", message.sender)
            return
        if self.addressing.sip_to_jid(origin.recipient, side="xmpp").bare != message.sender.bare:
            self._pending.add(message.receipt_of, origin)
            log.info("XMPP receipt from %s for a message to %s", message.sender, origin.recipient)
            return
        await self._notify_sip(origin, "delivered")

    async def _notify_sip(self, origin: SipOrigin, status: str) -> None:
        assert origin.imdn is not None
        content_type, body = delivery_notification(
            origin.imdn.message_id,
            status=status,
            sender=origin.recipient,
            recipient=origin.sender,
            notification_id=self.ua.token(16),
            now=datetime.now(UTC),
        )
        await self._send_sip(origin.sender, origin.recipient, content_type, body)

    def _refuse(self, message: XmppMessage, condition: str, text: str) -> None:
        log.info("XMPP message from %s refused: %s: %s", message.sender, condition, text)
        if not self.component.connected:
            return
        self.component.send_error(
            message.sender, message.recipient, id=message.id, condition=condition, text=text
        )

    async def _xmpp_error(self, message: XmppMessage) -> None:
        origin = self._pending.pop(message.id)
        if origin is None:
            log.info("XMPP error %s for no message of ours", message.error_condition)
            return
        text = f"Message to {origin.recipient} not delivered: {message.error_condition}"
        log.info("%s", text)
        if origin.imdn is not None and origin.imdn.negative:
            await self._notify_sip(origin, "failed")  # RFC 5438 §7.2.1.1: what was asked
            return
        content_type, body = sip_from_chat(Chat(body=text)) or ("text/plain", text.encode())
        await self._send_sip(origin.sender, origin.recipient, content_type, body)
