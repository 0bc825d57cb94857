"""control/xmpp/jingleplain.py, sans-IO: which contents a plain RTP call carries, the checks
on their candidates (bad-request), the INVITE offer a raw-UDP description becomes and the
session-accept a SIP answer becomes."""

from __future__ import annotations

import dataclasses

import pytest

from control.sip import sdp
from control.xmpp.jingle import Candidate, Content, IceTransport, JingleError, RawUdpTransport
from control.xmpp.jingleplain import (
    check_offer,
    plain_accept,
    plain_audio,
    plain_offer,
    plain_reanswer,
)
from control.xmpp.jinglesdp import sdp_to_jingle

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 111 9 0\r\na=rtpmap:111 opus/48000/2\r\n"
    b"a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=mid:voice\r\n"
)
ANSWER = (
    b"v=0\r\no=bob 2 2 IN IP4 198.51.100.3\r\ns=-\r\nc=IN IP4 198.51.100.3\r\nt=0 0\r\n"
    b"m=audio 12000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\na=sendrecv\r\n"
)
ORIGIN = sdp.Origin("chorus", "5", 1, "IN", "IP4", "127.0.0.1")


def offered() -> Content:
    contents, _ = sdp_to_jingle(sdp.parse(OFFER), author="initiator")
    content = plain_audio(contents)
    assert content is not None
    return content


def test_only_raw_udp_rtp_avp_audio_is_plain() -> None:
    content = offered()
    assert plain_audio([dataclasses.replace(content, transport=IceTransport("u", "p"))]) is None
    assert content.description is not None
    sdes = dataclasses.replace(content.description, crypto_required=True)
    assert plain_audio([dataclasses.replace(content, description=sdes)]) is None


@pytest.mark.parametrize(
    ("ip", "port"), [("juliet.example", 40000), ("192.0.2.7", 0), ("0.0.0.0", 1), ("224.0.0.1", 9)]
)
def test_a_bad_candidate_is_bad_request(ip: str, port: int) -> None:
    content = dataclasses.replace(
        offered(), transport=RawUdpTransport((Candidate(1, ip, port, "c"),))
    )
    with pytest.raises(JingleError) as caught:
        check_offer(content)
    assert caught.value.condition == "bad-request"


def test_no_rtp_candidate_is_bad_request() -> None:
    content = dataclasses.replace(
        offered(), transport=RawUdpTransport((Candidate(2, "192.0.2.7", 40001, "c"),))
    )
    with pytest.raises(JingleError):
        check_offer(content)


def test_the_offer_is_the_description_at_the_candidate() -> None:
    content = offered()
    check_offer(content)
    offer = sdp.parse(plain_offer(content, ORIGIN))
    (m,) = offer.media
    assert (m.port, m.proto, m.formats) == (40000, "RTP/AVP", ["111", "9", "0"])
    conn = offer.connection_of(m)
    assert conn is not None and conn.address == "192.0.2.7"
    assert [r.encoding for r in m.rtpmaps()] == ["opus", "G722", "PCMU"]
    assert m.rtpmaps()[0].fmtp == "minptime=10;useinbandfec=1"


def test_the_answer_is_a_raw_udp_accept_under_the_offered_name() -> None:
    (content,) = plain_accept(sdp.parse(ANSWER), offered())
    assert content.name == "voice" and content.senders == "both"
    assert content.description is not None
    assert [(p.id, p.name) for p in content.description.payload_types] == [(9, "G722")]
    assert isinstance(content.transport, RawUdpTransport)
    assert [(c.component, c.ip, c.port) for c in content.transport.candidates] == [
        (1, "198.51.100.3", 12000),
        (2, "198.51.100.3", 12001),
    ]


@pytest.mark.parametrize(
    "answer",
    [
        ANSWER.replace(b"m=audio 12000", b"m=audio 0"),  # refused
        ANSWER.replace(b"c=IN IP4 198.51.100.3", b"c=IN IP4 0.0.0.0"),  # no address
        ANSWER + b"a=ice-ufrag:x\r\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyy\r\n",  # ICE never offered
    ],
)
def test_an_unusable_answer_is_488(answer: bytes) -> None:
    with pytest.raises(sdp.SdpError) as caught:
        plain_accept(sdp.parse(answer), offered())
    assert caught.value.status == 488


def test_a_refresh_reoffer_is_answered_with_the_xmpp_side_unchanged() -> None:
    (accepted,) = plain_accept(sdp.parse(ANSWER), offered())
    refresh = sdp.parse(ANSWER.replace(b"o=bob 2 2", b"o=bob 2 3"))
    answer = plain_reanswer(refresh, offered(), accepted, ORIGIN)
    assert answer is not None
    (m,) = sdp.parse(answer).media
    conn = sdp.parse(answer).connection_of(m)
    assert (m.port, m.formats) == (40000, ["9"])
    assert conn is not None and conn.address == "192.0.2.7"


@pytest.mark.parametrize(
    "reoffer",
    [
        ANSWER.replace(b"m=audio 12000", b"m=audio 12002"),  # moved
        ANSWER.replace(b"a=sendrecv", b"a=sendonly"),  # hold
        ANSWER.replace(b"RTP/AVP 9\r\na=rtpmap:9 G722/8000", b"RTP/AVP 0\r\na=rtpmap:0 PCMU/8000"),
    ],
)
def test_any_other_reoffer_is_not_answered(reoffer: bytes) -> None:
    (accepted,) = plain_accept(sdp.parse(ANSWER), offered())
    assert plain_reanswer(sdp.parse(reoffer), offered(), accepted, ORIGIN) is None
