"""Our answer to one audio m-line: codec choice, SDES-SRTP and where to send (sans-IO).

The embedded mixer answers every audio offer the same way, so the decision lives here as a
plain function of the offer, our configuration and an injected random source (for SRTP
keys).  It yields two things: the `sdp.Accept` the room puts in its SDP answer, and the
`AudioTerms` the media path runs on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from control.media.codecs import DEFAULT_TUNING, Codec, CodecTuning, codec_for, parse_fmtp
from control.media.engine import AudioEngineError
from control.media.srtp import CryptoChoice, CryptoNegotiationError, SrtpPolicy, answer_crypto
from control.sip import sdp

__all__ = [
    "CODEC_NAMES",
    "PTIME_MS",
    "AudioTerms",
    "Address",
    "answer_audio",
    "answer_stream_crypto",
    "audio_accept",
    "supported_rtpmaps",
]

Address = tuple[str, int]

# We always send 20 ms frames (RFC 3551 §4.5: the default packetization for these codecs).
PTIME_MS = 20

# Configuration names → the rtpmaps we accept for them, in preference order.
CODEC_NAMES: dict[str, tuple[tuple[str, int], ...]] = {
    "opus": (("opus", 48000),),
    "g722": (("G722", 8000),),
    "speex": (("speex", 16000), ("speex", 8000)),
    "speex/16000": (("speex", 16000),),
    "speex/8000": (("speex", 8000),),
    "pcmu": (("PCMU", 8000),),
    "pcma": (("PCMA", 8000),),
    # RFC 4733 §2.1: the event clock follows the voice codec's, so offer every rate we mix.
    "telephone-event": (
        ("telephone-event", 8000),
        ("telephone-event", 16000),
        ("telephone-event", 48000),
    ),
}


def supported_rtpmaps(names: Sequence[str]) -> list[tuple[str, int]]:
    """Expand configured codec names (case-insensitive) into `choose_codecs` pairs."""
    result: list[tuple[str, int]] = []
    for name in names:
        pairs = CODEC_NAMES.get(name.lower())
        if pairs is None:
            raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODEC_NAMES)}")
        result += [p for p in pairs if p not in result]
    return result


@dataclass(frozen=True, slots=True)
class AudioTerms:
    """What one negotiated audio stream runs on.

    `direction` is the *offerer's* effective direction (RFC 3264 §6.1): when it `sends`
    the participant talks into the mix, when it `receives` we send them the mix.
    """

    rtpmap: sdp.RtpMap
    formats: tuple[str, ...]  # what the answer's m-line lists: the voice codec first
    codec_key: tuple[str, int, str]  # codecs with equal keys make identical payloads
    telephone_event: int | None
    crypto: CryptoChoice | None
    remote: Address | None  # from c= and m= (None: 0.0.0.0 hold or port 0)
    direction: sdp.Direction
    rtcp_mux: bool

    @property
    def payload_type(self) -> int:
        return self.rtpmap.payload_type

    def codec_factory(self, tuning: CodecTuning = DEFAULT_TUNING) -> Callable[[], Codec]:
        r = self.rtpmap
        factory = codec_for(r.encoding, r.clock_rate, r.channels or 1, r.fmtp, tuning)
        if factory is None:  # answer_audio only chooses codecs the registry knows
            raise AssertionError(f"no codec for {r.rtpmap_value()}")
        return factory


def _codec_key(rtpmap: sdp.RtpMap) -> tuple[str, int, str]:
    """Encoder identity: name and rate, plus the fmtp parameters that change Opus output."""
    params = parse_fmtp(rtpmap.fmtp) if rtpmap.encoding.lower() == "opus" else {}
    relevant = ";".join(
        f"{k}={params[k]}" for k in ("maxaveragebitrate", "useinbandfec") if k in params
    )
    return (rtpmap.encoding.lower(), rtpmap.clock_rate, relevant)


def _remote(offer: sdp.SessionDescription, media: sdp.MediaDescription) -> Address | None:
    conn = offer.connection_of(media)
    if conn is None or conn.is_hold or media.port == 0:
        return None
    try:
        ip = ipaddress.ip_address(conn.address.split("/")[0])
    except ValueError:
        return None  # a host name: never resolved on the media path; latching finds them
    if ip.is_unspecified:
        return None
    return (str(ip), media.port)


def answer_audio(
    offer: sdp.SessionDescription,
    media_index: int,
    *,
    supported: Sequence[tuple[str, int]],
    srtp: SrtpPolicy,
    randbytes: Callable[[int], bytes],
    previous: AudioTerms | None = None,
) -> AudioTerms:
    """Choose codec and keys for `offer.media[media_index]`; raise AudioEngineError(488).

    Nothing is bound yet: a refused offer costs no port.

    RFC 3264 §6.1: the offerer's codec order wins and its payload type numbers are kept.
    RFC 4568 §7.1.2: an accepted crypto line is answered with the same tag and suite and
    our own key; a re-offer whose chosen key is unchanged keeps our key as well, so the
    stream goes on without a re-key (§7.1.4 lets either side keep its parameters).
    """
    if not 0 <= media_index < len(offer.media):
        raise AudioEngineError(488, f"no m-line {media_index} in the offer")
    media = offer.media[media_index]
    if media.media.lower() != "audio" or not media.is_rtp or media.rejected:
        raise AudioEngineError(488, "not an active RTP audio stream")
    chosen = sdp.choose_codecs(media, supported)
    if not chosen:
        raise AudioEngineError(488, "no common audio codec")
    voice = chosen[0]
    if codec_for(voice.encoding, voice.clock_rate, voice.channels or 1, voice.fmtp) is None:
        raise AudioEngineError(488, f"codec {voice.rtpmap_value()} is not available")
    telephone_event = next(
        (r.payload_type for r in chosen[1:] if r.encoding.lower() == "telephone-event"), None
    )
    try:
        crypto = answer_stream_crypto(
            media, srtp, randbytes, previous.crypto if previous is not None else None
        )
    except CryptoNegotiationError as exc:
        raise AudioEngineError(exc.status, str(exc)) from exc
    return AudioTerms(
        rtpmap=voice,
        formats=tuple(r.format for r in chosen),
        codec_key=_codec_key(voice),
        telephone_event=telephone_event,
        crypto=crypto,
        remote=_remote(offer, media),
        direction=offer.direction_of(media),
        rtcp_mux=media.rtcp_mux,
    )


def answer_stream_crypto(
    media: sdp.MediaDescription,
    srtp: SrtpPolicy,
    randbytes: Callable[[int], bytes],
    previous: CryptoChoice | None = None,
) -> CryptoChoice | None:
    """SDES keys for one RTP m-line (RFC 4568 §7.1.2), None for plain RTP; raises
    CryptoNegotiationError when the offer needs SRTP we cannot do, or we need it and the
    offer has none. A re-offer of the key we accepted before keeps ours (§7.1.4)."""
    offered = [
        " ".join([str(c.tag), c.suite, c.key_params, *c.session_params]) for c in media.cryptos()
    ]
    secure = "SAVP" in media.proto.upper()
    crypto = answer_crypto(offered, srtp, randbytes, secure_profile=secure)
    if crypto is not None and previous is not None and previous.remote == crypto.remote:
        return previous
    return crypto


def audio_accept(terms: AudioTerms, port: int) -> sdp.Accept:
    """The m-line answer for `terms` on our RTP `port` (RTCP on port + 1 unless muxed).

    We ask for sendrecv; `sdp.build_answer` narrows it to what the offer allows.
    """
    attributes = [sdp.Attribute("ptime", str(PTIME_MS))]
    if terms.rtcp_mux:
        attributes.append(sdp.Attribute("rtcp-mux"))  # RFC 5761 §5.1.1
    else:
        attributes.append(sdp.Attribute("rtcp", str(port + 1)))  # RFC 3605 §2.1
    if terms.crypto is not None:
        attributes.append(sdp.Attribute("crypto", str(terms.crypto.local)))
    return sdp.Accept(
        port=port,
        formats=list(terms.formats),
        direction=sdp.Direction.SENDRECV,
        attributes=attributes,
    )
