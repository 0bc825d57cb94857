"""The offering side of RFC 5547 (control/streams/fileoffer.py): the push offer's SDP and how
an answer is read (refusals become PushRefused, never anything else)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from control.files.spool import StoredFile
from control.msrp.fileselector import HASH_SHA1, parse_file_transfer
from control.msrp.sdp import Setup, accept_msrp, parse_msrp_media
from control.msrp.uri import MsrpUri
from control.sip import sdp
from control.sip.sdp import Direction
from control.streams.fileoffer import PushRefused, push_offer, read_push_answer
from tests.test_streams_media import answer_of

DATA = b"minutes of the meeting\n" * 100
STORED = StoredFile(
    file_id="x",
    name="minutes of 1 May.pdf",
    content_type="application/pdf",
    size=len(DATA),
    sha1=hashlib.sha1(DATA).hexdigest(),
    date="2026-01-01T00:00:00+00:00",
    sender="sip:alice@127.0.0.1",
    path=Path("/nonexistent"),
    room="files@127.0.0.1",
)
LOCAL = MsrpUri(host="127.0.0.1", port=2855, session_id="abc123", transport="tcp", secure=True)
THEIRS = MsrpUri(host="127.0.0.1", port=9, session_id="peer42", transport="tcp", secure=True)


def offer(setup: Setup = Setup.ACTPASS) -> sdp.SessionDescription:
    state = sdp.SdpSession(sess_id=5, address="127.0.0.1", username="chorus")
    made = push_offer(STORED, LOCAL, "tid0001", state, setup=setup)
    return sdp.parse(sdp.serialize(made))  # what goes on the wire, read back


def test_the_push_offer_is_one_sendonly_msrps_file_line_with_the_full_selector() -> None:
    desc = offer()
    (media,) = desc.media
    assert (media.media, media.proto, media.formats) == ("message", "TCP/TLS/MSRP", ["*"])
    assert desc.direction_of(media) is Direction.SENDONLY
    msrp = parse_msrp_media(media)
    assert msrp.path == (LOCAL,)
    assert msrp.setup is Setup.ACTPASS  # RFC 6135 §4.2: the offerer lets the answerer choose
    assert msrp.accept_types == ("*",)
    transfer = parse_file_transfer(media)
    assert transfer is not None and transfer.transfer_id == "tid0001"
    selector = transfer.selector
    assert selector.name == STORED.name
    assert selector.type == "application/pdf"
    assert selector.size == len(DATA)
    assert selector.hashes == ((HASH_SHA1, hashlib.sha1(DATA).digest()),)


def test_an_offer_without_a_listener_says_active() -> None:
    (media,) = offer(Setup.ACTIVE).media
    assert parse_msrp_media(media).setup is Setup.ACTIVE


def answer(direction: Direction, setup: Setup | None = Setup.ACTIVE) -> sdp.SessionDescription:
    accept = accept_msrp(THEIRS, ("*",), setup=setup, direction=direction)
    return sdp.parse(sdp.serialize(answer_of(offer(), [accept])))


def test_a_recvonly_answer_gives_the_receivers_path_and_role() -> None:
    theirs = read_push_answer(answer(Direction.RECVONLY))
    assert theirs.path == (THEIRS,) and theirs.setup is Setup.ACTIVE and theirs.secure
    assert read_push_answer(answer(Direction.RECVONLY, Setup.PASSIVE)).setup is Setup.PASSIVE


def test_a_refused_line_is_a_refusal() -> None:
    refused = sdp.parse(sdp.serialize(answer_of(offer(), [sdp.Reject()])))
    with pytest.raises(PushRefused, match="port 0"):
        read_push_answer(refused)


@pytest.mark.parametrize("direction", [Direction.SENDONLY, Direction.INACTIVE])
def test_an_answer_that_does_not_receive_is_a_refusal(direction: Direction) -> None:
    with pytest.raises(PushRefused, match="not recvonly"):
        read_push_answer(answer(direction))
