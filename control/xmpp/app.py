"""The gateway's Application (STYLE.md §5): SIP MESSAGE ↔ XMPP chat through the component.

SIP → XMPP: a MESSAGE to a served XMPP domain (``[xmpp] xmpp_domains``) from a served SIP
domain becomes one chat message from ``user@<sip domain>``; it is answered 202 (RFC 3428 §7:
taken, not yet delivered — XMPP says nothing on success), and an XMPP error that comes back
for it is reported to the SIP sender by a MESSAGE from the XMPP user's address, so nothing is
lost silently. While the XMPP server is away the answer is 503 with Retry-After.

XMPP → SIP: a chat message to ``user@<sip domain>`` becomes one MESSAGE (sent once, never
split: a long message is one request or a refusal); a final failure comes back to the XMPP
sender as an error stanza with the mapped condition (RFC 7572 §5.2).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from control.app import IncomingCall, IncomingMessage, Messenger, Referral, Subscription
from control.sip.uri import NameAddr, SipUri
from control.sip.useragent import UserAgent
from control.xmpp.addressing import Addressing, AddressRefused
from control.xmpp.component import Component, XmppMessage
from control.xmpp.messages import (
    ACCEPTED_TYPES,
    Chat,
    MessageRefused,
    chat_from_sip,
    condition_for_status,
    sip_from_chat,
)

__all__ = ["GatewaySettings", "XmppGateway"]

log = logging.getLogger("chorus.xmpp")

PENDING_LIMIT = 10000  # SIP→XMPP messages remembered for an error that may come back


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    component_jid: str
    component_secret: str
    server: tuple[str, int]
    sip_domains: tuple[str, ...]
    xmpp_domains: tuple[str, ...]
    reconnect_max: float = 30.0
    max_message_bytes: int = 65536
    send_timeout: float = 30.0


class XmppGateway:
    """SIP requests for the XMPP domains, and the component's messages for the SIP users."""

    def __init__(self, ua: UserAgent, settings: GatewaySettings) -> None:
        self.ua = ua
        self.settings = settings
        self.addressing = Addressing(settings.sip_domains, settings.xmpp_domains)
        self.messenger = Messenger(ua)
        self.component = Component(
            settings.component_jid,
            settings.component_secret,
            settings.server,
            self.xmpp_message,
            reconnect_max=settings.reconnect_max,
        )
        # id of a message sent to XMPP -> the SIP sender and recipient to report a failure to
        self._pending: OrderedDict[str, tuple[SipUri, SipUri]] = OrderedDict()

    def start(self) -> None:
        self.component.start()

    async def shutdown(self) -> None:
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
        stanza_id = self.ua.token(16)
        self.component.send_chat(recipient, sender, chat, id=stanza_id)
        self._remember(stanza_id, sender_uri, recipient_uri)
        message.accept(202)

    def _remember(self, stanza_id: str, sender: SipUri, recipient: SipUri) -> None:
        self._pending[stanza_id] = (sender, recipient)
        while len(self._pending) > PENDING_LIMIT:
            self._pending.popitem(last=False)

    async def incoming_invite(self, call: IncomingCall) -> None:
        call.reject(488, "Chat sessions through the gateway are not supported yet")

    async def incoming_subscribe(self, subscription: Subscription) -> None:
        subscription.reject(489)

    async def incoming_refer(self, referral: Referral) -> None:
        referral.reject(405)

    # XMPP → SIP ---------------------------------------------------------------------------

    async def xmpp_message(self, message: XmppMessage) -> None:
        if message.type == "error":
            await self._xmpp_error(message)
            return
        if message.type == "groupchat":
            self._refuse(message, "not-acceptable", "no groupchat to a SIP user")
            return
        content = sip_from_chat(message.chat)
        if content is None:
            return  # a receipt or other payload alone: nothing SIP carries (yet)
        content_type, body = content
        if len(body) > self.settings.max_message_bytes:
            self._refuse(message, "not-acceptable", "message too large for SIP")
            return
        try:
            sender = self.addressing.jid_to_sip(message.sender, side="xmpp", sender=True)
            recipient = self.addressing.jid_to_sip(message.recipient, side="sip")
        except AddressRefused as exc:
            self._refuse(message, exc.condition, exc.reason)
            return
        try:
            status = await asyncio.wait_for(
                self.messenger.send(NameAddr(recipient), NameAddr(sender), content_type, body),
                self.settings.send_timeout,
            )
        except (TimeoutError, OSError) as exc:
            log.info("MESSAGE to %s failed: %s", recipient, exc or "timeout")
            self._refuse(message, "recipient-unavailable", "SIP recipient did not answer")
            return
        if status >= 300:
            self._refuse(message, condition_for_status(status), f"SIP answered {status}")

    def _refuse(self, message: XmppMessage, condition: str, text: str) -> None:
        if not self.component.connected:
            return
        self.component.send_error(
            message.sender, message.recipient, id=message.id, condition=condition, text=text
        )

    async def _xmpp_error(self, message: XmppMessage) -> None:
        pending = self._pending.pop(message.id, None)
        if pending is None:
            log.info("XMPP error %s for no message of ours", message.error_condition)
            return
        sender, recipient = pending
        text = f"Message to {recipient} not delivered: {message.error_condition}"
        log.info("%s", text)
        content_type, body = sip_from_chat(Chat(body=text)) or ("text/plain", text.encode())
        try:
            await asyncio.wait_for(
                self.messenger.send(NameAddr(sender), NameAddr(recipient), content_type, body),
                self.settings.send_timeout,
            )
        except (TimeoutError, OSError) as exc:
            log.info("failure report to %s not delivered: %s", sender, exc or "timeout")
