"""MUC ↔ conference room chat (RFC 7702, XEP-0045): the asyncio glue around control/xmpp/muc.py.

Chorus serves ``[xmpp] muc_domain`` itself, as a second XEP-0114 component of Prosody (the
domain is not Prosody's own MUC: deploy/prosody declares it a component with its secret).
``room@<muc_domain>`` is the live conference room ``room@<conference_domain>``; a MUC join
to a room nobody is in is ``item-not-found`` (rooms are made by the INVITE that opens them,
as conference-info subscriptions find them: anyone could make rooms at will otherwise).

An XMPP occupant is one more chat session of the room: an :class:`XmppChannel` behind
RoomChat's delivery interface (the one MSRP chat sessions have), so the room model stays the
one source of truth. The room routes what it is sent exactly as for MSRP (public to every
other chat session, private to the named participant's sessions, nicknames unique per room
through its NicknameBook, rate limits, history store), and what the room sends a channel
becomes stanzas: a public CPIM message a groupchat message from ``room/<sender's nick>``,
a private one a ``type=chat`` message from it, replayed history with its XEP-0203 delay, a
room notice a groupchat message from the room (joins, leaves and nick changes are
presences instead). The occupant list each XMPP occupant sees is computed from the room:
every SIP participant (nick = its chat nickname, else display name, else user part) and
every XMPP occupant, pushed as presence differences whenever the room changes
(``Room.listeners``). A groupchat message is reflected once to its sender (XEP-0045 §7.4
requires it) and never comes back through the room (the room excludes its session); an
MSRP sender gets no copy. Everything refused is answered with the XEP's error stanza.

control/xmpp/mucoccupant.py holds the MUC component, the channel and an occupant's state;
control/xmpp/mucinvite.py the mediated invitations ↔ REFER method=INVITE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from control.conference.chat import ChatMember, ChatSessionId, identity_key
from control.conference.notices import NoticeKind, notice_text
from control.conference.participant import MODERATOR
from control.conference.room import Room
from control.media.engine import ParticipantId, RoomId
from control.msrp.iscomposing import ISCOMPOSING_CONTENT_TYPE
from control.xmpp.addressing import Addressing, AddressRefused, Jid
from control.xmpp.muc import (
    Bounced,
    Declined,
    GroupMessage,
    HistoryRequest,
    Invitation,
    KickRequest,
    MucError,
    MucLeave,
    MucPresence,
    PrivateMessage,
    parse_iq,
    parse_message,
    parse_presence,
)
from control.xmpp.mucinvite import MucInvitations
from control.xmpp.mucmessages import MucMessages
from control.xmpp.mucoccupant import (
    MucComponent,
    MucSettings,
    Occupancy,
    Rooms,
    Seat,
    XmppChannel,
    stanza_like,
)
from control.xmpp.mucstanzas import (
    KICKED,
    Occupant,
    error_reply,
    fold,
    iq_result,
    occupant_presence,
    room_gone,
    subject_message,
    unique_nicks,
    view_changes,
)

__all__ = ["MucComponent", "MucGateway", "MucSettings", "Rooms", "XmppChannel"]

log = logging.getLogger("chorus.xmpp.muc")

# What an XMPP occupant takes inside CPIM (files and screen frames are not carried).
XMPP_TYPES = ("text/plain", "text/html", ISCOMPOSING_CONTENT_TYPE)
# Notices an occupant learns from presence instead of a message.
PRESENCE_NOTICES = frozenset({"joined", "left", "nickname", "media-added", "media-removed"})
PENDING_REPORTS = 256  # private messages per occupant remembered for a failure to report


class MucGateway:
    """The MUC service: joins, leaves, messages and presences of XMPP occupants of rooms."""

    def __init__(
        self,
        rooms: Rooms,
        addressing: Addressing,
        settings: MucSettings,
        *,
        token: Callable[[], str],
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rooms = rooms
        self.addressing = addressing
        self.settings = settings
        self.token = token
        self.wall = wall
        self.component = MucComponent(
            settings, self.stanza, self.connection_lost, directory=self.directory
        )
        self.occupancies: dict[tuple[str, RoomId], Occupancy] = {}
        self._by_room: dict[RoomId, dict[str, Occupancy]] = {}  # the same, by room, by JID
        self.invitations = MucInvitations(self)  # XEP-0045 §7.8.2 <-> REFER method=INVITE
        self.messages = MucMessages(self)  # groupchat, private, subject; the room's deliveries
        self._listeners: dict[RoomId, Callable[[], None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # kicks under way (BYEs)
        self._seats: dict[RoomId, list[Seat]] = {}  # a watched room's occupants, until it changes

    def start(self) -> None:
        self.component.start()

    async def stop(self) -> None:
        self.connection_lost()
        await self.component.stop()

    def connection_lost(self) -> None:
        """No XMPP server: nothing reaches the occupants, and a restarted server has lost
        their sessions; they leave the rooms (the SIP side hears it) and join again once
        they and the component are back (a join from a known address starts afresh too)."""
        if self.occupancies:
            log.info("MUC connection lost: %d occupants leave", len(self.occupancies))
        for occupancy in list(self.occupancies.values()):
            occupancy.leaving = True  # no presence to send: the server is not there
            self._drop(occupancy)

    # --- stanzas in ------------------------------------------------------------------------

    def stanza(self, element: ET.Element) -> None:
        """Every stanza to the MUC domain, in order: handled, or answered with its error."""
        name = element.tag.rsplit("}", 1)[-1]
        domain = self.settings.muc_domain
        try:
            if len(ET.tostring(element)) > self.settings.max_stanza_bytes:
                raise MucError("policy-violation", "stanza over the service's size limit")
            if name == "presence":
                presence = parse_presence(element, muc_domain=domain)
                if isinstance(presence, MucLeave):
                    self._leave(presence)
                elif isinstance(presence, Bounced):
                    self._bounced(presence)
                elif presence is not None:
                    self._presence(presence)
            elif name == "iq":
                kick = parse_iq(element, muc_domain=domain)
                if kick is not None:
                    self._kick(kick)
                    self.send(iq_result(element))
            elif name == "message":
                message = parse_message(
                    element, muc_domain=domain, max_body=self.settings.max_message_bytes
                )
                if isinstance(message, GroupMessage):
                    self.messages.groupchat_in(message)
                elif isinstance(message, PrivateMessage):
                    self.messages.private_in(message)
                elif isinstance(message, Invitation):
                    self.invitations.invitation(message)
                elif isinstance(message, Declined):
                    self.invitations.declined(message)
                elif isinstance(message, Bounced):
                    self._bounced(message)
        except MucError as exc:
            log.info("MUC %s from %s refused: %s %s", name, element.get("from"), exc.condition, exc)
            self._reply_error(element, exc)
        except Exception as exc:  # our bug: answered, logged once, the service goes on
            log.exception("MUC %s from %s failed", name, element.get("from"))
            self._reply_error(element, MucError("internal-server-error", type(exc).__name__))

    def _reply_error(self, element: ET.Element, error: MucError) -> None:
        reply = error_reply(element, error, muc_domain=self.settings.muc_domain)
        if reply is not None:
            self.send(reply)

    def send(self, element: ET.Element) -> None:
        try:
            self.component.send_xml(element)
        except ConnectionError:
            log.info("MUC stanza to %s not sent: XMPP server not connected", element.get("to"))

    # --- rooms and occupants ---------------------------------------------------------------

    def directory(self) -> dict[str, str]:
        """The live rooms under the conference domain, by MUC local part (disco#items)."""
        suffix = f"@{self.settings.conference_domain}"
        return {
            room_id[: -len(suffix)]: room_id[: -len(suffix)]
            for room_id, room in self.rooms.rooms.items()
            if room_id.endswith(suffix) and room.chat is not None
        }

    def room_jid(self, room: Room) -> Jid:
        return Jid(room.id.rpartition("@")[0] or room.id, self.settings.muc_domain)

    def room_named(self, local: str) -> Room:
        room = self.rooms.rooms.get(RoomId(f"{local}@{self.settings.conference_domain}"))
        if room is None or room.chat is None:
            raise MucError("item-not-found", "no conference of that name is live")
        return room

    def in_room(self, room: Room) -> Iterator[Occupancy]:
        return iter(list(self._by_room.get(room.id, {}).values()))

    def seats(self, room: Room) -> list[Seat]:
        """The room's occupants (see :meth:`_seats`), computed once per change of a room
        the gateway watches (every delivery names its sender's nick from them)."""
        cached = self._seats.get(room.id)
        if cached is not None:
            return cached
        seats = self._compute_seats(room)
        if room.id in self._listeners:  # a watched room's changes clear it (refresh)
            self._seats[room.id] = seats
        return seats

    def _compute_seats(self, room: Room) -> list[Seat]:
        """The room's occupants as the model has them: XMPP occupants first (their nicks are
        held in the room's NicknameBook), then every SIP participant; nicks made distinct."""
        wanted: list[tuple[Occupant, str, str]] = []
        seen: set[str] = set()
        for occupancy in self.in_room(room):
            if occupancy.member.key in seen:
                continue  # another resource of the same user: one occupant (§7.2.10)
            seen.add(occupancy.member.key)
            moderator = self._moderates(room, occupancy)
            occupant = Occupant(
                occupancy.occupant_id,
                occupancy.nick,
                affiliation="admin" if moderator else "none",
                role="moderator" if moderator else "participant",
                show=occupancy.show,
                status=occupancy.status,
            )
            wanted.append((occupant, occupancy.member.key, occupancy.member.uri))
        members = room.chat.core.members.values() if room.chat is not None else ()
        for participant in room.participants.values():
            if participant.transfer_only or participant.awaiting_pin:
                continue
            member = next((m for m in members if m.participant == participant.id), None)
            moderator = room.is_moderator(participant)
            occupant = Occupant(
                str(participant.id),
                member.shown_name if member is not None else participant.name,
                affiliation="admin" if moderator else "none",
                role="moderator" if moderator else "participant",
            )
            wanted.append((occupant, identity_key(participant.uri), participant.uri))
        nicks = unique_nicks([(o.id, o.nick) for o, _, _ in wanted])
        return [
            Seat(Occupant(o.id, nicks[o.id], o.affiliation, o.role, o.show, o.status), key, uri)
            for o, key, uri in wanted
        ]

    def _moderates(self, room: Room, occupancy: Occupancy) -> bool:
        """An XMPP occupant moderates when [conference] moderators names its identity."""
        return self.rooms.moderation.role_for(room, occupancy.member.uri) == MODERATOR

    def _kick(self, request: KickRequest) -> None:
        """§8.2 ↔ REFER method=BYE's rules: a moderator may remove a participant who is not
        one (a SIP participant's sessions get BYE, an XMPP occupant is detached), the kicked
        occupant's presence says 307."""
        occupancy = self.occupancy_of(request.sender, request.room)
        room = occupancy.room
        if not self._moderates(room, occupancy):
            raise MucError("forbidden", "only a moderator may kick")
        seat = next(
            (s for s in self.seats(room) if fold(s.occupant.nick) == fold(request.nick)), None
        )
        if seat is None:
            raise MucError("item-not-found", "no occupant has that nickname")
        if seat.occupant.role == "moderator":
            raise MucError("not-allowed", "a moderator cannot be kicked")
        by = occupancy.nick
        participant = room.participants.get(ParticipantId(seat.occupant.id))
        if participant is None:
            self.rooms.moderation.kick_chat_only(room, seat.uri, by=by)
            return
        task = asyncio.get_running_loop().create_task(
            self.rooms.moderation.kick(room, participant, by=by)
        )
        self._tasks.add(task)
        task.add_done_callback(self._kicked)

    def _kicked(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a MUC kick failed", exc_info=task.exception())

    def _watch(self, room: Room) -> None:
        if room.id not in self._listeners:
            listener = self._listeners[room.id] = lambda: self.refresh(room)
            room.listeners.append(listener)

    def _unwatch(self, room: Room) -> None:
        if any(True for _ in self.in_room(room)):
            return
        self._seats.pop(room.id, None)
        listener = self._listeners.pop(room.id, None)
        if listener is not None and listener in room.listeners:
            room.listeners.remove(listener)

    def refresh(self, room: Room) -> None:
        """The room changed: each XMPP occupant is sent the presences that bring what it was
        told up to the room's occupants now (joins, leaves, nick changes, roles)."""
        self._seats.pop(room.id, None)
        seats = {seat.occupant.id: seat.occupant for seat in self.seats(room)}
        room_jid = self.room_jid(room)
        for occupancy in list(self.in_room(room)):
            if occupancy.leaving or not occupancy.channel.ready.is_set():
                continue
            self._tell(occupancy, room_jid, seats)

    def _tell(self, occupancy: Occupancy, room_jid: Jid, seats: dict[str, Occupant]) -> None:
        own = occupancy.occupant_id
        changes = view_changes(occupancy.told, seats)
        # The occupant's own presence comes last (XEP-0045 §7.2.3).
        changes.sort(key=lambda change: change.occupant.id == own and not change.gone)
        for change in changes:
            self.send(
                occupant_presence(
                    occupancy.jid,
                    room_jid,
                    change.occupant,
                    self_=change.occupant.id == own,
                    gone=change.gone,
                    new_nick=change.new_nick,
                )
            )
        occupancy.told = dict(seats)

    # --- joining, presence, leaving --------------------------------------------------------

    def _presence(self, presence: MucPresence) -> None:
        room = self.room_named(presence.room)
        occupancy = self.occupancies.get((str(presence.sender), room.id))
        if occupancy is not None and presence.joining:
            # §7.2: a join from an occupant's own address (its client reconnected, or the
            # XMPP server restarted): the old session goes quietly, the join starts afresh.
            occupancy.leaving = occupancy.quiet = True
            self._drop(occupancy)
            self._join(room, presence, announce=False)
            return
        if occupancy is None:
            self._join(room, presence)
            return
        if fold(presence.nick) != fold(occupancy.nick):
            self._check_nick(room, presence.nick, occupancy.member.key)
            occupancy.channel.request_nick(self.token(), presence.nick, presence.id)
            return
        occupancy.show, occupancy.status = presence.show, presence.status
        self.refresh(room)

    def _check_nick(self, room: Room, nick: str, key: str) -> None:
        """§7.2.9: a nick another occupant has is a conflict (its holder in the room's
        NicknameBook, or the shown name of a participant who set none)."""
        assert room.chat is not None
        holder = room.chat.core.nicknames.holder(nick)
        if holder is not None and holder != key:
            raise MucError("conflict", "that nickname is in use in this room")
        for seat in self.seats(room):
            if fold(seat.occupant.nick) == fold(nick) and seat.key != key:
                raise MucError("conflict", "that nickname is in use in this room")

    def _join(self, room: Room, presence: MucPresence, *, announce: bool = True) -> None:
        chat = room.chat
        assert chat is not None
        if room.locked:
            raise MucError("forbidden", "the room is locked")
        if room.pin is not None:
            raise MucError("not-authorized", "the room needs a PIN, which XMPP cannot key")
        if room.full:  # SIP participants and XMPP occupants, as a SIP INVITE counts them
            raise MucError("service-unavailable", "the room is full")  # §7.2.10
        bare = Jid(presence.sender.local, presence.sender.domain)
        try:
            uri = str(self.addressing.jid_to_sip(bare, side="xmpp", sender=True))
        except AddressRefused as exc:
            raise MucError(exc.condition, exc.reason) from None
        key = identity_key(uri)
        self._check_nick(room, presence.nick, key)
        session = ChatSessionId(f"xmpp-{self.token()}")
        member = ChatMember(
            session,
            ParticipantId(f"xmpp:{key}"),
            uri,
            presence.nick,
            XMPP_TYPES,
            presence.nick,
            joined_at=self.wall().timestamp(),
        )
        first = not any(o.member.key == key for o in self.in_room(room))
        chat.core.nicknames.claim(key, presence.nick, None)
        occupancy = Occupancy(presence.sender, room, member, show=presence.show)
        occupancy.status = presence.status
        occupancy.channel = XmppChannel(self, occupancy)
        self.occupancies[(str(presence.sender), room.id)] = occupancy
        self._by_room.setdefault(room.id, {})[str(presence.sender)] = occupancy
        self._seats.pop(room.id, None)
        self._watch(room)
        limit, max_age = self._history(presence.history)
        occupancy.history_left = chat.attach(
            member, occupancy.channel, history_limit=limit, history_max_age=max_age
        )
        log.info("%s joined %s as %r over MUC", presence.sender, room.id, presence.nick)
        room_jid = self.room_jid(room)
        # §7.2.3: everyone's presence, then the joiner's own (110); then history, subject.
        seats = {seat.occupant.id: seat.occupant for seat in self.seats(room)}
        self._tell(occupancy, room_jid, seats)
        occupancy.channel.ready.set()
        if occupancy.history_left == 0:
            self._send_subject(occupancy)
        room.changed()  # the other occupants see the joiner, conference-info watchers too
        self.invitations.answer(room, bare.bare, (200, "OK"))
        if first and announce:
            text = notice_text(NoticeKind.JOINED, presence.nick)
            chat.notice(NoticeKind.JOINED, text, exclude_participant=member.participant)

    def _history(self, request: HistoryRequest) -> tuple[int | None, float | None]:
        max_age = request.seconds
        if request.since is not None:
            since = max((self.wall() - request.since).total_seconds(), 0.0)
            max_age = since if max_age is None else min(max_age, since)
        return request.maxstanzas, max_age

    def _send_subject(self, occupancy: Occupancy) -> None:
        room = occupancy.room
        self.send(
            subject_message(
                occupancy.jid, self.room_jid(room), None, room.subject or "", id=self.token()
            )
        )

    def _leave(self, leave: MucLeave) -> None:
        room_id = RoomId(f"{leave.room}@{self.settings.conference_domain}")
        occupancy = self.occupancies.get((str(leave.sender), room_id))
        if occupancy is None:
            return  # not in that room: nothing to undo (XEP-0045 has no error for it)
        occupancy.leaving = True
        self.send(
            occupant_presence(
                occupancy.jid,
                self.room_jid(occupancy.room),
                self._own(occupancy),
                self_=True,
                gone=True,
            )
        )
        self._drop(occupancy)

    def _drop(self, occupancy: Occupancy) -> None:
        if occupancy.room.chat is not None:
            occupancy.room.chat.detach(occupancy.session)  # -> channel_closed
        if not occupancy.channel.closed:
            occupancy.channel.close()

    def _bounced(self, bounce: Bounced) -> None:
        """An error from an occupant's address: a gone client (a "ghost") leaves the room;
        any other bounce is logged and the occupant stays."""
        room_id = RoomId(f"{bounce.room}@{self.settings.conference_domain}")
        occupancy = self.occupancies.get((str(bounce.sender), room_id))
        if occupancy is None:
            return
        log.info("MUC bounce %s from occupant %s of %s", bounce.condition, bounce.sender, room_id)
        if bounce.gone:
            occupancy.leaving = True  # nothing can reach it: no presence of its own
            self._drop(occupancy)

    def _own(self, occupancy: Occupancy) -> Occupant:
        return occupancy.told.get(occupancy.occupant_id) or Occupant(
            occupancy.occupant_id, occupancy.nick
        )

    def channel_closed(self, occupancy: Occupancy) -> None:
        """The occupant's chat session ended: it left, or the room ended (the conference's
        last participant left), or it could not keep up or the XMPP server went away."""
        room = occupancy.room
        key = (str(occupancy.jid), room.id)
        if self.occupancies.get(key) is not occupancy:
            return
        del self.occupancies[key]
        in_room = self._by_room.get(room.id, {})
        in_room.pop(str(occupancy.jid), None)
        if not in_room:
            self._by_room.pop(room.id, None)
        self._seats.pop(room.id, None)
        live = self.rooms.rooms.get(room.id) is room and room.chat is not None
        if not occupancy.leaving:
            reason = "removed from the room" if live else "the conference ended"
            log.info("%s out of %s over MUC: %s", occupancy.jid, room.id, reason)
            room_jid, own = self.room_jid(room), self._own(occupancy)
            if live:  # a moderator's REFER method=BYE, or it could not keep up: kicked (307)
                gone = occupant_presence(
                    occupancy.jid,
                    room_jid,
                    own,
                    self_=True,
                    gone=True,
                    codes=(KICKED,),
                    reason=reason,
                )
            else:
                gone = room_gone(occupancy.jid, room_jid, own, reason)
            self.send(gone)
        self._unwatch(room)
        if not live:
            return
        if occupancy.quiet:
            return
        if not any(o.member.key == occupancy.member.key for o in self.in_room(room)):
            assert room.chat is not None
            text = notice_text(NoticeKind.LEFT, occupancy.nick)
            room.chat.notice(
                NoticeKind.LEFT, text, exclude_participant=occupancy.member.participant
            )
        room.changed()  # the other occupants, and conference-info watchers, see it leave

    def nick_answered(
        self, occupancy: Occupancy, stanza_id: str, nick: str, status: int, comment: str | None
    ) -> None:
        """The room's answer to a nick change (RFC 7701 §6.1): 200 is told by presence
        (303) through the room's change; 425 is a conflict (§7.6), 424 not-acceptable."""
        if status == 200:
            return
        condition = "conflict" if status == 425 else "not-acceptable"
        room_jid = self.room_jid(occupancy.room)
        asked = stanza_like(
            occupancy.jid, str(Jid(room_jid.local, room_jid.domain, nick)), stanza_id
        )
        error = MucError(condition, comment or "nickname refused")
        reply = error_reply(asked, error, muc_domain=self.settings.muc_domain)
        if reply is not None:
            self.send(reply)

    # --- messages in -----------------------------------------------------------------------

    def occupancy_of(self, sender: Jid, local: str) -> Occupancy:
        room = self.room_named(local)
        occupancy = self.occupancies.get((str(sender), room.id))
        if occupancy is None:  # §7.4 / §7.5: only occupants speak in a room
            raise MucError("not-acceptable", "you are not in this room")
        return occupancy

    # --- the channels' owner (ChannelOwner): deliveries to an occupant ----------------------

    def deliver(self, occupancy: Occupancy, content_type: str, body: bytes) -> None:
        self.messages.deliver(occupancy, content_type, body)

    def report_failure(self, occupancy: Occupancy, message_id: str, status: int) -> None:
        self.messages.report_failure(occupancy, message_id, status)
