"""Mediated MUC invitations (XEP-0045 §7.8.2) ↔ REFER method=INVITE (RFC 4579 §5.5), for
the MUC gateway (control/xmpp/mucgw.py).

SIP → XMPP: a REFER naming a user of a served XMPP domain is the room's invitation to that
JID (from the room, ``<invite from=>`` the referrer's occupant JID); the REFER's final
sipfrag follows the invitee: 200 when it joins, 603 when it declines, 408 after
``[conference] refer_timeout``, 503 while the XMPP server is away.

XMPP → SIP: an occupant inviting a user of the gateway's SIP domains makes the room dial it
with REFER method=INVITE's own checks and dial-out (control/conference/refer.py
``Referrals.invite``: refer_policy, refer_allow, a full or locked room); a failure comes
back to the inviter as a decline. An invitation of another XMPP user is relayed by the room.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from control.conference.refer import Progress
from control.conference.room import Room
from control.media.engine import RoomId
from control.sip.errors import SipError
from control.sip.uri import NameAddr, SipUri, parse_uri
from control.xmpp.addressing import AddressRefused, Jid
from control.xmpp.muc import Declined, Invitation, MucError
from control.xmpp.mucoccupant import Occupancy, key_of
from control.xmpp.mucstanzas import declined, invitation

if TYPE_CHECKING:
    from control.xmpp.mucgw import MucGateway

__all__ = ["MucInvitations"]

log = logging.getLogger("chorus.xmpp.muc")


class MucInvitations:
    """The room's invitations both ways (Referrals.remote is this object)."""

    def __init__(self, gateway: MucGateway) -> None:
        self.gateway = gateway
        # (room, invitee's bare JID) -> the REFERs waiting for it to join or decline
        self._invited: dict[tuple[RoomId, str], list[asyncio.Future[tuple[int, str]]]] = {}

    def serves(self, target: SipUri) -> bool:
        """A REFER target in an XMPP domain the gateway serves gets a MUC invitation."""
        return self.gateway.addressing.serves_xmpp_domain(target.host)

    async def invite(
        self, room: Room, target: SipUri, referred_by: NameAddr, progress: Progress
    ) -> None:
        """REFER method=INVITE to an XMPP user: the room's mediated invitation; the sipfrag's
        final status is 200 when the invitee joins, 603 when it declines, 408 when it does
        neither within the REFER timeout (503 while the XMPP server is away)."""
        try:
            invitee = self.gateway.addressing.sip_to_jid(target, side="xmpp")
        except AddressRefused as exc:
            progress.notify(exc.sip_status, exc.reason)
            return
        bare = Jid(invitee.local, invitee.domain)
        room_jid = self.gateway.room_jid(room)
        inviter = self._seat_jid(room, str(referred_by.uri)) or room_jid
        answer: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        waiting = self._invited.setdefault((room.id, bare.bare), [])
        waiting.append(answer)
        try:
            name = referred_by.display_name or inviter.resource or "someone"
            reason = f"{name} invites you to {room_jid.local}"
            self.gateway.component.send_xml(
                invitation(bare, room_jid, str(inviter), reason, id=self.gateway.token())
            )
            progress.notify(180, "Invited over XMPP")
            status, text = await asyncio.wait_for(answer, self.gateway.settings.invite_timeout)
        except ConnectionError:
            status, text = 503, "XMPP server unavailable"
        except TimeoutError:
            status, text = 408, "The invitee did not join"
        finally:
            if answer in waiting:
                waiting.remove(answer)
            if not waiting:
                self._invited.pop((room.id, bare.bare), None)
        log.info("MUC invitation of %s to %s: %d %s", bare, room.id, status, text)
        progress.notify(status, text)

    def answer(self, room: Room, bare: str, answer: tuple[int, str]) -> None:
        for future in self._invited.get((room.id, bare), []):
            if not future.done():
                future.set_result(answer)

    def _seat_jid(self, room: Room, uri: str) -> Jid | None:
        key = key_of(uri)
        seat = next((s for s in self.gateway.seats(room) if s.key == key), None)
        if seat is None:
            return None
        room_jid = self.gateway.room_jid(room)
        return Jid(room_jid.local, room_jid.domain, seat.occupant.nick)

    def invitation(self, message: Invitation) -> None:
        """An occupant invites someone: a SIP user of the gateway's SIP domains is dialled
        (REFER method=INVITE's checks and dial-out, the room's refer_policy deciding who may),
        anyone else gets the room's invitation (§7.8.2)."""
        occupancy = self.gateway.occupancy_of(message.sender, message.room)
        room = occupancy.room
        room_jid = self.gateway.room_jid(room)
        to = Jid(message.to.local, message.to.domain)
        if to.domain not in self.gateway.addressing.sip_domains:
            inviter = Jid(room_jid.local, room_jid.domain, occupancy.nick)
            self.gateway.send(
                invitation(to, room_jid, str(inviter), message.reason, id=self.gateway.token())
            )
            return
        try:
            target = self.gateway.addressing.jid_to_sip(to, side="sip")
        except AddressRefused as exc:
            raise MucError(exc.condition, exc.reason) from None
        by = NameAddr(parse_uri(occupancy.member.uri), occupancy.nick)
        progress = _InviterProgress(self.gateway, occupancy, to)
        try:
            self.gateway.rooms.referrals.invite(room, target, by=by, progress=progress)
        except SipError as exc:
            condition = "forbidden" if exc.status == 403 else "resource-constraint"
            raise MucError(condition, exc.reason) from None

    def declined(self, message: Declined) -> None:
        room = self.gateway.room_named(message.room)
        invitee = Jid(message.sender.local, message.sender.domain)
        self.answer(room, invitee.bare, (603, message.reason or "Declined"))
        to = message.to
        if to is not None and to.domain != self.gateway.settings.muc_domain:
            room_jid = self.gateway.room_jid(room)
            self.gateway.send(
                declined(to, room_jid, invitee.bare, message.reason, id=self.gateway.token())
            )


class _InviterProgress:
    """A MUC inviter's view of the dial-out: a failure comes back as a decline (§7.8.2);
    success shows as the invitee's presence in the room."""

    def __init__(self, gateway: MucGateway, occupancy: Occupancy, invitee: Jid) -> None:
        self.gateway = gateway
        self.occupancy = occupancy
        self.invitee = invitee

    def notify(self, status: int, reason: str | None = None) -> None:
        if status < 300:
            return
        room_jid = self.gateway.room_jid(self.occupancy.room)
        text = f"{status} {reason or ''}".strip()
        stanza = declined(
            self.occupancy.jid, room_jid, self.invitee.bare, text, id=self.gateway.token()
        )
        self.gateway.send(stanza)
