"""The Jingle gateway's pieces that need no peer: its [xmpp] keys, the SIP answer's codec
becoming the leg's, and the counted swap of aioice's host addresses."""

from __future__ import annotations

import aioice.ice
import pytest

from control.config import ConfigError, parse_config
from control.media.codecs import G722Codec, PcmuCodec
from control.sip import sdp
from control.xmpp.jinglegw import SIP_CODECS, _use_answer, gathering_on
from control.xmpp.jinglemedia import WebRtcLeg


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
    _use_answer(leg, _answer(sdp.RtpMap(9, "G722", 8000)))
    assert isinstance(leg.codec, G722Codec) and leg.payload_type == 9
    assert leg.rtp_remote == ("127.0.0.1", 4000)
    assert ("G722", 8000) in SIP_CODECS


def test_an_answer_outside_the_bridged_codecs_is_488() -> None:
    leg = WebRtcLeg(PcmuCodec(), 0)
    with pytest.raises(sdp.SdpError) as refused:
        _use_answer(leg, _answer(sdp.RtpMap(8, "PCMA", 8000)))
    assert refused.value.status == 488
    with pytest.raises(sdp.SdpError):
        _use_answer(leg, _answer(sdp.RtpMap(0, "PCMU", 8000), port=0))
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
