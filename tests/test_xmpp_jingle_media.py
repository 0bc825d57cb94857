"""The media half of the Jingle ↔ SIP bridge (control/xmpp/jinglemedia.py): a WebRTC peer
(aiortc, as a Jingle client's phone) calls a WebRtcLeg through Jingle contents that crossed
XML, and a plain-RTP phone (what a SIP UA or the audio engine is) talks on the leg's RTP side;
each hears the other's tone (FFT), in each of the three bridged codecs on the RTP side."""

from __future__ import annotations

import asyncio
from xml.etree import ElementTree as ET

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from control.media.codecs import Codec, G722Codec, OpusCodec, PcmuCodec
from control.media.tone import dominant_frequencies
from control.sip import sdp
from control.xmpp.jingle import Action, IceTransport, Jingle, parse_jingle
from control.xmpp.jinglebuild import build_jingle
from control.xmpp.jinglemedia import WebRtcLeg
from control.xmpp.jinglesdp import jingle_to_sdp, sdp_to_jingle
from tests.peers.jinglepeer import RATE, Recorder, ToneTrack, loopback_only
from tests.peers.rtp_tone import RtpToneClient
from tests.peers.wait import wait_until

pytestmark = pytest.mark.peer("aiortc")

XMPP_HZ, SIP_HZ = 600.0, 1000.0
ORIGIN = sdp.Origin("-", "7", 1, "IN", "IP4", "127.0.0.1")


def _wire(j: Jingle) -> Jingle:
    return parse_jingle(ET.fromstring(ET.tostring(build_jingle(j))))


@pytest.mark.parametrize(
    ("make", "pt"), [(PcmuCodec, 0), (G722Codec, 9), (OpusCodec, 111)], ids=["PCMU", "G722", "opus"]
)
async def test_webrtc_and_plain_rtp_hear_each_other(make: type[Codec], pt: int) -> None:
    leg = WebRtcLeg(make(), pt)
    await leg.open()
    phone = RtpToneClient(make(), pt)
    phone_port = await phone.open()
    leg.connect_rtp(("127.0.0.1", phone_port))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    recorder = Recorder()
    listening: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: listening.append(asyncio.ensure_future(recorder.listen(track))))
    pc.addTransceiver(ToneTrack(XMPP_HZ), direction="sendrecv")
    try:
        with loopback_only():
            await pc.setLocalDescription(await pc.createOffer())
            contents, groups = sdp_to_jingle(sdp.parse(pc.localDescription.sdp), author="initiator")
            offer = _wire(Jingle(Action.SESSION_INITIATE, "s1", contents=contents, groups=groups))
            answer_contents, answer_groups = await leg.answer(offer.contents, offer.groups)
        accept = _wire(
            Jingle(Action.SESSION_ACCEPT, "s1", contents=answer_contents, groups=answer_groups)
        )
        (content,) = accept.contents
        assert isinstance(content.transport, IceTransport)
        assert content.transport.fingerprint is not None
        assert content.transport.fingerprint.setup in ("active", "passive")
        answer = jingle_to_sdp(
            accept.contents, author="responder", origin=ORIGIN, groups=accept.groups
        )
        await pc.setRemoteDescription(RTCSessionDescription(bytes(answer).decode(), "answer"))
        play = asyncio.ensure_future(phone.play(("127.0.0.1", leg.rtp_port), SIP_HZ, 6.0))
        rate = make().sample_rate
        assert await wait_until(
            lambda: recorder.seconds() >= 2.0 and len(phone.collector.packets) >= 100, timeout=60
        ), (recorder.seconds(), len(phone.collector.packets), leg.state)
        (heard_by_xmpp,) = dominant_frequencies(recorder.pcm()[-RATE:], RATE, 1)
        (heard_by_sip,) = dominant_frequencies(phone.heard(make())[-rate:], rate, 1)
        assert abs(heard_by_xmpp - SIP_HZ) < 15, heard_by_xmpp
        assert abs(heard_by_sip - XMPP_HZ) < 15, heard_by_sip
        assert leg.packets_in > 0 and leg.packets_out > 0
        play.cancel()
    finally:
        for task in listening:
            task.cancel()
        await pc.close()
        await leg.close()
        phone.close()
