"""MUC ↔ room chat, the messages (control/xmpp/mucgw.py's part for them): an occupant's
groupchat, private messages and subject into the room as its chat session (checked by the
room first: its refusal is the sender's error stanza), and the room's CPIM deliveries to an
occupant out as stanzas (groupchat from room/<sender nick>, private chat, XEP-0203-delayed
history, chat states, XHTML-IM, room notices from the room itself).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from control.conference.chat import TOO_MANY as CHAT_TOO_MANY
from control.conference.notices import CHORUS_NS, NoticeKind, notice_text
from control.conference.room import Room
from control.msrp.cpim import CPIM_CONTENT_TYPE, CpimAddress, CpimMessage, parse_cpim
from control.msrp.errors import CpimError, MsrpError
from control.msrp.events import MessageReceived
from control.xmpp.messages import Chat, MessageRefused, chat_from_sip, sip_from_chat
from control.xmpp.muc import GroupMessage, MucError, PrivateMessage
from control.xmpp.mucoccupant import (
    Occupancy,
    key_of,
    stanza_like,
)
from control.xmpp.mucstanzas import error_reply, fold, groupchat, private_chat, subject_message

if TYPE_CHECKING:
    from control.xmpp.mucgw import MucGateway

__all__ = ["MucMessages", "condition_of"]

log = logging.getLogger("chorus.xmpp.muc")

# Notices an occupant learns from presence instead of a message.
PRESENCE_NOTICES = frozenset({"joined", "left", "nickname", "media-added", "media-removed"})
PENDING_REPORTS = 256  # private messages per occupant remembered for a failure to report


class MucMessages:
    """Messages both ways between a room and its XMPP occupants."""

    def __init__(self, gateway: MucGateway) -> None:
        self.gateway = gateway

    # --- in: an occupant's messages to the room -------------------------------------------

    def groupchat_in(self, message: GroupMessage) -> None:
        occupancy = self.gateway.occupancy_of(message.sender, message.room)
        if message.subject is not None:
            self._set_subject(occupancy, message.subject)
        room = occupancy.room
        assert room.chat is not None
        if message.body is None:
            if message.state is not None and message.subject is None:
                # XEP-0085 §5.5: a chat state alone is the room's is-composing (RFC 3994),
                # relayed, never stored, not reflected.
                self._submit(occupancy, Chat(state=message.state), room.chat.core.room, "")
            return
        chat = Chat(body=message.body, xhtml=message.xhtml)
        self._submit(occupancy, chat, room.chat.core.room, message.id)
        # §7.4: the room reflects the message to its sender, once, with the sender's id.
        self.gateway.send(
            groupchat(
                occupancy.jid,
                self.gateway.room_jid(room),
                occupancy.nick,
                message.body,
                id=message.id,
                xhtml=message.xhtml,
            )
        )

    def private_in(self, message: PrivateMessage) -> None:
        occupancy = self.gateway.occupancy_of(message.sender, message.room)
        seat = next(
            (
                s
                for s in self.gateway.seats(occupancy.room)
                if fold(s.occupant.nick) == fold(message.nick)
            ),
            None,
        )
        if seat is None:
            raise MucError("item-not-found", "no occupant has that nickname")
        if message.body is None:  # a chat state alone (XEP-0085), to that occupant
            chat = Chat(state=message.state)
        else:
            chat = Chat(body=message.body, xhtml=message.xhtml)
        mid = self._submit(occupancy, chat, CpimAddress(seat.uri), message.id)
        if message.body is None:
            return
        occupancy.private[mid] = message.id
        while len(occupancy.private) > PENDING_REPORTS:
            occupancy.private.popitem(last=False)

    def _submit(self, occupancy: Occupancy, chat: Chat, to: CpimAddress, stanza_id: str) -> str:
        """Into the room as the occupant's chat session: checked by the room first (its
        refusal is the sender's error), then routed by the room's reader."""
        room = occupancy.room
        assert room.chat is not None
        content = sip_from_chat(chat)
        assert content is not None
        content_type, payload = content
        body = CpimMessage.build(
            content_type=content_type,
            body=payload,
            sender=occupancy.member.address,
            recipients=[to],
            datetime=self.gateway.wall(),
        ).serialize()
        try:
            room.chat.validate(occupancy.session, CPIM_CONTENT_TYPE, body)
        except MsrpError as exc:
            raise MucError(condition_of(exc), exc.reason) from None
        message_id = f"muc-{self.gateway.token()}"
        occupancy.channel.feed(
            MessageReceived(
                str(occupancy.session), message_id, CPIM_CONTENT_TYPE, body, (), len(body)
            )
        )
        return message_id

    def _set_subject(self, occupancy: Occupancy, subject: str) -> None:
        """§8.1: any occupant may set it here (the room has no subject moderation); every
        XMPP occupant gets it, the SIP participants a notice."""
        room = occupancy.room
        room.subject = subject or None
        room.changed()  # conference-info's conference-description/subject
        room_jid = self.gateway.room_jid(room)
        for other in self.gateway.in_room(room):
            self.gateway.send(
                subject_message(
                    other.jid, room_jid, occupancy.nick, subject, id=self.gateway.token()
                )
            )
        if room.chat is not None:
            text = notice_text(NoticeKind.SUBJECT, occupancy.nick, subject)
            room.chat.notice(
                NoticeKind.SUBJECT, text, exclude_participant=occupancy.member.participant
            )

    # --- out: the room's deliveries to an XMPP occupant ------------------------------------

    def deliver(self, occupancy: Occupancy, content_type: str, body: bytes) -> None:
        """One CPIM body the room sent this occupant's session, as a stanza."""
        try:
            self._deliver(occupancy, content_type, body)
        finally:
            if occupancy.history_left > 0:
                occupancy.history_left -= 1
                if occupancy.history_left == 0:
                    self.gateway._send_subject(occupancy)

    def _deliver(self, occupancy: Occupancy, content_type: str, body: bytes) -> None:
        if not content_type.lower().startswith(CPIM_CONTENT_TYPE):
            return
        try:
            message = parse_cpim(body)
        except CpimError:
            log.warning("the room sent %s CPIM it cannot read", occupancy.jid)
            return
        room = occupancy.room
        room_jid = self.gateway.room_jid(room)
        notice = message.value("Notice", CHORUS_NS)
        if notice is not None:
            if notice not in PRESENCE_NOTICES:
                text = message.body.decode("utf-8", "replace")
                self._send_out(
                    groupchat(occupancy.jid, room_jid, None, text, id=self.gateway.token())
                )
            return
        inner = message.content_type or "text/plain"
        try:  # is-composing (RFC 3994) becomes the chat state (XEP-0085) composing/active
            chat = chat_from_sip(
                inner, message.body, max_bytes=self.gateway.settings.max_message_bytes
            )
        except MessageRefused as exc:
            log.info("a room message for %s not carried: %s", occupancy.jid, exc)
            return
        if chat.body is None and chat.state is None:
            return
        sender = message.sender
        nick = self._nick_of(room, sender)
        room_key = room.chat.core.room_key if room.chat is not None else ""
        private = any(key_of(r.uri) != room_key for r in (*message.recipients, *message.cc))
        if private:
            stanza = private_chat(
                occupancy.jid,
                room_jid,
                nick,
                chat.body,
                id=self.gateway.token(),
                xhtml=chat.xhtml,
                state=chat.state,
            )
        else:
            history = (message.value("History", CHORUS_NS) or "").lower() == "yes"
            stanza = groupchat(
                occupancy.jid,
                room_jid,
                nick,
                chat.body,
                id=self.gateway.token(),
                xhtml=chat.xhtml,
                state=chat.state,
                delay=message.datetime if history else None,
            )
        self._send_out(stanza)

    def _send_out(self, element: ET.Element) -> None:
        """A delivery's stanza; ConnectionError when the XMPP server is away, so the room
        counts it as failed (a private sender gets its failure REPORT)."""
        self.gateway.component.send_xml(element)

    def _nick_of(self, room: Room, sender: CpimAddress | None) -> str:
        if sender is None:
            return "someone"
        key = key_of(sender.uri)
        seat = next((s for s in self.gateway.seats(room) if s.key == key), None)
        if seat is not None:
            return seat.occupant.nick
        user = sender.uri.partition(":")[2].partition("@")[0]
        return sender.display_name or user or sender.uri

    def report_failure(self, occupancy: Occupancy, message_id: str, status: int) -> None:
        """The room could not deliver a private message the occupant sent: an error back."""
        stanza_id = occupancy.private.pop(message_id, None)
        if stanza_id is None:
            log.info("MUC message of %s failed for a receiver (%d)", occupancy.jid, status)
            return
        condition = "item-not-found" if status == 404 else "recipient-unavailable"
        room_jid = self.gateway.room_jid(occupancy.room)
        reply = error_reply(
            stanza_like(occupancy.jid, str(room_jid), stanza_id, name="message"),
            MucError(condition, f"the private message was not delivered ({status})"),
            muc_domain=self.gateway.settings.muc_domain,
        )
        if reply is not None:
            self.gateway.send(reply)


def condition_of(error: MsrpError) -> str:
    """The stanza error for the room's refusal of a message (MSRP status, RFC 4975 §7.3)."""
    if error.status == 403:
        return "forbidden"
    if error.status == 404:
        return "item-not-found"
    if error.status == 413 and error.reason == CHAT_TOO_MANY:
        return "resource-constraint"
    if error.status == 400:
        return "bad-request"
    return "not-acceptable"
