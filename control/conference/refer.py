"""REFER to a room: adding and removing participants (RFC 4579 §5.5, §5.11; RFC 3515).

A REFER reaches the room out of dialog (its Request-URI is the room's URI) or inside a
participant's own conference dialog. Its Refer-To says what to do:

- ``<sip:bob@example.com;method=INVITE>`` (or no ``method``): the focus answers 202 and
  INVITEs the target with a *delayed offer* (RFC 3261 §13.2.1: an INVITE without SDP). The
  target's 2xx carries its offer; the focus answers it in the ACK with the answering path
  every joiner takes (control/streams/negotiation.py), so the target gets the room's media
  (audio mixed, chat) and is then a participant like any other. ``Referred-By`` (RFC 3892)
  is carried. Progress goes to the referrer as ``message/sipfrag`` NOTIFYs (RFC 3515 §2.4.5:
  ``100 Trying``, ``180 Ringing``, then the final status) and there is **always** a final
  one: ``503`` when the target's host does not resolve, ``408`` when nobody answers within
  ``[conference] refer_timeout`` (the INVITE is cancelled), the target's own 4xx/5xx/6xx,
  ``487`` when the room ends or the server stops while it rings, ``488`` when its offer has
  no stream the room takes (the focus ACKs with every m-line refused, then sends BYE, as
  RFC 3261 §13.2.2.4 says a UAC that dislikes a 2xx's offer does). ``Refer-Sub: false``
  (RFC 4488) means no NOTIFY at all.
- ``<sip:bob@example.com;method=BYE>``: every session of that participant ends (BYE, as a
  kick); the sipfrag says ``200``, or ``404`` when no such participant is in the room.

Authorisation, before the 202 (refused REFERs get ``403`` with the reason as the phrase):

- who: removing takes a moderator (control/conference/moderation.py); adding takes a
  moderator too unless ``[conference] refer_policy = "participants"``, when anyone in the
  room may (a caller still awaiting the room's PIN is not in it yet). Inside a dialog the
  referrer is that dialog's participant; out of dialog it is the From URI — which nothing
  here authenticates: operators who let REFERs in from outside should authenticate them at
  the edge (Kamailio ``auth``/``www_authorize``, or an asserted identity they trust).
- whom: the target's URI must match ``[conference] refer_allow`` (domain or URI patterns,
  fnmatch); by default only this node's own domains and addresses — a room is no open
  gateway to premium numbers (toll fraud). Only ``sip:``/``sips:`` targets.
- what: only INVITE and BYE; a Refer-To asking for a transfer (an embedded ``Replaces``,
  RFC 3891) or a REFER to a URI that is no live room is 403: the focus transfers nothing.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from control.app import Application, Referral, serve_dialog
from control.media.engine import ParticipantId, RoomId
from control.settings import Config
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.message import Response, reason_phrase
from control.sip.notifier import EventPolicy
from control.sip.session import Session, place_call
from control.sip.uri import NameAddr, SipUri, parse_uri
from control.sip.useragent import UserAgent
from control.streams import Answerer, Negotiation, negotiate

from .moderation import Moderation
from .participant import MODERATOR, Participant, identity_uri
from .room import Room, room_id_for, room_uri_for

__all__ = [
    "ReferHost",
    "ReferPolicy",
    "Progress",
    "ReferTarget",
    "RemoteInvitations",
    "Referrals",
    "parse_refer_to",
    "target_allowed",
]

log = logging.getLogger("chorus.conference.refer")

METHODS = ("INVITE", "BYE")  # RFC 4579 §5.5 and §5.11: nothing else is a room's business
_WILDCARDS = ("0.0.0.0", "::", "*")  # listen addresses that name no host of ours
# The final status of a dial-out we stopped, by why (shutdown and the rest: 487).
_CANCELLED = {"timeout": (408, "Request Timeout"), "room ended": (487, "Room ended")}


@dataclass(frozen=True, slots=True)
class ReferTarget:
    """A Refer-To, read: the URI to INVITE (its ``method`` parameter and embedded headers
    gone), the display name, and the method (``INVITE`` or ``BYE``)."""

    uri: SipUri
    display_name: str | None
    method: str

    @property
    def identity(self) -> str:
        """``sip:user@host``: how participants are named (control/conference/participant.py)."""
        return identity_uri(NameAddr(self.uri))

    @property
    def name_addr(self) -> NameAddr:
        return NameAddr(self.uri, self.display_name)


def parse_refer_to(refer_to: NameAddr) -> ReferTarget:
    """The Refer-To of a REFER to a room, or ``SipError(403)`` saying why the room will not:
    a target that is not SIP, a method other than INVITE or BYE (RFC 3515 §2.4.2: INVITE when
    absent), or a transfer (an embedded ``Replaces``, RFC 3891 §3)."""
    uri = refer_to.uri
    if not isinstance(uri, SipUri):
        raise SipError(403, "Only SIP targets may be referred")
    method = (uri.params.get("method") or "INVITE").upper()
    if method not in METHODS:
        raise SipError(403, f"Method {method} is not referred by a room")
    if any(name.lower() == "replaces" for name in uri.headers):
        raise SipError(403, "Call transfer is not supported")
    params = {k: v for k, v in uri.params.items() if k != "method"}
    return ReferTarget(replace(uri, params=params, headers={}), refer_to.display_name, method)


def _is_uri_pattern(pattern: str) -> bool:
    return pattern.lower().startswith(("sip:", "sips:")) or "@" in pattern


def _without_scheme(uri: str) -> str:
    return uri.split(":", 1)[1] if uri.startswith(("sip:", "sips:")) else uri


def target_allowed(uri: SipUri, patterns: Iterable[str]) -> bool:
    """Does ``uri`` match a pattern (fnmatch, case-insensitive)? A pattern with ``sip:`` or an
    ``@`` is matched against the target's ``user@host`` (no port or parameters; ``sip:`` and
    ``sips:`` alike, or left out), any other against its host alone (``example.com``,
    ``*.example.com``, ``192.0.2.*``, ``::1``)."""
    host = uri.bare_host.lower()
    identity = _without_scheme(identity_uri(NameAddr(uri)).lower())
    for pattern in patterns:
        wanted = pattern.strip().lower()
        if not wanted:
            continue
        if _is_uri_pattern(wanted):
            if fnmatch.fnmatchcase(identity, _without_scheme(wanted)):
                return True
        elif fnmatch.fnmatchcase(host, wanted.strip("[]")):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ReferPolicy:
    """``[conference] refer_policy``, ``refer_allow``, ``refer_timeout``, ``refer_max_pending``.

    ``allow`` empty means this node's own hosts (``own_hosts``: its SIP listen addresses and
    advertised address) and the room's own domain."""

    who: str = "moderators"  # or "participants" (control/config.py REFER_POLICIES)
    allow: tuple[str, ...] = ()
    own_hosts: tuple[str, ...] = ("127.0.0.1",)
    timeout: float = 60.0  # seconds a target may ring before the INVITE is cancelled (408)
    max_pending: int = 10  # dial-outs of one room ringing at once (more: 486)

    @classmethod
    def from_config(cls, config: Config) -> ReferPolicy:
        hosts = [a.host for a in config.sip.listen]
        if config.sip.advertised_address:
            hosts.append(config.sip.advertised_address)
        own = tuple(dict.fromkeys(h.lower() for h in hosts if h not in _WILDCARDS))
        conference = config.conference
        return cls(
            who=conference.refer_policy,
            allow=conference.refer_allow,
            own_hosts=own,
            timeout=conference.refer_timeout,
            max_pending=conference.refer_max_pending,
        )

    def allows(self, target: SipUri, room: Room) -> bool:
        """May the room dial ``target``? (See :func:`target_allowed` for the patterns.)"""
        patterns = self.allow or (*self.own_hosts, room.uri.host)
        return target_allowed(target, patterns)


class ReferHost(Application, Protocol):
    """What REFER needs of the conference application (control/conference/app.py)."""

    ua: UserAgent
    address: str  # the media address our SDP names
    moderation: Moderation

    def room_of(self, session: Session | None, uri: object) -> Room | None: ...

    def answerer(self, room: Room, participant_id: ParticipantId, sender: str) -> Answerer: ...

    async def attend(self, room: Room, participant: Participant, result: Negotiation) -> None:
        """In the room until its session ends (the answer was sent)."""


class Progress(Protocol):
    """Where a dial-out's progress goes: the REFER's sipfrag NOTIFYs (ReferProgress), or a
    MUC inviter (control/xmpp/mucgw.py); a status >= 200 is the final one."""

    def notify(self, status: int, reason: str | None = None) -> None: ...


class RemoteInvitations(Protocol):
    """Invitees the room reaches by other means than an INVITE: XMPP users get a MUC
    invitation (control/xmpp/mucgw.py) for a REFER method=INVITE naming them."""

    def serves(self, target: SipUri) -> bool: ...

    async def invite(
        self, room: Room, target: SipUri, referred_by: NameAddr, progress: Progress
    ) -> None: ...


@dataclass(slots=True)
class _Referrer:
    uri: str
    participant: Participant | None
    moderator: bool
    chatting: bool = False  # in the room's chat without a SIP session (a MUC occupant)

    @property
    def in_room(self) -> bool:
        return self.moderator or self.participant is not None or self.chatting


@dataclass(slots=True, eq=False)
class _DialOut:
    """One INVITE a REFER started; ``cancel`` resolves with why it must stop ringing."""

    room: Room
    cancel: asyncio.Future[object]
    timer: asyncio.TimerHandle | None = None  # refer_timeout, until the target answers
    failure: tuple[int, str] | None = None  # decided while answering the target's offer
    negotiation: Negotiation | None = None
    state: sdp.SdpSession | None = None

    def stop(self, why: str) -> None:
        if not self.cancel.done():
            self.cancel.set_result(why)

    def answered(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    @property
    def cancelled(self) -> tuple[int, str] | None:
        """The status the final NOTIFY gives a dial-out we stopped, once we have."""
        if not self.cancel.done():
            return None
        return _CANCELLED.get(str(self.cancel.result()), (487, "Request Terminated"))


class Referrals:
    """The REFERs of every room (see the module doc)."""

    def __init__(self, policy: ReferPolicy, host: ReferHost) -> None:
        self.policy = policy
        self.host = host
        self._pending: dict[RoomId, set[_DialOut]] = {}
        self.remote: RemoteInvitations | None = None  # set by the MUC gateway's wiring (cli)

    # --- the REFER -------------------------------------------------------------------------

    async def incoming(self, referral: Referral) -> None:
        try:
            room, referrer, target = self._check(referral)
        except SipError as exc:
            log.info(
                "REFER from %s refused: %d %s",
                identity_uri(referral.referrer),
                exc.status,
                exc.reason,
            )
            referral.reject(exc.status, exc.reason)
            return
        log.info("REFER %s %s to %s by %s", target.method, target.identity, room.id, referrer.uri)
        if target.method == "BYE":
            await self._remove(referral, room, referrer, target)
            return
        progress = referral.accept()
        sender = referral.referrer  # RFC 3892 §3: the REFER's Referred-By, else the referrer
        referred_by = referral.referred_by or NameAddr(sender.uri, sender.display_name)
        if self.remote is not None and self.remote.serves(target.uri):
            self.host.ua.spawn(self.remote.invite(room, target.uri, referred_by, progress))
            return
        self._start_dial(room, progress, target, referred_by, referral.policy)

    def invite(self, room: Room, target: SipUri, *, by: NameAddr, progress: Progress) -> None:
        """A mediated invitation from a chat-only member (an XMPP occupant's MUC invite,
        control/xmpp/mucgw.py): REFER method=INVITE's checks (who, whom, room full) and its
        dial-out, progress to ``progress``; SipError when refused."""
        uri = identity_uri(by)
        moderator = self.host.moderation.role_for(room, uri) == MODERATOR
        referrer = _Referrer(uri, None, moderator, chatting=True)
        refer_target = parse_refer_to(NameAddr(target))
        self._check_invite(room, referrer, refer_target)
        log.info("MUC invitation of %s to %s by %s", refer_target.identity, room.id, uri)
        self._start_dial(room, progress, refer_target, by, None)

    def _start_dial(
        self,
        room: Room,
        progress: Progress,
        target: ReferTarget,
        referred_by: NameAddr,
        policy: EventPolicy | None,
    ) -> None:
        dial = _DialOut(room, asyncio.get_running_loop().create_future())
        self._pending.setdefault(room.id, set()).add(dial)
        self.host.ua.spawn(self._dial(dial, progress, target, referred_by, policy))

    def _check(self, referral: Referral) -> tuple[Room, _Referrer, ReferTarget]:
        room = self.host.room_of(referral.session, referral.request_uri)
        if room is None:
            raise SipError(403, "No such room (call transfer is not supported)")
        target = parse_refer_to(referral.refer_to)
        referrer = self._referrer(room, referral)
        if target.method == "BYE":
            if not referrer.moderator:
                raise SipError(403, "Only a moderator may remove participants")
            return room, referrer, target
        self._check_invite(room, referrer, target)
        return room, referrer, target

    def _check_invite(self, room: Room, referrer: _Referrer, target: ReferTarget) -> None:
        if self.policy.who == "moderators" and not referrer.moderator:
            raise SipError(403, "Only a moderator may invite")
        if not referrer.in_room:
            raise SipError(403, "Only participants may invite")
        remote = self.remote is not None and self.remote.serves(target.uri)
        if not remote and not self.policy.allows(target.uri, room):
            raise SipError(403, "Target not allowed")
        if room_id_for(target.uri) == room.id:
            raise SipError(403, "A room cannot invite itself")
        if room.locked and not referrer.moderator:
            raise SipError(403, "Room is locked")
        pending = len(self._pending.get(room.id, ()))
        if room.full or len(room) + pending >= room.max_participants:
            raise SipError(486, "Room is full")
        if pending >= self.policy.max_pending:
            raise SipError(486, "Too many invitations ringing")

    def _referrer(self, room: Room, referral: Referral) -> _Referrer:
        """The dialog's participant, else whoever the From names (unauthenticated here)."""
        people = [p for p in room.participants.values() if not p.awaiting_pin]
        if referral.session is not None:
            mine = [p for p in people if p.session is referral.session]
            uri = mine[0].uri if mine else identity_uri(referral.referrer)
        else:
            uri = identity_uri(referral.referrer)
            mine = [p for p in people if p.uri == uri]
        participant = mine[0] if mine else None
        moderator = any(room.is_moderator(p) for p in mine) or (
            any(not p.transfer_only for p in room.participants.values())
            and self.host.moderation.role_for(room, uri) == MODERATOR
        )
        return _Referrer(uri, participant, moderator)

    # --- method=BYE (RFC 4579 §5.11) -------------------------------------------------------

    async def _remove(
        self, referral: Referral, room: Room, referrer: _Referrer, target: ReferTarget
    ) -> None:
        progress = referral.accept()
        victim = next((p for p in room.participants.values() if p.uri == target.identity), None)
        if victim is None:
            removed = self.host.moderation.kick_chat_only(room, target.identity, by=referrer.uri)
            progress.notify(*((200, "OK") if removed else (404, "No such participant")))
            return
        await self.host.moderation.kick(room, victim, by=referrer.uri)
        progress.notify(200, "OK")

    # --- method=INVITE (RFC 4579 §5.5) -----------------------------------------------------

    async def _dial(
        self,
        dial: _DialOut,
        progress: Progress,
        target: ReferTarget,
        referred_by: NameAddr,
        policy: EventPolicy | None,
    ) -> None:
        """INVITE the target; the final NOTIFY always goes, whatever happens."""
        loop = asyncio.get_running_loop()
        dial.timer = loop.call_later(self.policy.timeout, dial.stop, "timeout")
        participant: Participant | None = None
        status, reason = 500, "Server Internal Error"
        try:
            participant, status, reason = await self._invite(dial, progress, target, referred_by)
        except Exception:
            log.exception("REFER dial-out to %s failed", target.identity)
        finally:
            dial.answered()
            self._forget(dial)
            if participant is None and dial.negotiation is not None:
                await dial.negotiation.abort()
            progress.notify(status, reason)
        if participant is not None and dial.negotiation is not None:
            serve_dialog(participant.session, self.host, policy)
            await self.host.attend(dial.room, participant, dial.negotiation)

    async def _invite(
        self,
        dial: _DialOut,
        progress: Progress,
        target: ReferTarget,
        referred_by: NameAddr,
    ) -> tuple[Participant | None, int, str]:
        room = dial.room
        participant_id = ParticipantId(self.host.ua.token(16))
        last: list[int] = [100]

        def provisional(response: Response) -> None:
            if response.status > 100 and response.status != last[-1]:
                last.append(response.status)
                progress.notify(response.status, response.reason)

        async def answer(response: Response) -> bytes:
            return await self._answer(dial, participant_id, target, response)

        room_party = NameAddr(parse_uri(room_uri_for(room.id)), room.id.partition("@")[0])
        try:
            session, response = await place_call(
                self.host.ua,
                target.uri,
                from_=room_party,
                offer=b"",  # delayed offer: the target offers in its 2xx
                timeout=None,  # dial.cancel carries refer_timeout, the room's end, shutdown
                extra_headers=[("Referred-By", str(referred_by))],
                on_provisional=provisional,
                answer=answer,
                cancel=dial.cancel,
            )
        except (OSError, ValueError) as exc:  # the host does not resolve, or no route
            log.info("REFER target %s unreachable: %s", target.identity, exc)
            return None, 503, "Target not reachable"
        if session is None:
            cancelled = dial.cancelled
            if response.status == 487 and cancelled is not None:
                return None, *cancelled
            return None, response.status, response.reason or reason_phrase(response.status)
        if dial.failure is None:  # the room may have ended since the answer
            dial.failure = dial.cancelled
        if dial.failure is not None or dial.negotiation is None or dial.state is None:
            status, reason = dial.failure or (488, "Not Acceptable Here")
            log.info("REFER target %s not joined: %d %s", target.identity, status, reason)
            await session.bye(reason=reason)
            return None, status, reason
        participant = Participant(
            participant_id,
            target.name_addr,
            session,
            dial.state,
            dial.negotiation.streams,
            dial.negotiation.decisions,
        )
        participant.role = self.host.moderation.role_for(room, participant.uri)
        return participant, 200, "OK"

    async def _answer(
        self, dial: _DialOut, participant_id: ParticipantId, target: ReferTarget, response: Response
    ) -> bytes:
        """The ACK's answer to the 2xx's offer (RFC 3264 §5), the same routine a joiner's
        INVITE gets; every m-line refused (and ``dial.failure`` set) when the room takes
        none of it, is gone, or is full."""
        dial.answered()
        content_type = response.content_type
        if not response.body or content_type is None or content_type.mime != "application/sdp":
            dial.failure = (488, "No offer in the 2xx")
            return b""
        try:
            offer = sdp.parse(response.body)
        except SipError as exc:
            dial.failure = (488, exc.reason)
            return b""
        state = sdp.SdpSession(
            sess_id=self.host.ua.rng.randrange(1, 2**31),
            address=self.host.address,
            username="chorus",
        )
        rejected = [sdp.Reject() for _ in offer.media]
        dial.failure = dial.cancelled
        if dial.failure is None and dial.room.full:
            dial.failure = (486, "Room is full")
        if dial.failure is not None:
            return state.answer_body(offer, rejected)
        try:
            result = await negotiate(
                offer, {}, self.host.answerer(dial.room, participant_id, target.identity)
            )
        except SipError as exc:
            dial.failure = (exc.status, exc.reason)
            return state.answer_body(offer, rejected)
        dial.negotiation = result
        if not result.accepted:
            dial.failure = (488, "No acceptable stream")
            return state.answer_body(offer, rejected)
        dial.state = state
        return state.answer_body(offer, result.decisions)

    # --- the rooms' and the server's end ---------------------------------------------------

    def _forget(self, dial: _DialOut) -> None:
        pending = self._pending.get(dial.room.id)
        if pending is not None:
            pending.discard(dial)
            if not pending:
                del self._pending[dial.room.id]

    def room_ended(self, room: Room) -> None:
        """Its last participant left: what still rings for it is cancelled (487)."""
        for dial in list(self._pending.get(room.id, ())):
            if dial.room is room:
                dial.stop("room ended")

    def close(self) -> None:
        """The server stops: every dial-out is cancelled (the final NOTIFYs say 487)."""
        for pending in list(self._pending.values()):
            for dial in list(pending):
                dial.stop("shutdown")
