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
from control.xmpp.errors import (
    CHATSTATES_NS,
    STANZAS_NS,
    XHTML_IM_NS,
    XHTML_NS,
    ErrorReply,
    StanzaLimits,
    StanzaRefused,
    check_message,
    error_stanza,
    error_type,
    refusal_for,
)
from control.xmpp.jingle import JINGLE_NS
from control.xmpp.jinglemessage import JMI_NS
from control.xmpp.messages import Chat
from control.xmpp.receipts import RECEIPTS_NS

__all__ = [
    "Backoff",
    "Component",
    "XmppIq",
    "XmppMessage",
    "XmppPresence",
    "size_bound",
    "stanza_size",
]

log = logging.getLogger("chorus.xmpp")

# XEP-0030 disco#info of the component and of every user under it: a SIP gateway (the
# registry's "simple" type) that carries receipts, chat states and XHTML-IM (XEP-0184,
# XEP-0085, XEP-0071 discovery: a client asks before it uses them).
DISCO_IDENTITY = ("gateway", "simple", "SIP gateway")
DISCO_FEATURES = (
    "http://jabber.org/protocol/disco#info",
    "urn:xmpp:receipts",
    CHATSTATES_NS,
    XHTML_IM_NS,
)
# What a Jingle client asks before it calls (XEP-0166 §11, XEP-0167 §9, XEP-0176 §10,
# XEP-0320 §6, XEP-0353 §5): offered only when the gateway carries Jingle audio.
JINGLE_FEATURES = (
    JINGLE_NS,
    "urn:xmpp:jingle:apps:rtp:1",
    "urn:xmpp:jingle:apps:rtp:audio",
    "urn:xmpp:jingle:transports:ice-udp:1",
    "urn:xmpp:jingle:apps:dtls:0",
    JMI_NS,
)


def error_condition(xml: ET.Element) -> str | None:
    """The defined condition of an error stanza (RFC 6120 §8.3.3), read from the XML.

    slixmpp's ``stanza["error"]`` looks for ``{jabber:client}error``; what reaches a
    component is ``{jabber:component:accept}error``, so it would build an empty error and
    answer its default, ``feature-not-implemented``, for every error a client sends."""
    for child in xml:
        if child.tag.rsplit("}", 1)[-1] != "error":
            continue
        for condition in child:
            name = condition.tag.rsplit("}", 1)[-1]
            if condition.tag.startswith(f"{{{STANZAS_NS}}}") and name != "text":
                return name
    return None


# The most a name's namespace prefix adds when serialised: "{uri}local" is written as
# "nsK:local" (or a well-known prefix such as "xml:"), K below 10^9.
_PREFIX = len("ns123456789:")
# One namespace declaration on the root, besides its escaped URI: ' xmlns:nsK=""'.
_DECLARATION = len(' xmlns:="') + _PREFIX


def _escaped(text: str, *, attribute: bool = False) -> int:
    """The most ``text`` takes once ET escapes it (us-ascii): a non-ASCII character becomes
    a character reference of at most 10 (``&#1114111;``); in ASCII, ``&`` becomes ``&amp;``,
    ``<``/``>`` ``&lt;``/``&gt;``, and in an attribute ``"`` ``&quot;`` and CR/LF/tab ``&#13;``."""
    if not text.isascii():
        return 10 * len(text)
    size = len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))
    if attribute:
        size += 5 * text.count('"')
        size += 4 * (text.count("\r") + text.count("\n") + text.count("\t"))
    return size


def _name(name: str, uris: set[str]) -> int:
    if name[:1] == "{":
        uri, _, local = name[1:].rpartition("}")
        uris.add(uri)
        return _PREFIX + len(local)
    return len(name)


def size_bound(xml: ET.Element) -> int | None:
    """An upper bound of ``len(ET.tostring(xml))`` from the lengths of the parsed tree's
    names, texts and attribute values, at the cost of one walk (ET's serialiser is pure
    Python and, per stanza, the gateway's largest cost after parsing: bench/RESULTS.md).
    ``None`` when the tree holds something the bound does not know (a comment, a QName)."""
    size = 0
    uris: set[str] = set()
    for element in xml.iter():
        tag = element.tag
        if not isinstance(tag, str):
            return None
        # <name attrs>text children</name>tail
        size += 2 * _name(tag, uris) + len("<></>")
        size += _escaped(element.text or "") + _escaped(element.tail or "")
        for key, value in element.items():
            if not isinstance(key, str) or not isinstance(value, str):
                return None
            size += _name(key, uris) + len(' =""') + _escaped(value, attribute=True)
    return size + sum(_DECLARATION + _escaped(uri, attribute=True) for uri in uris)


def stanza_size(
    xml: ET.Element, limit: int, serialise: Callable[[ET.Element], bytes] = ET.tostring
) -> int:
    """The stanza's serialised size for the ``limit`` check, serialising only when it may
    matter: while :func:`size_bound` is within the limit the bound is returned (the stanza
    passes either way); over it, the exact size, so a stanza is refused exactly when its
    serialisation is over the limit, as before."""
    bound = size_bound(xml)
    if bound is not None and bound <= limit:
        return bound
    return len(serialise(xml))


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


@dataclass(frozen=True, slots=True)
class XmppIq:
    """An iq ``type='set'`` whose payload is a Jingle element (the only iqs the gateway
    takes besides disco), addresses parsed; answered with :meth:`Component.reply_iq`."""

    sender: Jid
    recipient: Jid
    id: str
    payload: ET.Element


MessageHandler = Callable[[XmppMessage], Coroutine[Any, Any, None]]
JingleIqHandler = Callable[[XmppIq], Coroutine[Any, Any, None]]
# A XEP-0353 message (sender, recipient, the stanza's XML), in stanza order.
JingleMessageHandler = Callable[[Jid, Jid, ET.Element], None]
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
        limits: StanzaLimits = StanzaLimits(),
        domains: tuple[str, ...] = (),
        on_down: Callable[[], None] | None = None,
        on_jingle: JingleIqHandler | None = None,
        on_jingle_message: JingleMessageHandler | None = None,
    ) -> None:
        self.jid = jid
        self.on_jingle = on_jingle  # Jingle iqs (control/xmpp/jinglegw.py), as tasks
        self.on_jingle_message = on_jingle_message  # XEP-0353 messages, in stanza order
        self.on_down = on_down  # the server connection was lost (reconnecting follows)
        self.limits = limits
        # the domains this component answers for (the SIP users'): an error's possible from
        self.domains = frozenset(d.lower() for d in domains) | {jid.lower()}
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
        if self.on_jingle is not None:
            path = f"{{{xmpp.default_ns}}}iq/{{{JINGLE_NS}}}jingle"
            xmpp.register_handler(Callback("chorus jingle", MatchXPath(path), self._jingle))
        xmpp.register_plugin("xep_0030")
        xmpp.plugin["xep_0030"].api.register(self._disco_info, "get_info")
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
                if self.on_down is not None:
                    self.on_down()
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
            size = stanza_size(stanza.xml, self.limits.max_stanza_bytes)
            checked = check_message(stanza.xml, size=size, limits=self.limits)
        except StanzaRefused as refused:
            self._refused(stanza, refused)
            return
        kind = stanza["type"] or "normal"
        if self.on_jingle_message is not None and kind != "error" and _is_jmi(stanza.xml):
            try:
                self.on_jingle_message(checked.sender, checked.recipient, stanza.xml)
            except Exception as exc:  # noqa: BLE001 - answered and logged once
                self._refused(stanza, refusal_for(exc), failure=exc)
            return
        condition = error_condition(stanza.xml) if kind == "error" else None
        received = stanza.xml.find(f"{{{RECEIPTS_NS}}}received")
        message = XmppMessage(
            sender=checked.sender,
            recipient=checked.recipient,
            id=stanza["id"] or "",
            type=kind,
            chat=Chat(body=stanza["body"] or None, xhtml=checked.xhtml, state=checked.state),
            error_condition=condition or None,
            receipt_request=stanza.xml.find(f"{{{RECEIPTS_NS}}}request") is not None,
            receipt_of=(received.get("id") or None) if received is not None else None,
        )
        loop = asyncio.get_running_loop()
        task: asyncio.Task[None] = loop.create_task(self._deliver(stanza, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, stanza: StanzaBase, message: XmppMessage) -> None:
        """The gateway's handling of one message; whatever it raises is answered to the
        sender as an error stanza (errors.refusal_for) and logged once, and the component
        goes on with the next stanza."""
        try:
            await self.on_message(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is answered, none kills us
            self._refused(stanza, refusal_for(exc), failure=exc)

    def _refused(
        self, stanza: StanzaBase, refused: StanzaRefused, *, failure: Exception | None = None
    ) -> None:
        """One log line and, unless the stanza was an error itself, the error reply."""
        what = stanza.xml.tag.split("}", 1)[-1]
        sender = (stanza.xml.get("from") or "?")[:200]
        if failure is not None:
            log.warning(
                "XMPP %s from %s failed (%s: %s): answered %s",
                what,
                sender,
                type(failure).__name__,
                str(failure)[:200],
                refused.condition,
            )
        else:
            log.info("XMPP %s from %s refused: %s", what, sender, refused)
        reply = error_stanza(stanza.xml, refused, component=self.jid, ours=self.domains)
        if reply is not None and self.connected:
            self.send_error_reply(reply)

    def _jingle(self, stanza: StanzaBase) -> None:
        """A Jingle iq: parsed addresses to the gateway as a task; a result or error goes
        back through :meth:`reply_iq` (slixmpp's own would answer every one
        feature-not-implemented)."""
        if stanza["type"] != "set" or self.on_jingle is None:
            return
        try:
            sender = parse_jid(stanza.xml.get("from") or "")
            recipient = parse_jid(stanza.xml.get("to") or "")
        except AddressRefused as exc:
            log.info("Jingle iq with a bad address refused: %s", exc.reason)
            return
        payload = stanza.xml.find(f"{{{JINGLE_NS}}}jingle")
        assert payload is not None  # the handler's match
        iq = XmppIq(sender, recipient, stanza["id"] or "", payload)
        task = asyncio.get_running_loop().create_task(self.on_jingle(iq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reply_iq(self, iq: XmppIq, error: ET.Element | None = None) -> None:
        """The empty result of ``iq``, or its error (``error``: the ``<error/>`` child, in
        the component's namespace: jinglebuild.error_element with ``stanza_ns``)."""
        if not self.connected or self._xmpp is None:
            return
        reply = self._xmpp.make_iq(
            id=iq.id,
            ito=str(iq.sender),
            ifrom=str(iq.recipient),
            itype="error" if error is not None else "result",
        )
        if error is not None:
            reply.xml.append(error)
        reply.send()

    @property
    def stanza_ns(self) -> str:
        """The stream's namespace, for error elements built outside slixmpp."""
        return str(self._require().default_ns)

    async def send_iq(
        self, to: Jid | str, from_: Jid | str, payload: ET.Element, *, timeout: float = 15.0
    ) -> str | None:
        """An iq set with ``payload``: None once it is answered with a result, the error's
        condition (or "timeout", "remote-server-not-found" when not connected) otherwise."""
        from slixmpp.exceptions import IqError, IqTimeout

        if not self.connected or self._xmpp is None:
            return "remote-server-not-found"
        iq = self._xmpp.make_iq_set(ito=str(to), ifrom=str(from_))
        iq.append(payload)
        try:
            await iq.send(timeout=timeout)
        except IqError as exc:
            return error_condition(exc.iq.xml) or "undefined-condition"
        except IqTimeout:
            return "timeout"
        return None

    def send_payload(self, to: Jid | str, from_: Jid | str, children: list[ET.Element]) -> None:
        """A ``type='chat'`` message of ``children`` and nothing else (XEP-0353 payloads)."""
        xmpp = self._require()
        stanza = xmpp.make_message(mto=str(to), mfrom=str(from_), mtype="chat")
        for child in children:
            stanza.xml.append(child)
        stanza.send()

    def _disco_info(self, jid: Any, node: str | None, ifrom: Any, data: Any) -> Any:
        """XEP-0030 disco#info for the component and every address under it (DISCO_*)."""
        from slixmpp.plugins.xep_0030.stanza import DiscoInfo

        info = DiscoInfo()
        if node:
            return info  # no nodes of ours: the plain answer, as slixmpp's default gives
        if jid is None or str(jid.domain).lower() in self.domains:
            category, kind, name = DISCO_IDENTITY
            info.add_identity(category, kind, name)
            for feature in DISCO_FEATURES:
                info.add_feature(feature)
            if self.on_jingle is not None:
                for feature in JINGLE_FEATURES:
                    info.add_feature(feature)
        return info

    def _presence(self, stanza: StanzaBase) -> None:
        if self.on_presence is None:
            return
        try:
            sender = parse_jid(stanza.xml.get("from") or "")
            recipient = parse_jid(stanza.xml.get("to") or "")
        except AddressRefused as exc:
            self._refused(stanza, StanzaRefused("jid-malformed", exc.reason))
            return
        kind = stanza.xml.get("type") or "available"
        if kind != "available" and kind not in PRESENCE_TYPES:
            self._refused(stanza, StanzaRefused("bad-request", f"presence type {kind[:20]!r}"))
            return
        show = stanza["show"] or None
        condition = error_condition(stanza.xml) if kind == "error" else None
        presence = XmppPresence(
            sender=sender,
            recipient=recipient,
            type=kind,
            show=show if show in ("away", "chat", "dnd", "xa") else None,
            status=stanza["status"] or None,
            error_condition=condition or None,
        )
        try:
            self.on_presence(presence)
        except Exception as exc:  # noqa: BLE001 - answered and logged once, as for messages
            self._refused(stanza, refusal_for(exc), failure=exc)

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
        _set_error(stanza, error_type(condition), condition, text)
        stanza.send()

    def send_error_reply(self, reply: ErrorReply) -> None:
        """An error stanza of errors.error_stanza: a refused message or presence answered."""
        xmpp = self._require()
        stanza: Any
        if reply.kind == "presence":
            stanza = xmpp.make_presence(pto=str(reply.to), pfrom=reply.from_, ptype="error")
        else:
            stanza = xmpp.make_message(mto=str(reply.to), mfrom=reply.from_, mtype="error")
        if reply.id:
            stanza["id"] = reply.id
        _set_error(stanza, reply.type, reply.condition, reply.text)
        stanza.send()

    def _require(self) -> ComponentXMPP:
        if self._xmpp is None or not self.connected:
            raise ConnectionError("XMPP server not connected")
        return self._xmpp


def _is_jmi(xml: ET.Element) -> bool:
    return any(isinstance(c.tag, str) and c.tag.startswith(f"{{{JMI_NS}}}") for c in xml)


def _set_error(stanza: Any, type: str, condition: str, text: str) -> None:
    """The ``<error/>`` child, its condition element written by hand: slixmpp 1.17 knows
    RFC 3920's conditions only and silently keeps its default for RFC 6120's
    ``policy-violation``."""
    error = stanza["error"]
    error["type"] = type
    for child in list(error.xml):
        error.xml.remove(child)
    ET.SubElement(error.xml, f"{{{STANZAS_NS}}}{condition}")
    ET.SubElement(error.xml, f"{{{STANZAS_NS}}}text").text = text


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
