"""SDP model, parser and serializer (RFC 8866) and offer/answer (RFC 3264)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.sip.errors import SipError
from control.sip.sdp import (
    Accept,
    Attribute,
    Bandwidth,
    Connection,
    Crypto,
    Direction,
    Line,
    MediaDescription,
    Origin,
    Reject,
    RtpMap,
    SdpError,
    SdpSession,
    SessionDescription,
    Timing,
    accept_audio,
    audio_media,
    build_answer,
    build_offer,
    choose_codecs,
    parse,
    serialize,
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


# Blink (sipsimple) calling a SylkServer-style focus: SDES-SRTP audio plus MSRP chat over TLS.
BLINK_OFFER = sdp(
    "v=0",
    "o=- 3906170245 3906170245 IN IP4 10.0.0.21",
    "s=Blink 5.6.0 (Linux)",
    "c=IN IP4 10.0.0.21",
    "t=0 0",
    "m=audio 50018 RTP/SAVP 113 9 104 103 102 0 8 101",
    "a=rtcp:50019",
    "a=rtpmap:113 opus/48000/2",
    "a=fmtp:113 useinbandfec=1",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:104 speex/32000",
    "a=rtpmap:103 speex/16000",
    "a=rtpmap:102 speex/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:8nGdA+Fxj9xjBjfNiRh6iMYZpqbdmr5ItH4vDHwo",
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:2ZNAh+3g+/r8hfxrf8ZTyS4cLiNs2TGlQv6pBOGN",
    "a=zrtp-hash:1.10 5c7f0b2e8a1d4c3b9f6e7d8c9b0a1f2e3d4c5b6a79880716253443526170819f",
    "a=sendrecv",
    "m=message 2855 TCP/TLS/MSRP *",
    "a=path:msrps://10.0.0.21:2855/a6d0b1c39e2f1b5c4a7d;tcp",
    "a=accept-types:message/cpim text/* application/im-iscomposing+xml",
    "a=accept-wrapped-types:*",
    "a=setup:active",
    "a=chatroom:nickname private-messages com.ag-projects.screen-sharing",
)

BARESIP_OFFER = sdp(
    "v=0",
    "o=- 2890844526 2890844527 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "a=tool:baresip 1.0.0",
    "m=audio 10000 RTP/AVP 96 9 0 8 101",
    "b=AS:128",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 stereo=1;sprop-stereo=1",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=label:1",
    "a=ssrc:1425163342 cname:f9f1f5a4-6c3c-4bd2-a3b1-2f5c2b8e9d10",
    "a=rtcp-rsize",
    "a=ptime:20",
)

SIPP_OFFER = sdp(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)

# SIPp playing /usr/share/sip-tester/g711a.pcap: static PCMA with no rtpmap, 30 ms packets.
SIPP_PCAP_OFFER = sdp(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 8 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:30",
)

# Everything RFC 8866 §5 allows, in its order, plus lines this parser does not know.
FULL_SDP = sdp(
    "v=0",
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SDP Seminar",
    "i=A Seminar on the session description protocol",
    "u=http://www.example.com/seminars/sdp.pdf",
    "e=j.doe@example.com (Jane Doe)",
    "p=+1 617 555-6011",
    "c=IN IP4 224.2.17.12/127",
    "b=CT:1000",
    "t=2873397496 2873404696",
    "r=7d 1h 0 25h",
    "t=0 0",
    "z=2882844526 -1h 2898848070 0",
    "k=prompt",
    "a=recvonly",
    "a=x-unknown",
    "x=session-level unknown line",
    "m=audio 49170/2 RTP/AVP 0",
    "i=voice",
    "c=IN IP6 ff15::101/3",
    "b=AS:64",
    "k=prompt",
    "a=x-vendor:  two spaces kept ",
    "m=video 51372 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
    "y=0100000001",
    "f=v/2/4///a///",
)

VECTORS = {
    "blink": BLINK_OFFER,
    "baresip": BARESIP_OFFER,
    "sipp": SIPP_OFFER,
    "sipp-pcap": SIPP_PCAP_OFFER,
    "full": FULL_SDP,
}


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("name", VECTORS)
def test_round_trip_is_byte_exact(name: str) -> None:
    data = VECTORS[name]
    assert serialize(parse(data)) == data
    assert bytes(SessionDescription.parse(data)) == data


@pytest.mark.parametrize("name", VECTORS)
def test_bare_lf_and_str_input_give_the_same_model(name: str) -> None:
    data = VECTORS[name]
    assert parse(data.replace(b"\r\n", b"\n")) == parse(data)
    assert parse(data.decode()) == parse(data)
    assert serialize(parse(data.replace(b"\r\n", b"\n"))) == data


def test_missing_final_crlf_is_accepted() -> None:
    assert serialize(parse(SIPP_OFFER.rstrip(b"\r\n"))) == SIPP_OFFER


def test_blink_offer_fields() -> None:
    d = parse(BLINK_OFFER)
    assert d.origin == Origin("-", "3906170245", 3906170245, "IN", "IP4", "10.0.0.21")
    assert d.session_name == "Blink 5.6.0 (Linux)"
    assert d.connection == Connection("IN", "IP4", "10.0.0.21")
    assert d.timings == [Timing(0, 0)]
    assert [m.media for m in d.media] == ["audio", "message"]

    audio, chat = d.media
    assert (audio.port, audio.port_count, audio.proto) == (50018, None, "RTP/SAVP")
    assert audio.formats == ["113", "9", "104", "103", "102", "0", "8", "101"]
    assert audio.rtcp == 50019
    assert audio.direction is Direction.SENDRECV
    assert audio.rtpmaps()[:2] == [
        RtpMap(113, "opus", 48000, 2, "useinbandfec=1"),
        RtpMap(9, "G722", 8000),
    ]
    assert [r.encoding for r in audio.rtpmaps()] == [
        "opus", "G722", "speex", "speex", "speex", "PCMU", "PCMA", "telephone-event",
    ]  # fmt: skip
    assert audio.fmtp("101") == "0-16"
    assert audio.cryptos() == [
        Crypto(1, "AES_CM_128_HMAC_SHA1_80", "inline:8nGdA+Fxj9xjBjfNiRh6iMYZpqbdmr5ItH4vDHwo"),
        Crypto(2, "AES_CM_128_HMAC_SHA1_32", "inline:2ZNAh+3g+/r8hfxrf8ZTyS4cLiNs2TGlQv6pBOGN"),
    ]
    assert d.connection_of(audio) == d.connection

    assert (chat.port, chat.proto, chat.formats) == (2855, "TCP/TLS/MSRP", ["*"])
    assert not chat.is_rtp and chat.rtpmaps() == []
    assert chat.get("path") == "msrps://10.0.0.21:2855/a6d0b1c39e2f1b5c4a7d;tcp"
    assert chat.get("accept-types") == "message/cpim text/* application/im-iscomposing+xml"
    assert "private-messages" in (chat.get("chatroom") or "").split()


def test_full_sdp_fields_and_unknown_lines() -> None:
    d = parse(FULL_SDP)
    assert d.information == "A Seminar on the session description protocol"
    assert d.uri == "http://www.example.com/seminars/sdp.pdf"
    assert d.emails == ["j.doe@example.com (Jane Doe)"]
    assert d.phones == ["+1 617 555-6011"]
    assert d.connection == Connection("IN", "IP4", "224.2.17.12/127")
    assert d.bandwidths == [Bandwidth("CT", 1000)]
    assert d.timings == [Timing(2873397496, 2873404696, ("7d 1h 0 25h",)), Timing(0, 0)]
    assert d.zone == "2882844526 -1h 2898848070 0"
    assert d.key == "prompt"
    assert d.attributes == [Attribute("recvonly"), Attribute("x-unknown")]
    assert d.other_lines == [Line("x", "session-level unknown line")]
    audio, video = d.media
    assert (audio.port, audio.port_count, audio.information) == (49170, 2, "voice")
    assert audio.connection == Connection("IN", "IP6", "ff15::101/3")
    assert audio.bandwidths == [Bandwidth("AS", 64)]
    assert audio.get("x-vendor") == "  two spaces kept "
    assert video.other_lines == [Line("y", "0100000001"), Line("f", "v/2/4///a///")]
    # Session-level recvonly applies to both m-lines.
    assert d.direction_of(audio) is Direction.RECVONLY
    assert d.direction_of(video) is Direction.RECVONLY


def test_lines_out_of_order_are_accepted_and_normalised() -> None:
    # Some devices put a= before t= and c= after b=; the meaning survives.
    d = parse(sdp("v=0", "o=- 1 1 IN IP4 h", "a=tool:x", "s=-", "t=0 0", "m=audio 1 RTP/AVP 0"))
    assert d.attributes == [Attribute("tool", "x")]
    assert serialize(d) == sdp(
        "v=0", "o=- 1 1 IN IP4 h", "s=-", "t=0 0", "a=tool:x", "m=audio 1 RTP/AVP 0"
    )


def test_missing_t_line_is_tolerated() -> None:
    data = sdp("v=0", "o=- 1 1 IN IP4 h", "s=", "m=audio 1 RTP/AVP 0")
    d = parse(data)
    assert d.timings == [] and d.session_name == ""
    assert serialize(d) == data


def test_attribute_order_is_preserved() -> None:
    audio = parse(BARESIP_OFFER).media[0]
    assert [a.name for a in audio.attributes] == [
        "rtpmap", "fmtp", "rtpmap", "rtpmap", "rtpmap", "rtpmap", "fmtp",
        "sendrecv", "label", "ssrc", "rtcp-rsize", "ptime",
    ]  # fmt: skip


def test_non_utf8_bytes_pass_through() -> None:
    data = sdp("v=0", "o=- 1 1 IN IP4 h", "s=Caf\xe9", "t=0 0").replace(b"\xc3\xa9", b"\xe9")
    assert b"\xe9" in data
    assert serialize(parse(data)) == data


ERRORS = {
    "empty": (b"", 400),
    "no v=": (sdp("o=- 1 1 IN IP4 h", "s=-", "t=0 0"), 400),
    "garbage": (b"\x89PNG\r\n\x1a\n", 400),
    "NUL": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-\x00", "t=0 0"), 400),
    "v=1": (sdp("v=1", "o=- 1 1 IN IP4 h", "s=-"), 488),
    "v repeated": (sdp("v=0", "v=0", "o=- 1 1 IN IP4 h", "s=-"), 488),
    "no o=": (sdp("v=0", "s=-", "t=0 0"), 488),
    "no s=": (sdp("v=0", "o=- 1 1 IN IP4 h", "t=0 0"), 488),
    "o= short": (sdp("v=0", "o=- 1 1 IN IP4", "s=-"), 488),
    "o= version": (sdp("v=0", "o=- 1 x IN IP4 h", "s=-"), 488),
    "o= repeated": (sdp("v=0", "o=- 1 1 IN IP4 h", "o=- 1 1 IN IP4 h", "s=-"), 488),
    "o= in media": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio 1 RTP/AVP 0", "o=x"), 488),
    "not a line": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "hello"), 488),
    "upper type": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "A=x"), 488),
    "bare CR": (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=a\rb\r\n", 488),
    "m= short": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio 1"), 488),
    "m= port word": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio x RTP/AVP 0"), 488),
    "m= port big": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio 65536 RTP/AVP 0"), 488),
    "m= port neg": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio -1 RTP/AVP 0"), 488),
    "m= port arabic": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio ١٢ RTP/AVP 0"), 488),
    "m= count 0": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio 1/0 RTP/AVP 0"), 488),
    "m= count empty": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio 1/ RTP/AVP 0"), 488),
    "c= short": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4"), 488),
    "c= repeated": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4 a", "c=IN IP4 b"), 488),
    "b= word": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "b=AS:lots"), 488),
    "b= no colon": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "b=AS"), 488),
    "t= word": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "t=now 0"), 488),
    "t= huge": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "t=" + "9" * 5000 + " 0"), 488),
    "r= first": (sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "r=7d 1h 0"), 488),
}


@pytest.mark.parametrize("case", ERRORS)
def test_parse_errors_carry_a_status(case: str) -> None:
    data, status = ERRORS[case]
    with pytest.raises(SdpError) as info:
        parse(data)
    assert info.value.status == status
    assert isinstance(info.value, SipError) and info.value.reason


def test_size_limit_is_a_parameter() -> None:
    with pytest.raises(SdpError) as info:
        parse(BLINK_OFFER, max_size=len(BLINK_OFFER) - 1)
    assert info.value.status == 413
    assert parse(BLINK_OFFER, max_size=len(BLINK_OFFER)).session_name.startswith("Blink")
    with pytest.raises(SdpError):
        parse(SIPP_OFFER + b"a=x\r\n" * 20000)  # > 64 KiB default


def test_serialize_refuses_line_injection() -> None:
    d = parse(SIPP_OFFER)
    d.session_name = "evil\r\nm=audio 1 RTP/AVP 0"
    with pytest.raises(ValueError):
        serialize(d)


# ---------------------------------------------------------------------- media helpers


def test_static_payload_types_without_rtpmap() -> None:
    m = parse(sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio 1 RTP/AVP 0 8 9 3 18 13 77")).media[0]
    assert m.rtpmaps() == [
        RtpMap(0, "PCMU", 8000),
        RtpMap(8, "PCMA", 8000),
        RtpMap(9, "G722", 8000),  # RFC 3551 §4.5.2: 8000 clock although it samples at 16 kHz
        RtpMap(3, "GSM", 8000),
        RtpMap(18, "G729", 8000),
        RtpMap(13, "CN", 8000),
    ]  # 77 is dynamic without an rtpmap: left out


def test_rtpmap_overrides_static_and_malformed_ones_are_skipped() -> None:
    m = MediaDescription(
        "audio",
        1,
        None,
        "RTP/AVP",
        ["0", "96", "97", "98"],
        attributes=[
            Attribute("rtpmap", "96 opus/48000/2"),
            Attribute("rtpmap", "97 speex"),  # no clock rate
            Attribute("rtpmap", "98 iLBC/x"),
            Attribute("rtpmap", "0 PCMU/8000/1"),
            Attribute("fmtp", "96 useinbandfec=1; stereo=0"),
        ],
    )
    assert m.rtpmaps() == [
        RtpMap(0, "PCMU", 8000, 1),
        RtpMap(96, "opus", 48000, 2, "useinbandfec=1; stereo=0"),
    ]


def test_rtpmaps_follow_changes_made_after_a_first_read() -> None:
    m = parse(BARESIP_OFFER).media[0]
    first = m.rtpmaps()
    first.clear()  # the caller's list: the next read is whole again
    assert len(m.rtpmaps()) == 5
    m.attributes[m.attributes.index(Attribute("rtpmap", "0 PCMU/8000"))] = Attribute(
        "rtpmap", "0 PCMU/16000"
    )
    assert RtpMap(0, "PCMU", 16000) in m.rtpmaps()
    m.formats.append("8")
    m.attributes.append(Attribute("fmtp", "8 mode=x"))
    assert m.rtpmaps()[-1] == RtpMap(8, "PCMA", 8000, None, "mode=x")
    m.proto = "UDP/TLS/MSRP"
    assert m.rtpmaps() == []


def test_attribute_access() -> None:
    m = parse(BARESIP_OFFER).media[0]
    assert m.get("ptime") == "20" and m.ptime == 20
    assert m.get("rtcp-rsize") is None and m.has("rtcp-rsize")
    assert m.get("nothing") is None and not m.has("nothing")
    assert m.get_all("fmtp") == ["96 stereo=1;sprop-stereo=1", "101 0-15"]
    assert m.get_all("rtcp-rsize") == [""]
    assert m.rtcp is None and not m.rtcp_mux
    m.set("ptime", "40")
    assert m.ptime == 40 and m.get_all("ptime") == ["40"]
    m.set("rtcp-mux")
    assert m.rtcp_mux and m.attributes[-1] == Attribute("rtcp-mux")
    assert m.remove("rtpmap") == 5 and m.rtpmaps() == [
        RtpMap(9, "G722", 8000),
        RtpMap(0, "PCMU", 8000),
        RtpMap(8, "PCMA", 8000),
    ]
    m.attributes = [Attribute("ptime", "20.0"), Attribute("rtcp", "9001 IN IP4 10.0.0.1")]
    assert m.ptime == 20 and m.rtcp == 9001
    m.attributes = [Attribute("ptime", "soon"), Attribute("rtcp", "")]
    assert m.ptime is None and m.rtcp is None


def test_connection_media_level_overrides_session_level() -> None:
    d = parse(
        sdp(
            "v=0",
            "o=- 1 1 IN IP4 h",
            "s=-",
            "c=IN IP4 10.0.0.1",
            "t=0 0",
            "m=audio 1 RTP/AVP 0",
            "m=audio 2 RTP/AVP 0",
            "c=IN IP4 10.0.0.2",
        )
    )
    assert [d.connection_of(m).address for m in d.media if d.connection_of(m)] == [
        "10.0.0.1",
        "10.0.0.2",
    ]


def offer_with(*extra: str, session: tuple[str, ...] = (), conn: str = "10.0.0.1") -> bytes:
    return sdp(
        "v=0",
        "o=- 1 1 IN IP4 h",
        "s=-",
        f"c=IN IP4 {conn}",
        "t=0 0",
        *session,
        "m=audio 4000 RTP/AVP 0",
        *extra,
    )


HOLD_CASES = {
    "default": (offer_with(), Direction.SENDRECV, False),
    "sendonly": (offer_with("a=sendonly"), Direction.SENDONLY, True),
    "inactive": (offer_with("a=inactive"), Direction.INACTIVE, True),
    "recvonly": (offer_with("a=recvonly"), Direction.RECVONLY, False),
    "session sendonly": (offer_with(session=("a=sendonly",)), Direction.SENDONLY, True),
    "media overrides session": (
        offer_with("a=sendrecv", session=("a=inactive",)),
        Direction.SENDRECV,
        False,
    ),
    "rfc2543 session c": (offer_with(conn="0.0.0.0"), Direction.SENDONLY, True),
    "rfc2543 media c": (offer_with("c=IN IP4 0.0.0.0"), Direction.SENDONLY, True),
    "rfc2543 + recvonly": (offer_with("a=recvonly", conn="0.0.0.0"), Direction.INACTIVE, True),
}


@pytest.mark.parametrize("case", HOLD_CASES)
def test_hold_variants(case: str) -> None:
    data, direction, hold = HOLD_CASES[case]
    d = parse(data)
    assert d.direction_of(d.media[0]) is direction
    assert d.is_hold(d.media[0]) is hold


def test_direction_reversal() -> None:
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.RECVONLY.reversed() is Direction.SENDONLY
    assert Direction.SENDRECV.reversed() is Direction.SENDRECV
    assert Direction.INACTIVE.reversed() is Direction.INACTIVE


# -------------------------------------------------------------------------- codec choice

OURS = [("PCMU", 8000), ("PCMA", 8000), ("G722", 8000), ("telephone-event", 8000)]


def test_choose_codec_honours_offerer_order_and_keeps_telephone_event() -> None:
    audio = parse(BLINK_OFFER).media[0]
    assert choose_codecs(audio, OURS) == [
        RtpMap(9, "G722", 8000),
        RtpMap(101, "telephone-event", 8000, None, "0-16"),
    ]
    assert choose_codecs(audio, OURS, offerer_order=False) == [
        RtpMap(0, "PCMU", 8000),
        RtpMap(101, "telephone-event", 8000, None, "0-16"),
    ]


def test_choose_codec_keeps_dynamic_payload_types() -> None:
    audio = parse(BLINK_OFFER).media[0]
    ours = [("SPEEX", 16000), ("opus", 48000), ("telephone-event", 8000)]
    assert choose_codecs(audio, ours) == [RtpMap(113, "opus", 48000, 2, "useinbandfec=1")]
    assert choose_codecs(audio, ours, offerer_order=False) == [
        RtpMap(103, "speex", 16000),
    ]  # telephone-event/8000 does not match a 16 kHz clock


def test_choose_codec_without_telephone_event_and_without_match() -> None:
    audio = parse(SIPP_OFFER).media[0]
    assert choose_codecs(audio, OURS) == [RtpMap(0, "PCMU", 8000)]
    assert choose_codecs(audio, [("G722", 8000)]) == []
    assert isinstance(accept_audio(audio, [("G722", 8000)], port=4000), Reject)
    pcap = parse(SIPP_PCAP_OFFER).media[0]
    assert choose_codecs(pcap, OURS) == [
        RtpMap(8, "PCMA", 8000),
        RtpMap(101, "telephone-event", 8000, None, "0-15"),
    ]


def test_telephone_event_only_is_no_codec() -> None:
    event = Attribute("rtpmap", "101 telephone-event/8000")
    m = MediaDescription("audio", 1, None, "RTP/AVP", ["101"], attributes=[event])
    assert choose_codecs(m, OURS) == []


# ------------------------------------------------------------------------- offer/answer


def test_sipp_answer_exact_bytes() -> None:
    session = SdpSession(sess_id=1000, address="127.0.0.2")
    offer = parse(SIPP_OFFER)
    answer = session.answer(offer, [accept_audio(offer.media[0], OURS, port=40000)])
    assert serialize(answer) == sdp(
        "v=0",
        "o=- 1000 1000 IN IP4 127.0.0.2",
        "s=-",
        "c=IN IP4 127.0.0.2",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=sendrecv",
    )


def test_blink_answer_accepts_audio_and_rejects_chat() -> None:
    offer = parse(BLINK_OFFER)
    audio = offer.media[0]
    crypto = audio.cryptos()[0]
    ours_key = Attribute(
        "crypto", f"1 {crypto.suite} inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    )
    decision = accept_audio(
        audio, OURS, port=30000, attributes=[Attribute("rtcp", "30001"), ours_key]
    )
    answer = build_answer(
        offer,
        [decision, Reject()],
        origin=Origin("-", "7", 7, "IN", "IP4", "192.0.2.1"),
        connection=Connection.for_address("192.0.2.1"),
    )
    assert serialize(answer) == sdp(
        "v=0",
        "o=- 7 7 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 30000 RTP/SAVP 9 101",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=rtcp:30001",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "a=sendrecv",
        "m=message 0 TCP/TLS/MSRP *",
    )
    assert parse(serialize(answer)) == answer


def test_answer_accepting_msrp_and_keeping_order() -> None:
    offer = parse(BLINK_OFFER)
    path = Attribute("path", "msrps://192.0.2.1:2855/xyz;tcp")
    answer = build_answer(
        offer,
        [Reject(), Accept(2855, ["*"], attributes=[path, Attribute("sendrecv")])],
        origin=Origin("-", "7", 7, "IN", "IP4", "192.0.2.1"),
        connection=Connection.for_address("192.0.2.1"),
    )
    assert [(m.media, m.port, m.proto, m.formats) for m in answer.media] == [
        ("audio", 0, "RTP/SAVP", ["113"]),
        ("message", 2855, "TCP/TLS/MSRP", ["*"]),
    ]
    # No rtpmap for MSRP; one direction attribute, not the app's duplicate.
    assert answer.media[1].attributes == [path, Attribute("sendrecv")]


def test_app_supplied_rtpmap_and_fmtp_replace_the_offered_ones() -> None:
    offer = parse(BARESIP_OFFER)
    answer = build_answer(
        offer,
        [Accept(20000, ["96"], attributes=[Attribute("fmtp", "96 useinbandfec=1")])],
        origin=Origin("-", "1", 1, "IN", "IP4", "h"),
        connection=Connection.for_address("h"),
    )
    assert answer.media[0].attributes == [
        Attribute("rtpmap", "96 opus/48000/2"),
        Attribute("fmtp", "96 useinbandfec=1"),
        Attribute("sendrecv"),
    ]


@pytest.mark.parametrize(
    ("offered", "wanted", "answered"),
    [
        (Direction.SENDRECV, Direction.SENDRECV, Direction.SENDRECV),
        (Direction.SENDONLY, Direction.SENDRECV, Direction.RECVONLY),
        (Direction.RECVONLY, Direction.SENDRECV, Direction.SENDONLY),
        (Direction.INACTIVE, Direction.SENDRECV, Direction.INACTIVE),
        (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDONLY),
        (Direction.SENDRECV, Direction.RECVONLY, Direction.RECVONLY),
        (Direction.SENDRECV, Direction.INACTIVE, Direction.INACTIVE),
        (Direction.SENDONLY, Direction.SENDONLY, Direction.INACTIVE),
        (Direction.RECVONLY, Direction.RECVONLY, Direction.INACTIVE),
    ],
)
def test_answer_direction_mirrors_the_offer(
    offered: Direction, wanted: Direction, answered: Direction
) -> None:
    offer = parse(offer_with(f"a={offered}"))
    answer = build_answer(
        offer,
        [Accept(5000, ["0"], direction=wanted)],
        origin=Origin("-", "1", 1, "IN", "IP4", "h"),
        connection=Connection.for_address("h"),
    )
    assert answer.media[0].direction is answered
    assert answer.media[0].get_all(str(answered)) == [""]


def test_rfc2543_hold_offer_gets_recvonly_answer() -> None:
    offer = parse(offer_with(conn="0.0.0.0"))
    answer = build_answer(
        offer,
        [Accept(5000, ["0"])],
        origin=Origin("-", "1", 1, "IN", "IP4", "h"),
        connection=Connection.for_address("h"),
    )
    assert answer.media[0].direction is Direction.RECVONLY


def test_disabled_offer_stream_stays_rejected() -> None:
    offer = parse(
        sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4 h", "t=0 0", "m=video 0 RTP/AVP 31 34")
    )
    answer = build_answer(
        offer,
        [Accept(5000, ["31"])],
        origin=Origin("-", "1", 1, "IN", "IP4", "h"),
        connection=Connection.for_address("h"),
    )
    assert answer.media == [MediaDescription("video", 0, None, "RTP/AVP", ["31"])]


def test_answer_keeps_offer_timing_and_checks_decision_count() -> None:
    offer = parse(FULL_SDP)
    origin = Origin("-", "1", 1, "IN", "IP6", "::1")
    conn = Connection.for_address("::1")
    assert conn == Connection("IN", "IP6", "::1")
    answer = build_answer(offer, [Reject(), Reject()], origin=origin, connection=conn)
    assert answer.timings == offer.timings
    with pytest.raises(ValueError):
        build_answer(offer, [Reject()], origin=origin, connection=conn)
    with pytest.raises(ValueError):
        build_answer(offer, [Accept(1, []), Reject()], origin=origin, connection=conn)
    with pytest.raises(ValueError):
        build_answer(offer, [Accept(1, "96"), Reject()], origin=origin, connection=conn)


def test_audio_media_offer_assigns_static_and_dynamic_payload_types() -> None:
    origin = Origin("-", "42", 42, "IN", "IP4", "192.0.2.1")
    audio = audio_media(
        4000,
        [("opus", 48000), ("G722", 8000), ("PCMU", 8000), ("telephone-event", 8000)],
        ptime=20,
    )
    offer = build_offer(
        origin=origin, connection=Connection.for_address("192.0.2.1"), media=[audio]
    )
    assert serialize(offer) == sdp(
        "v=0",
        "o=- 42 42 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 4000 RTP/AVP 96 9 0 97",
        "a=rtpmap:96 opus/48000",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:97 telephone-event/8000",
        "a=fmtp:97 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )


def test_audio_media_respects_fixed_payload_types() -> None:
    audio = audio_media(
        4000,
        [RtpMap(96, "opus", 48000, 2, "useinbandfec=1"), ("speex", 16000), ("PCMA", 8000)],
        proto="RTP/SAVP",
        direction=Direction.SENDONLY,
    )
    assert audio.formats == ["96", "97", "8"]
    assert audio.proto == "RTP/SAVP" and audio.direction is Direction.SENDONLY
    assert audio.rtpmaps()[0] == RtpMap(96, "opus", 48000, 2, "useinbandfec=1")


# ---------------------------------------------------------------------------- SdpSession


def test_session_version_increments_only_on_change() -> None:
    session = SdpSession(sess_id=5555, address="192.0.2.1", initial_version=1)
    offer = parse(SIPP_OFFER)
    first = session.answer(offer, [Accept(4000, ["0"])])
    assert first.origin == Origin("-", "5555", 1, "IN", "IP4", "192.0.2.1")
    # Session refresh: same offer, same answer, same version (RFC 3264 §8).
    assert not session.remote_changed(offer)
    again = session.answer(offer, [Accept(4000, ["0"])])
    assert again.origin.sess_version == 1 and again == first
    # Hold: changed answer, version + 1, sess-id unchanged.
    held = parse(SIPP_OFFER.replace(b"a=rtpmap:0 PCMU/8000", b"a=sendonly"))
    held.origin = Origin("user1", "53655765", 2353687638, "IN", "IP4", "127.0.0.1")
    assert session.remote_changed(held)
    answer = session.answer(held, [Accept(4000, ["0"])])
    assert answer.origin.sess_version == 2 and answer.origin.sess_id == "5555"
    assert answer.media[0].direction is Direction.RECVONLY
    assert session.local == answer and session.remote == held
    # Our own re-offer (e.g. adding chat): version 3.
    reoffer = session.offer(
        [
            audio_media(4000, [("PCMU", 8000)]),
            MediaDescription("message", 2855, None, "TCP/MSRP", ["*"]),
        ]
    )
    assert reoffer.origin.sess_version == 3
    session.offer_rejected()
    # The rejected version is not reused.
    assert session.offer([audio_media(4002, [("PCMU", 8000)])]).origin.sess_version == 4


def test_answer_body_is_the_serialised_answer_and_what_stamp_compares() -> None:
    session = SdpSession(sess_id=5555, address="192.0.2.1", initial_version=1)
    offer = parse(SIPP_OFFER)
    body = session.answer_body(offer, [Accept(4000, ["0"])])
    assert session.local is not None and body == serialize(session.local) == session.sent
    assert session.answer_body(offer, [Accept(4000, ["0"])]) == body  # refresh: version 1
    # The answer we were given, changed in place, is not what we sent: a new answer with
    # the old content is compared with the bytes sent, not with the changed model.
    session.local.media[0].port = 4002
    assert session.answer_body(offer, [Accept(4000, ["0"])]) == body
    changed = session.answer_body(offer, [Accept(4002, ["0"])])
    assert parse(changed).origin.sess_version == 2


def test_session_offer_answer_cycle_and_m_line_rules() -> None:
    session = SdpSession(sess_id=900, address="::1", username="chorus", session_name="Chorus")
    offer = session.offer([audio_media(4000, [("PCMU", 8000)])])
    assert offer.origin == Origin("chorus", "900", 900, "IN", "IP6", "::1")
    assert offer.session_name == "Chorus" and offer.connection == Connection("IN", "IP6", "::1")
    with pytest.raises(SdpError):
        session.answer_received(parse(BLINK_OFFER))  # two m-lines for one
    session.answer_received(parse(SIPP_OFFER))
    assert session.local == offer and session.remote == parse(SIPP_OFFER)
    with pytest.raises(ValueError):
        session.answer_received(parse(SIPP_OFFER))  # nothing outstanding
    with pytest.raises(ValueError):
        session.offer([])  # RFC 3264 §8: cannot drop an m-line
    with pytest.raises(SdpError) as info:
        session.answer(parse(sdp("v=0", "o=- 1 2 IN IP4 h", "s=-", "t=0 0")), [])
    assert info.value.status == 488


# --------------------------------------------------------------------------- hypothesis

TOKEN = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8
)
TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
    max_size=12,
)
NUMBER = st.integers(min_value=0, max_value=10**20 - 1)
CONNECTION = st.builds(Connection, TOKEN, TOKEN, TOKEN)
BANDWIDTHS = st.lists(
    st.builds(Bandwidth, TEXT.filter(lambda s: s and ":" not in s), NUMBER), max_size=2
)
ATTRIBUTES = st.lists(
    st.builds(Attribute, TEXT.map(lambda s: s.replace(":", "")), st.none() | TEXT), max_size=4
)
OTHER = st.lists(st.builds(Line, st.sampled_from("fghjlnqwxy"), TEXT), max_size=2)
MEDIA = st.builds(
    MediaDescription,
    TOKEN,
    st.integers(0, 65535),
    st.none() | st.integers(1, 65535),
    TOKEN,
    st.lists(TOKEN, max_size=4),
    connection=st.none() | CONNECTION,
    bandwidths=BANDWIDTHS,
    attributes=ATTRIBUTES,
    information=st.none() | TEXT,
    key=st.none() | TEXT,
    other_lines=OTHER,
)
DESCRIPTION = st.builds(
    SessionDescription,
    origin=st.builds(Origin, TOKEN, TOKEN, NUMBER, TOKEN, TOKEN, TOKEN),
    session_name=TEXT,
    information=st.none() | TEXT,
    uri=st.none() | TEXT,
    emails=st.lists(TEXT, max_size=2),
    phones=st.lists(TEXT, max_size=2),
    connection=st.none() | CONNECTION,
    bandwidths=BANDWIDTHS,
    timings=st.lists(
        st.builds(Timing, NUMBER, NUMBER, st.lists(TEXT, max_size=2).map(tuple)), max_size=2
    ),
    zone=st.none() | TEXT,
    key=st.none() | TEXT,
    attributes=ATTRIBUTES,
    media=st.lists(MEDIA, max_size=3),
    other_lines=OTHER,
)


@settings(max_examples=200, deadline=None)
@given(DESCRIPTION)
def test_generated_models_round_trip(desc: SessionDescription) -> None:
    data = serialize(desc)
    assert parse(data) == desc
    assert serialize(parse(data)) == data
    copied = desc.copy()  # every field, lists not shared
    assert copied == desc and serialize(copied) == data
    assert all(a is not b for a, b in zip(copied.media, desc.media, strict=True))
    assert copied.attributes is not desc.attributes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_sdp_error(data: bytes) -> None:
    try:
        parse(data)
    except SdpError as e:
        assert e.status in (400, 413, 488)


SDP_LINE = st.tuples(
    st.sampled_from("vosiuepcbtrzkamxy"),
    st.text(alphabet=" \t0123456789:/.*-aIPN4\x80\r", max_size=16),
).map(lambda t: f"{t[0]}={t[1]}")


@settings(max_examples=400, deadline=None)
@given(st.lists(SDP_LINE, max_size=12), st.sampled_from(["\r\n", "\n"]))
def test_line_shaped_fuzz_is_stable(lines: list[str], eol: str) -> None:
    data = eol.join(["v=0", "o=- 1 1 IN IP4 h", "s=-", *lines]) + eol
    try:
        desc = parse(data.encode("utf-8", "surrogateescape"))
    except SdpError as e:
        assert e.status in (400, 488)
        return
    again = parse(serialize(desc))
    assert again == desc
    for m in desc.media:
        m.rtpmaps(), m.cryptos(), m.ptime, m.rtcp, desc.direction_of(m), desc.is_hold(m)
