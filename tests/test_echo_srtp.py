"""The echo with SDES-SRTP (RFC 4568, RFC 3711), no sockets: the reflector and its keys.

The echo cannot send the caller's protected packets back as they are: under our SSRC they
fail authentication, under theirs they are replays. So each packet is unprotected with the
caller's key, given our SSRC and protected with our own key. The caller's side here is a
second `SrtpContext` with the keys the other way round, as a phone holds them.
"""

from __future__ import annotations

import asyncio
import random
from typing import cast

from control.echo.reflector import RtpReflector
from control.media.answer import answer_stream_crypto
from control.media.rtp import RtpPacket
from control.media.srtp import CryptoChoice, SrtpContext, SrtpPolicy, offer_crypto
from control.sip import sdp

OUR_SSRC = 0x0BADCAFE
CALLER = ("127.0.0.1", 40000)


class RecordingTransport:
    """Stands in for the datagram transport: keeps what the reflector sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def keys(seed: int) -> tuple[CryptoChoice, SrtpContext]:
    """Our negotiated choice for a caller's offer, and the caller's own context."""
    offered = offer_crypto(random.Random(seed).randbytes)[:1]
    offer = sdp.parse(
        (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=crypto:{offered[0]}\r\n"
        ).encode()
    )
    ours = answer_stream_crypto(
        offer.media[0], SrtpPolicy.OPTIONAL, random.Random(seed + 1).randbytes
    )
    assert ours is not None and ours.remote == offered[0]
    return ours, SrtpContext(local=ours.remote, remote=ours.local)


def reflector_with(choice: CryptoChoice) -> tuple[RtpReflector, RecordingTransport]:
    reflector = RtpReflector(OUR_SSRC)
    transport = RecordingTransport()
    reflector.connection_made(cast(asyncio.BaseTransport, transport))
    reflector.srtp = choice.context()
    return reflector, transport


def test_srtp_packet_comes_back_under_our_ssrc_and_key() -> None:
    ours, caller = keys(1)
    reflector, transport = reflector_with(ours)
    sent = [
        RtpPacket(
            payload_type=0, sequence=100 + i, timestamp=160 * i, ssrc=7, payload=bytes([i]) * 160
        )
        for i in range(3)
    ]
    for packet in sent:
        reflector.datagram_received(caller.protect(packet.serialize()), CALLER)
    assert reflector.packets_out == 3 and reflector.srtp_errors == 0
    for packet, (data, addr) in zip(sent, transport.sent, strict=True):
        assert addr == CALLER
        back = RtpPacket.parse(caller.unprotect(data))  # authenticates with our key
        assert back.ssrc == OUR_SSRC
        assert (back.sequence, back.payload) == (packet.sequence, packet.payload)


def test_packets_failing_srtp_are_counted_and_dropped() -> None:
    ours, caller = keys(2)
    reflector, transport = reflector_with(ours)
    packet = RtpPacket(payload_type=0, sequence=1, timestamp=0, ssrc=7, payload=b"\x55" * 160)
    protected = bytearray(caller.protect(packet.serialize()))
    protected[-1] ^= 0x01  # the authentication tag no longer matches
    reflector.datagram_received(bytes(protected), CALLER)
    reflector.datagram_received(packet.serialize(), CALLER)  # plain RTP on an SRTP stream
    assert transport.sent == [] and reflector.srtp_errors == 2


def test_reoffer_of_the_same_key_keeps_ours() -> None:
    ours, _ = keys(3)
    line = f"a=crypto:{ours.remote}\r\n"
    reoffer = sdp.parse(
        (
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{line}"
        ).encode()
    )
    again = answer_stream_crypto(
        reoffer.media[0], SrtpPolicy.OPTIONAL, random.Random(99).randbytes, ours
    )
    assert again is ours  # RFC 4568 §7.1.4: no re-key when nothing changed
