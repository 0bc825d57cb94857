"""The web pages in a real browser: headless Chromium (Debian ``chromium``) over DevTools.

- The viewer page follows a sharer's frames (red, then blue, then green JPEGs fed into the
  board as the conference will feed MSRP frames): DevTools screenshots show each colour.
- A wrong and an expired token get 403; the idle timeout ends sharing and the page says so,
  after which the URL is 404.
- The room page's download link saves the file (same SHA-1); the same link with a Range
  request (aiohttp client) gets 206 and the bytes asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from control.conference.screen import ScreenBoard, ScreenLimits, ScreenSharing
from control.web import TokenPurpose, TokenSigner
from tests.peers.chromium import Page, decode_png, running_chromium
from tests.test_web_fakes import ALICE, ROOM, SECRET, FakeFileSource, running_web

pytestmark = pytest.mark.peer("chromium")

DATA = Path(__file__).parent / "data" / "screen"
FRAMES = {
    "red": ((DATA / "red-320x240.jpg").read_bytes(), (255, 0, 0)),
    "blue": ((DATA / "blue-320x240.jpg").read_bytes(), (0, 0, 255)),
    "green": ((DATA / "green-320x240.jpg").read_bytes(), (0, 255, 0)),
}
TOLERANCE = 40  # JPEG at quality 80 moves a solid colour by a few levels, never this far
WAIT = 30.0


def _close(pixel: tuple[int, int, int], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= TOLERANCE for a, b in zip(pixel, colour, strict=True))


async def _centre(page: Page) -> tuple[int, int, int]:
    bitmap = decode_png(await page.screenshot())
    return bitmap.pixel(bitmap.width // 2, bitmap.height // 2)


async def _until_colour(page: Page, colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Screenshots until the centre shows `colour` (the push is asynchronous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    pixel = await _centre(page)
    while not _close(pixel, colour):
        if loop.time() > deadline:
            raise AssertionError(f"screen centre is {pixel}, never {colour}")
        await asyncio.sleep(0.1)
        pixel = await _centre(page)
    return pixel


@contextlib.asynccontextmanager
async def _sharer(sharing: ScreenSharing, jpeg: list[bytes]) -> AsyncIterator[None]:
    """A sharer sending its current picture every 0.2 s, as Blink sends at intervals."""

    async def send() -> None:
        while True:
            sharing.receive(ROOM, ALICE, jpeg[0])
            await asyncio.sleep(0.2)

    task = asyncio.create_task(send())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_viewer_shows_the_frames_then_the_end_of_sharing(tmp_path: Path) -> None:
    board = ScreenBoard(ScreenLimits(idle_timeout=2.0))
    sharing = ScreenSharing(board)
    current = [FRAMES["red"][0]]
    async with running_web(tmp_path, board=board) as web, running_chromium() as browser:
        page = await browser.new_page(width=640, height=480)
        async with _sharer(sharing, current):
            await asyncio.sleep(0)
            url = web.urls.screen_page(ROOM, ALICE)
            assert await page.document_status(url) == 200
            seen = []
            for name in ("red", "blue", "green"):
                jpeg, colour = FRAMES[name]
                current[0] = jpeg
                pixel = await _until_colour(page, colour)
                seen.append((name, pixel))
                assert int(await page.evaluate("Number(document.body.dataset.sequence)")) >= 1
            assert [name for name, _ in seen] == ["red", "blue", "green"]
            assert await page.evaluate("document.body.dataset.state") == "live"
        # The sharer stops sending: after idle_timeout the board ends it, the page says so.
        await page.wait_for("document.body.dataset.state === 'ended'", timeout=WAIT)
        assert "ended" in await page.evaluate("document.getElementById('state').textContent")
        assert board.current(ROOM, ALICE) is None
        assert await page.document_status(url) == 404
    sharing.close()


async def test_wrong_and_expired_tokens_get_403_in_the_browser(tmp_path: Path) -> None:
    board = ScreenBoard(ScreenLimits())
    board.receive(ROOM, ALICE, FRAMES["red"][0], now=0.0)
    async with running_web(tmp_path, board=board) as web, running_chromium() as browser:
        page = await browser.new_page()
        base = f"{web.urls.base}/screen/{ROOM}/{ALICE}"
        good = web.urls.screen_page(ROOM, ALICE)
        assert await page.document_status(good) == 200
        wrong = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
        assert await page.document_status(wrong) == 403
        expired = TokenSigner(SECRET, 60.0).issue(
            TokenPurpose.SCREEN, ROOM, ALICE, now=time.time() - 3600
        )
        assert await page.document_status(f"{base}?t={expired}") == 403
        assert await page.document_status(f"{base}/image.jpg?t={expired}") == 403
        assert "expired" in await page.evaluate("document.body.innerText")


async def test_download_through_the_room_page_link_and_a_range(tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    store = tmp_path / "store"
    store.mkdir()
    files = FakeFileSource(store)
    entry = files.add(ROOM, "../../report 1.pdf", data, "application/pdf")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    async with running_web(tmp_path, files=files) as web, running_chromium() as browser:
        page = await browser.new_page()
        await page.allow_downloads(downloads)
        assert await page.document_status(web.urls.room_page(ROOM)) == 200
        await page.wait_for("document.querySelector('a.download') !== null")
        href = await page.evaluate("document.querySelector('a.download').href")
        began = browser.expect("Browser.downloadWillBegin")
        done = asyncio.get_running_loop().create_future()

        def progress() -> None:
            for method, params in browser.events:
                final = method == "Browser.downloadProgress" and params["state"] != "inProgress"
                if final and not done.done():
                    done.set_result(params)

        await page.evaluate("document.querySelector('a.download').click()")
        started = await asyncio.wait_for(began, WAIT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not done.done() and loop.time() < deadline:
            progress()
            await asyncio.sleep(0.05)
        finished = await asyncio.wait_for(done, 1.0)
        assert finished["state"] == "completed"
        saved = (downloads / started["guid"]).read_bytes()
        assert hashlib.sha1(saved).hexdigest() == entry.sha1
        assert "/" not in started["suggestedFilename"]
        assert started["suggestedFilename"].endswith("report 1.pdf")
        # The same link, resumed from the middle with a Range request.
        assert re.search(rf"/files/{re.escape(ROOM)}/{entry.sha1}\?t=", href)
        ranged = {"Range": "bytes=1048576-"}
        async with aiohttp.ClientSession() as session, session.get(href, headers=ranged) as resp:
            assert resp.status == 206
            total = len(data)
            assert resp.headers["Content-Range"] == f"bytes 1048576-{total - 1}/{total}"
            assert await resp.read() == data[1048576:]
