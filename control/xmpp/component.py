"""The thin asyncio layer over slixmpp's ComponentXMPP (XEP-0114): connect, reconnect with
back-off, stanzas in as :class:`XmppMessage`, chat messages and errors out.

slixmpp takes the event loop current when the object is built (``XMLStream.loop``), so the
component is built inside the server's running loop, in :meth:`Component.start`, and set to
it explicitly. slixmpp's own reconnect back-off grows to 300 s with no cap we choose, so its
retry is cancelled and this layer's :class:`Backoff` (0.5 s doubling to ``reconnect_max``)
schedules every attempt. slixmpp stays inside control/xmpp: nothing else sees a stanza.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, get_args
from xml.etree import ElementTree as ET

from slixmpp import ComponentXMPP
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from control.xmpp.addressing import AddressRefused, Jid, parse_jid
from control.xmpp.messages import Chat
from control.xmpp.receipts import RECEIPTS_NS

__all__ = ["Backoff", "Component", "XmppMessage", "XmppPresence"]

log = logging.getLogger("chorus.xmpp")

CHAT_STATES = ("active", "composing", "paused", "inactive", "gone")
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
XHTML_IM_NS = "http://jabber.org/protocol/xhtml-im"
XHTML_NS = "http://www.w3.org/1999/xhtml"


class Backoff:
    """Reconnect delays, sans-IO: ``first`` doubling up to ``cap``; :meth:`reset` on success."""

    def __init__(self, *, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first


@dataclass(frozen=True, slots=True)
class XmppMessage:
    """A message stanza that reached the component, addresses parsed."""

    sender: Jid
    recipient: Jid
    id: str
    type: str
    chat: Chat
    error_condition: str | None = None  # type="error": the stanza error's condition
    receipt_request: bool = False  # XEP-0184 <request/>: the sender wants a receipt
    receipt_of: str | None = None  # XEP-0184 <received id=…/>: a receipt for that message


@dataclass(frozen=True, slots=True)
class XmppPresence:
    """A presence stanza that reached the component (RFC 6121 §4), addresses parsed."""

    sender: Jid
    recipient: Jid
    type: str  # "available" or a PRESENCE_TYPES value
    show: str | None = None
    status: str | None = None
    error_condition: str | None = None


MessageHandler = Callable[[XmppMessage], Coroutine[Any, Any, None]]
# Called in stanza order, not as a task: a presence's meaning depends on the one before.
PresenceHandler = Callable[[XmppPresence], None]
PresenceType = Literal[
    "unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "error"
]
PRESENCE_TYPES: tuple[str, ...] = get_args(PresenceType)


class Component:
    """One XEP-0114 connection; ``on_message`` gets each message stanza as a task."""

    def __init__(
        self,
        jid: str,
        secret: str,
        server: tuple[str, int],
        on_message: MessageHandler,
        *,
        on_presence: PresenceHandler | None = None,
        reconnect_max: float = 30.0,
    ) -> None:
        self.jid = jid
        self.secret = secret
        self.server = server
        self.on_message = on_message
        self.on_presence = on_presence
        self.backoff = Backoff(cap=reconnect_max)
        self.connected = False
        self._xmpp: ComponentXMPP | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._state: asyncio.Queue[str] = asyncio.Queue()
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Connect in the background, and keep reconnecting until :meth:`stop`."""
        loop = asyncio.get_running_loop()
        xmpp = ComponentXMPP(self.jid, self.secret)
        xmpp.loop = loop
        xmpp.add_event_handler("session_start", lambda _: self._state.put_nowait("up"))
        xmpp.add_event_handler("connection_failed", lambda _: self._state.put_nowait("failed"))
        xmpp.add_event_handler("disconnected", lambda _: self._state.put_nowait("down"))
        # Every message stanza, not slixmpp's "message" event: that one fires only for a
        # message with a <body>, and receipts, chat states and many errors have none.
        path = f"{{{xmpp.default_ns}}}message"
        xmpp.register_handler(Callback("chorus messages", MatchXPath(path), self._message))
        # Subscriptions are the gateway's to answer (RFC 8048), not slixmpp's roster's.
        xmpp.auto_authorize = None
        xmpp.auto_subscribe = False
        path = f"{{{xmpp.default_ns}}}presence"
        xmpp.register_handler(Callback("chorus presence", MatchXPath(path), self._presence))
        self._xmpp = xmpp
        self._supervisor = loop.create_task(self._run(xmpp))

    async def _run(self, xmpp: ComponentXMPP) -> None:
        host, port = self.server
        while not self._closing:
            xmpp.connect(host, port)
            state = await self._state.get()
            if state == "up":
                self.connected = True
                self.backoff.reset()
                log.info("XMPP component %s connected to %s:%d", self.jid, host, port)
                while state == "up":  # until the connection is lost
                    state = await self._state.get()
                self.connected = False
                if self._closing:
                    return
                log.warning("XMPP component %s lost its server connection", self.jid)
            xmpp.cancel_connection_attempt()  # our back-off, not slixmpp's uncapped one
            delay = self.backoff.next_delay()
            log.info("XMPP component %s reconnecting in %.1f s", self.jid, delay)
            await asyncio.sleep(delay)
            while not self._state.empty():
                self._state.get_nowait()

    async def stop(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._xmpp is not None:
            self._xmpp.cancel_connection_attempt()
            if self.connected:
                await self._xmpp.disconnect(wait=1.0)
        self.connected = False
        for task in list(self._tasks):
            task.cancel()

    # In ------------------------------------------------------------------------------------

    def _message(self, stanza: StanzaBase) -> None:
        try:
            sender = parse_jid(str(stanza["from"]))
            recipient = parse_jid(str(stanza["to"]))
        except AddressRefused:
            log.info("XMPP message with a malformed address from %s", stanza["from"])
            return  # Prosody checks addresses; nothing answerable arrives here
        kind = stanza["type"] or "normal"
        condition = stanza["error"]["condition"] if kind == "error" else None
        received = stanza.xml.find(f"{{{RECEIPTS_NS}}}received")
        message = XmppMessage(
            sender=sender,
            recipient=recipient,
            id=stanza["id"] or "",
            type=kind,
            chat=Chat(body=stanza["body"] or None, xhtml=_xhtml(stanza), state=_state(stanza)),
            error_condition=condition or None,
            receipt_request=stanza.xml.find(f"{{{RECEIPTS_NS}}}request") is not None,
            receipt_of=(received.get("id") or None) if received is not None else None,
        )
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self.on_message(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _presence(self, stanza: StanzaBase) -> None:
        if self.on_presence is None:
            return
        try:
            sender = parse_jid(str(stanza["from"]))
            recipient = parse_jid(str(stanza["to"]))
        except AddressRefused:
            log.info("XMPP presence with a malformed address from %s", stanza["from"])
            return
        kind = stanza.xml.get("type") or "available"
        if kind != "available" and kind not in PRESENCE_TYPES:
            log.info("XMPP presence of unknown type %r from %s", kind[:20], sender)
            return
        show = stanza["show"] or None
        condition = stanza["error"]["condition"] if kind == "error" else None
        self.on_presence(
            XmppPresence(
                sender=sender,
                recipient=recipient,
                type=kind,
                show=show if show in ("away", "chat", "dnd", "xa") else None,
                status=stanza["status"] or None,
                error_condition=condition or None,
            )
        )

    # Out -----------------------------------------------------------------------------------

    def send_presence(
        self,
        to: Jid,
        from_: Jid,
        *,
        type: PresenceType | None = None,
        show: str | None = None,
        status: str | None = None,
    ) -> None:
        """A presence stanza: available (``type`` None) with ``show``/``status``, or one of
        unavailable, subscribe, subscribed, unsubscribe, unsubscribed, probe."""
        xmpp = self._require()
        stanza = xmpp.make_presence(pto=str(to), pfrom=str(from_), ptype=type)
        if show is not None:
            stanza["show"] = show
        if status is not None:
            stanza["status"] = status
        stanza.send()

    def send_chat(
        self, to: Jid, from_: Jid, chat: Chat, *, id: str, request_receipt: bool = False
    ) -> None:
        xmpp = self._require()
        stanza = xmpp.make_message(mto=str(to), mfrom=str(from_), mtype="chat", mbody=chat.body)
        stanza["id"] = id
        if chat.xhtml is not None:
            _add_xhtml(stanza, chat.xhtml)
        if chat.state is not None:
            stanza.xml.append(ET.Element(f"{{{CHATSTATES_NS}}}{chat.state}"))
        if request_receipt and chat.body is not None:  # XEP-0184 §5.4: only with a body
            stanza.xml.append(ET.Element(f"{{{RECEIPTS_NS}}}request"))
        stanza.send()

    def send_receipt(self, to: Jid, from_: Jid, *, id: str, of: str) -> None:
        """XEP-0184 ``<received id=of/>``: message ``of`` reached its recipient."""
        xmpp = self._require()
        stanza = xmpp.make_message(mto=str(to), mfrom=str(from_), mtype="chat")
        stanza["id"] = id
        stanza.xml.append(ET.Element(f"{{{RECEIPTS_NS}}}received", {"id": of}))
        stanza.send()

    def send_error(self, to: Jid, from_: Jid, *, id: str, condition: str, text: str) -> None:
        """A ``type="error"`` message back to the sender of message ``id`` (RFC 6120 §8.3)."""
        xmpp = self._require()
        stanza = xmpp.make_message(mto=str(to), mfrom=str(from_), mtype="error")
        stanza["id"] = id
        stanza["error"]["type"] = _error_type(condition)
        stanza["error"]["condition"] = condition
        stanza["error"]["text"] = text
        stanza.send()

    def _require(self) -> ComponentXMPP:
        if self._xmpp is None or not self.connected:
            raise ConnectionError("XMPP server not connected")
        return self._xmpp


def _error_type(condition: str) -> str:
    if condition in ("recipient-unavailable", "service-unavailable", "remote-server-timeout"):
        return "wait"
    if condition in ("forbidden", "not-allowed", "not-authorized"):
        return "auth"
    if condition in ("item-not-found", "gone", "undefined-condition"):
        return "cancel"
    return "modify"


def _state(stanza: StanzaBase) -> str | None:
    for child in stanza.xml:
        tag = child.tag
        if isinstance(tag, str) and tag.startswith(f"{{{CHATSTATES_NS}}}"):
            name = tag.split("}", 1)[1]
            if name in CHAT_STATES:
                return name
    return None


def _xhtml(stanza: StanzaBase) -> str | None:
    html = stanza.xml.find(f"{{{XHTML_IM_NS}}}html")
    if html is None:
        return None
    body = html.find(f"{{{XHTML_NS}}}body")
    if body is None:
        return None
    inner = (body.text or "") + "".join(
        ET.tostring(child, encoding="unicode", default_namespace=XHTML_NS) for child in body
    )
    return inner or None


def _add_xhtml(stanza: Any, markup: str) -> None:
    """XEP-0071: the HTML as an XHTML-IM body, when it parses as XHTML; else the plain body
    alone carries the message (the markup is a rendering hint, never the only copy)."""
    try:
        body = ET.fromstring(f'<body xmlns="{XHTML_NS}">{markup}</body>')
    except ET.ParseError:
        return
    html = ET.Element(f"{{{XHTML_IM_NS}}}html")
    html.append(body)
    stanza.xml.append(html)
