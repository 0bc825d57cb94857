"""The media half of the Jingle ↔ SIP bridge (control/xmpp/jinglemedia.py): a WebRTC peer
(aiortc, as a Jingle client's phone) calls a WebRtcLeg through Jingle contents that crossed
XML, and a plain-RTP phone (what a SIP UA is) talks on the leg's RTP side, directly in each of
the three bridged codecs, then through the embedded audio engine: each hears the other's tone
(FFT)."""

from __future__ import annotations

import asyncio
import random
from xml.etree import ElementTree as ET

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from control.media.codecs import Codec, G722Codec, OpusCodec, PcmuCodec
from control.media.engine import ParticipantId, RoomId
from control.media.mixer import EmbeddedMixer
from control.media.ports import PortAllocator
from control.media.tone import dominant_frequencies, tone_power
from control.sip import sdp
from control.xmpp.jingle import Action, IceTransport, Jingle, parse_jingle
from control.xmpp.jinglebuild import build_jingle
from control.xmpp.jinglemedia import WebRtcLeg
from control.xmpp.jinglesdp import jingle_to_sdp, sdp_to_jingle
from tests.peers.jinglepeer import RATE, Recorder, ToneTrack, loopback_only
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.rtp_tone import RtpToneClient
from tests.peers.wait import wait_until

pytestmark = pytest.mark.peer("aiortc")

XMPP_HZ, SIP_HZ = 600.0, 1000.0
# Through the mixer: the tones of tests/test_media_mixer.py, clear of each other's G.711
# quantisation products, so "not its own" can be read at the same -55 dB.
MIX_XMPP_HZ, MIX_SIP_HZ = 890.0, 1340.0
ORIGIN = sdp.Origin("-", "7", 1, "IN", "IP4", "127.0.0.1")
ROOM = RoomId("jingle-room")


def _wire(j: Jingle) -> Jingle:
    return parse_jingle(ET.fromstring(ET.tostring(build_jingle(j))))


class Phone:
    """An aiortc phone (what a Jingle client runs) connected to ``leg`` through Jingle
    contents that crossed XML both ways: its session-initiate, the leg's session-accept."""

    def __init__(self, freq: float) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.recorder = Recorder()
        self.tasks: list[asyncio.Task[None]] = []
        self.pc.on(
            "track", lambda t: self.tasks.append(asyncio.ensure_future(self.recorder.listen(t)))
        )
        self.pc.addTransceiver(ToneTrack(freq), direction="sendrecv")

    async def call(self, leg: WebRtcLeg) -> None:
        with loopback_only():
            await self.pc.setLocalDescription(await self.pc.createOffer())
            local = sdp.parse(self.pc.localDescription.sdp)
            contents, groups = sdp_to_jingle(local, author="initiator")
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
        await self.pc.setRemoteDescription(RTCSessionDescription(bytes(answer).decode(), "answer"))

    def tone(self, since: int | None = None) -> float:
        """The strongest frequency heard since sample ``since`` (else in the last second)."""
        pcm = self.recorder.pcm()
        (freq,) = dominant_frequencies(pcm[since:] if since is not None else pcm[-RATE:], RATE, 1)
        return freq

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()


@pytest.mark.parametrize(
    ("make", "pt"), [(PcmuCodec, 0), (G722Codec, 9), (OpusCodec, 111)], ids=["PCMU", "G722", "opus"]
)
async def test_webrtc_and_plain_rtp_hear_each_other(make: type[Codec], pt: int) -> None:
    leg = WebRtcLeg(make(), pt)
    await leg.open()
    rtp_phone = RtpToneClient(make(), pt)
    rtp_port = await rtp_phone.open()
    leg.connect_rtp(("127.0.0.1", rtp_port))
    phone = Phone(XMPP_HZ)
    try:
        await phone.call(leg)
        play = asyncio.ensure_future(rtp_phone.play(("127.0.0.1", leg.rtp_port), SIP_HZ, 6.0))
        rate = make().sample_rate
        assert await wait_until(
            lambda: phone.recorder.seconds() >= 2.0 and len(rtp_phone.collector.packets) >= 100,
            timeout=60,
        ), (phone.recorder.seconds(), len(rtp_phone.collector.packets), leg.state)
        (heard_by_sip,) = dominant_frequencies(rtp_phone.heard(make())[-rate:], rate, 1)
        assert abs(phone.tone() - SIP_HZ) < 15, phone.tone()
        assert abs(heard_by_sip - XMPP_HZ) < 15, heard_by_sip
        assert leg.packets_in > 0 and leg.packets_out > 0
        play.cancel()
    finally:
        await phone.close()
        await leg.close()
        rtp_phone.close()


async def test_through_the_audio_engine() -> None:
    """The leg as one participant of an embedded-mixer room, a plain RTP phone (G.722) as
    the other: each hears the other's tone through the mix (mix-minus: not its own)."""
    low = random.randrange(20000, 60000, 2)
    mixer = EmbeddedMixer(
        PortAllocator(low, low + 40),
        host="127.0.0.1",
        codecs=("opus", "G722", "PCMU", "telephone-event"),
        rtp_timeout=60.0,
        srtp="optional",
        rng=random.Random(3),
    )
    leg = WebRtcLeg(PcmuCodec(), 0)
    await leg.open()
    sip = RtpEndpoint("G722", 8000, 9)
    await sip.open()
    phone = Phone(MIX_XMPP_HZ)
    try:
        offer = sdp.parse(bytes(leg.rtp_offer(ORIGIN)))
        engine_answer = await mixer.attach(ROOM, ParticipantId("xmpp"), offer, 0)
        answer = sdp.build_answer(
            offer,
            [engine_answer.accept],
            origin=ORIGIN,
            connection=sdp.Connection.for_address(engine_answer.address),
        )
        leg.rtp_answered(sdp.parse(bytes(answer)))
        sip_offer = sip.offer()
        sip.answered(sip_offer, await mixer.attach(ROOM, ParticipantId("sip"), sip_offer, 0))
        await phone.call(leg)
        # Both directions run before the SIP phone talks: the leg plays to the XMPP phone
        # and has sent a second of the XMPP phone's audio into the mix.
        assert await wait_until(
            lambda: phone.recorder.seconds() >= 1.0 and leg.packets_out >= 50, timeout=60
        ), (phone.recorder.seconds(), leg.packets_out, leg.state)
        mark = phone.recorder.pcm().size  # what the phone hears from here on
        await sip.play(MIX_SIP_HZ, 3.0)
        heard = sip.heard(skip=0.4)
        assert heard.size > sip.sample_rate, "too little audio came back from the mix"
        assert tone_power(heard, sip.sample_rate, MIX_XMPP_HZ) > -30  # the XMPP side, mixed
        # Not its own: a leaked own tone reads about -10 dB; the transcoding path (Opus,
        # resampling, G.711, concealment of late packets on a loaded machine) leaves noise
        # near -55 dB, so the line is drawn where tests/test_media_mixer.py draws it for lossy
        # legs.
        assert tone_power(heard, sip.sample_rate, MIX_SIP_HZ) < -35
        assert abs(phone.tone(mark) - MIX_SIP_HZ) < 15, phone.tone(mark)
    finally:
        await phone.close()
        await leg.close()
        await mixer.close()
