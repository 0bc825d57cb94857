"""Jingle stanzas (control/xmpp/jingle.py, jinglebuild.py) and their SDP mapping
(control/xmpp/jinglesdp.py): what real clients send parses, builds back, and crosses to SDP
and back unchanged."""

from __future__ import annotations

from dataclasses import replace
from xml.etree import ElementTree as ET

import pytest

from control.sip import sdp
from control.xmpp.jingle import (
    DTLS_NS,
    ICE_NS,
    JINGLE_ERRORS_NS,
    JINGLE_NS,
    RTP_NS,
    Action,
    Candidate,
    Content,
    Feedback,
    Fingerprint,
    HeaderExtension,
    IceTransport,
    Jingle,
    JingleError,
    JingleLimits,
    PayloadType,
    RawUdpTransport,
    Reason,
    RtpDescription,
    SessionInfo,
    Source,
    parse_jingle,
)
from control.xmpp.jinglebuild import build_jingle, error_element
from control.xmpp.jinglesdp import (
    candidate_from_sdp,
    candidate_to_sdp,
    jingle_to_sdp,
    sdp_to_jingle,
)

ORIGIN = sdp.Origin("-", "4242", 1, "IN", "IP4", "127.0.0.1")
FP = (
    "02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:"
    "3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2"
)

# A session-initiate as Conversations (WebRTC inside) sends it, built from the examples of
# XEP-0166, 0167, 0176, 0293, 0294, 0320, 0338 and 0339: one audio content named by its
# SDP mid, BUNDLE group, DTLS fingerprint, host and server-reflexive candidates.
CONVERSATIONS_INITIATE = f"""
<iq xmlns='jabber:client' from='romeo@montague.example/Conversations.x1Yz'
    to='juliet@sip.example' type='set' id='jingle-1'>
 <jingle xmlns='urn:xmpp:jingle:1' action='session-initiate'
         initiator='romeo@montague.example/Conversations.x1Yz' sid='1hK8pKmtgKn5dg4c'>
  <content creator='initiator' name='0' senders='both'>
   <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
    <payload-type id='111' name='opus' clockrate='48000' channels='2'>
     <parameter name='minptime' value='10'/>
     <parameter name='useinbandfec' value='1'/>
     <rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='transport-cc'/>
    </payload-type>
    <payload-type id='9' name='G722' clockrate='8000'/>
    <payload-type id='0' name='PCMU' clockrate='8000'/>
    <payload-type id='8' name='PCMA' clockrate='8000'/>
    <payload-type id='126' name='telephone-event' clockrate='8000'>
     <parameter name='' value='0-15'/>
    </payload-type>
    <rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='1'
                uri='urn:ietf:params:rtp-hdrext:ssrc-audio-level'/>
    <rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='3'
        uri='http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01'/>
    <extmap-allow-mixed xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0'/>
    <source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='3600112434'>
     <parameter name='cname' value='Zc5uYLd2L+Zq3uv2'/>
     <parameter name='msid' value='my-media-stream my-audio-track'/>
    </source>
    <rtcp-mux/>
   </description>
   <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='Qm0d'
              pwd='asd88fgpdd777uzjYhagZg3m'>
    <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256'
                 setup='actpass'>{FP}</fingerprint>
    <candidate component='1' foundation='1566418011' generation='0' id='el0747fg11'
               ip='192.0.2.10' network='1' port='41592' priority='2122260223'
               protocol='udp' type='host'/>
    <candidate component='1' foundation='842163049' generation='0' id='y3s2b30v3r'
               ip='203.0.113.5' network='1' port='41592' priority='1686052607'
               protocol='udp' rel-addr='192.0.2.10' rel-port='41592' type='srflx'/>
   </transport>
  </content>
  <group xmlns='urn:xmpp:jingle:apps:grouping:0' semantics='BUNDLE'>
   <content name='0'/>
  </group>
 </jingle>
</iq>"""

# Dino's: content named 'audio', no candidates yet (they trickle in transport-info).
DINO_INITIATE = f"""
<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='a73sjjvkla37jfea'
        initiator='juliet@capulet.example/dino.3f'>
 <content creator='initiator' name='audio'>
  <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio' ssrc='2581094932'>
   <payload-type id='111' name='opus' clockrate='48000' channels='2'>
    <parameter name='useinbandfec' value='1'/>
   </payload-type>
   <payload-type id='0' name='PCMU' clockrate='8000'/>
   <rtcp-mux/>
  </description>
  <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='8hhy' pwd='asd88fgpdd777uzjYhagZg'>
   <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='SHA-256'
                setup='actpass'>{FP}</fingerprint>
  </transport>
 </content>
</jingle>"""

# Plain RTP (XEP-0177 Raw UDP), as a client without ICE offers it.
RAW_UDP_INITIATE = """
<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='raw1'
        initiator='romeo@montague.example/phone'>
 <content creator='initiator' name='voice'>
  <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
   <payload-type id='0' name='PCMU' clockrate='8000' ptime='20'/>
  </description>
  <transport xmlns='urn:xmpp:jingle:transports:raw-udp:1'>
   <candidate component='1' generation='0' id='a9j3mnbtu1' ip='10.1.1.104' port='13540'/>
   <candidate component='2' generation='0' id='a9j3mnbtu2' ip='10.1.1.104' port='13541'/>
  </transport>
 </content>
</jingle>"""


def _jingle(text: str) -> ET.Element:
    el = ET.fromstring(text)
    if el.tag == "{jabber:client}iq":
        found = el.find(f"{{{JINGLE_NS}}}jingle")
        assert found is not None
        return found
    return el


def _no_ids(contents: tuple[Content, ...]) -> tuple[Content, ...]:
    """Contents with candidate ids blanked: SDP has no ids, so they cannot survive it."""
    out = []
    for c in contents:
        t = c.transport
        if isinstance(t, IceTransport | RawUdpTransport):
            t = replace(t, candidates=tuple(replace(x, id="") for x in t.candidates))
        out.append(replace(c, transport=t))
    return tuple(out)


# ------------------------------------------------------------------------ parsing


def test_conversations_session_initiate_parses_every_part() -> None:
    j = parse_jingle(_jingle(CONVERSATIONS_INITIATE))
    assert j.action == Action.SESSION_INITIATE
    assert j.sid == "1hK8pKmtgKn5dg4c"
    assert j.initiator == "romeo@montague.example/Conversations.x1Yz"
    assert j.groups == (("BUNDLE", ("0",)),)
    (content,) = j.contents
    assert (content.name, content.creator, content.senders) == ("0", "initiator", "both")
    d = content.description
    assert d is not None and d.media == "audio" and d.rtcp_mux
    assert [(p.id, p.name, p.clockrate, p.channels) for p in d.payload_types] == [
        (111, "opus", 48000, 2),
        (9, "G722", 8000, 1),
        (0, "PCMU", 8000, 1),
        (8, "PCMA", 8000, 1),
        (126, "telephone-event", 8000, 1),
    ]
    opus = d.payload_types[0]
    assert opus.parameters == (("minptime", "10"), ("useinbandfec", "1"))
    assert opus.feedback == (Feedback("transport-cc"),)
    assert d.payload_types[4].parameters == (("", "0-15"),)
    assert [h.id for h in d.header_extensions] == [1, 3]
    assert d.extmap_allow_mixed
    assert d.sources == (
        Source(
            3600112434,
            (("cname", "Zc5uYLd2L+Zq3uv2"), ("msid", "my-media-stream my-audio-track")),
        ),
    )
    t = content.transport
    assert isinstance(t, IceTransport)
    assert (t.ufrag, t.pwd) == ("Qm0d", "asd88fgpdd777uzjYhagZg3m")
    assert t.fingerprint == Fingerprint("sha-256", FP, "actpass")
    host, srflx = t.candidates
    assert host == Candidate(
        component=1,
        ip="192.0.2.10",
        port=41592,
        id="el0747fg11",
        foundation="1566418011",
        priority=2122260223,
        network=1,
    )
    assert (srflx.type, srflx.rel_addr, srflx.rel_port) == ("srflx", "192.0.2.10", 41592)


def test_dino_initiate_without_candidates_and_uppercase_hash() -> None:
    j = parse_jingle(_jingle(DINO_INITIATE))
    (content,) = j.contents
    assert content.description is not None and content.description.ssrc == 2581094932
    t = content.transport
    assert isinstance(t, IceTransport) and t.candidates == ()
    assert t.fingerprint is not None and t.fingerprint.hash == "sha-256"


def test_raw_udp_initiate() -> None:
    (content,) = parse_jingle(_jingle(RAW_UDP_INITIATE)).contents
    t = content.transport
    assert isinstance(t, RawUdpTransport)
    assert [(c.component, c.ip, c.port) for c in t.candidates] == [
        (1, "10.1.1.104", 13540),
        (2, "10.1.1.104", 13541),
    ]
    assert content.description is not None
    assert content.description.payload_types[0].ptime == 20


def test_other_applications_are_kept_as_their_namespace() -> None:
    el = _jingle(
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='ft'>"
        "<content creator='initiator' name='f'>"
        "<description xmlns='urn:xmpp:jingle:apps:file-transfer:5'/>"
        "<transport xmlns='urn:xmpp:jingle:transports:s5b:1'/></content></jingle>"
    )
    (content,) = parse_jingle(el).contents
    assert content.description is None and content.transport is None
    assert content.description_ns == "urn:xmpp:jingle:apps:file-transfer:5"
    assert content.transport_ns == "urn:xmpp:jingle:transports:s5b:1"


def test_reason_and_session_info() -> None:
    term = parse_jingle(
        _jingle(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'>"
            "<reason><alternative-session><sid>b84tkkwlmb48kgfb</sid></alternative-session>"
            "<text>Use the other one</text></reason></jingle>"
        )
    )
    assert term.reason == Reason("alternative-session", "Use the other one", "b84tkkwlmb48kgfb")
    for kind in ("ringing", "hold", "unhold", "active"):
        info = parse_jingle(
            _jingle(
                f"<jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='s'>"
                f"<{kind} xmlns='urn:xmpp:jingle:apps:rtp:info:1'/></jingle>"
            )
        )
        assert info.info == SessionInfo(kind)
    mute = parse_jingle(
        _jingle(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='s'>"
            "<mute xmlns='urn:xmpp:jingle:apps:rtp:info:1' creator='initiator' name='0'/>"
            "</jingle>"
        )
    )
    assert mute.info == SessionInfo("mute", "initiator", "0")
    other = parse_jingle(
        _jingle(
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-info' sid='s'>"
            "<checksum xmlns='urn:xmpp:jingle:apps:file-transfer:5'/></jingle>"
        )
    )
    assert other.info is None
    assert other.unknown_info == "{urn:xmpp:jingle:apps:file-transfer:5}checksum"


@pytest.mark.parametrize(
    ("xml", "condition"),
    [
        ("<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate'/>", "bad-request"),
        ("<jingle xmlns='urn:xmpp:jingle:1' sid='s'/>", "bad-request"),
        ("<jingle xmlns='urn:xmpp:jingle:1' action='session-dance' sid='s'/>", "bad-request"),
        ("<jingle xmlns='urn:xmpp:jingle:0' action='session-info' sid='s'/>", "bad-request"),
        (
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'>"
            "<reason><text>no condition</text></reason></jingle>",
            "bad-request",
        ),
        (
            "<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='s'>"
            "<content creator='initiator' name='0'>"
            "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'>"
            "<candidate component='1' foundation='1' id='x' ip='192.0.2.1' port='99999'"
            " priority='1' type='host'/></transport></content></jingle>",
            "bad-request",
        ),
        (
            "<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='s'>"
            "<content creator='initiator' name='0'>"
            "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'>"
            "<candidate component='1' foundation='1' id='x' ip='192.0.2.1' port='5'"
            " priority='1' type='teleport'/></transport></content></jingle>",
            "bad-request",
        ),
        (
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s'>"
            "<content creator='initiator' name='0'>"
            "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'>"
            "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='holdconn'>"
            "AA</fingerprint></transport></content></jingle>",
            "bad-request",
        ),
        (
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s'>"
            "<content creator='nobody' name='0'/></jingle>",
            "bad-request",
        ),
        (
            "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s'>"
            "<content creator='initiator' name='0'>"
            "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>"
            "<payload-type id='300' name='x' clockrate='8000'/></description>"
            "</content></jingle>",
            "bad-request",
        ),
    ],
)
def test_malformed_jingle_is_bad_request(xml: str, condition: str) -> None:
    with pytest.raises(JingleError) as caught:
        parse_jingle(_jingle(xml))
    assert caught.value.condition == condition
    assert caught.value.type == "modify"


def test_limits_bound_what_a_stanza_may_carry() -> None:
    candidates = "".join(
        f"<candidate component='1' foundation='1' id='c{i}' ip='192.0.2.1' port='{1000 + i}'"
        " priority='1' type='host'/>"
        for i in range(5)
    )
    el = _jingle(
        "<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='s'>"
        "<content creator='initiator' name='0'>"
        f"<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'>{candidates}</transport>"
        "</content></jingle>"
    )
    assert len(parse_jingle(el, limits=JingleLimits(max_candidates=5)).contents) == 1
    with pytest.raises(JingleError) as caught:
        parse_jingle(el, limits=JingleLimits(max_candidates=4))
    assert caught.value.condition == "policy-violation"


# ----------------------------------------------------------------------- building


@pytest.mark.parametrize("sample", [CONVERSATIONS_INITIATE, DINO_INITIATE, RAW_UDP_INITIATE])
def test_build_is_the_inverse_of_parse(sample: str) -> None:
    j = parse_jingle(_jingle(sample))
    built = build_jingle(j)
    again = parse_jingle(ET.fromstring(ET.tostring(built)))
    assert again == j


def test_built_elements_sit_in_their_namespaces() -> None:
    j = parse_jingle(_jingle(CONVERSATIONS_INITIATE))
    el = build_jingle(j)
    assert el.tag == f"{{{JINGLE_NS}}}jingle"
    assert el.get("action") == "session-initiate" and el.get("sid") == "1hK8pKmtgKn5dg4c"
    content = el.find(f"{{{JINGLE_NS}}}content")
    assert content is not None and content.get("senders") is None  # both: the default
    assert content.find(f"{{{RTP_NS}}}description/{{{RTP_NS}}}rtcp-mux") is not None
    fp = content.find(f"{{{ICE_NS}}}transport/{{{DTLS_NS}}}fingerprint")
    assert fp is not None and fp.text == FP and fp.get("setup") == "actpass"


def test_build_terminate_and_info() -> None:
    el = build_jingle(
        Jingle(Action.SESSION_TERMINATE, "s", reason=Reason("busy", "on another call"))
    )
    reason = el.find(f"{{{JINGLE_NS}}}reason")
    assert reason is not None
    assert [child.tag for child in reason] == [f"{{{JINGLE_NS}}}busy", f"{{{JINGLE_NS}}}text"]
    info = build_jingle(Jingle(Action.SESSION_INFO, "s", info=SessionInfo("ringing")))
    assert [c.tag for c in info] == ["{urn:xmpp:jingle:apps:rtp:info:1}ringing"]


def test_error_element_carries_both_conditions() -> None:
    el = error_element(JingleError.unknown_session("abc"))
    assert el.get("type") == "cancel"
    tags = [child.tag for child in el]
    assert "{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found" in tags
    assert f"{{{JINGLE_ERRORS_NS}}}unknown-session" in tags
    order = error_element(JingleError.out_of_order("accept twice"))
    assert order.get("type") == "wait"
    assert f"{{{JINGLE_ERRORS_NS}}}out-of-order" in [c.tag for c in order]
    assert el.tag == "{jabber:client}error"
    component = error_element(JingleError("bad-request", "x"), stanza_ns="jabber:component:accept")
    assert component.tag == "{jabber:component:accept}error"
    plain = error_element(JingleError("bad-request", "x"))
    assert [c.tag for c in plain if c.tag.startswith(f"{{{JINGLE_ERRORS_NS}}}")] == []


# ---------------------------------------------------------------------------- SDP


def _sdp_lines(desc: sdp.SessionDescription) -> list[str]:
    return bytes(desc).decode().split("\r\n")


def test_conversations_offer_as_sdp() -> None:
    j = parse_jingle(_jingle(CONVERSATIONS_INITIATE))
    offer = jingle_to_sdp(j.contents, author="initiator", origin=ORIGIN, groups=j.groups)
    lines = _sdp_lines(offer)
    assert "a=group:BUNDLE 0" in lines
    assert "m=audio 41592 UDP/TLS/RTP/SAVPF 111 9 0 8 126" in lines
    assert "c=IN IP4 192.0.2.10" in lines  # the host candidate: highest priority
    for line in [
        "a=mid:0",
        "a=ice-ufrag:Qm0d",
        "a=ice-pwd:asd88fgpdd777uzjYhagZg3m",
        f"a=fingerprint:sha-256 {FP}",
        "a=setup:actpass",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtcp-fb:111 transport-cc",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=fmtp:126 0-15",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap-allow-mixed",
        "a=ssrc:3600112434 cname:Zc5uYLd2L+Zq3uv2",
        "a=ssrc:3600112434 msid:my-media-stream my-audio-track",
        "a=candidate:1566418011 1 udp 2122260223 192.0.2.10 41592 typ host generation 0 "
        "network-id 1",
        "a=candidate:842163049 1 udp 1686052607 203.0.113.5 41592 typ srflx "
        "raddr 192.0.2.10 rport 41592 generation 0 network-id 1",
    ]:
        assert line in lines, line
    # What the SIP side's parser reads from it: the three codecs the engine knows.
    parsed = sdp.parse(bytes(offer))
    (m,) = parsed.media
    assert [(r.encoding, r.clock_rate) for r in m.rtpmaps()][:3] == [
        ("opus", 48000),
        ("G722", 8000),
        ("PCMU", 8000),
    ]


@pytest.mark.parametrize("sample", [CONVERSATIONS_INITIATE, DINO_INITIATE, RAW_UDP_INITIATE])
def test_round_trip_jingle_sdp_jingle(sample: str) -> None:
    j = parse_jingle(_jingle(sample))
    offer = jingle_to_sdp(j.contents, author="initiator", origin=ORIGIN, groups=j.groups)
    contents, groups = sdp_to_jingle(sdp.parse(bytes(offer)), author="initiator")
    # Dino names its content 'audio': a=mid carries it. Only candidate ids are lost.
    assert _no_ids(contents) == _no_ids(j.contents)
    assert groups == j.groups


def test_round_trip_sdp_jingle_sdp_keeps_every_line() -> None:
    webrtc = (
        "v=0\r\no=- 3912 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=audio 50102 UDP/TLS/RTP/SAVPF 96 0 9\r\nc=IN IP4 127.0.0.1\r\n"
        "a=mid:0\r\na=ice-ufrag:Tg3X\r\na=ice-pwd:0d1b3e5c1d8e4b7fa8b1b6d0e12a11aa\r\n"
        "a=candidate:a3e4 1 udp 2130706431 127.0.0.1 50102 typ host generation 0\r\n"
        "a=candidate:b7 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0\r\n"
        f"a=fingerprint:sha-256 {FP}\r\na=setup:actpass\r\na=sendrecv\r\na=rtcp-mux\r\n"
        "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:9 G722/8000\r\n"
        "a=ssrc:1234 cname:abc\r\n"
    )
    first = sdp.parse(webrtc)
    contents, groups = sdp_to_jingle(first, author="initiator")
    again = jingle_to_sdp(contents, author="initiator", origin=first.origin, groups=groups)
    # Everything but the TCP candidate, which XEP-0176 (UDP only) cannot carry.
    expected = [line for line in webrtc.split("\r\n") if " tcp " not in line]
    assert sorted(_sdp_lines(again)) == sorted(expected)
    # and the Jingle built from it survives XML
    j = Jingle(Action.SESSION_INITIATE, "s", contents=contents, groups=groups)
    assert parse_jingle(ET.fromstring(ET.tostring(build_jingle(j)))) == j


def test_plain_rtp_sdp_as_baresip_sends_it_becomes_raw_udp() -> None:
    baresip = (
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 10000 RTP/AVP 9 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\na=ptime:20\r\n"
    )
    contents, _ = sdp_to_jingle(sdp.parse(baresip), author="responder")
    (content,) = contents
    assert content.name == "audio" and content.senders == "both"
    t = content.transport
    assert isinstance(t, RawUdpTransport)
    assert [(c.component, c.ip, c.port) for c in t.candidates] == [
        (1, "127.0.0.1", 10000),
        (2, "127.0.0.1", 10001),
    ]
    d = content.description
    assert d is not None
    assert [p.ptime for p in d.payload_types] == [20, 20, 20]
    assert d.payload_types[2].parameters == (("", "0-15"),)
    back = _sdp_lines(jingle_to_sdp(contents, author="responder", origin=ORIGIN))
    assert "m=audio 10000 RTP/AVP 9 0 101" in back
    assert "a=rtcp:10001 IN IP4 127.0.0.1" in back
    assert "a=ptime:20" in back


@pytest.mark.parametrize(
    ("senders", "author", "direction"),
    [
        ("both", "initiator", "sendrecv"),
        ("none", "responder", "inactive"),
        ("initiator", "initiator", "sendonly"),
        ("initiator", "responder", "recvonly"),
        ("responder", "responder", "sendonly"),
        ("responder", "initiator", "recvonly"),
    ],
)
def test_senders_are_the_authors_direction(senders: str, author: str, direction: str) -> None:
    content = Content(
        "0",
        senders=senders,
        description=RtpDescription("audio", (PayloadType(0, "PCMU", 8000),)),
        transport=RawUdpTransport((Candidate(1, "127.0.0.1", 4000, "a"),)),
    )
    desc = jingle_to_sdp([content], author=author, origin=ORIGIN)
    assert f"a={direction}" in _sdp_lines(desc)
    (back,), _ = sdp_to_jingle(sdp.parse(bytes(desc)), author=author)
    assert back.senders == senders


def test_rfc2543_hold_without_ice_is_a_direction() -> None:
    held = (
        "v=0\r\no=- 1 3 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
        "m=audio 10000 RTP/AVP 0\r\n"
    )
    (content,), _ = sdp_to_jingle(sdp.parse(held), author="initiator")
    assert content.senders == "initiator"  # it still sends, it will not receive


def test_trickle_placeholder_is_no_hold() -> None:
    j = parse_jingle(_jingle(DINO_INITIATE))
    lines = _sdp_lines(jingle_to_sdp(j.contents, author="initiator", origin=ORIGIN))
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 111 0" in lines
    assert "c=IN IP4 0.0.0.0" in lines
    (content,), _ = sdp_to_jingle(sdp.parse("\r\n".join(lines)), author="initiator")
    assert content.senders == "both"


def test_header_extension_direction() -> None:
    content = Content(
        "0",
        description=RtpDescription(
            "audio",
            (PayloadType(0, "PCMU", 8000),),
            header_extensions=(HeaderExtension(2, "urn:x", "initiator"),),
        ),
    )
    lines = _sdp_lines(jingle_to_sdp([content], author="responder", origin=ORIGIN))
    assert "a=extmap:2/recvonly urn:x" in lines


def test_candidate_lines() -> None:
    c = candidate_from_sdp(
        "candidate:842163049 1 UDP 1686052607 203.0.113.5 41592 typ srflx raddr 192.0.2.10 "
        "rport 41592 generation 2 network-id 3"
    )
    assert c is not None
    assert (c.protocol, c.type, c.generation, c.network) == ("udp", "srflx", 2, 3)
    assert (c.rel_addr, c.rel_port) == ("192.0.2.10", 41592)
    assert candidate_to_sdp(c) == (
        "842163049 1 udp 1686052607 203.0.113.5 41592 typ srflx raddr 192.0.2.10 "
        "rport 41592 generation 2 network-id 3"
    )
    same = candidate_from_sdp(candidate_to_sdp(c))
    assert same is not None and same.id == candidate_from_sdp(candidate_to_sdp(c)).id  # type: ignore[union-attr]
    assert candidate_from_sdp("1 1 udp 5 192.0.2.1 70000 typ host") is None
    assert candidate_from_sdp("1 1 udp 5 192.0.2.1 7000 host") is None
    assert candidate_from_sdp("garbage") is None


def test_sdes_crypto_maps_to_encryption() -> None:
    offer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/SAVP 0\r\n"
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    )
    (content,), _ = sdp_to_jingle(sdp.parse(offer), author="initiator")
    assert content.description is not None
    (crypto,) = content.description.cryptos
    assert crypto.suite == "AES_CM_128_HMAC_SHA1_80"
    el = build_jingle(Jingle(Action.SESSION_INITIATE, "s", contents=(content,)))
    found = el.find(f".//{{{RTP_NS}}}encryption/{{{RTP_NS}}}crypto")
    assert found is not None and found.get("key-params", "").startswith("inline:")
    lines = _sdp_lines(jingle_to_sdp([content], author="initiator", origin=ORIGIN))
    assert "m=audio 4000 RTP/SAVP 0" in lines
