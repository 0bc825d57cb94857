"""Screen-sharing core (control/conference/screen.py): frame validation on real JPEGs
(tests/data/screen/, captured once with headless Chromium's DevTools `captureScreenshot`),
the board's sequence numbers, idle deadlines, events and viewer wake-ups."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.conference.screen import (
    EndReason,
    ScreenBoard,
    ScreenError,
    ScreenLimits,
    ScreenSharing,
    SharingEnded,
    SharingStarted,
    decode_frame,
    is_screen_frame,
    jpeg_dimensions,
)
from control.media.engine import ParticipantId, RoomId
from control.msrp.cpim import parse_cpim
from control.msrp.errors import MsrpError

DATA = Path(__file__).parent / "data" / "screen"
RED = (DATA / "red-320x240.jpg").read_bytes()
GREEN = (DATA / "green-320x240.jpg").read_bytes()
GRADIENT = (DATA / "gradient-64x48.jpg").read_bytes()
LIMITS = ScreenLimits(max_frame_bytes=64 * 1024, max_width=1920, max_height=1080, idle_timeout=5.0)
ROOM = RoomId("room@conference.example.com")
ALICE = ParticipantId("alice-1")
BOB = ParticipantId("bob-2")


def _sof_offset(jpeg: bytes) -> int:
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        index = jpeg.find(marker)
        if index > 0:
            return index
    raise AssertionError("fixture has no SOF0/SOF2")


def _with_size(jpeg: bytes, width: int, height: int) -> bytes:
    at = _sof_offset(jpeg)
    patched = bytearray(jpeg)
    patched[at + 5 : at + 7] = height.to_bytes(2, "big")
    patched[at + 7 : at + 9] = width.to_bytes(2, "big")
    return bytes(patched)


# ---- validation ----------------------------------------------------------------------------


def test_real_jpegs_give_their_dimensions() -> None:
    assert jpeg_dimensions(RED) == (320, 240)
    assert jpeg_dimensions(GRADIENT) == (64, 48)
    frame = decode_frame(RED, now=12.5, limits=LIMITS)
    assert (frame.width, frame.height, frame.jpeg, frame.received_at) == (320, 240, RED, 12.5)


def test_raw_body_as_in_the_reference_example() -> None:
    # The reference's SEND: the CPIM content headers, then the JPEG bytes (ÿØÿà JFIF).
    assert RED.startswith(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    assert decode_frame(RED, now=0.0, limits=LIMITS).jpeg == RED


@pytest.mark.parametrize(
    "body",
    [
        base64.b64encode(GREEN),
        base64.encodebytes(GREEN),  # MIME style, a line break every 76 characters
        base64.b64encode(GREEN) + b"\r\n",
    ],
    ids=["plain", "mime-lines", "trailing-crlf"],
)
def test_base64_bodies_are_decoded(body: bytes) -> None:
    assert decode_frame(body, now=0.0, limits=LIMITS).jpeg == GREEN


def test_content_transfer_encoding_base64_header() -> None:
    headers = [("Content-Type", "application/blink-screensharing")]
    headers.append(("Content-Transfer-Encoding", "base64"))
    frame = decode_frame(base64.b64encode(RED), now=0.0, limits=LIMITS, content_headers=headers)
    assert frame.jpeg == RED


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"hello, world", 400),  # neither JPEG nor base64
        (base64.b64encode(b"PNG, not a JPEG"), 400),
        (RED[:-2], 400),  # no EOI
        (RED[: len(RED) // 2] + b"\xff\xd9", 400),  # truncated, EOI glued on
        (b"\xff\xd8\xff\xd9", 400),  # SOI EOI, no frame header
        (b"\xff\xd8\xff\xe0\xff\xff\xff\xd9", 400),  # a segment running past the end
        (_with_size(RED, 320, 0), 400),  # zero lines (DNL): no size we can check
        (_with_size(RED, 1921, 240), 413),
        (_with_size(RED, 320, 1081), 413),
        (RED[:-2] + b"\x00" * (64 * 1024) + b"\xff\xd9", 413),
        (base64.b64encode(b"\xff\xd8" + b"\x00" * (64 * 1024)), 413),
    ],
    ids=[
        "empty",
        "text",
        "base64-not-jpeg",
        "no-eoi",
        "truncated",
        "no-sof",
        "overrun",
        "zero-height",
        "too-wide",
        "too-tall",
        "too-big-raw",
        "too-big-base64",
    ],
)
def test_bad_frames_are_refused_with_the_msrp_status(body: bytes, status: int) -> None:
    with pytest.raises(ScreenError) as caught:
        decode_frame(body, now=0.0, limits=LIMITS)
    assert caught.value.status == status


def test_progressive_sof_is_read_too() -> None:
    at = _sof_offset(RED)
    progressive = RED[: at + 1] + b"\xc2" + RED[at + 2 :]
    assert jpeg_dimensions(progressive) == (320, 240)


@given(st.binary(max_size=2048))
def test_any_bytes_give_a_frame_or_a_screen_error(data: bytes) -> None:
    for body in (data, b"\xff\xd8" + data, b"\xff\xd8" + data + b"\xff\xd9"):
        try:
            frame = decode_frame(body, now=0.0, limits=LIMITS)
        except ScreenError as exc:
            assert exc.status in (400, 413)
        else:
            assert frame.width > 0 and frame.height > 0


def test_content_type_check() -> None:
    assert is_screen_frame("application/blink-screensharing")
    assert is_screen_frame("Application/Blink-ScreenSharing; charset=binary")
    assert not is_screen_frame("text/plain")
    assert not is_screen_frame(None)


# ---- the board -----------------------------------------------------------------------------


def test_first_frame_starts_sharing_and_frames_are_numbered() -> None:
    board = ScreenBoard(LIMITS)
    first = board.receive(ROOM, ALICE, RED, now=1.0)
    second = board.receive(ROOM, ALICE, base64.b64encode(GREEN), now=2.0)
    assert (first.sequence, second.sequence) == (1, 2)
    assert board.next_event() == SharingStarted(ROOM, ALICE, 1.0)
    assert board.next_event() is None
    assert board.current(ROOM, ALICE) == second
    assert board.sharing(ROOM) == [second]
    assert board.current(ROOM, BOB) is None


def test_a_refused_frame_changes_nothing() -> None:
    board = ScreenBoard(LIMITS)
    board.receive(ROOM, ALICE, RED, now=1.0)
    with pytest.raises(ScreenError):
        board.receive(ROOM, ALICE, RED[:-2], now=2.0)
    current = board.current(ROOM, ALICE)
    assert current is not None and current.sequence == 1
    assert board.next_timer() == 6.0  # the refused frame did not push the deadline


def test_idle_timeout_ends_sharing_at_the_exact_deadline() -> None:
    board = ScreenBoard(LIMITS)
    board.receive(ROOM, ALICE, RED, now=0.0)
    board.receive(ROOM, BOB, RED, now=1.0)
    board.receive(ROOM, ALICE, RED, now=3.0)
    assert board.next_timer() == 6.0  # Bob: 1.0 + 5.0; Alice moved on to 8.0
    board.handle_timer(5.9)
    assert len(board.sharing(ROOM)) == 2
    board.handle_timer(6.0)
    assert [s.participant for s in board.sharing(ROOM)] == [ALICE]
    assert board.next_timer() == 8.0
    board.handle_timer(8.0)
    assert board.next_timer() is None
    events = [board.next_event() for _ in range(4)]
    assert events[2:] == [
        SharingEnded(ROOM, BOB, EndReason.IDLE, 6.0),
        SharingEnded(ROOM, ALICE, EndReason.IDLE, 8.0),
    ]


def test_stop_and_stop_room() -> None:
    board = ScreenBoard(LIMITS)
    other = RoomId("other@conference.example.com")
    board.receive(ROOM, ALICE, RED, now=0.0)
    board.receive(ROOM, BOB, RED, now=0.0)
    board.receive(other, ALICE, RED, now=0.0)
    board.stop(ROOM, ALICE, now=1.0)
    board.stop(ROOM, ALICE, now=1.5)  # twice is harmless
    board.stop_room(ROOM, now=2.0)
    assert board.sharing(ROOM) == []
    assert len(board.sharing(other)) == 1
    ended = [e for e in iter(board.next_event, None) if isinstance(e, SharingEnded)]
    assert ended == [
        SharingEnded(ROOM, ALICE, EndReason.STOPPED, 1.0),
        SharingEnded(ROOM, BOB, EndReason.STOPPED, 2.0),
    ]
    # Sharing again starts over at sequence 1 with a new SharingStarted.
    assert board.receive(ROOM, ALICE, RED, now=3.0).sequence == 1
    assert board.next_event() == SharingStarted(ROOM, ALICE, 3.0)


async def test_viewers_wait_for_the_next_frame_without_polling() -> None:
    board = ScreenBoard(LIMITS)
    assert await board.next_frame(ROOM, ALICE) is None  # not sharing
    board.receive(ROOM, ALICE, RED, now=0.0)
    current = await board.next_frame(ROOM, ALICE, after=0)
    assert current is not None and current.sequence == 1  # at once: newer than 0
    viewers = [asyncio.create_task(board.next_frame(ROOM, ALICE, after=1)) for _ in range(3)]
    await asyncio.sleep(0)
    assert board.viewers(ROOM, ALICE) == 3
    board.receive(ROOM, ALICE, GREEN, now=1.0)
    got = await asyncio.gather(*viewers)
    assert {(g.sequence, g.frame.jpeg) for g in got if g is not None} == {(2, GREEN)}
    assert board.viewers(ROOM, ALICE) == 0
    ending = asyncio.create_task(board.next_frame(ROOM, ALICE, after=2))
    await asyncio.sleep(0)
    board.stop(ROOM, ALICE, now=2.0)
    assert await ending is None


async def test_a_cancelled_viewer_leaves_no_waiter() -> None:
    board = ScreenBoard(LIMITS)
    board.receive(ROOM, ALICE, RED, now=0.0)
    viewer = asyncio.create_task(board.next_frame(ROOM, ALICE, after=1))
    await asyncio.sleep(0)
    viewer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await viewer
    assert board.viewers(ROOM, ALICE) == 0


async def test_driver_ends_sharing_on_the_loop_after_idle_timeout() -> None:
    sharing = ScreenSharing(ScreenBoard(ScreenLimits(idle_timeout=0.2)))
    shared = sharing.receive(ROOM, ALICE, RED)
    assert shared.sequence == 1
    assert await asyncio.wait_for(sharing.next_event(), 5) == SharingStarted(
        ROOM, ALICE, shared.frame.received_at
    )
    ended = await asyncio.wait_for(sharing.next_event(), 5)
    assert isinstance(ended, SharingEnded) and ended.reason is EndReason.IDLE
    assert ended.at >= shared.frame.received_at + 0.2
    assert sharing.board.current(ROOM, ALICE) is None
    sharing.receive(ROOM, BOB, RED)
    sharing.stop(ROOM, BOB)
    assert [type(e) for e in sharing.pending_events()] == [SharingStarted, SharingEnded]
    assert sharing.board.next_timer() is None
    sharing.close()


async def test_cpim_entry_point_takes_screen_frames_only() -> None:
    sharing = ScreenSharing(ScreenBoard(LIMITS))
    frame = parse_cpim(
        b"From: Alice <sip:alice@example.com>\r\nTo: <sip:room@conference.example.com>\r\n"
        b"DateTime: 2011-12-22T09:12:04+01:00\r\n\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: application/blink-screensharing\r\n\r\n" + RED
    )
    shown = sharing.receive_cpim(ROOM, ALICE, frame)
    assert shown is not None and shown.frame.jpeg == RED
    text = parse_cpim(b"From: <sip:a@b>\r\n\r\nContent-Type: text/plain\r\n\r\nhi")
    assert sharing.receive_cpim(ROOM, ALICE, text) is None  # chat, not a frame
    bad = parse_cpim(
        b"From: <sip:a@b>\r\n\r\nContent-Type: application/blink-screensharing\r\n\r\nnope"
    )
    with pytest.raises(MsrpError) as caught:  # what a chat validator lets through as a refusal
        sharing.receive_cpim(ROOM, ALICE, bad)
    assert caught.value.status == 400
    sharing.close()
