"""Errors that used to be swallowed are now logged once with their context (issue 7 item 7):
each test drives the path that raises and checks both the outcome and the log line."""

from __future__ import annotations

import logging

import pytest

from control.conference.app import ConferenceApp
from control.conference.participant import Participant
from control.conference.room import Room
from control.media.engine import AudioAnswer, ParticipantId, RoomId
from control.media.speex import SPEEX_MODEID_WB, SpeexDecoder, SpeexEncoder
from control.sip import sdp
from control.sip.uri import NameAddr, SipUri
from control.sip.useragent import UserAgent
from control.streams import AudioStream
from tests.test_media_mixer import make_mixer


@pytest.mark.parametrize("kind", [SpeexEncoder, SpeexDecoder])
def test_speex_release_failure_in_del_is_logged(
    kind: type[SpeexEncoder] | type[SpeexDecoder], caplog: pytest.LogCaptureFixture
) -> None:
    coder = kind(SPEEX_MODEID_WB)
    coder.close()  # free the real state; the close below is the one that fails

    def broken_close() -> None:
        raise RuntimeError("library already unloaded")

    coder.close = broken_close  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="chorus.media.speex"):
        coder.__del__()
    del coder.close  # the garbage collector's own __del__ later must find a working close
    record = next(r for r in caplog.records if r.name == "chorus.media.speex")
    assert record.getMessage() == f"releasing {kind.__name__} failed"
    assert record.exc_info is not None and "library already unloaded" in str(record.exc_info[1])


def test_speex_coder_whose_init_failed_is_collected_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="chorus.media.speex"),
        pytest.raises(Exception, match="unknown speex mode"),
    ):
        SpeexEncoder(99)
    assert not [r for r in caplog.records if r.name == "chorus.media.speex"]


async def test_conference_logs_a_failed_engine_detach_and_still_lets_the_participant_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_mixer(1)

    async def failing_detach(room: RoomId, participant: ParticipantId) -> None:
        raise OSError("worker pipe closed")

    engine.detach = failing_detach  # type: ignore[method-assign]
    app = ConferenceApp(UserAgent(), engine, address="127.0.0.1")
    room = Room(RoomId("r@h"), SipUri(host="h", user="r"), max_participants=5)
    accept = sdp.Accept(port=4000, formats=["0"])
    audio = AudioStream(engine, room.id, ParticipantId("p1"), 0, AudioAnswer(accept, "127.0.0.1"))
    participant = Participant(
        ParticipantId("p1"),
        NameAddr(SipUri(host="h", user="alice")),
        None,  # type: ignore[arg-type]  # no SIP session needed to release streams
        sdp.SdpSession(sess_id=1, address="127.0.0.1"),
        {0: audio},
    )
    with caplog.at_level(logging.ERROR, logger="chorus.conference"):
        await app._release_streams(room, participant)
    assert participant.streams == {}  # released from the room's point of view
    record = next(r for r in caplog.records if r.name == "chorus.conference")
    assert record.getMessage() == "closing the audio stream of p1 in r@h failed"
    assert record.exc_info is not None and "worker pipe closed" in str(record.exc_info[1])
    await engine.close()
