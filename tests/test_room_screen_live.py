"""Screen sharing in conference rooms through a real `chorus serve` (issue 9, item 2).

alice shares her screen as Blink does (the reference page's ``com.ag-projects.screen-sharing``
extension): JPEG frames wrapped in CPIM ``application/blink-screensharing`` over her MSRP chat
stream. The room announces the signed viewer and image URLs in chat (``chorus.Notice:
screen``), never relays a frame to the others nor keeps one in the history; the raw image URL
returns the latest frame's bytes; the room page lists the participants, their media and the
live screen; sharing ends after ``[screen] idle_timeout`` without a frame and when the chat
stream that carried the frames ends (``chorus.Notice: screen-ended``). In headless Chromium
the announced viewer page follows the frames (screenshots change colour with them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.web.tokens import TokenPurpose, TokenSigner, load_secret
from tests.peers.chatclient import CHORUS_NS, ChatClient, ChatSession, Delivered
from tests.peers.chorus import ChorusProcess
from tests.peers.chromium import Page, decode_png, running_chromium
from tests.peers.ports import free_port
from tests.peers.sipclient import client_tls_context
from tests.peers.wait import wait_until

pytestmark = pytest.mark.timeout(180)

DATA = Path(__file__).parent / "data" / "screen"
RED = (DATA / "red-320x240.jpg").read_bytes()
BLUE = (DATA / "blue-320x240.jpg").read_bytes()
GREEN = (DATA / "green-320x240.jpg").read_bytes()
COLOURS = {RED: (255, 0, 0), BLUE: (0, 0, 255), GREEN: (0, 255, 0)}
SCREEN_TYPE = "application/blink-screensharing"
IDLE = 3.0  # [screen] idle_timeout
TOLERANCE = 40  # JPEG moves a solid colour by a few levels, never this far
MAX_FRAME = 2 * 1024 * 1024  # [screen] max_frame_bytes; chat messages stay at 1 MiB


def padded(jpeg: bytes, size: int) -> bytes:
    """``jpeg`` grown to about ``size`` bytes with COM segments (T.81 B.2.4.5) after SOI:
    still a valid JPEG of the same picture."""
    comment = b"\xff\xfe" + (65535).to_bytes(2, "big") + b"x" * 65533
    count = max(0, (size - len(jpeg)) // len(comment))
    return jpeg[:2] + comment * count + jpeg[2:]


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    config: dict[str, dict[str, Any]] = {
        "web": {"listen": f"https:127.0.0.1:{free_port('tcp')}"},
        "screen": {"idle_timeout": IDLE, "max_frame_bytes": MAX_FRAME},
        "conference": {"chat_rate": 1000, "chat_burst": 1000, "history_messages": 20},
    }
    with ChorusProcess(config) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


@contextlib.asynccontextmanager
async def people(*users: tuple[str, str]) -> AsyncIterator[list[ChatClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(ChatClient(user, display, sip_transport="tcp"))
            for user, display in users
        ]


async def share(session: ChatSession, jpeg: bytes, *, encoded: bool = False) -> int:
    """One frame over the chat stream (raw as in the reference's SEND, or base64)."""
    body = base64.b64encode(jpeg) if encoded else jpeg
    message = session.cpim(body, content_type=SCREEN_TYPE)
    if encoded:  # Content-Transfer-Encoding is a content header of the CPIM part
        message = message.replace(
            f"Content-Type: {SCREEN_TYPE}\r\n".encode(),
            f"Content-Type: {SCREEN_TYPE}\r\nContent-Transfer-Encoding: base64\r\n".encode(),
        )
    return await session.status_of(await session.send_raw(message))


def value(delivered: Delivered, name: str) -> str | None:
    return delivered.cpim.value(name, CHORUS_NS) if delivered.cpim is not None else None


async def notice(session: ChatSession, kind: str, count: int = 1) -> Delivered:
    assert await session.wait_for(lambda: len(session.notices(kind)) >= count), (
        f"{session.client.user} got no {kind!r} notice #{count}: {session.notices()}"
    )
    return session.notices(kind)[count - 1]


async def get(url: str) -> tuple[int, bytes, str]:
    async with (
        aiohttp.ClientSession() as web,
        web.get(url, ssl=client_tls_context()) as response,
    ):
        return response.status, await response.read(), response.headers.get("Content-Type", "")


def frames_in(session: ChatSession) -> list[Delivered]:
    return [d for d in session.received if d.wrapped_type == SCREEN_TYPE]


async def test_frames_go_to_the_announced_url_never_to_the_chat(chorus: ChorusProcess) -> None:
    async with people(("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")) as (a, b, c):
        alice = await a.join(chorus, "screens", secure=True)
        bob = await b.join(chorus, "screens", secure=True)
        assert await share(alice, RED) == 200
        started = await notice(bob, "screen")
        page, image = value(started, "Screen-URL"), value(started, "Screen-Image")
        assert page is not None and image is not None
        assert page.startswith("https://127.0.0.1:") and "/screen/screens@127.0.0.1/" in page
        assert "/image.jpg?t=" in image
        assert started.text == f"Alice is sharing their screen: {page}"
        assert (await notice(alice, "screen")).text == started.text  # the sharer is told too
        assert await get(image) == (200, RED, "image/jpeg")
        # The latest frame is what the image URL gives, raw or base64 on the wire alike.
        assert await share(alice, BLUE, encoded=True) == 200
        assert (await get(image))[1] == BLUE
        assert await share(alice, GREEN) == 200
        assert (await get(image))[1] == GREEN
        # Not a JPEG: refused on the wire, the screen unchanged.
        assert await share(alice, b"\xff\xd8 not really a JPEG") == 400
        assert (await get(image))[1] == GREEN
        # A wrong token: 403; the viewer page is served under the announced URL.
        assert (await get(image[:-3] + ("AAA" if not image.endswith("AAA") else "BBB")))[0] == 403
        status, html, content_type = await get(page)
        assert status == 200 and content_type.startswith("text/html") and b"screen.js" in html
        # The room page: participants with their media, the live screen.
        secret = load_secret(None, chorus.workdir / "spool")
        room = "screens@127.0.0.1"
        token = TokenSigner(secret, 600.0).issue(TokenPurpose.ROOM, room, now=time.time())
        base = page.split("/screen/")[0]
        status, html, _ = await get(f"{base}/room/{urllib.parse.quote(room, safe='@')}?t={token}")
        assert status == 200
        text = html.decode()
        assert "Alice" in text and "Bob" in text and "sip:alice@127.0.0.1" in text
        assert "<td>chat</td>" in text
        assert "Screens (1)" in text and "screen of Alice" in text
        # Nothing of it reached the chat: bob and a later joiner's history have no frame.
        await alice.say("after the frames")
        await bob.wait_text("after the frames")
        carol = await c.join(chorus, "screens", secure=True)
        assert await carol.wait_for(lambda: any(d.history for d in carol.received))
        assert frames_in(bob) == [] and frames_in(carol) == [] and frames_in(alice) == []
        assert [d.text for d in carol.received if d.history] == ["after the frames"]
        # No frame for [screen] idle_timeout: sharing ends, the URL is 404.
        ended = await notice(bob, "screen-ended")
        assert ended.text == "Alice stopped sharing their screen"
        assert value(ended, "Screen-Ended") == "idle"
        assert (await get(image))[0] == 404


async def test_frames_larger_than_a_chat_message_up_to_the_frame_cap(
    chorus: ChorusProcess,
) -> None:
    """A desktop frame may exceed [conference] max_message_bytes (1 MiB): the chat stream takes
    frames up to [screen] max_frame_bytes; beyond it the board answers 413."""
    big = padded(BLUE, 1_500_000)
    assert 1024 * 1024 < len(big) < MAX_FRAME
    async with people(("ivy", "Ivy"), ("jon", "Jon")) as (i, j):
        ivy = await i.join(chorus, "screens4", secure=True)
        jon = await j.join(chorus, "screens4", secure=True)
        # Sent in several chunks: the first 200 comes before the frame is whole, so the
        # screen notice (sent once the frame is shown) is what says it arrived.
        await ivy.send_raw(ivy.cpim(big, content_type=SCREEN_TYPE))
        image = value(await notice(jon, "screen"), "Screen-Image")
        assert image is not None and (await get(image))[1] == big
        over = await ivy.send_raw(
            ivy.cpim(padded(RED, MAX_FRAME + 200_000), content_type=SCREEN_TYPE)
        )
        assert await ivy.refusal(over) == 413
        assert (await get(image))[1] == big
        too_long = ivy.cpim("x" * (1024 * 1024 + 10))
        assert await ivy.refusal(await ivy.send_raw(too_long)) == 413  # chat keeps its limit


async def test_sharing_ends_with_the_chat_stream_that_carried_it(chorus: ChorusProcess) -> None:
    async with people(("dave", "Dave"), ("erin", "Erin")) as (d, e):
        dave = await d.join(chorus, "screens2", secure=True)
        erin = await e.join(chorus, "screens2", secure=True)
        assert await share(dave, RED) == 200
        image = value(await notice(erin, "screen"), "Screen-Image")
        assert image is not None and (await get(image))[1] == RED
        response = await dave.reinvite(audio=None, chat=False)  # chat removed
        assert response.status == 200
        ended = await notice(erin, "screen-ended")
        assert value(ended, "Screen-Ended") == "stopped"
        assert (await get(image))[0] == 404


def _close(pixel: tuple[int, int, int], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= TOLERANCE for a, b in zip(pixel, colour, strict=True))


async def _centre(page: Page) -> tuple[int, int, int]:
    bitmap = decode_png(await page.screenshot())
    return bitmap.pixel(bitmap.width // 2, bitmap.height // 2)


@contextlib.asynccontextmanager
async def sharer(session: ChatSession, current: list[bytes]) -> AsyncIterator[None]:
    """Sends its current picture every 0.5 s over MSRP, as Blink sends at intervals."""

    async def send() -> None:
        while True:
            assert await share(session, current[0]) == 200
            await asyncio.sleep(0.5)

    task = asyncio.create_task(send())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.peer("chromium")
async def test_chromium_shows_the_frames_sent_over_msrp(chorus: ChorusProcess) -> None:
    """Headless Chromium on the URL announced in chat: its screenshots follow the frames."""
    async with people(("frank", "Frank"), ("gina", "Gina")) as (f, g):
        frank = await f.join(chorus, "screens3", secure=True)
        gina = await g.join(chorus, "screens3", secure=True)
        current = [RED]
        async with running_chromium() as browser:
            browser_page = await browser.new_page(width=640, height=480)
            async with sharer(frank, current):
                url = value(await notice(gina, "screen"), "Screen-URL")
                assert url is not None
                assert await browser_page.document_status(url) == 200
                loop = asyncio.get_running_loop()
                for jpeg in (RED, BLUE, GREEN, RED):
                    current[0] = jpeg
                    colour = COLOURS[jpeg]
                    deadline = loop.time() + 30
                    while not _close(await _centre(browser_page), colour):
                        assert loop.time() < deadline, f"the viewer never showed {colour}"
                        await asyncio.sleep(0.1)
                assert await browser_page.evaluate("document.body.dataset.state") == "live"
            # The sharer stopped: after the idle timeout the page says sharing ended.
            await browser_page.wait_for("document.body.dataset.state === 'ended'", timeout=30)
        assert await wait_until(lambda: bool(gina.notices("screen-ended")), timeout=10)
