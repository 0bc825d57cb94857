"""MUC ↔ room chat, the pieces an XMPP occupant is made of (control/xmpp/mucgw.py runs them):
the MUC domain's own XEP-0114 connection, the chat session an occupant is in its room
(:class:`XmppChannel`, RoomChat's delivery interface: what the room sends it becomes
stanzas, what it sends comes to the room as MSRP-like events), and one session's state.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from xml.etree import ElementTree as ET

from slixmpp import JID
from slixmpp.exceptions import XMPPError
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from control.conference.chat import ChatMember, ChatSessionId, identity_key
from control.conference.moderation import Moderation
from control.conference.refer import Referrals
from control.conference.room import Room
from control.media.engine import RoomId
from control.msrp.events import ConnectionFailed, Event, NicknameRequested
from control.msrp.message import ByteRange, FailureReport
from control.xmpp.addressing import Jid
from control.xmpp.component import Component
from control.xmpp.muc import MUC_ADMIN_NS, MUC_NS
from control.xmpp.mucstanzas import Occupant

__all__ = [
    "ChannelOwner",
    "MucComponent",
    "MucSettings",
    "Occupancy",
    "Rooms",
    "Seat",
    "XmppChannel",
    "key_of",
    "stanza_like",
]


class Rooms(Protocol):
    """The live conference rooms, their REFER dial-outs and moderation (ConferenceApp)."""

    rooms: dict[RoomId, Room]
    referrals: Referrals
    moderation: Moderation


@dataclass(frozen=True, slots=True)
class MucSettings:
    muc_domain: str
    secret: str
    server: tuple[str, int]
    conference_domain: str  # the SIP host of the rooms: room@muc_domain ↔ room@this
    reconnect_max: float = 30.0
    max_message_bytes: int = 65536
    max_stanza_bytes: int = 262144  # [xmpp] max_stanza_bytes: larger is policy-violation
    invite_timeout: float = 60.0  # [conference] refer_timeout: an invitee's time to join


# XEP-0045 §15.5.4 features of every room (disco#info).
ROOM_FEATURES = (
    "muc_temporary",
    "muc_open",
    "muc_semianonymous",
    "muc_unmoderated",
    "muc_unsecured",
    "muc_public",
)


class MucComponent(Component):
    """The MUC domain's XEP-0114 connection: the reconnecting Component, whose stanzas go
    whole (ElementTree) to the MUC gateway, in order, instead of being mapped as chat."""

    def __init__(
        self,
        settings: MucSettings,
        on_stanza: Callable[[ET.Element], None],
        on_lost: Callable[[], None],
        directory: Callable[[], dict[str, str]],
    ) -> None:
        super().__init__(
            settings.muc_domain,
            settings.secret,
            settings.server,
            _no_chat,
            reconnect_max=settings.reconnect_max,
        )
        self.on_stanza = on_stanza
        self.on_lost = on_lost  # the server connection went away (it reconnects on its own)
        self.directory = directory  # the live rooms: local part -> name (disco, §6.3)

    def start(self) -> None:
        super().start()
        xmpp = self._xmpp
        assert xmpp is not None
        xmpp.add_event_handler("disconnected", lambda _: self.on_lost())
        xmpp.plugin["xep_0030"].api.register(self._disco_items, "get_items")
        path = f"{{{xmpp.default_ns}}}iq/{{{MUC_ADMIN_NS}}}query"  # §8.2 kicks
        xmpp.register_handler(
            Callback("chorus muc admin", MatchXPath(path), lambda iq: self.on_stanza(iq.xml))
        )

    def _message(self, stanza: StanzaBase) -> None:
        self.on_stanza(stanza.xml)

    def _presence(self, stanza: StanzaBase) -> None:
        self.on_stanza(stanza.xml)

    def _disco_info(self, jid: Any, node: str | None, ifrom: Any, data: Any) -> Any:
        """XEP-0045 §6.2 the service, §6.4 a room: text conferencing; a room is temporary
        (it ends with its last SIP participant), open, semi-anonymous, unmoderated and
        public; a room that is not live is item-not-found."""
        from slixmpp.plugins.xep_0030.stanza import DiscoInfo

        info = DiscoInfo()
        if node:
            return info
        local = str(jid.local).lower() if jid is not None else ""
        if not local:
            info.add_identity("conference", "text", "Chorus rooms")
            info.add_feature(MUC_NS)
            return info
        if local not in self.directory():
            raise XMPPError("item-not-found", "no conference of that name is live")
        info.add_identity("conference", "text", local)
        for feature in (MUC_NS, *ROOM_FEATURES):
            info.add_feature(feature)
        return info

    def _disco_items(self, jid: Any, node: str | None, ifrom: Any, data: Any) -> Any:
        """XEP-0045 §6.3: the live rooms, as items of the service; a room has none."""
        from slixmpp.plugins.xep_0030.stanza import DiscoItems

        items = DiscoItems()
        service = jid is None or not str(jid.local)
        if service and not node:
            for local, name in sorted(self.directory().items()):
                items.add_item(JID(f"{local}@{self.jid}"), name=name)
        return items

    def send_xml(self, element: ET.Element) -> None:
        self._require().send_xml(element)


async def _no_chat(_message: object) -> None:
    return None


class ChannelOwner(Protocol):
    """What an XmppChannel reports to (the MUC gateway)."""

    def deliver(self, occupancy: Occupancy, content_type: str, body: bytes) -> None: ...

    def nick_answered(
        self, occupancy: Occupancy, stanza_id: str, nick: str, status: int, comment: str | None
    ) -> None: ...

    def report_failure(self, occupancy: Occupancy, message_id: str, status: int) -> None: ...

    def channel_closed(self, occupancy: Occupancy) -> None: ...


class XmppChannel:
    """One XMPP occupant's chat session as RoomChat sees it (SessionChannel and
    ReportingChannel): what the room sends becomes stanzas, what the occupant sends comes
    back to the room as MSRP-like events."""

    def __init__(self, gateway: ChannelOwner, occupancy: Occupancy) -> None:
        self.gateway = gateway
        self.occupancy = occupancy
        self.closed = False
        self.ready = asyncio.Event()  # set once the join's presences are out: history after
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._nick_requests: dict[str, tuple[str, str]] = {}  # NICKNAME tid -> (stanza id, nick)
        self._sent = 0

    # RoomChat's side -------------------------------------------------------------------

    def send_message(
        self,
        content_type: str,
        body: bytes,
        *,
        success_report: bool = False,
        failure_report: FailureReport = FailureReport.YES,
    ) -> str:
        if self.closed:
            raise ConnectionError("occupant left")
        self._sent += 1
        self.gateway.deliver(self.occupancy, content_type, body)  # ConnectionError: XMPP down
        return f"x{self._sent}"

    async def drain(self) -> None:
        return None

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def next_event(self) -> Event:
        return await self._events.get()

    def respond(self, transaction_id: str, status: int, comment: str | None = None) -> None:
        asked = self._nick_requests.pop(transaction_id, None)
        if asked is not None:
            self.gateway.nick_answered(self.occupancy, *asked, status, comment)

    def send_report(self, message_id: str, byte_range: ByteRange, status: int) -> None:
        self.gateway.report_failure(self.occupancy, message_id, status)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ready.set()
        self._events.put_nowait(ConnectionFailed("occupant left"))
        self.gateway.channel_closed(self.occupancy)

    # The gateway's side ----------------------------------------------------------------

    def feed(self, event: Event) -> None:
        self._events.put_nowait(event)

    def request_nick(self, transaction_id: str, nick: str, stanza_id: str) -> None:
        self._nick_requests[transaction_id] = (stanza_id, nick)
        self.feed(NicknameRequested(str(self.occupancy.session), transaction_id, nick))


@dataclass(eq=False)
class Occupancy:
    """One XMPP session (full JID) in one room."""

    jid: Jid
    room: Room
    member: ChatMember
    channel: XmppChannel = field(init=False)
    told: dict[str, Occupant] = field(default_factory=dict)  # what it was told of the others
    history_left: int = 0  # replayed messages still to come before the subject
    show: str | None = None
    status: str | None = None
    leaving: bool = False
    quiet: bool = False  # a rejoin replaces it: the room hears of no leave
    # our MSRP-side message id of a private message -> its stanza id (a failure to report)
    private: OrderedDict[str, str] = field(default_factory=OrderedDict)

    @property
    def session(self) -> ChatSessionId:
        return self.member.session

    @property
    def occupant_id(self) -> str:
        return f"xmpp:{self.member.key}"

    @property
    def nick(self) -> str:
        return self.member.nickname or self.member.shown_name


@dataclass(frozen=True, slots=True)
class Seat:
    occupant: Occupant
    key: str  # the identity key of its SIP URI (CPIM From/To compare by it)
    uri: str


def stanza_like(sender: Jid, to: str, stanza_id: str, *, name: str = "presence") -> ET.Element:
    """The stanza an error answers, when it is answered later than it came."""
    element = ET.Element(f"{{jabber:component:accept}}{name}", {"from": str(sender), "to": to})
    if stanza_id:
        element.set("id", stanza_id)
    return element


def key_of(uri: str) -> str | None:
    try:
        return identity_key(uri)
    except ValueError:
        return None
