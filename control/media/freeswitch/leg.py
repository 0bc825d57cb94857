"""The SIP leg toward a FreeSWITCH node: Chorus as a B2BUA for one participant's audio.

The participant's audio m-line — its address, codecs, SDES keys (RFC 4568) untouched — becomes
the offer of an INVITE to the node, so FreeSWITCH sends its RTP straight to the participant.
FreeSWITCH's answer (its address and port, the codec it chose, its own ``a=crypto`` key)
becomes the participant's answer, so the participant sends straight to FreeSWITCH: RTP never
passes through Chorus (RFC 3264 §6, §8 for the re-offers).

The leg's Request-URI names the conference (``sip:<conference>@node``, the node's dialplan
puts the call there) and its From user is the participant id, which sofia copies into the
caller-id number every conference event carries: that is how members map back to
participants.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from control.media.engine import AudioAnswer, AudioEngineError, ParticipantId, RoomId
from control.sip import sdp
from control.sip.session import Session, place_call
from control.sip.transport import Peer
from control.sip.uri import NameAddr, SipUri
from control.sip.useragent import UserAgent

__all__ = ["LegFailed", "MediaLeg", "audio_answer", "leg_offer"]

log = logging.getLogger("chorus.media.freeswitch")


class LegFailed(AudioEngineError):
    """The node refused or never answered the leg's INVITE."""


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
                ua, target, from_=from_, offer=body, peer=peer, timeout=timeout
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
