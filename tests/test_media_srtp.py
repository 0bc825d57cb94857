"""SDES-SRTP: a=crypto parsing and negotiation (RFC 4568), protect/unprotect (RFC 3711)."""

from __future__ import annotations

import base64
import random

import pytest

from control.media.rtcp import ReceiverReport, ReportBlock, serialize_compound
from control.media.rtp import RtpPacket
from control.media.srtp import (
    CryptoAttribute,
    CryptoNegotiationError,
    SrtpContext,
    SrtpError,
    SrtpPolicy,
    accept_answer,
    answer_crypto,
    generate_crypto,
    offer_crypto,
)

# RFC 4568 §9.1's example key parameter.
RFC_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
RFC_LINE = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4"


def rng(seed: int) -> random.Random:
    return random.Random(seed)


def test_parse_rfc_example() -> None:
    c = CryptoAttribute.parse(RFC_LINE)
    assert c.tag == 1 and c.suite == "AES_CM_128_HMAC_SHA1_80"
    assert c.key == base64.b64decode(RFC_KEY) and len(c.key) == 30
    assert c.lifetime == 1 << 20 and c.mki == (1, 4)
    assert not c.supported  # MKI: libsrtp through pylibsrtp cannot use it
    assert str(c) == RFC_LINE[len("a=crypto:") :]


def test_parse_plain_lines() -> None:
    c = CryptoAttribute.parse(f"crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}")
    assert (c.tag, c.suite, c.lifetime, c.mki) == (2, "AES_CM_128_HMAC_SHA1_32", None, None)
    assert c.supported
    life = CryptoAttribute.parse(f"3 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1048576")
    assert life.lifetime == 1 << 20 and life.supported and str(life).endswith("|2^20")
    unknown = CryptoAttribute.parse(f"4 AEAD_AES_256_GCM inline:{RFC_KEY}")
    assert not unknown.supported
    session = CryptoAttribute.parse(f"5 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=1")
    assert session.session_params == ("KDR=1",) and not session.supported
    two_keys = CryptoAttribute.parse(
        f"6 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4;inline:{RFC_KEY}|2^20|2:4"
    )
    assert two_keys.extra_keys == 1 and not two_keys.supported


@pytest.mark.parametrize(
    "line",
    [
        "",
        "1 AES_CM_128_HMAC_SHA1_80",
        f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}",
        f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}",
        "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(16)).decode(),
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4|extra",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|forever",
    ],
)
def test_parse_rejects(line: str) -> None:
    with pytest.raises(SrtpError):
        CryptoAttribute.parse(line)


def test_generate_uses_the_injected_source() -> None:
    a = generate_crypto(1, "AES_CM_128_HMAC_SHA1_80", rng(1).randbytes)
    b = generate_crypto(1, "AES_CM_128_HMAC_SHA1_80", rng(1).randbytes)
    assert a == b and len(a.key) == 30
    other = generate_crypto(1, "AES_CM_128_HMAC_SHA1_80", rng(2).randbytes)
    assert other.key != a.key  # the key comes from the source, not a constant
    assert CryptoAttribute.parse(str(a)) == a


def test_answer_picks_first_usable_line_with_same_tag_and_suite() -> None:
    offered = [
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4",  # MKI: skipped
        "a=crypto:2 F8_128_HMAC_SHA1_80 inline:" + RFC_KEY,  # unknown suite: skipped
        "a=crypto:garbage",  # unparseable: skipped
        f"a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}",
        f"a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}",
    ]
    choice = answer_crypto(offered, SrtpPolicy.OPTIONAL, rng(2).randbytes, secure_profile=True)
    assert choice is not None
    assert choice.remote.tag == 3 and choice.local.tag == 3
    assert choice.local.suite == "AES_CM_128_HMAC_SHA1_32"
    assert choice.local.key != choice.remote.key  # our own fresh key


def test_answer_policies() -> None:
    usable = [f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}"]
    rb = rng(3).randbytes
    # Plain RTP offer without crypto: fine unless SRTP is mandatory.
    assert answer_crypto([], SrtpPolicy.OPTIONAL, rb, secure_profile=False) is None
    with pytest.raises(CryptoNegotiationError) as err:
        answer_crypto([], SrtpPolicy.MANDATORY, rb, secure_profile=False)
    assert err.value.status == 488
    # RTP/SAVP cannot fall back to plain RTP.
    with pytest.raises(CryptoNegotiationError):
        answer_crypto(usable, SrtpPolicy.DISABLED, rb, secure_profile=True)
    with pytest.raises(CryptoNegotiationError):
        answer_crypto([RFC_LINE], SrtpPolicy.OPTIONAL, rb, secure_profile=True)
    # Best-effort SRTP on RTP/AVP: disabled ignores the crypto lines.
    assert answer_crypto(usable, SrtpPolicy.DISABLED, rb, secure_profile=False) is None
    assert answer_crypto(usable, SrtpPolicy.MANDATORY, rb, secure_profile=False) is not None


def test_accept_answer_matches_tag_and_suite() -> None:
    ours = offer_crypto(rng(4).randbytes)
    theirs = generate_crypto(2, "AES_CM_128_HMAC_SHA1_32", rng(5).randbytes)
    choice = accept_answer(ours, "a=crypto:" + str(theirs))
    assert choice.local == ours[1] and choice.remote == theirs
    with pytest.raises(CryptoNegotiationError):
        accept_answer(ours, generate_crypto(7, "AES_CM_128_HMAC_SHA1_80", rng(6).randbytes))
    with pytest.raises(CryptoNegotiationError):
        accept_answer(ours, generate_crypto(1, "AES_CM_128_HMAC_SHA1_32", rng(6).randbytes))


def _negotiate(suite: str) -> tuple[SrtpContext, SrtpContext]:
    """Offerer and answerer contexts negotiated through real a=crypto lines."""
    tag = 1 if suite.endswith("80") else 2
    offer = [o for o in offer_crypto(rng(10).randbytes) if o.suite == suite]
    lines = ["a=crypto:" + str(o) for o in offer]
    answer = answer_crypto(lines, SrtpPolicy.MANDATORY, rng(11).randbytes, secure_profile=True)
    assert answer is not None and answer.local.tag == tag
    offerer = accept_answer(offer, "a=crypto:" + str(answer.local))
    return offerer.context(), answer.context()


@pytest.mark.parametrize(
    "suite,tag_len", [("AES_CM_128_HMAC_SHA1_80", 10), ("AES_CM_128_HMAC_SHA1_32", 4)]
)
def test_protect_unprotect_round_trip(suite: str, tag_len: int) -> None:
    alice, bob = _negotiate(suite)
    for seq in range(5):
        rtp = RtpPacket(9, 1000 + seq, 160 * seq, 0xABCDEF, bytes(range(160))).serialize()
        srtp = alice.protect(rtp)
        assert len(srtp) == len(rtp) + tag_len
        assert srtp[12:] != rtp[12:]  # payload encrypted
        assert bob.unprotect(srtp) == rtp
        back = bob.protect(rtp)
        assert alice.unprotect(back) == rtp
    rtcp = serialize_compound([ReceiverReport(0xABCDEF, (ReportBlock(5, 0, 0, 1004, 3),))])
    srtcp = alice.protect_rtcp(rtcp)
    assert len(srtcp) == len(rtcp) + 4 + 10  # SRTCP index + 80-bit tag for both suites
    assert bob.unprotect_rtcp(srtcp) == rtcp


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"])
def test_tampered_replayed_and_foreign_packets_raise(suite: str) -> None:
    alice, bob = _negotiate(suite)
    rtp = RtpPacket(0, 7, 1120, 42, b"\x55" * 160).serialize()
    srtp = alice.protect(rtp)
    tampered = bytearray(srtp)
    tampered[20] ^= 0x01
    with pytest.raises(SrtpError):
        bob.unprotect(bytes(tampered))
    assert bob.unprotect(srtp) == rtp
    with pytest.raises(SrtpError):
        bob.unprotect(srtp)  # replay
    with pytest.raises(SrtpError):
        bob.unprotect(b"\x80\x00garbage")
    with pytest.raises(SrtpError):
        bob.unprotect(rtp)  # plain RTP has no valid tag
    stranger = SrtpContext(
        generate_crypto(1, suite, rng(99).randbytes), generate_crypto(1, suite, rng(98).randbytes)
    )
    with pytest.raises(SrtpError):
        bob.unprotect(stranger.protect(RtpPacket(0, 8, 1280, 42, b"x" * 160).serialize()))
    srtcp = bytearray(alice.protect_rtcp(serialize_compound([ReceiverReport(42)])))
    srtcp[5] ^= 0xFF
    with pytest.raises(SrtpError):
        bob.unprotect_rtcp(bytes(srtcp))


def test_context_refuses_unsupported_lines() -> None:
    with pytest.raises(SrtpError):
        SrtpContext(CryptoAttribute.parse(RFC_LINE), CryptoAttribute.parse(RFC_LINE))
    a = generate_crypto(1, "AES_CM_128_HMAC_SHA1_80", rng(1).randbytes)
    b = generate_crypto(1, "AES_CM_128_HMAC_SHA1_32", rng(1).randbytes)
    with pytest.raises(SrtpError):
        SrtpContext(a, b)
