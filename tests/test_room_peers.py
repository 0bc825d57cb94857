"""Rooms of real baresip phones: SDES-SRTP next to plain RTP, and Opus next to G.711/G.722.

Each phone sends its own tone and records what it hears; the room is mix-minus, so each
must hear every other phone's tone and not its own (by FFT). The phones' codecs differ, so
the mixer decodes, resamples, mixes and re-encodes in every direction.

- SRTP (RFC 4568): alice insists on it (`mediaenc=srtp-mand`: she offers `RTP/SAVP` with an
  `a=crypto` line and drops every packet that fails SRTP authentication), bob speaks plain
  RTP. The room answers each in kind — alice `RTP/SAVP` with one crypto line of the suite
  she offered and our own key, bob `RTP/AVP` with none — and the mixer unprotects alice's
  audio for bob and protects bob's for alice.
- Opus (RFC 7587): alice on Opus at 48 kHz, bob on PCMU, carol on G.722; each answered with
  its own codec.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.peers.chorus import ChorusProcess
from tests.peers.conversation import Heard, Talker, assert_each_hears_the_others, converse
from tests.peers.siptrace import TracedMessage, audio_profile, call_messages, invite_answer

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.peer("baresip"),
]

CODECS = ["opus", "G722", "PCMU", "PCMA", "telephone-event"]
THREE_CODECS = (  # also the real-FreeSWITCH room's (tests/test_freeswitch_real.py)
    # baresip names mono Opus opus/48000/1; on the wire it is opus/48000/2 (RFC 7587).
    Talker("alice", "opus/48000/1", 700.0),
    Talker("bob", "PCMU/8000/1", 1900.0),
    Talker("carol", "G722/16000/1", 1300.0),
)


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess({"rtp": {"codecs": CODECS}}) as process:
        yield process
        assert process.alive, process.log()


def talk_in_room(
    chorus: ChorusProcess, room: str, talkers: Sequence[Talker], workdir: Path
) -> list[tuple[Heard, TracedMessage]]:
    """Everyone talks in `room`, each hears the others; (what each heard, our answer)."""
    uri = f"sip:{room}@127.0.0.1:{chorus.sip_port}"
    heard = converse(talkers, lambda _: uri, workdir, diagnostics=chorus.log)
    assert_each_hears_the_others(heard)
    return [(h, invite_answer(call_messages(chorus.trace(), h.call_id))) for h in heard]


@pytest.mark.parametrize(
    ("srtp_codec", "plain_codec"),
    [("PCMU/8000/1", "G722/16000/1"), ("G722/16000/1", "PCMU/8000/1")],
    ids=["srtp-pcmu-plain-g722", "srtp-g722-plain-pcmu"],
)
def test_srtp_and_plain_rtp_participants_hear_each_other(
    chorus: ChorusProcess, tmp_path: Path, srtp_codec: str, plain_codec: str
) -> None:
    talkers = (
        Talker("alice", srtp_codec, 700.0, mediaenc="srtp-mand"),
        Talker("bob", plain_codec, 1900.0),
    )
    room = f"srtp-{srtp_codec.split('/')[0].lower()}"
    (_, alice), (_, bob) = talk_in_room(chorus, room, talkers, tmp_path)
    assert audio_profile(alice) == "RTP/SAVP", alice.body
    cryptos = [line for line in alice.body.splitlines() if line.startswith("a=crypto:")]
    assert len(cryptos) == 1, alice.body
    assert cryptos[0].startswith("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"), alice.body
    assert audio_profile(bob) == "RTP/AVP" and "a=crypto" not in bob.body, bob.body


def test_opus_pcmu_and_g722_participants_hear_each_other(
    chorus: ChorusProcess, tmp_path: Path
) -> None:
    answers = talk_in_room(chorus, "opus-room", THREE_CODECS, tmp_path)
    first_rtpmap = [
        next(line for line in answer.body.splitlines() if line.startswith("a=rtpmap:"))
        for _, answer in answers
    ]
    assert first_rtpmap[0].endswith(" opus/48000/2"), first_rtpmap
    assert first_rtpmap[1] == "a=rtpmap:0 PCMU/8000", first_rtpmap
    assert first_rtpmap[2] == "a=rtpmap:9 G722/8000", first_rtpmap
