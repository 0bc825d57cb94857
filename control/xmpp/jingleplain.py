"""Plain RTP Jingle calls toward SIP by signalling translation alone (issue 12, "plain RTP
where offered"), sans-IO: a session-initiate whose audio is XEP-0177 raw UDP with RTP/AVP
payload types needs no media leg, since both ends speak plain RTP. Its description and
candidate become the INVITE's SDP offer (control/xmpp/jinglesdp.py's mapping: payload types
→ ``a=rtpmap``/``a=fmtp``, the component-1 candidate → the m-line's port and ``c=``), the
SIP 200's answer becomes the session-accept (its ``c=`` and port as the raw-UDP candidate),
and the RTP flows between the two phones directly.

What stays refused (jinglegw.PLAIN_RTP, ``unsupported-transports``): ICE without DTLS (the
gateway would have to run ICE for a phone that does not), SDES (``a=crypto``, keys the
gateway would hand through unchecked), a plain offer after a XEP-0353 proceed (the INVITE
already went out with the WebRTC leg's SDP), and a plain answer to our own session-initiate
(SIP → XMPP: the SIP caller's offer was already answered toward XMPP by the leg).

Input checks (:func:`check_offer`): the candidate's ``ip`` must be an IP literal, neither
unspecified nor multicast, its port 1-65535 (XEP-0177 allows no host names; port 0 would be
a rejected stream in SDP), and there must be payload types. Chorus has no policy on media
addresses beyond that (no private/loopback filter on SIP SDP either), so none is applied here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

from control.sip import sdp
from control.xmpp.jingle import (
    Candidate,
    Content,
    JingleError,
    RawUdpTransport,
    RtpDescription,
)
from control.xmpp.jinglesdp import contents_to_media, media_to_content

__all__ = ["check_offer", "plain_accept", "plain_audio", "plain_offer", "plain_reanswer"]


def plain_audio(contents: Sequence[Content]) -> Content | None:
    """The audio content a plain RTP call can carry as it is: raw UDP, RTP/AVP (no SDES),
    or None."""
    for c in contents:
        d = c.description
        if (
            isinstance(d, RtpDescription)
            and d.media == "audio"
            and isinstance(c.transport, RawUdpTransport)
            and not d.cryptos
            and not d.crypto_required
        ):
            return c
    return None


def _address(ip: str, port: int, what: str) -> str | None:
    """Why ``ip``:``port`` cannot be an RTP destination, or None."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return f"{what} ip {ip[:64]!r} is not an IP address"
    if address.is_unspecified or address.is_multicast:
        return f"{what} ip {ip} is not a unicast address"
    if not 1 <= port <= 65535:
        return f"{what} port {port} is out of range 1-65535"
    return None


def check_offer(content: Content) -> None:
    """A plain offer the gateway translates, or :class:`JingleError` bad-request (module doc)."""
    d = content.description
    transport = content.transport
    assert isinstance(d, RtpDescription) and isinstance(transport, RawUdpTransport)
    if not d.payload_types:
        raise JingleError("bad-request", "raw-udp audio without payload types")
    rtp = [c for c in transport.candidates if c.component == 1]
    if not rtp:
        raise JingleError("bad-request", "raw-udp transport without a component-1 candidate")
    for c in transport.candidates:
        problem = _address(c.ip, c.port, f"raw-udp candidate {c.component}")
        if problem is not None:
            raise JingleError("bad-request", problem)


def plain_offer(content: Content, origin: sdp.Origin) -> bytes:
    """The INVITE's SDP offer for the checked plain ``content`` (the initiator's)."""
    media = contents_to_media([content], author="initiator")
    offer = sdp.SessionDescription(origin=origin, media=media)
    return bytes(sdp.serialize(offer))


def plain_accept(answer: sdp.SessionDescription, offered: Content) -> tuple[Content, ...]:
    """The session-accept's contents for the SIP answer to :func:`plain_offer`: its audio
    m-line as a description and a raw-UDP candidate at its ``c=`` and port, under the
    offered content's name; :class:`~control.sip.sdp.SdpError` 488 when it refuses the audio
    or has no usable address."""
    media = next((m for m in answer.media if m.media == "audio"), None)
    if media is None or media.rejected or not media.rtpmaps():
        raise sdp.SdpError(488, "the answer refuses the audio stream")
    if answer.connection_of(media) is None:
        raise sdp.SdpError(488, "the answer has no c= for its audio")
    content = media_to_content(answer, media, author="responder", creator=offered.creator)
    # No ICE was offered, so an answerer uses none (RFC 8839): ICE attributes in the answer
    # are refused rather than guessed at.
    if content is None or not isinstance(content.transport, RawUdpTransport):
        raise sdp.SdpError(488, "the answer's audio is not plain RTP")
    for c in content.transport.candidates:
        problem = _address(c.ip, c.port, f"the answer's component {c.component}")
        if problem is not None:
            raise sdp.SdpError(488, problem)
    return (dataclasses.replace(content, name=offered.name),)


def _rtp_candidate(content: Content) -> Candidate | None:
    transport = content.transport
    if not isinstance(transport, RawUdpTransport):
        return None
    return next((c for c in transport.candidates if c.component == 1), None)


def plain_reanswer(
    offer: sdp.SessionDescription,
    offered: Content | None,
    accepted: Content | None,
    origin: sdp.Origin,
) -> bytes | None:
    """The answer to a SIP re-offer that leaves the stream as answered (a session refresh,
    RFC 4028): the XMPP side's address and the accepted payload types again. None for any
    change (another address, port, direction or codec): with no leg, carrying it would take
    a Jingle transport-replace or hold the gateway does not do, so it is 488."""
    media = next((m for m in offer.media if m.media == "audio" and not m.rejected), None)
    conn = offer.connection_of(media) if media is not None else None
    if media is None or conn is None or offered is None or accepted is None:
        return None
    theirs, ours = _rtp_candidate(accepted), _rtp_candidate(offered)
    d = accepted.description
    if theirs is None or ours is None or d is None or accepted.senders != "both":
        return None
    if (conn.address.split("/")[0], media.port) != (theirs.ip, theirs.port):
        return None
    if offer.direction_of(media) != sdp.Direction.SENDRECV:
        return None
    formats = [str(p.id) for p in d.payload_types if str(p.id) in media.formats]
    if not formats:
        return None
    accept = sdp.Accept(ours.port, formats)
    decisions = [accept if m is media else sdp.Reject() for m in offer.media]
    answer = sdp.build_answer(
        offer, decisions, origin=origin, connection=sdp.Connection.for_address(ours.ip)
    )
    return bytes(sdp.serialize(answer))
