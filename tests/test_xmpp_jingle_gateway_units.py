"""The Jingle gateway's pieces that need no peer: its [xmpp] keys, the SIP answer's codec
becoming the leg's, the counted swap of aioice's host addresses, and a SIP caller's CANCEL
of a ringing call (the retract at once; nothing when no propose went yet)."""

from __future__ import annotations

import asyncio
import random
from xml.etree import ElementTree as ET

import aioice.ice
import pytest

from control.config import ConfigError, parse_config
from control.media.codecs import G722Codec, PcmuCodec
from control.sip import sdp
from control.sip.uri import NameAddr, SipUri
from control.xmpp.addressing import Addressing
from control.xmpp.jingle import Content, Fingerprint, IceTransport, RawUdpTransport, RtpDescription
from control.xmpp.jinglegw import PLAIN_RTP, JingleGateway
from control.xmpp.jinglemedia import SIP_CODECS, WebRtcLeg, gathering_on, use_answer, webrtc_audio
from control.xmpp.jinglemessage import JingleMessage, read_jingle_message


def xmpp(**keys: object) -> dict[str, object]:
    return {"xmpp": {"component_jid": "sip.localhost", "component_secret": "s", **keys}}


def test_jingle_keys_are_parsed_and_validated() -> None:
    default = parse_config(xmpp()).xmpp
    assert (default.max_jingle_calls, default.jingle_ring_timeout) == (100, 60.0)
    assert default.jingle_ice_addresses == ()
    config = parse_config(
        xmpp(max_jingle_calls=2, jingle_ring_timeout=5, jingle_ice_addresses=["127.0.0.1", "::1"])
    ).xmpp
    assert (config.max_jingle_calls, config.jingle_ring_timeout) == (2, 5.0)
    assert config.jingle_ice_addresses == ("127.0.0.1", "::1")
    with pytest.raises(ConfigError, match="xmpp.max_jingle_calls"):
        parse_config(xmpp(max_jingle_calls=0))
    with pytest.raises(ConfigError, match="xmpp.jingle_ring_timeout"):
        parse_config(xmpp(jingle_ring_timeout=0))
    with pytest.raises(ConfigError, match=r"xmpp.jingle_ice_addresses\[0\]"):
        parse_config(xmpp(jingle_ice_addresses=["localhost"]))


def _answer(*rtpmaps: sdp.RtpMap, port: int = 4000) -> sdp.SessionDescription:
    media = sdp.audio_media(port, list(rtpmaps), ptime=20)
    origin = sdp.Origin("-", "1", 1, "IN", "IP4", "127.0.0.1")
    answer = sdp.build_offer(
        origin=origin, connection=sdp.Connection.for_address("127.0.0.1"), media=[media]
    )
    return sdp.parse(bytes(sdp.serialize(answer)))


def test_the_answers_codec_becomes_the_legs() -> None:
    leg = WebRtcLeg(PcmuCodec(), 0)
    use_answer(leg, _answer(sdp.RtpMap(9, "G722", 8000)))
    assert isinstance(leg.codec, G722Codec) and leg.payload_type == 9
    assert leg.rtp_remote == ("127.0.0.1", 4000)
    assert ("G722", 8000) in SIP_CODECS


def test_an_answer_outside_the_bridged_codecs_is_488() -> None:
    leg = WebRtcLeg(PcmuCodec(), 0)
    with pytest.raises(sdp.SdpError) as refused:
        use_answer(leg, _answer(sdp.RtpMap(8, "PCMA", 8000)))
    assert refused.value.status == 488
    with pytest.raises(sdp.SdpError):
        use_answer(leg, _answer(sdp.RtpMap(0, "PCMU", 8000), port=0))
    assert leg.rtp_remote is None


def test_gathering_on_swaps_aioices_addresses_until_the_last_gathering_ends() -> None:
    original = aioice.ice.get_host_addresses
    with gathering_on(()):
        assert aioice.ice.get_host_addresses is original  # nothing configured: aioice's own
    with gathering_on(["127.0.0.1"]):
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
        with gathering_on(["127.0.0.1"]):
            pass
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]  # one still gathers
    assert aioice.ice.get_host_addresses is original


# A SIP caller's CANCEL of its ringing call to an XMPP user, on fakes of the component and the
# call (the live versions with SIPp and baresip: tests/test_xmpp_jingle_gateway_cancel.py and
# tests/test_xmpp_jingle_gateway.py).

PCMU_OFFER = (
    b"v=0\r\no=romeo 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class _Component:
    """What the gateway sends to XMPP: the XEP-0353 payloads, in order."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, JingleMessage]] = []

    def send_payload(self, to: object, from_: object, children: list[ET.Element]) -> None:
        message = ET.Element("message")
        message.extend(children)
        m = read_jingle_message(message)
        assert m is not None
        self.sent.append((str(to), m))


class _Ua:
    rng = random.Random(7)

    def token(self, n: int) -> str:
        return "".join(self.rng.choice("abcdefghijklmnop") for _ in range(n))


class _Incoming:
    def __init__(self) -> None:
        self.cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Call:
    """The IncomingCall surface incoming_invite reads: a PCMU offer from romeo to juliet."""

    def __init__(self) -> None:
        self.incoming = _Incoming()
        self.offer = sdp.parse(PCMU_OFFER)
        self.request_uri = SipUri(host="xmpp.localhost", user="juliet")
        self.remote_identity = NameAddr(SipUri(host="sip.localhost", user="romeo"))
        self.rejected: list[int] = []

    @property
    def cancelled(self) -> bool:
        return self.incoming.cancelled.done()

    def ringing(self) -> None:
        pass

    def reject(self, status: int, reason: str | None = None, **_: object) -> None:
        self.rejected.append(status)


def _gateway(component: _Component) -> JingleGateway:
    addressing = Addressing(("sip.localhost",), ("xmpp.localhost",))
    return JingleGateway(
        _Ua(),  # type: ignore[arg-type]
        component,  # type: ignore[arg-type]
        addressing,
        ring_timeout=3600.0,  # the retract must not wait for it
    )


async def test_a_cancel_of_the_ringing_call_is_the_retract_at_once() -> None:
    """The gateway waits for the first of XMPP's answer and the CANCEL: with asyncio.wait's
    default (ALL_COMPLETED) the CANCEL alone waited out the ring timeout."""
    component = _Component()
    gateway = _gateway(component)
    call = _Call()
    ringing = asyncio.get_running_loop().create_task(gateway.incoming_invite(call))  # type: ignore[arg-type]
    while not component.sent:
        await asyncio.sleep(0.01)
    assert [m.kind for _, m in component.sent] == ["propose"]
    call.incoming.cancelled.set_result(None)  # what the UA does on the CANCEL (200, 487)
    await asyncio.wait_for(ringing, 30)  # far below the 3600 s ring timeout
    (to, propose), (_, retract) = component.sent
    assert to == "juliet@xmpp.localhost"
    assert retract.kind == "retract" and retract.id == propose.id
    assert retract.reason is not None and retract.reason.condition == "cancel"
    assert len(gateway) == 0 and call.rejected == []


async def test_a_cancel_before_the_propose_sends_nothing_to_xmpp() -> None:
    component = _Component()
    gateway = _gateway(component)
    call = _Call()
    call.incoming.cancelled.set_result(None)  # came while the call was being set up
    await asyncio.wait_for(gateway.incoming_invite(call), 30)  # type: ignore[arg-type]
    assert component.sent == [] and len(gateway) == 0


def test_the_leg_takes_audio_over_ice_with_dtls_only() -> None:
    """webrtc_audio: what aiortc can terminate; plain RTP ends the call with PLAIN_RTP (the
    live refusals: tests/test_xmpp_jingle_plain_rtp.py)."""
    audio = RtpDescription("audio")
    dtls = Fingerprint("sha-256", "AB:CD", "actpass")
    assert webrtc_audio(
        [Content("a", description=audio, transport=IceTransport("u", "p", (), dtls))]
    )
    assert not webrtc_audio([Content("a", description=audio, transport=RawUdpTransport())])
    assert not webrtc_audio([Content("a", description=audio, transport=IceTransport("u", "p"))])
    video = RtpDescription("video")
    assert not webrtc_audio(
        [Content("v", description=video, transport=IceTransport("u", "p", (), dtls))]
    )
    assert PLAIN_RTP.condition == "unsupported-transports"
