"""The SIP leg toward a FreeSWITCH node: Chorus as a B2BUA for one participant's audio.

The participant's audio m-line — its address, codecs, SDES keys (RFC 4568) untouched — becomes
the offer of an INVITE to the node, so FreeSWITCH sends its RTP straight to the participant.
FreeSWITCH's answer (its address and port, the codec it chose, its own ``a=crypto`` key)
becomes the participant's answer, so the participant sends straight to FreeSWITCH: RTP never
passes through Chorus (RFC 3264 §6, §8 for the re-offers).

The leg names its conference and participant in two headers of our own, ``X-Chorus-Room``
(the conference name, `members.conference_name`) and ``X-Chorus-Participant``. mod_sofia
stores every inbound ``X-`` header as the channel variable ``sip_h_<name>`` as received
(``sofia_handle_sip_i_invite``), so the node's dialplan joins ``${sip_h_X-Chorus-Room}``,
and the conference events of the channel carry ``variable_sip_h_X-Chorus-Participant``: that
is how members map back to participants. The Request-URI user (the conference) and the From
user (the participant, which sofia makes the caller-id number that ``conference list``
shows) say the same for an operator's eyes and for members missed while ESL was away.

The leg goes straight to the node (``place_call(direct=True)``): with ``[sip]
outbound_proxy`` set, the Kamailio edge is for participants, not for a node's legs, and the
leg's re-INVITEs and BYE must follow its INVITE (RFC 3261 §12.2.1.1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from control.media.engine import AudioAnswer, AudioEngineError, ParticipantId, RoomId
from control.media.freeswitch.members import PARTICIPANT_HEADER, ROOM_HEADER
from control.sip import sdp
from control.sip.session import Session, place_call
from control.sip.transport import Peer
from control.sip.uri import NameAddr, SipUri
from control.sip.useragent import UserAgent

__all__ = [
    "LegFailed",
    "LegGone",
    "MediaLeg",
    "audio_answer",
    "leg_headers",
    "leg_offer",
]

log = logging.getLogger("chorus.media.freeswitch")


class LegFailed(AudioEngineError):
    """The node refused or never answered the leg's INVITE."""


class LegGone(AudioEngineError):
    """The node answered a re-INVITE 481 or 408: it no longer has the dialog (RFC 5057
    §5.1), which is then over on our side too."""


def leg_offer(
    offer: sdp.SessionDescription, media_index: int, state: sdp.SdpSession
) -> sdp.SessionDescription:
    """The participant's audio m-line alone, with its own address, under our origin."""
    media = offer.media[media_index].copy()
    connection = offer.connection_of(offer.media[media_index])
    if connection is None:
        raise AudioEngineError(488, "audio m-line without a c= address")
    media.connection = connection
    return state.offer([media])


def leg_headers(conference: str, participant: ParticipantId) -> list[tuple[str, str]]:
    """The leg's own headers: which conference it joins and whose audio it carries."""
    return [(ROOM_HEADER, conference), (PARTICIPANT_HEADER, participant)]


def audio_answer(answer: sdp.SessionDescription) -> AudioAnswer:
    """FreeSWITCH's answer as the engine's: its address, port, codecs and attributes."""
    if len(answer.media) != 1 or answer.media[0].rejected:
        raise AudioEngineError(488, "media node rejected the audio")
    media = answer.media[0]
    connection = answer.connection_of(media)
    if connection is None:
        raise AudioEngineError(488, "media node's answer has no c= address")
    attributes = [a for a in media.attributes if a.name not in {d.value for d in sdp.Direction}]
    accept = sdp.Accept(
        port=media.port,
        formats=list(media.formats),
        direction=answer.direction_of(media),
        attributes=attributes,
        connection=connection,
        bandwidths=list(media.bandwidths),
        proto=media.proto,
    )
    return AudioAnswer(accept=accept, address=connection.address)


@dataclass(slots=True)
class MediaLeg:
    """One participant's established leg on one node."""

    room: RoomId
    participant: ParticipantId
    node: str
    conference: str
    session: Session
    offer: sdp.SessionDescription  # the participant's last offer (re-homing re-sends it)
    media_index: int
    state: sdp.SdpSession
    answer: AudioAnswer
    closing: bool = False  # we are ending it: its end is no news
    reported: bool = False  # its failure was already told to the room
    moved: bool = field(default=False)
    recovered_at: float | None = None  # when this leg replaced one whose dialog was lost

    @classmethod
    async def open(
        cls,
        ua: UserAgent,
        *,
        node: str,
        peer: Peer,
        room: RoomId,
        participant: ParticipantId,
        conference: str,
        offer: sdp.SessionDescription,
        media_index: int,
        timeout: float,
    ) -> MediaLeg:
        state = sdp.SdpSession(
            sess_id=ua.rng.randrange(1, 2**31), address=_our_host(ua, peer), username="chorus"
        )
        body = sdp.serialize(leg_offer(offer, media_index, state))
        target = SipUri(host=peer.host, user=conference, port=peer.port)
        from_ = NameAddr(SipUri(host=_our_host(ua, peer), user=participant), participant)
        try:
            session, response = await place_call(
                ua,
                target,
                from_=from_,
                offer=body,
                peer=peer,
                timeout=timeout,
                extra_headers=leg_headers(conference, participant),
                direct=True,
            )
        except (OSError, ValueError) as exc:
            raise LegFailed(503, f"media node {node} unreachable: {exc}") from exc
        if session is None:
            status = 488 if response.status in (415, 488, 606) else 503
            raise LegFailed(status, f"media node {node} answered {response.status}")
        try:
            answer = audio_answer(sdp.parse(response.body))
            state.answer_received(sdp.parse(response.body))
        except (AudioEngineError, sdp.SdpError) as exc:
            ua.spawn(session.bye(reason="unusable answer"))
            raise LegFailed(488, f"media node {node}: {exc}") from exc
        return cls(room, participant, node, conference, session, offer, media_index, state, answer)

    async def reinvite(self, offer: sdp.SessionDescription, media_index: int) -> AudioAnswer:
        """Carry the participant's re-offer (hold, resume, codec or address change) over."""
        body = sdp.serialize(leg_offer(offer, media_index, self.state))
        response = await self.session.reinvite(body)
        if response.status in (408, 481):
            self.state.offer_rejected()
            self.closing = True  # its end is the engine's business now, not news
            # Over at once (its BYE may go unanswered: the node knows no such dialog).
            self.session.ua.spawn(self.session.bye(reason=f"re-INVITE got {response.status}"))
            raise LegGone(503, f"media node {self.node} answered {response.status}")
        if not 200 <= response.status < 300:
            self.state.offer_rejected()
            raise AudioEngineError(488, f"media node {self.node} answered {response.status}")
        answer = sdp.parse(response.body)
        self.answer = audio_answer(answer)
        self.state.answer_received(answer)
        self.offer, self.media_index = offer, media_index
        return self.answer

    async def bye(self, reason: str) -> None:
        self.closing = True
        await self.session.bye(reason=reason)


def _our_host(ua: UserAgent, peer: Peer) -> str:
    return ua.local_host_port(peer.transport, peer.host)[0]
